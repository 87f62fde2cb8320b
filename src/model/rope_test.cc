#include "model/rope.h"

#include <gtest/gtest.h>

#include <cmath>

#include "model/shapes.h"

namespace kvstar {
namespace {

ModelConfig RopeConfig(size_t head_dim, double theta) {
  ModelConfig c;
  c.hidden_size = head_dim;
  c.num_heads = 1;
  c.num_kv_heads = 1;
  c.head_dim = head_dim;
  c.rope_theta = theta;
  return c;
}

TEST(RopeTest, DefaultFrequencies) {
  // head_dim 4: exponents 0 and 0.5 -> 1 and 1/sqrt(theta).
  auto f = RopeInvFreq(RopeConfig(4, 10000.0));
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], 0.01f);
  // head_dim 8, theta 10000: 10000^(-i/4) = 1, 0.1, 0.01, 0.001.
  auto g = RopeInvFreq(RopeConfig(8, 10000.0));
  ASSERT_EQ(g.size(), 4u);
  const double expect[] = {1.0, 0.1, 0.01, 0.001};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(g[i], expect[i], expect[i] * 2e-7) << i;
  // head_dim 128: inv_freq[i] = theta^(-2i/128), in float.
  auto h = RopeInvFreq(RopeConfig(128, 500000.0));
  ASSERT_EQ(h.size(), 64u);
  for (size_t i = 0; i < 64; ++i) {
    const double want = 1.0 / std::pow(500000.0, (2.0 * i) / 128.0);
    EXPECT_NEAR(h[i], want, want * 3e-7) << i;
  }
}

TEST(RopeTest, LinearScalingDividesByFactor) {
  ModelConfig c = RopeConfig(8, 10000.0);
  const auto base = RopeInvFreq(c);
  c.rope_scaling.type = "linear";
  c.rope_scaling.factor = 4.0;
  const auto scaled = RopeInvFreq(c);
  for (size_t i = 0; i < base.size(); ++i) EXPECT_EQ(scaled[i], base[i] / 4.0f);
  c.rope_scaling.type = "default";  // no change
  EXPECT_EQ(RopeInvFreq(c), base);
}

// Llama-3 scaling, factor 8, low 1, high 4, original context 8192:
//   wavelen < 2048 (high-frequency): unchanged; wavelen > 8192 (low-frequency): / 8;
//   in between: (1 - s) * f / 8 + s * f with s = (8192 / wavelen - 1) / 3.
TEST(RopeTest, Llama3ScalingBands) {
  ModelConfig c = RopeConfig(4, 1e6);  // inv_freq = {1, 1e-3}: wavelen 6.28 and 6283 (medium)
  c.rope_scaling = {.type = "llama3",
                    .factor = 8,
                    .low_freq_factor = 1,
                    .high_freq_factor = 4,
                    .original_max_position_embeddings = 8192};
  auto f = RopeInvFreq(c);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0], 1.0f);  // high frequency: untouched
  const double inv = 1e-3, wavelen = 2 * M_PI / inv;
  const double s = (8192.0 / wavelen - 1.0) / 3.0;
  const double medium = (1 - s) * inv / 8 + s * inv;  // = 2.1361e-4
  EXPECT_NEAR(f[1], medium, medium * 1e-5);
  EXPECT_NEAR(f[1], 2.1361e-4, 1e-7);

  c.rope_theta = 1e8;  // inv_freq = {1, 1e-4}: wavelen 62832 > 8192 -> low frequency
  f = RopeInvFreq(c);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_NEAR(f[1], 1e-4 / 8, 1e-4 / 8 * 1e-6);

  c.rope_theta = 1e4;  // inv_freq = {1, 1e-2}: wavelen 628 < 2048 -> high frequency
  f = RopeInvFreq(c);
  EXPECT_EQ(f[1], 0.01f);
}

TEST(RopeTest, Llama31EightBMonotoneAndBanded) {
  auto cfg = NamedShape("llama3-8b");
  ASSERT_TRUE(cfg.ok());
  const auto f = RopeInvFreq(*cfg);
  ASSERT_EQ(f.size(), 64u);
  ModelConfig plain = *cfg;
  plain.rope_scaling = {};
  const auto p = RopeInvFreq(plain);
  int high = 0, low = 0, medium = 0;
  for (size_t i = 0; i < 64; ++i) {
    const double wavelen = 2 * M_PI / p[i];
    if (wavelen < 2048) {
      EXPECT_EQ(f[i], p[i]) << i;
      ++high;
    } else if (wavelen > 8192) {
      EXPECT_EQ(f[i], p[i] / 8.0f) << i;
      ++low;
    } else {
      EXPECT_LT(f[i], p[i]) << i;
      EXPECT_GT(f[i], p[i] / 8.0f) << i;
      ++medium;
    }
    if (i > 0) {
      EXPECT_LT(f[i], f[i - 1]) << i;
    }
  }
  // Llama-3.1-8B: the first 29 pairs are high-frequency, 6 medium, 29 low.
  EXPECT_EQ(high, 29);
  EXPECT_EQ(medium, 6);
  EXPECT_EQ(low, 29);
}

}  // namespace
}  // namespace kvstar
