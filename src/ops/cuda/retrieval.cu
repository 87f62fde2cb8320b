// KVstar block scoring on the device (ScoreBlocks, ops.h): the scores of sparse::RunRetrieval
// computed from representations kept in HBM, so that retrieval does not depend on how many CPU
// cores the host has.
//
// Three kernels per call; the softmax of a (query head, query) spans every candidate of the task,
// so its maximum and denominator are known only once all blocks were seen:
//  1. Partial: one item per (task, KV head, chunk of candidate blocks). The CTA keeps the pruned,
//     scaled queries of its KV head (x queries times the group's query heads) in shared memory;
//     each warp takes whole blocks and reduces, per query, the block's logits to their maximum m
//     and sum of exponentials e = sum exp(logit - m) (the lanes split the block's vectors).
//  2. Normalise: one warp per (task, query head, query): the softmax maximum M over its blocks and
//     1 / S with S = sum e exp(m - M).
//  3. Combine: one thread per (task, block): score = sum over (query head, query) of
//     e exp(m - M) / S; with per_kv_head one such sum per KV head.
// Workspace per task: m and e [P][max_candidates] and M, 1/S [P], P = x * q_heads.
//
// By default each kernel has one CTA per work item (the items above). With
// BlockScoreArgs::max_ctas it has at most that many small CTAs (kSlimThreads threads) that walk
// the items with a grid-stride loop, so that the scoring holds a fixed share of the SMs for its
// whole duration instead of taking every slot a decode kernel leaves free between two launches
// (measured: decode then loses at least the scoring's SM time anyway, docs/BENCHMARKS.md). The
// items and their arithmetic are the same either way, so the scores are bit-identical.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "ops/cuda/cuda_util.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/ops.h"

