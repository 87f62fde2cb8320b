#include "base/thread_pool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdio>
#include <memory>

#include "base/check.h"
#include "base/cpu_relax.h"

namespace kvstar {
namespace {
thread_local bool tls_in_parallel_for = false;
}  // namespace

int ThreadPool::HardwareThreads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

ThreadPool::ThreadPool(const ThreadPoolOptions& options) {
  KVSTAR_CHECK(options.num_threads >= 0, "num_threads=%d", options.num_threads);
  // The caller participates in ParallelFor, so num_threads total means num_threads-1 workers,
  // but keep at least one worker so that Submit is asynchronous.
  const int workers = std::max(1, options.num_threads - 1);
  if (options.direct_handoff) slots_ = std::make_unique<Slot[]>(std::min(workers, kMaxSlots));
  workers_.reserve(workers);
  for (int i = 0; i < workers; ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i); });
    char name[64];
    std::snprintf(name, sizeof(name), "%.10s-%d", options.name, i);
    name[15] = '\0';  // thread names are at most 15 characters
    pthread_setname_np(workers_.back().native_handle(), name);
    if (options.pin_to_cores) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET((options.first_core + i) % HardwareThreads(), &set);
      pthread_setaffinity_np(workers_.back().native_handle(), sizeof(set), &set);
    }
  }
  single_threaded_parallel_for_ = options.num_threads <= 1;
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::Submit(std::function<void()> fn) {
  if (slots_ && TryHandOff(fn)) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(fn));
    queued_.fetch_add(1, std::memory_order_release);
  }
  if (queued_.load() > spinning_.load()) cv_.notify_one();
}

bool ThreadPool::TryHandOff(std::function<void()>& fn) {
  // The submitter touches one slot's line (and reads the mask), and one worker reacts, instead
  // of every spinner racing for the queue's counter on each push.
  uint64_t mask = idle_mask_.load(std::memory_order_acquire);
  while (mask != 0) {
    const int i = std::countr_zero(mask);
    mask &= mask - 1;
    Slot& slot = slots_[i];
    int expected = kIdle;
    if (slot.state.compare_exchange_strong(expected, kClaimed, std::memory_order_acquire,
                                           std::memory_order_relaxed)) {
      slot.fn = std::move(fn);
      slot.state.store(kHanded, std::memory_order_release);
      return true;
    }
    // That worker left its spin (or another submitter got it first): try the next idle one.
  }
  return false;
}

bool ThreadPool::TryClaim() {
  size_t q = queued_.load(std::memory_order_acquire);
  while (q > 0) {
    if (queued_.compare_exchange_weak(q, q - 1, std::memory_order_acq_rel)) return true;
  }
  return false;
}

