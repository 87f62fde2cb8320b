// Golden tests: logits and greedy continuations of the tiny Qwen2 and Llama models against the
// Hugging Face transformers outputs written by tools/make_golden.py (float32 compute over the
// stored bf16 / f16 weights).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "base/file_util.h"
#include "engine/engine.h"

namespace kvstar {
namespace {

struct Case {
  std::string model;
  DType kv_dtype;
  size_t block_tokens;
  size_t chunk;
};

std::string ModelDir(const std::string& name) {
  return std::string(KVSTAR_TEST_DATA) + "/golden/" + name;
}

nlohmann::json LoadGolden(const std::string& name) {
  auto text = ReadFileToString(ModelDir(name) + "/golden.json");
  KVSTAR_CHECK(text.ok(), "%s", text.status().ToString().c_str());
  return nlohmann::json::parse(*text);
}

// Max |a - b| over a row, relative to the row's max |b|.
double RowError(const float* a, const std::vector<float>& b) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    err = std::max(err, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return err / std::max(scale, 1e-6);
}

class GoldenTest : public ::testing::TestWithParam<Case> {};

TEST_P(GoldenTest, LogitsMatchTransformers) {
  const Case& c = GetParam();
  EngineOptions opt;
  opt.threads = 2;
  opt.kv_dtype = c.kv_dtype;
  opt.block_tokens = c.block_tokens;
  auto engine = Engine::Load(ModelDir(c.model), opt);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  const nlohmann::json golden = LoadGolden(c.model);
  // Tolerance: f32 KV differs from transformers only by summation order (~1e-6 relative);
  // bf16 KV rounds K and V to 8 bits of mantissa, about 0.4% per element.
  const double tol = c.kv_dtype == DType::kF32 ? 1e-4 : 3e-2;
  const size_t vocab = (*engine)->config().vocab_size;
  for (const auto& p : golden["prompts"]) {
    const std::vector<int32_t> ids = p["ids"].get<std::vector<int32_t>>();
    auto logits = (*engine)->PromptLogits(ids, c.chunk);
    ASSERT_TRUE(logits.ok()) << logits.status().ToString();
    const auto& positions = p["logits"]["positions"];
    const auto& values = p["logits"]["values"];
    for (size_t i = 0; i < positions.size(); ++i) {
      const size_t pos = positions[i].get<size_t>();
      const std::vector<float> ref = values[i].get<std::vector<float>>();
      ASSERT_EQ(ref.size(), vocab);
      EXPECT_LT(RowError(logits->data() + pos * vocab, ref), tol)
          << c.model << " prompt " << p["name"] << " position " << pos;
    }
  }
}

TEST_P(GoldenTest, GreedyContinuationMatchesTransformers) {
  const Case& c = GetParam();
  if (c.kv_dtype != DType::kF32) GTEST_SKIP() << "greedy tokens are compared with f32 KV only";
  EngineOptions opt;
  opt.threads = 2;
  opt.kv_dtype = c.kv_dtype;
  opt.block_tokens = c.block_tokens;
  opt.prefill_chunk = c.chunk;
  auto engine = Engine::Load(ModelDir(c.model), opt);
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  const nlohmann::json golden = LoadGolden(c.model);
  for (const auto& p : golden["prompts"]) {
    GenerateRequest req;
    req.prompt = p["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> expected = p["greedy"].get<std::vector<int32_t>>();
    req.max_new_tokens = expected.size();
    auto result = (*engine)->Generate(req);
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    EXPECT_EQ(result->tokens, expected) << c.model << " prompt " << p["name"];
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, GoldenTest,
    ::testing::Values(Case{"qwen2_tiny", DType::kF32, 128, 256},
                      Case{"qwen2_tiny", DType::kF32, 16, 37},  // many blocks, odd chunks
                      Case{"qwen2_tiny", DType::kBF16, 32, 100},
                      Case{"llama_tiny", DType::kF32, 128, 256},
                      Case{"llama_tiny", DType::kF32, 32, 1},  // token-by-token prefill
                      Case{"llama_tiny", DType::kBF16, 64, 128}),
    [](const ::testing::TestParamInfo<Case>& param_info) {
      return param_info.param.model + "_" + DTypeName(param_info.param.kv_dtype) + "_bt" +
             std::to_string(param_info.param.block_tokens) + "_chunk" +
             std::to_string(param_info.param.chunk);
    });

}  // namespace
}  // namespace kvstar
