// Attention over a block table, compiled once per Highway target (see attention.cc).
//
// Work item = (tile of consecutive queries, KV head, piece of the sequence). The rows of an item
// are all (query, query head) pairs of the tile that share the KV head, so each K/V row is
// converted to f32 once and used by the whole GQA group. Tokens are visited in chunks of at most
// kChunkTokens inside one block: scores for every row, an online-softmax update per row, then the
// V accumulation, all from L1.

#if defined(KVSTAR_OPS_CPU_ATTENTION_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVSTAR_OPS_CPU_ATTENTION_INL_H_
#undef KVSTAR_OPS_CPU_ATTENTION_INL_H_
#else
#define KVSTAR_OPS_CPU_ATTENTION_INL_H_
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "base/aligned_buffer.h"
#include "base/check.h"
#include "base/kv_layout.h"
#include "base/thread_pool.h"
#include "hwy/cache_control.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "ops/cpu/simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kvstar::ops::HWY_NAMESPACE {

constexpr size_t kChunkTokens = 32;  // K/V rows converted per step: 2 x 16 KiB at d=128
constexpr size_t kTargetRows = 16;   // rows per item when the group is small
constexpr size_t kMaxGroup = 64;     // query heads per KV head supported
// Rows per item: q_tile * group <= max(kTargetRows, group).
constexpr size_t kMaxRows = kMaxGroup;
static_assert(kTargetRows <= kMaxRows);
constexpr size_t kDefaultSplitTokens = 1024;
constexpr size_t kMinItemsWithoutSplit = 32;
constexpr size_t kMaxVectorsFixed = 8;  // vectors of head_dim kept in registers

struct AttnShape {
  KvGeometry geom;
  size_t q_heads = 0;
  size_t group = 0;  // query heads per KV head
  size_t hdp = 0;    // head_dim rounded up to whole vectors
  const float* q = nullptr;
  size_t n = 0;
  const int64_t* q_last = nullptr;
  const void* const* blocks = nullptr;
  float scale = 1.0f;
  float* out = nullptr;
  size_t q_tile = 1;
  size_t num_tiles = 0;
  size_t split_tokens = 0;
  size_t num_splits = 1;
  size_t rows_max = 0;
  float* partial_acc = nullptr;  // [num_tiles][kv_heads][num_splits][rows_max][hdp]
  float* partial_ml = nullptr;   // [num_tiles][kv_heads][num_splits][rows_max][2] (max, sum)

  size_t PartialIndex(size_t tile, size_t g, size_t split, size_t r) const {
    return ((tile * geom.kv_heads + g) * num_splits + split) * rows_max + r;
  }
};

// s[t] = q . kf[t] for t < count; q and kf rows hold kV whole vectors.
template <size_t kV>
HWY_INLINE void ScoresFixed(const float* HWY_RESTRICT q, const float* HWY_RESTRICT kf, size_t hdp,
                            size_t count, float* HWY_RESTRICT s) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF qv[kV];
  for (size_t j = 0; j < kV; ++j) qv[j] = hn::Load(df, q + j * N);
  size_t t = 0;
  for (; t + 4 <= count; t += 4) {
    const float* k0 = kf + t * hdp;
    VF a0 = hn::Mul(qv[0], hn::Load(df, k0));
    VF a1 = hn::Mul(qv[0], hn::Load(df, k0 + hdp));
    VF a2 = hn::Mul(qv[0], hn::Load(df, k0 + 2 * hdp));
    VF a3 = hn::Mul(qv[0], hn::Load(df, k0 + 3 * hdp));
    for (size_t j = 1; j < kV; ++j) {
      a0 = hn::MulAdd(qv[j], hn::Load(df, k0 + j * N), a0);
      a1 = hn::MulAdd(qv[j], hn::Load(df, k0 + hdp + j * N), a1);
      a2 = hn::MulAdd(qv[j], hn::Load(df, k0 + 2 * hdp + j * N), a2);
      a3 = hn::MulAdd(qv[j], hn::Load(df, k0 + 3 * hdp + j * N), a3);
    }
    StoreFourSums(df, a0, a1, a2, a3, s + t);
  }
  for (; t < count; ++t) {
    const float* k0 = kf + t * hdp;
    VF a0 = hn::Mul(qv[0], hn::Load(df, k0));
    for (size_t j = 1; j < kV; ++j) a0 = hn::MulAdd(qv[j], hn::Load(df, k0 + j * N), a0);
    s[t] = ReduceSum(df, a0);
  }
}

