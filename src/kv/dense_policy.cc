#include "kv/dense_policy.h"

#include <algorithm>

#include "kv/exact_selection.h"
#include "ops/cpu/ops.h"
#include "sparse/retriever.h"

namespace kvstar {

DensePolicy::DensePolicy(DevicePool& pool, ThreadPool& threads, size_t num_layers, size_t q_heads,
                         float attn_scale)
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
  KVSTAR_CHECK(layer >= 0 && static_cast<size_t>(layer) < slots_.size(), "layer %d of %zu", layer,
               slots_.size());
  size_t& cached = layer_tokens_[static_cast<size_t>(layer)];
  KVSTAR_CHECK(static_cast<size_t>(first_pos) == cached,
               "layer %d holds %zu tokens, chunk starts at %lld", layer, cached,
               static_cast<long long>(first_pos));
  const size_t end = cached + n;
  KVSTAR_RETURN_IF_ERROR(Reserve(layer, end));
  auto& ptrs = block_ptrs_[static_cast<size_t>(layer)];
  ops::WriteKv(pool_.geometry(), ptrs.data(), cached, n, k, v);
  if (oracle_ && prefill_done_ && n == 1) {
    OracleAttend(layer, q, cached, out);
    cached = end;
    return Status::Ok();
  }
  q_last_.resize(n);
  for (size_t i = 0; i < n; ++i) q_last_[i] = static_cast<int64_t>(cached + i);
  ops::AttentionOverBlocks(threads_, pool_.geometry(), q_heads_, q, n, q_last_.data(),
                           const_cast<const void* const*>(ptrs.data()), end, attn_scale_, out);
  cached = end;
  return Status::Ok();
}

void DensePolicy::OracleAttend(int layer, const float* q, size_t pos, float* out) {
  const KvGeometry& g = pool_.geometry();
  const size_t bt = g.block_tokens;
  const auto& ptrs = block_ptrs_[static_cast<size_t>(layer)];
  const size_t full = pos / bt;  // full blocks before the one holding the new token
  const size_t init_end = std::min(full, oracle_->init_window_sz);
  const size_t local_begin = full > oracle_->local_window_sz ? full - oracle_->local_window_sz : 0;
  std::vector<uint32_t> cands;
  for (size_t b = init_end; b < local_begin; ++b) cands.push_back(static_cast<uint32_t>(b));
  const std::vector<uint32_t> sel =
      ExactSelection(g, q, 1, q_heads_, attn_scale_, const_cast<const void* const*>(ptrs.data()),
                     pos + 1, cands, sparse::SelectionSize(cands.size(), oracle_->sparse_ratio),
                     oracle_->vote == "max" ? BlockVote::kMax : BlockVote::kSum);
  table_.clear();
  size_t si = 0;
  for (size_t b = 0; b < full; ++b) {
    while (si < sel.size() && sel[si] < b) ++si;
    const bool keep = b < init_end || b >= local_begin || (si < sel.size() && sel[si] == b);
    if (keep) table_.push_back(ptrs[b]);
  }
  const size_t attended_full = table_.size();
  table_.push_back(ptrs[full]);
  const size_t num = attended_full * bt + pos % bt + 1;
  const int64_t q_last = static_cast<int64_t>(num - 1);
  ops::AttentionOverBlocks(threads_, g, q_heads_, q, 1, &q_last, table_.data(), num, attn_scale_,
                           out);
}

Status DensePolicy::EndChunk(size_t n, bool prefill_done) {
  if (prefill_done) prefill_done_ = true;
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
