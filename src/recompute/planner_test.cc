#include "recompute/planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace kvstar::recompute {
namespace {

// A synthetic device: bandwidth `gbps`, no per-copy cost, no device-bandwidth term, and one
// GEMM table of (hidden, kv_dim) with the given points.
KvprProfile Synthetic(double gbps, size_t hidden, size_t kv_dim, std::vector<GemmPoint> points,
                      double overhead_us = 0) {
  KvprProfile p;
  p.device_name = "synthetic";
  p.device_key = "synthetic";
  p.h2d_gbps = gbps;
  GemmTable t;
  t.hidden = hidden;
  t.kv_dim = kv_dim;
  t.launch_overhead_us = overhead_us;
  t.points = std::move(points);
  p.gemm.push_back(t);
  return p;
}

KvprProfile Flat(double gbps, size_t hidden, size_t kv_dim, double tflops) {
  return Synthetic(gbps, hidden, kv_dim, {{1, tflops}, {size_t{1} << 30, tflops}});
}

// Llama-3.1-8B / Llama-2-7B geometry (model/shapes.h is not linked here).
ModelConfig Llama(size_t kv_heads) {
  ModelConfig c;
  c.hidden_size = 4096;
  c.intermediate_size = kv_heads == 32 ? 11008 : 14336;
  c.num_layers = 32;
  c.num_heads = 32;
  c.num_kv_heads = kv_heads;
  c.head_dim = 128;
  c.torch_dtype = DType::kBF16;
  return c;
}

KvprShape Mha(size_t batch, size_t seq_len, size_t layers = 32) {
  KvprShape s;
  s.batch = batch;
  s.seq_len = seq_len;
  s.hidden = 4096;
  s.kv_dim = 4096;
  s.layers = layers;
  return s;
}

// Independent closed form of the pipeline without layer compute (docs/KVPR.md): the link sends
// X then K/V per layer back to back; the recomputation of layer i overlaps X of layer i+1.
//   step = t_x + max(t_kv, t_rc) + (L - 1) * max(t_x + t_kv, t_rc)
double ClosedFormMs(const KvprShape& s, double gbps, double tflops, size_t l) {
  const double bw = gbps * 1e9 / 1e3;  // bytes per ms
  const double tx = double(s.batch) * l * s.hidden * s.x_elem_bytes / bw;
  const double tkv = double(s.batch) * (s.seq_len - l) * 2.0 * s.kv_dim * s.kv_elem_bytes / bw;
  const double trc = 2.0 * s.batch * l * s.hidden * 2.0 * s.kv_dim / (tflops * 1e12) * 1e3;
  return tx + std::max(tkv, trc) + double(s.layers - 1) * std::max(tx + tkv, trc);
}

size_t BruteForceSplit(const KvprShape& s, double gbps, double tflops, size_t g) {
  size_t best = 0;
  double best_ms = std::numeric_limits<double>::infinity();
  for (size_t l = 0; l <= s.seq_len; l += g) {
    const double ms = ClosedFormMs(s, gbps, tflops, l);
    if (ms < best_ms * (1 - 1e-12)) {
      best_ms = ms;
      best = l;
    }
  }
  return best;
}

TEST(PlannerTest, SimulationMatchesAHandComputedTimeline) {
  // 1 GB/s = 1e6 bytes/ms. X: 500 * 2 = 1000 B/token; K+V: 2 * 1000 * 2 = 4000 B/token.
  // l = 1000: t_x = 1 ms, t_kv = 500 tokens = 2 ms, t_rc = 2e9 flops / 4 TFLOP/s = 0.5 ms.
  KvprProfile p = Flat(1.0, 500, 1000, 4.0);
  KvprShape s;
  s.batch = 1;
  s.seq_len = 1500;
  s.hidden = 500;
  s.kv_dim = 1000;
  s.layers = 3;
  s.layer_compute_ms = 4;
  // Layer 0: X at 1, K/V at 3, recompute 1-1.5, compute 3-7.
  // Layer 1: link 3-6 (X at 4), recompute 7-7.5, compute 7.5-11.5.
  // Layer 2: link waits for buffer 0 (layer 0 done at 7): X at 8, K/V at 10; recompute
  //          11.5-12, compute 12-16.
  auto pred = PredictStep(p, s, {1000});
  ASSERT_TRUE(pred.ok()) << pred.status().ToString();
  EXPECT_NEAR(pred->step_ms, 16.0, 1e-9);
  EXPECT_NEAR(pred->link_ms, 9.0, 1e-9);
  EXPECT_NEAR(pred->recompute_ms, 1.5, 1e-9);
  EXPECT_NEAR(pred->compute_ms, 12.0, 1e-9);
  EXPECT_NEAR(pred->link_bytes, 3 * (1000 * 1000.0 + 500 * 4000.0), 1e-3);
  s.step_fixed_ms = 0.5;
  EXPECT_NEAR(PredictStep(p, s, {1000})->step_ms, 16.5, 1e-9);
  auto cost = LayerCostAt(p, s, 1000);
  ASSERT_TRUE(cost.ok());
  EXPECT_NEAR(cost->x_ms, 1.0, 1e-12);
  EXPECT_NEAR(cost->kv_ms, 2.0, 1e-12);
  EXPECT_NEAR(cost->recompute_ms, 0.5, 1e-12);
}

TEST(PlannerTest, PredictionEqualsClosedFormWithoutCompute) {
  const double gbps = 50, tflops = 200;
  const KvprProfile p = Flat(gbps, 4096, 4096, tflops);
  const KvprShape s = Mha(8, 4096);
  for (size_t l = 0; l <= s.seq_len; l += 256) {
    auto pred = PredictStep(p, s, {l});
    ASSERT_TRUE(pred.ok());
    EXPECT_NEAR(pred->step_ms, ClosedFormMs(s, gbps, tflops, l), 1e-9 * pred->step_ms) << l;
  }
}

TEST(PlannerTest, BandwidthBoundSplitBalancesLinkAndRecompute) {
  const double gbps = 50, tflops = 150;
  const KvprProfile p = Flat(gbps, 4096, 4096, tflops);
  const KvprShape s = Mha(8, 8192);
  auto plan = PlanSplit(p, s, {.granularity = 128, .per_layer = false});
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->split, BruteForceSplit(s, gbps, tflops, 128));
  // Balance of the steady state: t_x(l) + t_kv(l) = t_rc(l), per token X, K, C (ms).
  const double bw = gbps * 1e6;
  const double X = s.batch * 4096 * 2.0 / bw, K = s.batch * 2 * 4096 * 2.0 / bw;
  const double C = 2.0 * s.batch * 4096 * 2 * 4096 / (tflops * 1e9);
  const double balance = s.seq_len * K / (K + C - X);
  ASSERT_GT(balance, 0.2 * s.seq_len);
  ASSERT_LT(balance, 0.9 * s.seq_len);
  EXPECT_NEAR(double(plan->split), balance, 128.0);
  EXPECT_GT(plan->speedup, 1.2);
  EXPECT_LT(plan->kvpr_step_ms, plan->offload_step_ms);
  EXPECT_LT(plan->kvpr_link_bytes, plan->offload_link_bytes);
  EXPECT_EQ(plan->split % 128, 0u);
  EXPECT_EQ(plan->layer_splits, std::vector<size_t>(32, plan->split));
  EXPECT_NE(plan->reason.find("recomputed from X"), std::string::npos) << plan->reason;
}

