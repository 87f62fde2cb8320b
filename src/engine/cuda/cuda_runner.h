// One request at a time on the CUDA engine: the weights of a CPU-loaded Engine copied to the GPU,
// decoded in a CUDA mode (dense, offload, kvpr, kvstar). Used by the CLI's generate and eval and
// by the embedding API (include/kvstar/kvstar.h).
#pragma once

#include <memory>
#include <string>

#include "base/hash.h"
#include "base/status.h"
#include "engine/engine.h"
#include "store/block_store.h"

namespace kvstar::cuda {

class CudaRunner {
 public:
  virtual ~CudaRunner() = default;
  // mode: dense, offload, kvpr or kvstar. Settings (block_tokens, kv_dtype, prefill_chunk,
  // kvstar, retrieval_threads) come from `options`; the weights from `engine` (loaded on the CPU
  // in dense mode). kvpr: the split of each request is planned from the device profile (cached).
  // `progress` (may be empty) is told of each layer's weights copied to the GPU.
  // Create checks `options` with CheckOptions first.
  static StatusOr<std::unique_ptr<CudaRunner>> Create(const Engine& engine, const std::string& mode,
                                                      const EngineOptions& options,
                                                      const Engine::LoadProgress& progress);
  // The settings this runner refuses rather than ignores, named as in EngineOptions: an unknown
  // mode; a store other than dram, GPU scoring or the exclusive host tier outside kvstar; a
  // tiered store (the pinned host memory is already the DRAM tier); invalid kvstar settings.
  // Host code only: callers may check before loading any weights.
  static Status CheckOptions(const std::string& mode, const EngineOptions& options);
  virtual StatusOr<GenerateResult> Generate(const GenerateRequest& request) = 0;
  virtual std::string device_name() const = 0;
};

// The block store of the CUDA engine's kvstar prefix reuse: `spec` (file:DIR, ...) opened for
// entries of one KV block of `config`, and the seed of the cache's block ids,
// KvFingerprint(weights_fingerprint, kv_dtype), shared with the CPU engine.
struct KvStore {
  std::unique_ptr<BlockStore> store;
  Hash128 kv_fingerprint;
};
StatusOr<KvStore> OpenKvStore(const std::string& spec, const ModelConfig& config,
                              size_t block_tokens, DType kv_dtype,
                              const Hash128& weights_fingerprint);

}  // namespace kvstar::cuda
