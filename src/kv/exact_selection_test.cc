#include "kv/exact_selection.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace kvstar {
namespace {

TEST(ExactSelectionTest, FindsThePlantedBlockAndVotesDiffer) {
  // 2 KV heads, 4 query heads (group 2), 10 blocks of 8 tokens, f32 keys.
  const KvGeometry g{.kv_heads = 2, .head_dim = 16, .block_tokens = 8, .dtype = DType::kF32};
  const size_t blocks = 10, q_heads = 4;
  std::vector<std::vector<float>> data(blocks, std::vector<float>(g.elements_per_block()));
  std::mt19937 rng(1);
  std::normal_distribution<float> noise(0.f, 0.1f);
  for (auto& b : data)
    for (float& x : b) x = noise(rng);
  std::vector<float> q(q_heads * g.head_dim, 0.f);
  // Query head 0 (KV head 0) looks for direction e0; block 6 token 3 holds it strongly.
  q[0] = 8.f;
  data[6][g.offset(0, 0, 3) + 0] = 8.f;
  // Query heads 2 and 3 (KV head 1) spread their mass over blocks 1..3 moderately.
  for (size_t h : {2u, 3u}) q[h * g.head_dim + 5] = 1.f;
  for (size_t b = 1; b <= 3; ++b)
    for (size_t t = 0; t < 8; ++t) data[b][g.offset(0, 1, t) + 5] = 3.f;
  std::vector<const void*> ptrs;
  for (auto& b : data) ptrs.push_back(b.data());
  std::vector<uint32_t> candidates = {1, 2, 3, 4, 5, 6, 7};
  const float scale = 1.0f / 4.0f;
  auto max_sel = ExactSelection(g, q.data(), 1, q_heads, scale, ptrs.data(), blocks * 8,
                                candidates, 1, BlockVote::kMax);
  ASSERT_EQ(max_sel.size(), 1u);
  EXPECT_EQ(max_sel[0], 6u);
  auto sum_sel = ExactSelection(g, q.data(), 1, q_heads, scale, ptrs.data(), blocks * 8,
                                candidates, 3, BlockVote::kSum);
  EXPECT_EQ(sum_sel.size(), 3u);
  // Only candidates are returned, ascending; k larger than the candidates returns them all.
  auto all = ExactSelection(g, q.data(), 1, q_heads, scale, ptrs.data(), blocks * 8, candidates,
                            100, BlockVote::kSum);
  EXPECT_EQ(all, candidates);
  EXPECT_TRUE(ExactSelection(g, q.data(), 1, q_heads, scale, ptrs.data(), blocks * 8, candidates,
                             0, BlockVote::kSum)
                  .empty());
}

}  // namespace
}  // namespace kvstar
