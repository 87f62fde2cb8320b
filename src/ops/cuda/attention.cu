// Attention over block tables: one kernel for decode and prefill, plus a log-sum-exp merge.
//
// A CTA owns up to kRows "rows" = (query, query head) pairs that share one KV head: the query
// heads of a GQA group (up to 8 of them) times a few consecutive queries when they share the
// block table (prefill). So K/V are read from memory once per CTA for all its rows. The CTA walks
// its piece of the sequence in tiles of kTile tokens, copied to shared memory by cp.async three
// stages deep (loads of the next two tiles are in flight while one is computed), then per tile:
//   QK:      thread = (token, part of head_dim); dots for every row, q broadcast from smem
//   softmax: warp = row; online max / sum in registers, p and the rescale factor to smem
//   PV:      warp = every 4th token, lane = 2 consecutive dims; accumulators for every row
// Long sequences with few CTAs (decode) are split into pieces that run as separate CTAs; the
// merge kernel combines their (max, sum, acc) partials.
//
// Two specialised kernels take the common cases: DecodeKernel (one query per CTA, bf16 K/V
// streamed into registers) and PrefillKernel (many queries of one table, bf16 K/V, on the tensor
// cores); the tiled kernel remains for f32 K/V and for comparisons.
//
// Bounded specialization: head_dim in {64, 80, 96, 128} x KV dtype in {f32, bf16}.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "ops/cuda/cuda_util.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/ops.h"

namespace kvstar::cuda {
namespace {

using internal::AsCuda;
using internal::LoadStream16;
using internal::Mma16816;
using internal::SplitPair;
using internal::ToF32;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRows = 8;
constexpr int kStages = 3;
constexpr size_t kMinSplitTokens = 128;

template <typename T>
constexpr int TileTokens() {
  return sizeof(T) == 2 ? 64 : 32;
}

template <typename T, int D>
struct Cfg {
  static constexpr int kTile = TileTokens<T>();
  static constexpr int kChunks = D * static_cast<int>(sizeof(T)) / 16;  // 16 B pieces of a row
  // QK: each half of the CTA takes every other row; within a half, kParts threads per token.
  static constexpr int kParts = kThreads / 2 / kTile;
  static constexpr int kLoadParts = kThreads / kTile;  // threads per token for the copies
  static constexpr int kChunksPerPart = kChunks / kParts;
  static constexpr int kElemsPerChunk = 16 / static_cast<int>(sizeof(T));
  // One spare 16 B unit per row: consecutive rows start 16 B apart modulo 128 B, so 8 lanes
  // reading the same column of 8 rows hit distinct banks.
  static constexpr int kRowBytes = D * static_cast<int>(sizeof(T)) + 16;
  static constexpr int kStageBytes = 2 * kTile * kRowBytes;  // K then V
  static constexpr int kPairs = (D + 63) / 64;               // dim pairs per lane in PV
  static constexpr int kSmemStages = kStages * kStageBytes;
  static constexpr int kSmemQ = kRows * D * 4;
  static constexpr int kSmemS = kParts * kRows * kTile * 4;
  static constexpr int kSmemP = kTile * kRows * 4;
  static constexpr int kSmemBytes = kSmemStages + kSmemQ + kSmemS + kSmemP + 3 * kRows * 4;
  static_assert(kChunks % kParts == 0, "head_dim does not split evenly over QK threads");
  static_assert(kChunks % 2 == 0, "odd row length in 16 B units breaks the bank padding");
  static_assert(kWarps * kRows * D * 4 <= kSmemStages, "final reduction must fit in stages");
};

struct KernelParams {
  const float* q;
  const int64_t* q_last;
  const void* const* blocks;
  size_t blocks_stride;
  float* out;
  float* part_acc;  // [n][q_heads][num_splits][head_dim]
  float* part_ml;   // [n][q_heads][num_splits][2]
  int n;
  int q_heads;
  int kv_heads;
  int group;
  int block_tokens;
  int num_tokens;
  int queries_per_cta;
  int heads_per_cta;
  int head_chunks;
  int split_tokens;
  int num_splits;
  float scale;
};

// Copies src_bytes (16 or 0) of gmem and zero-fills the rest of the 16 B at smem. The L2 hint
// fetches whole 128 B lines: a warp's copy touches 64 B of each of several rows.
__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, int src_bytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// Eight (bf16) or four (f32) elements of a 16 B chunk as floats.
__device__ __forceinline__ void ChunkToF32(const float* src, float* dst) {
  const float4 v = *reinterpret_cast<const float4*>(src);
  dst[0] = v.x;
  dst[1] = v.y;
  dst[2] = v.z;
  dst[3] = v.w;
}
__device__ __forceinline__ void Bf16x8ToF32(const uint4 v, float* f) {
  const unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void ChunkToF32(const __nv_bfloat16* src, float* dst) {
  Bf16x8ToF32(*reinterpret_cast<const uint4*>(src), dst);
}

__device__ __forceinline__ float2 PairToF32(const float* src) {
  return *reinterpret_cast<const float2*>(src);
}
__device__ __forceinline__ float2 PairToF32(const __nv_bfloat16* src) {
  const unsigned w = *reinterpret_cast<const unsigned*>(src);
  return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, 2) AttentionKernel(const KernelParams p) {
  using C = Cfg<T, D>;
  constexpr int kTile = C::kTile;
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* stages = smem;
  float* q_s = reinterpret_cast<float*>(smem + C::kSmemStages);  // [kRows][D], scaled
  float* s_part = q_s + kRows * D;                               // [kParts][kRows][kTile]
  float* p_s = s_part + C::kParts * kRows * kTile;               // [kTile][kRows]
  float* alpha_s = p_s + kTile * kRows;                          // [kRows]
  float* ml_s = alpha_s + kRows;                                 // [kRows] (l at the end)
  int* limit_s = reinterpret_cast<int*>(ml_s + kRows);           // [kRows] row token limits

  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;
  const int q_tile = blockIdx.x;
  const int g = blockIdx.y / p.head_chunks;
  const int chunk = blockIdx.y % p.head_chunks;
  const int split = blockIdx.z;
  const int i0 = q_tile * p.queries_per_cta;
  const int nq = min(p.queries_per_cta, p.n - i0);
  const int h0 = chunk * p.heads_per_cta;  // first head inside the group
  const int nh = min(p.heads_per_cta, p.group - h0);
  const int rows = nq * nh;
  const int t_begin = split * p.split_tokens;
  const int split_end = min(t_begin + p.split_tokens, p.num_tokens);

  // Row r = (query i0 + r / nh, head g * group + h0 + r % nh).
  int row_limit[kRows];
  int cta_end = t_begin;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    row_limit[r] = t_begin;
    if (r < rows) {
      const int64_t last = p.q_last[i0 + r / nh];
      const int64_t lim = last + 1 < split_end ? last + 1 : split_end;
      row_limit[r] = static_cast<int>(lim > t_begin ? lim : t_begin);
      cta_end = max(cta_end, row_limit[r]);
    }
    if (tid == 0) limit_s[r] = row_limit[r];  // softmax indexes rows by warp: no register array
  }
  for (int idx = tid; idx < kRows * D; idx += kThreads) {
    const int r = idx / D;
    const int d = idx % D;
    float v = 0.0f;
    if (r < rows) {
      const int i = i0 + r / nh;
      const int h = g * p.group + h0 + r % nh;
      v = p.q[(static_cast<size_t>(i) * p.q_heads + h) * D + d] * p.scale;
    }
    q_s[idx] = v;
  }

  const void* const* table = p.blocks + (p.blocks_stride ? p.blocks_stride * i0 : 0);
  const int num_tiles = (cta_end - t_begin + kTile - 1) / kTile;
  const size_t head_off = static_cast<size_t>(g) * p.block_tokens * D;  // K half, this head
  const size_t v_off = static_cast<size_t>(p.kv_heads) * p.block_tokens * D;

  // Copies: thread = (token, part); part p copies 16 B chunks p, p + kLoadParts, ... of the K
  // and V rows of its token, so neighbouring lanes read whole sectors. One block-table read and one
  // division per thread and tile; copies past the end read nothing (src-size 0).
  const int ld_tok = tid / C::kLoadParts;
  const int ld_part = tid % C::kLoadParts;
  auto load_tile = [&](int tile, int stage) {
    const int t_raw = t_begin + tile * kTile + ld_tok;
    const int t = min(t_raw, cta_end - 1);
    const int src_bytes = t_raw < cta_end ? 16 : 0;
    const int blk = t / p.block_tokens;
    const int row = t - blk * p.block_tokens;
    const unsigned char* kp = reinterpret_cast<const unsigned char*>(
                                  __ldg(reinterpret_cast<const unsigned long long*>(table) + blk)) +
                              (head_off + static_cast<size_t>(row) * D) * sizeof(T) + ld_part * 16;
    const unsigned char* vp = kp + v_off * sizeof(T);
    unsigned char* dk = stages + stage * C::kStageBytes + ld_tok * C::kRowBytes + ld_part * 16;
    unsigned char* dv = dk + kTile * C::kRowBytes;
#pragma unroll
    for (int j = 0; j < (C::kChunks + C::kLoadParts - 1) / C::kLoadParts; ++j) {
      if (ld_part + j * C::kLoadParts < C::kChunks) {
        CpAsync16(dk + j * C::kLoadParts * 16, kp + j * C::kLoadParts * 16, src_bytes);
        CpAsync16(dv + j * C::kLoadParts * 16, vp + j * C::kLoadParts * 16, src_bytes);
      }
    }
  };

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_tiles) load_tile(s, s);
    CpAsyncCommit();
  }

