#include "engine/cuda/cuda_generate.h"

#include <algorithm>

#include "base/timer.h"
#include "engine/sampler.h"

namespace kvstar::cuda {

StatusOr<GenerateResult> CudaGenerate(CudaModel& model, BatchOptions options,
                                      const GenerateRequest& request,
                                      const std::vector<int32_t>& eos) {
  const ModelConfig& c = model.config();
  KVSTAR_RETURN_IF_ERROR(ValidateGenerateRequest(c, request));
  const auto max_pos = static_cast<size_t>(c.max_position_embeddings);
  const std::vector<int32_t>& stop = request.stop_ids.empty() ? eos : request.stop_ids;
  auto cancelled = [&] { return request.cancel != nullptr && request.cancel->load(); };
  options.batch = 1;
  options.max_tokens = std::min(request.prompt.size() + request.max_new_tokens + 1, max_pos);
  KVSTAR_ASSIGN_OR_RETURN(std::unique_ptr<CudaBatch> batch, CudaBatch::Create(model, options));

  GenerateResult result;
  result.prompt_tokens = request.prompt.size();
  std::vector<float> logits(c.vocab_size);
  const bool greedy = request.sampling.temperature == 0.0f;
  Sampler sampler(request.sampling);
  Stopwatch watch;
  const Status prefill =
      batch->Prefill(0, request.prompt, logits.data(), [&](size_t done, size_t total) {
        if (request.on_prefill_progress) {
          request.on_prefill_progress(done * request.prompt.size() / total, request.prompt.size());
        }
        return !cancelled();
      });
  auto fill_kv = [&] {
    const BatchStats& s = batch->stats();
    result.kv.tokens = batch->length(0);
    result.kv.device_bytes = batch->device_kv_bytes_per_sequence();
    result.kv.bytes_loaded = s.h2d_bytes;
    result.kv.bytes_dumped = s.d2h_bytes;
    result.kv.device_blocks = s.device_blocks;
    result.kv.candidate_blocks = s.candidate_blocks;
    result.kv.selected_blocks = s.selected_blocks;
    result.kv.retrievals = s.retrievals + s.sync_retrievals;
    result.kv.async_retrievals = s.retrievals;
    result.kv.sync_retrievals = s.sync_retrievals;
    result.kv.sync_wait_ms = s.sync_wait_ms;
    result.kv.decode_wait_ms = s.sync_wait_ms;
    result.kv.skipped_retrievals = s.skipped_retrievals;
    result.kv.swaps = s.swaps;
    result.kv.late_swaps = s.late_retrievals;
    result.kv.blocks_loaded = s.blocks_loaded;
    result.kv.retrieval_ms_total = s.retrieval_ms_total;
    result.kv.prefix_reused_tokens = s.prefix_reused_tokens;
  };
  if (prefill.code() == StatusCode::kCancelled) {
    result.finish_reason = "cancelled";
    fill_kv();
    return result;
  }
  KVSTAR_RETURN_IF_ERROR(prefill);
  result.prefill_seconds = watch.Seconds();
  result.reused_prompt_tokens = batch->stats().prefix_reused_tokens;

  watch.Reset();
  size_t pos = request.prompt.size();
  result.finish_reason = "length";
  int32_t token = 0;
  KVSTAR_ASSIGN_OR_RETURN(token, sampler.Sample(logits));
  while (true) {
    result.tokens.push_back(token);
    if (request.on_token) request.on_token(token);
    if (std::find(stop.begin(), stop.end(), token) != stop.end()) {
      result.finish_reason = "eos";
      break;
    }
    if (result.tokens.size() == request.max_new_tokens) break;
    if (pos + 1 >= options.max_tokens) {
      result.finish_reason = "max_position";
      break;
    }
    if (cancelled()) {
      result.finish_reason = "cancelled";
      break;
    }
    Stopwatch step;
    int32_t next = 0;
    KVSTAR_RETURN_IF_ERROR(batch->Step(std::span<const int32_t>(&token, 1),
                                       std::span<int32_t>(&next, 1),
                                       greedy ? nullptr : logits.data()));
    result.step_ms.push_back(static_cast<float>(step.Millis()));
    ++pos;
    if (greedy) {
      if (next < 0) return Internal("decode step %zu produced no finite logit", pos);
      token = next;
    } else {
      KVSTAR_ASSIGN_OR_RETURN(token, sampler.Sample(logits));
    }
  }
  result.decode_seconds = watch.Seconds();
  fill_kv();
  return result;
}

}  // namespace kvstar::cuda
