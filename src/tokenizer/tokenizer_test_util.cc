#include "tokenizer/tokenizer_test_util.h"

#include <gtest/gtest.h>

#include <random>

namespace kvstar::tokenizer_test {

using tokenizer_internal::ByteToUnicode;

json TinyTokenizerJson(const Options& o) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteToUnicode()[b]] = b;
  json merges = json::array();
  int32_t next = 256;
  for (const auto& [a, b] : kMerges) {
    vocab[a + b] = next++;
    if (o.pair_merges) {
      merges.push_back(json::array({a, b}));
    } else {
      merges.push_back(a + " " + b);
    }
  }
  vocab["Ġworld"] = kSpaceWorld;
  auto added = [](int id, const char* content, bool special) {
    return json{{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", special}};
  };
  json added_tokens =
      json::array({added(kEndOfText, "<|endoftext|>", true), added(kImEnd, "<|im_end|>", true),
                   added(kImStart, "<|im_start|>", true)});
  json mask = added(kMask, "<mask>", false);
  mask["lstrip"] = true;
  mask["rstrip"] = true;
  added_tokens.push_back(mask);
  added_tokens.push_back(added(kBos, "<|begin_of_text|>", true));
  for (const auto& e : o.extra_added) {
    // The tokenizers library wants every field: fill in its defaults.
    json full = {{"single_word", false},
                 {"lstrip", false},
                 {"rstrip", false},
                 {"normalized", true},
                 {"special", false}};
    full.update(e);
    added_tokens.push_back(full);
  }
  json j = {
      {"version", "1.0"},
      {"added_tokens", added_tokens},
      {"normalizer", o.nfc ? json{{"type", "NFC"}} : json(nullptr)},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers", json::array({{{"type", "Split"},
                                        {"pattern", {{"Regex", o.pattern}}},
                                        {"behavior", "Isolated"},
                                        {"invert", false}},
                                       {{"type", "ByteLevel"},
                                        {"add_prefix_space", false},
                                        {"trim_offsets", false},
                                        {"use_regex", false}}})}}},
      {"post_processor",
       {{"type", "ByteLevel"},
        {"add_prefix_space", false},
        {"trim_offsets", false},
        {"use_regex", false}}},
      {"decoder",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", o.ignore_merges},
        {"vocab", vocab},
        {"merges", merges}}},
  };
  if (o.bos_template) {
    j["post_processor"] = {
        {"type", "Sequence"},
        {"processors",
         json::array({{{"type", "ByteLevel"},
                       {"add_prefix_space", true},
                       {"trim_offsets", false},
                       {"use_regex", false}},
                      {{"type", "TemplateProcessing"},
                       {"single", json::array({{{"SpecialToken",
                                                 {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                                               {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                       {"pair", json::array({{{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                             {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
                       {"special_tokens",
                        {{"<|begin_of_text|>",
                          {{"id", "<|begin_of_text|>"},
                           {"ids", json::array({kBos})},
                           {"tokens", json::array({"<|begin_of_text|>"})}}}}}}})}};
  }
  return j;
}

std::unique_ptr<Tokenizer> Tiny(const Options& o) {
  auto tok = Tokenizer::FromJson(TinyTokenizerJson(o).dump());
  EXPECT_TRUE(tok.ok()) << tok.status().ToString();
  return std::move(tok).value();
}

std::vector<int32_t> Bytes(std::string_view s) {
  std::vector<int32_t> ids;
  for (char c : s) ids.push_back(static_cast<uint8_t>(c));
  return ids;
}

std::vector<int32_t> Concat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// Texts every tokenizer must round-trip exactly.
const std::vector<std::string>& RoundTripTexts() {
  static const std::vector<std::string> texts = {
      "",
      "hello",
      "the hello world",
      "  leading and trailing spaces   ",
      "numbers 0 12 345 6789 1234567890 3.14159 -42 1e10",
      "tabs\tand\nnewlines\r\n\n\n  \t mixed \n",
      "punctuation!!! ... ??? (a) [b] {c} <d> \"e\" 'f' `g` ~!@#$%^&*()_+-=",
      "I'm you're we've they'll she'd it's DON'T I'M",
      "Café naïve résumé Ångström façade",
      "e\xcc\x81 decomposed accent",
      "中文测试，你好世界。日本語のテキスト、한국어 텍스트",
      "emoji 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ✨",
      "Ελληνικά Русский текст עברית العربية हिन्दी",
      "mixed\u00a0nbsp\u2003em space\u3000ideographic\u0085nel",
      "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n",
      "a<mask>b<mask>c",
      "invalid \xff\xfe bytes \xc3 truncated \xe4\xb8 and \xed\xa0\x80 surrogate",
      std::string("nul\0byte", 8),
      "\xf0\x9f\x98",
      "x\x80y\xbf\xc0\xc1\xf5\xf8",
      "code: for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }\n\treturn sum;",
  };
  return texts;
}

std::unique_ptr<Tokenizer> WithPreTokenizer(const json& pre_tokenizer) {
  json j = TinyTokenizerJson({});
  j["pre_tokenizer"] = pre_tokenizer;
  auto tok = Tokenizer::FromJson(j.dump());
  EXPECT_TRUE(tok.ok()) << tok.status().ToString();
  return std::move(tok).value();
}

json SplitThenByteLevel(const std::string& literal, const std::string& behavior) {
  return {{"type", "Sequence"},
          {"pretokenizers", json::array({{{"type", "Split"},
                                          {"pattern", {{"String", literal}}},
                                          {"behavior", behavior},
                                          {"invert", false}},
                                         {{"type", "ByteLevel"},
                                          {"add_prefix_space", false},
                                          {"trim_offsets", false},
                                          {"use_regex", false}}})}};
}

void RandomRoundTrip(const Tokenizer& tok, int iterations, uint32_t seed) {
  std::mt19937 rng(seed);
  const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x20, 0x7E},       {0x09, 0x0D},     {0xA0, 0x24F},      {0x300, 0x36F},
      {0x370, 0x3FF},     {0x400, 0x4FF},   {0x590, 0x6FF},     {0x900, 0x97F},
      {0x1100, 0x11FF},   {0x1680, 0x180E}, {0x2000, 0x206F},   {0x3000, 0x30FF},
      {0x4E00, 0x9FFF},   {0xAC00, 0xD7A3}, {0x1F300, 0x1FAFF}, {0xE0000, 0xE007F},
      {0x10000, 0x10FFFF}};
  for (int it = 0; it < iterations; ++it) {
    std::string text;
    const int len = static_cast<int>(rng() % 64);
    const bool bytes = it % 2 == 0;
    for (int k = 0; k < len; ++k) {
      if (bytes) {
        text.push_back(static_cast<char>(rng() & 0xFF));
      } else {
        const auto& [lo, hi] = ranges[rng() % ranges.size()];
        char32_t c = lo + rng() % (hi - lo + 1);
        if (c >= 0xD800 && c <= 0xDFFF) c = 'x';
        tokenizer_internal::AppendUtf8(c, &text);
      }
    }
    const auto ids = tok.Encode(text);
    ASSERT_EQ(tok.Decode(ids), tok.Normalize(text)) << "iteration " << it;
    StreamDecoder dec(tok);
    std::string streamed;
    for (int32_t id : ids) streamed += dec.Push(id);
    streamed += dec.Flush();
    ASSERT_EQ(streamed, tokenizer_internal::ToValidUtf8(tok.Normalize(text))) << "iteration " << it;
  }
}

}  // namespace kvstar::tokenizer_test
