#include "store/dram/dram_store.h"

#include <bit>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "base/thread_pool.h"

namespace kvstar {

struct DramStore::Entry {
  Hash128 id;
  void* data = nullptr;
  size_t bytes = 0;        // entry size
  size_t alloc_bytes = 0;  // bytes rounded up to kAlignment
  size_t shard = 0;
  int pins = 0;
  bool live = true;        // in its shard's index and LRU list
  uint64_t last_use = 0;   // steady clock ns of the last Put or Load (orders shards for eviction)
  Entry* newer = nullptr;  // LRU neighbours within the shard
  Entry* older = nullptr;
};

struct alignas(64) DramStore::Shard {
  std::mutex mu;  // guards everything below; never held across a copy or an allocation
  std::unordered_map<Hash128, Entry*, Hash128Hasher> index;
  Entry* newest = nullptr;  // LRU list, intrusive: no allocation per entry or per move
  Entry* oldest = nullptr;
  size_t used_bytes = 0;  // alloc_bytes of this shard's entries not yet freed (detached included)
  // Buffers of freed entries by size, reused by later entries of that size: KV blocks have few
  // sizes, and fresh (or pinned) host memory is expensive to obtain and to touch the first time.
  std::unordered_map<size_t, std::vector<void*>> spare;
  std::atomic<size_t> spare_bytes{0};  // written under mu; read without it to skip empty shards

  void PushNewest(Entry* e) {
    e->older = newest;
    e->newer = nullptr;
    if (newest != nullptr) newest->newer = e;
    newest = e;
    if (oldest == nullptr) oldest = e;
  }
  void Unlink(Entry* e) {
    (e->newer != nullptr ? e->newer->older : newest) = e->older;
    (e->older != nullptr ? e->older->newer : oldest) = e->newer;
    e->newer = e->older = nullptr;
  }
  void AddSpare(void* p, size_t bytes) {
    spare[bytes].push_back(p);
    spare_bytes.fetch_add(bytes, std::memory_order_relaxed);
  }
};

namespace {

constexpr uint64_t kEmptyShard = std::numeric_limits<uint64_t>::max();

size_t RoundUp(size_t n, size_t a) { return (n + a - 1) / a * a; }

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

// One per shard, each on its own cache line: a load that moves its shard's oldest entry writes
// only its own line, and an evicting dump reads lines that mostly did not change.
struct alignas(64) DramStore::OldestUse {
  std::atomic<uint64_t> ns{kEmptyShard};
};

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
  if (options.dram_shards < 1 || options.dram_shards > kMaxShards) {
    return InvalidArgument("dram store: dram_shards must be in 1..%d, got %d", kMaxShards,
                           options.dram_shards);
  }
  return std::unique_ptr<DramStore>(new DramStore(options));
}

DramStore::DramStore(const StoreOptions& options)
    : AsyncBlockStore(options, "kvdram"),
      allocator_(options.allocator ? options.allocator : DefaultHostAllocator()),
      capacity_(options.dram_capacity_bytes),
      shard_bits_(std::bit_width(std::bit_ceil(static_cast<unsigned>(options.dram_shards))) - 1),
      shards_(std::make_unique<Shard[]>(size_t{1} << shard_bits_)),
      oldest_use_(std::make_unique<OldestUse[]>(size_t{1} << shard_bits_)) {
  size_t inline_bytes = options.dram_inline_bytes;
  if (inline_bytes == StoreOptions::kDramInlineAuto) {
    inline_bytes = ThreadPool::HardwareThreads() <= 4 ? size_t{256} << 10 : 0;
  }
  set_inline_bytes(inline_bytes);
  set_bytes_per_runner(options.dram_bytes_per_runner);
}

DramStore::~DramStore() {
  StopIo();
  for (size_t s = 0; s < num_shards(); ++s) {
    Shard& shard = shards_[s];
    std::lock_guard<std::mutex> lock(shard.mu);
    for (Entry* e = shard.newest; e != nullptr;) {
      KVSTAR_CHECK(e->pins == 0, "DramStore destroyed while entry %s is pinned (%d pins)",
                   e->id.ToHex().c_str(), e->pins);
      Entry* next = e->older;
      allocator_->Free(e->data, e->alloc_bytes);
      delete e;
      e = next;
    }
    for (auto& [bytes, buffers] : shard.spare) {
      for (void* p : buffers) allocator_->Free(p, bytes);
    }
  }
}

std::string DramStore::Describe() const {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "dram (capacity %.1f MiB, %zu shards, %d I/O threads)",
                static_cast<double>(capacity_) / (1 << 20), num_shards(), options().io_threads);
  return buf;
}

size_t DramStore::ShardIndex(const Hash128& id) const {
  if (shard_bits_ == 0) return 0;
  // Ids are hashes already, but callers may pick structured ones (tests, benchmarks): mix.
  const uint64_t h = static_cast<uint64_t>(Hash128Hasher()(id)) * 0x9e3779b97f4a7c15ull;
  return static_cast<size_t>(h >> (64 - shard_bits_));
}

