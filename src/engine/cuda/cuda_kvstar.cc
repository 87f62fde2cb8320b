// CudaBatch, kvstar mode: retrieval scheduling and delta copies (setup: cuda_kvstar_setup.cc).
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

// Not deterministic: the incremental schedule for (layer l, sequence b), run in the window of
// each step (after its kernels are queued, while they execute), so that the step boundary, where
// the device waits for the host, only sends the tables. KvstarStage joins the blocks whose copies
// completed and drops what the target no longer wants, building the tables of the next step;
// KvstarPlanCopies takes finished retrievals and queues the next copies into free slots. Neither
// makes the device wait: blocks join a table only once their copy has completed. A slot dropped
// in the window may still be read by the running step: it is free at once, but a copy into it
// waits for this step's attention of its layer.
namespace {

// The `count` held blocks (selection and extras) below target_cand_end that the target does not
// want, lowest score first.
std::vector<uint32_t> LowestLeaving(const KvstarSeqLayer& s, size_t count) {
  std::vector<uint32_t> v;
  auto add = [&](const std::vector<uint32_t>& held) {
    for (uint32_t blk : held) {
      if (blk < s.target_cand_end && !s.in_target[blk]) v.push_back(blk);
    }
  };
  add(s.selection);
  add(s.extras);
  count = std::min(count, v.size());
  std::partial_sort(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(count), v.end(),
                    [&](uint32_t a, uint32_t c) {
                      return s.score[a] != s.score[c] ? s.score[a] < s.score[c] : a < c;
                    });
  v.resize(count);
  return v;
}

}  // namespace

Status CudaBatch::KvstarStage(size_t l, size_t b, KvstarLayerWork& w) {
  Impl& m = *impl_;
  KvstarSeqLayer& s = m.ks[l][b];
  bool changed = false;
  // A block that leaves the table keeps its slot (the device cache) until KvstarPlanCopies or
  // KvstarAfterStep needs the slot; the running step may still read it.
  auto drop = [&](uint32_t blk) {
    s.cached.push_back(blk);
    ++s.cached_fresh;
    std::erase(s.selection, blk);
    std::erase(s.extras, blk);
    changed = true;
  };
  // Held blocks that the target's task scored.
  auto held_scored = [&]() {
    size_t n = 0;
    for (uint32_t blk : s.selection) n += blk < s.target_cand_end;
    for (uint32_t blk : s.extras) n += blk < s.target_cand_end;
    return n;
  };
  // 1. Blocks that join the selection: those whose copies completed, and cached blocks that the
  // target wants (no copy). Each replaces a leaving block, except while fewer blocks are held
  // than the target has (a larger target: more candidates, or a per-KV-head union that grew).
  std::vector<uint32_t> joins;
  if (!s.arriving.empty() && s.arrived) {
    for (uint32_t blk : s.arriving) m.homes->Release(l, b, blk);  // exclusive: on the device now
    joins = std::move(s.arriving);
    s.arriving.clear();
  }
  if (s.target_cand_end > 0 && !s.cached.empty()) {
    // (No cached block is fresh here: drops come after this, and the target changes only in
    // KvstarPlanCopies.)
    std::erase_if(s.cached, [&](uint32_t blk) {
      if (!s.in_target[blk]) return false;
      joins.push_back(blk);
      ++w.cache_hits;
      return true;
    });
    s.cached_fresh = std::min(s.cached_fresh, s.cached.size());
  }
  if (!joins.empty()) {
    const size_t held = held_scored();
    const size_t room = s.target.size() > held ? s.target.size() - held : 0;
    const std::vector<uint32_t> out =
        LowestLeaving(s, joins.size() > room ? joins.size() - room : 0);
    for (uint32_t blk : joins) {
      s.selection.insert(std::upper_bound(s.selection.begin(), s.selection.end(), blk), blk);
    }
    for (uint32_t blk : out) drop(blk);
    w.swaps += joins.size();
    changed = true;
  }
  // 2. The target is smaller than what is held: drop the surplus at once.
  if (s.arriving.empty() && s.target_cand_end > 0) {
    const size_t held = held_scored();
    if (held > s.target.size()) {
      for (uint32_t blk : LowestLeaving(s, held - s.target.size())) drop(blk);
    }
  }
  if (changed) KVSTAR_RETURN_IF_ERROR(KvstarRebuildTable(l, b));
  return Status::Ok();
}

