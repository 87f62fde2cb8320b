#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "base/file_util.h"
#include "tokenizer/tokenizer_test_util.h"

namespace kvstar::tokenizer_test {
namespace {

using tokenizer_internal::ByteToUnicode;

TEST(ByteMapTest, MatchesGpt2) {
  EXPECT_EQ(ByteToUnicode()[' '], "Ġ");
  EXPECT_EQ(ByteToUnicode()['\n'], "Ċ");
  EXPECT_EQ(ByteToUnicode()[0], "Ā");
  EXPECT_EQ(ByteToUnicode()['a'], "a");
  EXPECT_EQ(ByteToUnicode()[0xAD], "Ń");  // the one non-printable byte in the Latin-1 range
  EXPECT_EQ(ByteToUnicode()[0xE9], "é");
  for (int b = 0; b < 256; ++b) {
    std::string back;
    ASSERT_TRUE(tokenizer_internal::ByteLevelDecode(ByteToUnicode()[b], &back)) << b;
    EXPECT_EQ(back, std::string(1, static_cast<char>(b)));
  }
}

TEST(TokenizerTest, MergesByRank) {
  auto tok = Tiny();
  EXPECT_EQ(tok->Encode("the hello"), (std::vector<int32_t>{'t', kHe, kSpaceHello}));
  EXPECT_EQ(tok->Encode(" the"), (std::vector<int32_t>{kSpaceThe}));
  EXPECT_EQ(tok->Encode("hello"), (std::vector<int32_t>{kHello}));
  // "Ġworld" is a token but no merge builds it.
  EXPECT_EQ(tok->Encode(" world"), Bytes(" world"));
  EXPECT_EQ(tok->vocab_size(), 269u);
  EXPECT_EQ(tok->IdToToken(kSpaceThe), "Ġthe");
  EXPECT_EQ(tok->TokenBytes(kSpaceThe), " the");
  EXPECT_EQ(tok->TokenToId("Ġhello"), kSpaceHello);
  EXPECT_EQ(tok->TokenToId("<|im_end|>"), kImEnd);
  EXPECT_FALSE(tok->TokenToId("nope").has_value());
  EXPECT_EQ(tok->IdToToken(269), "");
  EXPECT_EQ(tok->IdToToken(-1), "");
}

TEST(TokenizerTest, BothMergeFormatsAgree) {
  auto strings = Tiny();
  auto pairs = Tiny({.pair_merges = true});
  for (const std::string& text : RoundTripTexts()) {
    EXPECT_EQ(strings->Encode(text), pairs->Encode(text)) << text;
  }
}

TEST(TokenizerTest, IgnoreMerges) {
  auto tok = Tiny({.ignore_merges = true});
  EXPECT_EQ(tok->Encode(" world"), (std::vector<int32_t>{kSpaceWorld}));
  EXPECT_EQ(tok->Encode(" world the"), (std::vector<int32_t>{kSpaceWorld, kSpaceThe}));
  EXPECT_EQ(tok->Encode(" worlds"), Bytes(" worlds"));
}

TEST(TokenizerTest, PreTokenizerSplits) {
  auto tok = Tiny();
  // Qwen2: one digit per word; the apostrophe suffix is its own word; newlines apart.
  EXPECT_EQ(tok->Encode("123"), Bytes("123"));
  EXPECT_EQ(tok->Encode("he's"), Concat({{kHe}, Bytes("'s")}));
  EXPECT_EQ(tok->Encode("he\nhe"), Concat({{kHe}, Bytes("\n"), {kHe}}));
  // "  hello": "\s+(?!\S)" leaves the last space to the word.
  EXPECT_EQ(tok->Encode("  hello"), Concat({Bytes(" "), {kSpaceHello}}));
  // U+0085 is White_Space (as in the tokenizers library); U+180E is not, though PCRE2 says so.
  EXPECT_EQ(tok->Encode("\xc2\x85hello"), Concat({Bytes("\xc2\x85"), {kHello}}));
  EXPECT_EQ(tok->Encode("\xe1\xa0\x8ehello"), Concat({Bytes("\xe1\xa0\x8e"), {kHello}}));
  // Without the rewrite "\xe1\xa0\x8e" would be whitespace and " hello" would not follow it.
  EXPECT_EQ(tok->Encode("\xe1\xa0\x8e hello"), Concat({Bytes("\xe1\xa0\x8e"), {kSpaceHello}}));
}

TEST(TokenizerTest, RegexRewriteKeepsClassesIntact) {
  using tokenizer_internal::RewriteWhitespaceClasses;
  EXPECT_EQ(RewriteWhitespaceClasses(R"(a\d[\]\s]x)"),
            std::string(R"(a\d[\]\x{09}-\x{0D}\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A})") +
                R"(\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]x)");
  EXPECT_EQ(RewriteWhitespaceClasses(R"(\\s)"), R"(\\s)");  // an escaped backslash, then 's'
  EXPECT_EQ(RewriteWhitespaceClasses(R"([[:alpha:]]\S)").substr(0, 13), "[[:alpha:]][^");
}

TEST(TokenizerTest, Llama3DigitGroups) {
  auto tok = Tiny({.pattern = kLlama3Pattern});
  // Same bytes either way; the split only shows through merges, so compare the words instead.
  EXPECT_EQ(tok->Encode("1234567"), Bytes("1234567"));
  auto re = tokenizer_internal::Regex::Compile(kLlama3Pattern, false);
  ASSERT_TRUE(re.ok());
  std::vector<tokenizer_internal::Regex::Match> m;
  (*re)->FindAll("1234567 ab", &m);
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m[0].end, 3u);
  EXPECT_EQ(m[1].end, 6u);
  EXPECT_EQ(m[2].end, 7u);
  EXPECT_EQ(m[3].begin, 7u);
}

TEST(TokenizerTest, Gpt2ByteLevelPreTokenizer) {
  // GPT-2 style: ByteLevel alone, with its own regex and a prefix space.
  auto tok = WithPreTokenizer({{"type", "ByteLevel"},
                               {"add_prefix_space", true},
                               {"trim_offsets", true},
                               {"use_regex", true}});
  EXPECT_EQ(tok->Encode("hello"), (std::vector<int32_t>{kSpaceHello}));
  EXPECT_EQ(tok->Encode("he's"), Concat({Bytes(" "), {kHe}, Bytes("'s")}));
  // A prefix space is added to each piece between added tokens, as the library does.
  EXPECT_EQ(tok->Encode("hello<|im_end|>hello"),
            (std::vector<int32_t>{kSpaceHello, kImEnd, kSpaceHello}));
  EXPECT_EQ(tok->Decode(tok->Encode("hello")), " hello");
}

TEST(TokenizerTest, SplitBehaviors) {
  EXPECT_EQ(WithPreTokenizer(SplitThenByteLevel(" ", "Removed"))->Encode("the hello"),
            (std::vector<int32_t>{'t', kHe, kHello}));
  EXPECT_EQ(WithPreTokenizer(SplitThenByteLevel(" ", "MergedWithPrevious"))->Encode("the hello"),
            (std::vector<int32_t>{'t', kHe, ' ', kHello}));
  EXPECT_EQ(WithPreTokenizer(SplitThenByteLevel(" ", "MergedWithNext"))->Encode("the hello"),
            (std::vector<int32_t>{'t', kHe, kSpaceHello}));
  // Contiguous: "he" | "ll" | "o", so "hello" cannot form.
  EXPECT_EQ(WithPreTokenizer(SplitThenByteLevel("l", "Contiguous"))->Encode("hello"),
            (std::vector<int32_t>{kHe, kLl, 'o'}));
  EXPECT_EQ(WithPreTokenizer(SplitThenByteLevel("l", "Isolated"))->Encode("hello"),
            (std::vector<int32_t>{kHe, 'l', 'l', 'o'}));
}

TEST(TokenizerTest, SpecialTokensAreCutOutFirst) {
  auto tok = Tiny();
  EXPECT_EQ(tok->Encode("hi<|im_end|>\nthe"),
            Concat({Bytes("hi"), {kImEnd}, Bytes("\n"), {'t', kHe}}));
  // No merge across a special token: " the" would otherwise be one token.
  EXPECT_EQ(tok->Encode(" t<|endoftext|>he"), (std::vector<int32_t>{kSpaceT, kEndOfText, kHe}));
  EXPECT_EQ(tok->Encode("<|im_start|><|im_end|>"), (std::vector<int32_t>{kImStart, kImEnd}));
  // A near miss is plain text.
  EXPECT_EQ(tok->Encode("<|im_end>"), Bytes("<|im_end>"));
  EXPECT_TRUE(tok->IsSpecial(kImEnd));
  EXPECT_FALSE(tok->IsSpecial(kMask));
  EXPECT_FALSE(tok->IsSpecial(kHe));
  EXPECT_EQ(tok->eos_candidates(), (std::vector<int32_t>{kEndOfText, kImEnd}));
}

TEST(TokenizerTest, LongestAddedTokenWins) {
  Options o;
  o.extra_added = json::array(
      {{{"id", kFirstExtra}, {"content", "<|im"}, {"special", false}, {"normalized", false}},
       {{"id", kFirstExtra + 1},
        {"content", "<|im_end|>!"},
        {"special", false},
        {"normalized", false}}});
  auto tok = Tiny(o);
  EXPECT_EQ(tok->Encode("<|im_end|>!"), (std::vector<int32_t>{kFirstExtra + 1}));
  EXPECT_EQ(tok->Encode("<|im_end|>?"), Concat({{kImEnd}, Bytes("?")}));
  EXPECT_EQ(tok->Encode("<|imx"), Concat({{kFirstExtra}, Bytes("x")}));
}

TEST(TokenizerTest, AddedTokenIdsFollowTheLibrary) {
  // The library re-adds added_tokens in order rather than trusting their ids (checked against
  // tokenizers 0.23): new contents take the next free id, known contents keep theirs.
  Options o;
  o.extra_added =
      json::array({{{"id", 500}, {"content", "<a>"}, {"special", true}, {"normalized", false}},
                   {{"id", 7}, {"content", "hello"}, {"special", false}, {"normalized", false}},
                   {{"id", 900}, {"content", "<b>"}, {"special", false}, {"normalized", false}},
                   {{"id", 901}, {"content", ""}, {"special", false}, {"normalized", false}}});
  auto tok = Tiny(o);
  EXPECT_EQ(tok->TokenToId("<a>"), kFirstExtra);
  EXPECT_EQ(tok->TokenToId("hello"), kHello);
  EXPECT_EQ(tok->TokenToId("<b>"), kFirstExtra + 1);
  EXPECT_EQ(tok->vocab_size(), static_cast<size_t>(kFirstExtra + 2));
  EXPECT_EQ(tok->Encode("x<b>hello"), (std::vector<int32_t>{'x', kFirstExtra + 1, kHello}));
  EXPECT_TRUE(tok->IsSpecial(kFirstExtra));
}

TEST(TokenizerTest, AddedTokenStripsWhitespace) {
  auto tok = Tiny();
  // <mask> has lstrip and rstrip: the spaces around it belong to it.
  EXPECT_EQ(tok->Encode("a <mask> b"), Concat({Bytes("a"), {kMask}, Bytes("b")}));
  EXPECT_EQ(tok->Encode("a\t\n <mask>\n b"), Concat({Bytes("a"), {kMask}, Bytes("b")}));
  EXPECT_EQ(tok->Decode(tok->Encode("a <mask> b")), "a<mask>b");
  // Special tokens without strip keep the spaces as text.
  EXPECT_EQ(tok->Encode("a <|im_end|> b"), Concat({Bytes("a "), {kImEnd}, Bytes(" b")}));
}

TEST(TokenizerTest, SingleWordTokens) {
  Options o;
  o.extra_added = json::array({{{"id", kFirstExtra},
                                {"content", "ab"},
                                {"single_word", true},
                                {"special", false},
                                {"normalized", false}}});
  auto tok = Tiny(o);
  EXPECT_EQ(tok->Encode("ab"), (std::vector<int32_t>{kFirstExtra}));
  EXPECT_EQ(tok->Encode("x ab, y"), Concat({Bytes("x "), {kFirstExtra}, Bytes(", y")}));
  EXPECT_EQ(tok->Encode("xab"), Bytes("xab"));
  EXPECT_EQ(tok->Encode("abé"), Bytes("abé"));  // é is alphanumeric
  EXPECT_EQ(tok->Encode("ab_"), Bytes("ab_"));
}

TEST(TokenizerTest, NfcNormalizer) {
  auto plain = Tiny();
  auto nfc = Tiny({.nfc = true});
  const std::string decomposed = "e\xcc\x81";  // e + U+0301
  EXPECT_EQ(plain->Encode(decomposed), Bytes(decomposed));
  EXPECT_EQ(nfc->Encode(decomposed), Bytes("\xc3\xa9"));
  // Hangul jamo compose into a syllable; an ill-formed byte in between stays as it is.
  EXPECT_EQ(nfc->Encode("\xe1\x84\x80\xe1\x85\xa1"), Bytes("\xea\xb0\x80"));
  EXPECT_EQ(nfc->Encode("e\xff\xcc\x81"), Bytes("e\xff\xcc\x81"));
  EXPECT_EQ(nfc->Encode("ab e\xcc\x81"
                        "e\xcc\x81 cd"),
            Bytes("ab \xc3\xa9\xc3\xa9 cd"));
}

TEST(TokenizerTest, NormalizedAddedTokenMatchesAfterNormalization) {
  Options o;
  o.nfc = true;
  o.extra_added = json::array({{{"id", kFirstExtra},
                                {"content", "caf\xc3\xa9"},
                                {"special", false},
                                {"normalized", true}}});
  auto tok = Tiny(o);
  EXPECT_EQ(tok->Encode("cafe\xcc\x81!"), Concat({{kFirstExtra}, Bytes("!")}));
  EXPECT_EQ(tok->Encode("caf\xc3\xa9"), (std::vector<int32_t>{kFirstExtra}));
}

TEST(TokenizerTest, BosFromTemplateProcessing) {
  auto plain = Tiny();
  EXPECT_FALSE(plain->add_bos());
  EXPECT_EQ(plain->Encode("hello", true), (std::vector<int32_t>{kHello}));
  auto llama = Tiny({.bos_template = true});
  ASSERT_TRUE(llama->add_bos());
  EXPECT_EQ(llama->bos_id(), kBos);
  EXPECT_EQ(llama->Encode("hello", true), (std::vector<int32_t>{kBos, kHello}));
  EXPECT_EQ(llama->Encode("hello", false), (std::vector<int32_t>{kHello}));
  EXPECT_EQ(llama->Encode("", true), (std::vector<int32_t>{kBos}));
  EXPECT_TRUE(llama->special_suffix().empty());
}

TEST(TokenizerTest, DecodeSkipsSpecialOnRequest) {
  auto tok = Tiny();
  const std::vector<int32_t> ids = {kImStart, 'h', 'i', kImEnd, kMask, kEndOfText};
  EXPECT_EQ(tok->Decode(ids), "<|im_start|>hi<|im_end|><mask><|endoftext|>");
  EXPECT_EQ(tok->Decode(ids, /*skip_special=*/true), "hi<mask>");
  // Unknown ids are skipped rather than trusted.
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{-1, 'a', 280, 100000, 'b'}), "ab");
}