  // Online-softmax state of row `warp` (kept by that warp, every lane alike).
  float m_run[kRows / kWarps];
  float l_run[kRows / kWarps];
#pragma unroll
  for (int j = 0; j < kRows / kWarps; ++j) {
    m_run[j] = -INFINITY;
    l_run[j] = 0.0f;
  }
  float acc[kRows][C::kPairs][2];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int j = 0; j < C::kPairs; ++j) acc[r][j][0] = acc[r][j][1] = 0.0f;
  }

  const int qk_tok = tid % kTile;
  const int qk_part = (tid / kTile) % C::kParts;
  const int qk_half = tid / (kThreads / 2);  // rows qk_half, qk_half + 2, ...

  for (int tile = 0; tile < num_tiles; ++tile) {
    CpAsyncWait<kStages - 2>();
    __syncthreads();
    if (tile + kStages - 1 < num_tiles)
      load_tile(tile + kStages - 1, (tile + kStages - 1) % kStages);
    CpAsyncCommit();

    const int tile_start = t_begin + tile * kTile;
    const int valid = min(kTile, cta_end - tile_start);
    const unsigned char* st = stages + (tile % kStages) * C::kStageBytes;
    const T* k_s = reinterpret_cast<const T*>(st);
    const T* v_s = reinterpret_cast<const T*>(st + kTile * C::kRowBytes);

    // QK: partial dots over this thread's part of head_dim, for every other row.
    if (qk_tok < valid) {
      float dot[kRows / 2];
#pragma unroll
      for (int rr = 0; rr < kRows / 2; ++rr) dot[rr] = 0.0f;
      const T* krow = reinterpret_cast<const T*>(reinterpret_cast<const unsigned char*>(k_s) +
                                                 qk_tok * C::kRowBytes);
#pragma unroll
      for (int c = 0; c < C::kChunksPerPart; ++c) {
        const int e0 = (qk_part * C::kChunksPerPart + c) * C::kElemsPerChunk;
        float kf[C::kElemsPerChunk];
        ChunkToF32(krow + e0, kf);
#pragma unroll
        for (int rr = 0; rr < kRows / 2; ++rr) {
          const int r = 2 * rr + qk_half;
          if (r < rows) {
            float qf[C::kElemsPerChunk];
#pragma unroll
            for (int e = 0; e < C::kElemsPerChunk; e += 4) {
              ChunkToF32(q_s + r * D + e0 + e, qf + e);
            }
#pragma unroll
            for (int e = 0; e < C::kElemsPerChunk; ++e) dot[rr] = fmaf(qf[e], kf[e], dot[rr]);
          }
        }
      }
#pragma unroll
      for (int rr = 0; rr < kRows / 2; ++rr) {
        s_part[(qk_part * kRows + 2 * rr + qk_half) * kTile + qk_tok] = dot[rr];
      }
    }
    __syncthreads();

    // Softmax: warp w updates row w.
#pragma unroll
    for (int j = 0; j < kRows / kWarps; ++j) {
      const int r = warp + j * kWarps;
      if (r >= rows) continue;
      float sv[kTile / 32];
      float mx = -INFINITY;
#pragma unroll
      for (int u = 0; u < kTile / 32; ++u) {
        const int tok = lane + 32 * u;
        float s = -INFINITY;
        if (tok < valid && tile_start + tok < limit_s[r]) {
          s = 0.0f;
#pragma unroll
          for (int part = 0; part < C::kParts; ++part)
            s += s_part[(part * kRows + r) * kTile + tok];
        }
        sv[u] = s;
        mx = fmaxf(mx, s);
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_new = fmaxf(m_run[j], mx);
      float alpha = 1.0f;
      float sum = 0.0f;
      if (m_new == -INFINITY) {  // nothing seen yet: acc stays zero
#pragma unroll
        for (int u = 0; u < kTile / 32; ++u) p_s[(lane + 32 * u) * kRows + r] = 0.0f;
      } else {
        alpha = expf(m_run[j] - m_new);  // 0 when m_run = -inf
#pragma unroll
        for (int u = 0; u < kTile / 32; ++u) {
          const float e = expf(sv[u] - m_new);  // 0 for masked tokens
          p_s[(lane + 32 * u) * kRows + r] = e;
          sum += e;
        }
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      l_run[j] = l_run[j] * alpha + sum;
      m_run[j] = m_new;
      if (lane == 0) alpha_s[r] = alpha;
    }
    __syncthreads();

    // PV: warp takes tokens warp, warp + kWarps, ...; lane owns dims 2 lane + 64 j (+1).
    float alpha_r[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) alpha_r[r] = r < rows ? alpha_s[r] : 1.0f;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
#pragma unroll
      for (int j = 0; j < C::kPairs; ++j) {
        acc[r][j][0] *= alpha_r[r];
        acc[r][j][1] *= alpha_r[r];
      }
    }
    // Unrolled so that the shared-memory loads of several tokens are in flight together.
#pragma unroll 4
    for (int tok = warp; tok < valid; tok += kWarps) {
      const T* vrow = reinterpret_cast<const T*>(reinterpret_cast<const unsigned char*>(v_s) +
                                                 tok * C::kRowBytes);
      float pr[kRows];
      ChunkToF32(p_s + tok * kRows, pr);
      if (rows > 4) {
        ChunkToF32(p_s + tok * kRows + 4, pr + 4);
      } else {
        pr[4] = pr[5] = pr[6] = pr[7] = 0.0f;
      }
#pragma unroll
      for (int j = 0; j < C::kPairs; ++j) {
        const int d = 2 * lane + 64 * j;
        if (d < D) {
          const float2 vv = PairToF32(vrow + d);
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
            if (r < rows) {
              acc[r][j][0] = fmaf(pr[r], vv.x, acc[r][j][0]);
              acc[r][j][1] = fmaf(pr[r], vv.y, acc[r][j][1]);
            }
          }
        }
      }
    }
  }

  // Sum the warps' accumulators through shared memory (the stages are free now).
  CpAsyncWait<0>();
  __syncthreads();
  float* red = reinterpret_cast<float*>(stages);  // [kWarps][kRows][D]
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int j = 0; j < C::kPairs; ++j) {
      const int d = 2 * lane + 64 * j;
      if (d < D) {
        red[(warp * kRows + r) * D + d] = acc[r][j][0];
        red[(warp * kRows + r) * D + d + 1] = acc[r][j][1];
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kRows / kWarps; ++j) {
    const int r = warp + j * kWarps;
    if (lane == 0) {
      alpha_s[r] = m_run[j];  // reused: final max
      ml_s[r] = l_run[j];     // final sum
    }
  }
  __syncthreads();
  for (int idx = tid; idx < rows * D; idx += kThreads) {
    const int r = idx / D;
    const int d = idx % D;
    float a = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) a += red[(w * kRows + r) * D + d];
    const int i = i0 + r / nh;
    const int h = g * p.group + h0 + r % nh;
    const size_t oh = static_cast<size_t>(i) * p.q_heads + h;
    if (p.num_splits == 1) {
      p.out[oh * D + d] = a / ml_s[r];
    } else {
      const size_t slot = oh * p.num_splits + split;
      p.part_acc[slot * D + d] = a;
      if (d == 0) {
        p.part_ml[2 * slot] = alpha_s[r];
        p.part_ml[2 * slot + 1] = ml_s[r];
      }
    }
  }
}

