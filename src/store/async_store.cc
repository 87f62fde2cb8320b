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

StatsCollector::Stripe& StatsCollector::Local() {
  // Threads take slots in creation order, so the I/O threads of one store (made together) land
  // on different stripes.
  static std::atomic<unsigned> next_slot{0};
  thread_local const unsigned slot = next_slot.fetch_add(1, std::memory_order_relaxed);
  return stripes_[slot & (kStripes - 1)];
}

void StatsCollector::AddDump(size_t bytes, double latency_us) {
  Stripe& s = Local();
  Add(s.dump_blocks, 1);
  Add(s.dump_bytes, bytes);
  Record(s.dump_latency, latency_us);
}

void StatsCollector::AddLoad(size_t bytes, double latency_us) {
  Stripe& s = Local();
  Add(s.load_blocks, 1);
  Add(s.load_bytes, bytes);
  Record(s.load_latency, latency_us);
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

void StatsCollector::AddTo(const AtomicHistogram& h, LatencyHistogram* out) {
  for (int b = 0; b < LatencyHistogram::kBuckets; ++b) {
    out->buckets[b] += h.buckets[b].load(std::memory_order_relaxed);
  }
  out->count += h.count.load(std::memory_order_relaxed);
  out->sum_us += static_cast<double>(h.sum_ns.load(std::memory_order_relaxed)) / 1e3;
  out->max_us =
      std::max(out->max_us, static_cast<double>(h.max_ns.load(std::memory_order_relaxed)) / 1e3);
}

void StatsCollector::Fill(StoreStats* out) const {
  auto get = [](const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); };
  out->dump_latency = LatencyHistogram{};
  out->load_latency = LatencyHistogram{};
  out->dump_blocks = out->dump_bytes = out->load_blocks = out->load_bytes = 0;
  out->hits = out->misses = out->failures = out->cancelled = out->evictions = 0;
  out->promotions = 0;
  for (const Stripe& s : stripes_) {
    out->dump_blocks += get(s.dump_blocks);
    out->dump_bytes += get(s.dump_bytes);
    out->load_blocks += get(s.load_blocks);
    out->load_bytes += get(s.load_bytes);
    out->hits += get(s.hits);
    out->misses += get(s.misses);
    out->failures += get(s.failures);
    out->cancelled += get(s.cancelled);
    out->evictions += get(s.evictions);
    out->promotions += get(s.promotions);
    AddTo(s.dump_latency, &out->dump_latency);
    AddTo(s.load_latency, &out->load_latency);
  }
}

TaskState::TaskState(bool is_load, size_t items)
    : is_load_(is_load),
      size_(items),
      submit_time_(Clock::now()),
      many_(items > 1 ? std::make_unique<PaddedItem[]>(items) : nullptr),
      remaining_(items) {}

void TaskState::FinishItem(size_t i, Status status, size_t bytes) {
  TaskItem& it = item(i);
  it.status = std::move(status);
  it.bytes = bytes;
  if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) completion_.Finish(Summarize());
}

void TaskState::FinishIfEmpty() {
  if (size_ == 0) completion_.Finish(Status::Ok());
}

Status TaskState::Summarize() const {
  size_t failed = 0;
  size_t first = size_;
  size_t first_real = size_;  // first failure that is not a cancellation
  for (size_t i = 0; i < size_; ++i) {
    const Status& s = item(i).status;
    if (s.ok()) continue;
    ++failed;
    if (first == size_) first = i;
    if (first_real == size_ && s.code() != StatusCode::kCancelled) first_real = i;
  }
  if (failed == 0) return Status::Ok();
  const size_t pick = first_real != size_ ? first_real : first;
  char head[96];
  std::snprintf(head, sizeof(head), "%s: %zu of %zu items failed; first ",
                is_load_ ? "load" : "dump", failed, size_);
  const TaskItem& p = item(pick);
  return Status(p.status.code(), std::string(head) + p.id.ToHex() + ": " + p.status.message());
}

AsyncBlockStore::AsyncBlockStore(const StoreOptions& options, const char* thread_name)
    : options_(options) {
  KVSTAR_CHECK(options.io_threads >= 0, "io_threads=%d", options.io_threads);
  if (options.io_threads > 0) {
    // ThreadPool keeps num_threads - 1 workers (the caller joins ParallelFor); we only Submit.
    pool_ = std::make_unique<ThreadPool>(
        ThreadPoolOptions{.num_threads = options.io_threads + 1,
                          .name = thread_name,
                          .direct_handoff = options.io_direct_handoff});
  }
}

void AsyncBlockStore::StopIo() { pool_.reset(); }

