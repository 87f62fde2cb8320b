#include "sparse/retriever.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <future>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>

#include "hwy/targets.h"
#include "sparse/channel_importance.h"
#include "sparse/retrieval_reference.h"
#include "sparse/score_kernels.h"

namespace kvstar::sparse {
namespace {

using testing::CompareSelection;
using testing::RandomLayerSpec;
using testing::RandomQueries;
using testing::RandomRepresentations;
using testing::ReferenceScores;

struct Case {
  std::string name;
  std::unique_ptr<BlockRepresentations> reps;
  RetrievalTask task;
  std::vector<double> ref;
};

// Candidates: all blocks but an initial window of 1 and a local window of 2, in shuffled order
// (ties must go to the lower block index, not the lower position).
std::vector<uint32_t> Candidates(size_t blocks, std::mt19937_64& rng) {
  std::vector<uint32_t> c;
  const size_t lo = blocks > 6 ? 1 : 0;
  const size_t hi = blocks > 6 ? blocks - 2 : blocks;
  for (size_t b = lo; b < hi; ++b) c.push_back(uint32_t(b));
  std::shuffle(c.begin(), c.end(), rng);
  return c;
}

Case RandomCase(std::mt19937_64& rng, size_t index) {
  auto pick = [&](std::initializer_list<double> v) {
    return *(v.begin() + std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng));
  };
  auto uni = [&](size_t lo, size_t hi) {
    return std::uniform_int_distribution<size_t>(lo, hi)(rng);
  };
  RandomLayerSpec s;
  size_t group = uni(1, 8);
  s.kv_heads = uni(1, std::max<size_t>(1, 40 / group));
  s.head_dim = size_t(pick({64, 80, 128}));
  // d_pruned: 6, 8, 13, 16, 19, 24, 29, 32, 38, 45, ... mostly not a multiple of 16 or 8.
  s.prune_ratio = pick({0.1, 0.13, 0.2, 0.25, 0.3, 0.45, 0.7, 1.0});
  s.merge = size_t(pick({1, 2, 4}));
  s.block_tokens = size_t(pick({8, 16, 32, 64, 128}));
  s.blocks = size_t(std::exp(std::uniform_real_distribution<double>(0, std::log(5000.0))(rng)));
  s.rep_dtype = index % 5 == 4 ? DType::kBF16 : DType::kF16;
  s.kv_dtype = index % 3 == 0 ? DType::kF32 : DType::kBF16;
  size_t x = uni(1, 16);
  if (index < 3) {  // long candidate lists with small heads
    s.blocks = 5000 - index * 700;
    s.kv_heads = 1 + index;
    group = 1 + index;
    s.block_tokens = 16;
    s.merge = 4;
    s.head_dim = 64;
    x = 1 + index;
  }
  const size_t d = *PrunedDim(s.head_dim, s.prune_ratio);
  auto work = [&] { return s.blocks * (s.block_tokens / s.merge) * s.kv_heads * group * x * d; };
  auto keys = [&] { return s.blocks * s.block_tokens * s.kv_heads * s.head_dim; };
  while (work() > 4000000 || keys() > 8000000) {
    if (s.blocks > 300) {
      s.blocks /= 2;
    } else if (x > 2) {
      x = (x + 1) / 2;
    } else if (s.block_tokens > 8 && s.block_tokens / 2 >= s.merge) {
      s.block_tokens /= 2;
    } else if (s.kv_heads > 1) {
      s.kv_heads = (s.kv_heads + 1) / 2;
    } else {
      s.blocks = std::max<size_t>(1, s.blocks / 2);
    }
  }
  Case c;
  c.reps = RandomRepresentations(s, rng);
  c.task.reps = c.reps->View();
  c.task.num_queries = x;
  c.task.q_heads = s.kv_heads * group;
  c.task.queries = RandomQueries(x, c.task.q_heads, s.head_dim, 1.0f, rng);
  c.task.candidates = Candidates(s.blocks, rng);
  c.task.sparse_ratio = pick({0.25, 0.25, 0.25, 0.1, 0.5, 0.9});
  c.task.options.select_per_kv_head = index % 3 == 1;
  c.task.options.scale_by_inv_sqrt_head_dim = index % 4 != 2;
  c.ref = ReferenceScores(c.task);
  c.name = "case " + std::to_string(index) + ": kv_heads=" + std::to_string(s.kv_heads) +
           " group=" + std::to_string(group) + " head_dim=" + std::to_string(s.head_dim) +
           " d_pruned=" + std::to_string(d) + " merge=" + std::to_string(s.merge) +
           " block_tokens=" + std::to_string(s.block_tokens) +
           " blocks=" + std::to_string(s.blocks) + " x=" + std::to_string(x) +
           " ratio=" + std::to_string(c.task.sparse_ratio) +
           (c.task.options.select_per_kv_head ? " per-kv-head" : "") +
           (c.task.options.scale_by_inv_sqrt_head_dim ? "" : " unscaled");
  return c;
}

struct CheckTotals {
  size_t candidates = 0;
  size_t extra_near_ties = 0;
  size_t mismatches = 0;
};

// Same selected set as the float64 reference except for near-ties of the k-th score; scores close.
void CheckAgainstReference(const Case& c, const RetrievalResult& r, CheckTotals* totals) {
  const RetrievalTask& t = c.task;
  const size_t kvh = t.reps.kv_heads();
  const double mass = double(t.num_queries * t.q_heads);
  ASSERT_EQ(r.k, SelectionSize(t.candidates.size(), t.sparse_ratio)) << c.name;
  ASSERT_EQ(r.candidate_scores.size(), c.ref.size()) << c.name;
  for (size_t i = 0; i < c.ref.size(); ++i) {
    ASSERT_NEAR(r.candidate_scores[i], c.ref[i],
                2e-3 * c.ref[i] + 1e-6 * mass / double(c.ref.size()))
        << c.name << " candidate " << i;
  }
  constexpr double kRelEps = 2e-3;
  auto check = [&](const std::vector<double>& ref, size_t str, const std::vector<uint32_t>& got) {
    ASSERT_TRUE(std::is_sorted(got.begin(), got.end())) << c.name;
    ASSERT_EQ(got.size(), r.k) << c.name;
    const auto cmp = CompareSelection(ref, str, t.candidates, r.k, got, kRelEps);
    EXPECT_EQ(cmp.unexplained, 0u) << c.name;
    totals->mismatches += cmp.mismatches;
    totals->extra_near_ties += cmp.near_ties > 0 ? cmp.near_ties - 1 : 0;
    totals->candidates += t.candidates.size();
  };
  if (!t.options.select_per_kv_head) {
    check(c.ref, 1, r.blocks);
    return;
  }
  ASSERT_EQ(r.head_blocks.size(), kvh);
  std::set<uint32_t> uni;
  for (size_t g = 0; g < kvh; ++g) {
    std::vector<double> head(c.ref.size() / kvh);
    for (size_t i = 0; i < head.size(); ++i) head[i] = c.ref[i * kvh + g];
    check(head, 1, r.head_blocks[g]);
    uni.insert(r.head_blocks[g].begin(), r.head_blocks[g].end());
  }
  EXPECT_EQ(std::vector<uint32_t>(uni.begin(), uni.end()), r.blocks) << c.name;
}

class TargetGuard {
 public:
  ~TargetGuard() { hwy::SetSupportedTargetsForTest(0); }
};

TEST(Retrieval, MatchesFloat64ReferenceOnRandomShapesForEveryTarget) {
  std::mt19937_64 rng(2024);
  std::vector<Case> cases;
  for (size_t i = 0; i < 30; ++i) cases.push_back(RandomCase(rng, i));
  std::set<std::string> exercised;
  TargetGuard guard;
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    ASSERT_STREQ(kernels::CurrentTargetName(), hwy::TargetName(target));
    exercised.insert(hwy::TargetName(target));
    CheckTotals totals;
    for (const Case& c : cases) {
      auto r = RunRetrieval(c.task);
      ASSERT_TRUE(r.ok()) << c.name << ": " << r.status().ToString();
      CheckAgainstReference(c, *r, &totals);
    }
    // Near-ties within the tolerance of the k-th score are rare on this data.
    EXPECT_LE(totals.extra_near_ties, totals.candidates / 200 + 2) << hwy::TargetName(target);
    std::printf("[ target %-7s ] %zu candidates, %zu near-ties, %zu near-tie swaps\n",
                hwy::TargetName(target), totals.candidates, totals.extra_near_ties,
                totals.mismatches);
  }
  hwy::SetSupportedTargetsForTest(0);
  if (hwy::SupportedTargets() & HWY_AVX2) {
    EXPECT_TRUE(exercised.count("AVX2"));
    EXPECT_TRUE(exercised.count("SCALAR") || exercised.count("EMU128"));
  }
}

