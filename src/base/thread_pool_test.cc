#include "base/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace kvstar {
namespace {

TEST(ThreadPoolTest, ParallelForCoversRangeOnce) {
  for (int threads : {1, 2, 4}) {
    ThreadPool pool(threads);
    for (size_t n : {0u, 1u, 7u, 1000u}) {
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(n, [&](size_t b, size_t e, int w) {
        EXPECT_LT(w, pool.parallelism());
        for (size_t i = b; i < e; ++i) hits[i]++;
      });
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << i;
    }
  }
}

TEST(ThreadPoolTest, ParallelForDoesNotWaitForBusyWorkers) {
  ThreadPool pool(2);
  std::atomic<bool> release{false};
  pool.Submit([&] {
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::atomic<int> sum{0};
  // The only worker is busy: the caller must run every chunk itself and return.
  pool.ParallelFor(100, [&](size_t b, size_t e, int) { sum += static_cast<int>(e - b); });
  EXPECT_EQ(sum.load(), 100);
  release = true;
}

// The caller waits for parts that end long after its own (past its spin, on the condition
// variable) as well as for parts that end at once (within the spin): ParallelFor returns only
// when every chunk has run, with the chunk's writes visible.
TEST(ThreadPoolTest, ParallelForWaitsForSlowAndFastParts) {
  ThreadPool pool(2);
  const std::thread::id caller = std::this_thread::get_id();
  for (int slow_ms : {0, 30}) {
    std::vector<int> wrote(2, 0);
    pool.ParallelFor(2, [&](size_t b, size_t e, int) {
      // The caller's part takes 5 ms, so that the worker takes the other part, which is the
      // slow one.
      const bool by_caller = std::this_thread::get_id() == caller;
      std::this_thread::sleep_for(std::chrono::milliseconds(by_caller ? 5 : slow_ms));
      for (size_t i = b; i < e; ++i) wrote[i] = 1;
    });
    EXPECT_EQ(wrote[0] + wrote[1], 2) << slow_ms << " ms";
  }
}

TEST(ThreadPoolTest, ParallelismCountsThreadsThatRunChunks) {
  EXPECT_EQ(ThreadPool(1).parallelism(), 1);
  EXPECT_EQ(ThreadPool(2).parallelism(), 2);
  EXPECT_EQ(ThreadPool(4).parallelism(), 4);
}

TEST(ThreadPoolTest, SubmitRunsEverything) {
  std::atomic<int> count{0};
  {
    ThreadPool pool(3);
    for (int i = 0; i < 1000; ++i) pool.Submit([&] { count++; });
  }  // destructor drains the queue
  EXPECT_EQ(count.load(), 1000);
}

TEST(ThreadPoolTest, NestedParallelForRunsInline) {
  ThreadPool pool(2);
  std::atomic<int> total{0};
  pool.ParallelFor(4, [&](size_t b, size_t e, int) {
    for (size_t i = b; i < e; ++i)
      pool.ParallelFor(10, [&](size_t b2, size_t e2, int) { total += static_cast<int>(e2 - b2); });
  });
  EXPECT_EQ(total.load(), 40);
}

// Workers claim tasks on a counter and pop them under the lock: with several threads submitting,
// tasks submitting tasks and ParallelFor calls at the same time, every task runs exactly once,
// and the destructor runs what is still queued.
// With direct hand-off the tasks also go through the workers' slots: the same must hold.
class ThreadPoolDispatchTest : public ::testing::TestWithParam<bool> {};

TEST_P(ThreadPoolDispatchTest, ConcurrentSubmittersRunEveryTaskOnce) {
  constexpr int kSubmitters = 4, kTasks = 5000;
  std::vector<std::atomic<int>> runs(kSubmitters * kTasks * 2);
  std::atomic<int> chunks{0};
  {
    ThreadPool pool(ThreadPoolOptions{.num_threads = 4, .direct_handoff = GetParam()});
    std::vector<std::thread> submitters;
    for (int s = 0; s < kSubmitters; ++s) {
      submitters.emplace_back([&, s] {
        for (int i = 0; i < kTasks; ++i) {
          const int id = (s * kTasks + i) * 2;
          pool.Submit([&, id] {
            runs[id]++;
            pool.Submit([&, id] { runs[id + 1]++; });  // a task that submits a task
          });
          if (i % 500 == 0) {
            pool.ParallelFor(64,
                             [&](size_t b, size_t e, int) { chunks += static_cast<int>(e - b); });
          }
        }
      });
    }
    for (auto& t : submitters) t.join();
  }  // the destructor drains the queue, including tasks queued by tasks
  for (size_t i = 0; i < runs.size(); ++i) ASSERT_EQ(runs[i].load(), 1) << "task " << i;
  EXPECT_EQ(chunks.load(), kSubmitters * (kTasks / 500) * 64);
}

// One submitter, tasks that finish in microseconds, each waited for before the next few are
// submitted (the store's pattern): the spinning workers take them through their slots, and a
// task submitted after every worker fell asleep still runs.
TEST_P(ThreadPoolDispatchTest, ShortTasksFromOneSubmitterAllRun) {
  constexpr int kRounds = 2000, kInFlight = 4;
  std::atomic<int> done{0};  // before the pool: outlives tasks the destructor drains
  ThreadPool pool(ThreadPoolOptions{.num_threads = 5, .direct_handoff = GetParam()});
  // Waits until `target` tasks ran; false after 10 s (a task lost in a slot or the queue).
  const auto wait_for = [&](int target) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (done.load() < target) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::yield();
    }
    return true;
  };
  for (int r = 0; r < kRounds; ++r) {
    for (int i = 0; i < kInFlight; ++i) pool.Submit([&] { done.fetch_add(1); });
    ASSERT_TRUE(wait_for((r + 1) * kInFlight)) << "round " << r << ": " << done.load() << " ran";
    ASSERT_EQ(done.load(), (r + 1) * kInFlight) << "a task ran twice in round " << r;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // every spin ends: all asleep
  pool.Submit([&] { done.fetch_add(1); });
  ASSERT_TRUE(wait_for(kRounds * kInFlight + 1)) << "the task after the workers slept never ran";
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(done.load(), kRounds * kInFlight + 1);
}

INSTANTIATE_TEST_SUITE_P(Dispatch, ThreadPoolDispatchTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? std::string("Handoff") : std::string("Queue");
                         });

}  // namespace
}  // namespace kvstar
