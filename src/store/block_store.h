// BlockStore: where every full KV block lives while it is off the device. One asynchronous API
// over host memory (DramStore), a directory on local disk or a shared mount (FileStore) and DRAM
// in front of files (TieredStore). Entries are opaque byte blobs addressed by 128-bit content ids
// (store/block_id.h); the store never looks inside them.
//
// Threading: Dump/Load return at once with a StoreTask; the copies run on the store's own I/O
// threads. Every call may come from any thread. Calls from the decode thread (submit, Lookup,
// Ready, Stats) only take short critical sections that I/O threads never hold across I/O.
//
// Buffer lifetime: the buffers named in DumpItem/LoadItem belong to the caller and must stay
// valid (and, for Dump, unchanged) until the task is Ready(), also after Cancel(). The store
// keeps no reference to them afterwards.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/async.h"
#include "base/hash.h"
#include "base/status.h"

namespace kvstar {

class IoHooks;  // store/file/io_hooks.h

struct DumpItem {
  Hash128 id;
  const void* src = nullptr;
  size_t bytes = 0;
};

struct LoadItem {
  Hash128 id;
  void* dst = nullptr;
  size_t capacity = 0;  // bytes writable at dst; an entry larger than this fails for this id
};

// Where DramStore gets its memory. The CUDA backend passes a pinned-memory allocator so that
// host-to-device copies can run straight from store memory.
class HostAllocator {
 public:
  virtual ~HostAllocator() = default;
  // Returns nullptr when out of memory.
  virtual void* Allocate(size_t bytes, size_t alignment) = 0;
  virtual void Free(void* p, size_t bytes) = 0;
};
// std::aligned_alloc / std::free. Thread-safe, stateless, lives forever.
HostAllocator* DefaultHostAllocator();

enum class FsyncPolicy {
  kNone,  // rename only: a killed process never leaves a partial block, a power loss may lose
          // recent blocks (a checksum still rejects any garbage they leave)
  kData,  // fdatasync each block file before its rename
  kFull,  // kData plus fsync of the shard directory after the rename
};

struct StoreOptions {
  // Largest entry accepted by Dump; larger items fail with InvalidArgument.
  size_t max_entry_bytes = size_t{64} << 20;
  // Threads that run the copies / file I/O of one store. Items of all tasks share them.
  int io_threads = 8;
  // A task (or an extra runner of one) goes straight to one idle I/O thread's own slot instead
  // of a shared queue that every idle thread watches (ThreadPoolOptions::direct_handoff); false:
  // the shared queue only, to compare.
  bool io_direct_handoff = true;
  // DramStore (and the DRAM tier of TieredStore): bytes of entry data kept, LRU eviction.
  size_t dram_capacity_bytes = size_t{4} << 30;
  HostAllocator* allocator = nullptr;  // nullptr: DefaultHostAllocator()
  // DramStore index shards (rounded up to a power of two, at most 1024): each has its own lock
  // and LRU list, so loads of different blocks on many I/O threads rarely contend. 1 gives one
  // strict LRU order over the whole store.
  int dram_shards = 16;
  // DramStore: a Dump or Load whose items total at most this many bytes runs on the submitting
  // thread and returns with the task already Ready; 0: every task goes to the I/O threads.
  // kDramInlineAuto: 256 KiB on machines with at most 4 hardware threads, else 0. Measured
  // (docs/BENCHMARKS.md): with 2 cores, handing a 64 KiB copy to an I/O thread costs more than the
  // copy (loads at 0.4 of memcpy, inline 0.9); with 16 cores the hand-off is cheap and parallel
  // copies of many small tasks are 2-5x faster than copying them one by one on the caller.
  static constexpr size_t kDramInlineAuto = ~size_t{0};
  size_t dram_inline_bytes = kDramInlineAuto;
  // DramStore: a task of several blocks gets at most one I/O thread per this many bytes of its
  // blocks (at least one; never more than one per block and thread), so that a task of small
  // blocks does not wake a sleeping thread, at microseconds each, per 64 KiB copy. 0 (default):
  // one thread per block. An A/B on a 16-core host (docs/BENCHMARKS.md) did not separate 256 KiB
  // from the default beyond that machine's noise.
  size_t dram_bytes_per_runner = 0;
  // FileStore: bytes on disk (headers included); 0 = unlimited. LRU eviction by last use in this
  // process (at open, by file modification time).
  size_t file_capacity_bytes = 0;
  bool use_o_direct = false;  // bypass the page cache (aligned bounce buffers when needed)
  FsyncPolicy fsync = FsyncPolicy::kNone;
  bool create_if_missing = true;  // create the directory (and parents) on open
  IoHooks* io_hooks = nullptr;    // nullptr: the real system calls; tests inject faults here
  // TieredStore: when true (default) a Dump is Ready once the data is in DRAM and the file copy
  // follows in the background (Flush() waits for it); when false a Dump waits for both.
  bool write_behind = true;
};

// Log2 latency histogram in microseconds: bucket b counts samples in [2^(b-1), 2^b) us.
struct LatencyHistogram {
  static constexpr int kBuckets = 40;
  std::array<uint64_t, kBuckets> buckets{};
  uint64_t count = 0;
  double sum_us = 0;
  double max_us = 0;

