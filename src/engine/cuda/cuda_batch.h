// CudaBatch: B sequences decoded in lockstep on one GPU, in one of three KV modes.
//
//   dense    every KV block of every sequence lives in HBM (blocks for the whole capacity are
//            allocated up front, so block tables never change).
//   offload  (FlexGen-style) all KV lives in pinned host memory; the device holds two staging
//            buffers of one layer's KV for the whole batch. While layer i computes, layer i+1's
//            blocks stream in on the host-to-device stream; the block that received the new
//            token goes back on the device-to-host stream after layer i's attention.
//   kvpr     as offload, but for tokens [0, l) the host keeps the layer-input activations X
//            (after the input RMSNorm, in the weight dtype) instead of sending their K/V: X[0:l)
//            crosses the link first, K/V[0:l) is recomputed on the compute stream (projection,
//            bias, RoPE, written into the staging blocks) while K/V[l:s) streams in
//            (arXiv 2411.17089). l is a multiple of block_tokens, fixed per batch.
//   kvstar   all KV in pinned host memory (the store's DRAM tier); HBM holds per (layer,
//            sequence) a fixed set of slots for the init and local windows, the tail block and
//            the top sparse_ratio of the candidate blocks. Every retrieval_stride steps the
//            queries (copied to the host as they are made) are scored on CPU threads against
//            block representations (src/sparse). Not deterministic: up to staging_slots new
//            blocks per step are copied into free slots on the h2d stream and join the table
//            once their copy has completed (the device never waits). Deterministic (UCM's
//            timing): at step kR+1 the whole delta goes into the slots of the blocks that left
//            and each layer's attention waits on the device for its own copies. Full blocks
//            made by decoding go to the host and become candidates. With a block store
//            (BatchOptions::store) the prompt's full blocks are also kept there under their
//            content ids, and a later prompt with the same prefix loads them instead of
//            recomputing them (prefix reuse).
//
// Streams and events (DESIGN.md, threads): compute, h2d and d2h streams of the DeviceContext;
// staging buffer j is refilled only after the attention that read it has finished
// (staging_free_[j]), and layer i's blocks are re-read only after the previous step's write-back
// of layer i has finished (writeback_[i]). Every token of the batch is decoded greedily on the
// device (argmax) unless logits are requested.
//
// Not thread-safe: one host thread drives a batch (DeviceContext rule).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/hash.h"
#include "base/kv_layout.h"
#include "base/status.h"
#include "engine/cuda/cuda_model.h"
#include "kv/kvstar_config.h"
#include "ops/cuda/device.h"
#include "ops/cuda/ops.h"
#include "store/block_store.h"

namespace kvstar::sparse {
struct RetrievalResult;
}

