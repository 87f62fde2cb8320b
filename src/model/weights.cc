#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "base/logging.h"
#include "base/thread_pool.h"

namespace kvstar {
namespace {

std::string LayerPrefix(size_t i) { return "model.layers." + std::to_string(i) + "."; }

// Where each tensor of one layer lives in LayerWeights, with its Hugging Face name suffix and
// shape. One table drives Load(), Random() and NamedTensors() so they cannot disagree.
struct LayerSlot {
  const char* suffix;
  TensorView LayerWeights::*member;
  size_t rows, cols;  // rows == 0: a 1-D tensor of `cols` elements
  enum Kind { kNorm, kMatrix, kBias } kind;
};

std::vector<LayerSlot> LayerSlots(const ModelConfig& c) {
  const size_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), in = c.intermediate_size;
  std::vector<LayerSlot> s = {
      {"input_layernorm.weight", &LayerWeights::input_norm, 0, h, LayerSlot::kNorm},
      {"self_attn.q_proj.weight", &LayerWeights::q, q, h, LayerSlot::kMatrix},
      {"self_attn.k_proj.weight", &LayerWeights::k, kv, h, LayerSlot::kMatrix},
      {"self_attn.v_proj.weight", &LayerWeights::v, kv, h, LayerSlot::kMatrix},
      {"self_attn.o_proj.weight", &LayerWeights::o, h, q, LayerSlot::kMatrix},
      {"post_attention_layernorm.weight", &LayerWeights::post_attn_norm, 0, h, LayerSlot::kNorm},
      {"mlp.gate_proj.weight", &LayerWeights::gate, in, h, LayerSlot::kMatrix},
      {"mlp.up_proj.weight", &LayerWeights::up, in, h, LayerSlot::kMatrix},
      {"mlp.down_proj.weight", &LayerWeights::down, h, in, LayerSlot::kMatrix},
  };
  if (c.qkv_bias) {
    s.push_back({"self_attn.q_proj.bias", &LayerWeights::q_bias, 0, q, LayerSlot::kBias});
    s.push_back({"self_attn.k_proj.bias", &LayerWeights::k_bias, 0, kv, LayerSlot::kBias});
    s.push_back({"self_attn.v_proj.bias", &LayerWeights::v_bias, 0, kv, LayerSlot::kBias});
  }
  if (c.o_bias) {
    s.push_back({"self_attn.o_proj.bias", &LayerWeights::o_bias, 0, h, LayerSlot::kBias});
  }
  if (c.mlp_bias) {
    s.push_back({"mlp.gate_proj.bias", &LayerWeights::gate_bias, 0, in, LayerSlot::kBias});
    s.push_back({"mlp.up_proj.bias", &LayerWeights::up_bias, 0, in, LayerSlot::kBias});
    s.push_back({"mlp.down_proj.bias", &LayerWeights::down_bias, 0, h, LayerSlot::kBias});
  }
  return s;
}

std::vector<size_t> SlotShape(size_t rows, size_t cols) {
  return rows == 0 ? std::vector<size_t>{cols} : std::vector<size_t>{rows, cols};
}

// splitmix64's finalizer: a counter-based generator, so element i gets the same value whatever
// thread produces it.
inline uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// Irwin-Hall sum of four 16-bit uniforms: mean 0, variance 1, bounded by +-3.46. Close enough to
// a normal for benchmark weights, and one 64-bit hash per value.
inline float ApproxNormal(uint64_t r) {
  const float s = static_cast<float>(r & 0xffff) + static_cast<float>((r >> 16) & 0xffff) +
                  static_cast<float>((r >> 32) & 0xffff) + static_cast<float>(r >> 48);
  constexpr float kScale = 1.7320508f / 65536.0f;  // sqrt(3) / 2^16
  return (s - 2.0f * 65535.0f) * kScale;
}

template <DType kDtype>
inline void StoreValue(float v, void* dst, size_t i) {
  if constexpr (kDtype == DType::kF32) {
    static_cast<float*>(dst)[i] = v;
  } else if constexpr (kDtype == DType::kBF16) {
    static_cast<bf16_t*>(dst)[i] = F32ToBF16(v);
  } else {
    static_cast<f16_t*>(dst)[i] = F32ToF16(v);
  }
}

struct RandomJob {
  void* data;
  DType dtype;
  size_t begin, end;  // element range
  uint64_t key;       // per-tensor stream
  float stddev;       // 0: fill with ones (norms)
};

template <DType kDtype>
void FillRange(const RandomJob& job) {
  if (job.stddev == 0.0f) {
    for (size_t i = job.begin; i < job.end; ++i) StoreValue<kDtype>(1.0f, job.data, i);
    return;
  }
  for (size_t i = job.begin; i < job.end; ++i) {
    const float v = job.stddev * ApproxNormal(Mix64(job.key + i * 0x9e3779b97f4a7c15ull));
    StoreValue<kDtype>(v, job.data, i);
  }
}

void RunRandomJob(const RandomJob& job) {
  switch (job.dtype) {
    case DType::kF32:
      return FillRange<DType::kF32>(job);
    case DType::kBF16:
      return FillRange<DType::kBF16>(job);
    case DType::kF16:
      return FillRange<DType::kF16>(job);
  }
}

}  // namespace

