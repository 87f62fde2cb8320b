// Per-target bodies of score_kernels.h, compiled once per Highway target by score_kernels.cc.
//
// Logits are computed with lanes over queries: the queries of one KV head are transposed to
// [d][qpad], and every key element is broadcast, so no horizontal reductions or transposes are
// needed and any d works without tail handling (the loop over d is scalar; only qpad, which we
// pad ourselves, is vectorised). A register tile of kNM keys x kNQ query vectors accumulates in
// f32.
#if defined(KVSTAR_SPARSE_SCORE_KERNELS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVSTAR_SPARSE_SCORE_KERNELS_INL_H_
#undef KVSTAR_SPARSE_SCORE_KERNELS_INL_H_
#else
#define KVSTAR_SPARSE_SCORE_KERNELS_INL_H_
#endif

#include <algorithm>
#include <cmath>

#include "base/half.h"
#include "hwy/cache_control.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "sparse/score_kernels.h"

HWY_BEFORE_NAMESPACE();
namespace kvstar::sparse::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
constexpr size_t kMaxNQ = 4;  // 32 vector registers: 16 accumulators + 4 queries + broadcast
#else
constexpr size_t kMaxNQ = 3;  // 16 registers: 12 accumulators + 3 queries + broadcast
#endif

inline size_t F32LanesImpl() { return hn::Lanes(DF()); }
inline const char* CurrentTargetNameImpl() { return hwy::TargetName(HWY_TARGET); }

// dst[i] = f32(src[i]) for n elements; the tail is converted one by one (no read past n).
inline void ConvertToF32(const uint16_t* src, DType dtype, size_t n, float* dst) {
  const DF df;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  if (dtype == DType::kBF16) {
    const hn::Rebind<hwy::bfloat16_t, DF> dh;
    const auto* s = reinterpret_cast<const hwy::bfloat16_t*>(src);
    for (; i + N <= n; i += N) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, s + i)), df, dst + i);
    for (; i < n; ++i) dst[i] = BF16ToF32(bf16_t{src[i]});
  } else {
    const hn::Rebind<hwy::float16_t, DF> dh;
    const auto* s = reinterpret_cast<const hwy::float16_t*>(src);
    for (; i + N <= n; i += N) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, s + i)), df, dst + i);
    for (; i < n; ++i) dst[i] = F16ToF32(f16_t{src[i]});
  }
}

// exp(x) for x <= 0 (max-subtracted logits), about 2x cheaper than hn::Exp: 2^t = 2^n * 2^f with
// n = round(t), |f| <= 0.5 and a degree-6 Taylor polynomial (relative error ~1.2e-7). t is clamped
// at -126, so arguments below about -87 give ~1e-38 instead of 0: negligible next to the max term
// (exactly 1), which every softmax sum contains.
// n comes from one add of kRound = 1.5 * 2^23 + 128: for t in [-126, 0] the sum is an integer
// between 2^23 and 2^24, rounded to nearest even like hn::Round (kRound is even), whose low
// mantissa bits are n + 128, so shifting them into the exponent gives 2^(n+1) directly. The
// polynomial's coefficients are halved to match: every Horner step is then exactly half of the
// plain one, so the result is the same bit for bit as round / convert / add 127 / shift, in four
// vector operations instead of six (the kernel is bound by its vector ports on some cores).
HWY_INLINE VF ExpNonPositive(DF df, VF x) {
  const hn::RebindToSigned<DF> di;
  constexpr float kRound = 12582912.0f + 128.0f;
  const VF t = hn::Max(hn::Mul(x, hn::Set(df, 1.44269504088896341f)), hn::Set(df, -126.0f));
  const VF y = hn::Add(t, hn::Set(df, kRound));
  const VF f = hn::Sub(t, hn::Sub(y, hn::Set(df, kRound)));
  VF p = hn::Set(df, 0.5f * 1.5403530393381609e-4f);
  p = hn::MulAdd(p, f, hn::Set(df, 0.5f * 1.3333558146428443e-3f));
  p = hn::MulAdd(p, f, hn::Set(df, 0.5f * 9.6181291076284772e-3f));
  p = hn::MulAdd(p, f, hn::Set(df, 0.5f * 5.5504108664821580e-2f));
  p = hn::MulAdd(p, f, hn::Set(df, 0.5f * 2.4022650695910071e-1f));
  p = hn::MulAdd(p, f, hn::Set(df, 0.5f * 6.9314718055994531e-1f));
  p = hn::MulAdd(p, f, hn::Set(df, 0.5f));
  return hn::Mul(p, hn::BitCast(df, hn::ShiftLeft<23>(hn::BitCast(di, y))));
}

