// CudaBatch's device and host buffers and the forward pass's helpers (shared by cuda_batch.cc,
// cuda_batch_prefill.cc, cuda_kvstar.cc and cuda_kvstar_gpu.cc).
#pragma once

#include <array>
#include <deque>
#include <initializer_list>
#include <memory>
#include <optional>
#include <vector>

#include "base/check.h"
#include "base/thread_pool.h"
#include "engine/cuda/cuda_batch.h"
#include "kv/host_homes.h"
#include "sparse/block_representations.h"
#include "sparse/retriever.h"

namespace kvstar::cuda {

// ---- Helpers of the forward pass (Prefill in cuda_batch_prefill.cc, Step in cuda_batch.cc) ----

inline Status Linear(const DeviceContext& ctx, CudaStream* s, const TensorView& w,
                     const TensorView& bias, const float* x, size_t n, float* y, void* workspace,
                     MatMulKernel kernel) {
  KVSTAR_RETURN_IF_ERROR(MatMul(ctx, s, w, x, n, y, workspace, kernel));
  if (!bias.empty()) KVSTAR_RETURN_IF_ERROR(AddBias(s, bias, n, y));
  return Status::Ok();
}

// Products of one x with several weights (q / k / v, gate / up): one launch of the skinny kernel
// at decode batch sizes (MatMulShared), then the biases.
struct LinearOut {
  TensorView w;
  TensorView bias;
  float* y;
};
inline Status LinearShared(const DeviceContext& ctx, CudaStream* s,
                           std::initializer_list<LinearOut> outs, const float* x, size_t n,
                           void* workspace, MatMulKernel kernel) {
  std::array<MatMulTarget, 3> targets;
  KVSTAR_CHECK(outs.size() <= targets.size(), "%zu products", outs.size());
  size_t count = 0;
  for (const LinearOut& o : outs) targets[count++] = MatMulTarget{o.w, o.y};
  KVSTAR_RETURN_IF_ERROR(
      MatMulShared(ctx, s, std::span(targets.data(), count), x, n, workspace, kernel));
  for (const LinearOut& o : outs) {
    if (!o.bias.empty()) KVSTAR_RETURN_IF_ERROR(AddBias(s, o.bias, n, o.y));
  }
  return Status::Ok();
}

// Grows `buf` to at least `bytes` (cudaMalloc synchronizes: only when a larger plan appears).
inline Status Ensure(DeviceBuffer& buf, size_t bytes, size_t& device_bytes) {
  if (buf.bytes() >= bytes) return Status::Ok();
  device_bytes -= buf.bytes();
  buf = DeviceBuffer();
  KVSTAR_ASSIGN_OR_RETURN(buf, DeviceBuffer::Allocate(bytes));
  device_bytes += bytes;
  return Status::Ok();
}

// kvstar with the exclusive host tier: blocks of the device bounce buffer (swaps of a
// deterministic or sync-step selection go through it in chunks of this many blocks).
inline constexpr size_t kKvstarBounceBlocks = 64;

// kvstar: blocks always on the device (init and local windows) per (layer, sequence).
inline size_t KvstarWindows(const KvstarConfig& k) { return k.init_window_sz + k.local_window_sz; }

// kvstar: candidate blocks of a sequence with `full` full blocks: [init, full - local).
inline std::vector<uint32_t> KvstarCandidatesOf(const KvstarConfig& k, size_t full) {
  std::vector<uint32_t> c;
  if (full <= KvstarWindows(k)) return c;
  for (size_t b = k.init_window_sz; b < full - k.local_window_sz; ++b) {
    c.push_back(static_cast<uint32_t>(b));
  }
  return c;
}

// kvstar: the blocks a task for candidates [init, cand_end) scores: the candidates, or with
// softmax_scope "all" every block with a representation, [0, cand_end + local) (each query
// head's softmax then spans what its attention spans; only candidates are selected, see
// KvstarCandidateResult).
inline uint32_t KvstarScoredBegin(const KvstarConfig& k) {
  return k.softmax_scope == "all" ? 0 : static_cast<uint32_t>(k.init_window_sz);
}
inline uint32_t KvstarScoredEnd(const KvstarConfig& k, uint32_t cand_end) {
  return k.softmax_scope == "all" ? cand_end + static_cast<uint32_t>(k.local_window_sz) : cand_end;
}

// kvstar: a CPU retrieval task's blocks and selection settings (sparse ratio, one top-k per
// layer or per KV head) for candidates [init, cand_end).
inline void KvstarSetTask(const KvstarConfig& k, uint32_t cand_end, sparse::RetrievalTask* t) {
  t->candidates.clear();
  for (uint32_t b = KvstarScoredBegin(k); b < KvstarScoredEnd(k, cand_end); ++b) {
    t->candidates.push_back(b);
  }
  t->sparse_ratio = k.sparse_ratio;
  t->options.select_per_kv_head = k.select_per_kv_head;
}

// kvstar: the result of a CPU task made by KvstarSetTask as a selection of candidates
// [init, cand_end): unchanged, or with softmax_scope "all" re-selected from the candidates'
// scores (`per` per block: the KV heads with select_per_kv_head, else 1).
inline sparse::RetrievalResult KvstarCandidateResult(const KvstarConfig& k, size_t per,
                                                     sparse::RetrievalResult r, uint32_t cand_end) {
  if (k.softmax_scope != "all") return r;
  const size_t init = k.init_window_sz, n = cand_end - init;
  std::vector<uint32_t> cands(n);
  for (size_t j = 0; j < n; ++j) cands[j] = static_cast<uint32_t>(init + j);
  std::vector<float> scores(
      r.candidate_scores.begin() + static_cast<std::ptrdiff_t>(init * per),
      r.candidate_scores.begin() + static_cast<std::ptrdiff_t>(cand_end * per));
  return sparse::SelectionFromScores(std::move(scores), per, cands,
                                     sparse::SelectionSize(n, k.sparse_ratio),
                                     k.select_per_kv_head);
}

// kvstar with gpu_scoring: one group's scoring on the device, for every (layer, sequence).
struct KvstarGpuGroup {
  size_t group = 0;
  size_t half = 0;  // of the query ring, the pinned scores and the task mirror: (group - 1) % 2
  bool harvested = false;
  // Layers whose ScoreBlocks calls are queued (gpu_score_spread issues them over several steps'
  // windows); the scores go to the host once all are.
  size_t layers_issued = 0;
  bool issued_all = false;
  std::vector<uint32_t> cand_end;                // [layer * batch + seq]; 0: no task
  std::vector<sparse::RetrievalResult> results;  // [layer * batch + seq], once harvested
};

// kvstar: a retrieval submitted and not yet applied.
struct KvstarPending {
  size_t group = 0;                // decode steps (group - 1) R + 1 .. group R
  size_t submitted_step = 0;       // kv_steps_ when submitted
  double submitted_at = 0;         // NowSeconds()
  uint32_t cand_end = 0;           // candidates of the task were blocks below this
  sparse::RetrievalHandle handle;  // CPU scoring
  // CPU scoring with softmax_scope "all": the handle's result re-selected among the candidates
  // (KvstarCandidateResult), once waited for.
  std::optional<sparse::RetrievalResult> candidate_result;
  std::shared_ptr<KvstarGpuGroup> gpu;  // GPU scoring: the group, and this task's index in it
  size_t gpu_index = 0;
};

// kvstar, not deterministic: one layer's share of a step's window, made by KvstarStage and
// KvstarPlanCopies for each of its sequences on any thread (layers are independent), then issued
// and counted by the thread that drives the batch.
struct KvstarLayerWork {
  Status status;
  // Delta copies host -> device slot, and (exclusive host tier) write-backs of dropped blocks
  // device slot -> new home: one batch each; copy_wait: some slot was in this step's table.
  std::vector<void*> copy_dst;
  std::vector<const void*> copy_src;
  std::vector<size_t> copy_bytes;
  bool copy_wait = false;
  std::vector<void*> wb_dst;
  std::vector<const void*> wb_src;
  std::vector<size_t> wb_bytes;
  std::vector<size_t> planned;  // sequences whose copies are in the batch
  // Added to BatchStats once issued.
  size_t h2d_bytes = 0, d2h_bytes = 0, swaps = 0, blocks_loaded = 0, cache_hits = 0;
  size_t cache_evictions = 0;
  size_t retrievals = 0, late_retrievals = 0;
  double retrieval_ms = 0;
};

// kvstar mode, one (layer, sequence): which blocks are on the device and where.
struct KvstarSeqLayer {
  std::unique_ptr<sparse::BlockRepresentations> reps;  // every full block, in order
  std::vector<int> slot_of;                            // [block] slot index, -1 when not resident
  std::vector<int> free_slots;
  std::vector<uint32_t> selection;  // selected candidates, ascending
  // Blocks that left the local window since the last applied selection: candidates that stay
  // on the device (and in the table) until the next selection decides (ascending).
  std::vector<uint32_t> extras;
  int tail_slot = -1;
  std::deque<KvstarPending> pending;  // oldest first
  // Not deterministic: selections are reached a few blocks at a time. `target` is the newest
  // result (blocks below target_cand_end were scored, with `score` per block); `arriving` blocks
  // are being copied into free slots (event `arrive`) and join the table when they are there,
  // each replacing the lowest-scoring held block that left the target.
  std::vector<uint32_t> target;
  uint32_t target_cand_end = 0;
  std::vector<float> score;        // [block]
  std::vector<uint8_t> in_target;  // [block] 1 when the block is in `target`
  std::vector<uint32_t> arriving;
  std::unique_ptr<Event> arrive;
  bool arrived = false;  // `arrive` had completed when the window began
  // Not deterministic: blocks that left the table and keep their slots (the device cache,
  // BatchOptions::kvstar_cache_blocks), oldest first. A slot for a copy is a free one or, failing
  // that, the oldest cached block's that the target does not want. The last `cached_fresh` were
  // dropped in this step's window while the step may still read them: a copy into one of their
  // slots waits for this layer's attention (event attn_read[layer]). Zero once the step finished.
  std::vector<uint32_t> cached;
  size_t cached_fresh = 0;
};

struct CudaBatch::Impl {
  // kvstar: [layer][seq] state, the slot arena per layer, the pinned mirror of the tables
  // [layer][seq][slots], q_last [layer][seq] (host mirror and device), the query ring
  // [layer][stride][seq][q_heads * head_dim] and the retriever.
  std::vector<std::vector<KvstarSeqLayer>> ks;
  PinnedHostBuffer table_mirror, qlast_mirror, query_ring;
  DeviceBuffer qlast_dev;
  // Decode queries of every layer of the step [layer][seq][q_dim]: copied to the query ring once
  // per step (one copy per layer stalled the compute stream 32 times a step).
  DeviceBuffer q_layers;
  std::vector<Event> load_done;  // [layer] delta loads of this step
  std::vector<bool> load_pending;
  // kvstar: the pinned homes of the blocks in host_kv (every block, or with exclusive_host only
  // the blocks off the device).
  std::unique_ptr<HostHomes> homes;
  // Not deterministic: each layer's share of the step's window (KvstarIssueCopies), and the
  // threads that make them with GPU scoring (null: the calling thread).
  std::vector<KvstarLayerWork> window_work;
  std::unique_ptr<ThreadPool> window_pool;
  // The arrival event recorded last (on the h2d stream, after every earlier one); null before
  // the first copy.
  const Event* last_arrive = nullptr;
  // Exclusive host tier, not deterministic: wb_done[layer] is recorded after each layer's batch
  // of write-backs (the layer's copies into slots wait for it, and so does the next step's
  // compute stream when wb_since_step[layer]: a dropped slot may become a tail).
  std::vector<Event> wb_done;
  std::vector<bool> wb_since_step;
  // Exclusive host tier, KvstarReplaceSelection: slot <- src_home; with dst_home, the slot's old
  // block goes to dst_home first (through the bounce buffer when src_home is the same home).
  struct Swap {
    char* slot;
    const char* src_home;  // nullptr: the slot's block only leaves
    char* dst_home;        // nullptr: the slot was free
  };
  std::vector<Swap> swaps;
  // (layer, seq, block) whose homes are free once the swaps are queued.
  std::vector<std::array<size_t, 3>> swap_releases;
  DeviceBuffer bounce;  // bounce_blocks blocks
  size_t bounce_blocks = 0;
  // Not deterministic: [layer] recorded after the layer's attention (its slots are read), and
  // once after the step's table and q_last copies (the mirrors may be rewritten).
  std::vector<Event> attn_read;
  std::unique_ptr<Event> mirrors_sent;
  // Not deterministic: one layer's delta copies, queued in one batch (and whether they wait for
  // the layer's attention).
  std::vector<void*> copy_dst;
  std::vector<const void*> copy_src;
  std::vector<size_t> copy_bytes;
  bool copy_wait = false;
  std::unique_ptr<sparse::Retriever> retriever;
  size_t slots_per_seq = 0;
  size_t cache_slots = 0;  // of which the device cache's (KvstarCacheSlots)
  // kvstar with gpu_scoring: representations [layer][seq][max_blocks][rep_elems] (f16) and
  // channels [layer][seq][kv_heads][d_pruned] (u16) in HBM; the query ring
  // [2 R][layer][seq][q_dim] f32 that the Q projections write into (half h: rows h R .. h R +
  // R - 1); scores [layer][seq][max_blocks][score_per] and their pinned copy per half; task
  // descriptors (pinned mirror and device, per half); scratch for score_layers layers per
  // ScoreBlocks call; pinned staging of the representations of blocks made by decoding. Events per
  // half: scoring began and ended (the ring half may be rewritten once it ended).
  DeviceBuffer reps_dev, chan_dev, q_ring_dev, scores_dev, score_tasks_dev, score_ws;
  PinnedHostBuffer scores_host, score_tasks_host, rep_stage;
  std::vector<Event> score_begin, score_done, tasks_sent;
  std::unique_ptr<Event> rep_stage_sent;
  std::shared_ptr<KvstarGpuGroup> gpu_group[2];  // latest group of each half
  // gpu_scoring with sync_steps: one layer's tasks of a sync step [seq] (pinned and device) and
  // their scores [seq][max_blocks][score_per] (device and pinned).
  DeviceBuffer sync_tasks_dev, sync_scores_dev;
  PinnedHostBuffer sync_tasks_host, sync_scores_host;
  size_t rep_elems = 0, d_pruned = 0, score_layers = 1;
  // kvstar: scores per block (kv_heads with select_per_kv_head, else 1).
  size_t score_per = 1;