void DramStore::UpdateOldestLocked(size_t s) {
  const Shard& shard = shards_[s];
  const uint64_t ns = shard.oldest != nullptr ? shard.oldest->last_use : kEmptyShard;
  if (oldest_use_[s].ns.load(std::memory_order_relaxed) != ns) {
    oldest_use_[s].ns.store(ns, std::memory_order_relaxed);
  }
}

bool DramStore::DetachLocked(Entry* e) {
  Shard& shard = shards_[e->shard];
  if (e->live) {
    shard.index.erase(e->id);
    shard.Unlink(e);
    e->live = false;
  }
  if (e->pins > 0) return false;  // the last Unpin frees it
  // Its bytes stay counted against the capacity as spare memory, so the total held never
  // exceeds the capacity.
  shard.used_bytes -= e->alloc_bytes;
  shard.AddSpare(e->data, e->alloc_bytes);
  return true;
}

void DramStore::Unpin(Entry* e) {
  bool free_now = false;
  {
    Shard& shard = shards_[e->shard];
    std::lock_guard<std::mutex> lock(shard.mu);
    KVSTAR_CHECK(e->pins > 0, "unpin of an unpinned entry %s", e->id.ToHex().c_str());
    if (--e->pins == 0 && !e->live) {
      shard.used_bytes -= e->alloc_bytes;
      shard.AddSpare(e->data, e->alloc_bytes);
      free_now = true;
    }
  }
  if (free_now) delete e;
}

void* DramStore::TakeSpare(size_t alloc_bytes, size_t home) {
  const size_t n = num_shards();
  for (size_t k = 0; k < n; ++k) {
    Shard& shard = shards_[(home + k) & (n - 1)];
    if (shard.spare_bytes.load(std::memory_order_relaxed) == 0) continue;
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.spare.find(alloc_bytes);
    if (it == shard.spare.end() || it->second.empty()) continue;
    void* p = it->second.back();
    it->second.pop_back();
    shard.spare_bytes.fetch_sub(alloc_bytes, std::memory_order_relaxed);
    return p;
  }
  return nullptr;
}

bool DramStore::ReleaseOneSpare() {
  void* p = nullptr;
  size_t bytes = 0;
  for (size_t s = 0; s < num_shards() && p == nullptr; ++s) {
    Shard& shard = shards_[s];
    if (shard.spare_bytes.load(std::memory_order_relaxed) == 0) continue;
    std::lock_guard<std::mutex> lock(shard.mu);
    for (auto it = shard.spare.begin(); it != shard.spare.end();) {
      if (it->second.empty()) {
        it = shard.spare.erase(it);
        continue;
      }
      p = it->second.back();
      bytes = it->first;
      it->second.pop_back();
      shard.spare_bytes.fetch_sub(bytes, std::memory_order_relaxed);
      break;
    }
  }
  if (p == nullptr) return false;
  allocator_->Free(p, bytes);
  held_bytes_.fetch_sub(bytes, std::memory_order_relaxed);
  return true;
}

DramStore::Entry* DramStore::EvictOne() {
  const size_t n = num_shards();
  std::vector<char> all_pinned;  // [shards], allocated only when a chosen shard had no victim
  size_t corrections = 0;
  for (size_t round = 0; round < 3 * n; ++round) {
    size_t best = n;
    uint64_t best_ns = kEmptyShard;
    for (size_t s = 0; s < n; ++s) {
      const uint64_t ns = oldest_use_[s].ns.load(std::memory_order_relaxed);
      if (ns < best_ns && (all_pinned.empty() || !all_pinned[s])) {
        best = s;
        best_ns = ns;
      }
    }
    if (best == n) return nullptr;
    Shard& shard = shards_[best];
    {
      std::lock_guard<std::mutex> lock(shard.mu);
      const uint64_t actual = shard.oldest != nullptr ? shard.oldest->last_use : kEmptyShard;
      if (actual != best_ns && corrections < n) {
        // Loads and removals leave the published value stale (older than the truth): correct
        // it and choose again.
        UpdateOldestLocked(best);
        ++corrections;
        continue;
      }
      for (Entry* e = shard.oldest; e != nullptr; e = e->newer) {
        if (e->pins > 0) continue;
        shard.index.erase(e->id);
        shard.Unlink(e);
        e->live = false;
        shard.used_bytes -= e->alloc_bytes;
        UpdateOldestLocked(best);
        return e;
      }
    }
    if (all_pinned.empty()) all_pinned.assign(n, 0);
    all_pinned[best] = 1;
  }
  return nullptr;
}

