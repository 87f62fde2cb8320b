#include "store/tiered_store.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "store/fault_hooks.h"
#include "store/store_test_util.h"

namespace kvstar {
namespace {

using store_test::FaultyIoHooks;
using store_test::Pattern;
using store_test::TempDir;
using store_test::TestId;

StoreOptions Options(size_t dram_capacity, IoHooks* hooks = nullptr) {
  StoreOptions o;
  o.io_threads = 4;
  o.dram_capacity_bytes = dram_capacity;
  o.io_hooks = hooks;
  return o;
}

std::unique_ptr<TieredStore> OpenOrDie(const std::string& dir, const StoreOptions& o) {
  auto s = TieredStore::Open(dir, o);
  KVSTAR_CHECK(s.ok(), "%s", s.status().ToString().c_str());
  return std::move(s).value();
}

Status DumpPattern(BlockStore& store, const Hash128& id, size_t bytes) {
  const auto data = Pattern(id, bytes);
  const DumpItem item{id, data.data(), data.size()};
  return store.Dump({&item, 1}).Wait();
}

Status LoadAndCheck(BlockStore& store, const Hash128& id, size_t bytes) {
  std::vector<uint8_t> buf(bytes);
  const LoadItem item{id, buf.data(), buf.size()};
  Status s = store.Load({&item, 1}).Wait();
  if (s.ok() && buf != Pattern(id, bytes)) return DataLoss("content differs");
  return s;
}

TEST(TieredStoreTest, DumpsReachBothTiersAndSurviveRestart) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path(), Options(1 << 20));
    for (uint64_t i = 0; i < 10; ++i) ASSERT_TRUE(DumpPattern(*store, TestId(i), 20000).ok());
    ASSERT_TRUE(store->Flush().ok());
    EXPECT_EQ(store->Stats().write_behind_pending, 0u);
    EXPECT_EQ(store->dram().Stats().entries, 10u);
    EXPECT_EQ(store->file().Stats().entries, 10u);
    for (uint64_t i = 0; i < 10; ++i) EXPECT_TRUE(LoadAndCheck(*store, TestId(i), 20000).ok());
    EXPECT_EQ(store->Stats().promotions, 0u);  // all DRAM hits
  }
  auto store = OpenOrDie(dir.path(), Options(1 << 20));
  EXPECT_EQ(store->dram().Stats().entries, 0u);
  EXPECT_TRUE(store->Lookup(std::vector<Hash128>{TestId(3)})[0]);
  EXPECT_TRUE(LoadAndCheck(*store, TestId(3), 20000).ok());
  EXPECT_EQ(store->Stats().promotions, 1u);
  EXPECT_TRUE(store->dram().Lookup(std::vector<Hash128>{TestId(3)})[0]);
}

TEST(TieredStoreTest, BlocksEvictedFromDramComeBackFromFile) {
  TempDir dir;
  auto store = OpenOrDie(dir.path(), Options(4 * 4096));
  for (uint64_t i = 0; i < 12; ++i) ASSERT_TRUE(DumpPattern(*store, TestId(i), 4096).ok());
  ASSERT_TRUE(store->Flush().ok());
  EXPECT_LE(store->dram().Stats().entries, 4u);
  for (uint64_t i = 0; i < 12; ++i) EXPECT_TRUE(LoadAndCheck(*store, TestId(i), 4096).ok()) << i;
  EXPECT_GE(store->Stats().promotions, 8u);
}

TEST(TieredStoreTest, WriteBehindFailureIsReportedAndDramStillServes) {
  TempDir dir;
  FaultyIoHooks hooks;
  auto store = OpenOrDie(dir.path(), Options(1 << 20, &hooks));
  hooks.pwrite_errno = ENOSPC;
  ASSERT_TRUE(DumpPattern(*store, TestId(1), 10000).ok());  // Ready once in DRAM
  const Status flushed = store->Flush();
  EXPECT_EQ(flushed.code(), StatusCode::kResourceExhausted) << flushed.ToString();
  EXPECT_EQ(store->Stats().write_behind_failures, 1u);
  EXPECT_TRUE(LoadAndCheck(*store, TestId(1), 10000).ok());
  EXPECT_FALSE(store->file().Lookup(std::vector<Hash128>{TestId(1)})[0]);
  hooks.pwrite_errno = 0;
  EXPECT_TRUE(store->Flush().ok());  // the error was reported once
}

TEST(TieredStoreTest, WriteThroughWaitsForTheFile) {
  TempDir dir;
  StoreOptions o = Options(1 << 20);
  o.write_behind = false;
  auto store = OpenOrDie(dir.path(), o);
  ASSERT_TRUE(DumpPattern(*store, TestId(1), 10000).ok());
  EXPECT_TRUE(std::filesystem::exists(store->file().BlockPath(TestId(1))));
}

TEST(TieredStoreTest, RemoveReachesBothTiersEvenWithWriteBehindInFlight) {
  TempDir dir;
  FaultyIoHooks hooks;
  auto store = OpenOrDie(dir.path(), Options(1 << 20, &hooks));
  for (uint64_t i = 0; i < 20; ++i) ASSERT_TRUE(DumpPattern(*store, TestId(i), 30000).ok());
  std::vector<Hash128> ids;
  for (uint64_t i = 0; i < 20; ++i) ids.push_back(TestId(i));
  ASSERT_TRUE(store->Remove(ids).ok());
  ASSERT_TRUE(store->Flush().ok());
  for (const Hash128& id : ids) {
    EXPECT_FALSE(store->Lookup(std::vector<Hash128>{id})[0]);
    EXPECT_FALSE(std::filesystem::exists(store->file().BlockPath(id))) << id.ToHex();
  }
}

TEST(TieredStoreTest, OpenStoreSpec) {
  TempDir dir;
  auto s = OpenStore("tiered:" + dir.path(), Options(1 << 20));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_NE((*s)->Describe().find("tiered"), std::string::npos);
  EXPECT_TRUE(DumpPattern(**s, TestId(1), 100).ok());
  EXPECT_TRUE((*s)->Flush().ok());
  auto f = OpenStore("file:" + dir.path(), Options(1 << 20));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_TRUE(LoadAndCheck(**f, TestId(1), 100).ok());
}

}  // namespace
}  // namespace kvstar
