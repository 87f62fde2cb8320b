// UTF-8 scanning, the Unicode predicates the Hugging Face pipeline relies on (Rust's
// char::is_whitespace / char::is_alphanumeric), GPT-2's byte <-> unicode map, and Unicode
// normalization through ICU.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace kvstar::tokenizer_internal {

// Classifies the UTF-8 sequence at the start of [p, p + n), n >= 1:
//   > 0: a well-formed character of that many bytes (its code point in *cp),
//     0: a well-formed but truncated prefix (more bytes could complete it),
//   < 0: ill-formed; -k is the length of the maximal ill-formed subpart (Unicode 3.9 D93b),
//        i.e. how many bytes one U+FFFD replaces.
int ClassifyUtf8(const uint8_t* p, size_t n, char32_t* cp);

// Length of the well-formed character at s[i], or 0 when s[i] does not start one (including a
// truncated sequence at the end of s).
size_t Utf8CharLen(std::string_view s, size_t i, char32_t* cp);

// The character that ends at s[end) if it is well-formed; false otherwise.
bool LastUtf8Char(std::string_view s, size_t end, char32_t* cp, size_t* len);

// The Unicode White_Space property (what Rust's char::is_whitespace and the tokenizers regex
// engine's \s test).
bool IsWhiteSpace(char32_t c);
// Rust's char::is_alphanumeric: Alphabetic or a numeric general category (Nd, Nl, No).
bool IsAlphanumeric(char32_t c);

// Appends the UTF-8 encoding of c.
void AppendUtf8(char32_t c, std::string* out);

// Replaces ill-formed sequences by U+FFFD (one per maximal subpart), as Rust's
// String::from_utf8_lossy does.
std::string ToValidUtf8(std::string_view bytes);

// GPT-2's bytes_to_unicode: every byte maps to a printable code point so that vocabularies can be
// stored as text. ByteToUnicode()[b] is the UTF-8 of that code point.
const std::array<std::string, 256>& ByteToUnicode();
// The inverse, for one code point: the byte, or -1 when c is not in the image.
int UnicodeToByte(char32_t c);
// Maps a vocabulary string back to raw bytes. False when a character is not in the byte map
// (such a token can never be produced by byte-level encoding).
bool ByteLevelDecode(std::string_view token, std::string* bytes);
// Raw bytes -> vocabulary string.
std::string ByteLevelEncode(std::string_view bytes);

// A chain of Unicode normalization forms (tokenizer.json "normalizer": NFC / NFD / NFKC / NFKD,
// or a Sequence of them). Ill-formed UTF-8 bytes pass through unchanged: normalization is
// applied to each well-formed run between them.
class Normalizer {
 public:
  enum class Form { kNfc, kNfd, kNfkc, kNfkd };
  // Empty chain: identity.
  static StatusOr<Normalizer> Create(const std::vector<Form>& forms);
  Normalizer() = default;

  bool empty() const { return forms_.empty(); }
  // Returns true and fills *out when the text changes; false (out untouched) when it is already
  // normalized, the common case, which then costs no copy.
  bool Normalize(std::string_view text, std::string* out) const;

 private:
  bool NormalizeRun(std::string_view run, std::string* out) const;
  std::vector<const void*> forms_;  // const UNormalizer2*, owned by ICU
};

}  // namespace kvstar::tokenizer_internal
