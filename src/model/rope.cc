#include "model/rope.h"

#include <cmath>
#include <numbers>

namespace kvstar {

std::vector<float> RopeInvFreq(const ModelConfig& cfg) {
  KVSTAR_CHECK(cfg.head_dim >= 2 && cfg.head_dim % 2 == 0, "head_dim %zu", cfg.head_dim);
  const size_t half = cfg.head_dim / 2;
  // torch promotes the Python float scalars to the tensor's dtype (float32), so every step
  // below is a float operation, in the same order as transformers.
  const float base = static_cast<float>(cfg.rope_theta);
  const float dim = static_cast<float>(cfg.head_dim);
  std::vector<float> inv(half);
  for (size_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / dim;
    inv[i] = 1.0f / std::pow(base, exponent);
  }
  const RopeScaling& rs = cfg.rope_scaling;
  if (rs.type == "linear") {
    const float factor = static_cast<float>(rs.factor);
    for (float& f : inv) f = f / factor;
  } else if (rs.type == "llama3") {
    const float factor = static_cast<float>(rs.factor);
    const float low = static_cast<float>(rs.low_freq_factor);
    // Python computes these three in double before torch sees them.
    const double old_ctx_d = static_cast<double>(rs.original_max_position_embeddings);
    const float low_freq_wavelen = static_cast<float>(old_ctx_d / rs.low_freq_factor);
    const float high_freq_wavelen = static_cast<float>(old_ctx_d / rs.high_freq_factor);
    const float high_minus_low = static_cast<float>(rs.high_freq_factor - rs.low_freq_factor);
    const float old_ctx = static_cast<float>(old_ctx_d);
    const float two_pi = static_cast<float>(2 * std::numbers::pi);
    for (float& f : inv) {
      const float wavelen = two_pi / f;
      const float llama = wavelen > low_freq_wavelen ? f / factor : f;
      const float smooth = (old_ctx / wavelen - low) / high_minus_low;
      const float smoothed = (1.0f - smooth) * llama / factor + smooth * llama;
      const bool is_medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
      f = is_medium ? smoothed : llama;
    }
  }
  return inv;
}

}  // namespace kvstar