Case SmallCase(uint64_t seed, size_t blocks, double ratio = 0.25) {
  std::mt19937_64 rng(seed);
  RandomLayerSpec s{.kv_heads = 2,
                    .head_dim = 64,
                    .block_tokens = 16,
                    .merge = 2,
                    .blocks = blocks,
                    .prune_ratio = 0.3};
  Case c;
  c.reps = RandomRepresentations(s, rng);
  c.task.reps = c.reps->View();
  c.task.num_queries = 3;
  c.task.q_heads = 6;
  c.task.queries = RandomQueries(3, 6, 64, 1.0f, rng);
  c.task.candidates = Candidates(blocks, rng);
  c.task.sparse_ratio = ratio;
  return c;
}

TEST(Retrieval, SelectionSize) {
  EXPECT_EQ(SelectionSize(10, 0.3), 3u);
  EXPECT_EQ(SelectionSize(250, 0.25), 63u);
  EXPECT_EQ(SelectionSize(0, 0.25), 0u);
  EXPECT_EQ(SelectionSize(7, 1.0), 7u);
  EXPECT_EQ(SelectionSize(7, 0.0), 0u);
  EXPECT_EQ(SelectionSize(3, 0.01), 1u);
}

// SelectionFromScores, which the retriever and the CUDA engine's GPU scores both go through, on
// hand-made scores [candidates][heads].
TEST(Retrieval, SelectionFromScoresPerLayerAndPerKvHead) {
  const std::vector<uint32_t> cands = {3, 4, 7, 9};
  // Head 0 prefers 7 then 3, head 1 prefers 9 then 7.
  const std::vector<float> scores = {0.30f, 0.10f,   // block 3
                                     0.05f, 0.05f,   // block 4
                                     0.50f, 0.25f,   // block 7
                                     0.15f, 0.60f};  // block 9
  // Per layer: the top 2 of the sums (0.40, 0.10, 0.75, 0.75), ties to the lower block.
  RetrievalResult r = SelectionFromScores(scores, 2, cands, 2, /*per_kv_head=*/false);
  EXPECT_EQ(r.k, 2u);
  EXPECT_EQ(r.blocks, (std::vector<uint32_t>{7, 9}));
  ASSERT_EQ(r.candidate_scores.size(), 4u);
  EXPECT_FLOAT_EQ(r.candidate_scores[0], 0.40f);
  EXPECT_TRUE(r.head_blocks.empty());
  // Per KV head: {3, 7} and {7, 9}; the union, each score summed over the heads that chose it.
  r = SelectionFromScores(scores, 2, cands, 2, /*per_kv_head=*/true);
  EXPECT_EQ(r.blocks, (std::vector<uint32_t>{3, 7, 9}));
  ASSERT_EQ(r.scores.size(), 3u);
  EXPECT_FLOAT_EQ(r.scores[0], 0.30f);
  EXPECT_FLOAT_EQ(r.scores[1], 0.75f);
  EXPECT_FLOAT_EQ(r.scores[2], 0.60f);
  ASSERT_EQ(r.head_blocks.size(), 2u);
  EXPECT_EQ(r.head_blocks[0], (std::vector<uint32_t>{3, 7}));
  EXPECT_EQ(r.head_blocks[1], (std::vector<uint32_t>{7, 9}));
  EXPECT_EQ(r.candidate_scores, scores);  // per head, untouched
  // Scores already summed (heads = 1) select as they are; k = 0 selects nothing.
  r = SelectionFromScores({0.4f, 0.1f, 0.75f, 0.75f}, 1, cands, 1, false);
  EXPECT_EQ(r.blocks, std::vector<uint32_t>{7});
  r = SelectionFromScores(scores, 2, cands, 0, true);
  EXPECT_TRUE(r.blocks.empty());
}

