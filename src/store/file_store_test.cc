#include "store/file/file_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "base/aligned_buffer.h"
#include "base/file_util.h"
#include "store/store_test_util.h"

namespace kvstar {
namespace {

using store_test::CountFiles;
using store_test::Pattern;
using store_test::TempDir;
using store_test::TestId;

StoreOptions Options(bool direct = false) {
  StoreOptions o;
  o.io_threads = 4;
  o.use_o_direct = direct;
  o.max_entry_bytes = 8 << 20;
  return o;
}

std::unique_ptr<FileStore> OpenOrDie(const std::string& dir, const StoreOptions& o) {
  auto s = FileStore::Open(dir, o);
  KVSTAR_CHECK(s.ok(), "%s", s.status().ToString().c_str());
  return std::move(s).value();
}

Status DumpPattern(BlockStore& store, const Hash128& id, size_t bytes) {
  const auto data = Pattern(id, bytes);
  const DumpItem item{id, data.data(), data.size()};
  return store.Dump({&item, 1}).Wait();
}

// Loads id and checks it against Pattern(id, bytes); returns the load status.
Status LoadAndCheck(BlockStore& store, const Hash128& id, size_t bytes) {
  std::vector<uint8_t> buf(bytes + 16, 0xEE);
  const LoadItem item{id, buf.data(), buf.size()};
  StoreTask t = store.Load({&item, 1});
  Status s = t.Wait();
  if (!s.ok()) return s;
  EXPECT_EQ(t.item_bytes(0), bytes);
  if (bytes > 0) {
    EXPECT_EQ(0, std::memcmp(buf.data(), Pattern(id, bytes).data(), bytes)) << id.ToHex();
  }
  return s;
}

class FileStoreModeTest : public ::testing::TestWithParam<bool> {};

TEST_P(FileStoreModeTest, RoundTripOfOddSizesAndAlignments) {
  TempDir dir;
  auto store = OpenOrDie(dir.path(), Options(GetParam()));
  const size_t sizes[] = {0, 1, 4095, 4096, 4097, 65536, 300001, 1 << 20};
  for (size_t i = 0; i < std::size(sizes); ++i) {
    ASSERT_TRUE(DumpPattern(*store, TestId(i), sizes[i]).ok()) << sizes[i];
  }
  for (size_t i = 0; i < std::size(sizes); ++i) {
    EXPECT_TRUE(LoadAndCheck(*store, TestId(i), sizes[i]).ok()) << sizes[i];
  }
  // Aligned source and destination buffers take the direct (no bounce) path under O_DIRECT.
  AlignedBuffer<uint8_t> src(1 << 20);
  const auto p = Pattern(TestId(100), 1 << 20);
  std::memcpy(src.data(), p.data(), p.size());
  const DumpItem d{TestId(100), src.data(), src.size()};
  ASSERT_TRUE(store->Dump({&d, 1}).Wait().ok());
  void* dst = std::aligned_alloc(4096, 1 << 20);
  const LoadItem l{TestId(100), dst, 1 << 20};
  ASSERT_TRUE(store->Load({&l, 1}).Wait().ok());
  EXPECT_EQ(0, std::memcmp(dst, p.data(), p.size()));
  std::free(dst);
  EXPECT_EQ(CountFiles(dir.path() + "/tmp"), 0u);
}

INSTANTIATE_TEST_SUITE_P(BufferedAndDirect, FileStoreModeTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "ODirect" : "Buffered";
                         });

TEST(FileStoreTest, SurvivesReopen) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path(), Options());
    for (uint64_t i = 0; i < 20; ++i) ASSERT_TRUE(DumpPattern(*store, TestId(i), 10000 + i).ok());
  }
  auto store = OpenOrDie(dir.path(), Options(/*direct=*/true));
  EXPECT_EQ(store->Stats().entries, 20u);
  for (uint64_t i = 0; i < 20; ++i) EXPECT_TRUE(LoadAndCheck(*store, TestId(i), 10000 + i).ok());
  EXPECT_FALSE(store->Lookup(std::vector<Hash128>{TestId(99)})[0]);
}

TEST(FileStoreTest, PathsComeFromIdsOnly) {
  TempDir dir;
  auto store = OpenOrDie(dir.path(), Options());
  const Hash128 id = TestId(7);
  const std::string path = store->BlockPath(id);
  EXPECT_EQ(path.rfind(dir.path() + "/blocks/", 0), 0u);
  EXPECT_NE(path.find(id.ToHex() + ".kvb"), std::string::npos);
  ASSERT_TRUE(DumpPattern(*store, id, 100).ok());
  EXPECT_TRUE(std::filesystem::exists(path));
}

TEST(FileStoreTest, RefusesANonEmptyDirectoryThatIsNotAStore) {
  TempDir dir;
  ASSERT_TRUE(WriteStringToFile(dir.path() + "/precious.txt", "data").ok());
  auto s = FileStore::Open(dir.path(), Options());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("not a kvstar block store"), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(dir.path() + "/precious.txt"));
}

TEST(FileStoreTest, MissingDirectoryIsCreatedOrReported) {
  TempDir dir;
  const std::string deep = dir.path() + "/a/b/c";
  StoreOptions o = Options();
  o.create_if_missing = false;
  auto missing = FileStore::Open(deep, o);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(deep), std::string::npos);
  o.create_if_missing = true;
  auto created = FileStore::Open(deep, o);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  EXPECT_TRUE(DumpPattern(**created, TestId(1), 10).ok());
  // A path under a regular file cannot be a store.
  ASSERT_TRUE(WriteStringToFile(dir.path() + "/file", "x").ok());
  EXPECT_FALSE(FileStore::Open(dir.path() + "/file", o).ok());
  EXPECT_FALSE(FileStore::Open(dir.path() + "/file/sub", o).ok());
}

