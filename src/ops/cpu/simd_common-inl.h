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
  for (; i + 4 * N <= count; i += 4 * N) {
    const VF v0 = LoadAsF32(df, src + i);
    const VF v1 = LoadAsF32(df, src + i + N);
    const VF v2 = LoadAsF32(df, src + i + 2 * N);
    const VF v3 = LoadAsF32(df, src + i + 3 * N);
    hn::StoreU(v0, df, dst + i);
    hn::StoreU(v1, df, dst + i + N);
    hn::StoreU(v2, df, dst + i + 2 * N);
    hn::StoreU(v3, df, dst + i + 3 * N);
  }
  for (; i + N <= count; i += N) hn::StoreU(LoadAsF32(df, src + i), df, dst + i);
  for (; i < count; ++i) dst[i] = ScalarAsF32(src[i]);
}

HWY_INLINE float ReduceSum(DF df, VF v) { return hn::GetLane(hn::SumOfLanes(df, v)); }

#if HWY_TARGET != HWY_SCALAR
namespace detail {
// Adds the 128-bit blocks of v together and stores the resulting 4 lanes.
template <class D>
HWY_INLINE void StoreSumOfBlocks(D d, hn::Vec<D> v, float* HWY_RESTRICT out) {
  if constexpr (hn::MaxLanes(D()) > 4) {
    const hn::Half<D> dh;
    StoreSumOfBlocks(dh, hn::Add(hn::LowerHalf(dh, v), hn::UpperHalf(dh, v)), out);
  } else {
    hn::StoreU(v, d, out);
  }
}
}  // namespace detail
#endif

// out[0..3] = sums of the lanes of a, b, c, d: one transposing reduction instead of four
// separate ones (the shuffles of a horizontal sum are the cost of short dot products).
HWY_INLINE void StoreFourSums(DF df, VF a, VF b, VF c, VF d, float* HWY_RESTRICT out) {
#if HWY_TARGET == HWY_SCALAR
  out[0] = hn::GetLane(a);
  out[1] = hn::GetLane(b);
  out[2] = hn::GetLane(c);
  out[3] = hn::GetLane(d);
#else
  const hn::Repartition<uint64_t, DF> du64;
  // Per 128-bit block: [a0+a2, b0+b2, a1+a3, b1+b3] and the same for c, d.
  const VF ab = hn::Add(hn::InterleaveLower(df, a, b), hn::InterleaveUpper(df, a, b));
  const VF cd = hn::Add(hn::InterleaveLower(df, c, d), hn::InterleaveUpper(df, c, d));
  // Per block: [a, b, c, d] partial sums.
  const VF lo =
      hn::BitCast(df, hn::InterleaveLower(du64, hn::BitCast(du64, ab), hn::BitCast(du64, cd)));
  const VF hi =
      hn::BitCast(df, hn::InterleaveUpper(du64, hn::BitCast(du64, ab), hn::BitCast(du64, cd)));
  detail::StoreSumOfBlocks(df, hn::Add(lo, hi), out);
#endif
}

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
