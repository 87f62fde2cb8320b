#include "kv/host_homes.h"

#include <gtest/gtest.h>

#include <set>
#include <thread>
#include <vector>

namespace kvstar {
namespace {

TEST(HostHomesTest, InclusiveHomesAreFixedAndNeverReleased) {
  HostHomes h(2, 3, 5, 0, false);
  EXPECT_FALSE(h.exclusive());
  EXPECT_EQ(h.homes_per_layer(), 15u);
  for (size_t l = 0; l < 2; ++l) {
    for (size_t s = 0; s < 3; ++s) {
      for (size_t b = 0; b < 5; ++b) {
        EXPECT_EQ(h.home(l, s, b), static_cast<int32_t>(s * 5 + b));
        auto a = h.Acquire(l, s, b);
        ASSERT_TRUE(a.ok());
        EXPECT_EQ(*a, static_cast<int32_t>(s * 5 + b));
        h.Release(l, s, b);
        EXPECT_EQ(h.home(l, s, b), static_cast<int32_t>(s * 5 + b));
      }
    }
  }
}

TEST(HostHomesTest, ExclusiveAcquireReleaseAndExhaustion) {
  HostHomes h(2, 2, 8, 4, true);
  EXPECT_EQ(h.home(0, 0, 3), -1);
  // A fresh layer hands out contiguous homes 0, 1, 2, 3.
  for (int b = 0; b < 4; ++b) {
    auto a = h.Acquire(0, 1, static_cast<size_t>(b));
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(*a, b);
  }
  EXPECT_EQ(h.used(0), 4u);
  EXPECT_EQ(h.used(1), 0u);
  // Acquiring a block that has a home returns it; a full layer refuses a new block.
  EXPECT_EQ(*h.Acquire(0, 1, 2), 2);
  auto full = h.Acquire(0, 0, 7);
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("layer 0"), std::string::npos);
  // Another layer has its own homes.
  EXPECT_TRUE(h.Acquire(1, 0, 7).ok());
  // Released homes are reused; a block without a home releases nothing.
  h.Release(0, 1, 2);
  h.Release(0, 1, 2);
  h.Release(0, 0, 5);
  EXPECT_EQ(h.home(0, 1, 2), -1);
  EXPECT_EQ(h.used(0), 3u);
  auto again = h.Acquire(0, 0, 7);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 2);
  // No two blocks share a home.
  std::set<int32_t> seen;
  for (size_t s = 0; s < 2; ++s) {
    for (size_t b = 0; b < 8; ++b) {
      if (h.home(0, s, b) >= 0) {
        EXPECT_TRUE(seen.insert(h.home(0, s, b)).second);
      }
    }
  }
  EXPECT_EQ(seen.size(), 4u);
}

TEST(HostHomesTest, TransferMovesAHomeToABlockWithout) {
  HostHomes h(1, 1, 4, 2, true);
  ASSERT_TRUE(h.Acquire(0, 0, 1).ok());
  const int32_t home = h.home(0, 0, 1);
  // Block 1 goes to the device, block 3 leaves it and takes block 1's home.
  ASSERT_TRUE(h.Transfer(0, 0, 1, 3).ok());
  EXPECT_EQ(h.home(0, 0, 1), -1);
  EXPECT_EQ(h.home(0, 0, 3), home);
  EXPECT_EQ(h.used(0), 1u);
  // Nothing to move, or a target that already has a home: refused, nothing changes.
  EXPECT_EQ(h.Transfer(0, 0, 1, 2).code(), StatusCode::kInternal);
  ASSERT_TRUE(h.Acquire(0, 0, 0).ok());
  EXPECT_EQ(h.Transfer(0, 0, 0, 3).code(), StatusCode::kInternal);
  EXPECT_EQ(h.home(0, 0, 3), home);
  // Inclusive homes are fixed: a transfer is refused.
  HostHomes inc(1, 1, 4, 0, false);
  EXPECT_EQ(inc.Transfer(0, 0, 1, 3).code(), StatusCode::kInternal);
}

TEST(HostHomesTest, ExclusiveSizeCoversOneSetupAndTheOthersSteadyState) {
  // 1000 blocks, 260 on the device, 6 of slack: the sequence being set up holds 1000 + 6, the
  // 3 others 746 each.
  EXPECT_EQ(HostHomes::ExclusiveHomesPerLayer(4, 1000, 260, 6), 3 * 746 + 1006u);
  // Never more than the inclusive arena.
  EXPECT_EQ(HostHomes::ExclusiveHomesPerLayer(4, 10, 2, 6), 40u);
  EXPECT_EQ(HostHomes::ExclusiveHomesPerLayer(1, 1000, 260, 6), 1000u);
  // Simulate: sequences set up one after another, then each keeps max - resident.
  const size_t B = 4, M = 1000, R = 260, S = 6;
  HostHomes h(1, B, M, HostHomes::ExclusiveHomesPerLayer(B, M, R, S), true);
  for (size_t s = 0; s < B; ++s) {
    for (size_t b = 0; b < M; ++b) ASSERT_TRUE(h.Acquire(0, s, b).ok()) << s << " " << b;
    for (size_t b = 0; b < R; ++b) h.Release(0, s, b);
    for (size_t b = 0; b < S; ++b) ASSERT_TRUE(h.Acquire(0, s, b).ok());  // transient holds
    for (size_t b = 0; b < S; ++b) h.Release(0, s, b);
  }
  EXPECT_EQ(h.used(0), B * (M - R));
}

// The CUDA engine's window threads stage different layers at once: calls for different layers
// touch only that layer's homes. Each thread churns its own layer; every layer ends in the same
// state as the same calls made on one thread (run under the asan / tsan presets too).
TEST(HostHomesTest, DifferentLayersFromDifferentThreads) {
  const size_t L = 4, B = 2, M = 64, homes = B * M;
  auto churn = [&](HostHomes& h, size_t l, int& failures) {
    for (int round = 0; round < 4000; ++round) {
      const size_t s = round % B, b = (round * 7 + l) % M;
      if (!h.Acquire(l, s, b).ok()) ++failures;
      if (round % 3 == 0) h.Release(l, s, b);
      const size_t to = (b + 1) % M;
      if (h.home(l, s, b) >= 0 && h.home(l, s, to) < 0 && !h.Transfer(l, s, b, to).ok()) {
        ++failures;
      }
    }
  };
  HostHomes parallel(L, B, M, homes, true), serial(L, B, M, homes, true);
  std::vector<int> failures(L, 0), serial_failures(L, 0);
  std::vector<std::thread> threads;
  for (size_t l = 0; l < L; ++l) {
    threads.emplace_back([&, l] { churn(parallel, l, failures[l]); });
  }
  for (auto& t : threads) t.join();
  for (size_t l = 0; l < L; ++l) churn(serial, l, serial_failures[l]);
  for (size_t l = 0; l < L; ++l) {
    EXPECT_EQ(failures[l], 0) << "layer " << l;
    EXPECT_EQ(serial_failures[l], 0) << "layer " << l;
    EXPECT_EQ(parallel.used(l), serial.used(l)) << "layer " << l;
    EXPECT_GT(parallel.used(l), 0u) << "layer " << l;
    for (size_t s = 0; s < B; ++s) {
      for (size_t b = 0; b < M; ++b) {
        ASSERT_EQ(parallel.home(l, s, b), serial.home(l, s, b)) << l << " " << s << " " << b;
      }
    }
  }
}

}  // namespace
}  // namespace kvstar
