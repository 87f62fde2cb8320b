// Hugging Face tokenizer.json byte-level BPE (the Qwen2 / Llama-3 family).
//
// Encode follows the tokenizers library step by step: added tokens are cut out first (longest
// match, honouring single_word / lstrip / rstrip), the text between them is normalized
// (NFC etc., through ICU), pre-tokenized (Split regexes and ByteLevel through PCRE2 with the same
// Unicode classes as the library's engine) and each word is BPE-merged by rank.
//
// Checked against tokenizers 0.23 (src/tokenizer/testdata): identical ids on the golden
// Qwen2 / Llama-3 style tokenizers and on hand-built configurations. Like the library, added
// tokens are numbered by re-adding them in order (the ids listed in the file only matter where
// they agree, which they do in published files).
//
// Deviations:
//  - Input need not be valid UTF-8. Ill-formed bytes can match no regex, so each becomes a word
//    of its own and encodes as its byte token; Decode(Encode(x)) == Normalize(x) for every byte
//    string.
//  - Decode returns the exact bytes of the tokens (tokenizers replaces ill-formed UTF-8 by
//    U+FFFD). StreamDecoder emits only valid UTF-8, replacing ill-formed bytes by U+FFFD.
//  - NFC comes from ICU with its Unicode version; the library's normalizer carries older tables.
//    They differ only on characters whose combining class changed since (e.g. U+1715).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tokenizer/added_vocab.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/unicode.h"

namespace kvstar {

class Tokenizer {
 public:
  // Errors name the file and the problem: a missing or malformed field, a model type other than
  // BPE, a merge that refers to an unknown token, an unsupported normalizer / pre-tokenizer /
  // decoder / post-processor.
  static StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path);
  // `source` names the text in error messages.
  static StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view json,
                                                       std::string_view source = "tokenizer.json");

  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // add_special: add what the post-processor adds for a single sequence (Llama-3: BOS
  // <|begin_of_text|> in front; Qwen2: nothing). Thread-safe.
  std::vector<int32_t> Encode(std::string_view text, bool add_special = false) const;
  // Ids outside the vocabulary are skipped. skip_special: leave out special added tokens.
  std::string Decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // The normalizer alone (identity when tokenizer.json has none). Decode(Encode(x)) equals
  // Normalize(x) whenever x contains no added token with lstrip / rstrip.
  std::string Normalize(std::string_view text) const;

  // The exact bytes one token decodes to (the content for added tokens); empty for an unknown id.
  std::string_view TokenBytes(int32_t id) const;
  // The token's spelling in tokenizer.json (byte-level form, e.g. "Ġthe"); empty when unknown.
  std::string_view IdToToken(int32_t id) const;
  // Added tokens first, then the vocabulary, both in tokenizer.json spelling.
  std::optional<int32_t> TokenToId(std::string_view token) const;

  // Largest id (vocabulary or added token) + 1.
  size_t vocab_size() const { return id_to_token_.size(); }
  // An added token marked special (chat markers, BOS/EOS, reserved tokens).
  bool IsSpecial(int32_t id) const;
  // Ids of special added tokens that end a sequence by their name (<|endoftext|>, <|im_end|>,
  // <|eot_id|>, <|eom_id|>, <|end_of_text|>, </s>, ...). Candidates only: config.json and
  // generation_config.json have the final word.
  std::vector<int32_t> eos_candidates() const;

  // From the post-processor: whether Encode(text, true) starts with a BOS, and which.
  bool add_bos() const { return bos_id_.has_value(); }
  std::optional<int32_t> bos_id() const { return bos_id_; }
  // Everything the post-processor puts around a single sequence.
  const std::vector<int32_t>& special_prefix() const { return special_prefix_; }
  const std::vector<int32_t>& special_suffix() const { return special_suffix_; }

  const std::vector<tokenizer_internal::AddedToken>& added_tokens() const { return added_; }

 private:
  Tokenizer() = default;
  Status Init(const std::string& json_text);
  Status InitAddedTokens(const nlohmann::json& j);
  void AssignAddedTokenIds();
  Status InitNormalizer(const nlohmann::json& j);
  Status AddPostProcessor(const nlohmann::json& j);
  Status CheckDecoder(const nlohmann::json& j);
  void EncodeText(std::string_view text, std::vector<int32_t>* out) const;
  void EncodeNormalized(std::string_view text, std::vector<int32_t>* out) const;

  tokenizer_internal::BpeModel bpe_;
  tokenizer_internal::Normalizer normalizer_;
  tokenizer_internal::PreTokenizer pre_tokenizer_;
  std::vector<tokenizer_internal::AddedToken> added_;
  tokenizer_internal::AddedTokenMatcher raw_matcher_;         // tokens with normalized=false
  tokenizer_internal::AddedTokenMatcher normalized_matcher_;  // tokens with normalized=true

  std::vector<std::string> id_to_token_;  // [vocab_size] tokenizer.json spelling
  std::vector<std::string> id_to_bytes_;  // [vocab_size] decoded bytes
  std::vector<uint8_t> id_flags_;         // [vocab_size] kKnown | kSpecial
  tokenizer_internal::BytesToId vocab_token_to_id_;
  tokenizer_internal::BytesToId added_token_to_id_;
  std::optional<int32_t> bos_id_;
  std::vector<int32_t> special_prefix_;
  std::vector<int32_t> special_suffix_;
};

// Turns ids generated one at a time into text that can be shown at once: the bytes of a
// character split over several tokens are held back until the character is complete. Ill-formed
// bytes come out as U+FFFD. Concatenating every Push and the final Flush gives
// Decode(ids) whenever that is valid UTF-8.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}

  // The text that this id completes (possibly empty).
  std::string Push(int32_t id);
  // What is still held back, as U+FFFD when incomplete; the decoder is then empty again.
  std::string Flush();
  // Bytes held back, waiting for the rest of a character.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace kvstar