Status CudaBatch::KvstarPlanCopies(size_t l, size_t b, KvstarLayerWork& w) {
  const KvstarConfig& k = opt_.kvstar;
  Impl& m = *impl_;
  KvstarSeqLayer& s = m.ks[l][b];
  const size_t R = k.retrieval_stride;
  // 3. Finished retrievals: the newest becomes the target.
  for (const KvstarPending& p : s.pending) {
    if (p.submitted_step + R == kv_steps_ && !KvstarReady(p)) ++w.late_retrievals;
  }
  while (!s.pending.empty() && KvstarReady(s.pending.front())) {
    KvstarPending p = std::move(s.pending.front());
    s.pending.pop_front();
    KVSTAR_RETURN_IF_ERROR(KvstarWait(p));
    ++w.retrievals;
    w.retrieval_ms += (NowSeconds() - p.submitted_at) * 1e3;
    const sparse::RetrievalResult& r = KvstarResult(p);
    if (s.in_target.size() < max_blocks_) s.in_target.assign(max_blocks_, 0);
    for (uint32_t blk : s.target) s.in_target[blk] = 0;
    s.target = r.blocks;
    for (uint32_t blk : s.target) s.in_target[blk] = 1;
    s.target_cand_end = p.cand_end;
    if (s.score.size() < max_blocks_) s.score.assign(max_blocks_, 0.0f);
    // Candidates of a task are the contiguous blocks [init, cand_end); with select_per_kv_head
    // the scores are per KV head, and a block's is their sum.
    const size_t per = m.score_per;
    for (size_t i = 0; i * per < r.candidate_scores.size(); ++i) {
      float sum = 0;
      for (size_t h = 0; h < per; ++h) sum += r.candidate_scores[i * per + h];
      s.score[k.init_window_sz + i] = sum;
    }
  }
  // 4. The next blocks of the target, highest score first, into free slots or the slots of
  // cached blocks the target does not want (the oldest first). As many as the slots beyond the
  // cache's own size, less one kept for the tail: the cache changes which slots take the copies,
  // not how many copies a step queues. Slots in no table of the step now running take copies
  // that may overlap it.
  if (!s.arriving.empty() || s.target_cand_end == 0) return Status::Ok();
  std::vector<uint32_t> missing;
  for (uint32_t blk : s.target) {
    if (s.slot_of[blk] < 0) missing.push_back(blk);
  }
  const size_t usable = s.free_slots.size() + s.cached.size();
  const size_t reserve = m.cache_slots + 1;
  const size_t n = std::min(missing.size(), usable > reserve ? usable - reserve : 0);
  if (n == 0) return Status::Ok();
  std::partial_sort(missing.begin(), missing.begin() + static_cast<std::ptrdiff_t>(n),
                    missing.end(), [&](uint32_t a, uint32_t c) {
                      return s.score[a] != s.score[c] ? s.score[a] > s.score[c] : a < c;
                    });
  missing.resize(n);
  const size_t bb = geom_.block_bytes();
  char* arena = m.kv[l].as<char>() + b * m.slots_per_seq * bb;
  for (size_t i = 0; i < missing.size(); ++i) {
    const uint32_t blk = missing[i];
    const char* home = KvstarHome(l, b, blk);
    if (home == nullptr) {
      return Internal("kvstar: block %u of layer %zu seq %zu is neither on the device nor the host",
                      blk, l, b);
    }
    int slot = -1;
    if (!s.free_slots.empty()) {
      slot = s.free_slots.back();
      s.free_slots.pop_back();
    } else {
      const auto it = std::find_if(s.cached.begin(), s.cached.end(),
                                   [&](uint32_t c) { return !s.in_target[c]; });
      if (it == s.cached.end()) {  // every cached block is wanted: fewer copies this time
        missing.resize(i);
        break;
      }
      const uint32_t victim = *it;
      slot = s.slot_of[victim];
      // A block dropped in this window: the running step may still read its slot.
      if (it - s.cached.begin() >= static_cast<std::ptrdiff_t>(s.cached.size() - s.cached_fresh)) {
        w.copy_wait = true;
        --s.cached_fresh;
      }
      s.cached.erase(it);
      s.slot_of[victim] = -1;
      ++w.cache_evictions;
      if (m.homes->exclusive()) {
        // Exclusive host tier: back to a home first (KvstarIssueCopies queues the layer's
        // write-backs before its copies, which wait for them).
        KVSTAR_ASSIGN_OR_RETURN(const int32_t h, m.homes->Acquire(l, b, victim));
        w.wb_dst.push_back(m.host_kv[l].as<char>() + static_cast<size_t>(h) * bb);
        w.wb_src.push_back(arena + static_cast<size_t>(slot) * bb);
        w.wb_bytes.push_back(bb);
        w.d2h_bytes += bb;
      }
    }
    s.slot_of[blk] = slot;
    w.copy_dst.push_back(arena + static_cast<size_t>(slot) * bb);
    w.copy_src.push_back(home);
    w.copy_bytes.push_back(bb);
    w.h2d_bytes += bb;
    ++w.blocks_loaded;
  }
  s.arriving = std::move(missing);
  return Status::Ok();
}

