// KVstar retrieval micro-benchmarks: the per-block scoring kernel alone and whole retrieval tasks
// (scoring, soft vote, top-k) through a Retriever.
//   build/release/bench/sparse_retrieval_bench --benchmark_filter=Task
#include <benchmark/benchmark.h>

#include <memory>
#include <random>
#include <vector>

#include "base/aligned_buffer.h"
#include "sparse/block_representations.h"
#include "sparse/retriever.h"
#include "sparse/score_kernels.h"

namespace kvstar::sparse {
namespace {

constexpr size_t kHeadDim = 128;
constexpr size_t kBlockTokens = 128;
constexpr size_t kMerge = 2;
constexpr size_t kQueries = 8;

std::unique_ptr<BlockRepresentations> MakeReps(size_t blocks, size_t kv_heads, size_t d) {
  const KvGeometry geo{.kv_heads = kv_heads,
                       .head_dim = kHeadDim,
                       .block_tokens = kBlockTokens,
                       .dtype = DType::kBF16};
  ChannelIndex idx{.kv_heads = kv_heads, .head_dim = kHeadDim, .d_pruned = d};
  for (size_t h = 0; h < kv_heads; ++h) {
    for (size_t c = 0; c < d; ++c) idx.channels.push_back(uint16_t(c * kHeadDim / d));
  }
  auto reps = BlockRepresentations::Create(geo, idx, {.merge = kMerge});
  std::mt19937_64 rng(1);
  std::normal_distribution<float> n;
  std::vector<std::vector<bf16_t>> src(16, std::vector<bf16_t>(geo.elements_per_block()));
  for (auto& s : src) {
    for (auto& v : s) v = F32ToBF16(n(rng));
  }
  for (size_t b = 0; b < blocks; ++b) {
    if (!(*reps)->Append(src[b % src.size()].data(), geo).ok()) std::abort();
  }
  return std::move(reps).value();
}

// One block, all KV heads: args = {kv_heads, q_heads, d_pruned}.
void BM_BlockLse(benchmark::State& state) {
  const size_t kvh = size_t(state.range(0)), qh = size_t(state.range(1));
  const size_t d = size_t(state.range(2));
  auto reps = MakeReps(1, kvh, d);
  const auto view = reps->View();
  const size_t lanes = kernels::F32Lanes();
  const size_t q = kQueries * qh / kvh;
  const size_t qpad = (q + lanes - 1) / lanes * lanes;
  const size_t vectors = kBlockTokens / kMerge;
  AlignedBuffer<float> qt = AlignedBuffer<float>::Zeros(kvh * d * qpad);
  for (size_t i = 0; i < qt.size(); ++i) qt[i] = 0.01f * float(i % 97);
  AlignedBuffer<float> rep(vectors * d), logits(vectors * qpad), lse(kvh * qpad);
  kernels::BlockLseArgs a{.rep = view.block(0),
                          .dtype = view.dtype(),
                          .vectors = vectors,
                          .kv_heads = kvh,
                          .d = d,
                          .qt = qt.data(),
                          .qpad = qpad,
                          .rep_scratch = rep.data(),
                          .logit_scratch = logits.data(),
                          .lse = lse.data()};
  for (auto _ : state) {
    kernels::BlockLse(a);
    benchmark::DoNotOptimize(lse.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(double(2 * vectors * qh * kQueries * d) * double(state.iterations()) / 1e9,
                         benchmark::Counter::kIsRate);
  state.SetLabel(kernels::CurrentTargetName());
}
BENCHMARK(BM_BlockLse)->Args({4, 20, 32})->Args({8, 32, 32})->Args({8, 40, 32})->Args({4, 20, 19});

// Whole task: args = {blocks, q_heads, kv_heads, threads}; d_pruned 32, merge 2, x = 8.
void BM_Task(benchmark::State& state) {
  const size_t blocks = size_t(state.range(0)), qh = size_t(state.range(1));
  const size_t kvh = size_t(state.range(2));
  auto reps = MakeReps(blocks, kvh, 32);
  RetrievalTask task;
  task.reps = reps->View();
  task.num_queries = kQueries;
  task.q_heads = qh;
  std::mt19937_64 rng(2);
  std::normal_distribution<float> n;
  task.queries.resize(kQueries * qh * kHeadDim);
  for (float& v : task.queries) v = n(rng);
  for (size_t b = 0; b < blocks; ++b) task.candidates.push_back(uint32_t(b));
  Retriever retriever({.num_threads = int(state.range(3))});
  for (auto _ : state) {
    if (!retriever.Submit(task).Wait().ok()) state.SkipWithError("retrieval failed");
  }
  const double vectors = double(blocks * (kBlockTokens / kMerge) * kvh);
  state.counters["vectors/s"] =
      benchmark::Counter(vectors * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["rep_bytes/s"] =
      benchmark::Counter(double(blocks * reps->block_bytes()) * double(state.iterations()),
                         benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Task)
    ->ArgsProduct({{256, 1024, 4096, 8192}, {20, 32, 40}, {4, 8}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// Thread scaling on many-core hosts (run with --benchmark_filter=BM_TaskScaling): the issue's
// 250-block single-core case, and 1024 blocks = one layer of a 128K-token context at 128 tokens a
// block with Llama-3-8B's heads (32 query / 8 KV).
BENCHMARK(BM_Task)
    ->Name("BM_TaskScaling")
    ->ArgsProduct({{250}, {20}, {4}, {1, 2, 4, 8, 16}})
    ->ArgsProduct({{1024}, {32}, {8}, {1, 2, 4, 8, 16}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The host's share of GPU scoring: one (layer, sequence)'s top k from its device scores
// (SelectionFromScores, as the CUDA engine's harvest calls it). Args: candidates, scores per
// block (1; the KV heads with select_per_kv_head). 1020 candidates = a 128K-token context at 128
// tokens a block; a group of the Llama-3-8B shape at 8 sequences is 256 of these.
void BM_SelectionFromScores(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const size_t per = static_cast<size_t>(state.range(1));
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> scores(n * per);
  for (float& v : scores) v = u(rng);
  std::vector<uint32_t> cands(n);
  for (size_t j = 0; j < n; ++j) cands[j] = static_cast<uint32_t>(4 + j);
  const size_t k = SelectionSize(n, 0.25);
  for (auto _ : state) {
    RetrievalResult r = SelectionFromScores(scores, per, cands, k, per > 1);
    benchmark::DoNotOptimize(r.blocks.data());
  }
}
BENCHMARK(BM_SelectionFromScores)->Args({1020, 1})->Args({1020, 8})->Args({252, 1});

}  // namespace
}  // namespace kvstar::sparse

BENCHMARK_MAIN();
