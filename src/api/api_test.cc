// The embedding API on the shipped demo model. This file includes the public headers only: the
// target sees include/ and nothing of src/.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kvstar/kvstar.h"

namespace kvstar {
namespace {

const std::string kModel = std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The demo model's passkey task (`kvstar task --task passkey`): about 1000 tokens of filler with
// the key in the middle, then the question.
std::string PasskeyPrompt(const std::string& key) {
  const std::string filler =
      " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
  std::string p =
      "A pass key is hidden in a long stretch of filler text below. Find it and keep it in mind.\n";
  for (int i = 0; i < 18; ++i) p += filler;
  p += " Important: the pass key is " + key + ". Do not forget " + key + ".";
  for (int i = 0; i < 18; ++i) p += filler;
  p += "\nWhat pass key was given in the text above? The pass key is";
  return p;
}

LlmOptions Kvstar() {
  LlmOptions o;
  o.mode = "kvstar";
  o.threads = 2;
  o.block_tokens = 16;  // about 60 blocks per layer for a 1000-token prompt
  o.kvstar_settings = ReadFile(kModel + "/kvstar.json");
  return o;
}

TEST(LlmTest, KvstarAnswersAPasskeyHoldingAQuarterOfTheBlocks) {
  auto kv = Llm::Open(kModel, Kvstar());
  ASSERT_TRUE(kv.ok()) << kv.status().ToString();
  LlmOptions dense_options = Kvstar();
  dense_options.mode = "dense";
  auto dense = Llm::Open(kModel, dense_options);
  ASSERT_TRUE(dense.ok()) << dense.status().ToString();
  EXPECT_EQ((*kv)->device_name(), "cpu");

  TextRequest req{.prompt = PasskeyPrompt("37235"), .max_new_tokens = 8};
  auto a = (*kv)->Complete(req);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto d = (*dense)->Complete(req);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(a->text, " 37235");
  EXPECT_EQ(d->text, " 37235");
  EXPECT_EQ(a->finish_reason, "eos");
  EXPECT_GT(a->prompt_tokens, 900u);
  // kvstar keeps the windows and a quarter of the other blocks: well under half of dense's KV.
  EXPECT_GT(a->device_kv_bytes, 0u);
  EXPECT_LT(a->device_kv_bytes * 2, d->device_kv_bytes)
      << a->device_kv_bytes << " vs " << d->device_kv_bytes;
  EXPECT_GT(a->prefill_tokens_per_second, 0);
  EXPECT_GT(a->decode_tokens_per_second, 0);
  EXPECT_GT(a->decode_seconds, 0);
}

TEST(LlmTest, StreamedTextIsTheTextAndTokensGiveTheSameResult) {
  auto llm = Llm::Open(kModel, {.threads = 2});
  ASSERT_TRUE(llm.ok()) << llm.status().ToString();
  std::string streamed;
  size_t pieces = 0;
  TextRequest req{.prompt = "The grass is green. The sky is", .max_new_tokens = 24};
  req.on_text = [&](std::string_view piece) {
    EXPECT_FALSE(piece.empty());
    streamed += piece;
    ++pieces;
  };
  auto r = (*llm)->Complete(req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->text.empty());
  EXPECT_EQ(streamed, r->text);
  EXPECT_GT(pieces, 1u);
  std::vector<int32_t> ids = r->tokens;
  if (r->finish_reason == "eos") ids.pop_back();
  EXPECT_EQ((*llm)->Decode(ids), r->text);

  // The same prompt as ids.
  TextRequest by_ids{.prompt_tokens = (*llm)->Encode(req.prompt), .max_new_tokens = 24};
  EXPECT_EQ(by_ids.prompt_tokens.size(), r->prompt_tokens);
  auto r2 = (*llm)->Complete(by_ids);
  ASSERT_TRUE(r2.ok()) << r2.status().ToString();
  EXPECT_EQ(r2->tokens, r->tokens);
  EXPECT_EQ(r2->text, r->text);
}

TEST(LlmTest, ConcurrentRequestsGiveTheResultsOfSerialOnes) {
  auto llm = Llm::Open(kModel, Kvstar());
  ASSERT_TRUE(llm.ok()) << llm.status().ToString();
  const std::vector<std::string> keys = {"51807", "26493"};
  std::vector<std::string> serial;
  for (const std::string& k : keys) {
    auto r = (*llm)->Complete({.prompt = PasskeyPrompt(k), .max_new_tokens = 8});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    serial.push_back(r->text);
  }
  EXPECT_EQ(serial, std::vector<std::string>({" " + keys[0], " " + keys[1]}));
  std::vector<std::string> concurrent(keys.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < keys.size(); ++i) {
    threads.emplace_back([&, i] {
      auto r = (*llm)->Complete({.prompt = PasskeyPrompt(keys[i]), .max_new_tokens = 8});
      concurrent[i] = r.ok() ? r->text : r.status().ToString();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(concurrent, serial);
}

TEST(LlmTest, CancelEndsTheRequest) {
  auto llm = Llm::Open(kModel, {.threads = 2});
  ASSERT_TRUE(llm.ok()) << llm.status().ToString();
  std::atomic<bool> cancel{false};
  TextRequest req{.prompt = "The grass is green.", .max_new_tokens = 200, .cancel = &cancel};
  req.on_text = [&](std::string_view) { cancel = true; };
  auto r = (*llm)->Complete(req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->finish_reason, "cancelled");
  EXPECT_LT(r->tokens.size(), 8u);
}

TEST(LlmTest, FileStoreReusesThePromptOnTheSecondRequest) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("kvstar_api_test_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  LlmOptions o = Kvstar();
  o.store = "file:" + dir.string();
  TextRequest req{.prompt = PasskeyPrompt("80417"), .max_new_tokens = 8};
  std::vector<TextResult> runs;
  for (int i = 0; i < 2; ++i) {  // a new Llm each time: the blocks come from the files
    auto llm = Llm::Open(kModel, o);
    ASSERT_TRUE(llm.ok()) << llm.status().ToString();
    auto r = (*llm)->Complete(req);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    runs.push_back(*r);
  }
  std::filesystem::remove_all(dir);
  EXPECT_EQ(runs[0].reused_prompt_tokens, 0u);
  EXPECT_GT(runs[1].reused_prompt_tokens, runs[1].prompt_tokens / 2);
  EXPECT_EQ(runs[0].text, " 80417");
  EXPECT_EQ(runs[1].tokens, runs[0].tokens);
}

#ifdef KVSTAR_HAVE_CUDA
// The CUDA engine behind the same API (skipped where no GPU is visible): dense and kvstar give
// the CPU engine's answer.
TEST(LlmTest, CudaAnswersAsTheCpuDoes) {
  TextRequest req{.prompt = PasskeyPrompt("64150"), .max_new_tokens = 8};
  auto cpu = Llm::Open(kModel, Kvstar());
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  auto expected = (*cpu)->Complete(req);
  ASSERT_TRUE(expected.ok()) << expected.status().ToString();
  EXPECT_EQ(expected->text, " 64150");
  for (const char* mode : {"dense", "kvstar"}) {
    LlmOptions o = Kvstar();
    o.device = "cuda";
    o.mode = mode;
    auto llm = Llm::Open(kModel, o);
    if (!llm.ok() && llm.status().message().find("no CUDA device") != std::string::npos) {
      GTEST_SKIP() << llm.status().ToString();
    }
    ASSERT_TRUE(llm.ok()) << llm.status().ToString();
    EXPECT_NE((*llm)->device_name(), "cpu");
    auto r = (*llm)->Complete(req);
    ASSERT_TRUE(r.ok()) << mode << ": " << r.status().ToString();
    EXPECT_EQ(r->text, expected->text) << mode;
    EXPECT_EQ(r->finish_reason, "eos") << mode;
  }
}
#endif

// Each bad option or input: an error (no abort, no exception) whose message names it.
TEST(LlmTest, BadOptionsAndInputsAreOneClearError) {
  struct Case {
    LlmOptions options;
    std::string expect;
  };
  std::vector<Case> cases;
  auto add = [&](auto edit, std::string expect) {
    LlmOptions o = Kvstar();
    edit(o);
    cases.push_back({o, std::move(expect)});
  };
  add([](LlmOptions& o) { o.device = "tpu"; }, "LlmOptions::device 'tpu'");
  add([](LlmOptions& o) { o.mode = "sparse"; }, "unknown decode mode 'sparse'");
  add([](LlmOptions& o) { o.mode = "offload"; }, "CUDA backend only");
  add([](LlmOptions& o) { o.kv_dtype = "f16"; }, "LlmOptions::kv_dtype 'f16'");
  add([](LlmOptions& o) { o.block_tokens = 12; }, "block_tokens must be a multiple of 8");
  add([](LlmOptions& o) { o.kvstar_settings = R"({"sparse_ratio": 2})"; }, "sparse_ratio");
  add([](LlmOptions& o) { o.kvstar_settings = R"({"sparse_rate": 0.2})"; }, "sparse_rate");
  add([](LlmOptions& o) { o.kvstar_settings = "{"; }, "LlmOptions::kvstar_settings");
  add([](LlmOptions& o) { o.retrieval_device = "gpu"; }, "retrieval_device gpu");
  add([](LlmOptions& o) { o.host_tier = "exclusive"; }, "host_tier exclusive");
  add([](LlmOptions& o) { o.host_tier = "both"; }, "LlmOptions::host_tier 'both'");
  add([](LlmOptions& o) { o.retrieval_threads = -1; }, "retrieval_threads");
#ifndef KVSTAR_HAVE_CUDA
  add([](LlmOptions& o) { o.device = "cuda"; }, "-DKVSTAR_CUDA=ON");
#else
  // The CUDA runner's own checks, made before any weights are read (no GPU needed).
  const std::string unused = "/tmp/kvstar-api-test-unused";
  const std::string settings = Kvstar().kvstar_settings;
  struct CudaCase {
    const char *mode, *host_tier;
    std::string store, kvstar_settings, expect;
  };
  for (const CudaCase& c :
       {CudaCase{"dense", "inclusive", "file:" + unused, settings,
                 "are kvstar settings (mode dense"},
        CudaCase{"offload", "exclusive", "dram", settings, "are kvstar settings (mode offload"},
        CudaCase{"kvstar", "inclusive", "tiered:" + unused, settings, "already the DRAM tier"},
        CudaCase{"kvstar", "inclusive", "dram", R"({"sparse_ratio": 2})", "sparse_ratio"},
        CudaCase{"oracle", "inclusive", "dram", settings, "oracle"}}) {
    add(
        [&](LlmOptions& o) {
          o.device = "cuda";
          o.mode = c.mode;
          o.host_tier = c.host_tier;
          o.store = c.store;
          o.kvstar_settings = c.kvstar_settings;
        },
        c.expect);
  }
  add(
      [](LlmOptions& o) {
        o.device = "cuda";
        o.retrieval_device = "gpu";
        o.kvstar_settings = R"({"retrieval_stride": 65})";
      },
      "at most 64 queries per group");
#endif
  for (const Case& c : cases) {
    auto llm = Llm::Open(kModel, c.options);
    ASSERT_FALSE(llm.ok()) << c.expect;
    EXPECT_NE(llm.status().message().find(c.expect), std::string::npos)
        << "expected '" << c.expect << "' in: " << llm.status().ToString();
  }

  auto missing = Llm::Open(kModel + "/no-such-dir", {});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no-such-dir"), std::string::npos)
      << missing.status().ToString();

  auto llm = Llm::Open(kModel, {.threads = 2});
  ASSERT_TRUE(llm.ok()) << llm.status().ToString();
  auto empty = (*llm)->Complete({});
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), StatusCode::kInvalidArgument);
  TextRequest too_long;
  too_long.prompt_tokens.assign((*llm)->max_position() + 1, 5);
  auto r = (*llm)->Complete(too_long);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(std::to_string((*llm)->max_position())), std::string::npos)
      << r.status().ToString();
  TextRequest bad_id{.prompt_tokens = {1, static_cast<int32_t>((*llm)->vocab_size())}};
  EXPECT_FALSE((*llm)->Complete(bad_id).ok());
}

}  // namespace
}  // namespace kvstar
