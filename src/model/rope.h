// Rotary position embedding frequencies, bit-compatible with Hugging Face transformers.
#pragma once

#include <vector>

#include "model/config.h"

namespace kvstar {

// inv_freq[i] for i in [0, head_dim/2), computed in float32 the way transformers computes it
// (`1.0 / (base ** (arange(0, dim, 2).float() / dim))`), then adjusted for cfg.rope_scaling:
// "llama3" (_compute_llama3_parameters) or "linear" (positions / factor == inv_freq / factor).
// The rotation angle of position p is p * inv_freq[i], applied to channel pairs (i, i + dim/2).
std::vector<float> RopeInvFreq(const ModelConfig& cfg);

}  // namespace kvstar
