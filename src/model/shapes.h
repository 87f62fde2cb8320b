// Named model shapes: the configs of real models, for benchmarks with random weights generated
// in memory (`kvstar bench --shape llama3-8b`, `kvstar inspect --shape ...`).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"

namespace kvstar {

// "llama3-8b"   Llama-3.1-8B (llama3 RoPE scaling, 128K context)
// "qwen2.5-14b" Qwen2.5-14B-Instruct (QKV bias, max positions 32768 as shipped)
// "llama2-7b"   Llama-2-7B
// "llama2-7b-32k" Llama-2-7B with linear RoPE scaling x8 to 32K positions (multi-head attention)
// "llama2-13b"  Llama-2-13B (multi-head attention, 4K positions)
// "qwen2-100m"  a ~100M-parameter Qwen2 (tied embeddings) for CPU decode benchmarks
// Unknown names give NotFound listing the known ones.
StatusOr<ModelConfig> NamedShape(std::string_view name);
std::vector<std::string> NamedShapeList();

}  // namespace kvstar
