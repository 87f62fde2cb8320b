// kvstar profile: the KVPR device profile (pinned H2D bandwidth, K+V projection GEMM rates) and
// the split the planner chooses for a model shape, batch and context (docs/KVPR.md).
#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "command.h"
#include "model/config.h"
#include "model/shapes.h"
#include "recompute/planner.h"
#include "recompute/profile.h"
#ifdef KVSTAR_HAVE_CUDA
#include "ops/cuda/device.h"
#include "recompute/profiler_cuda.h"
#endif

namespace kvstar::cli {
namespace {

struct ProfileFlags {
  std::string shape;
  std::string model_dir;
  size_t batch = 8;
  size_t context = 4096;
  size_t block_tokens = 128;
  std::string kv_dtype = "bf16";
  double layer_compute_ms = -1;  // < 0: from the profile, else estimated
  bool per_layer = true;
  std::string profile_file;
  bool refresh = false;
  int device = 0;
  bool verify = false;
  bool json = false;
};

int Fail(const Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

struct LoadedProfile {
  recompute::KvprProfile profile;
  std::string path;
  std::string origin;  // "loaded", "measured" or "measured (<why>)"
};

// The device (CUDA builds with a GPU) and the profile: the one of --profile-file, or the cached /
// measured one of the device.
struct Device {
#ifdef KVSTAR_HAVE_CUDA
  std::unique_ptr<cuda::DeviceContext> ctx;
#endif
  bool present() const {
#ifdef KVSTAR_HAVE_CUDA
    return ctx != nullptr;
#else
    return false;
#endif
  }
};

StatusOr<LoadedProfile> GetProfile(const ProfileFlags& f, size_t hidden, size_t kv_dim,
                                   Device* dev) {
  LoadedProfile out;
#ifdef KVSTAR_HAVE_CUDA
  if (cuda::DeviceCount() == 0) {
    if (f.profile_file.empty() || f.refresh || f.verify) {
      return FailedPrecondition(
          "no CUDA device found: a profile can only be measured (or verified) on a GPU; give a "
          "saved profile with --profile-file F (without --refresh or --verify)");
    }
  } else {
    KVSTAR_ASSIGN_OR_RETURN(dev->ctx, cuda::DeviceContext::Create(f.device));
    recompute::ProfileOptions options;
    options.progress = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    KVSTAR_ASSIGN_OR_RETURN(recompute::CachedProfile cached,
                            recompute::LoadOrMeasureProfile(*dev->ctx, hidden, kv_dim,
                                                            f.profile_file, f.refresh, options));
    out.profile = std::move(cached.profile);
    out.path = cached.path;
    out.origin = cached.measured
                     ? (cached.note.empty() ? "measured" : "measured (" + cached.note + ")")
                     : "loaded";
    return out;
  }
#else
  if (f.profile_file.empty() || f.refresh || f.verify) {
    return FailedPrecondition(
        "built without CUDA: kvstar profile cannot measure a device here; give a saved profile "
        "with --profile-file F (without --refresh or --verify), or build with -DKVSTAR_CUDA=ON");
  }
#endif
  KVSTAR_ASSIGN_OR_RETURN(out.profile, recompute::LoadProfile(f.profile_file));
  out.path = f.profile_file;
  out.origin = "loaded";
  return out;
}

// --verify: the pipeline run on the device at several splits against the model's prediction
// (both without the layer compute).
StatusOr<recompute::PredictionCheck> Verify(const ProfileFlags& f, Device* dev,
                                            const recompute::KvprProfile& profile,
                                            recompute::KvprShape shape,
                                            const recompute::KvprPlan& plan) {
  shape.layer_compute_ms = 0;
  shape.step_fixed_ms = 0;
  std::vector<size_t> splits;
  const size_t g = plan.granularity;
  for (size_t q = 0; q <= 4; ++q) splits.push_back(shape.seq_len * q / 4 / g * g);
  splits.push_back(plan.split);
  std::sort(splits.begin(), splits.end());
  splits.erase(std::unique(splits.begin(), splits.end()), splits.end());
  std::vector<recompute::MeasuredStep> measured;
#ifdef KVSTAR_HAVE_CUDA
  for (size_t l : splits) {
    std::fprintf(stderr, "verifying: pipeline at l = %zu\n", l);
    KVSTAR_ASSIGN_OR_RETURN(double ms, recompute::MeasurePipelineStepMs(*dev->ctx, shape, {l}));
    measured.push_back({.split = l, .step_ms = ms});
  }
#else
  (void)dev;
  return FailedPrecondition("built without CUDA: --verify needs a GPU");
#endif
  return recompute::CheckPrediction(profile, shape, measured);
}

StatusOr<DType> ParseKvDtype(const std::string& name) {
  if (name == "bf16") return DType::kBF16;
  if (name == "f16") return DType::kF16;
  if (name == "f32") return DType::kF32;
  return InvalidArgument("--kv-dtype must be bf16, f16 or f32, got '%s'", name.c_str());
}

void PrintProfile(const LoadedProfile& lp, const recompute::KvprShape& shape) {
  const recompute::KvprProfile& p = lp.profile;
  std::printf("device       %s\n", p.device_name.c_str());
  std::printf("device key   %s\n", p.device_key.c_str());
  std::printf("profile      %s (%s, measured %s)\n", lp.path.c_str(), lp.origin.c_str(),
              p.measured_at.c_str());
  std::printf("pinned H2D   %.2f GB/s (%zu MiB copies), %.1f us per copy\n", p.h2d_gbps,
              p.h2d_bytes >> 20, p.h2d_latency_us);
  if (p.device_gbps > 0) std::printf("device copy  %.0f GB/s (read + write)\n", p.device_gbps);
  for (const recompute::GemmTable& t : p.gemm) {
    const bool used = t.hidden == shape.hidden && t.kv_dim == shape.kv_dim;
    std::printf("K+V GEMM     X[rows][%zu] . W[%zu][%zu]^T, bf16, launch overhead %.1f us%s\n",
                t.hidden, 2 * t.kv_dim, t.hidden, t.launch_overhead_us,
                used ? "  (this shape)" : "");
    std::printf("  %10s %10s %12s\n", "rows", "TFLOP/s", "ms");
    for (const recompute::GemmPoint& pt : t.points) {
      std::printf("  %10zu %10.1f %12.4f\n", pt.rows, pt.tflops,
                  t.GemmMs(static_cast<double>(pt.rows)));
    }
  }
}

int RunProfile(const ProfileFlags& f) {
  if (!f.shape.empty() && !f.model_dir.empty()) {
    return Fail(InvalidArgument("give at most one of --shape NAME or --model DIR"));
  }
  if (f.batch == 0) return Fail(InvalidArgument("--batch must be >= 1"));
  if (f.block_tokens == 0) return Fail(InvalidArgument("--block-tokens must be >= 1"));
  auto kv_dtype = ParseKvDtype(f.kv_dtype);
  if (!kv_dtype.ok()) return Fail(kv_dtype.status());
  const std::string shape_name =
      f.model_dir.empty() ? (f.shape.empty() ? "llama2-7b" : f.shape) : f.model_dir;
  auto cfg = f.model_dir.empty() ? NamedShape(shape_name) : LoadConfig(f.model_dir);
  if (!cfg.ok()) return Fail(cfg.status());
  recompute::KvprShape shape = recompute::ShapeFromConfig(*cfg, f.batch, f.context, *kv_dtype);

  Device dev;
  auto lp = GetProfile(f, shape.hidden, shape.kv_dim, &dev);
  if (!lp.ok()) return Fail(lp.status());

  std::string compute_source;
  if (f.layer_compute_ms >= 0) {
    shape.layer_compute_ms = f.layer_compute_ms;
    compute_source = "given";
  } else if (const auto* m = lp->profile.FindLayerCompute(shape_name, f.batch, f.context)) {
    shape.layer_compute_ms = m->ms;
    compute_source = "measured";
  } else {
    shape.layer_compute_ms =
        recompute::EstimateLayerComputeMs(lp->profile, *cfg, f.batch, f.context, *kv_dtype);
    compute_source = lp->profile.device_gbps > 0 ? "estimated (weights + K/V at device bandwidth)"
                                                 : "unknown (treated as 0)";
  }
  auto plan = recompute::PlanSplit(lp->profile, shape,
                                   {.granularity = f.block_tokens, .per_layer = f.per_layer});
  if (!plan.ok()) return Fail(plan.status());
  std::optional<recompute::PredictionCheck> check;
  if (f.verify) {
    auto c = Verify(f, &dev, lp->profile, shape, *plan);
    if (!c.ok()) return Fail(c.status());
    check = std::move(c).value();
  }

  if (f.json) {
    nlohmann::json j;
    j["profile"] = recompute::ProfileToJson(lp->profile);
    j["profile_path"] = lp->path;
    j["profile_origin"] = lp->origin;
    j["shape"] = {{"name", shape_name},
                  {"batch", shape.batch},
                  {"context", shape.seq_len},
                  {"hidden", shape.hidden},
                  {"kv_dim", shape.kv_dim},
                  {"layers", shape.layers},
                  {"kv_elem_bytes", shape.kv_elem_bytes},
                  {"x_elem_bytes", shape.x_elem_bytes},
                  {"layer_compute_ms", shape.layer_compute_ms},
                  {"layer_compute_source", compute_source}};
    j["plan"] = recompute::PlanToJson(*plan);
    if (check) j["verify"] = recompute::PredictionCheckToJson(*check);
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  PrintProfile(*lp, shape);
  std::printf(
      "\nshape        %s: %zu layers, hidden %zu, kv_dim %zu (%s K/V); batch %zu, "
      "context %zu\n",
      shape_name.c_str(), shape.layers, shape.hidden, shape.kv_dim, f.kv_dtype.c_str(), shape.batch,
      shape.seq_len);
  std::printf("layer compute %.3f ms per layer, %s\n", shape.layer_compute_ms,
              compute_source.c_str());
  std::printf("split        l = %zu of %zu (granularity %zu)", plan->split, shape.seq_len,
              plan->granularity);
  if (plan->kvpr_step_ms < plan->uniform_step_ms) {
    // Runs of equal splits as "4096 x30".
    std::printf("; per layer:");
    const std::vector<size_t>& ls = plan->layer_splits;
    for (size_t i = 0; i < ls.size();) {
      size_t j = i;
      while (j < ls.size() && ls[j] == ls[i]) ++j;
      std::printf(j - i > 1 ? " %zu x%zu" : " %zu", ls[i], j - i);
      i = j;
    }
  }
  std::printf("\nstep         offload %.3f ms, kvpr %.3f ms (%.2fx)\n", plan->offload_step_ms,
              plan->kvpr_step_ms, plan->speedup);
  std::printf("link bytes   offload %.3f GB, kvpr %.3f GB per step\n",
              plan->offload_link_bytes / 1e9, plan->kvpr_link_bytes / 1e9);
  std::printf("reason       %s\n", plan->reason.c_str());
  if (check) {
    std::printf("\nverify: one step of the pipeline on the device without the layer compute\n");
    std::printf("  %8s %12s %12s %9s\n", "l", "measured_ms", "model_ms", "error");
    for (const recompute::PredictionRow& r : check->rows) {
      std::printf("  %8zu %12.3f %12.3f %+8.1f%%\n", r.split, r.measured_ms, r.predicted_ms,
                  100 * r.rel_error);
    }
    std::printf("  max |error| %.1f%%, mean %.1f%%\n", 100 * check->max_abs_rel_error,
                100 * check->mean_abs_rel_error);
  }
  return 0;
}

void AddProfile(CLI::App& root, int* exit_code) {
  auto f = std::make_shared<ProfileFlags>();
  auto* cmd = root.add_subcommand(
      "profile",
      "KVPR device profile and split plan.\n"
      "On a CUDA build, loads the cached profile of the GPU ($XDG_CACHE_HOME/kvstar or\n"
      "~/.cache/kvstar/profile-<device>.json) or measures it (pinned host-to-device bandwidth,\n"
      "device copy bandwidth, and the rate of the fused K+V projection GEMM at 64..64K rows for\n"
      "this model's hidden size and kv_dim; progress on stderr), then prints it with the split l\n"
      "the planner chooses: tokens [0,l) are recomputed on the GPU from their layer-input\n"
      "activations X, tokens [l,s) are streamed as K/V. It prints the predicted decode step of\n"
      "plain offload (l = 0) and of KVPR, and why (e.g. l = 0 when X is wider than K+V, as with\n"
      "grouped-query attention of group size > 2). Without CUDA, --profile-file F plans with a\n"
      "saved profile. The cost model is described in docs/KVPR.md.\n"
      "Example: kvstar profile --shape llama2-7b --batch 16 --context 8192 --json");
  std::string shapes;
  for (const std::string& s : NamedShapeList()) shapes += (shapes.empty() ? "" : ", ") + s;
  cmd->add_option("--shape", f->shape, "Built-in model shape (default llama2-7b): " + shapes);
  cmd->add_option("--model", f->model_dir, "Hugging Face model directory (reads config.json)");
  cmd->add_option("--batch", f->batch, "Sequences decoded together")->capture_default_str();
  cmd->add_option("--context", f->context, "Tokens per sequence whose KV is in host memory (s)")
      ->capture_default_str();
  cmd->add_option("--block-tokens", f->block_tokens, "Split granularity (the KV block size)")
      ->capture_default_str();
  cmd->add_option("--kv-dtype", f->kv_dtype, "K/V element type: bf16, f16 or f32")
      ->capture_default_str();
  cmd->add_option("--layer-compute-ms", f->layer_compute_ms,
                  "Device time of one layer's decode step once its K/V is complete; default: "
                  "measured value in the profile, else an estimate from device bandwidth");
  cmd->add_flag("!--no-per-layer", f->per_layer, "Only uniform splits (same l in every layer)");
  cmd->add_option("--profile-file", f->profile_file,
                  "Profile JSON to read (and, on a GPU, to write) instead of the per-device cache");
  cmd->add_flag("--refresh", f->refresh, "Measure again even if a cached profile matches");
  cmd->add_option("--device", f->device, "CUDA device ordinal")->capture_default_str();
  cmd->add_flag("--verify", f->verify,
                "Run one decode step of the KVPR pipeline (copies, projection GEMM, events; no "
                "layer compute) on the GPU at l = 0, s/4, s/2, 3s/4, s and the plan's split, and "
                "compare with the model");
  cmd->add_flag("--json", f->json, "Print one JSON object (profile, shape, plan)");
  cmd->callback([f, exit_code] { *exit_code = RunProfile(*f); });
}

}  // namespace

KVSTAR_COMMAND(profile, 65, AddProfile);

}  // namespace kvstar::cli
