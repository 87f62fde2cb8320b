// tokenizer.json "pre_tokenizer": splits text into the words that BPE encodes independently.
// Supported: Split (Regex or String pattern, any behavior, invert), ByteLevel (add_prefix_space,
// use_regex with GPT-2's pattern) and a Sequence of them.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tokenizer/regex.h"

namespace kvstar::tokenizer_internal {

// GPT-2's pattern, applied by ByteLevel when use_regex is true.
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class PreTokenizer {
 public:
  // j is the "pre_tokenizer" value (null: the whole text is one word).
  static StatusOr<PreTokenizer> FromJson(const nlohmann::json& j);
  PreTokenizer() = default;

  // Calls emit for every non-empty word of text, in order. Thread-safe.
  void Split(std::string_view text, const std::function<void(std::string_view)>& emit) const;

  bool has_byte_level() const { return has_byte_level_; }

 private:
  enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
  struct Step {
    // Split: regex + behavior + invert. ByteLevel: optional prefix space, then (use_regex) an
    // Isolated split with GPT-2's pattern.
    std::shared_ptr<const Regex> regex;  // null: no split
    Behavior behavior = Behavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;
  };
  Status AddStep(const nlohmann::json& j);
  void Run(size_t step, std::string_view text,
           const std::function<void(std::string_view)>& emit) const;

  std::vector<Step> steps_;
  bool has_byte_level_ = false;
};

}  // namespace kvstar::tokenizer_internal
