#include "model/shapes.h"

#include <gtest/gtest.h>

namespace kvstar {
namespace {

TEST(ShapesTest, AllNamedShapesAreValid) {
  const auto names = NamedShapeList();
  ASSERT_EQ(names.size(), 7u);
  for (const std::string& name : names) {
    auto c = NamedShape(name);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status().ToString();
    EXPECT_TRUE(ValidateConfig(*c, name).ok()) << name;
    EXPECT_EQ(c->hidden_size, c->num_heads * c->head_dim) << name;
  }
}

TEST(ShapesTest, ParameterCountsOfRealModels) {
  EXPECT_EQ(NamedShape("llama3-8b")->num_parameters(), 8030261248u);  // Llama-3.1-8B
  EXPECT_EQ(NamedShape("llama2-7b")->num_parameters(), 6738415616u);  // Llama-2-7B
  EXPECT_EQ(NamedShape("llama2-7b-32k")->num_parameters(), 6738415616u);
  EXPECT_EQ(NamedShape("llama2-13b")->num_parameters(), 13015864320u);  // Llama-2-13B
  EXPECT_EQ(NamedShape("llama2-7b-32k")->max_position_embeddings, 32768);
  EXPECT_EQ(NamedShape("llama2-7b-32k")->rope_scaling.type, "linear");
  EXPECT_EQ(NamedShape("qwen2.5-14b")->num_parameters(), 14770033664u);  // Qwen2.5-14B
  const size_t small = NamedShape("qwen2-100m")->num_parameters();
  EXPECT_GT(small, 90'000'000u);
  EXPECT_LT(small, 110'000'000u);
  // llama2.c's stories110M has 110M parameters with tied embeddings; untied here (+24.6M).
  const size_t mha = NamedShape("llama-mha-110m")->num_parameters();
  EXPECT_GT(mha, 120'000'000u);
  EXPECT_LT(mha, 140'000'000u);
}

TEST(ShapesTest, KeyFields) {
  auto l3 = NamedShape("llama3-8b");
  EXPECT_EQ(l3->rope_scaling.type, "llama3");
  EXPECT_EQ(l3->group_size(), 4u);
  EXPECT_EQ(l3->kv_bytes_per_token(DType::kBF16), 131072u);
  auto q = NamedShape("qwen2.5-14b");
  EXPECT_EQ(q->arch, Architecture::kQwen2);
  EXPECT_TRUE(q->qkv_bias);
  EXPECT_EQ(q->group_size(), 5u);
  auto l2 = NamedShape("llama2-7b");
  EXPECT_EQ(l2->num_kv_heads, 32u);
  EXPECT_TRUE(l2->rope_scaling.type.empty());
  auto s = NamedShape("qwen2-100m");
  EXPECT_TRUE(s->tie_word_embeddings);
  auto m = NamedShape("llama-mha-110m");
  EXPECT_EQ(m->group_size(), 1u);
  EXPECT_EQ(m->kv_bytes_per_token(DType::kBF16), 36864u);  // 12 layers x 2 x 12 heads x 64 x 2 B
  EXPECT_EQ(m->max_position_embeddings, 131072);
}

TEST(ShapesTest, UnknownName) {
  auto c = NamedShape("gpt-5");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
  EXPECT_NE(c.status().message().find("llama3-8b"), std::string::npos);
}

}  // namespace
}  // namespace kvstar
