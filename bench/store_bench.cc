// Micro-benchmarks of the block store's CPU-side costs: block id hashing, the per-task overhead
// of the async API, and DramStore loads against plain memcpy of the same bytes.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <numeric>
#include <thread>
#include <vector>

#include "base/thread_pool.h"
#include "store/block_id.h"
#include "store/block_store.h"
#include "store/file/block_format.h"

namespace kvstar {
namespace {

// Ids for a 128k-token prompt, 128-token blocks, one layer.
void BM_BlockIds(benchmark::State& state) {
  std::vector<int32_t> tokens(static_cast<size_t>(state.range(0)));
  std::iota(tokens.begin(), tokens.end(), 0);
  const Hash128 fp{1, 2};
  for (auto _ : state) benchmark::DoNotOptimize(BlockIds(fp, 3, tokens, 128));
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4);
}
BENCHMARK(BM_BlockIds)->Arg(128 * 1024);

void BM_PayloadChecksum(benchmark::State& state) {
  std::vector<char> data(static_cast<size_t>(state.range(0)), 1);
  for (auto _ : state) {
    benchmark::DoNotOptimize(file_format::PayloadChecksum(data.data(), data.size()));
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_PayloadChecksum)->Arg(512 << 10);

void BM_Memcpy(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_Memcpy)->Arg(64 << 10)->Arg(512 << 10)->Arg(4 << 20);

// One Load task of one block, waited for: memcpy plus the task round trip to an I/O thread.
void BM_DramStoreLoad(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  StoreOptions o;
  o.io_threads = 1;
  auto store = OpenStore("dram", o);
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  const DumpItem d{Hash128{1, 1}, src.data(), bytes};
  if (!(*store)->Dump({&d, 1}).Wait().ok()) state.SkipWithError("dump failed");
  const LoadItem l{Hash128{1, 1}, dst.data(), bytes};
  for (auto _ : state) {
    if (!(*store)->Load({&l, 1}).Wait().ok()) state.SkipWithError("load failed");
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_DramStoreLoad)->Arg(64 << 10)->Arg(512 << 10)->Arg(4 << 20)->UseRealTime();

// Many small loads in flight, as `kvstar store-bench` runs them: 64 MiB of entries loaded as
// one-block tasks with `qd` tasks outstanding, on min(qd, cores) I/O threads. Compare with
// BM_ParallelMemcpy of the same block size and thread count.
void BM_DramStoreLoadStream(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  const int qd = static_cast<int>(state.range(1));
  const size_t n = (size_t{64} << 20) / bytes;
  StoreOptions o;
  o.io_threads = std::min(qd, ThreadPool::HardwareThreads());
  o.dram_capacity_bytes = n * bytes + (size_t{16} << 20);
  auto store = OpenStore("dram", o);
  std::vector<char> src(n * bytes, 1), dst(n * bytes, 0);
  std::vector<Hash128> ids(n);
  for (size_t i = 0; i < n; ++i) {
    ids[i] = Hash128{i + 1, 7};
    const DumpItem d{ids[i], src.data() + i * bytes, bytes};
    if (!(*store)->Dump({&d, 1}).Wait().ok()) state.SkipWithError("dump failed");
  }
  std::deque<StoreTask> inflight;
  for (auto _ : state) {
    for (size_t i = 0; i < n; ++i) {
      if (inflight.size() >= static_cast<size_t>(qd)) {
        if (!inflight.front().Wait().ok()) state.SkipWithError("load failed");
        inflight.pop_front();
      }
      const LoadItem l{ids[i], dst.data() + i * bytes, bytes};
      inflight.push_back((*store)->Load({&l, 1}));
    }
    while (!inflight.empty()) {
      if (!inflight.front().Wait().ok()) state.SkipWithError("load failed");
      inflight.pop_front();
    }
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n * bytes));
}
BENCHMARK(BM_DramStoreLoadStream)
    ->ArgsProduct({{64 << 10, 256 << 10, 1 << 20}, {1, 2, 16}})
    ->UseRealTime();

// The raw baseline of BM_DramStoreLoadStream: `threads` threads memcpy 64 MiB in blocks claimed
// in order.
void BM_ParallelMemcpy(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  const int threads = std::min(static_cast<int>(state.range(1)), ThreadPool::HardwareThreads());
  const size_t n = (size_t{64} << 20) / bytes;
  std::vector<char> src(n * bytes, 1), dst(n * bytes, 0);
  for (auto _ : state) {
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i; (i = next.fetch_add(1)) < n;) {
        std::memcpy(dst.data() + i * bytes, src.data() + i * bytes, bytes);
      }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n * bytes));
}
BENCHMARK(BM_ParallelMemcpy)
    ->ArgsProduct({{64 << 10, 256 << 10, 1 << 20}, {1, 2, 16}})
    ->UseRealTime();

// The per-item CPU cost of a load without the thread hand-off: a store with no I/O threads runs
// Load inline on the caller, so several benchmark threads call it at once on 4 KiB entries (the
// copy is small, so the index lock, task state and statistics dominate). Argument: index shards
// (1 = one lock for the whole store).
void BM_DramStoreInlineLoad(benchmark::State& state) {
  constexpr size_t kBytes = 4096, kIds = 4096;
  static std::unique_ptr<BlockStore> store;
  static std::vector<Hash128> ids;
  if (state.thread_index() == 0) {
    StoreOptions o;
    o.io_threads = 0;
    o.dram_shards = static_cast<int>(state.range(0));
    store = std::move(OpenStore("dram", o)).value();
    ids.resize(kIds);
    std::vector<char> src(kBytes, 1);
    for (size_t i = 0; i < kIds; ++i) {
      ids[i] = Hash128{i + 1, 9};
      const DumpItem d{ids[i], src.data(), kBytes};
      if (!store->Dump({&d, 1}).Wait().ok()) state.SkipWithError("dump failed");
    }
  }
  std::vector<char> dst(kBytes);
  size_t i = static_cast<size_t>(state.thread_index()) * 997;
  for (auto _ : state) {
    const LoadItem l{ids[i++ % kIds], dst.data(), kBytes};
    if (!store->Load({&l, 1}).Wait().ok()) state.SkipWithError("load failed");
  }
  state.SetItemsProcessed(state.iterations());
  if (state.thread_index() == 0) store.reset();
}
BENCHMARK(BM_DramStoreInlineLoad)->Arg(1)->Arg(16)->ThreadRange(1, 16)->UseRealTime();

// Stats() while loads run: the statistics are merged from per-thread stripes.
void BM_DramStoreStats(benchmark::State& state) {
  StoreOptions o;
  o.io_threads = 1;
  auto store = OpenStore("dram", o);
  for (auto _ : state) benchmark::DoNotOptimize((*store)->Stats());
}
BENCHMARK(BM_DramStoreStats);

}  // namespace
}  // namespace kvstar

BENCHMARK_MAIN();
