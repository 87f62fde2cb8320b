// ModelWeights: every weight tensor of a Qwen2 / Llama decoder, checked against the config.
// Loaded weights stay in their stored dtype and point into the memory-mapped safetensors files
// (no copy); Random() builds owning buffers for benchmarks of real model shapes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/hash.h"
#include "base/status.h"
#include "base/tensor_view.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace kvstar {

class ThreadPool;

// Called after each loaded or generated layer: (layers done, total layers).
using ProgressCallback = std::function<void(size_t done, size_t total)>;

// Matrices are [out_features, in_features] as in Hugging Face (y = W x). Norm weights and
// biases are 1 x N views. Absent biases are empty views (data == nullptr).
struct LayerWeights {
  TensorView input_norm;  // [hidden]
  TensorView q, k, v, o;  // q: [heads*head_dim, hidden], k/v: [kv_heads*head_dim, hidden],
                          // o: [hidden, heads*head_dim]
  TensorView q_bias, k_bias, v_bias;         // cfg.qkv_bias
  TensorView o_bias;                         // cfg.o_bias
  TensorView post_attn_norm;                 // [hidden]
  TensorView gate, up;                       // [intermediate, hidden]
  TensorView down;                           // [hidden, intermediate]
  TensorView gate_bias, up_bias, down_bias;  // cfg.mlp_bias
};

class ModelWeights {
 public:
  // Opens <dir>/model.safetensors (or the sharded index) and checks every tensor's presence,
  // shape and dtype (F32/BF16/F16) against `cfg`.
  static StatusOr<std::unique_ptr<ModelWeights>> Load(const std::string& dir,
                                                      const ModelConfig& cfg,
                                                      ProgressCallback progress = nullptr);
  // Random weights in memory: matrices ~ N(0, 0.02^2) (approximate normal), biases ~ N(0, 0.02^2),
  // norms = 1. Deterministic for a seed, whatever the thread count. `pool` parallelises the
  // generation (nullptr: a temporary pool over all hardware threads).
  static std::unique_ptr<ModelWeights> Random(const ModelConfig& cfg, DType dtype, uint64_t seed,
                                              ThreadPool* pool = nullptr,
                                              ProgressCallback progress = nullptr);

  ModelWeights(const ModelWeights&) = delete;
  ModelWeights& operator=(const ModelWeights&) = delete;
  ~ModelWeights();

  const ModelConfig& config() const { return config_; }
  // XXH3-128 over the canonical config, every tensor's name, dtype and shape, and the first and
  // last 4 KiB of its bytes: cheap, yet different weights give different fingerprints.
  Hash128 fingerprint() const { return fingerprint_; }
  // Bytes of all distinct weight tensors (a tied lm_head is counted once).
  size_t weight_bytes() const;
  // The dtype of the big matrices (q_proj of layer 0).
  DType weight_dtype() const { return layers.empty() ? embed.dtype : layers[0].q.dtype; }
  // Every tensor with its Hugging Face name, in a fixed order (a tied lm_head is not listed).
  std::vector<std::pair<std::string, TensorView>> NamedTensors() const;

  TensorView embed;       // [vocab, hidden]
  TensorView final_norm;  // [hidden]
  TensorView lm_head;     // [vocab, hidden]; same data as embed when tied
  std::vector<LayerWeights> layers;

 private:
  explicit ModelWeights(const ModelConfig& cfg) : config_(cfg) {}
  void ComputeFingerprint();

  ModelConfig config_;
  Hash128 fingerprint_;
  std::unique_ptr<TensorSet> files_;           // Load(): keeps the maps alive
  std::vector<AlignedBuffer<uint8_t>> owned_;  // Random(): owning storage
};

}  // namespace kvstar
