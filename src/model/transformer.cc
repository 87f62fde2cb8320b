#include "model/transformer.h"

#include <algorithm>
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

Status Transformer::Layer(size_t l, float* x, size_t n, int64_t first_pos, KvPolicy& kv) {
  const ModelConfig& c = config_;
  const size_t hidden = c.hidden_size;
  const size_t hd = c.head_dim;
  const LayerWeights& L = weights_.layers[l];
  for (size_t i = 0; i < n; ++i) pos_[i] = first_pos + static_cast<int64_t>(i);
  // Attention block: x += o_proj(attn(rope(q), rope(k), v)) on the normed input.
  ops::RmsNorm(x, L.input_norm, n, hidden, c.rms_norm_eps, xn_.data());
  Linear(pool_, L.q, L.q_bias, xn_.data(), n, q_.data());
  Linear(pool_, L.k, L.k_bias, xn_.data(), n, k_.data());
  Linear(pool_, L.v, L.v_bias, xn_.data(), n, v_.data());
  ops::ApplyRope(inv_freq_.data(), hd, pos_.data(), n, c.num_heads, q_.data());
  ops::ApplyRope(inv_freq_.data(), hd, pos_.data(), n, c.num_kv_heads, k_.data());
  KVSTAR_RETURN_IF_ERROR(
      kv.Attend(static_cast<int>(l), q_.data(), k_.data(), v_.data(), n, first_pos, attn_.data()));
  Linear(pool_, L.o, L.o_bias, attn_.data(), n, proj_.data());
  ops::Add(x, proj_.data(), n * hidden, x);
  // MLP block: x += down(silu(gate(xn)) * up(xn)).
  ops::RmsNorm(x, L.post_attn_norm, n, hidden, c.rms_norm_eps, xn_.data());
  Linear(pool_, L.gate, L.gate_bias, xn_.data(), n, gate_.data());
  Linear(pool_, L.up, L.up_bias, xn_.data(), n, up_.data());
  ops::SwiGlu(gate_.data(), up_.data(), n * c.intermediate_size, gate_.data());
  Linear(pool_, L.down, L.down_bias, gate_.data(), n, proj_.data());
  ops::Add(x, proj_.data(), n * hidden, x);
  return Status::Ok();
}

void Transformer::Logits(const float* x, size_t rows, float* logits) {
  ops::RmsNorm(x, weights_.final_norm, rows, config_.hidden_size, config_.rms_norm_eps, xn_.data());
  Linear(pool_, weights_.lm_head, TensorView{}, xn_.data(), rows, logits);
}

namespace {

Status CheckPositions(const ModelConfig& c, int64_t first_pos, size_t n) {
  if (n == 0) return InvalidArgument("forward pass with no tokens");
  if (first_pos < 0 || first_pos + static_cast<int64_t>(n) > c.max_position_embeddings) {
    return OutOfRange("positions up to %lld exceed the model's max_position_embeddings %lld",
                      static_cast<long long>(first_pos + static_cast<int64_t>(n)),
                      static_cast<long long>(c.max_position_embeddings));
  }
  return Status::Ok();
}

}  // namespace

Status Transformer::Forward(std::span<const int32_t> tokens, int64_t first_pos, KvPolicy& kv,
                            LogitsMode mode, float* logits) {
  const size_t n = tokens.size();
  KVSTAR_RETURN_IF_ERROR(CheckPositions(config_, first_pos, n));
  EnsureScratch(n);
  KVSTAR_RETURN_IF_ERROR(ops::Embed(weights_.embed, tokens.data(), n, x_.data()));
  for (size_t l = 0; l < config_.num_layers; ++l) {
    KVSTAR_RETURN_IF_ERROR(Layer(l, x_.data(), n, first_pos, kv));
  }
  KVSTAR_RETURN_IF_ERROR(kv.EndChunk(n, /*prefill_done=*/false));
  if (mode == LogitsMode::kNone) return Status::Ok();
  const size_t first_row = mode == LogitsMode::kLast ? n - 1 : 0;
  Logits(x_.data() + first_row * config_.hidden_size, n - first_row, logits);
  return Status::Ok();
}

Status Transformer::Prefill(std::span<const int32_t> tokens, int64_t first_pos, KvPolicy& kv,
                            size_t chunk, LogitsMode mode, float* logits,
                            const std::function<bool(size_t, size_t)>& progress) {
  const size_t n = tokens.size();
  const size_t hidden = config_.hidden_size;
  KVSTAR_RETURN_IF_ERROR(CheckPositions(config_, first_pos, n));
  if (chunk == 0) return InvalidArgument("prefill chunk must be >= 1");
  chunk = std::min(chunk, n);
  EnsureScratch(chunk);
  if (x_all_.size() < n * hidden) x_all_ = AlignedBuffer<float>(n * hidden);
  KVSTAR_RETURN_IF_ERROR(ops::Embed(weights_.embed, tokens.data(), n, x_all_.data()));
  const size_t layers = config_.num_layers;
  for (size_t l = 0; l < layers; ++l) {
    for (size_t begin = 0; begin < n; begin += chunk) {
      const size_t m = std::min(chunk, n - begin);
      KVSTAR_RETURN_IF_ERROR(
          Layer(l, x_all_.data() + begin * hidden, m, first_pos + static_cast<int64_t>(begin), kv));
      if (progress && !progress(l * n + begin + m, layers * n)) {
        return Cancelled("prefill cancelled at layer %zu, token %zu of %zu", l, begin + m, n);
      }
    }
    KVSTAR_RETURN_IF_ERROR(kv.EndLayerPrefill(static_cast<int>(l)));
  }
  KVSTAR_RETURN_IF_ERROR(kv.EndChunk(n, /*prefill_done=*/true));
  if (mode == LogitsMode::kNone) return Status::Ok();
  // The LM head runs in chunks too: [chunk][vocab] scratch is not needed, logits is the output.
  const size_t first_row = mode == LogitsMode::kLast ? n - 1 : 0;
  for (size_t row = first_row; row < n; row += chunk) {
    const size_t m = std::min(chunk, n - row);
    Logits(x_all_.data() + row * hidden, m, logits + (row - first_row) * config_.vocab_size);
  }
  return Status::Ok();
}

}  // namespace kvstar
