// SIMD kernels of KVstar block scoring (Highway, runtime dispatch). Raw pointers only; the
// Retriever owns shapes, validation and threading.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/half.h"

namespace kvstar::sparse::kernels {

// f32 lanes of the target that dispatch picks now; query rows are padded to a multiple of it.
size_t F32Lanes();
// Name of the target that dispatch picks now ("AVX3", "AVX2", "SCALAR", ...).
const char* CurrentTargetName();

struct BlockLseArgs {
  const uint16_t* rep = nullptr;  // [vectors][kv_heads][d] f16 or bf16 bits (one block)
  DType dtype = DType::kF16;
  size_t vectors = 0;
  size_t kv_heads = 0;
  size_t d = 0;                    // d_pruned, any value >= 1
  const float* qt = nullptr;       // [kv_heads][d][qpad] pruned, scaled queries, lanes = queries
  size_t qpad = 0;                 // multiple of F32Lanes()
  float* rep_scratch = nullptr;    // [vectors][d]
  float* logit_scratch = nullptr;  // [vectors][qpad]
  float* lse = nullptr;            // out: [kv_heads][qpad] log-sum-exp over the block's vectors
  // Optional: the next block's representation, prefetched while this one is scored (long
  // contexts do not fit in cache; scoring stays compute-bound only if memory latency is hidden).
  const uint16_t* next_rep = nullptr;
};
// Per KV head and query lane: log(sum over the block's vectors of exp(q . k)).
void BlockLse(const BlockLseArgs& args);

// For a segment of n rows of `row` floats (lse[n][row]): pm = column max, lse := exp(lse - pm),
// ps = column sum of that. Returns false (and leaves garbage) when any input is NaN or Inf.
bool NormalizeSegment(float* lse, size_t n, size_t row, float* pm, float* ps);

// out[i] = exp(a[i] - b[i]).
void ExpDiff(const float* a, const float* b, float* out, size_t n);

// out[r][g] = sum_j e[r][g][j] * factor[g][j] for n rows of kv_heads x qpad.
void WeightedRowSums(const float* e, size_t n, size_t kv_heads, size_t qpad, const float* factor,
                     float* out);

}  // namespace kvstar::sparse::kernels