ModelWeights::~ModelWeights() = default;

StatusOr<std::unique_ptr<ModelWeights>> ModelWeights::Load(const std::string& dir,
                                                           const ModelConfig& cfg,
                                                           ProgressCallback progress) {
  std::unique_ptr<ModelWeights> w(new ModelWeights(cfg));
  KVSTAR_ASSIGN_OR_RETURN(w->files_, TensorSet::Open(dir));
  const TensorSet& set = *w->files_;
  std::set<std::string, std::less<>> used;
  auto get = [&](const std::string& name, size_t rows, size_t cols) -> StatusOr<TensorView> {
    used.insert(name);
    const std::vector<size_t> shape = SlotShape(rows, cols);
    return set.Get(name, shape);
  };
  const size_t h = cfg.hidden_size;
  KVSTAR_ASSIGN_OR_RETURN(w->embed, get("model.embed_tokens.weight", cfg.vocab_size, h));
  const std::vector<LayerSlot> slots = LayerSlots(cfg);
  w->layers.resize(cfg.num_layers);
  for (size_t i = 0; i < cfg.num_layers; ++i) {
    const std::string prefix = LayerPrefix(i);
    for (const LayerSlot& s : slots) {
      KVSTAR_ASSIGN_OR_RETURN(w->layers[i].*s.member, get(prefix + s.suffix, s.rows, s.cols));
    }
    if (progress) progress(i + 1, cfg.num_layers);
  }
  KVSTAR_ASSIGN_OR_RETURN(w->final_norm, get("model.norm.weight", 0, h));
  if (cfg.tie_word_embeddings) {
    w->lm_head = w->embed;
  } else {
    auto lm = get("lm_head.weight", cfg.vocab_size, h);
    if (!lm.ok()) {
      if (lm.status().code() == StatusCode::kNotFound) {
        return Status(StatusCode::kNotFound,
                      lm.status().message() +
                          "; config.json has tie_word_embeddings=false, so the model needs its "
                          "own lm_head.weight");
      }
      return lm.status();
    }
    w->lm_head = *lm;
  }
  size_t unused = 0;
  std::string example;
  for (const std::string& name : set.Names()) {
    if (used.count(name) || name == "lm_head.weight") continue;
    if (unused++ == 0) example = name;
  }
  if (unused > 0) {
    KVSTAR_LOG(kWarn, "%s: %zu tensor(s) not used by %s with %zu layers, e.g. %s", dir.c_str(),
               unused, cfg.architecture_name.c_str(), cfg.num_layers, example.c_str());
  }
  w->ComputeFingerprint();
  return w;
}

