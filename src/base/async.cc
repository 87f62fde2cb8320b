#include "base/async.h"

#include <algorithm>
#include <thread>

#include "base/cpu_relax.h"

namespace kvstar {

Status Completion::Wait(std::chrono::milliseconds timeout) const {
  // The timeout counts from here, polling included.
  const auto deadline = Clock::now() + timeout;
  // Poll briefly before sleeping: short operations (a DRAM block copy, a small retrieval) finish
  // in a few microseconds, less than it takes to wake a sleeping thread.
  if (!Ready() && timeout.count() != 0) {
    auto until = Clock::now() + kSpinBeforeSleep;
    if (timeout.count() > 0) until = std::min(until, deadline);
    for (int i = 0; !Ready(); ++i) {
      CpuRelax();
      if ((i & 63) == 63 && Clock::now() >= until) break;
    }
    // Then yield for a while: a copy of a megabyte takes ~60 us, and waking from the condition
    // variable costs tens of microseconds on some VMs. Yielding leaves the core to any thread
    // that has work.
    until = Clock::now() + kYieldBeforeSleep;
    if (timeout.count() > 0) until = std::min(until, deadline);
    for (int i = 0; !Ready(); ++i) {
      std::this_thread::yield();
      if ((i & 7) == 7 && Clock::now() >= until) break;
    }
  }
  std::unique_lock<std::mutex> lock(mu_);
  auto is_done = [this] { return done_.load(std::memory_order_acquire); };
  if (timeout.count() < 0) {
    cv_.wait(lock, is_done);
  } else if (!cv_.wait_until(lock, deadline, is_done)) {
    return DeadlineExceeded("operation still running after %lld ms",
                            static_cast<long long>(timeout.count()));
  }
  return status_;
}

void Completion::Finish(Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    KVSTAR_CHECK(!done_.load(), "Completion finished twice (second status: %s)",
                 status.ToString().c_str());
    status_ = std::move(status);
    finish_time_ = Clock::now();
    done_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
}

Status Completion::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

Completion::Clock::time_point Completion::finish_time() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finish_time_;
}

}  // namespace kvstar