Status CudaBatch::KvstarSubmitGroup() {
  if (opt_.gpu_scoring) return KvstarScoreGroupOnDevice();
  const ModelConfig& c = model_.config();
  const KvstarConfig& k = opt_.kvstar;
  Impl& m = *impl_;
  const size_t L = c.num_layers, B = opt_.batch;
  const size_t R = k.retrieval_stride;
  const size_t bt = opt_.block_tokens;
  const size_t q_row = c.q_dim();
  // The group's steps kv_steps_ - R .. kv_steps_ - 1 wrote ring rows (step % 2R).
  const size_t first = (kv_steps_ - R) % (2 * R);
  for (size_t l = 0; l < L; ++l) {
    for (size_t b = 0; b < B; ++b) {
      KvstarSeqLayer& s = m.ks[l][b];
      const std::vector<uint32_t> cands = KvstarCandidatesOf(k, lengths_[b] / bt);
      if (cands.empty()) continue;
      if (!k.deterministic && s.pending.size() >= 2) {
        ++stats_.skipped_retrievals;
        continue;
      }
      sparse::RetrievalTask t;
      t.reps = s.reps->View();
      t.num_queries = R;
      t.q_heads = c.num_heads;
      t.queries.resize(R * q_row);
      for (size_t x = 0; x < R; ++x) {
        const size_t row = (first + x) % (2 * R);
        const float* src = m.query_ring.as<float>() + ((l * 2 * R + row) * B + b) * q_row;
        std::memcpy(t.queries.data() + x * q_row, src, q_row * sizeof(float));
      }
      const uint32_t cand_end = cands.back() + 1;
      KvstarSetTask(k, cand_end, &t);
      s.pending.push_back(KvstarPending{kv_steps_ / R, kv_steps_, NowSeconds(), cand_end,
                                        m.retriever->Submit(std::move(t))});
    }
  }
  return Status::Ok();
}

