// KVstar block representations of one (request, layer): per block, per KV head, the mean of
// `merge` consecutive keys on the kept channels, stored in fp16 (or bf16):
//   [blocks][block_tokens / merge][kv_heads][d_pruned]      plus the ChannelIndex.
//
// Concurrency rule: one thread appends (Append / AppendSerializedBlock); any number of threads
// may call View() and read through views at the same time. A view sees exactly the blocks appended
// before it was taken. Storage is chunked (chunk_blocks blocks per chunk, never moved), and a view
// holds references to the chunks, so its memory stays valid while the view lives, even after the
// BlockRepresentations is destroyed (a cancelled request with a retrieval in flight).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "base/kv_layout.h"
#include "base/status.h"
#include "sparse/channel_importance.h"

namespace kvstar::sparse {

struct RepresentationOptions {
  size_t merge = 2;           // blk_repre_inner_token_merge; must divide block_tokens
  DType dtype = DType::kF16;  // kF16 or kBF16
  size_t chunk_blocks = 16;   // blocks per storage chunk (memory granularity)
};

namespace internal {
struct RepresentationShape;
struct RepresentationChunk;
using RepresentationDirectory = std::vector<std::shared_ptr<RepresentationChunk>>;
}  // namespace internal

// A read-only snapshot of the first num_blocks() blocks. Cheap to copy.
class RepresentationView {
 public:
  RepresentationView() = default;

  size_t num_blocks() const { return num_blocks_; }
  size_t vectors_per_block() const;  // block_tokens / merge
  size_t kv_heads() const;
  size_t head_dim() const;
  size_t d_pruned() const;
  DType dtype() const;
  const ChannelIndex& channels() const;
  // 16-bit elements per block: vectors_per_block * kv_heads * d_pruned.
  size_t block_elements() const;
  // The block's [vectors_per_block][kv_heads][d_pruned] elements (f16 or bf16 bits).
  const uint16_t* block(size_t b) const;
  // False when the block holds a NaN or Inf (non-finite keys, or an fp16 overflow).
  bool block_finite(size_t b) const;
  bool empty() const { return shape_ == nullptr; }

 private:
  friend class BlockRepresentations;
  std::shared_ptr<const internal::RepresentationShape> shape_;
  std::shared_ptr<const internal::RepresentationDirectory> dir_;
  size_t num_blocks_ = 0;
};

class BlockRepresentations {
 public:
  // InvalidArgument when merge does not divide block_tokens, the dtype is not f16/bf16, or the
  // channel index does not fit the geometry.
  static StatusOr<std::unique_ptr<BlockRepresentations>> Create(
      const KvGeometry& geometry, ChannelIndex channels, const RepresentationOptions& options);
  ~BlockRepresentations();
  BlockRepresentations(const BlockRepresentations&) = delete;
  BlockRepresentations& operator=(const BlockRepresentations&) = delete;

  // Builds the next block's representation from the K half of `block` (a full block in
  // `geometry`'s layout, bf16/f16/f32); earlier blocks are untouched.
  Status Append(const void* block, const KvGeometry& geometry);

  size_t num_blocks() const;
  RepresentationView View() const;
  const ChannelIndex& channels() const;
  size_t vectors_per_block() const;
  // Bytes of representation data per block.
  size_t block_bytes() const;

  // Everything: header (version, shape, checksums), channel index, blocks.
  std::vector<uint8_t> Serialize() const;
  // DataLoss / InvalidArgument on truncated, corrupt or foreign bytes; never crashes.
  static StatusOr<std::unique_ptr<BlockRepresentations>> Deserialize(std::span<const uint8_t> bytes,
                                                                     size_t chunk_blocks = 16);

  // One block with a header that names the shape and the channel index it was built with: the
  // form stored next to the KV block. AppendSerializedBlock checks both against this object.
  std::vector<uint8_t> SerializeBlock(size_t b) const;
  Status AppendSerializedBlock(std::span<const uint8_t> bytes);

 private:
  BlockRepresentations(std::shared_ptr<const internal::RepresentationShape> shape,
                       size_t chunk_blocks);
  // Slot for block num_blocks_ (allocating a chunk when needed); published by Publish().
  uint16_t* NextSlot();
  void Publish(bool finite);

  std::shared_ptr<const internal::RepresentationShape> shape_;
  size_t chunk_blocks_;
  mutable std::mutex mu_;  // guards dir_ and num_blocks_ against View()
  std::shared_ptr<const internal::RepresentationDirectory> dir_;
  size_t num_blocks_ = 0;
};

}  // namespace kvstar::sparse
