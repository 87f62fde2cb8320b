#include "store/dram/dram_store.h"

#include <cstring>
#include <utility>

namespace kvstar {

struct DramStore::Entry {
  Hash128 id;
  void* data = nullptr;
  size_t bytes = 0;        // entry size
  size_t alloc_bytes = 0;  // bytes rounded up to kAlignment
  int pins = 0;
  bool live = true;  // in index_ and lru_
  std::list<Entry*>::iterator lru_pos;
};

namespace {
size_t RoundUp(size_t n, size_t a) { return (n + a - 1) / a * a; }
}  // namespace

DramStore::Pin::Pin(Pin&& o) noexcept
    : store_(std::exchange(o.store_, nullptr)), entry_(std::exchange(o.entry_, nullptr)) {}

DramStore::Pin& DramStore::Pin::operator=(Pin&& o) noexcept {
  if (this != &o) {
    Release();
    store_ = std::exchange(o.store_, nullptr);
    entry_ = std::exchange(o.entry_, nullptr);
  }
  return *this;
}

void DramStore::Pin::Release() {
  if (entry_ != nullptr) store_->Unpin(entry_);
  entry_ = nullptr;
  store_ = nullptr;
}

const void* DramStore::Pin::data() const { return entry_->data; }
size_t DramStore::Pin::bytes() const { return entry_->bytes; }
size_t DramStore::Pin::padded_bytes() const { return entry_->alloc_bytes; }

StatusOr<std::unique_ptr<DramStore>> DramStore::Create(const StoreOptions& options) {
  if (options.dram_capacity_bytes == 0) {
    return InvalidArgument("dram store: capacity must be > 0 bytes");
  }
  if (options.io_threads < 0) {
    return InvalidArgument("dram store: io_threads must be >= 0, got %d", options.io_threads);
  }
  return std::unique_ptr<DramStore>(new DramStore(options));
}

DramStore::DramStore(const StoreOptions& options)
    : AsyncBlockStore(options, "kvdram"),
      allocator_(options.allocator ? options.allocator : DefaultHostAllocator()),
      capacity_(options.dram_capacity_bytes) {}

DramStore::~DramStore() {
  StopIo();
  std::lock_guard<std::mutex> lock(mu_);
  for (Entry* e : lru_) {
    KVSTAR_CHECK(e->pins == 0, "DramStore destroyed while entry %s is pinned (%d pins)",
                 e->id.ToHex().c_str(), e->pins);
    allocator_->Free(e->data, e->alloc_bytes);
    delete e;
  }
  for (auto& [bytes, buffers] : spare_) {
    for (void* p : buffers) allocator_->Free(p, bytes);
  }
}

std::string DramStore::Describe() const {
  char buf[128];
  std::snprintf(buf, sizeof(buf), "dram (capacity %.1f MiB, %d I/O threads)",
                static_cast<double>(capacity_) / (1 << 20), options().io_threads);
  return buf;
}

void DramStore::FreeEntry(Entry* e) {
  {
    // Its bytes stay counted against the capacity as spare memory, so the total held never
    // exceeds the capacity.
    std::lock_guard<std::mutex> lock(mu_);
    spare_[e->alloc_bytes].push_back(e->data);
    spare_bytes_ += e->alloc_bytes;
  }
  delete e;
}

bool DramStore::DetachLocked(Entry* e) {
  if (e->live) {
    index_.erase(e->id);
    lru_.erase(e->lru_pos);
    e->live = false;
  }
  if (e->pins > 0) return false;  // the last Unpin frees it
  used_bytes_ -= e->alloc_bytes;
  return true;
}

void DramStore::Unpin(Entry* e) {
  bool free_now = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    KVSTAR_CHECK(e->pins > 0, "unpin of an unpinned entry %s", e->id.ToHex().c_str());
    if (--e->pins == 0 && !e->live) {
      used_bytes_ -= e->alloc_bytes;
      free_now = true;
    }
  }
  if (free_now) FreeEntry(e);
}

