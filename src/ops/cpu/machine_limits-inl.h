// Measurement kernels for machine_limits.cc, compiled once per Highway target.

#if defined(KVSTAR_OPS_CPU_MACHINE_LIMITS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVSTAR_OPS_CPU_MACHINE_LIMITS_INL_H_
#undef KVSTAR_OPS_CPU_MACHINE_LIMITS_INL_H_
#else
#define KVSTAR_OPS_CPU_MACHINE_LIMITS_INL_H_
#endif

#include <cstddef>
#include <cstdint>

#include "hwy/highway.h"
#include "ops/cpu/simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kvstar::ops::HWY_NAMESPACE {

// Sum of `count` floats (count a multiple of 4 vectors), 4 independent accumulators so that the
// loads, not the adds, set the pace.
float SumFloatsImpl(const float* p, size_t count) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
  for (size_t i = 0; i + 4 * N <= count; i += 4 * N) {
    a0 = hn::Add(a0, hn::Load(df, p + i));
    a1 = hn::Add(a1, hn::Load(df, p + i + N));
    a2 = hn::Add(a2, hn::Load(df, p + i + 2 * N));
    a3 = hn::Add(a3, hn::Load(df, p + i + 3 * N));
  }
  return ReduceSum(df, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)));
}

// Runs `iterations` steps of 16 independent FMA chains; returns the FLOP count. 16 chains cover
// 2 FMA units x 4-5 cycles latency with room to spare.
double FmaChainsImpl(size_t iterations, float seed, float* sink) {
  const DF df;
  const size_t N = hn::Lanes(df);
  constexpr size_t kChains = 16;
  VF acc[kChains];
  for (size_t c = 0; c < kChains; ++c) acc[c] = hn::Set(df, seed + static_cast<float>(c));
  const VF mul = hn::Set(df, 0.999999f);
  const VF add = hn::Set(df, 1e-7f);
  for (size_t i = 0; i < iterations; ++i) {
    for (size_t c = 0; c < kChains; ++c) acc[c] = hn::MulAdd(acc[c], mul, add);
  }
  VF total = acc[0];
  for (size_t c = 1; c < kChains; ++c) total = hn::Add(total, acc[c]);
  *sink = ReduceSum(df, total);
  return 2.0 * static_cast<double>(iterations) * kChains * static_cast<double>(N);
}

int64_t ChosenTargetImpl() { return HWY_TARGET; }
size_t LanesF32Impl() { return hn::Lanes(DF()); }

}  // namespace kvstar::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // KVSTAR_OPS_CPU_MACHINE_LIMITS_INL_H_
