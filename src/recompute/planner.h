// KVPR cost model and planner: for a batch of sequences whose K/V lives in host memory, choose
// the split l such that tokens [0, l) are recomputed on the device from their attention-input
// activations X and tokens [l, s) are streamed as K/V, minimising the predicted decode step.
//
// The model and the pipeline it assumes are written out in docs/KVPR.md; in short, per layer i
// and one decode step (all times in ms):
//   t_x(l)   = n*lat + b*l*hidden*xb / BW          (X of the prefix over the H2D link, first)
//   t_kv(l)  = n*lat + b*(s-l)*2*kv_dim*kvb / BW   (K/V of the rest, right after X)
//   t_rc(l)  = 2*b*l*hidden*2*kv_dim / rate(b*l) + overhead + b*l*2*kv_dim*(4+kvb) / DEV
//   (n copies each, lat only for a transfer that moves bytes; t_rc(0) = 0; t_rc as written for
//   the default RecomputeForm, see docs/KVPR.md for chunked forms)
// and the layers run through a two-buffer pipeline: the link sends X_i then KV_i as soon as it
// is free and staging buffer i%2 was released by layer i-2; the compute stream runs the
// recomputation of layer i once X_i arrived and layer i-1 finished, then layer i's compute once
// KV_i arrived. Without layer compute this gives per layer max(t_x + t_kv, t_x + t_rc).
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/half.h"
#include "base/status.h"
#include "model/config.h"
#include "recompute/profile.h"

