#include "kv/dense_policy.h"

#include "ops/cpu/ops.h"

namespace kvstar {

DensePolicy::DensePolicy(DevicePool& pool, ThreadPool& threads, size_t num_layers,
                         size_t q_heads, float attn_scale)
    : pool_(pool),
      threads_(threads),
      q_heads_(q_heads),
      attn_scale_(attn_scale),
      slots_(num_layers),
      block_ptrs_(num_layers),
      layer_tokens_(num_layers, 0) {}

DensePolicy::~DensePolicy() {
  for (auto& layer : slots_)
    for (int s : layer) pool_.Free(s);
}

Status DensePolicy::Reserve(int layer, size_t end) {
  const size_t bt = pool_.geometry().block_tokens;
  auto& slots = slots_[static_cast<size_t>(layer)];
  auto& ptrs = block_ptrs_[static_cast<size_t>(layer)];
  while (slots.size() * bt < end) {
    KVSTAR_ASSIGN_OR_RETURN(const int s, pool_.Allocate());
    slots.push_back(s);
    ptrs.push_back(pool_.slot(s));
  }
  return Status::Ok();
}

Status DensePolicy::Attend(int layer, const float* q, const float* k, const float* v, size_t n,
                           int64_t first_pos, float* out) {
  KVSTAR_CHECK(layer >= 0 && static_cast<size_t>(layer) < slots_.size(), "layer %d of %zu",
               layer, slots_.size());
  size_t& cached = layer_tokens_[static_cast<size_t>(layer)];
  KVSTAR_CHECK(static_cast<size_t>(first_pos) == cached,
               "layer %d holds %zu tokens, chunk starts at %lld", layer, cached,
               static_cast<long long>(first_pos));
  const size_t end = cached + n;
  KVSTAR_RETURN_IF_ERROR(Reserve(layer, end));
  auto& ptrs = block_ptrs_[static_cast<size_t>(layer)];
  ops::WriteKv(pool_.geometry(), ptrs.data(), cached, n, k, v);
  q_last_.resize(n);
  for (size_t i = 0; i < n; ++i) q_last_[i] = static_cast<int64_t>(cached + i);
  ops::AttentionOverBlocks(threads_, pool_.geometry(), q_heads_, q, n, q_last_.data(),
                           const_cast<const void* const*>(ptrs.data()), end, attn_scale_, out);
  cached = end;
  return Status::Ok();
}

Status DensePolicy::EndChunk(size_t n, bool /*prefill_done*/) {
  num_tokens_ += n;
  for (size_t l = 0; l < layer_tokens_.size(); ++l) {
    KVSTAR_CHECK(layer_tokens_[l] == num_tokens_, "layer %zu holds %zu tokens, expected %zu", l,
                 layer_tokens_[l], num_tokens_);
  }
  return Status::Ok();
}

KvStats DensePolicy::Stats() const {
  KvStats s;
  s.tokens = num_tokens_;
  for (const auto& layer : slots_) s.device_blocks += layer.size();
  s.device_bytes = s.device_blocks * pool_.block_bytes();
  return s;
}

}  // namespace kvstar
