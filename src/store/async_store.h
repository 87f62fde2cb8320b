// The asynchronous machinery shared by every backend: per-task state, statistics, and
// AsyncBlockStore, which turns a backend's synchronous per-item operations into StoreTasks run on
// the store's own I/O threads. Internal to src/store.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <vector>

#include "base/thread_pool.h"
#include "store/block_store.h"

namespace kvstar::store_internal {

// Counters and latency histograms of one store. Every I/O thread updates them once or more per
// item, so they live in cache-line-aligned stripes picked by a per-thread slot: threads never
// share a counter's cache line unless there are more of them than stripes, and even then an
// update is a relaxed atomic add. Fill() sums the stripes (a snapshot, not atomic as a whole).
class StatsCollector {
 public:
  void AddDump(size_t bytes, double latency_us);
  void AddLoad(size_t bytes, double latency_us);
  void AddDumpLatency(double latency_us) { Record(Local().dump_latency, latency_us); }
  void AddLoadLatency(double latency_us) { Record(Local().load_latency, latency_us); }
  void AddHits(uint64_t n) { Add(Local().hits, n); }
  void AddMisses(uint64_t n) { Add(Local().misses, n); }
  void AddFailure() { Add(Local().failures, 1); }
  void AddCancelled() { Add(Local().cancelled, 1); }
  void AddEvictions(uint64_t n) { Add(Local().evictions, n); }
  void AddPromotion() { Add(Local().promotions, 1); }
  // Copies the counters into *out (entries/used/capacity are the backend's to fill).
  void Fill(StoreStats* out) const;

  // Stripes: a power of two; more than the I/O threads of a typical store plus its callers.
  static constexpr int kStripes = 32;

 private:
  struct AtomicHistogram {
    std::array<std::atomic<uint64_t>, LatencyHistogram::kBuckets> buckets{};
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> sum_ns{0};
    std::atomic<uint64_t> max_ns{0};
  };
  struct alignas(64) Stripe {
    std::atomic<uint64_t> dump_blocks{0}, dump_bytes{0}, load_blocks{0}, load_bytes{0};
    std::atomic<uint64_t> hits{0}, misses{0}, failures{0}, cancelled{0}, evictions{0};
    std::atomic<uint64_t> promotions{0};
    AtomicHistogram dump_latency, load_latency;
  };
  static void Add(std::atomic<uint64_t>& counter, uint64_t n) {
    counter.fetch_add(n, std::memory_order_relaxed);
  }
  static void Record(AtomicHistogram& h, double latency_us);
  static void AddTo(const AtomicHistogram& h, LatencyHistogram* out);
  Stripe& Local();

  std::array<Stripe, kStripes> stripes_;
};

// One item of a task: what to move and, once done, how it went.
struct TaskItem {
  Hash128 id;
  void* buffer = nullptr;  // Load: destination; Dump: source (const in DumpItem)
  size_t size = 0;         // Load: destination capacity; Dump: bytes
  Status status;
  size_t bytes = 0;  // Load: the entry's real size; Dump: the bytes written
};

// Results of one task. Item i is written by exactly one I/O thread before it decrements
// `remaining`; the last one finishes the Completion, which publishes everything to readers.
// One allocation holds the state, the Completion and (for one-item tasks) the item.
class TaskState {
 public:
  using Clock = std::chrono::steady_clock;
  TaskState(bool is_load, size_t items);

  bool is_load() const { return is_load_; }
  size_t size() const { return size_; }
  Completion& completion() { return completion_; }
  const Completion& completion() const { return completion_; }
  Clock::time_point submit_time() const { return submit_time_; }
  bool cancel_requested() const { return completion_.CancelRequested(); }

  TaskItem& item(size_t i) { return size_ > 1 ? many_[i].item : one_; }
  const TaskItem& item(size_t i) const { return size_ > 1 ? many_[i].item : one_; }
  void FinishItem(size_t i, Status status, size_t bytes);
  // Finishes the task at once when it has no items.
  void FinishIfEmpty();

  const Status& item_status(size_t i) const { return item(i).status; }
  size_t item_bytes(size_t i) const { return item(i).bytes; }
  const Hash128& id(size_t i) const { return item(i).id; }

 private:
  friend class AsyncBlockStore;
  Status Summarize() const;

  bool is_load_;
  size_t size_;
  Clock::time_point submit_time_;
  // Items of a task of several, each on its own cache line: I/O threads finishing neighbouring
  // items do not write the same line.
  struct alignas(64) PaddedItem {
    TaskItem item;
  };
  TaskItem one_;                        // the item of a one-item task (the common case)
  std::unique_ptr<PaddedItem[]> many_;  // [size_] when size_ > 1
  std::atomic<size_t> remaining_;
  // I/O threads hand items out from here; the runner that finds none left and leaves last drops
  // `self_`, the reference that keeps the state alive while it sits in the I/O queue.
  std::atomic<size_t> next_{0};
  std::atomic<int> runners_{0};
  int max_runners_ = 1;  // set by Submit
  std::shared_ptr<TaskState> self_;
  Completion completion_;
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
  virtual void FillStats(StoreStats* out) const = 0;

  const StoreOptions& options() const { return options_; }
  // Tasks whose items total at most this many bytes run inline on the submitting thread.
  void set_inline_bytes(size_t bytes) { inline_bytes_ = bytes; }
  // A task's items are run by at most one I/O thread per this many bytes of them (0: no bound
  // beyond one per item and I/O thread).
  void set_bytes_per_runner(size_t bytes) { bytes_per_runner_ = bytes; }
  StatsCollector& stats() { return stats_; }
  const StatsCollector& stats() const { return stats_; }

 private:
  std::shared_ptr<TaskState> NewTask(bool is_load, size_t items);
  // Queues the task's items on the I/O threads (inline without threads).
  StoreTask Submit(std::shared_ptr<TaskState> task);
  // Claims and runs items of the task until none is left; the last runner out releases it.
  void RunItems(TaskState* task);
  void RunItem(TaskState& task, size_t i);

  StoreOptions options_;
  size_t inline_bytes_ = 0;
  size_t bytes_per_runner_ = 0;
  StatsCollector stats_;
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace kvstar::store_internal
