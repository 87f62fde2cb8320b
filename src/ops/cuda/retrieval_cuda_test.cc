// ScoreBlocks (KVstar block scoring on the device) against the CPU scorer (sparse::RunRetrieval)
// and the float64 reference, on random shapes. Skips itself without a CUDA device.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "ops/cuda/cuda_test_util.h"
#include "ops/cuda/ops.h"
#include "sparse/retrieval_reference.h"
#include "sparse/retriever.h"

namespace kvstar::cuda {
namespace {

using sparse::RetrievalTask;
using sparse::testing::CompareSelection;
using sparse::testing::RandomLayerSpec;
using sparse::testing::RandomQueries;
using sparse::testing::RandomRepresentations;
using sparse::testing::ReferenceScores;
using testing::CudaTest;

// Shapes that reach both partial kernels, for the tests that compare launch choices bit for bit.
struct KernelCase {
  size_t kv_heads, group, head_dim, merge, block_tokens, blocks, x;
  DType dtype;
  bool per_kv_head;
};
const KernelCase kKernelCases[] = {
    {8, 4, 128, 2, 128, 300, 8, DType::kF16, false},  // tensor cores, 32 queries
    {4, 5, 128, 2, 32, 211, 8, DType::kBF16, true},   // tensor cores, 40 queries, per KV head
    {2, 3, 64, 2, 32, 120, 4, DType::kF16, false},    // the f32 kernel (d_pruned 16)
    {3, 2, 80, 1, 32, 50, 5, DType::kBF16, true},     // the f32 kernel, d_pruned 20
};

// One (layer, sequence) on the device: its representations, channels and queries.
struct DeviceLayer {
  std::unique_ptr<sparse::BlockRepresentations> reps;
  RetrievalTask task;  // the CPU task: candidates [begin, end)
  DeviceBuffer reps_dev, channels_dev, queries_dev, scores_dev;
  size_t reps_offset = 0;  // bytes before the representations in reps_dev (alignment tests)
};

class ScoreBlocksTest : public CudaTest {
 protected:
  DeviceLayer Make(const RandomLayerSpec& spec, size_t x, size_t group, uint32_t begin,
                   uint32_t end, bool misaligned = false) {
    DeviceLayer d;
    d.reps = RandomRepresentations(spec, rng_);
    const sparse::RepresentationView view = d.reps->View();
    d.task.reps = view;
    d.task.num_queries = x;
    d.task.q_heads = spec.kv_heads * group;
    d.task.queries = RandomQueries(x, d.task.q_heads, spec.head_dim, 1.0f, rng_);
    for (uint32_t b = begin; b < end; ++b) d.task.candidates.push_back(b);
    d.task.sparse_ratio = 0.25;
    std::vector<uint16_t> flat;
    if (misaligned) {
      flat.push_back(0);
      d.reps_offset = 2;
    }
    for (size_t b = 0; b < view.num_blocks(); ++b) {
      flat.insert(flat.end(), view.block(b), view.block(b) + view.block_elements());
    }
    d.reps_dev = Upload(flat);
    d.channels_dev = Upload(view.channels().channels);
    d.queries_dev = Upload(d.task.queries);
    d.scores_dev = Poisoned(std::max<size_t>(end - begin, 1) * sizeof(float));
    return d;
  }

  static RandomLayerSpec Spec(size_t kv_heads, size_t head_dim, size_t block_tokens, size_t merge,
                              size_t blocks, double prune, DType dtype) {
    RandomLayerSpec spec;
    spec.kv_heads = kv_heads;
    spec.head_dim = head_dim;
    spec.block_tokens = block_tokens;
    spec.merge = merge;
    spec.blocks = blocks;
    spec.prune_ratio = prune;
    spec.rep_dtype = dtype;
    return spec;
  }

  static RandomLayerSpec Spec(const KernelCase& c) {
    return Spec(c.kv_heads, c.head_dim, c.block_tokens, c.merge, c.blocks, 0.25, c.dtype);
  }

  // Two layers of a case: candidates [1, blocks - 1) and [0, blocks / 2), with one score per KV
  // head and block when the case asks for them.
  std::pair<DeviceLayer, DeviceLayer> CaseLayers(const KernelCase& c) {
    DeviceLayer a = Make(Spec(c), c.x, c.group, 1, static_cast<uint32_t>(c.blocks - 1));
    DeviceLayer b = Make(Spec(c), c.x, c.group, 0, static_cast<uint32_t>(c.blocks / 2));
    if (c.per_kv_head) {
      for (DeviceLayer* d : {&a, &b}) {
        d->scores_dev = Poisoned(d->task.candidates.size() * c.kv_heads * sizeof(float));
      }
    }
    return {std::move(a), std::move(b)};
  }