Status CudaBatch::KvstarIssueCopies() {
  if (opt_.kvstar.deterministic) return Status::Ok();
  Impl& m = *impl_;
  bool just_submitted_scoring = false;  // its first share is queued already
  if (submit_due_) {
    // The device is writing the other half of the query ring now.
    submit_due_ = false;
    just_submitted_scoring = opt_.gpu_scoring;
    Stopwatch submit;
    KVSTAR_RETURN_IF_ERROR(KvstarSubmitGroup());
    stats_.window_submit_ms_total += submit.Millis();
  }
  if (opt_.gpu_scoring) {
    Stopwatch harvest;
    // A group submitted in an earlier window: this step's share of its scoring (the older first).
    KvstarGpuGroup* groups[2] = {m.gpu_group[0].get(), m.gpu_group[1].get()};
    if (groups[0] != nullptr && groups[1] != nullptr && groups[1]->group < groups[0]->group) {
      std::swap(groups[0], groups[1]);
    }
    for (KvstarGpuGroup* g : groups) {
      if (g != nullptr && !g->issued_all && !just_submitted_scoring) {
        KVSTAR_RETURN_IF_ERROR(KvstarIssueScoring(*g, /*all=*/false));
      }
    }
    KVSTAR_RETURN_IF_ERROR(KvstarHarvest(nullptr));
    stats_.window_plan_ms_total += harvest.Millis();
  }
  // The step's tables left the mirrors long ago (they were queued before its first kernel).
  KVSTAR_RETURN_IF_ERROR(m.mirrors_sent->Synchronize());
  DeviceContext& ctx = model_.ctx();
  const size_t L = m.ks.size();
  Stopwatch stage;
  // Which copies have landed, asked here so that the window threads make no CUDA call. The
  // arrival events are all on the h2d stream, which completes them in order: once the last one
  // recorded has completed, so has every other (usually by the next window: one query, not one
  // per (layer, sequence)).
  bool all_landed = false;
  if (m.last_arrive != nullptr) {
    KVSTAR_ASSIGN_OR_RETURN(all_landed, m.last_arrive->Query());
  }
  for (auto& row : m.ks) {
    for (KvstarSeqLayer& s : row) {
      s.arrived = false;
      if (s.arriving.empty()) continue;
      if (all_landed) {
        s.arrived = true;
      } else {
        KVSTAR_ASSIGN_OR_RETURN(s.arrived, s.arrive->Query());
      }
    }
  }
  // Stage and plan every (layer, sequence): layers are independent (their own slots, homes,
  // tables and copy lists), so with GPU scoring they may run on the window threads.
  m.window_work.resize(L);
  auto stage_layers = [&](size_t l0, size_t l1) {
    for (size_t l = l0; l < l1; ++l) {
      KvstarLayerWork& w = m.window_work[l];
      w = KvstarLayerWork{};
      for (size_t b = 0; b < m.ks[l].size() && w.status.ok(); ++b) {
        w.status = KvstarStage(l, b, w);
        const size_t queued = w.copy_dst.size();
        if (w.status.ok()) w.status = KvstarPlanCopies(l, b, w);
        if (w.copy_dst.size() > queued) w.planned.push_back(b);
      }
    }
  };
  if (m.window_pool != nullptr) {
    m.window_pool->ParallelFor(L, [&](size_t l0, size_t l1, int) { stage_layers(l0, l1); });
  } else {
    stage_layers(0, L);
  }
  stats_.window_stage_ms_total += stage.Millis();
  Stopwatch issue;
  for (size_t l = 0; l < L; ++l) {
    KvstarLayerWork& w = m.window_work[l];
    KVSTAR_RETURN_IF_ERROR(w.status);
    stats_.d2h_bytes += w.d2h_bytes;
    stats_.h2d_bytes += w.h2d_bytes;
    stats_.swaps += w.swaps;
    stats_.late_retrievals += w.late_retrievals;
    stats_.retrievals += w.retrievals;
    stats_.retrieval_ms_total += w.retrieval_ms;
    stats_.blocks_loaded += w.blocks_loaded;
    stats_.cache_hits += w.cache_hits;
    stats_.cache_evictions += w.cache_evictions;
    if (!w.wb_dst.empty()) {
      // Exclusive host tier: the dropped blocks go home on the d2h stream (they are immutable, so
      // the copies may overlap the attention that still reads them); copies into their slots wait
      // for them, and so does the next step (a dropped slot may become a tail).
      KVSTAR_RETURN_IF_ERROR(ctx.CopyBatch(w.wb_dst.data(), w.wb_src.data(), w.wb_bytes.data(),
                                           w.wb_dst.size(), ctx.d2h_stream()));
      KVSTAR_RETURN_IF_ERROR(m.wb_done[l].Record(ctx.d2h_stream()));
      m.wb_since_step[l] = true;
    }
    if (w.planned.empty()) continue;
    // The layer's copies of every sequence in one call, then each sequence's arrival event.
    if (w.copy_wait) KVSTAR_RETURN_IF_ERROR(m.attn_read[l].WaitOn(ctx.h2d_stream()));
    // A copy may go into a slot (or read a home) that a write-back of this layer still uses.
    if (!m.wb_done.empty()) KVSTAR_RETURN_IF_ERROR(m.wb_done[l].WaitOn(ctx.h2d_stream()));
    KVSTAR_RETURN_IF_ERROR(ctx.CopyBatchToDevice(w.copy_dst.data(), w.copy_src.data(),
                                                 w.copy_bytes.data(), w.copy_dst.size(),
                                                 ctx.h2d_stream()));
    for (size_t b : w.planned) {
      KvstarSeqLayer& s = m.ks[l][b];
      if (!s.arrive) {
        KVSTAR_ASSIGN_OR_RETURN(Event e, Event::Create());
        s.arrive = std::make_unique<Event>(std::move(e));
      }
      KVSTAR_RETURN_IF_ERROR(s.arrive->Record(ctx.h2d_stream()));
      m.last_arrive = s.arrive.get();
    }
  }
  stats_.window_issue_ms_total += issue.Millis();
  return Status::Ok();
}

