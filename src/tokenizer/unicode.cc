#include "tokenizer/unicode.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

namespace kvstar::tokenizer_internal {

int ClassifyUtf8(const uint8_t* p, size_t n, char32_t* cp) {
  const uint8_t b0 = p[0];
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  int len;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte (Unicode Table 3-7)
  char32_t c;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    c = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    c = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    c = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing past U+10FFFF
  } else {
    return -1;
  }
  for (int k = 1; k < len; ++k) {
    if (static_cast<size_t>(k) >= n) return 0;
    const uint8_t b = p[k];
    const uint8_t klo = k == 1 ? lo : 0x80;
    const uint8_t khi = k == 1 ? hi : 0xBF;
    if (b < klo || b > khi) return -k;
    c = (c << 6) | (b & 0x3F);
  }
  *cp = c;
  return len;
}

size_t Utf8CharLen(std::string_view s, size_t i, char32_t* cp) {
  const int r = ClassifyUtf8(reinterpret_cast<const uint8_t*>(s.data()) + i, s.size() - i, cp);
  return r > 0 ? static_cast<size_t>(r) : 0;
}

bool LastUtf8Char(std::string_view s, size_t end, char32_t* cp, size_t* len) {
  // A character is at most 4 bytes: try each possible start.
  for (size_t l = 1; l <= 4 && l <= end; ++l) {
    const uint8_t b = static_cast<uint8_t>(s[end - l]);
    if ((b & 0xC0) == 0x80) continue;  // continuation byte: look further back
    if (Utf8CharLen(s.substr(0, end), end - l, cp) == l) {
      *len = l;
      return true;
    }
    return false;
  }
  return false;
}

bool IsWhiteSpace(char32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  if (c < 0x85) return false;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool IsAlphanumeric(char32_t c) {
  if (c < 0x80) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  }
  const UChar32 u = static_cast<UChar32>(c);
  if (u_hasBinaryProperty(u, UCHAR_ALPHABETIC)) return true;
  const int8_t type = u_charType(u);
  return type == U_DECIMAL_DIGIT_NUMBER || type == U_LETTER_NUMBER || type == U_OTHER_NUMBER;
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (c >> 6)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (c >> 12)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (c >> 18)));
    out->push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string ToValidUtf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  size_t i = 0;
  while (i < bytes.size()) {
    char32_t cp;
    const int r = ClassifyUtf8(p + i, bytes.size() - i, &cp);
    if (r > 0) {
      out.append(bytes.data() + i, r);
      i += r;
    } else {
      // Truncated at the end (r == 0): the whole remainder is one maximal subpart.
      out.append("\xEF\xBF\xBD");
      i = r == 0 ? bytes.size() : i - r;
    }
  }
  return out;
}

namespace {

struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 0x144> to_byte;  // code point -> byte, -1 outside the image
  ByteMap() {
    to_byte.fill(-1);
    // Printable Latin-1 bytes map to themselves; the rest to U+0100 onwards, in byte order.
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      AppendUtf8(cp, &to_unicode[b]);
      to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteMap& GetByteMap() {
  static const ByteMap map;
  return map;
}

}  // namespace

const std::array<std::string, 256>& ByteToUnicode() { return GetByteMap().to_unicode; }

int UnicodeToByte(char32_t c) {
  const auto& to_byte = GetByteMap().to_byte;
  return c < to_byte.size() ? to_byte[c] : -1;
}

bool ByteLevelDecode(std::string_view token, std::string* bytes) {
  bytes->clear();
  size_t i = 0;
  while (i < token.size()) {
    char32_t c;
    const size_t len = Utf8CharLen(token, i, &c);
    if (len == 0) return false;
    const int b = UnicodeToByte(c);
    if (b < 0) return false;
    bytes->push_back(static_cast<char>(b));
    i += len;
  }
  return true;
}

std::string ByteLevelEncode(std::string_view bytes) {
  const auto& map = ByteToUnicode();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char ch : bytes) out += map[static_cast<uint8_t>(ch)];
  return out;
}

