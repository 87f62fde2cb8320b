// kvstar bench --device cuda: the decode modes side by side on the GPU (bench_cuda.cc, built
// only with KVSTAR_HAVE_CUDA).
#pragma once

#include <cstdint>
#include <string>

#include "kv/kvstar_config.h"

namespace kvstar::cli {

struct CudaBenchFlags {
  std::string shape = "llama3-8b";
  std::string model;              // model directory instead of a shape
  std::string contexts = "4096";  // comma-separated prompt lengths
  std::string batch = "1";        // comma-separated batch sizes, or "max"
  std::string modes = "dense,offload";
  std::string hbm_budget;  // bytes for weights + KV + scratch; "" = the device's memory
  // Share of MemAvailable that the pinned host KV of a batch may take (offload, kvpr, kvstar).
  double host_memory_share = 0.75;
  size_t decode_steps = 16;
  std::string weight_dtype = "bf16";
  std::string kv_dtype = "bf16";
  size_t block_tokens = 128;
  std::string prefill = "random";  // real | random
  // kvstar with --prefill real: "file:DIR" keeps the prompts' blocks in a file store, so a
  // repeated invocation (same --seed: same prompts) reuses them; "dram" (default): none.
  std::string store = "dram";
  std::string kvpr_split = "auto";  // auto | tokens
  // kvpr: after the runs, store measured / modelled recomputation time in the cached profile
  // (recompute_scale), for the planner and predictions of later invocations.
  bool kvpr_calibrate = false;
  uint64_t seed = 1;
  std::string plot;  // PNG path: decode tokens/s vs context per mode
  bool json = false;
  KvstarConfig kvstar;             // kvstar mode settings (--kvstar-config and the UCM-named flags)
  int retrieval_threads = 0;       // 0: hardware threads - 3 (CudaBatch's default)
  bool gpu_scoring = false;        // kvstar: score blocks on the GPU (--retrieval-device gpu)
  std::string matmul = "auto";     // auto | library (--cuda-matmul)
  bool exclusive_host = false;     // kvstar: --host-tier exclusive
  bool score_tensor_cores = true;  // kvstar, GPU scoring: --gpu-scoring-kernel auto (f32: false)
  bool phase_timing = false;       // --phase-timing: device time per decode phase
  size_t gpu_score_spread = 1;     // kvstar, GPU scoring: --gpu-score-spread
  size_t gpu_score_ctas = 0;       // kvstar, GPU scoring: --gpu-score-ctas
  bool pdl = true;                 // --cuda-pdl: programmatic dependent launch of decode kernels
  int skinny_stages = 0;           // --cuda-skinny-stages: cuda::SetSkinnyStages
  // --cuda-decode-attention: auto (keep), fma or mma (cuda::SetDecodeAttentionOnTensorCores).
  std::string decode_attention = "auto";
  std::string skinny_split = "auto";  // --cuda-skinny-split: auto (keep), on or off
  int score_stages = 0;               // kvstar, GPU scoring: --gpu-score-stages
  bool score_head_major = false;      // kvstar, GPU scoring: --gpu-score-layout head
  // --cuda-l2-prefetch: BatchOptions::l2_prefetch_bytes (negative: the engine's default).
  int64_t l2_prefetch_bytes = -1;
  bool fuse_swiglu = true;                // --cuda-fuse-swiglu: BatchOptions::fuse_swiglu
  std::string kvstar_cache_blocks = "0";  // kvstar: --kvstar-cache-blocks N|max
};

int RunCudaBench(const CudaBenchFlags& flags);

}  // namespace kvstar::cli