void ThreadPool::WorkerLoop(int index) {
  Slot* slot = slots_ && index < kMaxSlots ? &slots_[index] : nullptr;
  const uint64_t bit = uint64_t{1} << (index % kMaxSlots);
  for (;;) {
    // Spin a little before sleeping: ParallelFor calls come in bursts (several per layer of a
    // decode step) and waking a sleeping thread costs tens of microseconds each time. Spinners
    // claim a task on the counter, without the lock: only the winner takes the lock (to pop it),
    // the others spin on instead of queueing on the mutex or falling asleep, which made the next
    // Submit wait for the lock or pay a futex wake-up.
    // A spinner stops counting itself before it claims, so that a task submitted meanwhile
    // wakes a sleeper instead of waiting for this spinner's current task.
    // With a hand-off slot the spinner also offers itself to Submit, which then writes the task
    // into the slot: it reaches this worker alone.
    if (slot != nullptr) {
      slot->state.store(kIdle, std::memory_order_release);
      idle_mask_.fetch_or(bit, std::memory_order_release);
    }
    bool claimed = false;
    spinning_.fetch_add(1);
    for (int spin = 0; spin < kSpinIterations; ++spin) {
      if (slot != nullptr && slot->state.load(std::memory_order_acquire) != kIdle) break;
      if (queued_.load(std::memory_order_acquire) != 0) {
        spinning_.fetch_sub(1);
        if (TryClaim()) {
          claimed = true;
          break;
        }
        spinning_.fetch_add(1);
      }
      CpuRelax();
    }
    if (!claimed) spinning_.fetch_sub(1);
    std::function<void()> handed;
    if (slot != nullptr) {
      int expected = kIdle;
      if (!slot->state.compare_exchange_strong(expected, kBusy, std::memory_order_acq_rel)) {
        // A submitter won the slot first: its task is (about to be) there.
        while (slot->state.load(std::memory_order_acquire) != kHanded) CpuRelax();
        handed = std::move(slot->fn);
        slot->fn = nullptr;
        slot->state.store(kBusy, std::memory_order_relaxed);
      }
      idle_mask_.fetch_and(~bit, std::memory_order_release);
    }
    if (handed) {
      handed();
      if (!claimed) continue;
    }
    std::function<void()> fn;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!claimed) {
        // Every task is claimed by someone: leave on stop_ once none is unclaimed.
        cv_.wait(lock, [&] {
          return (claimed = TryClaim()) || (stop_ && queued_.load(std::memory_order_acquire) == 0);
        });
        if (!claimed) return;
      }
      // A claim stands for a task pushed before its count was raised, not yet popped.
      KVSTAR_CHECK(!queue_.empty(), "claimed a task of an empty queue");
      fn = std::move(queue_.front());
      queue_.pop_front();
    }
    fn();
  }
}

void ThreadPool::ParallelFor(size_t n, const std::function<void(size_t, size_t, int)>& fn,
                             size_t min_chunk) {
  if (n == 0) return;
  min_chunk = std::max<size_t>(1, min_chunk);
  const size_t max_parts = static_cast<size_t>(parallelism());
  const size_t parts = std::min(max_parts, (n + min_chunk - 1) / min_chunk);
  if (parts <= 1 || tls_in_parallel_for) {
    fn(0, n, 0);
    return;
  }
  // Chunks are claimed from a shared counter by the caller and by helper tasks queued at the
  // front of the queue. A worker busy with long background work (a retrieval task) never holds
  // the caller up: the caller runs every chunk nobody has claimed. A helper that starts after
  // all chunks are claimed touches nothing but the shared counter.
  struct Shared {
    std::atomic<size_t> next{0};
    std::atomic<size_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto shared = std::make_shared<Shared>();
  const size_t chunk = (n + parts - 1) / parts;
  auto run_chunks = [shared, &fn, n, chunk, parts] {
    for (;;) {
      const size_t i = shared->next.fetch_add(1);
      if (i >= parts) return;
      const size_t begin = i * chunk;
      const size_t end = std::min(n, begin + chunk);
      tls_in_parallel_for = true;
      if (begin < end) fn(begin, end, static_cast<int>(i));
      tls_in_parallel_for = false;
      if (shared->done.fetch_add(1) + 1 == parts) {
        std::lock_guard<std::mutex> lock(shared->mu);
        shared->cv.notify_all();
      }
    }
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t p = 1; p < parts; ++p) queue_.push_front(run_chunks);
    queued_.fetch_add(parts - 1, std::memory_order_release);
  }
  if (queued_.load() > spinning_.load()) cv_.notify_all();
  run_chunks();
  // The other parts usually end within microseconds of the caller's: spin on the count before
  // sleeping, since a futex wake-up costs tens of microseconds and a decode step makes about a
  // hundred of these calls (docs/BENCHMARKS.md, "Engine: CPU decode and prefill").
  for (int spin = 0;
       spin < kSpinIterations && shared->done.load(std::memory_order_acquire) != parts; ++spin) {
    CpuRelax();
  }
  if (shared->done.load(std::memory_order_acquire) == parts) return;
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->done.load() == parts; });
}

}  // namespace kvstar
