// kvstar generate: answer a prompt with a Hugging Face model directory, streaming the text.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "base/file_util.h"
#include "base/progress.h"
#include "cli_common.h"
#include "command.h"
#include "engine/engine.h"

namespace kvstar::cli {
namespace {

struct GenerateFlags {
  std::string model;
  std::string prompt;
  std::string prompt_file;
  size_t max_tokens = 128;
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  bool json = false;
  std::string device = "cpu";
  EngineFlags engine;
};

int RunGenerate(const GenerateFlags& f) {
  const bool cuda = f.device == "cuda";
  std::string mode;
  auto options = FinishDeviceEngineOptions(f.engine, f.device, &mode);
  if (!options.ok()) return ReportError(options.status());
  std::string prompt = f.prompt;
  if (!f.prompt_file.empty()) {
    auto text = ReadFileToString(f.prompt_file);
    if (!text.ok()) return ReportError(text.status().WithContext("--prompt-file"));
    prompt = std::move(*text);
  }
  if (prompt.empty()) return ReportError(InvalidArgument("the prompt is empty"));

  const bool show_progress = !f.json;
  std::unique_ptr<Progress> load_progress;
  auto engine = Engine::Load(f.model, *options, [&](size_t done, size_t total) {
    if (!show_progress) return;
    if (!load_progress) load_progress = std::make_unique<Progress>("loading weights", total);
    load_progress->Update(done);
  });
  if (load_progress) load_progress->Finish();
  if (!engine.ok()) return ReportError(engine.status());
  Engine& e = **engine;

  GenerateRequest req;
  req.prompt = e.tokenizer()->Encode(prompt, /*add_special=*/true);
  req.max_new_tokens = f.max_tokens;
  req.sampling = {.temperature = f.temperature, .top_k = f.top_k, .top_p = f.top_p, .seed = f.seed};
  std::unique_ptr<Progress> prefill_progress;
  req.on_prefill_progress = [&](size_t done, size_t total) {
    if (!show_progress || total < 512) return;
    if (!prefill_progress) prefill_progress = std::make_unique<Progress>("prefill", total);
    prefill_progress->Update(done);
    if (done == total) prefill_progress->Finish();
  };
  StreamDecoder stream(*e.tokenizer(), /*skip_special=*/true);
  req.on_token = [&](int32_t token) {
    if (f.json) return;
    const std::string piece = stream.Push(token);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  };
  StatusOr<GenerateResult> result = Internal("not run");
  std::string device_name = "cpu";
  if (cuda) {
#ifdef KVSTAR_HAVE_CUDA
    auto runner = CreateCudaRunner(e, f.engine.mode, *options, show_progress);
    if (!runner.ok()) return ReportError(runner.status());
    device_name = (*runner)->device_name();
    result = (*runner)->Generate(req);
#endif
  } else {
    result = e.Generate(req);
  }
  if (!result.ok()) return ReportError(result.status());

  std::vector<int32_t> out_tokens = result->tokens;
  if (result->finish_reason == "eos" && !out_tokens.empty()) out_tokens.pop_back();
  const std::string text = e.tokenizer()->Decode(out_tokens, /*skip_special=*/true);
  if (f.json) {
    nlohmann::json j;
    j["model"] = f.model;
    j["mode"] = mode;
    j["device"] = device_name;
    j["text"] = text;
    j["finish_reason"] = result->finish_reason;
    j["prompt_tokens"] = result->prompt_tokens;
    j["generated_tokens"] = result->tokens.size();
    j["prefill_seconds"] = result->prefill_seconds;
    j["prefill_tokens_per_second"] = result->prefill_tokens_per_second();
    j["decode_seconds"] = result->decode_seconds;
    j["decode_tokens_per_second"] = result->decode_tokens_per_second();
    j["threads"] = e.threads().parallelism();
    j["reused_prompt_tokens"] = result->reused_prompt_tokens;
    EngineOptions report = *options;
    report.mode = mode;
    j["kv"] = KvReportJson(report, *result);
    std::printf("%s\n", DumpJson(j).c_str());
  } else {
    const std::string tail = stream.Flush();
    std::fwrite(tail.data(), 1, tail.size(), stdout);
    std::printf("\n");
    std::fprintf(stderr,
                 "[%s: %zu prompt tokens (%zu reused), prefill %.1f tok/s; %zu generated, decode "
                 "%.1f tok/s; device KV %.2f MiB; %s]\n",
                 mode.c_str(), result->prompt_tokens, result->reused_prompt_tokens,
                 result->prefill_tokens_per_second(), result->tokens.size(),
                 result->decode_tokens_per_second(), result->kv.device_bytes / 1048576.0,
                 result->finish_reason.c_str());
  }
  return 0;
}

void AddGenerate(CLI::App& root, int* exit_code) {
  auto f = std::make_shared<GenerateFlags>();
  CLI::App* cmd = root.add_subcommand(
      "generate",
      "Answer a prompt with a Hugging Face model directory (Qwen2 or Llama), streaming the text.\n"
      "The prompt is used as plain text (no chat template). Progress is shown on a terminal.");
  cmd->add_option("--model", f->model,
                  "Model directory: config.json, *.safetensors, tokenizer.json")
      ->required()
      ->check(CLI::ExistingDirectory);
  auto* prompt = cmd->add_option("--prompt", f->prompt, "Prompt text");
  auto* file = cmd->add_option("--prompt-file", f->prompt_file, "Read the prompt from a file");
  prompt->excludes(file);
  cmd->add_option("--max-tokens", f->max_tokens, "Maximum tokens to generate")
      ->check(CLI::Range(size_t{1}, size_t{1} << 20));
  cmd->add_option("--temperature", f->temperature, "Sampling temperature; 0 = greedy")
      ->check(CLI::Range(0.0f, 100.0f));
  cmd->add_option("--top-k", f->top_k, "Keep the k most likely tokens (0 = off)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", f->top_p, "Nucleus sampling mass in (0, 1]")
      ->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--seed", f->seed, "Sampling seed");
  cmd->add_flag("--json", f->json,
                "Print one JSON object (text, token counts, prefill and decode tokens/s) instead "
                "of streaming");
  AddDeviceFlag(cmd, &f->device);
  AddEngineFlags(cmd, &f->engine);
  cmd->callback([f, cmd, exit_code] {
    if (f->prompt.empty() && f->prompt_file.empty()) {
      *exit_code = ReportError(InvalidArgument("give --prompt TEXT or --prompt-file FILE"));
      return;
    }
    (void)cmd;
    *exit_code = RunGenerate(*f);
  });
}

}  // namespace

KVSTAR_COMMAND(generate, 10, AddGenerate);

}  // namespace kvstar::cli
