#include "store/tiered_store.h"

#include <algorithm>

#include "base/logging.h"

namespace kvstar {

StatusOr<std::unique_ptr<TieredStore>> TieredStore::Open(const std::string& dir,
                                                         const StoreOptions& options) {
  StoreOptions inner = options;
  inner.io_threads = 0;  // the tiers run inline on the TieredStore's own threads
  KVSTAR_ASSIGN_OR_RETURN(std::unique_ptr<DramStore> dram, DramStore::Create(inner));
  KVSTAR_ASSIGN_OR_RETURN(std::unique_ptr<FileStore> file, FileStore::Open(dir, inner));
  return std::unique_ptr<TieredStore>(new TieredStore(options, std::move(dram), std::move(file)));
}

TieredStore::TieredStore(const StoreOptions& options, std::unique_ptr<DramStore> dram,
                         std::unique_ptr<FileStore> file)
    : AsyncBlockStore(options, "kvtier"), dram_(std::move(dram)), file_(std::move(file)) {
  if (options.write_behind) {
    writer_ = std::make_unique<ThreadPool>(ThreadPoolOptions{
        .num_threads = std::max(1, options.io_threads / 2) + 1, .name = "kvtierwb"});
  }
}

TieredStore::~TieredStore() {
  StopIo();         // no new write-behind after this
  writer_.reset();  // drains the write-behind queue; every pin is released
}

std::string TieredStore::Describe() const {
  return "tiered: " + dram_->Describe() + " over " + file_->Describe() +
         (options().write_behind ? ", write-behind" : ", write-through");
}

Status TieredStore::DumpSync(const DumpItem& item) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    removed_while_pending_.erase(item.id);  // a new dump wins over an earlier Remove
  }
  auto pin = dram_->Put(item);
  if (!pin.ok()) {
    if (pin.status().code() == StatusCode::kInvalidArgument) return pin.status();
    // DRAM is full of pinned entries: write the file straight from the caller's buffer.
    return file_->DumpSync(item);
  }
  if (!writer_) {
    const DumpItem from_dram{item.id, pin->data(), item.bytes};
    return file_->DumpPadded(from_dram, pin->padded_bytes());
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++pending_[item.id];
    ++pending_total_;
  }
  auto shared_pin = std::make_shared<DramStore::Pin>(std::move(pin).value());
  writer_->Submit([this, id = item.id, shared_pin] { WriteBehind(id, shared_pin); });
  return Status::Ok();
}

void TieredStore::WriteBehind(const Hash128& id, std::shared_ptr<DramStore::Pin> pin) {
  const DumpItem from_dram{id, pin->data(), pin->bytes()};
  Status s = file_->DumpPadded(from_dram, pin->padded_bytes());
  pin->Release();
  bool remove_file = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(id);
    KVSTAR_CHECK(it != pending_.end() && it->second > 0, "write-behind of %s not pending",
                 id.ToHex().c_str());
    if (--it->second == 0) {
      pending_.erase(it);
      remove_file = removed_while_pending_.erase(id) > 0;
    }
    if (!s.ok()) {
      ++write_behind_failures_;
      if (first_write_behind_error_.ok()) first_write_behind_error_ = s;
    }
    --pending_total_;
  }
  if (!s.ok()) {
    KVSTAR_LOG(kWarn, "write-behind to the file tier failed (block stays in DRAM only): %s",
               s.ToString().c_str());
  }
  if (remove_file) {
    const Hash128 ids[1] = {id};
    file_->Remove(ids).IgnoreError();  // best effort; the block was removed from the store
  }
  idle_cv_.notify_all();
}

Status TieredStore::LoadSync(const LoadItem& item, size_t* bytes) {
  Status s = dram_->LoadSync(item, bytes);
  if (s.code() != StatusCode::kNotFound) return s;
  KVSTAR_RETURN_IF_ERROR(file_->LoadSync(item, bytes));
  // Promotion is an optimisation: a full DRAM tier just skips it.
  if (dram_->Put(DumpItem{item.id, item.dst, *bytes}).ok()) stats().AddPromotion();
  return Status::Ok();
}

std::vector<bool> TieredStore::Lookup(std::span<const Hash128> ids) {
  std::vector<bool> found = dram_->Lookup(ids);
  std::vector<Hash128> rest;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!found[i]) rest.push_back(ids[i]);
  }
  if (!rest.empty()) {
    const std::vector<bool> in_file = file_->Lookup(rest);
    for (size_t i = 0, j = 0; i < ids.size(); ++i) {
      if (!found[i]) found[i] = in_file[j++];
    }
  }
  const uint64_t hits = static_cast<uint64_t>(std::count(found.begin(), found.end(), true));
  stats().AddHits(hits);
  stats().AddMisses(ids.size() - hits);
  return found;
}

Status TieredStore::Remove(std::span<const Hash128> ids) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Hash128& id : ids) {
      if (pending_.count(id)) removed_while_pending_.insert(id);
    }
  }
  Status d = dram_->Remove(ids);
  Status f = file_->Remove(ids);
  return d.ok() ? f : d;
}

Status TieredStore::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [this] { return pending_total_ == 0; });
  return std::exchange(first_write_behind_error_, Status::Ok());
}

void TieredStore::FillStats(StoreStats* out) const {
  const StoreStats file = file_->Stats();
  const StoreStats dram = dram_->Stats();
  out->entries = file.entries;
  out->used_bytes = file.used_bytes;
  out->capacity_bytes = file.capacity_bytes;
  out->evictions = dram.evictions + file.evictions;
  std::lock_guard<std::mutex> lock(mu_);
  out->write_behind_pending = pending_total_;
  out->write_behind_failures = write_behind_failures_;
}

}  // namespace kvstar
