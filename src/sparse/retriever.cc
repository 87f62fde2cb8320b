#include "sparse/retriever.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>

#include "base/aligned_buffer.h"
#include "base/check.h"
#include "sparse/score_kernels.h"

namespace kvstar::sparse {
namespace {

// Shapes and transposed queries of a validated task.
struct Plan {
  size_t kv_heads = 0;
  size_t d = 0;
  size_t vectors = 0;
  size_t group = 0;    // query heads per KV head
  size_t q_lanes = 0;  // queries per KV head: num_queries * group
  size_t qpad = 0;
  size_t row = 0;  // kv_heads * qpad
  size_t candidates = 0;
  size_t seg = Retriever::kSegmentBlocks;  // candidates per segment
  size_t segments = 0;
  size_t k = 0;
  AlignedBuffer<float> qt;   // [kv_heads][d][qpad]
  AlignedBuffer<float> lse;  // [candidates][kv_heads][qpad]; exp(lse - segment max) after a part
  AlignedBuffer<float> pm;   // [segments][kv_heads][qpad] segment max
  AlignedBuffer<float> ps;   // [segments][kv_heads][qpad] segment sum of exp(lse - pm)
};

Status Validate(const RetrievalTask& t) {
  if (t.reps.empty()) return InvalidArgument("retrieval task has no representations");
  const size_t kvh = t.reps.kv_heads();
  if (t.q_heads == 0 || t.q_heads % kvh != 0) {
    return InvalidArgument("q_heads %zu must be a positive multiple of kv_heads %zu", t.q_heads,
                           kvh);
  }
  if (t.num_queries == 0) return InvalidArgument("retrieval task has no queries");
  const size_t expect = t.num_queries * t.q_heads * t.reps.head_dim();
  if (t.queries.size() != expect) {
    return InvalidArgument("queries hold %zu floats, expected num_queries*q_heads*head_dim = %zu",
                           t.queries.size(), expect);
  }
  if (!(t.sparse_ratio >= 0.0 && t.sparse_ratio <= 1.0)) {
    return InvalidArgument("sparse_ratio must be in [0, 1], got %g", t.sparse_ratio);
  }
  for (size_t i = 0; i < t.queries.size(); ++i) {
    if (!std::isfinite(t.queries[i])) {
      const size_t hd = t.reps.head_dim();
      return InvalidArgument(
          "query %zu head %zu channel %zu is %g: NaN/Inf queries can not be "
          "scored",
          i / (t.q_heads * hd), (i / hd) % t.q_heads, i % hd, t.queries[i]);
    }
  }
  std::vector<uint8_t> seen(t.reps.num_blocks(), 0);
  for (uint32_t b : t.candidates) {
    if (b >= t.reps.num_blocks()) {
      return InvalidArgument("candidate block %u out of range (%zu blocks have representations)", b,
                             t.reps.num_blocks());
    }
    if (seen[b]) return InvalidArgument("candidate block %u listed twice", b);
    seen[b] = 1;
    if (!t.reps.block_finite(b)) {
      return InvalidArgument(
          "representation of block %u holds NaN/Inf (non-finite keys or an "
          "fp16 overflow)",
          b);
    }
  }
  return Status::Ok();
}

Status MakePlan(const RetrievalTask& t, size_t segment_blocks, Plan* p) {
  KVSTAR_RETURN_IF_ERROR(Validate(t));
  if (segment_blocks == 0) return InvalidArgument("segment_blocks must be >= 1");
  p->seg = segment_blocks;
  p->kv_heads = t.reps.kv_heads();
  p->d = t.reps.d_pruned();
  p->vectors = t.reps.vectors_per_block();
  p->group = t.q_heads / p->kv_heads;
  p->q_lanes = t.num_queries * p->group;
  const size_t lanes = kernels::F32Lanes();
  p->qpad = (p->q_lanes + lanes - 1) / lanes * lanes;
  p->row = p->kv_heads * p->qpad;
  p->candidates = t.candidates.size();
  p->segments = (p->candidates + p->seg - 1) / p->seg;
  p->k = SelectionSize(p->candidates, t.sparse_ratio);
  const size_t hd = t.reps.head_dim();
  const float scale =
      t.options.scale_by_inv_sqrt_head_dim ? 1.0f / std::sqrt(static_cast<float>(hd)) : 1.0f;
  p->qt = AlignedBuffer<float>::Zeros(p->kv_heads * p->d * p->qpad);
  const ChannelIndex& ch = t.reps.channels();
  for (size_t g = 0; g < p->kv_heads; ++g) {
    const uint16_t* chans = ch.head(g);
    for (size_t x = 0; x < t.num_queries; ++x) {
      for (size_t j = 0; j < p->group; ++j) {
        const float* q = t.queries.data() + (x * t.q_heads + g * p->group + j) * hd;
        const size_t lane = x * p->group + j;
        for (size_t c = 0; c < p->d; ++c) {
          p->qt[(g * p->d + c) * p->qpad + lane] = q[chans[c]] * scale;
        }
      }
    }
  }
  p->lse = AlignedBuffer<float>(p->candidates * p->row);
  p->pm = AlignedBuffer<float>(p->segments * p->row);
  p->ps = AlignedBuffer<float>(p->segments * p->row);
  return Status::Ok();
}

// Fills lse/pm/ps for segments [s0, s1). `stop` is polled between blocks.
template <typename StopFn>
Status RunSegments(const RetrievalTask& t, Plan& p, size_t s0, size_t s1, StopFn stop) {
  AlignedBuffer<float> rep_scratch(std::max<size_t>(1, p.vectors * p.d));  // [vectors][d]
  AlignedBuffer<float> logits(std::max<size_t>(1, p.vectors * p.qpad));    // [vectors][qpad]
  kernels::BlockLseArgs args;
  args.dtype = t.reps.dtype();
  args.vectors = p.vectors;
  args.kv_heads = p.kv_heads;
  args.d = p.d;
  args.qt = p.qt.data();
  args.qpad = p.qpad;
  args.rep_scratch = rep_scratch.data();
  args.logit_scratch = logits.data();
  for (size_t s = s0; s < s1; ++s) {
    const size_t b0 = s * p.seg;
    const size_t b1 = std::min(p.candidates, b0 + p.seg);
    for (size_t i = b0; i < b1; ++i) {
      if (stop()) return Cancelled("retrieval cancelled");
      args.rep = t.reps.block(t.candidates[i]);
      args.next_rep = i + 1 < b1 ? t.reps.block(t.candidates[i + 1]) : nullptr;
      args.lse = p.lse.data() + i * p.row;
      kernels::BlockLse(args);
    }
    if (!kernels::NormalizeSegment(p.lse.data() + b0 * p.row, b1 - b0, p.row,
                                   p.pm.data() + s * p.row, p.ps.data() + s * p.row)) {
      return InvalidArgument(
          "scores of candidates %zu..%zu overflow (NaN/Inf logits): queries or "
          "representations are too large",
          b0, b1 - 1);
    }
  }
  return Status::Ok();
}

// Merges the segments' partial softmax sums and selects the top k.
RetrievalResult Select(const RetrievalTask& t, Plan& p) {
  const size_t kvh = p.kv_heads;
  std::vector<float> head_scores(p.candidates * kvh);  // [candidates][kv_heads]
  if (p.candidates > 0) {
    AlignedBuffer<float> mx(p.row);
    std::copy_n(p.pm.data(), p.row, mx.data());
    for (size_t s = 1; s < p.segments; ++s) {
      for (size_t j = 0; j < p.row; ++j) mx[j] = std::max(mx[j], p.pm[s * p.row + j]);
    }
    AlignedBuffer<float> factor(p.segments * p.row);  // [segments][kv_heads][qpad]
    for (size_t s = 0; s < p.segments; ++s) {
      kernels::ExpDiff(p.pm.data() + s * p.row, mx.data(), factor.data() + s * p.row, p.row);
    }
    std::vector<float> z(p.row, 0.0f);
    for (size_t s = 0; s < p.segments; ++s) {
      for (size_t j = 0; j < p.row; ++j) z[j] += p.ps[s * p.row + j] * factor[s * p.row + j];
    }
    for (size_t j = 0; j < p.row; ++j) z[j] = (j % p.qpad) < p.q_lanes ? 1.0f / z[j] : 0.0f;
    for (size_t s = 0; s < p.segments; ++s) {
      for (size_t j = 0; j < p.row; ++j) factor[s * p.row + j] *= z[j];
      const size_t b0 = s * p.seg;
      const size_t b1 = std::min(p.candidates, b0 + p.seg);
      kernels::WeightedRowSums(p.lse.data() + b0 * p.row, b1 - b0, kvh, p.qpad,
                               factor.data() + s * p.row, head_scores.data() + b0 * kvh);
    }
  }
  return SelectionFromScores(std::move(head_scores), kvh, t.candidates, p.k,
                             t.options.select_per_kv_head);
}

}  // namespace

RetrievalResult SelectionFromScores(std::vector<float> scores, size_t heads,
                                    const std::vector<uint32_t>& candidates, size_t k,
                                    bool per_kv_head) {
  KVSTAR_CHECK(heads > 0 && scores.size() == candidates.size() * heads,
               "%zu scores for %zu candidates x %zu heads", scores.size(), candidates.size(),
               heads);
  RetrievalResult r;
  r.k = k;
  if (!per_kv_head) {
    if (heads > 1) {
      for (size_t i = 0; i < candidates.size(); ++i) {
        float sum = 0.0f;
        for (size_t g = 0; g < heads; ++g) sum += scores[i * heads + g];
        scores[i] = sum;
      }
      scores.resize(candidates.size());
    }
    for (size_t pos : TopKPositions(scores.data(), 1, candidates, k)) {
      r.blocks.push_back(candidates[pos]);
      r.scores.push_back(scores[pos]);
    }
    r.candidate_scores = std::move(scores);
    return r;
  }
  r.head_blocks.resize(heads);
  r.head_scores.resize(heads);
  std::vector<std::pair<uint32_t, float>> all;
  for (size_t g = 0; g < heads; ++g) {
    for (size_t pos : TopKPositions(scores.data() + g, heads, candidates, k)) {
      r.head_blocks[g].push_back(candidates[pos]);
      r.head_scores[g].push_back(scores[pos * heads + g]);
      all.emplace_back(candidates[pos], scores[pos * heads + g]);
    }
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [block, score] : all) {
    if (!r.blocks.empty() && r.blocks.back() == block) {
      r.scores.back() += score;
    } else {
      r.blocks.push_back(block);
      r.scores.push_back(score);
    }
  }
  r.candidate_scores = std::move(scores);
  return r;
}

size_t SelectionSize(size_t candidates, double sparse_ratio) {
  const double exact = static_cast<double>(candidates) * sparse_ratio;
  const auto k = static_cast<size_t>(std::ceil(exact - 1e-9 * std::max(1.0, exact)));
  return std::min(k, candidates);
}

std::vector<size_t> TopKPositions(const float* scores, size_t stride,
                                  const std::vector<uint32_t>& blocks, size_t k) {
  std::vector<size_t> pos(blocks.size());
  std::iota(pos.begin(), pos.end(), size_t{0});
  k = std::min(k, pos.size());
  auto better = [&](size_t a, size_t b) {
    const float sa = scores[a * stride];
    const float sb = scores[b * stride];
    return sa != sb ? sa > sb : blocks[a] < blocks[b];
  };
  if (k < pos.size()) {
    std::nth_element(pos.begin(), pos.begin() + static_cast<ptrdiff_t>(k), pos.end(), better);
    pos.resize(k);
  }
  std::sort(pos.begin(), pos.end(), [&](size_t a, size_t b) { return blocks[a] < blocks[b]; });
  return pos;
}

StatusOr<RetrievalResult> RunRetrieval(const RetrievalTask& task) {
  Plan plan;
  KVSTAR_RETURN_IF_ERROR(MakePlan(task, Retriever::kSegmentBlocks, &plan));
  KVSTAR_RETURN_IF_ERROR(RunSegments(task, plan, 0, plan.segments, [] { return false; }));
  return Select(task, plan);
}

namespace internal {

struct RetrievalState {
  RetrievalTask task;
  Plan plan;
  Completion completion;
  RetrievalResult result;
  std::shared_ptr<std::atomic<bool>> shutdown;
  ThreadPool* pool = nullptr;
  size_t parts = 0;
  std::atomic<size_t> remaining{0};
  std::atomic<size_t> next_segment{0};  // segments are claimed one at a time by the parts
  std::mutex error_mu;
  Status error;
  std::atomic<bool> failed{false};

