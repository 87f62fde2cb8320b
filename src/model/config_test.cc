#include "model/config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace kvstar {
namespace {

// Modelled on Qwen/Qwen2.5-0.5B-Instruct/config.json.
constexpr const char* kQwen25_05B = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 21,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.1",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

// Modelled on meta-llama/Llama-3.1-8B-Instruct/config.json.
constexpr const char* kLlama31_8B = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

using nlohmann::json;

// Parses `base` with `edit` applied to its JSON.
template <typename Edit>
StatusOr<ModelConfig> ParseEdited(const char* base, Edit edit) {
  json j = json::parse(base);
  edit(j);
  return ParseConfig(j.dump(), "/m/config.json");
}

TEST(ConfigTest, Qwen25) {
  auto c = ParseConfig(kQwen25_05B, "/m/config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->arch, Architecture::kQwen2);
  EXPECT_EQ(c->architecture_name, "Qwen2ForCausalLM");
  EXPECT_EQ(c->hidden_size, 896u);
  EXPECT_EQ(c->intermediate_size, 4864u);
  EXPECT_EQ(c->num_layers, 24u);
  EXPECT_EQ(c->num_heads, 14u);
  EXPECT_EQ(c->num_kv_heads, 2u);
  EXPECT_EQ(c->head_dim, 64u);
  EXPECT_EQ(c->group_size(), 7u);
  EXPECT_EQ(c->vocab_size, 151936u);
  EXPECT_EQ(c->max_position_embeddings, 32768);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1e6);
  EXPECT_TRUE(c->rope_scaling.type.empty());
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-6f);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_FALSE(c->o_bias);
  EXPECT_FALSE(c->mlp_bias);
  EXPECT_EQ(c->eos_token_ids, std::vector<int32_t>{151645});
  ASSERT_TRUE(c->bos_token_id.has_value());
  EXPECT_EQ(*c->bos_token_id, 151643);
  EXPECT_EQ(c->torch_dtype, DType::kBF16);
  // Qwen2.5-0.5B has 494,032,768 parameters (tied embeddings).
  EXPECT_EQ(c->num_parameters(), 494032768u);
  // 24 layers * 2 (K,V) * 2 kv heads * 64 * 2 bytes.
  EXPECT_EQ(c->kv_bytes_per_token(DType::kBF16), 24u * 2 * 2 * 64 * 2);
  EXPECT_EQ(c->kv_bytes_per_token(DType::kF32), 24u * 2 * 2 * 64 * 4);
}

TEST(ConfigTest, Llama31) {
  auto c = ParseConfig(kLlama31_8B, "/m/config.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->arch, Architecture::kLlama);
  EXPECT_EQ(c->head_dim, 128u);
  EXPECT_EQ(c->group_size(), 4u);
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c->rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c->rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->qkv_bias);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{128001, 128008, 128009}));
  EXPECT_EQ(*c->bos_token_id, 128000);
  EXPECT_EQ(c->num_parameters(), 8030261248u);  // Llama-3.1-8B
  EXPECT_EQ(c->kv_bytes_per_token(DType::kBF16), 131072u);
}

TEST(ConfigTest, LlamaBiasFlags) {
  auto c = ParseEdited(kLlama31_8B, [](json& j) {
    j["attention_bias"] = true;
    j["mlp_bias"] = true;
  });
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_TRUE(c->o_bias);
  EXPECT_TRUE(c->mlp_bias);
  auto plain = ParseConfig(kLlama31_8B, "x");
  ASSERT_TRUE(plain.ok());
  // q,k,v,o biases + gate/up/down biases, per layer.
  EXPECT_EQ(c->num_parameters() - plain->num_parameters(),
            32u * (4096 + 1024 + 1024 + 4096 + 14336 * 2 + 4096));
}

TEST(ConfigTest, ModelTypeWithoutArchitectures) {
  auto c = ParseEdited(kLlama31_8B, [](json& j) { j.erase("architectures"); });
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->arch, Architecture::kLlama);
  auto q = ParseEdited(kQwen25_05B, [](json& j) { j.erase("architectures"); });
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->arch, Architecture::kQwen2);
}