StatusOr<void*> DramStore::Reserve(size_t alloc_bytes, const Hash128& id, bool* fresh) {
  *fresh = false;
  if (void* p = TakeSpare(alloc_bytes, ShardIndex(id))) return p;
  uint64_t evicted = 0;
  void* reused = nullptr;
  Status status;
  for (;;) {
    size_t held = held_bytes_.load(std::memory_order_relaxed);
    bool reserved = false;
    while (held + alloc_bytes <= capacity_) {
      if (held_bytes_.compare_exchange_weak(held, held + alloc_bytes, std::memory_order_relaxed)) {
        reserved = true;
        break;
      }
    }
    if (reserved) {
      *fresh = true;
      break;
    }
    if (ReleaseOneSpare()) continue;
    Entry* victim = EvictOne();
    if (victim == nullptr) {
      status = ResourceExhausted(
          "DRAM store full: %zu of %zu bytes held by pinned or in-flight entries, %zu more needed",
          held_bytes_.load(std::memory_order_relaxed), capacity_, alloc_bytes);
      break;
    }
    ++evicted;
    if (victim->alloc_bytes == alloc_bytes) {  // its budget passes to the new entry
      reused = victim->data;
      delete victim;
      break;
    }
    allocator_->Free(victim->data, victim->alloc_bytes);
    held_bytes_.fetch_sub(victim->alloc_bytes, std::memory_order_relaxed);
    delete victim;
  }
  if (evicted > 0) stats().AddEvictions(evicted);
  KVSTAR_RETURN_IF_ERROR(status);
  return reused;
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
  // Reserve room first, copy outside any lock, then publish.
  bool fresh = false;
  KVSTAR_ASSIGN_OR_RETURN(void* data, Reserve(alloc_bytes, item.id, &fresh));
  if (fresh) {
    data = allocator_->Allocate(alloc_bytes, kAlignment);
    if (data == nullptr) {
      held_bytes_.fetch_sub(alloc_bytes, std::memory_order_relaxed);
      return ResourceExhausted("host allocator could not provide %zu bytes for entry %s",
                               alloc_bytes, item.id.ToHex().c_str());
    }
  }
  if (item.bytes > 0) std::memcpy(data, item.src, item.bytes);
  std::memset(static_cast<char*>(data) + item.bytes, 0, alloc_bytes - item.bytes);

  const size_t s = ShardIndex(item.id);
  auto* e = new Entry{
      .id = item.id, .data = data, .bytes = item.bytes, .alloc_bytes = alloc_bytes, .shard = s};
  e->pins = 1;  // the returned Pin
  Entry* old_to_delete = nullptr;
  {
    Shard& shard = shards_[s];
    std::lock_guard<std::mutex> lock(shard.mu);
    auto found = shard.index.find(item.id);
    if (found != shard.index.end()) {
      Entry* old = found->second;  // DetachLocked erases the map node
      if (DetachLocked(old)) old_to_delete = old;
    }
    e->last_use = NowNs();
    shard.PushNewest(e);
    shard.index.emplace(item.id, e);
    shard.used_bytes += alloc_bytes;
    if (shard.oldest == e) UpdateOldestLocked(s);  // the shard was empty
  }
  delete old_to_delete;
  return Pin(this, e);
}

Status DramStore::DumpSync(const DumpItem& item) {
  KVSTAR_ASSIGN_OR_RETURN(Pin pin, Put(item));
  return Status::Ok();
}

Status DramStore::LoadSync(const LoadItem& item, size_t* bytes) {
  Entry* e = nullptr;
  {
    const size_t s = ShardIndex(item.id);
    Shard& shard = shards_[s];
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.index.find(item.id);
    if (it == shard.index.end()) {
      return NotFound("block %s not in DRAM store", item.id.ToHex().c_str());
    }
    e = it->second;
    *bytes = e->bytes;
    if (e->bytes > item.capacity) {
      return OutOfRange("block %s is %zu bytes, destination holds %zu", item.id.ToHex().c_str(),
                        e->bytes, item.capacity);
    }
    ++e->pins;
    e->last_use = NowNs();
    if (shard.newest != e) {
      shard.Unlink(e);
      shard.PushNewest(e);
    }
  }
  if (e->bytes > 0) std::memcpy(item.dst, e->data, e->bytes);
  Unpin(e);
  return Status::Ok();
}

std::vector<bool> DramStore::Lookup(std::span<const Hash128> ids) {
  std::vector<bool> found(ids.size());
  uint64_t hits = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    Shard& shard = shards_[ShardIndex(ids[i])];
    std::lock_guard<std::mutex> lock(shard.mu);
    found[i] = shard.index.count(ids[i]) != 0;
    hits += found[i];
  }
  stats().AddHits(hits);
  stats().AddMisses(ids.size() - hits);
  return found;
}

Status DramStore::Remove(std::span<const Hash128> ids) {
  for (const Hash128& id : ids) {
    Entry* to_delete = nullptr;
    {
      Shard& shard = shards_[ShardIndex(id)];
      std::lock_guard<std::mutex> lock(shard.mu);
      auto it = shard.index.find(id);
      if (it == shard.index.end()) continue;
      Entry* e = it->second;  // DetachLocked erases the map node
      if (DetachLocked(e)) to_delete = e;
    }
    delete to_delete;
  }
  return Status::Ok();
}

void DramStore::FillStats(StoreStats* out) const {
  out->entries = 0;
  out->used_bytes = 0;
  for (size_t s = 0; s < num_shards(); ++s) {
    Shard& shard = shards_[s];
    std::lock_guard<std::mutex> lock(shard.mu);
    out->entries += shard.index.size();
    out->used_bytes += shard.used_bytes;
  }
  out->capacity_bytes = capacity_;
}

}  // namespace kvstar
