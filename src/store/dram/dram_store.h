// DramStore: entries in host memory with a byte capacity and LRU eviction. Memory comes from a
// HostAllocator (pinned memory on CUDA). An entry that an in-flight Load is copying, or that a
// Pin holds, is never evicted or freed; replacing or removing it only detaches it from the index.
#pragma once

#include <list>
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
  explicit DramStore(const StoreOptions& options);
  void FillStats(StoreStats* out) const override;
  void Unpin(Entry* e);
  // Removes e from the index and LRU (mu_ held). Returns true when the caller must free it now.
  bool DetachLocked(Entry* e);
  // Keeps e's buffer as spare memory and deletes e. Takes mu_.
  void FreeEntry(Entry* e);

  HostAllocator* allocator_;
  const size_t capacity_;

  mutable std::mutex mu_;  // guards everything below; never held across a copy or allocation
  std::unordered_map<Hash128, Entry*, Hash128Hasher> index_;
  std::list<Entry*> lru_;  // front: most recently used
  size_t used_bytes_ = 0;  // allocated bytes of every entry not yet freed (detached included)
  // Buffers of freed entries by size, reused by later entries of that size: KV blocks have few
  // sizes, and fresh (or pinned) host memory is expensive to obtain and to touch the first time.
  std::unordered_map<size_t, std::vector<void*>> spare_;
  size_t spare_bytes_ = 0;  // used_bytes_ + spare_bytes_ <= capacity_
};

}  // namespace kvstar