// The retriever's per-head result is SelectionFromScores of its own candidate scores.
TEST(Retrieval, PerKvHeadResultIsTheUnionOfItsScores) {
  Case c = SmallCase(2, 60, 0.2);
  c.task.options.select_per_kv_head = true;
  auto r = RunRetrieval(c.task);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const RetrievalResult again =
      SelectionFromScores(r->candidate_scores, c.task.reps.kv_heads(), c.task.candidates, r->k,
                          /*per_kv_head=*/true);
  EXPECT_EQ(r->blocks, again.blocks);
  EXPECT_EQ(r->scores, again.scores);
  EXPECT_EQ(r->head_blocks, again.head_blocks);
}

TEST(Retrieval, EdgeCasesOfK) {
  Case c = SmallCase(1, 40, 0.0);
  auto r = RunRetrieval(c.task);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->k, 0u);
  EXPECT_TRUE(r->blocks.empty());

  c.task.sparse_ratio = 1.0;
  r = RunRetrieval(c.task);
  ASSERT_TRUE(r.ok());
  std::vector<uint32_t> all = c.task.candidates;
  std::sort(all.begin(), all.end());
  EXPECT_EQ(r->blocks, all);
  EXPECT_NEAR(std::accumulate(r->scores.begin(), r->scores.end(), 0.0), 3.0 * 6.0, 1e-3);

  c.task.candidates = {5};
  c.task.sparse_ratio = 0.01;
  r = RunRetrieval(c.task);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->blocks, std::vector<uint32_t>{5});
  EXPECT_NEAR(r->scores[0], 18.0, 1e-3);  // all probability mass

  c.task.candidates.clear();
  r = RunRetrieval(c.task);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->blocks.empty());
}

