// RULER-style synthetic long-context tasks, generated from a seed: the prompts of `kvstar eval`.
//
// A sample's prompt is plain completion text: context, question, answer prefix. The model is
// expected to continue with " <answer>" and stop. Lengths are in tokens of the model's
// tokenizer, counted through a callback so that this module does not depend on the tokenizer.
// The wording here is held out from the demo model's training data (tools/tasks.py) on purpose:
// the score then measures retrieval, not memorised phrasing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"

namespace kvstar::eval {

// Number of tokens of a piece of text in the model's tokenizer (no special tokens added).
using CountTokensFn = std::function<size_t(std::string_view)>;

struct Sample {
  std::string id;  // "<task>/<target_length>/<index>"
  std::string task;
  size_t target_length = 0;          // prompt + answer budget, in tokens
  double depth = 0;                  // where the (queried) needle sits in the context, 0 = start
  std::string prompt;                // context + question + answer prefix (no trailing space)
  std::vector<std::string> answers;  // every expected string
  size_t max_new_tokens = 0;
  size_t prompt_tokens = 0;  // as counted by the callback
};

// The task names, in table order: niah_single, niah_single_text, niah_multikey, niah_multivalue,
// niah_multiquery, vt, cwe, fwe, passkey.
const std::vector<std::string>& TaskNames();
// InvalidArgument naming the bad task and listing the valid ones.
Status ValidateTask(std::string_view task);
// Generation budget of a task's answer, in tokens.
size_t MaxNewTokens(std::string_view task);

// Natural text for the haystacks: one sentence (verse) a line, plus the distinct lowercase words
// of 3..8 letters in sorted order (keys and the common-words task draw from them).
struct HaystackText {
  std::vector<std::string> sentences;
  std::vector<std::string> words;
};
StatusOr<HaystackText> LoadHaystackText(const std::string& path);
HaystackText HaystackFromLines(const std::vector<std::string>& lines);
// $KVSTAR_EVAL_TEXT if set, else the committed New Testament text of the source tree
// (src/eval/data/kjv_nt.txt, written by scripts/make_haystack.sh --eval).
std::string DefaultHaystackPath();

// Deterministic given (seed, task, target_length, index): a sample does not depend on which
// other tasks or samples are generated, nor on the platform's standard library.
class TaskGenerator {
 public:
  // `text` must outlive the generator.
  TaskGenerator(const HaystackText* text, CountTokensFn count);

  // Sample `index` of `num_samples`: depth = index / (num_samples - 1) (0.5 for one sample).
  StatusOr<Sample> Generate(std::string_view task, size_t target_length, uint64_t seed,
                            size_t index, size_t num_samples);

 private:
  struct Built {
    std::string prompt;
    std::vector<std::string> answers;
  };
  class Rng;
  size_t Count(const std::string& piece);
  std::vector<std::string> Noise(size_t budget);
  std::vector<std::string> Text(Rng& rng, size_t budget);
  std::string Key(Rng& rng);
  StatusOr<Built> Build(std::string_view task, Rng& rng, size_t budget, double depth);
  StatusOr<Built> Niah(std::string_view task, Rng& rng, size_t budget, double depth);
  StatusOr<Built> Passkey(Rng& rng, size_t budget, double depth);
  StatusOr<Built> VariableTracking(Rng& rng, size_t budget, double depth);
  StatusOr<Built> CommonWords(Rng& rng, size_t budget);
  StatusOr<Built> FrequentWords(Rng& rng, size_t budget);

  const HaystackText* text_;
  CountTokensFn count_;
  std::unordered_map<std::string, size_t> cache_;  // piece -> tokens; looked up, never iterated
};

}  // namespace kvstar::eval
