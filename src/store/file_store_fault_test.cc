// Faults: full disk (injected and, where mounting is allowed, a real tiny tmpfs), read errors,
// permission denied, failed fsync / rename. Each must give a clear Status for the affected ids,
// lose nothing already committed, leave no temp files, and keep the store serving.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "store/fault_hooks.h"
#include "store/file/file_store.h"
#include "store/store_test_util.h"

namespace kvstar {
namespace {

using store_test::CountFiles;
using store_test::FaultyIoHooks;
using store_test::Pattern;
using store_test::TempDir;
using store_test::TestId;

StoreOptions Options(IoHooks* hooks, bool direct = false) {
  StoreOptions o;
  o.io_threads = 2;
  o.io_hooks = hooks;
  o.use_o_direct = direct;
  o.max_entry_bytes = 4 << 20;
  return o;
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

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = FileStore::Open(dir_.path(), Options(&hooks_));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
    for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(DumpPattern(*store_, TestId(i), 50000).ok());
  }
  void ExpectCommittedBlocksIntact() {
    for (uint64_t i = 0; i < 4; ++i) {
      EXPECT_TRUE(LoadAndCheck(*store_, TestId(i), 50000).ok()) << i;
    }
    EXPECT_EQ(CountFiles(dir_.path() + "/tmp"), 0u);
  }

  TempDir dir_;
  FaultyIoHooks hooks_;
  std::unique_ptr<FileStore> store_;
};

TEST_F(FaultTest, InjectedDiskFullFailsTheDumpOnly) {
  hooks_.pwrite_budget = 4096 + 1000;  // header and a little payload fit, then ENOSPC
  const Status s = DumpPattern(*store_, TestId(10), 50000);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  EXPECT_NE(s.message().find(TestId(10).ToHex()), std::string::npos) << s.ToString();
  EXPECT_FALSE(store_->Lookup(std::vector<Hash128>{TestId(10)})[0]);
  ExpectCommittedBlocksIntact();
  hooks_.pwrite_budget = -1;  // space freed: the store works again
  EXPECT_TRUE(DumpPattern(*store_, TestId(10), 50000).ok());
  EXPECT_TRUE(LoadAndCheck(*store_, TestId(10), 50000).ok());
}

TEST_F(FaultTest, ReadErrorFailsThatIdOnly) {
  hooks_.path_filter = TestId(1).ToHex();
  hooks_.pread_errno = EIO;
  std::vector<std::vector<uint8_t>> bufs(3, std::vector<uint8_t>(50000));
  const LoadItem items[] = {{TestId(0), bufs[0].data(), 50000},
                            {TestId(1), bufs[1].data(), 50000},
                            {TestId(2), bufs[2].data(), 50000}};
  StoreTask t = store_->Load(items);
  EXPECT_EQ(t.Wait().code(), StatusCode::kIoError);
  EXPECT_TRUE(t.item_status(0).ok());
  EXPECT_EQ(t.item_status(1).code(), StatusCode::kIoError);
  EXPECT_NE(t.item_status(1).message().find("Input/output error"), std::string::npos);
  EXPECT_TRUE(t.item_status(2).ok());
  EXPECT_EQ(t.failed_ids(), std::vector<Hash128>{TestId(1)});
  hooks_.pread_errno = 0;
  ExpectCommittedBlocksIntact();  // a read error is not corruption: the block is kept
}

TEST_F(FaultTest, PermissionDeniedIsReported) {
  hooks_.open_errno = EACCES;
  const Status dump = DumpPattern(*store_, TestId(10), 1000);
  EXPECT_EQ(dump.code(), StatusCode::kPermissionDenied) << dump.ToString();
  EXPECT_EQ(LoadAndCheck(*store_, TestId(0), 50000).code(), StatusCode::kPermissionDenied);
  hooks_.open_errno = 0;
  ExpectCommittedBlocksIntact();
}

TEST_F(FaultTest, FailedFsyncOrRenameCommitsNothing) {
  TempDir dir2;
  StoreOptions o = Options(&hooks_);
  o.fsync = FsyncPolicy::kFull;
  auto synced = FileStore::Open(dir2.path(), o);
  ASSERT_TRUE(synced.ok());
  ASSERT_TRUE(DumpPattern(**synced, TestId(1), 1000).ok());
  hooks_.fdatasync_errno = EIO;
  EXPECT_EQ(DumpPattern(**synced, TestId(2), 1000).code(), StatusCode::kIoError);
  hooks_.fdatasync_errno = 0;
  hooks_.rename_errno = EIO;
  EXPECT_EQ(DumpPattern(**synced, TestId(3), 1000).code(), StatusCode::kIoError);
  // A failed replace keeps the committed version.
  EXPECT_EQ(DumpPattern(**synced, TestId(1), 1000).code(), StatusCode::kIoError);
  hooks_.rename_errno = 0;
  EXPECT_EQ((*synced)->Lookup(std::vector<Hash128>{TestId(1), TestId(2), TestId(3)}),
            (std::vector<bool>{true, false, false}));
  EXPECT_TRUE(LoadAndCheck(**synced, TestId(1), 1000).ok());
  EXPECT_EQ(CountFiles(dir2.path() + "/tmp"), 0u);
  ExpectCommittedBlocksIntact();
}

TEST_F(FaultTest, OpenWithoutPermissionIsPermissionDenied) {
  TempDir other;
  FaultyIoHooks deny;
  deny.open_errno = EACCES;
  auto s = FileStore::Open(other.path(), Options(&deny));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kPermissionDenied) << s.status().ToString();
  EXPECT_NE(s.status().message().find(other.path()), std::string::npos);
}