StatusOr<DramStore::Pin> DramStore::Put(const DumpItem& item) {
  if (item.bytes > options().max_entry_bytes) {
    return InvalidArgument("entry %s is %zu bytes, above the store's maximum entry size %zu",
                           item.id.ToHex().c_str(), item.bytes, options().max_entry_bytes);
  }
  if (item.bytes > 0 && item.src == nullptr) {
    return InvalidArgument("entry %s: null source for %zu bytes", item.id.ToHex().c_str(),
                           item.bytes);
  }
  const size_t alloc_bytes = RoundUp(item.bytes == 0 ? 1 : item.bytes, kAlignment);
  if (alloc_bytes > capacity_) {
    return ResourceExhausted("entry %s (%zu bytes) is larger than the DRAM capacity %zu",
                             item.id.ToHex().c_str(), item.bytes, capacity_);
  }
  // Reserve room first (reusing a spare buffer of the same size, else releasing spare memory and
  // evicting cold, unpinned entries), copy outside the lock, then publish.
  void* data = nullptr;
  std::vector<std::pair<void*, size_t>> release;  // buffers handed back to the allocator
  std::vector<Entry*> victims;
  Status reserve_status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto same = spare_.find(alloc_bytes);
    if (same != spare_.end() && !same->second.empty()) {
      data = same->second.back();
      same->second.pop_back();
      spare_bytes_ -= alloc_bytes;
    }
    auto it = lru_.end();
    while (used_bytes_ + spare_bytes_ + (data ? 0 : alloc_bytes) > capacity_) {
      if (spare_bytes_ > 0) {
        auto any = spare_.begin();
        while (any->second.empty()) ++any;
        release.emplace_back(any->second.back(), any->first);
        any->second.pop_back();
        spare_bytes_ -= any->first;
        continue;
      }
      if (it == lru_.begin()) break;
      --it;
      Entry* e = *it;
      if (e->pins > 0) continue;
      it = lru_.erase(it);
      index_.erase(e->id);
      e->live = false;
      used_bytes_ -= e->alloc_bytes;
      victims.push_back(e);
      if (data == nullptr && e->alloc_bytes == alloc_bytes) {
        data = e->data;
      } else {
        release.emplace_back(e->data, e->alloc_bytes);
      }
    }
    if (used_bytes_ + spare_bytes_ + (data ? 0 : alloc_bytes) > capacity_) {
      reserve_status = ResourceExhausted(
          "DRAM store full: %zu of %zu bytes held by pinned or in-flight entries, %zu more needed",
          used_bytes_, capacity_, alloc_bytes);
      if (data != nullptr) {  // give the reused buffer back as spare
        spare_[alloc_bytes].push_back(data);
        spare_bytes_ += alloc_bytes;
        data = nullptr;
      }
    } else {
      used_bytes_ += alloc_bytes;
    }
  }
  stats().AddEvictions(victims.size());
  for (Entry* e : victims) delete e;
  for (const auto& [p, bytes] : release) allocator_->Free(p, bytes);
  KVSTAR_RETURN_IF_ERROR(reserve_status);

  if (data == nullptr) data = allocator_->Allocate(alloc_bytes, kAlignment);
  if (data == nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    used_bytes_ -= alloc_bytes;
    return ResourceExhausted("host allocator could not provide %zu bytes for entry %s", alloc_bytes,
                             item.id.ToHex().c_str());
  }
  if (item.bytes > 0) std::memcpy(data, item.src, item.bytes);
  std::memset(static_cast<char*>(data) + item.bytes, 0, alloc_bytes - item.bytes);

  auto* e = new Entry{.id = item.id, .data = data, .bytes = item.bytes, .alloc_bytes = alloc_bytes};
  e->pins = 1;  // the returned Pin
  Entry* old_to_free = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto found = index_.find(item.id);
    if (found != index_.end()) {
      Entry* old = found->second;  // DetachLocked erases the map node
      if (DetachLocked(old)) old_to_free = old;
    }
    lru_.push_front(e);
    e->lru_pos = lru_.begin();
    index_.emplace(item.id, e);
  }
  if (old_to_free != nullptr) FreeEntry(old_to_free);
  return Pin(this, e);
}

Status DramStore::DumpSync(const DumpItem& item) {
  KVSTAR_ASSIGN_OR_RETURN(Pin pin, Put(item));
  return Status::Ok();
}

Status DramStore::LoadSync(const LoadItem& item, size_t* bytes) {
  Entry* e = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(item.id);
    if (it == index_.end()) return NotFound("block %s not in DRAM store", item.id.ToHex().c_str());
    e = it->second;
    *bytes = e->bytes;
    if (e->bytes > item.capacity) {
      return OutOfRange("block %s is %zu bytes, destination holds %zu", item.id.ToHex().c_str(),
                        e->bytes, item.capacity);
    }
    ++e->pins;
    lru_.splice(lru_.begin(), lru_, e->lru_pos);
  }
  if (e->bytes > 0) std::memcpy(item.dst, e->data, e->bytes);
  Unpin(e);
  return Status::Ok();
}

std::vector<bool> DramStore::Lookup(std::span<const Hash128> ids) {
  std::vector<bool> found(ids.size());
  uint64_t hits = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < ids.size(); ++i) {
      found[i] = index_.count(ids[i]) != 0;
      hits += found[i];
    }
  }
  stats().AddHits(hits);
  stats().AddMisses(ids.size() - hits);
  return found;
}

Status DramStore::Remove(std::span<const Hash128> ids) {
  std::vector<Entry*> to_free;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Hash128& id : ids) {
      auto it = index_.find(id);
      if (it == index_.end()) continue;
      Entry* e = it->second;
      if (DetachLocked(e)) to_free.push_back(e);
    }
  }
  for (Entry* e : to_free) FreeEntry(e);
  return Status::Ok();
}

void DramStore::FillStats(StoreStats* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  out->entries = index_.size();
  out->used_bytes = used_bytes_;
  out->capacity_bytes = capacity_;
}

}  // namespace kvstar
