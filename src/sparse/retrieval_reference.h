// Test-only float64 reference of KVstar scoring and helpers that build random inputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "sparse/block_representations.h"
#include "sparse/retriever.h"

namespace kvstar::sparse::testing {

// Straightforward float64 scores, written from the algorithm text: per candidate (per layer) or
// [candidates][kv_heads] with select_per_kv_head.
std::vector<double> ReferenceScores(const RetrievalTask& task);

// Reference top k (ties: lower block index), as block indices ascending.
std::vector<uint32_t> ReferenceTopK(const std::vector<double>& scores, size_t stride,
                                    const std::vector<uint32_t>& candidates, size_t k);

struct SelectionComparison {
  size_t mismatches = 0;   // blocks in one selection but not the other
  size_t unexplained = 0;  // mismatches whose reference score is not a near-tie of the k-th
  size_t near_ties = 0;    // candidates within the tolerance of the k-th score
};
// Compares `got` with the reference selection; a mismatch is explained when the block's reference
// score is within rel_eps (relative to the k-th score) of the k-th score.
SelectionComparison CompareSelection(const std::vector<double>& scores, size_t stride,
                                     const std::vector<uint32_t>& candidates, size_t k,
                                     const std::vector<uint32_t>& got, double rel_eps);

struct RandomLayerSpec {
  size_t kv_heads = 2;
  size_t head_dim = 64;
  size_t block_tokens = 32;
  size_t merge = 2;
  size_t blocks = 10;
  double prune_ratio = 0.25;
  DType rep_dtype = DType::kF16;
  DType kv_dtype = DType::kBF16;
};
// Random keys with per-block structure (so that scores differ), representations built through
// ChannelImportanceAccumulator + BlockRepresentations::Append.
std::unique_ptr<BlockRepresentations> RandomRepresentations(const RandomLayerSpec& spec,
                                                            std::mt19937_64& rng);

std::vector<float> RandomQueries(size_t num_queries, size_t q_heads, size_t head_dim, float scale,
                                 std::mt19937_64& rng);

}  // namespace kvstar::sparse::testing
