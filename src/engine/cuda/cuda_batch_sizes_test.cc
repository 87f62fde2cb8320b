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

}  // namespace
}  // namespace kvstar::cuda
