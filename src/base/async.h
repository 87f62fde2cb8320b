// Completion: the shared state behind every asynchronous handle (store tasks, retrieval tasks,
// device copies). The producer calls Finish(status) exactly once; consumers poll Ready(), block
// in Wait(timeout) or ask for cancellation. A cancelled operation still Finish()es (with
// kCancelled or its real result if it was already done), so nobody waits forever.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "base/status.h"

namespace kvstar {

class Completion {
 public:
  using Clock = std::chrono::steady_clock;

  bool Ready() const { return done_.load(std::memory_order_acquire); }

  // Blocks until finished or the timeout passes: spins up to kSpinBeforeSleep, yields up to
  // kYieldBeforeSleep, then sleeps; the timeout counts from the call, polling included.
  // Returns the operation's status, or DeadlineExceeded if it is still running. A negative
  // timeout waits forever.
  Status Wait(std::chrono::milliseconds timeout = std::chrono::milliseconds(-1)) const;

  // Requests cancellation; the producer observes it through CancelRequested().
  void RequestCancel() { cancel_.store(true, std::memory_order_release); }
  bool CancelRequested() const { return cancel_.load(std::memory_order_acquire); }

  // Producer side. Finishing twice is an invariant violation.
  void Finish(Status status);

  // The status once Ready(); OK before (check Ready() first).
  Status status() const;

  Clock::time_point finish_time() const;

  static constexpr std::chrono::microseconds kSpinBeforeSleep{30};
  static constexpr std::chrono::microseconds kYieldBeforeSleep{300};

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::atomic<bool> done_{false};
  std::atomic<bool> cancel_{false};
  Status status_;
  Clock::time_point finish_time_{};
};

using CompletionPtr = std::shared_ptr<Completion>;

}  // namespace kvstar