namespace kvstar::cuda {
namespace {

using internal::AsCuda;
using internal::LaunchStatus;
using internal::Mma16816;
using internal::Mma16816F16;
using internal::ToF32;

constexpr unsigned kPartialThreads = 256;  // 8 warps
constexpr unsigned kSlimThreads = 64;      // every kernel's CTA size with max_ctas
constexpr size_t kMaxBlocksPerCta = 1024;  // BlockScoreArgs::blocks_per_cta's limit
constexpr unsigned kNormThreads = 256;
constexpr unsigned kCombineThreads = 256;
constexpr size_t kMaxQueryFloats = 12288;  // 48 KiB of shared memory

struct Shape {
  size_t max_candidates;
  size_t num_queries;
  size_t query_stride;
  size_t q_heads;
  size_t kv_heads;
  size_t head_dim;
  size_t d_pruned;
  size_t vectors_per_block;
  float scale;
  bool per_kv_head;
  size_t num_tasks;
  size_t blocks_per_cta;  // candidate blocks per partial work item
  // Elements from a block's first vector of KV head 0 to that of head 1, and from one vector of
  // a head to the next (BlockScoreArgs::head_major: vectors_per_block * d_pruned and d_pruned;
  // else d_pruned and kv_heads * d_pruned).
  size_t head_offset;
  size_t vector_stride;
};

// Elements of one block's representations (every head and vector).
__host__ __device__ inline size_t BlockElems(const Shape& s) {
  return s.vectors_per_block * s.kv_heads * s.d_pruned;
}

// Work items of the partial kernel: (KV head, chunk of blocks_per_cta candidates, task), KV heads
// fastest.
__host__ __device__ inline size_t ChunksOf(const Shape& s) {
  return (s.max_candidates + s.blocks_per_cta - 1) / s.blocks_per_cta;
}
__host__ __device__ inline size_t PartialItems(const Shape& s) {
  return s.kv_heads * ChunksOf(s) * s.num_tasks;
}

// Pairs per task: (query head, query).
__host__ __device__ inline size_t PairsOf(const Shape& s) { return s.num_queries * s.q_heads; }
__host__ __device__ inline size_t TaskFloats(const Shape& s) {
  return 2 * PairsOf(s) * s.max_candidates + 2 * PairsOf(s);
}

__host__ __device__ inline size_t RoundUp(size_t v, size_t to) { return (v + to - 1) / to * to; }

// Merges (m2, e2) into (m, e): the same sum of exponentials relative to the larger maximum.
__device__ __forceinline__ void MergeTerms(float& m, float& e, float m2, float e2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;  // both empty
  e = (m == -INFINITY ? 0.0f : e * expf(m - mx)) + (m2 == -INFINITY ? 0.0f : e2 * expf(m2 - mx));
  m = mx;
}

// MergeTerms with the fast exponential (a few ulp; the partial terms only).
__device__ __forceinline__ void MergeTermsFast(float& m, float& e, float m2, float e2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;
  e = (m == -INFINITY ? 0.0f : e * __expf(m - mx)) +
      (m2 == -INFINITY ? 0.0f : e2 * __expf(m2 - mx));
  m = mx;
}

// One level of a warp reduce-scatter of 2 kHalf (max, sum of exp) pairs: lanes with the
// `offset` bit set keep the upper half, the others the lower half, each merged with its
// partner's copy; the kept half moves to indices 0 .. kHalf - 1.
template <int kHalf>
__device__ __forceinline__ void ScatterLevel(float* m, float* e, unsigned lane, unsigned offset) {
  const bool upper = (lane & offset) != 0;
#pragma unroll
  for (int i = 0; i < kHalf; ++i) {
    const float send_m = upper ? m[i] : m[i + kHalf];
    const float send_e = upper ? e[i] : e[i + kHalf];
    float keep_m = upper ? m[i + kHalf] : m[i];
    float keep_e = upper ? e[i + kHalf] : e[i];
    const float got_m = __shfl_xor_sync(0xffffffffu, send_m, offset);
    const float got_e = __shfl_xor_sync(0xffffffffu, send_e, offset);
    MergeTermsFast(keep_m, keep_e, got_m, got_e);
    m[i] = keep_m;
    e[i] = keep_e;
  }
}

// 8 consecutive channels c0 .. c0 + 7 of a representation vector as f32 (0 past d_pruned).
// Aligned 16-byte loads when every vector starts on a 16-byte boundary (d_pruned % 8 == 0).
template <typename T>
__device__ __forceinline__ void LoadChannels8(const T* k, size_t c0, size_t dp, bool aligned,
                                              float out[8]) {
  if (aligned) {
    const uint4 raw = *reinterpret_cast<const uint4*>(k + c0);
    const T* h = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = ToF32(h[j]);
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = c0 + j < dp ? ToF32(k[c0 + j]) : 0.0f;
  }
}

// One work item per (chunk of blocks_per_cta candidate blocks, KV head, task); each warp takes
// whole blocks. A lane owns representation vectors of the block (lane, lane + 32, ...) and computes
// the logits of two of them at a time against kQueryTile queries, from the queries kept
// transposed in shared memory ([channel][query], zero-padded to multiples of 8 channels and
// kQueryTile queries: one 16-byte broadcast load feeds eight multiply-adds). Then per query the
// (max, sum of exp) of the block's vectors, reduced across the warp.
constexpr int kQueryTile = 16;  // ScatterLevel's levels below assume 16

// Work item `item` of the partial kernel: blocks [b0, b0 + nb) of task `task`'s candidates (nb
// == 0: none) for KV head kvh, whose qn = x * group queries are qi = x * group + g (g < group =
// q_heads / kv_heads).
struct PartialCta {
  __device__ PartialCta(const BlockScoreTask* tasks, const Shape& sh, unsigned kv_head,
                        unsigned chunk, unsigned task_index)
      : kvh(kv_head), task(task_index), t(tasks[task_index]) {
    const size_t n = t.cand_end > t.cand_begin ? t.cand_end - t.cand_begin : 0;
    b0 = size_t{chunk} * sh.blocks_per_cta;
    nb = b0 < n ? min(sh.blocks_per_cta, n - b0) : 0;
    qn = sh.num_queries * (sh.q_heads / sh.kv_heads);
  }
  // One item per CTA: the grid is (KV heads, chunks, tasks). KV heads vary fastest: the CTAs
  // running together read neighbouring channels of the same representation rows
  // ([block][vector][kv head][channel]).
  __device__ static PartialCta OfBlock(const BlockScoreTask* tasks, const Shape& sh) {
    return PartialCta(tasks, sh, blockIdx.x, blockIdx.y, blockIdx.z);
  }
  // Item `item` of the linear order with the same nesting (fewer than 2^31 items).
  __device__ static PartialCta OfItem(const BlockScoreTask* tasks, const Shape& sh, unsigned item) {
    const auto kv_heads = static_cast<unsigned>(sh.kv_heads);
    const auto chunks = static_cast<unsigned>(ChunksOf(sh));
    return PartialCta(tasks, sh, item % kv_heads, item / kv_heads % chunks,
                      item / kv_heads / chunks);
  }
  size_t kvh, task;
  BlockScoreTask t;
  size_t b0, nb, qn;
};

// Query qi = x * group + g of KV head kvh (query head kvh * group + g of query x), kept channel
// c, scaled by the softmax scale.
__device__ __forceinline__ float ScaledQuery(const BlockScoreTask& t, const Shape& sh, size_t kvh,
                                             size_t qi, size_t c) {
  const size_t group = sh.q_heads / sh.kv_heads;
  const size_t x = qi / group, g = qi % group;
  const float* q = t.queries + x * sh.query_stride + (kvh * group + g) * sh.head_dim;
  return q[t.channels[kvh * sh.d_pruned + c]] * sh.scale;
}

// The (block, pair) slot of the workspace for query qi of KV head kvh: pair (query head, x) =
// (kvh * group + g) * x_count + x.
__device__ __forceinline__ size_t PairOf(const Shape& sh, size_t kvh, size_t qi) {
  const size_t group = sh.q_heads / sh.kv_heads;
  return (kvh * group + qi % group) * sh.num_queries + qi / group;
}

template <typename T>
__device__ __forceinline__ void PartialItem(const Shape& sh, float* __restrict__ ws,
                                            const PartialCta& cta, float* qt) {
  if (cta.nb == 0) return;  // the whole CTA: before any barrier
  const BlockScoreTask& t = cta.t;
  const size_t b0 = cta.b0, nb = cta.nb, kvh = cta.kvh, qn = cta.qn;
  const size_t dp = sh.d_pruned;
  const size_t qpad = RoundUp(qn, kQueryTile), dpad = RoundUp(dp, 8);
  for (size_t i = threadIdx.x; i < qpad * dpad; i += blockDim.x) {
    const size_t c = i / qpad, qi = i % qpad;
    qt[i] = c < dp && qi < qn ? ScaledQuery(t, sh, kvh, qi, c) : 0.0f;
  }
  __syncthreads();
  const T* reps = static_cast<const T*>(t.reps);
  const bool aligned = dp % 8 == 0 && (reinterpret_cast<uintptr_t>(t.reps) % 16) == 0;
  const size_t vpb = sh.vectors_per_block;
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  float* ws_m = ws + cta.task * TaskFloats(sh);
  float* ws_e = ws_m + PairsOf(sh) * sh.max_candidates;
  for (size_t bl = warp; bl < nb; bl += warps) {
    const T* block_reps = reps + (t.cand_begin + b0 + bl) * BlockElems(sh) + kvh * sh.head_offset;
    const size_t vstride = sh.vector_stride;  // elements from one vector to the next
    for (size_t q0 = 0; q0 < qn; q0 += kQueryTile) {
      float m[kQueryTile], e[kQueryTile];
#pragma unroll
      for (int i = 0; i < kQueryTile; ++i) {
        m[i] = -INFINITY;
        e[i] = 0.0f;
      }
      // A lane scores two vectors at a time, v and v + 32: each broadcast load of four queries
      // feeds eight multiply-adds. With 64 vectors per block (the default) that is one pass,
      // whose (max, sum of exp) needs no rescaling and no data-dependent branch.
      for (size_t v = lane; v < vpb; v += 64) {
        const bool second = v + 32 < vpb;
        const T* k0 = block_reps + v * vstride;
        const T* k1 = second ? k0 + 32 * vstride : k0;  // a repeat when absent, then discarded
        float acc0[kQueryTile], acc1[kQueryTile];
#pragma unroll
        for (int i = 0; i < kQueryTile; ++i) {
          acc0[i] = 0.0f;
          acc1[i] = 0.0f;
        }
        for (size_t c0 = 0; c0 < dpad; c0 += 8) {
          float kf0[8], kf1[8];
          LoadChannels8(k0, c0, dp, aligned, kf0);
          LoadChannels8(k1, c0, dp, aligned, kf1);
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            const float4* row = reinterpret_cast<const float4*>(qt + (c0 + j) * qpad + q0);
#pragma unroll
            for (int u = 0; u < kQueryTile / 4; ++u) {
              const float4 q4 = row[u];
              acc0[4 * u + 0] = fmaf(kf0[j], q4.x, acc0[4 * u + 0]);
              acc0[4 * u + 1] = fmaf(kf0[j], q4.y, acc0[4 * u + 1]);
              acc0[4 * u + 2] = fmaf(kf0[j], q4.z, acc0[4 * u + 2]);
              acc0[4 * u + 3] = fmaf(kf0[j], q4.w, acc0[4 * u + 3]);
              acc1[4 * u + 0] = fmaf(kf1[j], q4.x, acc1[4 * u + 0]);
              acc1[4 * u + 1] = fmaf(kf1[j], q4.y, acc1[4 * u + 1]);
              acc1[4 * u + 2] = fmaf(kf1[j], q4.z, acc1[4 * u + 2]);
              acc1[4 * u + 3] = fmaf(kf1[j], q4.w, acc1[4 * u + 3]);
            }
          }
        }
        // The first pass (v == lane for every lane: a uniform branch) starts from nothing.
        const bool first = v == lane;
#pragma unroll
        for (int i = 0; i < kQueryTile; ++i) {
          const float s0 = acc0[i];
          const float s1 = second ? acc1[i] : -INFINITY;  // exp(-inf - mx) = 0
          // fmaxf drops a NaN operand, but then exp(NaN - mx) makes e NaN: a NaN logit still
          // reaches the scores (and +Inf gives exp(Inf - Inf) = NaN).
          const float mx = fmaxf(fmaxf(s0, s1), m[i]);
          const float fresh = __expf(s0 - mx) + __expf(s1 - mx);
          e[i] = first ? fresh : fmaf(e[i], __expf(m[i] - mx), fresh);
          m[i] = mx;
        }
      }
      // Reduce-scatter across the warp: each level halves the queries a lane holds, so that
      // lanes 2i and 2i + 1 end with query q0 + i (16 merges per lane instead of 80).
      ScatterLevel<8>(m, e, lane, 16);
      ScatterLevel<4>(m, e, lane, 8);
      ScatterLevel<2>(m, e, lane, 4);
      ScatterLevel<1>(m, e, lane, 2);
      MergeTermsFast(m[0], e[0], __shfl_xor_sync(0xffffffffu, m[0], 1),
                     __shfl_xor_sync(0xffffffffu, e[0], 1));
      const size_t qi = q0 + lane / 2;
      if (lane % 2 == 0 && qi < qn) {
        const size_t p = PairOf(sh, kvh, qi);
        ws_m[p * sh.max_candidates + b0 + bl] = m[0];
        ws_e[p * sh.max_candidates + b0 + bl] = e[0];
      }
    }
  }
}

// kSlim: as PartialKernelMma's.
template <typename T, bool kSlim>
__global__ void __launch_bounds__(kSlim ? kSlimThreads : kPartialThreads)
    PartialKernel(const BlockScoreTask* __restrict__ tasks, Shape sh, float* __restrict__ ws) {
  extern __shared__ float qt[];  // [dpad][qpad], scaled
  if constexpr (kSlim) {
    for (unsigned item = blockIdx.x; item < PartialItems(sh); item += gridDim.x) {
      __syncthreads();  // the previous item's readers of qt are done
      PartialItem<T>(sh, ws, PartialCta::OfItem(tasks, sh, item), qt);
    }
  } else {
    PartialItem<T>(sh, ws, PartialCta::OfBlock(tasks, sh), qt);
  }
}

// The partial kernel on the tensor cores, for d_pruned == 32, vectors_per_block = 8 NV (NV <=
// kMmaMaxVecTiles) and qn = x * group <= 16 MQ queries per KV head. Same grid, workspace and
// results as PartialKernel (up to rounding and summation order). Logits of a block are a
// [queries] x [vectors] product with k = 32 channels: mma.sync m16n8k16 with the queries as A
// (rows; m-tiles of 16 queries, kept in registers for all of the warp's blocks) and the
// representations as B (columns; n-tiles of 8 vectors). A lane loads 16 B (8 channels) of its
// vector of each n-tile straight into its B fragments of both k-steps: channels 8t .. 8t + 7 of
// lane t (t = lane % 4) fill its k-slots (2t, 2t + 1, 2t + 8, 2t + 9) of k-step 0 with 8t ..
// 8t + 3 and of k-step 1 with 8t + 4 .. 8t + 7; the query fragments use the same order. The f32
// queries enter as two (f16) or three (bf16) terms of the representation's type (f32-level
// products); with f16, each query row is first scaled by a power of two that keeps its terms
// normal f16 numbers (undone on the logits, exactly). A lane holds two columns of every n-tile
// for rows g and g + 8, so a query's (max, sum of exp) over the block is a reduction in
// registers plus two shuffles across the 4 lanes of the row; one exponential per logit (base 2:
// log2(e) is folded into the logits' scale, and the maximum is taken before scaling, which is
// positive, so each exponent is one fused multiply-add).
constexpr int kMmaMaxVecTiles = 8;  // n-tiles of 8 vectors per block

template <typename T>
__device__ __forceinline__ void SplitTerms(float x0, float x1, uint32_t& hi, uint32_t& mid,
                                           uint32_t& lo) {
  using H2 = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
  internal::SplitPairAs<H2>(x0, x1, hi, mid, lo);
}

template <typename T>
__device__ __forceinline__ void MmaT(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                     uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    Mma16816F16(d, a, b0, b1);
  } else {
    Mma16816(d, a, b0, b1);
  }
}

