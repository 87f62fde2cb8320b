// tokenizer.json "added_tokens": special and user-added tokens that are cut out of the text
// before normalization and pre-tokenization, so BPE never merges across them.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace kvstar::tokenizer_internal {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool single_word = false;  // only matches where not inside a word
  bool lstrip = false;       // swallows the whitespace on its left
  bool rstrip = false;       // swallows the whitespace on its right
  bool normalized = false;   // matched on normalized text (else on the raw text)
};

// Leftmost-longest matching of a set of added tokens, with tokenizers' single_word / lstrip /
// rstrip rules (AddedVocabulary::find_matches).
class AddedTokenMatcher {
 public:
  // `patterns[i]` is what token i matches (its content, normalized where the token says so).
  void Build(const std::vector<const AddedToken*>& tokens, std::vector<std::string> patterns);
  bool empty() const { return tokens_.empty(); }

  // Cuts text into pieces: emit(piece, id) with id >= 0 for a token (the piece then includes
  // stripped whitespace), -1 for text between tokens. Empty pieces are not emitted.
  void Split(std::string_view text,
             const std::function<void(std::string_view, int32_t)>& emit) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // byte -> node index
    int32_t token = -1;                                 // index in tokens_ ending here
  };
  // Longest token starting at text[pos]: its index, or -1.
  int32_t LongestAt(std::string_view text, size_t pos, size_t* len) const;

  std::vector<Node> nodes_;  // nodes_[0] is the root
  std::vector<const AddedToken*> tokens_;
  std::array<bool, 256> first_byte_{};
};

}  // namespace kvstar::tokenizer_internal