std::unique_ptr<ModelWeights> ModelWeights::Random(const ModelConfig& cfg, DType dtype,
                                                   uint64_t seed, ThreadPool* pool,
                                                   ProgressCallback progress) {
  std::unique_ptr<ThreadPool> own_pool;
  if (pool == nullptr) {
    own_pool = std::make_unique<ThreadPool>(ThreadPool::HardwareThreads());
    pool = own_pool.get();
  }
  std::unique_ptr<ModelWeights> w(new ModelWeights(cfg));
  constexpr float kStddev = 0.02f;
  constexpr size_t kChunk = size_t{1} << 20;
  uint64_t tensor_counter = 0;
  std::vector<RandomJob> jobs;
  // Allocates one tensor and queues its generation in chunks.
  auto make = [&](size_t rows, size_t cols, float stddev) {
    TensorView v;
    v.dtype = dtype;
    v.rows = rows == 0 ? 1 : rows;
    v.cols = cols;
    AlignedBuffer<uint8_t> buf(v.bytes());
    v.data = buf.data();
    const uint64_t key = Mix64(seed ^ Mix64(++tensor_counter));
    for (size_t b = 0; b < v.elements(); b += kChunk) {
      jobs.push_back({buf.data(), dtype, b, std::min(v.elements(), b + kChunk), key, stddev});
    }
    w->owned_.push_back(std::move(buf));
    return v;
  };
  auto run_jobs = [&] {
    pool->ParallelFor(jobs.size(), [&](size_t b, size_t e, int) {
      for (size_t j = b; j < e; ++j) RunRandomJob(jobs[j]);
    });
    jobs.clear();
  };
  w->embed = make(cfg.vocab_size, cfg.hidden_size, kStddev);
  w->final_norm = make(0, cfg.hidden_size, 0.0f);
  w->lm_head = cfg.tie_word_embeddings ? w->embed : make(cfg.vocab_size, cfg.hidden_size, kStddev);
  run_jobs();
  const std::vector<LayerSlot> slots = LayerSlots(cfg);
  w->layers.resize(cfg.num_layers);
  for (size_t i = 0; i < cfg.num_layers; ++i) {
    for (const LayerSlot& s : slots) {
      w->layers[i].*s.member = make(s.rows, s.cols, s.kind == LayerSlot::kNorm ? 0.0f : kStddev);
    }
    run_jobs();
    if (progress) progress(i + 1, cfg.num_layers);
  }
  w->ComputeFingerprint();
  return w;
}

std::vector<std::pair<std::string, TensorView>> ModelWeights::NamedTensors() const {
  std::vector<std::pair<std::string, TensorView>> out;
  out.emplace_back("model.embed_tokens.weight", embed);
  const std::vector<LayerSlot> slots = LayerSlots(config_);
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string prefix = LayerPrefix(i);
    for (const LayerSlot& s : slots) out.emplace_back(prefix + s.suffix, layers[i].*s.member);
  }
  out.emplace_back("model.norm.weight", final_norm);
  if (!config_.tie_word_embeddings) out.emplace_back("lm_head.weight", lm_head);
  return out;
}

size_t ModelWeights::weight_bytes() const {
  size_t total = 0;
  for (const auto& [name, t] : NamedTensors()) total += t.bytes();
  return total;
}

void ModelWeights::ComputeFingerprint() {
  constexpr size_t kSample = 4096;
  std::string buf = config_.ToJson();
  for (const auto& [name, t] : NamedTensors()) {
    buf += '\n';
    buf += name;
    buf += ' ';
    buf += DTypeName(t.dtype);
    buf += ' ' + std::to_string(t.rows) + 'x' + std::to_string(t.cols) + '\n';
    const char* p = static_cast<const char*>(t.data);
    const size_t n = t.bytes();
    if (n <= 3 * kSample) {
      buf.append(p, n);
    } else {
      buf.append(p, kSample);
      buf.append(p + (n / 2 - kSample / 2), kSample);
      buf.append(p + n - kSample, kSample);
    }
  }
  fingerprint_ = HashBytes(buf.data(), buf.size());
}

}  // namespace kvstar