StatusOr<Normalizer> Normalizer::Create(const std::vector<Form>& forms) {
  Normalizer n;
  for (Form f : forms) {
    UErrorCode err = U_ZERO_ERROR;
    const UNormalizer2* impl = nullptr;
    switch (f) {
      case Form::kNfc:
        impl = unorm2_getNFCInstance(&err);
        break;
      case Form::kNfd:
        impl = unorm2_getNFDInstance(&err);
        break;
      case Form::kNfkc:
        impl = unorm2_getNFKCInstance(&err);
        break;
      case Form::kNfkd:
        impl = unorm2_getNFKDInstance(&err);
        break;
    }
    if (U_FAILURE(err) || impl == nullptr) {
      return Internal("ICU normalizer unavailable: %s", u_errorName(err));
    }
    n.forms_.push_back(impl);
  }
  return n;
}

bool Normalizer::NormalizeRun(std::string_view run, std::string* out) const {
  // ICU normalizes UTF-16: convert, normalize through the chain, convert back.
  std::u16string a(run.size(), u'\0'), b;
  UErrorCode err = U_ZERO_ERROR;
  int32_t len = 0;
  u_strFromUTF8(a.data(), static_cast<int32_t>(a.size()), &len, run.data(),
                static_cast<int32_t>(run.size()), &err);
  if (U_FAILURE(err)) return false;
  a.resize(len);
  bool changed = false;
  for (const void* f : forms_) {
    const auto* impl = static_cast<const UNormalizer2*>(f);
    err = U_ZERO_ERROR;
    if (unorm2_isNormalized(impl, a.data(), static_cast<int32_t>(a.size()), &err) &&
        !U_FAILURE(err)) {
      continue;
    }
    // Decompositions grow text by a bounded factor; retry once with the exact size.
    b.assign(a.size() * 3 + 16, u'\0');
    err = U_ZERO_ERROR;
    int32_t n = unorm2_normalize(impl, a.data(), static_cast<int32_t>(a.size()), b.data(),
                                 static_cast<int32_t>(b.size()), &err);
    if (err == U_BUFFER_OVERFLOW_ERROR) {
      b.assign(n, u'\0');
      err = U_ZERO_ERROR;
      n = unorm2_normalize(impl, a.data(), static_cast<int32_t>(a.size()), b.data(),
                           static_cast<int32_t>(b.size()), &err);
    }
    if (U_FAILURE(err)) return false;
    b.resize(n);
    a.swap(b);
    changed = true;
  }
  if (!changed) return false;
  std::string utf8(a.size() * 3, '\0');
  err = U_ZERO_ERROR;
  u_strToUTF8(utf8.data(), static_cast<int32_t>(utf8.size()), &len, a.data(),
              static_cast<int32_t>(a.size()), &err);
  if (U_FAILURE(err)) return false;
  utf8.resize(len);
  *out = std::move(utf8);
  return true;
}

bool Normalizer::Normalize(std::string_view text, std::string* out) const {
  if (forms_.empty()) return false;
  // ASCII text is invariant under every normalization form.
  bool ascii = true;
  for (char ch : text) {
    if (static_cast<uint8_t>(ch) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return false;
  // Normalize each well-formed run; ill-formed bytes are copied as they are.
  std::string result;
  result.reserve(text.size());
  bool changed = false;
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  size_t run_start = 0, i = 0;
  auto flush_run = [&](size_t end) {
    if (end == run_start) return;
    const std::string_view run = text.substr(run_start, end - run_start);
    std::string normalized;
    if (NormalizeRun(run, &normalized)) {
      result += normalized;
      changed = true;
    } else {
      result += run;
    }
  };
  while (i < text.size()) {
    char32_t cp;
    const int r = ClassifyUtf8(p + i, text.size() - i, &cp);
    if (r > 0) {
      i += r;
      continue;
    }
    flush_run(i);
    result.push_back(text[i]);
    ++i;
    run_start = i;
  }
  flush_run(i);
  if (!changed) return false;
  *out = std::move(result);
  return true;
}

}  // namespace kvstar::tokenizer_internal
