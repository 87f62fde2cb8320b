// The skinny products' launch choice (row tiles and k-split) as a function of the shapes: host
// code only, so CI runs it without a GPU.
#include <gtest/gtest.h>

#include <cstddef>

#include "ops/cuda/kernels.h"

namespace kvstar::cuda::internal {
namespace {

constexpr size_t kH100Sms = 132;

// Llama-3-8B's launches (hidden 4096, 8 KV heads of 128, intermediate 14336) as the engine
// issues them: q / k / v in one launch, o, gate / up fused, down.
struct Launch {
  const char* name;
  size_t rows;  // every output's rows
  size_t cols;
  bool glu;
};
constexpr Launch kLlama3[] = {{"qkv", 4096 + 2 * 1024, 4096, false},
                              {"o", 4096, 4096, false},
                              {"gate_up", 2 * 14336, 4096, true},
                              {"down", 4096, 14336, false}};

SkinnyLaunchChoice Auto(const Launch& l, size_t n, bool split_on = true, bool clusters = true) {
  return ChooseSkinnyLaunch(l.rows, l.cols, n, l.glu, 0, 0, split_on, kH100Sms, clusters);
}

// The measured defaults on the H100 (docs/BENCHMARKS.md, "Skinny products", "The k-split of the
// small products", "Row tiles of the k-split at 9-16 rows").
TEST(SkinnyShapeTest, Llama3DefaultsOnTheH100) {
  for (size_t n = 1; n <= kMaxSkinnyRows; ++n) {
    SCOPED_TRACE(n);
    // o and down: at most 32 rows per SM, so split, and 32-row tiles at every n.
    for (const Launch& l : {kLlama3[1], kLlama3[3]}) {
      EXPECT_EQ(Auto(l, n).k_split, 2) << l.name;
      EXPECT_EQ(Auto(l, n).m_tiles, 2) << l.name;
    }
    // q / k / v together: 6144 rows, more than 32 per SM: not split, 32-row tiles.
    EXPECT_EQ(Auto(kLlama3[0], n).k_split, 1);
    EXPECT_EQ(Auto(kLlama3[0], n).m_tiles, 2);
    // gate / up: not split; 16 + 16 rows per CTA up to 8 rows, 32 + 32 above.
    EXPECT_EQ(Auto(kLlama3[2], n).k_split, 1);
    EXPECT_EQ(Auto(kLlama3[2], n).m_tiles, n <= 8 ? 2 : 4);
  }
}

// Without the split, launches of up to 4096 rows take 16-row tiles at 9-16 rows (the rule
// measured before the split existed).
TEST(SkinnyShapeTest, WithoutTheSplitSmallLaunchesTakeSixteenRowTilesAboveEightRows) {
  for (bool split_on : {false, true}) {
    for (bool clusters : {false, true}) {
      if (split_on && clusters) continue;
      for (size_t n = 1; n <= kMaxSkinnyRows; ++n) {
        const SkinnyLaunchChoice o = Auto(kLlama3[1], n, split_on, clusters);
        EXPECT_EQ(o.k_split, 1);
        EXPECT_EQ(o.m_tiles, n <= 8 ? 2 : 1) << n;
      }
    }
  }
}

// The k-split depends on the rows, the columns and the device only: a row gets the same bits
// alone and in a batch, and the fused SwiGLU the bits of the two products (gate and up count
// twice either way).
TEST(SkinnyShapeTest, SplitDoesNotDependOnTheBatchOrTheTiles) {
  for (size_t rows : {size_t{1}, size_t{64}, size_t{1024}, size_t{4224}, size_t{4225}, size_t{6144},
                      size_t{28672}}) {
    for (size_t cols : {size_t{8}, size_t{32}, size_t{64}, size_t{4096}, size_t{14336}}) {
      const int first =
          ChooseSkinnyLaunch(rows, cols, 1, false, 0, 0, true, kH100Sms, true).k_split;
      EXPECT_EQ(first, rows <= 32 * kH100Sms && cols > 32 ? 2 : 1) << rows << " x " << cols;
      for (size_t n = 1; n <= kMaxSkinnyRows; ++n) {
        for (int m_tiles : {0, 1, 2, 4}) {
          for (bool glu : {false, true}) {
            EXPECT_EQ(
                ChooseSkinnyLaunch(rows, cols, n, glu, m_tiles, 0, true, kH100Sms, true).k_split,
                first)
                << rows << " x " << cols << " n " << n << " m_tiles " << m_tiles;
          }
        }
      }
    }
  }
}

// Explicit choices are kept where the device and shape allow them.
TEST(SkinnyShapeTest, ExplicitChoices) {
  // k_split 1 and 2 as asked, with clusters and two k-steps at least.
  EXPECT_EQ(ChooseSkinnyLaunch(4096, 4096, 4, false, 0, 1, true, kH100Sms, true).k_split, 1);
  EXPECT_EQ(ChooseSkinnyLaunch(28672, 4096, 4, false, 0, 2, false, kH100Sms, true).k_split, 2);
  // No clusters (an image older than sm_90) or a single k-step (32 columns): never split.
  EXPECT_EQ(ChooseSkinnyLaunch(4096, 4096, 4, false, 0, 2, true, kH100Sms, false).k_split, 1);
  EXPECT_EQ(ChooseSkinnyLaunch(64, 32, 4, false, 0, 2, true, kH100Sms, true).k_split, 1);
  // Tiles as asked; with glu a CTA takes whole m-tiles of gate and up, so at least 2.
  for (int m_tiles : {1, 2, 4}) {
    EXPECT_EQ(ChooseSkinnyLaunch(4096, 4096, 12, false, m_tiles, 0, true, kH100Sms, true).m_tiles,
              m_tiles);
    EXPECT_EQ(ChooseSkinnyLaunch(4096, 4096, 12, true, m_tiles, 0, true, kH100Sms, true).m_tiles,
              m_tiles == 1 ? 2 : m_tiles);
  }
  // A device of unknown size (0 multiprocessors) splits nothing by default.
  EXPECT_EQ(ChooseSkinnyLaunch(4096, 4096, 4, false, 0, 0, true, 0, true).k_split, 1);
}

}  // namespace
}  // namespace kvstar::cuda::internal
