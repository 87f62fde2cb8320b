#include "base/status.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace kvstar {
namespace {

StatusOr<int> Half(int x) {
  if (x % 2) return InvalidArgument("%d is odd", x);
  return x / 2;
}

Status UseHalf(int x, int* out) {
  KVSTAR_ASSIGN_OR_RETURN(*out, Half(x));
  return Status::Ok();
}

TEST(StatusTest, FormatsCodeAndMessage) {
  const Status s = NotFound("tensor %s missing", "model.norm.weight");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.ToString(), "NotFound: tensor model.norm.weight missing");
  EXPECT_EQ(s.WithContext("loading m").message(), "loading m: tensor model.norm.weight missing");
  EXPECT_TRUE(Status::Ok().ok());
}

TEST(StatusTest, StatusOrPropagates) {
  int v = 0;
  EXPECT_TRUE(UseHalf(8, &v).ok());
  EXPECT_EQ(v, 4);
  const Status s = UseHalf(3, &v);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "3 is odd");
}

TEST(StatusTest, ErrnoMapping) {
  EXPECT_EQ(ErrnoStatus(ENOENT, "open x").code(), StatusCode::kNotFound);
  EXPECT_EQ(ErrnoStatus(ENOSPC, "write x").code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(ErrnoStatus(EACCES, "open x").code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(ErrnoStatus(EIO, "read x").code(), StatusCode::kIoError);
}

TEST(StatusDeathTest, ValueOfErrorAborts) {
  StatusOr<int> s = InvalidArgument("bad");
  EXPECT_DEATH((void)s.value(), "value\\(\\) on an error StatusOr: InvalidArgument: bad");
}

TEST(CheckDeathTest, MessageCarriesValues) {
  const int a = 3, b = 2;
  EXPECT_DEATH(KVSTAR_CHECK(a < b, "a=%d b=%d", a, b), "check failed: a < b: a=3 b=2");
}

}  // namespace
}  // namespace kvstar
