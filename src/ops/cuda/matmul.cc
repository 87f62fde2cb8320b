// MatMul through the skinny tensor-core kernel (bf16 weights, n <= 16: decode), cuBLAS (n > 1)
// or a warp-per-row kernel (n = 1). cuBLAS with bf16 / f16 weights: activations are rounded to
// the weight dtype in the workspace and the product runs on the tensor cores with f32
// accumulation and f32 output; cuBLAS has no GEMM with bf16 A and f32 B, and converting the
// weights instead would double their bytes. f32 weights: f32 GEMM with f32 compute (no TF32), as
// precise as the CPU op.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>

#include "ops/cuda/cuda_util.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/ops.h"

namespace kvstar::cuda {

namespace {

// y[n][rows] = b[n][cols] . W^T with b already in W's dtype; f32 output and accumulation.
Status Gemm(const DeviceContext& ctx, CudaStream* stream, const TensorView& w, const void* b,
            size_t n, float* y) {
  auto handle = static_cast<cublasHandle_t>(ctx.blas_handle());
  const cudaStream_t s = internal::AsCuda(stream);
  cublasStatus_t bs = cublasSetStream(handle, s);
  if (bs != CUBLAS_STATUS_SUCCESS)
    return Internal("cublasSetStream: %s", cublasGetStatusString(bs));
  const cudaDataType_t ab_type = w.dtype == DType::kF32    ? CUDA_R_32F
                                 : w.dtype == DType::kBF16 ? CUDA_R_16BF
                                                           : CUDA_R_16F;
  // Column-major view: W [rows][cols] row-major is W^T (cols x rows, ld cols); y^T = W . x^T.
  const float alpha = 1.0f;
  const float beta = 0.0f;
  const int m = static_cast<int>(w.rows);
  const int k = static_cast<int>(w.cols);
  bs = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, static_cast<int>(n), k, &alpha, w.data,
                    ab_type, k, b, ab_type, k, &beta, y, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                    CUBLAS_GEMM_DEFAULT);
  if (bs != CUBLAS_STATUS_SUCCESS) {
    return Internal("cublasGemmEx(%s, m=%d n=%zu k=%d): %s", DTypeName(w.dtype), m, n, k,
                    cublasGetStatusString(bs));
  }
  return Status::Ok();
}

bool Skinny(MatMulKernel kernel, const TensorView& w, const float* x, size_t n) {
  return kernel != MatMulKernel::kLibrary &&
         internal::SkinnyMatMulApplies(w.dtype, w.rows, w.cols, n, w.data, x);
}

Status SkinnyDoesNotApply(const char* op, const TensorView& w, size_t n) {
  return InvalidArgument(
      "%s: the skinny kernel needs bf16 weights, 1 <= n <= %zu, cols %% 8 == 0 and 16 B aligned "
      "pointers (got %s %zu x %zu, n=%zu)",
      op, internal::kMaxSkinnyRows, DTypeName(w.dtype), w.rows, w.cols, n);
}

}  // namespace

size_t MatMulWorkspaceBytes(const TensorView& w, size_t n) {
  return (w.dtype == DType::kF32 || n <= 1) ? 0 : n * w.cols * DTypeSize(w.dtype);
}

Status MatMul(const DeviceContext& ctx, CudaStream* stream, const TensorView& w, const float* x,
              size_t n, float* y, void* workspace, MatMulKernel kernel) {
  if (n == 0 || w.rows == 0) return Status::Ok();
  if (Skinny(kernel, w, x, n)) {
    const internal::SkinnyOutput out{w.data, w.rows, y};
    return internal::CudaStatus(
        internal::LaunchSkinnyMatMul(&out, 1, w.cols, x, n, internal::AsCuda(stream)),
        "SkinnyMatMulKernel");
  }
  if (kernel == MatMulKernel::kSkinny) return SkinnyDoesNotApply("MatMul", w, n);
  if (w.rows > INT_MAX || w.cols > INT_MAX || n > INT_MAX) {
    return InvalidArgument("MatMul: %zu x %zu weights, n=%zu exceed cuBLAS int sizes", w.rows,
                           w.cols, n);
  }
  if (n == 1) {
    // Decode: reading W is all the cost; a warp-per-row kernel reads it at close to the copy
    // bandwidth and keeps x in f32 (cuBLAS GEMV paths reached about half of it).
    return internal::CudaStatus(
        internal::LaunchMatVec(w.data, w.dtype, w.rows, w.cols, x, y, internal::AsCuda(stream)),
        "MatVecKernel");
  }
  if (w.dtype != DType::kF32 && workspace == nullptr) {
    return InvalidArgument("MatMul: %s weights need a workspace of %zu bytes", DTypeName(w.dtype),
                           MatMulWorkspaceBytes(w, n));
  }
  const void* b = x;
  if (w.dtype != DType::kF32) {
    KVSTAR_CUDA_RETURN_IF_ERROR(
        internal::LaunchConvertF32(x, n * w.cols, w.dtype, workspace, internal::AsCuda(stream)));
    b = workspace;
  }
  return Gemm(ctx, stream, w, b, n, y);
}

