// CudaBatch, kvstar mode: the host tier (kv/host_homes.h): how many homes the pinned arena
// needs, where a block's home is, copies between homes and the device, the in-place swaps of the
// exclusive tier (cuda_kvstar.cc has the schedule that decides them), and the prompt blocks that
// go between the homes and a block store (prefix reuse).
#include <algorithm>
#include <cstring>
#include <vector>

#include "base/logging.h"
#include "engine/cuda/cuda_batch.h"
#include "engine/cuda/cuda_batch_impl.h"
#include "store/block_id.h"

namespace kvstar::cuda {

size_t CudaBatch::KvstarHomesPerLayer(const BatchOptions& o, size_t kv_heads) {
  const size_t max_blocks = (o.max_tokens + o.block_tokens - 1) / o.block_tokens;
  if (!o.exclusive_host) return o.batch * max_blocks;
  const KvstarConfig& k = o.kvstar;
  const size_t full_max = o.max_tokens / o.block_tokens;
  const size_t windows = std::min(full_max, KvstarWindows(k));
  const size_t cands = full_max - windows;
  // The device holds the windows and at least a selection of the candidates a stride earlier
  // (a selection is made from the candidates when its group was submitted).
  const size_t lag = (k.retrieval_stride + o.block_tokens - 1) / o.block_tokens + 1;
  const size_t scored = cands > lag ? cands - lag : 0;
  const size_t held = sparse::SelectionSize(scored, k.sparse_ratio);
  // The device cache stays full once the setup filled it (a cached block leaves only for a block
  // that takes its slot).
  const size_t cache = std::min(KvstarCacheSlots(o, kv_heads), scored - held);
  // Transient holds per sequence: blocks in flight to the device and the new block whose
  // representation is made from the host; with a cache, also the cached blocks written back for
  // copies still in flight.
  const size_t staging = std::max<size_t>(k.staging_slots, 1);
  const size_t slack = staging + 2 + (cache > 0 ? staging + lag + 1 : 0);
  // (A per-KV-head union is at least one top-k: `held` stays a lower bound.)
  return HostHomes::ExclusiveHomesPerLayer(o.batch, max_blocks, windows + held + cache, slack);
}

char* CudaBatch::KvstarHome(size_t l, size_t seq, size_t block) const {
  const int32_t h = impl_->homes->home(l, seq, block);
  return h < 0 ? nullptr
               : impl_->host_kv[l].as<char>() + static_cast<size_t>(h) * geom_.block_bytes();
}

Status CudaBatch::KvstarHomeCopy(size_t l, size_t seq, size_t first, size_t count, char* device,
                                 bool to_host, CudaStream* stream) {
  DeviceContext& ctx = model_.ctx();
  Impl& m = *impl_;
  const size_t bb = geom_.block_bytes();
  size_t run_first = first, run_len = 0;
  char* run_home = nullptr;
  auto flush = [&]() -> Status {
    if (run_len == 0) return Status::Ok();
    char* dev = device + (run_first - first) * bb;
    const size_t bytes = run_len * bb;
    run_len = 0;
    return to_host ? ctx.CopyToHost(run_home, dev, bytes, stream)
                   : ctx.CopyToDevice(dev, run_home, bytes, stream);
  };
  for (size_t b = first; b < first + count; ++b) {
    char* home = nullptr;
    if (to_host) {
      KVSTAR_ASSIGN_OR_RETURN(const int32_t h, m.homes->Acquire(l, seq, b));
      home = m.host_kv[l].as<char>() + static_cast<size_t>(h) * bb;
    } else {
      home = KvstarHome(l, seq, b);
      if (home == nullptr) {
        return Internal("kvstar: block %zu of layer %zu seq %zu has no host copy", b, l, seq);
      }
    }
    if (run_len > 0 && home == run_home + run_len * bb) {
      ++run_len;
      continue;
    }
    KVSTAR_RETURN_IF_ERROR(flush());
    run_first = b;
    run_home = home;
    run_len = 1;
  }
  return flush();
}

Status CudaBatch::KvstarIssueSwaps(CudaStream* stream) {
  DeviceContext& ctx = model_.ctx();
  Impl& m = *impl_;
  const size_t bb = geom_.block_bytes();
  std::vector<void*> dst;
  std::vector<const void*> src;
  auto flush = [&]() -> Status {
    std::vector<size_t> bytes(dst.size(), bb);
    const Status st = ctx.CopyBatch(dst.data(), src.data(), bytes.data(), dst.size(), stream);
    dst.clear();
    src.clear();
    return st;
  };
  // 1. Blocks that leave without a replacement: to their new homes (before anything reuses the
  // slot or the home).
  for (const Impl::Swap& w : m.swaps) {
    if (w.src_home == nullptr) {
      dst.push_back(w.dst_home);
      src.push_back(w.slot);
    }
  }
  KVSTAR_RETURN_IF_ERROR(flush());
  // 2. Pairs, bounce_blocks at a time: slot -> bounce, home -> slot, bounce -> home.
  std::vector<const Impl::Swap*> pairs;
  for (const Impl::Swap& w : m.swaps) {
    if (w.src_home != nullptr && w.dst_home != nullptr) pairs.push_back(&w);
  }
  for (size_t p0 = 0; p0 < pairs.size(); p0 += m.bounce_blocks) {
    const size_t n = std::min(m.bounce_blocks, pairs.size() - p0);
    for (size_t i = 0; i < n; ++i) {
      dst.push_back(m.bounce.as<char>() + i * bb);
      src.push_back(pairs[p0 + i]->slot);
    }
    KVSTAR_RETURN_IF_ERROR(flush());
    for (size_t i = 0; i < n; ++i) {
      dst.push_back(pairs[p0 + i]->slot);
      src.push_back(pairs[p0 + i]->src_home);
    }
    KVSTAR_RETURN_IF_ERROR(flush());
    for (size_t i = 0; i < n; ++i) {
      dst.push_back(pairs[p0 + i]->dst_home);
      src.push_back(m.bounce.as<char>() + i * bb);
    }
    KVSTAR_RETURN_IF_ERROR(flush());
  }
  // 3. Incoming blocks into free slots.
  for (const Impl::Swap& w : m.swaps) {
    if (w.dst_home == nullptr) {
      dst.push_back(w.slot);
      src.push_back(w.src_home);
    }
  }
  KVSTAR_RETURN_IF_ERROR(flush());
  m.swaps.clear();
  for (const auto& [l, b, blk] : m.swap_releases) m.homes->Release(l, b, blk);
  m.swap_releases.clear();
  return Status::Ok();
}

StatusOr<std::vector<uint8_t>> CudaBatch::KvstarBlockBytes(size_t layer, size_t seq,
                                                           size_t block) const {
  if (opt_.mode != KvMode::kKvstar) return FailedPrecondition("not a kvstar batch");
  if (layer >= impl_->ks.size() || seq >= opt_.batch || block >= max_blocks_) {
    return InvalidArgument("block (%zu, %zu, %zu) outside the batch", layer, seq, block);
  }
  DeviceContext& ctx = model_.ctx();
  KVSTAR_RETURN_IF_ERROR(ctx.SynchronizeDevice());
  const size_t bb = geom_.block_bytes();
  std::vector<uint8_t> out(bb);
  const int slot = impl_->ks[layer][seq].slot_of[block];
  if (slot >= 0) {
    const char* src = impl_->kv[layer].as<char>() + (seq * impl_->slots_per_seq + slot) * bb;
    KVSTAR_RETURN_IF_ERROR(ctx.CopyToHost(out.data(), src, bb, ctx.compute_stream()));
    KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(ctx.compute_stream()));
    return out;
  }
  const char* home = KvstarHome(layer, seq, block);
  if (home == nullptr) {
    return NotFound("block %zu of layer %zu seq %zu is neither on the device nor the host", block,
                    layer, seq);
  }
  std::memcpy(out.data(), home, bb);
  return out;
}

