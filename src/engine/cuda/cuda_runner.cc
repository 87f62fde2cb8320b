#include "engine/cuda/cuda_runner.h"

#include "engine/cuda/cuda_batch.h"
#include "engine/cuda/cuda_generate.h"
#include "engine/cuda/cuda_model.h"
#include "ops/cuda/device.h"
#include "recompute/planner.h"
#include "recompute/profiler_cuda.h"
#include "store/block_id.h"

namespace kvstar::cuda {
namespace {

class Runner final : public CudaRunner {
 public:
  StatusOr<GenerateResult> Generate(const GenerateRequest& request) override {
    BatchOptions o = base_;
    if (o.mode == KvMode::kKvpr) {
      KVSTAR_ASSIGN_OR_RETURN(o.kvpr_layer_splits, PlanSplits(request.prompt.size()));
    }
    return CudaGenerate(*model_, o, request, eos_);
  }
  std::string device_name() const override { return ctx_->info().name; }

  std::unique_ptr<DeviceContext> ctx_;
  std::unique_ptr<CudaModel> model_;
  BatchOptions base_;
  std::vector<int32_t> eos_;
  ModelConfig config_;
  std::unique_ptr<BlockStore> store_;  // kvstar with --store file:DIR; else none

 private:
  // The planner's split per layer for one sequence of `context` tokens, with the engine's
  // launch form.
  StatusOr<std::vector<size_t>> PlanSplits(size_t context) {
    KVSTAR_ASSIGN_OR_RETURN(
        recompute::CachedProfile p,
        recompute::LoadOrMeasureProfile(*ctx_, config_.hidden_size, config_.kv_dim(), "", false));
    recompute::KvprShape shape = recompute::ShapeFromConfig(config_, 1, context, base_.kv_dtype);
    shape.layer_compute_ms =
        recompute::EstimateLayerComputeMs(p.profile, config_, 1, context, base_.kv_dtype);
    shape.transfer_copies = 1;
    shape.recompute.chunk_rows = 4096;
    shape.recompute.gemms = 2;
    shape.recompute.small_launches = 2 + (config_.qkv_bias ? 2 : 0);
    recompute::PlannerOptions popt;
    popt.granularity = base_.block_tokens;
    KVSTAR_ASSIGN_OR_RETURN(recompute::KvprPlan plan, recompute::PlanSplit(p.profile, shape, popt));
    return plan.layer_splits;
  }
};

}  // namespace

StatusOr<std::unique_ptr<CudaRunner>> CudaRunner::Create(const Engine& engine,
                                                         const std::string& mode,
                                                         const EngineOptions& options,
                                                         const Engine::LoadProgress& progress) {
  KVSTAR_RETURN_IF_ERROR(CheckOptions(mode, options));
  KVSTAR_ASSIGN_OR_RETURN(KvMode kv_mode, ParseKvMode(mode));
  if (DeviceCount() == 0) {
    return FailedPrecondition("--device cuda: no CUDA device is visible");
  }
  auto r = std::make_unique<Runner>();
  KVSTAR_ASSIGN_OR_RETURN(r->ctx_, DeviceContext::Create(0));
  r->config_ = engine.config();
  KVSTAR_ASSIGN_OR_RETURN(r->model_,
                          CudaModel::Upload(*r->ctx_, r->config_, engine.weights(), progress));
  r->base_.mode = kv_mode;
  r->base_.block_tokens = options.block_tokens;
  r->base_.kv_dtype = options.kv_dtype;
  r->base_.prefill_chunk = std::max<size_t>(options.prefill_chunk, 1);
  r->base_.kvstar = options.kvstar;
  r->base_.retrieval_threads = options.retrieval_threads;
  r->base_.gpu_scoring = options.gpu_scoring;
  r->base_.exclusive_host = options.exclusive_host && kv_mode == KvMode::kKvstar;
  r->base_.gpu_score_spread = options.gpu_score_spread;
  r->base_.gpu_score_ctas = options.gpu_score_ctas;
  r->base_.kvstar_cache_blocks = options.kvstar_cache_blocks;
  if (kv_mode == KvMode::kKvstar && options.store != "dram") {
    KVSTAR_ASSIGN_OR_RETURN(
        KvStore ks, OpenKvStore(options.store, r->config_, options.block_tokens, options.kv_dtype,
                                engine.weights().fingerprint()));
    r->store_ = std::move(ks.store);
    r->base_.store = r->store_.get();
    r->base_.kv_fingerprint = ks.kv_fingerprint;
  }
  r->eos_ = engine.eos_ids();
  return std::unique_ptr<CudaRunner>(std::move(r));
}

Status CudaRunner::CheckOptions(const std::string& mode, const EngineOptions& options) {
  KVSTAR_ASSIGN_OR_RETURN(KvMode kv_mode, ParseKvMode(mode));
  if (kv_mode != KvMode::kKvstar &&
      (options.store != "dram" || options.gpu_scoring || options.exclusive_host)) {
    return InvalidArgument(
        "store, GPU scoring and the exclusive host tier are kvstar settings (mode %s keeps its KV "
        "in HBM or pinned host memory)",
        mode.c_str());
  }
  if (options.store.starts_with("tiered:")) {
    return InvalidArgument(
        "store %s: on CUDA the offloaded KV lives in pinned host memory, already the DRAM tier; "
        "use file:DIR to keep the prompt's blocks",
        options.store.c_str());
  }
  if (kv_mode == KvMode::kKvstar) {
    KVSTAR_RETURN_IF_ERROR(options.kvstar.Validate(options.block_tokens));
    if (options.gpu_scoring) {
      KVSTAR_RETURN_IF_ERROR(CheckGpuScoringStride(options.kvstar.retrieval_stride));
    }
  }
  return Status::Ok();
}

StatusOr<KvStore> OpenKvStore(const std::string& spec, const ModelConfig& config,
                              size_t block_tokens, DType kv_dtype,
                              const Hash128& weights_fingerprint) {
  StoreOptions so;
  const KvGeometry geom{config.num_kv_heads, config.head_dim, block_tokens, kv_dtype};
  so.max_entry_bytes = std::max(so.max_entry_bytes, geom.block_bytes());
  KvStore ks;
  KVSTAR_ASSIGN_OR_RETURN(ks.store, OpenStore(spec, so));
  ks.kv_fingerprint = KvFingerprint(weights_fingerprint, kv_dtype);
  return ks;
}

}  // namespace kvstar::cuda
