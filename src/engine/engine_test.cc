// Engine behaviour: stop conditions, cancellation, bad requests, chunk-size invariance.
#include "engine/engine.h"

#include <gtest/gtest.h>

#include <atomic>

namespace kvstar {
namespace {

std::string QwenDir() { return std::string(KVSTAR_TEST_DATA) + "/golden/qwen2_tiny"; }

std::unique_ptr<Engine> LoadQwen(EngineOptions opt = {}) {
  opt.threads = 2;
  auto e = Engine::Load(QwenDir(), opt);
  KVSTAR_CHECK(e.ok(), "%s", e.status().ToString().c_str());
  return std::move(*e);
}

TEST(EngineTest, RejectsBadRequests) {
  auto engine = LoadQwen();
  GenerateRequest req;
  EXPECT_EQ(engine->Generate(req).status().code(), StatusCode::kInvalidArgument);  // empty
  req.prompt = {1, 2, 100000};
  auto r = engine->Generate(req);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("100000"), std::string::npos);
  req.prompt.assign(static_cast<size_t>(engine->config().max_position_embeddings), 5);
  r = engine->Generate(req);
  EXPECT_EQ(r.status().code(), StatusCode::kOutOfRange);
  EXPECT_NE(r.status().message().find("max_position_embeddings"), std::string::npos);
  req.prompt = {1, 2, 3};
  req.sampling.temperature = -2.0f;
  EXPECT_EQ(engine->Generate(req).status().code(), StatusCode::kInvalidArgument);
}

TEST(EngineTest, RejectsBadOptions) {
  EngineOptions opt;
  opt.block_tokens = 12;
  EXPECT_EQ(Engine::Load(QwenDir(), opt).status().code(), StatusCode::kInvalidArgument);
  opt = {};
  opt.mode = "magic";
  auto e = Engine::Load(QwenDir(), opt);
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("magic"), std::string::npos);
}

TEST(EngineTest, StopsOnStopIdAndLength) {
  auto engine = LoadQwen({.kv_dtype = DType::kF32});
  GenerateRequest req;
  req.prompt = {5, 6, 7, 8, 9};
  req.max_new_tokens = 10;
  auto full = engine->Generate(req);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->tokens.size(), 10u);
  EXPECT_EQ(full->finish_reason, "length");
  // Make the 4th generated token a stop token: generation ends right there.
  req.stop_ids = {full->tokens[3]};
  auto stopped = engine->Generate(req);
  ASSERT_TRUE(stopped.ok());
  const auto first = std::find(full->tokens.begin(), full->tokens.end(), full->tokens[3]);
  EXPECT_EQ(stopped->tokens.size(), static_cast<size_t>(first - full->tokens.begin()) + 1);
  EXPECT_EQ(stopped->finish_reason, "eos");
}

TEST(EngineTest, CancelStopsEarlyAndReleasesBlocks) {
  auto engine = LoadQwen();
  const size_t free_before = engine->device_pool().free_slots();
  std::atomic<bool> cancel{false};
  GenerateRequest req;
  req.prompt.assign(300, 11);
  req.max_new_tokens = 50;
  req.cancel = &cancel;
  req.on_token = [&](int32_t) { cancel = true; };
  auto r = engine->Generate(req);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->finish_reason, "cancelled");
  EXPECT_EQ(r->tokens.size(), 1u);
  EXPECT_GT(r->kv.device_blocks, 0u);
  EXPECT_EQ(engine->device_pool().free_slots(), free_before);
}

TEST(EngineTest, PoolExhaustionIsAClearError) {
  EngineOptions opt;
  opt.block_tokens = 16;
  opt.device_kv_budget = 3 * 4 * 16 * 2 * 2 * 32 * 2;  // 4 blocks per layer (3 layers)
  auto engine = LoadQwen(opt);
  GenerateRequest req;
  req.prompt.assign(100, 3);  // needs 7 blocks per layer
  auto r = engine->Generate(req);
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("--device-kv-budget"), std::string::npos);
  req.prompt.assign(40, 3);  // fits: the failed request gave its blocks back
  req.max_new_tokens = 4;
  EXPECT_TRUE(engine->Generate(req).ok());
}

TEST(EngineTest, SamplingIsSeeded) {
  auto engine = LoadQwen();
  GenerateRequest req;
  req.prompt = {10, 20, 30};
  req.max_new_tokens = 16;
  req.sampling = {.temperature = 1.0f, .top_k = 50, .top_p = 0.95f, .seed = 42};
  auto a = engine->Generate(req);
  auto b = engine->Generate(req);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  req.sampling.seed = 43;
  auto c = engine->Generate(req);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->tokens, c->tokens);
}

}  // namespace
}  // namespace kvstar