HWY_INLINE void ScoresAnyWidth(const float* HWY_RESTRICT q, const float* HWY_RESTRICT kf,
                               size_t hdp, size_t count, float* HWY_RESTRICT s) {
  const DF df;
  const size_t N = hn::Lanes(df);
  for (size_t t = 0; t < count; ++t) {
    const float* k = kf + t * hdp;
    VF a0 = hn::Zero(df);
    VF a1 = hn::Zero(df);
    size_t d = 0;
    for (; d + 2 * N <= hdp; d += 2 * N) {
      a0 = hn::MulAdd(hn::Load(df, q + d), hn::Load(df, k + d), a0);
      a1 = hn::MulAdd(hn::Load(df, q + d + N), hn::Load(df, k + d + N), a1);
    }
    if (d < hdp) a0 = hn::MulAdd(hn::Load(df, q + d), hn::Load(df, k + d), a0);
    s[t] = ReduceSum(df, hn::Add(a0, a1));
  }
}

HWY_INLINE void Scores(const float* q, const float* kf, size_t hdp, size_t count, float* s) {
  switch (hdp / hn::Lanes(DF())) {
    case 1:
      return ScoresFixed<1>(q, kf, hdp, count, s);
    case 2:
      return ScoresFixed<2>(q, kf, hdp, count, s);
    case 3:
      return ScoresFixed<3>(q, kf, hdp, count, s);
    case 4:
      return ScoresFixed<4>(q, kf, hdp, count, s);
    case 5:
      return ScoresFixed<5>(q, kf, hdp, count, s);
    case 6:
      return ScoresFixed<6>(q, kf, hdp, count, s);
    case 7:
      return ScoresFixed<7>(q, kf, hdp, count, s);
    case 8:
      return ScoresFixed<8>(q, kf, hdp, count, s);
    default:
      return ScoresAnyWidth(q, kf, hdp, count, s);
  }
}

// acc[0, kV*N) = alpha * acc + sum_t p[t] * vf[t][0, kV*N); vf rows are hdp apart.
template <size_t kV>
HWY_INLINE void AccumulateFixed(const float* HWY_RESTRICT p, const float* HWY_RESTRICT vf,
                                size_t hdp, size_t count, float alpha, float* HWY_RESTRICT acc) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const VF va = hn::Set(df, alpha);
  VF a[kV];
  for (size_t j = 0; j < kV; ++j) a[j] = hn::Mul(hn::Load(df, acc + j * N), va);
  for (size_t t = 0; t < count; ++t) {
    const VF pb = hn::Set(df, p[t]);
    const float* v = vf + t * hdp;
    for (size_t j = 0; j < kV; ++j) a[j] = hn::MulAdd(pb, hn::Load(df, v + j * N), a[j]);
  }
  for (size_t j = 0; j < kV; ++j) hn::Store(a[j], df, acc + j * N);
}

HWY_INLINE void Accumulate(const float* p, const float* vf, size_t hdp, size_t count, float alpha,
                           float* acc) {
  const size_t N = hn::Lanes(DF());
  const size_t nv = hdp / N;
  for (size_t j0 = 0; j0 < nv; j0 += kMaxVectorsFixed) {
    const float* v = vf + j0 * N;
    float* a = acc + j0 * N;
    switch (std::min(kMaxVectorsFixed, nv - j0)) {
      case 1:
        AccumulateFixed<1>(p, v, hdp, count, alpha, a);
        break;
      case 2:
        AccumulateFixed<2>(p, v, hdp, count, alpha, a);
        break;
      case 3:
        AccumulateFixed<3>(p, v, hdp, count, alpha, a);
        break;
      case 4:
        AccumulateFixed<4>(p, v, hdp, count, alpha, a);
        break;
      case 5:
        AccumulateFixed<5>(p, v, hdp, count, alpha, a);
        break;
      case 6:
        AccumulateFixed<6>(p, v, hdp, count, alpha, a);
        break;
      case 7:
        AccumulateFixed<7>(p, v, hdp, count, alpha, a);
        break;
      default:
        AccumulateFixed<8>(p, v, hdp, count, alpha, a);
        break;
    }
  }
}

