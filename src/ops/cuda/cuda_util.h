// Helpers shared by the .cc and .cu files of src/ops/cuda (includes CUDA headers: never include
// this from outside src/ops/cuda).
#pragma once

#include <cuda_runtime.h>

#include "base/status.h"
#include "ops/cuda/device.h"

namespace kvstar::cuda::internal {

inline cudaStream_t AsCuda(CudaStream* s) { return reinterpret_cast<cudaStream_t>(s); }
inline CudaStream* FromCuda(cudaStream_t s) { return reinterpret_cast<CudaStream*>(s); }

// Internal(...) naming the failed call when err != cudaSuccess.
Status CudaStatus(cudaError_t err, const char* what);

// The launch error of the last kernel (cudaGetLastError), as a Status.
inline Status LaunchStatus(const char* kernel) { return CudaStatus(cudaGetLastError(), kernel); }

}  // namespace kvstar::cuda::internal

#define KVSTAR_CUDA_RETURN_IF_ERROR(call) \
  KVSTAR_RETURN_IF_ERROR(::kvstar::cuda::internal::CudaStatus((call), #call))