namespace kvstar::cuda {

struct KvstarPending;
struct KvstarGpuGroup;
struct KvstarLayerWork;
struct BlockScoreTask;

enum class KvMode { kDense, kOffload, kKvpr, kKvstar };
StatusOr<KvMode> ParseKvMode(std::string_view name);
const char* KvModeName(KvMode mode);

// GPU scoring scores a group against the queries of its retrieval_stride steps, at most 64
// (BlockScoreArgs::num_queries): InvalidArgument naming the fix for a longer stride. Host code,
// so that the runner and the bench refuse it before they touch a device.
inline constexpr size_t kMaxGpuScoreQueries = 64;
Status CheckGpuScoringStride(size_t retrieval_stride);

struct BatchOptions {
  KvMode mode = KvMode::kDense;
  size_t batch = 1;
  size_t max_tokens = 0;  // per sequence: prompt + generated tokens (capacity)
  size_t block_tokens = 128;
  DType kv_dtype = DType::kBF16;
  size_t prefill_chunk = 1024;  // tokens per prefill forward
  // kvpr: tokens [0, kvpr_split) of each prompt are recomputed from X (rounded down to
  // block_tokens; clipped to the prompt).
  size_t kvpr_split = 0;
  // kvpr: one split per layer (the planner's per-layer plan); overrides kvpr_split when not
  // empty. Each is rounded down to block_tokens and clipped to the prompt.
  std::vector<size_t> kvpr_layer_splits;
  // kvstar: the settings (UCM names; sync_steps counts the batch's first decode steps) and the
  // CPU threads that score blocks (0: hardware threads - 3, at least 1); with gpu_scoring, the
  // threads of the step window's bookkeeping (KvstarWindowThreads; 1: the decoding thread alone).
  KvstarConfig kvstar;
  int retrieval_threads = 0;
  // kvstar: score the block representations on the GPU instead of CPU threads. The
  // representations (about d_pruned / head_dim / merge / 2 of the KV) then live in HBM too, the
  // queries never leave the device, and the scores of each group come back for the host's
  // top-k. Scoring runs on the background (lowest priority) stream.
  bool gpu_scoring = false;
  // gpu_scoring: the tensor-core scoring kernel where it applies (false: the f32 kernel, for
  // comparisons; BlockScoreArgs::tensor_cores).
  bool score_tensor_cores = true;
  // gpu_scoring, not deterministic: a group's scoring is queued over this many steps' windows
  // (its layers in equal shares) instead of all in the window after the group ends, so that no
  // single step carries the whole of it; results are then up to that many steps later (at most
  // retrieval_stride).
  size_t gpu_score_spread = 1;
  // gpu_scoring: the groups' scoring kernels run on at most this many CTAs of 64 threads, each
  // looping over the work (BlockScoreArgs::max_ctas), so that they hold a small, fixed share of
  // the SMs beside the decode kernels instead of filling every slot between two launches; 0: the
  // whole grid at once. The same scores either way. The sync steps' scoring, which the step
  // waits for, always takes the whole grid. For measurements: every N tried was slower than 0
  // (decode lost at least the scoring's SM time; docs/BENCHMARKS.md).
  size_t gpu_score_ctas = 0;
  // gpu_scoring: how the scoring kernel reads the representations (BlockScoreArgs::stages: 0 or
  // 3). The same scores either way.
  int gpu_score_stages = 0;
  // gpu_scoring: the representations in HBM are head-major (BlockScoreArgs::head_major): each
  // scoring work item reads its KV head's vectors of a block as one contiguous piece. The same
  // scores either way.
  bool gpu_score_head_major = false;
  // The kernel of the matrix products (kAuto: the skinny tensor-core kernel at decode batch sizes;
  // kLibrary: MatVec / cuBLAS, for comparisons).
  MatMulKernel matmul = MatMulKernel::kAuto;
  // kvstar: a block store (not owned; nullptr: none). Every full prompt block of every layer is
  // dumped to it under its content id (store/block_id.h, chained from kv_fingerprint), and a
  // prompt whose leading blocks the store holds for every layer loads them into the pinned host
  // region and the device instead of recomputing them (its last prompt_queries() tokens are
  // always computed: their queries make the first selection). A file store keeps them across
  // processes. The pinned host region stays the DRAM tier that delta copies read from;
  // decode-produced blocks live there only.
  BlockStore* store = nullptr;
  Hash128 kv_fingerprint;  // KvFingerprint(model weights, kv_dtype)
  // kvstar: the pinned host region keeps only the blocks the device does not hold (kv/host_homes.h,
  // exclusive), instead of every block (inclusive). A block dropped from the device is written
  // back first (device to host, on the d2h stream, or through a device bounce buffer where the
  // delta goes into the slots of the blocks that left); a block copied to the device frees its
  // host home once it has landed. About 1 - sparse_ratio of the KV stays pinned, so more
  // sequences fit a host; the write-backs move as many bytes device to host as the delta moves
  // host to device.
  bool exclusive_host = false;
  // kvstar, not deterministic: this many more slots per (layer, sequence) than the schedule
  // needs, used as a device cache. A block that leaves the selection stays in its slot, out of
  // the table (attention does not read it), until the slot is needed for another block (the
  // oldest cached block goes first; with the exclusive host tier it is written back then); a
  // selection that wants it again takes it back without a copy. The sequence's setup fills the
  // cache with the candidates nearest the local window. With the exclusive host tier the host
  // then pins that many fewer blocks per (layer, sequence): spare HBM holds blocks the host
  // would otherwise pin, so more sequences fit a host.
  size_t kvstar_cache_blocks = 0;
  // Decode steps record events between their phases on the compute stream and sum the device
  // time of each (BatchStats::phase_*); a few dozen events per step, off by default.
  bool phase_timing = false;
  // Decode steps: after each weight-reading stage (attention; the o, gate / up and down
  // products) a PrefetchL2 of up to this many bytes of the next stage's weights (o; gate; down;
  // the next layer's q or the LM head), which runs as that stage's CTAs leave, so that its reads
  // fill the HBM time of the tail and the next product's first rows come from L2. 0: none (the
  // default: every size tried was slower on the H100, docs/BENCHMARKS.md).
  size_t l2_prefetch_bytes = 0;
  // Decode steps: the gate / up product writes SwiGLU's activation (MatMulSwiGlu: a CTA computes
  // the same rows of both) instead of a SwiGlu launch after it (the same bits, one launch fewer per
  // layer). Only without MLP biases. On by default: 0.05-0.1 ms faster per step on the H100 at
  // 128K x 8 (docs/BENCHMARKS.md).
  bool fuse_swiglu = true;
};

struct BatchStats {
  size_t h2d_bytes = 0;          // host -> device bytes, cumulative (KV, X, ids)
  size_t d2h_bytes = 0;          // device -> host bytes, cumulative (write-backs, logits)
  size_t recomputed_tokens = 0;  // kvpr: token-layers whose K/V was recomputed, cumulative
  size_t decode_steps = 0;
  // kvstar.
  size_t retrievals = 0;          // retrieval tasks applied
  size_t skipped_retrievals = 0;  // groups not submitted: two still pending
  size_t late_retrievals = 0;     // results not ready retrieval_stride steps after submission
  size_t swaps = 0;               // selections changed
  // sync_steps: re-selections with the step's own query inside the first decode steps, and the
  // time those steps waited for them (scoring and copies), ms.
  size_t sync_retrievals = 0;
  double sync_wait_ms = 0;
  size_t blocks_loaded = 0;       // delta blocks copied host -> device
  size_t cache_hits = 0;          // blocks a selection took back from the device cache, no copy
  size_t cache_evictions = 0;     // cached blocks that left the device for another block's slot
  double retrieval_ms_total = 0;  // submit -> applied, summed over tasks
  // Host time inside Step while the device has no work of this step queued: before the first
  // kernel (kvstar boundary, inputs) and after the final synchronization (kvstar bookkeeping,
  // retrieval submission). Summed over steps, ms.
  double host_idle_ms_total = 0;
  // offload / kvpr: device time measured with events, summed over steps and layers: the H2D link
  // per layer (from its first copy starting to its K/V arriving) and the K/V recomputation.
  double link_ms_total = 0;
  double recompute_ms_total = 0;
  double host_boundary_ms_total = 0;  // kvstar: of which the boundary (selection bookkeeping)
  double host_after_ms_total = 0;     // kvstar: of which the after-step part (tails, tasks)
  // kvstar: host time in the step's window (retrieval submission, staging, copies), while the
  // device runs the step; a window longer than the step's kernels leaves the device idle.
  double host_window_ms_total = 0;
  double host_window_ms_max = 0;
  // Of the window, wall time: retrieval submission; staging (joins and drops, tables, finished
  // retrievals and the choice of the next copies, on the window threads with GPU scoring);
  // planning (GPU scoring: queuing the step's share of scoring and the top k of a scored group);
  // issuing the batched copies and their events.
  double window_submit_ms_total = 0;
  double window_stage_ms_total = 0;
  double window_plan_ms_total = 0;
  double window_issue_ms_total = 0;
  // kvstar with gpu_scoring: groups scored and their device time (events around the kernels).
  size_t gpu_score_groups = 0;
  double gpu_score_ms_total = 0;
  size_t device_blocks = 0;     // blocks resident in HBM now (all layers and sequences)
  size_t table_blocks = 0;      // of which in the block tables (read by attention), tails included
  size_t candidate_blocks = 0;  // candidates now (all layers and sequences)
  size_t selected_blocks = 0;   // selected now, with candidates held until the next selection
  // kvstar with a store: prompt tokens whose KV was loaded from the store instead of computed,
  // and the bytes of blocks loaded from / dumped to the store, cumulative.
  size_t prefix_reused_tokens = 0;
  size_t store_loaded_bytes = 0;
  size_t store_dumped_bytes = 0;
  size_t store_dump_failures = 0;  // blocks the store refused (the request goes on without them)
  // phase_timing: device time of each decode phase, summed over steps and layers, ms: before
  // attention (kvpr recomputation, norm, q/k/v products), waiting for the layer's KV (the staged
  // layer, kvstar's delta copies and sync re-selections), attention (rotation, the new K/V, the
  // attention kernels), after attention (output product, norm, MLP), embedding and head (final
  // norm, LM head, sampling, results to the host), and the device's idle time between steps
  // (previous step's last event to this step's first).
  size_t phase_steps = 0;
  double phase_pre_ms = 0, phase_wait_ms = 0, phase_attention_ms = 0, phase_post_ms = 0;
  double phase_head_ms = 0, phase_gap_ms = 0;
};

class CudaBatch {
 public:
  static StatusOr<std::unique_ptr<CudaBatch>> Create(CudaModel& model, const BatchOptions& options);
  ~CudaBatch();

