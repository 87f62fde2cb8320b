#include "base/half.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

namespace kvstar {
namespace {

// Reference: exact rounding through double arithmetic on the representable grid.
TEST(HalfTest, BF16RoundTripAndRounding) {
  EXPECT_EQ(F32ToBF16(1.0f).bits, 0x3f80);
  EXPECT_EQ(BF16ToF32(bf16_t{0x3f80}), 1.0f);
  // 1 + 2^-8 is exactly halfway between 1 and 1+2^-7: ties to even (1.0).
  EXPECT_EQ(F32ToBF16(1.0f + std::ldexp(1.0f, -8)).bits, 0x3f80);
  // 1 + 3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 (even): rounds up.
  EXPECT_EQ(F32ToBF16(1.0f + 3 * std::ldexp(1.0f, -8)).bits, 0x3f82);
  EXPECT_TRUE(std::isnan(BF16ToF32(F32ToBF16(std::numeric_limits<float>::quiet_NaN()))));
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1000.f, 1000.f);
  for (int i = 0; i < 10000; ++i) {
    const float x = dist(rng);
    const float y = BF16ToF32(F32ToBF16(x));
    EXPECT_LE(std::fabs(x - y), std::fabs(x) * std::ldexp(1.0f, -8)) << x;
  }
}

TEST(HalfTest, F16MatchesExhaustiveRoundTrip) {
  // Every finite f16 value converts to f32 and back to itself.
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const f16_t h{static_cast<uint16_t>(b)};
    const float f = F16ToF32(h);
    if (std::isnan(f)) {
      EXPECT_EQ(b & 0x7c00u, 0x7c00u);
      EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(f))));
      continue;
    }
    EXPECT_EQ(F32ToF16(f).bits, b) << std::hex << b;
  }
}

TEST(HalfTest, F16RoundsToNearest) {
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> expo(-26.f, 16.f);
  for (int i = 0; i < 20000; ++i) {
    const float x = std::exp2(expo(rng)) * ((i & 1) ? -1.f : 1.f);
    const f16_t h = F32ToF16(x);
    const float y = F16ToF32(h);
    // Neighbours of h: the error must not exceed the distance to either neighbour.
    const float up = F16ToF32(f16_t{static_cast<uint16_t>(h.bits + 1)});
    const float down = (h.bits & 0x7fff) ? F16ToF32(f16_t{static_cast<uint16_t>(h.bits - 1)}) : y;
    if (std::isinf(y)) continue;
    EXPECT_LE(std::fabs(x - y), std::fabs(x - up) + 1e-30f) << x;
    EXPECT_LE(std::fabs(x - y), std::fabs(x - down) + 1e-30f) << x;
  }
  EXPECT_TRUE(std::isinf(F16ToF32(F32ToF16(70000.f))));
  EXPECT_EQ(F16ToF32(F32ToF16(65504.f)), 65504.f);
}

}  // namespace
}  // namespace kvstar
