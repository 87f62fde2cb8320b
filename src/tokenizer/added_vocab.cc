#include "tokenizer/added_vocab.h"

#include <algorithm>

#include "tokenizer/unicode.h"

namespace kvstar::tokenizer_internal {

namespace {

bool IsWordChar(char32_t c) { return c == '_' || IsAlphanumeric(c); }

// Start of the run of whitespace that ends s (s.size() when there is none).
size_t WhitespaceRunStart(std::string_view s) {
  size_t end = s.size();
  char32_t c;
  size_t len;
  while (end > 0 && LastUtf8Char(s, end, &c, &len) && IsWhiteSpace(c)) end -= len;
  return end;
}

// Length of the run of whitespace that starts s.
size_t WhitespaceRunLength(std::string_view s) {
  size_t i = 0;
  char32_t c;
  while (i < s.size()) {
    const size_t len = Utf8CharLen(s, i, &c);
    if (len == 0 || !IsWhiteSpace(c)) break;
    i += len;
  }
  return i;
}

}  // namespace

void AddedTokenMatcher::Build(const std::vector<const AddedToken*>& tokens,
                              std::vector<std::string> patterns) {
  nodes_.assign(1, Node{});
  tokens_.clear();
  first_byte_.fill(false);
  for (size_t t = 0; t < tokens.size(); ++t) {
    const std::string& p = patterns[t];
    if (p.empty()) continue;  // tokenizers skips empty tokens too
    const auto index = static_cast<int32_t>(tokens_.size());
    tokens_.push_back(tokens[t]);
    first_byte_[static_cast<uint8_t>(p[0])] = true;
    int32_t node = 0;
    for (char ch : p) {
      const auto b = static_cast<uint8_t>(ch);
      auto& children = nodes_[node].children;
      const auto it = std::find_if(children.begin(), children.end(),
                                   [b](const auto& c) { return c.first == b; });
      if (it != children.end()) {
        node = it->second;
      } else {
        const auto child = static_cast<int32_t>(nodes_.size());
        children.push_back({b, child});
        nodes_.push_back(Node{});
        node = child;
      }
    }
    // Two tokens with the same text: the first one listed wins.
    if (nodes_[node].token < 0) nodes_[node].token = index;
  }
}

int32_t AddedTokenMatcher::LongestAt(std::string_view text, size_t pos, size_t* len) const {
  int32_t best = -1;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto b = static_cast<uint8_t>(text[i]);
    const auto& children = nodes_[node].children;
    const auto it =
        std::find_if(children.begin(), children.end(), [b](const auto& c) { return c.first == b; });
    if (it == children.end()) break;
    node = it->second;
    if (nodes_[node].token >= 0) {
      best = nodes_[node].token;
      *len = i + 1 - pos;
    }
  }
  return best;
}

void AddedTokenMatcher::Split(std::string_view text,
                              const std::function<void(std::string_view, int32_t)>& emit) const {
  size_t piece_start = 0;  // end of what has been emitted
  size_t pos = 0;          // where the search for the next match resumes
  while (pos < text.size()) {
    size_t len = 0;
    int32_t index = -1;
    size_t start = pos;
    for (; start < text.size(); ++start) {
      if (!first_byte_[static_cast<uint8_t>(text[start])]) continue;
      index = LongestAt(text, start, &len);
      if (index >= 0) break;
    }
    if (index < 0) break;
    size_t stop = start + len;
    pos = stop;
    const AddedToken& tok = *tokens_[index];
    if (tok.single_word) {
      char32_t c;
      size_t clen;
      const bool word_before = start > 0 && LastUtf8Char(text, start, &c, &clen) && IsWordChar(c);
      const bool word_after =
          stop < text.size() && Utf8CharLen(text, stop, &c) > 0 && IsWordChar(c);
      if (word_before || word_after) continue;
    }
    if (tok.lstrip) {
      // Whitespace already taken by the previous token's rstrip stays with it.
      start = std::max(WhitespaceRunStart(text.substr(0, start)), piece_start);
    }
    if (tok.rstrip) stop += WhitespaceRunLength(text.substr(stop));
    if (start > piece_start) emit(text.substr(piece_start, start - piece_start), -1);
    emit(text.substr(start, stop - start), tok.id);
    piece_start = stop;
    pos = stop;
  }
  if (piece_start < text.size()) emit(text.substr(piece_start), -1);
}

}  // namespace kvstar::tokenizer_internal
