#include "model/shapes.h"

namespace kvstar {
namespace {

ModelConfig Llama3_8B() {
  ModelConfig c;
  c.arch = Architecture::kLlama;
  c.architecture_name = "LlamaForCausalLM";
  c.hidden_size = 4096;
  c.intermediate_size = 14336;
  c.num_layers = 32;
  c.num_heads = 32;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.vocab_size = 128256;
  c.max_position_embeddings = 131072;
  c.rope_theta = 500000.0;
  c.rope_scaling = {.type = "llama3",
                    .factor = 8.0,
                    .low_freq_factor = 1.0,
                    .high_freq_factor = 4.0,
                    .original_max_position_embeddings = 8192};
  c.rms_norm_eps = 1e-5f;
  c.bos_token_id = 128000;
  c.eos_token_ids = {128001};
  c.torch_dtype = DType::kBF16;
  return c;
}

// Qwen2.5-14B-Instruct as shipped on Hugging Face: max_position_embeddings 32768 (YaRN extends
// it to 128K, which the engine does not implement), rms_norm_eps 1e-6.
ModelConfig Qwen25_14B() {
  ModelConfig c;
  c.arch = Architecture::kQwen2;
  c.architecture_name = "Qwen2ForCausalLM";
  c.hidden_size = 5120;
  c.intermediate_size = 13824;
  c.num_layers = 48;
  c.num_heads = 40;
  c.num_kv_heads = 8;
  c.head_dim = 128;
  c.vocab_size = 152064;
  c.max_position_embeddings = 32768;
  c.rope_theta = 1000000.0;
  c.rms_norm_eps = 1e-6f;
  c.qkv_bias = true;
  c.bos_token_id = 151643;
  c.eos_token_ids = {151645, 151643};
  c.torch_dtype = DType::kBF16;
  return c;
}

ModelConfig Llama2_7B() {
  ModelConfig c;
  c.arch = Architecture::kLlama;
  c.architecture_name = "LlamaForCausalLM";
  c.hidden_size = 4096;
  c.intermediate_size = 11008;
  c.num_layers = 32;
  c.num_heads = 32;
  c.num_kv_heads = 32;
  c.head_dim = 128;
  c.vocab_size = 32000;
  c.max_position_embeddings = 4096;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-5f;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.torch_dtype = DType::kF16;
  return c;
}

// Llama-2-7B extended to 32K positions by linear RoPE interpolation (as LLaMA-2-7B-32K): the
// multi-head-attention shape for long-context offloading benchmarks.
ModelConfig Llama2_7B_32K() {
  ModelConfig c = Llama2_7B();
  c.max_position_embeddings = 32768;
  c.rope_scaling.type = "linear";
  c.rope_scaling.factor = 8;
  return c;
}

// Llama-2-13B: multi-head attention (40 KV heads), the 13B-class shape for KVPR (where X is half
// of K+V, as in the OPT-13B setting of the KVPR paper).
ModelConfig Llama2_13B() {
  ModelConfig c = Llama2_7B();
  c.hidden_size = 5120;
  c.intermediate_size = 13824;
  c.num_layers = 40;
  c.num_heads = 40;
  c.num_kv_heads = 40;
  return c;
}

ModelConfig Qwen2_100M() {
  ModelConfig c;
  c.arch = Architecture::kQwen2;
  c.architecture_name = "Qwen2ForCausalLM";
  c.hidden_size = 768;
  c.intermediate_size = 2048;
  c.num_layers = 12;
  c.num_heads = 12;
  c.num_kv_heads = 2;
  c.head_dim = 64;
  c.vocab_size = 32000;
  c.max_position_embeddings = 32768;
  c.rope_theta = 1000000.0;
  c.rms_norm_eps = 1e-6f;
  c.tie_word_embeddings = true;
  c.qkv_bias = true;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.torch_dtype = DType::kBF16;
  return c;
}

// A small multi-head-attention Llama (the dimensions of llama2.c's stories110M: 768 hidden,
// 12 layers, 12 query and 12 KV heads of 64, vocab 32000) with positions extended to 128K for
// random-weight benchmarks: 36 KiB of bf16 KV per token against 220 MB of weights, so at 32K
// tokens the KV (1.2 GB) dominates a CPU decode step, the regime KVstar is for.
ModelConfig LlamaMha110M() {
  ModelConfig c;
  c.arch = Architecture::kLlama;
  c.architecture_name = "LlamaForCausalLM";
  c.hidden_size = 768;
  c.intermediate_size = 2048;
  c.num_layers = 12;
  c.num_heads = 12;
  c.num_kv_heads = 12;
  c.head_dim = 64;
  c.vocab_size = 32000;
  c.max_position_embeddings = 131072;
  c.rope_theta = 500000.0;
  c.rms_norm_eps = 1e-5f;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.torch_dtype = DType::kBF16;
  return c;
}

struct Named {
  const char* name;
  ModelConfig (*make)();
};
constexpr Named kShapes[] = {{"llama3-8b", Llama3_8B},        {"qwen2.5-14b", Qwen25_14B},
                             {"llama2-7b", Llama2_7B},        {"llama2-7b-32k", Llama2_7B_32K},
                             {"llama2-13b", Llama2_13B},      {"qwen2-100m", Qwen2_100M},
                             {"llama-mha-110m", LlamaMha110M}};

}  // namespace

StatusOr<ModelConfig> NamedShape(std::string_view name) {
  for (const Named& n : kShapes) {
    if (name == n.name) {
      ModelConfig c = n.make();
      KVSTAR_RETURN_IF_ERROR(ValidateConfig(c, std::string("shape ") + n.name));
      return c;
    }
  }
  std::string known;
  for (const Named& n : kShapes) known += std::string(known.empty() ? "" : ", ") + n.name;
  return NotFound("unknown model shape '%.*s'; known shapes: %s", static_cast<int>(name.size()),
                  name.data(), known.c_str());
}

std::vector<std::string> NamedShapeList() {
  std::vector<std::string> out;
  for (const Named& n : kShapes) out.push_back(n.name);
  return out;
}

}  // namespace kvstar