// out row = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s over the pieces that saw tokens.
// One CTA per (query, head): kMergeThreads / head_dim groups of threads each sum every groups-th
// piece (loads of many pieces in flight at once: the pieces are read once, and a serial loop over
// 64 pieces was latency-bound), then the groups are added through shared memory.
constexpr int kMergeThreads = 512;

__global__ void __launch_bounds__(kMergeThreads)
    MergeKernel(const float* __restrict__ part_acc, const float* __restrict__ part_ml,
                int num_splits, int head_dim, float* __restrict__ out) {
  __shared__ float red[kMergeThreads];
  __shared__ float warp_val[kMergeThreads / 32];
  // Launched as a programmatic dependent of the attention kernel (its launch overlaps that
  // kernel's tail): wait here until the partials are complete and visible.
  internal::AllowDependentGrid();
  internal::WaitForPriorGrid();
  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;
  const size_t oh = blockIdx.x;
  const float* ml = part_ml + oh * num_splits * 2;
  auto block_reduce = [&](float v, bool is_max) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float x = __shfl_xor_sync(0xffffffffu, v, o);
      v = is_max ? fmaxf(v, x) : v + x;
    }
    if (lane == 0) warp_val[warp] = v;
    __syncthreads();
    v = warp_val[0];
    for (int w = 1; w < kMergeThreads / 32; ++w)
      v = is_max ? fmaxf(v, warp_val[w]) : v + warp_val[w];
    __syncthreads();  // warp_val is reused by the next reduction
    return v;
  };
  float mx = -INFINITY;
  for (int sp = tid; sp < num_splits; sp += kMergeThreads) {
    if (ml[2 * sp + 1] > 0.0f) mx = fmaxf(mx, ml[2 * sp]);
  }
  mx = block_reduce(mx, true);
  float total = 0.0f;
  for (int sp = tid; sp < num_splits; sp += kMergeThreads) {
    if (ml[2 * sp + 1] > 0.0f) total += expf(ml[2 * sp] - mx) * ml[2 * sp + 1];
  }
  total = block_reduce(total, false);

  const int groups = kMergeThreads / head_dim;
  const int gi = tid / head_dim;
  const int d = tid % head_dim;
  if (gi < groups) {
    float a = 0.0f;
    const float* acc = part_acc + oh * num_splits * head_dim + d;
#pragma unroll 8
    for (int sp = gi; sp < num_splits; sp += groups) {
      const float l = ml[2 * sp + 1];
      const float w = l > 0.0f ? expf(ml[2 * sp] - mx) : 0.0f;
      const float v = acc[static_cast<size_t>(sp) * head_dim];
      a += l > 0.0f ? w * v : 0.0f;
    }
    red[gi * head_dim + d] = a;
  }
  __syncthreads();
  if (tid < head_dim) {
    float a = 0.0f;
    for (int g = 0; g < groups; ++g) a += red[g * head_dim + tid];
    out[oh * head_dim + tid] = a / total;
  }
}

// ---------------------------------------------------------------------------------------------
// Decode kernel: one query (of one sequence) per CTA, all query heads of one KV head (G <= 8),
// bf16 K/V, head_dim 64 or 128. A token's K (or V) row is kLanesPerTok lanes x 16 B; a warp
// loads kTokPerLoad tokens per instruction and kUnroll such loads of K and of V before using any,
// straight from global memory into registers. Each group of kLanesPerTok lanes keeps its own
// online softmax over the tokens it loaded; groups are merged with shuffles and warps through
// shared memory once, at the end. No shared-memory tiles and no barriers in the loop: memory
// parallelism comes from the many resident warps (the tiled kernel is latency-bound at two CTAs
// per SM, see docs/BENCHMARKS.md).
constexpr int kDecThreads = 128;
constexpr int kDecWarps = kDecThreads / 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int D, int G>
struct DecCfg {
  static constexpr int kLanesPerTok = D / 8;  // 16 B = 8 bf16 per lane
  static constexpr int kTokPerLoad = 32 / kLanesPerTok;
  static constexpr int kUnroll = G <= 4 ? 4 : 2;
  static constexpr int kTokPerIter = kTokPerLoad * kUnroll;  // per warp and iteration
  static constexpr int kSmemBytes = kDecWarps * G * (D + 2) * 4;
};

// The end of a decode CTA: the warps' (acc [R][D], m and l [R], log2 units) for the nh query
// heads of KV head kvh, in shared memory, merged by log-sum-exp into the output (one piece) or
// into the piece's slot of the merge kernel's partials.
template <int D, int R>
__device__ __forceinline__ void CombineWarps(const KernelParams& p, const float* acc_s,
                                             const float* m_s, const float* l_s, int nh, int i,
                                             int kvh, int split) {
  for (int idx = threadIdx.x; idx < nh * D; idx += kDecThreads) {
    const int h = idx / D;
    const int d = idx % D;
    float mm = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecWarps; ++w) mm = fmaxf(mm, m_s[w * R + h]);
    float a = 0.0f, total = 0.0f;
    if (mm != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kDecWarps; ++w) {
        const float f = exp2f(m_s[w * R + h] - mm);
        a += f * acc_s[(w * R + h) * D + d];
        total += f * l_s[w * R + h];
      }
    }
    const size_t oh = static_cast<size_t>(i) * p.q_heads + kvh * p.group + h;
    if (p.num_splits == 1) {
      p.out[oh * D + d] = a / total;
    } else {
      const size_t slot = oh * p.num_splits + split;
      p.part_acc[slot * D + d] = a;
      if (d == 0) {
        p.part_ml[2 * slot] = mm * kLn2;  // natural-log units, as the tiled kernel and the merge
        p.part_ml[2 * slot + 1] = total;
      }
    }
  }
}

template <int D, int G>
__global__ void __launch_bounds__(kDecThreads) DecodeKernel(const KernelParams p) {
  using C = DecCfg<D, G>;
  constexpr int kL = C::kLanesPerTok;
  constexpr int kU = C::kUnroll;
  extern __shared__ __align__(16) unsigned char smem[];
  float* acc_s = reinterpret_cast<float*>(smem);  // [kDecWarps][G][D]
  float* m_s = acc_s + kDecWarps * G * D;         // [kDecWarps][G], log2 units
  float* l_s = m_s + kDecWarps * G;               // [kDecWarps][G]
  // A programmatic dependent of the K/V write before it (kernels.h): every read after the wait.
  internal::AllowDependentGrid();
  internal::WaitForPriorGrid();

  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int sub = lane % kL;  // dims sub * 8 .. sub * 8 + 7
  const int grp = lane / kL;  // token within a load
  const int i = blockIdx.x;
  const int g = blockIdx.y;
  const int split = blockIdx.z;
  const int nh = p.group;  // <= G
  const int t_begin = split * p.split_tokens;
  const int split_end = min(t_begin + p.split_tokens, p.num_tokens);
  const int64_t last = p.q_last[i];
  const int limit = static_cast<int>(last + 1 < split_end ? last + 1 : split_end);

  // q pre-scaled by scale * log2(e): scores are in log2 units, exponentials are exp2.
  float qf[G][8];
#pragma unroll
  for (int h = 0; h < G; ++h) {
#pragma unroll
    for (int e = 0; e < 8; ++e) qf[h][e] = 0.0f;
    if (h < nh) {
      const float* qrow =
          p.q + (static_cast<size_t>(i) * p.q_heads + g * p.group + h) * D + sub * 8;
      const float sc = p.scale * kLog2e;
#pragma unroll
      for (int e = 0; e < 8; ++e) qf[h][e] = qrow[e] * sc;  // once per CTA: no alignment needed
    }
  }
  float m[G], l[G], acc[G][8];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    m[h] = -INFINITY;
    l[h] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[h][e] = 0.0f;
  }

  const unsigned long long* table = reinterpret_cast<const unsigned long long*>(
      p.blocks + (p.blocks_stride ? p.blocks_stride * static_cast<size_t>(i) : 0));
  const size_t head_off = (static_cast<size_t>(g) * p.block_tokens * D + sub * 8) * 2;  // bytes
  const size_t v_off = static_cast<size_t>(p.kv_heads) * p.block_tokens * D * 2;

  // Loads of the warp's next group are issued before the current one is used (two groups in
  // flight per warp), so the arithmetic of one overlaps the memory latency of the next.
  auto load_group = [&](int base, uint4* kc, uint4* vc, bool* ok) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int t = base + u * C::kTokPerLoad + grp;
      ok[u] = t < limit;
      kc[u] = vc[u] = make_uint4(0, 0, 0, 0);
      if (ok[u]) {
        const int blk = t / p.block_tokens;
        const int row = t - blk * p.block_tokens;
        const unsigned char* kp = reinterpret_cast<const unsigned char*>(__ldg(table + blk)) +
                                  head_off + static_cast<size_t>(row) * D * 2;
        kc[u] = LoadStream16(kp);
        vc[u] = LoadStream16(kp + v_off);
      }
    }
  };
  constexpr int kStep = kDecWarps * C::kTokPerIter;
  uint4 kc[kU], vc[kU];
  bool ok[kU];
  load_group(t_begin + warp * C::kTokPerIter, kc, vc, ok);
  for (int base = t_begin + warp * C::kTokPerIter; base < limit; base += kStep) {
    uint4 kn[kU], vn[kU];
    bool okn[kU];
    load_group(base + kStep, kn, vn, okn);  // all predicated off past the limit
    float s[G][kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      float kf[8];
      Bf16x8ToF32(kc[u], kf);
#pragma unroll
      for (int h = 0; h < G; ++h) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) dot = fmaf(qf[h][e], kf[e], dot);
#pragma unroll
        for (int o = kL / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        s[h][u] = ok[u] ? dot : -INFINITY;
      }
    }
