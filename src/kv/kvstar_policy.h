// KvstarPolicy: the KVstar decode mode (DESIGN.md, "The KVstar schedule").
//
// Every full KV block of the request is dumped to the block store. The device pool keeps, per
// layer, the init window, the local window, the partial tail block and the blocks of the active
// selection (top sparse_ratio of the candidates). Every retrieval_stride decode steps the queries
// of those steps are scored against per-block representations on the retriever's threads; the
// blocks that changed are loaded from the store into staging slots and the selection is swapped
// at a step boundary once they have arrived. The decode loop never waits for retrieval or loads
// (except in deterministic mode, which uses UCM's fixed timing: the selection computed from group
// k-1 is active from step kR+1).
//
// Prefill is layer-major (Transformer::Prefill): a layer's whole prompt KV is on the device only
// until EndLayerPrefill makes its first selection from the last prompt queries (group 0) and
// releases the unselected blocks, so prefill peaks at one layer's KV plus the selections.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "base/hash.h"
#include "base/thread_pool.h"
#include "kv/device_pool.h"
#include "kv/kv_policy.h"
#include "kv/kvstar_config.h"
#include "sparse/block_representations.h"
#include "sparse/retriever.h"
#include "store/block_store.h"

namespace kvstar {

// Engine-wide resources shared by every request in kvstar mode.
struct KvstarResources {
  DevicePool* pool = nullptr;
  ThreadPool* compute = nullptr;
  sparse::Retriever* retriever = nullptr;
  BlockStore* store = nullptr;
  Hash128 model_fingerprint;
};

// Test and tooling hook: sees every retrieval result and every applied selection.
struct KvstarObserver {
  virtual ~KvstarObserver() = default;
  // group: 0 for the prompt's last queries, g >= 1 for decode steps (g-1)R+1 .. gR.
  virtual void OnRetrieval(int layer, size_t group, const sparse::RetrievalTask& task,
                           const std::vector<uint32_t>& selection) {}
  // The selection that attention reads from decode step `step` + 1 on.
  virtual void OnSwap(int layer, size_t group, size_t step,
                      const std::vector<uint32_t>& selection) {}
};

class KvstarPolicy final : public KvPolicy {
 public:
  static StatusOr<std::unique_ptr<KvstarPolicy>> Create(const KvstarResources& resources,
                                                        const KvstarConfig& config,
                                                        size_t num_layers, size_t q_heads,
                                                        float attn_scale);
  // Cancels retrievals and loads in flight, waits until no I/O touches the request's slots,
  // then gives every slot back to the pool.
  ~KvstarPolicy() override;
  KvstarPolicy(const KvstarPolicy&) = delete;
  KvstarPolicy& operator=(const KvstarPolicy&) = delete;

  const char* name() const override { return "kvstar"; }
  Status Attend(int layer, const float* q, const float* k, const float* v, size_t n,
                int64_t first_pos, float* out) override;
  StatusOr<size_t> PrepareReuse(std::span<const int32_t> prompt) override;
  void AppendTokens(std::span<const int32_t> tokens) override;
  Status EndLayerPrefill(int layer) override;
  Status EndChunk(size_t n, bool prefill_done) override;
  size_t num_tokens() const override { return num_tokens_; }
  KvStats Stats() const override;

  void set_observer(KvstarObserver* observer) { observer_ = observer; }
  // Calls fn for every full block held on the device: (layer, block index, data, block id).
  void ForEachDeviceBlock(
      const std::function<void(int, size_t, const void*, const Hash128&)>& fn) const;
  // The active selection of a layer (sorted candidate block indices).
  const std::vector<uint32_t>& selection(int layer) const;

 private:
  struct LayerState;
  KvstarPolicy(const KvstarResources& resources, const KvstarConfig& config, size_t num_layers,
               size_t q_heads, float attn_scale);

  size_t block_tokens() const { return geom_.block_tokens; }
  Status PrefillAttend(LayerState& L, int layer, const float* q, const float* k, const float* v,
                       size_t n, size_t first, float* out);
  Status DecodeAttend(LayerState& L, int layer, const float* q, const float* k, const float* v,
                      size_t pos, float* out);
  Status LoadReusedBlocks(LayerState& L, int layer);
  Status EnsureSlot(LayerState& L, size_t block);
  Status DumpBlock(LayerState& L, int layer, size_t block);
  Status OnBlockFull(LayerState& L, int layer, size_t block);
  sparse::RetrievalTask MakeTask(const LayerState& L, const float* queries, size_t x) const;
  std::vector<uint32_t> Candidates(const LayerState& L) const;
  std::vector<uint32_t> SelectionFromResult(const LayerState& L, const sparse::RetrievalTask& task,
                                            const sparse::RetrievalResult& r) const;
  Status StepBoundary(LayerState& L, int layer);
  // sync_steps: re-select with this step's query and load the delta before attending.
  Status SyncReselect(LayerState& L, int layer, const float* q);
  Status SubmitGroup(LayerState& L, int layer);
  Status TakeRetrieval(LayerState& L, int layer);
  Status IssueLoad(LayerState& L, int layer, std::vector<uint32_t> selection);
  // max_loads_per_step: the next blocks of the target (LayerState::target) into the device.
  Status IssueTargetPart(LayerState& L, int layer);
  // Starts the load of L.incoming from the store (the swap to next_selection follows it), or
  // swaps at once when nothing is incoming.
  Status LoadIncoming(LayerState& L, int layer);
  Status FinishLoad(LayerState& L, int layer);
  Status ApplySwap(LayerState& L, int layer);
  Status FreeBlock(LayerState& L, size_t block);
  Status WaitDump(LayerState& L, size_t block);
  Status PollDumps(LayerState& L);
  Hash128 BlockId(int layer, size_t block) const;

  KvstarResources res_;
  KvstarConfig config_;
  KvGeometry geom_;
  size_t q_heads_;
  float attn_scale_;
  size_t q_row_;  // q_heads * head_dim
  std::vector<std::unique_ptr<LayerState>> layers_;
  std::vector<int32_t> tokens_;
  std::vector<Hash128> prefix_chain_;  // [full blocks] hash of the token prefix
  size_t num_tokens_ = 0;
  size_t prompt_tokens_ = 0;
  size_t reused_blocks_ = 0;
  size_t steps_ = 0;  // decode steps completed
  KvStats stats_;
  KvstarObserver* observer_ = nullptr;
  std::vector<int64_t> q_last_;     // scratch
  std::vector<const void*> table_;  // scratch: attention block table
};

}  // namespace kvstar
