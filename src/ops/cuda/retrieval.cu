// KVstar block scoring on the device (ScoreBlocks, ops.h): the scores of sparse::RunRetrieval
// computed from representations kept in HBM, so that retrieval does not depend on how many CPU
// cores the host has.
//
// Three kernels per call; the softmax of a (query head, query) spans every candidate of the task,
// so its maximum and denominator are known only once all blocks were seen:
//  1. Partial: one CTA per (task, KV head, chunk of candidate blocks). The CTA keeps the pruned,
//     scaled queries of its KV head (x queries times the group's query heads) in shared memory;
//     each warp takes whole blocks and reduces, per query, the block's logits to their maximum m
//     and sum of exponentials e = sum exp(logit - m) (the lanes split the block's vectors).
//  2. Normalise: one warp per (task, query head, query): the softmax maximum M over its blocks and
//     1 / S with S = sum e exp(m - M).
//  3. Combine: one thread per (task, block): score = sum over (query head, query) of
//     e exp(m - M) / S; with per_kv_head one such sum per KV head.
// Workspace per task: m and e [P][max_candidates] and M, 1/S [P], P = x * q_heads.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "ops/cuda/cuda_util.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/ops.h"

namespace kvstar::cuda {
namespace {

using internal::AsCuda;
using internal::LaunchStatus;
using internal::ToF32;

constexpr unsigned kPartialThreads = 256;  // 8 warps
constexpr size_t kBlocksPerCta = 16;       // candidate blocks per partial CTA
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
};

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

// One CTA per (chunk of kBlocksPerCta candidate blocks, KV head, task); each warp takes whole
// blocks. A lane owns representation vectors of the block (lane, lane + 32, ...) and computes
// the logits of two of them at a time against kQueryTile queries, from the queries kept
// transposed in shared memory ([channel][query], zero-padded to multiples of 8 channels and
// kQueryTile queries: one 16-byte broadcast load feeds eight multiply-adds). Then per query the
// (max, sum of exp) of the block's vectors, reduced across the warp.
constexpr int kQueryTile = 16;  // ScatterLevel's levels below assume 16

template <typename T>
__global__ void __launch_bounds__(kPartialThreads)
    PartialKernel(const BlockScoreTask* __restrict__ tasks, Shape sh, float* __restrict__ ws) {
  const BlockScoreTask t = tasks[blockIdx.z];
  const size_t n = t.cand_end > t.cand_begin ? t.cand_end - t.cand_begin : 0;
  const size_t b0 = blockIdx.x * kBlocksPerCta;
  if (b0 >= n) return;  // the whole CTA: before any barrier
  const size_t nb = min(kBlocksPerCta, n - b0);
  const size_t kvh = blockIdx.y;
  const size_t group = sh.q_heads / sh.kv_heads;
  const size_t qn = sh.num_queries * group;  // queries of this KV head: qi = x * group + g
  const size_t dp = sh.d_pruned;
  const size_t qpad = RoundUp(qn, kQueryTile), dpad = RoundUp(dp, 8);
  extern __shared__ float qt[];  // [dpad][qpad], scaled
  for (size_t i = threadIdx.x; i < qpad * dpad; i += blockDim.x) {
    const size_t c = i / qpad, qi = i % qpad;
    float v = 0.0f;
    if (c < dp && qi < qn) {
      const size_t x = qi / group, g = qi % group;
      const float* q = t.queries + x * sh.query_stride + (kvh * group + g) * sh.head_dim;
      v = q[t.channels[kvh * dp + c]] * sh.scale;
    }
    qt[i] = v;
  }
  __syncthreads();
  const T* reps = static_cast<const T*>(t.reps);
  const bool aligned = dp % 8 == 0 && (reinterpret_cast<uintptr_t>(t.reps) % 16) == 0;
  const size_t vpb = sh.vectors_per_block;
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  float* ws_m = ws + blockIdx.z * TaskFloats(sh);
  float* ws_e = ws_m + PairsOf(sh) * sh.max_candidates;
  for (size_t bl = warp; bl < nb; bl += warps) {
    const T* block_reps = reps + (t.cand_begin + b0 + bl) * vpb * sh.kv_heads * dp + kvh * dp;
    const size_t vstride = sh.kv_heads * dp;  // elements from one vector to the next
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
      // Pair (query head, x) = (kvh * group + g) * x_count + x.
      const size_t qi = q0 + lane / 2;
      if (lane % 2 == 0 && qi < qn) {
        const size_t x = qi / group, g = qi % group;
        const size_t p = (kvh * group + g) * sh.num_queries + x;
        ws_m[p * sh.max_candidates + b0 + bl] = m[0];
        ws_e[p * sh.max_candidates + b0 + bl] = e[0];
      }
    }
  }
}