#pragma unroll
    for (int h = 0; h < G; ++h) {
      if (h >= nh) {  // padding head: adds nothing
#pragma unroll
        for (int u = 0; u < kU; ++u) s[h][u] = 0.0f;
        continue;
      }
      float mx = s[h][0];
#pragma unroll
      for (int u = 1; u < kU; ++u) mx = fmaxf(mx, s[h][u]);
      const float m_new = fmaxf(m[h], mx);
      if (m_new == -INFINITY) {  // this lane group has seen no token yet
#pragma unroll
        for (int u = 0; u < kU; ++u) s[h][u] = 0.0f;
        continue;
      }
      const float alpha = exp2f(m[h] - m_new);  // 0 when m = -inf
      float sum = 0.0f;
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        s[h][u] = exp2f(s[h][u] - m_new);  // 0 for masked tokens
        sum += s[h][u];
      }
      l[h] = l[h] * alpha + sum;
      m[h] = m_new;
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[h][e] *= alpha;
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      float vf[8];
      Bf16x8ToF32(vc[u], vf);
#pragma unroll
      for (int h = 0; h < G; ++h) {
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[h][e] = fmaf(s[h][u], vf[e], acc[h][e]);
      }
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      kc[u] = kn[u];
      vc[u] = vn[u];
      ok[u] = okn[u];
    }
  }

  // Merge the lane groups of the warp (butterfly over the group bits of the lane index).
#pragma unroll
  for (int h = 0; h < G; ++h) {
#pragma unroll
    for (int o = kL; o < 32; o <<= 1) {
      const float mo = __shfl_xor_sync(0xffffffffu, m[h], o);
      const float lo = __shfl_xor_sync(0xffffffffu, l[h], o);
      const float mm = fmaxf(m[h], mo);
      const float a = mm == -INFINITY ? 0.0f : exp2f(m[h] - mm);
      const float b = mm == -INFINITY ? 0.0f : exp2f(mo - mm);
      l[h] = l[h] * a + lo * b;
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float ao = __shfl_xor_sync(0xffffffffu, acc[h][e], o);
        acc[h][e] = acc[h][e] * a + ao * b;
      }
      m[h] = mm;
    }
  }
  if (grp == 0) {
#pragma unroll
    for (int h = 0; h < G; ++h) {
#pragma unroll
      for (int e = 0; e < 8; ++e) acc_s[(warp * G + h) * D + sub * 8 + e] = acc[h][e];
      if (sub == 0) {
        m_s[warp * G + h] = m[h];
        l_s[warp * G + h] = l[h];
      }
    }
  }
  __syncthreads();
  CombineWarps<D, G>(p, acc_s, m_s, l_s, nh, i, g, split);
}

// ---- Decode kernel on the tensor cores ---------------------------------------------------------
// The same work split as DecodeKernel (a CTA of four warps per (sequence, KV head, piece); a warp
// takes 16 tokens per iteration, every fourth group of 16), with the dot products and the
// weighted sum of V on mma.sync.m16n8k16 instead of FMAs and shuffles: the FMA kernel issues
// about 600 instructions per 8 tokens and lane, which keeps its schedulers busy two cycles in
// three at the copy rate (ncu, docs/BENCHMARKS.md), so that it cannot reach the read limit.
//   S = Q K^T: A = the group's query heads as rows g (rows g + 8 and heads past the group are
//     zero), B = K rows as columns; lane (g, t) loads 16 B of token row g, channels
//     32c + 8t .. 32c + 8t + 7, which are its k-slots of two k-steps (any assignment of channels
//     to k-slots works when A uses the same one), so the raw bf16 needs no shuffling.
//   softmax: the S fragments hold head g x tokens 2t, 2t + 1 (+ 8): the row maximum over 16
//     tokens is two shuffles.
//   O += P V: A = P straight from the S fragments (FlashAttention-2's layout identity), B = V;
//     the loaded V rows are transposed 8 x 8 at a time by movmatrix, so that lane (g, t) ends
//     with head g x channels 32c + 8t .. 32c + 8t + 7.
// Precision: K and V are bf16, exact in the MMA; q and p are f32 and go in as three bf16 terms
// (hi + mid + lo: 24 significant bits), as in the prefill kernel, so the result matches f32
// arithmetic up to summation order.
constexpr int kDmRows = 8;  // query heads per KV head the kernel takes (rows of the MMA)

__device__ __forceinline__ uint32_t TransposeB16x8x8(uint32_t v) {
  uint32_t r;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(r) : "r"(v));
  return r;
}

__device__ __forceinline__ uint32_t Word(const uint4& v, int j) {
  return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
}

template <int D>
struct DecMmaCfg {
  static constexpr int kChunks = D / 32;  // 32-channel chunks of a row (16 B per lane each)
  static constexpr int kTokPerIter = 16;  // per warp
  static constexpr int kSmemBytes = kDecWarps * kDmRows * (D + 2) * 4;
};

template <int D>
__global__ void __launch_bounds__(kDecThreads, 2) DecodeMmaKernel(const KernelParams p) {
  using C = DecMmaCfg<D>;
  constexpr int kC = C::kChunks;
  extern __shared__ __align__(16) unsigned char smem[];
  float* acc_s = reinterpret_cast<float*>(smem);  // [kDecWarps][kDmRows][D]
  float* m_s = acc_s + kDecWarps * kDmRows * D;   // [kDecWarps][kDmRows], log2 units
  float* l_s = m_s + kDecWarps * kDmRows;         // [kDecWarps][kDmRows]
  internal::AllowDependentGrid();
  internal::WaitForPriorGrid();

  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int g = lane / 4;  // MMA row (query head) and loaded token
  const int t = lane % 4;
  const int i = blockIdx.x;
  const int kvh = blockIdx.y;
  const int split = blockIdx.z;
  const int nh = p.group;  // <= kDmRows
  const int t_begin = split * p.split_tokens;
  const int split_end = min(t_begin + p.split_tokens, p.num_tokens);
  const int64_t last = p.q_last[i];
  const int limit = static_cast<int>(last + 1 < split_end ? last + 1 : split_end);

  // q of head g, pre-scaled by scale * log2(e), channels 32c + 8t + 4j + {0..3}: the A
  // fragments' (row g) k-slots (2t, 2t + 1) and (2t + 8, 2t + 9) of k-step (c, j), three terms.
  uint32_t qa[kC][2][3][2];
  {
    const float sc = p.scale * kLog2e;
    const float* qrow = p.q + (static_cast<size_t>(i) * p.q_heads + kvh * p.group + g) * D;
#pragma unroll
    for (int c = 0; c < kC; ++c) {
      float v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = g < nh ? qrow[32 * c + 8 * t + e] * sc : 0.0f;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        SplitPair(v[4 * j], v[4 * j + 1], qa[c][j][0][0], qa[c][j][1][0], qa[c][j][2][0]);
        SplitPair(v[4 * j + 2], v[4 * j + 3], qa[c][j][0][1], qa[c][j][1][1], qa[c][j][2][1]);
      }
    }
  }
  float m_run = -INFINITY;  // of row g, the same in its four lanes
  float l_run = 0.0f;       // this lane's share of row g's sum
  float o[kC][4][4];        // PV fragments: head g x channels 32c + 8t + 2j + {0, 1}
