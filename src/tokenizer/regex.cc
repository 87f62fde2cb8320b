#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include "tokenizer/unicode.h"

namespace kvstar::tokenizer_internal {

namespace {

constexpr std::string_view kWhiteSpaceItems =
    "\\x{09}-\\x{0D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

pcre2_code* AsCode(void* p) { return static_cast<pcre2_code*>(p); }

}  // namespace

std::string RewriteWhitespaceClasses(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 64);
  bool in_class = false;
  size_t class_start = 0;  // index in pattern of the first item after '[' or '[^'
  size_t i = 0;
  while (i < pattern.size()) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[i + 1];
      if (e == 'Q') {  // \Q...\E: copied verbatim
        const size_t end = pattern.find("\\E", i + 2);
        const size_t stop = end == std::string_view::npos ? pattern.size() : end + 2;
        out.append(pattern.substr(i, stop - i));
        i = stop;
        continue;
      }
      if (e == 's') {
        if (in_class) {
          out.append(kWhiteSpaceItems);
        } else {
          out.append("[").append(kWhiteSpaceItems).append("]");
        }
      } else if (e == 'S' && !in_class) {
        out.append("[^").append(kWhiteSpaceItems).append("]");
      } else {
        out.append(pattern.substr(i, 2));
      }
      i += 2;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      ++i;
      if (i < pattern.size() && pattern[i] == '^') {
        out.push_back('^');
        ++i;
      }
      class_start = i;
      continue;
    }
    if (in_class) {
      if (c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {  // [:alpha:]
        const size_t end = pattern.find(":]", i + 2);
        const size_t stop = end == std::string_view::npos ? pattern.size() : end + 2;
        out.append(pattern.substr(i, stop - i));
        i = stop;
        continue;
      }
      if (c == ']' && i != class_start) in_class = false;  // a leading ']' is a literal
    }
    out.push_back(c);
    ++i;
  }
  return out;
}

StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern, bool literal) {
  std::unique_ptr<Regex> re(new Regex());
  re->pattern_ = literal ? std::string(pattern) : RewriteWhitespaceClasses(pattern);
  // PCRE2_LITERAL refuses PCRE2_UCP (meaningless for plain text).
  uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
  options |= literal ? PCRE2_LITERAL : PCRE2_UCP;
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(re->pattern_.data()),
                                   re->pattern_.size(), options, &err, &err_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    return InvalidArgument("pre-tokenizer regex /%.*s/ does not compile at offset %zu: %s",
                           static_cast<int>(pattern.size()), pattern.data(),
                           static_cast<size_t>(err_offset), reinterpret_cast<const char*>(msg));
  }
  re->code_ = code;
  // JIT is an optimization only: without it (e.g. no JIT on this CPU) the interpreter runs.
  re->jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return re;
}

Regex::~Regex() { pcre2_code_free(AsCode(code_)); }

void Regex::ForEachMatch(std::string_view text, const std::function<void(Match)>& on_match) const {
  pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
  KVSTAR_CHECK(md != nullptr, "pcre2_match_data_create failed");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos <= text.size()) {
    int rc = pcre2_match(AsCode(code_), subject, text.size(), pos, 0, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0 && jit_) {
      // JIT stack or match limits: retry with the interpreter, which uses the heap.
      rc = pcre2_match(AsCode(code_), subject, text.size(), pos, PCRE2_NO_JIT, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
    }
    if (rc < 0) break;  // resource limit: the rest stays unmatched, which is still encodable
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    if (e > b) {
      on_match({b, e});
      pos = e;
    } else {
      // Empty match: step over one character (or one ill-formed byte).
      if (b >= text.size()) break;
      char32_t cp;
      const size_t len = Utf8CharLen(text, b, &cp);
      pos = b + (len == 0 ? 1 : len);
    }
  }
  pcre2_match_data_free(md);
}

}  // namespace kvstar::tokenizer_internal
