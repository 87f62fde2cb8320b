#include "store/file/file_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <tuple>

#include "base/file_util.h"
#include "base/logging.h"
#include "store/file/block_format.h"

namespace kvstar {
namespace {

using file_format::kHeaderBytes;
constexpr size_t kAlign = 4096;                   // O_DIRECT offset/length/address alignment
constexpr size_t kBounceChunk = size_t{4} << 20;  // largest bounce buffer per thread
constexpr char kMarkerName[] = "KVSTORE";
constexpr char kMarkerText[] = "kvstar block store 1\n";
constexpr int kStaleTempSeconds = 3600;

size_t RoundUp(size_t n, size_t a) { return (n + a - 1) / a * a; }
bool IsAligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kAlign == 0; }

// Per-thread aligned scratch memory for headers and O_DIRECT bounce copies; freed at thread exit.
class Scratch {
 public:
  ~Scratch() { std::free(p_); }
  void* Get(size_t bytes) {
    if (bytes > n_) {
      std::free(p_);
      n_ = RoundUp(bytes, kAlign);
      p_ = std::aligned_alloc(kAlign, n_);
      if (p_ == nullptr) n_ = 0;
    }
    return p_;
  }

 private:
  void* p_ = nullptr;
  size_t n_ = 0;
};
thread_local Scratch tls_header;
thread_local Scratch tls_bounce;

class ScopedFd {
 public:
  ScopedFd(IoHooks* io, int fd) : io_(io), fd_(fd) {}
  ~ScopedFd() {
    if (fd_ >= 0) io_->Close(fd_);
  }
  int get() const { return fd_; }
  // Close with the error reported (NFS reports deferred write errors here).
  int Close() {
    const int rc = io_->Close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  IoHooks* io_;
  int fd_;
};

// Reads until count bytes or end of file. Returns bytes read, or -1 with errno.
ssize_t PreadFull(IoHooks* io, int fd, void* buf, size_t count, off_t offset) {
  size_t done = 0;
  while (done < count) {
    const ssize_t n = io->Pread(fd, static_cast<char*>(buf) + done, count - done,
                                offset + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(done);
}

int PwriteFull(IoHooks* io, int fd, const void* buf, size_t count, off_t offset) {
  size_t done = 0;
  while (done < count) {
    const ssize_t n = io->Pwrite(fd, static_cast<const char*>(buf) + done, count - done,
                                 offset + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) {
      errno = ENOSPC;
      return -1;
    }
    done += static_cast<size_t>(n);
  }
  return 0;
}

// Drops the first n bytes (and any empty entries) from the front of an iovec array.
void AdvanceIov(struct iovec*& iov, int& iovcnt, size_t n) {
  while (iovcnt > 0 && n >= iov->iov_len) {
    n -= iov->iov_len;
    ++iov;
    --iovcnt;
  }
  if (iovcnt > 0 && n > 0) {
    iov->iov_base = static_cast<char*>(iov->iov_base) + n;
    iov->iov_len -= n;
  }
}

// Vectored variants (header and payload in one system call); iov is consumed. Return as above.
ssize_t PreadvFull(IoHooks* io, int fd, struct iovec* iov, int iovcnt, off_t offset) {
  size_t done = 0;
  AdvanceIov(iov, iovcnt, 0);
  while (iovcnt > 0) {
    const ssize_t n = io->Preadv(fd, iov, iovcnt, offset + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
    AdvanceIov(iov, iovcnt, static_cast<size_t>(n));
  }
  return static_cast<ssize_t>(done);
}

int PwritevFull(IoHooks* io, int fd, struct iovec* iov, int iovcnt, off_t offset) {
  size_t done = 0;
  AdvanceIov(iov, iovcnt, 0);
  while (iovcnt > 0) {
    const ssize_t n = io->Pwritev(fd, iov, iovcnt, offset + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) {
      errno = ENOSPC;
      return -1;
    }
    done += static_cast<size_t>(n);
    AdvanceIov(iov, iovcnt, static_cast<size_t>(n));
  }
  return 0;
}

std::string ShardName(const Hash128& id) {
  char buf[3];
  std::snprintf(buf, sizeof(buf), "%02x", static_cast<unsigned>(id.hi >> 56));
  return buf;
}

Status MkdirOne(IoHooks* io, const std::string& path) {
  if (io->Mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) return Status::Ok();
  return ErrnoStatus(errno, "create directory " + path);
}

Status MkdirAll(IoHooks* io, const std::string& path) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos == path.size() || path[pos] == '/') {
      KVSTAR_RETURN_IF_ERROR(MkdirOne(io, path.substr(0, pos)));
    }
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::unique_ptr<FileStore>> FileStore::Open(const std::string& dir,
                                                     const StoreOptions& options) {
  if (dir.empty()) return InvalidArgument("file store: empty directory path");
  if (options.io_threads < 0) {
    return InvalidArgument("file store: io_threads must be >= 0, got %d", options.io_threads);
  }
  std::string clean = dir;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  std::unique_ptr<FileStore> store(new FileStore(clean, options));
  Status s = store->Init();
  if (!s.ok()) return s.WithContext("opening file store " + clean);
  return store;
}

FileStore::FileStore(std::string dir, const StoreOptions& options)
    : AsyncBlockStore(options, "kvfile"),
      dir_(std::move(dir)),
      io_(options.io_hooks ? options.io_hooks : DefaultIoHooks()) {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') std::strcpy(host, "localhost");
  // The host name goes into temp file names; keep it to characters that cannot form a path.
  for (char* c = host; *c; ++c) {
    if (*c == '/' || *c == '.') *c = '_';
  }
  host_ = host;
}

FileStore::~FileStore() { StopIo(); }

Status FileStore::Init() {
  struct stat st;
  if (::stat(dir_.c_str(), &st) != 0) {
    if (errno != ENOENT) return ErrnoStatus(errno, "stat " + dir_);
    if (!options().create_if_missing) {
      return NotFound("directory %s does not exist (create it, or allow creation)", dir_.c_str());
    }
    KVSTAR_RETURN_IF_ERROR(MkdirAll(io_, dir_));
  } else if (!S_ISDIR(st.st_mode)) {
    return FailedPrecondition("%s exists and is not a directory", dir_.c_str());
  }
  const std::string marker = dir_ + "/" + kMarkerName;
  auto text = ReadFileToString(marker);
  if (text.ok()) {
    if (*text != kMarkerText) {
      return FailedPrecondition("%s: unknown store format '%.40s' (this build writes '%.20s')",
                                marker.c_str(), text->c_str(), kMarkerText);
    }
  } else if (text.status().code() == StatusCode::kNotFound) {
    DIR* d = ::opendir(dir_.c_str());
    if (d == nullptr) return ErrnoStatus(errno, "open directory " + dir_);
    bool empty = true;
    while (dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) empty = false;
    }
    ::closedir(d);
    if (!empty) {
      return FailedPrecondition(
          "%s is not empty and has no %s marker: not a kvstar block store; use an empty or new "
          "directory",
          dir_.c_str(), kMarkerName);
    }
    const int fd = io_->Open(marker.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoStatus(errno, "create " + marker);
    ScopedFd f(io_, fd);
    if (PwriteFull(io_, fd, kMarkerText, sizeof(kMarkerText) - 1, 0) != 0 || f.Close() != 0) {
      return ErrnoStatus(errno, "write " + marker);
    }
  } else {
    return text.status();
  }
  KVSTAR_RETURN_IF_ERROR(MkdirOne(io_, dir_ + "/blocks"));
  KVSTAR_RETURN_IF_ERROR(MkdirOne(io_, dir_ + "/tmp"));
  // Shard directories are made on first use (see DumpPadded), which keeps small stores small.
  KVSTAR_RETURN_IF_ERROR(CleanTempFiles());
  return ScanBlocks();
}

Status FileStore::CleanTempFiles() {
  const std::string tmp_dir = dir_ + "/tmp";
  DIR* d = ::opendir(tmp_dir.c_str());
  if (d == nullptr) return ErrnoStatus(errno, "open directory " + tmp_dir);
  const pid_t self = ::getpid();
  const time_t now = std::time(nullptr);
  std::vector<std::string> doomed;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() < 4 || name.compare(name.size() - 4, 4, ".tmp") != 0) continue;
    // <32 hex>.<host>.<pid>.<seq>.tmp
    const size_t seq_dot = name.rfind('.', name.size() - 5);
    const size_t pid_dot = seq_dot == std::string::npos ? seq_dot : name.rfind('.', seq_dot - 1);
    if (pid_dot == std::string::npos || pid_dot < 33) continue;
    const std::string host = name.substr(33, pid_dot - 33);
    const pid_t pid = static_cast<pid_t>(std::atol(name.substr(pid_dot + 1).c_str()));
    struct stat st;
    if (::fstatat(::dirfd(d), e->d_name, &st, 0) != 0) continue;
    const bool stale = now - st.st_mtime > kStaleTempSeconds;
    bool dead = false;
    if (host == host_ && pid > 0 && pid != self) dead = ::kill(pid, 0) != 0 && errno == ESRCH;
    if (dead || (stale && !(host == host_ && pid == self))) doomed.push_back(tmp_dir + "/" + name);
  }
  ::closedir(d);
  for (const std::string& path : doomed) {
    if (io_->Unlink(path.c_str()) == 0) ++cleaned_temp_files_;
  }
  if (cleaned_temp_files_ > 0) {
    KVSTAR_LOG(kInfo, "file store %s: removed %zu temp files of interrupted writers", dir_.c_str(),
               cleaned_temp_files_);
  }
  return Status::Ok();
}

Status FileStore::ScanBlocks() {
  std::vector<std::tuple<int64_t, Hash128, uint64_t>> found;  // (mtime ns, id, bytes)
  for (unsigned shard = 0; shard < 256; ++shard) {
    char name[16];
    std::snprintf(name, sizeof(name), "/blocks/%02x", shard);
    const std::string shard_dir = dir_ + name;
    DIR* d = ::opendir(shard_dir.c_str());
    if (d == nullptr && errno == ENOENT) continue;  // never used
    if (d == nullptr) return ErrnoStatus(errno, "open directory " + shard_dir);
    while (dirent* e = ::readdir(d)) {
      const std::string_view fname = e->d_name;
      if (fname.size() != 36 || fname.substr(32) != ".kvb") continue;
      Hash128 id;
      if (!Hash128::FromHex(fname.substr(0, 32), &id)) continue;
      struct stat st;
      if (::fstatat(::dirfd(d), e->d_name, &st, 0) != 0 || !S_ISREG(st.st_mode)) continue;
      found.emplace_back(int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec, id,
                         static_cast<uint64_t>(st.st_size));
    }
    ::closedir(d);
  }
  std::sort(found.begin(), found.end());
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [mtime, id, bytes] : found) {  // oldest first, so newest ends at the front
      lru_.push_front(id);
      index_[id] = Entry{.disk_bytes = bytes, .pins = 0, .lru_pos = lru_.begin()};
      used_bytes_ += bytes;
    }
  }
  // Applies a capacity that shrank since the last run.
  return Reserve(0);
}

