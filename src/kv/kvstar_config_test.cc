#include "kv/kvstar_config.h"

#include <gtest/gtest.h>

namespace kvstar {
namespace {

TEST(KvstarConfigTest, DefaultsAreUcms) {
  const KvstarConfig c;
  EXPECT_EQ(c.init_window_sz, 1u);
  EXPECT_EQ(c.local_window_sz, 2u);
  EXPECT_DOUBLE_EQ(c.sparse_ratio, 0.25);
  EXPECT_EQ(c.retrieval_stride, 8u);
  EXPECT_DOUBLE_EQ(c.blk_repre_dim_prune_ratio, 0.25);
  EXPECT_EQ(c.blk_repre_inner_token_merge, 2u);
  EXPECT_TRUE(c.Validate(128).ok());
}

TEST(KvstarConfigTest, ParsesUcmKeysAndRejectsBadOnes) {
  auto c = ParseKvstarConfig(
      R"({"init_window_sz": 2, "local_window_sz": 4, "sparse_ratio": 0.125,
          "retrieval_stride": 32, "blk_repre_dim_prune_ratio": 0.5,
          "blk_repre_inner_token_merge": 4, "select_per_kv_head": true, "deterministic": true,
          "staging_slots": 8, "max_loads_per_step": 3, "prompt_query_window": 64,
          "block_tokens": 128})",
      "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->init_window_sz, 2u);
  EXPECT_EQ(c->local_window_sz, 4u);
  EXPECT_DOUBLE_EQ(c->sparse_ratio, 0.125);
  EXPECT_EQ(c->retrieval_stride, 32u);
  EXPECT_TRUE(c->select_per_kv_head);
  EXPECT_TRUE(c->deterministic);
  EXPECT_EQ(c->staging_slots, 8u);
  EXPECT_EQ(c->max_loads_per_step, 3u);
  EXPECT_EQ(KvstarConfig{}.max_loads_per_step, 0u);  // the whole delta at once
  // ToJson round-trips.
  auto again = ParseKvstarConfig(c->ToJson(), "json");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->max_loads_per_step, 3u);
  EXPECT_EQ(c->prompt_queries(), 64u);
  EXPECT_EQ(KvstarConfig{}.prompt_queries(), 8u);  // UCM: the last retrieval_stride queries

  auto unknown = ParseKvstarConfig(R"({"sparse_ration": 0.3})", "cfg.json");
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("sparse_ration"), std::string::npos);
  EXPECT_FALSE(ParseKvstarConfig(R"({"retrieval_stride": -1})", "x").ok());
  EXPECT_FALSE(ParseKvstarConfig(R"({"deterministic": 1})", "x").ok());
  EXPECT_FALSE(ParseKvstarConfig("[1,2]", "x").ok());
  EXPECT_FALSE(ParseKvstarConfig("{", "x").ok());

  KvstarConfig bad;
  bad.sparse_ratio = 0;
  EXPECT_FALSE(bad.Validate(128).ok());
  bad = {};
  bad.blk_repre_inner_token_merge = 3;
  EXPECT_FALSE(bad.Validate(128).ok());
  bad = {};
  bad.retrieval_stride = 0;
  EXPECT_FALSE(bad.Validate(128).ok());
  bad = {};
  bad.max_loads_per_step = 5000;
  EXPECT_FALSE(bad.Validate(128).ok());
  bad = {};
  bad.max_loads_per_step = 2;
  EXPECT_TRUE(bad.Validate(128).ok());
  bad.deterministic = true;  // the deterministic schedule applies whole selections
  EXPECT_FALSE(bad.Validate(128).ok());
}

}  // namespace
}  // namespace kvstar
