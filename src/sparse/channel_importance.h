// Channel importance for KVstar block representations: per KV head, the mean |k| of every channel
// over the prompt's keys; the representation keeps the most important channels only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/kv_layout.h"
#include "base/status.h"

namespace kvstar::sparse {

// The kept channels of every KV head, each list sorted ascending.
struct ChannelIndex {
  size_t kv_heads = 0;
  size_t head_dim = 0;
  size_t d_pruned = 0;
  std::vector<uint16_t> channels;  // [kv_heads][d_pruned]

  const uint16_t* head(size_t kv_head) const { return channels.data() + kv_head * d_pruned; }
  bool operator==(const ChannelIndex&) const = default;
  // No pruning: every channel of every head.
  static ChannelIndex Identity(size_t kv_heads, size_t head_dim);
  // Checks shape and that every list is strictly ascending and inside [0, head_dim).
  Status Validate() const;
};

// d_pruned for a prune ratio: round(head_dim * ratio), or head_dim when ratio >= 0.98 (UCM keeps
// every channel there). InvalidArgument when the ratio is outside (0, 1] or gives 0 channels.
StatusOr<size_t> PrunedDim(size_t head_dim, double prune_ratio);

// Accumulates sum |k| per (KV head, channel) over the K half of prompt blocks, then keeps the
// top channels. Tokens past `valid_tokens` of a partial tail block are ignored.
class ChannelImportanceAccumulator {
 public:
  ChannelImportanceAccumulator(size_t kv_heads, size_t head_dim, double prune_ratio);

  // `block` is one KV block in `geometry`'s layout ([2][kv_heads][block_tokens][head_dim]);
  // only its first `valid_tokens` tokens of K are read.
  Status AddBlock(const void* block, const KvGeometry& geometry, size_t valid_tokens);
  Status AddBlock(const void* block, const KvGeometry& geometry) {
    return AddBlock(block, geometry, geometry.block_tokens);
  }

  size_t tokens() const { return tokens_; }
  // Mean |k| per channel: [kv_heads][head_dim]. Empty before any token.
  std::vector<double> Importance() const;

  // Per KV head the d_pruned channels of highest importance (ties: lower index first), sorted
  // ascending. FailedPrecondition before any token; InvalidArgument on a bad ratio or when an
  // importance is NaN/Inf (non-finite keys).
  StatusOr<ChannelIndex> Finalize() const;

 private:
  size_t kv_heads_;
  size_t head_dim_;
  double prune_ratio_;
  size_t tokens_ = 0;
  std::vector<double> abs_sum_;  // [kv_heads][head_dim]
};

// Keeps the top channels of an importance table ([kv_heads][head_dim], e.g. from Importance()).
StatusOr<ChannelIndex> SelectChannels(std::span<const double> importance, size_t kv_heads,
                                      size_t head_dim, double prune_ratio);

}  // namespace kvstar::sparse