#pragma unroll
  for (int c = 0; c < kC; ++c) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[c][j][e] = 0.0f;
    }
  }

  const unsigned long long* table = reinterpret_cast<const unsigned long long*>(
      p.blocks + (p.blocks_stride ? p.blocks_stride * static_cast<size_t>(i) : 0));
  const size_t head_off = (static_cast<size_t>(kvh) * p.block_tokens * D + 8 * t) * 2;  // bytes
  const size_t v_off = static_cast<size_t>(p.kv_heads) * p.block_tokens * D * 2;
  constexpr int kStep = kDecWarps * C::kTokPerIter;

  for (int base = t_begin + warp * C::kTokPerIter; base < limit; base += kStep) {
    // K and V rows of tokens base + 8 nt + g (zero past the limit).
    uint4 kq[2][kC], vq[2][kC];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const int tok = base + 8 * nt + g;
      if (tok < limit) {
        const int blk = tok / p.block_tokens;
        const int row = tok - blk * p.block_tokens;
        const unsigned char* kp = reinterpret_cast<const unsigned char*>(__ldg(table + blk)) +
                                  head_off + static_cast<size_t>(row) * D * 2;
#pragma unroll
        for (int c = 0; c < kC; ++c) {
          kq[nt][c] = LoadStream16(kp + 64 * c);
          vq[nt][c] = LoadStream16(kp + v_off + 64 * c);
        }
      } else {
#pragma unroll
        for (int c = 0; c < kC; ++c) kq[nt][c] = vq[nt][c] = make_uint4(0, 0, 0, 0);
      }
    }
    // S: head g x tokens base + 8 nt + 2t + {0, 1}.
    float sf[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) sf[nt][e] = 0.0f;
#pragma unroll
      for (int c = 0; c < kC; ++c) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const uint32_t b0 = Word(kq[nt][c], 2 * j);
          const uint32_t b1 = Word(kq[nt][c], 2 * j + 1);
#pragma unroll
          for (int term = 0; term < 3; ++term) {
            const uint32_t a[4] = {qa[c][j][term][0], 0u, qa[c][j][term][1], 0u};
            Mma16816(sf[nt], a, b0, b1);
          }
        }
      }
    }
    float s4[4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        s4[2 * nt + e] = base + 8 * nt + 2 * t + e < limit ? sf[nt][e] : -INFINITY;
      }
    }
    float mx = fmaxf(fmaxf(s4[0], s4[1]), fmaxf(s4[2], s4[3]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m_run, mx);
    const bool none = m_new == -INFINITY;  // no token of row g seen yet
    const float alpha = none ? 1.0f : exp2f(m_run - m_new);
    float pv[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) pv[e] = none ? 0.0f : exp2f(s4[e] - m_new);
    l_run = l_run * alpha + ((pv[0] + pv[1]) + (pv[2] + pv[3]));
    m_run = m_new;
    uint32_t pa[3][2];
    SplitPair(pv[0], pv[1], pa[0][0], pa[1][0], pa[2][0]);
    SplitPair(pv[2], pv[3], pa[0][1], pa[1][1], pa[2][1]);
#pragma unroll
    for (int c = 0; c < kC; ++c) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        o[c][j][0] *= alpha;
        o[c][j][1] *= alpha;
        // Word j of a lane's V row piece is the (row g, columns 2t, 2t + 1) element pair of an
        // 8 x 8 matrix (tokens x channels 32c + 8 col/2 + 2j + col%2); transposed, it is the B
        // fragment of k = tokens 2t, 2t + 1 (+ 8) and n = channel column g.
        const uint32_t b0 = TransposeB16x8x8(Word(vq[0][c], j));
        const uint32_t b1 = TransposeB16x8x8(Word(vq[1][c], j));
#pragma unroll
        for (int term = 0; term < 3; ++term) {
          const uint32_t a[4] = {pa[term][0], 0u, pa[term][1], 0u};
          Mma16816(o[c][j], a, b0, b1);
        }
      }
    }
  }

  l_run += __shfl_xor_sync(0xffffffffu, l_run, 1);
  l_run += __shfl_xor_sync(0xffffffffu, l_run, 2);
  if (g < nh) {
#pragma unroll
    for (int c = 0; c < kC; ++c) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        float* dst = acc_s + (warp * kDmRows + g) * D + 32 * c + 8 * t + 2 * j;
        dst[0] = o[c][j][0];
        dst[1] = o[c][j][1];
      }
    }
    if (t == 0) {
      m_s[warp * kDmRows + g] = m_run;
      l_s[warp * kDmRows + g] = l_run;
    }
  }
  __syncthreads();
  CombineWarps<D, kDmRows>(p, acc_s, m_s, l_s, nh, i, kvh, split);
}

// ---- Prefill kernel: tensor cores -----------------------------------------------------------
// Several queries of one block table (prefill, or a chunk of a prompt after its prefix) over bf16
// K/V, head_dim a multiple of 16. A CTA of four warps owns kPfRows = 64 rows = (query, query head)
// pairs of one KV head (queries_per_cta queries x heads_per_cta heads), 16 rows per warp, and
// walks its piece of the sequence in tiles of kPfTile tokens, double-buffered by cp.async. Per
// tile and warp, FlashAttention-2's loop on mma.sync.m16n8k16 (bf16 in, f32 accumulate):
// S = Q K^T into accumulator fragments, the online softmax on those registers (exp2, the scale
// and log2(e) folded into Q), then O += P V with P taken straight from the S fragments and V
// transposed by ldmatrix. Precision: K and V are bf16, exact in the MMA; Q and P are f32 and go in
// as three bf16 terms each (hi + mid + lo carry 24 significant bits), so every product is three
// MMAs and the result matches f32 arithmetic (the CPU op) up to summation order.
constexpr int kPfWarps = 4;
constexpr int kPfThreads = kPfWarps * 32;
constexpr int kPfRows = 16 * kPfWarps;
constexpr int kPfTile = 64;
constexpr int kPfSplits = 3;  // bf16 terms of an f32 operand

template <int D>
struct PfCfg {
  static_assert(D % 16 == 0, "head_dim must be a multiple of the MMA's k (16)");
  // Shared rows padded by 16 B: the 8 rows a fragment load touches start 4 banks apart.
  static constexpr int kRowBytes = D * 2 + 16;
  static constexpr int kStageBytes = 2 * kPfTile * kRowBytes;  // K then V
  // Q's first term lives in registers (loaded once through stage 1, before any tile is there);
  // the other terms in shared memory. 104 KB at head_dim 128: two CTAs per SM.
  static constexpr int kQBytes = (kPfSplits - 1) * kPfRows * kRowBytes;  // [term-1][row][D]
  static constexpr int kSmemBytes = 2 * kStageBytes + kQBytes;           // two stages
  static_assert(kStageBytes >= kPfRows * kRowBytes, "a stage must hold Q's first term");
  static constexpr int kChunks = D * 2 / 16;  // 16 B pieces per row
  static constexpr int kLoadsPerThread = kPfTile * kChunks / kPfThreads;
  static_assert(kPfTile * kChunks % kPfThreads == 0, "tile copies do not split evenly");
};

__device__ __forceinline__ uint32_t Lds32(const unsigned char* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// Four 8x8 b16 matrices, transposed: lane l gives the address of row l % 8 of matrix l / 8 and
// receives, from each matrix, its elements (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4).
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t (&r)[4], const void* smem_row) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
}

