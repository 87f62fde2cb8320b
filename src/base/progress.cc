#include "base/progress.h"

#include <unistd.h>

#include <cstdio>

namespace kvstar {

bool Progress::StderrIsTerminal() { return isatty(STDERR_FILENO) == 1; }

Progress::Progress(std::string label, size_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled && StderrIsTerminal()) {}

Progress::~Progress() { Finish(); }

void Progress::Update(size_t done) {
  if (!enabled_ || finished_) return;
  const double now = watch_.Seconds();
  if (now - last_draw_ < 0.1 && done != total_) return;
  last_draw_ = now;
  if (total_ > 0) {
    const double frac = static_cast<double>(done) / static_cast<double>(total_);
    const int width = 30;
    const int filled = static_cast<int>(frac * width);
    std::fprintf(stderr, "\r%s [%.*s%*s] %3.0f%% (%zu/%zu, %.1fs)", label_.c_str(), filled,
                 "==============================", width - filled, "", frac * 100, done, total_,
                 now);
  } else {
    std::fprintf(stderr, "\r%s %zu (%.1fs)", label_.c_str(), done, now);
  }
  std::fflush(stderr);
}

void Progress::Finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
}

}  // namespace kvstar