TEST(FileStoreTest, CapacityEvictsLeastRecentlyUsed) {
  TempDir dir;
  StoreOptions o = Options();
  o.file_capacity_bytes = 3 * (4096 + 8192);
  auto store = OpenOrDie(dir.path(), o);
  for (uint64_t i = 1; i <= 3; ++i) ASSERT_TRUE(DumpPattern(*store, TestId(i), 8192).ok());
  ASSERT_TRUE(LoadAndCheck(*store, TestId(1), 8192).ok());
  ASSERT_TRUE(DumpPattern(*store, TestId(4), 8192).ok());
  EXPECT_EQ(store->Lookup(std::vector<Hash128>{TestId(1), TestId(2), TestId(3), TestId(4)}),
            (std::vector<bool>{true, false, true, true}));
  EXPECT_FALSE(std::filesystem::exists(store->BlockPath(TestId(2))));
  EXPECT_LE(store->Stats().used_bytes, o.file_capacity_bytes);
  // A block larger than the whole capacity is refused without evicting anything.
  EXPECT_EQ(DumpPattern(*store, TestId(5), 64 * 1024).code(), StatusCode::kResourceExhausted);
}

TEST(FileStoreTest, BlocksOfAnotherProcessAreFoundOnDemand) {
  TempDir dir;
  auto reader = OpenOrDie(dir.path(), Options());
  auto writer = OpenOrDie(dir.path(), Options());
  ASSERT_TRUE(DumpPattern(*writer, TestId(1), 5000).ok());
  EXPECT_TRUE(reader->Lookup(std::vector<Hash128>{TestId(1)})[0]);
  EXPECT_TRUE(LoadAndCheck(*reader, TestId(1), 5000).ok());
  ASSERT_TRUE(writer->Remove(std::vector<Hash128>{TestId(1)}).ok());
  EXPECT_EQ(LoadAndCheck(*reader, TestId(1), 5000).code(), StatusCode::kNotFound);
}

// ---- corruption ----------------------------------------------------------------------------

void FlipByte(const std::string& path, off_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c;
  f.read(&c, 1);
  c ^= 0x5a;
  f.seekp(offset);
  f.write(&c, 1);
}

class FileStoreCorruptionTest : public ::testing::TestWithParam<bool> {};

TEST_P(FileStoreCorruptionTest, DamagedBlocksFailAloneWithDataLoss) {
  TempDir dir;
  auto store = OpenOrDie(dir.path(), Options(GetParam()));
  constexpr size_t kBytes = 3 * 4096 + 100;
  for (uint64_t i = 0; i < 6; ++i) ASSERT_TRUE(DumpPattern(*store, TestId(i), kBytes).ok());
  FlipByte(store->BlockPath(TestId(0)), 4096 + 5000);                            // payload byte
  FlipByte(store->BlockPath(TestId(1)), 20);                                     // header field
  std::filesystem::resize_file(store->BlockPath(TestId(2)), 4096 + kBytes / 2);  // truncated
  std::filesystem::resize_file(store->BlockPath(TestId(3)), 100);                // truncated header
  // A valid block file under another id's name (e.g. a misplaced copy).
  std::filesystem::copy_file(store->BlockPath(TestId(5)), store->BlockPath(TestId(4)),
                             std::filesystem::copy_options::overwrite_existing);

  std::vector<std::vector<uint8_t>> bufs(6, std::vector<uint8_t>(kBytes + 4096, 0));
  std::vector<LoadItem> items;
  for (uint64_t i = 0; i < 6; ++i) items.push_back({TestId(i), bufs[i].data(), bufs[i].size()});
  StoreTask t = store->Load(items);
  EXPECT_EQ(t.Wait().code(), StatusCode::kDataLoss);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(t.item_status(i).code(), StatusCode::kDataLoss)
        << i << " " << t.item_status(i).ToString();
  }
  EXPECT_TRUE(t.item_status(5).ok());
  EXPECT_EQ(0, std::memcmp(bufs[5].data(), Pattern(TestId(5), kBytes).data(), kBytes));
  // The corrupt blocks are gone: the ids read as missing and can be dumped again.
  const auto found =
      store->Lookup(std::vector<Hash128>{TestId(0), TestId(1), TestId(2), TestId(5)});
  EXPECT_EQ(found, (std::vector<bool>{false, false, false, true}));
  ASSERT_TRUE(DumpPattern(*store, TestId(0), kBytes).ok());
  EXPECT_TRUE(LoadAndCheck(*store, TestId(0), kBytes).ok());
}

INSTANTIATE_TEST_SUITE_P(BufferedAndDirect, FileStoreCorruptionTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "ODirect" : "Buffered";
                         });

TEST(FileStoreTest, UnknownFilesInShardsAreIgnored) {
  TempDir dir;
  {
    auto store = OpenOrDie(dir.path(), Options());
    ASSERT_TRUE(DumpPattern(*store, TestId(1), 100).ok());
  }
  std::filesystem::create_directories(dir.path() + "/blocks/00");
  ASSERT_TRUE(WriteStringToFile(dir.path() + "/blocks/00/notes.txt", "x").ok());
  ASSERT_TRUE(
      WriteStringToFile(dir.path() + "/blocks/00/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.kvb", "x").ok());
  auto store = OpenOrDie(dir.path(), Options());
  EXPECT_EQ(store->Stats().entries, 1u);
}

}  // namespace
}  // namespace kvstar
