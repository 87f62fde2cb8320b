// Progress: a one-line progress display on stderr, shown only when stderr is a terminal
// (and never with --json), so that logs and pipes stay clean.
#pragma once

#include <cstddef>
#include <string>

#include "base/timer.h"

namespace kvstar {

class Progress {
 public:
  // total == 0: unknown total (shows a count).
  Progress(std::string label, size_t total, bool enabled = true);
  ~Progress();
  void Update(size_t done);
  void Finish();
  static bool StderrIsTerminal();

 private:
  std::string label_;
  size_t total_;
  bool enabled_;
  bool finished_ = false;
  Stopwatch watch_;
  double last_draw_ = -1.0;
};

}  // namespace kvstar