// Two rows at once: each K/V vector loaded from L1 serves both rows. Needs 2 * kV + 8 vector
// registers, so only with 32 registers (AVX-512).
#if HWY_TARGET <= HWY_AVX3
constexpr bool kPairRows = true;
#else
constexpr bool kPairRows = false;
#endif

template <size_t kV>
HWY_INLINE void ScoresPairFixed(const float* HWY_RESTRICT qa, const float* HWY_RESTRICT qb,
                                const float* HWY_RESTRICT kf, size_t hdp, size_t count,
                                float* HWY_RESTRICT sa, float* HWY_RESTRICT sb) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF qva[kV], qvb[kV];
  for (size_t j = 0; j < kV; ++j) {
    qva[j] = hn::Load(df, qa + j * N);
    qvb[j] = hn::Load(df, qb + j * N);
  }
  size_t t = 0;
  for (; t + 4 <= count; t += 4) {
    const float* k0 = kf + t * hdp;
    VF a[4], b[4];
    for (size_t u = 0; u < 4; ++u) {
      const VF kv = hn::Load(df, k0 + u * hdp);
      a[u] = hn::Mul(qva[0], kv);
      b[u] = hn::Mul(qvb[0], kv);
    }
    for (size_t j = 1; j < kV; ++j) {
      for (size_t u = 0; u < 4; ++u) {
        const VF kv = hn::Load(df, k0 + u * hdp + j * N);
        a[u] = hn::MulAdd(qva[j], kv, a[u]);
        b[u] = hn::MulAdd(qvb[j], kv, b[u]);
      }
    }
    StoreFourSums(df, a[0], a[1], a[2], a[3], sa + t);
    StoreFourSums(df, b[0], b[1], b[2], b[3], sb + t);
  }
  for (; t < count; ++t) {
    const float* k0 = kf + t * hdp;
    VF a0 = hn::Zero(df), b0 = hn::Zero(df);
    for (size_t j = 0; j < kV; ++j) {
      const VF kv = hn::Load(df, k0 + j * N);
      a0 = hn::MulAdd(qva[j], kv, a0);
      b0 = hn::MulAdd(qvb[j], kv, b0);
    }
    sa[t] = ReduceSum(df, a0);
    sb[t] = ReduceSum(df, b0);
  }
}

template <size_t kV>
HWY_INLINE void AccumulatePairFixed(const float* HWY_RESTRICT pa, const float* HWY_RESTRICT pb,
                                    const float* HWY_RESTRICT vf, size_t hdp, size_t count,
                                    float alpha_a, float alpha_b, float* HWY_RESTRICT acc_a,
                                    float* HWY_RESTRICT acc_b) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const VF va = hn::Set(df, alpha_a);
  const VF vb = hn::Set(df, alpha_b);
  VF a[kV], b[kV];
  for (size_t j = 0; j < kV; ++j) {
    a[j] = hn::Mul(hn::Load(df, acc_a + j * N), va);
    b[j] = hn::Mul(hn::Load(df, acc_b + j * N), vb);
  }
  for (size_t t = 0; t < count; ++t) {
    const VF wa = hn::Set(df, pa[t]);
    const VF wb = hn::Set(df, pb[t]);
    const float* v = vf + t * hdp;
    for (size_t j = 0; j < kV; ++j) {
      const VF vv = hn::Load(df, v + j * N);
      a[j] = hn::MulAdd(wa, vv, a[j]);
      b[j] = hn::MulAdd(wb, vv, b[j]);
    }
  }
  for (size_t j = 0; j < kV; ++j) {
    hn::Store(a[j], df, acc_a + j * N);
    hn::Store(b[j], df, acc_b + j * N);
  }
}

#define KVSTAR_ATTN_SWITCH_1_TO_8(nv, CALL) \
  switch (nv) {                             \
    case 1:                                 \
      CALL(1);                              \
      break;                                \
    case 2:                                 \
      CALL(2);                              \
      break;                                \
    case 3:                                 \
      CALL(3);                              \
      break;                                \
    case 4:                                 \
      CALL(4);                              \
      break;                                \
    case 5:                                 \
      CALL(5);                              \
      break;                                \
    case 6:                                 \
      CALL(6);                              \
      break;                                \
    case 7:                                 \
      CALL(7);                              \
      break;                                \
    default:                                \
      CALL(8);                              \
      break;                                \
  }