TEST(PlannerTest, CalibrationScalesMultiplyTheirTermsOnly) {
  KvprProfile p = Flat(50, 4096, 4096, 150);
  const KvprShape s = Mha(8, 8192);
  auto base = LayerCostAt(p, s, 4096);
  ASSERT_TRUE(base.ok());
  p.recompute_scale = 1.5;
  auto scaled = LayerCostAt(p, s, 4096);
  ASSERT_TRUE(scaled.ok());
  EXPECT_DOUBLE_EQ(scaled->recompute_ms, 1.5 * base->recompute_ms);
  EXPECT_DOUBLE_EQ(scaled->x_ms, base->x_ms);
  EXPECT_DOUBLE_EQ(scaled->kv_ms, base->kv_ms);
  p.link_scale = 2.0;
  auto slow_link = LayerCostAt(p, s, 4096);
  ASSERT_TRUE(slow_link.ok());
  EXPECT_DOUBLE_EQ(slow_link->x_ms, 2.0 * base->x_ms);
  EXPECT_DOUBLE_EQ(slow_link->kv_ms, 2.0 * base->kv_ms);
  EXPECT_DOUBLE_EQ(slow_link->recompute_ms, scaled->recompute_ms);
  p.link_scale = 1.0;
  // Slower recomputation moves the balance point to fewer recomputed tokens.
  auto fast = PlanSplit(Flat(50, 4096, 4096, 150), s, {.granularity = 128, .per_layer = false});
  auto slow = PlanSplit(p, s, {.granularity = 128, .per_layer = false});
  ASSERT_TRUE(fast.ok() && slow.ok());
  EXPECT_LT(slow->split, fast->split);
}

