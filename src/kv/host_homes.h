// HostHomes: where the host tier keeps each offloaded KV block of a batch, as an index into a
// per-layer arena of block-sized homes (the CUDA engine's pinned region).
//
//   inclusive  every block of every sequence has the fixed home seq * max_blocks + block: the
//              arena holds the whole KV of the batch and a block stays there while the device
//              also holds it (no write-back when the device drops it).
//   exclusive  the arena holds `homes` blocks per layer, shared by the batch's sequences. A block
//              holds a home only while the device does not hold it: a block copied to the device
//              gives its home back once the copy has landed, and a block the device drops must
//              first be written back into a newly acquired home. The host then keeps about
//              (1 - sparse_ratio) of the KV instead of all of it, so more sequences fit.
//
// Not thread-safe, except that calls for different layers may run at once (each touches only its
// layer's homes): the CUDA engine's window threads stage different layers in parallel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "base/status.h"

namespace kvstar {

class HostHomes {
 public:
  // homes_per_layer: the arena's blocks per layer; inclusive needs batch * max_blocks.
  HostHomes(size_t layers, size_t batch, size_t max_blocks, size_t homes_per_layer, bool exclusive);

  // The homes an exclusive arena needs per layer so that acquiring never fails when, at any
  // time, every sequence's device holds at least `resident_min` of its blocks and the batch's
  // sequences are set up one at a time (a sequence being set up holds all of its blocks, up to
  // max_blocks), plus `slack` per sequence for transient holds (blocks in flight, the new block
  // whose representation is being built). At most batch * max_blocks (the inclusive size).
  static size_t ExclusiveHomesPerLayer(size_t batch, size_t max_blocks, size_t resident_min,
                                       size_t slack);

  bool exclusive() const { return exclusive_; }
  size_t homes_per_layer() const { return homes_; }
  size_t max_blocks() const { return max_blocks_; }
  // The home of (layer, seq, block), or -1 when it has none (exclusive only).
  int32_t home(size_t layer, size_t seq, size_t block) const {
    return map_[(layer * batch_ + seq) * max_blocks_ + block];
  }
  // The block's home, acquiring a free one when it has none. ResourceExhausted (naming the layer
  // and the arena size) when the layer's arena is full.
  StatusOr<int32_t> Acquire(size_t layer, size_t seq, size_t block);
  // Exclusive: the block's home returns to the layer's free homes (nothing when it has none).
  // Inclusive: nothing (homes are fixed).
  void Release(size_t layer, size_t seq, size_t block);
  // Exclusive: `from`'s home becomes `to`'s (a block entering the device hands its home to one
  // leaving it). Internal when `from` has no home, `to` has one, or the homes are inclusive.
  Status Transfer(size_t layer, size_t seq, size_t from, size_t to);
  // Homes in use in `layer`.
  size_t used(size_t layer) const { return homes_ - free_[layer].size(); }

 private:
  size_t layers_, batch_, max_blocks_, homes_;
  bool exclusive_;
  std::vector<int32_t> map_;                // [layer][seq][block] -> home or -1
  std::vector<std::vector<int32_t>> free_;  // per layer, a stack (lowest index on top)
};

}  // namespace kvstar