  // Activations [rows][...] f32.
  DeviceBuffer x, xn, q, k, v, attn, proj, gate, up;
  DeviceBuffer workspace;  // MatMul: activations in the weight dtype
  DeviceBuffer logits;     // [max(batch, 1)][vocab]
  DeviceBuffer ids;        // int32 [rows cap]: tokens in, next tokens out
  DeviceBuffer step_pos;   // int64 [batch]: position of each sequence's new token
  DeviceBuffer iota;       // int64 [max_tokens]: 0, 1, 2, ...
  DeviceBuffer attn_ws;    // attention split workspace (grown on demand)
  DeviceBuffer x_all;      // [prompt][hidden] residual stream of a prefill (grown on demand)
  DeviceBuffer x_half;     // kvpr prefill: [chunk][hidden] normed input in the weight dtype
  // dense: kv[layer] = [batch][max_blocks] blocks; staged modes: kv[0..1] = staging buffers.
  std::vector<DeviceBuffer> kv;
  // Device block-pointer tables [tables][batch][max_blocks], one table per kv[] buffer.
  DeviceBuffer tables;
  // Staged modes: pinned host KV per layer [batch][max_blocks] blocks; kvpr: X per layer
  // [batch][split][hidden] in the weight dtype, and two device X staging buffers.
  std::vector<PinnedHostBuffer> host_kv, host_x;
  DeviceBuffer x_stage[2];
  DeviceBuffer rc_k, rc_v;  // kvpr recompute scratch [kRecomputeRows][kv_dim] f32
  // Pinned host staging for the per-step uploads and downloads.
  PinnedHostBuffer host_ids;  // int32 [rows cap]
  PinnedHostBuffer host_pos;  // int64 [batch]
  // Events: X / KV of staging buffer j arrived; attention over staging j done; write-back of
  // staging j done (implies the attention before it finished).
  std::vector<Event> x_ready, kv_ready, attn_done, staging_wb;
  // offload / kvpr, per layer of the last step: link busy (first copy queued to KV arrived;
  // includes any wait for the staging buffer) and recomputation on the compute stream.
  std::vector<Event> link_begin, rc_begin, rc_end;
  // phase_timing (BatchOptions): the step's marks on the compute stream (step begin; per layer:
  // start, before the KV wait, after it, after attention; head start) and the step's last mark,
  // alternating so that the previous step's survives for the gap between steps.
  std::vector<Event> phase_marks;
  std::vector<Event> phase_end;  // [2]
  bool phase_have_prev = false;
};

}  // namespace kvstar::cuda
