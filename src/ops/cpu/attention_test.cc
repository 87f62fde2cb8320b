// WriteKv and AttentionOverBlocks against a double-precision reference, once per compiled and
// supported Highway target, with 1, 2 and 3 threads (bit-identical results across thread counts).
//
// K/V go through WriteKv, so they are stored rounded (bf16 / f16); the reference reads the stored
// values back, so every path is checked at f32 accuracy: |err| <= 2e-5 * max|v| of the head.
// Block tables point at blocks allocated in shuffled order, the last block partly filled.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/half.h"
#include "base/kv_layout.h"
#include "gtest/gtest.h"
#include "ops/cpu/ops.h"
#include "ops/cpu/ops_internal.h"
#include "ops/cpu/ops_test_util.h"

namespace kvstar::ops {
namespace {

using testing::ForEachTarget;
using testing::RandomFloats;

// Blocks of one sequence, one layer, in a pool of shuffled slots.
class BlockTable {
 public:
  BlockTable(const KvGeometry& geom, size_t num_tokens, std::mt19937& rng) : geom_(geom) {
    const size_t blocks = (num_tokens + geom.block_tokens - 1) / geom.block_tokens;
    storage_ = AlignedBuffer<char>(blocks * geom.block_bytes());
    // Garbage in unused rows of the tail block must never be read.
    for (size_t i = 0; i < storage_.size(); ++i) storage_[i] = static_cast<char>(0xff);
    std::vector<size_t> slots(blocks);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng);
    for (size_t b = 0; b < blocks; ++b) {
      table_.push_back(storage_.data() + slots[b] * geom.block_bytes());
    }
  }
  void* const* blocks() const { return table_.data(); }
  const void* const* const_blocks() const { return table_.data(); }

  // Stored value of (kv, head, token, d) as double.
  double Get(size_t kv, size_t head, size_t t, size_t d) const {
    const char* block = static_cast<const char*>(table_[t / geom_.block_tokens]);
    const size_t idx = geom_.offset(kv, head, t % geom_.block_tokens) + d;
    switch (geom_.dtype) {
      case DType::kF32: {
        float v;
        std::memcpy(&v, block + idx * 4, 4);
        return v;
      }
      case DType::kBF16: {
        bf16_t v;
        std::memcpy(&v, block + idx * 2, 2);
        return BF16ToF32(v);
      }
      case DType::kF16: {
        f16_t v;
        std::memcpy(&v, block + idx * 2, 2);
        return F16ToF32(v);
      }
    }
    return 0.0;
  }