  bool Stopped() const {
    return completion.CancelRequested() || failed.load(std::memory_order_relaxed) ||
           shutdown->load(std::memory_order_relaxed);
  }
  void Fail(Status s) {
    std::lock_guard<std::mutex> lock(error_mu);
    if (error.ok()) error = std::move(s);
    failed.store(true, std::memory_order_relaxed);
  }
  Status CancelStatus() const {
    return shutdown->load() ? Cancelled("retriever shut down before the task finished")
                            : Cancelled("retrieval cancelled");
  }
};

}  // namespace internal

namespace {

using internal::RetrievalState;

void FinishTask(const std::shared_ptr<RetrievalState>& st) {
  if (st->failed.load()) {
    std::lock_guard<std::mutex> lock(st->error_mu);
    // A part that saw the cancel flag reports Cancelled; say which kind of stop it was.
    st->completion.Finish(st->error.code() == StatusCode::kCancelled ? st->CancelStatus()
                                                                     : st->error);
    return;
  }
  if (st->Stopped()) {
    st->completion.Finish(st->CancelStatus());
    return;
  }
  st->result = Select(st->task, st->plan);
  st->plan = Plan();  // the scratch can be large; the result is all that is kept
  st->completion.Finish(Status::Ok());
}

// Every part claims segments from a shared counter until none is left, so a part that starts
// late (its thread was asleep or busy) or runs slowly takes fewer, and the others more. Each
// segment's partial results have their own place in the plan and are combined in segment order,
// so the result does not depend on which part computed which segment.
void RunPart(const std::shared_ptr<RetrievalState>& st) {
  const size_t n = st->plan.segments;
  for (size_t seg;
       !st->Stopped() && (seg = st->next_segment.fetch_add(1, std::memory_order_relaxed)) < n;) {
    Status s = RunSegments(st->task, st->plan, seg, seg + 1, [&] { return st->Stopped(); });
    if (!s.ok()) {
      st->Fail(std::move(s));
      break;
    }
  }
  if (st->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) FinishTask(st);
}

void RunTask(const std::shared_ptr<RetrievalState>& st, size_t max_parts, size_t min_segments,
             size_t segment_blocks) {
  if (st->Stopped()) {
    st->completion.Finish(st->CancelStatus());
    return;
  }
  Status s = MakePlan(st->task, segment_blocks, &st->plan);
  if (!s.ok()) {
    st->completion.Finish(std::move(s));
    return;
  }
  const size_t by_size = std::max<size_t>(1, st->plan.segments / std::max<size_t>(1, min_segments));
  st->parts = std::max<size_t>(1, std::min(max_parts, by_size));
  st->remaining.store(st->parts);
  for (size_t p = 1; p < st->parts; ++p) st->pool->Submit([st] { RunPart(st); });
  RunPart(st);
}

}  // namespace

bool RetrievalHandle::Ready() const { return state_ != nullptr && state_->completion.Ready(); }

Status RetrievalHandle::Wait(std::chrono::milliseconds timeout) const {
  if (state_ == nullptr) return FailedPrecondition("Wait on an empty RetrievalHandle");
  return state_->completion.Wait(timeout);
}

void RetrievalHandle::Cancel() {
  if (state_ != nullptr) state_->completion.RequestCancel();
}

const RetrievalResult& RetrievalHandle::result() const {
  KVSTAR_CHECK(state_ != nullptr && state_->completion.Ready(),
               "result() of a retrieval that has not finished");
  KVSTAR_CHECK(state_->completion.status().ok(), "result() of a failed retrieval: %s",
               state_->completion.status().ToString().c_str());
  return state_->result;
}

Retriever::Retriever(const RetrieverOptions& options)
    : options_(options), shutdown_(std::make_shared<std::atomic<bool>>(false)) {
  const int threads = options.num_threads > 0 ? options.num_threads : ThreadPool::HardwareThreads();
  // ThreadPool counts the ParallelFor caller as a thread; tasks only run on workers.
  owned_pool_ = std::make_unique<ThreadPool>(ThreadPoolOptions{.num_threads = threads + 1,
                                                               .pin_to_cores = options.pin_to_cores,
                                                               .first_core = options.first_core,
                                                               .name = "retrieve"});
  pool_ = owned_pool_.get();
}

Retriever::Retriever(ThreadPool* pool, const RetrieverOptions& options)
    : options_(options), pool_(pool), shutdown_(std::make_shared<std::atomic<bool>>(false)) {
  KVSTAR_CHECK(pool != nullptr, "Retriever needs a thread pool");
}

Retriever::~Retriever() {
  shutdown_->store(true);
  owned_pool_.reset();  // drains: every queued part runs, sees the flag and finishes its task
}

int Retriever::parallelism() const {
  const int workers = pool_->num_workers();
  return options_.max_split > 0 ? std::min(workers, options_.max_split) : workers;
}

RetrievalHandle Retriever::Submit(RetrievalTask task) {
  auto st = std::make_shared<RetrievalState>();
  st->task = std::move(task);
  st->shutdown = shutdown_;
  st->pool = pool_;
  const size_t max_parts = static_cast<size_t>(parallelism());
  const size_t min_segments = options_.min_segments;
  const size_t segment_blocks = options_.segment_blocks;
  pool_->Submit([st, max_parts, min_segments, segment_blocks] {
    RunTask(st, max_parts, min_segments, segment_blocks);
  });
  RetrievalHandle h;
  h.state_ = std::move(st);
  return h;
}

RetrievalHandle Retriever::RunWith(RetrievalTask task, ThreadPool* helpers) {
  KVSTAR_CHECK(helpers != nullptr, "RunWith needs a helper pool");
  auto st = std::make_shared<RetrievalState>();
  st->task = std::move(task);
  st->shutdown = shutdown_;
  st->pool = helpers;
  size_t max_parts = static_cast<size_t>(helpers->num_workers()) + 1;
  if (options_.max_split > 0)
    max_parts = std::min(max_parts, static_cast<size_t>(options_.max_split));
  RunTask(st, max_parts, options_.min_segments, options_.segment_blocks);
  RetrievalHandle h;
  h.state_ = std::move(st);
  return h;
}

}  // namespace kvstar::sparse
