#include "kv/device_pool.h"

#include <algorithm>

namespace kvstar {

DevicePool::DevicePool(const KvGeometry& geom, size_t num_slots)
    : geom_(geom),
      block_bytes_(geom.block_bytes()),
      num_slots_(num_slots),
      arena_(num_slots * geom.block_bytes()),
      in_use_(num_slots, 0) {
  KVSTAR_CHECK(num_slots > 0 && block_bytes_ > 0, "num_slots=%zu block_bytes=%zu", num_slots,
               block_bytes_);
  free_.reserve(num_slots);
  for (size_t i = num_slots; i-- > 0;) free_.push_back(static_cast<int>(i));
}

size_t DevicePool::SlotsForBudget(const KvGeometry& geom, size_t budget_bytes) {
  return std::max<size_t>(1, budget_bytes / geom.block_bytes());
}

StatusOr<int> DevicePool::Allocate() {
  std::lock_guard<std::mutex> lock(mu_);
  if (free_.empty()) {
    return ResourceExhausted(
        "KV device pool is full: all %zu blocks of %zu bytes (%.1f MiB) are in use; raise the KV "
        "budget (--device-kv-budget) or shorten the prompt",
        num_slots_, block_bytes_, capacity_bytes() / 1048576.0);
  }
  const int slot = free_.back();
  free_.pop_back();
  in_use_[static_cast<size_t>(slot)] = 1;
  return slot;
}

void DevicePool::Free(int slot) {
  std::lock_guard<std::mutex> lock(mu_);
  KVSTAR_CHECK(slot >= 0 && static_cast<size_t>(slot) < num_slots_, "slot %d of %zu", slot,
               num_slots_);
  KVSTAR_CHECK(in_use_[static_cast<size_t>(slot)], "double free of slot %d", slot);
  in_use_[static_cast<size_t>(slot)] = 0;
  free_.push_back(slot);
}

size_t DevicePool::free_slots() const {
  std::lock_guard<std::mutex> lock(mu_);
  return free_.size();
}

}  // namespace kvstar