Status PrefetchWeightsL2(const DeviceContext& ctx, CudaStream* stream, const TensorView& w,
                         size_t bytes) {
  const size_t pitch = w.cols * DTypeSize(w.dtype);
  if (bytes == 0 || w.rows == 0 || pitch % 16 != 0 ||
      reinterpret_cast<uintptr_t>(w.data) % 16 != 0) {
    return Status::Ok();
  }
  const size_t wave_rows =
      internal::kSkinnyWaveRowsPerSm * static_cast<size_t>(std::max(ctx.info().sm_count, 1));
  size_t rows = std::min(w.rows, wave_rows);
  size_t per_row = std::min(pitch, bytes / rows / 256 * 256);
  if (per_row == 0) {  // less than 256 bytes a row: whole 256-byte pieces of the first rows
    rows = std::min(rows, std::max<size_t>(1, bytes / 256));
    per_row = std::min<size_t>(pitch, 256);
  }
  return PrefetchL2(stream, w.data, rows, pitch, per_row);
}

Status MatMulSwiGlu(const DeviceContext& ctx, CudaStream* stream, const TensorView& w_gate,
                    const TensorView& w_up, const float* x, size_t n, float* act, float* up,
                    void* workspace, MatMulKernel kernel, bool fuse) {
  if (w_gate.rows != w_up.rows || w_gate.cols != w_up.cols) {
    return InvalidArgument("MatMulSwiGlu: gate %zu x %zu and up %zu x %zu differ", w_gate.rows,
                           w_gate.cols, w_up.rows, w_up.cols);
  }
  if (n == 0 || w_gate.rows == 0) return Status::Ok();
  if (fuse && Skinny(kernel, w_gate, x, n) && Skinny(kernel, w_up, x, n)) {
    const internal::SkinnyOutput outs[2] = {{w_gate.data, w_gate.rows, act},
                                            {w_up.data, w_up.rows, up}};
    return internal::CudaStatus(
        internal::LaunchSkinnyMatMul(outs, 2, w_gate.cols, x, n, internal::AsCuda(stream), 0, true),
        "SkinnyMatMulKernel");
  }
  const MatMulTarget targets[2] = {{w_gate, act}, {w_up, up}};
  KVSTAR_RETURN_IF_ERROR(MatMulShared(ctx, stream, targets, x, n, workspace, kernel));
  return SwiGlu(stream, act, up, n * w_gate.rows, act);
}

Status MatMulShared(const DeviceContext& ctx, CudaStream* stream,
                    std::span<const MatMulTarget> targets, const float* x, size_t n,
                    void* workspace, MatMulKernel kernel) {
  if (targets.empty() || n == 0) return Status::Ok();
  bool skinny = targets.size() <= static_cast<size_t>(internal::kMaxSkinnyOutputs);
  for (const MatMulTarget& t : targets) {
    if (t.w.cols != targets[0].w.cols) {
      return InvalidArgument("MatMulShared: weights of %zu and %zu columns share one x",
                             targets[0].w.cols, t.w.cols);
    }
    skinny = skinny && Skinny(kernel, t.w, x, n);
  }
  if (skinny) {
    internal::SkinnyOutput outs[internal::kMaxSkinnyOutputs];
    for (size_t i = 0; i < targets.size(); ++i) {
      outs[i] = {targets[i].w.data, targets[i].w.rows, targets[i].y};
    }
    return internal::CudaStatus(
        internal::LaunchSkinnyMatMul(outs, static_cast<int>(targets.size()), targets[0].w.cols, x,
                                     n, internal::AsCuda(stream)),
        "SkinnyMatMulKernel");
  }
  for (const MatMulTarget& t : targets) {
    KVSTAR_RETURN_IF_ERROR(MatMul(ctx, stream, t.w, x, n, t.y, workspace, kernel));
  }
  return Status::Ok();
}

Status MatMulConverted(const DeviceContext& ctx, CudaStream* stream, const TensorView& w,
                       const void* x, size_t n, float* y) {
  if (n == 0 || w.rows == 0) return Status::Ok();
  if (w.dtype == DType::kF32) {
    return InvalidArgument("MatMulConverted: f32 weights take f32 activations (use MatMul)");
  }
  if (w.rows > INT_MAX || w.cols > INT_MAX || n > INT_MAX) {
    return InvalidArgument("MatMulConverted: %zu x %zu weights, n=%zu exceed cuBLAS int sizes",
                           w.rows, w.cols, n);
  }
  return Gemm(ctx, stream, w, x, n, y);
}

Status ConvertF32(CudaStream* stream, const float* src, size_t count, DType dtype, void* dst) {
  if (count == 0) return Status::Ok();
  if (dtype == DType::kF32) {
    return internal::CudaStatus(cudaMemcpyAsync(dst, src, count * sizeof(float),
                                                cudaMemcpyDeviceToDevice, internal::AsCuda(stream)),
                                "ConvertF32 (copy)");
  }
  return internal::CudaStatus(
      internal::LaunchConvertF32(src, count, dtype, dst, internal::AsCuda(stream)), "ConvertF32");
}

}  // namespace kvstar::cuda
