// Entry points that force one kernel variant, for tests and benchmarks only. The engine calls the
// functions of ops.h, which choose the variant themselves.
#pragma once

#include <cstddef>

#include "base/kv_layout.h"
#include "base/tensor_view.h"
#include "base/thread_pool.h"

namespace kvstar::ops::internal {

// MatMul through the packed outer-product kernel whatever n is (MatMul uses it for n >= 8).
void MatMulPacked(ThreadPool& pool, const TensorView& w, const float* x, size_t n, float* y);

// MatMul through the dot-product kernel whatever n is (MatMul uses it for n < 8).
void MatMulDot(ThreadPool& pool, const TensorView& w, const float* x, size_t n, float* y);

// Attention split along the sequence into pieces of at most split_tokens tokens (rounded up to a
// whole number of blocks) whatever the shape; 0 means "as AttentionOverBlocks chooses".
void AttentionWithSplit(ThreadPool& pool, const KvGeometry& geom, size_t q_heads, const float* q,
                        size_t n, const int64_t* q_last, const void* const* blocks,
                        size_t num_tokens, float scale, size_t split_tokens, float* out);

}  // namespace kvstar::ops::internal
