// CudaModel: the weights of a Qwen2 / Llama decoder in device memory, either copied from a loaded
// model (ModelWeights) or generated on the device for benchmarks of real model shapes (no host
// copy of 16 GB of random numbers). Views keep the stored dtype; kernels accumulate in f32.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "base/status.h"
#include "base/tensor_view.h"
#include "model/config.h"
#include "model/weights.h"
#include "ops/cuda/device.h"

namespace kvstar::cuda {

class CudaModel {
 public:
  using Progress = std::function<void(size_t done, size_t total)>;

  // Copies every tensor of `weights` to the device (a tied lm_head stays shared).
  static StatusOr<std::unique_ptr<CudaModel>> Upload(DeviceContext& ctx, const ModelConfig& config,
                                                     const ModelWeights& weights,
                                                     const Progress& progress = nullptr);
  // Random weights of `config`'s shape made on the device: matrices and biases uniform in
  // [-0.035, 0.035] (standard deviation 0.02, as ModelWeights::Random), norms = 1.
  static StatusOr<std::unique_ptr<CudaModel>> Random(DeviceContext& ctx, const ModelConfig& config,
                                                     DType dtype, uint32_t seed,
                                                     const Progress& progress = nullptr);

  DeviceContext& ctx() const { return ctx_; }
  const ModelConfig& config() const { return config_; }
  // Device views (data on the device), laid out as ModelWeights.
  const TensorView& embed() const { return embed_; }
  const TensorView& final_norm() const { return final_norm_; }
  const TensorView& lm_head() const { return lm_head_; }
  const LayerWeights& layer(size_t l) const { return layers_[l]; }
  // [head_dim / 2] on the device.
  const float* inv_freq() const { return inv_freq_.as<float>(); }
  size_t weight_bytes() const { return weight_bytes_; }
  DType weight_dtype() const { return layers_.empty() ? embed_.dtype : layers_[0].q.dtype; }

 private:
  CudaModel(DeviceContext& ctx, const ModelConfig& config) : ctx_(ctx), config_(config) {}
  Status InitRope();
  // A device copy of host view `v` (or, with host == nullptr, `v`'s shape filled on the device).
  StatusOr<TensorView> Place(const TensorView& v, bool random, bool ones, uint32_t seed);

  DeviceContext& ctx_;
  ModelConfig config_;
  std::vector<DeviceBuffer> buffers_;
  TensorView embed_, final_norm_, lm_head_;
  std::vector<LayerWeights> layers_;
  DeviceBuffer inv_freq_;
  size_t weight_bytes_ = 0;
};

}  // namespace kvstar::cuda
