// CudaBatch, kvstar mode: slots per sequence, the device state at start (KvstarInit), the block
// tables and each sequence's setup after its prompt (first selection, representations); the
// schedule that keeps them current is in cuda_kvstar.cc.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <thread>

#include "base/check.h"
#include "base/thread_pool.h"
#include "base/timer.h"
#include "engine/cuda/cuda_batch.h"
#include "engine/cuda/cuda_batch_impl.h"
#include "kv/exact_selection.h"
#include "sparse/channel_importance.h"

namespace kvstar::cuda {

size_t CudaBatch::KvstarSlotsPerSeq(const BatchOptions& o, size_t kv_heads) {
  const size_t full_max = o.max_tokens / o.block_tokens;
  const size_t cands = full_max > KvstarWindows(o.kvstar) ? full_max - KvstarWindows(o.kvstar) : 0;
  const size_t k = sparse::SelectionSize(cands, o.kvstar.sparse_ratio);
  const size_t selection = o.kvstar.select_per_kv_head ? std::min(cands, kv_heads * k) : k;
  // Windows + tail + the largest selection + the blocks that may leave the local window between
  // two selections (extras; if more pile up, the oldest is dropped).
  const size_t extras = (o.kvstar.retrieval_stride + o.block_tokens - 1) / o.block_tokens + 1;
  // Not deterministic: staging_slots free slots receive the next blocks of a selection while
  // decoding goes on, and kvstar_cache_blocks more hold blocks that left the table.
  const size_t staging = o.kvstar.deterministic ? 0 : std::max<size_t>(o.kvstar.staging_slots, 1);
  return std::min(
      KvstarWindows(o.kvstar) + 1 + selection + extras + staging + o.kvstar_cache_blocks,
      (o.max_tokens + o.block_tokens - 1) / o.block_tokens);
}

int CudaBatch::KvstarWindowThreads(const BatchOptions& o) {
  if (o.retrieval_threads > 0) return o.retrieval_threads;
  return std::clamp(static_cast<int>(std::thread::hardware_concurrency()) - 3, 1, 8);
}

size_t CudaBatch::KvstarCacheSlots(const BatchOptions& o, size_t kv_heads) {
  BatchOptions without = o;
  without.kvstar_cache_blocks = 0;
  return KvstarSlotsPerSeq(o, kv_heads) - KvstarSlotsPerSeq(without, kv_heads);
}

Status CudaBatch::KvstarInit() {
  const KvstarConfig& k = opt_.kvstar;
  KVSTAR_RETURN_IF_ERROR(k.Validate(opt_.block_tokens));
  DeviceContext& ctx = model_.ctx();
  const ModelConfig& c = model_.config();
  Impl& m = *impl_;
  const size_t L = c.num_layers, B = opt_.batch;
  m.slots_per_seq = KvstarSlotsPerSeq(opt_, c.num_kv_heads);
  m.cache_slots = KvstarCacheSlots(opt_, c.num_kv_heads);
  m.score_per = k.select_per_kv_head ? c.num_kv_heads : 1;
  m.ks.resize(L);
  for (auto& row : m.ks) {
    row.resize(B);
    for (KvstarSeqLayer& s : row) {
      s.slot_of.assign(max_blocks_, -1);
      for (int i = static_cast<int>(m.slots_per_seq) - 1; i >= 0; --i) s.free_slots.push_back(i);
    }
  }
  KVSTAR_ASSIGN_OR_RETURN(m.table_mirror,
                          PinnedHostBuffer::Allocate(L * B * m.slots_per_seq * sizeof(void*)));
  KVSTAR_ASSIGN_OR_RETURN(m.qlast_mirror, PinnedHostBuffer::Allocate(L * B * 8));
  if (!opt_.gpu_scoring) {
    // Two groups of queries: one being filled by the device while the other is submitted.
    KVSTAR_ASSIGN_OR_RETURN(
        m.query_ring,
        PinnedHostBuffer::Allocate(L * 2 * k.retrieval_stride * B * c.q_dim() * sizeof(float)));
  }
  KVSTAR_ASSIGN_OR_RETURN(m.qlast_dev, DeviceBuffer::Allocate(L * B * 8));
  device_bytes_ += L * B * 8;
  std::memset(m.table_mirror.data(), 0, m.table_mirror.bytes());
  for (size_t l = 0; l < L; ++l) {
    KVSTAR_ASSIGN_OR_RETURN(Event e, Event::Create());
    m.load_done.push_back(std::move(e));
  }
  m.load_pending.assign(L, false);
  if (opt_.exclusive_host) {
    for (size_t l = 0; l < L; ++l) {
      KVSTAR_ASSIGN_OR_RETURN(Event e, Event::Create());
      m.wb_done.push_back(std::move(e));
    }
    m.wb_since_step.assign(L, false);
    m.bounce_blocks = kKvstarBounceBlocks;
    KVSTAR_ASSIGN_OR_RETURN(m.bounce,
                            DeviceBuffer::Allocate(m.bounce_blocks * geom_.block_bytes()));
    device_bytes_ += m.bounce.bytes();
  }
  if (!k.deterministic) {
    for (size_t l = 0; l < L; ++l) {
      KVSTAR_ASSIGN_OR_RETURN(Event e, Event::Create());
      m.attn_read.push_back(std::move(e));
    }
    KVSTAR_ASSIGN_OR_RETURN(Event e, Event::Create());
    m.mirrors_sent = std::make_unique<Event>(std::move(e));
  }
  // CPU threads score the groups and the sync steps, unless the device does (gpu_scoring).
  if (opt_.gpu_scoring) {
    // The cores are free then: the window's per-layer work and the top k of each scored group
    // run on KvstarWindowThreads threads (at 128K x 8 on the H100 host, 8 threads instead of the
    // decoding thread alone kept the steps after each group's scores at the base step's time;
    // docs/BENCHMARKS.md).
    const int n = KvstarWindowThreads(opt_);
    if (!k.deterministic && n > 1) {
      m.window_pool =
          std::make_unique<ThreadPool>(ThreadPoolOptions{.num_threads = n, .name = "kvwindow"});
    }
    return KvstarInitGpuScoring();
  }
  sparse::RetrieverOptions ro;
  // Default: all cores but three, kept for the decode thread, the driver's threads and the
  // copies (at batch 22 on the 16-core H100 host, 13 threads gave more tokens/s than 15).
  ro.num_threads = opt_.retrieval_threads > 0
                       ? opt_.retrieval_threads
                       : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) - 3);
  m.retriever = std::make_unique<sparse::Retriever>(ro);
  (void)ctx;
  return Status::Ok();
}