namespace kvstar::recompute {

// How the runtime launches the recomputation of one layer, so that the model follows it.
// The default is one fused K+V GEMM over the whole batch's b*l rows and one element-wise pass.
struct RecomputeForm {
  // Rows per launch group, per sequence (each sequence's l rows cut into chunks); 0 = all b*l
  // rows of the batch in one group.
  size_t chunk_rows = 0;
  // GEMMs per group: 1 = fused [2*kv_dim][hidden]; 2 = K and V separately ([kv_dim][hidden]
  // each, modelled as two fused-table GEMMs of half the rows: the same output tiles).
  size_t gemms = 1;
  // Element-wise launches per group after the GEMMs (bias, RoPE, write to the KV layout), each
  // costing the table's launch_overhead_us.
  size_t small_launches = 1;
  // Device bytes those launches move per recomputed row; < 0 = 2*kv_dim*(4 + kvb) (read the
  // f32 GEMM output once, write K/V in the KV dtype).
  double pass_bytes_per_row = -1;
};

struct KvprShape {
  size_t batch = 1;    // b: sequences decoded together, all with seq_len tokens in host memory
  size_t seq_len = 0;  // s: tokens whose K/V (or X) is in host memory, per sequence
  size_t hidden = 0;
  size_t kv_dim = 0;  // kv_heads * head_dim
  size_t layers = 0;
  size_t kv_elem_bytes = 2;  // kvb
  size_t x_elem_bytes = 2;   // xb
  // Device time of one layer of one decode step once its K/V is complete (attention over s
  // tokens, projections, MLP), the same in offload and kvpr. 0 = unknown (treated as free).
  double layer_compute_ms = 0;
  // Per step, outside the layers (embedding, LM head, sampling). Added to every prediction.
  double step_fixed_ms = 0;
  // Copies per transfer of one layer's X or K/V (e.g. one per sequence: batch); each costs the
  // profile's h2d_latency_us.
  size_t transfer_copies = 1;
  RecomputeForm recompute;
};

// hidden, kv_dim and layers of `cfg`; kv_elem_bytes from `kv_dtype`; X in bf16.
KvprShape ShapeFromConfig(const ModelConfig& cfg, size_t batch, size_t seq_len,
                          DType kv_dtype = DType::kBF16);

// A memory-bound estimate of KvprShape::layer_compute_ms when it was not measured: one read of
// a layer's weights (in the config's dtype, at least 2 bytes) and of the batch's K/V at the
// profile's device bandwidth. 0 when the profile has no device bandwidth.
double EstimateLayerComputeMs(const KvprProfile& profile, const ModelConfig& cfg, size_t batch,
                              size_t seq_len, DType kv_dtype = DType::kBF16);

// The terms of one layer at split l (ms).
struct LayerCost {
  size_t split = 0;
  double x_ms = 0;
  double kv_ms = 0;
  double recompute_ms = 0;
};

// Predicted timeline of one decode step.
struct StepPrediction {
  double step_ms = 0;
  double link_ms = 0;       // sum over layers of t_x + t_kv (link busy time)
  double recompute_ms = 0;  // sum of t_rc
  double compute_ms = 0;    // layers * layer_compute_ms
  double link_bytes = 0;    // bytes over the H2D link per step
};

struct PlannerOptions {
  // Splits are multiples of this (the block size) unless seq_len is smaller, then 0 or seq_len.
  size_t granularity = 128;
  // Try per-layer splits (local search around the best uniform split); kept only when it
  // predicts at least `per_layer_min_gain` (relative) less than the uniform split.
  bool per_layer = true;
  double per_layer_min_gain = 0.005;
};

struct KvprPlan {
  size_t split = 0;                  // uniform l, every layer
  std::vector<size_t> layer_splits;  // l per layer (all == split unless the refinement helped)
  double kvpr_step_ms = 0;           // predicted with layer_splits
  double uniform_step_ms = 0;        // predicted with `split` in every layer
  double offload_step_ms = 0;        // predicted with l = 0 (plain offload)
  double speedup = 1;                // offload_step_ms / kvpr_step_ms
  bool x_wider_than_kv = false;      // GQA rule applied: l = 0
  double offload_link_bytes = 0;
  double kvpr_link_bytes = 0;
  LayerCost layer_cost;    // the terms at `split`
  double rate_tflops = 0;  // GEMM rate at b * split rows (0 when split == 0)
  size_t granularity = 0;  // grid step actually used
  std::string reason;      // one paragraph for people and --json
};

// The cost terms of one layer at split l; requires a GEMM table for (hidden, kv_dim) when l > 0.
StatusOr<LayerCost> LayerCostAt(const KvprProfile& profile, const KvprShape& shape, size_t l);

// splits: one per layer, or a single value for every layer; each <= seq_len.
StatusOr<StepPrediction> PredictStep(const KvprProfile& profile, const KvprShape& shape,
                                     const std::vector<size_t>& splits);

// The grid the planner searches: 0, g, 2g, ... <= s; {0, s} when 0 < s < g; {0} when s == 0.
std::vector<size_t> SplitGrid(size_t seq_len, size_t granularity);

// Errors: InvalidArgument for a bad shape or granularity, NotFound when the profile has no GEMM
// table for (hidden, kv_dim) and X is narrower than K+V (the message says how to measure one).
StatusOr<KvprPlan> PlanSplit(const KvprProfile& profile, const KvprShape& shape,
                             const PlannerOptions& options = {});

// Model check against the runtime: measured step times at given splits.
struct MeasuredStep {
  size_t split = 0;                  // uniform l (used when layer_splits is empty)
  std::vector<size_t> layer_splits;  // optional per-layer l
  double step_ms = 0;                // measured, > 0
};
struct PredictionRow {
  size_t split = 0;
  double measured_ms = 0;
  double predicted_ms = 0;
  double rel_error = 0;  // (predicted - measured) / measured
};
struct PredictionCheck {
  std::vector<PredictionRow> rows;
  double max_abs_rel_error = 0;
  double mean_abs_rel_error = 0;
  bool Within(double tolerance) const { return max_abs_rel_error <= tolerance; }
};
StatusOr<PredictionCheck> CheckPrediction(const KvprProfile& profile, const KvprShape& shape,
                                          const std::vector<MeasuredStep>& measured);

nlohmann::json PlanToJson(const KvprPlan& plan);
nlohmann::json PredictionCheckToJson(const PredictionCheck& check);

}  // namespace kvstar::recompute