template <int D>
__global__ void __launch_bounds__(kPfThreads, 2) PrefillKernel(const KernelParams p) {
  using C = PfCfg<D>;
  constexpr int kRowBytes = C::kRowBytes;
  constexpr int kTokTiles = kPfTile / 8;  // n-tiles of S
  constexpr int kDimTiles = D / 8;        // n-tiles of O
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* q_s = smem + 2 * C::kStageBytes;
  __shared__ int cta_end_s;

  const int tid = threadIdx.x;
  const int lane = tid % 32;
  const int warp = tid / 32;
  const int fg = lane / 4;  // fragment row (and column of B)
  const int ft = lane % 4;  // fragment pair
  const int g = blockIdx.y / p.head_chunks;
  const int chunk = blockIdx.y % p.head_chunks;
  const int split = blockIdx.z;
  const int i0 = blockIdx.x * p.queries_per_cta;
  const int nq = min(p.queries_per_cta, p.n - i0);
  const int h0 = chunk * p.heads_per_cta;
  const int nh = min(p.heads_per_cta, p.group - h0);
  const int rows = nq * nh;  // row r = (query i0 + r / nh, head g * group + h0 + r % nh)
  const int t_begin = split * p.split_tokens;
  const int split_end = min(t_begin + p.split_tokens, p.num_tokens);

  // Token limits of this lane's two rows; the CTA walks up to the largest of all its rows.
  auto row_limit = [&](int r) {
    if (r >= rows) return t_begin;
    const int64_t last = p.q_last[i0 + r / nh];
    const int64_t lim = last + 1 < split_end ? last + 1 : split_end;
    return static_cast<int>(lim > t_begin ? lim : t_begin);
  };
  const int ra = warp * 16 + fg;
  const int rb = ra + 8;
  const int lim_a = row_limit(ra);
  const int lim_b = row_limit(rb);
  if (tid == 0) cta_end_s = t_begin;
  __syncthreads();
  if (lim_a > t_begin) atomicMax(&cta_end_s, lim_a);
  if (lim_b > t_begin) atomicMax(&cta_end_s, lim_b);

  // Q, scaled into log2 units, as three bf16 terms per element.
  const float qscale = p.scale * kLog2e;
  for (int idx = tid; idx < kPfRows * D / 2; idx += kPfThreads) {
    const int r = idx / (D / 2);
    const int d = 2 * (idx % (D / 2));
    float2 v = make_float2(0.0f, 0.0f);
    if (r < rows) {
      const int i = i0 + r / nh;
      const int h = g * p.group + h0 + r % nh;
      v = *reinterpret_cast<const float2*>(p.q + (static_cast<size_t>(i) * p.q_heads + h) * D + d);
    }
    uint32_t t3[kPfSplits];
    SplitPair(v.x * qscale, v.y * qscale, t3[0], t3[1], t3[2]);
    *reinterpret_cast<uint32_t*>(smem + C::kStageBytes + r * kRowBytes + d * 2) = t3[0];
#pragma unroll
    for (int s = 1; s < kPfSplits; ++s) {
      *reinterpret_cast<uint32_t*>(q_s + ((s - 1) * kPfRows + r) * kRowBytes + d * 2) = t3[s];
    }
  }
  __syncthreads();
  const int cta_end = cta_end_s;
  // This warp's A fragments of Q's first term, for every k-step; stage 1 is free again after
  // the first barrier of the tile loop.
  uint32_t q_hi[D / 16][4];
  {
    const unsigned char* q = smem + C::kStageBytes + (warp * 16 + fg) * kRowBytes + ft * 4;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      q_hi[kk][0] = Lds32(q + kk * 32);
      q_hi[kk][1] = Lds32(q + 8 * kRowBytes + kk * 32);
      q_hi[kk][2] = Lds32(q + kk * 32 + 16);
      q_hi[kk][3] = Lds32(q + 8 * kRowBytes + kk * 32 + 16);
    }
  }

  const void* const* table = p.blocks;
  const size_t head_off = static_cast<size_t>(g) * p.block_tokens * D;  // K half, this head
  const size_t v_off = static_cast<size_t>(p.kv_heads) * p.block_tokens * D;
  auto load_tile = [&](int tile, int stage) {
    unsigned char* ks = smem + stage * C::kStageBytes;
    unsigned char* vs = ks + kPfTile * kRowBytes;
#pragma unroll
    for (int j = 0; j < C::kLoadsPerThread; ++j) {
      const int idx = tid + j * kPfThreads;
      const int tok = idx / C::kChunks;
      const int piece = idx % C::kChunks;
      const int t_raw = t_begin + tile * kPfTile + tok;
      const int t = min(t_raw, cta_end - 1);
      const int src_bytes = t_raw < cta_end ? 16 : 0;  // zeros past the end
      const int blk = t / p.block_tokens;
      const int row = t - blk * p.block_tokens;
      const unsigned char* kp = reinterpret_cast<const unsigned char*>(__ldg(
                                    reinterpret_cast<const unsigned long long*>(table) + blk)) +
                                (head_off + static_cast<size_t>(row) * D) * 2 + piece * 16;
      CpAsync16(ks + tok * kRowBytes + piece * 16, kp, src_bytes);
      CpAsync16(vs + tok * kRowBytes + piece * 16, kp + v_off * 2, src_bytes);
    }
  };

  const int num_tiles = (cta_end - t_begin + kPfTile - 1) / kPfTile;
  if (num_tiles > 0) load_tile(0, 0);
  CpAsyncCommit();

  float o[kDimTiles][4];
#pragma unroll
  for (int j = 0; j < kDimTiles; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m_a = -INFINITY, m_b = -INFINITY;  // running maxima (log2 units) of rows ra, rb
  float l_a = 0.0f, l_b = 0.0f;            // this lane's part of the running sums
  const unsigned char* qw = q_s + (warp * 16 + fg) * kRowBytes + ft * 4;

  for (int tile = 0; tile < num_tiles; ++tile) {
    CpAsyncWait<0>();
    __syncthreads();  // the tile is in; every warp is done with the other stage
    if (tile + 1 < num_tiles) load_tile(tile + 1, (tile + 1) % 2);
    CpAsyncCommit();
    const unsigned char* ks = smem + (tile % 2) * C::kStageBytes;
    const unsigned char* vs = ks + kPfTile * kRowBytes;

    // S = Q K^T: 16 rows x kPfTile tokens per warp.
    float s[kTokTiles][4];
#pragma unroll
    for (int j = 0; j < kTokTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[kPfSplits][4];
#pragma unroll
      for (int j = 0; j < 4; ++j) a[0][j] = q_hi[kk][j];
#pragma unroll
      for (int sp = 1; sp < kPfSplits; ++sp) {
        const unsigned char* q = qw + (sp - 1) * kPfRows * kRowBytes + kk * 32;
        a[sp][0] = Lds32(q);
        a[sp][1] = Lds32(q + 8 * kRowBytes);
        a[sp][2] = Lds32(q + 16);
        a[sp][3] = Lds32(q + 8 * kRowBytes + 16);
      }
#pragma unroll
      for (int nt = 0; nt < kTokTiles; ++nt) {
        const unsigned char* k = ks + (nt * 8 + fg) * kRowBytes + kk * 32 + ft * 4;
        const uint32_t b0 = Lds32(k);
        const uint32_t b1 = Lds32(k + 16);
#pragma unroll
        for (int sp = 0; sp < kPfSplits; ++sp) Mma16816(s[nt], a[sp], b0, b1);
      }
    }

    // Online softmax on the fragments: lane holds columns 2 ft, 2 ft + 1 of every n-tile for
    // rows ra (s[.][0..1]) and rb (s[.][2..3]); a row's four lanes share fg.
    const int tile_start = t_begin + tile * kPfTile;
    float mx_a = -INFINITY, mx_b = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < kTokTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int t = tile_start + nt * 8 + 2 * ft + e;
        if (t >= lim_a) s[nt][e] = -INFINITY;
        if (t >= lim_b) s[nt][2 + e] = -INFINITY;
        mx_a = fmaxf(mx_a, s[nt][e]);
        mx_b = fmaxf(mx_b, s[nt][2 + e]);
      }
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, off));
      mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, off));
    }
    const float new_a = fmaxf(m_a, mx_a);
    const float new_b = fmaxf(m_b, mx_b);
    // A row with no token yet subtracts 0: its masked entries give exp2(-inf) = 0, not NaN.
    const float base_a = new_a == -INFINITY ? 0.0f : new_a;
    const float base_b = new_b == -INFINITY ? 0.0f : new_b;
    const float alpha_a = exp2f(m_a - base_a);  // 0 while m = -inf
    const float alpha_b = exp2f(m_b - base_b);
    float sum_a = 0.0f, sum_b = 0.0f;
#pragma unroll
    for (int nt = 0; nt < kTokTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        s[nt][e] = exp2f(s[nt][e] - base_a);
        s[nt][2 + e] = exp2f(s[nt][2 + e] - base_b);
        sum_a += s[nt][e];
        sum_b += s[nt][2 + e];
      }
    }
    l_a = l_a * alpha_a + sum_a;
    l_b = l_b * alpha_b + sum_b;
    m_a = new_a;
    m_b = new_b;
#pragma unroll
    for (int j = 0; j < kDimTiles; ++j) {
      o[j][0] *= alpha_a;
      o[j][1] *= alpha_a;
      o[j][2] *= alpha_b;
      o[j][3] *= alpha_b;
    }

    // O += P V: the S fragments of tokens 16 kt .. 16 kt + 15 are the A fragment of step kt.
    const int mtx = lane / 8;
    const unsigned char* vrow = vs + ((mtx % 2) * 8 + lane % 8) * kRowBytes + (mtx / 2) * 16;