Status CudaBatch::KvstarReplaceSelection(size_t l, size_t b, const std::vector<uint32_t>& next,
                                         uint32_t cand_end) {
  Impl& m = *impl_;
  KvstarSeqLayer& s = m.ks[l][b];
  const size_t bb = geom_.block_bytes();
  std::vector<uint32_t> held, out, in;
  std::set_union(s.selection.begin(), s.selection.end(), s.extras.begin(), s.extras.end(),
                 std::back_inserter(held));
  // Cached blocks that the selection wants again rejoin without a copy (sync steps of the
  // non-deterministic schedule; the previous step finished, so none is read).
  s.cached_fresh = 0;
  bool hits = false;
  std::erase_if(s.cached, [&](uint32_t blk) {
    if (blk >= cand_end || !std::binary_search(next.begin(), next.end(), blk)) return false;
    held.push_back(blk);
    ++stats_.cache_hits;
    hits = true;
    return true;
  });
  if (hits) std::sort(held.begin(), held.end());
  // Blocks that became candidates after the task was submitted were not scored: they stay held
  // until a later selection decides.
  std::erase_if(s.extras, [&](uint32_t blk) { return blk < cand_end; });
  std::erase_if(held, [&](uint32_t blk) { return blk >= cand_end; });
  std::set_difference(held.begin(), held.end(), next.begin(), next.end(), std::back_inserter(out));
  std::set_difference(next.begin(), next.end(), held.begin(), held.end(), std::back_inserter(in));
  s.selection = next;
  if (out.empty() && in.empty()) return hits ? KvstarRebuildTable(l, b) : Status::Ok();
  char* arena = m.kv[l].as<char>() + b * m.slots_per_seq * bb;
  // A free slot for an incoming block; failing one, the oldest cached block's (exclusive host
  // tier: written back first, KvstarIssueSwaps' first phase).
  auto free_slot = [&](uint32_t blk) -> StatusOr<int> {
    if (s.free_slots.empty() && !s.cached.empty()) {
      const uint32_t victim = s.cached.front();
      s.cached.erase(s.cached.begin());
      const int slot = s.slot_of[victim];
      s.slot_of[victim] = -1;
      ++stats_.cache_evictions;
      if (m.homes->exclusive()) {
        KVSTAR_ASSIGN_OR_RETURN(const int32_t h, m.homes->Acquire(l, b, victim));
        m.swaps.push_back({arena + static_cast<size_t>(slot) * bb, nullptr,
                           m.host_kv[l].as<char>() + static_cast<size_t>(h) * bb});
        stats_.d2h_bytes += bb;
      }
      s.free_slots.push_back(slot);
    }
    if (s.free_slots.empty()) {
      return Internal("kvstar: no slot for block %u of layer %zu seq %zu", blk, l, b);
    }
    const int slot = s.free_slots.back();
    s.free_slots.pop_back();
    return slot;
  };
  if (m.homes->exclusive()) {
    // Pairs: the incoming block takes the leaving block's slot, the leaving block the incoming
    // block's home (through the bounce buffer, KvstarIssueSwaps).
    char* const base = m.host_kv[l].as<char>();
    size_t i = 0;
    for (; i < out.size() && i < in.size(); ++i) {
      char* home = KvstarHome(l, b, in[i]);
      if (home == nullptr) {
        return Internal(
            "kvstar: block %u of layer %zu seq %zu is neither on the device nor the host", in[i], l,
            b);
      }
      const int slot = s.slot_of[out[i]];
      KVSTAR_RETURN_IF_ERROR(m.homes->Transfer(l, b, in[i], out[i]));
      s.slot_of[in[i]] = slot;
      s.slot_of[out[i]] = -1;
      m.swaps.push_back({arena + static_cast<size_t>(slot) * bb, home, home});
    }
    for (; i < out.size(); ++i) {  // leaving, no replacement: home first, then the slot is free
      KVSTAR_ASSIGN_OR_RETURN(const int32_t h, m.homes->Acquire(l, b, out[i]));
      const int slot = s.slot_of[out[i]];
      m.swaps.push_back(
          {arena + static_cast<size_t>(slot) * bb, nullptr, base + static_cast<size_t>(h) * bb});
      s.free_slots.push_back(slot);
      s.slot_of[out[i]] = -1;
    }
    for (; i < in.size(); ++i) {  // incoming into a free slot; its home is free once copied
      const char* home = KvstarHome(l, b, in[i]);
      if (home == nullptr) {
        return Internal("kvstar: block %u of layer %zu seq %zu has no host copy", in[i], l, b);
      }
      KVSTAR_ASSIGN_OR_RETURN(const int slot, free_slot(in[i]));
      s.slot_of[in[i]] = slot;
      m.swaps.push_back({arena + static_cast<size_t>(slot) * bb, home, nullptr});
      // The home is free once the copy is queued (KvstarIssueSwaps): a later write into it is
      // queued after the copy on the same stream, or comes after the step.
      m.swap_releases.push_back({l, b, in[i]});
    }
    stats_.h2d_bytes += in.size() * bb;
    stats_.d2h_bytes += out.size() * bb;
    stats_.blocks_loaded += in.size();
    ++stats_.swaps;
    return KvstarRebuildTable(l, b);
  }
  for (uint32_t blk : out) {
    s.free_slots.push_back(s.slot_of[blk]);
    s.slot_of[blk] = -1;
  }
  for (uint32_t blk : in) {
    KVSTAR_ASSIGN_OR_RETURN(const int slot, free_slot(blk));
    s.slot_of[blk] = slot;
    m.copy_dst.push_back(arena + static_cast<size_t>(slot) * bb);
    m.copy_src.push_back(KvstarHome(l, b, blk));
    m.copy_bytes.push_back(bb);
    stats_.h2d_bytes += bb;
    ++stats_.blocks_loaded;
  }
  ++stats_.swaps;
  return KvstarRebuildTable(l, b);
}