Status CudaBatch::KvstarRebuildTable(size_t l, size_t seq) {
  Impl& m = *impl_;
  const KvstarConfig& k = opt_.kvstar;
  KvstarSeqLayer& s = m.ks[l][seq];
  const size_t bt = opt_.block_tokens;
  const size_t len = lengths_[seq];
  const size_t full = len / bt;
  void** row = m.table_mirror.as<void*>() + (l * opt_.batch + seq) * m.slots_per_seq;
  char* arena = m.kv[l].as<char>() + seq * m.slots_per_seq * geom_.block_bytes();
  size_t n = 0;
  auto put = [&](size_t block) -> Status {
    const int slot = s.slot_of[block];
    if (slot < 0)
      return Internal("kvstar: block %zu of layer %zu seq %zu not resident", block, l, seq);
    KVSTAR_CHECK(n < m.slots_per_seq, "table overflow %zu", n);
    row[n++] = arena + static_cast<size_t>(slot) * geom_.block_bytes();
    return Status::Ok();
  };
  // Ascending block order: init window, selection, local window (or every block when there are
  // no candidates), then the tail, which takes the new token.
  if (full <= KvstarWindows(k)) {
    for (size_t b = 0; b < full; ++b) KVSTAR_RETURN_IF_ERROR(put(b));
  } else {
    for (size_t b = 0; b < k.init_window_sz; ++b) KVSTAR_RETURN_IF_ERROR(put(b));
    // The union of selection and extras (both ascending), without a temporary.
    size_t i = 0, j = 0;
    while (i < s.selection.size() || j < s.extras.size()) {
      uint32_t blk;
      if (j == s.extras.size() || (i < s.selection.size() && s.selection[i] < s.extras[j])) {
        blk = s.selection[i++];
      } else if (i == s.selection.size() || s.extras[j] < s.selection[i]) {
        blk = s.extras[j++];
      } else {
        blk = s.selection[i++];
        ++j;
      }
      KVSTAR_RETURN_IF_ERROR(put(blk));
    }
    for (size_t b = full - k.local_window_sz; b < full; ++b) KVSTAR_RETURN_IF_ERROR(put(b));
  }
  KVSTAR_CHECK(s.tail_slot >= 0, "no tail slot for layer %zu seq %zu", l, seq);
  row[n++] = arena + static_cast<size_t>(s.tail_slot) * geom_.block_bytes();
  // The new token (position len) goes to row len % bt of the tail: it attends to every full
  // block of the table and to tail rows 0 .. len % bt.
  m.qlast_mirror.as<int64_t>()[l * opt_.batch + seq] =
      static_cast<int64_t>((n - 1) * bt + len % bt);
  return Status::Ok();
}

