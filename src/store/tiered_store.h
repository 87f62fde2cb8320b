// TieredStore: a DramStore in front of a FileStore. Dumps go to DRAM and then to the file tier
// (write-behind by default: the Dump is Ready when the DRAM copy is made and the DRAM entry stays
// pinned until its file copy is committed); loads read DRAM first and on a miss read the file and
// promote the block into DRAM. When DRAM cannot take a block (all of it pinned) the Dump writes
// the file directly from the caller's buffer.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "base/thread_pool.h"
#include "store/async_store.h"
#include "store/dram/dram_store.h"
#include "store/file/file_store.h"

namespace kvstar {

class TieredStore final : public store_internal::AsyncBlockStore {
 public:
  static StatusOr<std::unique_ptr<TieredStore>> Open(const std::string& dir,
                                                     const StoreOptions& options);
  ~TieredStore() override;

  std::vector<bool> Lookup(std::span<const Hash128> ids) override;
  Status Remove(std::span<const Hash128> ids) override;
  Status Flush() override;
  std::string Describe() const override;
  Status DumpSync(const DumpItem& item) override;
  Status LoadSync(const LoadItem& item, size_t* bytes) override;

  DramStore& dram() { return *dram_; }
  FileStore& file() { return *file_; }

 private:
  TieredStore(const StoreOptions& options, std::unique_ptr<DramStore> dram,
              std::unique_ptr<FileStore> file);
  void FillStats(StoreStats* out) const override;
  void WriteBehind(const Hash128& id, std::shared_ptr<DramStore::Pin> pin);

  std::unique_ptr<DramStore> dram_;
  std::unique_ptr<FileStore> file_;
  // Separate threads for write-behind so that file writes never queue in front of loads.
  std::unique_ptr<ThreadPool> writer_;

  mutable std::mutex mu_;  // guards the write-behind bookkeeping below
  std::condition_variable idle_cv_;
  std::unordered_map<Hash128, int, Hash128Hasher> pending_;  // id -> write-behinds in flight
  std::unordered_set<Hash128, Hash128Hasher> removed_while_pending_;
  size_t pending_total_ = 0;
  uint64_t write_behind_failures_ = 0;
  Status first_write_behind_error_;
};

}  // namespace kvstar