// 2^x (one MUFU instruction; the logits below are in base-2 units, so no multiply before it).
__device__ __forceinline__ float Exp2Approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// STAGES 0: a warp loads a block's representations into registers, then scores it. STAGES 3:
// cp.async copies each warp's next blocks into its ring of 3 blocks in shared memory (dynamic,
// ScoreRingSmem) while it scores one; a lane reads back only what it copied itself. Unaligned
// representations take the register path. The same arithmetic either way.
template <typename T, int MQ, int STAGES>
__device__ __forceinline__ void MmaItem(const Shape& sh, float* __restrict__ ws,
                                        const PartialCta& cta) {
  constexpr int kDp = 32, kRows = 16 * MQ;
  // Terms of each f32 query: f16 keeps 11 significant bits, so hi + mid carry 22 of f32's 24
  // (the products' error stays below 2^-22 of sum |q k|, under the f32 summation's own); bf16
  // keeps 8, so it needs three.
  constexpr int kTerms = std::is_same_v<T, __half> ? 2 : 3;
  if (cta.nb == 0) return;  // the whole CTA: before any barrier
  const BlockScoreTask& t = cta.t;
  const size_t b0 = cta.b0, nb = cta.nb, kvh = cta.kvh, qn = cta.qn;
  __shared__ float qs[kRows][kDp];  // scaled queries, [query][channel], 0 past qn
  __shared__ float row_scale[kRows];
  for (size_t i = threadIdx.x; i < kRows * kDp; i += blockDim.x) {
    const size_t qi = i / kDp, c = i % kDp;
    qs[qi][c] = qi < qn ? ScaledQuery(t, sh, kvh, qi, c) : 0.0f;
  }
  __syncthreads();
  for (size_t r = threadIdx.x; r < kRows; r += blockDim.x) {
    // f16 terms: a power of two that brings the row's largest |q| to [2^13, 2^14), so that hi,
    // mid and lo terms are normal f16 numbers (bf16 has f32's exponent range: 1).
    float scale = 1.0f;
    if constexpr (std::is_same_v<T, __half>) {
      float mx = 0.0f;
      for (int c = 0; c < kDp; ++c) mx = fmaxf(mx, fabsf(qs[r][c]));
      if (mx > 0.0f && isfinite(mx)) {
        int e;
        frexpf(mx, &e);  // mx = f 2^e, f in [0.5, 1)
        scale = ldexpf(1.0f, 14 - e);
      }
    }
    row_scale[r] = scale;
  }
  __syncthreads();
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const unsigned g = lane / 4, tq = lane % 4;
  // A fragments [term][m-tile][k-step][4]: rows g (0, 2) and g + 8 (1, 3) of the m-tile,
  // channels 8 tq + 4 ks + (0, 1) in k-slots (2 tq, 2 tq + 1) and + (2, 3) in (2 tq + 8, 2 tq + 9).
  uint32_t af[kTerms][MQ][2][4];
#pragma unroll
  for (int mt = 0; mt < MQ; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = 16 * mt + static_cast<int>(g) + 8 * h;
      const float sc = row_scale[row];
      const float* q = qs[row];
#pragma unroll
      for (int ks = 0; ks < 2; ++ks) {
        const int c = 8 * static_cast<int>(tq) + 4 * ks;
        uint32_t lo[3], hi[3];
        SplitTerms<T>(q[c] * sc, q[c + 1] * sc, lo[0], lo[1], lo[2]);
        SplitTerms<T>(q[c + 2] * sc, q[c + 3] * sc, hi[0], hi[1], hi[2]);
#pragma unroll
        for (int term = 0; term < kTerms; ++term) {
          af[term][mt][ks][h] = lo[term];
          af[term][mt][ks][2 + h] = hi[term];
        }
      }
    }
  }
  // Logit scale of the lane's two rows per m-tile, with log2(e): the logits become base-2
  // exponents (the maxima go back to natural units when stored). Positive.
  constexpr float kLog2e = 1.4426950408889634f;
  constexpr float kLn2 = 0.6931471805599453f;
  float unscale[MQ][2];
