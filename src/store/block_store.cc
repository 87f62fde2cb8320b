#include "store/block_store.h"

#include <cstdlib>

#include "store/async_store.h"

namespace kvstar {
namespace {

class AlignedAllocAllocator final : public HostAllocator {
 public:
  void* Allocate(size_t bytes, size_t alignment) override {
    // aligned_alloc wants a size that is a multiple of the alignment.
    const size_t rounded = (bytes + alignment - 1) / alignment * alignment;
    return std::aligned_alloc(alignment, rounded == 0 ? alignment : rounded);
  }
  void Free(void* p, size_t bytes) override { std::free(p); }
};

}  // namespace

HostAllocator* DefaultHostAllocator() {
  static AlignedAllocAllocator* allocator = new AlignedAllocAllocator();
  return allocator;
}

double LatencyHistogram::PercentileUs(double p) const {
  if (count == 0) return 0.0;
  const double target = p * static_cast<double>(count);
  uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += buckets[b];
    if (static_cast<double>(seen) >= target && buckets[b] > 0) {
      return b == 0 ? 1.0 : static_cast<double>(uint64_t{1} << b);
    }
  }
  return max_us;
}

StoreTask::StoreTask(std::shared_ptr<store_internal::TaskState> state)
    : state_(std::move(state)),
      completion_(state_ ? CompletionPtr(state_, &state_->completion()) : nullptr) {}

bool StoreTask::Ready() const {
  KVSTAR_CHECK(state_ != nullptr, "Ready() on an empty StoreTask");
  return completion_->Ready();
}

Status StoreTask::Wait(std::chrono::milliseconds timeout) const {
  KVSTAR_CHECK(state_ != nullptr, "Wait() on an empty StoreTask");
  return completion_->Wait(timeout);
}

void StoreTask::Cancel() {
  KVSTAR_CHECK(state_ != nullptr, "Cancel() on an empty StoreTask");
  completion_->RequestCancel();
}

void StoreTask::CheckReady(const char* what) const {
  KVSTAR_CHECK(state_ != nullptr && completion_->Ready(), "StoreTask::%s before the task is Ready",
               what);
}

size_t StoreTask::size() const {
  KVSTAR_CHECK(state_ != nullptr, "size() on an empty StoreTask");
  return state_->size();
}

const Status& StoreTask::item_status(size_t i) const {
  CheckReady("item_status");
  KVSTAR_CHECK(i < state_->size(), "item %zu of %zu", i, state_->size());
  return state_->item_status(i);
}

size_t StoreTask::item_bytes(size_t i) const {
  CheckReady("item_bytes");
  KVSTAR_CHECK(i < state_->size(), "item %zu of %zu", i, state_->size());
  return state_->item_bytes(i);
}

std::vector<Hash128> StoreTask::failed_ids() const {
  CheckReady("failed_ids");
  std::vector<Hash128> out;
  for (size_t i = 0; i < state_->size(); ++i) {
    if (!state_->item_status(i).ok()) out.push_back(state_->id(i));
  }
  return out;
}

const CompletionPtr& StoreTask::completion() const {
  KVSTAR_CHECK(state_ != nullptr, "completion() on an empty StoreTask");
  return completion_;
}

}  // namespace kvstar