  // Device (HBM) bytes this batch holds: KV blocks or staging, activations and scratch.
  size_t device_bytes() const { return device_bytes_; }
  // Device KV bytes per sequence (dense: its blocks; offload / kvpr: its share of staging).
  size_t device_kv_bytes_per_sequence() const;
  // Pinned host bytes (offload / kvpr: the KV and X of every sequence; kvstar: the host tier).
  size_t host_bytes() const { return host_bytes_; }
  static size_t EstimateDeviceBytes(const ModelConfig& config, const BatchOptions& options);
  // kvstar: slots per (layer, sequence); with select_per_kv_head the selection is the union of
  // kv_heads top-k's, at most kv_heads times one.
  static size_t KvstarSlotsPerSeq(const BatchOptions& o, size_t kv_heads);
  // kvstar: the device-cache slots per (layer, sequence) that KvstarSlotsPerSeq leaves room for:
  // kvstar_cache_blocks, less what a sequence's whole capacity does not need.
  static size_t KvstarCacheSlots(const BatchOptions& o, size_t kv_heads);
  // kvstar with gpu_scoring, not deterministic: the threads that stage and plan each step's
  // layers and take the top k of a scored group (retrieval_threads; 0: hardware threads - 3,
  // at most 8, at least 1). 1 is the decoding thread alone.
  static int KvstarWindowThreads(const BatchOptions& o);
  static size_t EstimateHostBytes(const ModelConfig& config, const BatchOptions& options);