std::shared_ptr<TaskState> AsyncBlockStore::NewTask(bool is_load, size_t items) {
  return std::make_shared<TaskState>(is_load, items);
}

StoreTask AsyncBlockStore::Submit(std::shared_ptr<TaskState> task) {
  TaskState* t = task.get();
  StoreTask handle(task);
  t->FinishIfEmpty();
  if (t->size() == 0) return handle;
  bool run_inline = !pool_;
  if (!run_inline && inline_bytes_ > 0) {
    size_t total = 0;
    for (size_t i = 0; i < t->size() && total <= inline_bytes_; ++i) total += t->item(i).size;
    run_inline = total <= inline_bytes_;
  }
  if (run_inline) {
    for (size_t i = 0; i < t->size(); ++i) RunItem(*t, i);
    return handle;
  }
  // At most one runner per item and I/O thread, and with bytes_per_runner one per that many
  // bytes of the task's items.
  size_t max_runners = std::min(t->size(), static_cast<size_t>(options_.io_threads));
  if (bytes_per_runner_ > 0 && max_runners > 1) {
    size_t total = 0;
    for (size_t i = 0; i < t->size(); ++i) total += t->item(i).size;
    max_runners =
        std::clamp<size_t>((total + bytes_per_runner_ - 1) / bytes_per_runner_, 1, max_runners);
  }
  t->max_runners_ = static_cast<int>(max_runners);
  // Items are claimed from the task's counter by at most max_runners runners. The submitting
  // thread queues only the first; each runner that claims an item while others are unclaimed
  // queues one more, so waking I/O threads (a futex call each when they sleep) happens on the
  // I/O threads, overlapped with copies, instead of min(items, io_threads) times on the caller.
  // The queued closure holds two plain pointers, which std::function stores without allocating;
  // the task stays alive through self_ until its last runner leaves.
  t->runners_.store(1, std::memory_order_relaxed);
  t->self_ = std::move(task);
  pool_->Submit([this, t] { RunItems(t); });
  return handle;
}

void AsyncBlockStore::RunItems(TaskState* task) {
  const size_t n = task->size();
  const int max_runners = task->max_runners_;
  for (size_t i; (i = task->next_.fetch_add(1, std::memory_order_relaxed)) < n;) {
    if (i + 1 < n) {
      // This runner holds a count, so the state cannot go away while another is recruited.
      int r = task->runners_.load(std::memory_order_relaxed);
      while (r < max_runners &&
             !task->runners_.compare_exchange_weak(r, r + 1, std::memory_order_relaxed)) {
      }
      if (r < max_runners) pool_->Submit([this, task] { RunItems(task); });
    }
    RunItem(*task, i);
  }
  if (task->runners_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    // Moved out first: the reset may destroy the state that holds self_.
    std::shared_ptr<TaskState> last = std::move(task->self_);
  }
}

void AsyncBlockStore::RunItem(TaskState& task, size_t i) {
  const TaskItem& item = task.item(i);
  if (task.cancel_requested()) {
    stats_.AddCancelled();
    task.FinishItem(
        i, Cancelled("%s cancelled before it started", task.is_load() ? "load" : "dump"), 0);
    return;
  }
  if (task.is_load()) {
    size_t bytes = 0;
    Status s = LoadSync(LoadItem{item.id, item.buffer, item.size}, &bytes);
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
  } else {
    const DumpItem dump{item.id, item.buffer, item.size};
    Status s = DumpSync(dump);
    const double us = MicrosSince(task.submit_time());
    if (s.ok()) {
      stats_.AddDump(dump.bytes, us);
    } else {
      stats_.AddFailure();
      stats_.AddDumpLatency(us);
    }
    task.FinishItem(i, std::move(s), dump.bytes);
  }
}

StoreTask AsyncBlockStore::Dump(std::span<const DumpItem> items) {
  auto task = NewTask(false, items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    TaskItem& t = task->item(i);
    t.id = items[i].id;
    // The store only reads a dump's source; TaskItem keeps one pointer type for both directions.
    t.buffer = const_cast<void*>(items[i].src);
    t.size = items[i].bytes;
  }
  return Submit(std::move(task));
}

StoreTask AsyncBlockStore::Load(std::span<const LoadItem> items) {
  auto task = NewTask(true, items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    TaskItem& t = task->item(i);
    t.id = items[i].id;
    t.buffer = items[i].dst;
    t.size = items[i].capacity;
  }
  return Submit(std::move(task));
}

StoreStats AsyncBlockStore::Stats() const {
  StoreStats out;
  stats_.Fill(&out);
  FillStats(&out);
  return out;
}

}  // namespace kvstar::store_internal
