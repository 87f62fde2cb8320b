// KVSTAR_CHECK: internal invariants. On failure prints file:line, the condition and a
// printf-formatted message with the values involved, then aborts. Not for bad input: input
// errors are Status values.
#pragma once

namespace kvstar::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* cond, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));
[[noreturn]] void CheckFailed(const char* file, int line, const char* cond);
}  // namespace kvstar::internal

#define KVSTAR_CHECK(cond, ...)                                                              \
  do {                                                                                       \
    if (__builtin_expect(!(cond), 0)) {                                                      \
      ::kvstar::internal::CheckFailed(__FILE__, __LINE__, #cond __VA_OPT__(, ) __VA_ARGS__); \
    }                                                                                        \
  } while (0)

#ifdef NDEBUG
#define KVSTAR_DCHECK(cond, ...) \
  do {                           \
  } while (0)
#else
#define KVSTAR_DCHECK(cond, ...) KVSTAR_CHECK(cond __VA_OPT__(, ) __VA_ARGS__)
#endif
