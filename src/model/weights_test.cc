#include "model/weights.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "base/file_util.h"
#include "base/thread_pool.h"
#include "model/shapes.h"

namespace kvstar {
namespace {

class TempDir {
 public:
  TempDir() {
    std::string templ = testing::TempDir() + "/kvstar_w_XXXXXX";
    KVSTAR_CHECK(mkdtemp(templ.data()) != nullptr, "mkdtemp %s", templ.c_str());
    path_ = templ;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Tiny Qwen2: 2 layers, hidden 16, 4 heads of 4, 2 KV heads, tied embeddings, QKV bias.
constexpr const char* kTinyQwen = R"({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 16,
  "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "vocab_size": 40, "tie_word_embeddings": true,
  "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "eos_token_id": 1, "torch_dtype": "bfloat16"})";
// Tiny Llama: untied, head_dim 8 != hidden / heads, 1 KV head.
constexpr const char* kTinyLlama = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 16,
  "intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "head_dim": 8,
  "num_key_value_heads": 1, "vocab_size": 50, "tie_word_embeddings": false,
  "attention_bias": false, "eos_token_id": [1, 2], "torch_dtype": "float16"})";

struct TinyTensor {
  std::string name;
  std::vector<size_t> shape;
  std::string dtype;
  std::vector<uint8_t> bytes;
};

// The tensors Hugging Face would save for `cfg`, written out by hand (independent of
// weights.cc's table). Element i of tensor t holds (t * 1000 + i) % 97 / 97 - 0.5.
std::vector<TinyTensor> HfTensors(const ModelConfig& cfg, const std::string& dtype) {
  const size_t h = cfg.hidden_size, q = cfg.num_heads * cfg.head_dim;
  const size_t kv = cfg.num_kv_heads * cfg.head_dim, in = cfg.intermediate_size;
  std::vector<std::pair<std::string, std::vector<size_t>>> spec;
  spec.push_back({"model.embed_tokens.weight", {cfg.vocab_size, h}});
  for (size_t i = 0; i < cfg.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    spec.push_back({p + "input_layernorm.weight", {h}});
    spec.push_back({p + "self_attn.q_proj.weight", {q, h}});
    spec.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    spec.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    spec.push_back({p + "self_attn.o_proj.weight", {h, q}});
    if (cfg.qkv_bias) {
      spec.push_back({p + "self_attn.q_proj.bias", {q}});
      spec.push_back({p + "self_attn.k_proj.bias", {kv}});
      spec.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    spec.push_back({p + "post_attention_layernorm.weight", {h}});
    spec.push_back({p + "mlp.gate_proj.weight", {in, h}});
    spec.push_back({p + "mlp.up_proj.weight", {in, h}});
    spec.push_back({p + "mlp.down_proj.weight", {h, in}});
  }
  spec.push_back({"model.norm.weight", {h}});
  if (!cfg.tie_word_embeddings) spec.push_back({"lm_head.weight", {cfg.vocab_size, h}});
  std::vector<TinyTensor> out;
  for (size_t t = 0; t < spec.size(); ++t) {
    TinyTensor tt{spec[t].first, spec[t].second, dtype, {}};
    size_t n = 1;
    for (size_t d : tt.shape) n *= d;
    for (size_t i = 0; i < n; ++i) {
      const float v = static_cast<float>((t * 1000 + i) % 97) / 97.0f - 0.5f;
      uint8_t b[4];
      if (dtype == "F32") {
        std::memcpy(b, &v, 4);
        tt.bytes.insert(tt.bytes.end(), b, b + 4);
      } else {
        const uint16_t bits = dtype == "BF16" ? F32ToBF16(v).bits : F32ToF16(v).bits;
        std::memcpy(b, &bits, 2);
        tt.bytes.insert(tt.bytes.end(), b, b + 2);
      }
    }
    out.push_back(std::move(tt));
  }
  return out;
}

TinyTensor* FindTensor(std::vector<TinyTensor>& ts, const std::string& name) {
  for (auto& t : ts) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

// Writes config.json and the tensors: one model.safetensors, or `shards` files plus the index.
void WriteModel(const TempDir& dir, const char* config_json, const std::vector<TinyTensor>& ts,
                int shards = 1) {
  ASSERT_TRUE(WriteStringToFile(dir.file("config.json"), config_json).ok());
  auto to_write = [](const TinyTensor& t) {
    return SafetensorsWriteTensor{t.name, t.dtype, t.shape, t.bytes};
  };
  if (shards == 1) {
    std::vector<SafetensorsWriteTensor> w;
    for (const auto& t : ts) w.push_back(to_write(t));
    ASSERT_TRUE(WriteSafetensors(dir.file("model.safetensors"), w).ok());
    return;
  }
  std::string index = R"({"metadata": {}, "weight_map": {)";
  for (int s = 0; s < shards; ++s) {
    const std::string file =
        "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(shards) + ".safetensors";
    std::vector<SafetensorsWriteTensor> w;
    for (size_t i = s; i < ts.size(); i += shards) {
      w.push_back(to_write(ts[i]));
      index += (index.back() == '{' ? "\"" : ",\"") + ts[i].name + "\": \"" + file + "\"";
    }
    ASSERT_TRUE(WriteSafetensors(dir.file(file), w).ok());
  }
  index += "}}";
  ASSERT_TRUE(WriteStringToFile(dir.file("model.safetensors.index.json"), index).ok());
}

StatusOr<std::unique_ptr<ModelWeights>> LoadDir(const TempDir& dir) {
  KVSTAR_ASSIGN_OR_RETURN(ModelConfig cfg, LoadConfig(dir.path()));
  return ModelWeights::Load(dir.path(), cfg);
}

TEST(WeightsTest, LoadsTiedQwen2WithBiases) {
  TempDir dir;
  auto cfg = ParseConfig(kTinyQwen, "q");
  ASSERT_TRUE(cfg.ok());
  auto ts = HfTensors(*cfg, "BF16");
  WriteModel(dir, kTinyQwen, ts);
  size_t progress_calls = 0;
  auto w = ModelWeights::Load(dir.path(), *cfg, [&](size_t done, size_t total) {
    EXPECT_EQ(total, 2u);
    EXPECT_EQ(done, ++progress_calls);
  });
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const ModelWeights& m = **w;
  EXPECT_EQ(progress_calls, 2u);
  ASSERT_EQ(m.layers.size(), 2u);
  EXPECT_EQ(m.embed.rows, 40u);
  EXPECT_EQ(m.embed.cols, 16u);
  EXPECT_EQ(m.lm_head.data, m.embed.data);  // tied: same memory
  const LayerWeights& l1 = m.layers[1];
  EXPECT_EQ(l1.q.rows, 16u);
  EXPECT_EQ(l1.k.rows, 8u);
  EXPECT_EQ(l1.v.cols, 16u);
  EXPECT_EQ(l1.o.rows, 16u);
  EXPECT_EQ(l1.gate.rows, 24u);
  EXPECT_EQ(l1.down.cols, 24u);
  EXPECT_EQ(l1.input_norm.rows, 1u);
  EXPECT_EQ(l1.input_norm.cols, 16u);
  EXPECT_EQ(l1.k_bias.rows, 1u);
  EXPECT_EQ(l1.k_bias.cols, 8u);
  EXPECT_FALSE(l1.q_bias.empty());
  EXPECT_TRUE(l1.o_bias.empty());
  EXPECT_TRUE(l1.gate_bias.empty());
  EXPECT_EQ(l1.q.dtype, DType::kBF16);
  EXPECT_EQ(m.weight_dtype(), DType::kBF16);
  // Zero copy: the view holds exactly the bytes written.
  const TinyTensor* up = FindTensor(ts, "model.layers.1.mlp.up_proj.weight");
  ASSERT_NE(up, nullptr);
  EXPECT_EQ(std::memcmp(l1.up.data, up->bytes.data(), up->bytes.size()), 0);
  EXPECT_EQ(m.weight_bytes(), cfg->num_parameters() * 2);
}

TEST(WeightsTest, LoadsUntiedShardedLlama) {
  TempDir dir;
  auto cfg = ParseConfig(kTinyLlama, "l");
  ASSERT_TRUE(cfg.ok());
  auto ts = HfTensors(*cfg, "F16");
  WriteModel(dir, kTinyLlama, ts, /*shards=*/3);
  auto w = LoadDir(dir);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const ModelWeights& m = **w;
  EXPECT_NE(m.lm_head.data, m.embed.data);
  EXPECT_EQ(m.layers[2].q.rows, 32u);  // heads * head_dim, not hidden
  EXPECT_EQ(m.layers[2].o.cols, 32u);
  EXPECT_TRUE(m.layers[0].q_bias.empty());
  const TinyTensor* lm = FindTensor(ts, "lm_head.weight");
  EXPECT_EQ(std::memcmp(m.lm_head.data, lm->bytes.data(), lm->bytes.size()), 0);
  EXPECT_EQ(m.weight_bytes(), cfg->num_parameters() * 2);
}

TEST(WeightsTest, MixedDtypesStayAsStored) {
  TempDir dir;
  auto cfg = ParseConfig(kTinyQwen, "q");
  auto ts = HfTensors(*cfg, "BF16");
  auto f32 = HfTensors(*cfg, "F32");
  for (size_t i = 0; i < ts.size(); ++i) {
    if (ts[i].name.find("norm") != std::string::npos) ts[i] = f32[i];
  }
  WriteModel(dir, kTinyQwen, ts);
  auto w = LoadDir(dir);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ((*w)->final_norm.dtype, DType::kF32);
  EXPECT_EQ((*w)->layers[0].input_norm.dtype, DType::kF32);
  EXPECT_EQ((*w)->layers[0].q.dtype, DType::kBF16);
}

TEST(WeightsTest, WrongShapeNamesTensor) {
  TempDir dir;
  auto cfg = ParseConfig(kTinyQwen, "q");
  auto ts = HfTensors(*cfg, "BF16");
  TinyTensor* up = FindTensor(ts, "model.layers.1.mlp.up_proj.weight");
  up->shape = {16, 24};  // transposed
  WriteModel(dir, kTinyQwen, ts);
  auto w = LoadDir(dir);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(w.status().message().find(
                "model.layers.1.mlp.up_proj.weight has shape [16, 24], expected [24, 16]"),
            std::string::npos)
      << w.status().ToString();
}

TEST(WeightsTest, MissingTensorNamesIt) {
  TempDir dir;
  auto cfg = ParseConfig(kTinyQwen, "q");
  auto ts = HfTensors(*cfg, "BF16");
  std::erase_if(
      ts, [](const TinyTensor& t) { return t.name == "model.layers.0.self_attn.v_proj.bias"; });
  WriteModel(dir, kTinyQwen, ts);
  auto w = LoadDir(dir);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kNotFound);
  EXPECT_NE(w.status().message().find("model.layers.0.self_attn.v_proj.bias"), std::string::npos)
      << w.status().ToString();
}

TEST(WeightsTest, UntiedWithoutLmHead) {
  TempDir dir;
  auto cfg = ParseConfig(kTinyLlama, "l");
  auto ts = HfTensors(*cfg, "F16");
  std::erase_if(ts, [](const TinyTensor& t) { return t.name == "lm_head.weight"; });
  WriteModel(dir, kTinyLlama, ts);
  auto w = LoadDir(dir);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kNotFound);
  EXPECT_NE(w.status().message().find("lm_head.weight"), std::string::npos);
  EXPECT_NE(w.status().message().find("tie_word_embeddings=false"), std::string::npos)
      << w.status().ToString();
}

TEST(WeightsTest, TiedIgnoresSavedLmHead) {
  TempDir dir;
  auto cfg = ParseConfig(kTinyQwen, "q");
  auto ts = HfTensors(*cfg, "BF16");
  TinyTensor lm = ts[0];
  lm.name = "lm_head.weight";
  std::fill(lm.bytes.begin(), lm.bytes.end(), 0);
  ts.push_back(lm);
  WriteModel(dir, kTinyQwen, ts);
  auto w = LoadDir(dir);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ((*w)->lm_head.data, (*w)->embed.data);
}

TEST(WeightsTest, UnsupportedDtypeNamesTensor) {
  TempDir dir;
  auto cfg = ParseConfig(kTinyQwen, "q");
  auto ts = HfTensors(*cfg, "BF16");
  TinyTensor* norm = FindTensor(ts, "model.norm.weight");
  norm->dtype = "I16";  // same element size, so the file itself is consistent
  WriteModel(dir, kTinyQwen, ts);
  auto w = LoadDir(dir);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(w.status().message().find("model.norm.weight has dtype I16"), std::string::npos)
      << w.status().ToString();
}

TEST(WeightsTest, FingerprintTracksContent) {
  auto cfg = ParseConfig(kTinyQwen, "q");
  auto ts = HfTensors(*cfg, "BF16");
  TempDir a, b, c;
  WriteModel(a, kTinyQwen, ts);
  WriteModel(b, kTinyQwen, ts);
  ts[3].bytes[1] ^= 0x40;  // one bit of one weight
  WriteModel(c, kTinyQwen, ts);
  auto wa = LoadDir(a);
  auto wb = LoadDir(b);
  auto wc = LoadDir(c);
  ASSERT_TRUE(wa.ok() && wb.ok() && wc.ok());
  EXPECT_EQ((*wa)->fingerprint(), (*wb)->fingerprint());
  EXPECT_NE((*wa)->fingerprint(), (*wc)->fingerprint());
  EXPECT_NE((*wa)->fingerprint(), Hash128{});
}

TEST(WeightsTest, RandomShapesValuesAndDeterminism) {
  auto cfg = ParseConfig(kTinyQwen, "q");
  ASSERT_TRUE(cfg.ok());
  ThreadPool one(1), four(4);
  auto w = ModelWeights::Random(*cfg, DType::kBF16, 7, &one);
  auto w4 = ModelWeights::Random(*cfg, DType::kBF16, 7, &four);
  auto other = ModelWeights::Random(*cfg, DType::kBF16, 8, &four);
  ASSERT_EQ(w->layers.size(), 2u);
  EXPECT_EQ(w->lm_head.data, w->embed.data);
  EXPECT_EQ(w->weight_bytes(), cfg->num_parameters() * 2);
  const auto named = w->NamedTensors();
  const auto named4 = w4->NamedTensors();
  ASSERT_EQ(named.size(), named4.size());
  double sum = 0, sum2 = 0;
  size_t n = 0;
  for (size_t t = 0; t < named.size(); ++t) {
    const TensorView& v = named[t].second;
    ASSERT_EQ(v.dtype, DType::kBF16);
    // Same seed, different thread counts: identical bytes.
    ASSERT_EQ(std::memcmp(v.data, named4[t].second.data, v.bytes()), 0) << named[t].first;
    const bool norm = named[t].first.find("norm") != std::string::npos;
    for (size_t i = 0; i < v.elements(); ++i) {
      const float x = BF16ToF32(static_cast<const bf16_t*>(v.data)[i]);
      ASSERT_TRUE(std::isfinite(x));
      if (norm) {
        ASSERT_EQ(x, 1.0f) << named[t].first;
      } else {
        ASSERT_LE(std::fabs(x), 0.0701f);  // Irwin-Hall bound: 0.02 * sqrt(12)
        sum += x;
        sum2 += static_cast<double>(x) * x;
        ++n;
      }
    }
  }
  const double mean = sum / n, stddev = std::sqrt(sum2 / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.002);
  EXPECT_NEAR(stddev, 0.02, 0.002);
  EXPECT_EQ(w->fingerprint(), w4->fingerprint());
  EXPECT_NE(w->fingerprint(), other->fingerprint());
}

TEST(WeightsTest, RandomUntiedF32AndF16) {
  auto cfg = ParseConfig(kTinyLlama, "l");
  ASSERT_TRUE(cfg.ok());
  for (DType dt : {DType::kF32, DType::kF16}) {
    size_t calls = 0;
    auto w = ModelWeights::Random(*cfg, dt, 1, nullptr, [&](size_t, size_t) { ++calls; });
    EXPECT_EQ(calls, 3u);
    EXPECT_NE(w->lm_head.data, w->embed.data);
    EXPECT_EQ(w->lm_head.rows, 50u);
    EXPECT_EQ(w->layers[0].q.rows, 32u);
    EXPECT_EQ(w->weight_bytes(), cfg->num_parameters() * DTypeSize(dt));
    EXPECT_EQ(w->weight_dtype(), dt);
  }
}

TEST(WeightsTest, RandomHundredMillionShape) {
  auto cfg = NamedShape("qwen2-100m");
  ASSERT_TRUE(cfg.ok());
  auto w = ModelWeights::Random(*cfg, DType::kBF16, 1);
  EXPECT_EQ(w->weight_bytes(), cfg->num_parameters() * 2);
  const TensorView& down = w->layers[11].down;
  EXPECT_EQ(down.rows, 768u);
  EXPECT_EQ(down.cols, 2048u);
  const bf16_t* p = static_cast<const bf16_t*>(down.data);
  for (size_t i = 0; i < down.elements(); i += 997) ASSERT_TRUE(std::isfinite(BF16ToF32(p[i])));
}

}  // namespace
}  // namespace kvstar