// Rows a and b over `count` tokens; false if the head is too wide for the pair kernels.
HWY_INLINE bool ScoresPair(const float* qa, const float* qb, const float* kf, size_t hdp,
                           size_t count, float* sa, float* sb) {
  const size_t nv = hdp / hn::Lanes(DF());
  if (!kPairRows || nv > kMaxVectorsFixed) return false;
#define KVSTAR_SCORES_PAIR(k) ScoresPairFixed<k>(qa, qb, kf, hdp, count, sa, sb)
  KVSTAR_ATTN_SWITCH_1_TO_8(nv, KVSTAR_SCORES_PAIR)
#undef KVSTAR_SCORES_PAIR
  return true;
}

HWY_INLINE bool AccumulatePair(const float* pa, const float* pb, const float* vf, size_t hdp,
                               size_t count, float alpha_a, float alpha_b, float* acc_a,
                               float* acc_b) {
  const size_t nv = hdp / hn::Lanes(DF());
  if (!kPairRows || nv > kMaxVectorsFixed) return false;
#define KVSTAR_ACC_PAIR(k) \
  AccumulatePairFixed<k>(pa, pb, vf, hdp, count, alpha_a, alpha_b, acc_a, acc_b)
  KVSTAR_ATTN_SWITCH_1_TO_8(nv, KVSTAR_ACC_PAIR)
#undef KVSTAR_ACC_PAIR
  return true;
}

// p[t] = exp(p[t] - max) for t < count (entries up to the next whole vector must be -inf);
// returns the sum.
HWY_INLINE float ExpShiftedSum(float* HWY_RESTRICT p, size_t count, float max) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const VF vmax = hn::Set(df, max);
  // hn::Exp returns exactly 0 below -104; clamping first keeps -inf (masked entries) away from
  // its float-to-int conversion.
  const VF kMinArg = hn::Set(df, -105.0f);
  VF sum = hn::Zero(df);
  for (size_t t = 0; t < count; t += N) {
    const VF e = hn::Exp(df, hn::Max(hn::Sub(hn::Load(df, p + t), vmax), kMinArg));
    hn::Store(e, df, p + t);
    sum = hn::Add(sum, e);
  }
  return ReduceSum(df, sum);
}

// dst[t][0, hd) = f32(src[t][0, hd)) for t < count; dst rows are hdp apart. One contiguous run
// when there is no padding (the usual head_dim 64 / 128).
template <typename TKV>
HWY_INLINE void ConvertRows(const TKV* HWY_RESTRICT src, size_t count, size_t hd, size_t hdp,
                            float* HWY_RESTRICT dst) {
  if (hd == hdp) return ConvertToF32(src, count * hd, dst);
  for (size_t t = 0; t < count; ++t) ConvertToF32(src + t * hd, hd, dst + t * hdp);
}

// Chunks ahead whose K/V are prefetched: the hardware prefetcher alone does not run far enough
// ahead of a loop that spends most of its time computing, so loads and arithmetic would take
// turns instead of overlapping.
constexpr size_t kPrefetchChunks = 2;

// Prefetches the K and V rows of the chunk starting at token t (if t < t_end) into the caches.
template <typename TKV>
HWY_INLINE void PrefetchChunk(const AttnShape& s, size_t g, size_t t, size_t t_end) {
  if (t >= t_end) return;
  const KvGeometry& geom = s.geom;
  const size_t row0 = t % geom.block_tokens;
  const size_t len = std::min({kChunkTokens, geom.block_tokens - row0, t_end - t});
  const char* block = static_cast<const char*>(s.blocks[t / geom.block_tokens]);
  const size_t bytes = len * geom.head_dim * sizeof(TKV);
  const char* k = block + geom.offset(0, g, row0) * sizeof(TKV);
  const char* v = block + geom.offset(1, g, row0) * sizeof(TKV);
  for (size_t off = 0; off < bytes; off += 64) {
    hwy::Prefetch(k + off);
    hwy::Prefetch(v + off);
  }
}

