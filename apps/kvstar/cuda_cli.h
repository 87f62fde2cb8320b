// generate / eval on the CUDA engine (built only with KVSTAR_HAVE_CUDA): the model's weights
// copied to the GPU, one request at a time in a CUDA decode mode.
#pragma once

#include <memory>
#include <string>

#include "base/status.h"
#include "engine/engine.h"

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

}  // namespace kvstar::cli