TEST(Retrieval, AllEqualScoresSelectLowestBlockIndices) {
  const KvGeometry geo{.kv_heads = 2, .head_dim = 64, .block_tokens = 8, .dtype = DType::kF32};
  auto reps = BlockRepresentations::Create(
      geo, *SelectChannels(std::vector<double>(128, 1.0), 2, 64, 0.3), {.merge = 2});
  ASSERT_TRUE(reps.ok());
  std::vector<float> block(geo.elements_per_block(), 0.25f);
  for (int b = 0; b < 100; ++b) ASSERT_TRUE((*reps)->Append(block.data(), geo).ok());
  std::mt19937_64 rng(5);
  RetrievalTask t;
  t.reps = (*reps)->View();
  t.num_queries = 2;
  t.q_heads = 4;
  t.queries = RandomQueries(2, 4, 64, 1.0f, rng);
  t.candidates = Candidates(100, rng);
  t.sparse_ratio = 0.25;
  for (bool per_head : {false, true}) {
    t.options.select_per_kv_head = per_head;
    auto r = RunRetrieval(t);
    ASSERT_TRUE(r.ok());
    std::vector<uint32_t> want(25);
    std::iota(want.begin(), want.end(), 1u);  // block 0 is the initial window
    EXPECT_EQ(r->blocks, want);
  }
}

