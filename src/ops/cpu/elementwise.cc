// Element-wise ops: dispatch to the per-target kernels of elementwise-inl.h.
#include <cstddef>
#include <cstdint>

#include "ops/cpu/ops.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/elementwise.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "ops/cpu/elementwise-inl.h"

#if HWY_ONCE
namespace kvstar::ops {

HWY_EXPORT(AddBiasImpl);
HWY_EXPORT(RmsNormImpl);
HWY_EXPORT(ApplyRopeImpl);
HWY_EXPORT(SwiGluImpl);
HWY_EXPORT(EmbedRowsImpl);
HWY_EXPORT(AddImpl);

void AddBias(const TensorView& bias, size_t n, float* y) {
  HWY_DYNAMIC_DISPATCH(AddBiasImpl)(bias, n, y);
}

void RmsNorm(const float* x, const TensorView& weight, size_t n, size_t dim, float eps,
             float* out) {
  HWY_DYNAMIC_DISPATCH(RmsNormImpl)(x, weight, n, dim, eps, out);
}

void ApplyRope(const float* inv_freq, size_t head_dim, const int64_t* pos, size_t n, size_t heads,
               float* x) {
  HWY_DYNAMIC_DISPATCH(ApplyRopeImpl)(inv_freq, head_dim, pos, n, heads, x);
}

void SwiGlu(const float* gate, const float* up, size_t count, float* out) {
  HWY_DYNAMIC_DISPATCH(SwiGluImpl)(gate, up, count, out);
}

Status Embed(const TensorView& table, const int32_t* tokens, size_t n, float* out) {
  for (size_t t = 0; t < n; ++t) {
    if (tokens[t] < 0 || static_cast<size_t>(tokens[t]) >= table.rows) {
      return InvalidArgument("token id %d at position %zu is outside the vocabulary [0, %zu)",
                             tokens[t], t, table.rows);
    }
  }
  HWY_DYNAMIC_DISPATCH(EmbedRowsImpl)(table, tokens, n, out);
  return Status::Ok();
}

void Add(const float* a, const float* b, size_t count, float* out) {
  HWY_DYNAMIC_DISPATCH(AddImpl)(a, b, count, out);
}

}  // namespace kvstar::ops
#endif  // HWY_ONCE
