#include "engine/cuda/cuda_model.h"

#include <cstring>

#include "model/rope.h"
#include "ops/cuda/ops.h"

namespace kvstar::cuda {

StatusOr<TensorView> CudaModel::Place(const TensorView& v, bool random, bool ones, uint32_t seed) {
  if (v.empty() && !random && !ones) return TensorView{};
  KVSTAR_ASSIGN_OR_RETURN(DeviceBuffer buf, DeviceBuffer::Allocate(v.bytes()));
  CudaStream* s = ctx_.compute_stream();
  if (ones) {
    // Norm weights: a host row of ones in the dtype, copied synchronously (a few KB).
    std::vector<uint8_t> host(v.bytes());
    for (size_t i = 0; i < v.elements(); ++i) {
      switch (v.dtype) {
        case DType::kF32: {
          const float one = 1.0f;
          std::memcpy(host.data() + i * 4, &one, 4);
          break;
        }
        case DType::kBF16:
          host[2 * i] = 0x80, host[2 * i + 1] = 0x3f;
          break;
        case DType::kF16:
          host[2 * i] = 0x00, host[2 * i + 1] = 0x3c;
          break;
      }
    }
    KVSTAR_RETURN_IF_ERROR(ctx_.CopyToDevice(buf.data(), host.data(), host.size(), s));
    KVSTAR_RETURN_IF_ERROR(ctx_.Synchronize(s));
  } else if (random) {
    // Uniform in [-a, a] has standard deviation a / sqrt(3): a = 0.02 * sqrt(3).
    KVSTAR_RETURN_IF_ERROR(FillRandom(s, buf.data(), v.elements(), v.dtype, 0.0346f, seed));
  } else {
    KVSTAR_RETURN_IF_ERROR(ctx_.CopyToDevice(buf.data(), v.data, v.bytes(), s));
    // Loaded weights may be a memory map: finish before the next tensor pages in.
    KVSTAR_RETURN_IF_ERROR(ctx_.Synchronize(s));
  }
  TensorView out = v;
  out.data = buf.data();
  weight_bytes_ += v.bytes();
  buffers_.push_back(std::move(buf));
  return out;
}

Status CudaModel::InitRope() {
  const std::vector<float> inv = RopeInvFreq(config_);
  KVSTAR_ASSIGN_OR_RETURN(inv_freq_, DeviceBuffer::Allocate(inv.size() * sizeof(float)));
  KVSTAR_RETURN_IF_ERROR(ctx_.CopyToDevice(inv_freq_.data(), inv.data(), inv.size() * sizeof(float),
                                           ctx_.compute_stream()));
  return ctx_.Synchronize(ctx_.compute_stream());
}

StatusOr<std::unique_ptr<CudaModel>> CudaModel::Upload(DeviceContext& ctx,
                                                       const ModelConfig& config,
                                                       const ModelWeights& weights,
                                                       const Progress& progress) {
  std::unique_ptr<CudaModel> m(new CudaModel(ctx, config));
  KVSTAR_RETURN_IF_ERROR(ctx.Activate());
  KVSTAR_RETURN_IF_ERROR(m->InitRope());
  auto place = [&](const TensorView& v) { return m->Place(v, false, false, 0); };
  KVSTAR_ASSIGN_OR_RETURN(m->embed_, place(weights.embed));
  KVSTAR_ASSIGN_OR_RETURN(m->final_norm_, place(weights.final_norm));
  if (weights.lm_head.data == weights.embed.data) {
    m->lm_head_ = m->embed_;
  } else {
    KVSTAR_ASSIGN_OR_RETURN(m->lm_head_, place(weights.lm_head));
  }
  const size_t layers = weights.layers.size();
  for (size_t l = 0; l < layers; ++l) {
    const LayerWeights& h = weights.layers[l];
    LayerWeights d;
    for (auto [dst, src] : {std::pair{&d.input_norm, &h.input_norm},
                            {&d.q, &h.q},
                            {&d.k, &h.k},
                            {&d.v, &h.v},
                            {&d.o, &h.o},
                            {&d.q_bias, &h.q_bias},
                            {&d.k_bias, &h.k_bias},
                            {&d.v_bias, &h.v_bias},
                            {&d.o_bias, &h.o_bias},
                            {&d.post_attn_norm, &h.post_attn_norm},
                            {&d.gate, &h.gate},
                            {&d.up, &h.up},
                            {&d.down, &h.down},
                            {&d.gate_bias, &h.gate_bias},
                            {&d.up_bias, &h.up_bias},
                            {&d.down_bias, &h.down_bias}}) {
      KVSTAR_ASSIGN_OR_RETURN(*dst, place(*src));
    }
    m->layers_.push_back(d);
    if (progress) progress(l + 1, layers);
  }
  return m;
}

StatusOr<std::unique_ptr<CudaModel>> CudaModel::Random(DeviceContext& ctx,
                                                       const ModelConfig& config, DType dtype,
                                                       uint32_t seed, const Progress& progress) {
  std::unique_ptr<CudaModel> m(new CudaModel(ctx, config));
  KVSTAR_RETURN_IF_ERROR(ctx.Activate());
  KVSTAR_RETURN_IF_ERROR(m->InitRope());
  const ModelConfig& c = config;
  uint32_t next_seed = seed * 7919u + 1;
  auto mat = [&](size_t rows, size_t cols) {
    return m->Place(TensorView{nullptr, dtype, rows, cols}, true, false, next_seed++);
  };
  auto ones = [&](size_t cols) {
    return m->Place(TensorView{nullptr, dtype, 1, cols}, false, true, 0);
  };
  KVSTAR_ASSIGN_OR_RETURN(m->embed_, mat(c.vocab_size, c.hidden_size));
  KVSTAR_ASSIGN_OR_RETURN(m->final_norm_, ones(c.hidden_size));
  if (c.tie_word_embeddings) {
    m->lm_head_ = m->embed_;
  } else {
    KVSTAR_ASSIGN_OR_RETURN(m->lm_head_, mat(c.vocab_size, c.hidden_size));
  }
  for (size_t l = 0; l < c.num_layers; ++l) {
    LayerWeights d;
    KVSTAR_ASSIGN_OR_RETURN(d.input_norm, ones(c.hidden_size));
    KVSTAR_ASSIGN_OR_RETURN(d.post_attn_norm, ones(c.hidden_size));
    KVSTAR_ASSIGN_OR_RETURN(d.q, mat(c.q_dim(), c.hidden_size));
    KVSTAR_ASSIGN_OR_RETURN(d.k, mat(c.kv_dim(), c.hidden_size));
    KVSTAR_ASSIGN_OR_RETURN(d.v, mat(c.kv_dim(), c.hidden_size));
    KVSTAR_ASSIGN_OR_RETURN(d.o, mat(c.hidden_size, c.q_dim()));
    KVSTAR_ASSIGN_OR_RETURN(d.gate, mat(c.intermediate_size, c.hidden_size));
    KVSTAR_ASSIGN_OR_RETURN(d.up, mat(c.intermediate_size, c.hidden_size));
    KVSTAR_ASSIGN_OR_RETURN(d.down, mat(c.hidden_size, c.intermediate_size));
    if (c.qkv_bias) {
      KVSTAR_ASSIGN_OR_RETURN(d.q_bias, mat(1, c.q_dim()));
      KVSTAR_ASSIGN_OR_RETURN(d.k_bias, mat(1, c.kv_dim()));
      KVSTAR_ASSIGN_OR_RETURN(d.v_bias, mat(1, c.kv_dim()));
    }
    if (c.o_bias) {
      KVSTAR_ASSIGN_OR_RETURN(d.o_bias, mat(1, c.hidden_size));
    }
    if (c.mlp_bias) {
      KVSTAR_ASSIGN_OR_RETURN(d.gate_bias, mat(1, c.intermediate_size));
      KVSTAR_ASSIGN_OR_RETURN(d.up_bias, mat(1, c.intermediate_size));
      KVSTAR_ASSIGN_OR_RETURN(d.down_bias, mat(1, c.hidden_size));
    }
    m->layers_.push_back(d);
    if (progress) progress(l + 1, c.num_layers);
  }
  KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(ctx.compute_stream()));
  return m;
}

}  // namespace kvstar::cuda