TEST(PlannerTest, InfiniteGemmRateRecomputesEverything) {
  const KvprProfile p = Flat(50, 4096, 4096, 1e12);
  const KvprShape s = Mha(4, 4096);
  auto plan = PlanSplit(p, s);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->split, 4096u);
  EXPECT_EQ(plan->split, BruteForceSplit(s, 50, 1e12, 128));
  // Only X moves: half the bytes of K+V for MHA, so close to half the offload step.
  EXPECT_NEAR(plan->kvpr_step_ms / plan->offload_step_ms, 0.5, 1e-3);
}

TEST(PlannerTest, ComputeBoundChoosesOffload) {
  const KvprProfile p = Flat(50, 4096, 4096, 0.01);
  auto plan = PlanSplit(p, Mha(8, 4096));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->split, 0u);
  EXPECT_EQ(plan->layer_splits, std::vector<size_t>(32, 0));
  EXPECT_DOUBLE_EQ(plan->kvpr_step_ms, plan->offload_step_ms);
  EXPECT_FALSE(plan->x_wider_than_kv);
  EXPECT_NE(plan->reason.find("does not pay"), std::string::npos) << plan->reason;
}

TEST(PlannerTest, LaunchOverheadAloneCanMakeRecomputationLose) {
  // Tiny sequence: the fixed cost of the recompute kernels outweighs the few bytes saved.
  KvprProfile p = Synthetic(50, 4096, 4096, {{1, 1e6}, {1 << 20, 1e6}}, /*overhead_us=*/500);
  auto plan = PlanSplit(p, Mha(1, 256));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->split, 0u);
  p.gemm[0].launch_overhead_us = 0;
  plan = PlanSplit(p, Mha(1, 256));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->split, 256u);
}

TEST(PlannerTest, GqaWiderXChoosesOffloadAndSaysWhy) {
  // Llama-3-8B: hidden 4096, kv_dim 8*128 = 1024: X 8192 B/token, K+V 4096 B/token. No GEMM
  // table is needed to decide.
  KvprProfile p = Flat(50, 4096, 4096, 1e12);
  const ModelConfig cfg = Llama(8);
  const KvprShape s = ShapeFromConfig(cfg, 8, 8192);
  EXPECT_EQ(s.kv_dim, 1024u);
  auto plan = PlanSplit(p, s);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->split, 0u);
  EXPECT_TRUE(plan->x_wider_than_kv);
  EXPECT_NE(plan->reason.find("X is wider than K+V"), std::string::npos) << plan->reason;
  EXPECT_NE(plan->reason.find("8192"), std::string::npos) << plan->reason;
  EXPECT_NE(plan->reason.find("4096"), std::string::npos) << plan->reason;
  EXPECT_EQ(PlanToJson(*plan)["x_wider_than_kv"], true);
  // Group size exactly 2: X as wide as K+V, still nothing to save.
  KvprShape g2 = Mha(8, 8192);
  g2.kv_dim = 2048;
  plan = PlanSplit(p, g2);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->split, 0u);
  EXPECT_TRUE(plan->x_wider_than_kv);
}

