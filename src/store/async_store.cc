#include "store/async_store.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <utility>

namespace kvstar::store_internal {
namespace {

double MicrosSince(TaskState::Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(TaskState::Clock::now() - start).count();
}

}  // namespace

void StatsCollector::AddDump(size_t bytes, double latency_us) {
  dump_blocks_.fetch_add(1, std::memory_order_relaxed);
  dump_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  Record(dump_latency_, latency_us);
}

void StatsCollector::AddLoad(size_t bytes, double latency_us) {
  load_blocks_.fetch_add(1, std::memory_order_relaxed);
  load_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  Record(load_latency_, latency_us);
}

void StatsCollector::Record(AtomicHistogram& h, double latency_us) {
  const uint64_t us = latency_us <= 0 ? 0 : static_cast<uint64_t>(latency_us);
  const int bucket = std::min<int>(LatencyHistogram::kBuckets - 1, std::bit_width(us));
  h.buckets[bucket].fetch_add(1, std::memory_order_relaxed);
  h.count.fetch_add(1, std::memory_order_relaxed);
  const uint64_t ns = static_cast<uint64_t>(std::max(0.0, latency_us) * 1e3);
  h.sum_ns.fetch_add(ns, std::memory_order_relaxed);
  uint64_t prev = h.max_ns.load(std::memory_order_relaxed);
  while (ns > prev && !h.max_ns.compare_exchange_weak(prev, ns, std::memory_order_relaxed)) {
  }
}

void StatsCollector::Copy(const AtomicHistogram& h, LatencyHistogram* out) {
  for (int b = 0; b < LatencyHistogram::kBuckets; ++b) {
    out->buckets[b] = h.buckets[b].load(std::memory_order_relaxed);
  }
  out->count = h.count.load(std::memory_order_relaxed);
  out->sum_us = static_cast<double>(h.sum_ns.load(std::memory_order_relaxed)) / 1e3;
  out->max_us = static_cast<double>(h.max_ns.load(std::memory_order_relaxed)) / 1e3;
}

void StatsCollector::Fill(StoreStats* out) const {
  out->dump_blocks = dump_blocks_.load(std::memory_order_relaxed);
  out->dump_bytes = dump_bytes_.load(std::memory_order_relaxed);
  out->load_blocks = load_blocks_.load(std::memory_order_relaxed);
  out->load_bytes = load_bytes_.load(std::memory_order_relaxed);
  out->hits = hits_.load(std::memory_order_relaxed);
  out->misses = misses_.load(std::memory_order_relaxed);
  out->failures = failures_.load(std::memory_order_relaxed);
  out->cancelled = cancelled_.load(std::memory_order_relaxed);
  out->evictions = evictions_.load(std::memory_order_relaxed);
  out->promotions = promotions_.load(std::memory_order_relaxed);
  Copy(dump_latency_, &out->dump_latency);
  Copy(load_latency_, &out->load_latency);
}

TaskState::TaskState(bool is_load, size_t items)
    : is_load_(is_load),
      submit_time_(Clock::now()),
      ids_(items),
      status_(items),
      bytes_(items, 0),
      remaining_(items),
      completion_(std::make_shared<Completion>()) {}

void TaskState::FinishItem(size_t i, Status status, size_t bytes) {
  status_[i] = std::move(status);
  bytes_[i] = bytes;
  if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) completion_->Finish(Summarize());
}

void TaskState::FinishIfEmpty() {
  if (status_.empty()) completion_->Finish(Status::Ok());
}

Status TaskState::Summarize() const {
  size_t failed = 0;
  size_t first = status_.size();
  size_t first_real = status_.size();  // first failure that is not a cancellation
  for (size_t i = 0; i < status_.size(); ++i) {
    if (status_[i].ok()) continue;
    ++failed;
    if (first == status_.size()) first = i;
    if (first_real == status_.size() && status_[i].code() != StatusCode::kCancelled) first_real = i;
  }
  if (failed == 0) return Status::Ok();
  const size_t pick = first_real != status_.size() ? first_real : first;
  char head[96];
  std::snprintf(head, sizeof(head), "%s: %zu of %zu items failed; first ",
                is_load_ ? "load" : "dump", failed, status_.size());
  return Status(status_[pick].code(),
                std::string(head) + ids_[pick].ToHex() + ": " + status_[pick].message());
}

