// KvprProfile: the device numbers the KVPR planner needs (host-to-device bandwidth, the rate of
// the fused K+V projection GEMM at several row counts, device memory bandwidth), with a JSON file
// format so that a profile is measured once per device and reused (`kvstar profile`).
//
// The profile holds no CUDA type: it is measured by profiler_cuda.h on a CUDA build and can be
// loaded, printed and planned with on any build.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace kvstar::recompute {

// Bumped whenever a field changes meaning; a file of another version is re-measured.
inline constexpr int kProfileVersion = 1;
inline constexpr const char* kProfileFormat = "kvstar-kvpr-profile";

// One measured point of the projection GEMM.
struct GemmPoint {
  size_t rows = 0;    // activation rows (tokens over the whole batch) in one GEMM
  double tflops = 0;  // 2 * rows * hidden * (2 * kv_dim) / time, time of one launch end to end
};

// The fused K+V projection of one model geometry: weights [2 * kv_dim][hidden] bf16 times
// activations [rows][hidden], f32 accumulation.
struct GemmTable {
  size_t hidden = 0;
  size_t kv_dim = 0;  // kv_heads * head_dim; the GEMM has 2 * kv_dim output columns
  // Device cost of one small launch after the GEMM in a recomputation (bias, RoPE, conversion
  // to the KV dtype), measured back to back in a busy stream.
  double launch_overhead_us = 0;
  std::vector<GemmPoint> points;  // rows strictly ascending, tflops > 0

  // TFLOP/s at `rows`: linear in log(rows) between points; below the first point the time of
  // the first point (a launch that small is latency-bound); above the last the last rate.
  // Requires a valid table (at least one point).
  double TflopsAt(double rows) const;
  // Milliseconds of the GEMM alone for `rows` rows (0 for rows == 0).
  double GemmMs(double rows) const;
};

// Per-layer decode compute measured by the runtime for one shape (optional; the planner's
// input KvprShape::layer_compute_ms).
struct LayerComputeSample {
  std::string shape;  // a NamedShape name or a model directory
  size_t batch = 0;
  size_t seq_len = 0;
  double ms = 0;
};

struct KvprProfile {
  int version = kProfileVersion;
  std::string device_name;  // "NVIDIA H100 80GB HBM3"
  // Name, compute capability, SMs, memory and CUDA version: a cached profile is reused only on a
  // device with the same key.
  std::string device_key;
  std::string measured_at;  // ISO 8601 UTC

  double h2d_gbps = 0;        // pinned host -> device copy, 1e9 B/s, large copies
  size_t h2d_bytes = 0;       // size of the copy h2d_gbps was measured with
  double h2d_latency_us = 0;  // fixed cost per copy, from a small copy; >= 0
  double device_gbps = 0;     // device copy (read + write bytes); 0 = not measured

  std::vector<GemmTable> gemm;  // one table per (hidden, kv_dim) measured
  std::vector<LayerComputeSample> layer_compute;
  // Measured / modelled recomputation time of the engine's runtime on this device (1 = the
  // GEMM table and launch costs alone). Set by `kvstar bench --kvpr-calibrate`: sustained
  // recomputation inside the decode pipeline runs slower than the profiler's short GEMM bursts.
  double recompute_scale = 1.0;
  // Measured / modelled H2D link time of the runtime's offload (its many per-sequence copies
  // next to the device-to-host write-backs, sustained over a step), set the same way.
  double link_scale = 1.0;
  std::string recompute_scale_note;  // what the scales were calibrated on; empty when 1

  // nullptr when no table of this geometry was measured.
  const GemmTable* FindGemm(size_t hidden, size_t kv_dim) const;
  // nullptr when not measured.
  const LayerComputeSample* FindLayerCompute(std::string_view shape, size_t batch,
                                             size_t seq_len) const;
};

// Every number positive and finite where required, GEMM points ascending, no duplicate table.
// `source` names the input in the message.
Status ValidateProfile(const KvprProfile& p, std::string_view source);

nlohmann::json ProfileToJson(const KvprProfile& p);
// Errors: DataLoss (not JSON, missing or mistyped key), FailedPrecondition (another format or
// version), InvalidArgument (values ValidateProfile rejects). Never aborts on bad input.
StatusOr<KvprProfile> ProfileFromJson(std::string_view text, std::string_view source);

// Writes through a temporary file and a rename (a crash never leaves half a profile), creating
// the parent directories.
Status SaveProfile(const KvprProfile& p, const std::string& path);
// NotFound when the file does not exist; otherwise as ProfileFromJson.
StatusOr<KvprProfile> LoadProfile(const std::string& path);

// FailedPrecondition naming both keys when the profile was measured on another device or
// another CUDA version.
Status CheckProfileDevice(const KvprProfile& p, std::string_view device_key);

// "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3" ([a-z0-9-] only, never empty).
std::string SanitizeDeviceName(std::string_view name);
// $XDG_CACHE_HOME/kvstar/profile-<sanitized>.json, else $HOME/.cache/kvstar/...; FailedPrecondition
// when neither variable is set.
StatusOr<std::string> DefaultProfilePath(std::string_view device_name);

}  // namespace kvstar::recompute