template <typename TKV>
void AttendItem(const AttnShape& s, size_t tile, size_t g, size_t split) {
  const KvGeometry& geom = s.geom;
  const size_t hd = geom.head_dim;
  const size_t hdp = s.hdp;
  const size_t bt = geom.block_tokens;
  const size_t G = s.group;
  const size_t i0 = tile * s.q_tile;
  const size_t i1 = std::min(s.n, i0 + s.q_tile);
  const size_t rows = (i1 - i0) * G;
  const size_t p_stride = RoundUpTo(kChunkTokens, hn::Lanes(DF()));
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  float* qp = ThreadScratch(0, rows * hdp);          // [rows][hdp], scaled
  float* acc = ThreadScratch(1, rows * hdp);         // [rows][hdp]
  float* kf = ThreadScratch(2, kChunkTokens * hdp);  // [kChunkTokens][hdp]
  float* vf = ThreadScratch(3, kChunkTokens * hdp);  // [kChunkTokens][hdp]
  float* probs = ThreadScratch(4, rows * p_stride);  // [rows][p_stride]
  size_t limit[kMaxRows];
  float m[kMaxRows];
  float l[kMaxRows];
  float alpha[kMaxRows];
  size_t valid[kMaxRows];

  size_t tile_limit = 0;
  for (size_t i = i0; i < i1; ++i) {
    const size_t lim = static_cast<size_t>(s.q_last[i]) + 1;
    tile_limit = std::max(tile_limit, lim);
    for (size_t hh = 0; hh < G; ++hh) {
      const size_t r = (i - i0) * G + hh;
      limit[r] = lim;
      const float* src = s.q + (i * s.q_heads + g * G + hh) * hd;
      for (size_t d = 0; d < hd; ++d) qp[r * hdp + d] = src[d] * s.scale;
      for (size_t d = hd; d < hdp; ++d) qp[r * hdp + d] = 0.0f;
      for (size_t d = 0; d < hdp; ++d) acc[r * hdp + d] = 0.0f;
      m[r] = kNegInf;
      l[r] = 0.0f;
    }
  }
  // Padding columns of the K/V scratch stay zero so whole-vector loops see zeros there.
  for (size_t t = 0; t < kChunkTokens && hdp > hd; ++t) {
    std::fill(kf + t * hdp + hd, kf + (t + 1) * hdp, 0.0f);
    std::fill(vf + t * hdp + hd, vf + (t + 1) * hdp, 0.0f);
  }

  const size_t t_begin = split * s.split_tokens;
  const size_t t_end = std::min(t_begin + s.split_tokens, tile_limit);
  for (size_t t = t_begin; t < t_end;) {
    const size_t row0 = t % bt;
    const size_t len = std::min({kChunkTokens, bt - row0, t_end - t});
    size_t kv_len = 0;
    for (size_t r = 0; r < rows; ++r) {
      valid[r] = limit[r] > t ? std::min(len, limit[r] - t) : 0;
      kv_len = std::max(kv_len, valid[r]);
    }
    if (kv_len == 0) break;  // every later chunk is masked for every row too
    const TKV* block = static_cast<const TKV*>(s.blocks[t / bt]);
    const TKV* kp = block + geom.offset(0, g, row0);
    const TKV* vp = block + geom.offset(1, g, row0);
    PrefetchChunk<TKV>(s, g, t + kPrefetchChunks * kChunkTokens, t_end);
    ConvertRows(kp, kv_len, hd, hdp, kf);
    for (size_t r = 0; r < rows;) {
      if (valid[r] == 0) {
        ++r;
        continue;
      }
      // Rows of the pair may have different limits; scores past a row's limit are computed on
      // real keys and then masked.
      const bool pair =
          r + 1 < rows && valid[r + 1] > 0 &&
          ScoresPair(qp + r * hdp, qp + (r + 1) * hdp, kf, hdp, std::max(valid[r], valid[r + 1]),
                     probs + r * p_stride, probs + (r + 1) * p_stride);
      if (!pair) Scores(qp + r * hdp, kf, hdp, valid[r], probs + r * p_stride);
      for (size_t rr = r; rr < r + (pair ? 2 : 1); ++rr) {
        float* pr = probs + rr * p_stride;
        float mx = pr[0];
        for (size_t tt = 1; tt < valid[rr]; ++tt) mx = std::max(mx, pr[tt]);
        for (size_t tt = valid[rr]; tt < p_stride; ++tt) pr[tt] = kNegInf;
        const float m_new = std::max(m[rr], mx);
        alpha[rr] = std::exp(m[rr] - m_new);  // 0 on the first chunk (m = -inf)
        l[rr] = l[rr] * alpha[rr] + ExpShiftedSum(pr, valid[rr], m_new);
        m[rr] = m_new;
        // Exactly 0 past the row's limit, so that a pair can run over the longer row's count.
        for (size_t tt = valid[rr]; tt < p_stride; ++tt) pr[tt] = 0.0f;
      }
      r += pair ? 2 : 1;
    }
    ConvertRows(vp, kv_len, hd, hdp, vf);
    for (size_t r = 0; r < rows;) {
      if (valid[r] == 0) {
        ++r;
        continue;
      }
      const bool pair = r + 1 < rows && valid[r + 1] > 0 &&
                        AccumulatePair(probs + r * p_stride, probs + (r + 1) * p_stride, vf, hdp,
                                       std::max(valid[r], valid[r + 1]), alpha[r], alpha[r + 1],
                                       acc + r * hdp, acc + (r + 1) * hdp);
      if (!pair) Accumulate(probs + r * p_stride, vf, hdp, valid[r], alpha[r], acc + r * hdp);
      r += pair ? 2 : 1;
    }
    t += len;
  }

  for (size_t i = i0; i < i1; ++i) {
    for (size_t hh = 0; hh < G; ++hh) {
      const size_t r = (i - i0) * G + hh;
      if (s.num_splits == 1) {
        float* dst = s.out + (i * s.q_heads + g * G + hh) * hd;
        const float inv = 1.0f / l[r];
        for (size_t d = 0; d < hd; ++d) dst[d] = acc[r * hdp + d] * inv;
      } else {
        const size_t idx = s.PartialIndex(tile, g, split, r);
        s.partial_ml[2 * idx] = m[r];
        s.partial_ml[2 * idx + 1] = l[r];
        std::copy(acc + r * hdp, acc + r * hdp + hd, s.partial_acc + idx * hdp);
      }
    }
  }
}

