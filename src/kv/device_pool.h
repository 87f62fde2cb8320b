// DevicePool: a fixed array of KV block slots in the compute device's memory. On the CPU backend
// it is a bounded RAM arena; the CUDA backend provides HBM slots behind the same interface.
// Thread-safe: several requests allocate and free slots concurrently.
#pragma once

#include <cstddef>
#include <mutex>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/kv_layout.h"
#include "base/status.h"

namespace kvstar {

class DevicePool {
 public:
  // num_slots blocks of geom.block_bytes() each.
  DevicePool(const KvGeometry& geom, size_t num_slots);
  // The largest pool that fits in budget_bytes (at least one slot).
  static size_t SlotsForBudget(const KvGeometry& geom, size_t budget_bytes);

  // Returns a free slot index, or ResourceExhausted naming the pool size and the fix.
  StatusOr<int> Allocate();
  void Free(int slot);
  void* slot(int index) {
    KVSTAR_DCHECK(index >= 0 && static_cast<size_t>(index) < num_slots_, "slot %d of %zu", index,
                  num_slots_);
    return arena_.data() + static_cast<size_t>(index) * block_bytes_;
  }
  const void* slot(int index) const {
    return arena_.data() + static_cast<size_t>(index) * block_bytes_;
  }

  const KvGeometry& geometry() const { return geom_; }
  size_t num_slots() const { return num_slots_; }
  size_t free_slots() const;
  size_t used_slots() const { return num_slots_ - free_slots(); }
  size_t block_bytes() const { return block_bytes_; }
  size_t capacity_bytes() const { return num_slots_ * block_bytes_; }

 private:
  KvGeometry geom_;
  size_t block_bytes_;
  size_t num_slots_;
  AlignedBuffer<uint8_t> arena_;  // [num_slots][block_bytes]
  mutable std::mutex mu_;
  std::vector<int> free_;        // stack of free slot indices
  std::vector<uint8_t> in_use_;  // [num_slots], guards against double free
};

}  // namespace kvstar