Status CudaBatch::KvstarSetupSequence(size_t seq, const std::vector<std::vector<float>>& group0,
                                      size_t nq) {
  DeviceContext& ctx = model_.ctx();
  const ModelConfig& c = model_.config();
  const KvstarConfig& k = opt_.kvstar;
  Impl& m = *impl_;
  const size_t L = c.num_layers;
  const size_t bt = opt_.block_tokens;
  const size_t bb = geom_.block_bytes();
  const size_t len = lengths_[seq];
  const size_t full = len / bt;
  const std::vector<uint32_t> cands = KvstarCandidatesOf(k, full);
  std::vector<Status> errors(L, Status::Ok());
  // Layers are independent: representations and the first selection in parallel.
  ThreadPool pool(std::max(1, static_cast<int>(std::thread::hardware_concurrency())));
  pool.ParallelFor(L, [&](size_t begin, size_t end, int) {
    for (size_t l = begin; l < end; ++l) {
      errors[l] = [&]() -> Status {
        KvstarSeqLayer& s = m.ks[l][seq];
        // The whole context is in the host tier until the resident blocks are copied below.
        std::vector<const char*> host((len + bt - 1) / bt);
        for (size_t b = 0; b < host.size(); ++b) {
          host[b] = KvstarHome(l, seq, b);
          if (host[b] == nullptr) {
            return Internal("kvstar: block %zu of layer %zu seq %zu has no host copy", b, l, seq);
          }
        }
        sparse::ChannelImportanceAccumulator acc(c.num_kv_heads, c.head_dim,
                                                 k.blk_repre_dim_prune_ratio);
        for (size_t b = 0; b * bt < len; ++b) {
          KVSTAR_RETURN_IF_ERROR(acc.AddBlock(host[b], geom_, std::min(bt, len - b * bt)));
        }
        KVSTAR_ASSIGN_OR_RETURN(sparse::ChannelIndex channels, acc.Finalize());
        sparse::RepresentationOptions ropt;
        ropt.merge = k.blk_repre_inner_token_merge;
        KVSTAR_ASSIGN_OR_RETURN(s.reps,
                                sparse::BlockRepresentations::Create(geom_, channels, ropt));
        for (size_t b = 0; b < full; ++b) KVSTAR_RETURN_IF_ERROR(s.reps->Append(host[b], geom_));
        if (!cands.empty() && k.first_selection == "exact") {
          // The prompt's last queries against the real keys of every block, from the host
          // copy, which holds the whole layer (kv/exact_selection.h, as on the CPU).
          std::vector<const void*> blocks(host.begin(), host.end());
          s.selection =
              ExactSelection(geom_, group0[l].data(), nq, c.num_heads,
                             1.0f / std::sqrt(static_cast<float>(c.head_dim)), blocks.data(), len,
                             cands, sparse::SelectionSize(cands.size(), k.sparse_ratio),
                             k.vote == "max" ? BlockVote::kMax : BlockVote::kSum);
        } else if (!cands.empty()) {
          sparse::RetrievalTask t;
          t.reps = s.reps->View();
          t.queries = group0[l];
          t.num_queries = nq;
          t.q_heads = c.num_heads;
          KvstarSetTask(k, cands.back() + 1, &t);
          KVSTAR_ASSIGN_OR_RETURN(sparse::RetrievalResult r, sparse::RunRetrieval(t));
          s.selection =
              KvstarCandidateResult(k, m.score_per, std::move(r), cands.back() + 1).blocks;
        }
        return Status::Ok();
      }();
    }
  });
  for (const Status& st : errors) KVSTAR_RETURN_IF_ERROR(st);
  // Resident blocks into slots (the first selection is made before decode starts: step 1
  // waits for no load).
  CudaStream* s = ctx.compute_stream();
  for (size_t l = 0; l < L; ++l) {
    KvstarSeqLayer& st = m.ks[l][seq];
    std::vector<size_t> resident;
    if (full <= KvstarWindows(k)) {
      for (size_t b = 0; b < full; ++b) resident.push_back(b);
    } else {
      for (size_t b = 0; b < k.init_window_sz; ++b) resident.push_back(b);
      for (uint32_t b : st.selection) resident.push_back(b);
      for (size_t b = full - k.local_window_sz; b < full; ++b) resident.push_back(b);
      // The device cache (kvstar_cache_blocks): the unselected candidates nearest the local
      // window, in block order (the lowest leaves first when a slot is needed).
      st.cached.clear();
      for (size_t i = cands.size(); i-- > 0 && st.cached.size() < m.cache_slots;) {
        if (!std::binary_search(st.selection.begin(), st.selection.end(), cands[i])) {
          st.cached.push_back(cands[i]);
        }
      }
      std::reverse(st.cached.begin(), st.cached.end());
      resident.insert(resident.end(), st.cached.begin(), st.cached.end());
    }
    resident.push_back(full);  // the tail (possibly empty)
    char* arena = m.kv[l].as<char>() + seq * m.slots_per_seq * bb;
    for (size_t b : resident) {
      if (st.free_slots.empty()) return Internal("kvstar: out of slots in layer %zu", l);
      const int slot = st.free_slots.back();
      st.free_slots.pop_back();
      if (b == full) {
        st.tail_slot = slot;
      } else {
        st.slot_of[b] = slot;
      }
      const char* home = KvstarHome(l, seq, b);
      if (home == nullptr) {
        // An empty tail (the context ends on a block boundary) has no content yet.
        if (b == full && len % bt == 0) continue;
        return Internal("kvstar: block %zu of layer %zu seq %zu has no host copy", b, l, seq);
      }
      KVSTAR_RETURN_IF_ERROR(ctx.CopyToDevice(arena + static_cast<size_t>(slot) * bb, home, bb, s));
      stats_.h2d_bytes += bb;
    }
    KVSTAR_RETURN_IF_ERROR(KvstarRebuildTable(l, seq));
    if (opt_.gpu_scoring) {
      // The representations and channels of this (layer, sequence) into HBM.
      const sparse::RepresentationView v = st.reps->View();
      KVSTAR_CHECK(v.block_elements() == m.rep_elems,
                   "representation block of %zu elements, %zu "
                   "expected",
                   v.block_elements(), m.rep_elems);
      const size_t task = l * opt_.batch + seq;
      std::vector<uint16_t> flat(v.num_blocks() * m.rep_elems);
      for (size_t b = 0; b < v.num_blocks(); ++b) {
        KvstarDeviceReps(v.block(b), 1, flat.data() + b * m.rep_elems);
      }
      const std::vector<uint16_t>& chan = v.channels().channels;
      KVSTAR_RETURN_IF_ERROR(
          ctx.CopyToDevice(m.reps_dev.as<char>() + task * max_blocks_ * m.rep_elems * 2,
                           flat.data(), flat.size() * 2, s));
      KVSTAR_RETURN_IF_ERROR(ctx.CopyToDevice(m.chan_dev.as<uint16_t>() + task * chan.size(),
                                              chan.data(), chan.size() * 2, s));
      KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(s));  // `flat` is freed next
    }
  }
  KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(s));
  // Exclusive host tier: the resident blocks' homes are free now that their copies landed.
  if (m.homes->exclusive()) {
    for (size_t l = 0; l < L; ++l) {
      const KvstarSeqLayer& st = m.ks[l][seq];
      for (size_t b = 0; b <= full && b < max_blocks_; ++b) {
        if (b == full || st.slot_of[b] >= 0) m.homes->Release(l, seq, b);
      }
    }
  }
  KvstarCount();
  return Status::Ok();
}

}  // namespace kvstar::cuda
