// kvstar eval: RULER-style long-context accuracy of a decode mode on a model directory.
// kvstar task: print one generated task prompt (to look at, or to feed to generate).
#include <cstdio>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "base/file_util.h"
#include "base/progress.h"
#include "cli_common.h"
#include "command.h"
#include "engine/engine.h"
#include "eval/runner.h"
#include "json_plot.h"

namespace kvstar::cli {
namespace {

struct EvalFlags {
  std::string model;
  std::string tasks = "niah_single,niah_multikey,niah_multivalue,niah_multiquery,passkey";
  std::string lengths = "4096";
  size_t samples = 10;
  uint64_t seed = 42;
  std::string json_file;
  std::string plot;  // PNG/SVG: accuracy against length, one line per task
  std::string haystack;
  std::string device = "cpu";
  EngineFlags engine;
};

using RequestFn = std::function<StatusOr<GenerateResult>(const GenerateRequest&)>;

// `run` answers one request (the CPU engine, or the CUDA runner).
eval::GenerateFn MakeGenerateFn(Engine& engine, RequestFn run,
                                std::vector<GenerateResult>* kv_reports) {
  return [&engine, run, kv_reports](const std::string& prompt,
                                    size_t max_new) -> StatusOr<eval::GenerateResult> {
    GenerateRequest req;
    req.prompt = engine.tokenizer()->Encode(prompt, /*add_special=*/true);
    req.max_new_tokens = max_new;
    KVSTAR_ASSIGN_OR_RETURN(GenerateResult r, run(req));
    std::vector<int32_t> out = r.tokens;
    if (r.finish_reason == "eos" && !out.empty()) out.pop_back();
    eval::GenerateResult g;
    g.text = engine.tokenizer()->Decode(out, /*skip_special=*/true);
    g.prompt_tokens = r.prompt_tokens;
    // The first generated token comes from the prefill's logits; decode_seconds covers the rest.
    g.generated_tokens = r.tokens.empty() ? 0 : r.tokens.size() - 1;
    g.prefill_seconds = r.prefill_seconds;
    g.decode_seconds = r.decode_seconds;
    if (kv_reports != nullptr) kv_reports->push_back(std::move(r));
    return g;
  };
}

int RunEvalCommand(const EvalFlags& f) {
  std::string mode;
  auto options = FinishDeviceEngineOptions(f.engine, f.device, &mode);
  if (!options.ok()) return ReportError(options.status());
  eval::EvalOptions eo;
  auto tasks = eval::ParseTaskList(f.tasks);
  if (!tasks.ok()) return ReportError(tasks.status().WithContext("--tasks"));
  auto lengths = eval::ParseLengthList(f.lengths);
  if (!lengths.ok()) return ReportError(lengths.status().WithContext("--lengths"));
  if (f.samples == 0) return ReportError(InvalidArgument("--samples must be >= 1"));
  eo.tasks = *tasks;
  eo.lengths = *lengths;
  eo.samples = f.samples;
  eo.seed = f.seed;
  eo.mode = mode;
  eo.haystack_path = f.haystack;
  eo.settings = {{"model", f.model},
                 {"threads", options->threads},
                 {"kv_dtype", DTypeName(options->kv_dtype)},
                 {"block_tokens", options->block_tokens}};
  eo.settings["device"] = f.device;
  if (mode == "kvstar") {
    eo.settings["kvstar"] = nlohmann::json::parse(options->kvstar.ToJson());
    eo.settings["store"] = options->store;
  }

  auto engine = Engine::Load(f.model, *options);
  if (!engine.ok()) return ReportError(engine.status());
  Engine& e = **engine;
  for (size_t len : eo.lengths) {
    if (len >= static_cast<size_t>(e.config().max_position_embeddings)) {
      return ReportError(OutOfRange("--lengths: %zu tokens exceed the model's %lld positions", len,
                                    static_cast<long long>(e.config().max_position_embeddings)));
    }
  }
  std::vector<GenerateResult> kv_reports;
  Progress progress("eval", eo.tasks.size() * eo.lengths.size() * eo.samples);
  auto count = [&e](std::string_view text) { return e.tokenizer()->Encode(text).size(); };
  RequestFn run = [&e](const GenerateRequest& r) { return e.Generate(r); };
#ifdef KVSTAR_HAVE_CUDA
  std::unique_ptr<cuda::CudaRunner> runner;
  if (f.device == "cuda") {
    auto created = CreateCudaRunner(e, mode, *options, /*show_progress=*/true);
    if (!created.ok()) return ReportError(created.status());
    runner = std::move(*created);
    run = [&runner](const GenerateRequest& r) { return runner->Generate(r); };
  }
#endif
  auto report = eval::RunEval(eo, count, MakeGenerateFn(e, run, &kv_reports),
                              [&](const eval::EvalProgress& p) { progress.Update(p.done); });
  progress.Finish();
  if (!report.ok()) return ReportError(report.status());
  std::printf("%s", eval::FormatTable(*report).c_str());
  if (!f.json_file.empty()) {
    nlohmann::json j = eval::ToJson(*report);
    // KV statistics summed over the samples (device bytes: the largest seen).
    size_t device_max = 0, loaded = 0, steps = 0, late = 0, swaps = 0;
    double retrieval_ms = 0, wait_ms = 0;
    size_t retrievals = 0, async_retrievals = 0;
    double sync_wait_ms = 0;
    for (const auto& r : kv_reports) {
      device_max = std::max(device_max, r.kv.device_bytes);
      loaded += r.kv.bytes_loaded;
      steps += r.step_ms.size();
      late += r.kv.late_swaps;
      swaps += r.kv.swaps;
      retrieval_ms += r.kv.retrieval_ms_total;
      wait_ms += r.kv.decode_wait_ms;
      retrievals += r.kv.retrievals;
      async_retrievals += r.kv.async_retrievals;
      sync_wait_ms += r.kv.sync_wait_ms;
    }
    j["kv"] = {{"device_bytes_max", device_max},
               {"bytes_loaded_per_step", steps ? static_cast<double>(loaded) / steps : 0.0},
               {"retrievals", retrievals},
               {"retrieval_ms_mean",
                async_retrievals ? retrieval_ms / static_cast<double>(async_retrievals) : 0.0},
               {"decode_wait_ms", wait_ms},
               {"sync_wait_ms", sync_wait_ms},
               {"swaps", swaps},
               {"late_swaps", late}};
    Status s = WriteStringToFile(f.json_file, DumpJson(j) + "\n");
    if (!s.ok()) return ReportError(s.WithContext("--json"));
  }
  if (!f.plot.empty()) {
    // After --json, so that a plot that cannot be written loses no result.
    LinePlot plot;
    plot.title = "kvstar eval: " + mode + " on " + f.model;
    plot.x_label = "prompt length (tokens)";
    plot.y_label = "accuracy";
    plot.log_x = true;
    RecordPlotSpec spec;
    spec.x = "length";
    spec.y = "accuracy";
    spec.group_by = {"task"};
    spec.group_names = {""};
    Status s =
        PlotRecordsToFile(std::move(plot), eval::ToJson(*report)["results"], spec, "eval", f.plot);
    if (!s.ok()) return ReportError(s.WithContext("--plot"));
    std::printf("plot: %s\n", f.plot.c_str());
  }
  return 0;
}

void AddEval(CLI::App& root, int* exit_code) {
  auto f = std::make_shared<EvalFlags>();
  CLI::App* cmd = root.add_subcommand(
      "eval",
      "Long-context accuracy: RULER-style synthetic tasks generated from a seed (needles in a\n"
      "haystack, passkey, variable tracking, common/frequent words), answered greedily by the\n"
      "chosen decode mode and scored like RULER. Prints a task x length table.");
  cmd->add_option("--model", f->model, "Model directory")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--tasks", f->tasks,
                  "Comma-separated tasks or 'all': niah_single, niah_single_text, niah_multikey, "
                  "niah_multivalue, niah_multiquery, vt, cwe, fwe, passkey");
  cmd->add_option("--lengths", f->lengths,
                  "Comma-separated prompt lengths in tokens, e.g. 4096,8k");
  cmd->add_option("--samples", f->samples,
                  "Samples per task and length (needle depths spread evenly)");
  cmd->add_option("--seed", f->seed, "Seed of the task generator");
  cmd->add_option("--json", f->json_file,
                  "Write the full report (per task and length, and per sample) to this file");
  cmd->add_option("--plot", f->plot,
                  "Also draw accuracy against prompt length, one line per task, to this PNG (or "
                  "SVG when it ends in .svg)");
  cmd->add_option("--haystack", f->haystack,
                  "Plain-text file of natural text for the *_text haystacks");
  AddDeviceFlag(cmd, &f->device);
  AddEngineFlags(cmd, &f->engine);
  cmd->callback([f, exit_code] { *exit_code = RunEvalCommand(*f); });
}

struct TaskFlags {
  std::string model;
  std::string task = "niah_single";
  size_t length = 4096;
  uint64_t seed = 42;
  size_t index = 0;
  size_t samples = 1;
  bool json = false;
};

int RunTaskCommand(const TaskFlags& f) {
  auto tok = Tokenizer::FromFile(f.model + "/tokenizer.json");
  if (!tok.ok()) return ReportError(tok.status());
  auto text = eval::LoadHaystackText(eval::DefaultHaystackPath());
  if (!text.ok()) return ReportError(text.status());
  const Tokenizer& t = **tok;
  eval::TaskGenerator gen(&*text, [&t](std::string_view s) { return t.Encode(s).size(); });
  auto sample = gen.Generate(f.task, f.length, f.seed, f.index, std::max<size_t>(1, f.samples));
  if (!sample.ok()) return ReportError(sample.status());
  if (f.json) {
    nlohmann::json j = {{"id", sample->id},
                        {"task", sample->task},
                        {"prompt", sample->prompt},
                        {"answers", sample->answers},
                        {"depth", sample->depth},
                        {"prompt_tokens", sample->prompt_tokens},
                        {"max_new_tokens", sample->max_new_tokens}};
    std::printf("%s\n", DumpJson(j).c_str());
  } else {
    std::printf("%s", sample->prompt.c_str());
    std::string answers;
    for (const auto& a : sample->answers) answers += (answers.empty() ? "" : ", ") + a;
    std::fprintf(stderr, "[%s: %zu tokens, depth %.2f, expected: %s]\n", sample->id.c_str(),
                 sample->prompt_tokens, sample->depth, answers.c_str());
  }
  return 0;
}

void AddTask(CLI::App& root, int* exit_code) {
  auto f = std::make_shared<TaskFlags>();
  CLI::App* cmd = root.add_subcommand(
      "task",
      "Print one task prompt of the eval suite (stdout) and its expected answer (stderr), e.g.\n"
      "to answer it with `kvstar generate --prompt-file`.");
  cmd->add_option("--model", f->model, "Model directory (its tokenizer measures the length)")
      ->required()
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--task", f->task, "Task name (see kvstar eval --help)");
  cmd->add_option("--length", f->length, "Prompt length in tokens")->check(AtLeastOne());
  cmd->add_option("--seed", f->seed, "Seed");
  cmd->add_option("--index", f->index, "Sample index (the needle depth is index / (samples - 1))");
  cmd->add_option("--samples", f->samples, "Number of samples the depth is spread over");
  cmd->add_flag("--json", f->json, "Print prompt, answers and depth as JSON");
  cmd->callback([f, exit_code] { *exit_code = RunTaskCommand(*f); });
}

}  // namespace

KVSTAR_COMMAND(eval, 30, AddEval);
KVSTAR_COMMAND(task, 35, AddTask);

}  // namespace kvstar::cli
