#include "store/file/io_hooks.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

namespace kvstar {

int IoHooks::Open(const char* path, int flags, mode_t mode) { return ::open(path, flags, mode); }
ssize_t IoHooks::Pread(int fd, void* buf, size_t count, off_t offset) {
  return ::pread(fd, buf, count, offset);
}
ssize_t IoHooks::Pwrite(int fd, const void* buf, size_t count, off_t offset) {
  return ::pwrite(fd, buf, count, offset);
}
ssize_t IoHooks::Preadv(int fd, const struct iovec* iov, int iovcnt, off_t offset) {
  return ::preadv(fd, iov, iovcnt, offset);
}
ssize_t IoHooks::Pwritev(int fd, const struct iovec* iov, int iovcnt, off_t offset) {
  return ::pwritev(fd, iov, iovcnt, offset);
}
int IoHooks::Fdatasync(int fd) { return ::fdatasync(fd); }
int IoHooks::Fsync(int fd) { return ::fsync(fd); }
int IoHooks::Rename(const char* from, const char* to) { return std::rename(from, to); }
int IoHooks::Unlink(const char* path) { return ::unlink(path); }
int IoHooks::Mkdir(const char* path, mode_t mode) { return ::mkdir(path, mode); }
int IoHooks::Close(int fd) { return ::close(fd); }

IoHooks* DefaultIoHooks() {
  static IoHooks* hooks = new IoHooks();
  return hooks;
}

}  // namespace kvstar