  // Runs sequence `seq`'s prompt (layer-major, chunked) and stores its KV. last_logits (host,
  // [vocab]) receives the last prompt position's logits when not null. Sequences must be
  // prefilled before the first Step; they may have different lengths.
  Status Prefill(size_t seq, std::span<const int32_t> prompt, float* last_logits,
                 const std::function<bool(size_t, size_t)>& progress = nullptr);
  // Benchmarks: gives sequence `seq` a context of `tokens` random K/V (and X in kvpr) instead of
  // running a prompt; decode cost does not depend on the values.
  Status FillRandomContext(size_t seq, size_t tokens, uint32_t seed);

  // One decode step: tokens[b] (host) is appended to sequence b at its next position. next[b]
  // (host) receives the greedy next token; logits (host [batch][vocab]) when not null.
  Status Step(std::span<const int32_t> tokens, std::span<int32_t> next, float* logits = nullptr);

  size_t length(size_t seq) const { return lengths_[seq]; }
  // kvstar: the selection attention reads for (layer, seq) from the next step on (ascending
  // candidate block indices; candidates held since the last selection not included).
  std::vector<uint32_t> kvstar_selection(size_t layer, size_t seq) const;
  // kvstar: the bytes of block `block` of (layer, seq) from wherever it is now (its device slot,
  // else its host home); waits for the device. For tests of the host tiers.
  StatusOr<std::vector<uint8_t>> KvstarBlockBytes(size_t layer, size_t seq, size_t block) const;
  const BatchStats& stats() const { return stats_; }
  const BatchOptions& options() const { return opt_; }
  // kvpr: the split used (tokens recomputed per sequence, a multiple of block_tokens).
  // With per-layer splits: the largest; layer_splits() gives each layer's.
  size_t kvpr_split() const { return split_; }
  const std::vector<size_t>& layer_splits() const { return layer_split_; }

