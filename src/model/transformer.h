// Transformer: the Qwen2 / Llama decoder forward pass as calls into the CPU ops. The two
// architectures share one graph (pre-norm, GQA attention with RoPE, SwiGLU MLP); the config
// decides biases, tied embeddings and the RoPE frequencies. K/V storage and attention are
// delegated to a KvPolicy, so the same forward runs every decode mode.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/status.h"
#include "base/thread_pool.h"
#include "kv/kv_policy.h"
#include "model/config.h"
#include "model/weights.h"

namespace kvstar {

enum class LogitsMode { kNone, kLast, kAll };

class Transformer {
 public:
  // config and weights must outlive the Transformer. Not thread-safe: one per decode thread.
  Transformer(const ModelConfig& config, const ModelWeights& weights, ThreadPool& pool);

  // Decode: runs tokens at positions [first_pos, first_pos + n) through every layer, token-major
  // (all tokens through layer 0, then layer 1...). logits receives [vocab] for the last token
  // (kLast) or [n][vocab] (kAll). Ends with kv.EndChunk(n, false).
  Status Forward(std::span<const int32_t> tokens, int64_t first_pos, KvPolicy& kv, LogitsMode mode,
                 float* logits);

  // Prefill, layer-major: every prompt token goes through layer 0 (in chunks of `chunk` tokens,
  // so attention memory stays bounded) before any goes through layer 1, and kv.EndLayerPrefill
  // runs after each layer. A policy can then shrink a layer's KV to its selection before the next
  // layer's KV exists, so the device never holds the whole prompt's KV for all layers at once.
  // Costs n * hidden floats for the residual stream. Ends with kv.EndChunk(n, true).
  // progress(done, total) counts token-layers; returning false cancels (kCancelled).
  Status Prefill(std::span<const int32_t> tokens, int64_t first_pos, KvPolicy& kv, size_t chunk,
                 LogitsMode mode, float* logits,
                 const std::function<bool(size_t, size_t)>& progress = nullptr);

  const ModelConfig& config() const { return config_; }
  const std::vector<float>& inv_freq() const { return inv_freq_; }

 private:
  void EnsureScratch(size_t n);
  // Runs layer l on rows x[0, n) (positions pos_[0, n)): attention through kv, then the MLP.
  Status Layer(size_t l, float* x, size_t n, int64_t first_pos, KvPolicy& kv);
  void Logits(const float* x, size_t rows, float* logits);

  const ModelConfig& config_;
  const ModelWeights& weights_;
  ThreadPool& pool_;
  std::vector<float> inv_freq_;  // [head_dim / 2]
  size_t scratch_tokens_ = 0;
  AlignedBuffer<float> x_;      // [n][hidden] residual stream
  AlignedBuffer<float> xn_;     // [n][hidden] normed
  AlignedBuffer<float> q_;      // [n][q_heads][head_dim]
  AlignedBuffer<float> k_;      // [n][kv_heads][head_dim]
  AlignedBuffer<float> v_;      // [n][kv_heads][head_dim]
  AlignedBuffer<float> attn_;   // [n][q_heads][head_dim]
  AlignedBuffer<float> proj_;   // [n][hidden]
  AlignedBuffer<float> gate_;   // [n][intermediate]
  AlignedBuffer<float> up_;     // [n][intermediate]
  std::vector<int64_t> pos_;    // [n]
  AlignedBuffer<float> x_all_;  // [prompt tokens][hidden] residual stream of a prefill
};

}  // namespace kvstar
