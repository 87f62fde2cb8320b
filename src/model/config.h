// ModelConfig: the architecture hyper-parameters of a Hugging Face model directory
// (config.json of Qwen2ForCausalLM or LlamaForCausalLM), validated once so that the rest of the
// engine can trust them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/half.h"
#include "base/status.h"

namespace kvstar {

enum class Architecture { kQwen2, kLlama };

const char* ArchitectureName(Architecture arch);  // "Qwen2ForCausalLM" / "LlamaForCausalLM"

struct RopeScaling {
  std::string type;  // "" = none, "llama3", "linear", "default" (same as none)
  double factor = 1;
  double low_freq_factor = 1;
  double high_freq_factor = 4;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Architecture arch = Architecture::kLlama;
  std::string architecture_name;  // as written in config.json
  size_t hidden_size = 0;
  size_t intermediate_size = 0;
  size_t num_layers = 0;
  size_t num_heads = 0;
  size_t num_kv_heads = 0;
  size_t head_dim = 0;  // "head_dim" from config.json, else hidden_size / num_heads
  size_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  float rms_norm_eps = 1e-6f;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;               // Qwen2: always; Llama: attention_bias
  bool o_bias = false;                 // Llama attention_bias also applies to o_proj; Qwen2: never
  bool mlp_bias = false;               // Llama mlp_bias
  std::vector<int32_t> eos_token_ids;  // config.json holds an int or a list
  std::optional<int32_t> bos_token_id;
  DType torch_dtype = DType::kF32;

  // Query heads per KV head.
  size_t group_size() const { return num_heads / num_kv_heads; }
  size_t q_dim() const { return num_heads * head_dim; }
  size_t kv_dim() const { return num_kv_heads * head_dim; }
  // K + V bytes of one token over all layers.
  size_t kv_bytes_per_token(DType kv_dtype) const;
  size_t num_parameters() const;
  // Canonical JSON (sorted keys, every field): used in model fingerprints and by `inspect --json`.
  std::string ToJson() const;
};

// Parses and validates a config.json text. `source_name` names the input in errors, e.g.
// "/models/qwen/config.json: key 'num_key_value_heads': 3 does not divide num_attention_heads 14".
StatusOr<ModelConfig> ParseConfig(std::string_view json, std::string_view source_name);
// Reads <model_dir>/config.json.
StatusOr<ModelConfig> LoadConfig(const std::string& model_dir);
// Checks the invariants the engine relies on (positive sizes, heads divisible by KV heads, ...).
// ParseConfig calls it; NamedShape and tests that build configs by hand may call it too.
Status ValidateConfig(const ModelConfig& cfg, std::string_view source_name);

}  // namespace kvstar
