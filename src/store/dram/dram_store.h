// DramStore: entries in host memory with a byte capacity and LRU eviction. Memory comes from a
// HostAllocator (pinned memory on CUDA). An entry that an in-flight Load is copying, or that a
// Pin holds, is never evicted or freed; replacing or removing it only detaches it from the index.
//
// The index is split into shards by id hash, each with its own mutex, LRU list and spare
// buffers, so that I/O threads loading different blocks rarely meet on one lock. The capacity
// is one store-wide budget (an atomic count of every byte held: entries, detached pinned
// entries, copies in flight and spare buffers), so it is exact whatever the shard count. To make
// room, a dump evicts the least recently used unpinned entry of the shard whose least recently
// used entry is the oldest in the store: exact LRU within a shard, and across shards as well
// while nothing is pinned.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/async_store.h"

namespace kvstar {

class DramStore final : public store_internal::AsyncBlockStore {
 public:
  // Entry memory is aligned to this and padded (zeros) to a multiple of it, so that a file tier
  // can write it with O_DIRECT without a bounce buffer.
  static constexpr size_t kAlignment = 4096;

  static StatusOr<std::unique_ptr<DramStore>> Create(const StoreOptions& options);
  ~DramStore() override;

  std::vector<bool> Lookup(std::span<const Hash128> ids) override;
  Status Remove(std::span<const Hash128> ids) override;
  std::string Describe() const override;
  Status DumpSync(const DumpItem& item) override;
  Status LoadSync(const LoadItem& item, size_t* bytes) override;

  struct Entry;
  // Keeps one entry's memory alive and unevictable. Move-only; releases on destruction.
  class Pin {
   public:
    Pin() = default;
    Pin(Pin&& o) noexcept;
    Pin& operator=(Pin&& o) noexcept;
    Pin(const Pin&) = delete;
    Pin& operator=(const Pin&) = delete;
    ~Pin() { Release(); }
    void Release();
    bool valid() const { return entry_ != nullptr; }
    const void* data() const;
    size_t bytes() const;
    // Bytes readable at data(): bytes() rounded up to kAlignment (the padding is zero).
    size_t padded_bytes() const;

   private:
    friend class DramStore;
    Pin(DramStore* store, Entry* entry) : store_(store), entry_(entry) {}
    DramStore* store_ = nullptr;
    Entry* entry_ = nullptr;
  };

  // DumpSync that also returns a pin of the new entry.
  StatusOr<Pin> Put(const DumpItem& item);

 private:
  struct Shard;
  struct OldestUse;
  static constexpr int kMaxShards = 1024;

  explicit DramStore(const StoreOptions& options);
  void FillStats(StoreStats* out) const override;
  size_t num_shards() const { return size_t{1} << shard_bits_; }
  size_t ShardIndex(const Hash128& id) const;
  void Unpin(Entry* e);
  // Removes e from its shard's index and LRU (the shard's mutex held). Returns true when e is
  // unpinned: its buffer went to the shard's spare list and the caller deletes e.
  bool DetachLocked(Entry* e);
  // Publishes the last use of shard s's least recently used entry (its mutex held).
  void UpdateOldestLocked(size_t s);
  // Finds room for alloc_bytes within the capacity: a spare buffer of that size or the buffer
  // of an evicted entry of that size (returned), or fresh budget (nullptr returned, *fresh set),
  // releasing spare buffers of other sizes and evicting cold, unpinned entries as needed.
  StatusOr<void*> Reserve(size_t alloc_bytes, const Hash128& id, bool* fresh);
  // A spare buffer of exactly alloc_bytes, looked for in shard `home` first; nullptr if none.
  void* TakeSpare(size_t alloc_bytes, size_t home);
  // Hands one spare buffer (any size) back to the allocator; false when there is none.
  bool ReleaseOneSpare();
  // Detaches the least recently used unpinned entry of the shard whose least recently used entry
  // is the oldest; nullptr when every entry is pinned. The caller owns the result and its buffer,
  // whose bytes are still counted in held_bytes_.
  Entry* EvictOne();

  HostAllocator* allocator_;
  const size_t capacity_;
  const int shard_bits_;
  std::unique_ptr<Shard[]> shards_;  // [1 << shard_bits_]
  // Last use (steady clock ns) of each shard's least recently used entry, UINT64_MAX when the
  // shard is empty; written under the shard's mutex, read without it to pick where to evict.
  // Loads and removals do not update it (that would cost a cache miss on the next entry per
  // load), so it may be older than the truth; EvictOne corrects it before trusting it.
  std::unique_ptr<OldestUse[]> oldest_use_;  // [1 << shard_bits_]
  // Every byte counted against the capacity: entries (detached pinned ones included), buffers
  // of dumps in flight and spare buffers. Never above capacity_.
  alignas(64) std::atomic<size_t> held_bytes_{0};
};

}  // namespace kvstar
