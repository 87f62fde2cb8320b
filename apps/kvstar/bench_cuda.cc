// kvstar bench --device cuda: dense, offload and kvpr decode on one GPU, same model, same
// contexts, one run, with the device's limits (pinned host-to-device copy bandwidth, device copy
// bandwidth, bf16 GEMM rate) measured in the same run.
#include "bench_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "base/plot.h"
#include "base/progress.h"
#include "base/timer.h"
#include "cli_common.h"
#include "engine/cuda/cuda_batch.h"
#include "engine/cuda/cuda_model.h"
#include "engine/cuda/cuda_runner.h"
#include "model/config.h"
#include "model/shapes.h"
#include "model/weights.h"
#include "ops/cuda/device.h"
#include "ops/cuda/ops.h"
#include "recompute/planner.h"
#include "recompute/profiler_cuda.h"

namespace kvstar::cli {
namespace {

using cuda::BatchOptions;
using cuda::CudaBatch;
using cuda::CudaModel;
using cuda::KvMode;

StatusOr<std::vector<size_t>> ParseSizeList(const std::string& text, const char* flag) {
  std::vector<size_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(item.c_str(), &end, 10);
    size_t mult = 1;
    if (*end == 'K' || *end == 'k') mult = 1024, ++end;
    if (item.empty() || *end != '\0' || v == 0) {
      return InvalidArgument("%s: '%s' is not a list of positive integers (e.g. 4096,32K)", flag,
                             text.c_str());
    }
    out.push_back(static_cast<size_t>(v) * mult);
  }
  if (out.empty()) return InvalidArgument("%s is empty", flag);
  return out;
}

// Bytes of host memory available for pinned KV (MemAvailable of /proc/meminfo).
size_t HostAvailableBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024;
  }
  return 0;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

struct Limits {
  double h2d_gbs = 0;      // pinned host -> device, 256 MiB copies
  double hbm_gbs = 0;      // device copy, read + write bytes
  double gemm_tflops = 0;  // bf16 4096^3
};

}  // namespace

