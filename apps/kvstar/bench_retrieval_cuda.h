// kvstar bench-retrieval --device cuda: ScoreBlocks (KVstar block scoring on the GPU) timed on
// the same random representations as the CPU runs (bench_retrieval_cuda.cc, built only with
// KVSTAR_HAVE_CUDA).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "base/status.h"
#include "sparse/block_representations.h"

namespace kvstar::cli {

struct GpuScoringRun {
  std::string device;           // the GPU's name
  std::vector<double> call_ms;  // one ScoreBlocks call (all tasks) per sample
  double max_rel_err = 0;       // of the scores against the CPU scorer (first task)
  bool tensor_cores = false;    // the tensor-core kernel ran (BlockScoreUsesTensorCores)
  size_t blocks_per_cta = 0;    // candidate blocks per partial work item (BlockScoreBlocksPerCta)
};

// The kernel choices of a timed call (cuda::BlockScoreArgs' fields of the same names).
struct GpuScoringChoices {
  bool tensor_cores = true;   // false: the f32 kernel
  size_t max_ctas = 0;        // the CTA limit (0: the whole grid)
  size_t blocks_per_cta = 0;  // candidate blocks per work item (0: auto)
  int stages = 0;             // 0: registers; 3: the cp.async ring
  bool head_major = false;    // the representations in HBM are head-major
};

// Scores `tasks` copies of one layer (each in its own device memory, as distinct (layer,
// sequence) pairs are) in one ScoreBlocks call per sample, for at least min_seconds; every
// block is a candidate; per_kv_head: one score per KV head and block.
StatusOr<GpuScoringRun> TimeGpuScoring(const sparse::RepresentationView& reps,
                                       const std::vector<float>& queries, size_t num_queries,
                                       size_t q_heads, size_t tasks, bool per_kv_head,
                                       double min_seconds, const GpuScoringChoices& choices = {});

// The limits of this GPU, measured now: f32 GEMM rate (TFLOP/s, cuBLAS without TF32) and
// device copy bandwidth (GB/s, read + write).
StatusOr<std::pair<double, double>> MeasureGpuLimits();

}  // namespace kvstar::cli