#pragma unroll
    for (int kt = 0; kt < kPfTile / 16; ++kt) {
      uint32_t a[kPfSplits][4];
      SplitPair(s[2 * kt][0], s[2 * kt][1], a[0][0], a[1][0], a[2][0]);
      SplitPair(s[2 * kt][2], s[2 * kt][3], a[0][1], a[1][1], a[2][1]);
      SplitPair(s[2 * kt + 1][0], s[2 * kt + 1][1], a[0][2], a[1][2], a[2][2]);
      SplitPair(s[2 * kt + 1][2], s[2 * kt + 1][3], a[0][3], a[1][3], a[2][3]);
#pragma unroll
      for (int dt = 0; dt < kDimTiles; dt += 2) {
        // Matrices: tokens 0-7 and 8-15 of the step, at dims 8 dt and 8 (dt + 1).
        uint32_t b[4];
        LdMatrixX4Trans(b, vrow + kt * 16 * kRowBytes + dt * 16);
#pragma unroll
        for (int sp = 0; sp < kPfSplits; ++sp) {
          Mma16816(o[dt], a[sp], b[0], b[1]);
          Mma16816(o[dt + 1], a[sp], b[2], b[3]);
        }
      }
    }
  }
  CpAsyncWait<0>();

  // Each row's sum over its four lanes; then out = O / l, or the piece's partials.
#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l_a += __shfl_xor_sync(0xffffffffu, l_a, off);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, off);
  }
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = half == 0 ? ra : rb;
    if (r >= rows) continue;
    const float l = half == 0 ? l_a : l_b;
    const float m = half == 0 ? m_a : m_b;
    const int i = i0 + r / nh;
    const int h = g * p.group + h0 + r % nh;
    const size_t oh = static_cast<size_t>(i) * p.q_heads + h;
    const size_t slot = oh * p.num_splits + split;
#pragma unroll
    for (int j = 0; j < kDimTiles; ++j) {
      const int d = j * 8 + 2 * ft;
      const float x = o[j][2 * half], y = o[j][2 * half + 1];
      if (p.num_splits == 1) {
        *reinterpret_cast<float2*>(p.out + oh * D + d) = make_float2(x / l, y / l);
      } else {
        *reinterpret_cast<float2*>(p.part_acc + slot * D + d) = make_float2(x, y);
      }
    }
    if (p.num_splits > 1 && ft == 0) {
      p.part_ml[2 * slot] = m == -INFINITY ? m : m * kLn2;  // natural-log units, as the merge
      p.part_ml[2 * slot + 1] = l;
    }
  }
}

template <int D>
Status LaunchPrefill(const KernelParams& kp, const AttentionPlan& plan, size_t n, size_t kv_heads,
                     cudaStream_t stream) {
  constexpr int kSmem = PfCfg<D>::kSmemBytes;
  KVSTAR_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(PrefillKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  const dim3 grid(static_cast<unsigned>((n + plan.queries_per_cta - 1) / plan.queries_per_cta),
                  static_cast<unsigned>(kv_heads * plan.head_chunks),
                  static_cast<unsigned>(plan.num_splits));
  PrefillKernel<D><<<grid, kPfThreads, kSmem, stream>>>(kp);
  return internal::LaunchStatus("PrefillKernel");
}

template <int D>
int PrefillOccupancyOf() {
  int ctas = 0;
  if (cudaFuncSetAttribute(PrefillKernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           PfCfg<D>::kSmemBytes) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, PrefillKernel<D>, kPfThreads,
                                                    PfCfg<D>::kSmemBytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return 1;
  }
  return std::max(ctas, 1);
}

int PrefillOccupancy(size_t head_dim) {
  switch (head_dim) {
    case 64:
      return PrefillOccupancyOf<64>();
    case 80:
      return PrefillOccupancyOf<80>();
    case 96:
      return PrefillOccupancyOf<96>();
    default:
      return PrefillOccupancyOf<128>();
  }
}

bool PrefillKernelApplies(const AttentionArgs& a) {
  return a.geom.dtype == DType::kBF16 && a.geom.head_dim % 16 == 0 && a.blocks_stride == 0 &&
         a.n > 1;
}

template <int D, int G>
Status LaunchDecode(const KernelParams& kp, const AttentionPlan& plan, size_t n, size_t kv_heads,
                    cudaStream_t stream) {
  constexpr int kSmem = DecCfg<D, G>::kSmemBytes;
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(kv_heads),
                  static_cast<unsigned>(plan.num_splits));
  return internal::CudaStatus(
      internal::LaunchDependent(DecodeKernel<D, G>, grid, kDecThreads, kSmem, stream, kp),
      "DecodeKernel");
}

template <int D>
Status LaunchDecodeMma(const KernelParams& kp, const AttentionPlan& plan, size_t n, size_t kv_heads,
                       cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(kv_heads),
                  static_cast<unsigned>(plan.num_splits));
  return internal::CudaStatus(internal::LaunchDependent(DecodeMmaKernel<D>, grid, kDecThreads,
                                                        DecMmaCfg<D>::kSmemBytes, stream, kp),
                              "DecodeMmaKernel");
}

template <int D>
int DecodeMmaOccupancyOf() {
  int ctas = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, DecodeMmaKernel<D>, kDecThreads,
                                                    DecMmaCfg<D>::kSmemBytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return 2;
  }
  return std::max(ctas, 1);
}

template <int D>
Status LaunchDecodeForGroup(size_t group, const KernelParams& kp, const AttentionPlan& plan,
                            size_t n, size_t kv_heads, cudaStream_t stream) {
  if (plan.decode_mma) return LaunchDecodeMma<D>(kp, plan, n, kv_heads, stream);
  if (group <= 1) return LaunchDecode<D, 1>(kp, plan, n, kv_heads, stream);
  if (group <= 2) return LaunchDecode<D, 2>(kp, plan, n, kv_heads, stream);
  if (group <= 4) return LaunchDecode<D, 4>(kp, plan, n, kv_heads, stream);
  return LaunchDecode<D, 8>(kp, plan, n, kv_heads, stream);
}

template <int D, int G>
int DecodeOccupancyOf() {
  int ctas = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, DecodeKernel<D, G>, kDecThreads,
                                                    DecCfg<D, G>::kSmemBytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return 4;
  }
  return std::max(ctas, 1);
}

template <int D>
int DecodeOccupancyForGroup(size_t group) {
  if (group <= 1) return DecodeOccupancyOf<D, 1>();
  if (group <= 2) return DecodeOccupancyOf<D, 2>();
  if (group <= 4) return DecodeOccupancyOf<D, 4>();
  return DecodeOccupancyOf<D, 8>();
}

bool DecodeKernelApplies(const AttentionArgs& a, size_t group) {
  return a.geom.dtype == DType::kBF16 && (a.geom.head_dim == 64 || a.geom.head_dim == 128) &&
         group <= 8 && (a.blocks_stride != 0 || a.n == 1);
}

template <typename T, int D>
Status Launch(const KernelParams& kp, const AttentionPlan& plan, size_t n, size_t kv_heads,
              cudaStream_t stream) {
  using C = Cfg<T, D>;
  // Set on every launch: cheap, and correct for whichever device is current.
  KVSTAR_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(
      AttentionKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes));
  const dim3 grid(static_cast<unsigned>((n + plan.queries_per_cta - 1) / plan.queries_per_cta),
                  static_cast<unsigned>(kv_heads * plan.head_chunks),
                  static_cast<unsigned>(plan.num_splits));
  AttentionKernel<T, D><<<grid, kThreads, C::kSmemBytes, stream>>>(kp);
  return internal::LaunchStatus("AttentionKernel");
}

template <int D>
Status LaunchForDim(bool bf16, const KernelParams& kp, const AttentionPlan& plan, size_t n,
                    size_t kv_heads, cudaStream_t stream) {
  return bf16 ? Launch<__nv_bfloat16, D>(kp, plan, n, kv_heads, stream)
              : Launch<float, D>(kp, plan, n, kv_heads, stream);
}

template <typename T, int D>
int OccupancyOf() {
  int ctas = 0;
  if (cudaFuncSetAttribute(AttentionKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           Cfg<T, D>::kSmemBytes) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, AttentionKernel<T, D>, kThreads,
                                                    Cfg<T, D>::kSmemBytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return 2;  // what the shared memory of the largest configuration allows on sm_90
  }
  return std::max(ctas, 1);
}

// CTAs of the attention kernel one SM holds at once for this geometry (on the current device).
int ResidentCtasPerSm(const KvGeometry& geom) {
  const bool bf16 = geom.dtype == DType::kBF16;
  switch (geom.head_dim) {
    case 64:
      return bf16 ? OccupancyOf<__nv_bfloat16, 64>() : OccupancyOf<float, 64>();
    case 80:
      return bf16 ? OccupancyOf<__nv_bfloat16, 80>() : OccupancyOf<float, 80>();
    case 96:
      return bf16 ? OccupancyOf<__nv_bfloat16, 96>() : OccupancyOf<float, 96>();
    default:
      return bf16 ? OccupancyOf<__nv_bfloat16, 128>() : OccupancyOf<float, 128>();
  }
}

