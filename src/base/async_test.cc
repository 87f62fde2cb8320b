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