#pragma unroll
  for (int mt = 0; mt < MQ; ++mt) {
    unscale[mt][0] = kLog2e / row_scale[16 * mt + g];
    unscale[mt][1] = kLog2e / row_scale[16 * mt + g + 8];
  }
  const T* reps = static_cast<const T*>(t.reps);
  const bool aligned = (reinterpret_cast<uintptr_t>(t.reps) % 16) == 0;
  const size_t vpb = sh.vectors_per_block;
  const int vtiles = static_cast<int>(vpb / 8);
  const size_t vstride = sh.vector_stride;  // elements from one vector to the next
  float* ws_m = ws + cta.task * TaskFloats(sh);
  float* ws_e = ws_m + PairsOf(sh) * sh.max_candidates;
  const auto block_of = [&](size_t bl) {
    return reps + (t.cand_begin + b0 + bl) * BlockElems(sh) + kvh * sh.head_offset + 8 * tq;
  };
  // The block's logits and its (max, sum of exp) per query, from its B fragments rb.
  const auto score = [&](size_t bl, const uint4(&rb)[kMmaMaxVecTiles]) {
#pragma unroll
    for (int mt = 0; mt < MQ; ++mt) {
      float d[kMmaMaxVecTiles][4];
#pragma unroll
      for (int nt = 0; nt < kMmaMaxVecTiles; ++nt) {
        d[nt][0] = d[nt][1] = d[nt][2] = d[nt][3] = 0.0f;
        if (nt >= vtiles) continue;
#pragma unroll
        for (int ks = 0; ks < 2; ++ks) {
          const uint32_t b_lo = ks == 0 ? rb[nt].x : rb[nt].z;
          const uint32_t b_hi = ks == 0 ? rb[nt].y : rb[nt].w;
#pragma unroll
          for (int term = 0; term < kTerms; ++term) MmaT<T>(d[nt], af[term][mt][ks], b_lo, b_hi);
        }
      }
      // Row g + 8 h: the lane's logits are d[nt][2 h] and d[nt][2 h + 1] of every n-tile.
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < kMmaMaxVecTiles; ++nt) {
          if (nt < vtiles) mx = fmaxf(mx, fmaxf(d[nt][2 * h], d[nt][2 * h + 1]));
        }
        // The 4 lanes of this g hold the block's other columns.
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float u = unscale[mt][h];
        const float m2 = mx * u;  // the maximum in base-2 units
        float e = 0.0f;
#pragma unroll
        for (int nt = 0; nt < kMmaMaxVecTiles; ++nt) {
          // fmaxf drops a NaN logit from the maximum, but exp(NaN - m) makes e NaN (and an
          // infinite logit gives Inf - Inf = NaN).
          if (nt < vtiles) {
            e +=
                Exp2Approx(fmaf(d[nt][2 * h], u, -m2)) + Exp2Approx(fmaf(d[nt][2 * h + 1], u, -m2));
          }
        }
        e += __shfl_xor_sync(0xffffffffu, e, 1);
        e += __shfl_xor_sync(0xffffffffu, e, 2);
        const size_t qi = 16 * mt + g + 8 * h;
        if (tq == 0 && qi < qn) {
          const size_t p = PairOf(sh, kvh, qi);
          ws_m[p * sh.max_candidates + b0 + bl] = m2 * kLn2;
          ws_e[p * sh.max_candidates + b0 + bl] = e;
        }
      }
    }
  };
  if constexpr (STAGES > 0) {
    if (aligned) {
      extern __shared__ uint4 score_ring[];  // [warps][STAGES][kMmaMaxVecTiles][32]
      uint4* ring = score_ring + size_t{warp} * STAGES * kMmaMaxVecTiles * 32 + lane;
      const size_t mine = warp < nb ? (nb - warp + warps - 1) / warps : 0;  // the warp's blocks
      const auto issue = [&](size_t i) {
        const T* br = block_of(warp + i * warps);
        uint4* slot = ring + (i % STAGES) * kMmaMaxVecTiles * 32;
#pragma unroll
        for (int nt = 0; nt < kMmaMaxVecTiles; ++nt) {
          if (nt < vtiles) internal::CpAsync16(slot + nt * 32, br + (8 * nt + g) * vstride, true);
        }
      };
#pragma unroll
      for (int i = 0; i < STAGES - 1; ++i) {
        if (static_cast<size_t>(i) < mine) issue(i);
        internal::CpAsyncCommit();
      }
      for (size_t i = 0; i < mine; ++i) {
        if (i + STAGES - 1 < mine) issue(i + STAGES - 1);
        internal::CpAsyncCommit();  // (empty near the end) one group per block
        internal::CpAsyncWait<STAGES - 1>();
        const uint4* slot = ring + (i % STAGES) * kMmaMaxVecTiles * 32;
        uint4 rb[kMmaMaxVecTiles];
#pragma unroll
        for (int nt = 0; nt < kMmaMaxVecTiles; ++nt) {
          if (nt < vtiles) rb[nt] = slot[nt * 32];
        }
        score(warp + i * warps, rb);
      }
      internal::CpAsyncWait<0>();
      return;
    }
  }
  for (size_t bl = warp; bl < nb; bl += warps) {
    const T* block_reps = block_of(bl);
    // B fragments of every n-tile: vector 8 nt + g, 16 B.
    uint4 rb[kMmaMaxVecTiles];
#pragma unroll
    for (int nt = 0; nt < kMmaMaxVecTiles; ++nt) {
      if (nt < vtiles) {
        const T* p = block_reps + (8 * nt + g) * vstride;
        if (aligned) {
          rb[nt] = internal::LoadStream16(p);
        } else {
          uint16_t h[8];
#pragma unroll
          for (int i = 0; i < 8; ++i) h[i] = reinterpret_cast<const uint16_t*>(p)[i];
          rb[nt] = make_uint4(h[0] | (uint32_t{h[1]} << 16), h[2] | (uint32_t{h[3]} << 16),
                              h[4] | (uint32_t{h[5]} << 16), h[6] | (uint32_t{h[7]} << 16));
        }
      }
    }
    score(bl, rb);
  }
}