std::string FileStore::BlockPath(const Hash128& id) const {
  return dir_ + "/blocks/" + ShardName(id) + "/" + id.ToHex() + ".kvb";
}

std::string FileStore::Describe() const {
  char buf[160];
  std::snprintf(buf, sizeof(buf), " (%s, fsync %s, %d I/O threads, capacity %s)",
                options().use_o_direct ? "O_DIRECT" : "buffered",
                options().fsync == FsyncPolicy::kNone   ? "none"
                : options().fsync == FsyncPolicy::kData ? "data"
                                                        : "full",
                options().io_threads, options().file_capacity_bytes == 0 ? "unlimited" : "limited");
  return "file:" + dir_ + buf;
}

Status FileStore::Reserve(uint64_t disk_bytes) {
  const uint64_t cap = options().file_capacity_bytes;
  std::vector<Hash128> victims;
  Status status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (cap != 0) {
      auto it = lru_.end();
      while (used_bytes_ + disk_bytes > cap && it != lru_.begin()) {
        --it;
        auto e = index_.find(*it);
        if (e->second.pins > 0) continue;
        used_bytes_ -= e->second.disk_bytes;
        victims.push_back(*it);
        index_.erase(e);
        it = lru_.erase(it);
      }
    }
    if (cap != 0 && used_bytes_ + disk_bytes > cap) {
      status = ResourceExhausted(
          "file store %s full: %llu of %llu bytes in use and pinned, %llu "
          "more needed",
          dir_.c_str(), static_cast<unsigned long long>(used_bytes_),
          static_cast<unsigned long long>(cap), static_cast<unsigned long long>(disk_bytes));
    } else {
      used_bytes_ += disk_bytes;
    }
  }
  stats().AddEvictions(victims.size());
  for (const Hash128& id : victims) {
    const std::string path = BlockPath(id);
    if (io_->Unlink(path.c_str()) != 0 && errno != ENOENT) {
      KVSTAR_LOG(kWarn, "evicting %s: %s", path.c_str(), std::strerror(errno));
    }
  }
  return status;
}

