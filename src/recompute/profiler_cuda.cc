#include "recompute/profiler_cuda.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "base/timer.h"
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

// Device time of one small element-wise launch in a busy stream: a large GEMM keeps the device
// busy while the host queues 100 tiny ConvertF32 launches, so the events around those measure
// what each costs back to back (the runtime queues a step ahead of the device too), not the
// latency of a launch on an idle device. Median of reps.
StatusOr<double> MeasureSmallLaunchUs(const cuda::DeviceContext& ctx, int reps) {
  KVSTAR_RETURN_IF_ERROR(ctx.Activate());
  constexpr size_t kBig = 8192, kSmall = 4096, kLaunches = 100;
  KVSTAR_ASSIGN_OR_RETURN(cuda::DeviceBuffer w, cuda::DeviceBuffer::Allocate(kBig * kBig * 2));
  KVSTAR_ASSIGN_OR_RETURN(cuda::DeviceBuffer x, cuda::DeviceBuffer::Allocate(kBig * kBig * 2));
  KVSTAR_ASSIGN_OR_RETURN(cuda::DeviceBuffer y, cuda::DeviceBuffer::Allocate(kBig * kBig * 4));
  cuda::CudaStream* s = ctx.compute_stream();
  KVSTAR_RETURN_IF_ERROR(ctx.Memset(w.data(), 0x3c, kBig * kBig * 2, s));
  KVSTAR_RETURN_IF_ERROR(ctx.Memset(x.data(), 0x3c, kBig * kBig * 2, s));
  const TensorView wv{w.data(), DType::kBF16, kBig, kBig};
  KVSTAR_ASSIGN_OR_RETURN(cuda::Event start, cuda::Event::Create());
  KVSTAR_ASSIGN_OR_RETURN(cuda::Event stop, cuda::Event::Create());
  std::vector<double> us;
  for (int r = 0; r < std::max(reps, 1); ++r) {
    KVSTAR_RETURN_IF_ERROR(cuda::MatMulConverted(ctx, s, wv, x.data(), kBig, y.as<float>()));
    KVSTAR_RETURN_IF_ERROR(start.Record(s));
    for (size_t i = 0; i < kLaunches; ++i) {
      KVSTAR_RETURN_IF_ERROR(cuda::ConvertF32(s, y.as<float>(), kSmall, DType::kBF16,
                                              x.as<char>() + (i % 64) * kSmall * 2));
    }
    KVSTAR_RETURN_IF_ERROR(stop.Record(s));
    KVSTAR_RETURN_IF_ERROR(stop.Synchronize());
    KVSTAR_ASSIGN_OR_RETURN(float ms, stop.ElapsedMsSince(start));
    us.push_back(static_cast<double>(ms) * 1e3 / kLaunches);
  }
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
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
  KVSTAR_ASSIGN_OR_RETURN(table.launch_overhead_us, MeasureSmallLaunchUs(ctx, options.reps));
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

StatusOr<double> MeasurePipelineStepMs(const cuda::DeviceContext& ctx, const KvprShape& shape,
                                       const std::vector<size_t>& splits, int reps) {
  const size_t L = shape.layers;
  if (splits.size() != 1 && splits.size() != L) {
    return InvalidArgument("KVPR pipeline: %zu splits for %zu layers", splits.size(), L);
  }
  if (shape.kv_elem_bytes != 2 || shape.x_elem_bytes != 2 || shape.batch == 0 ||
      shape.hidden == 0 || shape.kv_dim == 0 || L == 0 || reps < 1) {
    return InvalidArgument("KVPR pipeline: needs bf16 X and K/V, a non-empty shape and reps >= 1");
  }
  size_t max_l = 0;
  for (size_t l : splits) {
    if (l > shape.seq_len) {
      return InvalidArgument("KVPR pipeline: split %zu > seq_len %zu", l, shape.seq_len);
    }
    max_l = std::max(max_l, l);
  }
  const size_t b = shape.batch, s = shape.seq_len, m = 2 * shape.kv_dim;
  const size_t x_bytes = b * s * shape.hidden * 2;  // [b][s][hidden] bf16
  const size_t kv_bytes = b * s * m * 2;            // [b][2][kv_dim][s] bf16 (one layer)
  const size_t y_bytes = b * max_l * m * 4;         // [b*l][2*kv_dim] f32 GEMM output
  const size_t w_bytes = m * shape.hidden * 2;      // [2*kv_dim][hidden] bf16
  const size_t device_bytes = 2 * (x_bytes + kv_bytes) + y_bytes + w_bytes;
  if (device_bytes > ctx.info().total_memory / 2) {
    return ResourceExhausted("KVPR pipeline: %zu MiB of device buffers for this shape",
                             device_bytes >> 20);
  }
  KVSTAR_RETURN_IF_ERROR(ctx.Activate());
  // The host side streams the same bytes for every layer: the link does not care which.
  KVSTAR_ASSIGN_OR_RETURN(cuda::PinnedHostBuffer host_x,
                          cuda::PinnedHostBuffer::Allocate(std::max<size_t>(x_bytes, 1)));
  KVSTAR_ASSIGN_OR_RETURN(cuda::PinnedHostBuffer host_kv,
                          cuda::PinnedHostBuffer::Allocate(std::max<size_t>(kv_bytes, 1)));
  std::fill_n(host_x.as<unsigned char>(), x_bytes, static_cast<unsigned char>(0x3c));
  std::fill_n(host_kv.as<unsigned char>(), kv_bytes, static_cast<unsigned char>(0x3c));
  cuda::DeviceBuffer stage_x[2], stage_kv[2];
  for (int i = 0; i < 2; ++i) {
    KVSTAR_ASSIGN_OR_RETURN(stage_x[i], cuda::DeviceBuffer::Allocate(std::max<size_t>(x_bytes, 1)));
    KVSTAR_ASSIGN_OR_RETURN(stage_kv[i],
                            cuda::DeviceBuffer::Allocate(std::max<size_t>(kv_bytes, 1)));
  }
  KVSTAR_ASSIGN_OR_RETURN(cuda::DeviceBuffer y,
                          cuda::DeviceBuffer::Allocate(std::max<size_t>(y_bytes, 1)));
  KVSTAR_ASSIGN_OR_RETURN(cuda::DeviceBuffer w, cuda::DeviceBuffer::Allocate(w_bytes));
  cuda::CudaStream* h2d = ctx.h2d_stream();
  cuda::CudaStream* comp = ctx.compute_stream();
  KVSTAR_RETURN_IF_ERROR(ctx.Memset(w.data(), 0x3c, w_bytes, comp));  // bf16 0x3c3c ~ 0.0115
  const TensorView wv{w.data(), DType::kBF16, m, shape.hidden};
  std::vector<cuda::Event> x_ev, kv_ev, done_ev;
  for (size_t i = 0; i < L; ++i) {
    KVSTAR_ASSIGN_OR_RETURN(cuda::Event a, cuda::Event::Create());
    KVSTAR_ASSIGN_OR_RETURN(cuda::Event c, cuda::Event::Create());
    KVSTAR_ASSIGN_OR_RETURN(cuda::Event d, cuda::Event::Create());
    x_ev.push_back(std::move(a));
    kv_ev.push_back(std::move(c));
    done_ev.push_back(std::move(d));
  }
  const RecomputeForm& form = shape.recompute;
  const size_t copies = std::max<size_t>(shape.transfer_copies, 1);
  const TensorView wk{w.data(), DType::kBF16, shape.kv_dim, shape.hidden};
  const TensorView wvv{w.as<char>() + shape.kv_dim * shape.hidden * 2, DType::kBF16, shape.kv_dim,
                       shape.hidden};
  // `bytes` as `copies` contiguous copies (the last one takes the remainder).
  auto copy = [&](void* dst, const void* src, size_t bytes) -> Status {
    const size_t piece = (bytes + copies - 1) / copies;
    for (size_t off = 0; off < bytes; off += piece) {
      KVSTAR_RETURN_IF_ERROR(ctx.CopyToDevice(static_cast<char*>(dst) + off,
                                              static_cast<const char*>(src) + off,
                                              std::min(piece, bytes - off), h2d));
    }
    return Status::Ok();
  };
  // One launch group: rows of X at x into K/V bf16 at out (through y in f32).
  auto group = [&](const char* x, size_t rows, char* out) -> Status {
    if (form.gemms == 2) {
      KVSTAR_RETURN_IF_ERROR(cuda::MatMulConverted(ctx, comp, wk, x, rows, y.as<float>()));
      KVSTAR_RETURN_IF_ERROR(
          cuda::MatMulConverted(ctx, comp, wvv, x, rows, y.as<float>() + rows * shape.kv_dim));
    } else {
      KVSTAR_RETURN_IF_ERROR(cuda::MatMulConverted(ctx, comp, wv, x, rows, y.as<float>()));
    }
    // The element-wise pass over the f32 output, cut into small_launches launches.
    const size_t n = rows * m, launches = std::max<size_t>(form.small_launches, 1);
    const size_t piece = (n + launches - 1) / launches;
    for (size_t off = 0; off < n; off += piece) {
      KVSTAR_RETURN_IF_ERROR(cuda::ConvertF32(comp, y.as<float>() + off, std::min(piece, n - off),
                                              DType::kBF16, out + off * 2));
    }
    return Status::Ok();
  };
  auto step = [&]() -> Status {
    for (size_t i = 0; i < L; ++i) {
      const size_t l = splits.size() == 1 ? splits[0] : splits[i];
      const size_t buf = i % 2;
      // Link: wait until layer i-2 released the buffer, then X first, then K/V of [l, s).
      if (i >= 2) KVSTAR_RETURN_IF_ERROR(done_ev[i - 2].WaitOn(h2d));
      if (l > 0) {
        KVSTAR_RETURN_IF_ERROR(copy(stage_x[buf].data(), host_x.data(), b * l * shape.hidden * 2));
        KVSTAR_RETURN_IF_ERROR(x_ev[i].Record(h2d));
      }
      const size_t streamed = b * (s - l) * m * 2;
      if (streamed > 0) {
        KVSTAR_RETURN_IF_ERROR(copy(stage_kv[buf].data(), host_kv.data(), streamed));
      }
      KVSTAR_RETURN_IF_ERROR(kv_ev[i].Record(h2d));
      // Compute: recompute [0, l) once X is here, into the part of the buffer the copy does not
      // write; then wait for the streamed K/V.
      if (l > 0) {
        KVSTAR_RETURN_IF_ERROR(x_ev[i].WaitOn(comp));
        const char* x = stage_x[buf].as<char>();  // [b][l][hidden]
        char* out = stage_kv[buf].as<char>() + streamed;
        if (form.chunk_rows == 0) {
          KVSTAR_RETURN_IF_ERROR(group(x, b * l, out));
        } else {
          for (size_t q = 0; q < b; ++q) {
            for (size_t r0 = 0; r0 < l; r0 += form.chunk_rows) {
              const size_t rows = std::min(form.chunk_rows, l - r0);
              KVSTAR_RETURN_IF_ERROR(
                  group(x + (q * l + r0) * shape.hidden * 2, rows, out + (q * l + r0) * m * 2));
            }
          }
        }
      }
      KVSTAR_RETURN_IF_ERROR(kv_ev[i].WaitOn(comp));
      KVSTAR_RETURN_IF_ERROR(done_ev[i].Record(comp));
    }
    return ctx.SynchronizeDevice();
  };
  KVSTAR_RETURN_IF_ERROR(ctx.SynchronizeDevice());
  KVSTAR_RETURN_IF_ERROR(step());  // warm-up (cuBLAS heuristics, first-touch)
  std::vector<double> ms;
  for (int r = 0; r < reps; ++r) {
    Stopwatch sw;
    KVSTAR_RETURN_IF_ERROR(step());
    ms.push_back(sw.Millis());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace kvstar::recompute