TEST(PlannerTest, EmptyAndOneTokenSequences) {
  const KvprProfile fast = Flat(50, 4096, 4096, 1e12);
  auto plan = PlanSplit(fast, Mha(8, 0));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->split, 0u);
  EXPECT_EQ(plan->offload_step_ms, 0.0);
  EXPECT_EQ(plan->layer_splits.size(), 32u);
  plan = PlanSplit(fast, Mha(8, 1));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->split, 1u);  // below the granularity: 0 or s
  const KvprProfile slow = Flat(50, 4096, 4096, 0.001);
  plan = PlanSplit(slow, Mha(8, 1));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->split, 0u);
  plan = PlanSplit(fast, Mha(8, 100));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->split, 100u);
  EXPECT_EQ(SplitGrid(0, 128), std::vector<size_t>{0});
  EXPECT_EQ(SplitGrid(100, 128), (std::vector<size_t>{0, 100}));
  EXPECT_EQ(SplitGrid(300, 128), (std::vector<size_t>{0, 128, 256}));
}

TEST(PlannerTest, FlatRateSplitIsBatchInvariantAndTimeScales) {
  const KvprProfile p = Flat(50, 4096, 4096, 150);
  auto one = PlanSplit(p, Mha(1, 8192), {.per_layer = false});
  auto many = PlanSplit(p, Mha(16, 8192), {.per_layer = false});
  ASSERT_TRUE(one.ok() && many.ok());
  EXPECT_EQ(one->split, many->split);
  EXPECT_NEAR(many->kvpr_step_ms / one->kvpr_step_ms, 16.0, 1e-9);
  EXPECT_NEAR(many->offload_step_ms / one->offload_step_ms, 16.0, 1e-9);
}

TEST(PlannerTest, LargerBatchFillsTheGemmAndRecomputesMore) {
  // Rate rises with rows (small GEMMs are inefficient): a larger batch runs the GEMM faster.
  const KvprProfile p = Synthetic(50, 4096, 4096, {{64, 5}, {4096, 100}, {65536, 400}});
  auto small = PlanSplit(p, Mha(1, 4096), {.per_layer = false});
  auto large = PlanSplit(p, Mha(32, 4096), {.per_layer = false});
  ASSERT_TRUE(small.ok() && large.ok());
  EXPECT_GT(large->split, small->split);
  EXPECT_GT(large->speedup, small->speedup);
}

TEST(PlannerTest, SplitIsTheExhaustiveMinimumWithLayerCompute) {
  KvprProfile p = Synthetic(53, 4096, 4096, {{64, 20}, {1024, 300}, {65536, 600}}, 8);
  p.h2d_latency_us = 5;
  p.device_gbps = 2500;
  for (size_t batch : {1, 8, 32}) {
    for (size_t seq : {512, 4096, 20000}) {
      for (double compute : {0.0, 0.2, 5.0}) {
        KvprShape s = Mha(batch, seq);
        s.layer_compute_ms = compute;
        auto plan = PlanSplit(p, s, {.per_layer = false});
        ASSERT_TRUE(plan.ok());
        double best = std::numeric_limits<double>::infinity();
        for (size_t l : SplitGrid(seq, 128)) {
          best = std::min(best, PredictStep(p, s, {l})->step_ms);
        }
        EXPECT_NEAR(plan->kvpr_step_ms, best, 1e-9 * best);
        EXPECT_NEAR(plan->kvpr_step_ms, PredictStep(p, s, {plan->split})->step_ms, 1e-9);
        EXPECT_GE(plan->kvpr_step_ms, 32 * compute);
        EXPECT_LE(plan->kvpr_step_ms, plan->offload_step_ms);
      }
    }
  }
}

TEST(PlannerTest, PerLayerSplitsNeverPredictWorseAndAreConsistent) {
  // Coarse grid (granularity s/4): the balance point falls between grid points, where mixing
  // two neighbouring splits across layers can beat every uniform split.
  const KvprProfile p = Flat(50, 4096, 4096, 150);
  KvprShape s = Mha(8, 8192);
  bool any_refined = false;
  for (size_t g : {2048, 1024, 512, 128}) {
    auto plan = PlanSplit(p, s, {.granularity = g, .per_layer = true});
    ASSERT_TRUE(plan.ok());
    ASSERT_EQ(plan->layer_splits.size(), 32u);
    EXPECT_LE(plan->kvpr_step_ms, plan->uniform_step_ms);
    for (size_t l : plan->layer_splits) EXPECT_EQ(l % g, 0u);
    EXPECT_NEAR(PredictStep(p, s, plan->layer_splits)->step_ms, plan->kvpr_step_ms, 1e-9);
    const bool refined = !std::all_of(plan->layer_splits.begin(), plan->layer_splits.end(),
                                      [&](size_t l) { return l == plan->split; });
    if (refined) {
      EXPECT_LE(plan->kvpr_step_ms, plan->uniform_step_ms * 0.995);
      EXPECT_NE(plan->reason.find("per-layer"), std::string::npos);
    }
    any_refined |= refined;
  }
  EXPECT_TRUE(any_refined);
}