// kSlim: a grid of at most max_ctas CTAs that loop over the items; else the grid (KV heads,
// chunks, tasks), one item per CTA, as few registers as before the loop existed.
template <typename T, int MQ, bool kSlim, int STAGES>
__global__ void __launch_bounds__(kSlim ? kSlimThreads : kPartialThreads, kSlim || MQ > 2 ? 1 : 2)
    PartialKernelMma(const BlockScoreTask* __restrict__ tasks, Shape sh, float* __restrict__ ws) {
  if constexpr (kSlim) {
    for (unsigned item = blockIdx.x; item < PartialItems(sh); item += gridDim.x) {
      __syncthreads();  // the previous item's readers of the shared queries are done
      MmaItem<T, MQ, STAGES>(sh, ws, PartialCta::OfItem(tasks, sh, item));
    }
  } else {
    MmaItem<T, MQ, STAGES>(sh, ws, PartialCta::OfBlock(tasks, sh));
  }
}

// Dynamic shared memory of the tensor-core kernel's rings (MmaItem), per CTA.
constexpr size_t ScoreRingSmem(int stages, unsigned threads) {
  return size_t(stages) * (threads / 32) * kMmaMaxVecTiles * 32 * sizeof(uint4);
}

// One warp per (query head, query) pair of a task; pairs fastest.
__global__ void __launch_bounds__(kNormThreads)
    NormaliseKernel(const BlockScoreTask* __restrict__ tasks, Shape sh, float* __restrict__ ws) {
  const size_t P = PairsOf(sh);
  const unsigned lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (size_t item = size_t{blockIdx.x} * warps + threadIdx.x / 32; item < P * sh.num_tasks;
       item += size_t{gridDim.x} * warps) {
    const size_t p = item % P, task = item / P;
    const BlockScoreTask& t = tasks[task];
    const size_t n = t.cand_end > t.cand_begin ? t.cand_end - t.cand_begin : 0;
    if (n == 0) continue;  // the whole warp
    const float* ws_m = ws + task * TaskFloats(sh) + p * sh.max_candidates;
    const float* ws_e = ws_m + P * sh.max_candidates;
    float* norm = ws + task * TaskFloats(sh) + 2 * P * sh.max_candidates;
    float m = -INFINITY, e = 0.0f;
    for (size_t b = lane; b < n; b += 32) MergeTerms(m, e, ws_m[b], ws_e[b]);
    for (int o = 16; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
      const float e2 = __shfl_xor_sync(0xffffffffu, e, o);
      MergeTerms(m, e, m2, e2);
    }
    if (lane == 0) {
      norm[p] = m;
      norm[P + p] = 1.0f / e;  // e >= 1 for finite logits (the maximum's own term)
    }
  }
}