  BlockScoreArgs ArgsFor(const DeviceLayer& d, size_t max_candidates) const {
    const sparse::RepresentationView& v = d.task.reps;
    BlockScoreArgs a;
    a.max_candidates = max_candidates;
    a.num_queries = d.task.num_queries;
    a.query_stride = d.task.q_heads * v.head_dim();
    a.q_heads = d.task.q_heads;
    a.kv_heads = v.kv_heads();
    a.head_dim = v.head_dim();
    a.d_pruned = v.d_pruned();
    a.vectors_per_block = v.vectors_per_block();
    a.dtype = v.dtype();
    a.scale = 1.0f / std::sqrt(static_cast<float>(v.head_dim()));
    return a;
  }

  static BlockScoreTask TaskFor(const DeviceLayer& d) {
    BlockScoreTask t;
    t.reps = d.reps_dev.as<char>() + d.reps_offset;
    t.channels = d.channels_dev.as<uint16_t>();
    t.queries = d.queries_dev.as<float>();
    t.scores = d.scores_dev.as<float>();
    t.cand_begin = d.task.candidates.empty() ? 0 : d.task.candidates.front();
    t.cand_end = d.task.candidates.empty() ? 0 : d.task.candidates.back() + 1;
    return t;
  }

  // Runs the tasks of `layers` in one call; returns each one's scores.
  std::vector<std::vector<float>> Run(const std::vector<DeviceLayer*>& layers, BlockScoreArgs a) {
    std::vector<BlockScoreTask> tasks;
    for (const DeviceLayer* d : layers) tasks.push_back(TaskFor(*d));
    DeviceBuffer tasks_dev = UploadBytes(tasks.data(), tasks.size() * sizeof(BlockScoreTask));
    a.tasks = tasks_dev.as<BlockScoreTask>();
    a.num_tasks = tasks.size();
    DeviceBuffer ws = Poisoned(std::max<size_t>(BlockScoreWorkspaceBytes(a), 4));
    const Status st = ScoreBlocks(stream_, a, ws.data());
    EXPECT_TRUE(st.ok()) << st.ToString();
    const size_t per = a.per_kv_head ? a.kv_heads : 1;
    std::vector<std::vector<float>> out;
    for (const DeviceLayer* d : layers) {
      out.push_back(Download<float>(d->scores_dev, d->task.candidates.size() * per));
    }
    return out;
  }

  // Replaces the layer's device representations by a head-major copy (BlockScoreArgs::head_major).
  void UseHeadMajor(DeviceLayer& d) {
    const sparse::RepresentationView& v = d.task.reps;
    std::vector<uint16_t> flat, head_major(v.num_blocks() * v.block_elements());
    for (size_t b = 0; b < v.num_blocks(); ++b) {
      flat.insert(flat.end(), v.block(b), v.block(b) + v.block_elements());
    }
    RepresentationsToHeadMajor(flat.data(), v.num_blocks(), v.vectors_per_block(), v.kv_heads(),
                               v.d_pruned(), head_major.data());
    d.reps_dev = Upload(head_major);
    d.reps_offset = 0;
  }

