#include "kv/exact_selection.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "base/half.h"

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
  auto max_sel = ExactSelection(g, q.data(), 1, q_heads, scale, ptrs.data(), blocks * 8, candidates,
                                1, BlockVote::kMax);
  ASSERT_EQ(max_sel.size(), 1u);
  EXPECT_EQ(max_sel[0], 6u);
  auto sum_sel = ExactSelection(g, q.data(), 1, q_heads, scale, ptrs.data(), blocks * 8, candidates,
                                3, BlockVote::kSum);
  EXPECT_EQ(sum_sel.size(), 3u);
  // Only candidates are returned, ascending; k larger than the candidates returns them all.
  auto all = ExactSelection(g, q.data(), 1, q_heads, scale, ptrs.data(), blocks * 8, candidates,
                            100, BlockVote::kSum);
  EXPECT_EQ(all, candidates);
  EXPECT_TRUE(ExactSelection(g, q.data(), 1, q_heads, scale, ptrs.data(), blocks * 8, candidates, 0,
                             BlockVote::kSum)
                  .empty());
}

// Straightforward reference: one (KV head, query, head) at a time, every key element read from
// its block, the top k by score (ties: lower index).
std::vector<uint32_t> Reference(const KvGeometry& g, const float* queries, size_t x, size_t q_heads,
                                float scale, const void* const* blocks, size_t num_tokens,
                                const std::vector<uint32_t>& candidates, size_t k, BlockVote vote) {
  const size_t bt = g.block_tokens, hd = g.head_dim, group = q_heads / g.kv_heads;
  const size_t nblocks = (num_tokens + bt - 1) / bt;
  auto key_at = [&](size_t head, size_t t, size_t c) -> float {
    const size_t off = g.offset(0, head, t % bt) + c;
    if (g.dtype == DType::kF32) return static_cast<const float*>(blocks[t / bt])[off];
    return BF16ToF32(static_cast<const bf16_t*>(blocks[t / bt])[off]);
  };
  std::vector<double> score(nblocks, 0.0), logits(num_tokens), mass(nblocks);
  for (size_t kvh = 0; kvh < g.kv_heads; ++kvh) {
    for (size_t qi = 0; qi < x; ++qi) {
      for (size_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        const float* q = queries + (qi * q_heads + h) * hd;
        double mx = -1e300;
        for (size_t t = 0; t < num_tokens; ++t) {
          double d = 0;
          for (size_t c = 0; c < hd; ++c) d += q[c] * key_at(kvh, t, c);
          logits[t] = d * scale;
          mx = std::max(mx, logits[t]);
        }
        double z = 0;
        for (size_t t = 0; t < num_tokens; ++t) z += (logits[t] = std::exp(logits[t] - mx));
        std::fill(mass.begin(), mass.end(), 0.0);
        for (size_t t = 0; t < num_tokens; ++t) mass[t / bt] += logits[t] / z;
        for (size_t b = 0; b < nblocks; ++b)
          score[b] = vote == BlockVote::kSum ? score[b] + mass[b] : std::max(score[b], mass[b]);
      }
    }
  }
  std::vector<uint32_t> order = candidates;
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    return score[a] != score[b] ? score[a] > score[b] : a < b;
  });
  order.resize(std::min(k, order.size()));
  std::sort(order.begin(), order.end());
  return order;
}

TEST(ExactSelectionTest, MatchesTheReferenceOnRandomShapes) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.f, 1.f);
  int cases = 0;
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (size_t kv_heads : {1u, 2u}) {
      for (size_t group : {1u, 3u, 4u}) {
        for (size_t tokens : {1u, 37u, 130u}) {
          for (BlockVote vote : {BlockVote::kSum, BlockVote::kMax}) {
            const KvGeometry g{
                .kv_heads = kv_heads, .head_dim = 24, .block_tokens = 16, .dtype = dt};
            const size_t q_heads = kv_heads * group, x = 1 + cases % 3;
            const size_t nblocks = (tokens + 15) / 16;
            std::vector<std::vector<float>> f32(nblocks,
                                                std::vector<float>(g.elements_per_block()));
            std::vector<std::vector<bf16_t>> b16(nblocks,
                                                 std::vector<bf16_t>(g.elements_per_block()));
            std::vector<const void*> ptrs;
            for (size_t b = 0; b < nblocks; ++b) {
              for (size_t i = 0; i < f32[b].size(); ++i) {
                f32[b][i] = n(rng);
                b16[b][i] = F32ToBF16(f32[b][i]);
              }
              ptrs.push_back(dt == DType::kF32 ? static_cast<const void*>(f32[b].data())
                                               : static_cast<const void*>(b16[b].data()));
            }
            std::vector<float> q(x * q_heads * g.head_dim);
            for (float& v : q) v = n(rng);
            std::vector<uint32_t> cands;
            for (uint32_t b = 0; b < nblocks; ++b) cands.push_back(b);
            for (size_t k : {size_t{0}, size_t{1}, nblocks / 2, nblocks}) {
              SCOPED_TRACE(::testing::Message() << "case " << cases << " k " << k);
              EXPECT_EQ(
                  ExactSelection(g, q.data(), x, q_heads, 0.2f, ptrs.data(), tokens, cands, k,
                                 vote),
                  Reference(g, q.data(), x, q_heads, 0.2f, ptrs.data(), tokens, cands, k, vote));
            }
            ++cases;
          }
        }
      }
    }
  }
  EXPECT_EQ(cases, 72);
}

}  // namespace
}  // namespace kvstar