// One thread per (candidate, task); candidates fastest.
__global__ void __launch_bounds__(kCombineThreads)
    CombineKernel(const BlockScoreTask* __restrict__ tasks, Shape sh,
                  const float* __restrict__ ws) {
  const size_t P = PairsOf(sh);
  // Pairs of KV head h are [h * P / kv_heads, (h + 1) * P / kv_heads).
  const size_t outputs = sh.per_kv_head ? sh.kv_heads : 1;
  const size_t per_output = P / outputs;
  for (size_t item = size_t{blockIdx.x} * blockDim.x + threadIdx.x;
       item < sh.max_candidates * sh.num_tasks; item += size_t{gridDim.x} * blockDim.x) {
    const size_t b = item % sh.max_candidates, task = item / sh.max_candidates;
    const BlockScoreTask& t = tasks[task];
    const size_t n = t.cand_end > t.cand_begin ? t.cand_end - t.cand_begin : 0;
    if (b >= n) continue;
    const float* ws_m = ws + task * TaskFloats(sh);
    const float* ws_e = ws_m + P * sh.max_candidates;
    const float* norm = ws_e + P * sh.max_candidates;
    for (size_t o = 0; o < outputs; ++o) {
      float score = 0.0f;
      for (size_t p = o * per_output; p < (o + 1) * per_output; ++p) {
        const float m = ws_m[p * sh.max_candidates + b];
        score = fmaf(ws_e[p * sh.max_candidates + b] * expf(m - norm[p]), norm[P + p], score);
      }
      t.scores[b * outputs + o] = score;
    }
  }
}

