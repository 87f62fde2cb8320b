// The fixture and helpers of the whole-model CUDA tests (cuda_engine_test.cc: golden logits,
// dense, offload, kvpr, generate; cuda_kvstar_test.cc: kvstar). One executable, label gpu.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "base/file_util.h"
#include "engine/cuda/cuda_batch.h"
#include "engine/cuda/cuda_generate.h"
#include "engine/cuda/cuda_model.h"
#include "engine/engine.h"
#include "kv/dense_policy.h"
#include "kv/device_pool.h"
#include "kv/kvstar_policy.h"
#include "model/config.h"
#include "model/transformer.h"
#include "model/weights.h"
#include "sparse/retriever.h"
#include "store/block_id.h"
#include "store/block_store.h"

namespace kvstar::cuda::testing {

// Max |a - b| over a row, relative to the row's max |b|.
inline double RowError(const float* a, const float* b, size_t n) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < n; ++i) {
    err = std::max(err, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return err / std::max(scale, 1e-6);
}

class CudaEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
    auto ctx = DeviceContext::Create(0);
    ASSERT_TRUE(ctx.ok()) << ctx.status().ToString();
    ctx_ = std::move(*ctx);
  }

  // The host weights (no tokenizer: the tests use token ids) and the same weights on the device.
  void LoadModel(const std::string& dir) {
    auto cfg = LoadConfig(dir);
    ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
    config_ = *cfg;
    auto w = ModelWeights::Load(dir, config_);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    weights_ = std::move(*w);
    auto model = CudaModel::Upload(*ctx_, config_, *weights_);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    model_ = std::move(*model);
  }

  // Logits of every prompt position from the CPU forward pass.
  std::vector<float> CpuPromptLogits(const std::vector<int32_t>& prompt,
                                     DType kv_dtype = DType::kF32) {
    ThreadPool threads(2);
    KvGeometry g{config_.num_kv_heads, config_.head_dim, 128, kv_dtype};
    DevicePool pool(g, config_.num_layers * (prompt.size() / 128 + 2));
    DensePolicy kv(pool, threads, config_.num_layers, config_.num_heads,
                   1.0f / std::sqrt(static_cast<float>(config_.head_dim)));
    Transformer t(config_, *weights_, threads);
    std::vector<float> logits(prompt.size() * config_.vocab_size);
    const Status st = t.Prefill(prompt, 0, kv, 64, LogitsMode::kAll, logits.data());
    EXPECT_TRUE(st.ok()) << st.ToString();
    return logits;
  }

  std::unique_ptr<CudaBatch> MakeBatch(KvMode mode, size_t batch, size_t max_tokens, DType kv_dtype,
                                       size_t block_tokens, size_t split = 0, size_t chunk = 64,
                                       const KvstarConfig& kvstar = {}) {
    BatchOptions o;
    o.kvstar = kvstar;
    o.retrieval_threads = 2;
    o.gpu_scoring = gpu_scoring_;
    o.exclusive_host = exclusive_host_;
    o.gpu_score_spread = gpu_score_spread_;
    o.gpu_score_ctas = gpu_score_ctas_;
    o.gpu_score_head_major = gpu_score_head_major_;
    o.kvstar_cache_blocks = cache_blocks_;
    if (l2_prefetch_bytes_ >= 0) o.l2_prefetch_bytes = static_cast<size_t>(l2_prefetch_bytes_);
    o.fuse_swiglu = fuse_swiglu_;
    o.mode = mode;
    o.batch = batch;
    o.max_tokens = max_tokens;
    o.kv_dtype = kv_dtype;
    o.block_tokens = block_tokens;
    o.prefill_chunk = chunk;
    o.kvpr_split = split;
    auto b = CudaBatch::Create(*model_, o);
    EXPECT_TRUE(b.ok()) << b.status().ToString();
    return b.ok() ? std::move(*b) : nullptr;
  }

  // Deterministic kvstar on CUDA against the CPU policy, step by step (below).
  // `k` gives first_selection, sync_steps, select_per_kv_head and softmax_scope.
  void CompareWithCpuPolicy(KvstarConfig k);
  void CompareGpuWithCpuScoring(KvstarConfig k);

  bool gpu_scoring_ = false;           // kvstar batches made by MakeBatch score on the GPU
  bool exclusive_host_ = false;        // ... and keep only the blocks off the device on the host
  size_t gpu_score_spread_ = 1;        // ... and queue a group's scoring over this many steps
  size_t gpu_score_ctas_ = 0;          // ... on at most this many CTAs (0: the whole grid)
  bool gpu_score_head_major_ = false;  // ... from head-major representations
  size_t cache_blocks_ = 0;            // ... with this many device-cache slots (not deterministic)
  int64_t l2_prefetch_bytes_ = -1;     // BatchOptions::l2_prefetch_bytes (negative: the default)
  bool fuse_swiglu_ = true;            // BatchOptions::fuse_swiglu
  std::unique_ptr<DeviceContext> ctx_;
  ModelConfig config_;
  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<CudaModel> model_;
};

