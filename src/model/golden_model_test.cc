// Loads the golden model directories written by tools/make_golden.py (Hugging Face transformers)
// and checks that config parsing and weight loading agree with what transformers saved.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>
#include <string>

#include "base/file_util.h"
#include "model/config.h"
#include "model/rope.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace kvstar {
namespace {

std::string GoldenDir(const char* name) {
  return std::string(KVSTAR_TEST_DATA) + "/golden/" + name;
}

bool HasConfig(const std::string& dir) {
  struct stat st;
  return ::stat((dir + "/config.json").c_str(), &st) == 0;
}

TEST(GoldenModelTest, Qwen2Tiny) {
  const std::string dir = GoldenDir("qwen2_tiny");
  if (!HasConfig(dir)) GTEST_SKIP() << dir << " not present (produced by tools/make_golden.py)";
  auto cfg = LoadConfig(dir);
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_EQ(cfg->arch, Architecture::kQwen2);
  EXPECT_EQ(cfg->hidden_size, 128u);
  EXPECT_EQ(cfg->intermediate_size, 256u);
  EXPECT_EQ(cfg->num_layers, 3u);
  EXPECT_EQ(cfg->num_heads, 4u);
  EXPECT_EQ(cfg->num_kv_heads, 2u);
  EXPECT_EQ(cfg->head_dim, 32u);
  EXPECT_EQ(cfg->vocab_size, 1000u);
  EXPECT_EQ(cfg->max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(cfg->rope_theta, 10000.0);  // from transformers 5 "rope_parameters"
  EXPECT_TRUE(cfg->rope_scaling.type.empty() || cfg->rope_scaling.type == "default");
  EXPECT_FLOAT_EQ(cfg->rms_norm_eps, 1e-6f);
  EXPECT_TRUE(cfg->tie_word_embeddings);
  EXPECT_TRUE(cfg->qkv_bias);
  EXPECT_EQ(cfg->eos_token_ids, std::vector<int32_t>{0});
  EXPECT_FALSE(cfg->bos_token_id.has_value());
  EXPECT_EQ(cfg->torch_dtype, DType::kBF16);

  auto w = ModelWeights::Load(dir, *cfg);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ((*w)->weight_dtype(), DType::kBF16);
  EXPECT_EQ((*w)->lm_head.data, (*w)->embed.data);
  EXPECT_FALSE((*w)->layers[2].v_bias.empty());
  EXPECT_EQ((*w)->weight_bytes(), cfg->num_parameters() * 2);
}

TEST(GoldenModelTest, LlamaTinySharded) {
  const std::string dir = GoldenDir("llama_tiny");
  if (!HasConfig(dir)) GTEST_SKIP() << dir << " not present (produced by tools/make_golden.py)";
  auto cfg = LoadConfig(dir);
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_EQ(cfg->arch, Architecture::kLlama);
  EXPECT_EQ(cfg->hidden_size, 256u);
  EXPECT_EQ(cfg->head_dim, 64u);
  EXPECT_EQ(cfg->num_layers, 2u);
  EXPECT_EQ(cfg->num_heads, 4u);
  EXPECT_EQ(cfg->num_kv_heads, 1u);
  EXPECT_EQ(cfg->vocab_size, 1200u);
  EXPECT_EQ(cfg->max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(cfg->rope_theta, 500000.0);
  EXPECT_EQ(cfg->rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(cfg->rope_scaling.factor, 8.0);
  EXPECT_EQ(cfg->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_FLOAT_EQ(cfg->rms_norm_eps, 1e-5f);
  EXPECT_FALSE(cfg->tie_word_embeddings);
  EXPECT_FALSE(cfg->qkv_bias);
  EXPECT_EQ(cfg->eos_token_ids, std::vector<int32_t>{1});
  EXPECT_EQ(cfg->bos_token_id, std::optional<int32_t>(0));
  EXPECT_EQ(cfg->torch_dtype, DType::kF16);
  EXPECT_EQ(RopeInvFreq(*cfg).size(), 32u);

  auto set = TensorSet::Open(dir);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_GT((*set)->num_files(), 1u);
  auto w = ModelWeights::Load(dir, *cfg);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ((*w)->weight_dtype(), DType::kF16);
  EXPECT_NE((*w)->lm_head.data, (*w)->embed.data);

  // transformers wrote its own counts into the index: they must match ours.
  auto index_text = ReadFileToString(dir + "/model.safetensors.index.json");
  ASSERT_TRUE(index_text.ok());
  const auto index = nlohmann::json::parse(*index_text);
  if (index["metadata"].contains("total_parameters")) {
    EXPECT_EQ(index["metadata"]["total_parameters"].get<size_t>(), cfg->num_parameters());
  }
  EXPECT_EQ(index["metadata"]["total_size"].get<size_t>(), (*w)->weight_bytes());
}

}  // namespace
}  // namespace kvstar
