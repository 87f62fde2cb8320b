#include "model/transformer.h"

#include <cmath>

#include "model/rope.h"
#include "ops/cpu/ops.h"

namespace kvstar {

Transformer::Transformer(const ModelConfig& config, const ModelWeights& weights, ThreadPool& pool)
    : config_(config), weights_(weights), pool_(pool), inv_freq_(RopeInvFreq(config)) {}

void Transformer::EnsureScratch(size_t n) {
  if (n <= scratch_tokens_) return;
  const ModelConfig& c = config_;
  x_ = AlignedBuffer<float>(n * c.hidden_size);
  xn_ = AlignedBuffer<float>(n * c.hidden_size);
  q_ = AlignedBuffer<float>(n * c.num_heads * c.head_dim);
  k_ = AlignedBuffer<float>(n * c.num_kv_heads * c.head_dim);
  v_ = AlignedBuffer<float>(n * c.num_kv_heads * c.head_dim);
  attn_ = AlignedBuffer<float>(n * c.num_heads * c.head_dim);
  proj_ = AlignedBuffer<float>(n * c.hidden_size);
  gate_ = AlignedBuffer<float>(n * c.intermediate_size);
  up_ = AlignedBuffer<float>(n * c.intermediate_size);
  pos_.resize(n);
  scratch_tokens_ = n;
}

namespace {

// y[n][rows] = x[n][cols] . W^T (+ bias)
void Linear(ThreadPool& pool, const TensorView& w, const TensorView& bias, const float* x, size_t n,
            float* y) {
  if (n == 1) {
    ops::MatVec(pool, w, x, y);
  } else {
    ops::MatMul(pool, w, x, n, y);
  }
  if (!bias.empty()) ops::AddBias(bias, n, y);
}

}  // namespace

Status Transformer::Forward(std::span<const int32_t> tokens, int64_t first_pos, KvPolicy& kv,
                            LogitsMode mode, float* logits, bool prefill_done) {
  const ModelConfig& c = config_;
  const size_t n = tokens.size();
  if (n == 0) return InvalidArgument("Forward called with no tokens");
  if (first_pos + static_cast<int64_t>(n) > c.max_position_embeddings) {
    return OutOfRange("positions up to %lld exceed the model's max_position_embeddings %lld",
                      static_cast<long long>(first_pos + static_cast<int64_t>(n)),
                      static_cast<long long>(c.max_position_embeddings));
  }
  EnsureScratch(n);
  const size_t hidden = c.hidden_size;
  const size_t hd = c.head_dim;
  for (size_t i = 0; i < n; ++i) pos_[i] = first_pos + static_cast<int64_t>(i);

  KVSTAR_RETURN_IF_ERROR(ops::Embed(weights_.embed, tokens.data(), n, x_.data()));
  for (size_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = weights_.layers[l];
    // Attention block: x += o_proj(attn(rope(q), rope(k), v)) on the normed input.
    ops::RmsNorm(x_.data(), L.input_norm, n, hidden, c.rms_norm_eps, xn_.data());
    Linear(pool_, L.q, L.q_bias, xn_.data(), n, q_.data());
    Linear(pool_, L.k, L.k_bias, xn_.data(), n, k_.data());
    Linear(pool_, L.v, L.v_bias, xn_.data(), n, v_.data());
    ops::ApplyRope(inv_freq_.data(), hd, pos_.data(), n, c.num_heads, q_.data());
    ops::ApplyRope(inv_freq_.data(), hd, pos_.data(), n, c.num_kv_heads, k_.data());
    KVSTAR_RETURN_IF_ERROR(kv.Attend(static_cast<int>(l), q_.data(), k_.data(), v_.data(), n,
                                     first_pos, attn_.data()));
    Linear(pool_, L.o, L.o_bias, attn_.data(), n, proj_.data());
    ops::Add(x_.data(), proj_.data(), n * hidden, x_.data());
    // MLP block: x += down(silu(gate(xn)) * up(xn)).
    ops::RmsNorm(x_.data(), L.post_attn_norm, n, hidden, c.rms_norm_eps, xn_.data());
    Linear(pool_, L.gate, L.gate_bias, xn_.data(), n, gate_.data());
    Linear(pool_, L.up, L.up_bias, xn_.data(), n, up_.data());
    ops::SwiGlu(gate_.data(), up_.data(), n * c.intermediate_size, gate_.data());
    Linear(pool_, L.down, L.down_bias, gate_.data(), n, proj_.data());
    ops::Add(x_.data(), proj_.data(), n * hidden, x_.data());
  }
  KVSTAR_RETURN_IF_ERROR(kv.EndChunk(n, prefill_done));

  if (mode == LogitsMode::kNone) return Status::Ok();
  const size_t first_row = mode == LogitsMode::kLast ? n - 1 : 0;
  const size_t rows = n - first_row;
  ops::RmsNorm(x_.data() + first_row * hidden, weights_.final_norm, rows, hidden, c.rms_norm_eps,
               xn_.data());
  Linear(pool_, weights_.lm_head, TensorView{}, xn_.data(), rows, logits);
  return Status::Ok();
}

}  // namespace kvstar
