#include "recompute/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <limits>

namespace kvstar::recompute {
namespace {

std::string Format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string Format(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  char buf[1024];
  std::vsnprintf(buf, sizeof(buf), fmt, args);
  va_end(args);
  return buf;
}

double D(size_t v) { return static_cast<double>(v); }

Status ValidateShape(const KvprShape& s) {
  if (s.batch == 0 || s.hidden == 0 || s.kv_dim == 0 || s.layers == 0 || s.kv_elem_bytes == 0 ||
      s.x_elem_bytes == 0) {
    return InvalidArgument(
        "KVPR shape: batch (%zu), hidden (%zu), kv_dim (%zu), layers (%zu), kv_elem_bytes (%zu) "
        "and x_elem_bytes (%zu) must all be > 0",
        s.batch, s.hidden, s.kv_dim, s.layers, s.kv_elem_bytes, s.x_elem_bytes);
  }
  if (!std::isfinite(s.layer_compute_ms) || s.layer_compute_ms < 0 ||
      !std::isfinite(s.step_fixed_ms) || s.step_fixed_ms < 0) {
    return InvalidArgument("KVPR shape: layer_compute_ms (%g) and step_fixed_ms (%g) must be >= 0",
                           s.layer_compute_ms, s.step_fixed_ms);
  }
  if (s.transfer_copies == 0 || (s.recompute.gemms != 1 && s.recompute.gemms != 2) ||
      !std::isfinite(s.recompute.pass_bytes_per_row)) {
    return InvalidArgument(
        "KVPR shape: transfer_copies (%zu) must be >= 1, recompute.gemms (%zu) 1 or 2, "
        "recompute.pass_bytes_per_row (%g) finite",
        s.transfer_copies, s.recompute.gemms, s.recompute.pass_bytes_per_row);
  }
  return Status::Ok();
}

// Milliseconds to move `bytes` over the H2D link as `copies` copies.
double LinkMs(const KvprProfile& p, double bytes, size_t copies) {
  if (bytes <= 0) return 0;
  return (D(copies) * p.h2d_latency_us * 1e-3 + bytes / (p.h2d_gbps * 1e9) * 1e3) * p.link_scale;
}

double XBytes(const KvprShape& s, size_t l) {
  return D(s.batch) * D(l) * D(s.hidden) * D(s.x_elem_bytes);
}
double KvBytes(const KvprShape& s, size_t tokens) {
  return D(s.batch) * D(tokens) * 2.0 * D(s.kv_dim) * D(s.kv_elem_bytes);
}

// One launch group of `rows` rows: its GEMMs and small launches (no memory pass).
double GroupMs(const GemmTable& t, const RecomputeForm& f, double rows) {
  const double gemm = f.gemms == 2 ? 2.0 * t.GemmMs(rows / 2) : t.GemmMs(rows);
  return gemm + D(f.small_launches) * t.launch_overhead_us * 1e-3;
}

double RecomputeMs(const KvprProfile& p, const GemmTable& t, const KvprShape& s, size_t l) {
  const RecomputeForm& f = s.recompute;
  const double rows = D(s.batch) * D(l);
  double ms = 0;
  if (f.chunk_rows == 0) {
    ms = GroupMs(t, f, rows);
  } else {
    const size_t full = l / f.chunk_rows, rest = l % f.chunk_rows;
    ms = D(s.batch) *
         (D(full) * GroupMs(t, f, D(f.chunk_rows)) + (rest > 0 ? GroupMs(t, f, D(rest)) : 0.0));
  }
  if (p.device_gbps > 0) {
    const double per_row = f.pass_bytes_per_row >= 0
                               ? f.pass_bytes_per_row
                               : 2.0 * D(s.kv_dim) * (4.0 + D(s.kv_elem_bytes));
    ms += rows * per_row / (p.device_gbps * 1e9) * 1e3;
  }
  return ms * p.recompute_scale;
}

LayerCost CostWithTable(const KvprProfile& p, const GemmTable* table, const KvprShape& s,
                        size_t l) {
  LayerCost c;
  c.split = l;
  c.x_ms = LinkMs(p, XBytes(s, l), s.transfer_copies);
  c.kv_ms = LinkMs(p, KvBytes(s, s.seq_len - l), s.transfer_copies);
  if (l > 0) {
    KVSTAR_CHECK(table != nullptr, "no GEMM table for split %zu", l);
    c.recompute_ms = RecomputeMs(p, *table, s, l);
  }
  return c;
}

// The two-buffer pipeline of docs/KVPR.md, from an idle link and device at the step start.
double Simulate(const std::vector<const LayerCost*>& layers, double compute_ms, double fixed_ms) {
  double link_free = 0;
  double gpu_free = 0;
  double done_prev = 0;   // compute end of layer i-1
  double done_prev2 = 0;  // compute end of layer i-2: frees staging buffer i % 2
  for (const LayerCost* c : layers) {
    const double start = std::max(link_free, done_prev2);
    const double x_arrived = start + c->x_ms;
    const double kv_arrived = x_arrived + c->kv_ms;
    link_free = kv_arrived;
    const double rc_end = c->split > 0 ? std::max(gpu_free, x_arrived) + c->recompute_ms : gpu_free;
    const double done = std::max(rc_end, kv_arrived) + compute_ms;
    gpu_free = done;
    done_prev2 = done_prev;
    done_prev = done;
  }
  return gpu_free + fixed_ms;
}

StepPrediction Summarize(const KvprShape& s, const std::vector<const LayerCost*>& layers) {
  StepPrediction out;
  out.step_ms = Simulate(layers, s.layer_compute_ms, s.step_fixed_ms);
  for (const LayerCost* c : layers) {
    out.link_ms += c->x_ms + c->kv_ms;
    out.recompute_ms += c->recompute_ms;
    out.link_bytes += XBytes(s, c->split) + KvBytes(s, s.seq_len - c->split);
  }
  out.compute_ms = D(s.layers) * s.layer_compute_ms;
  return out;
}

// Rows of one recompute launch group at split l.
size_t GroupRows(const KvprShape& s, size_t l) {
  return s.recompute.chunk_rows == 0 ? s.batch * l : std::min(s.recompute.chunk_rows, l);
}

bool XWiderThanKv(const KvprShape& s) {
  return s.hidden * s.x_elem_bytes >= 2 * s.kv_dim * s.kv_elem_bytes;
}

}  // namespace

KvprShape ShapeFromConfig(const ModelConfig& cfg, size_t batch, size_t seq_len, DType kv_dtype) {
  KvprShape s;
  s.batch = batch;
  s.seq_len = seq_len;
  s.hidden = cfg.hidden_size;
  s.kv_dim = cfg.kv_dim();
  s.layers = cfg.num_layers;
  s.kv_elem_bytes = DTypeSize(kv_dtype);
  s.x_elem_bytes = 2;
  return s;
}

double EstimateLayerComputeMs(const KvprProfile& profile, const ModelConfig& cfg, size_t batch,
                              size_t seq_len, DType kv_dtype) {
  if (profile.device_gbps <= 0) return 0;
  const double h = D(cfg.hidden_size);
  double params = h * D(cfg.q_dim()) + 2.0 * h * D(cfg.kv_dim()) + D(cfg.q_dim()) * h +
                  3.0 * h * D(cfg.intermediate_size);
  const double weight_bytes = params * std::max<double>(2.0, D(DTypeSize(cfg.torch_dtype)));
  const double kv_bytes = D(batch) * D(seq_len) * 2.0 * D(cfg.kv_dim()) * D(DTypeSize(kv_dtype));
  return (weight_bytes + kv_bytes) / (profile.device_gbps * 1e9) * 1e3;
}

StatusOr<LayerCost> LayerCostAt(const KvprProfile& profile, const KvprShape& shape, size_t l) {
  KVSTAR_RETURN_IF_ERROR(ValidateShape(shape));
  KVSTAR_RETURN_IF_ERROR(ValidateProfile(profile, "KVPR profile"));
  if (l > shape.seq_len) {
    return InvalidArgument("KVPR split %zu is larger than the sequence length %zu", l,
                           shape.seq_len);
  }
  const GemmTable* table = profile.FindGemm(shape.hidden, shape.kv_dim);
  if (l > 0 && table == nullptr) {
    return NotFound("the profile of %s has no GEMM table for hidden %zu kv_dim %zu",
                    profile.device_name.c_str(), shape.hidden, shape.kv_dim);
  }
  return CostWithTable(profile, table, shape, l);
}

StatusOr<StepPrediction> PredictStep(const KvprProfile& profile, const KvprShape& shape,
                                     const std::vector<size_t>& splits) {
  if (splits.size() != 1 && splits.size() != shape.layers) {
    return InvalidArgument("KVPR: %zu splits given for %zu layers (give one or one per layer)",
                           splits.size(), shape.layers);
  }
  std::vector<LayerCost> costs;
  for (size_t l : splits) {
    KVSTAR_ASSIGN_OR_RETURN(LayerCost c, LayerCostAt(profile, shape, l));
    costs.push_back(c);
  }
  std::vector<const LayerCost*> layers(shape.layers);
  for (size_t i = 0; i < shape.layers; ++i) layers[i] = &costs[splits.size() == 1 ? 0 : i];
  return Summarize(shape, layers);
}

std::vector<size_t> SplitGrid(size_t seq_len, size_t granularity) {
  std::vector<size_t> grid{0};
  if (seq_len == 0) return grid;
  if (granularity == 0 || seq_len < granularity) {
    grid.push_back(seq_len);
    return grid;
  }
  for (size_t l = granularity; l <= seq_len; l += granularity) grid.push_back(l);
  return grid;
}

StatusOr<KvprPlan> PlanSplit(const KvprProfile& profile, const KvprShape& shape,
                             const PlannerOptions& options) {
  KVSTAR_RETURN_IF_ERROR(ValidateShape(shape));
  KVSTAR_RETURN_IF_ERROR(ValidateProfile(profile, "KVPR profile"));
  if (options.granularity == 0) return InvalidArgument("KVPR planner: granularity must be > 0");
  const size_t s = shape.seq_len;
  const size_t L = shape.layers;

  KvprPlan plan;
  plan.granularity = s < options.granularity ? std::max<size_t>(s, 1) : options.granularity;
  const LayerCost offload = CostWithTable(profile, nullptr, shape, 0);
  const std::vector<const LayerCost*> offload_layers(L, &offload);
  const StepPrediction off = Summarize(shape, offload_layers);
  plan.offload_step_ms = off.step_ms;
  plan.offload_link_bytes = off.link_bytes;
  plan.kvpr_step_ms = plan.uniform_step_ms = off.step_ms;
  plan.kvpr_link_bytes = off.link_bytes;
  plan.layer_cost = offload;
  plan.layer_splits.assign(L, 0);

  if (s == 0) {
    plan.reason = "no tokens in host memory (s = 0): nothing to stream or recompute, l = 0";
    return plan;
  }
  const size_t x_token = shape.hidden * shape.x_elem_bytes;
  const size_t kv_token = 2 * shape.kv_dim * shape.kv_elem_bytes;
  if (XWiderThanKv(shape)) {
    plan.x_wider_than_kv = true;
    plan.reason = Format(
        "X is wider than K+V: X is hidden*xb = %zu*%zu = %zu bytes per token, K+V is "
        "2*kv_dim*kvb = 2*%zu*%zu = %zu bytes per token (hidden / kv_dim = %.3g: grouped-query "
        "attention with more than 2 query heads per KV head); sending X instead of K/V cannot "
        "save link bytes, so l = 0 (plain offload, predicted %.3f ms per step)",
        shape.hidden, shape.x_elem_bytes, x_token, shape.kv_dim, shape.kv_elem_bytes, kv_token,
        D(shape.hidden) / D(shape.kv_dim), plan.offload_step_ms);
    return plan;
  }
  const GemmTable* table = profile.FindGemm(shape.hidden, shape.kv_dim);
  if (table == nullptr) {
    return NotFound(
        "the profile of %s has no GEMM table for hidden %zu kv_dim %zu: run `kvstar profile` "
        "with this model (--shape or --model) to measure one",
        profile.device_name.c_str(), shape.hidden, shape.kv_dim);
  }

  // Exhaustive search of the uniform split over the grid.
  const std::vector<size_t> grid = SplitGrid(s, options.granularity);
  std::vector<LayerCost> costs;
  costs.reserve(grid.size());
  for (size_t l : grid) costs.push_back(CostWithTable(profile, table, shape, l));
  size_t best = 0;
  double best_ms = std::numeric_limits<double>::infinity();
  std::vector<const LayerCost*> layers(L);
  for (size_t g = 0; g < grid.size(); ++g) {
    std::fill(layers.begin(), layers.end(), &costs[g]);
    const double ms = Simulate(layers, shape.layer_compute_ms, shape.step_fixed_ms);
    if (ms < best_ms * (1 - 1e-12)) {  // ties keep the smaller split (less device work)
      best_ms = ms;
      best = g;
    }
  }
  plan.split = grid[best];
  plan.uniform_step_ms = plan.kvpr_step_ms = best_ms;
  plan.layer_cost = costs[best];
  plan.layer_splits.assign(L, plan.split);
  std::fill(layers.begin(), layers.end(), &costs[best]);
  plan.kvpr_link_bytes = Summarize(shape, layers).link_bytes;
  if (plan.split > 0) plan.rate_tflops = table->TflopsAt(D(GroupRows(shape, plan.split)));

  // Per-layer refinement: move one layer's split by one grid step while it helps. The edges of
  // the pipeline (first X, last compute) and the grid's coarseness are what it can win back.
  if (options.per_layer && L > 1 && grid.size() > 1) {
    std::vector<size_t> idx(L, best);
    double cur = best_ms;
    for (int pass = 0; pass < 64; ++pass) {
      bool improved = false;
      for (size_t i = 0; i < L; ++i) {
        for (int step : {-1, 1}) {
          if ((step < 0 && idx[i] == 0) || (step > 0 && idx[i] + 1 == grid.size())) continue;
          const size_t cand = step < 0 ? idx[i] - 1 : idx[i] + 1;
          layers[i] = &costs[cand];
          const double ms = Simulate(layers, shape.layer_compute_ms, shape.step_fixed_ms);
          if (ms < cur * (1 - 1e-12)) {
            cur = ms;
            idx[i] = cand;
            improved = true;
          } else {
            layers[i] = &costs[idx[i]];
          }
        }
      }
      if (!improved) break;
    }
    if (cur <= best_ms * (1 - options.per_layer_min_gain)) {
      for (size_t i = 0; i < L; ++i) plan.layer_splits[i] = grid[idx[i]];
      plan.kvpr_step_ms = cur;
      plan.kvpr_link_bytes = Summarize(shape, layers).link_bytes;
    }
  }
  plan.speedup = plan.offload_step_ms / plan.kvpr_step_ms;

  const LayerCost& c = plan.layer_cost;
  if (plan.split == 0) {
    const LayerCost& first = costs[1];
    plan.reason = Format(
        "recomputation does not pay here: at the smallest split l = %zu one layer recomputes for "
        "%.3f ms (GEMM at %.1f TFLOP/s for %zu rows) while streaming the rest takes %.3f ms after "
        "%.3f ms of X, against %.3f ms for all K/V; l = 0 (plain offload, predicted %.3f ms per "
        "step)",
        grid[1], first.recompute_ms, table->TflopsAt(D(GroupRows(shape, grid[1]))),
        GroupRows(shape, grid[1]), first.kv_ms, first.x_ms, offload.kv_ms, plan.offload_step_ms);
  } else {
    plan.reason = Format(
        "l = %zu of s = %zu tokens (%.0f%%) recomputed from X: per layer X %.3f ms, then K/V of "
        "the rest %.3f ms on the link while the recomputation takes %.3f ms (%.1f TFLOP/s at %zu "
        "rows); X is %zu bytes per token against %zu for K+V. Predicted %.3f ms per step against "
        "%.3f ms for plain offload (%.2fx)%s",
        plan.split, s, 100.0 * D(plan.split) / D(s), c.x_ms, c.kv_ms, c.recompute_ms,
        plan.rate_tflops, GroupRows(shape, plan.split), x_token, kv_token, plan.uniform_step_ms,
        plan.offload_step_ms, plan.offload_step_ms / plan.uniform_step_ms,
        plan.kvpr_step_ms < plan.uniform_step_ms
            ? Format("; per-layer splits predict %.3f ms", plan.kvpr_step_ms).c_str()
            : "");
  }
  return plan;
}

StatusOr<PredictionCheck> CheckPrediction(const KvprProfile& profile, const KvprShape& shape,
                                          const std::vector<MeasuredStep>& measured) {
  if (measured.empty()) return InvalidArgument("KVPR prediction check: no measured steps");
  PredictionCheck out;
  double sum = 0;
  for (const MeasuredStep& m : measured) {
    if (!std::isfinite(m.step_ms) || m.step_ms <= 0) {
      return InvalidArgument("KVPR prediction check: measured step at split %zu is %g ms (> 0)",
                             m.split, m.step_ms);
    }
    const std::vector<size_t> splits =
        m.layer_splits.empty() ? std::vector<size_t>{m.split} : m.layer_splits;
    KVSTAR_ASSIGN_OR_RETURN(StepPrediction p, PredictStep(profile, shape, splits));
    PredictionRow row;
    row.split = m.layer_splits.empty() ? m.split : m.layer_splits.front();
    row.measured_ms = m.step_ms;
    row.predicted_ms = p.step_ms;
    row.rel_error = (p.step_ms - m.step_ms) / m.step_ms;
    out.max_abs_rel_error = std::max(out.max_abs_rel_error, std::abs(row.rel_error));
    sum += std::abs(row.rel_error);
    out.rows.push_back(row);
  }
  out.mean_abs_rel_error = sum / D(out.rows.size());
  return out;
}

nlohmann::json PlanToJson(const KvprPlan& plan) {
  nlohmann::json j;
  j["split"] = plan.split;
  j["layer_splits"] = plan.layer_splits;
  j["granularity"] = plan.granularity;
  j["kvpr_step_ms"] = plan.kvpr_step_ms;
  j["uniform_step_ms"] = plan.uniform_step_ms;
  j["offload_step_ms"] = plan.offload_step_ms;
  j["speedup"] = plan.speedup;
  j["x_wider_than_kv"] = plan.x_wider_than_kv;
  j["offload_link_bytes"] = plan.offload_link_bytes;
  j["kvpr_link_bytes"] = plan.kvpr_link_bytes;
  j["layer"] = {{"x_ms", plan.layer_cost.x_ms},
                {"kv_ms", plan.layer_cost.kv_ms},
                {"recompute_ms", plan.layer_cost.recompute_ms},
                {"gemm_tflops", plan.rate_tflops}};
  j["reason"] = plan.reason;
  return j;
}

nlohmann::json PredictionCheckToJson(const PredictionCheck& check) {
  nlohmann::json rows = nlohmann::json::array();
  for (const PredictionRow& r : check.rows) {
    rows.push_back({{"split", r.split},
                    {"measured_ms", r.measured_ms},
                    {"predicted_ms", r.predicted_ms},
                    {"rel_error", r.rel_error}});
  }
  return {{"rows", rows},
          {"max_abs_rel_error", check.max_abs_rel_error},
          {"mean_abs_rel_error", check.mean_abs_rel_error}};
}

}  // namespace kvstar::recompute