Status CudaBatch::KvstarBoundary() {
  DeviceContext& ctx = model_.ctx();
  const ModelConfig& c = model_.config();
  const KvstarConfig& k = opt_.kvstar;
  Impl& m = *impl_;
  const size_t L = c.num_layers, B = opt_.batch;
  const size_t R = k.retrieval_stride;
  const size_t step = kv_steps_ + 1;  // the step about to run
  std::fill(m.load_pending.begin(), m.load_pending.end(), false);
  if (opt_.gpu_scoring && kv_steps_ % R == 0) {
    // This step starts rewriting a half of the device query ring: after the scoring that read it.
    KVSTAR_RETURN_IF_ERROR(m.score_done[(kv_steps_ / R) % 2].WaitOn(ctx.compute_stream()));
  }
  // Deterministic (UCM's timing): at step kR + 1 the result of group k - 1 is applied, waiting
  // for it if needed. Otherwise the tables were staged in the previous step's window.
  for (size_t l = 0; k.deterministic && l < L; ++l) {
    m.copy_dst.clear();
    m.copy_src.clear();
    m.copy_bytes.clear();
    for (size_t b = 0; b < B; ++b) {
      KvstarSeqLayer& s = m.ks[l][b];
      std::optional<KvstarPending> take;
      if ((step - 1) % R == 0 && !s.pending.empty() &&
          s.pending.front().group + 1 <= (step - 1) / R) {
        take = std::move(s.pending.front());
        s.pending.pop_front();
      }
      if (!take) continue;
      KVSTAR_RETURN_IF_ERROR(KvstarWait(*take));
      ++stats_.retrievals;
      stats_.retrieval_ms_total += (NowSeconds() - take->submitted_at) * 1e3;
      // The previous step finished (Step synchronizes): outgoing slots are free to reuse.
      KVSTAR_RETURN_IF_ERROR(
          KvstarReplaceSelection(l, b, KvstarResult(*take).blocks, take->cand_end));
    }
    if (!m.copy_dst.empty() || !m.swaps.empty()) {
      KVSTAR_RETURN_IF_ERROR(ctx.CopyBatchToDevice(m.copy_dst.data(), m.copy_src.data(),
                                                   m.copy_bytes.data(), m.copy_dst.size(),
                                                   ctx.h2d_stream()));
      KVSTAR_RETURN_IF_ERROR(KvstarIssueSwaps(ctx.h2d_stream()));
      m.load_pending[l] = true;
      KVSTAR_RETURN_IF_ERROR(m.load_done[l].Record(ctx.h2d_stream()));
    }
  }
  // Exclusive host tier: write-backs queued in the last step's window read slots that this step
  // may write (a dropped slot can be the new tail).
  for (size_t l = 0; l < m.wb_since_step.size(); ++l) {
    if (!m.wb_since_step[l]) continue;
    KVSTAR_RETURN_IF_ERROR(m.wb_done[l].WaitOn(ctx.compute_stream()));
    m.wb_since_step[l] = false;
  }
  // Tables and q_last for this step (small; ordered before the step's attention).
  CudaStream* s = ctx.compute_stream();
  KVSTAR_RETURN_IF_ERROR(
      ctx.CopyToDevice(m.tables.data(), m.table_mirror.data(), m.table_mirror.bytes(), s));
  KVSTAR_RETURN_IF_ERROR(
      ctx.CopyToDevice(m.qlast_dev.data(), m.qlast_mirror.data(), m.qlast_mirror.bytes(), s));
  stats_.h2d_bytes += m.table_mirror.bytes() + m.qlast_mirror.bytes();
  if (!k.deterministic) KVSTAR_RETURN_IF_ERROR(m.mirrors_sent->Record(s));
  return Status::Ok();
}