AsyncBlockStore::AsyncBlockStore(const StoreOptions& options, const char* thread_name)
    : options_(options) {
  KVSTAR_CHECK(options.io_threads >= 0, "io_threads=%d", options.io_threads);
  if (options.io_threads > 0) {
    // ThreadPool keeps num_threads - 1 workers (the caller joins ParallelFor); we only Submit.
    pool_ = std::make_unique<ThreadPool>(
        ThreadPoolOptions{.num_threads = options.io_threads + 1, .name = thread_name});
  }
}

void AsyncBlockStore::StopIo() { pool_.reset(); }

void AsyncBlockStore::SubmitIo(std::function<void()> fn) {
  if (pool_) {
    pool_->Submit(std::move(fn));
  } else {
    fn();
  }
}

template <typename Item, typename RunOne>
StoreTask AsyncBlockStore::Submit(bool is_load, std::span<const Item> items, RunOne run_one) {
  // Items are claimed from a shared counter by at most io_threads runners, so a task of many
  // blocks costs a few queue hand-offs instead of one per block.
  struct Job {
    std::shared_ptr<TaskState> task;
    std::vector<Item> items;
    std::atomic<size_t> next{0};
  };
  auto job = std::make_shared<Job>();
  job->task = std::make_shared<TaskState>(is_load, items.size());
  job->items.assign(items.begin(), items.end());
  for (size_t i = 0; i < items.size(); ++i) job->task->SetId(i, items[i].id);
  StoreTask handle(job->task);
  job->task->FinishIfEmpty();
  const size_t runners =
      std::min(items.size(), static_cast<size_t>(std::max(1, options_.io_threads)));
  for (size_t r = 0; r < runners; ++r) {
    SubmitIo([this, job, run_one] {
      TaskState& task = *job->task;
      for (size_t i; (i = job->next.fetch_add(1)) < job->items.size();) {
        if (task.cancel_requested()) {
          stats_.AddCancelled();
          task.FinishItem(
              i, Cancelled("%s cancelled before it started", task.is_load() ? "load" : "dump"), 0);
          continue;
        }
        run_one(task, i, job->items[i]);
      }
    });
  }
  return handle;
}

StoreTask AsyncBlockStore::Dump(std::span<const DumpItem> items) {
  return Submit(false, items, [this](TaskState& task, size_t i, const DumpItem& item) {
    Status s = DumpSync(item);
    const double us = MicrosSince(task.submit_time());
    if (s.ok()) {
      stats_.AddDump(item.bytes, us);
    } else {
      stats_.AddFailure();
      stats_.AddDumpLatency(us);
    }
    task.FinishItem(i, std::move(s), item.bytes);
  });
}

StoreTask AsyncBlockStore::Load(std::span<const LoadItem> items) {
  return Submit(true, items, [this](TaskState& task, size_t i, const LoadItem& item) {
    size_t bytes = 0;
    Status s = LoadSync(item, &bytes);
    const double us = MicrosSince(task.submit_time());
    if (s.ok()) {
      stats_.AddHits(1);
      stats_.AddLoad(bytes, us);
    } else {
      if (s.code() == StatusCode::kNotFound) {
        stats_.AddMisses(1);
      } else {
        stats_.AddFailure();
      }
      stats_.AddLoadLatency(us);
    }
    task.FinishItem(i, std::move(s), bytes);
  });
}

StoreStats AsyncBlockStore::Stats() const {
  StoreStats out;
  stats_.Fill(&out);
  FillStats(&out);
  return out;
}

}  // namespace kvstar::store_internal