TEST(PlannerTest, RecomputeFormAndCopiesFollowTheRuntime) {
  // Flat 100 TFLOP/s, 10 us per small launch, 10 us per copy, no device-bandwidth term.
  KvprProfile p = Synthetic(50, 4096, 4096, {{1, 100}, {size_t{1} << 30, 100}}, 10);
  p.h2d_latency_us = 10;
  KvprShape s = Mha(2, 4096);
  const size_t l = 2500;
  const double gemm_ms = 2.0 * 2 * l * 4096 * 2 * 4096 / 100e12 * 1e3;
  auto fused = LayerCostAt(p, s, l);
  ASSERT_TRUE(fused.ok());
  EXPECT_NEAR(fused->recompute_ms, gemm_ms + 0.010, 1e-9);
  const double x_bytes = 2.0 * l * 4096 * 2;
  EXPECT_NEAR(fused->x_ms, 0.010 + x_bytes / 50e9 * 1e3, 1e-9);
  // Per sequence chunks of 1000 rows: 1000, 1000, 500 for each of 2 sequences = 6 groups of
  // 2 GEMMs (same flops at a flat rate) and 3 small launches each.
  s.recompute = {.chunk_rows = 1000, .gemms = 2, .small_launches = 3};
  s.transfer_copies = 2;
  auto chunked = LayerCostAt(p, s, l);
  ASSERT_TRUE(chunked.ok());
  EXPECT_NEAR(chunked->recompute_ms, gemm_ms + 6 * 3 * 0.010, 1e-9);
  EXPECT_NEAR(chunked->x_ms, 2 * 0.010 + x_bytes / 50e9 * 1e3, 1e-9);
  // The element-wise pass at the device bandwidth.
  p.device_gbps = 1000;
  s.recompute.pass_bytes_per_row = 100;
  EXPECT_NEAR(LayerCostAt(p, s, l)->recompute_ms,
              gemm_ms + 6 * 3 * 0.010 + 2.0 * l * 100 / 1000e9 * 1e3, 1e-9);
  s.recompute.pass_bytes_per_row = -1;  // default: 2*kv_dim*(4 + kvb) per row
  EXPECT_NEAR(LayerCostAt(p, s, l)->recompute_ms,
              gemm_ms + 6 * 3 * 0.010 + 2.0 * l * 2 * 4096 * 6 / 1000e9 * 1e3, 1e-9);
  // Small chunks on a rate table that rises with rows: slower than one big GEMM.
  const KvprProfile rising = Synthetic(50, 4096, 4096, {{64, 5}, {4096, 100}, {65536, 400}});
  KvprShape one = Mha(8, 4096), small = one;
  small.recompute.chunk_rows = 256;
  EXPECT_GT(LayerCostAt(rising, small, 4096)->recompute_ms,
            2 * LayerCostAt(rising, one, 4096)->recompute_ms);
  s.recompute.gemms = 3;
  EXPECT_EQ(LayerCostAt(p, s, l).status().code(), StatusCode::kInvalidArgument);
  s.recompute.gemms = 1;
  s.transfer_copies = 0;
  EXPECT_EQ(PlanSplit(p, s).status().code(), StatusCode::kInvalidArgument);
}