Status CudaBatch::KvstarAfterStep() {
  DeviceContext& ctx = model_.ctx();
  const ModelConfig& c = model_.config();
  const KvstarConfig& k = opt_.kvstar;
  Impl& m = *impl_;
  const size_t L = c.num_layers, B = opt_.batch;
  const size_t bt = opt_.block_tokens;
  const size_t bb = geom_.block_bytes();
  const size_t R = k.retrieval_stride;
  ++kv_steps_;
  // The step finished: the slots dropped in its window are no longer read.
  for (auto& row : m.ks) {
    for (KvstarSeqLayer& s : row) s.cached_fresh = 0;
  }
  // Tails that just filled (lengths_ were advanced): to the host (with the exclusive host tier
  // only until their representations are made: the device holds them), then local window.
  bool copied = false;
  for (size_t b = 0; b < B; ++b) {
    if (lengths_[b] % bt != 0) continue;
    const size_t blk = lengths_[b] / bt - 1;  // the block that became full
    for (size_t l = 0; l < L; ++l) {
      KvstarSeqLayer& s = m.ks[l][b];
      char* arena = m.kv[l].as<char>() + b * m.slots_per_seq * bb;
      KVSTAR_RETURN_IF_ERROR(m.homes->Acquire(l, b, blk).status());
      KVSTAR_RETURN_IF_ERROR(ctx.CopyToHost(KvstarHome(l, b, blk),
                                            arena + static_cast<size_t>(s.tail_slot) * bb, bb,
                                            ctx.compute_stream()));
      stats_.d2h_bytes += bb;
    }
    copied = true;
  }
  if (copied) KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(ctx.compute_stream()));
  // GPU scoring: the new blocks' representations go to HBM through the pinned stage, on the
  // background stream (ahead of any scoring that reads them).
  std::vector<void*> rep_dst;
  std::vector<const void*> rep_src;
  std::vector<size_t> rep_bytes;
  if (opt_.gpu_scoring && copied) KVSTAR_RETURN_IF_ERROR(m.rep_stage_sent->Synchronize());
  for (size_t b = 0; b < B; ++b) {
    if (lengths_[b] % bt != 0) continue;
    const size_t full = lengths_[b] / bt;
    const size_t blk = full - 1;
    for (size_t l = 0; l < L; ++l) {
      KvstarSeqLayer& s = m.ks[l][b];
      s.slot_of[blk] = s.tail_slot;
      KVSTAR_RETURN_IF_ERROR(s.reps->Append(KvstarHome(l, b, blk), geom_));
      m.homes->Release(l, b, blk);  // exclusive: the device holds it
      if (opt_.gpu_scoring) {
        const size_t task = l * B + b;
        uint16_t* stage = m.rep_stage.as<uint16_t>() + task * m.rep_elems;
        KvstarDeviceReps(s.reps->View().block(blk), 1, stage);
        rep_dst.push_back(m.reps_dev.as<char>() + (task * max_blocks_ + blk) * m.rep_elems * 2);
        rep_src.push_back(stage);
        rep_bytes.push_back(m.rep_elems * 2);
      }
      // The block that left the local window is a candidate now: off the device unless chosen.
      if (full > KvstarWindows(k)) {
        const size_t left = full - k.local_window_sz - 1;
        if (left >= k.init_window_sz && s.slot_of[left] >= 0 &&
            !std::binary_search(s.selection.begin(), s.selection.end(),
                                static_cast<uint32_t>(left))) {
          s.extras.push_back(static_cast<uint32_t>(left));
        }
      }
      if (s.free_slots.empty() && (!s.cached.empty() || !s.extras.empty())) {
        // The oldest cached block leaves the device, or, with none cached, the oldest extra
        // (selections are late). Exclusive host tier: back to a home first, ahead of the next
        // step on the compute stream, which writes the slot.
        std::vector<uint32_t>& from = s.cached.empty() ? s.extras : s.cached;
        const uint32_t blk_out = from.front();
        if (!s.cached.empty()) ++stats_.cache_evictions;
        if (m.homes->exclusive()) {
          KVSTAR_RETURN_IF_ERROR(m.homes->Acquire(l, b, blk_out).status());
          KVSTAR_RETURN_IF_ERROR(
              ctx.CopyToHost(KvstarHome(l, b, blk_out),
                             m.kv[l].as<char>() + (b * m.slots_per_seq + s.slot_of[blk_out]) * bb,
                             bb, ctx.compute_stream()));
          stats_.d2h_bytes += bb;
        }
        s.free_slots.push_back(s.slot_of[blk_out]);
        s.slot_of[blk_out] = -1;
        from.erase(from.begin());
      }
      if (s.free_slots.empty()) return Internal("kvstar: no slot for a new tail in layer %zu", l);
      s.tail_slot = s.free_slots.back();
      s.free_slots.pop_back();
    }
  }
  if (!rep_dst.empty()) {
    KVSTAR_RETURN_IF_ERROR(ctx.CopyBatchToDevice(rep_dst.data(), rep_src.data(), rep_bytes.data(),
                                                 rep_dst.size(), ctx.background_stream()));
    KVSTAR_RETURN_IF_ERROR(m.rep_stage_sent->Record(ctx.background_stream()));
  }
  for (size_t b = 0; b < B; ++b) {
    for (size_t l = 0; l < L; ++l) {
      if (lengths_[b] % bt == 0) {
        KVSTAR_RETURN_IF_ERROR(KvstarRebuildTable(l, b));  // a new tail block
      } else {
        // Same table; the new token is one row further into the tail.
        ++m.qlast_mirror.as<int64_t>()[l * B + b];
      }
    }
  }
  // A complete group: one retrieval task per (layer, sequence). Deterministic: now (UCM's
  // timing); otherwise in the next step's window (KvstarIssueCopies), off the device's idle time.
  // Not while the next step re-selects synchronously: no result is in flight during sync steps.
  if (kv_steps_ % R == 0 && kv_steps_ >= k.sync_steps) {
    if (k.deterministic) {
      KVSTAR_RETURN_IF_ERROR(KvstarSubmitGroup());
    } else {
      submit_due_ = true;
    }
  }
  KvstarCount();
  return Status::Ok();
}

