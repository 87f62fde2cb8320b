#include "kv/device_pool.h"

#include <gtest/gtest.h>

#include <set>

namespace kvstar {
namespace {

KvGeometry Geom() {
  return KvGeometry{.kv_heads = 2, .head_dim = 8, .block_tokens = 16, .dtype = DType::kBF16};
}

TEST(DevicePoolTest, AllocatesDistinctSlotsUntilFull) {
  DevicePool pool(Geom(), 5);
  EXPECT_EQ(pool.block_bytes(), 2u * 2 * 16 * 8 * 2);
  std::set<int> seen;
  for (int i = 0; i < 5; ++i) {
    auto s = pool.Allocate();
    ASSERT_TRUE(s.ok());
    EXPECT_TRUE(seen.insert(*s).second);
  }
  EXPECT_EQ(pool.free_slots(), 0u);
  auto full = pool.Allocate();
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  pool.Free(*seen.begin());
  EXPECT_TRUE(pool.Allocate().ok());
  // Slots do not overlap.
  EXPECT_EQ(static_cast<char*>(pool.slot(1)) - static_cast<char*>(pool.slot(0)),
            static_cast<ptrdiff_t>(pool.block_bytes()));
}

TEST(DevicePoolTest, BudgetToSlots) {
  EXPECT_EQ(DevicePool::SlotsForBudget(Geom(), 10 * Geom().block_bytes() + 7), 10u);
  EXPECT_EQ(DevicePool::SlotsForBudget(Geom(), 1), 1u);
}

TEST(DevicePoolDeathTest, DoubleFreeAborts) {
  DevicePool pool(Geom(), 2);
  const int s = *pool.Allocate();
  pool.Free(s);
  EXPECT_DEATH(pool.Free(s), "double free of slot");
}

}  // namespace
}  // namespace kvstar