inline std::string Golden(const std::string& name) {
  return std::string(KVSTAR_TEST_DATA) + "/golden/" + name;
}

struct RunOut {
  std::vector<std::vector<int32_t>> tokens;  // [batch][steps]
  std::vector<float> last_logits;            // [batch][vocab] of the last step
  BatchStats stats;
};

// Prefills the prompts (one per sequence) and decodes `steps` greedy tokens for all of them.
inline RunOut Decode(CudaBatch& batch, const std::vector<std::vector<int32_t>>& prompts,
                     size_t steps, size_t vocab) {
  RunOut out;
  const size_t B = prompts.size();
  std::vector<int32_t> cur(B), next(B);
  std::vector<float> logits(vocab);
  for (size_t b = 0; b < B; ++b) {
    const Status st = batch.Prefill(b, prompts[b], logits.data());
    EXPECT_TRUE(st.ok()) << st.ToString();
    cur[b] = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  out.tokens.assign(B, {});
  out.last_logits.resize(B * vocab);
  for (size_t t = 0; t < steps; ++t) {
    for (size_t b = 0; b < B; ++b) out.tokens[b].push_back(cur[b]);
    const Status st = batch.Step(cur, next, t + 1 == steps ? out.last_logits.data() : nullptr);
    EXPECT_TRUE(st.ok()) << st.ToString();
    cur = next;
  }
  out.stats = batch.stats();
  return out;
}

// Two prompts of different lengths (not multiples of the block size): a repeated phrase of
// token ids, so that the model continues with structure, then a different tail.
inline std::vector<std::vector<int32_t>> DemoPrompts(size_t vocab) {
  std::vector<int32_t> a, b;
  uint32_t h = 12345;
  std::vector<int32_t> phrase;
  for (int i = 0; i < 23; ++i) {
    h = h * 1103515245u + 12345u;
    phrase.push_back(static_cast<int32_t>((h >> 8) % vocab));
  }
  for (int r = 0; r < 12; ++r) a.insert(a.end(), phrase.begin(), phrase.end());
  for (int r = 0; r < 3; ++r) b.insert(b.end(), phrase.begin(), phrase.end());
  for (int i = 0; i < 9; ++i) a.push_back(phrase[i]), b.push_back(phrase[(i * 7) % 23]);
  return {a, b};
}

// A label for the printed comparisons.
inline std::string Describe(const KvstarConfig& k) {
  return "first_selection " + k.first_selection + ", sync_steps " + std::to_string(k.sync_steps) +
         (k.select_per_kv_head ? ", per KV head" : "") +
         (k.softmax_scope == "all" ? ", softmax_scope all" : "");
}

}  // namespace kvstar::cuda::testing