TEST(PlannerTest, PredictionErrorReport) {
  const KvprProfile p = Flat(50, 4096, 4096, 150);
  const KvprShape s = Mha(8, 4096);
  std::vector<MeasuredStep> measured;
  for (size_t l : {0, 1024, 2048}) {
    measured.push_back({.split = l, .step_ms = PredictStep(p, s, {l})->step_ms * 1.1});
  }
  auto check = CheckPrediction(p, s, measured);
  ASSERT_TRUE(check.ok());
  ASSERT_EQ(check->rows.size(), 3u);
  EXPECT_NEAR(check->max_abs_rel_error, 1 - 1 / 1.1, 1e-9);
  EXPECT_NEAR(check->rows[1].rel_error, 1 / 1.1 - 1, 1e-9);
  EXPECT_TRUE(check->Within(0.15));
  EXPECT_FALSE(check->Within(0.05));
  measured[2].step_ms = PredictStep(p, s, {2048})->step_ms * 0.5;  // prediction 100% high
  check = CheckPrediction(p, s, measured);
  ASSERT_TRUE(check.ok());
  EXPECT_NEAR(check->max_abs_rel_error, 1.0, 1e-9);
  EXPECT_FALSE(check->Within(0.15));
  EXPECT_EQ(PredictionCheckToJson(*check)["rows"].size(), 3u);
  measured[0].step_ms = 0;
  EXPECT_EQ(CheckPrediction(p, s, measured).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckPrediction(p, s, {}).status().code(), StatusCode::kInvalidArgument);
}

TEST(PlannerTest, BadInputsAreStatuses) {
  const KvprProfile p = Flat(50, 4096, 4096, 150);
  KvprShape s = Mha(8, 4096);
  EXPECT_EQ(PredictStep(p, s, {4097}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PredictStep(p, s, {0, 0}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanSplit(p, s, {.granularity = 0}).status().code(), StatusCode::kInvalidArgument);
  KvprShape no_table = s;
  no_table.hidden = 5120;
  no_table.kv_dim = 5120;
  auto missing = PlanSplit(p, no_table);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("kvstar profile"), std::string::npos);
  s.batch = 0;
  EXPECT_EQ(PlanSplit(p, s).status().code(), StatusCode::kInvalidArgument);
  s = Mha(8, 4096);
  s.layer_compute_ms = -1;
  EXPECT_EQ(PlanSplit(p, s).status().code(), StatusCode::kInvalidArgument);
  KvprProfile bad = p;
  bad.h2d_gbps = 0;
  EXPECT_EQ(PlanSplit(bad, Mha(8, 4096)).status().code(), StatusCode::kInvalidArgument);
}

TEST(PlannerTest, LayerComputeEstimateFromDeviceBandwidth) {
  KvprProfile p = Flat(50, 4096, 4096, 150);
  const ModelConfig cfg = Llama(32);
  EXPECT_EQ(EstimateLayerComputeMs(p, cfg, 8, 4096), 0.0);  // no device bandwidth
  p.device_gbps = 2000;
  const double ms = EstimateLayerComputeMs(p, cfg, 8, 4096);
  // Weights: 4 * 4096^2 + 3 * 4096 * 11008 parameters, 2 bytes; K/V: 8 * 4096 * 8192 * 2 bytes.
  const double bytes = (4.0 * 4096 * 4096 + 3.0 * 4096 * 11008) * 2 + 8.0 * 4096 * 8192 * 2;
  EXPECT_NEAR(ms, bytes / 2e12 * 1e3, 1e-9);
}

}  // namespace
}  // namespace kvstar::recompute

namespace kvstar::recompute {
namespace {

// The profile measured on the H100 of the GPU machine (docs/BENCHMARKS.md, "KVPR"): the plans
// the goals' shapes get from real numbers.
TEST(PlannerMeasuredProfileTest, H100PlansForMhaAndGqa) {
  auto p =
      LoadProfile(std::string(KVSTAR_SOURCE_DIR) + "/src/recompute/testdata/profile_h100.json");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->device_name, "NVIDIA H100 80GB HBM3");
  // Llama-2-7B (MHA): recomputing is cheaper than sending X on an H100, so everything is
  // recomputed and the step approaches the 2x byte ratio.
  auto plan = PlanSplit(*p, Mha(8, 4096));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->split, 4096u);
  EXPECT_GT(plan->speedup, 1.8);
  EXPECT_LT(plan->speedup, 2.0);
  EXPECT_LT(plan->layer_cost.recompute_ms, plan->layer_cost.x_ms);
  // Llama-3.1-8B (GQA, group 4): l = 0.
  KvprShape gqa = ShapeFromConfig(Llama(8), 8, 8192);
  plan = PlanSplit(*p, gqa);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->split, 0u);
  EXPECT_TRUE(plan->x_wider_than_kv);
}

}  // namespace
}  // namespace kvstar::recompute