TEST(Retrieval, NonFiniteInputsAreReportedNotPropagated) {
  Case c = SmallCase(2, 30);
  RetrievalTask t = c.task;
  t.queries[7] = std::numeric_limits<float>::quiet_NaN();
  auto r = RunRetrieval(t);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("NaN/Inf"), std::string::npos) << r.status().ToString();
  t.queries[7] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(RunRetrieval(t).status().code(), StatusCode::kInvalidArgument);

  // Finite but huge queries: the logits overflow.
  t = c.task;
  for (float& q : t.queries) q = 3e38f;
  r = RunRetrieval(t);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();

  // A representation with Inf (from a key above the fp16 range).
  const KvGeometry geo{.kv_heads = 2, .head_dim = 64, .block_tokens = 16, .dtype = DType::kF32};
  auto reps = BlockRepresentations::Create(geo, ChannelIndex::Identity(2, 64), {.merge = 2});
  ASSERT_TRUE(reps.ok());
  std::vector<float> block(geo.elements_per_block(), 0.5f);
  for (int b = 0; b < 5; ++b) ASSERT_TRUE((*reps)->Append(block.data(), geo).ok());
  block[geo.offset(0, 1, 3) + 9] = 1e9f;
  ASSERT_TRUE((*reps)->Append(block.data(), geo).ok());
  t = c.task;
  t.reps = (*reps)->View();
  t.candidates = {0, 1, 2, 3, 4};
  EXPECT_TRUE(RunRetrieval(t).ok());
  t.candidates.push_back(5);
  r = RunRetrieval(t);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("block 5"), std::string::npos) << r.status().ToString();

  // The same errors arrive through a Retriever handle.
  Retriever retriever(RetrieverOptions{.num_threads = 2});
  RetrievalHandle h = retriever.Submit(t);
  EXPECT_EQ(h.Wait().code(), StatusCode::kInvalidArgument);
}

TEST(Retrieval, BadTasksAreInvalidArgument) {
  Case c = SmallCase(3, 20);
  auto expect_bad = [](RetrievalTask t) {
    EXPECT_EQ(RunRetrieval(t).status().code(), StatusCode::kInvalidArgument);
  };
  RetrievalTask t = c.task;
  t.candidates.push_back(t.candidates[0]);
  expect_bad(t);
  t = c.task;
  t.candidates.push_back(20);
  expect_bad(t);
  t = c.task;
  t.q_heads = 5;
  expect_bad(t);
  t = c.task;
  t.queries.pop_back();
  expect_bad(t);
  t = c.task;
  t.sparse_ratio = 1.5;
  expect_bad(t);
  t = c.task;
  t.reps = RepresentationView();
  expect_bad(t);
}

TEST(Retriever, SplitAcrossThreadsEqualsUnsplit) {
  std::mt19937_64 rng(11);
  RandomLayerSpec s{.kv_heads = 4,
                    .head_dim = 128,
                    .block_tokens = 32,
                    .merge = 2,
                    .blocks = 1500,
                    .prune_ratio = 0.2};
  auto reps = RandomRepresentations(s, rng);
  RetrievalTask t;
  t.reps = reps->View();
  t.num_queries = 4;
  t.q_heads = 20;
  t.queries = RandomQueries(4, 20, 128, 1.0f, rng);
  t.candidates = Candidates(1500, rng);
  for (bool per_head : {false, true}) {
    t.options.select_per_kv_head = per_head;
    auto unsplit = RunRetrieval(t);
    ASSERT_TRUE(unsplit.ok());
    for (int threads : {2, 3, 5}) {
      Retriever retriever(RetrieverOptions{.num_threads = threads, .min_segments = 1});
      RetrievalHandle h = retriever.Submit(t);
      ASSERT_TRUE(h.Wait().ok());
      EXPECT_EQ(h.result().blocks, unsplit->blocks) << threads;
      EXPECT_EQ(h.result().scores, unsplit->scores) << threads;  // bitwise
      EXPECT_EQ(h.result().candidate_scores, unsplit->candidate_scores) << threads;
      EXPECT_EQ(h.result().head_blocks, unsplit->head_blocks) << threads;
    }
    // RunWith: part 0 on this thread, the others on a helper pool's workers.
    for (int threads : {1, 2, 4}) {
      ThreadPool helpers(threads);  // threads - 1 workers
      Retriever retriever(RetrieverOptions{.num_threads = 1, .min_segments = 1});
      RetrievalHandle h = retriever.RunWith(t, &helpers);
      ASSERT_TRUE(h.Wait().ok());
      EXPECT_EQ(h.result().blocks, unsplit->blocks) << threads;
      EXPECT_EQ(h.result().scores, unsplit->scores) << threads;
      EXPECT_EQ(h.result().candidate_scores, unsplit->candidate_scores) << threads;
      EXPECT_EQ(h.result().head_blocks, unsplit->head_blocks) << threads;
    }
  }
}