TEST(TokenizerTest, RoundTrip) {
  for (const Options& o :
       {Options{}, Options{.ignore_merges = true}, Options{.pattern = kLlama3Pattern}}) {
    auto tok = Tiny(o);
    for (const std::string& text : RoundTripTexts()) {
      const auto ids = tok->Encode(text);
      EXPECT_EQ(tok->Decode(ids), text) << text;
      for (int32_t id : ids) ASSERT_LT(static_cast<size_t>(id), tok->vocab_size());
    }
  }
  // NFC changes decomposed text, and nothing else.
  auto nfc = Tiny({.nfc = true});
  EXPECT_EQ(nfc->Decode(nfc->Encode("Café e\xcc\x81 \xff")), "Café \xc3\xa9 \xff");
}

TEST(TokenizerTest, InvalidUtf8BytesAreSingleBytePieces) {
  auto tok = Tiny();
  // "he" would merge, but an ill-formed byte between h and e is a word of its own.
  EXPECT_EQ(tok->Encode("h\xff"
                        "e"),
            Bytes("h\xff"
                  "e"));
  EXPECT_EQ(tok->Encode("\xffhe\xfe"), Concat({Bytes("\xff"), {kHe}, Bytes("\xfe")}));
}

TEST(StreamDecoderTest, HoldsBackSplitCharacters) {
  auto tok = Tiny();
  StreamDecoder dec(*tok);
  // 中 is E4 B8 AD; each byte is its own token here.
  EXPECT_EQ(dec.Push(0xE4), "");
  EXPECT_EQ(dec.pending_bytes(), 1u);
  EXPECT_EQ(dec.Push(0xB8), "");
  EXPECT_EQ(dec.Push(0xAD), "中");
  EXPECT_EQ(dec.pending_bytes(), 0u);
  EXPECT_EQ(dec.Push(kSpaceHello), " hello");
  // 😀 is F0 9F 98 80.
  EXPECT_EQ(dec.Push(0xF0), "");
  EXPECT_EQ(dec.Push(0x9F), "");
  EXPECT_EQ(dec.Push(0x98), "");
  EXPECT_EQ(dec.Push(0x80), "😀");
  // An ill-formed byte is known at once and comes out as U+FFFD.
  EXPECT_EQ(dec.Push(0xFF), "\xEF\xBF\xBD");
  // A lead byte followed by a non-continuation: U+FFFD, then the character.
  EXPECT_EQ(dec.Push(0xE4), "");
  EXPECT_EQ(dec.Push('a'),
            "\xEF\xBF\xBD"
            "a");
  EXPECT_EQ(dec.Push(kImEnd), "<|im_end|>");
  EXPECT_EQ(dec.Push(0xE4), "");
  EXPECT_EQ(dec.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(dec.Flush(), "");

  StreamDecoder skip(*tok, /*skip_special=*/true);
  EXPECT_EQ(skip.Push(kImEnd), "");
  EXPECT_EQ(skip.Push(kMask), "<mask>");
}

TEST(StreamDecoderTest, ConcatenationEqualsDecode) {
  auto tok = Tiny();
  for (const std::string& text : RoundTripTexts()) {
    const auto ids = tok->Encode(text);
    StreamDecoder dec(*tok);
    std::string streamed;
    for (int32_t id : ids) streamed += dec.Push(id);
    streamed += dec.Flush();
    EXPECT_EQ(streamed, tokenizer_internal::ToValidUtf8(tok->Decode(ids))) << text;
  }
}
TEST(TokenizerTest, RandomRoundTrip) {
  RandomRoundTrip(*Tiny(), 4000, 1);
  RandomRoundTrip(*Tiny({.ignore_merges = true, .pattern = kLlama3Pattern}), 2000, 2);
}

TEST(TokenizerTest, LongInputIsLinear) {
  // A 1 MB run of one letter and one of whitespace: one word each, no quadratic regex blowup.
  auto tok = Tiny();
  const std::string letters(1 << 20, 'l');
  const auto ids = tok->Encode(letters);
  EXPECT_EQ(ids.size(), (1u << 20) / 2);  // "ll" pairs
  const std::string spaces = std::string(1 << 20, ' ') + "x";
  EXPECT_EQ(tok->Decode(tok->Encode(spaces)), spaces);
}

TEST(TokenizerTest, ConcurrentEncodeIsConsistent) {
  auto tok = Tiny();
  const std::string text = "the hello world, 中文 <|im_end|> again and again";
  const auto expected = tok->Encode(text);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        if (tok->Encode(text + std::to_string(i)).size() < expected.size()) ++mismatches;
        if (tok->Encode(text) != expected) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

// --- bad files -------------------------------------------------------------------------------

Status LoadError(const json& j) {
  auto tok = Tokenizer::FromJson(j.dump(), "bad/tokenizer.json");
  return tok.status();
}

TEST(TokenizerErrorsTest, MissingFileNamesIt) {
  auto tok = Tokenizer::FromFile("/nonexistent/dir/tokenizer.json");
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), StatusCode::kNotFound);
  EXPECT_NE(tok.status().message().find("/nonexistent/dir/tokenizer.json"), std::string::npos);
}