// out row = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s over the pieces that saw tokens.
HWY_INLINE void MergeSplits(const AttnShape& s, size_t tile, size_t g) {
  const size_t hd = s.geom.head_dim;
  const size_t G = s.group;
  const size_t i0 = tile * s.q_tile;
  const size_t i1 = std::min(s.n, i0 + s.q_tile);
  for (size_t i = i0; i < i1; ++i) {
    for (size_t hh = 0; hh < G; ++hh) {
      const size_t r = (i - i0) * G + hh;
      float* dst = s.out + (i * s.q_heads + g * G + hh) * hd;
      float mx = -std::numeric_limits<float>::infinity();
      for (size_t sp = 0; sp < s.num_splits; ++sp) {
        const size_t idx = s.PartialIndex(tile, g, sp, r);
        if (s.partial_ml[2 * idx + 1] > 0.0f) mx = std::max(mx, s.partial_ml[2 * idx]);
      }
      std::fill(dst, dst + hd, 0.0f);
      float total = 0.0f;
      for (size_t sp = 0; sp < s.num_splits; ++sp) {
        const size_t idx = s.PartialIndex(tile, g, sp, r);
        if (!(s.partial_ml[2 * idx + 1] > 0.0f)) continue;
        const float w = std::exp(s.partial_ml[2 * idx] - mx);
        total += w * s.partial_ml[2 * idx + 1];
        const float* a = s.partial_acc + idx * s.hdp;
        for (size_t d = 0; d < hd; ++d) dst[d] += w * a[d];
      }
      const float inv = 1.0f / total;
      for (size_t d = 0; d < hd; ++d) dst[d] *= inv;
    }
  }
}