// Smaller segments: bitwise the same result on any number of threads for a given segment size,
// and the same selection as the default segments (the f32 summation order changes, the scores
// only by rounding). Zero is rejected through the handle.
TEST(Retriever, SegmentSizeChangesOnlyRounding) {
  std::mt19937_64 rng(12);
  RandomLayerSpec s{.kv_heads = 2, .head_dim = 64, .blocks = 700, .prune_ratio = 0.25};
  auto reps = RandomRepresentations(s, rng);
  RetrievalTask t;
  t.reps = reps->View();
  t.num_queries = 3;
  t.q_heads = 6;
  t.queries = RandomQueries(3, 6, 64, 1.0f, rng);
  t.candidates = Candidates(700, rng);
  auto base = RunRetrieval(t);
  ASSERT_TRUE(base.ok());
  const std::vector<double> ref = ReferenceScores(t);
  for (size_t seg : {1, 7, 8, 64}) {
    std::vector<float> first;
    for (int threads : {1, 4}) {
      Retriever retriever(
          RetrieverOptions{.num_threads = threads, .min_segments = 1, .segment_blocks = seg});
      RetrievalHandle h = retriever.Submit(t);
      ASSERT_TRUE(h.Wait().ok()) << seg;
      const RetrievalResult& r = h.result();
      if (first.empty()) {
        first = r.candidate_scores;
      } else {
        EXPECT_EQ(r.candidate_scores, first) << "segment " << seg << ", threads " << threads;
      }
      ASSERT_EQ(r.candidate_scores.size(), base->candidate_scores.size());
      for (size_t i = 0; i < r.candidate_scores.size(); ++i) {
        ASSERT_NEAR(r.candidate_scores[i], base->candidate_scores[i],
                    1e-5 * std::fabs(base->candidate_scores[i]) + 1e-9)
            << "segment " << seg << ", candidate " << i;
      }
      const auto cmp = CompareSelection(ref, 1, t.candidates, r.k, r.blocks, 2e-3);
      EXPECT_EQ(cmp.unexplained, 0u) << seg;
    }
  }
  Retriever zero(RetrieverOptions{.num_threads = 1, .segment_blocks = 0});
  EXPECT_EQ(zero.Submit(t).Wait().code(), StatusCode::kInvalidArgument);
}

