// Runs the task suite against any text generator and reports accuracy and speed per
// (task, length). Knows nothing of the engine: `kvstar eval` passes a GenerateFn that wraps it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "eval/tasks.h"

namespace kvstar::eval {

struct GenerateResult {
  std::string text;  // generated continuation, without the end-of-text token
  size_t prompt_tokens = 0, generated_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};
// Greedy completion of `prompt` with at most `max_new_tokens` tokens.
using GenerateFn =
    std::function<StatusOr<GenerateResult>(const std::string& prompt, size_t max_new_tokens)>;

struct EvalOptions {
  std::vector<std::string> tasks;  // empty: all
  std::vector<size_t> lengths = {4096};
  size_t samples = 10;  // per (task, length)
  uint64_t seed = 42;
  std::string mode = "dense";                          // decode mode label, reported as given
  nlohmann::json settings = nlohmann::json::object();  // reported as given (model, flags...)
  std::string haystack_path;                           // empty: DefaultHaystackPath()
};

struct SampleRecord {
  std::string id, task;
  size_t length = 0;
  double depth = 0;
  std::vector<std::string> expected;
  std::string output;
  double score = 0;
  size_t prompt_tokens = 0, generated_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

struct CellResult {
  std::string task;
  size_t length = 0;
  size_t samples = 0;
  double accuracy = 0;  // mean score in [0, 1]
  // Total tokens over total seconds of the cell's samples (0 when no time was reported).
  double prefill_tokens_per_s = 0, decode_tokens_per_s = 0;
  std::vector<SampleRecord> records;
};

struct EvalReport {
  std::string mode;
  nlohmann::json settings;
  uint64_t seed = 0;
  std::vector<std::string> tasks;
  std::vector<size_t> lengths;
  std::vector<CellResult> cells;  // task-major, in the order of `tasks` x `lengths`
  double seconds = 0;
  const CellResult* Find(std::string_view task, size_t length) const;
};

struct EvalProgress {
  size_t done = 0, total = 0;
  const SampleRecord* last = nullptr;  // the sample just scored
};
using ProgressFn = std::function<void(const EvalProgress&)>;

// Parses "niah_single,vt" (or "all") into task names; InvalidArgument lists the valid ones.
StatusOr<std::vector<std::string>> ParseTaskList(std::string_view csv);
// Parses "2048,4096,8k" (k = 1024) into lengths.
StatusOr<std::vector<size_t>> ParseLengthList(std::string_view csv);

// Generates every sample, runs `generate` on it and scores the output. The first error from
// `generate` stops the run and is returned with the sample id as context.
StatusOr<EvalReport> RunEval(const EvalOptions& opts, const CountTokensFn& count,
                             const GenerateFn& generate, const ProgressFn& progress = nullptr);

// Task x length table of accuracy, then of prefill / decode tokens per second.
std::string FormatTable(const EvalReport& report);
// {"mode", "seed", "settings", "tasks", "lengths", "results": [{task, length, accuracy, samples,
//  mode, settings, prefill_tokens_per_s, decode_tokens_per_s}], "samples": [per-sample records]}
nlohmann::json ToJson(const EvalReport& report);

}  // namespace kvstar::eval