TEST(ConfigTest, TransformersV5RopeParameters) {
  auto c = ParseEdited(kLlama31_8B, [](json& j) {
    json rp = j["rope_scaling"];
    rp["rope_theta"] = 250000.0;
    j.erase("rope_scaling");
    j.erase("rope_theta");
    j.erase("torch_dtype");
    j["dtype"] = "float16";
    j["rope_parameters"] = rp;
  });
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c->rope_theta, 250000.0);
  EXPECT_EQ(c->torch_dtype, DType::kF16);
  auto d = ParseEdited(kQwen25_05B, [](json& j) {
    j.erase("rope_theta");
    j["rope_parameters"] = {{"rope_theta", 10000.0}, {"rope_type", "default"}};
    j["layer_types"] = {"full_attention", "full_attention"};
  });
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->rope_scaling.type, "default");
  EXPECT_DOUBLE_EQ(d->rope_theta, 10000.0);
}

TEST(ConfigTest, DefaultsForOptionalKeys) {
  const char* minimal = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
      "vocab_size": 100})";
  auto c = ParseConfig(minimal, "min");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->num_kv_heads, 4u);  // defaults to num_attention_heads
  EXPECT_EQ(c->head_dim, 16u);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_FALSE(c->bos_token_id.has_value());
  EXPECT_EQ(c->torch_dtype, DType::kF32);
}

TEST(ConfigTest, ExplicitHeadDim) {
  // Some Llama-style models have hidden != heads * head_dim.
  auto c = ParseEdited(kLlama31_8B, [](json& j) { j["head_dim"] = 64; });
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->head_dim, 64u);
  EXPECT_EQ(c->q_dim(), 2048u);
  auto n = ParseEdited(kLlama31_8B, [](json& j) { j["head_dim"] = nullptr; });
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->head_dim, 128u);
}

TEST(ConfigTest, EosNullOrListWithNull) {
  auto c = ParseEdited(kQwen25_05B, [](json& j) {
    j["eos_token_id"] = nullptr;
    j["bos_token_id"] = nullptr;
  });
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->eos_token_ids.empty());
  EXPECT_FALSE(c->bos_token_id.has_value());
}

struct BadCase {
  const char* what;
  const char* base;
  std::function<void(json&)> edit;
  StatusCode code;
  const char* needle;  // must appear in the message
};

