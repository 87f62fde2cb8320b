// A compiled PCRE2 pattern with the matching rules of the tokenizers library's regex engine
// (Oniguruma): UTF-8, Unicode classes (\p{L}, \p{N}), and \s meaning exactly White_Space.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace kvstar::tokenizer_internal {

class Regex {
 public:
  // literal: match `pattern` as plain text (tokenizer.json {"String": ...} patterns).
  static StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern, bool literal);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  struct Match {
    size_t begin, end;
  };
  // Calls on_match for every non-overlapping leftmost-first non-empty match in text, in order.
  // Ill-formed UTF-8 bytes are never part of a match. Thread-safe.
  void ForEachMatch(std::string_view text, const std::function<void(Match)>& on_match) const;
  void FindAll(std::string_view text, std::vector<Match>* matches) const {
    matches->clear();
    ForEachMatch(text, [matches](Match m) { matches->push_back(m); });
  }

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  std::string pattern_;   // as rewritten for PCRE2
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

// Rewrites \s and \S (outside character classes) so that PCRE2 matches White_Space exactly:
// PCRE2's Unicode \s also accepts U+180E, which Oniguruma and Rust's regex do not.
std::string RewriteWhitespaceClasses(std::string_view pattern);

}  // namespace kvstar::tokenizer_internal
