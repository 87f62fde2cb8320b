// Concurrency: many threads dumping and loading overlapping ids on every backend; cancelling a
// task in flight; submitting and polling while I/O threads are stuck.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "store/fault_hooks.h"
#include "store/file/file_store.h"
#include "store/store_test_util.h"

namespace kvstar {
namespace {

using store_test::FaultyIoHooks;
using store_test::Pattern;
using store_test::TempDir;
using store_test::TestId;

class StoreConcurrencyTest : public ::testing::TestWithParam<std::string> {};

TEST_P(StoreConcurrencyTest, OverlappingDumpsAndLoadsStayConsistent) {
  TempDir dir;
  StoreOptions o;
  o.io_threads = 4;
  o.dram_capacity_bytes = 24 * 16384;  // small: evictions race with loads
  // "dram": every task through the I/O threads; "dram-inline": these small tasks copy on the
  // submitting threads.
  o.dram_inline_bytes = GetParam() == "dram-inline" ? size_t{256} << 10 : 0;
  o.file_capacity_bytes = GetParam() == "file" ? 40 * (16384 + 4096) : 0;
  const bool dram = GetParam() == "dram" || GetParam() == "dram-inline";
  const std::string spec = dram ? "dram" : GetParam() + ":" + dir.path();
  auto opened = OpenStore(spec, o);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  BlockStore& store = **opened;

  constexpr int kThreads = 6, kRounds = 60, kIds = 48;
  std::atomic<int> bad{0}, loaded{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int r = 0; r < kRounds; ++r) {
        std::vector<uint64_t> picks(4);
        for (auto& p : picks) p = rng() % kIds;
        const size_t bytes = 1000 + (picks[0] % 5) * 3000;
        std::vector<std::vector<uint8_t>> data;
        std::vector<DumpItem> dumps;
        for (uint64_t p : picks) data.push_back(Pattern(TestId(p), 1000 + (p % 5) * 3000));
        for (size_t i = 0; i < picks.size(); ++i) {
          dumps.push_back({TestId(picks[i]), data[i].data(), data[i].size()});
        }
        StoreTask d = store.Dump(dumps);
        std::vector<std::vector<uint8_t>> bufs(4, std::vector<uint8_t>(16384));
        std::vector<LoadItem> loads;
        std::vector<uint64_t> lp(4);
        for (size_t i = 0; i < 4; ++i) {
          lp[i] = rng() % kIds;
          loads.push_back({TestId(lp[i]), bufs[i].data(), bufs[i].size()});
        }
        StoreTask l = store.Load(loads);
        if (r % 7 == 0) l.Cancel();
        (void)bytes;
        if (!d.Wait().ok() && dram) {
          // DRAM may be momentarily full of pinned entries; anything else is a bug.
          for (size_t i = 0; i < dumps.size(); ++i) {
            const auto c = d.item_status(i).code();
            if (!d.item_status(i).ok() && c != StatusCode::kResourceExhausted) ++bad;
          }
        }
        l.Wait().IgnoreError();  // per-item results checked below
        for (size_t i = 0; i < 4; ++i) {
          const Status& s = l.item_status(i);
          if (s.ok()) {
            const size_t n = 1000 + (lp[i] % 5) * 3000;
            if (l.item_bytes(i) != n ||
                std::memcmp(bufs[i].data(), Pattern(TestId(lp[i]), n).data(), n) != 0) {
              ++bad;
            }
            ++loaded;
          } else if (s.code() != StatusCode::kNotFound && s.code() != StatusCode::kCancelled) {
            ++bad;
            ADD_FAILURE() << s.ToString();
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(loaded.load(), 0);
  ASSERT_TRUE(store.Flush().ok());
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreConcurrencyTest,
                         ::testing::Values("dram", "dram-inline", "file", "tiered"),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           std::string name = p.param;
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

TEST(StoreCancelTest, CancelFinishesItemsNotYetStarted) {
  TempDir dir;
  FaultyIoHooks hooks;
  StoreOptions o;
  o.io_threads = 1;
  o.io_hooks = &hooks;
  auto opened = FileStore::Open(dir.path(), o);
  ASSERT_TRUE(opened.ok());
  FileStore& store = **opened;
  constexpr int kItems = 10;
  for (int i = 0; i < kItems; ++i) {
    const auto d = Pattern(TestId(i), 5000);
    const DumpItem item{TestId(i), d.data(), d.size()};
    ASSERT_TRUE(store.Dump({&item, 1}).Wait().ok());
  }
  std::vector<std::vector<uint8_t>> bufs(kItems, std::vector<uint8_t>(5000, 0));
  std::vector<LoadItem> items;
  for (int i = 0; i < kItems; ++i) items.push_back({TestId(i), bufs[i].data(), 5000});

  hooks.CloseGate();
  StoreTask t = store.Load(items);
  hooks.WaitForWaiter();  // the only I/O thread is inside item 0's read
  EXPECT_FALSE(t.Ready());
  EXPECT_EQ(t.Wait(std::chrono::milliseconds(1)).code(), StatusCode::kDeadlineExceeded);
  // The submitting thread never waits on the stuck I/O thread.
  EXPECT_TRUE(store.Lookup(std::vector<Hash128>{TestId(0)})[0]);
  (void)store.Stats();
  std::vector<uint8_t> other_buf(5000);
  const LoadItem other_item{TestId(1), other_buf.data(), other_buf.size()};
  StoreTask other = store.Load({&other_item, 1});
  EXPECT_FALSE(other.Ready());
  t.Cancel();
  hooks.OpenGate();
  const Status s = t.Wait();
  EXPECT_EQ(s.code(), StatusCode::kCancelled) << s.ToString();
  EXPECT_TRUE(t.item_status(0).ok());  // it was running: it completes
  EXPECT_EQ(bufs[0], Pattern(TestId(0), 5000));
  for (int i = 1; i < kItems; ++i) {
    EXPECT_EQ(t.item_status(i).code(), StatusCode::kCancelled) << i;
    EXPECT_EQ(bufs[i], std::vector<uint8_t>(5000, 0)) << "cancelled item " << i << " was written";
  }
  EXPECT_EQ(t.failed_ids().size(), static_cast<size_t>(kItems - 1));
  EXPECT_TRUE(other.Wait().ok());  // a different task is unaffected
  EXPECT_EQ(other_buf, Pattern(TestId(1), 5000));
  EXPECT_EQ(store.Stats().cancelled, static_cast<uint64_t>(kItems - 1));
}

}  // namespace
}  // namespace kvstar
