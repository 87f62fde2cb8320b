#include "base/hash.h"

#include <gtest/gtest.h>

namespace kvstar {
namespace {

TEST(HashTest, DeterministicAndSensitive) {
  const char a[] = "hello world";
  const Hash128 h1 = HashBytes(a, sizeof(a));
  EXPECT_EQ(h1, HashBytes(a, sizeof(a)));
  EXPECT_NE(h1, HashBytes(a, sizeof(a) - 1));
  EXPECT_NE(h1, HashBytes(a, sizeof(a), /*seed=*/1));
  EXPECT_NE(HashChain(h1, a, 5), HashChain(Hash128{}, a, 5));
  EXPECT_EQ(HashChain(h1, a, 5), HashChain(h1, a, 5));
}

TEST(HashTest, HexRoundTrip) {
  const Hash128 h{0x0123456789abcdefull, 0xfedcba9876543210ull};
  EXPECT_EQ(h.ToHex(), "fedcba98765432100123456789abcdef");
  Hash128 back;
  ASSERT_TRUE(Hash128::FromHex(h.ToHex(), &back));
  EXPECT_EQ(back, h);
  EXPECT_FALSE(Hash128::FromHex("xyz", &back));
  EXPECT_FALSE(Hash128::FromHex("../../../../etc/passwd0000000000", &back));
}

}  // namespace
}  // namespace kvstar
