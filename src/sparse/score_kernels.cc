#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "sparse/score_kernels.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "sparse/score_kernels-inl.h"

#if HWY_ONCE
namespace kvstar::sparse::kernels {

HWY_EXPORT(F32LanesImpl);
HWY_EXPORT(CurrentTargetNameImpl);
HWY_EXPORT(BlockLseImpl);
HWY_EXPORT(NormalizeSegmentImpl);
HWY_EXPORT(ExpDiffImpl);
HWY_EXPORT(WeightedRowSumsImpl);

size_t F32Lanes() { return HWY_DYNAMIC_DISPATCH(F32LanesImpl)(); }
const char* CurrentTargetName() { return HWY_DYNAMIC_DISPATCH(CurrentTargetNameImpl)(); }
void BlockLse(const BlockLseArgs& args) { HWY_DYNAMIC_DISPATCH(BlockLseImpl)(args); }
bool NormalizeSegment(float* lse, size_t n, size_t row, float* pm, float* ps) {
  return HWY_DYNAMIC_DISPATCH(NormalizeSegmentImpl)(lse, n, row, pm, ps);
}
void ExpDiff(const float* a, const float* b, float* out, size_t n) {
  HWY_DYNAMIC_DISPATCH(ExpDiffImpl)(a, b, out, n);
}
void WeightedRowSums(const float* e, size_t n, size_t kv_heads, size_t qpad, const float* factor,
                     float* out) {
  HWY_DYNAMIC_DISPATCH(WeightedRowSumsImpl)(e, n, kv_heads, qpad, factor, out);
}

}  // namespace kvstar::sparse::kernels
#endif  // HWY_ONCE
