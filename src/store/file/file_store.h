// FileStore: one file per block in a directory on local disk or a shared mount (NFS, Lustre).
//
// Layout under the store directory:
//   KVSTORE                    marker + format version; a non-empty directory without it is
//                              refused, so a mistyped path never gets its files evicted
//   blocks/XX/<32 hex>.kvb     XX = the id's top byte: 256 shards; paths come only from ids
//   tmp/<hex>.<host>.<pid>.<n>.tmp   in-progress writes, renamed into blocks/ when complete
// A block becomes visible only by rename(2) of a complete file, so a killed writer leaves at most
// temp files, which the next Open removes (same host: when their pid is gone; other hosts: after
// an hour). Every load verifies the header and the payload checksum (store/file/block_format.h);
// a corrupt file fails with DataLoss for its id and is deleted, so the id reads as missing next.
//
// I/O runs as pread/pwrite on the store's I/O threads (one blocking call per item and thread, so
// the queue depth the device sees is min(items in flight, io_threads)). With use_o_direct the
// page cache is bypassed; caller buffers aligned to 4096 bytes are read/written directly, others
// go through per-thread aligned bounce buffers.
//
// Capacity: bytes on disk, LRU by last use in this process (by mtime for files found at open).
// Blocks written by other processes sharing the directory are found by Lookup/Load on demand.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "store/async_store.h"
#include "store/file/io_hooks.h"

namespace kvstar {

class FileStore final : public store_internal::AsyncBlockStore {
 public:
  static StatusOr<std::unique_ptr<FileStore>> Open(const std::string& dir,
                                                   const StoreOptions& options);
  ~FileStore() override;

  std::vector<bool> Lookup(std::span<const Hash128> ids) override;
  Status Remove(std::span<const Hash128> ids) override;
  std::string Describe() const override;
  Status DumpSync(const DumpItem& item) override;
  Status LoadSync(const LoadItem& item, size_t* bytes) override;
  // DumpSync where src may be read up to `readable_bytes` (>= item.bytes): lets an O_DIRECT
  // writer use a padded, aligned source (DRAM tier memory) without a bounce copy.
  Status DumpPadded(const DumpItem& item, size_t readable_bytes);

  const std::string& dir() const { return dir_; }
  std::string BlockPath(const Hash128& id) const;
  // Temp files of dead writers removed by Open.
  size_t cleaned_temp_files() const { return cleaned_temp_files_; }

 private:
  struct Entry {
    uint64_t disk_bytes = 0;
    int pins = 0;
    std::list<Hash128>::iterator lru_pos;
  };

  FileStore(std::string dir, const StoreOptions& options);
  Status Init();
  Status ScanBlocks();
  Status CleanTempFiles();
  void FillStats(StoreStats* out) const override;
  // Reserves disk_bytes of capacity, evicting cold unpinned blocks (unlinked after the lock).
  Status Reserve(uint64_t disk_bytes);
  void Unreserve(uint64_t disk_bytes);
  // Adds a committed block to the index (replacing an older one), given its reserved bytes.
  void Commit(const Hash128& id, uint64_t disk_bytes);
  // Index entry for a block written by another process (stat on disk), or false.
  bool AdoptFromDisk(const Hash128& id);
  void Forget(const Hash128& id);
  void Unpin(const Hash128& id);
  Status WriteFile(const std::string& tmp, const DumpItem& item, size_t readable_bytes,
                   uint64_t* disk_bytes);
  // *inode: the inode read (0 if unknown), so that a corrupt file is deleted only if unchanged.
  Status ReadFile(const std::string& path, const LoadItem& item, size_t* bytes, ino_t* inode);

  const std::string dir_;
  IoHooks* const io_;
  std::string host_;
  std::atomic<uint64_t> temp_seq_{0};
  size_t cleaned_temp_files_ = 0;

  mutable std::mutex mu_;  // guards the index; never held across I/O
  std::unordered_map<Hash128, Entry, Hash128Hasher> index_;
  std::list<Hash128> lru_;   // front: most recently used
  uint64_t used_bytes_ = 0;  // committed + reserved
};

}  // namespace kvstar
