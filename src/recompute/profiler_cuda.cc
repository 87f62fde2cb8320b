#include "recompute/profiler_cuda.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "ops/cuda/ops.h"

#ifndef KVSTAR_CUDA_TOOLKIT_VERSION
#define KVSTAR_CUDA_TOOLKIT_VERSION "unknown"
#endif

namespace kvstar::recompute {
namespace {

void Report(const ProfileOptions& o, const std::string& line) {
  if (o.progress) o.progress(line);
}

std::string NowUtc() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string Fmt(const char* fmt, double a, double b = 0) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), fmt, a, b);
  return buf;
}

}  // namespace

std::string DeviceKey(const cuda::DeviceInfo& info) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "%s|cc %d.%d|%d SMs|%zu MiB|CUDA %s", info.name.c_str(),
                info.cc_major, info.cc_minor, info.sm_count, info.total_memory >> 20,
                KVSTAR_CUDA_TOOLKIT_VERSION);
  return buf;
}

Status AddGemmTable(const cuda::DeviceContext& ctx, size_t hidden, size_t kv_dim,
                    const ProfileOptions& options, KvprProfile* profile) {
  if (hidden == 0 || kv_dim == 0) {
    return InvalidArgument("KVPR profile: hidden (%zu) and kv_dim (%zu) must be > 0", hidden,
                           kv_dim);
  }
  GemmTable table;
  table.hidden = hidden;
  table.kv_dim = kv_dim;
  const size_t m = 2 * kv_dim;  // fused K+V output columns
  // Bytes MeasureGemmRate allocates: bf16 weights, f32 activations and f32 output.
  const size_t budget = ctx.info().total_memory / 4;
  std::vector<size_t> rows = options.rows;
  std::sort(rows.begin(), rows.end());
  rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
  for (size_t n : rows) {
    if (n == 0) continue;
    const size_t bytes = m * hidden * 2 + n * hidden * 4 + n * m * 4;
    if (bytes > budget) {
      Report(options,
             Fmt("  GEMM rows %.0f skipped: %.0f MiB of buffers", double(n), double(bytes >> 20)));
      continue;
    }
    KVSTAR_ASSIGN_OR_RETURN(double tflops,
                            cuda::MeasureGemmRate(ctx, DType::kBF16, m, n, hidden, options.reps));
    table.points.push_back({n, tflops});
    Report(options,
           Fmt("  GEMM [%.0f rows] x [hidden] -> 2*kv_dim: %.1f TFLOP/s", double(n), tflops));
  }
  if (table.points.empty()) {
    return ResourceExhausted("KVPR profile: no GEMM row count fits in a quarter of device memory");
  }
  // The fixed cost of one small launch (the bias / RoPE kernel after the GEMM): a tiny GEMM.
  const size_t tm = 64, tn = 16, tk = 64;
  KVSTAR_ASSIGN_OR_RETURN(double tiny,
                          cuda::MeasureGemmRate(ctx, DType::kBF16, tm, tn, tk, options.reps));
  table.launch_overhead_us = 2.0 * tm * tn * tk / (tiny * 1e12) * 1e6;
  Report(options, Fmt("  launch overhead %.1f us", table.launch_overhead_us));
  auto& tables = profile->gemm;
  tables.erase(
      std::remove_if(tables.begin(), tables.end(),
                     [&](const GemmTable& t) { return t.hidden == hidden && t.kv_dim == kv_dim; }),
      tables.end());
  tables.push_back(std::move(table));
  return Status::Ok();
}

StatusOr<KvprProfile> MeasureProfile(const cuda::DeviceContext& ctx, size_t hidden, size_t kv_dim,
                                     const ProfileOptions& options) {
  KvprProfile p;
  p.device_name = ctx.info().name;
  p.device_key = DeviceKey(ctx.info());
  p.measured_at = NowUtc();
  Report(options, "measuring KVPR profile of " + p.device_key);
  KVSTAR_ASSIGN_OR_RETURN(p.h2d_gbps,
                          cuda::MeasurePinnedH2DBandwidth(ctx, options.h2d_bytes, options.reps));
  p.h2d_bytes = options.h2d_bytes;
  KVSTAR_ASSIGN_OR_RETURN(double small_gbps, cuda::MeasurePinnedH2DBandwidth(
                                                 ctx, options.h2d_small_bytes, options.reps));
  // What a small copy takes beyond its bytes at the large-copy bandwidth.
  const double small = static_cast<double>(options.h2d_small_bytes);
  p.h2d_latency_us = std::max(0.0, (small / small_gbps - small / p.h2d_gbps) * 1e-3);
  Report(options, Fmt("  pinned H2D %.1f GB/s, %.1f us per copy", p.h2d_gbps, p.h2d_latency_us));
  KVSTAR_ASSIGN_OR_RETURN(p.device_gbps, cuda::MeasureDeviceCopyBandwidth(
                                             ctx, options.device_copy_bytes, options.reps));
  Report(options, Fmt("  device copy %.0f GB/s", p.device_gbps));
  KVSTAR_RETURN_IF_ERROR(AddGemmTable(ctx, hidden, kv_dim, options, &p));
  KVSTAR_RETURN_IF_ERROR(ValidateProfile(p, "measured profile"));
  return p;
}

StatusOr<CachedProfile> LoadOrMeasureProfile(const cuda::DeviceContext& ctx, size_t hidden,
                                             size_t kv_dim, const std::string& path, bool refresh,
                                             const ProfileOptions& options) {
  CachedProfile out;
  out.path = path;
  if (out.path.empty()) {
    KVSTAR_ASSIGN_OR_RETURN(out.path, DefaultProfilePath(ctx.info().name));
  }
  const std::string key = DeviceKey(ctx.info());
  if (refresh) {
    out.note = "--refresh";
  } else {
    StatusOr<KvprProfile> loaded = LoadProfile(out.path);
    Status usable = loaded.ok() ? CheckProfileDevice(*loaded, key) : loaded.status();
    if (usable.ok()) {
      out.profile = std::move(loaded).value();
      if (out.profile.FindGemm(hidden, kv_dim) != nullptr) return out;
      out.note = "no GEMM table for hidden " + std::to_string(hidden) + " kv_dim " +
                 std::to_string(kv_dim);
      Report(options, out.note + ": measuring it");
      KVSTAR_RETURN_IF_ERROR(AddGemmTable(ctx, hidden, kv_dim, options, &out.profile));
      out.measured = true;
      KVSTAR_RETURN_IF_ERROR(SaveProfile(out.profile, out.path));
      return out;
    }
    out.note = usable.ToString();
    Report(options, out.note);
  }
  KVSTAR_ASSIGN_OR_RETURN(out.profile, MeasureProfile(ctx, hidden, kv_dim, options));
  out.measured = true;
  KVSTAR_RETURN_IF_ERROR(SaveProfile(out.profile, out.path));
  return out;
}

}  // namespace kvstar::recompute
