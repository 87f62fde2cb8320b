#include "sparse/block_representations.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <random>
#include <thread>
#include <vector>

namespace kvstar::sparse {
namespace {

constexpr KvGeometry kGeo{.kv_heads = 3, .head_dim = 16, .block_tokens = 8, .dtype = DType::kF32};

ChannelIndex SomeChannels() {
  ChannelIndex idx{.kv_heads = 3, .head_dim = 16, .d_pruned = 5};
  idx.channels = {0, 3, 4, 9, 15, 1, 2, 5, 6, 7, 10, 11, 12, 13, 14};
  return idx;
}

std::vector<float> RandomBlock(std::mt19937_64& rng) {
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> b(kGeo.elements_per_block());
  for (float& v : b) v = n(rng);
  return b;
}

float RepAt(const RepresentationView& v, size_t b, size_t m, size_t h, size_t c) {
  const uint16_t bits = v.block(b)[(m * v.kv_heads() + h) * v.d_pruned() + c];
  return v.dtype() == DType::kBF16 ? BF16ToF32(bf16_t{bits}) : F16ToF32(f16_t{bits});
}

class RepresentationsTest : public ::testing::TestWithParam<std::tuple<size_t, DType>> {};

TEST_P(RepresentationsTest, AppendIsMeanOfMergedTokensOnKeptChannels) {
  const auto [merge, dtype] = GetParam();
  auto reps = BlockRepresentations::Create(kGeo, SomeChannels(),
                                           {.merge = merge, .dtype = dtype, .chunk_blocks = 2});
  ASSERT_TRUE(reps.ok()) << reps.status().ToString();
  std::mt19937_64 rng(merge);
  std::vector<std::vector<float>> blocks;
  for (int i = 0; i < 5; ++i) {
    blocks.push_back(RandomBlock(rng));
    ASSERT_TRUE((*reps)->Append(blocks.back().data(), kGeo).ok());
  }
  const RepresentationView view = (*reps)->View();
  ASSERT_EQ(view.num_blocks(), 5u);
  ASSERT_EQ(view.vectors_per_block(), 8 / merge);
  const ChannelIndex idx = SomeChannels();
  const float tol = dtype == DType::kBF16 ? 1e-2f : 2e-3f;
  for (size_t b = 0; b < 5; ++b) {
    EXPECT_TRUE(view.block_finite(b));
    for (size_t h = 0; h < 3; ++h) {
      for (size_t m = 0; m < 8 / merge; ++m) {
        for (size_t c = 0; c < 5; ++c) {
          double mean = 0;
          for (size_t i = 0; i < merge; ++i) {
            mean += blocks[b][kGeo.offset(0, h, m * merge + i) + idx.head(h)[c]];
          }
          mean /= double(merge);
          EXPECT_NEAR(RepAt(view, b, m, h, c), mean, tol * (1 + std::fabs(mean)))
              << "b=" << b << " h=" << h << " m=" << m << " c=" << c;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(MergeAndDtype, RepresentationsTest,
                         ::testing::Combine(::testing::Values(1, 2, 4),
                                            ::testing::Values(DType::kF16, DType::kBF16)));

TEST(Representations, CreateRejectsBadOptions) {
  EXPECT_FALSE(BlockRepresentations::Create(kGeo, SomeChannels(), {.merge = 3}).ok());
  EXPECT_FALSE(
      BlockRepresentations::Create(kGeo, SomeChannels(), {.merge = 2, .dtype = DType::kF32}).ok());
  KvGeometry other = kGeo;
  other.head_dim = 32;
  EXPECT_FALSE(BlockRepresentations::Create(other, SomeChannels(), {}).ok());
  auto reps = BlockRepresentations::Create(kGeo, SomeChannels(), {});
  ASSERT_TRUE(reps.ok());
  other = kGeo;
  other.block_tokens = 16;
  std::vector<float> block(other.elements_per_block());
  EXPECT_EQ((*reps)->Append(block.data(), other).code(), StatusCode::kInvalidArgument);
}

TEST(Representations, NonFiniteKeysAndOverflowAreFlagged) {
  auto reps = BlockRepresentations::Create(kGeo, SomeChannels(), {.merge = 1});
  ASSERT_TRUE(reps.ok());
  std::vector<float> ok(kGeo.elements_per_block(), 0.5f);
  std::vector<float> nan = ok;
  nan[kGeo.offset(0, 1, 3) + 2] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> big = ok;
  big[kGeo.offset(0, 2, 0) + 14] = 1e6f;  // overflows fp16 (channel 14 is kept by head 2)
  std::vector<float> pruned_nan = ok;
  pruned_nan[kGeo.offset(0, 0, 0) + 1] = std::numeric_limits<float>::quiet_NaN();  // not kept
  for (auto* b : {&ok, &nan, &big, &pruned_nan}) ASSERT_TRUE((*reps)->Append(b->data(), kGeo).ok());
  const auto view = (*reps)->View();
  EXPECT_TRUE(view.block_finite(0));
  EXPECT_FALSE(view.block_finite(1));
  EXPECT_FALSE(view.block_finite(2));
  EXPECT_TRUE(view.block_finite(3));
}

TEST(Representations, SerializeRoundTripAndPerBlockForm) {
  auto reps = BlockRepresentations::Create(kGeo, SomeChannels(), {.merge = 2, .chunk_blocks = 3});
  ASSERT_TRUE(reps.ok());
  std::mt19937_64 rng(7);
  for (int i = 0; i < 7; ++i) ASSERT_TRUE((*reps)->Append(RandomBlock(rng).data(), kGeo).ok());
  const auto bytes = (*reps)->Serialize();
  auto back = BlockRepresentations::Deserialize(bytes, 4);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ((*back)->num_blocks(), 7u);
  EXPECT_EQ((*back)->channels(), SomeChannels());
  EXPECT_EQ((*back)->Serialize(), bytes);

  // Prefix reuse: a new layer object with the same channel index takes stored blocks.
  auto fresh = BlockRepresentations::Create(kGeo, SomeChannels(), {.merge = 2});
  ASSERT_TRUE(fresh.ok());
  for (size_t b = 0; b < 7; ++b) {
    ASSERT_TRUE((*fresh)->AppendSerializedBlock((*reps)->SerializeBlock(b)).ok());
  }
  EXPECT_EQ((*fresh)->Serialize(), bytes);

  // A block from a layer with other channels or another merge is refused.
  ChannelIndex other = SomeChannels();
  other.channels[0] = 2;
  auto foreign = BlockRepresentations::Create(kGeo, other, {.merge = 2});
  ASSERT_TRUE(foreign.ok());
  EXPECT_EQ((*foreign)->AppendSerializedBlock((*reps)->SerializeBlock(0)).code(),
            StatusCode::kInvalidArgument);
  auto merge4 = BlockRepresentations::Create(kGeo, SomeChannels(), {.merge = 4});
  ASSERT_TRUE(merge4.ok());
  EXPECT_EQ((*merge4)->AppendSerializedBlock((*reps)->SerializeBlock(0)).code(),
            StatusCode::kInvalidArgument);
  EXPECT_FALSE((*fresh)->AppendSerializedBlock(bytes).ok());  // whole-layer bytes, not a block
}

TEST(Representations, CorruptBytesGiveStatusNeverCrash) {
  auto reps = BlockRepresentations::Create(kGeo, SomeChannels(), {.merge = 2});
  ASSERT_TRUE(reps.ok());
  std::mt19937_64 rng(9);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE((*reps)->Append(RandomBlock(rng).data(), kGeo).ok());
  const auto bytes = (*reps)->Serialize();
  // Every truncation.
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(BlockRepresentations::Deserialize({bytes.data(), n}).ok()) << n;
  }
  // Every single-byte corruption.
  for (size_t i = 0; i < bytes.size(); ++i) {
    auto bad = bytes;
    bad[i] ^= 0x5a;
    EXPECT_FALSE(BlockRepresentations::Deserialize(bad).ok()) << i;
  }
  auto block = (*reps)->SerializeBlock(1);
  block.back() ^= 1;
  EXPECT_EQ((*reps)->AppendSerializedBlock(block).code(), StatusCode::kDataLoss);
  EXPECT_EQ((*reps)->num_blocks(), 3u);
}

TEST(Representations, ViewsAreStableWhileAppending) {
  auto created =
      BlockRepresentations::Create(kGeo, SomeChannels(), {.merge = 2, .chunk_blocks = 2});
  ASSERT_TRUE(created.ok());
  std::shared_ptr<BlockRepresentations> reps = std::move(created).value();
  std::mt19937_64 rng(3);
  ASSERT_TRUE(reps->Append(RandomBlock(rng).data(), kGeo).ok());
  const RepresentationView first = reps->View();
  const std::vector<uint16_t> block0(first.block(0), first.block(0) + first.block_elements());
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done.load()) {
      const RepresentationView v = reps->View();
      for (size_t b = 0; b < v.num_blocks(); ++b) {
        volatile uint16_t x = v.block(b)[v.block_elements() - 1];
        (void)x;
      }
      EXPECT_EQ(std::vector<uint16_t>(v.block(0), v.block(0) + v.block_elements()), block0);
    }
  });
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(reps->Append(RandomBlock(rng).data(), kGeo).ok());
  done = true;
  reader.join();
  EXPECT_EQ(first.num_blocks(), 1u);
  reps.reset();  // the view keeps its memory
  EXPECT_EQ(std::vector<uint16_t>(first.block(0), first.block(0) + first.block_elements()), block0);
}

}  // namespace
}  // namespace kvstar::sparse