StatusOr<size_t> CudaBatch::KvstarLoadPrefix(size_t seq, std::span<const Hash128> chain,
                                             size_t max_blocks) {
  const size_t L = model_.config().num_layers;
  const size_t bb = geom_.block_bytes();
  if (max_blocks == 0) return size_t{0};
  std::vector<Hash128> ids(L * max_blocks);
  for (size_t l = 0; l < L; ++l)
    for (size_t b = 0; b < max_blocks; ++b)
      ids[l * max_blocks + b] = LayerBlockId(chain[b], static_cast<int>(l));
  const std::vector<bool> found = opt_.store->Lookup(ids);
  size_t run = max_blocks;
  for (size_t l = 0; l < L; ++l)
    for (size_t b = 0; b < run; ++b)
      if (!found[l * max_blocks + b]) run = b;
  if (run == 0) return size_t{0};
  // Every layer's run in one task, straight into the pinned region (nothing has written it yet).
  std::vector<LoadItem> items;
  items.reserve(L * run);
  for (size_t l = 0; l < L; ++l) {
    for (size_t b = 0; b < run; ++b) {
      KVSTAR_ASSIGN_OR_RETURN(const int32_t h, impl_->homes->Acquire(l, seq, b));
      items.push_back({ids[l * max_blocks + b],
                       impl_->host_kv[l].as<char>() + static_cast<size_t>(h) * bb, bb});
    }
  }
  StoreTask task = opt_.store->Load(items);
  Status st = task.Wait();
  for (size_t i = 0; st.ok() && i < items.size(); ++i) {
    if (task.item_bytes(i) != bb) {
      st = DataLoss("stored block %zu of layer %zu holds %zu bytes, a block is %zu", i % run,
                    i / run, task.item_bytes(i), bb);
    }
  }
  if (!st.ok()) {
    KVSTAR_LOG(kWarn,
               "prefix reuse: %zu stored blocks per layer could not be loaded (%s); the "
               "prompt is computed in full",
               run, st.ToString().c_str());
    return size_t{0};
  }
  stats_.store_loaded_bytes += items.size() * bb;
  return run;
}

StoreTask CudaBatch::KvstarDumpBlocks(size_t layer, size_t seq, std::span<const Hash128> chain,
                                      size_t first, size_t end) {
  const size_t bb = geom_.block_bytes();
  std::vector<DumpItem> items;
  items.reserve(end - first);
  for (size_t b = first; b < end; ++b) {
    items.push_back(
        {LayerBlockId(chain[b], static_cast<int>(layer)), KvstarHome(layer, seq, b), bb});
  }
  stats_.store_dumped_bytes += items.size() * bb;
  return opt_.store->Dump(items);
}

}  // namespace kvstar::cuda
