// Shared by the tokenizer tests: a tiny tokenizer.json built in code (byte vocabulary, a few
// merges, added tokens), texts that must round-trip, and a randomized round-trip check.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace kvstar::tokenizer_test {

using nlohmann::json;

inline constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Byte b has id b; then these merges, in rank order, with ids 256, 257, ...
inline const std::vector<std::pair<std::string, std::string>> kMerges = {
    {"Ġ", "t"},     // 256 Ġt
    {"h", "e"},     // 257 he
    {"Ġt", "he"},   // 258 Ġthe
    {"l", "l"},     // 259 ll
    {"ll", "o"},    // 260 llo
    {"he", "llo"},  // 261 hello
    {"Ġ", "hello"}  // 262 Ġhello
};
inline constexpr int32_t kSpaceT = 256, kHe = 257, kSpaceThe = 258, kLl = 259, kHello = 261,
                         kSpaceHello = 262;
inline constexpr int32_t kSpaceWorld = 263;  // in the vocabulary, reachable by no merge
// Added tokens follow the 264 vocabulary entries, in the order listed (the library's numbering).
inline constexpr int32_t kEndOfText = 264, kImEnd = 265, kImStart = 266, kMask = 267, kBos = 268;
inline constexpr int32_t kFirstExtra = 269;

struct Options {
  bool pair_merges = false;
  bool ignore_merges = false;
  bool nfc = false;
  bool bos_template = false;
  std::string pattern = kQwen2Pattern;
  json extra_added = json::array();
};

// The tiny tokenizer.json: byte b has id b, then the merges, then the added tokens.
json TinyTokenizerJson(const Options& o);
std::unique_ptr<Tokenizer> Tiny(const Options& o = {});
// The tiny tokenizer with another pre_tokenizer.
std::unique_ptr<Tokenizer> WithPreTokenizer(const json& pre_tokenizer);
json SplitThenByteLevel(const std::string& literal, const std::string& behavior);

// The byte ids of s (= the bytes, in the tiny vocabulary).
std::vector<int32_t> Bytes(std::string_view s);
std::vector<int32_t> Concat(std::initializer_list<std::vector<int32_t>> parts);

// Texts every tokenizer must round-trip exactly (up to normalization).
const std::vector<std::string>& RoundTripTexts();
// Random byte strings and random code points: Decode(Encode(x)) == Normalize(x), and stream
// decoding agrees with lossy decoding.
void RandomRoundTrip(const Tokenizer& tok, int iterations, uint32_t seed);

}  // namespace kvstar::tokenizer_test