// Shared memory floats of the partial kernel: the queries of one KV head, padded.
size_t QueryFloats(const BlockScoreArgs& a) {
  return RoundUp(a.num_queries * (a.q_heads / a.kv_heads), kQueryTile) * RoundUp(a.d_pruned, 8);
}

// Candidate blocks per partial work item. Each item first loads and splits its KV head's queries,
// so larger chunks spread that over more blocks; auto (0) takes 128 and halves it, down to 16,
// while the grid would have fewer than kAutoMinItems items (a small call keeps every SM busy).
// Measured on the H100 (1024 blocks, 32 / 8 heads, 256 tasks, docs/BENCHMARKS.md): 6.70 ms per
// call with 16 blocks per item, 5.99 with 32, 5.45 with 64, 5.31 with 128.
constexpr size_t kAutoMinItems = 4096;

}  // namespace

size_t BlockScoreBlocksPerCta(const BlockScoreArgs& a) {
  if (a.blocks_per_cta != 0) return a.blocks_per_cta;
  size_t per_cta = 128;
  const auto items = [&](size_t b) {
    return a.kv_heads * ((a.max_candidates + b - 1) / b) * a.num_tasks;
  };
  while (per_cta > 16 && items(per_cta) < kAutoMinItems) per_cta /= 2;
  return per_cta;
}

Status ValidateBlockScoreShape(const BlockScoreArgs& a) {
  if (a.kv_heads == 0 || a.q_heads == 0 || a.q_heads % a.kv_heads != 0) {
    return InvalidArgument("ScoreBlocks: q_heads %zu is not a positive multiple of kv_heads %zu",
                           a.q_heads, a.kv_heads);
  }
  if (a.num_queries == 0 || a.num_queries > 64) {
    return InvalidArgument("ScoreBlocks: num_queries %zu outside 1..64", a.num_queries);
  }
  if (a.d_pruned == 0 || a.d_pruned > a.head_dim) {
    return InvalidArgument("ScoreBlocks: d_pruned %zu outside 1..head_dim %zu", a.d_pruned,
                           a.head_dim);
  }
  if (a.vectors_per_block == 0) return InvalidArgument("ScoreBlocks: vectors_per_block is 0");
  if (a.query_stride < a.q_heads * a.head_dim && a.num_queries > 1) {
    return InvalidArgument("ScoreBlocks: query_stride %zu < q_heads * head_dim %zu", a.query_stride,
                           a.q_heads * a.head_dim);
  }
  if (a.dtype != DType::kF16 && a.dtype != DType::kBF16) {
    return InvalidArgument("ScoreBlocks: representations must be f16 or bf16");
  }
  const size_t qfloats = QueryFloats(a);
  if (qfloats > kMaxQueryFloats) {
    return InvalidArgument(
        "ScoreBlocks: x %zu * group %zu * d_pruned %zu (padded: %zu query floats) exceed %zu "
        "(shared memory)",
        a.num_queries, a.q_heads / a.kv_heads, a.d_pruned, qfloats, kMaxQueryFloats);
  }
  if (a.stages != 0 && a.stages != 3) {
    return InvalidArgument("ScoreBlocks: stages %d is not 0 or 3", a.stages);
  }
  if (a.blocks_per_cta > kMaxBlocksPerCta) {
    return InvalidArgument("ScoreBlocks: blocks_per_cta %zu outside 0 (auto) .. %zu",
                           a.blocks_per_cta, kMaxBlocksPerCta);
  }
  const size_t per_cta = BlockScoreBlocksPerCta(a);
  const size_t chunks = (a.max_candidates + per_cta - 1) / per_cta;
  if (a.num_tasks > 65535 || a.kv_heads > 65535 || chunks > 65535) {
    return InvalidArgument(
        "ScoreBlocks: %zu tasks / %zu KV heads / %zu chunks of %zu candidates exceed the grid "
        "(65535)",
        a.num_tasks, a.kv_heads, chunks, per_cta);
  }
  return Status::Ok();
}

namespace {

Shape ShapeOf(const BlockScoreArgs& a) {
  const size_t head_offset = a.head_major ? a.vectors_per_block * a.d_pruned : a.d_pruned;
  const size_t vector_stride = a.head_major ? a.d_pruned : a.kv_heads * a.d_pruned;
  return Shape{a.max_candidates, a.num_queries, a.query_stride, a.q_heads,
               a.kv_heads,       a.head_dim,    a.d_pruned,     a.vectors_per_block,
               a.scale,          a.per_kv_head, a.num_tasks,    BlockScoreBlocksPerCta(a),
               head_offset,      vector_stride};
}

}  // namespace