TEST(TokenizerErrorsTest, FileErrorsNameTheFile) {
  const std::string path = ::testing::TempDir() + "/kvstar_tok_bad.json";
  ASSERT_TRUE(WriteStringToFile(path, "{\"model\": {\"type\": \"BPE\"").ok());
  auto tok = Tokenizer::FromFile(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(tok.status().message().find(path), std::string::npos) << tok.status().ToString();
  EXPECT_NE(tok.status().message().find("not valid JSON"), std::string::npos);
  std::filesystem::remove(path);
}

TEST(TokenizerErrorsTest, UnsupportedModelTypes) {
  for (const char* type : {"WordPiece", "Unigram", "WordLevel"}) {
    json j = TinyTokenizerJson({});
    j["model"]["type"] = type;
    const Status s = LoadError(j);
    EXPECT_EQ(s.code(), StatusCode::kUnimplemented) << s.ToString();
    EXPECT_NE(s.message().find(type), std::string::npos) << s.ToString();
    EXPECT_NE(s.message().find("bad/tokenizer.json"), std::string::npos) << s.ToString();
  }
}

TEST(TokenizerErrorsTest, MalformedContent) {
  struct Case {
    std::function<void(json&)> edit;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {[](json& j) { j.erase("model"); }, "\"model\" is missing"},
      {[](json& j) { j["model"].erase("vocab"); }, "model.vocab"},
      {[](json& j) { j["model"].erase("merges"); }, "model.merges"},
      {[](json& j) { j["model"]["merges"].push_back("Ġ zz"); }, "\"zz\", which is not in"},
      {[](json& j) { j["model"]["merges"].push_back("w o"); }, "produces \"wo\""},
      {[](json& j) { j["model"]["merges"].push_back("a b c"); }, "not two tokens"},
      {[](json& j) { j["model"]["merges"].push_back(json::array({"a"})); }, "model.merges[7]"},
      {[](json& j) { j["model"]["vocab"]["x1"] = "seven"; }, "not a valid id"},
      {[](json& j) {
         j["added_tokens"].push_back({{"content", "x"}});
       },
       "added_tokens[5]"},
      {[](json& j) {
         j["normalizer"] = {{"type", "Lowercase"}};
       },
       "Lowercase"},
      {[](json& j) {
         j["pre_tokenizer"] = {{"type", "Whitespace"}};
       },
       "Whitespace"},
      {[](json& j) { j["pre_tokenizer"] = nullptr; }, "no ByteLevel"},
      {[](json& j) {
         j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "(ab"}};
       },
       "does not compile"},
      {[](json& j) {
         j["decoder"] = {{"type", "WordPiece"}};
       },
       "decoder \"WordPiece\""},
      {[](json& j) {
         j["post_processor"] = {{"type", "TemplateProcessing"},
                                {"single", {{{"SpecialToken", {{"id", "<x>"}}}}}}};
       },
       "\"<x>\""},
      {[](json& j) { j["model"]["ignore_merges"] = "yes"; }, "malformed tokenizer JSON"},
      {[](json& j) { j = json::array(); }, "not a JSON object"},
  };
  for (const Case& c : cases) {
    json j = TinyTokenizerJson({});
    c.edit(j);
    const Status s = LoadError(j);
    EXPECT_FALSE(s.ok()) << c.expect;
    EXPECT_NE(s.message().find(c.expect), std::string::npos) << s.ToString();
    EXPECT_NE(s.message().find("bad/tokenizer.json"), std::string::npos) << s.ToString();
  }
}

}  // namespace
}  // namespace kvstar::tokenizer_test
