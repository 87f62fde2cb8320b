// The asynchronous machinery shared by every backend: per-task state, statistics, and
// AsyncBlockStore, which turns a backend's synchronous per-item operations into StoreTasks run on
// the store's own I/O threads. Internal to src/store.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "base/thread_pool.h"
#include "store/block_store.h"

namespace kvstar::store_internal {

class StatsCollector {
 public:
  void AddDump(size_t bytes, double latency_us);
  void AddLoad(size_t bytes, double latency_us);
  void AddDumpLatency(double latency_us) { Record(dump_latency_, latency_us); }
  void AddLoadLatency(double latency_us) { Record(load_latency_, latency_us); }
  void AddHits(uint64_t n) { hits_.fetch_add(n, std::memory_order_relaxed); }
  void AddMisses(uint64_t n) { misses_.fetch_add(n, std::memory_order_relaxed); }
  void AddFailure() { failures_.fetch_add(1, std::memory_order_relaxed); }
  void AddCancelled() { cancelled_.fetch_add(1, std::memory_order_relaxed); }
  void AddEvictions(uint64_t n) { evictions_.fetch_add(n, std::memory_order_relaxed); }
  void AddPromotion() { promotions_.fetch_add(1, std::memory_order_relaxed); }
  // Copies the counters into *out (entries/used/capacity are the backend's to fill).
  void Fill(StoreStats* out) const;

 private:
  struct AtomicHistogram {
    std::array<std::atomic<uint64_t>, LatencyHistogram::kBuckets> buckets{};
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> sum_ns{0};
    std::atomic<uint64_t> max_ns{0};
  };
  static void Record(AtomicHistogram& h, double latency_us);
  static void Copy(const AtomicHistogram& h, LatencyHistogram* out);

  std::atomic<uint64_t> dump_blocks_{0}, dump_bytes_{0}, load_blocks_{0}, load_bytes_{0};
  std::atomic<uint64_t> hits_{0}, misses_{0}, failures_{0}, cancelled_{0}, evictions_{0};
  std::atomic<uint64_t> promotions_{0};
  AtomicHistogram dump_latency_, load_latency_;
};

// Results of one task. Item i is written by exactly one I/O thread before it decrements
// `remaining`; the last one finishes the Completion, which publishes everything to readers.
class TaskState {
 public:
  using Clock = std::chrono::steady_clock;
  TaskState(bool is_load, size_t items);

  bool is_load() const { return is_load_; }
  size_t size() const { return status_.size(); }
  const CompletionPtr& completion() const { return completion_; }
  Clock::time_point submit_time() const { return submit_time_; }
  bool cancel_requested() const { return completion_->CancelRequested(); }

  void SetId(size_t i, const Hash128& id) { ids_[i] = id; }
  void FinishItem(size_t i, Status status, size_t bytes);
  // Finishes the task at once when it has no items.
  void FinishIfEmpty();

  const Status& item_status(size_t i) const { return status_[i]; }
  size_t item_bytes(size_t i) const { return bytes_[i]; }
  const Hash128& id(size_t i) const { return ids_[i]; }

 private:
  Status Summarize() const;

  bool is_load_;
  Clock::time_point submit_time_;
  std::vector<Hash128> ids_;
  std::vector<Status> status_;
  std::vector<size_t> bytes_;
  std::atomic<size_t> remaining_;
  CompletionPtr completion_;
};

class AsyncBlockStore : public BlockStore {
 public:
  StoreTask Dump(std::span<const DumpItem> items) override;
  StoreTask Load(std::span<const LoadItem> items) override;
  StoreStats Stats() const override;

  // The synchronous per-item operations, callable from any thread (TieredStore composes them).
  // DumpSync: the entry is stored when it returns OK. LoadSync sets *bytes to the entry's real
  // size whenever it is known (also when it does not fit).
  virtual Status DumpSync(const DumpItem& item) = 0;
  virtual Status LoadSync(const LoadItem& item, size_t* bytes) = 0;

 protected:
  // io_threads == 0: Dump/Load run inline on the caller (used for the tiers of TieredStore).
  AsyncBlockStore(const StoreOptions& options, const char* thread_name);
  // Every derived destructor calls this first: it drains the queue and joins the I/O threads
  // while the derived object (whose DumpSync they call) still exists.
  void StopIo();
  // Runs fn on an I/O thread (inline without threads).
  void SubmitIo(std::function<void()> fn);
  virtual void FillStats(StoreStats* out) const = 0;

  const StoreOptions& options() const { return options_; }
  StatsCollector& stats() { return stats_; }
  const StatsCollector& stats() const { return stats_; }

 private:
  template <typename Item, typename RunOne>
  StoreTask Submit(bool is_load, std::span<const Item> items, RunOne run_one);

  StoreOptions options_;
  StatsCollector stats_;
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace kvstar::store_internal
