// Per-target helpers shared by the CPU kernels: loading bf16 / f16 / f32 storage as f32 vectors,
// scalar conversions for tails, and per-thread scratch buffers. Included once per Highway target.

// Per-target include guard (the usual Highway idiom): re-included for every target.
#if defined(KVSTAR_OPS_CPU_SIMD_COMMON_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVSTAR_OPS_CPU_SIMD_COMMON_INL_H_
#undef KVSTAR_OPS_CPU_SIMD_COMMON_INL_H_
#else
#define KVSTAR_OPS_CPU_SIMD_COMMON_INL_H_
#endif

#include <cstddef>
#include <cstring>

#include "base/aligned_buffer.h"
#include "base/half.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace kvstar::ops::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Storage element types as Highway sees them (same bits as kvstar::bf16_t / f16_t).
using BF16 = hwy::bfloat16_t;
using F16 = hwy::float16_t;

HWY_INLINE VF LoadAsF32(DF df, const float* HWY_RESTRICT p) { return hn::LoadU(df, p); }
HWY_INLINE VF LoadAsF32(DF df, const BF16* HWY_RESTRICT p) {
  const hn::Rebind<BF16, DF> dbf;
  return hn::PromoteTo(df, hn::LoadU(dbf, p));
}
HWY_INLINE VF LoadAsF32(DF df, const F16* HWY_RESTRICT p) {
  const hn::Rebind<F16, DF> dh;
  return hn::PromoteTo(df, hn::LoadU(dh, p));
}

HWY_INLINE float ScalarAsF32(float v) { return v; }
HWY_INLINE float ScalarAsF32(BF16 v) {
  bf16_t b;
  std::memcpy(&b, &v, 2);
  return BF16ToF32(b);
}
HWY_INLINE float ScalarAsF32(F16 v) {
  f16_t h;
  std::memcpy(&h, &v, 2);
  return F16ToF32(h);
}

// dst[0, count) = f32(src[0, count)).
template <typename T>
HWY_INLINE void ConvertToF32(const T* HWY_RESTRICT src, size_t count, float* HWY_RESTRICT dst) {
  const DF df;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= count; i += N) hn::StoreU(LoadAsF32(df, src + i), df, dst + i);
  for (; i < count; ++i) dst[i] = ScalarAsF32(src[i]);
}

HWY_INLINE float ReduceSum(DF df, VF v) { return hn::GetLane(hn::SumOfLanes(df, v)); }

HWY_INLINE size_t RoundUpTo(size_t x, size_t multiple) {
  return (x + multiple - 1) / multiple * multiple;
}

// Per-thread scratch that grows and is kept: kernels run on pool threads many times per step and
// must not allocate each time. `slot` separates buffers used at the same time.
HWY_INLINE float* ThreadScratch(size_t slot, size_t count) {
  static thread_local AlignedBuffer<float> buffers[6];
  KVSTAR_CHECK(slot < 6, "scratch slot %zu", slot);
  if (buffers[slot].size() < count) buffers[slot] = AlignedBuffer<float>(count + 64);
  return buffers[slot].data();
}

}  // namespace kvstar::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // KVSTAR_OPS_CPU_SIMD_COMMON_INL_H_
