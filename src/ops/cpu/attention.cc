// WriteKv and AttentionOverBlocks: dispatch to the per-target kernels of attention-inl.h.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "base/check.h"
#include "base/half.h"
#include "ops/cpu/ops.h"
#include "ops/cpu/ops_internal.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/attention.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/cpu/attention-inl.h"

#if HWY_ONCE
namespace kvstar::ops {
namespace {

// dst[0, count) = src converted to dtype (bf16 / f16: round to nearest even).
void StoreRow(const float* src, size_t count, DType dtype, void* dst) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, count * sizeof(float));
      return;
    case DType::kBF16: {
      auto* out = static_cast<bf16_t*>(dst);
      for (size_t i = 0; i < count; ++i) out[i] = F32ToBF16(src[i]);
      return;
    }
    case DType::kF16: {
      auto* out = static_cast<f16_t*>(dst);
      for (size_t i = 0; i < count; ++i) out[i] = F32ToF16(src[i]);
      return;
    }
  }
}

}  // namespace

HWY_EXPORT(AttentionImpl);

void WriteKv(const KvGeometry& geom, void* const* blocks, size_t first_token, size_t n,
             const float* k, const float* v) {
  const size_t hd = geom.head_dim;
  const size_t esize = DTypeSize(geom.dtype);
  for (size_t i = 0; i < n; ++i) {
    const size_t t = first_token + i;
    char* block = static_cast<char*>(blocks[t / geom.block_tokens]);
    KVSTAR_CHECK(block != nullptr, "no block for token %zu (block index %zu)", t,
                 t / geom.block_tokens);
    const size_t row = t % geom.block_tokens;
    for (size_t h = 0; h < geom.kv_heads; ++h) {
      const size_t src = (i * geom.kv_heads + h) * hd;
      StoreRow(k + src, hd, geom.dtype, block + geom.offset(0, h, row) * esize);
      StoreRow(v + src, hd, geom.dtype, block + geom.offset(1, h, row) * esize);
    }
  }
}

void AttentionOverBlocks(ThreadPool& pool, const KvGeometry& geom, size_t q_heads, const float* q,
                         size_t n, const int64_t* q_last, const void* const* blocks,
                         size_t num_tokens, float scale, float* out) {
  HWY_DYNAMIC_DISPATCH(AttentionImpl)
  (pool, geom, q_heads, q, n, q_last, blocks, num_tokens, scale, 0, out);
}

namespace internal {
void AttentionWithSplit(ThreadPool& pool, const KvGeometry& geom, size_t q_heads, const float* q,
                        size_t n, const int64_t* q_last, const void* const* blocks,
                        size_t num_tokens, float scale, size_t split_tokens, float* out) {
  HWY_DYNAMIC_DISPATCH(AttentionImpl)
  (pool, geom, q_heads, q, n, q_last, blocks, num_tokens, scale, split_tokens, out);
}
}  // namespace internal

}  // namespace kvstar::ops
#endif  // HWY_ONCE