// f.template operator()<D>() for the head_dim D of the kernels' specialisations.
template <typename F>
Status ForHeadDim(size_t head_dim, F&& f) {
  switch (head_dim) {
    case 64:
      return f.template operator()<64>();
    case 80:
      return f.template operator()<80>();
    case 96:
      return f.template operator()<96>();
    case 128:
      return f.template operator()<128>();
    default:
      return Unimplemented("CUDA attention: head_dim %zu", head_dim);
  }
}

size_t TileFor(DType dtype) {
  return dtype == DType::kBF16 ? TileTokens<__nv_bfloat16>() : TileTokens<float>();
}

}  // namespace

StatusOr<AttentionPlan> PlanAttention(const AttentionArgs& a, int sm_count,
                                      size_t split_tokens_hint, AttentionKernelChoice kernel) {
  const KvGeometry& geom = a.geom;
  if (geom.kv_heads == 0 || a.q_heads == 0 || a.q_heads % geom.kv_heads != 0) {
    return InvalidArgument("q_heads=%zu is not a positive multiple of kv_heads=%zu", a.q_heads,
                           geom.kv_heads);
  }
  const size_t group = a.q_heads / geom.kv_heads;
  if (group > 64) return InvalidArgument("GQA group %zu > 64", group);
  const size_t hd = geom.head_dim;
  if (hd != 64 && hd != 80 && hd != 96 && hd != 128) {
    return Unimplemented("CUDA attention supports head_dim 64, 80, 96, 128; got %zu", hd);
  }
  if (geom.dtype != DType::kF32 && geom.dtype != DType::kBF16) {
    return Unimplemented("CUDA attention supports f32 and bf16 KV; got %s", DTypeName(geom.dtype));
  }
  if (geom.block_tokens == 0 || a.num_tokens == 0 || a.num_tokens > 0x7fffffff ||
      a.n > 0x7fffffff) {
    return InvalidArgument("attention: block_tokens=%zu num_tokens=%zu n=%zu", geom.block_tokens,
                           a.num_tokens, a.n);
  }
  AttentionPlan plan;
  const bool specialised = kernel != AttentionKernelChoice::kTiled;
  plan.decode_kernel = specialised && DecodeKernelApplies(a, group);
  plan.decode_mma = plan.decode_kernel &&
                    (kernel == AttentionKernelChoice::kDecodeMma ||
                     (kernel == AttentionKernelChoice::kAuto && DecodeAttentionOnTensorCores()));
  plan.prefill_kernel = specialised && !plan.decode_kernel && PrefillKernelApplies(a);
  plan.heads_per_cta = std::min<size_t>(group, kRows);
  plan.head_chunks = (group + plan.heads_per_cta - 1) / plan.heads_per_cta;
  const size_t rows_per_cta = plan.prefill_kernel ? kPfRows : kRows;
  plan.queries_per_cta = a.blocks_stride == 0 && !plan.decode_kernel
                             ? std::max<size_t>(1, rows_per_cta / plan.heads_per_cta)
                             : 1;
  const size_t tile = plan.prefill_kernel ? kPfTile : TileFor(geom.dtype);
  const size_t base_ctas =
      (a.n + plan.queries_per_cta - 1) / plan.queries_per_cta * geom.kv_heads * plan.head_chunks;
  size_t split = a.num_tokens;
  if (split_tokens_hint > 0) {
    split = split_tokens_hint;
  } else {
    // One full wave of resident CTAs when the shapes alone give fewer: more pieces each pay a
    // pipeline fill and a partial write, and a second, partial wave leaves SMs idle. Never
    // pieces shorter than kMinSplitTokens.
    const int resident = plan.prefill_kernel   ? PrefillOccupancy(geom.head_dim)
                         : !plan.decode_kernel ? ResidentCtasPerSm(geom)
                         : plan.decode_mma     ? (geom.head_dim == 64 ? DecodeMmaOccupancyOf<64>()
                                                                      : DecodeMmaOccupancyOf<128>())
                         : geom.head_dim == 64 ? DecodeOccupancyForGroup<64>(group)
                                               : DecodeOccupancyForGroup<128>(group);
    const size_t target =
        static_cast<size_t>(resident) * static_cast<size_t>(std::max(sm_count, 1));
    if (base_ctas < target) {
      const size_t pieces = std::max<size_t>(1, target / base_ctas);
      split = std::max(kMinSplitTokens, (a.num_tokens + pieces - 1) / pieces);
    }
  }
  // The tiled kernel walks whole tiles; the decode kernel bounds every lane's token, so its pieces
  // only need a multiple of one pass of its warps (32 tokens), which lets them fill the wave.
  const size_t grain = plan.decode_kernel ? 32 : tile;
  plan.split_tokens = (split + grain - 1) / grain * grain;
  plan.num_splits = (a.num_tokens + plan.split_tokens - 1) / plan.split_tokens;
  if (plan.num_splits > 65535) return InvalidArgument("%zu sequence pieces", plan.num_splits);
  if (plan.num_splits > 1) {
    plan.workspace_bytes = a.n * a.q_heads * plan.num_splits * (hd + 2) * sizeof(float);
  }
  return plan;
}

Status RunAttention(CudaStream* stream, const AttentionArgs& a, const AttentionPlan& plan,
                    void* workspace) {
  if (a.n == 0) return Status::Ok();
  if (plan.num_splits > 1 && workspace == nullptr) {
    return InvalidArgument("attention plan needs %zu bytes of workspace", plan.workspace_bytes);
  }
  KernelParams kp{};
  kp.q = a.q;
  kp.q_last = a.q_last;
  kp.blocks = a.blocks;
  kp.blocks_stride = a.blocks_stride;
  kp.out = a.out;
  const size_t slots = a.n * a.q_heads * plan.num_splits;
  kp.part_acc = static_cast<float*>(workspace);
  kp.part_ml = kp.part_acc == nullptr ? nullptr : kp.part_acc + slots * a.geom.head_dim;
  kp.n = static_cast<int>(a.n);
  kp.q_heads = static_cast<int>(a.q_heads);
  kp.kv_heads = static_cast<int>(a.geom.kv_heads);
  kp.group = static_cast<int>(a.q_heads / a.geom.kv_heads);
  kp.block_tokens = static_cast<int>(a.geom.block_tokens);
  kp.num_tokens = static_cast<int>(a.num_tokens);
  kp.queries_per_cta = static_cast<int>(plan.queries_per_cta);
  kp.heads_per_cta = static_cast<int>(plan.heads_per_cta);
  kp.head_chunks = static_cast<int>(plan.head_chunks);
  kp.split_tokens = static_cast<int>(plan.split_tokens);
  kp.num_splits = static_cast<int>(plan.num_splits);
  kp.scale = a.scale;
  const cudaStream_t s = AsCuda(stream);
  const bool bf16 = a.geom.dtype == DType::kBF16;
  const size_t kvh = a.geom.kv_heads;
  if (plan.prefill_kernel) {
    KVSTAR_RETURN_IF_ERROR(ForHeadDim(
        a.geom.head_dim, [&]<int D>() { return LaunchPrefill<D>(kp, plan, a.n, kvh, s); }));
  } else if (plan.decode_kernel) {
    const size_t group = a.q_heads / kvh;
    if (a.geom.head_dim == 64) {
      KVSTAR_RETURN_IF_ERROR(LaunchDecodeForGroup<64>(group, kp, plan, a.n, kvh, s));
    } else {
      KVSTAR_RETURN_IF_ERROR(LaunchDecodeForGroup<128>(group, kp, plan, a.n, kvh, s));
    }
  } else {
    KVSTAR_RETURN_IF_ERROR(ForHeadDim(
        a.geom.head_dim, [&]<int D>() { return LaunchForDim<D>(bf16, kp, plan, a.n, kvh, s); }));
  }
  if (plan.num_splits > 1) {
    const float* part_acc = kp.part_acc;
    const float* part_ml = kp.part_ml;
    KVSTAR_CUDA_RETURN_IF_ERROR(internal::LaunchDependent(
        MergeKernel, static_cast<unsigned>(a.n * a.q_heads), kMergeThreads, 0, s, part_acc, part_ml,
        kp.num_splits, static_cast<int>(a.geom.head_dim), a.out));
  }
  return Status::Ok();
}

}  // namespace kvstar::cuda
