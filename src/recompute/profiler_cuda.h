// Measures a KvprProfile on a CUDA device with the measuring functions of src/ops/cuda/ops.h,
// and keeps it in a per-device cache file (CUDA builds only).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "ops/cuda/device.h"
#include "recompute/planner.h"
#include "recompute/profile.h"

namespace kvstar::recompute {

struct ProfileOptions {
  // GEMM row counts (tokens of the batch recomputed in one launch). Counts whose buffers would
  // take more than a quarter of the device memory are skipped.
  std::vector<size_t> rows = {64, 256, 1024, 4096, 16384, 65536};
  size_t h2d_bytes = size_t{256} << 20;      // the large copy: bandwidth
  size_t h2d_small_bytes = size_t{1} << 20;  // the small copy: fixed cost per copy
  size_t device_copy_bytes = size_t{256} << 20;
  int reps = 20;
  // One line per measurement (e.g. to stderr); may be empty.
  std::function<void(const std::string&)> progress;
};

// Device name, compute capability, SMs, memory and the CUDA toolkit this build was compiled
// with: a cached profile is reused only where the key matches.
std::string DeviceKey(const cuda::DeviceInfo& info);

// H2D bandwidth and per-copy cost, device copy bandwidth and the GEMM table of (hidden, kv_dim).
StatusOr<KvprProfile> MeasureProfile(const cuda::DeviceContext& ctx, size_t hidden, size_t kv_dim,
                                     const ProfileOptions& options = {});

// Measures the GEMM table of (hidden, kv_dim) and adds it to `profile` (replacing one of the
// same geometry).
Status AddGemmTable(const cuda::DeviceContext& ctx, size_t hidden, size_t kv_dim,
                    const ProfileOptions& options, KvprProfile* profile);

struct CachedProfile {
  KvprProfile profile;
  std::string path;
  bool measured = false;  // false: read from `path` as it was
  std::string note;       // why it was (re-)measured, e.g. the load error; empty when loaded
};

// Loads `path` (empty: DefaultProfilePath of the device) unless `refresh`; measures the whole
// profile when the file is missing, corrupt, of another version or of another device (the note
// says which), or only the GEMM table when the file lacks (hidden, kv_dim); saves what it
// measured. A failure to save is returned (the measured profile is lost to the caller then).
StatusOr<CachedProfile> LoadOrMeasureProfile(const cuda::DeviceContext& ctx, size_t hidden,
                                             size_t kv_dim, const std::string& path, bool refresh,
                                             const ProfileOptions& options = {});

// Runs the pipeline of docs/KVPR.md on the device for one decode step without the layer compute:
// per layer, X and K/V copies from pinned host memory on the H2D stream, then on the compute
// stream the projection GEMM (MatMulConverted on the bf16 X) and one conversion pass of its
// output into the staging buffer, ordered by events, two staging buffers; shape.recompute and
// shape.transfer_copies shape the launches and copies as the model assumes (the element-wise
// pass always moves the default bytes: pass_bytes_per_row is not emulated). Returns the median
// wall time of `reps` steps in ms, to compare with PredictStep (layer_compute_ms = 0) through
// CheckPrediction. splits: one for all layers or one per layer. ResourceExhausted when the
// buffers would take more than half of the device memory.
StatusOr<double> MeasurePipelineStepMs(const cuda::DeviceContext& ctx, const KvprShape& shape,
                                       const std::vector<size_t>& splits, int reps = 5);

}  // namespace kvstar::recompute
