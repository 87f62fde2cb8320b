// ScoreBlocks' host-side choices and shape checks (no kernel launch: runs without a GPU, in CI).
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "ops/cuda/ops.h"

namespace kvstar::cuda {
namespace {

// The engine's shape at 128K: 1020 candidates per (layer, sequence), 8 KV heads, 32 / 8 heads.
BlockScoreArgs EngineArgs(size_t tasks) {
  BlockScoreArgs a;
  a.num_tasks = tasks;
  a.max_candidates = 1020;
  a.num_queries = 8;
  a.q_heads = 32;
  a.kv_heads = 8;
  a.head_dim = 128;
  a.query_stride = 32 * 128;
  a.d_pruned = 32;
  a.vectors_per_block = 64;
  return a;
}

// Auto: 128 blocks per work item, halved (not below 16) while the grid would have fewer than
// 4096 work items.
TEST(BlockScoreShapeTest, AutoWorkItemKeepsTheGridLarge) {
  EXPECT_EQ(BlockScoreBlocksPerCta(EngineArgs(256)), 128u);  // 8 x 8 x 256 = 16384 items
  EXPECT_EQ(BlockScoreBlocksPerCta(EngineArgs(64)), 128u);   // 8 x 8 x 64 = 4096
  EXPECT_EQ(BlockScoreBlocksPerCta(EngineArgs(32)), 64u);    // 8 x 16 x 32 = 4096
  EXPECT_EQ(BlockScoreBlocksPerCta(EngineArgs(8)), 16u);     // the floor
  BlockScoreArgs a = EngineArgs(1);
  a.max_candidates = 3;
  EXPECT_EQ(BlockScoreBlocksPerCta(a), 16u);
  a.blocks_per_cta = 7;  // an explicit value is kept
  EXPECT_EQ(BlockScoreBlocksPerCta(a), 7u);
  EXPECT_TRUE(ValidateBlockScoreShape(a).ok());
}

TEST(BlockScoreShapeTest, WorkItemSizeIsChecked) {
  BlockScoreArgs a = EngineArgs(256);
  for (size_t per_cta : {size_t{0}, size_t{1}, size_t{1024}}) {
    a.blocks_per_cta = per_cta;
    EXPECT_TRUE(ValidateBlockScoreShape(a).ok()) << per_cta;
  }
  a.blocks_per_cta = 1025;
  EXPECT_EQ(ValidateBlockScoreShape(a).code(), StatusCode::kInvalidArgument);
  // The grid's chunk dimension: 70000 candidates are 70000 chunks of 1 (over 65535), 547 of auto.
  a.max_candidates = 70000;
  a.blocks_per_cta = 1;
  const Status s = ValidateBlockScoreShape(a);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.ToString().find("70000 chunks of 1"), std::string::npos) << s.ToString();
  a.blocks_per_cta = 0;
  EXPECT_TRUE(ValidateBlockScoreShape(a).ok());
}

TEST(BlockScoreShapeTest, StagesAreZeroOrThree) {
  BlockScoreArgs a = EngineArgs(256);
  for (int stages : {0, 3}) {
    a.stages = stages;
    EXPECT_TRUE(ValidateBlockScoreShape(a).ok()) << stages;
  }
  for (int stages : {-1, 1, 2, 4}) {
    a.stages = stages;
    const Status s = ValidateBlockScoreShape(a);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << stages;
    EXPECT_NE(s.ToString().find("stages"), std::string::npos) << s.ToString();
  }
}

// Element (block, vector, head, channel) moves to [block][head][vector][channel].
TEST(BlockScoreShapeTest, HeadMajorCopyTransposesEachBlock) {
  const size_t blocks = 3, vectors = 5, heads = 4, dp = 7;
  std::vector<uint16_t> src(blocks * vectors * heads * dp), dst(src.size(), 0xffff);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint16_t>(i);
  RepresentationsToHeadMajor(src.data(), blocks, vectors, heads, dp, dst.data());
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t v = 0; v < vectors; ++v) {
      for (size_t h = 0; h < heads; ++h) {
        for (size_t c = 0; c < dp; ++c) {
          const size_t from = ((b * vectors + v) * heads + h) * dp + c;
          const size_t to = ((b * heads + h) * vectors + v) * dp + c;
          ASSERT_EQ(dst[to], src[from]) << b << " " << v << " " << h << " " << c;
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvstar::cuda
