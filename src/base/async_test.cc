#include "base/async.h"

#include <gtest/gtest.h>

#include <thread>

namespace kvstar {
namespace {

TEST(CompletionTest, WaitTimesOutThenSucceeds) {
  auto c = std::make_shared<Completion>();
  EXPECT_FALSE(c->Ready());
  EXPECT_EQ(c->Wait(std::chrono::milliseconds(5)).code(), StatusCode::kDeadlineExceeded);
  std::thread t([c] { c->Finish(IoError("disk on fire")); });
  const Status s = c->Wait();
  t.join();
  EXPECT_TRUE(c->Ready());
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(c->status().message(), "disk on fire");
}

// Short and zero timeouts on an operation that never finishes: DeadlineExceeded, after at least
// the timeout and within a bound a loaded machine keeps.
TEST(CompletionTest, TimeoutIncludesThePolling) {
  Completion c;
  const auto t0 = Completion::Clock::now();
  EXPECT_EQ(c.Wait(std::chrono::milliseconds(0)).code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(c.Wait(std::chrono::milliseconds(1)).code(), StatusCode::kDeadlineExceeded);
  const auto elapsed = Completion::Clock::now() - t0;
  EXPECT_GE(elapsed, std::chrono::milliseconds(1));
  EXPECT_LT(elapsed, std::chrono::milliseconds(200));
}

TEST(CompletionTest, CancelIsObservable) {
  Completion c;
  EXPECT_FALSE(c.CancelRequested());
  c.RequestCancel();
  EXPECT_TRUE(c.CancelRequested());
  c.Finish(Cancelled("cancelled by caller"));
  EXPECT_EQ(c.Wait().code(), StatusCode::kCancelled);
}

TEST(CompletionDeathTest, FinishTwiceAborts) {
  EXPECT_DEATH(
      {
        Completion c;
        c.Finish(Status::Ok());
        c.Finish(Status::Ok());
      },
      "finished twice");
}

}  // namespace
}  // namespace kvstar
