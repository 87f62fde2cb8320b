#include "sparse/channel_importance.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace kvstar::sparse {
namespace {

// One f32 block whose K of head h, token t, channel c is fn(h, t, c).
template <typename Fn>
std::vector<float> MakeBlock(const KvGeometry& g, Fn fn) {
  std::vector<float> b(g.elements_per_block(), 1000.0f);  // V half: large, must be ignored
  for (size_t h = 0; h < g.kv_heads; ++h) {
    for (size_t t = 0; t < g.block_tokens; ++t) {
      for (size_t c = 0; c < g.head_dim; ++c) b[g.offset(0, h, t) + c] = fn(h, t, c);
    }
  }
  return b;
}

TEST(PrunedDim, RoundsAndKeepsAllAboveThreshold) {
  EXPECT_EQ(*PrunedDim(128, 0.25), 32u);
  EXPECT_EQ(*PrunedDim(80, 0.3), 24u);
  EXPECT_EQ(*PrunedDim(64, 0.3), 19u);  // 19.2
  EXPECT_EQ(*PrunedDim(128, 0.98), 128u);
  EXPECT_EQ(*PrunedDim(128, 0.97), 124u);
  EXPECT_EQ(PrunedDim(64, 0.0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PrunedDim(64, 1.5).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PrunedDim(64, 0.001).status().code(), StatusCode::kInvalidArgument);
}

TEST(ChannelImportance, KeepsLargestMeanAbsSortedAscending) {
  const KvGeometry g{.kv_heads = 2, .head_dim = 8, .block_tokens = 4, .dtype = DType::kF32};
  ChannelImportanceAccumulator acc(2, 8, 0.5);  // keep 4 of 8
  // Head 0: importance = |c - 3.2| (signs alternate, so mean |k| differs from |mean k|).
  // Head 1: channel 7 huge but only in the invalid tail tokens.
  auto block = MakeBlock(g, [](size_t h, size_t t, size_t c) -> float {
    const float sign = (t % 2) ? -1.0f : 1.0f;
    if (h == 0) return sign * std::fabs(float(c) - 3.2f);
    if (c == 7 && t >= 2) return 1e6f;
    return sign * float(c % 4);
  });
  ASSERT_TRUE(acc.AddBlock(block.data(), g, 2).ok());
  auto idx = acc.Finalize();
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ(idx->d_pruned, 4u);
  // Head 0: |c-3.2| = 3.2 2.2 1.2 .2 .8 1.8 2.8 3.8 -> top 4: 7, 0, 6, 1.
  EXPECT_EQ(std::vector<uint16_t>(idx->head(0), idx->head(0) + 4),
            (std::vector<uint16_t>{0, 1, 6, 7}));
  // Head 1: c%4 = 0 1 2 3 0 1 2 3 -> 3 and 7, then ties of 2: lower index (2, 6).
  EXPECT_EQ(std::vector<uint16_t>(idx->head(1), idx->head(1) + 4),
            (std::vector<uint16_t>{2, 3, 6, 7}));
  EXPECT_TRUE(idx->Validate().ok());
}

TEST(ChannelImportance, TiesGoToLowerIndexAndNoPruningAtHighRatio) {
  const KvGeometry g{.kv_heads = 1, .head_dim = 10, .block_tokens = 2, .dtype = DType::kBF16};
  std::vector<bf16_t> block(g.elements_per_block(), F32ToBF16(1.0f));
  ChannelImportanceAccumulator acc(1, 10, 0.3);
  ASSERT_TRUE(acc.AddBlock(block.data(), g).ok());
  auto idx = acc.Finalize();
  ASSERT_TRUE(idx.ok());
  EXPECT_EQ(idx->channels, (std::vector<uint16_t>{0, 1, 2}));

  ChannelImportanceAccumulator all(1, 10, 0.99);
  ASSERT_TRUE(all.AddBlock(block.data(), g).ok());
  EXPECT_EQ(all.Finalize()->channels, ChannelIndex::Identity(1, 10).channels);
}

TEST(ChannelImportance, MeanOverBlocksAndErrors) {
  const KvGeometry g{.kv_heads = 1, .head_dim = 4, .block_tokens = 2, .dtype = DType::kF32};
  ChannelImportanceAccumulator acc(1, 4, 0.5);
  EXPECT_EQ(acc.Finalize().status().code(), StatusCode::kFailedPrecondition);
  auto b1 = MakeBlock(g, [](size_t, size_t, size_t c) { return c == 0 ? 10.0f : 1.0f; });
  auto b2 = MakeBlock(g, [](size_t, size_t, size_t c) { return c == 3 ? -4.0f : 2.0f; });
  ASSERT_TRUE(acc.AddBlock(b1.data(), g).ok());
  ASSERT_TRUE(acc.AddBlock(b2.data(), g, 1).ok());
  const auto imp = acc.Importance();
  ASSERT_EQ(imp.size(), 4u);
  EXPECT_DOUBLE_EQ(imp[0], (10 + 10 + 2) / 3.0);
  EXPECT_DOUBLE_EQ(imp[3], (1 + 1 + 4) / 3.0);
  EXPECT_EQ(acc.Finalize()->channels, (std::vector<uint16_t>{0, 3}));

  const KvGeometry wrong{.kv_heads = 2, .head_dim = 4, .block_tokens = 2, .dtype = DType::kF32};
  EXPECT_EQ(acc.AddBlock(b1.data(), wrong).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(acc.AddBlock(b1.data(), g, 3).code(), StatusCode::kInvalidArgument);

  ChannelImportanceAccumulator bad(1, 4, 0.5);
  auto nan = MakeBlock(g, [](size_t, size_t, size_t c) {
    return c == 1 ? std::numeric_limits<float>::quiet_NaN() : 1.0f;
  });
  ASSERT_TRUE(bad.AddBlock(nan.data(), g).ok());
  EXPECT_EQ(bad.Finalize().status().code(), StatusCode::kInvalidArgument);
}

TEST(ChannelIndex, ValidateRejectsBadLists) {
  ChannelIndex idx = ChannelIndex::Identity(2, 4);
  EXPECT_TRUE(idx.Validate().ok());
  idx.channels[1] = 0;
  EXPECT_FALSE(idx.Validate().ok());
  idx = ChannelIndex::Identity(2, 4);
  idx.channels.pop_back();
  EXPECT_FALSE(idx.Validate().ok());
}

}  // namespace
}  // namespace kvstar::sparse
