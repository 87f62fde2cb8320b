// The embedding API (include/kvstar/kvstar.h) over the engine: Engine on the CPU, and on CUDA
// Engine (the weights read on the CPU) plus cuda::CudaRunner, as `kvstar generate` runs them.
#include "kvstar/kvstar.h"

#include <algorithm>
#include <mutex>
#include <utility>

#include "engine/engine.h"
#include "kv/kvstar_config.h"
#include "tokenizer/tokenizer.h"
#ifdef KVSTAR_HAVE_CUDA
#include "engine/cuda/cuda_runner.h"
#endif

namespace kvstar {

struct Llm::Impl {
  LlmOptions options;
  std::unique_ptr<Engine> engine;
#ifdef KVSTAR_HAVE_CUDA
  std::unique_ptr<cuda::CudaRunner> cuda;
  std::mutex cuda_mu;  // the runner takes one request at a time
#endif
};

namespace {

// LlmOptions -> EngineOptions for the engine that reads the weights (and on cpu, decodes).
StatusOr<EngineOptions> ToEngineOptions(const LlmOptions& o) {
  const bool cuda = o.device == "cuda";
  if (!cuda && o.device != "cpu") {
    return InvalidArgument("LlmOptions::device '%s': expected cpu or cuda", o.device.c_str());
  }
#ifndef KVSTAR_HAVE_CUDA
  if (cuda) {
    return InvalidArgument(
        "LlmOptions::device cuda: this build has the CPU backend only (build with "
        "-DKVSTAR_CUDA=ON)");
  }
#endif
  EngineOptions e;
  e.threads = o.threads;
  if (o.kv_dtype == "bf16") {
    e.kv_dtype = DType::kBF16;
  } else if (o.kv_dtype == "f32") {
    e.kv_dtype = DType::kF32;
  } else {
    return InvalidArgument("LlmOptions::kv_dtype '%s': expected bf16 or f32", o.kv_dtype.c_str());
  }
  e.block_tokens = o.block_tokens;
  e.prefill_chunk = o.prefill_chunk;
  e.mode = o.mode;
  e.store = o.store;
  if (o.retrieval_threads < 0) {
    return InvalidArgument("LlmOptions::retrieval_threads must be >= 0, got %d",
                           o.retrieval_threads);
  }
  e.retrieval_threads = o.retrieval_threads > 0 ? o.retrieval_threads : (cuda ? 0 : 1);
  if (!o.kvstar_settings.empty()) {
    KVSTAR_ASSIGN_OR_RETURN(e.kvstar,
                            ParseKvstarConfig(o.kvstar_settings, "LlmOptions::kvstar_settings"));
  }
  if (o.retrieval_device != "cpu" && o.retrieval_device != "gpu") {
    return InvalidArgument("LlmOptions::retrieval_device '%s': expected cpu or gpu",
                           o.retrieval_device.c_str());
  }
  if (o.host_tier != "inclusive" && o.host_tier != "exclusive") {
    return InvalidArgument("LlmOptions::host_tier '%s': expected inclusive or exclusive",
                           o.host_tier.c_str());
  }
  const bool gpu_scoring = o.retrieval_device == "gpu";
  const bool exclusive = o.host_tier == "exclusive";
  if (!cuda) {
    if (gpu_scoring || exclusive) {
      return InvalidArgument(
          "LlmOptions::%s: a CUDA engine option (the CPU engine scores blocks on CPU threads "
          "and keeps offloaded blocks in its store)",
          gpu_scoring ? "retrieval_device gpu" : "host_tier exclusive");
    }
    KVSTAR_RETURN_IF_ERROR(ValidateEngineOptions(e));
    return e;
  }
  e.gpu_scoring = gpu_scoring;
  e.exclusive_host = exclusive;
#ifdef KVSTAR_HAVE_CUDA
  // Before any weights are read; Engine::Load (dense, the reader of the weights) checks the rest.
  KVSTAR_RETURN_IF_ERROR(cuda::CudaRunner::CheckOptions(o.mode, e));
#endif
  return e;
}

}  // namespace

Llm::Llm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Llm::~Llm() = default;

StatusOr<std::unique_ptr<Llm>> Llm::Open(const std::string& model_dir, const LlmOptions& options) {
  KVSTAR_ASSIGN_OR_RETURN(EngineOptions eo, ToEngineOptions(options));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  const bool cuda = options.device == "cuda";
  EngineOptions reader = eo;
  if (cuda) reader.mode = "dense";
  KVSTAR_ASSIGN_OR_RETURN(impl->engine, Engine::Load(model_dir, reader, options.on_load_progress));
  if (impl->engine->tokenizer() == nullptr) {
    return NotFound("%s: no tokenizer.json (the text API needs the model's tokenizer)",
                    model_dir.c_str());
  }
#ifdef KVSTAR_HAVE_CUDA
  if (cuda) {
    KVSTAR_ASSIGN_OR_RETURN(impl->cuda, cuda::CudaRunner::Create(*impl->engine, options.mode, eo,
                                                                 options.on_load_progress));
  }
#endif
  return std::unique_ptr<Llm>(new Llm(std::move(impl)));
}

StatusOr<TextResult> Llm::Complete(const TextRequest& request) {
  Engine& e = *impl_->engine;
  GenerateRequest g;
  g.prompt = request.prompt.empty() ? request.prompt_tokens : Encode(request.prompt);
  if (g.prompt.empty()) return InvalidArgument("TextRequest: the prompt is empty");
  g.max_new_tokens = request.max_new_tokens;
  g.sampling = {.temperature = request.temperature,
                .top_k = request.top_k,
                .top_p = request.top_p,
                .seed = request.seed};
  g.cancel = request.cancel;
  g.on_prefill_progress = request.on_prefill_progress;
  StreamDecoder stream(*e.tokenizer(), /*skip_special=*/true);
  const std::vector<int32_t> eos = e.eos_ids();
  std::string text;
  auto emit = [&](const std::string& piece) {
    if (piece.empty()) return;
    text += piece;
    if (request.on_text) request.on_text(piece);
  };
  g.on_token = [&](int32_t id) {
    // A stop token ends the request and adds no text (the CLI drops it the same way).
    if (std::find(eos.begin(), eos.end(), id) != eos.end()) return;
    emit(stream.Push(id));
  };
  StatusOr<GenerateResult> r = Internal("not run");
#ifdef KVSTAR_HAVE_CUDA
  if (impl_->cuda) {
    std::lock_guard<std::mutex> lock(impl_->cuda_mu);
    r = impl_->cuda->Generate(g);
  } else {
    r = e.Generate(g);
  }
#else
  r = e.Generate(g);
#endif
  if (!r.ok()) return r.status();
  emit(stream.Flush());
  TextResult out;
  out.prefill_tokens_per_second = r->prefill_tokens_per_second();
  out.decode_tokens_per_second = r->decode_tokens_per_second();
  out.text = std::move(text);
  out.tokens = std::move(r->tokens);
  out.finish_reason = r->finish_reason;
  out.prompt_tokens = r->prompt_tokens;
  out.reused_prompt_tokens = r->reused_prompt_tokens;
  out.prefill_seconds = r->prefill_seconds;
  out.decode_seconds = r->decode_seconds;
  out.device_kv_bytes = r->kv.device_bytes;
  out.kv_bytes_loaded = r->kv.bytes_loaded;
  return out;
}

std::vector<int32_t> Llm::Encode(std::string_view text, bool add_special) const {
  return impl_->engine->tokenizer()->Encode(text, add_special);
}

std::string Llm::Decode(const std::vector<int32_t>& ids) const {
  return impl_->engine->tokenizer()->Decode(ids, /*skip_special=*/true);
}

const LlmOptions& Llm::options() const { return impl_->options; }

std::string Llm::device_name() const {
#ifdef KVSTAR_HAVE_CUDA
  if (impl_->cuda) return impl_->cuda->device_name();
#endif
  return "cpu";
}

size_t Llm::vocab_size() const { return impl_->engine->config().vocab_size; }

size_t Llm::max_position() const {
  return static_cast<size_t>(impl_->engine->config().max_position_embeddings);
}

}  // namespace kvstar
