// FaultyIoHooks: IoHooks for tests that fail chosen calls with a chosen errno, optionally only
// for paths containing a substring, and can hold reads at a gate.
#pragma once

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

#include "store/file/io_hooks.h"

namespace kvstar::store_test {

class FaultyIoHooks : public IoHooks {
 public:
  // errno for the call, 0 = pass through.
  std::atomic<int> open_errno{0}, pread_errno{0}, pwrite_errno{0}, fdatasync_errno{0},
      rename_errno{0};
  // Only fail opens/renames/reads of paths containing this (empty: every path).
  std::string path_filter;
  // pwrite: fail once this many bytes were written in total (ENOSPC-style partial progress).
  std::atomic<int64_t> pwrite_budget{-1};
  std::atomic<int> opens{0}, preads{0};

  // While closed, Pread blocks until Open() of the gate.
  void CloseGate() {
    std::lock_guard<std::mutex> l(mu_);
    gate_open_ = false;
  }
  void OpenGate() {
    {
      std::lock_guard<std::mutex> l(mu_);
      gate_open_ = true;
    }
    cv_.notify_all();
  }
  // Waits until a Pread is held at the gate.
  void WaitForWaiter() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return waiters_ > 0; });
  }

  int Open(const char* path, int flags, mode_t mode) override {
    ++opens;
    if (open_errno && Matches(path)) return Fail(open_errno);
    const int fd = IoHooks::Open(path, flags, mode);
    if (fd >= 0 && Matches(path)) {
      std::lock_guard<std::mutex> l(mu_);
      matching_fds_[fd] = true;
    } else if (fd >= 0) {
      std::lock_guard<std::mutex> l(mu_);
      matching_fds_.erase(fd);
    }
    return fd;
  }
  ssize_t Pread(int fd, void* buf, size_t count, off_t offset) override {
    ++preads;
    WaitAtGate();
    if (pread_errno && FdMatches(fd)) return Fail(pread_errno);
    return IoHooks::Pread(fd, buf, count, offset);
  }
  ssize_t Preadv(int fd, const struct iovec* iov, int iovcnt, off_t offset) override {
    ++preads;
    WaitAtGate();
    if (pread_errno && FdMatches(fd)) return Fail(pread_errno);
    return IoHooks::Preadv(fd, iov, iovcnt, offset);
  }
  ssize_t Pwritev(int fd, const struct iovec* iov, int iovcnt, off_t offset) override {
    if (pwrite_errno && FdMatches(fd)) return Fail(pwrite_errno);
    if (pwrite_budget.load() < 0) return IoHooks::Pwritev(fd, iov, iovcnt, offset);
    // Through Pwrite, which applies the budget; a short write is returned as such.
    ssize_t total = 0;
    for (int i = 0; i < iovcnt; ++i) {
      const ssize_t n = Pwrite(fd, iov[i].iov_base, iov[i].iov_len, offset + total);
      if (n < 0) return total > 0 ? total : n;
      total += n;
      if (static_cast<size_t>(n) < iov[i].iov_len) break;
    }
    return total;
  }
  ssize_t Pwrite(int fd, const void* buf, size_t count, off_t offset) override {
    if (pwrite_errno && FdMatches(fd)) return Fail(pwrite_errno);
    int64_t budget = pwrite_budget.load();
    if (budget >= 0) {
      if (budget == 0) return Fail(ENOSPC);
      count = std::min<size_t>(count, static_cast<size_t>(budget));
      pwrite_budget -= static_cast<int64_t>(count);
    }
    return IoHooks::Pwrite(fd, buf, count, offset);
  }
  int Fdatasync(int fd) override {
    if (fdatasync_errno) return Fail(fdatasync_errno);
    return IoHooks::Fdatasync(fd);
  }
  int Rename(const char* from, const char* to) override {
    if (rename_errno && Matches(to)) return Fail(rename_errno);
    return IoHooks::Rename(from, to);
  }

 private:
  void WaitAtGate() {
    std::unique_lock<std::mutex> l(mu_);
    if (!gate_open_) {
      ++waiters_;
      cv_.notify_all();
      cv_.wait(l, [&] { return gate_open_; });
      --waiters_;
    }
  }
  static int Fail(int err) {
    errno = err;
    return -1;
  }
  bool Matches(const char* path) const {
    return path_filter.empty() || std::string(path).find(path_filter) != std::string::npos;
  }
  bool FdMatches(int fd) {
    std::lock_guard<std::mutex> l(mu_);
    return path_filter.empty() || matching_fds_.count(fd) != 0;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool gate_open_ = true;
  int waiters_ = 0;
  std::map<int, bool> matching_fds_;
};

}  // namespace kvstar::store_test
