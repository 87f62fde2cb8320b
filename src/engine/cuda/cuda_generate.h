// One request on the CUDA engine: the same loop as Engine::Generate (prefill, sampling, stop
// conditions, streaming callback, cancellation) over a CudaBatch of one sequence, so that
// `generate` and `eval` run every CUDA decode mode (dense, offload, kvpr, kvstar).
#pragma once

#include <vector>

#include "base/status.h"
#include "engine/cuda/cuda_batch.h"
#include "engine/cuda/cuda_model.h"
#include "engine/engine.h"

namespace kvstar::cuda {

// options.batch and options.max_tokens are set per request (1; prompt + max_new_tokens + 1,
// capped at the model's positions). eos: the stop ids when request.stop_ids is empty.
// Greedy sampling takes the device's argmax; other sampling copies the logits to the host.
StatusOr<GenerateResult> CudaGenerate(CudaModel& model, BatchOptions options,
                                      const GenerateRequest& request,
                                      const std::vector<int32_t>& eos);

}  // namespace kvstar::cuda