__global__ void __launch_bounds__(kNormThreads)
    NormaliseKernel(const BlockScoreTask* __restrict__ tasks, Shape sh, float* __restrict__ ws) {
  const BlockScoreTask t = tasks[blockIdx.y];
  const size_t n = t.cand_end > t.cand_begin ? t.cand_end - t.cand_begin : 0;
  const size_t P = PairsOf(sh);
  const unsigned lane = threadIdx.x % 32;
  const size_t p = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (n == 0 || p >= P) return;
  const float* ws_m = ws + blockIdx.y * TaskFloats(sh) + p * sh.max_candidates;
  const float* ws_e = ws_m + P * sh.max_candidates;
  float* norm = ws + blockIdx.y * TaskFloats(sh) + 2 * P * sh.max_candidates;
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

__global__ void __launch_bounds__(kCombineThreads)
    CombineKernel(const BlockScoreTask* __restrict__ tasks, Shape sh,
                  const float* __restrict__ ws) {
  const BlockScoreTask t = tasks[blockIdx.y];
  const size_t n = t.cand_end > t.cand_begin ? t.cand_end - t.cand_begin : 0;
  const size_t b = blockIdx.x * size_t{blockDim.x} + threadIdx.x;
  if (b >= n) return;
  const size_t P = PairsOf(sh);
  const float* ws_m = ws + blockIdx.y * TaskFloats(sh);
  const float* ws_e = ws_m + P * sh.max_candidates;
  const float* norm = ws_e + P * sh.max_candidates;
  // Pairs of KV head h are [h * P / kv_heads, (h + 1) * P / kv_heads).
  const size_t outputs = sh.per_kv_head ? sh.kv_heads : 1;
  const size_t per_output = P / outputs;
  for (size_t o = 0; o < outputs; ++o) {
    float score = 0.0f;
    for (size_t p = o * per_output; p < (o + 1) * per_output; ++p) {
      const float m = ws_m[p * sh.max_candidates + b];
      score = fmaf(ws_e[p * sh.max_candidates + b] * expf(m - norm[p]), norm[P + p], score);
    }
    t.scores[b * outputs + o] = score;
  }
}

// Shared memory floats of the partial kernel: the queries of one KV head, padded.
size_t QueryFloats(const BlockScoreArgs& a) {
  return RoundUp(a.num_queries * (a.q_heads / a.kv_heads), kQueryTile) * RoundUp(a.d_pruned, 8);
}

}  // namespace

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
  if (a.num_tasks > 65535 || a.kv_heads > 65535) {
    return InvalidArgument("ScoreBlocks: %zu tasks / %zu KV heads exceed the grid (65535)",
                           a.num_tasks, a.kv_heads);
  }
  return Status::Ok();
}

namespace {

Shape ShapeOf(const BlockScoreArgs& a) {
  return Shape{a.max_candidates, a.num_queries, a.query_stride,      a.q_heads, a.kv_heads,
               a.head_dim,       a.d_pruned,    a.vectors_per_block, a.scale,   a.per_kv_head};
}

}  // namespace

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
  const dim3 partial_grid(
      static_cast<unsigned>((args.max_candidates + kBlocksPerCta - 1) / kBlocksPerCta),
      static_cast<unsigned>(args.kv_heads), static_cast<unsigned>(args.num_tasks));
  if (args.dtype == DType::kF16) {
    PartialKernel<__half><<<partial_grid, kPartialThreads, smem, s>>>(args.tasks, sh, ws);
  } else {
    PartialKernel<__nv_bfloat16><<<partial_grid, kPartialThreads, smem, s>>>(args.tasks, sh, ws);
  }
  KVSTAR_RETURN_IF_ERROR(LaunchStatus("ScoreBlocks PartialKernel"));
  const size_t warps = kNormThreads / 32;
  const dim3 norm_grid(static_cast<unsigned>((PairsOf(sh) + warps - 1) / warps),
                       static_cast<unsigned>(args.num_tasks));
  NormaliseKernel<<<norm_grid, kNormThreads, 0, s>>>(args.tasks, sh, ws);
  KVSTAR_RETURN_IF_ERROR(LaunchStatus("ScoreBlocks NormaliseKernel"));
  const dim3 combine_grid(
      static_cast<unsigned>((args.max_candidates + kCombineThreads - 1) / kCombineThreads),
      static_cast<unsigned>(args.num_tasks));
  CombineKernel<<<combine_grid, kCombineThreads, 0, s>>>(args.tasks, sh, ws);
  return LaunchStatus("ScoreBlocks CombineKernel");
}

}  // namespace kvstar::cuda