void RepresentationsToHeadMajor(const uint16_t* src, size_t blocks, size_t vectors_per_block,
                                size_t kv_heads, size_t d_pruned, uint16_t* dst) {
  for (size_t b = 0; b < blocks; ++b) {
    const size_t base = b * vectors_per_block * kv_heads * d_pruned;
    for (size_t v = 0; v < vectors_per_block; ++v) {
      for (size_t h = 0; h < kv_heads; ++h) {
        std::copy_n(src + base + (v * kv_heads + h) * d_pruned, d_pruned,
                    dst + base + (h * vectors_per_block + v) * d_pruned);
      }
    }
  }
}

bool BlockScoreUsesTensorCores(const BlockScoreArgs& a) {
  if (!a.tensor_cores || a.kv_heads == 0 || a.q_heads % a.kv_heads != 0) return false;
  const size_t qn = a.num_queries * (a.q_heads / a.kv_heads);
  return a.d_pruned == 32 && a.vectors_per_block % 16 == 0 &&
         a.vectors_per_block <= 8 * kMmaMaxVecTiles && qn >= 1 && qn <= 64 &&
         (a.dtype == DType::kF16 || a.dtype == DType::kBF16);
}

size_t BlockScoreWorkspaceBytes(const BlockScoreArgs& args) {
  return args.num_tasks * TaskFloats(ShapeOf(args)) * sizeof(float);
}

Status ScoreBlocks(CudaStream* stream, const BlockScoreArgs& args, void* workspace) {
  if (args.num_tasks == 0 || args.max_candidates == 0) return Status::Ok();
  KVSTAR_RETURN_IF_ERROR(ValidateBlockScoreShape(args));
  if (args.tasks == nullptr) return InvalidArgument("ScoreBlocks: tasks is null");
  if (workspace == nullptr) return InvalidArgument("ScoreBlocks: workspace is null");
  const Shape sh = ShapeOf(args);
  float* ws = static_cast<float*>(workspace);
  const cudaStream_t s = AsCuda(stream);
  const size_t smem = QueryFloats(args) * sizeof(float);
  // One CTA per work item, or at most max_ctas slim CTAs looping over the items.
  const bool slim = args.max_ctas > 0;
  const auto grid_for = [&](size_t items, size_t per_cta) {
    const size_t full = (items + per_cta - 1) / per_cta;
    return static_cast<unsigned>(slim ? std::min(full, args.max_ctas) : full);
  };
  const dim3 partial_grid =
      slim ? dim3(grid_for(PartialItems(sh), 1))
           : dim3(static_cast<unsigned>(args.kv_heads), static_cast<unsigned>(ChunksOf(sh)),
                  static_cast<unsigned>(args.num_tasks));
  const size_t qn = args.num_queries * (args.q_heads / args.kv_heads);
  if (BlockScoreUsesTensorCores(args)) {
    const bool f16 = args.dtype == DType::kF16;
    const auto run = [&]<typename T, int MQ, bool kSlim, int STAGES>() {
      auto* kernel = PartialKernelMma<T, MQ, kSlim, STAGES>;
      const unsigned threads = kSlim ? kSlimThreads : kPartialThreads;
      const size_t ring = ScoreRingSmem(STAGES, threads);
      if (ring > 48 * 1024) {
        // Above the default limit; set on every launch (host only) for the current device. If
        // it fails, so does the launch, which LaunchStatus reports.
        (void)cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   static_cast<int>(ring));
      }
      kernel<<<partial_grid, threads, ring, s>>>(args.tasks, sh, ws);
    };
    const auto launch = [&]<typename T, int MQ>() {
      if (slim) {
        args.stages > 0 ? run.template operator()<T, MQ, true, 3>()
                        : run.template operator()<T, MQ, true, 0>();
      } else {
        args.stages > 0 ? run.template operator()<T, MQ, false, 3>()
                        : run.template operator()<T, MQ, false, 0>();
      }
    };
    if (qn <= 32) {
      f16 ? launch.template operator()<__half, 2>()
          : launch.template operator()<__nv_bfloat16, 2>();
    } else {
      f16 ? launch.template operator()<__half, 4>()
          : launch.template operator()<__nv_bfloat16, 4>();
    }
  } else {
    const auto launch = [&]<typename T>() {
      if (slim) {
        PartialKernel<T, true><<<partial_grid, kSlimThreads, smem, s>>>(args.tasks, sh, ws);
      } else {
        PartialKernel<T, false><<<partial_grid, kPartialThreads, smem, s>>>(args.tasks, sh, ws);
      }
    };
    args.dtype == DType::kF16 ? launch.template operator()<__half>()
                              : launch.template operator()<__nv_bfloat16>();
  }
  KVSTAR_RETURN_IF_ERROR(LaunchStatus("ScoreBlocks PartialKernel"));
  const unsigned norm_threads = slim ? kSlimThreads : kNormThreads;
  NormaliseKernel<<<grid_for(PairsOf(sh) * args.num_tasks, norm_threads / 32), norm_threads, 0,
                    s>>>(args.tasks, sh, ws);
  KVSTAR_RETURN_IF_ERROR(LaunchStatus("ScoreBlocks NormaliseKernel"));
  const unsigned combine_threads = slim ? kSlimThreads : kCombineThreads;
  CombineKernel<<<grid_for(args.max_candidates * args.num_tasks, combine_threads), combine_threads,
                  0, s>>>(args.tasks, sh, ws);
  return LaunchStatus("ScoreBlocks CombineKernel");
}

}  // namespace kvstar::cuda
