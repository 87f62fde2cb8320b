#include "base/status.h"

#include <cerrno>
#include <cstdarg>
#include <cstdlib>
#include <cstring>

namespace kvstar {
namespace {

std::string VFormat(const char* fmt, va_list args) {
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::string out(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(out.data(), out.size() + 1, fmt, args);
  return out;
}

}  // namespace

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInvalidArgument:
      return "InvalidArgument";
    case StatusCode::kNotFound:
      return "NotFound";
    case StatusCode::kDataLoss:
      return "DataLoss";
    case StatusCode::kOutOfRange:
      return "OutOfRange";
    case StatusCode::kResourceExhausted:
      return "ResourceExhausted";
    case StatusCode::kFailedPrecondition:
      return "FailedPrecondition";
    case StatusCode::kUnimplemented:
      return "Unimplemented";
    case StatusCode::kCancelled:
      return "Cancelled";
    case StatusCode::kDeadlineExceeded:
      return "DeadlineExceeded";
    case StatusCode::kPermissionDenied:
      return "PermissionDenied";
    case StatusCode::kIoError:
      return "IoError";
    case StatusCode::kInternal:
      return "Internal";
  }
  return "Unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return std::string(StatusCodeName(code_)) + ": " + message_;
}

Status Status::WithContext(std::string_view context) const {
  if (ok()) return *this;
  return Status(code_, std::string(context) + ": " + message_);
}

#define KVSTAR_DEFINE_STATUS_CTOR(Name)                 \
  Status Name(const char* fmt, ...) {                   \
    va_list args;                                       \
    va_start(args, fmt);                                \
    std::string msg = VFormat(fmt, args);               \
    va_end(args);                                       \
    return Status(StatusCode::k##Name, std::move(msg)); \
  }

KVSTAR_DEFINE_STATUS_CTOR(InvalidArgument)
KVSTAR_DEFINE_STATUS_CTOR(NotFound)
KVSTAR_DEFINE_STATUS_CTOR(DataLoss)
KVSTAR_DEFINE_STATUS_CTOR(OutOfRange)
KVSTAR_DEFINE_STATUS_CTOR(ResourceExhausted)
KVSTAR_DEFINE_STATUS_CTOR(FailedPrecondition)
KVSTAR_DEFINE_STATUS_CTOR(Unimplemented)
KVSTAR_DEFINE_STATUS_CTOR(Cancelled)
KVSTAR_DEFINE_STATUS_CTOR(DeadlineExceeded)
KVSTAR_DEFINE_STATUS_CTOR(PermissionDenied)
KVSTAR_DEFINE_STATUS_CTOR(IoError)
KVSTAR_DEFINE_STATUS_CTOR(Internal)
#undef KVSTAR_DEFINE_STATUS_CTOR

Status ErrnoStatus(int err, std::string_view what) {
  std::string msg = std::string(what) + ": " + std::strerror(err);
  switch (err) {
    case ENOENT:
      return Status(StatusCode::kNotFound, std::move(msg));
    case ENOSPC:
    case EDQUOT:
      return Status(StatusCode::kResourceExhausted, std::move(msg));
    case EACCES:
    case EPERM:
    case EROFS:
      return Status(StatusCode::kPermissionDenied, std::move(msg));
    case EINVAL:
      return Status(StatusCode::kInvalidArgument, std::move(msg));
    default:
      return Status(StatusCode::kIoError, std::move(msg));
  }
}

namespace internal {

void CheckFailed(const char* file, int line, const char* cond, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::string msg = VFormat(fmt, args);
  va_end(args);
  std::fprintf(stderr, "%s:%d: check failed: %s: %s\n", file, line, cond, msg.c_str());
  std::fflush(stderr);
  std::abort();
}

void CheckFailed(const char* file, int line, const char* cond) {
  std::fprintf(stderr, "%s:%d: check failed: %s\n", file, line, cond);
  std::fflush(stderr);
  std::abort();
}

}  // namespace internal
}  // namespace kvstar
