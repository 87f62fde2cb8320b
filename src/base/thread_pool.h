// ThreadPool: the one CPU threading context of the process. Ops parallelise through
// ParallelFor; background work (retrieval, store I/O helpers) through Submit.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace kvstar {

struct ThreadPoolOptions {
  int num_threads = 1;        // worker threads; ParallelFor also uses the calling thread
  bool pin_to_cores = false;  // pin worker i to core (first_core + i) % hardware cores
  int first_core = 0;
  const char* name = "kvstar";  // thread name prefix (visible in top -H, gdb)
  // Submit hands a task straight to one spinning worker, through that worker's own slot, when
  // one is idle; otherwise (and always when false) tasks go through the shared queue, where
  // every spinner reacts to every push. Meant for pools fed many short tasks by few threads
  // (the store's I/O threads); ParallelFor always uses the queue.
  bool direct_handoff = false;
};

class ThreadPool {
 public:
  explicit ThreadPool(const ThreadPoolOptions& options);
  explicit ThreadPool(int num_threads)
      : ThreadPool(ThreadPoolOptions{.num_threads = num_threads}) {}
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Number of threads that run ParallelFor chunks: the caller plus the workers, or 1 for a pool
  // made with num_threads <= 1 (whose single worker only runs Submit()ted work).
  int parallelism() const {
    return single_threaded_parallel_for_ ? 1 : static_cast<int>(workers_.size()) + 1;
  }
  int num_workers() const { return static_cast<int>(workers_.size()); }

  // Calls fn(begin, end, worker_index) over [0, n) split into contiguous chunks of at least
  // min_chunk items, one per participating thread; returns when all are done. worker_index is
  // in [0, parallelism()). Safe to call from several threads at once; nested calls run inline.
  void ParallelFor(size_t n, const std::function<void(size_t, size_t, int)>& fn,
                   size_t min_chunk = 1);

  // Queues fn to run on a worker. With zero workers it runs inline.
  void Submit(std::function<void()> fn);

  static int HardwareThreads();

 private:
  void WorkerLoop(int index);
  // Takes one unit of queued_ (a queued task nobody has claimed); false when there is none.
  bool TryClaim();
  // Gives fn to an idle worker's slot; false (fn untouched) when no worker is idle.
  bool TryHandOff(std::function<void()>& fn);

  // A worker's hand-off slot: kIdle while it spins and accepts a task; a submitter that wins
  // kIdle -> kClaimed writes fn and publishes kHanded; the worker leaves with kIdle -> kBusy or,
  // when a submitter won the slot first, by taking the task.
  enum SlotState : int { kBusy = 0, kIdle = 1, kClaimed = 2, kHanded = 3 };
  struct alignas(64) Slot {
    std::atomic<int> state{kBusy};
    std::function<void()> fn;
  };
  static constexpr int kMaxSlots = 64;

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  // Tasks in queue_ that no worker has claimed yet: raised under the lock after a push, lowered
  // by the claim (TryClaim) that entitles a worker to pop one.
  std::atomic<size_t> queued_{0};
  // Workers in their spin loop: each checks the queue under the lock before it sleeps, so a
  // submitter wakes a sleeping worker (a futex call) only when more tasks wait than workers spin.
  std::atomic<size_t> spinning_{0};
  static constexpr int kSpinIterations = 4000;
  bool single_threaded_parallel_for_ = false;
  // Direct hand-off (options.direct_handoff): one slot per worker (the first kMaxSlots), and a
  // bit per worker whose slot is kIdle, set and cleared by that worker only.
  std::unique_ptr<Slot[]> slots_;
  alignas(64) std::atomic<uint64_t> idle_mask_{0};
};

}  // namespace kvstar
