#include "kv/kvstar_policy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "base/logging.h"
#include "base/timer.h"
#include "kv/exact_selection.h"
#include "ops/cpu/ops.h"
#include "sparse/channel_importance.h"
#include "store/block_id.h"

namespace kvstar {

struct KvstarPolicy::LayerState {
  // Per block index: the device slot, or -1 when the block lives only in the store.
  std::vector<int> slot;
  std::vector<StoreTask> dump;  // [block] the dump that reads the block's slot, if issued
  size_t tokens = 0;            // tokens of this layer with K/V written
  bool decoding = false;        // EndLayerPrefill done
  bool reused_loaded = false;   // prefix-reuse blocks loaded
  std::vector<float> prompt_q;  // [<= R][q_heads][head_dim] last prompt queries (group 0)
  size_t prompt_q_rows = 0;
  std::unique_ptr<sparse::BlockRepresentations> reps;  // blocks [0, reps->num_blocks())
  // Attended candidate blocks: the active selection, plus blocks that left the local window
  // since the last swap (still on the device until the next swap decides about them).
  std::vector<uint32_t> selected;
  std::vector<uint32_t> extras;
  std::vector<float> group;  // [R][q_heads][head_dim] queries of the current group
  size_t group_rows = 0;
  size_t groups_done = 0;  // decode groups completed (group g = steps (g-1)R+1 .. gR)
  // In flight.
  sparse::RetrievalHandle retrieval;
  sparse::RetrievalTask submitted;  // the inputs of `retrieval` (for observers)
  size_t retrieval_group = 0;
  size_t retrieval_cand_end = 0;  // candidates of `retrieval` were blocks below this index
  double retrieval_start = 0;
  bool load_pending = false;
  size_t load_group = 0;
  size_t load_cand_end = 0;  // blocks at or above this index were not scored: kept as extras
  StoreTask load;
  std::vector<std::pair<uint32_t, int>> incoming;  // (block, slot) being loaded
  std::vector<uint32_t> next_selection;
  size_t applied_group = 0;  // group whose selection is active (0 = the prompt's)
  // max_loads_per_step: the newest selection (sorted) while its blocks load a few per step,
  // those still missing (highest score first), and the scores of its retrieval per block.
  std::vector<uint32_t> target;
  std::vector<uint32_t> target_missing;
  std::vector<float> target_score;  // [block]; -inf where not scored
  size_t target_group = 0, target_cand_end = 0;
};

StatusOr<std::unique_ptr<KvstarPolicy>> KvstarPolicy::Create(const KvstarResources& resources,
                                                             const KvstarConfig& config,
                                                             size_t num_layers, size_t q_heads,
                                                             float attn_scale) {
  if (resources.pool == nullptr || resources.compute == nullptr || resources.retriever == nullptr ||
      resources.store == nullptr) {
    return InvalidArgument("kvstar mode needs a device pool, threads, a retriever and a store");
  }
  KVSTAR_RETURN_IF_ERROR(config.Validate(resources.pool->geometry().block_tokens));
  const KvGeometry& g = resources.pool->geometry();
  if (q_heads == 0 || q_heads % g.kv_heads != 0) {
    return InvalidArgument("q_heads %zu is not a multiple of kv_heads %zu", q_heads, g.kv_heads);
  }
  return std::unique_ptr<KvstarPolicy>(
      new KvstarPolicy(resources, config, num_layers, q_heads, attn_scale));
}

KvstarPolicy::KvstarPolicy(const KvstarResources& resources, const KvstarConfig& config,
                           size_t num_layers, size_t q_heads, float attn_scale)
    : res_(resources),
      config_(config),
      geom_(resources.pool->geometry()),
      q_heads_(q_heads),
      attn_scale_(attn_scale),
      q_row_(q_heads * resources.pool->geometry().head_dim) {
  layers_.reserve(num_layers);
  for (size_t l = 0; l < num_layers; ++l) {
    auto L = std::make_unique<LayerState>();
    L->group.resize(config_.retrieval_stride * q_row_);
    L->prompt_q.resize(config_.prompt_queries() * q_row_);
    layers_.push_back(std::move(L));
  }
}

KvstarPolicy::~KvstarPolicy() {
  for (auto& L : layers_) {
    if (L->retrieval.valid()) L->retrieval.Cancel();
    if (L->load.valid()) {
      L->load.Cancel();
      L->load.Wait().IgnoreError();  // only to know the I/O threads are done with the slots
    }
    for (auto& [block, s] : L->incoming) res_.pool->Free(s);
    for (size_t b = 0; b < L->slot.size(); ++b) {
      if (L->dump.size() > b && L->dump[b].valid()) L->dump[b].Wait().IgnoreError();
      if (L->slot[b] >= 0) res_.pool->Free(L->slot[b]);
    }
  }
}

void KvstarPolicy::AppendTokens(std::span<const int32_t> tokens) {
  tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
  // Extend the prefix hash chain when a block's tokens are complete (a full rehash per new
  // block: about one every block_tokens decode steps).
  if (tokens_.size() / block_tokens() > prefix_chain_.size()) {
    prefix_chain_ = PrefixChain(res_.model_fingerprint, tokens_, block_tokens());
  }
}

Hash128 KvstarPolicy::BlockId(int layer, size_t block) const {
  KVSTAR_CHECK(block < prefix_chain_.size(), "block %zu: only %zu blocks of tokens appended", block,
               prefix_chain_.size());
  return LayerBlockId(prefix_chain_[block], layer);
}

StatusOr<size_t> KvstarPolicy::PrepareReuse(std::span<const int32_t> prompt) {
  KVSTAR_CHECK(tokens_.size() == prompt.size(), "AppendTokens(prompt) must come first");
  prompt_tokens_ = prompt.size();
  const size_t bt = block_tokens();
  const size_t keep = config_.prompt_queries();
  if (prompt.size() <= keep) return size_t{0};
  // At least the last group-0 prompt tokens are recomputed: their queries form group 0.
  const size_t max_blocks = std::min(prompt.size() / bt, (prompt.size() - keep) / bt);
  if (max_blocks == 0) return size_t{0};
  std::vector<Hash128> ids;
  ids.reserve(max_blocks * layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l)
    for (size_t b = 0; b < max_blocks; ++b)
      ids.push_back(LayerBlockId(prefix_chain_[b], static_cast<int>(l)));
  const std::vector<bool> found = res_.store->Lookup(ids);
  size_t m = max_blocks;
  for (size_t l = 0; l < layers_.size(); ++l)
    for (size_t b = 0; b < m; ++b)
      if (!found[l * max_blocks + b]) m = b;
  reused_blocks_ = m;
  stats_.prefix_reused_tokens = m * bt;
  for (auto& L : layers_) L->tokens = 0;
  num_tokens_ = m * bt;
  return m * bt;
}

// Loads the reused prefix blocks of one layer before its first prefill chunk.
Status KvstarPolicy::LoadReusedBlocks(LayerState& L, int layer) {
  L.reused_loaded = true;
  if (reused_blocks_ == 0) return Status::Ok();
  std::vector<LoadItem> items;
  for (size_t b = 0; b < reused_blocks_; ++b) {
    KVSTAR_RETURN_IF_ERROR(EnsureSlot(L, b));
    items.push_back({BlockId(layer, b), res_.pool->slot(L.slot[b]), geom_.block_bytes()});
  }
  StoreTask task = res_.store->Load(items);
  Status s = task.Wait();
  for (size_t i = 0; s.ok() && i < items.size(); ++i) {
    if (task.item_bytes(i) != geom_.block_bytes()) {
      s = DataLoss("stored block %zu holds %zu bytes, a block is %zu", i, task.item_bytes(i),
                   geom_.block_bytes());
    }
  }
  if (!s.ok()) {
    return s.WithContext("loading reused prefix blocks of layer " + std::to_string(layer) +
                         " (an entry was evicted or damaged since the lookup; run again)");
  }
  stats_.bytes_loaded += items.size() * geom_.block_bytes();
  stats_.blocks_loaded += items.size();
  L.tokens = reused_blocks_ * block_tokens();
  return Status::Ok();
}

Status KvstarPolicy::EnsureSlot(LayerState& L, size_t block) {
  if (L.slot.size() <= block) {
    L.slot.resize(block + 1, -1);
    L.dump.resize(block + 1);
  }
  if (L.slot[block] < 0) {
    KVSTAR_ASSIGN_OR_RETURN(L.slot[block], res_.pool->Allocate());
  }
  return Status::Ok();
}

Status KvstarPolicy::DumpBlock(LayerState& L, int layer, size_t block) {
  const DumpItem item{BlockId(layer, block), res_.pool->slot(L.slot[block]), geom_.block_bytes()};
  L.dump[block] = res_.store->Dump(std::span<const DumpItem>(&item, 1));
  stats_.bytes_dumped += geom_.block_bytes();
  return Status::Ok();
}

Status KvstarPolicy::WaitDump(LayerState& L, size_t block) {
  if (block >= L.dump.size() || !L.dump[block].valid()) return Status::Ok();
  Status s = L.dump[block].Wait();
  L.dump[block] = StoreTask();
  if (!s.ok()) return s.WithContext("dumping KV block " + std::to_string(block) + " to the store");
  return Status::Ok();
}

Status KvstarPolicy::PollDumps(LayerState& L) {
  for (size_t b = 0; b < L.dump.size(); ++b) {
    if (L.dump[b].valid() && L.dump[b].Ready()) KVSTAR_RETURN_IF_ERROR(WaitDump(L, b));
  }
  return Status::Ok();
}

Status KvstarPolicy::FreeBlock(LayerState& L, size_t block) {
  if (L.slot[block] < 0) return Status::Ok();
  // The store must hold the block before its only device copy goes.
  KVSTAR_RETURN_IF_ERROR(WaitDump(L, block));
  res_.pool->Free(L.slot[block]);
  L.slot[block] = -1;
  return Status::Ok();
}

Status KvstarPolicy::Attend(int layer, const float* q, const float* k, const float* v, size_t n,
                            int64_t first_pos, float* out) {
  KVSTAR_CHECK(layer >= 0 && static_cast<size_t>(layer) < layers_.size(), "layer %d of %zu", layer,
               layers_.size());
  LayerState& L = *layers_[static_cast<size_t>(layer)];
  if (!L.reused_loaded) KVSTAR_RETURN_IF_ERROR(LoadReusedBlocks(L, layer));
  KVSTAR_CHECK(static_cast<size_t>(first_pos) == L.tokens,
               "layer %d holds %zu tokens, chunk starts at %lld", layer, L.tokens,
               static_cast<long long>(first_pos));
  KVSTAR_CHECK(L.tokens + n <= tokens_.size(), "K/V for %zu tokens, %zu tokens appended",
               L.tokens + n, tokens_.size());
  if (!L.decoding) return PrefillAttend(L, layer, q, k, v, n, L.tokens, out);
  if (n != 1) return InvalidArgument("kvstar decodes one token per step, got %zu", n);
  return DecodeAttend(L, layer, q, k, v, L.tokens, out);
}

Status KvstarPolicy::PrefillAttend(LayerState& L, int layer, const float* q, const float* k,
                                   const float* v, size_t n, size_t first, float* out) {
  const size_t bt = block_tokens();
  const size_t end = first + n;
  for (size_t b = first / bt; b * bt < end; ++b) KVSTAR_RETURN_IF_ERROR(EnsureSlot(L, b));
  table_.resize(L.slot.size());
  std::vector<void*> writable(L.slot.size());
  for (size_t b = 0; b < L.slot.size(); ++b) {
    KVSTAR_CHECK(L.slot[b] >= 0, "prefill block %zu of layer %d not on device", b, layer);
    writable[b] = res_.pool->slot(L.slot[b]);
    table_[b] = writable[b];
  }
  ops::WriteKv(geom_, writable.data(), first, n, k, v);
  q_last_.resize(n);
  for (size_t i = 0; i < n; ++i) q_last_[i] = static_cast<int64_t>(first + i);
  ops::AttentionOverBlocks(*res_.compute, geom_, q_heads_, q, n, q_last_.data(), table_.data(), end,
                           attn_scale_, out);
  L.tokens = end;
  // Keep the last prompt queries: they form group 0.
  const size_t R = config_.prompt_queries();
  const size_t take = std::min(n, R);
  const size_t keep_old = std::min(L.prompt_q_rows, R - take);
  std::memmove(L.prompt_q.data(), L.prompt_q.data() + (L.prompt_q_rows - keep_old) * q_row_,
               keep_old * q_row_ * sizeof(float));
  std::memcpy(L.prompt_q.data() + keep_old * q_row_, q + (n - take) * q_row_,
              take * q_row_ * sizeof(float));
  L.prompt_q_rows = keep_old + take;
  // Dump blocks completed by this chunk.
  for (size_t b = first / bt; (b + 1) * bt <= end; ++b) {
    if (b >= reused_blocks_) KVSTAR_RETURN_IF_ERROR(DumpBlock(L, layer, b));
  }
  return Status::Ok();
}

std::vector<uint32_t> KvstarPolicy::Candidates(const LayerState& L) const {
  const size_t full = L.tokens / block_tokens();
  std::vector<uint32_t> c;
  const size_t init = config_.init_window_sz;
  const size_t local = config_.local_window_sz;
  if (full <= init + local) return c;
  for (size_t b = init; b < full - local; ++b) c.push_back(static_cast<uint32_t>(b));
  return c;
}

sparse::RetrievalTask KvstarPolicy::MakeTask(const LayerState& L, const float* queries,
                                             size_t x) const {
  sparse::RetrievalTask t;
  t.reps = L.reps->View();
  t.queries.assign(queries, queries + x * q_row_);
  t.num_queries = x;
  t.q_heads = q_heads_;
  if (config_.softmax_scope == "all") {
    // Every block with a representation (windows included) is scored, so that each head's
    // softmax spans what its attention spans; only candidates can be selected (Select...).
    for (size_t b = 0; b < t.reps.num_blocks(); ++b)
      t.candidates.push_back(static_cast<uint32_t>(b));
  } else {
    t.candidates = Candidates(L);
  }
  t.sparse_ratio = config_.sparse_ratio;
  t.options.select_per_kv_head = config_.select_per_kv_head;
  return t;
}

std::vector<uint32_t> KvstarPolicy::SelectionFromResult(const LayerState& L,
                                                        const sparse::RetrievalTask& task,
                                                        const sparse::RetrievalResult& r) const {
  std::vector<uint32_t> sel;
  if (config_.softmax_scope == "all") {
    // Top k of the candidates among all scored blocks (task.candidates = 0, 1, 2...).
    const std::vector<uint32_t> cands = Candidates(L);
    const size_t k = sparse::SelectionSize(cands.size(), config_.sparse_ratio);
    const size_t stride = config_.select_per_kv_head ? geom_.kv_heads : 1;
    std::vector<float> scores(cands.size() * stride);
    for (size_t i = 0; i < cands.size(); ++i) {
      KVSTAR_CHECK(cands[i] < task.candidates.size(), "candidate %u not scored", cands[i]);
      for (size_t h = 0; h < stride; ++h) {
        scores[i * stride + h] = r.candidate_scores[cands[i] * stride + h];
      }
    }
    for (size_t h = 0; h < stride; ++h) {
      for (size_t pos : sparse::TopKPositions(scores.data() + h, stride, cands, k)) {
        sel.push_back(cands[pos]);
      }
    }
  } else {
    sel = r.blocks;
    if (config_.select_per_kv_head) {
      sel.clear();
      for (const auto& h : r.head_blocks) sel.insert(sel.end(), h.begin(), h.end());
    }
  }
  std::sort(sel.begin(), sel.end());
  sel.erase(std::unique(sel.begin(), sel.end()), sel.end());
  return sel;
}

Status KvstarPolicy::EndLayerPrefill(int layer) {
  LayerState& L = *layers_[static_cast<size_t>(layer)];
  if (!L.reused_loaded) KVSTAR_RETURN_IF_ERROR(LoadReusedBlocks(L, layer));
  const size_t bt = block_tokens();
  const size_t full = L.tokens / bt;
  // Channel importance over every prompt key, then one representation per full block.
  sparse::ChannelImportanceAccumulator acc(geom_.kv_heads, geom_.head_dim,
                                           config_.blk_repre_dim_prune_ratio);
  for (size_t b = 0; b * bt < L.tokens; ++b) {
    const size_t valid = std::min(bt, L.tokens - b * bt);
    KVSTAR_RETURN_IF_ERROR(acc.AddBlock(res_.pool->slot(L.slot[b]), geom_, valid));
  }
  KVSTAR_ASSIGN_OR_RETURN(sparse::ChannelIndex channels, acc.Finalize());
  sparse::RepresentationOptions ropt;
  ropt.merge = config_.blk_repre_inner_token_merge;
  KVSTAR_ASSIGN_OR_RETURN(L.reps,
                          sparse::BlockRepresentations::Create(geom_, std::move(channels), ropt));
  for (size_t b = 0; b < full; ++b) {
    KVSTAR_RETURN_IF_ERROR(L.reps->Append(res_.pool->slot(L.slot[b]), geom_));
  }
  L.decoding = true;
  // First selection from the prompt's last queries, made while the whole layer is still on the
  // device: the unselected candidates are released, nothing has to be loaded for step 1.
  const std::vector<uint32_t> cands = Candidates(L);
  if (cands.empty() || L.prompt_q_rows == 0) return Status::Ok();
  sparse::RetrievalTask task = MakeTask(L, L.prompt_q.data(), L.prompt_q_rows);
  if (config_.first_selection == "exact") {
    std::vector<const void*> all(full + (L.tokens % bt ? 1 : 0));
    for (size_t b = 0; b < all.size(); ++b) all[b] = res_.pool->slot(L.slot[b]);
    L.selected =
        ExactSelection(geom_, L.prompt_q.data(), L.prompt_q_rows, q_heads_, attn_scale_, all.data(),
                       L.tokens, cands, sparse::SelectionSize(cands.size(), config_.sparse_ratio),
                       config_.vote == "max" ? BlockVote::kMax : BlockVote::kSum);
  } else {
    KVSTAR_ASSIGN_OR_RETURN(sparse::RetrievalResult result, sparse::RunRetrieval(task));
    L.selected = SelectionFromResult(L, task, result);
  }
  stats_.retrievals++;
  if (observer_ != nullptr) observer_->OnRetrieval(layer, 0, task, L.selected);
  for (uint32_t b : cands) {
    if (!std::binary_search(L.selected.begin(), L.selected.end(), b)) {
      KVSTAR_RETURN_IF_ERROR(FreeBlock(L, b));
    }
  }
  if (observer_ != nullptr) observer_->OnSwap(layer, 0, 0, L.selected);
  return Status::Ok();
}

Status KvstarPolicy::DecodeAttend(LayerState& L, int layer, const float* q, const float* k,
                                  const float* v, size_t pos, float* out) {
  const size_t bt = block_tokens();
  const size_t tail = pos / bt;
  KVSTAR_RETURN_IF_ERROR(EnsureSlot(L, tail));
  void* tail_ptr = res_.pool->slot(L.slot[tail]);
  // A one-block table whose block 0 is the tail: logical token pos % bt is the new row.
  ops::WriteKv(geom_, &tail_ptr, pos % bt, 1, k, v);
  // The query joins the current retrieval group.
  KVSTAR_CHECK(L.group_rows < config_.retrieval_stride, "group overflow %zu", L.group_rows);
  std::memcpy(L.group.data() + L.group_rows * q_row_, q, q_row_ * sizeof(float));
  L.group_rows++;
  if (steps_ < config_.sync_steps) KVSTAR_RETURN_IF_ERROR(SyncReselect(L, layer, q));
  // Block table in ascending block order (windows, selection, blocks that just left the local
  // window), tail last: with every block selected it is exactly the dense table.
  const size_t full = tail;  // full blocks before the tail
  const size_t init_end = std::min(full, config_.init_window_sz);
  const size_t local_begin = full > config_.local_window_sz ? full - config_.local_window_sz : 0;
  table_.clear();
  auto add = [&](size_t b) {
    KVSTAR_CHECK(L.slot[b] >= 0, "layer %d block %zu is attended but not on the device", layer, b);
    table_.push_back(res_.pool->slot(L.slot[b]));
  };
  size_t si = 0, ei = 0;
  for (size_t b = 0; b < full; ++b) {
    const bool window = b < init_end || b >= local_begin;
    while (si < L.selected.size() && L.selected[si] < b) ++si;
    while (ei < L.extras.size() && L.extras[ei] < b) ++ei;
    const bool sel = (si < L.selected.size() && L.selected[si] == b) ||
                     (ei < L.extras.size() && L.extras[ei] == b);
    if (window || sel) add(b);
  }
  const size_t attended_full = table_.size();
  table_.push_back(tail_ptr);
  const size_t num = attended_full * bt + (pos % bt) + 1;
  const int64_t q_last = static_cast<int64_t>(num - 1);
  ops::AttentionOverBlocks(*res_.compute, geom_, q_heads_, q, 1, &q_last, table_.data(), num,
                           attn_scale_, out);
  L.tokens = pos + 1;
  if ((pos + 1) % bt == 0) KVSTAR_RETURN_IF_ERROR(OnBlockFull(L, layer, tail));
  return Status::Ok();
}

// Block `block` just filled: it joins the local window and goes to the store; the block that
// leaves the local window becomes a candidate (it gets a representation and stays on the device
// until the next swap decides about it).
Status KvstarPolicy::OnBlockFull(LayerState& L, int layer, size_t block) {
  KVSTAR_RETURN_IF_ERROR(DumpBlock(L, layer, block));
  // Representations are built when a block fills (blocks fill in order), so that window blocks
  // can take part in the softmax of softmax_scope "all".
  KVSTAR_CHECK(L.reps->num_blocks() == block, "representations cover %zu blocks, block %zu filled",
               L.reps->num_blocks(), block);
  KVSTAR_RETURN_IF_ERROR(L.reps->Append(res_.pool->slot(L.slot[block]), geom_));
  const size_t full = block + 1;
  if (full <= config_.init_window_sz + config_.local_window_sz) return Status::Ok();
  const size_t leaving = full - 1 - config_.local_window_sz;
  if (leaving < config_.init_window_sz) return Status::Ok();
  if (!std::binary_search(L.selected.begin(), L.selected.end(), leaving)) {
    L.extras.push_back(static_cast<uint32_t>(leaving));  // ascending: blocks leave in order
  }
  return Status::Ok();
}

Status KvstarPolicy::SubmitGroup(LayerState& L, int layer) {
  (void)layer;
  L.groups_done++;
  const size_t g = L.groups_done;
  const size_t rows = L.group_rows;
  L.group_rows = 0;
  if (Candidates(L).empty()) return Status::Ok();
  // With max_loads_per_step a target's blocks load over many steps: a new group is submitted
  // anyway (the CUDA engine's schedule), and replaces the target when it finishes.
  const bool loads_block = L.load_pending && config_.max_loads_per_step == 0;
  if (L.retrieval.valid() || loads_block) {
    stats_.skipped_retrievals++;  // the previous group is still in flight: skip this one
    return Status::Ok();
  }
  L.submitted = MakeTask(L, L.group.data(), rows);
  L.retrieval_cand_end = Candidates(L).back() + 1;
  L.retrieval = res_.retriever->Submit(L.submitted);
  L.retrieval_group = g;
  L.retrieval_start = NowSeconds();
  return Status::Ok();
}

Status KvstarPolicy::TakeRetrieval(LayerState& L, int layer) {
  Status s = L.retrieval.Wait();
  stats_.retrieval_ms_total += (NowSeconds() - L.retrieval_start) * 1e3;
  stats_.retrievals++;
  stats_.async_retrievals++;
  if (!s.ok()) {
    L.retrieval = sparse::RetrievalHandle();
    return s.WithContext("KVstar retrieval for layer " + std::to_string(layer));
  }
  std::vector<uint32_t> sel = SelectionFromResult(L, L.submitted, L.retrieval.result());
  if (observer_ != nullptr) observer_->OnRetrieval(layer, L.retrieval_group, L.submitted, sel);
  if (config_.max_loads_per_step > 0 && !config_.deterministic) {
    // The previous target's blocks in flight land first (a few blocks).
    if (L.load_pending) KVSTAR_RETURN_IF_ERROR(FinishLoad(L, layer));
    // The new target: its missing blocks load a few per step, highest score first.
    const sparse::RetrievalResult& r = L.retrieval.result();
    const std::vector<uint32_t>& scored = L.submitted.candidates;
    const size_t stride = config_.select_per_kv_head ? geom_.kv_heads : 1;
    L.target_score.assign(L.slot.size(), -std::numeric_limits<float>::infinity());
    for (size_t i = 0; i < scored.size() && scored[i] < L.target_score.size(); ++i) {
      float v = 0;
      for (size_t h = 0; h < stride; ++h) v += r.candidate_scores[i * stride + h];
      L.target_score[scored[i]] = v;
    }
    L.target = sel;
    L.target_missing.clear();
    for (uint32_t b : sel)
      if (L.slot[b] < 0) L.target_missing.push_back(b);
    std::stable_sort(L.target_missing.begin(), L.target_missing.end(),
                     [&](uint32_t a, uint32_t b) { return L.target_score[a] > L.target_score[b]; });
    L.target_group = L.retrieval_group;
    L.target_cand_end = L.retrieval_cand_end;
    L.submitted = sparse::RetrievalTask();
    L.retrieval = sparse::RetrievalHandle();
    return IssueTargetPart(L, layer);
  }
  L.load_group = L.retrieval_group;
  L.load_cand_end = L.retrieval_cand_end;
  L.submitted = sparse::RetrievalTask();
  L.retrieval = sparse::RetrievalHandle();
  return IssueLoad(L, layer, std::move(sel));
}

Status KvstarPolicy::IssueTargetPart(LayerState& L, int layer) {
  L.load_group = L.target_group;
  L.load_cand_end = L.target_cand_end;
  // Held blocks the target scored: those it keeps, and those leaving (lowest score first).
  std::vector<uint32_t> held = L.selected;
  held.insert(held.end(), L.extras.begin(), L.extras.end());
  std::vector<uint32_t> leaving;
  size_t held_scored = 0;
  for (uint32_t b : held) {
    if (b >= L.target_cand_end) continue;
    ++held_scored;
    if (!std::binary_search(L.target.begin(), L.target.end(), b)) leaving.push_back(b);
  }
  std::stable_sort(leaving.begin(), leaving.end(),
                   [&](uint32_t a, uint32_t b) { return L.target_score[a] < L.target_score[b]; });
  // More held than the target has (blocks that left the local window since the last target,
  // or a smaller target): the surplus, lowest score first, leaves at the swap (as the CUDA
  // engine drops it at once), so the device never holds more than with the whole delta.
  const size_t surplus =
      std::min(leaving.size(), held_scored > L.target.size() ? held_scored - L.target.size() : 0);
  const std::vector<uint32_t> surplus_blocks(
      leaving.begin(), leaving.begin() + static_cast<std::ptrdiff_t>(surplus));
  held_scored -= surplus;
  size_t next_leaving = surplus;
  L.incoming.clear();
  std::vector<uint32_t> gone;  // leaving blocks whose slots the incoming ones take
  size_t taken = 0;
  while (taken < L.target_missing.size() && L.incoming.size() < config_.max_loads_per_step) {
    const uint32_t b = L.target_missing[taken++];
    if (L.slot[b] >= 0) continue;  // on the device already
    int s = -1;
    if (held_scored >= L.target.size() && next_leaving < leaving.size()) {
      // One in, one out: the incoming block replaces the lowest-scoring leaving one, whose slot
      // nothing reads any more at this step boundary.
      const uint32_t o = leaving[next_leaving++];
      KVSTAR_RETURN_IF_ERROR(WaitDump(L, o));
      s = L.slot[o];
      L.slot[o] = -1;
      gone.push_back(o);
    } else {
      auto slot = res_.pool->Allocate();
      if (!slot.ok()) {
        --taken;  // no room now: it stays missing, the next step tries again
        break;
      }
      s = *slot;
      ++held_scored;
    }
    L.incoming.emplace_back(b, s);
  }
  L.target_missing.erase(L.target_missing.begin(),
                         L.target_missing.begin() + static_cast<std::ptrdiff_t>(taken));
  auto erase_from = [&](std::vector<uint32_t>& v) {
    v.erase(std::remove_if(
                v.begin(), v.end(),
                [&](uint32_t b) { return std::find(gone.begin(), gone.end(), b) != gone.end(); }),
            v.end());
  };
  erase_from(L.selected);
  erase_from(L.extras);
  // Attended from the swap on: the held blocks the target scored (kept, or leaving and not yet
  // replaced, less the surplus) and the incoming ones; once the target is complete, only its
  // blocks (the leaving ones are freed).
  std::vector<uint32_t> next;
  if (L.target_missing.empty()) {
    next = L.target;
  } else {
    auto kept = [&](uint32_t b) {
      return b < L.target_cand_end &&
             std::find(surplus_blocks.begin(), surplus_blocks.end(), b) == surplus_blocks.end();
    };
    for (uint32_t b : L.selected)
      if (kept(b)) next.push_back(b);
    for (uint32_t b : L.extras)
      if (kept(b)) next.push_back(b);
    for (const auto& [b, s] : L.incoming) next.push_back(b);
    std::sort(next.begin(), next.end());
    next.erase(std::unique(next.begin(), next.end()), next.end());
  }
  L.next_selection = std::move(next);
  return LoadIncoming(L, layer);
}

Status KvstarPolicy::LoadIncoming(LayerState& L, int layer) {
  if (L.incoming.empty()) return ApplySwap(L, layer);
  std::vector<LoadItem> items;
  items.reserve(L.incoming.size());
  for (auto& [b, s] : L.incoming) {
    items.push_back({BlockId(layer, b), res_.pool->slot(s), geom_.block_bytes()});
  }
  L.load = res_.store->Load(items);
  L.load_pending = true;
  return Status::Ok();
}

Status KvstarPolicy::IssueLoad(LayerState& L, int layer, std::vector<uint32_t> selection) {
  std::vector<uint32_t> delta, outgoing;
  for (uint32_t b : selection)
    if (L.slot[b] < 0) delta.push_back(b);
  std::vector<uint32_t> on_device = L.selected;
  on_device.insert(on_device.end(), L.extras.begin(), L.extras.end());
  // Blocks that left the local window after the retrieval was submitted were not scored by it:
  // they stay until a retrieval that saw them decides.
  for (uint32_t b : on_device) {
    if (b < L.load_cand_end && !std::binary_search(selection.begin(), selection.end(), b)) {
      outgoing.push_back(b);
    }
  }
  L.incoming.clear();
  size_t staged = 0;
  std::vector<uint32_t> dropped;
  for (uint32_t b : delta) {
    int s = -1;
    if (staged < config_.staging_slots) {
      auto slot = res_.pool->Allocate();
      if (slot.ok()) {
        s = *slot;
        staged++;
      }
    }
    if (s < 0 && !outgoing.empty()) {
      // Reuse an outgoing block's slot. On the CPU the current step's attention is over at a
      // step boundary, so nothing reads it any more; it leaves the table now.
      const uint32_t o = outgoing.back();
      outgoing.pop_back();
      KVSTAR_RETURN_IF_ERROR(WaitDump(L, o));
      s = L.slot[o];
      L.slot[o] = -1;
      L.selected.erase(std::remove(L.selected.begin(), L.selected.end(), o), L.selected.end());
      L.extras.erase(std::remove(L.extras.begin(), L.extras.end(), o), L.extras.end());
    }
    if (s < 0) {
      auto slot = res_.pool->Allocate();
      if (!slot.ok()) {
        dropped.push_back(b);  // no room: keep decoding without this block
        continue;
      }
      s = *slot;
    }
    L.incoming.emplace_back(b, s);
  }
  for (uint32_t b : dropped)
    selection.erase(std::remove(selection.begin(), selection.end(), b), selection.end());
  L.next_selection = std::move(selection);
  return LoadIncoming(L, layer);
}

Status KvstarPolicy::FinishLoad(LayerState& L, int layer) {
  Status s = L.load.Wait();
  L.load_pending = false;
  if (!s.ok()) {
    return s.WithContext("loading selected KV blocks of layer " + std::to_string(layer) +
                         " from the store");
  }
  stats_.bytes_loaded += L.incoming.size() * geom_.block_bytes();
  stats_.blocks_loaded += L.incoming.size();
  L.load = StoreTask();
  return ApplySwap(L, layer);
}

Status KvstarPolicy::ApplySwap(LayerState& L, int layer) {
  for (auto& [b, s] : L.incoming) {
    KVSTAR_CHECK(L.slot[b] < 0, "block %u loaded twice", b);
    L.slot[b] = s;
  }
  L.incoming.clear();
  std::vector<uint32_t> old = L.selected;
  old.insert(old.end(), L.extras.begin(), L.extras.end());
  std::vector<uint32_t> unscored;
  for (uint32_t b : old) {
    if (std::binary_search(L.next_selection.begin(), L.next_selection.end(), b)) continue;
    if (b >= L.load_cand_end) {
      unscored.push_back(b);
      continue;
    }
    // Its dump was issued when it filled; FreeBlock waits for it. A failed dump fails the
    // request (the block stays on the device until the policy is destroyed).
    KVSTAR_RETURN_IF_ERROR(FreeBlock(L, b));
  }
  L.selected = std::move(L.next_selection);
  L.next_selection.clear();
  std::sort(unscored.begin(), unscored.end());
  L.extras = std::move(unscored);
  L.applied_group = L.load_group;
  stats_.swaps++;
  if (observer_ != nullptr) observer_->OnSwap(layer, L.applied_group, steps_, L.selected);
  return Status::Ok();
}

Status KvstarPolicy::SyncReselect(LayerState& L, int layer, const float* q) {
  if (Candidates(L).empty()) return Status::Ok();
  Stopwatch wait;
  // Whatever is in flight lands first, so that the swap below starts from a settled state.
  if (L.retrieval.valid()) KVSTAR_RETURN_IF_ERROR(TakeRetrieval(L, layer));
  if (L.load_pending) KVSTAR_RETURN_IF_ERROR(FinishLoad(L, layer));
  sparse::RetrievalTask task = MakeTask(L, q, 1);
  // This thread would only wait: it scores part of the task itself, and the compute pool (idle
  // until this layer's attention) scores the rest.
  sparse::RetrievalHandle h = res_.compute != nullptr ? res_.retriever->RunWith(task, res_.compute)
                                                      : res_.retriever->Submit(task);
  Status s = h.Wait();
  stats_.retrievals++;
  stats_.sync_retrievals++;
  if (!s.ok())
    return s.WithContext("KVstar synchronous retrieval for layer " + std::to_string(layer));
  std::vector<uint32_t> sel = SelectionFromResult(L, task, h.result());
  if (observer_ != nullptr) observer_->OnRetrieval(layer, L.groups_done, task, sel);
  L.load_group = L.applied_group;
  L.load_cand_end = Candidates(L).back() + 1;
  L.target.clear();  // a synchronous selection replaces any target still loading, at once
  L.target_missing.clear();
  KVSTAR_RETURN_IF_ERROR(IssueLoad(L, layer, std::move(sel)));
  if (L.load_pending) KVSTAR_RETURN_IF_ERROR(FinishLoad(L, layer));
  const double ms = wait.Millis();
  stats_.decode_wait_ms += ms;
  stats_.sync_wait_ms += ms;
  return Status::Ok();
}

Status KvstarPolicy::StepBoundary(LayerState& L, int layer) {
  KVSTAR_RETURN_IF_ERROR(PollDumps(L));
  const size_t R = config_.retrieval_stride;
  const bool group_full = L.group_rows == R;
  if (config_.deterministic) {
    if (!group_full) return Status::Ok();
    // End of step kR: the selection from group k-1 becomes active from step kR + 1.
    Stopwatch wait;
    if (L.retrieval.valid()) KVSTAR_RETURN_IF_ERROR(TakeRetrieval(L, layer));
    if (L.load_pending) KVSTAR_RETURN_IF_ERROR(FinishLoad(L, layer));
    stats_.decode_wait_ms += wait.Millis();
    return SubmitGroup(L, layer);
  }
  // Never stall: take what is ready, count what is late.
  if (L.retrieval.valid() && L.retrieval.Ready()) KVSTAR_RETURN_IF_ERROR(TakeRetrieval(L, layer));
  if (L.load_pending && L.load.Ready()) KVSTAR_RETURN_IF_ERROR(FinishLoad(L, layer));
  // max_loads_per_step: the target's next blocks.
  if (!L.load_pending && !L.target_missing.empty()) {
    KVSTAR_RETURN_IF_ERROR(IssueTargetPart(L, layer));
  }
  if (group_full) {
    const size_t k = L.groups_done + 1;  // the group completing now
    if (k >= 2 && L.applied_group < k - 1 && (L.retrieval.valid() || L.load_pending)) {
      stats_.late_swaps++;
    }
    KVSTAR_RETURN_IF_ERROR(SubmitGroup(L, layer));
  }
  return Status::Ok();
}

Status KvstarPolicy::EndChunk(size_t n, bool prefill_done) {
  num_tokens_ += n;
  for (size_t l = 0; l < layers_.size(); ++l) {
    KVSTAR_CHECK(layers_[l]->tokens == num_tokens_, "layer %zu holds %zu tokens, expected %zu", l,
                 layers_[l]->tokens, num_tokens_);
  }
  if (prefill_done) return Status::Ok();
  steps_++;
  for (size_t l = 0; l < layers_.size(); ++l) {
    KVSTAR_RETURN_IF_ERROR(StepBoundary(*layers_[l], static_cast<int>(l)));
  }
  return Status::Ok();
}

KvStats KvstarPolicy::Stats() const {
  KvStats s = stats_;
  s.tokens = num_tokens_;
  for (const auto& L : layers_) {
    for (int slot : L->slot) s.device_blocks += slot >= 0 ? 1 : 0;
    s.device_blocks += L->incoming.size();
    s.selected_blocks += L->selected.size();
    s.candidate_blocks += Candidates(*L).size();
  }
  s.device_bytes = s.device_blocks * geom_.block_bytes();
  return s;
}

void KvstarPolicy::ForEachDeviceBlock(
    const std::function<void(int, size_t, const void*, const Hash128&)>& fn) const {
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerState& L = *layers_[l];
    const size_t full = L.tokens / block_tokens();
    for (size_t b = 0; b < full && b < L.slot.size(); ++b) {
      if (L.slot[b] < 0) continue;
      const Hash128 id = BlockId(static_cast<int>(l), b);
      fn(static_cast<int>(l), b, res_.pool->slot(L.slot[b]), id);
    }
  }
}

const std::vector<uint32_t>& KvstarPolicy::selection(int layer) const {
  return layers_[static_cast<size_t>(layer)]->selected;
}

}  // namespace kvstar
