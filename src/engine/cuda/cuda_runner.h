// generate / eval on the CUDA engine (built only with KVSTAR_HAVE_CUDA): the model's weights
// copied to the GPU, one request at a time in a CUDA decode mode.
#pragma once

#include <memory>
#include <string>

#include "base/hash.h"
#include "base/status.h"
#include "engine/engine.h"
#include "store/block_store.h"

namespace kvstar::cli {

class CudaRunner {
 public:
  virtual ~CudaRunner() = default;
  // mode: dense, offload, kvpr or kvstar. Settings (block_tokens, kv_dtype, prefill_chunk,
  // kvstar, retrieval_threads) come from `options`; the weights from `engine` (loaded on the CPU
  // in dense mode). kvpr: the split of each request is planned from the device profile (cached).
  static StatusOr<std::unique_ptr<CudaRunner>> Create(const Engine& engine, const std::string& mode,
                                                      const EngineOptions& options,
                                                      bool show_progress);
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

}  // namespace kvstar::cli