TEST(ConfigTest, BadInputsGiveClearErrors) {
  const std::vector<BadCase> cases = {
      {"unknown arch", kLlama31_8B, [](json& j) { j["architectures"] = {"MistralForCausalLM"}; },
       StatusCode::kUnimplemented,
       "architecture 'MistralForCausalLM' is not supported; supported: Qwen2ForCausalLM, "
       "LlamaForCausalLM"},
      {"unknown model_type", kLlama31_8B,
       [](json& j) {
         j.erase("architectures");
         j["model_type"] = "gpt2";
       },
       StatusCode::kUnimplemented, "architecture 'gpt2'"},
      {"no arch at all", kLlama31_8B,
       [](json& j) {
         j.erase("architectures");
         j.erase("model_type");
       },
       StatusCode::kInvalidArgument, "architectures"},
      {"missing hidden", kLlama31_8B, [](json& j) { j.erase("hidden_size"); },
       StatusCode::kInvalidArgument, "required key 'hidden_size' is missing"},
      {"missing vocab", kQwen25_05B, [](json& j) { j.erase("vocab_size"); },
       StatusCode::kInvalidArgument, "'vocab_size'"},
      {"zero layers", kLlama31_8B, [](json& j) { j["num_hidden_layers"] = 0; },
       StatusCode::kInvalidArgument, "'num_hidden_layers' must be a positive integer"},
      {"negative heads", kLlama31_8B, [](json& j) { j["num_attention_heads"] = -4; },
       StatusCode::kInvalidArgument, "'num_attention_heads'"},
      {"string size", kLlama31_8B, [](json& j) { j["hidden_size"] = "4096"; },
       StatusCode::kInvalidArgument, "'hidden_size' must be an integer"},
      {"fractional size", kLlama31_8B, [](json& j) { j["hidden_size"] = 4096.5; },
       StatusCode::kInvalidArgument, "'hidden_size' must be an integer"},
      {"huge size", kLlama31_8B, [](json& j) { j["vocab_size"] = 1LL << 40; },
       StatusCode::kInvalidArgument, "exceeds the supported maximum"},
      {"kv not dividing", kLlama31_8B, [](json& j) { j["num_key_value_heads"] = 5; },
       StatusCode::kInvalidArgument, "'num_key_value_heads': 5 does not divide"},
      {"hidden not multiple", kLlama31_8B, [](json& j) { j["hidden_size"] = 4097; },
       StatusCode::kInvalidArgument, "not a multiple of num_attention_heads"},
      {"odd head_dim", kLlama31_8B, [](json& j) { j["head_dim"] = 127; },
       StatusCode::kInvalidArgument, "even head_dim"},
      {"zero theta", kLlama31_8B, [](json& j) { j["rope_theta"] = 0; },
       StatusCode::kInvalidArgument, "'rope_theta'"},
      {"negative eps", kLlama31_8B, [](json& j) { j["rms_norm_eps"] = -1e-5; },
       StatusCode::kInvalidArgument, "'rms_norm_eps'"},
      {"yarn", kQwen25_05B,
       [](json& j) {
         j["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}};
       },
       StatusCode::kUnimplemented, "rope type 'yarn' is not supported"},
      {"llama3 bad factors", kLlama31_8B,
       [](json& j) { j["rope_scaling"]["high_freq_factor"] = 0.5; }, StatusCode::kInvalidArgument,
       "low_freq_factor < high_freq_factor"},
      {"scaling without type", kLlama31_8B, [](json& j) { j["rope_scaling"].erase("rope_type"); },
       StatusCode::kInvalidArgument, "rope_type"},
      {"sliding window", kQwen25_05B, [](json& j) { j["use_sliding_window"] = true; },
       StatusCode::kUnimplemented, "sliding-window attention"},
      {"sliding layer types", kQwen25_05B,
       [](json& j) {
         j["layer_types"] = {"full_attention", "sliding_attention"};
       },
       StatusCode::kUnimplemented, "layer 1 is \"sliding_attention\""},
      {"gelu", kLlama31_8B, [](json& j) { j["hidden_act"] = "gelu"; }, StatusCode::kUnimplemented,
       "'hidden_act': 'gelu'"},
      {"bad eos", kLlama31_8B,
       [](json& j) {
         j["eos_token_id"] = {1, "x"};
       },
       StatusCode::kInvalidArgument, "'eos_token_id'"},
      {"negative eos", kLlama31_8B, [](json& j) { j["eos_token_id"] = -1; },
       StatusCode::kInvalidArgument, "'eos_token_id'"},
      {"bool as string", kLlama31_8B, [](json& j) { j["tie_word_embeddings"] = "false"; },
       StatusCode::kInvalidArgument, "'tie_word_embeddings' must be true or false"},
      {"fp8 dtype", kLlama31_8B, [](json& j) { j["torch_dtype"] = "float8_e4m3fn"; },
       StatusCode::kUnimplemented, "'torch_dtype'"},
      {"partial rotary", kLlama31_8B, [](json& j) { j["partial_rotary_factor"] = 0.5; },
       StatusCode::kUnimplemented, "partial_rotary_factor"},
  };
  for (const BadCase& bc : cases) {
    auto c = ParseEdited(bc.base, bc.edit);
    ASSERT_FALSE(c.ok()) << bc.what;
    EXPECT_EQ(c.status().code(), bc.code) << bc.what << ": " << c.status().ToString();
    EXPECT_NE(c.status().message().find(bc.needle), std::string::npos)
        << bc.what << ": " << c.status().ToString();
    EXPECT_NE(c.status().message().find("/m/config.json"), std::string::npos)
        << bc.what << ": " << c.status().ToString();
  }
}

TEST(ConfigTest, InvalidJson) {
  for (const char* text : {"", "{", "[1, 2]", "{\"hidden_size\": }", "null", "\"x\""}) {
    auto c = ParseConfig(text, "/m/config.json");
    ASSERT_FALSE(c.ok()) << text;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find("/m/config.json"), std::string::npos);
  }
}

TEST(ConfigTest, LoadConfigMissingDir) {
  auto c = LoadConfig("/nonexistent/model");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
  EXPECT_NE(c.status().message().find("/nonexistent/model/config.json"), std::string::npos);
}

TEST(ConfigTest, ToJsonIsCanonicalAndRoundTrips) {
  auto a = ParseConfig(kLlama31_8B, "a");
  ASSERT_TRUE(a.ok());
  const json j = json::parse(a->ToJson());
  EXPECT_EQ(j["num_hidden_layers"], 32);
  EXPECT_EQ(j["rope_scaling"]["rope_type"], "llama3");
  EXPECT_EQ(j["rms_norm_eps"].get<double>(), 1e-5);  // shortest form, not 9.99999975e-06
  // The canonical JSON is itself a valid config.json with the same meaning.
  json k = j;
  k["architectures"] = {k["architecture"]};
  k["attention_bias"] = false;
  auto b = ParseConfig(k.dump(), "b");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(a->ToJson(), b->ToJson());
  // A changed field changes the canonical text.
  auto c = ParseEdited(kLlama31_8B, [](json& x) { x["rope_theta"] = 500001.0; });
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->ToJson(), c->ToJson());
}

}  // namespace
}  // namespace kvstar
