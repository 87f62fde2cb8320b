// Status / StatusOr: the error type at every module boundary. A Status must be checked
// ([[nodiscard]]); ignore one on purpose with `status.IgnoreError()` and say why.
#pragma once

#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "kvstar/check.h"

namespace kvstar {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument,    // bad input: flag, config value, file content
  kNotFound,           // missing file, tensor, block
  kDataLoss,           // checksum mismatch, truncated file
  kOutOfRange,         // prompt longer than the model allows, offset past the end
  kResourceExhausted,  // full disk, pool full, capacity
  kFailedPrecondition,
  kUnimplemented,
  kCancelled,
  kDeadlineExceeded,  // Wait() timed out
  kPermissionDenied,
  kIoError,  // read/write error reported by the OS
  kInternal,
};

const char* StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "NotFound: tensor model.norm.weight missing from model.safetensors"
  std::string ToString() const;
  // Prepends context: "loading /m/config.json: " + message.
  Status WithContext(std::string_view context) const;
  void IgnoreError() const {}

  bool operator==(const Status& o) const { return code_ == o.code_ && message_ == o.message_; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// printf-style constructors: InvalidArgument("--threads must be >= 1, got %d", n).
Status InvalidArgument(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Status NotFound(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Status DataLoss(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Status OutOfRange(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Status ResourceExhausted(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Status FailedPrecondition(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Status Unimplemented(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Status Cancelled(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Status DeadlineExceeded(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Status PermissionDenied(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Status IoError(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
Status Internal(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// From errno: "open /x/y: No such file or directory" with the code mapped (ENOENT -> NotFound,
// ENOSPC -> ResourceExhausted, EACCES -> PermissionDenied, others -> IoError).
Status ErrnoStatus(int err, std::string_view what);

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status status) : value_(std::move(status)) {  // NOLINT: implicit by design
    KVSTAR_CHECK(!std::get<Status>(value_).ok(), "StatusOr built from an OK Status");
  }
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(value_); }
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(value_); }
  T& value() & {
    CheckOk();
    return std::get<T>(value_);
  }
  const T& value() const& {
    CheckOk();
    return std::get<T>(value_);
  }
  T&& value() && {
    CheckOk();
    return std::get<T>(std::move(value_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

 private:
  void CheckOk() const {
    KVSTAR_CHECK(ok(), "value() on an error StatusOr: %s",
                 std::get<Status>(value_).ToString().c_str());
  }
  std::variant<Status, T> value_;
};

}  // namespace kvstar

#define KVSTAR_STATUS_CONCAT_INNER(a, b) a##b
#define KVSTAR_STATUS_CONCAT(a, b) KVSTAR_STATUS_CONCAT_INNER(a, b)

#define KVSTAR_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::kvstar::Status _kvstar_status = (expr);        \
    if (!_kvstar_status.ok()) return _kvstar_status; \
  } while (0)

#define KVSTAR_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

// KVSTAR_ASSIGN_OR_RETURN(auto x, Foo());
#define KVSTAR_ASSIGN_OR_RETURN(lhs, expr) \
  KVSTAR_ASSIGN_OR_RETURN_IMPL(KVSTAR_STATUS_CONCAT(_kvstar_statusor_, __LINE__), lhs, expr)