TEST(FileStoreRealFaultTest, ReadOnlyDirectoryWithoutRoot) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: chmod does not deny access";
  TempDir dir;
  auto store = FileStore::Open(dir.path(), Options(nullptr));
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(DumpPattern(**store, TestId(1), 1000).ok());
  ASSERT_EQ(::chmod((dir.path() + "/tmp").c_str(), 0500), 0);
  EXPECT_EQ(DumpPattern(**store, TestId(2), 1000).code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(LoadAndCheck(**store, TestId(1), 1000).ok());
  ::chmod((dir.path() + "/tmp").c_str(), 0755);
}

// A real full file system: a 1 MiB tmpfs. Needs mount(2) (root in CI); skipped otherwise.
TEST(FileStoreRealFaultTest, TinyTmpfsFillsUp) {
  TempDir dir;
  const std::string mnt = dir.path() + "/mnt";
  ASSERT_EQ(::mkdir(mnt.c_str(), 0755), 0);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=1m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno)
                 << "); the injected ENOSPC test covers this path";
  }
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{mnt};
  for (bool direct : {false, true}) {
    SCOPED_TRACE(direct ? "O_DIRECT" : "buffered");
    const std::string sub = mnt + (direct ? "/d" : "/b");
    auto opened = FileStore::Open(sub, Options(nullptr, direct));
    if (!opened.ok() && direct) {
      GTEST_SKIP() << "tmpfs without O_DIRECT: " << opened.status().ToString();
    }
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    auto& store = **opened;
    int committed = 0;
    Status s;
    for (int i = 0; i < 20 && s.ok(); ++i) {
      s = DumpPattern(store, TestId(i), 200 * 1024);
      if (s.ok()) ++committed;
    }
    if (direct && s.code() == StatusCode::kInvalidArgument) {
      GTEST_SKIP() << "tmpfs rejects O_DIRECT here: " << s.ToString();
    }
    EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
    EXPECT_GT(committed, 0);
    for (int i = 0; i < committed; ++i)
      EXPECT_TRUE(LoadAndCheck(store, TestId(i), 200 * 1024).ok());
    EXPECT_EQ(CountFiles(sub + "/tmp"), 0u);
    // Freeing space lets it continue.
    ASSERT_TRUE(store.Remove(std::vector<Hash128>{TestId(0), TestId(1)}).ok());
    EXPECT_TRUE(DumpPattern(store, TestId(100), 200 * 1024).ok());
    ASSERT_TRUE(store.Remove(std::vector<Hash128>{TestId(100)}).ok());
    for (int i = 0; i < committed; ++i) store.Remove(std::vector<Hash128>{TestId(i)}).IgnoreError();
  }
}

}  // namespace
}  // namespace kvstar
