// Leveled logging to stderr. KVSTAR_LOG(kInfo, "loaded %zu tensors", n).
// The level comes from SetLogLevel or the KVSTAR_LOG_LEVEL environment variable
// (debug, info, warn, error); default info.
#pragma once

namespace kvstar {

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
void LogMessage(LogLevel level, const char* file, int line, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));

}  // namespace kvstar

#define KVSTAR_LOG(level, ...)                                                          \
  do {                                                                                  \
    if (::kvstar::LogLevel::level >= ::kvstar::GetLogLevel())                           \
      ::kvstar::LogMessage(::kvstar::LogLevel::level, __FILE__, __LINE__, __VA_ARGS__); \
  } while (0)