TEST(Retriever, CancelBeforeAndWhileRunning) {
  ThreadPool pool(2);  // one worker
  Retriever retriever(&pool);
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  pool.Submit([gate] { gate.wait(); });
  Case c = SmallCase(4, 50);
  RetrievalHandle h = retriever.Submit(c.task);
  EXPECT_FALSE(h.Ready());
  EXPECT_EQ(h.Wait(std::chrono::milliseconds(5)).code(), StatusCode::kDeadlineExceeded);
  h.Cancel();
  release.set_value();
  EXPECT_EQ(h.Wait().code(), StatusCode::kCancelled);

  // A long task cancelled while running stops early with Cancelled (or had already finished).
  const KvGeometry geo{.kv_heads = 8, .head_dim = 128, .block_tokens = 64, .dtype = DType::kF32};
  auto reps = BlockRepresentations::Create(geo, ChannelIndex::Identity(8, 128), {.merge = 1});
  ASSERT_TRUE(reps.ok());
  std::mt19937_64 rng(12);
  std::vector<float> block(geo.elements_per_block());
  for (float& v : block) v = std::normal_distribution<float>()(rng);
  for (int b = 0; b < 2000; ++b) ASSERT_TRUE((*reps)->Append(block.data(), geo).ok());
  RetrievalTask t;
  t.reps = (*reps)->View();
  t.num_queries = 16;
  t.q_heads = 64;
  t.queries = RandomQueries(16, 64, 128, 1.0f, rng);
  t.candidates = Candidates(2000, rng);
  Retriever owned(RetrieverOptions{.num_threads = 2});
  RetrievalHandle big = owned.Submit(t);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  big.Cancel();
  const Status st = big.Wait();
  EXPECT_TRUE(st.code() == StatusCode::kCancelled || st.ok()) << st.ToString();
}

