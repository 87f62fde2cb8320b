// CudaBatch, kvstar mode with gpu_scoring: representations and queries in HBM, ScoreBlocks on
// the background stream once per group, the host's top-k of the scores (cuda_kvstar.cc has the
// schedule that uses the results).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "base/check.h"
#include "base/timer.h"
#include "engine/cuda/cuda_batch.h"
#include "engine/cuda/cuda_batch_impl.h"
#include "sparse/channel_importance.h"

namespace kvstar::cuda {

namespace {

// GPU scoring: ScoreBlocks' shapes for `tasks` tasks of this batch (device pointers unset).
BlockScoreArgs ScoreArgsFor(const ModelConfig& c, const BatchOptions& o, size_t d_pruned,
                            size_t tasks) {
  BlockScoreArgs a;
  a.num_tasks = tasks;
  a.max_candidates = (o.max_tokens + o.block_tokens - 1) / o.block_tokens;
  a.num_queries = o.kvstar.retrieval_stride;
  a.query_stride = c.num_layers * o.batch * c.q_dim();  // one ring row
  a.q_heads = c.num_heads;
  a.kv_heads = c.num_kv_heads;
  a.head_dim = c.head_dim;
  a.d_pruned = d_pruned;
  a.vectors_per_block = o.block_tokens / o.kvstar.blk_repre_inner_token_merge;
  a.dtype = DType::kF16;  // sparse::RepresentationOptions' default
  a.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  a.per_kv_head = o.kvstar.select_per_kv_head;
  a.tensor_cores = o.score_tensor_cores;
  a.stages = o.gpu_score_stages;
  a.head_major = o.gpu_score_head_major;
  return a;
}

// GPU scoring: scores per candidate block (one per KV head with select_per_kv_head).
size_t ScoresPerBlock(const ModelConfig& c, const BatchOptions& o) {
  return o.kvstar.select_per_kv_head ? c.num_kv_heads : 1;
}

// GPU scoring: layers per ScoreBlocks call, so that the scratch stays within 64 MiB.
size_t ScoreLayersPerCall(const ModelConfig& c, const BatchOptions& o, size_t d_pruned) {
  const size_t per_layer = BlockScoreWorkspaceBytes(ScoreArgsFor(c, o, d_pruned, o.batch));
  return std::clamp<size_t>((size_t{64} << 20) / std::max<size_t>(per_layer, 1), 1, c.num_layers);
}

// The host's top k of one (layer, sequence)'s device scores of candidates [init, cand_end):
// `scored` holds the scores of the blocks from KvstarScoredBegin on, `per` per block (the KV
// heads with select_per_kv_head, else 1). Non-finite scores are an error naming the block.
Status TopKOfScores(const KvstarConfig& k, const float* scored, size_t per, uint32_t cand_end,
                    size_t layer, size_t seq, sparse::RetrievalResult* r) {
  const float* sc = scored + (k.init_window_sz - KvstarScoredBegin(k)) * per;
  const size_t n = cand_end - k.init_window_sz;
  for (size_t j = 0; j < n * per; ++j) {
    if (!std::isfinite(sc[j])) {
      return InvalidArgument(
          "kvstar: the GPU block scores of layer %zu, sequence %zu are not finite (block "
          "%zu: %g): NaN or Inf in the queries or keys",
          layer, seq, k.init_window_sz + j / per, static_cast<double>(sc[j]));
    }
  }
  std::vector<uint32_t> cands(n);
  for (size_t j = 0; j < n; ++j) cands[j] = static_cast<uint32_t>(k.init_window_sz + j);
  *r = sparse::SelectionFromScores(std::vector<float>(sc, sc + n * per), per, cands,
                                   sparse::SelectionSize(n, k.sparse_ratio), k.select_per_kv_head);
  return Status::Ok();
}

}  // namespace

size_t CudaBatch::KvstarGpuScoringBytes(const ModelConfig& c, const BatchOptions& o) {
  auto dp = sparse::PrunedDim(c.head_dim, o.kvstar.blk_repre_dim_prune_ratio);
  const size_t d_pruned = dp.ok() ? *dp : c.head_dim;
  const BlockScoreArgs a = ScoreArgsFor(c, o, d_pruned, o.batch);
  const size_t tasks = c.num_layers * o.batch;
  const size_t rep_elems = a.vectors_per_block * c.num_kv_heads * d_pruned;
  return tasks * a.max_candidates * rep_elems * 2               // representations
         + tasks * c.num_kv_heads * d_pruned * 2                // channels
         + 2 * a.num_queries * tasks * c.q_dim() * 4            // query ring
         + tasks * a.max_candidates * 4 * ScoresPerBlock(c, o)  // scores
         + 2 * tasks * sizeof(BlockScoreTask)                   // task descriptors
         + ScoreLayersPerCall(c, o, d_pruned) * BlockScoreWorkspaceBytes(a);
}

Status CudaBatch::KvstarInitGpuScoring() {
  const ModelConfig& c = model_.config();
  const KvstarConfig& k = opt_.kvstar;
  Impl& m = *impl_;
  const size_t L = c.num_layers, B = opt_.batch, R = k.retrieval_stride;
  KVSTAR_RETURN_IF_ERROR(CheckGpuScoringStride(R));
  KVSTAR_ASSIGN_OR_RETURN(m.d_pruned, sparse::PrunedDim(c.head_dim, k.blk_repre_dim_prune_ratio));
  const BlockScoreArgs a = ScoreArgsFor(c, opt_, m.d_pruned, B);
  KVSTAR_RETURN_IF_ERROR(ValidateBlockScoreShape(a));
  m.rep_elems = a.vectors_per_block * c.num_kv_heads * m.d_pruned;
  m.score_layers = ScoreLayersPerCall(c, opt_, m.d_pruned);
  const size_t tasks = L * B;
  auto alloc = [&](DeviceBuffer& buf, size_t bytes) -> Status {
    KVSTAR_ASSIGN_OR_RETURN(buf, DeviceBuffer::Allocate(bytes));
    device_bytes_ += bytes;
    return Status::Ok();
  };
  KVSTAR_RETURN_IF_ERROR(alloc(m.reps_dev, tasks * max_blocks_ * m.rep_elems * 2));
  KVSTAR_RETURN_IF_ERROR(alloc(m.chan_dev, tasks * c.num_kv_heads * m.d_pruned * 2));
  KVSTAR_RETURN_IF_ERROR(alloc(m.q_ring_dev, 2 * R * tasks * c.q_dim() * 4));
  KVSTAR_RETURN_IF_ERROR(alloc(m.scores_dev, tasks * max_blocks_ * m.score_per * 4));
  KVSTAR_RETURN_IF_ERROR(alloc(m.score_tasks_dev, 2 * tasks * sizeof(BlockScoreTask)));
  BlockScoreArgs call = a;
  call.num_tasks = m.score_layers * B;
  KVSTAR_RETURN_IF_ERROR(alloc(m.score_ws, BlockScoreWorkspaceBytes(call)));
  KVSTAR_ASSIGN_OR_RETURN(m.scores_host,
                          PinnedHostBuffer::Allocate(2 * tasks * max_blocks_ * m.score_per * 4));
  KVSTAR_ASSIGN_OR_RETURN(m.score_tasks_host,
                          PinnedHostBuffer::Allocate(2 * tasks * sizeof(BlockScoreTask)));
  KVSTAR_ASSIGN_OR_RETURN(m.rep_stage, PinnedHostBuffer::Allocate(tasks * m.rep_elems * 2));
  if (k.sync_steps > 0) {
    KVSTAR_RETURN_IF_ERROR(alloc(m.sync_tasks_dev, B * sizeof(BlockScoreTask)));
    KVSTAR_RETURN_IF_ERROR(alloc(m.sync_scores_dev, B * max_blocks_ * m.score_per * 4));
    KVSTAR_ASSIGN_OR_RETURN(m.sync_tasks_host,
                            PinnedHostBuffer::Allocate(B * sizeof(BlockScoreTask)));
    KVSTAR_ASSIGN_OR_RETURN(m.sync_scores_host,
                            PinnedHostBuffer::Allocate(B * max_blocks_ * m.score_per * 4));
  }
  for (auto* events : {&m.score_begin, &m.score_done, &m.tasks_sent}) {
    for (int h = 0; h < 2; ++h) {
      KVSTAR_ASSIGN_OR_RETURN(Event e, Event::Create());
      events->push_back(std::move(e));
    }
  }
  KVSTAR_ASSIGN_OR_RETURN(Event e, Event::Create());
  m.rep_stage_sent = std::make_unique<Event>(std::move(e));
  // Nothing recorded yet: record on the idle background stream so that first waits pass.
  DeviceContext& ctx = model_.ctx();
  for (int h = 0; h < 2; ++h) {
    KVSTAR_RETURN_IF_ERROR(m.score_done[h].Record(ctx.background_stream()));
    KVSTAR_RETURN_IF_ERROR(m.tasks_sent[h].Record(ctx.background_stream()));
  }
  return m.rep_stage_sent->Record(ctx.background_stream());
}

BlockScoreTask CudaBatch::KvstarDeviceTask(size_t task, const float* queries, float* scores) const {
  const Impl& m = *impl_;
  BlockScoreTask t;
  t.reps = m.reps_dev.as<char>() + task * max_blocks_ * m.rep_elems * 2;
  t.channels = m.chan_dev.as<uint16_t>() + task * model_.config().num_kv_heads * m.d_pruned;
  t.queries = queries;
  t.scores = scores;
  return t;
}

void CudaBatch::KvstarDeviceReps(const uint16_t* src, size_t blocks, uint16_t* dst) const {
  const Impl& m = *impl_;
  if (!opt_.gpu_score_head_major) {
    std::memcpy(dst, src, blocks * m.rep_elems * 2);
    return;
  }
  const size_t kv_heads = model_.config().num_kv_heads;
  RepresentationsToHeadMajor(src, blocks, m.rep_elems / (kv_heads * m.d_pruned), kv_heads,
                             m.d_pruned, dst);
}

Status CudaBatch::KvstarScoreGroupOnDevice() {
  DeviceContext& ctx = model_.ctx();
  const ModelConfig& c = model_.config();
  const KvstarConfig& k = opt_.kvstar;
  Impl& m = *impl_;
  const size_t L = c.num_layers, B = opt_.batch, R = k.retrieval_stride;
  const size_t bt = opt_.block_tokens;
  const size_t group = kv_steps_ / R;
  const size_t half = (group - 1) % 2;  // of the ring rows this group's steps wrote
  CudaStream* bg = ctx.background_stream();
  // The half's previous group must be results by now: its pinned scores are overwritten.
  if (m.gpu_group[half] && !m.gpu_group[half]->harvested) {
    KVSTAR_RETURN_IF_ERROR(KvstarHarvest(k.deterministic ? m.gpu_group[half].get() : nullptr));
    if (!m.gpu_group[half]->harvested) {
      // Scoring is more than R steps behind: this group is skipped, as on the CPU path.
      for (size_t l = 0; l < L; ++l) {
        for (size_t b = 0; b < B; ++b) {
          stats_.skipped_retrievals += lengths_[b] / bt > KvstarWindows(k);
        }
      }
      return Status::Ok();
    }
  }
  // The device scores buffer is shared by the groups: an earlier group's scoring is queued in
  // full (and its copy to the host) before this group's.
  for (auto& earlier : m.gpu_group) {
    if (earlier) KVSTAR_RETURN_IF_ERROR(KvstarIssueScoring(*earlier, /*all=*/true));
  }
  auto g = std::make_shared<KvstarGpuGroup>();
  g->group = group;
  g->half = half;
  g->cand_end.assign(L * B, 0);
  g->results.resize(L * B);
  // The mirror half was last sent two groups ago; its copy has surely completed.
  KVSTAR_RETURN_IF_ERROR(m.tasks_sent[half].Synchronize());
  BlockScoreTask* tasks = m.score_tasks_host.as<BlockScoreTask>() + half * L * B;
  const float* ring = m.q_ring_dev.as<float>() + half * R * L * B * c.q_dim();
  size_t submitted = 0;
  for (size_t l = 0; l < L; ++l) {
    for (size_t b = 0; b < B; ++b) {
      const size_t i = l * B + b;
      BlockScoreTask& t = tasks[i];
      t = KvstarDeviceTask(i, ring + i * c.q_dim(),
                           m.scores_dev.as<float>() + i * max_blocks_ * m.score_per);
      const size_t full = lengths_[b] / bt;
      if (full <= KvstarWindows(k)) continue;  // no candidates
      const auto cand_end = static_cast<uint32_t>(full - k.local_window_sz);
      t.cand_begin = KvstarScoredBegin(k);
      t.cand_end = KvstarScoredEnd(k, cand_end);
      g->cand_end[i] = cand_end;
      m.ks[l][b].pending.push_back(
          KvstarPending{group, kv_steps_, NowSeconds(), cand_end, {}, {}, g, i});
      ++submitted;
    }
  }
  if (submitted == 0) return Status::Ok();
  BlockScoreTask* dev = m.score_tasks_dev.as<BlockScoreTask>() + half * L * B;
  KVSTAR_RETURN_IF_ERROR(ctx.CopyToDevice(dev, tasks, L * B * sizeof(BlockScoreTask), bg));
  KVSTAR_RETURN_IF_ERROR(m.tasks_sent[half].Record(bg));
  KVSTAR_RETURN_IF_ERROR(m.score_begin[half].Record(bg));
  m.gpu_group[half] = std::move(g);
  return KvstarIssueScoring(*m.gpu_group[half], k.deterministic);
}

Status CudaBatch::KvstarIssueScoring(KvstarGpuGroup& g, bool all) {
  if (g.issued_all) return Status::Ok();
  DeviceContext& ctx = model_.ctx();
  const ModelConfig& c = model_.config();
  Impl& m = *impl_;
  const size_t L = c.num_layers, B = opt_.batch;
  CudaStream* bg = ctx.background_stream();
  const BlockScoreTask* dev = m.score_tasks_dev.as<BlockScoreTask>() + g.half * L * B;
  // This step's share: ceil(L / spread) layers, whole calls of score_layers.
  const size_t spread = std::clamp<size_t>(opt_.gpu_score_spread, 1, opt_.kvstar.retrieval_stride);
  const size_t share = all ? L : (L + spread - 1) / spread;
  const size_t end = std::min(L, g.layers_issued + std::max(share, size_t{1}));
  while (g.layers_issued < end) {
    const size_t l0 = g.layers_issued;
    const size_t n = std::min(m.score_layers, L - l0);
    BlockScoreArgs a = ScoreArgsFor(c, opt_, m.d_pruned, n * B);
    a.tasks = dev + l0 * B;
    a.max_ctas = opt_.gpu_score_ctas;
    KVSTAR_RETURN_IF_ERROR(ScoreBlocks(bg, a, m.score_ws.data()));
    g.layers_issued += n;
  }
  if (g.layers_issued < L) return Status::Ok();
  const size_t score_floats = L * B * max_blocks_ * m.score_per;
  KVSTAR_RETURN_IF_ERROR(ctx.CopyToHost(m.scores_host.as<float>() + g.half * score_floats,
                                        m.scores_dev.data(), score_floats * 4, bg));
  stats_.d2h_bytes += score_floats * 4;
  KVSTAR_RETURN_IF_ERROR(m.score_done[g.half].Record(bg));
  g.issued_all = true;
  return Status::Ok();
}

Status CudaBatch::KvstarHarvest(const KvstarGpuGroup* wait_for) {
  const KvstarConfig& k = opt_.kvstar;
  Impl& m = *impl_;
  const size_t B = opt_.batch;
  KvstarGpuGroup* order[2] = {m.gpu_group[0].get(), m.gpu_group[1].get()};
  if (order[0] != nullptr && order[1] != nullptr && order[1]->group < order[0]->group) {
    std::swap(order[0], order[1]);
  }
  for (KvstarGpuGroup* g : order) {  // the older group first
    if (g == nullptr || g->harvested) continue;
    const Event& done = m.score_done[g->half];
    if (wait_for != nullptr && g->group <= wait_for->group) {
      KVSTAR_RETURN_IF_ERROR(KvstarIssueScoring(*g, /*all=*/true));
      KVSTAR_RETURN_IF_ERROR(done.Synchronize());
    } else {
      if (!g->issued_all) break;
      KVSTAR_ASSIGN_OR_RETURN(bool ready, done.Query());
      if (!ready) break;
    }
    KVSTAR_ASSIGN_OR_RETURN(float ms, done.ElapsedMsSince(m.score_begin[g->half]));
    stats_.gpu_score_ms_total += ms;
    ++stats_.gpu_score_groups;
    const size_t row = max_blocks_ * m.score_per;
    const float* all = m.scores_host.as<float>() + g->half * g->cand_end.size() * row;
    // Each (layer, sequence)'s top k on its own: on the window threads when there are some.
    std::vector<Status> failed(g->cand_end.size());
    auto top_k = [&](size_t i0, size_t i1, int) {
      for (size_t i = i0; i < i1; ++i) {
        if (g->cand_end[i] == 0) continue;
        failed[i] = TopKOfScores(k, all + i * row, m.score_per, g->cand_end[i], i / B, i % B,
                                 &g->results[i]);
      }
    };
    if (m.window_pool != nullptr) {
      m.window_pool->ParallelFor(g->cand_end.size(), top_k, /*min_chunk=*/4);
    } else {
      top_k(0, g->cand_end.size(), 0);
    }
    for (const Status& st : failed) KVSTAR_RETURN_IF_ERROR(st);
    g->harvested = true;
  }
  return Status::Ok();
}

Status CudaBatch::KvstarSyncScoreOnDevice(size_t l, const float* q,
                                          const std::vector<uint32_t>& cand_end,
                                          std::vector<sparse::RetrievalResult>* results) {
  DeviceContext& ctx = model_.ctx();
  const ModelConfig& c = model_.config();
  const KvstarConfig& k = opt_.kvstar;
  Impl& m = *impl_;
  const size_t B = opt_.batch;
  CudaStream* s = ctx.compute_stream();
  BlockScoreTask* tasks = m.sync_tasks_host.as<BlockScoreTask>();
  size_t scored = 0;
  for (size_t b = 0; b < B; ++b) {
    // The step's own query, already on the device.
    BlockScoreTask& t = tasks[b];
    t = KvstarDeviceTask(l * B + b, q + b * c.q_dim(),
                         m.sync_scores_dev.as<float>() + b * max_blocks_ * m.score_per);
    if (cand_end[b] == 0) continue;  // cand_begin = cand_end = 0: nothing to score
    t.cand_begin = KvstarScoredBegin(k);
    t.cand_end = KvstarScoredEnd(k, cand_end[b]);
    ++scored;
  }
  if (scored == 0) return ctx.Synchronize(s);
  // The representations of blocks that decoding completed go up on the background stream, and
  // the scratch is the groups' (none is in flight during the sync steps; waited for anyway).
  KVSTAR_RETURN_IF_ERROR(m.rep_stage_sent->WaitOn(s));
  for (const Event& e : m.score_done) KVSTAR_RETURN_IF_ERROR(e.WaitOn(s));
  KVSTAR_RETURN_IF_ERROR(
      ctx.CopyToDevice(m.sync_tasks_dev.data(), tasks, B * sizeof(BlockScoreTask), s));
  BlockScoreArgs a = ScoreArgsFor(c, opt_, m.d_pruned, B);
  a.num_queries = 1;
  a.query_stride = c.q_dim();
  a.tasks = m.sync_tasks_dev.as<BlockScoreTask>();
  KVSTAR_RETURN_IF_ERROR(ScoreBlocks(s, a, m.score_ws.data()));
  const size_t row = max_blocks_ * m.score_per;
  KVSTAR_RETURN_IF_ERROR(
      ctx.CopyToHost(m.sync_scores_host.data(), m.sync_scores_dev.data(), B * row * 4, s));
  stats_.d2h_bytes += B * row * 4;
  KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(s));
  for (size_t b = 0; b < B; ++b) {
    if (cand_end[b] == 0) continue;
    KVSTAR_RETURN_IF_ERROR(TopKOfScores(k, m.sync_scores_host.as<float>() + b * row, m.score_per,
                                        cand_end[b], l, b, &(*results)[b]));
  }
  return Status::Ok();
}

}  // namespace kvstar::cuda
