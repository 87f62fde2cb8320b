// Crash safety: a child process dumps blocks from several threads and is SIGKILLed mid-way.
// Reopening must find only complete blocks, each passing its checksum with the right contents,
// and must remove the temp files the killed writer left behind.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "base/file_util.h"
#include "store/file/file_store.h"
#include "store/store_test_util.h"

namespace kvstar {
namespace {

using store_test::CountFiles;
using store_test::Pattern;
using store_test::TempDir;
using store_test::TestId;

size_t BlockBytes(uint64_t i) { return 64 * 1024 + (i % 7) * 4099; }

[[noreturn]] void ChildDumpForever(const std::string& dir, bool direct) {
  StoreOptions o;
  o.io_threads = 4;
  o.use_o_direct = direct;
  auto store = FileStore::Open(dir, o);
  if (!store.ok()) _exit(3);
  // Signals the parent once the first blocks are committed.
  for (uint64_t i = 0;; i += 8) {
    std::vector<std::vector<uint8_t>> data;
    std::vector<DumpItem> items;
    for (uint64_t j = i; j < i + 8; ++j) data.push_back(Pattern(TestId(j), BlockBytes(j)));
    for (uint64_t j = 0; j < 8; ++j)
      items.push_back({TestId(i + j), data[j].data(), data[j].size()});
    if (!(*store)->Dump(items).Wait().ok()) _exit(4);
    if (i == 64) {
      std::ofstream(dir + "/started").put('x');
    }
  }
}

void RunCrashTest(bool direct) {
  TempDir dir;
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ChildDumpForever(dir.path(), direct);
  for (int i = 0; i < 2000 && !std::filesystem::exists(dir.path() + "/started"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // mid-stream
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(wstatus)) << "child exited early with " << WEXITSTATUS(wstatus);
  ASSERT_TRUE(std::filesystem::exists(dir.path() + "/started"));

  // Make sure at least one interrupted temp file exists (a real one may or may not be there).
  char fake[160];
  std::snprintf(fake, sizeof(fake), "/tmp/%s.%s.%d.999.tmp", TestId(999999).ToHex().c_str(),
                "unknownhost", 1);
  ASSERT_TRUE(WriteStringToFile(dir.path() + fake, "other host, recent: kept").ok());
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  for (char* c = host; *c; ++c) {
    if (*c == '/' || *c == '.') *c = '_';
  }
  std::snprintf(fake, sizeof(fake), "/tmp/%s.%s.%d.999.tmp", TestId(999998).ToHex().c_str(), host,
                static_cast<int>(pid));
  ASSERT_TRUE(WriteStringToFile(dir.path() + fake, "partial").ok());
  const size_t temp_before = CountFiles(dir.path() + "/tmp");

  StoreOptions o;
  o.io_threads = 4;
  auto reopened = FileStore::Open(dir.path(), o);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  FileStore& store = **reopened;
  EXPECT_GE(store.cleaned_temp_files(), 1u);
  EXPECT_EQ(CountFiles(dir.path() + "/tmp"), 1u) << "only the other host's recent file stays";
  EXPECT_EQ(temp_before - store.cleaned_temp_files(), 1u);

  const uint64_t found = store.Stats().entries;
  EXPECT_GE(found, 64u);
  // Every block found is complete and correct; ids were dumped in order, so look a bit past.
  uint64_t loaded = 0;
  for (uint64_t i = 0; i < found + 64; ++i) {
    if (!store.Lookup(std::vector<Hash128>{TestId(i)})[0]) continue;
    std::vector<uint8_t> buf(BlockBytes(i));
    const LoadItem item{TestId(i), buf.data(), buf.size()};
    const Status s = store.Load({&item, 1}).Wait();
    ASSERT_TRUE(s.ok()) << i << ": " << s.ToString();
    ASSERT_EQ(buf, Pattern(TestId(i), BlockBytes(i))) << i;
    ++loaded;
  }
  EXPECT_EQ(loaded, found);
}

TEST(FileStoreCrashTest, KilledWriterLeavesOnlyCompleteBlocks) { RunCrashTest(false); }
TEST(FileStoreCrashTest, KilledODirectWriterLeavesOnlyCompleteBlocks) { RunCrashTest(true); }

}  // namespace
}  // namespace kvstar