 private:
  KvGeometry geom_;
  AlignedBuffer<char> storage_;
  std::vector<void*> table_;
};

struct Case {
  size_t head_dim, kv_heads, group, block_tokens, num_tokens, n;
  DType dtype;
};

// out[i][h][:] in double.
std::vector<double> ReferenceAttention(const Case& c, const BlockTable& kv,
                                       const std::vector<float>& q,
                                       const std::vector<int64_t>& q_last, float scale,
                                       std::vector<double>* max_abs_v) {
  const size_t q_heads = c.kv_heads * c.group;
  std::vector<double> out(c.n * q_heads * c.head_dim);
  max_abs_v->assign(c.n * q_heads, 0.0);
  for (size_t i = 0; i < c.n; ++i) {
    for (size_t h = 0; h < q_heads; ++h) {
      const size_t g = h / c.group;
      const size_t len = static_cast<size_t>(q_last[i]) + 1;
      std::vector<double> s(len);
      double mx = -1e300;
      for (size_t t = 0; t < len; ++t) {
        double dot = 0.0;
        for (size_t d = 0; d < c.head_dim; ++d) {
          dot += double{q[(i * q_heads + h) * c.head_dim + d]} * kv.Get(0, g, t, d);
        }
        s[t] = dot * scale;
        mx = std::max(mx, s[t]);
      }
      double sum = 0.0;
      for (double& v : s) sum += (v = std::exp(v - mx));
      double* o = &out[(i * q_heads + h) * c.head_dim];
      for (size_t t = 0; t < len; ++t) {
        for (size_t d = 0; d < c.head_dim; ++d) {
          const double v = kv.Get(1, g, t, d);
          o[d] += s[t] / sum * v;
          (*max_abs_v)[i * q_heads + h] = std::max((*max_abs_v)[i * q_heads + h], std::fabs(v));
        }
      }
    }
  }
  return out;
}

void CheckCase(const Case& c, std::mt19937& rng, bool random_q_last,
               const std::vector<size_t>& forced_splits) {
  SCOPED_TRACE(::testing::Message()
               << "head_dim=" << c.head_dim << " kv_heads=" << c.kv_heads << " group=" << c.group
               << " block_tokens=" << c.block_tokens << " num_tokens=" << c.num_tokens
               << " n=" << c.n << " dtype=" << DTypeName(c.dtype));
  const KvGeometry geom{.kv_heads = c.kv_heads,
                        .head_dim = c.head_dim,
                        .block_tokens = c.block_tokens,
                        .dtype = c.dtype};
  BlockTable table(geom, c.num_tokens, rng);
  const size_t kv_dim = c.kv_heads * c.head_dim;
  // Written in three uneven calls so that calls start and end inside blocks.
  const std::vector<float> k = RandomFloats(rng, c.num_tokens * kv_dim, 2.0f);
  const std::vector<float> v = RandomFloats(rng, c.num_tokens * kv_dim);
  const size_t cut1 = c.num_tokens / 3, cut2 = c.num_tokens - c.num_tokens / 5;
  for (auto [b, e] : {std::pair{size_t{0}, cut1}, {cut1, cut2}, {cut2, c.num_tokens}}) {
    WriteKv(geom, table.blocks(), b, e - b, k.data() + b * kv_dim, v.data() + b * kv_dim);
  }
  for (size_t t = 0; t < c.num_tokens; t += 7) {
    for (size_t h = 0; h < c.kv_heads; ++h) {
      for (size_t d = 0; d < c.head_dim; ++d) {
        const float kf = k[(t * c.kv_heads + h) * c.head_dim + d];
        ASSERT_EQ(table.Get(0, h, t, d), testing::StoredValue(kf, c.dtype));
        const float vf = v[(t * c.kv_heads + h) * c.head_dim + d];
        ASSERT_EQ(table.Get(1, h, t, d), testing::StoredValue(vf, c.dtype));
      }
    }
  }

  const size_t q_heads = c.kv_heads * c.group;
  const std::vector<float> q = RandomFloats(rng, c.n * q_heads * c.head_dim);
  std::vector<int64_t> q_last(c.n);
  for (size_t i = 0; i < c.n; ++i) {
    // Causal prefill of the last n tokens, or arbitrary limits.
    q_last[i] = random_q_last ? static_cast<int64_t>(rng() % c.num_tokens)
                              : static_cast<int64_t>(c.num_tokens - c.n + i);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  std::vector<double> max_abs_v;
  const std::vector<double> want = ReferenceAttention(c, table, q, q_last, scale, &max_abs_v);

  std::vector<std::unique_ptr<ThreadPool>> pools;
  for (int t : {1, 2, 3}) pools.push_back(std::make_unique<ThreadPool>(t));
  ForEachTarget([&] {
    for (size_t split : forced_splits) {
      SCOPED_TRACE(::testing::Message() << "split_tokens=" << split);
      std::vector<float> first;
      for (auto& pool : pools) {
        std::vector<float> out(want.size(), -9.0f);
        if (split == 0) {
          AttentionOverBlocks(*pool, geom, q_heads, q.data(), c.n, q_last.data(),
                              table.const_blocks(), c.num_tokens, scale, out.data());
        } else {
          internal::AttentionWithSplit(*pool, geom, q_heads, q.data(), c.n, q_last.data(),
                                       table.const_blocks(), c.num_tokens, scale, split,
                                       out.data());
        }
        for (size_t i = 0; i < out.size(); ++i) {
          ASSERT_NEAR(out[i], want[i], 2e-5 * max_abs_v[i / c.head_dim])
              << "element " << i << " threads " << pool->parallelism();
        }
        if (first.empty()) {
          first = out;
        } else {
          ASSERT_EQ(0, std::memcmp(first.data(), out.data(), out.size() * 4))
              << "result depends on the thread count (" << pool->parallelism() << ")";
        }
      }
    }
  });
}

TEST(CpuAttention, HeadDimsGroupsAndDTypes) {
  std::mt19937 rng(11);
  for (DType dtype : {DType::kBF16, DType::kF32, DType::kF16}) {
    for (size_t head_dim : {64, 80, 128}) {
      for (auto [kv_heads, group] :
           {std::pair<size_t, size_t>{1, 1}, {2, 4}, {3, 5}, {8, 1}, {1, 8}, {2, 7}}) {
        const Case decode{head_dim, kv_heads, group, 16, 150, 1, dtype};
        CheckCase(decode, rng, false, {0, 32});
        const Case prefill{head_dim, kv_heads, group, 16, 75, 9, dtype};
        CheckCase(prefill, rng, false, {0});
      }
    }
  }
}

TEST(CpuAttention, OddHeadDimArbitraryLimitsAndSplits) {
  std::mt19937 rng(12);
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    // head_dim not a multiple of any vector width; one-token blocks; ragged q_last.
    CheckCase({36, 2, 3, 5, 61, 6, dtype}, rng, true, {0, 5, 20});
    CheckCase({8, 1, 2, 1, 9, 3, dtype}, rng, true, {0, 1});
    // A single token.
    CheckCase({64, 2, 2, 16, 1, 1, dtype}, rng, false, {0});
    // Many queries (several query tiles), an exact multiple of block_tokens.
    CheckCase({64, 2, 1, 32, 128, 40, dtype}, rng, false, {0, 64});
  }
}

// Long enough that decode splits along the sequence on its own (more than 2 x 1024 tokens).
TEST(CpuAttention, DecodeLongContextAutoSplit) {
  std::mt19937 rng(13);
  CheckCase({64, 2, 4, 128, 2600, 1, DType::kBF16}, rng, false, {0});
  CheckCase({128, 1, 2, 64, 2200, 2, DType::kF32}, rng, true, {0});
}

}  // namespace
}  // namespace kvstar::ops
