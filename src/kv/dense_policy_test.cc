#include "kv/dense_policy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace kvstar {
namespace {

// Causal GQA attention in double over contiguous K/V: [t][kv_heads][hd].
std::vector<double> Reference(const std::vector<float>& q, const std::vector<float>& k,
                              const std::vector<float>& v, size_t n_q, size_t first, size_t qh,
                              size_t kvh, size_t hd, double scale) {
  std::vector<double> out(n_q * qh * hd, 0.0);
  const size_t group = qh / kvh;
  for (size_t i = 0; i < n_q; ++i) {
    const size_t last = first + i;
    for (size_t h = 0; h < qh; ++h) {
      const size_t g = h / group;
      std::vector<double> s(last + 1);
      double m = -1e300;
      for (size_t t = 0; t <= last; ++t) {
        double d = 0;
        for (size_t c = 0; c < hd; ++c)
          d += static_cast<double>(q[(i * qh + h) * hd + c]) * k[(t * kvh + g) * hd + c];
        s[t] = d * scale;
        m = std::max(m, s[t]);
      }
      double z = 0;
      for (double& x : s) z += (x = std::exp(x - m));
      for (size_t t = 0; t <= last; ++t)
        for (size_t c = 0; c < hd; ++c)
          out[(i * qh + h) * hd + c] += s[t] / z * v[(t * kvh + g) * hd + c];
    }
  }
  return out;
}

TEST(DensePolicyTest, ChunkedAttentionMatchesReference) {
  const size_t qh = 6, kvh = 2, hd = 16, layers = 2;
  const KvGeometry geom{.kv_heads = kvh, .head_dim = hd, .block_tokens = 8, .dtype = DType::kF32};
  DevicePool pool(geom, 64);
  ThreadPool threads(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  DensePolicy policy(pool, threads, layers, qh, static_cast<float>(scale));
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  std::vector<float> all_k, all_v;
  size_t pos = 0;
  for (size_t n : {5u, 11u, 1u, 1u, 16u, 1u}) {  // crosses block boundaries, decode steps
    std::vector<float> q(n * qh * hd), k(n * kvh * hd), v(n * kvh * hd), out(n * qh * hd);
    for (auto* buf : {&q, &k, &v})
      for (float& x : *buf) x = dist(rng);
    all_k.insert(all_k.end(), k.begin(), k.end());
    all_v.insert(all_v.end(), v.begin(), v.end());
    const auto ref = Reference(q, all_k, all_v, n, pos, qh, kvh, hd, scale);
    for (size_t l = 0; l < layers; ++l) {
      ASSERT_TRUE(policy
                      .Attend(static_cast<int>(l), q.data(), k.data(), v.data(), n,
                              static_cast<int64_t>(pos), out.data())
                      .ok());
      for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-4) << i;
    }
    ASSERT_TRUE(policy.EndChunk(n, false).ok());
    pos += n;
  }
  EXPECT_EQ(policy.num_tokens(), pos);
  const KvStats st = policy.Stats();
  EXPECT_EQ(st.device_blocks, layers * ((pos + 7) / 8));
  EXPECT_EQ(st.device_bytes, st.device_blocks * geom.block_bytes());
}

// Oracle top-k: a decode step attends to the windows and to the candidate block with the most
// exact attention mass for its own query (a planted block), and to nothing else.
TEST(DensePolicyTest, OracleAttendsToTheWindowsAndTheExactTopBlocks) {
  const size_t qh = 4, kvh = 2, hd = 16, bt = 8, prompt = 80;  // 10 full blocks
  const KvGeometry geom{.kv_heads = kvh, .head_dim = hd, .block_tokens = bt, .dtype = DType::kF32};
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  std::mt19937 rng(11);
  std::normal_distribution<float> dist;
  std::vector<float> q(qh * hd), k((prompt + 1) * kvh * hd), v((prompt + 1) * kvh * hd);
  for (float& x : q) x = dist(rng);
  for (float& x : k) x = 0.1f * dist(rng);
  for (float& x : v) x = dist(rng);
  const size_t planted = 4;
  for (size_t t = planted * bt; t < (planted + 1) * bt; ++t)
    for (size_t g = 0; g < kvh; ++g)
      for (size_t c = 0; c < hd; ++c) k[(t * kvh + g) * hd + c] = 0.5f * q[(g * 2) * hd + c];
  for (double ratio : {0.1, 1.0}) {
    KvstarConfig oracle;  // init 1 block, local 2 blocks
    oracle.sparse_ratio = ratio;
    DevicePool pool(geom, 64);
    ThreadPool threads(2);
    DensePolicy policy(pool, threads, 1, qh, static_cast<float>(scale));
    policy.set_oracle(oracle);
    EXPECT_STREQ(policy.name(), "oracle");
    std::vector<float> pq(prompt * qh * hd, 0.0f), pout(prompt * qh * hd), out(qh * hd);
    ASSERT_TRUE(policy.Attend(0, pq.data(), k.data(), v.data(), prompt, 0, pout.data()).ok());
    ASSERT_TRUE(policy.EndChunk(prompt, true).ok());
    ASSERT_TRUE(policy
                    .Attend(0, q.data(), k.data() + prompt * kvh * hd, v.data() + prompt * kvh * hd,
                            1, prompt, out.data())
                    .ok());
    // Candidates are blocks 1..7; ratio 0.1 keeps ceil(0.7) = 1 of them: the planted one.
    std::vector<size_t> kept;
    for (size_t t = 0; t <= prompt; ++t) {
      const size_t b = t / bt;
      if (ratio == 1.0 || b == 0 || b == planted || b >= 8) kept.push_back(t);
    }
    std::vector<float> sk, sv;
    for (size_t t : kept) {
      sk.insert(sk.end(), k.begin() + t * kvh * hd, k.begin() + (t + 1) * kvh * hd);
      sv.insert(sv.end(), v.begin() + t * kvh * hd, v.begin() + (t + 1) * kvh * hd);
    }
    const auto ref = Reference(q, sk, sv, 1, kept.size() - 1, qh, kvh, hd, scale);
    for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-4) << ratio << " " << i;
  }
}

TEST(DensePolicyTest, ReleasesBlocksOnDestruction) {
  const KvGeometry geom{.kv_heads = 1, .head_dim = 8, .block_tokens = 8, .dtype = DType::kBF16};
  DevicePool pool(geom, 8);
  ThreadPool threads(1);
  {
    DensePolicy policy(pool, threads, 1, 1, 1.0f);
    std::vector<float> q(20 * 8, 0.5f), k(20 * 8, 0.25f), v(20 * 8, 1.0f), out(20 * 8);
    ASSERT_TRUE(policy.Attend(0, q.data(), k.data(), v.data(), 20, 0, out.data()).ok());
    EXPECT_EQ(pool.free_slots(), 5u);
    for (float x : out) EXPECT_FLOAT_EQ(x, 1.0f);  // uniform V: attention output equals it
  }
  EXPECT_EQ(pool.free_slots(), 8u);
}

}  // namespace
}  // namespace kvstar
