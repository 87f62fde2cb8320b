#include "store/dram/dram_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "store/store_test_util.h"

namespace kvstar {
namespace {

using store_test::Pattern;
using store_test::TestId;

class CountingAllocator final : public HostAllocator {
 public:
  void* Allocate(size_t bytes, size_t alignment) override {
    if (fail) return nullptr;
    ++allocs;
    live_bytes += bytes;
    return std::aligned_alloc(alignment, (bytes + alignment - 1) / alignment * alignment);
  }
  void Free(void* p, size_t bytes) override {
    ++frees;
    live_bytes -= bytes;
    std::free(p);
  }
  std::atomic<int> allocs{0}, frees{0};
  std::atomic<int64_t> live_bytes{0};
  bool fail = false;
};

// inline_bytes defaults to 0 so that these tests exercise the I/O threads; InlineTasks covers the
// inline path.
std::unique_ptr<DramStore> MakeStore(size_t capacity, HostAllocator* alloc = nullptr,
                                     int threads = 2, size_t inline_bytes = 0) {
  StoreOptions o;
  o.dram_capacity_bytes = capacity;
  o.dram_inline_bytes = inline_bytes;
  o.allocator = alloc;
  o.io_threads = threads;
  o.max_entry_bytes = 1 << 20;
  auto s = DramStore::Create(o);
  KVSTAR_CHECK(s.ok(), "%s", s.status().ToString().c_str());
  return std::move(s).value();
}

Status DumpPattern(BlockStore& store, const Hash128& id, size_t bytes) {
  const auto data = Pattern(id, bytes);
  const DumpItem item{id, data.data(), data.size()};
  return store.Dump({&item, 1}).Wait();
}

TEST(DramStoreTest, RoundTripAndStats) {
  auto store = MakeStore(1 << 20);
  const Hash128 a = TestId(1), b = TestId(2);
  const auto da = Pattern(a, 5000), db = Pattern(b, 7);
  const DumpItem dumps[] = {{a, da.data(), da.size()}, {b, db.data(), db.size()}};
  StoreTask t = store->Dump(dumps);
  ASSERT_TRUE(t.Wait().ok());
  EXPECT_TRUE(t.Ready());
  EXPECT_TRUE(t.failed_ids().empty());

  std::vector<uint8_t> ra(8000), rb(7);
  const LoadItem loads[] = {{a, ra.data(), ra.size()}, {b, rb.data(), rb.size()}};
  StoreTask l = store->Load(loads);
  ASSERT_TRUE(l.Wait().ok());
  EXPECT_EQ(l.item_bytes(0), 5000u);
  EXPECT_EQ(l.item_bytes(1), 7u);
  EXPECT_EQ(0, std::memcmp(ra.data(), da.data(), da.size()));
  EXPECT_EQ(rb, db);

  const StoreStats s = store->Stats();
  EXPECT_EQ(s.dump_blocks, 2u);
  EXPECT_EQ(s.dump_bytes, 5007u);
  EXPECT_EQ(s.load_blocks, 2u);
  EXPECT_EQ(s.load_bytes, 5007u);
  EXPECT_EQ(s.entries, 2u);
  EXPECT_EQ(s.load_latency.count, 2u);
  EXPECT_GT(s.load_latency.PercentileUs(0.5), 0.0);
}

TEST(DramStoreTest, SmallTasksRunInlineAndLargeOnesOnTheIoThreads) {
  auto store = MakeStore(1 << 20, nullptr, /*threads=*/1, /*inline_bytes=*/8192);
  const auto da = Pattern(TestId(1), 4096), db = Pattern(TestId(2), 4096);
  const DumpItem dumps[] = {{TestId(1), da.data(), da.size()}, {TestId(2), db.data(), db.size()}};
  StoreTask d = store->Dump(dumps);  // 8192 bytes: inline
  EXPECT_TRUE(d.Ready());
  ASSERT_TRUE(d.Wait().ok());
  std::vector<uint8_t> ra(4096), rb(4096);
  LoadItem loads[] = {{TestId(1), ra.data(), ra.size()}, {TestId(2), rb.data(), rb.size()}};
  StoreTask l = store->Load(loads);  // capacities total 8192: inline
  EXPECT_TRUE(l.Ready());
  ASSERT_TRUE(l.Wait().ok());
  EXPECT_EQ(ra, da);
  EXPECT_EQ(rb, db);
  // A missing id inline is the same per-item failure as on the I/O threads.
  std::vector<uint8_t> rc(100);
  const LoadItem missing{TestId(3), rc.data(), rc.size()};
  StoreTask m = store->Load({&missing, 1});
  EXPECT_TRUE(m.Ready());
  EXPECT_EQ(m.Wait().code(), StatusCode::kNotFound);

  // One byte more than the limit goes to the I/O thread, with the same result.
  std::vector<uint8_t> big(8193);
  const LoadItem over{TestId(1), big.data(), big.size()};
  StoreTask queued = store->Load({&over, 1});
  ASSERT_TRUE(queued.Wait().ok());
  EXPECT_EQ(queued.item_bytes(0), 4096u);
  EXPECT_EQ(0, std::memcmp(big.data(), da.data(), da.size()));
  const StoreStats s = store->Stats();
  EXPECT_EQ(s.load_blocks, 3u);
  EXPECT_EQ(s.misses, 1u);
}

// dram_bytes_per_runner changes how many I/O threads run one task, never what it does: every
// block moves once and per-item failures are reported, whatever the bound (1 byte: one thread per
// block, as without it; a bound above the task: one thread runs every block). The thread counts
// themselves are not observable here; store-bench --dram-bytes-per-runner measures their effect.
TEST(DramStoreTest, BytesPerRunnerKeepsResults) {
  for (size_t per_runner : {size_t{1}, size_t{8192}, size_t{1} << 30}) {
    SCOPED_TRACE(per_runner);
    StoreOptions o;
    o.dram_capacity_bytes = 1 << 22;
    o.dram_inline_bytes = 0;
    o.io_threads = 4;
    o.dram_bytes_per_runner = per_runner;
    auto created = DramStore::Create(o);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
    DramStore& store = **created;
    constexpr size_t kBlocks = 40, kBytes = 3000;
    std::vector<std::vector<uint8_t>> data;
    std::vector<DumpItem> dumps;
    for (size_t i = 0; i < kBlocks; ++i) data.push_back(Pattern(TestId(i + 1), kBytes));
    for (size_t i = 0; i < kBlocks; ++i) dumps.push_back({TestId(i + 1), data[i].data(), kBytes});
    ASSERT_TRUE(store.Dump(dumps).Wait().ok());
    std::vector<std::vector<uint8_t>> got(kBlocks + 1, std::vector<uint8_t>(kBytes));
    std::vector<LoadItem> loads;
    for (size_t i = 0; i < kBlocks; ++i) loads.push_back({TestId(i + 1), got[i].data(), kBytes});
    loads.push_back({TestId(999), got[kBlocks].data(), kBytes});  // never dumped
    StoreTask t = store.Load(loads);
    EXPECT_EQ(t.Wait().code(), StatusCode::kNotFound);
    ASSERT_EQ(t.failed_ids().size(), 1u);
    EXPECT_EQ(t.failed_ids()[0], TestId(999));
    for (size_t i = 0; i < kBlocks; ++i) EXPECT_EQ(got[i], data[i]) << i;
    EXPECT_EQ(store.Stats().load_blocks, kBlocks);
  }
}

TEST(DramStoreTest, PartialFailureNamesTheFailedIds) {
  auto store = MakeStore(1 << 20);
  ASSERT_TRUE(DumpPattern(*store, TestId(1), 4096).ok());
  ASSERT_TRUE(DumpPattern(*store, TestId(2), 4096).ok());
  std::vector<uint8_t> r1(4096), r2(100), r3(4096);
  const LoadItem loads[] = {{TestId(1), r1.data(), r1.size()},
                            {TestId(2), r2.data(), r2.size()},   // too small
                            {TestId(3), r3.data(), r3.size()}};  // missing
  StoreTask t = store->Load(loads);
  const Status s = t.Wait();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("2 of 3"), std::string::npos) << s.ToString();
  EXPECT_TRUE(t.item_status(0).ok());
  EXPECT_EQ(t.item_status(1).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(t.item_bytes(1), 4096u);  // the real size, so the caller can retry
  EXPECT_EQ(t.item_status(2).code(), StatusCode::kNotFound);
  EXPECT_EQ(t.failed_ids(), (std::vector<Hash128>{TestId(2), TestId(3)}));
  EXPECT_EQ(r1, Pattern(TestId(1), 4096));
}

TEST(DramStoreTest, RejectsEntriesAboveTheMaximumSize) {
  auto store = MakeStore(8 << 20);
  const Status s = DumpPattern(*store, TestId(1), (1 << 20) + 1);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(store->Lookup(std::vector<Hash128>{TestId(1)})[0]);
}

TEST(DramStoreTest, EmptyTaskIsReadyAtOnce) {
  auto store = MakeStore(1 << 20);
  StoreTask t = store->Load({});
  EXPECT_TRUE(t.Ready());
  EXPECT_TRUE(t.Wait().ok());
}

TEST(DramStoreTest, EvictsLeastRecentlyUsed) {
  auto store = MakeStore(3 * 4096);
  for (uint64_t i = 1; i <= 3; ++i) ASSERT_TRUE(DumpPattern(*store, TestId(i), 4096).ok());
  std::vector<uint8_t> buf(4096);
  const LoadItem touch{TestId(1), buf.data(), buf.size()};
  ASSERT_TRUE(store->Load({&touch, 1}).Wait().ok());  // 1 is now the most recent
  ASSERT_TRUE(DumpPattern(*store, TestId(4), 4096).ok());
  const auto found =
      store->Lookup(std::vector<Hash128>{TestId(1), TestId(2), TestId(3), TestId(4)});
  EXPECT_EQ(found, (std::vector<bool>{true, false, true, true}));
  EXPECT_EQ(store->Stats().evictions, 1u);
  EXPECT_LE(store->Stats().used_bytes, 3u * 4096u);
}

TEST(DramStoreTest, PinnedEntriesAreNeverEvicted) {
  auto store = MakeStore(2 * 4096);
  const auto d = Pattern(TestId(1), 4096);
  auto pin1 = store->Put({TestId(1), d.data(), d.size()});
  auto pin2 = store->Put({TestId(2), d.data(), d.size()});
  ASSERT_TRUE(pin1.ok() && pin2.ok());
  // Everything is pinned: a third entry cannot get room.
  EXPECT_EQ(DumpPattern(*store, TestId(3), 4096).code(), StatusCode::kResourceExhausted);
  // Replacing a pinned entry detaches it; its memory stays valid for the pin holder.
  pin1->Release();
  ASSERT_TRUE(DumpPattern(*store, TestId(3), 4096).ok());  // evicts 1 (unpinned now)
  EXPECT_EQ(0, std::memcmp(pin2->data(), d.data(), d.size()));
  EXPECT_TRUE(store->Lookup(std::vector<Hash128>{TestId(2)})[0]);
  EXPECT_FALSE(store->Lookup(std::vector<Hash128>{TestId(1)})[0]);
}

TEST(DramStoreTest, RemoveOfPinnedEntryKeepsMemoryUntilUnpinned) {
  CountingAllocator alloc;
  auto store = MakeStore(1 << 20, &alloc);
  const auto d = Pattern(TestId(1), 10000);
  auto pin = store->Put({TestId(1), d.data(), d.size()});
  ASSERT_TRUE(pin.ok());
  const Hash128 ids[] = {TestId(1)};
  ASSERT_TRUE(store->Remove(ids).ok());
  EXPECT_FALSE(store->Lookup(ids)[0]);
  EXPECT_EQ(alloc.frees.load(), 0);
  EXPECT_EQ(0, std::memcmp(pin->data(), d.data(), d.size()));
  pin->Release();
  EXPECT_EQ(store->Stats().used_bytes, 0u);
  // The buffer is kept as spare and reused by the next entry of its size.
  auto again = store->Put({TestId(2), d.data(), d.size()});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(alloc.allocs.load(), 1);
  EXPECT_EQ(0, std::memcmp(again->data(), d.data(), d.size()));
}

TEST(DramStoreTest, UsesTheAllocatorHookAndFreesEverything) {
  CountingAllocator alloc;
  {
    auto store = MakeStore(64 * 1024, &alloc);
    for (uint64_t i = 0; i < 40; ++i) ASSERT_TRUE(DumpPattern(*store, TestId(i), 3000).ok());
    ASSERT_TRUE(DumpPattern(*store, TestId(0), 3000).ok());  // replace
    // 16 buffers fit the capacity; evicted entries hand theirs to new ones.
    EXPECT_EQ(alloc.allocs.load(), 16);
    EXPECT_LE(alloc.live_bytes.load(), 64 * 1024);
    // Another size class: spare memory is released to make room within the capacity.
    ASSERT_TRUE(DumpPattern(*store, TestId(100), 20000).ok());
    EXPECT_LE(alloc.live_bytes.load(), 64 * 1024);
    EXPECT_TRUE(store->Lookup(std::vector<Hash128>{TestId(100)})[0]);
  }
  EXPECT_EQ(alloc.allocs.load(), alloc.frees.load());
  EXPECT_EQ(alloc.live_bytes.load(), 0);
}

TEST(DramStoreTest, AllocatorFailureIsResourceExhausted) {
  CountingAllocator alloc;
  alloc.fail = true;
  auto store = MakeStore(1 << 20, &alloc);
  EXPECT_EQ(DumpPattern(*store, TestId(1), 100).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(store->Stats().used_bytes, 0u);
}

TEST(DramStoreTest, ReplacingAnIdKeepsTheNewContents) {
  auto store = MakeStore(1 << 20);
  ASSERT_TRUE(DumpPattern(*store, TestId(1), 100).ok());
  const auto other = Pattern(TestId(2), 200);
  const DumpItem item{TestId(1), other.data(), other.size()};
  ASSERT_TRUE(store->Dump({&item, 1}).Wait().ok());
  std::vector<uint8_t> buf(300);
  const LoadItem load{TestId(1), buf.data(), buf.size()};
  StoreTask t = store->Load({&load, 1});
  ASSERT_TRUE(t.Wait().ok());
  EXPECT_EQ(t.item_bytes(0), 200u);
  EXPECT_EQ(0, std::memcmp(buf.data(), other.data(), 200));
  EXPECT_EQ(store->Stats().entries, 1u);
}

TEST(OpenStoreTest, BadSpecNamesTheSpecAndTheAcceptedForms) {
  auto s = OpenStore("nvme://x", StoreOptions{});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("nvme://x"), std::string::npos);
  EXPECT_NE(s.status().message().find("file:PATH"), std::string::npos);
  EXPECT_FALSE(OpenStore("file:", StoreOptions{}).ok());
  auto d = OpenStore("dram", StoreOptions{});
  ASSERT_TRUE(d.ok());
  EXPECT_NE((*d)->Describe().find("dram"), std::string::npos);
}

}  // namespace
}  // namespace kvstar
