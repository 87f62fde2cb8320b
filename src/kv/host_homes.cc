#include "kv/host_homes.h"

#include <algorithm>

#include "base/check.h"

namespace kvstar {

HostHomes::HostHomes(size_t layers, size_t batch, size_t max_blocks, size_t homes_per_layer,
                     bool exclusive)
    : layers_(layers),
      batch_(batch),
      max_blocks_(max_blocks),
      homes_(exclusive ? homes_per_layer : batch * max_blocks),
      exclusive_(exclusive),
      map_(layers * batch * max_blocks, -1),
      free_(layers) {
  KVSTAR_CHECK(homes_ <= static_cast<size_t>(INT32_MAX), "%zu homes per layer", homes_);
  if (!exclusive_) {
    for (size_t i = 0; i < map_.size(); ++i) {
      map_[i] = static_cast<int32_t>(i % (batch * max_blocks));
    }
    return;
  }
  for (auto& f : free_) {
    f.resize(homes_);
    // Descending, so that pops hand out 0, 1, 2, ...: a fresh sequence gets contiguous homes.
    for (size_t i = 0; i < homes_; ++i) f[i] = static_cast<int32_t>(homes_ - 1 - i);
  }
}

size_t HostHomes::ExclusiveHomesPerLayer(size_t batch, size_t max_blocks, size_t resident_min,
                                         size_t slack) {
  const size_t need = max_blocks - std::min(resident_min, max_blocks) + slack;  // per sequence
  // The sequence being set up holds all of its blocks; the others at most `need` each.
  const size_t homes = (batch - 1) * need + max_blocks + slack;
  return std::min(homes, batch * max_blocks);
}

StatusOr<int32_t> HostHomes::Acquire(size_t layer, size_t seq, size_t block) {
  KVSTAR_CHECK(layer < layers_ && seq < batch_ && block < max_blocks_,
               "block (%zu, %zu, %zu) outside (%zu, %zu, %zu)", layer, seq, block, layers_, batch_,
               max_blocks_);
  int32_t& h = map_[(layer * batch_ + seq) * max_blocks_ + block];
  if (h >= 0) return h;
  std::vector<int32_t>& f = free_[layer];
  if (f.empty()) {
    return ResourceExhausted(
        "the host tier of layer %zu is full (%zu homes of one block): more blocks are off the "
        "device than the exclusive host tier was sized for",
        layer, homes_);
  }
  h = f.back();
  f.pop_back();
  return h;
}

void HostHomes::Release(size_t layer, size_t seq, size_t block) {
  if (!exclusive_) return;
  int32_t& h = map_[(layer * batch_ + seq) * max_blocks_ + block];
  if (h < 0) return;
  free_[layer].push_back(h);
  h = -1;
}

Status HostHomes::Transfer(size_t layer, size_t seq, size_t from, size_t to) {
  if (!exclusive_) return Internal("host homes: a transfer between inclusive homes");
  int32_t* row = map_.data() + (layer * batch_ + seq) * max_blocks_;
  if (row[from] < 0 || row[to] >= 0) {
    return Internal("host homes: transfer from block %zu (home %d) to block %zu (home %d)", from,
                    row[from], to, row[to]);
  }
  row[to] = row[from];
  row[from] = -1;
  return Status::Ok();
}

}  // namespace kvstar
