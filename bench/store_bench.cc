// Micro-benchmarks of the block store's CPU-side costs: block id hashing, the per-task overhead
// of the async API, and DramStore loads against plain memcpy of the same bytes.
#include <benchmark/benchmark.h>

#include <cstring>
#include <numeric>
#include <vector>

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

}  // namespace
}  // namespace kvstar

BENCHMARK_MAIN();
