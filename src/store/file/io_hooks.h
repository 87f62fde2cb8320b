// IoHooks: the system calls FileStore makes, behind a small interface so that tests can inject
// failures (EIO, ENOSPC, EACCES...) at exact points. Each method follows its POSIX namesake: it
// returns -1 and sets errno on failure. The default forwards to the kernel.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>

namespace kvstar {

class IoHooks {
 public:
  virtual ~IoHooks() = default;
  virtual int Open(const char* path, int flags, mode_t mode);
  virtual ssize_t Pread(int fd, void* buf, size_t count, off_t offset);
  virtual ssize_t Pwrite(int fd, const void* buf, size_t count, off_t offset);
  virtual ssize_t Preadv(int fd, const struct iovec* iov, int iovcnt, off_t offset);
  virtual ssize_t Pwritev(int fd, const struct iovec* iov, int iovcnt, off_t offset);
  virtual int Fdatasync(int fd);
  virtual int Fsync(int fd);
  virtual int Rename(const char* from, const char* to);
  virtual int Unlink(const char* path);
  virtual int Mkdir(const char* path, mode_t mode);
  virtual int Close(int fd);
};

// The kernel's system calls. Lives forever.
IoHooks* DefaultIoHooks();

}  // namespace kvstar
