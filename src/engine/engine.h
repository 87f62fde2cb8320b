// Engine: owns a loaded model (config, weights, tokenizer), the CPU thread pool and the KV device
// pool, and runs requests: chunked prefill, then decode with sampling until EOS or a limit.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "engine/sampler.h"
#include "kv/device_pool.h"
#include "kv/kv_policy.h"
#include "kv/kvstar_config.h"
#include "model/config.h"
#include "model/transformer.h"
#include "model/weights.h"
#include "sparse/retriever.h"
#include "store/block_store.h"
#include "tokenizer/tokenizer.h"

namespace kvstar {

struct EngineOptions {
  int threads = 0;                // compute threads; 0 = all hardware threads
  size_t block_tokens = 128;      // tokens per KV block
  DType kv_dtype = DType::kBF16;  // KV cache element type (f32 or bf16)
  size_t prefill_chunk = 256;     // tokens per prefill forward
  size_t device_kv_budget = 0;    // bytes of the KV device pool; 0 = automatic
  std::string mode = "dense";     // decode mode (KvPolicy): dense or kvstar
  // kvstar mode.
  KvstarConfig kvstar;
  std::string store = "dram";   // dram | file:PATH | tiered:PATH
  size_t store_dram_bytes = 0;  // DRAM tier capacity; 0 = 4 GiB
  int retrieval_threads = 1;    // CPU threads scoring blocks
  // The CUDA engine only (--device cuda): blocks are scored on the GPU instead of CPU threads.
  bool gpu_scoring = false;
  // The CUDA engine only, kvstar: the pinned host memory keeps only the blocks off the device.
  bool exclusive_host = false;
  // The CUDA engine only, kvstar with gpu_scoring: a group's scoring queued over this many steps
  // (cuda::BatchOptions::gpu_score_spread).
  size_t gpu_score_spread = 1;
  // The CUDA engine only, kvstar with gpu_scoring: the scoring kernels' CTA limit
  // (cuda::BatchOptions::gpu_score_ctas; 0: the whole grid).
  size_t gpu_score_ctas = 0;
  // The CUDA engine only, kvstar, not deterministic: device-cache slots per (layer, sequence)
  // (cuda::BatchOptions::kvstar_cache_blocks).
  size_t kvstar_cache_blocks = 0;
};

Status ValidateEngineOptions(const EngineOptions& o);

struct GenerateRequest {
  std::vector<int32_t> prompt;
  size_t max_new_tokens = 128;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;  // empty: the model's eos ids
  const std::atomic<bool>* cancel = nullptr;
  std::function<void(size_t done, size_t total)> on_prefill_progress;
  std::function<void(int32_t token)> on_token;  // called for every generated token
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated tokens (the stop token included if hit)
  std::string finish_reason;    // "eos", "length", "max_position", "cancelled"
  size_t prompt_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;        // first generated token excluded (it comes from prefill)
  std::vector<float> step_ms;       // wall time of each decode forward step
  size_t reused_prompt_tokens = 0;  // prompt tokens whose KV came from the store
  KvStats kv;
  double prefill_tokens_per_second() const;
  double decode_tokens_per_second() const;
};

// The checks every backend makes before running a request: a non-empty prompt of in-vocabulary
// ids that leaves room for a new position, and valid sampling parameters.
Status ValidateGenerateRequest(const ModelConfig& config, const GenerateRequest& request);

class Engine {
 public:
  using LoadProgress = std::function<void(size_t done, size_t total)>;

  // Loads a Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
  static StatusOr<std::unique_ptr<Engine>> Load(const std::string& model_dir,
                                                const EngineOptions& options,
                                                const LoadProgress& progress = nullptr);
  // Random weights of the given shape, generated in memory (benchmarks). No tokenizer.
  static StatusOr<std::unique_ptr<Engine>> FromRandom(const ModelConfig& config, DType dtype,
                                                      uint64_t seed, const EngineOptions& options);
  ~Engine();

  // Thread-safe: concurrent requests share the weights, the compute threads, the device pool,
  // the store and the retriever; each has its own KV policy and forward-pass scratch.
  StatusOr<GenerateResult> Generate(const GenerateRequest& request);

  // Logits for every prompt position ([n][vocab]), prefilled in chunks of `chunk` tokens
  // through the dense policy: the golden tests compare these with Hugging Face.
  StatusOr<std::vector<float>> PromptLogits(const std::vector<int32_t>& prompt, size_t chunk);

  const ModelConfig& config() const { return *config_; }
  const ModelWeights& weights() const { return *weights_; }
  const Tokenizer* tokenizer() const { return tokenizer_.get(); }
  const EngineOptions& options() const { return options_; }
  ThreadPool& threads() { return *threads_; }
  BlockStore* store() { return store_.get(); }
  DevicePool& device_pool() { return *device_pool_; }
  std::vector<int32_t> eos_ids() const;

 private:
  Engine() = default;
  Status Init();
  StatusOr<std::unique_ptr<KvPolicy>> MakePolicy();
  StatusOr<GenerateResult> Run(const GenerateRequest& request, KvPolicy& kv);

 public:
  // The policy a request of this engine would use (tests inspect kvstar policies directly).
  StatusOr<std::unique_ptr<KvPolicy>> NewPolicy() { return MakePolicy(); }
  StatusOr<GenerateResult> GenerateWith(const GenerateRequest& request, KvPolicy& kv) {
    return Run(request, kv);
  }

  EngineOptions options_;
  std::unique_ptr<ModelConfig> config_;
  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<ThreadPool> threads_;
  std::unique_ptr<DevicePool> device_pool_;
  std::unique_ptr<BlockStore> store_;             // kvstar mode
  std::unique_ptr<sparse::Retriever> retriever_;  // kvstar mode
};

}  // namespace kvstar
