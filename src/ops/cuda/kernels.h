// Device-side helpers and raw launchers shared by the .cu / .cc files of src/ops/cuda.
// Launchers take raw pointers and return the launch's cudaError_t; the public functions of ops.h
// turn that into a Status.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>

#include "base/half.h"

namespace kvstar::cuda::internal {

#ifdef __CUDACC__
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

// dst[count] = random values in [-scale, scale] of dtype, never zero, from a counter hash (for
// benchmarks and limit measurements; not a quality generator).
cudaError_t LaunchFillRandom(void* dst, size_t count, DType dtype, float scale, uint32_t seed,
                             cudaStream_t stream);

}  // namespace kvstar::cuda::internal
