// Device-side helpers and raw launchers shared by the .cu / .cc files of src/ops/cuda.
// Launchers take raw pointers and return the launch's cudaError_t; the public functions of ops.h
// turn that into a Status.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "base/half.h"
#include "ops/cuda/ops.h"

namespace kvstar::cuda::internal {

#ifdef __CUDACC__
// Programmatic dependent launch (ops.h, SetDependentLaunches). A kernel launched with
// LaunchDependent calls AllowDependentGrid, then WaitForPriorGrid in every thread before its
// first access to memory that another kernel writes or reads (weights excepted) and before any
// early return: a grid's completion then implies its predecessors' completion, so ordering holds
// down the whole chain. Both are no-ops in a kernel launched without the attribute.
__device__ __forceinline__ void AllowDependentGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void WaitForPriorGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Launches kernel<<<grid, block, smem, stream>>>(args...), as a programmatic dependent of the
// kernel before it in the stream when DependentLaunches() is on and every architecture built is
// sm_90 or newer (KVSTAR_CUDA_PDL, src/ops/cuda/CMakeLists.txt: an older image has no wait).
// LaunchDependent with CTAs in clusters of cluster_x along x when cluster_x > 1 (sm_90;
// gridDim.x a multiple of it).
template <typename... Params, typename... Args>
cudaError_t LaunchDependentCluster(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                                   cudaStream_t stream, unsigned cluster_x, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attrs[2]{};
  unsigned count = 0;
#if defined(KVSTAR_CUDA_PDL) && KVSTAR_CUDA_PDL
  if (DependentLaunches()) {
    attrs[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[count].val.programmaticStreamSerializationAllowed = 1;
    ++count;
  }
#endif
  if (cluster_x > 1) {
    attrs[count].id = cudaLaunchAttributeClusterDimension;
    attrs[count].val.clusterDim.x = cluster_x;
    attrs[count].val.clusterDim.y = 1;
    attrs[count].val.clusterDim.z = 1;
    ++count;
  }
  cfg.attrs = attrs;
  cfg.numAttrs = count;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}
template <typename... Params, typename... Args>
cudaError_t LaunchDependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                            cudaStream_t stream, Args&&... args) {
  return LaunchDependentCluster(kernel, grid, block, smem, stream, 1u, std::forward<Args>(args)...);
}

__device__ __forceinline__ float ToF32(float v) { return v; }
__device__ __forceinline__ float ToF32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ToF32(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T FromF32(float v);
template <>
__device__ __forceinline__ float FromF32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromF32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half FromF32<__half>(float v) {
  return __float2half_rn(v);
}

// SwiGLU's activation of one element: gate / (1 + exp(-gate)) * up (SwiGlu, and the skinny
// products that apply it as they read x: the same bits).
__device__ __forceinline__ float SiluMul(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// 16 B read once (streamed K/V, weights): no L1 allocation, L2 fetches 256 B (the rest of the
// row and the next).
__device__ __forceinline__ uint4 LoadStream16(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Asynchronous 16 B copy global -> shared that bypasses L1 (zero-filled when !in), with the same
// 256 B L2 fetch as LoadStream16; one commit group per pipeline stage.
__device__ __forceinline__ void CpAsync16(uint4* smem, const void* gmem, bool in) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
               "r"(in ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Two f32 values as three packed pairs of H2 (__nv_bfloat162 or __half2): out[j] holds term j
// of x0 (low half) and of x1. With f16 the caller scales x so that the terms stay normal.
__device__ __forceinline__ __nv_bfloat162 PackPair(float x0, float x1, __nv_bfloat162) {
  return __floats2bfloat162_rn(x0, x1);
}
__device__ __forceinline__ __half2 PackPair(float x0, float x1, __half2) {
  return __floats2half2_rn(x0, x1);
}
template <typename H2>
__device__ __forceinline__ void SplitPairAs(float x0, float x1, uint32_t& hi, uint32_t& mid,
                                            uint32_t& lo) {
  const H2 h = PackPair(x0, x1, H2{});
  const float r0 = x0 - __low2float(h), r1 = x1 - __high2float(h);
  const H2 m = PackPair(r0, r1, H2{});
  const H2 l = PackPair(r0 - __low2float(m), r1 - __high2float(m), H2{});
  hi = *reinterpret_cast<const uint32_t*>(&h);
  mid = *reinterpret_cast<const uint32_t*>(&m);
  lo = *reinterpret_cast<const uint32_t*>(&l);
}
__device__ __forceinline__ void SplitPair(float x0, float x1, uint32_t& hi, uint32_t& mid,
                                          uint32_t& lo) {
  SplitPairAs<__nv_bfloat162>(x0, x1, hi, mid, lo);
}

// d += a b for one 16x8x16 tile: a = rows (g, g + 8) x k (2t, 2t + 1, 2t + 8, 2t + 9) of the
// lane (g = lane / 4, t = lane % 4), b = k (2t, 2t + 1) and (2t + 8, 2t + 9) x column g, d =
// rows (g, g + 8) x columns (2t, 2t + 1).
__device__ __forceinline__ void Mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Mma16816 with f16 operands.
__device__ __forceinline__ void Mma16816F16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                            uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

// Blocks of `threads` covering `count` items, capped so that grid-stride loops take over.
inline unsigned GridFor(size_t count, unsigned threads) {
  const size_t blocks = (count + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65536 ? (blocks == 0 ? 1 : blocks) : 65536);
}

// dst[count] = src rounded to dtype (kBF16 or kF16, round to nearest even).
cudaError_t LaunchConvertF32(const float* src, size_t count, DType dtype, void* dst,
                             cudaStream_t stream);

// y[rows] = W[rows][cols] . x[cols] with W in dtype converted to f32 and f32 accumulation (the
// decode-step product: memory-bound, no rounding of x). One warp per row.
cudaError_t LaunchMatVec(const void* w, DType dtype, size_t rows, size_t cols, const float* x,
                         float* y, cudaStream_t stream);

// Skinny products on the tensor cores (skinny.cu): y_i[n][rows_i] = x[n][cols] . W_i^T for
// bf16 W_i sharing x, n <= kMaxSkinnyRows, f32 x and y, results equal to f32 arithmetic up to
// summation order and independent of n. One launch for up to kMaxSkinnyOutputs matrices.
inline constexpr int kMaxSkinnyOutputs = 3;
inline constexpr size_t kMaxSkinnyRows = 16;
struct SkinnyOutput {
  const void* w;  // [rows][cols] bf16, 16 B aligned
  size_t rows;
  float* y;  // [n][rows]
};
// Whether the skinny kernel takes these shapes (bf16, rows < 2^30, 0 < cols <= 2^30 with
// cols % 8 == 0, 16 B aligned w and x).
bool SkinnyMatMulApplies(DType dtype, size_t rows, size_t cols, size_t n, const void* w,
                         const float* x);
// Weight rows one wave of the skinny kernel reads per SM at n <= 8 (two resident CTAs of 32 rows).
inline constexpr size_t kSkinnyWaveRowsPerSm = 64;
// m_tiles: 16-row tiles per CTA, 1, 2 or 4 (0: chosen from n and the rows, as measured).
// glu: outputs[0] (gate) and [1] (up) have equal rows; only outputs[0].y is written, with
// SiluMul(gate product, up product) (SwiGLU; the same bits as the two products then SwiGlu).
// stages: how the weights are read (SetSkinnyStages; -1: the process-wide choice).
// k_split: 0 = SetSkinnySplit's choice for this launch's shapes, 1 = none, 2 = each row tile's
// k-steps halved between the two CTAs of a cluster (where the build has clusters and not with
// glu); a fixed summation order either way, so results stay independent of n.
cudaError_t LaunchSkinnyMatMul(const SkinnyOutput* outputs, int count, size_t cols, const float* x,
                               size_t n, cudaStream_t stream, int m_tiles = 0, bool glu = false,
                               int stages = -1, int k_split = 0);

// The row tiles and k-split of one skinny launch: LaunchSkinnyMatMul's choice, a host function
// of the shapes only (so that its rules are tested without a device, skinny_shape_test.cc).
// total_rows: the rows of every output of the launch (gate and up both counted, fused or not);
// m_tiles, k_split: LaunchSkinnyMatMul's arguments (0 = choose; k_split in [0, 2]); split_on:
// SkinnySplit(); sm_count: the device's multiprocessors; clusters: whether every image built has
// thread-block clusters (sm_90: KVSTAR_CUDA_PDL). The k-split never depends on n or the tiles,
// so that a row's bits do not depend on the batch.
struct SkinnyLaunchChoice {
  int m_tiles = 2;  // 16-row MMA tiles per CTA: 1, 2 or 4 (2 or 4 with glu)
  int k_split = 1;  // CTAs of a cluster sharing a row tile's k-steps: 1 or 2
};
SkinnyLaunchChoice ChooseSkinnyLaunch(size_t total_rows, size_t cols, size_t n, bool glu,
                                      int m_tiles, int k_split, bool split_on, size_t sm_count,
                                      bool clusters);

// dst[count] = random values in [-scale, scale] of dtype, never zero, from a counter hash (for
// benchmarks and limit measurements; not a quality generator).
cudaError_t LaunchFillRandom(void* dst, size_t count, DType dtype, float scale, uint32_t seed,
                             cudaStream_t stream);

// Reads `bytes` (a multiple of 16, 16 B aligned) once with LoadStream16: `threads` per CTA,
// ctas_per_sm x sm_count CTAs, loads_in_flight (2, 4 or 8; others: cudaErrorInvalidValue)
// independent loads per thread.
// Nothing is written except, never in practice, one word of sink. For the read-rate limit.
cudaError_t LaunchReadStream(const void* src, size_t bytes, int threads, int loads_in_flight,
                             int ctas_per_sm, int sm_count, unsigned* sink, cudaStream_t stream);

}  // namespace kvstar::cuda::internal