int RunCudaBench(const CudaBenchFlags& f) {
  cuda::SetDependentLaunches(f.pdl);
  cuda::SetSkinnyStages(f.skinny_stages);  // checked by the flag's parser
  if (f.decode_attention != "auto") {
    cuda::SetDecodeAttentionOnTensorCores(f.decode_attention == "mma");
  }
  if (f.skinny_split != "auto") cuda::SetSkinnySplit(f.skinny_split == "on");
  auto contexts = ParseSizeList(f.contexts, "--context");
  if (!contexts.ok()) return ReportError(contexts.status());
  std::vector<size_t> batches;
  const bool max_batch = f.batch == "max";
  if (!max_batch) {
    auto b = ParseSizeList(f.batch, "--batch");
    if (!b.ok()) return ReportError(b.status());
    batches = *b;
  }
  std::vector<KvMode> modes;
  {
    std::stringstream ss(f.modes);
    std::string m;
    while (std::getline(ss, m, ',')) {
      auto mode = cuda::ParseKvMode(m);
      if (!mode.ok()) return ReportError(mode.status());
      modes.push_back(*mode);
    }
    if (modes.empty()) return ReportError(InvalidArgument("--modes is empty"));
  }
  const bool has_kvstar = std::find(modes.begin(), modes.end(), KvMode::kKvstar) != modes.end();
  if (f.prefill != "real" && f.prefill != "random") {
    return ReportError(
        InvalidArgument("--prefill must be real or random, not '%s'", f.prefill.c_str()));
  }
  const bool use_store = f.store != "dram";
  if (use_store && (!f.store.starts_with("file:") || f.prefill != "real")) {
    return ReportError(InvalidArgument(
        "--store %s: the CUDA bench takes a file store (file:DIR) with --prefill real, for "
        "kvstar's prefix reuse: random contexts have no tokens to address",
        f.store.c_str()));
  }
  if (use_store && !has_kvstar) {
    return ReportError(InvalidArgument(
        "--store %s: only --modes kvstar uses a block store (prefix reuse); add kvstar to --modes "
        "or drop --store",
        f.store.c_str()));
  }
  if (f.exclusive_host && !has_kvstar) {
    return ReportError(InvalidArgument(
        "--host-tier exclusive: only --modes kvstar has a host tier to choose (dense keeps its KV "
        "in HBM, offload and kvpr pin every block); add kvstar to --modes or drop the flag"));
  }
  if (has_kvstar && f.gpu_scoring) {
    if (Status s = cuda::CheckGpuScoringStride(f.kvstar.retrieval_stride); !s.ok()) {
      return ReportError(s);
    }
  }
  // kvstar's device cache: a block count per (layer, sequence), or "max".
  auto cache_blocks = ParseKvstarCacheBlocks(f.kvstar_cache_blocks, /*allow_max=*/true);
  if (!cache_blocks.ok()) return ReportError(cache_blocks.status());
  const bool cache_max = *cache_blocks == kCacheBlocksMax;
  const size_t cache_fixed = cache_max ? 0 : *cache_blocks;
  if ((cache_max || cache_fixed > 0) && (!has_kvstar || f.kvstar.deterministic)) {
    return ReportError(InvalidArgument(
        "--kvstar-cache-blocks: the device cache is part of kvstar's non-deterministic schedule; "
        "add kvstar to --modes (without --deterministic) or drop the flag"));
  }
  size_t fixed_split = 0;
  const bool auto_split = f.kvpr_split == "auto";
  if (!auto_split) {
    auto s = ParseSizeList(f.kvpr_split, "--kvpr-split");
    if (!s.ok() || s->size() != 1) {
      return ReportError(InvalidArgument("--kvpr-split must be auto or one token count"));
    }
    fixed_split = (*s)[0];
  }
  const DType kv_dtype = f.kv_dtype == "f32" ? DType::kF32 : DType::kBF16;
  const DType wdtype = f.weight_dtype == "f16" ? DType::kF16 : DType::kBF16;

  if (cuda::DeviceCount() == 0) {
    return ReportError(FailedPrecondition("--device cuda: no CUDA device is visible"));
  }
  auto ctx_or = cuda::DeviceContext::Create(0);
  if (!ctx_or.ok()) return ReportError(ctx_or.status());
  cuda::DeviceContext& ctx = **ctx_or;
  size_t budget = ctx.info().total_memory;
  if (!f.hbm_budget.empty()) {
    auto b = ParseBytes(f.hbm_budget, "--hbm-budget");
    if (!b.ok()) return ReportError(b.status());
    budget = *b;
  }

  // The model: random weights made on the device, or a directory copied to it.
  std::unique_ptr<ModelWeights> host_weights;
  std::unique_ptr<CudaModel> model;
  ModelConfig cfg;
  std::string model_name;
  {
    auto c = f.model.empty() ? NamedShape(f.shape) : LoadConfig(f.model);
    if (!c.ok()) return ReportError(c.status());
    cfg = *c;
    Progress progress("weights to the device (layers)", cfg.num_layers, !f.json);
    auto on_layer = [&](size_t done, size_t) { progress.Update(done); };
    if (!f.model.empty()) {
      auto w = ModelWeights::Load(f.model, cfg);
      if (!w.ok()) return ReportError(w.status());
      host_weights = std::move(*w);
      auto m = CudaModel::Upload(ctx, cfg, *host_weights, on_layer);
      if (!m.ok()) return ReportError(m.status());
      model = std::move(*m);
      model_name = f.model;
    } else {
      auto m = CudaModel::Random(ctx, cfg, wdtype, static_cast<uint32_t>(f.seed), on_layer);
      if (!m.ok()) return ReportError(m.status());
      model = std::move(*m);
      model_name = f.shape;
    }
    progress.Finish();
  }

  // Limits of this device, measured now.
  Limits lim;
  {
    auto h2d = cuda::MeasurePinnedH2DBandwidth(ctx, size_t{256} << 20);
    auto hbm = cuda::MeasureDeviceCopyBandwidth(ctx, size_t{1} << 30);
    auto gemm = cuda::MeasureGemmRate(ctx, DType::kBF16, 4096, 4096, 4096);
    if (!h2d.ok()) return ReportError(h2d.status());
    if (!hbm.ok()) return ReportError(hbm.status());
    if (!gemm.ok()) return ReportError(gemm.status());
    lim = {*h2d, *hbm, *gemm};
  }
  // kvstar prefix reuse: one store for every run; block ids seeded with the weights (a
  // directory's fingerprint, or the shape, dtype and seed of random weights) and the KV dtype.
  cuda::KvStore kv_store;
  if (use_store) {
    Hash128 weights_fp;
    if (host_weights != nullptr) {
      weights_fp = host_weights->fingerprint();
    } else {
      const std::string id =
          "random:" + f.shape + ":" + f.weight_dtype + ":" + std::to_string(f.seed);
      weights_fp = HashBytes(id.data(), id.size());
    }
    auto s = cuda::OpenKvStore(f.store, cfg, f.block_tokens, kv_dtype, weights_fp);
    if (!s.ok()) return ReportError(s.status());
    kv_store = std::move(*s);
  }
  const size_t weight_bytes = model->weight_bytes();
  const size_t host_avail = HostAvailableBytes();
  // Bytes of weights a decode step reads (the embedding table only for a few rows unless tied).
  const double weight_read =
      static_cast<double>(weight_bytes) -
      (cfg.tie_word_embeddings ? 0.0 : static_cast<double>(model->embed().bytes()));

  nlohmann::json runs = nlohmann::json::array();
  if (!f.json) {
    std::printf(
        "device: %s, HBM budget %.1f GiB, weights %.2f GiB; limits: H2D %.1f GB/s, "
        "HBM copy %.0f GB/s, bf16 GEMM %.0f TFLOP/s\n",
        ctx.info().name.c_str(), budget / 1073741824.0, weight_bytes / 1073741824.0, lim.h2d_gbs,
        lim.hbm_gbs, lim.gemm_tflops);
    std::printf("%-8s %8s %6s %6s %8s %8s %8s %10s %11s %9s %7s %10s %10s\n", "mode", "context",
                "batch", "split", "med_ms", "mean_ms", "p99_ms", "tokens/s", "H2D_MB/step",
                "bound_ms", "mean/bd", "HBM_GiB/r", "max_batch");
  }
  std::mt19937 rng(static_cast<uint32_t>(f.seed));
  std::unique_ptr<recompute::KvprProfile> profile;  // offload / kvpr: loaded once
  std::string profile_error;
  std::string profile_path;
  // --kvpr-calibrate: recomputation time per step summed over the kvpr runs.
  double calib_measured_ms = 0, calib_model_ms = 0;
  double calib_link_measured_ms = 0, calib_link_model_ms = 0;  // offload runs
  std::string calib_runs;
  std::map<std::pair<size_t, size_t>, double> dense_step_ms;  // (context, batch) -> median
  for (size_t context : *contexts) {
    for (KvMode mode : modes) {
      BatchOptions o;
      o.mode = mode;
      // Capacity: the context, two untimed steps and the timed ones.
      o.max_tokens = context + f.decode_steps + 3;
      if (o.max_tokens > static_cast<size_t>(cfg.max_position_embeddings)) {
        return ReportError(OutOfRange(
            "--context %zu + --decode-steps %zu + 3 exceed the model's %lld positions; use a "
            "shorter context (e.g. %lld)",
            context, f.decode_steps, static_cast<long long>(cfg.max_position_embeddings),
            static_cast<long long>(cfg.max_position_embeddings) -
                static_cast<long long>(f.decode_steps) - 3));
      }
      o.block_tokens = f.block_tokens;
      o.kv_dtype = kv_dtype;
      o.prefill_chunk = 1024;
      o.kvstar = f.kvstar;
      o.retrieval_threads = f.retrieval_threads;
      o.gpu_scoring = f.gpu_scoring;
      o.exclusive_host = f.exclusive_host && mode == KvMode::kKvstar;
      o.score_tensor_cores = f.score_tensor_cores;
      o.phase_timing = f.phase_timing;
      o.gpu_score_spread = f.gpu_score_spread;
      o.gpu_score_ctas = f.gpu_score_ctas;
      o.kvstar_cache_blocks = mode == KvMode::kKvstar ? cache_fixed : 0;
      o.matmul = f.matmul == "library" ? cuda::MatMulKernel::kLibrary : cuda::MatMulKernel::kAuto;
      if (f.l2_prefetch_bytes >= 0) o.l2_prefetch_bytes = static_cast<size_t>(f.l2_prefetch_bytes);
      o.fuse_swiglu = f.fuse_swiglu;
      o.gpu_score_stages = f.score_stages;
      o.gpu_score_head_major = f.score_head_major;
      if (mode == KvMode::kKvstar && kv_store.store != nullptr) {
        o.store = kv_store.store.get();
        o.kv_fingerprint = kv_store.kv_fingerprint;
      }
      // kvpr: the planner's split for this shape (from a measured profile), or the flag.
      std::string split_reason;
      auto get_profile = [&]() -> const recompute::KvprProfile* {
        if (!profile && profile_error.empty()) {
          auto p = recompute::LoadOrMeasureProfile(ctx, cfg.hidden_size, cfg.kv_dim(), "", false);
          if (!p.ok()) {
            profile_error = p.status().ToString();
          } else {
            profile = std::make_unique<recompute::KvprProfile>(p->profile);
            profile_path = p->path;
          }
        }
        return profile.get();
      };
      // The planner's view of this run: the layer compute time measured by dense at the same
      // context and batch when it ran before in this invocation, else an estimate.
      auto shape_for = [&](size_t batch) {
        recompute::KvprShape shape = recompute::ShapeFromConfig(cfg, batch, context, kv_dtype);
        // How CudaBatch launches the work: one copy per sequence for X and for K/V; per
        // sequence, chunks of 4096 rows with separate K and V GEMMs, then bias (Qwen2), RoPE
        // and the write into the blocks.
        shape.transfer_copies = batch;
        shape.recompute.chunk_rows = 4096;
        shape.recompute.gemms = 2;
        shape.recompute.small_launches = 2 + (cfg.qkv_bias ? 2 : 0);
        auto it = dense_step_ms.find({context, batch});
        shape.layer_compute_ms =
            it != dense_step_ms.end()
                ? it->second / static_cast<double>(cfg.num_layers)
                : recompute::EstimateLayerComputeMs(*get_profile(), cfg, batch, context, kv_dtype);
        return shape;
      };
      std::vector<size_t> layer_splits;  // the last plan's, per layer
      auto plan_split = [&](size_t batch) -> size_t {
        layer_splits.clear();
        if (mode != KvMode::kKvpr) return 0;
        if (!auto_split) return fixed_split;
        if (get_profile() == nullptr) {
          split_reason = "no profile: " + profile_error;
          return 0;
        }
        recompute::PlannerOptions popt;
        popt.granularity = f.block_tokens;
        popt.per_layer = true;  // the runtime takes one split per layer
        auto plan = recompute::PlanSplit(*profile, shape_for(batch), popt);
        if (!plan.ok()) {
          split_reason = plan.status().ToString();
          return 0;
        }
        split_reason = plan->reason;
        layer_splits = plan->layer_splits;
        return plan->split;
      };
      // A batch of b sequences: the kvpr split, and kvstar's device cache (--kvstar-cache-blocks
      // max: the most blocks per (layer, sequence) that keep the batch in the HBM budget, less
      // kCacheReserve, which the estimate does not see: the CUDA context, the libraries'
      // workspaces and the allocator's rounding).
      constexpr size_t kCacheReserve = size_t{2} << 30;
      auto options_for = [&](size_t b) {
        BatchOptions t = o;
        t.batch = b;
        t.kvpr_split = plan_split(b);
        t.kvpr_layer_splits = layer_splits;
        if (mode == KvMode::kKvstar && cache_max) {
          auto in_budget = [&](size_t c) {
            t.kvstar_cache_blocks = c;
            return weight_bytes + CudaBatch::EstimateDeviceBytes(cfg, t) +
                       (c > 0 ? kCacheReserve : 0) <=
                   budget;
          };
          size_t lo = 0, hi = (t.max_tokens + t.block_tokens - 1) / t.block_tokens;
          while (lo < hi) {
            const size_t mid = (lo + hi + 1) / 2;
            if (in_budget(mid)) {
              lo = mid;
            } else {
              hi = mid - 1;
            }
          }
          t.kvstar_cache_blocks = lo;
        }
        return t;
      };
      // The largest batch that fits the HBM budget (and, for offload modes, host memory).
      auto fits_hbm = [&](size_t b) {
        return weight_bytes + CudaBatch::EstimateDeviceBytes(cfg, options_for(b)) <= budget;
      };
      auto fits = [&](size_t b) {
        const BatchOptions t = options_for(b);
        return weight_bytes + CudaBatch::EstimateDeviceBytes(cfg, t) <= budget &&
               static_cast<double>(CudaBatch::EstimateHostBytes(cfg, t)) <=
                   static_cast<double>(host_avail) * f.host_memory_share;
      };
      size_t largest = 0, largest_hbm = 0;
      for (size_t b = 1; b <= 512 && fits(b); b = b < 8 ? b + 1 : b + b / 8) largest = b;
      for (size_t b = 1; b <= 512 && fits_hbm(b); b = b < 8 ? b + 1 : b + b / 8) largest_hbm = b;
      std::vector<size_t> run_batches = max_batch ? std::vector<size_t>{largest} : batches;
      for (size_t batch : run_batches) {
        nlohmann::json run = {{"device", ctx.info().name},
                              {"model", model_name},
                              {"mode", cuda::KvModeName(mode)},
                              {"context", context},
                              {"batch", batch},
                              {"max_batch_in_budget", largest},
                              {"max_batch_hbm_only", largest_hbm},
                              {"max_batch_limited_by", largest < largest_hbm ? "host" : "hbm"},
                              {"host_available_bytes", host_avail},
                              {"host_memory_share", f.host_memory_share}};
        if (batch == 0 || !fits(batch)) {
          run["skipped"] = "does not fit the HBM budget or host memory";
          runs.push_back(run);
          if (!f.json) {
            std::printf("%-8s %8zu %6zu  does not fit (largest batch in budget: %zu)\n",
                        cuda::KvModeName(mode), context, batch, largest);
          }
          continue;
        }
        o = options_for(batch);
        auto b = CudaBatch::Create(*model, o);
        if (!b.ok()) return ReportError(b.status());
        CudaBatch& cb = **b;
        double prefill_s = 0;
        std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(cfg.vocab_size) - 1);
        for (size_t s = 0; s < batch; ++s) {
          if (f.prefill == "real") {
            // Sequence s's prompt depends on the seed, the context and s only: every mode and
            // every batch size prefills the same prompts, and a repeated invocation (same
            // --seed) can find them in a file store.
            std::seed_seq prompt_seed{static_cast<uint32_t>(f.seed), static_cast<uint32_t>(context),
                                      static_cast<uint32_t>(s)};
            std::mt19937 prompt_rng(prompt_seed);
            std::vector<int32_t> prompt(context);
            for (auto& t : prompt) t = tok(prompt_rng);
            Progress progress("prefill (token-layers)", cfg.num_layers * context, !f.json);
            Stopwatch sw;
            const Status st = cb.Prefill(s, prompt, nullptr, [&](size_t d, size_t) {
              progress.Update(d);
              return true;
            });
            progress.Finish();
            if (!st.ok()) return ReportError(st);
            prefill_s += sw.Seconds();
          } else {
            const Status st = cb.FillRandomContext(s, context, static_cast<uint32_t>(f.seed + s));
            if (!st.ok()) return ReportError(st);
          }
        }
        std::vector<int32_t> cur(batch), next(batch);
        for (auto& t : cur) t = tok(rng);
        // Two untimed steps (cuBLAS heuristics, first touches), then the timed ones.
        for (int w = 0; w < 2; ++w) {
          const Status st = cb.Step(cur, next);
          if (!st.ok()) return ReportError(st);
          cur = next;
        }
        const cuda::BatchStats before = cb.stats();
        std::vector<double> ms;
        for (size_t i = 0; i < f.decode_steps; ++i) {
          Stopwatch sw;
          const Status st = cb.Step(cur, next);
          if (!st.ok()) return ReportError(st);
          ms.push_back(sw.Millis());
          cur = next;
        }
        const double steps = static_cast<double>(f.decode_steps);
        const double h2d_per_step =
            static_cast<double>(cb.stats().h2d_bytes - before.h2d_bytes) / steps;
        const double median = Percentile(ms, 0.5);
        // Bound: the link for the bytes this mode moves, or HBM for the weights and the KV
        // attention reads, whichever is slower.
        const double ctx_tokens = static_cast<double>(context) + 2 + steps / 2;
        double kv_read = static_cast<double>(batch) * ctx_tokens *
                         static_cast<double>(cfg.kv_bytes_per_token(kv_dtype));
        if (mode == KvMode::kKvstar) {
          // Attention reads the blocks of the tables (not the device cache).
          kv_read = static_cast<double>(cb.stats().table_blocks) *
                    static_cast<double>(2 * cfg.kv_dim() * f.block_tokens * DTypeSize(kv_dtype));
        }
        // Device copy bandwidth counts read + write bytes: a read-only stream moves as many.
        const double hbm_ms = (weight_read + kv_read) / (lim.hbm_gbs * 1e9) * 1e3;
        const double link_ms = h2d_per_step / (lim.h2d_gbs * 1e9) * 1e3;
        const double bound_ms = std::max(hbm_ms, link_ms);
        // step_over_bound uses the mean step (throughput) against the bound.
        double mean = 0;
        for (double v : ms) mean += v / steps;
        // Throughput from the mean step: kvstar's delta copies land on some steps only.
        const double tokens_per_s = static_cast<double>(batch) / (mean * 1e-3);
        if (mode == KvMode::kDense) dense_step_ms[{context, batch}] = median;
        // The KVPR cost model's prediction for this run (offload = split 0).
        double predicted_ms = 0;
        nlohmann::json model_terms;
        if ((mode == KvMode::kOffload || mode == KvMode::kKvpr) && get_profile() != nullptr) {
          std::vector<size_t> used = cb.layer_splits();
          if (used.empty()) used = {cb.kvpr_split()};
          const recompute::KvprShape shape = shape_for(batch);
          auto pred = recompute::PredictStep(*profile, shape, used);
          if (pred.ok()) {
            predicted_ms = pred->step_ms;
            // The model's terms next to the same terms measured with events in this run.
            const cuda::BatchStats& st = cb.stats();
            model_terms = {
                {"link_ms",
                 {{"model", pred->link_ms},
                  {"measured", (st.link_ms_total - before.link_ms_total) / steps}}},
                {"recompute_ms",
                 {{"model", pred->recompute_ms},
                  {"measured", (st.recompute_ms_total - before.recompute_ms_total) / steps}}},
                {"compute_ms", {{"model", pred->compute_ms}}},
                {"layer_compute_ms", shape.layer_compute_ms},
                {"recompute_scale", profile->recompute_scale},
                {"link_scale", profile->link_scale}};
            if (mode == KvMode::kOffload) {
              calib_link_measured_ms += (st.link_ms_total - before.link_ms_total) / steps;
              calib_link_model_ms += pred->link_ms / profile->link_scale;
            }
            if (mode == KvMode::kKvpr && pred->recompute_ms > 0) {
              calib_measured_ms += (st.recompute_ms_total - before.recompute_ms_total) / steps;
              calib_model_ms += pred->recompute_ms / profile->recompute_scale;
              calib_runs += (calib_runs.empty() ? "" : ", ") + std::to_string(context) + "x" +
                            std::to_string(batch);
            }
          }
        }
        run.update(
            {{"split", cb.kvpr_split()},
             {"layer_splits", cb.layer_splits()},
             {"split_reason", split_reason},
             {"decode_steps", f.decode_steps},
             {"step_ms_mean", mean},
             {"step_ms_median", median},
             {"step_ms_p99", Percentile(ms, 0.99)},
             {"decode_tokens_per_second", tokens_per_s},
             {"prefill", f.prefill},
             {"matmul", f.matmul},
             {"pdl", f.pdl},
             {"skinny_stages", f.skinny_stages},
             {"decode_attention", cuda::DecodeAttentionOnTensorCores() ? "mma" : "fma"},
             {"skinny_split", cuda::SkinnySplit()},
             {"l2_prefetch_bytes", o.l2_prefetch_bytes},
             {"fuse_swiglu", o.fuse_swiglu},
             {"host_tier", mode == KvMode::kDense ? "none"  // offload / kvpr pin every block
                           : o.exclusive_host     ? "exclusive"
                                                  : "inclusive"},
             {"prefill_tokens_per_second",
              prefill_s > 0 ? static_cast<double>(batch * context) / prefill_s : 0.0},
             {"prefill_seconds", prefill_s},
             {"store", o.store != nullptr ? f.store : "none"},
             {"prefix_reused_tokens", cb.stats().prefix_reused_tokens},
             {"store_loaded_bytes", cb.stats().store_loaded_bytes},
             {"store_dumped_bytes", cb.stats().store_dumped_bytes},
             {"h2d_bytes_per_step", h2d_per_step},
             {"hbm_bytes_per_request", static_cast<double>(cb.device_kv_bytes_per_sequence())},
             {"device_bytes_batch", cb.device_bytes()},
             {"host_pinned_bytes", cb.host_bytes()},
             {"weight_bytes", weight_bytes},
             {"bound_ms", bound_ms},
             {"bound_hbm_ms", hbm_ms},
             {"bound_link_ms", link_ms},
             {"step_over_bound", mean / bound_ms},
             {"model_predicted_step_ms", predicted_ms},
             {"model_error", predicted_ms > 0 ? (predicted_ms - median) / median : 0.0},
             {"model_terms_per_step", model_terms},
             {"host_idle_ms_per_step",
              (cb.stats().host_idle_ms_total - before.host_idle_ms_total) / steps},
             {"host_boundary_ms_per_step",
              (cb.stats().host_boundary_ms_total - before.host_boundary_ms_total) / steps},
             {"host_after_ms_per_step",
              (cb.stats().host_after_ms_total - before.host_after_ms_total) / steps},
             {"host_window_ms_per_step",
              (cb.stats().host_window_ms_total - before.host_window_ms_total) / steps},
             {"host_window_ms_max", cb.stats().host_window_ms_max},
             {"window_split_ms_per_step",
              {{"submit",
                (cb.stats().window_submit_ms_total - before.window_submit_ms_total) / steps},
               {"stage", (cb.stats().window_stage_ms_total - before.window_stage_ms_total) / steps},
               {"plan", (cb.stats().window_plan_ms_total - before.window_plan_ms_total) / steps},
               {"issue",
                (cb.stats().window_issue_ms_total - before.window_issue_ms_total) / steps}}}});
        run["step_ms"] = ms;
        if (f.phase_timing) {
          const cuda::BatchStats& st = cb.stats();
          const double n = static_cast<double>(st.phase_steps - before.phase_steps);
          run["device_phase_ms_per_step"] = {
              {"pre_attention", (st.phase_pre_ms - before.phase_pre_ms) / n},
              {"kv_wait", (st.phase_wait_ms - before.phase_wait_ms) / n},
              {"attention", (st.phase_attention_ms - before.phase_attention_ms) / n},
              {"post_attention", (st.phase_post_ms - before.phase_post_ms) / n},
              {"embed_and_head", (st.phase_head_ms - before.phase_head_ms) / n},
              {"idle_between_steps", (st.phase_gap_ms - before.phase_gap_ms) / n},
              // The same bytes as bound_hbm_ms, split: weights (pre, post, head) and KV reads
              // (attention).
              {"bound_weights_ms", weight_read / (lim.hbm_gbs * 1e9) * 1e3},
              {"bound_kv_ms", kv_read / (lim.hbm_gbs * 1e9) * 1e3}};
        }
        if (mode == KvMode::kKvstar) {
          const cuda::BatchStats& st = cb.stats();
          const double applied = static_cast<double>(st.retrievals - before.retrievals);
          const double late = static_cast<double>(st.late_retrievals - before.late_retrievals);
          run["kvstar"] = {
              {"config", nlohmann::json::parse(f.kvstar.ToJson())},
              {"retrieval_device", f.gpu_scoring ? "gpu" : "cpu"},
              {"gpu_scoring_kernel", f.score_tensor_cores ? "auto" : "f32"},
              {"gpu_score_spread", f.gpu_score_spread},
              {"gpu_score_ctas", f.gpu_score_ctas},
              {"gpu_score_stages", f.score_stages},
              {"gpu_score_layout", f.score_head_major ? "head" : "vector"},
              // With GPU scoring: the step window's threads (1: the decoding thread alone).
              {"retrieval_threads",
               f.gpu_scoring
                   ? (o.kvstar.deterministic ? 1 : CudaBatch::KvstarWindowThreads(o))
                   : (f.retrieval_threads > 0
                          ? f.retrieval_threads
                          : std::max(1,
                                     static_cast<int>(std::thread::hardware_concurrency()) - 3))},
              {"gpu_score_groups", st.gpu_score_groups - before.gpu_score_groups},
              {"gpu_score_ms_per_group",
               st.gpu_score_groups > before.gpu_score_groups
                   ? (st.gpu_score_ms_total - before.gpu_score_ms_total) /
                         static_cast<double>(st.gpu_score_groups - before.gpu_score_groups)
                   : 0.0},
              {"retrievals_applied", st.retrievals - before.retrievals},
              {"late_retrievals", st.late_retrievals - before.late_retrievals},
              {"skipped_retrievals", st.skipped_retrievals - before.skipped_retrievals},
              // sync_steps: re-selections inside the timed steps and the time they waited.
              {"sync_retrievals", st.sync_retrievals - before.sync_retrievals},
              {"sync_wait_ms", st.sync_wait_ms - before.sync_wait_ms},
              {"retrieval_hidden_share", applied > 0 ? std::max(0.0, 1.0 - late / applied) : 0.0},
              {"retrieval_ms_mean",
               applied > 0 ? (st.retrieval_ms_total - before.retrieval_ms_total) / applied : 0.0},
              {"blocks_loaded_per_step",
               static_cast<double>(st.blocks_loaded - before.blocks_loaded) / steps},
              {"cache_blocks", o.kvstar_cache_blocks},
              {"cache_hits_per_step",
               static_cast<double>(st.cache_hits - before.cache_hits) / steps},
              {"device_blocks", st.device_blocks},
              {"table_blocks", st.table_blocks},
              {"cache_evictions_per_step",
               static_cast<double>(st.cache_evictions - before.cache_evictions) / steps},
              {"candidate_blocks", st.candidate_blocks},
              {"selected_blocks", st.selected_blocks}};
        }
        runs.push_back(run);
        if (!f.json) {
          std::printf(
              "%-8s %8zu %6zu %6zu %8.2f %8.2f %8.2f %10.1f %11.1f %9.2f %7.2f %10.3f %10zu\n",
              cuda::KvModeName(mode), context, batch, cb.kvpr_split(), median, mean,
              Percentile(ms, 0.99), tokens_per_s, h2d_per_step / 1e6, bound_ms, mean / bound_ms,
              cb.device_kv_bytes_per_sequence() / 1073741824.0, largest);
          if (!split_reason.empty()) std::printf("         kvpr split: %s\n", split_reason.c_str());
          if (f.phase_timing) {
            const nlohmann::json& p = run["device_phase_ms_per_step"];
            std::printf(
                "         device ms per step: before attention %.2f, KV wait %.2f, attention "
                "%.2f (KV bound %.2f), after attention %.2f, head %.2f (weights bound %.2f for "
                "the three), idle between steps %.3f\n",
                p["pre_attention"].get<double>(), p["kv_wait"].get<double>(),
                p["attention"].get<double>(), p["bound_kv_ms"].get<double>(),
                p["post_attention"].get<double>(), p["embed_and_head"].get<double>(),
                p["bound_weights_ms"].get<double>(), p["idle_between_steps"].get<double>());
          }
          std::printf("         host time per step with no kernel queued: %.3f ms\n",
                      run["host_idle_ms_per_step"].get<double>());
          if (prefill_s > 0) {
            std::printf(
                "         prefill %.2f s for %zu prompt tokens (%zu loaded from the store)\n",
                prefill_s, batch * context, cb.stats().prefix_reused_tokens);
          }
          if (max_batch && largest < largest_hbm) {
            std::printf(
                "         the batch is limited by pinned host memory (HBM would hold %zu)%s\n",
                largest_hbm,
                mode == KvMode::kKvstar && !o.exclusive_host
                    ? "; --host-tier exclusive pins only the blocks off the device"
                    : "");
          }
          if (mode == KvMode::kKvstar) {
            const nlohmann::json& kv = run["kvstar"];
            std::printf(
                "         retrieval on the %s: %.1f ms from submission to use; tasks applied %zu, "
                "late %zu, skipped %zu\n",
                f.gpu_scoring ? "GPU" : "CPU", kv["retrieval_ms_mean"].get<double>(),
                kv["retrievals_applied"].get<size_t>(), kv["late_retrievals"].get<size_t>(),
                kv["skipped_retrievals"].get<size_t>());
            if (o.kvstar_cache_blocks > 0) {
              std::printf(
                  "         device cache: %zu blocks per (layer, sequence); %.1f blocks per step "
                  "taken back from it, %.1f copied in\n",
                  o.kvstar_cache_blocks, kv["cache_hits_per_step"].get<double>(),
                  kv["blocks_loaded_per_step"].get<double>());
            }
          }
        }
      }
    }
  }
  nlohmann::json calibration;
  if (f.kvpr_calibrate) {
    if (calib_model_ms <= 0 || profile == nullptr) {
      return ReportError(FailedPrecondition(
          "--kvpr-calibrate: no kvpr run recomputed tokens (add kvpr to --modes, with a split > "
          "0)"));
    }
    const double scale = calib_measured_ms / calib_model_ms;
    // The link from the offload runs (link-bound); without one the link scale is kept.
    const double link_scale = calib_link_model_ms > 0 ? calib_link_measured_ms / calib_link_model_ms
                                                      : profile->link_scale;
    recompute::KvprProfile calibrated = *profile;
    calibrated.recompute_scale = scale;
    calibrated.link_scale = link_scale;
    calibrated.recompute_scale_note =
        "kvstar bench --kvpr-calibrate on " + model_name + " (context x batch: " + calib_runs + ")";
    Status st = recompute::SaveProfile(calibrated, profile_path);
    if (!st.ok()) return ReportError(st);
    calibration = {{"recompute_scale", scale},
                   {"link_scale", link_scale},
                   {"note", calibrated.recompute_scale_note},
                   {"profile", profile_path}};
    if (!f.json) {
      std::printf(
          "KVPR calibration: measured / modelled recomputation %.3f, link %.3f; saved to %s\n",
          scale, link_scale, profile_path.c_str());
    }
  }
  nlohmann::json out = {{"device", ctx.info().name},
                        {"hbm_budget_bytes", budget},
                        {"limits",
                         {{"pinned_h2d_gbytes_per_second", lim.h2d_gbs},
                          {"device_copy_gbytes_per_second", lim.hbm_gbs},
                          {"bf16_gemm_tflops", lim.gemm_tflops}}},
                        {"runs", runs}};
  if (!calibration.is_null()) out["kvpr_calibration"] = calibration;
  if (f.json) std::printf("%s\n", out.dump(2).c_str());
  if (!f.plot.empty()) {
    // Decode tokens/s against context, one line per (mode, batch).
    LinePlot plot;
    plot.title = "decode throughput, " + model_name + ", " + ctx.info().name;
    plot.x_label = "context (tokens)";
    plot.y_label = "decode tokens/s (batch total)";
    plot.log_x = contexts->size() > 2;
    std::map<std::string, Series> lines;
    for (const auto& r : runs) {
      if (r.contains("skipped")) continue;
      const std::string label =
          r["mode"].get<std::string>() + " (batch " +
          (max_batch ? std::string("max") : std::to_string(r["batch"].get<size_t>())) + ")";
      Series& line = lines[label];
      line.label = label;
      line.x.push_back(r["context"].get<double>());
      line.y.push_back(r["decode_tokens_per_second"].get<double>());
    }
    for (auto& [label, line] : lines) plot.series.push_back(line);
    const Status st = WritePlotPng(plot, f.plot);
    if (!st.ok()) return ReportError(st);
    if (!f.json) std::printf("plot: %s\n", f.plot.c_str());
  }
  return 0;
}

}  // namespace kvstar::cli