TEST(Retriever, ThousandsOfConcurrentTasks) {
  std::vector<Case> bases;
  std::vector<RetrievalResult> expected;
  for (uint64_t i = 0; i < 4; ++i) {
    bases.push_back(SmallCase(100 + i, 20 + 37 * i));
    expected.push_back(*RunRetrieval(bases.back().task));
  }
  Retriever retriever(RetrieverOptions{.num_threads = 2, .min_segments = 1});
  std::vector<std::pair<size_t, RetrievalHandle>> kept;
  for (size_t i = 0; i < 3000; ++i) {
    RetrievalHandle h = retriever.Submit(bases[i % 4].task);
    if (i % 7 == 3) h.Cancel();
    if (i % 2 == 0) kept.emplace_back(i, std::move(h));  // the others are dropped unwaited
  }
  size_t ok = 0;
  for (auto& [i, h] : kept) {
    const Status st = h.Wait();
    if (i % 7 == 3) {
      EXPECT_TRUE(st.ok() || st.code() == StatusCode::kCancelled);
    } else {
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
    if (st.ok()) {
      ++ok;
      EXPECT_EQ(h.result().blocks, expected[i % 4].blocks);
    }
  }
  EXPECT_GE(ok, kept.size() * 6 / 7);
}

TEST(Retriever, DestructionFinishesQueuedTasks) {
  Case c = SmallCase(6, 200);
  std::vector<RetrievalHandle> handles;
  {
    Retriever retriever(RetrieverOptions{.num_threads = 1});
    for (int i = 0; i < 200; ++i) handles.push_back(retriever.Submit(c.task));
  }
  for (auto& h : handles) {
    ASSERT_TRUE(h.Ready());
    const Status st = h.Wait();
    EXPECT_TRUE(st.ok() || st.code() == StatusCode::kCancelled) << st.ToString();
  }
}

// Planted structure: a few blocks hold keys aligned with the queries' direction; they must be
// selected, and the selection must carry most of the exact attention mass.
TEST(Retrieval, FindsPlantedBlocksAndReportsAttentionRecall) {
  const KvGeometry geo{.kv_heads = 2, .head_dim = 64, .block_tokens = 32, .dtype = DType::kF32};
  const size_t blocks = 400, x = 4, q_heads = 8, group = 4;
  std::mt19937_64 rng(77);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<std::vector<float>> dir(2, std::vector<float>(64));
  for (auto& u : dir) {
    double norm = 0;
    for (float& v : u) {
      v = n(rng);
      norm += double(v) * v;
    }
    for (float& v : u) v = float(v / std::sqrt(norm));
  }
  std::vector<uint32_t> cand = Candidates(blocks, rng);
  std::set<uint32_t> planted(cand.begin(), cand.begin() + 8);
  std::vector<std::vector<float>> kv(blocks, std::vector<float>(geo.elements_per_block()));
  ChannelImportanceAccumulator acc(2, 64, 0.25);
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t h = 0; h < 2; ++h) {
      for (size_t t = 0; t < 32; ++t) {
        const bool hot = planted.count(uint32_t(b)) && t % 8 < 2;  // 8 hot tokens per block
        for (size_t c = 0; c < 64; ++c) {
          kv[b][geo.offset(0, h, t) + c] = n(rng) + (hot ? 8.0f * dir[h][c] : 0.0f);
        }
      }
    }
    if (b < 50) {
      ASSERT_TRUE(acc.AddBlock(kv[b].data(), geo).ok());
    }
  }
  auto reps = BlockRepresentations::Create(geo, *acc.Finalize(), {.merge = 2});
  ASSERT_TRUE(reps.ok());
  for (const auto& b : kv) ASSERT_TRUE((*reps)->Append(b.data(), geo).ok());
  RetrievalTask t;
  t.reps = (*reps)->View();
  t.num_queries = x;
  t.q_heads = q_heads;
  t.queries.resize(x * q_heads * 64);
  for (size_t i = 0; i < x * q_heads; ++i) {
    const size_t g = (i % q_heads) / group;
    for (size_t c = 0; c < 64; ++c) t.queries[i * 64 + c] = 4.0f * dir[g][c] + 0.5f * n(rng);
  }
  t.candidates = cand;
  t.sparse_ratio = 0.1;
  auto r = RunRetrieval(t);
  ASSERT_TRUE(r.ok());
  for (uint32_t b : planted) {
    EXPECT_TRUE(std::binary_search(r->blocks.begin(), r->blocks.end(), b)) << "planted " << b;
  }
  // Exact attention over every candidate token, all channels, float64: mass per block.
  std::vector<double> block_mass(blocks, 0.0);
  for (size_t i = 0; i < x * q_heads; ++i) {
    const size_t g = (i % q_heads) / group;
    const float* q = t.queries.data() + i * 64;
    std::vector<double> logit;
    for (uint32_t b : cand) {
      for (size_t tok = 0; tok < 32; ++tok) {
        double s = 0;
        for (size_t c = 0; c < 64; ++c) s += double(q[c]) * kv[b][geo.offset(0, g, tok) + c];
        logit.push_back(s / 8.0);
      }
    }
    const double mx = *std::max_element(logit.begin(), logit.end());
    double z = 0;
    for (double& l : logit) z += (l = std::exp(l - mx));
    for (size_t j = 0; j < logit.size(); ++j) {
      block_mass[cand[j / 32]] += logit[j] / z / double(x * q_heads);
    }
  }
  auto recall = [&](const std::vector<uint32_t>& selected) {
    double m = 0;
    for (uint32_t b : selected) m += block_mass[b];
    return m;
  };
  const double got = recall(r->blocks);
  std::vector<uint32_t> arbitrary(cand.end() - ptrdiff_t(r->k), cand.end());
  std::sort(arbitrary.begin(), arbitrary.end());
  const double random_sel = recall(arbitrary);
  // Oracle: the k blocks of highest exact attention mass.
  std::vector<std::pair<double, uint32_t>> mass;
  for (uint32_t b : cand) mass.emplace_back(block_mass[b], b);
  std::sort(mass.begin(), mass.end(), std::greater<>());
  std::vector<uint32_t> oracle;
  for (size_t i = 0; i < r->k; ++i) oracle.push_back(mass[i].second);
  std::sort(oracle.begin(), oracle.end());
  const double best = recall(oracle);
  std::printf(
      "[ fidelity ] attention-mass recall of the selection: %.4f (k=%zu of %zu; exact "
      "top-k oracle: %.4f; an arbitrary selection of the same size: %.4f)\n",
      got, r->k, cand.size(), best, random_sel);
  RecordProperty("attention_mass_recall", std::to_string(got));
  RecordProperty("oracle_recall", std::to_string(best));
  EXPECT_GT(got, 0.9 * best);
  EXPECT_GT(got, 2 * random_sel);
}

}  // namespace
}  // namespace kvstar::sparse