// logits[m0 + i][j * N ...] = sum_c rep[m0 + i][c] * qt[c][j * N ...] for i < kNM, j < kNQ.
template <size_t kNM, size_t kNQ>
HWY_INLINE void LogitTile(const float* HWY_RESTRICT rep, size_t m0, size_t d,
                          const float* HWY_RESTRICT qt, size_t qpad, float* HWY_RESTRICT logits) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF acc[kNM][kNQ];
  for (size_t i = 0; i < kNM; ++i) {
    for (size_t j = 0; j < kNQ; ++j) acc[i][j] = hn::Zero(df);
  }
  const float* r = rep + m0 * d;
  for (size_t c = 0; c < d; ++c) {
    const float* qrow = qt + c * qpad;
    VF q[kNQ];
    for (size_t j = 0; j < kNQ; ++j) q[j] = hn::Load(df, qrow + j * N);
    for (size_t i = 0; i < kNM; ++i) {
      const VF k = hn::Set(df, r[i * d + c]);
      for (size_t j = 0; j < kNQ; ++j) acc[i][j] = hn::MulAdd(k, q[j], acc[i][j]);
    }
  }
  for (size_t i = 0; i < kNM; ++i) {
    for (size_t j = 0; j < kNQ; ++j) hn::Store(acc[i][j], df, logits + (m0 + i) * qpad + j * N);
  }
}

template <size_t kNQ>
HWY_INLINE void LogitColumns(const float* rep, size_t vectors, size_t d, const float* qt,
                             size_t qpad, float* logits) {
  // Four keys per tile on every target: on AVX2 a 4 x 3 tile (every register) ran the 250-block
  // goal shape 5% faster than 3 x 3 (docs/BENCHMARKS.md); the sums are the same either way.
  constexpr size_t kNM = 4;
  size_t m = 0;
  for (; m + kNM <= vectors; m += kNM) LogitTile<kNM, kNQ>(rep, m, d, qt, qpad, logits);
  for (; m < vectors; ++m) LogitTile<1, kNQ>(rep, m, d, qt, qpad, logits);
}

inline void BlockLseImpl(const BlockLseArgs& a) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const size_t nv = a.qpad / N;
  const size_t block_bytes = a.vectors * a.kv_heads * a.d * sizeof(uint16_t);
  const size_t prefetch_per_head = (block_bytes + 64 * a.kv_heads - 1) / (64 * a.kv_heads) * 64;
  for (size_t g = 0; g < a.kv_heads; ++g) {
    if (a.next_rep != nullptr) {
      const auto* next = reinterpret_cast<const uint8_t*>(a.next_rep);
      const size_t end = std::min(block_bytes, (g + 1) * prefetch_per_head);
      for (size_t off = g * prefetch_per_head; off < end; off += 64) {
        __builtin_prefetch(next + off, 0, 2);  // into L2: L1 holds the working set
      }
    }
    // Gather this head's rows ([vectors][d] with stride kv_heads * d) into contiguous f32.
    for (size_t m = 0; m < a.vectors; ++m) {
      ConvertToF32(a.rep + (m * a.kv_heads + g) * a.d, a.dtype, a.d, a.rep_scratch + m * a.d);
    }
    const float* qt = a.qt + g * a.d * a.qpad;
    for (size_t j0 = 0; j0 < nv; j0 += kMaxNQ) {
      const size_t off = j0 * N;
      switch (nv - j0 >= kMaxNQ ? kMaxNQ : nv - j0) {
        case 1:
          LogitColumns<1>(a.rep_scratch, a.vectors, a.d, qt + off, a.qpad, a.logit_scratch + off);
          break;
        case 2:
          LogitColumns<2>(a.rep_scratch, a.vectors, a.d, qt + off, a.qpad, a.logit_scratch + off);
          break;
        case 3:
          LogitColumns<3>(a.rep_scratch, a.vectors, a.d, qt + off, a.qpad, a.logit_scratch + off);
          break;
        default:
          if constexpr (kMaxNQ == 4) {
            LogitColumns<4>(a.rep_scratch, a.vectors, a.d, qt + off, a.qpad, a.logit_scratch + off);
          }
          break;
      }
    }
    // Max-subtracted log-sum-exp per query lane: exp never sees a positive argument. `check`
    // turns a lane NaN when any of its logits is NaN/Inf (overflow), which Max alone could hide;
    // NormalizeSegment then reports it.
    float* lse = a.lse + g * a.qpad;
    const VF zero = hn::Zero(df);
    for (size_t j = 0; j < a.qpad; j += N) {
      const float* col = a.logit_scratch + j;
      // Four independent chains: one chain waits a multiply-add latency per vector (a quarter of
      // the AVX2 kernel's time before). The maximum is exact in any order, and each check chain
      // stays +0 unless it met a NaN / Inf, so the result is the same bit for bit.
      VF mx0 = hn::Load(df, col), mx1 = mx0, mx2 = mx0, mx3 = mx0;
      VF check0 = zero, check1 = zero, check2 = zero, check3 = zero;
      size_t m4 = 0;
      for (; m4 + 4 <= a.vectors; m4 += 4) {
        const VF v0 = hn::Load(df, col + m4 * a.qpad);
        const VF v1 = hn::Load(df, col + (m4 + 1) * a.qpad);
        const VF v2 = hn::Load(df, col + (m4 + 2) * a.qpad);
        const VF v3 = hn::Load(df, col + (m4 + 3) * a.qpad);
        mx0 = hn::Max(mx0, v0);
        mx1 = hn::Max(mx1, v1);
        mx2 = hn::Max(mx2, v2);
        mx3 = hn::Max(mx3, v3);
        check0 = hn::MulAdd(v0, zero, check0);
        check1 = hn::MulAdd(v1, zero, check1);
        check2 = hn::MulAdd(v2, zero, check2);
        check3 = hn::MulAdd(v3, zero, check3);
      }
      for (; m4 < a.vectors; ++m4) {
        const VF v = hn::Load(df, col + m4 * a.qpad);
        mx0 = hn::Max(mx0, v);
        check0 = hn::MulAdd(v, zero, check0);
      }
      const VF mx = hn::Max(hn::Max(mx0, mx1), hn::Max(mx2, mx3));
      const VF check = hn::Add(hn::Add(check0, check1), hn::Add(check2, check3));
      VF sum0 = zero;
      VF sum1 = zero;
      size_t m = 0;
      for (; m + 2 <= a.vectors; m += 2) {
        sum0 = hn::Add(sum0, ExpNonPositive(df, hn::Sub(hn::Load(df, col + m * a.qpad), mx)));
        sum1 = hn::Add(sum1, ExpNonPositive(df, hn::Sub(hn::Load(df, col + (m + 1) * a.qpad), mx)));
      }
      if (m < a.vectors) {
        sum0 = hn::Add(sum0, ExpNonPositive(df, hn::Sub(hn::Load(df, col + m * a.qpad), mx)));
      }
      hn::Store(hn::Add(hn::Add(mx, hn::Log(df, hn::Add(sum0, sum1))), check), df, lse + j);
    }
  }
}

