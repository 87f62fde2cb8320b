// DramStore with a sharded index: capacity, LRU eviction and pins across shards, and exact
// statistics totals from many threads.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "store/async_store.h"
#include "store/dram/dram_store.h"
#include "store/store_test_util.h"

namespace kvstar {
namespace {

using store_test::Pattern;
using store_test::TestId;

// Tracks the most bytes it ever had out at once.
class PeakAllocator final : public HostAllocator {
 public:
  void* Allocate(size_t bytes, size_t alignment) override {
    const int64_t now = live_bytes.fetch_add(static_cast<int64_t>(bytes)) + bytes;
    int64_t peak = peak_bytes.load();
    while (now > peak && !peak_bytes.compare_exchange_weak(peak, now)) {
    }
    return std::aligned_alloc(alignment, (bytes + alignment - 1) / alignment * alignment);
  }
  void Free(void* p, size_t bytes) override {
    live_bytes -= static_cast<int64_t>(bytes);
    std::free(p);
  }
  std::atomic<int64_t> live_bytes{0}, peak_bytes{0};
};

std::unique_ptr<DramStore> MakeStore(size_t capacity, int shards, int threads = 2,
                                     HostAllocator* alloc = nullptr) {
  StoreOptions o;
  o.dram_capacity_bytes = capacity;
  o.dram_shards = shards;
  o.io_threads = threads;
  o.allocator = alloc;
  auto s = DramStore::Create(o);
  KVSTAR_CHECK(s.ok(), "%s", s.status().ToString().c_str());
  return std::move(s).value();
}

Status Dump(BlockStore& store, uint64_t n, size_t bytes) {
  const auto data = Pattern(TestId(n), bytes);
  const DumpItem item{TestId(n), data.data(), data.size()};
  return store.Dump({&item, 1}).Wait();
}

Status Load(BlockStore& store, uint64_t n, size_t bytes) {
  std::vector<uint8_t> buf(bytes);
  const LoadItem item{TestId(n), buf.data(), buf.size()};
  StoreTask t = store.Load({&item, 1});
  KVSTAR_RETURN_IF_ERROR(t.Wait());
  if (buf != Pattern(TestId(n), bytes))
    return DataLoss("block %llu differs", (unsigned long long)n);
  return Status::Ok();
}

class DramShardTest : public ::testing::TestWithParam<int> {};

TEST_P(DramShardTest, CapacityIsStoreWideAndEvictionFollowsLastUse) {
  constexpr uint64_t kFit = 12;
  PeakAllocator alloc;
  auto store = MakeStore(kFit * 4096, GetParam(), 2, &alloc);
  for (uint64_t i = 0; i < kFit; ++i) ASSERT_TRUE(Dump(*store, i, 4096).ok()) << i;
  EXPECT_EQ(store->Stats().evictions, 0u);  // the whole capacity is usable, whatever the shards
  // Touch the even ids: the odd ones are now the least recently used.
  for (uint64_t i = 0; i < kFit; i += 2) ASSERT_TRUE(Load(*store, i, 4096).ok()) << i;
  for (uint64_t i = 100; i < 100 + kFit / 2; ++i) ASSERT_TRUE(Dump(*store, i, 4096).ok()) << i;
  std::vector<Hash128> ids;
  for (uint64_t i = 0; i < kFit; ++i) ids.push_back(TestId(i));
  const std::vector<bool> found = store->Lookup(ids);
  for (uint64_t i = 0; i < kFit; ++i) EXPECT_EQ(found[i], i % 2 == 0) << "id " << i;
  const StoreStats s = store->Stats();
  EXPECT_EQ(s.evictions, kFit / 2);
  EXPECT_EQ(s.entries, kFit);
  EXPECT_EQ(s.used_bytes, kFit * 4096);
  EXPECT_LE(alloc.peak_bytes.load(), static_cast<int64_t>(kFit * 4096));
  for (uint64_t i = 0; i < kFit; i += 2) EXPECT_TRUE(Load(*store, i, 4096).ok()) << i;
}

TEST_P(DramShardTest, PinnedEntriesSurviveInEveryShard) {
  auto store = MakeStore(4 * 4096, GetParam());
  const auto d = Pattern(TestId(1), 4096);
  std::vector<DramStore::Pin> pins;
  for (uint64_t i = 0; i < 3; ++i) {
    const auto di = Pattern(TestId(i), 4096);
    auto pin = store->Put({TestId(i), di.data(), di.size()});
    ASSERT_TRUE(pin.ok());
    pins.push_back(std::move(pin).value());
  }
  // One slot is left: a stream of other ids cycles through it, never through a pinned one.
  for (uint64_t i = 10; i < 30; ++i) ASSERT_TRUE(Dump(*store, i, 4096).ok()) << i;
  for (uint64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(0, std::memcmp(pins[i].data(), Pattern(TestId(i), 4096).data(), 4096)) << i;
    EXPECT_TRUE(Load(*store, i, 4096).ok()) << i;
  }
  EXPECT_TRUE(Load(*store, 29, 4096).ok());
  auto fourth = store->Put({TestId(50), d.data(), d.size()});
  ASSERT_TRUE(fourth.ok());
  // Everything is pinned now.
  EXPECT_EQ(Dump(*store, 51, 4096).code(), StatusCode::kResourceExhausted);
  fourth->Release();
  EXPECT_TRUE(Dump(*store, 51, 4096).ok());
  EXPECT_LE(store->Stats().used_bytes, 4u * 4096u);
}

TEST_P(DramShardTest, MixedSizesReleaseSpareMemoryAcrossShards) {
  PeakAllocator alloc;
  constexpr size_t kCapacity = 64 * 1024;
  {
    auto store = MakeStore(kCapacity, GetParam(), 2, &alloc);
    for (uint64_t i = 0; i < 16; ++i) ASSERT_TRUE(Dump(*store, i, 4096).ok());
    std::vector<Hash128> ids;
    for (uint64_t i = 0; i < 16; ++i) ids.push_back(TestId(i));
    ASSERT_TRUE(store->Remove(ids).ok());  // every buffer is spare now, spread over the shards
    EXPECT_EQ(store->Stats().used_bytes, 0u);
    // Another size: the spare 4 KiB buffers are handed back, whichever shard holds them.
    for (uint64_t i = 100; i < 104; ++i) ASSERT_TRUE(Dump(*store, i, 16384).ok()) << i;
    EXPECT_LE(alloc.peak_bytes.load(), static_cast<int64_t>(kCapacity));
    EXPECT_EQ(store->Stats().used_bytes, 4u * 16384u);
    for (uint64_t i = 100; i < 104; ++i) EXPECT_TRUE(Load(*store, i, 16384).ok()) << i;
  }
  EXPECT_EQ(alloc.live_bytes.load(), 0);
}

TEST_P(DramShardTest, ConcurrentDumpsNeverExceedTheCapacity) {
  PeakAllocator alloc;
  constexpr size_t kCapacity = 256 * 1024;
  {
    auto store = MakeStore(kCapacity, GetParam(), 4, &alloc);
    constexpr int kThreads = 6, kRounds = 150;
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int r = 0; r < kRounds; ++r) {
          const uint64_t id = static_cast<uint64_t>(t * 1000 + r % 40);
          const size_t bytes = 4096 * (1 + (id % 4));
          const Status d = Dump(*store, id, bytes);
          if (!d.ok() && d.code() != StatusCode::kResourceExhausted) ++bad;
          const Status l = Load(*store, id, bytes);
          // Evicted by another thread is fine; wrong bytes or other errors are not.
          if (!l.ok() && l.code() != StatusCode::kNotFound) ++bad;
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(bad.load(), 0);
    EXPECT_LE(alloc.peak_bytes.load(), static_cast<int64_t>(kCapacity));
    EXPECT_LE(store->Stats().used_bytes, kCapacity);
    EXPECT_GT(store->Stats().evictions, 0u);
  }
  EXPECT_EQ(alloc.live_bytes.load(), 0);
}

TEST_P(DramShardTest, StatsTotalsAreExactUnderConcurrency) {
  auto store = MakeStore(64 << 20, GetParam(), 4);
  constexpr int kThreads = 8, kIds = 50;
  std::vector<std::thread> threads;
  std::atomic<int> failed{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kIds; ++i) {
        const uint64_t id = static_cast<uint64_t>(t * kIds + i);
        if (!Dump(*store, id, 1000 + static_cast<size_t>(t)).ok()) ++failed;
      }
      // Two tasks of many items: items of one task run on several I/O threads.
      std::vector<std::vector<uint8_t>> bufs(kIds, std::vector<uint8_t>(2000));
      std::vector<LoadItem> items;
      for (int i = 0; i < kIds; ++i) {
        items.push_back({TestId(static_cast<uint64_t>(t * kIds + i)), bufs[i].data(), 2000});
      }
      items.push_back({TestId(999999), bufs[0].data(), 2000});  // a miss
      StoreTask task = store->Load(items);
      if (task.Wait().code() != StatusCode::kNotFound) ++failed;
      const std::vector<Hash128> probe = {TestId(static_cast<uint64_t>(t * kIds)), TestId(888888)};
      if (store->Lookup(probe) != std::vector<bool>{true, false}) ++failed;
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(failed.load(), 0);
  const StoreStats s = store->Stats();
  const uint64_t n = kThreads * kIds;
  EXPECT_EQ(s.dump_blocks, n);
  uint64_t dump_bytes = 0;
  for (int t = 0; t < kThreads; ++t) dump_bytes += kIds * (1000 + static_cast<uint64_t>(t));
  EXPECT_EQ(s.dump_bytes, dump_bytes);
  EXPECT_EQ(s.load_blocks, n);
  EXPECT_EQ(s.load_bytes, dump_bytes);
  EXPECT_EQ(s.hits, n + kThreads);     // every load + one Lookup hit per thread
  EXPECT_EQ(s.misses, 2u * kThreads);  // one load miss + one Lookup miss per thread
  EXPECT_EQ(s.failures, 0u);
  EXPECT_EQ(s.entries, n);
  EXPECT_EQ(s.dump_latency.count, n);
  EXPECT_EQ(s.load_latency.count, n + kThreads);  // misses are timed too
  uint64_t in_buckets = 0;
  for (uint64_t b : s.load_latency.buckets) in_buckets += b;
  EXPECT_EQ(in_buckets, s.load_latency.count);
  EXPECT_GE(s.load_latency.max_us, s.load_latency.MeanUs());
}

INSTANTIATE_TEST_SUITE_P(Shards, DramShardTest, ::testing::Values(1, 4, 16, 64),
                         [](const ::testing::TestParamInfo<int>& p) {
                           return "shards" + std::to_string(p.param);
                         });

TEST(DramShardOptionsTest, ShardCountIsValidatedAndDescribed) {
  StoreOptions o;
  o.dram_shards = 0;
  EXPECT_EQ(DramStore::Create(o).status().code(), StatusCode::kInvalidArgument);
  o.dram_shards = 5000;
  EXPECT_EQ(DramStore::Create(o).status().code(), StatusCode::kInvalidArgument);
  o.dram_shards = 6;  // rounded up to a power of two
  auto s = DramStore::Create(o);
  ASSERT_TRUE(s.ok());
  EXPECT_NE((*s)->Describe().find("8 shards"), std::string::npos) << (*s)->Describe();
}

// More threads than stripes: every count still lands exactly once.
TEST(StatsCollectorTest, StripedCountersSumExactly) {
  store_internal::StatsCollector stats;
  constexpr int kThreads = store_internal::StatsCollector::kStripes + 8, kAdds = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&stats, t] {
      for (int i = 0; i < kAdds; ++i) {
        stats.AddLoad(10, 3.0 + t);
        stats.AddDump(1, 1.0);
        stats.AddHits(2);
        stats.AddEvictions(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  StoreStats s;
  s.load_blocks = 12345;  // Fill overwrites, never adds to what is there
  stats.Fill(&s);
  const uint64_t n = uint64_t{kThreads} * kAdds;
  EXPECT_EQ(s.load_blocks, n);
  EXPECT_EQ(s.load_bytes, 10 * n);
  EXPECT_EQ(s.dump_blocks, n);
  EXPECT_EQ(s.hits, 2 * n);
  EXPECT_EQ(s.evictions, n);
  EXPECT_EQ(s.load_latency.count, n);
  EXPECT_EQ(s.dump_latency.count, n);
  EXPECT_DOUBLE_EQ(s.load_latency.max_us, 3.0 + kThreads - 1);
  EXPECT_NEAR(s.dump_latency.sum_us, static_cast<double>(n), 1e-6 * static_cast<double>(n));
}

}  // namespace
}  // namespace kvstar