  std::mt19937_64 rng_{20261123};
};

TEST_F(ScoreBlocksTest, MatchesCpuScorerAndReferenceOnRandomShapes) {
  struct Case {
    size_t kv_heads, group, head_dim;
    double prune;
    size_t merge, blocks, x;
    DType dtype;
    size_t block_tokens = 32;
  };
  // d_pruned: 16, 13 (odd), 20, 32, 128 (no pruning), 7. Vectors per block: 8 to 32, then 64
  // (the engine's default: a lane scores two vectors), 128 (two pairs per lane) and 80 (lanes
  // with one vector of their second pair, others with none in their second pass).
  const Case cases[] = {
      {4, 5, 64, 0.25, 2, 300, 8, DType::kF16},
      {1, 8, 64, 0.2, 1, 40, 3, DType::kBF16},
      {8, 4, 80, 0.25, 4, 517, 16, DType::kF16},
      {2, 1, 128, 0.25, 2, 1, 1, DType::kF16},
      {3, 2, 128, 0.99, 2, 77, 5, DType::kBF16},
      {8, 8, 64, 0.11, 2, 2100, 8, DType::kF16},
      {8, 4, 128, 0.25, 2, 257, 8, DType::kF16, 128},
      {2, 4, 128, 0.25, 1, 65, 8, DType::kBF16, 128},
      {4, 2, 64, 0.21, 1, 33, 3, DType::kF16, 80},
  };
  for (const Case& c : cases) {
    const RandomLayerSpec spec =
        Spec(c.kv_heads, c.head_dim, c.block_tokens, c.merge, c.blocks, c.prune, c.dtype);
    // Candidates: everything but a first and a last block when there are enough.
    const uint32_t begin = c.blocks > 3 ? 1 : 0;
    const uint32_t end = static_cast<uint32_t>(c.blocks > 3 ? c.blocks - 1 : c.blocks);
    DeviceLayer d = Make(spec, c.x, c.group, begin, end);
    const std::string name = "kv_heads " + std::to_string(c.kv_heads) + " group " +
                             std::to_string(c.group) + " d_pruned " +
                             std::to_string(d.task.reps.d_pruned()) + " vectors " +
                             std::to_string(d.task.reps.vectors_per_block()) + " blocks " +
                             std::to_string(c.blocks) + " x " + std::to_string(c.x);
    const std::vector<float> got = Run({&d}, ArgsFor(d, end - begin))[0];
    auto cpu = sparse::RunRetrieval(d.task);
    ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
    EXPECT_LT(testing::RelErr(got, cpu->candidate_scores), 1e-4) << name;
    // Every probability counted once: the scores sum to x * q_heads.
    double total = 0;
    for (float s : got) total += s;
    EXPECT_NEAR(total, static_cast<double>(c.x * c.kv_heads * c.group), 1e-3 * total) << name;
    // The selection made from the device's scores is the reference's, up to near-ties.
    const std::vector<double> ref = ReferenceScores(d.task);
    const size_t k = sparse::SelectionSize(got.size(), d.task.sparse_ratio);
    std::vector<uint32_t> picked;
    for (size_t i : sparse::TopKPositions(got.data(), 1, d.task.candidates, k)) {
      picked.push_back(d.task.candidates[i]);
    }
    const auto cmp = CompareSelection(ref, 1, d.task.candidates, k, picked, 1e-4);
    EXPECT_EQ(cmp.unexplained, 0u) << name;
  }
}

// The tensor-core kernel (d_pruned 32, 16 to 64 vectors per block, x * group up to 64) against
// the f32 kernel and the CPU scorer: f32-level agreement for f16 and bf16 representations, both
// query tile widths, every m-tile count, and representations that are not 16-byte aligned.
TEST_F(ScoreBlocksTest, TensorCoreKernelMatchesF32KernelAndCpuScorer) {
  struct Case {
    size_t kv_heads, group, merge, block_tokens, blocks, x;
    DType dtype;
    bool misaligned = false;
  };
  const Case cases[] = {
      {8, 4, 2, 128, 1021, 8, DType::kF16},  // Llama-3.1-8B at 128K: 64 vectors, 32 queries
      {8, 4, 2, 128, 300, 8, DType::kBF16},
      {4, 5, 2, 32, 211, 8, DType::kF16},         // 16 vectors, 40 queries (8 n-tiles)
      {2, 8, 1, 48, 97, 8, DType::kBF16},         // 48 vectors, 64 queries
      {1, 1, 2, 64, 50, 1, DType::kF16},          // 32 vectors, one query
      {8, 4, 2, 128, 129, 8, DType::kF16, true},  // not 16-byte aligned
  };
  for (const Case& c : cases) {
    RandomLayerSpec spec;
    spec.kv_heads = c.kv_heads;
    spec.head_dim = 128;
    spec.block_tokens = c.block_tokens;
    spec.merge = c.merge;
    spec.blocks = c.blocks;
    spec.prune_ratio = 0.25;
    spec.rep_dtype = c.dtype;
    const uint32_t begin = 1, end = static_cast<uint32_t>(c.blocks - 1);
    DeviceLayer d = Make(spec, c.x, c.group, begin, end, c.misaligned);
    const std::string name = "kv_heads " + std::to_string(c.kv_heads) + " group " +
                             std::to_string(c.group) + " vectors " +
                             std::to_string(d.task.reps.vectors_per_block()) + " x " +
                             std::to_string(c.x) + (c.dtype == DType::kF16 ? " f16" : " bf16") +
                             (c.misaligned ? " misaligned" : "");
    BlockScoreArgs a = ArgsFor(d, end - begin);
    ASSERT_EQ(a.d_pruned, 32u) << name;
    EXPECT_TRUE(BlockScoreUsesTensorCores(a)) << name;
    const std::vector<float> mma = Run({&d}, a)[0];
    a.tensor_cores = false;
    EXPECT_FALSE(BlockScoreUsesTensorCores(a));
    const std::vector<float> f32 = Run({&d}, a)[0];
    auto cpu = sparse::RunRetrieval(d.task);
    ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
    const double err_mma = testing::RelErr(mma, cpu->candidate_scores);
    const double err_f32 = testing::RelErr(f32, cpu->candidate_scores);
    std::printf("%s: rel. error vs the CPU scorer %.2e (tensor cores), %.2e (f32)\n", name.c_str(),
                err_mma, err_f32);
    EXPECT_LT(err_mma, 1e-5) << name;
    EXPECT_LT(testing::RelErr(mma, f32), 1e-5) << name;
  }
}

TEST_F(ScoreBlocksTest, SeveralTasksInOneCallAndUnscaledSoftmax) {
  RandomLayerSpec spec;
  spec.kv_heads = 2;
  spec.head_dim = 64;
  spec.blocks = 120;
  DeviceLayer a = Make(spec, 4, 3, 1, 110);
  spec.blocks = 60;
  DeviceLayer b = Make(spec, 4, 3, 2, 50);
  DeviceLayer empty = Make(spec, 4, 3, 0, 0);  // no candidates: its scores stay poisoned
  // One channel index per task: b's differs from a's (other random keys).
  BlockScoreArgs args = ArgsFor(a, 120);
  args.query_stride = args.q_heads * args.head_dim;
  for (bool scaled : {true, false}) {
    args.scale = scaled ? 1.0f / 8.0f : 1.0f;
    const auto got = Run({&a, &empty, &b}, args);
    for (DeviceLayer* d : {&a, &b}) {
      d->task.options.scale_by_inv_sqrt_head_dim = scaled;
      auto cpu = sparse::RunRetrieval(d->task);
      ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
      EXPECT_LT(testing::RelErr(got[d == &a ? 0 : 2], cpu->candidate_scores), 1e-4)
          << (scaled ? "scaled" : "unscaled");
    }
  }
  const std::vector<float> untouched = Download<float>(empty.scores_dev, 1);
  EXPECT_TRUE(std::isnan(untouched[0]));
}

// Scores per KV head ([candidates][kv_heads]) are the CPU scorer's with select_per_kv_head, sum
// to the per-block scores, and give the CPU's union of per-head selections.
TEST_F(ScoreBlocksTest, PerKvHeadScoresMatchTheCpuScorer) {
  struct Case {
    size_t kv_heads, group, blocks, x;
    double prune;
  };
  for (const Case& c : {Case{2, 3, 200, 8, 0.25}, Case{8, 4, 517, 1, 0.2}, Case{4, 1, 33, 16, 0.99},
                        Case{1, 8, 90, 4, 0.11}}) {
    RandomLayerSpec spec;
    spec.kv_heads = c.kv_heads;
    spec.head_dim = 128;
    spec.block_tokens = 32;
    spec.blocks = c.blocks;
    spec.prune_ratio = c.prune;
    const uint32_t end = static_cast<uint32_t>(c.blocks - 1);
    DeviceLayer d = Make(spec, c.x, c.group, 1, end);
    const std::string name = "kv_heads " + std::to_string(c.kv_heads) + " group " +
                             std::to_string(c.group) + " x " + std::to_string(c.x);
    BlockScoreArgs args = ArgsFor(d, end - 1);
    const std::vector<float> summed = Run({&d}, args)[0];
    d.scores_dev = Poisoned((end - 1) * c.kv_heads * sizeof(float));
    args.per_kv_head = true;
    const std::vector<float> per_head = Run({&d}, args)[0];
    d.task.options.select_per_kv_head = true;
    auto cpu = sparse::RunRetrieval(d.task);
    ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
    EXPECT_LT(testing::RelErr(per_head, cpu->candidate_scores), 1e-4) << name;
    std::vector<float> sums(summed.size(), 0.0f);
    for (size_t i = 0; i < sums.size(); ++i) {
      for (size_t h = 0; h < c.kv_heads; ++h) sums[i] += per_head[i * c.kv_heads + h];
    }
    EXPECT_LT(testing::RelErr(sums, summed), 1e-5) << name;
    // Each head's selection made from the device's scores is the float64 reference's, up to
    // near-ties.
    const sparse::RetrievalResult r = sparse::SelectionFromScores(
        per_head, c.kv_heads, d.task.candidates, cpu->k, /*per_kv_head=*/true);
    const std::vector<double> ref = ReferenceScores(d.task);
    ASSERT_EQ(r.head_blocks.size(), c.kv_heads);
    for (size_t h = 0; h < c.kv_heads; ++h) {
      std::vector<double> head(d.task.candidates.size());
      for (size_t i = 0; i < head.size(); ++i) head[i] = ref[i * c.kv_heads + h];
      const auto cmp = CompareSelection(head, 1, d.task.candidates, cpu->k, r.head_blocks[h], 1e-4);
      EXPECT_EQ(cmp.unexplained, 0u) << name << " head " << h;
    }
    EXPECT_GE(r.blocks.size(), cpu->k) << name;
  }
}

// max_ctas: a few CTAs looping over the work items give the whole grid's scores bit for bit, on
// both kernels, with several tasks (one without candidates), per KV head, and with fewer items
// than CTAs. So does every blocks_per_cta (work items of 1 block up to more than a task has), alone
// and with a CTA limit, each also with the representations read through the cp.async ring
// (stages 3: rings that wrap, warps with one block and with none); the auto choice is 16 .. 128.
TEST_F(ScoreBlocksTest, CtaLimitGivesTheScoresOfTheWholeGrid) {
  for (const KernelCase& c : kKernelCases) {
    auto [a, b] = CaseLayers(c);
    DeviceLayer empty = Make(Spec(c), c.x, c.group, 0, 0);
    BlockScoreArgs args = ArgsFor(a, c.blocks);
    args.query_stride = args.q_heads * args.head_dim;
    args.per_kv_head = c.per_kv_head;
    const std::string name = "kv_heads " + std::to_string(c.kv_heads) + " group " +
                             std::to_string(c.group) + " d_pruned " +
                             std::to_string(args.d_pruned) +
                             (BlockScoreUsesTensorCores(args) ? " tensor cores" : " f32");
    const auto whole = Run({&a, &empty, &b}, args);
    for (size_t ctas : {size_t{1}, size_t{5}, size_t{132}, size_t{100000}}) {
      args.max_ctas = ctas;
      const auto few = Run({&a, &empty, &b}, args);
      EXPECT_EQ(few[0], whole[0]) << name << ", " << ctas << " CTAs";
      EXPECT_EQ(few[2], whole[2]) << name << ", " << ctas << " CTAs";
    }
    args.max_ctas = 0;
    const size_t auto_blocks = BlockScoreBlocksPerCta(args);
    EXPECT_TRUE(auto_blocks == 16 || auto_blocks == 32 || auto_blocks == 64 || auto_blocks == 128)
        << auto_blocks;
    for (size_t per_cta : {size_t{1}, size_t{7}, size_t{16}, size_t{64}, size_t{1024}}) {
      for (size_t ctas : {size_t{0}, size_t{5}}) {
        for (int stages : {0, 3}) {
          args.blocks_per_cta = per_cta;
          args.max_ctas = ctas;
          args.stages = stages;
          EXPECT_EQ(BlockScoreBlocksPerCta(args), per_cta);
          const auto chunked = Run({&a, &empty, &b}, args);
          const std::string what = name + ", " + std::to_string(per_cta) + " blocks per CTA, " +
                                   std::to_string(ctas) + " CTAs, stages " + std::to_string(stages);
          EXPECT_EQ(chunked[0], whole[0]) << what;
          EXPECT_EQ(chunked[2], whole[2]) << what;
        }
      }
    }
    args.blocks_per_cta = 0;
    args.max_ctas = 0;
    args.stages = 0;
    auto cpu = sparse::RunRetrieval(a.task);
    ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
    if (!c.per_kv_head) {
      EXPECT_LT(testing::RelErr(whole[0], cpu->candidate_scores), 1e-4) << name;
    }
  }
}

// head_major: the same representations laid out head-major give the same scores bit for bit, on
// both kernels, through registers and the ring, with a CTA limit and small work items, per KV
// head and per block.
TEST_F(ScoreBlocksTest, HeadMajorLayoutGivesTheSameScores) {
  for (const KernelCase& c : kKernelCases) {
    auto [a, b] = CaseLayers(c);
    BlockScoreArgs args = ArgsFor(a, c.blocks);
    args.per_kv_head = c.per_kv_head;
    const std::string name = "kv_heads " + std::to_string(c.kv_heads) + " d_pruned " +
                             std::to_string(args.d_pruned) +
                             (BlockScoreUsesTensorCores(args) ? " tensor cores" : " f32");
    const auto vector_major = Run({&a, &b}, args);
    UseHeadMajor(a);
    UseHeadMajor(b);
    args.head_major = true;
    for (size_t per_cta : {size_t{0}, size_t{7}}) {
      for (size_t ctas : {size_t{0}, size_t{5}}) {
        for (int stages : {0, 3}) {
          args.blocks_per_cta = per_cta;
          args.max_ctas = ctas;
          args.stages = stages;
          const auto head_major = Run({&a, &b}, args);
          const std::string what = name + ", " + std::to_string(per_cta) + " blocks per CTA, " +
                                   std::to_string(ctas) + " CTAs, stages " + std::to_string(stages);
          EXPECT_EQ(head_major[0], vector_major[0]) << what;
          EXPECT_EQ(head_major[1], vector_major[1]) << what;
        }
      }
    }
  }
}

TEST_F(ScoreBlocksTest, NonFiniteQueriesGiveNonFiniteScores) {
  RandomLayerSpec spec;
  spec.blocks = 20;
  DeviceLayer d = Make(spec, 2, 2, 0, 20);
  // A kept channel of query 1, head 3 (KV head 1): pruned channels are never read.
  const size_t channel = d.task.reps.channels().head(1)[0];
  d.task.queries[(1 * 4 + 3) * spec.head_dim + channel] = std::numeric_limits<float>::quiet_NaN();
  d.queries_dev = Upload(d.task.queries);
  const std::vector<float> got = Run({&d}, ArgsFor(d, 20))[0];
  // The NaN reaches every score of its (query head, query): reported, never a silent selection.
  EXPECT_TRUE(std::any_of(got.begin(), got.end(), [](float s) { return !std::isfinite(s); }));
}

TEST_F(ScoreBlocksTest, BadShapesAreInvalidArgument) {
  RandomLayerSpec spec;
  DeviceLayer d = Make(spec, 2, 2, 0, 10);
  BlockScoreArgs a = ArgsFor(d, 10);
  std::vector<BlockScoreTask> tasks{TaskFor(d)};
  DeviceBuffer tasks_dev = UploadBytes(tasks.data(), sizeof(BlockScoreTask));
  a.tasks = tasks_dev.as<BlockScoreTask>();
  a.num_tasks = 1;
  DeviceBuffer ws = Poisoned(BlockScoreWorkspaceBytes(a));
  auto expect_invalid = [&](BlockScoreArgs bad, const char* what) {
    EXPECT_EQ(ScoreBlocks(stream_, bad, ws.data()).code(), StatusCode::kInvalidArgument) << what;
  };
  BlockScoreArgs bad = a;
  bad.q_heads = 3;  // not a multiple of kv_heads 2
  expect_invalid(bad, "q_heads");
  bad = a;
  bad.d_pruned = a.head_dim + 1;
  expect_invalid(bad, "d_pruned");
  bad = a;
  bad.num_queries = 65;
  expect_invalid(bad, "num_queries");
  bad = a;
  bad.dtype = DType::kF32;
  expect_invalid(bad, "dtype");
  bad = a;
  bad.q_heads = 128;
  bad.num_queries = 64;
  bad.query_stride = 128 * 64;
  expect_invalid(bad, "shared memory");
  bad = a;
  bad.blocks_per_cta = 1025;
  expect_invalid(bad, "blocks_per_cta");
  bad = a;
  bad.stages = 2;
  expect_invalid(bad, "stages");
  EXPECT_EQ(ScoreBlocks(stream_, a, nullptr).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ScoreBlocks(stream_, a, ws.data()).ok());
}

}  // namespace
}  // namespace kvstar::cuda
