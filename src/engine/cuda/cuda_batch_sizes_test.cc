// CudaBatch's memory estimates (host arithmetic only: runs without a GPU, in CI).
#include <gtest/gtest.h>

#include "engine/cuda/cuda_batch.h"
#include "model/shapes.h"

namespace kvstar::cuda {
namespace {

BatchOptions Kvstar128K(size_t batch, bool exclusive) {
  BatchOptions o;
  o.mode = KvMode::kKvstar;
  o.batch = batch;
  o.max_tokens = 130944 + 35;  // the bench's 128K context and its decode steps
  o.exclusive_host = exclusive;
  return o;
}

// The exclusive host tier pins the blocks off the device: per sequence all but the windows and a
// selection (a quarter of the candidates), plus one whole sequence for the setup and a few blocks
// of slack; the inclusive tier pins every block.
TEST(CudaBatchSizesTest, ExclusiveHostTierPinsTheBlocksOffTheDevice) {
  auto cfg = NamedShape("llama3-8b");
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  const double block = 2.0 * 8 * 128 * 128 * 2;  // K and V, 8 KV heads, head_dim 128, bf16
  for (size_t b : {1, 6, 8, 9}) {
    const double inc =
        static_cast<double>(CudaBatch::EstimateHostBytes(*cfg, Kvstar128K(b, false)));
    const double exc = static_cast<double>(CudaBatch::EstimateHostBytes(*cfg, Kvstar128K(b, true)));
    EXPECT_EQ(inc, 32.0 * static_cast<double>(b) * 1024 * block) << b;
    // 1024 blocks per sequence; 1 + 2 windows and a selection of ceil(0.25 * 1018) = 255 stay
    // on the device; 4 staging slots + 2 of slack.
    const double homes = b == 1 ? 1024 : static_cast<double>(b - 1) * (1024 - 258 + 6) + 1024 + 6;
    EXPECT_EQ(exc, 32.0 * std::min(homes, 1024.0 * static_cast<double>(b)) * block) << b;
  }
  // 8 sequences: 0.785 of the inclusive tier, which is what lets 8 fit where 6 did.
  const double r = static_cast<double>(CudaBatch::EstimateHostBytes(*cfg, Kvstar128K(8, true))) /
                   static_cast<double>(CudaBatch::EstimateHostBytes(*cfg, Kvstar128K(8, false)));
  EXPECT_NEAR(r, 0.785, 0.001);
  // The device keeps a bounce buffer of 64 blocks for in-place swaps.
  EXPECT_EQ(CudaBatch::EstimateDeviceBytes(*cfg, Kvstar128K(8, true)) -
                CudaBatch::EstimateDeviceBytes(*cfg, Kvstar128K(8, false)),
            static_cast<size_t>(64 * block));
  // Dense pins nothing.
  BatchOptions dense = Kvstar128K(3, false);
  dense.mode = KvMode::kDense;
  EXPECT_EQ(CudaBatch::EstimateHostBytes(*cfg, dense), 0u);
}

// The device cache (kvstar_cache_blocks): C more slots per (layer, sequence) on the device, C
// fewer homes per sequence on the exclusive host tier (plus slack for the cached blocks written
// back while their replacements are in flight). Enough of it lets 9 sequences pin no more than
// 8 did without it.
TEST(CudaBatchSizesTest, DeviceCacheMovesBlocksFromTheHostToHbm) {
  auto cfg = NamedShape("llama3-8b");
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  const size_t block = 2 * 8 * 128 * 128 * 2;
  auto with_cache = [](size_t batch, size_t cache) {
    BatchOptions o = Kvstar128K(batch, true);
    o.kvstar_cache_blocks = cache;
    return o;
  };
  for (size_t c : {16, 64, 105}) {
    EXPECT_EQ(CudaBatch::EstimateDeviceBytes(*cfg, with_cache(9, c)) -
                  CudaBatch::EstimateDeviceBytes(*cfg, with_cache(9, 0)),
              32 * 9 * c * block)
        << c;
    // Per sequence C fewer homes and 7 more of slack (4 staging slots, 2 extras, 1); 8 of the 9
    // sequences hold `need` homes, the one being set up all of its blocks.
    const size_t homes0 = 8 * (1024 - 258 + 6) + 1024 + 6;
    const size_t homes = 8 * (1024 - 258 - c + 13) + 1024 + 13;
    EXPECT_EQ(CudaBatch::EstimateHostBytes(*cfg, with_cache(9, c)), 32 * homes * block) << c;
    EXPECT_EQ(CudaBatch::EstimateHostBytes(*cfg, with_cache(9, 0)), 32 * homes0 * block);
  }
  const size_t eight = CudaBatch::EstimateHostBytes(*cfg, with_cache(8, 0));
  EXPECT_GT(CudaBatch::EstimateHostBytes(*cfg, with_cache(9, 104)), eight);
  EXPECT_LE(CudaBatch::EstimateHostBytes(*cfg, with_cache(9, 105)), eight);
  // A cache larger than the capacity needs gets only the slots the capacity leaves: 1024 blocks
  // per sequence, 3 + 1 + 255 + 2 + 4 without the cache (windows, tail, selection, extras and
  // staging slots), so the setup and the copies count on 759 at most.
  EXPECT_EQ(CudaBatch::KvstarCacheSlots(with_cache(2, 5000), 8), 1024u - 265u);
  EXPECT_EQ(CudaBatch::KvstarCacheSlots(with_cache(2, 64), 8), 64u);
  EXPECT_EQ(CudaBatch::KvstarSlotsPerSeq(with_cache(2, 5000), 8), 1024u);
  // More cache than unselected candidates (1018 scored a stride earlier, 255 of them selected):
  // the host cannot give back more than it holds.
  EXPECT_EQ(CudaBatch::EstimateHostBytes(*cfg, with_cache(2, 5000)),
            CudaBatch::EstimateHostBytes(*cfg, with_cache(2, 763)));
}

}  // namespace
}  // namespace kvstar::cuda