  double MeanUs() const { return count ? sum_us / static_cast<double>(count) : 0.0; }
  // Upper edge of the bucket holding the p-quantile (p in [0,1]); 0 with no samples.
  double PercentileUs(double p) const;
};

struct StoreStats {
  uint64_t dump_blocks = 0;  // items committed by Dump
  uint64_t dump_bytes = 0;
  uint64_t load_blocks = 0;  // items loaded successfully
  uint64_t load_bytes = 0;
  uint64_t hits = 0;      // Lookup ids found + loads that found their id
  uint64_t misses = 0;    // Lookup ids missing + loads that found nothing
  uint64_t failures = 0;  // items that ended in an error other than NotFound / Cancelled
  uint64_t cancelled = 0;
  uint64_t evictions = 0;
  uint64_t entries = 0;         // entries held now
  uint64_t used_bytes = 0;      // bytes held now (DRAM: data; file: on disk)
  uint64_t capacity_bytes = 0;  // 0 = unlimited
  // TieredStore only.
  uint64_t promotions = 0;  // file hits copied into DRAM
  uint64_t write_behind_pending = 0;
  uint64_t write_behind_failures = 0;
  LatencyHistogram dump_latency;  // per item, submit to done
  LatencyHistogram load_latency;
};

namespace store_internal {
class TaskState;
}

// Handle of one Dump or Load. Cheap to copy (shared state). The task's Status is OK when every
// item succeeded, else the code of the first failed item (kCancelled if only cancellations).
class StoreTask {
 public:
  StoreTask() = default;
  explicit StoreTask(std::shared_ptr<store_internal::TaskState> state);

  bool valid() const { return state_ != nullptr; }
  bool Ready() const;
  // Blocks until Ready or the timeout passes (DeadlineExceeded then). Negative: forever.
  Status Wait(std::chrono::milliseconds timeout = std::chrono::milliseconds(-1)) const;
  // Items not started yet finish with kCancelled; items already done or running stay as they are.
  // The task still becomes Ready only once no I/O thread touches its buffers.
  void Cancel();

  // Valid once Ready().
  size_t size() const;
  const Status& item_status(size_t i) const;
  // Load: the entry's real size (also when it did not fit); Dump: the bytes written.
  size_t item_bytes(size_t i) const;
  std::vector<Hash128> failed_ids() const;
  const CompletionPtr& completion() const;

 private:
  void CheckReady(const char* what) const;
  std::shared_ptr<store_internal::TaskState> state_;
  CompletionPtr completion_;  // shares state_'s allocation (the Completion lives inside it)
};

class BlockStore {
 public:
  virtual ~BlockStore() = default;

  // Which ids the store holds now (a hint: an entry may be evicted before a later Load).
  virtual std::vector<bool> Lookup(std::span<const Hash128> ids) = 0;
  // Stores copies of the items; an existing id is replaced.
  virtual StoreTask Dump(std::span<const DumpItem> items) = 0;
  // Copies entries into the items' buffers. A missing id (NotFound), an entry larger than the
  // capacity (OutOfRange) or a corrupt one (DataLoss) fails that item only.
  virtual StoreTask Load(std::span<const LoadItem> items) = 0;
  // Removes the ids; missing ids are not an error.
  virtual Status Remove(std::span<const Hash128> ids) = 0;
  // Waits until background work (write-behind) is durable in every tier; returns its first error.
  virtual Status Flush() { return Status::Ok(); }
  virtual StoreStats Stats() const = 0;
  // "dram (capacity 4.0 GiB)", "file:/data/kv (O_DIRECT, 8 I/O threads)"...
  virtual std::string Describe() const = 0;
};

// spec: "dram", "file:PATH" or "tiered:PATH" (the --store flag of the CLI).
StatusOr<std::unique_ptr<BlockStore>> OpenStore(std::string_view spec, const StoreOptions& options);

}  // namespace kvstar