template <typename TKV>
void RunAttention(ThreadPool& pool, AttnShape& s) {
  const size_t kv_heads = s.geom.kv_heads;
  const size_t items = s.num_tiles * kv_heads * s.num_splits;
  // Items are claimed from a counter so that uneven items (causal prefill: late tiles see more
  // tokens) balance; the longest (last tiles) go first. The result does not depend on who runs
  // which item.
  std::atomic<size_t> next{0};
  const size_t lanes = std::min<size_t>(items, static_cast<size_t>(pool.parallelism()));
  pool.ParallelFor(
      lanes,
      [&](size_t begin, size_t end, int) {
        for (size_t lane = begin; lane < end; ++lane) {
          for (size_t idx = next.fetch_add(1); idx < items; idx = next.fetch_add(1)) {
            const size_t per_tile = kv_heads * s.num_splits;
            const size_t tile = s.num_tiles - 1 - idx / per_tile;
            const size_t g = (idx % per_tile) / s.num_splits;
            const size_t split = idx % s.num_splits;
            AttendItem<TKV>(s, tile, g, split);
          }
        }
      },
      1);
  if (s.num_splits > 1) {
    pool.ParallelFor(
        s.num_tiles * kv_heads,
        [&](size_t begin, size_t end, int) {
          for (size_t j = begin; j < end; ++j) MergeSplits(s, j / kv_heads, j % kv_heads);
        },
        1);
  }
}

void AttentionImpl(ThreadPool& pool, const KvGeometry& geom, size_t q_heads, const float* q,
                   size_t n, const int64_t* q_last, const void* const* blocks, size_t num_tokens,
                   float scale, size_t split_tokens, float* out) {
  if (n == 0 || q_heads == 0) return;
  KVSTAR_CHECK(geom.kv_heads > 0 && q_heads % geom.kv_heads == 0,
               "q_heads=%zu is not a multiple of kv_heads=%zu", q_heads, geom.kv_heads);
  KVSTAR_CHECK(geom.head_dim > 0 && geom.block_tokens > 0, "head_dim=%zu block_tokens=%zu",
               geom.head_dim, geom.block_tokens);
  AttnShape s;
  s.geom = geom;
  s.q_heads = q_heads;
  s.group = q_heads / geom.kv_heads;
  KVSTAR_CHECK(s.group <= kMaxGroup, "GQA group %zu > %zu", s.group, kMaxGroup);
  s.hdp = RoundUpTo(geom.head_dim, hn::Lanes(DF()));
  s.q = q;
  s.n = n;
  s.q_last = q_last;
  s.blocks = blocks;
  s.scale = scale;
  s.out = out;
  size_t max_limit = 0;
  for (size_t i = 0; i < n; ++i) {
    KVSTAR_CHECK(q_last[i] >= 0 && static_cast<size_t>(q_last[i]) < num_tokens,
                 "q_last[%zu]=%lld outside [0, num_tokens=%zu)", i,
                 static_cast<long long>(q_last[i]), num_tokens);
    max_limit = std::max(max_limit, static_cast<size_t>(q_last[i]) + 1);
  }
  s.q_tile = std::max<size_t>(1, kTargetRows / s.group);
  s.num_tiles = (n + s.q_tile - 1) / s.q_tile;
  s.rows_max = s.q_tile * s.group;
  if (split_tokens == 0) {
    // Split only when there are too few (tile, head) items to feed the threads. The choice
    // depends on the shape alone, never on the thread count, so results are reproducible.
    const bool split =
        s.num_tiles * geom.kv_heads < kMinItemsWithoutSplit && max_limit > 2 * kDefaultSplitTokens;
    split_tokens = split ? kDefaultSplitTokens : max_limit;
  }
  s.split_tokens = RoundUpTo(split_tokens, geom.block_tokens);
  s.num_splits = (max_limit + s.split_tokens - 1) / s.split_tokens;
  if (s.num_splits > 1) {
    // Kept per calling thread across calls: a fresh allocation per decode step would pay page
    // faults on every step.
    static thread_local AlignedBuffer<float> partial_acc;
    static thread_local AlignedBuffer<float> partial_ml;
    const size_t slots = s.num_tiles * geom.kv_heads * s.num_splits * s.rows_max;
    if (partial_acc.size() < slots * s.hdp) partial_acc = AlignedBuffer<float>(slots * s.hdp);
    if (partial_ml.size() < slots * 2) partial_ml = AlignedBuffer<float>(slots * 2);
    s.partial_acc = partial_acc.data();
    s.partial_ml = partial_ml.data();
  }
  switch (geom.dtype) {
    case DType::kF32:
      return RunAttention<float>(pool, s);
    case DType::kBF16:
      return RunAttention<BF16>(pool, s);
    case DType::kF16:
      return RunAttention<F16>(pool, s);
  }
}

}  // namespace kvstar::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // KVSTAR_OPS_CPU_ATTENTION_INL_H_
