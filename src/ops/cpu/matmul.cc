// MatVec / MatMul: dispatch to the per-target kernels of matmul-inl.h.
#include <cstddef>

#include "ops/cpu/ops.h"
#include "ops/cpu/ops_internal.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/matmul.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/cpu/matmul-inl.h"

#if HWY_ONCE
namespace kvstar::ops {

HWY_EXPORT(MatVecImpl);
HWY_EXPORT(MatMulImpl);
HWY_EXPORT(PackedMatMulImpl);
HWY_EXPORT(DotMatMulImpl);

void MatVec(ThreadPool& pool, const TensorView& w, const float* x, float* y) {
  HWY_DYNAMIC_DISPATCH(MatVecImpl)(pool, w, x, y);
}

void MatMul(ThreadPool& pool, const TensorView& w, const float* x, size_t n, float* y) {
  HWY_DYNAMIC_DISPATCH(MatMulImpl)(pool, w, x, n, y);
}

int64_t CompiledSimdTargets() { return HWY_TARGETS; }

namespace internal {
void MatMulPacked(ThreadPool& pool, const TensorView& w, const float* x, size_t n, float* y) {
  HWY_DYNAMIC_DISPATCH(PackedMatMulImpl)(pool, w, x, n, y);
}
void MatMulDot(ThreadPool& pool, const TensorView& w, const float* x, size_t n, float* y) {
  HWY_DYNAMIC_DISPATCH(DotMatMulImpl)(pool, w, x, n, y);
}
}  // namespace internal

}  // namespace kvstar::ops
#endif  // HWY_ONCE