inline bool NormalizeSegmentImpl(float* lse, size_t n, size_t row, float* pm, float* ps) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const VF zero = hn::Zero(df);
  VF check = zero;  // stays 0 unless some value is NaN or Inf (x * 0 is NaN for those)
  for (size_t j = 0; j < row; j += N) {
    VF mx = hn::Load(df, lse + j);
    for (size_t r = 0; r < n; ++r) {
      const VF v = hn::Load(df, lse + r * row + j);
      check = hn::Add(check, hn::Mul(v, zero));
      mx = hn::Max(mx, v);
    }
    VF sum = zero;
    for (size_t r = 0; r < n; ++r) {
      const VF e = hn::Exp(df, hn::Sub(hn::Load(df, lse + r * row + j), mx));
      hn::Store(e, df, lse + r * row + j);
      sum = hn::Add(sum, e);
    }
    hn::Store(mx, df, pm + j);
    hn::Store(sum, df, ps + j);
  }
  const float c = hn::GetLane(hn::SumOfLanes(df, check));
  return c == 0.0f;
}

inline void ExpDiffImpl(const float* a, const float* b, float* out, size_t n) {
  const DF df;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    hn::StoreU(hn::Exp(df, hn::Sub(hn::LoadU(df, a + i), hn::LoadU(df, b + i))), df, out + i);
  }
  for (; i < n; ++i) out[i] = std::exp(a[i] - b[i]);
}

inline void WeightedRowSumsImpl(const float* e, size_t n, size_t kv_heads, size_t qpad,
                                const float* factor, float* out) {
  const DF df;
  const size_t N = hn::Lanes(df);
  for (size_t r = 0; r < n; ++r) {
    for (size_t g = 0; g < kv_heads; ++g) {
      const float* row = e + (r * kv_heads + g) * qpad;
      const float* f = factor + g * qpad;
      VF acc = hn::Zero(df);
      for (size_t j = 0; j < qpad; j += N) {
        acc = hn::MulAdd(hn::Load(df, row + j), hn::Load(df, f + j), acc);
      }
      out[r * kv_heads + g] = hn::GetLane(hn::SumOfLanes(df, acc));
    }
  }
}

}  // namespace kvstar::sparse::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard toggle