void FileStore::Unreserve(uint64_t disk_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  used_bytes_ -= disk_bytes;
}

void FileStore::Commit(const Hash128& id, uint64_t disk_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(id);
  if (it != index_.end()) {
    used_bytes_ -= it->second.disk_bytes;
    it->second.disk_bytes = disk_bytes;
    lru_.splice(lru_.begin(), lru_, it->second.lru_pos);
    return;
  }
  lru_.push_front(id);
  index_.emplace(id, Entry{.disk_bytes = disk_bytes, .pins = 0, .lru_pos = lru_.begin()});
}

bool FileStore::AdoptFromDisk(const Hash128& id) {
  struct stat st;
  if (::stat(BlockPath(id).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  std::lock_guard<std::mutex> lock(mu_);
  if (index_.count(id) == 0) {
    lru_.push_front(id);
    index_.emplace(
        id,
        Entry{.disk_bytes = static_cast<uint64_t>(st.st_size), .pins = 0, .lru_pos = lru_.begin()});
    used_bytes_ += static_cast<uint64_t>(st.st_size);
  }
  return true;
}

void FileStore::Forget(const Hash128& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(id);
  if (it == index_.end()) return;
  used_bytes_ -= it->second.disk_bytes;
  lru_.erase(it->second.lru_pos);
  index_.erase(it);
}

void FileStore::Unpin(const Hash128& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(id);
  if (it != index_.end() && it->second.pins > 0) --it->second.pins;
}

Status FileStore::DumpSync(const DumpItem& item) { return DumpPadded(item, item.bytes); }

Status FileStore::DumpPadded(const DumpItem& item, size_t readable_bytes) {
  const std::string hex = item.id.ToHex();
  if (item.bytes > options().max_entry_bytes) {
    return InvalidArgument("entry %s is %zu bytes, above the store's maximum entry size %zu",
                           hex.c_str(), item.bytes, options().max_entry_bytes);
  }
  if (item.bytes > 0 && item.src == nullptr) {
    return InvalidArgument("entry %s: null source for %zu bytes", hex.c_str(), item.bytes);
  }
  const uint64_t disk_bytes =
      kHeaderBytes + (options().use_o_direct ? RoundUp(item.bytes, kAlign) : item.bytes);
  KVSTAR_RETURN_IF_ERROR(Reserve(disk_bytes));

  char suffix[64];
  std::snprintf(suffix, sizeof(suffix), ".%d.%llu.tmp", static_cast<int>(::getpid()),
                static_cast<unsigned long long>(temp_seq_.fetch_add(1)));
  const std::string tmp = dir_ + "/tmp/" + hex + "." + host_ + suffix;
  const std::string path = BlockPath(item.id);
  uint64_t written = 0;
  Status s = WriteFile(tmp, item, readable_bytes, &written);
  if (s.ok() && io_->Rename(tmp.c_str(), path.c_str()) != 0) {
    // First block of its shard (or the shard was removed under us): make the directory.
    if (errno == ENOENT && MkdirOne(io_, dir_ + "/blocks").ok() &&
        MkdirOne(io_, dir_ + "/blocks/" + ShardName(item.id)).ok() &&
        io_->Rename(tmp.c_str(), path.c_str()) == 0) {
    } else {
      s = ErrnoStatus(errno, "rename " + tmp + " to " + path);
    }
  }
  if (s.ok() && options().fsync == FsyncPolicy::kFull) {
    const std::string shard = dir_ + "/blocks/" + ShardName(item.id);
    const int dfd = io_->Open(shard.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (dfd < 0 || io_->Fsync(dfd) != 0) s = ErrnoStatus(errno, "fsync directory " + shard);
    if (dfd >= 0) io_->Close(dfd);
  }
  if (!s.ok()) {
    io_->Unlink(tmp.c_str());  // best effort: it may not exist
    Unreserve(disk_bytes);
    return s.WithContext("dump block " + hex);
  }
  Commit(item.id, disk_bytes);
  return Status::Ok();
}

Status FileStore::WriteFile(const std::string& tmp, const DumpItem& item, size_t readable_bytes,
                            uint64_t* disk_bytes) {
  const bool direct = options().use_o_direct;
  const int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | (direct ? O_DIRECT : 0);
  const int fd = io_->Open(tmp.c_str(), flags, 0644);
  if (fd < 0) return ErrnoStatus(errno, "create " + tmp);
  ScopedFd f(io_, fd);
  void* header = tls_header.Get(kHeaderBytes);
  if (header == nullptr) return ResourceExhausted("no memory for a block header");
  file_format::EncodeHeader(item.id, item.bytes, file_format::PayloadChecksum(item.src, item.bytes),
                            header);
  char* src = static_cast<char*>(const_cast<void*>(item.src));  // iovec wants non-const
  const size_t padded = direct ? RoundUp(item.bytes, kAlign) : item.bytes;
  // Header plus as much payload as can go straight from the caller's memory, in one call;
  // under O_DIRECT the unaligned rest goes through a bounce buffer.
  size_t direct_bytes = item.bytes;
  if (direct) {
    direct_bytes = !IsAligned(src)            ? 0
                   : readable_bytes >= padded ? padded
                                              : item.bytes / kAlign * kAlign;
  }
  struct iovec iov[2] = {{header, kHeaderBytes}, {src, direct_bytes}};
  if (PwritevFull(io_, fd, iov, 2, 0) != 0) return ErrnoStatus(errno, "write " + tmp);
  for (size_t off = direct_bytes; off < padded; off += kBounceChunk) {
    const size_t chunk = std::min(kBounceChunk, padded - off);
    char* bounce = static_cast<char*>(tls_bounce.Get(kBounceChunk));
    if (bounce == nullptr) return ResourceExhausted("no memory for an O_DIRECT bounce buffer");
    const size_t data = std::min(chunk, item.bytes - off);
    std::memcpy(bounce, src + off, data);
    std::memset(bounce + data, 0, chunk - data);
    if (PwriteFull(io_, fd, bounce, chunk, static_cast<off_t>(kHeaderBytes + off)) != 0) {
      return ErrnoStatus(errno, "write " + tmp);
    }
  }
  *disk_bytes = kHeaderBytes + padded;
  if (options().fsync != FsyncPolicy::kNone && io_->Fdatasync(fd) != 0) {
    return ErrnoStatus(errno, "fdatasync " + tmp);
  }
  if (f.Close() != 0) return ErrnoStatus(errno, "close " + tmp);
  return Status::Ok();
}

Status FileStore::ReadFile(const std::string& path, const LoadItem& item, size_t* bytes,
                           ino_t* inode) {
  const bool direct = options().use_o_direct;
  const int fd = io_->Open(path.c_str(), O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0), 0);
  if (fd < 0) return ErrnoStatus(errno, "open " + path);
  ScopedFd f(io_, fd);
  struct stat st;
  *inode = ::fstat(fd, &st) == 0 ? st.st_ino : 0;
  void* header = tls_header.Get(kHeaderBytes);
  if (header == nullptr) return ResourceExhausted("no memory for a block header");
  char* dst = static_cast<char*>(item.dst);
  // Header and payload in one call: the payload size is unknown until the header is read, so
  // read up to the capacity (the read stops at the end of the file). Under O_DIRECT only an
  // aligned destination is read into directly, and only whole 4 KiB pages of it.
  size_t direct_bytes = item.capacity;
  if (direct) direct_bytes = IsAligned(dst) ? item.capacity / kAlign * kAlign : 0;
  struct iovec iov[2] = {{header, kHeaderBytes}, {dst, direct_bytes}};
  const ssize_t got = PreadvFull(io_, fd, iov, 2, 0);
  if (got < 0) return ErrnoStatus(errno, "read " + path);
  if (static_cast<size_t>(got) < kHeaderBytes) {
    return DataLoss("%s: truncated block file (%zd bytes, header needs %zu)", path.c_str(), got,
                    kHeaderBytes);
  }
  KVSTAR_ASSIGN_OR_RETURN(file_format::BlockHeader h,
                          file_format::DecodeHeader(header, item.id, path.c_str()));
  const size_t payload = h.payload_bytes;
  *bytes = payload;
  if (payload > item.capacity) {
    return OutOfRange("block %s is %zu bytes, destination holds %zu", item.id.ToHex().c_str(),
                      payload, item.capacity);
  }
  const size_t have = static_cast<size_t>(got) - kHeaderBytes;
  auto truncated = [&](size_t n) {
    return DataLoss("%s: truncated block file (payload %zu of %zu bytes)", path.c_str(), n,
                    payload);
  };
  if (have < std::min(payload, direct_bytes)) return truncated(have);
  const size_t padded = RoundUp(payload, kAlign);
  for (size_t off = direct_bytes; off < payload; off += kBounceChunk) {
    const size_t chunk = std::min(kBounceChunk, padded - off);
    char* bounce = static_cast<char*>(tls_bounce.Get(kBounceChunk));
    if (bounce == nullptr) return ResourceExhausted("no memory for an O_DIRECT bounce buffer");
    const ssize_t n = PreadFull(io_, fd, bounce, chunk, static_cast<off_t>(kHeaderBytes + off));
    if (n < 0) return ErrnoStatus(errno, "read " + path);
    const size_t want = std::min(chunk, payload - off);
    if (static_cast<size_t>(n) < want) return truncated(off + static_cast<size_t>(n));
    std::memcpy(dst + off, bounce, want);
  }
  if (file_format::PayloadChecksum(dst, payload) != h.payload_checksum) {
    return DataLoss("%s: payload checksum mismatch (corrupt block)", path.c_str());
  }
  return Status::Ok();
}

Status FileStore::LoadSync(const LoadItem& item, size_t* bytes) {
  auto pin = [&] {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(item.id);
    if (it == index_.end()) return false;
    ++it->second.pins;
    lru_.splice(lru_.begin(), lru_, it->second.lru_pos);
    return true;
  };
  if (!pin() && !(AdoptFromDisk(item.id) && pin())) {
    return NotFound("block %s not in file store %s", item.id.ToHex().c_str(), dir_.c_str());
  }
  const std::string path = BlockPath(item.id);
  ino_t read_inode = 0;
  Status s = ReadFile(path, item, bytes, &read_inode);
  Unpin(item.id);
  if (s.code() == StatusCode::kNotFound) {
    Forget(item.id);  // removed by another process
  } else if (s.code() == StatusCode::kDataLoss) {
    // Delete the corrupt file so that the id reads as missing and gets recomputed, unless a
    // writer replaced it meanwhile (a different inode).
    struct stat now;
    if (read_inode != 0 && ::stat(path.c_str(), &now) == 0 && now.st_ino == read_inode) {
      io_->Unlink(path.c_str());
      Forget(item.id);
    }
    KVSTAR_LOG(kWarn, "%s", s.ToString().c_str());
  }
  return s;
}

std::vector<bool> FileStore::Lookup(std::span<const Hash128> ids) {
  std::vector<bool> found(ids.size());
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < ids.size(); ++i) found[i] = index_.count(ids[i]) != 0;
  }
  uint64_t hits = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!found[i]) found[i] = AdoptFromDisk(ids[i]);
    hits += found[i];
  }
  stats().AddHits(hits);
  stats().AddMisses(ids.size() - hits);
  return found;
}

Status FileStore::Remove(std::span<const Hash128> ids) {
  Status first;
  for (const Hash128& id : ids) {
    Forget(id);
    const std::string path = BlockPath(id);
    if (io_->Unlink(path.c_str()) != 0 && errno != ENOENT && first.ok()) {
      first = ErrnoStatus(errno, "remove " + path);
    }
  }
  return first;
}

void FileStore::FillStats(StoreStats* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  out->entries = index_.size();
  out->used_bytes = used_bytes_;
  out->capacity_bytes = options().file_capacity_bytes;
}

}  // namespace kvstar