bool CudaBatch::KvstarReady(const KvstarPending& p) const {
  return p.gpu ? p.gpu->harvested : p.handle.Ready();
}

Status CudaBatch::KvstarWait(KvstarPending& p) {
  if (!p.gpu) {
    KVSTAR_RETURN_IF_ERROR(p.handle.Wait());
    if (opt_.kvstar.softmax_scope == "all" && !p.candidate_result) {
      p.candidate_result =
          KvstarCandidateResult(opt_.kvstar, impl_->score_per, p.handle.result(), p.cand_end);
    }
    return Status::Ok();
  }
  if (!p.gpu->harvested) KVSTAR_RETURN_IF_ERROR(KvstarHarvest(p.gpu.get()));
  KVSTAR_CHECK(p.gpu->harvested, "group %zu not harvested after waiting", p.gpu->group);
  return Status::Ok();
}

const sparse::RetrievalResult& CudaBatch::KvstarResult(const KvstarPending& p) {
  if (p.gpu) return p.gpu->results[p.gpu_index];
  return p.candidate_result ? *p.candidate_result : p.handle.result();
}

std::vector<uint32_t> CudaBatch::kvstar_selection(size_t layer, size_t seq) const {
  if (opt_.mode != KvMode::kKvstar) return {};
  return impl_->ks[layer][seq].selection;
}

void CudaBatch::KvstarCount() {
  Impl& m = *impl_;
  const KvstarConfig& k = opt_.kvstar;
  stats_.device_blocks = stats_.table_blocks = stats_.candidate_blocks = stats_.selected_blocks = 0;
  for (const auto& row : m.ks) {
    for (size_t b = 0; b < row.size(); ++b) {
      stats_.device_blocks += m.slots_per_seq - row[b].free_slots.size();
      const size_t full = lengths_[b] / opt_.block_tokens;
      const size_t held = row[b].selection.size() + row[b].extras.size();
      stats_.candidate_blocks += full > KvstarWindows(k) ? full - KvstarWindows(k) : 0;
      stats_.selected_blocks += held;
      stats_.table_blocks += (full > KvstarWindows(k) ? KvstarWindows(k) + held : full) + 1;
    }
  }
}

}  // namespace kvstar::cuda
