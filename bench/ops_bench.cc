// CPU kernel benchmarks. Every benchmark measures the matching machine limit at its own thread
// count right before it runs (so that both see the same machine state, which matters on a shared
// machine), and reports its rate, the limit and the fraction:
//   frac_bw  = bytes read / s  /  read bandwidth (MeasureMemoryReadBandwidth, 512 MiB)  (decode)
//   frac_fma = FLOP / s        /  f32 FMA ceiling (MeasureF32FmaRate)                   (prefill)
// The limits measured once at start-up are printed and stored in the JSON context as well.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/half.h"
#include "base/kv_layout.h"
#include "base/tensor_view.h"
#include "base/thread_pool.h"
#include "ops/cpu/machine_limits.h"
#include "ops/cpu/ops.h"

namespace kvstar::ops {
namespace {

constexpr size_t kLimitBytes = size_t{512} << 20;

std::map<int, double> g_bandwidth_gbs;  // threads -> GB/s
std::map<int, double> g_fma_gflops;     // threads -> GFLOP/s

ThreadPool& Pool(int threads) {
  static std::map<int, std::unique_ptr<ThreadPool>> pools;
  auto& p = pools[threads];
  if (!p) p = std::make_unique<ThreadPool>(threads);
  return *p;
}

// [rows][cols] random weights in dtype.
AlignedBuffer<uint16_t> RandomHalf(size_t count, DType dtype, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  AlignedBuffer<uint16_t> b(count);
  for (size_t i = 0; i < count; ++i) {
    b[i] = dtype == DType::kBF16 ? F32ToBF16(dist(rng)).bits : F32ToF16(dist(rng)).bits;
  }
  return b;
}
AlignedBuffer<float> RandomF32(size_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  AlignedBuffer<float> b(count);
  for (size_t i = 0; i < count; ++i) b[i] = dist(rng);
  return b;
}

struct Weights {
  AlignedBuffer<float> f32;
  AlignedBuffer<uint16_t> half;
  TensorView view;
};
Weights MakeWeights(DType dtype, size_t rows, size_t cols) {
  Weights w;
  if (dtype == DType::kF32) {
    w.f32 = RandomF32(rows * cols, 1);
    w.view = TensorView{w.f32.data(), dtype, rows, cols};
  } else {
    w.half = RandomHalf(rows * cols, dtype, 1);
    w.view = TensorView{w.half.data(), dtype, rows, cols};
  }
  return w;
}

DType DTypeArg(int64_t v) { return static_cast<DType>(v); }

// Args: dtype, rows, cols, threads.
void BM_MatVec(benchmark::State& state) {
  const DType dtype = DTypeArg(state.range(0));
  const size_t rows = state.range(1), cols = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  Weights w = MakeWeights(dtype, rows, cols);
  AlignedBuffer<float> x = RandomF32(cols, 2);
  AlignedBuffer<float> y(rows);
  ThreadPool& pool = Pool(threads);
  // CPU-time variants (last arg 1) compare with BM_ReadLimit in CPU time instead.
  const bool cpu_time = state.range(4) != 0;
  const double limit = cpu_time ? 0.0 : MeasureMemoryReadBandwidth(pool, kLimitBytes);
  for (auto _ : state) {
    MatVec(pool, w.view, x.data(), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double bytes = static_cast<double>(w.view.bytes());
  state.SetBytesProcessed(static_cast<int64_t>(bytes) * state.iterations());
  state.counters["GB/s"] =
      benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  if (!cpu_time) {
    state.counters["limit_GB/s"] = limit;
    state.counters["frac_bw"] =
        benchmark::Counter(bytes / 1e9 / limit, benchmark::Counter::kIsIterationInvariantRate);
  }
  state.SetLabel(std::string(DTypeName(dtype)) + " t" + std::to_string(threads));
}

// Args: dtype, rows, cols, n, threads.
void BM_MatMul(benchmark::State& state) {
  const DType dtype = DTypeArg(state.range(0));
  const size_t rows = state.range(1), cols = state.range(2), n = state.range(3);
  const int threads = static_cast<int>(state.range(4));
  Weights w = MakeWeights(dtype, rows, cols);
  AlignedBuffer<float> x = RandomF32(n * cols, 2);
  AlignedBuffer<float> y(n * rows);
  ThreadPool& pool = Pool(threads);
  // CPU-time variants (last arg 1) compare with BM_FmaLimit in CPU time instead.
  const bool cpu_time = state.range(5) != 0;
  const double limit = cpu_time ? 0.0 : MeasureF32FmaRate(pool);
  for (auto _ : state) {
    MatMul(pool, w.view, x.data(), n, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * static_cast<double>(rows) * cols * n;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  if (!cpu_time) {
    state.counters["limit_GFLOP/s"] = limit;
    state.counters["frac_fma"] =
        benchmark::Counter(flops / 1e9 / limit, benchmark::Counter::kIsIterationInvariantRate);
  }
  state.SetLabel(std::string(DTypeName(dtype)) + " t" + std::to_string(threads));
}

// Decode attention: one query, 32 query heads over 8 KV heads, head_dim 128, 128-token blocks.
// Args: kv dtype, num_tokens, threads.
void BM_AttentionDecode(benchmark::State& state) {
  const DType dtype = DTypeArg(state.range(0));
  const size_t num_tokens = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  const KvGeometry geom{.kv_heads = 8, .head_dim = 128, .block_tokens = 128, .dtype = dtype};
  const size_t q_heads = 32;
  const size_t blocks = (num_tokens + geom.block_tokens - 1) / geom.block_tokens;
  AlignedBuffer<char> storage(blocks * geom.block_bytes());
  std::vector<void*> table(blocks);
  for (size_t b = 0; b < blocks; ++b) table[b] = storage.data() + b * geom.block_bytes();
  // Fill through WriteKv in 1024-token pieces.
  const size_t kv_dim = geom.kv_heads * geom.head_dim;
  AlignedBuffer<float> kv = RandomF32(1024 * kv_dim, 3);
  for (size_t t = 0; t < num_tokens; t += 1024) {
    const size_t len = std::min<size_t>(1024, num_tokens - t);
    WriteKv(geom, table.data(), t, len, kv.data(), kv.data());
  }
  AlignedBuffer<float> q = RandomF32(q_heads * geom.head_dim, 4);
  AlignedBuffer<float> out(q_heads * geom.head_dim);
  const int64_t q_last = static_cast<int64_t>(num_tokens) - 1;
  ThreadPool& pool = Pool(threads);
  // CPU-time variants (last arg 1) compare with BM_ReadLimit in CPU time instead.
  const bool cpu_time = state.range(3) != 0;
  const double limit = cpu_time ? 0.0 : MeasureMemoryReadBandwidth(pool, kLimitBytes);
  for (auto _ : state) {
    AttentionOverBlocks(pool, geom, q_heads, q.data(), 1, &q_last, table.data(), num_tokens,
                        1.0f / std::sqrt(128.0f), out.data());
    benchmark::DoNotOptimize(out.data());
  }
  const double bytes = static_cast<double>(num_tokens) * geom.bytes_per_token();
  state.SetBytesProcessed(static_cast<int64_t>(bytes) * state.iterations());
  state.counters["GB/s"] =
      benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  if (!cpu_time) {
    state.counters["limit_GB/s"] = limit;
    state.counters["frac_bw"] =
        benchmark::Counter(bytes / 1e9 / limit, benchmark::Counter::kIsIterationInvariantRate);
  }
  state.SetLabel(std::string(DTypeName(dtype)) + " t" + std::to_string(threads));
}

// The limits as benchmarks, so that they can also be timed in CPU time (see the registration).
// Args: threads.
void BM_ReadLimit(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  ThreadPool& pool = Pool(threads);
  AlignedBuffer<float> buffer(size_t{1} << 28);  // 1 GiB
  for (size_t i = 0; i < buffer.size(); ++i) buffer[i] = static_cast<float>(i & 255);
  for (auto _ : state) {
    benchmark::DoNotOptimize(ReadAllFloats(pool, buffer.data(), buffer.size()));
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(buffer.bytes()) / 1e9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// Args: threads.
void BM_FmaLimit(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  ThreadPool& pool = Pool(threads);
  constexpr size_t kIterations = 2'000'000;
  // MeasureF32FmaRate: 3 repetitions x parallelism() parts x 16 chains of vector FMAs.
  const double flops = 3.0 * pool.parallelism() * kIterations * 16 * 2 * SimdLanesF32();
  for (auto _ : state) benchmark::DoNotOptimize(MeasureF32FmaRate(pool, kIterations));
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

constexpr int64_t kF32 = static_cast<int64_t>(DType::kF32);
constexpr int64_t kBF16 = static_cast<int64_t>(DType::kBF16);
constexpr int64_t kF16 = static_cast<int64_t>(DType::kF16);

// Wall-clock variants (the numbers to quote on a quiet machine) and, for one thread, CPU-time
// variants: on a shared, loaded machine the CPU time of the one working thread still says how
// fast the kernel runs while it has a core (memory bandwidth is still shared).
void MatVecArgs(benchmark::internal::Benchmark* b, bool wall) {
  b->ArgNames({"dtype", "rows", "cols", "threads", "cpu"})->Unit(benchmark::kMillisecond);
  for (int64_t dtype : {kBF16, kF16, kF32}) {
    for (int64_t t : {1, 2}) {
      if (wall || t == 1) b->Args({dtype, 4096, 4096, t, wall ? 0 : 1});
    }
  }
  // 112 MiB of bf16: larger than any cache (4096 x 4096 bf16 = 32 MiB may sit in a large L3).
  for (int64_t t : {1, 2}) {
    if (wall || t == 1) b->Args({kBF16, 14336, 4096, t, wall ? 0 : 1});
  }
}
void MatMulArgs(benchmark::internal::Benchmark* b, bool wall) {
  b->ArgNames({"dtype", "rows", "cols", "n", "threads", "cpu"})->Unit(benchmark::kMillisecond);
  for (int64_t t : {1, 2}) {
    if (!wall && t == 2) continue;
    b->Args({kF32, 2048, 2048, 2048, t, wall ? 0 : 1});
    b->Args({kBF16, 4096, 4096, 512, t, wall ? 0 : 1});
    b->Args({kBF16, 4096, 4096, 64, t, wall ? 0 : 1});
    b->Args({kBF16, 4096, 4096, 4, t, wall ? 0 : 1});
  }
}
void AttentionArgs(benchmark::internal::Benchmark* b, bool wall) {
  b->ArgNames({"kv_dtype", "tokens", "threads", "cpu"})->Unit(benchmark::kMillisecond);
  for (int64_t t : {1, 2}) {
    if (!wall && t == 2) continue;
    b->Args({kBF16, 4096, t, wall ? 0 : 1});
    b->Args({kBF16, 32768, t, wall ? 0 : 1});
    b->Args({kF32, 32768, t, wall ? 0 : 1});
  }
}

BENCHMARK(BM_ReadLimit)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(BM_FmaLimit)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(BM_MatVec)->Apply([](auto* b) { MatVecArgs(b, true); }) -> UseRealTime();
BENCHMARK(BM_MatMul)->Apply([](auto* b) { MatMulArgs(b, true); }) -> UseRealTime();
BENCHMARK(BM_AttentionDecode)->Apply([](auto* b) { AttentionArgs(b, true); }) -> UseRealTime();

BENCHMARK(BM_ReadLimit)->ArgName("threads")->Arg(1);
BENCHMARK(BM_FmaLimit)->ArgName("threads")->Arg(1);
BENCHMARK(BM_MatVec)->Apply([](auto* b) { MatVecArgs(b, false); });
BENCHMARK(BM_MatMul)->Apply([](auto* b) { MatMulArgs(b, false); });
BENCHMARK(BM_AttentionDecode)->Apply([](auto* b) { AttentionArgs(b, false); });

void MeasureLimits() {
  for (int threads : {1, 2}) {
    ThreadPool& pool = Pool(threads);
    g_bandwidth_gbs[threads] = MeasureMemoryReadBandwidth(pool);
    g_fma_gflops[threads] = MeasureF32FmaRate(pool);
    const std::string t = std::to_string(threads);
    benchmark::AddCustomContext("read_bw_gbs_t" + t, std::to_string(g_bandwidth_gbs[threads]));
    benchmark::AddCustomContext("fma_gflops_t" + t, std::to_string(g_fma_gflops[threads]));
    std::fprintf(stderr, "limits, %d thread(s): read bandwidth %.1f GB/s, f32 FMA %.1f GFLOP/s\n",
                 threads, g_bandwidth_gbs[threads], g_fma_gflops[threads]);
  }
  const double mm = MeasureF32MatMulRate(Pool(2));
  benchmark::AddCustomContext("f32_matmul_gflops_t2", std::to_string(mm));
  benchmark::AddCustomContext("simd_target", DescribeSimdTarget());
  std::fprintf(stderr, "f32 MatMul 2048^3, 2 threads: %.1f GFLOP/s; SIMD target %s\n", mm,
               DescribeSimdTarget().c_str());
}

}  // namespace
}  // namespace kvstar::ops

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  kvstar::ops::MeasureLimits();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
