#include "base/file_util.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace kvstar {
namespace {

TEST(FileUtilTest, WriteReadMap) {
  char tmpl[] = "/tmp/kvstar_file_util_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/f.bin";
  ASSERT_TRUE(WriteStringToFile(path, "abc\0def").ok());
  auto read = ReadFileToString(path);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, "abc");
  auto map = MappedFile::Open(path);
  ASSERT_TRUE(map.ok());
  ASSERT_EQ(map->size(), 3u);
  EXPECT_EQ(map->data()[2], 'c');
  EXPECT_EQ(ReadFileToString(std::string(tmpl) + "/missing").status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(MappedFile::Open(std::string(tmpl) + "/missing").status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(ReadFileToString(tmpl).status().code(), StatusCode::kInvalidArgument);
  std::system((std::string("rm -rf ") + tmpl).c_str());
}

}  // namespace
}  // namespace kvstar
