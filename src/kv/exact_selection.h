// Exact first selection: at the end of a layer's prefill every prompt block is still on the
// device, so the group-0 queries can be scored against the real keys instead of the block
// representations. Used when KvstarConfig::first_selection == "exact" (ours; UCM scores the
// representations here too).
#pragma once

#include <cstdint>
#include <vector>

#include "base/kv_layout.h"

namespace kvstar {

enum class BlockVote {
  kSum,  // UCM's soft vote: block score = sum of its attention mass over queries and heads
  kMax,  // block score = max over (query, head) of its attention mass: one head that needs a
         // block is enough to keep it
};

// queries: [x][q_heads][head_dim] (after RoPE); blocks[b] is block b of the layer in `geom`
// layout, tokens [0, num_tokens) valid. Softmax of q.k * scale over all tokens of all blocks
// (candidates or not, as attention sees them), then per-block mass aggregated by `vote`.
// Returns the top k of `candidates` (ties: lower index), ascending.
std::vector<uint32_t> ExactSelection(const KvGeometry& geom, const float* queries, size_t x,
                                     size_t q_heads, float scale, const void* const* blocks,
                                     size_t num_tokens, const std::vector<uint32_t>& candidates,
                                     size_t k, BlockVote vote);

}  // namespace kvstar