 private:
  struct Impl;
  CudaBatch(CudaModel& model, const BatchOptions& options);
  Status Init();
  // phase_timing: adds the last step's phase times to stats_ (its marks have completed).
  Status AddPhaseTimes(size_t parity);
  // kvstar (setup in cuda_kvstar_setup.cc, the schedule in cuda_kvstar.cc; GPU scoring in
  // cuda_kvstar_gpu.cc; the host tier and prefix reuse in cuda_kvstar_host.cc).
  // Homes of the host tier per layer (HostHomes): batch * max_blocks, or with exclusive_host
  // enough for the blocks off the device.
  static size_t KvstarHomesPerLayer(const BatchOptions& o, size_t kv_heads);
  Status KvstarInit();
  Status KvstarInitGpuScoring();
  // After sequence `seq`'s context is in host memory: representations, the first selection from
  // `group0` ([nq][q_heads * head_dim] per layer), the resident blocks copied to their slots.
  Status KvstarSetupSequence(size_t seq, const std::vector<std::vector<float>>& group0, size_t nq);
  // With a store: loads into sequence `seq`'s pinned host region the longest run of leading
  // blocks (at most max_blocks; ids from `chain`) that the store holds for every layer, and
  // returns its length. A block that cannot be loaded intact (evicted since the lookup, damaged,
  // another size) makes it 0: the prompt is then computed in full, with a warning.
  StatusOr<size_t> KvstarLoadPrefix(size_t seq, std::span<const Hash128> chain, size_t max_blocks);
  // With a store: dumps blocks [first, end) of (layer, seq) from the pinned host region, which
  // must already hold them (the caller synchronizes). A failed dump only loses its reuse.
  StoreTask KvstarDumpBlocks(size_t layer, size_t seq, std::span<const Hash128> chain, size_t first,
                             size_t end);
  // The pinned host home of (layer, seq, block), or nullptr when it has none (exclusive host tier,
  // block on the device).
  char* KvstarHome(size_t layer, size_t seq, size_t block) const;
  // Copies blocks [first, first + count) of (layer, seq) between their host homes and the device
  // (contiguous from `device`), acquiring homes when copying to the host; runs of consecutive
  // homes go as one copy.
  Status KvstarHomeCopy(size_t layer, size_t seq, size_t first, size_t count, char* device,
                        bool to_host, CudaStream* stream);
  // Exclusive host tier: KvstarReplaceSelection's swaps (Impl::swaps) on `stream`, in order:
  // blocks that leave without a replacement are written back to new homes; each replaced block
  // goes to the device bounce buffer, the incoming block into its slot, and the bounced block
  // into the incoming block's home.
  Status KvstarIssueSwaps(CudaStream* stream);
  // Before a step: applies finished retrievals (delta copies queued), uploads tables.
  Status KvstarBoundary();
  // Replaces (layer, seq)'s selection and extras below cand_end by `next` (ascending; blocks at or
  // above cand_end were not scored and stay held). Slots of blocks that leave are free at once:
  // the caller makes sure no queued work reads them. The incoming blocks' copies are appended to
  // Impl::copy_dst/src/bytes (inclusive host tier) or Impl::swaps (exclusive) for the caller to
  // issue; the table mirror is rebuilt.
  Status KvstarReplaceSelection(size_t layer, size_t seq, const std::vector<uint32_t>& next,
                                uint32_t cand_end);
  // Not deterministic, for one (layer, seq), adding its copies and counters to `work` (layer's):
  // joins the blocks whose copies completed and drops what the target no longer wants; takes
  // finished retrievals and chooses the next copies. Calls for different layers may run at once.
  Status KvstarStage(size_t layer, size_t seq, KvstarLayerWork& work);
  Status KvstarPlanCopies(size_t layer, size_t seq, KvstarLayerWork& work);
  // Not deterministic: KvstarStage and KvstarPlanCopies for every (layer, sequence) (on the
  // window threads with GPU scoring) and one batch of copies per layer, called once the step's
  // kernels are queued so that this host work overlaps the step instead of preceding it.
  Status KvstarIssueCopies();
  // One retrieval task per (layer, sequence) for the group that ended at step kv_steps_.
  Status KvstarSubmitGroup();
  // gpu_scoring: KvstarSubmitGroup's work on the device: tasks, kernels, the scores' copy home.
  Status KvstarScoreGroupOnDevice();
  // gpu_scoring: the descriptor of task `task` ([layer][seq] order) over its representations and
  // channels, from `queries` into `scores`; it scores nothing until cand_begin / cand_end are set.
  BlockScoreTask KvstarDeviceTask(size_t task, const float* queries, float* scores) const;
  // GPU scoring: `blocks` blocks of representations from sparse::BlockRepresentations' layout
  // into `dst` in the device layout (gpu_score_head_major).
  void KvstarDeviceReps(const uint16_t* src, size_t blocks, uint16_t* dst) const;
  // gpu_scoring: turns the scores of completed groups into results (host top-k). Groups up to
  // and including `wait_for` (when not null) are waited for; later ones only if already done.
  Status KvstarHarvest(const KvstarGpuGroup* wait_for);
  // GPU scoring: queues the group's next ScoreBlocks calls (all the rest with `all`, else this
  // step's share of gpu_score_spread), then the scores' copy to the host after the last.
  Status KvstarIssueScoring(KvstarGpuGroup& g, bool all);
  bool KvstarReady(const KvstarPending& p) const;
  Status KvstarWait(KvstarPending& p);
  static const sparse::RetrievalResult& KvstarResult(const KvstarPending& p);
  static size_t KvstarGpuScoringBytes(const ModelConfig& config, const BatchOptions& options);
  // sync_steps: inside one of the first sync_steps decode steps, after layer `layer`'s queries
  // `q` ([batch][q_dim] on the device) are made and before its attention: each sequence's
  // selection is re-made from its own query, the delta copied and the layer's tables uploaded,
  // synchronously (as KvstarPolicy::SyncReselect on the CPU).
  Status KvstarSyncReselect(size_t layer, const float* q);
  // The sync step's scoring of `layer` for every sequence with candidates [init, cand_end[seq])
  // (0: none): on the retriever's threads, or with gpu_scoring on the device (compute stream).
  Status KvstarSyncScoreOnHost(size_t layer, const float* q, const std::vector<uint32_t>& cand_end,
                               std::vector<sparse::RetrievalResult>* results);
  Status KvstarSyncScoreOnDevice(size_t layer, const float* q,
                                 const std::vector<uint32_t>& cand_end,
                                 std::vector<sparse::RetrievalResult>* results);
  // After a step: full tail blocks become local / candidates; a complete group is submitted
  // (not while the next step is a sync step: its re-selection would replace the result).
  Status KvstarAfterStep();
  Status KvstarRebuildTable(size_t layer, size_t seq);
  void KvstarCount();        // device / candidate / selected block counts into stats_
  size_t kv_steps_ = 0;      // kvstar: decode steps done
  bool submit_due_ = false;  // kvstar: a complete group waits for the next step's window

  CudaModel& model_;
  BatchOptions opt_;
  KvGeometry geom_;
  size_t max_blocks_ = 0;  // per sequence
  size_t split_ = 0;
  std::vector<size_t> layer_split_;  // kvpr: per layer, <= split_
  std::vector<size_t> lengths_;
  std::vector<size_t> prompt_lengths_;
  size_t device_bytes_ = 0;
  size_t host_bytes_ = 0;
  BatchStats stats_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvstar::cuda
