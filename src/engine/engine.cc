#include "engine/engine.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "base/timer.h"
#include "kv/dense_policy.h"
#include "kv/kvstar_policy.h"
#include "store/block_id.h"

namespace kvstar {

Status ValidateEngineOptions(const EngineOptions& o) {
  if (o.threads < 0) return InvalidArgument("--threads must be >= 0, got %d", o.threads);
  if (o.block_tokens == 0 || o.block_tokens > 4096 || o.block_tokens % 8 != 0) {
    return InvalidArgument("block_tokens must be a multiple of 8 in [8, 4096], got %zu",
                           o.block_tokens);
  }
  if (o.kv_dtype == DType::kF16) {
    return InvalidArgument("the KV cache supports f32 and bf16, not f16");
  }
  if (o.prefill_chunk == 0) return InvalidArgument("prefill chunk must be >= 1");
  if (o.mode == "offload" || o.mode == "kvpr") {
    return InvalidArgument("decode mode '%s' runs on the CUDA backend only (--device cuda)",
                           o.mode.c_str());
  }
  if (o.mode != "dense" && o.mode != "kvstar" && o.mode != "oracle") {
    return InvalidArgument("unknown decode mode '%s'; available: dense, kvstar, oracle",
                           o.mode.c_str());
  }
  if (o.mode == "oracle") KVSTAR_RETURN_IF_ERROR(o.kvstar.Validate(o.block_tokens));
  if (o.mode == "kvstar") {
    KVSTAR_RETURN_IF_ERROR(o.kvstar.Validate(o.block_tokens));
    if (o.retrieval_threads < 1) {
      return InvalidArgument("--retrieval-threads must be >= 1, got %d", o.retrieval_threads);
    }
  }
  return Status::Ok();
}

double GenerateResult::prefill_tokens_per_second() const {
  return prefill_seconds > 0 ? static_cast<double>(prompt_tokens) / prefill_seconds : 0.0;
}

double GenerateResult::decode_tokens_per_second() const {
  const size_t steps = tokens.size() > 1 ? tokens.size() - 1 : 0;
  return decode_seconds > 0 ? static_cast<double>(steps) / decode_seconds : 0.0;
}

StatusOr<std::unique_ptr<Engine>> Engine::Load(const std::string& model_dir,
                                               const EngineOptions& options,
                                               const LoadProgress& progress) {
  KVSTAR_RETURN_IF_ERROR(ValidateEngineOptions(options));
  std::unique_ptr<Engine> e(new Engine());
  e->options_ = options;
  KVSTAR_ASSIGN_OR_RETURN(ModelConfig config, LoadConfig(model_dir));
  e->config_ = std::make_unique<ModelConfig>(std::move(config));
  KVSTAR_ASSIGN_OR_RETURN(e->weights_, ModelWeights::Load(model_dir, *e->config_, progress));
  const std::string tok_path = (std::filesystem::path(model_dir) / "tokenizer.json").string();
  KVSTAR_ASSIGN_OR_RETURN(e->tokenizer_, Tokenizer::FromFile(tok_path));
  KVSTAR_RETURN_IF_ERROR(e->Init());
  return e;
}

StatusOr<std::unique_ptr<Engine>> Engine::FromRandom(const ModelConfig& config, DType dtype,
                                                     uint64_t seed, const EngineOptions& options) {
  KVSTAR_RETURN_IF_ERROR(ValidateEngineOptions(options));
  std::unique_ptr<Engine> e(new Engine());
  e->options_ = options;
  e->config_ = std::make_unique<ModelConfig>(config);
  e->weights_ = ModelWeights::Random(*e->config_, dtype, seed);
  KVSTAR_RETURN_IF_ERROR(e->Init());
  return e;
}

Engine::~Engine() = default;

Status Engine::Init() {
  const int threads = options_.threads > 0 ? options_.threads : ThreadPool::HardwareThreads();
  threads_ =
      std::make_unique<ThreadPool>(ThreadPoolOptions{.num_threads = threads, .name = "compute"});
  KvGeometry geom;
  geom.kv_heads = config_->num_kv_heads;
  geom.head_dim = config_->head_dim;
  geom.block_tokens = options_.block_tokens;
  geom.dtype = options_.kv_dtype;
  size_t budget = options_.device_kv_budget;
  if (budget == 0) {
    // Room for the model's whole context in every layer, capped at 4 GiB; pages are only
    // committed when a block is first written.
    const size_t blocks_per_layer =
        (static_cast<size_t>(config_->max_position_embeddings) + geom.block_tokens - 1) /
        geom.block_tokens;
    budget = std::min<size_t>(blocks_per_layer * config_->num_layers * geom.block_bytes(),
                              size_t{4} << 30);
  }
  if (budget < geom.block_bytes() * config_->num_layers) {
    return InvalidArgument(
        "KV budget of %zu bytes is below one block per layer (%zu layers x %zu bytes)", budget,
        config_->num_layers, geom.block_bytes());
  }
  device_pool_ = std::make_unique<DevicePool>(geom, DevicePool::SlotsForBudget(geom, budget));
  if (options_.mode == "kvstar") {
    StoreOptions so;
    so.max_entry_bytes = std::max(so.max_entry_bytes, geom.block_bytes());
    if (options_.store_dram_bytes > 0) so.dram_capacity_bytes = options_.store_dram_bytes;
    KVSTAR_ASSIGN_OR_RETURN(store_, OpenStore(options_.store, so));
    sparse::RetrieverOptions ro;
    ro.num_threads = options_.retrieval_threads;
    retriever_ = std::make_unique<sparse::Retriever>(ro);
  }
  return Status::Ok();
}

std::vector<int32_t> Engine::eos_ids() const {
  std::vector<int32_t> ids = config_->eos_token_ids;
  if (ids.empty() && tokenizer_ != nullptr) ids = tokenizer_->eos_candidates();
  return ids;
}

StatusOr<std::unique_ptr<KvPolicy>> Engine::MakePolicy() {
  const float scale = 1.0f / std::sqrt(static_cast<float>(config_->head_dim));
  if (options_.mode == "kvstar") {
    KvstarResources r{device_pool_.get(), threads_.get(), retriever_.get(), store_.get(),
                      KvFingerprint(weights_->fingerprint(), options_.kv_dtype)};
    KVSTAR_ASSIGN_OR_RETURN(auto p, KvstarPolicy::Create(r, options_.kvstar, config_->num_layers,
                                                         config_->num_heads, scale));
    return std::unique_ptr<KvPolicy>(std::move(p));
  }
  auto dense = std::make_unique<DensePolicy>(*device_pool_, *threads_, config_->num_layers,
                                             config_->num_heads, scale);
  if (options_.mode == "oracle") dense->set_oracle(options_.kvstar);
  return std::unique_ptr<KvPolicy>(std::move(dense));
}

StatusOr<std::vector<float>> Engine::PromptLogits(const std::vector<int32_t>& prompt,
                                                  size_t chunk) {
  if (prompt.empty()) return InvalidArgument("prompt is empty");
  if (chunk == 0) return InvalidArgument("chunk must be >= 1");
  KVSTAR_ASSIGN_OR_RETURN(std::unique_ptr<KvPolicy> kv, MakePolicy());
  kv->AppendTokens(prompt);
  std::vector<float> logits(prompt.size() * config_->vocab_size);
  Transformer transformer(*config_, *weights_, *threads_);
  KVSTAR_RETURN_IF_ERROR(
      transformer.Prefill(prompt, 0, *kv, chunk, LogitsMode::kAll, logits.data()));
  return logits;
}

StatusOr<GenerateResult> Engine::Generate(const GenerateRequest& request) {
  KVSTAR_ASSIGN_OR_RETURN(std::unique_ptr<KvPolicy> kv, MakePolicy());
  return Run(request, *kv);
}

Status ValidateGenerateRequest(const ModelConfig& c, const GenerateRequest& request) {
  if (request.prompt.empty()) return InvalidArgument("prompt is empty");
  KVSTAR_RETURN_IF_ERROR(ValidateSamplingParams(request.sampling));
  const auto max_pos = static_cast<size_t>(c.max_position_embeddings);
  if (request.prompt.size() >= max_pos) {
    return OutOfRange(
        "prompt has %zu tokens but the model allows at most %zu positions "
        "(max_position_embeddings in config.json); shorten the prompt",
        request.prompt.size(), max_pos);
  }
  for (int32_t t : request.prompt) {
    if (t < 0 || static_cast<size_t>(t) >= c.vocab_size) {
      return InvalidArgument("prompt token id %d is outside the vocabulary [0, %zu)", t,
                             c.vocab_size);
    }
  }
  return Status::Ok();
}

StatusOr<GenerateResult> Engine::Run(const GenerateRequest& request, KvPolicy& kv_ref) {
  const ModelConfig& c = *config_;
  KVSTAR_RETURN_IF_ERROR(ValidateGenerateRequest(c, request));
  const auto max_pos = static_cast<size_t>(c.max_position_embeddings);
  KvPolicy* kv = &kv_ref;
  const std::vector<int32_t> stop = request.stop_ids.empty() ? eos_ids() : request.stop_ids;
  auto cancelled = [&] { return request.cancel != nullptr && request.cancel->load(); };

  GenerateResult result;
  result.prompt_tokens = request.prompt.size();
  std::vector<float> logits(c.vocab_size);
  Sampler sampler(request.sampling);

  // One forward-pass context (scratch buffers) per request: requests may run concurrently.
  Transformer transformer(*config_, *weights_, *threads_);
  // Prefill, layer-major, from where the store's prefix ends.
  Stopwatch watch;
  kv->AppendTokens(request.prompt);
  KVSTAR_ASSIGN_OR_RETURN(const size_t reused, kv->PrepareReuse(request.prompt));
  result.reused_prompt_tokens = reused;
  const std::span<const int32_t> suffix(request.prompt.data() + reused,
                                        request.prompt.size() - reused);
  const Status prefill = transformer.Prefill(
      suffix, static_cast<int64_t>(reused), *kv, options_.prefill_chunk, LogitsMode::kLast,
      logits.data(), [&](size_t done, size_t total) {
        if (request.on_prefill_progress) {
          request.on_prefill_progress(reused + done * suffix.size() / total, request.prompt.size());
        }
        return !cancelled();
      });
  if (prefill.code() == StatusCode::kCancelled) {
    result.finish_reason = "cancelled";
    result.kv = kv->Stats();
    return result;
  }
  KVSTAR_RETURN_IF_ERROR(prefill);
  result.prefill_seconds = watch.Seconds();

  watch.Reset();
  size_t pos = request.prompt.size();
  result.finish_reason = "length";
  while (result.tokens.size() < request.max_new_tokens) {
    KVSTAR_ASSIGN_OR_RETURN(const int32_t token, sampler.Sample(logits));
    result.tokens.push_back(token);
    if (request.on_token) request.on_token(token);
    if (std::find(stop.begin(), stop.end(), token) != stop.end()) {
      result.finish_reason = "eos";
      break;
    }
    if (result.tokens.size() == request.max_new_tokens) break;
    if (pos >= max_pos) {
      result.finish_reason = "max_position";
      break;
    }
    if (cancelled()) {
      result.finish_reason = "cancelled";
      break;
    }
    Stopwatch step;
    kv->AppendTokens(std::span<const int32_t>(&token, 1));
    KVSTAR_RETURN_IF_ERROR(transformer.Forward(std::span<const int32_t>(&token, 1),
                                               static_cast<int64_t>(pos), *kv, LogitsMode::kLast,
                                               logits.data()));
    result.step_ms.push_back(static_cast<float>(step.Millis()));
    ++pos;
  }
  result.decode_seconds = watch.Seconds();
  result.kv = kv->Stats();
  return result;
}

}  // namespace kvstar
