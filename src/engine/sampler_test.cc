#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>

namespace kvstar {
namespace {

TEST(SamplerTest, GreedyPicksArgmaxLowestIdOnTies) {
  Sampler s(SamplingParams{});
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(*s.Sample(logits), 1);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(*s.Sample(std::vector<float>{nan, 0.5f, nan}), 1);
  EXPECT_FALSE(s.Sample(std::vector<float>{nan, nan}).ok());
}

TEST(SamplerTest, SeededSamplingIsReproducibleAndFollowsDistribution) {
  SamplingParams p{.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 7};
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  Sampler a(p), b(p);
  std::map<int, int> counts;
  for (int i = 0; i < 20000; ++i) {
    const int32_t x = *a.Sample(logits);
    EXPECT_EQ(x, *b.Sample(logits));
    counts[x]++;
  }
  EXPECT_NEAR(counts[0] / 20000.0, 0.5, 0.02);
  EXPECT_NEAR(counts[1] / 20000.0, 0.3, 0.02);
  EXPECT_NEAR(counts[2] / 20000.0, 0.2, 0.02);
}

TEST(SamplerTest, TopKAndTopPRestrictCandidates) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f),
                                     std::log(0.05f)};
  Sampler topk(SamplingParams{.temperature = 1.0f, .top_k = 2, .top_p = 1.0f, .seed = 1});
  Sampler topp(SamplingParams{.temperature = 1.0f, .top_k = 0, .top_p = 0.7f, .seed = 1});
  for (int i = 0; i < 2000; ++i) {
    EXPECT_LT(*topk.Sample(logits), 2);
    EXPECT_LT(*topp.Sample(logits), 2);  // 0.5 + 0.3 >= 0.7: ids 0 and 1 only
  }
}

TEST(SamplerTest, RejectsBadParams) {
  EXPECT_FALSE(ValidateSamplingParams({.temperature = -1.0f}).ok());
  EXPECT_FALSE(ValidateSamplingParams({.temperature = 1.0f, .top_k = -3}).ok());
  EXPECT_FALSE(ValidateSamplingParams({.temperature = 1.0f, .top_k = 0, .top_p = 0.0f}).ok());
  EXPECT_FALSE(ValidateSamplingParams({.temperature = 1.0f, .top_k = 0, .top_p = 1.5f}).ok());
  EXPECT_TRUE(ValidateSamplingParams({.temperature = 0.7f, .top_k = 40, .top_p = 0.9f}).ok());
}

}  // namespace
}  // namespace kvstar
