// The whole model on CUDA: logits against the golden Hugging Face outputs and against the CPU
// engine; offload and kvpr (every split) give the tokens of dense. Needs a GPU (label gpu).
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

namespace kvstar::cuda {
namespace {

// Max |a - b| over a row, relative to the row's max |b|.
double RowError(const float* a, const float* b, size_t n) {
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

  bool gpu_scoring_ = false;     // kvstar batches made by MakeBatch score on the GPU
  bool exclusive_host_ = false;  // ... and keep only the blocks off the device on the host
  size_t gpu_score_spread_ = 1;  // ... and queue a group's scoring over this many steps
  size_t gpu_score_ctas_ = 0;    // ... on at most this many CTAs (0: the whole grid)
  std::unique_ptr<DeviceContext> ctx_;
  ModelConfig config_;
  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<CudaModel> model_;
};

std::string Golden(const std::string& name) {
  return std::string(KVSTAR_TEST_DATA) + "/golden/" + name;
}

// Logits at every golden position: position 0 from a one-token prefill, the others from decode
// steps (batch 1, f32 KV): the decode path (products with f32 activations, attention over the
// block table).
TEST_F(CudaEngineTest, DecodeLogitsMatchTransformers) {
  // qwen2_tiny has head_dim 32, which the CUDA attention kernel does not support (64..128).
  LoadModel(Golden("llama_tiny"));
  auto text = ReadFileToString(Golden("llama_tiny") + "/golden.json");
  ASSERT_TRUE(text.ok());
  const auto golden = nlohmann::json::parse(*text);
  const size_t vocab = model_->config().vocab_size;
  for (const auto& p : golden["prompts"]) {
    const auto ids = p["ids"].get<std::vector<int32_t>>();
    auto batch = MakeBatch(KvMode::kDense, 1, ids.size() + 8, DType::kF32, 32);
    ASSERT_NE(batch, nullptr);
    std::vector<float> logits(vocab);
    std::vector<std::vector<float>> rows(ids.size());
    ASSERT_TRUE(batch->Prefill(0, std::span(ids).first(1), logits.data()).ok());
    rows[0] = logits;
    for (size_t i = 1; i < ids.size(); ++i) {
      int32_t next = 0;
      ASSERT_TRUE(batch->Step(std::span(&ids[i], 1), std::span(&next, 1), logits.data()).ok());
      rows[i] = logits;
    }
    const auto& positions = p["logits"]["positions"];
    for (size_t i = 0; i < positions.size(); ++i) {
      const size_t pos = positions[i].get<size_t>();
      const auto ref = p["logits"]["values"][i].get<std::vector<float>>();
      EXPECT_LT(RowError(rows[pos].data(), ref.data(), vocab), 1e-3)
          << p["name"] << " position " << pos;
    }
  }
}

// Prefill logits (GEMMs with activations rounded to the weight dtype, f16 here) and the greedy
// continuation against transformers.
TEST_F(CudaEngineTest, PrefillLogitsAndGreedyMatchTransformers) {
  LoadModel(Golden("llama_tiny"));
  auto text = ReadFileToString(Golden("llama_tiny") + "/golden.json");
  ASSERT_TRUE(text.ok());
  const auto golden = nlohmann::json::parse(*text);
  const size_t vocab = model_->config().vocab_size;
  for (const auto& p : golden["prompts"]) {
    const auto ids = p["ids"].get<std::vector<int32_t>>();
    const auto expected = p["greedy"].get<std::vector<int32_t>>();
    auto batch =
        MakeBatch(KvMode::kDense, 1, ids.size() + expected.size() + 1, DType::kF32, 64, 0, 100);
    ASSERT_NE(batch, nullptr);
    std::vector<float> logits(vocab);
    ASSERT_TRUE(batch->Prefill(0, ids, logits.data()).ok());
    const auto& positions = p["logits"]["positions"];
    const auto ref = p["logits"]["values"][positions.size() - 1].get<std::vector<float>>();
    ASSERT_EQ(positions.back().get<size_t>(), ids.size() - 1);
    EXPECT_LT(RowError(logits.data(), ref.data(), vocab), 1e-2) << p["name"];
    std::vector<int32_t> got;
    int32_t token =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    got.push_back(token);
    while (got.size() < expected.size()) {
      int32_t next = 0;
      ASSERT_TRUE(batch->Step(std::span(&token, 1), std::span(&next, 1)).ok());
      token = next;
      got.push_back(token);
    }
    EXPECT_EQ(got, expected) << p["name"];
  }
}

struct RunOut {
  std::vector<std::vector<int32_t>> tokens;  // [batch][steps]
  std::vector<float> last_logits;            // [batch][vocab] of the last step
  BatchStats stats;
};

// Prefills the prompts (one per sequence) and decodes `steps` greedy tokens for all of them.
RunOut Decode(CudaBatch& batch, const std::vector<std::vector<int32_t>>& prompts, size_t steps,
              size_t vocab) {
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
std::vector<std::vector<int32_t>> DemoPrompts(size_t vocab) {
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

// offload and kvpr (splits 0, mid, whole prompt) give the tokens of dense on the demo model,
// with two sequences of different lengths in one batch.
TEST_F(CudaEngineTest, OffloadAndKvprMatchDense) {
  LoadModel(std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo");
  const auto prompts = DemoPrompts(config_.vocab_size);
  const size_t vocab = model_->config().vocab_size;
  const size_t steps = 40;
  const size_t cap = prompts[0].size() + steps + 8;
  auto dense = MakeBatch(KvMode::kDense, 2, cap, DType::kBF16, 32);
  ASSERT_NE(dense, nullptr);
  const RunOut ref = Decode(*dense, prompts, steps, vocab);
  EXPECT_EQ(
      ref.stats.h2d_bytes, 2 * 12 * steps +
                               [&] {
                                 size_t n = 0;
                                 for (const auto& p : prompts) n += p.size() * 4;
                                 return n;
                               }())
      << "dense moves only token ids and positions";

  auto offload = MakeBatch(KvMode::kOffload, 2, cap, DType::kBF16, 32);
  ASSERT_NE(offload, nullptr);
  const RunOut off = Decode(*offload, prompts, steps, vocab);
  EXPECT_EQ(off.tokens, ref.tokens);
  // Same kernels over bit-identical blocks: identical logits.
  EXPECT_EQ(RowError(off.last_logits.data(), ref.last_logits.data(), 2 * vocab), 0.0);
  EXPECT_GT(off.stats.h2d_bytes, ref.stats.h2d_bytes);

  const size_t shortest = std::min(prompts[0].size(), prompts[1].size());
  for (size_t split : {size_t{0}, size_t{32}, shortest / 32 * 32, cap}) {
    auto kvpr = MakeBatch(KvMode::kKvpr, 2, cap, DType::kBF16, 32, split);
    ASSERT_NE(kvpr, nullptr);
    const RunOut r = Decode(*kvpr, prompts, steps, vocab);
    EXPECT_EQ(r.tokens, ref.tokens) << "split " << split;
    // Recomputed K/V may differ from the prefill's in the last bit of bf16 (GEMMs of other
    // shapes sum in another order).
    EXPECT_LT(RowError(r.last_logits.data(), ref.last_logits.data(), 2 * vocab), 2e-2)
        << "split " << split;
    // Bytes over the link: per step and layer, each sequence sends X instead of K/V for its
    // recomputed blocks (X is wider than K+V on this GQA model, so kvpr sends more here).
    const ModelConfig& c = model_->config();
    const size_t bt = 32;
    const double x_block = static_cast<double>(bt * c.hidden_size * 2);
    const double kv_block = static_cast<double>(bt * c.kv_dim() * 2 * 2);
    double delta = 0, recomputed = 0;
    for (const auto& p : prompts) {
      const size_t seq_split = std::min(split / bt * bt, p.size() / bt * bt);
      delta += static_cast<double>(seq_split / bt) * (x_block - kv_block);
      recomputed += static_cast<double>(seq_split);
    }
    const double layer_steps = static_cast<double>((steps)*c.num_layers);
    EXPECT_EQ(static_cast<double>(r.stats.h2d_bytes) - static_cast<double>(off.stats.h2d_bytes),
              delta * layer_steps)
        << "split " << split;
    EXPECT_EQ(static_cast<double>(r.stats.recomputed_tokens), recomputed * layer_steps)
        << "split " << split;
  }
  // Per-layer splits (the planner's refinement): each layer recomputes its own prefix.
  {
    const ModelConfig& c = model_->config();
    BatchOptions o;
    o.mode = KvMode::kKvpr;
    o.batch = 2;
    o.max_tokens = cap;
    o.block_tokens = 32;
    std::vector<size_t> splits(c.num_layers);
    for (size_t l = 0; l < c.num_layers; ++l) splits[l] = (l % 3) * 64 + (l == 1 ? 1000 : 0);
    o.kvpr_layer_splits = splits;
    auto kvpr = CudaBatch::Create(*model_, o);
    ASSERT_TRUE(kvpr.ok()) << kvpr.status().ToString();
    const RunOut r = Decode(**kvpr, prompts, steps, vocab);
    EXPECT_EQ(r.tokens, ref.tokens) << "per-layer splits";
    double recomputed = 0, delta = 0;
    for (size_t l = 0; l < c.num_layers; ++l) {
      EXPECT_EQ((*kvpr)->layer_splits()[l], std::min(splits[l], cap) / 32 * 32) << l;
      for (const auto& p : prompts) {
        const size_t seq_split = std::min(splits[l] / 32 * 32, p.size() / 32 * 32);
        recomputed += static_cast<double>(seq_split);
        delta += static_cast<double>(seq_split / 32) *
                 static_cast<double>(32 * c.hidden_size * 2 - 32 * c.kv_dim() * 2 * 2);
      }
    }
    EXPECT_EQ(static_cast<double>(r.stats.recomputed_tokens), recomputed * steps);
    EXPECT_EQ(static_cast<double>(r.stats.h2d_bytes) - static_cast<double>(off.stats.h2d_bytes),
              delta * steps);
    o.kvpr_layer_splits.pop_back();
    EXPECT_EQ(CudaBatch::Create(*model_, o).status().code(), StatusCode::kInvalidArgument);
  }
}

// kvstar with every candidate selected reads the same blocks in the same order as dense: the
// same tokens and logits, through decode-made blocks that become candidates (block 32).
TEST_F(CudaEngineTest, KvstarRatioOneMatchesDense) {
  LoadModel(std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo");
  const auto prompts = DemoPrompts(config_.vocab_size);
  const size_t vocab = model_->config().vocab_size;
  const size_t steps = 70;
  const size_t cap = prompts[0].size() + steps + 8;
  auto dense = MakeBatch(KvMode::kDense, 2, cap, DType::kBF16, 32);
  ASSERT_NE(dense, nullptr);
  const RunOut ref = Decode(*dense, prompts, steps, vocab);
  // Runs 4 to 7: the exact first selection and 10 sync steps (re-selections inside the step),
  // scored on the CPU (4, 5) and on the GPU (6, 7). Run 9: GPU scoring queued over 3 steps.
  for (int run = 0; run < 10; ++run) {
    const bool deterministic = run % 2 == 0;
    gpu_scoring_ = run == 2 || run == 3 || run >= 6;
    gpu_score_spread_ = run >= 8 ? 3 : 1;
    KvstarConfig k;
    k.sparse_ratio = 1.0;
    k.retrieval_stride = 4;
    k.deterministic = deterministic;
    if (run >= 4 && run < 8) {
      k.first_selection = "exact";
      k.sync_steps = 10;
    }
    auto kv = MakeBatch(KvMode::kKvstar, 2, cap, DType::kBF16, 32, 0, 64, k);
    ASSERT_NE(kv, nullptr);
    const RunOut r = Decode(*kv, prompts, steps, vocab);
    EXPECT_EQ(r.tokens, ref.tokens) << "run " << run;
    // Only the first sequence re-selects: the second (78 tokens, 2 full blocks of 32) has no
    // candidate blocks beyond the windows during the 10 sync steps.
    EXPECT_EQ(r.stats.sync_retrievals, run >= 4 && run < 8 ? 10 * config_.num_layers : 0u);
    EXPECT_EQ(RowError(r.last_logits.data(), ref.last_logits.data(), 2 * vocab), 0.0);
    EXPECT_GT(r.stats.retrievals, 0u);
    EXPECT_EQ(r.stats.selected_blocks, r.stats.candidate_blocks);
    EXPECT_EQ(r.stats.gpu_score_groups > 0, gpu_scoring_);
  }
}

// The exclusive host tier (the host keeps only the blocks the device does not hold).
// Deterministic: the tokens and logits of the inclusive tier at every step, scored on the CPU and
// on the GPU, with the exact first selection and sync steps (the boundary's swaps through the
// bounce buffer and the sync steps' swaps on the compute stream), and afterwards every full block
// holds the same bytes wherever it is. Not deterministic (timing decides the selections, so the
// decoded KV differs): after many drops written back on the d2h stream, every prompt block holds
// the bytes of the inclusive tier's copy.
TEST_F(CudaEngineTest, KvstarExclusiveHostTierKeepsEveryBlock) {
  LoadModel(std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo");
  const auto prompts = DemoPrompts(config_.vocab_size);
  const size_t vocab = model_->config().vocab_size;
  const size_t steps = 48, bt = 16;
  const size_t cap = prompts[0].size() + steps + 8;
  for (int run = 0; run < 6; ++run) {
    const bool deterministic = run < 4;
    gpu_scoring_ = run % 2 == 1;
    KvstarConfig k;
    k.retrieval_stride = 4;
    k.deterministic = deterministic;
    if (run == 2 || run == 3) {
      k.first_selection = "exact";
      k.sync_steps = 6;
    }
    SCOPED_TRACE("run " + std::to_string(run));
    exclusive_host_ = false;
    auto inc = MakeBatch(KvMode::kKvstar, 2, cap, DType::kBF16, bt, 0, 64, k);
    exclusive_host_ = true;
    auto exc = MakeBatch(KvMode::kKvstar, 2, cap, DType::kBF16, bt, 0, 64, k);
    exclusive_host_ = false;
    ASSERT_NE(inc, nullptr);
    ASSERT_NE(exc, nullptr);
    EXPECT_LE(exc->host_bytes(), inc->host_bytes());
    std::vector<int32_t> cur(2), next_inc(2), next_exc(2);
    std::vector<float> logits(vocab), li(2 * vocab), le(2 * vocab);
    for (size_t b = 0; b < 2; ++b) {
      ASSERT_TRUE(exc->Prefill(b, prompts[b], nullptr).ok());
      ASSERT_TRUE(inc->Prefill(b, prompts[b], logits.data()).ok());
      cur[b] =
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    for (size_t step = 0; step < steps; ++step) {
      ASSERT_TRUE(inc->Step(cur, next_inc, li.data()).ok());
      ASSERT_TRUE(exc->Step(cur, next_exc, le.data()).ok());
      if (deterministic) {
        ASSERT_EQ(next_exc, next_inc) << "step " << step;
        ASSERT_EQ(RowError(le.data(), li.data(), 2 * vocab), 0.0) << "step " << step;
      }
      cur = next_inc;  // both continue from the same tokens
    }
    EXPECT_GT(exc->stats().blocks_loaded, 0u);
    // Blocks left the device: written back (d2h), which the inclusive tier never does.
    EXPECT_GT(exc->stats().d2h_bytes, inc->stats().d2h_bytes);
    if (deterministic) {
      EXPECT_EQ(exc->stats().swaps, inc->stats().swaps);
    }
    size_t compared = 0;
    for (size_t l = 0; l < config_.num_layers; ++l) {
      for (size_t b = 0; b < 2; ++b) {
        const size_t full = (deterministic ? exc->length(b) : prompts[b].size()) / bt;
        for (size_t blk = 0; blk < full; ++blk) {
          auto e = exc->KvstarBlockBytes(l, b, blk);
          auto i = inc->KvstarBlockBytes(l, b, blk);
          ASSERT_TRUE(e.ok()) << e.status().ToString();
          ASSERT_TRUE(i.ok()) << i.status().ToString();
          ASSERT_TRUE(*e == *i) << "layer " << l << " seq " << b << " block " << blk;
          ++compared;
        }
      }
    }
    EXPECT_GT(compared, 0u);
  }
  gpu_scoring_ = false;
  // At the Llama-3.1-8B shape and 128K tokens, 8 sequences: the exclusive tier pins about
  // (1 - sparse_ratio) of the inclusive tier's KV.
  ModelConfig llama = config_;
  llama.num_layers = 32;
  llama.num_kv_heads = 8;
  llama.head_dim = 128;
  BatchOptions o;
  o.mode = KvMode::kKvstar;
  o.batch = 8;
  o.max_tokens = 131072;
  const double inclusive = static_cast<double>(CudaBatch::EstimateHostBytes(llama, o));
  o.exclusive_host = true;
  const double exclusive = static_cast<double>(CudaBatch::EstimateHostBytes(llama, o));
  EXPECT_GT(exclusive / inclusive, 0.75);
  EXPECT_LT(exclusive / inclusive, 0.80);
}

// kvstar at ratio 0.25: HBM holds windows + tail + the selection per layer and sequence; the
// selection changes through delta copies; greedy tokens stay mostly those of dense. Runs 4 to
// 7 select per KV head (the selection is the union of kv_heads top-k's), scored on the CPU (4, 5)
// and on the GPU (6, 7).
TEST_F(CudaEngineTest, KvstarSparseKeepsTheBudget) {
  for (int run = 0; run < 8; ++run) {
    const bool deterministic = run % 2 == 0;
    gpu_scoring_ = run == 2 || run == 3 || run >= 6;
    const bool per_head = run >= 4;
    SCOPED_TRACE(std::string("deterministic ") + (deterministic ? "yes" : "no") + ", scoring on " +
                 (gpu_scoring_ ? "GPU" : "CPU") + (per_head ? ", per KV head" : ""));
    LoadModel(std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo");
    const auto prompts = DemoPrompts(config_.vocab_size);
    const size_t vocab = model_->config().vocab_size;
    const size_t steps = 48;
    const size_t cap = prompts[0].size() + steps + 8;
    KvstarConfig k;
    k.retrieval_stride = 4;
    k.deterministic = deterministic;
    k.select_per_kv_head = per_head;
    auto kv = MakeBatch(KvMode::kKvstar, 2, cap, DType::kBF16, 16, 0, 64, k);
    ASSERT_NE(kv, nullptr);
    const RunOut r = Decode(*kv, prompts, steps, vocab);
    const size_t L = config_.num_layers;
    // The largest selection of c candidates.
    const auto largest = [&](size_t c) {
      const size_t one = static_cast<size_t>(std::ceil(static_cast<double>(c) * 0.25 - 1e-9));
      return per_head ? std::min(c, config_.num_kv_heads * one) : one;
    };
    size_t windows = 0, cands = 0, most = 0;
    for (size_t b = 0; b < 2; ++b) {
      const size_t full = kv->length(b) / 16;
      const size_t c = full > 3 ? full - 3 : 0;
      cands += c;
      windows += (std::min(full, size_t{3}) + 1) * L;  // + the tail
      // The selection plus at most the blocks that left the local window since it was made.
      most += (largest(c) + 2) * L;
    }
    EXPECT_EQ(r.stats.candidate_blocks, cands * L);
    if (deterministic) {
      EXPECT_EQ(r.stats.device_blocks, windows + r.stats.selected_blocks);
    } else {
      // Plus the blocks of the next selection still being copied (at most staging_slots each).
      EXPECT_GE(r.stats.device_blocks, windows + r.stats.selected_blocks);
      EXPECT_LE(r.stats.device_blocks, windows + r.stats.selected_blocks + 4 * 2 * L);
    }
    EXPECT_LE(r.stats.selected_blocks, most);
    EXPECT_GT(r.stats.selected_blocks, 0u);
    EXPECT_GT(r.stats.retrievals, 0u);
    EXPECT_GT(r.stats.blocks_loaded, 0u) << "the selection never changed";
    if (deterministic) {
      EXPECT_EQ(r.stats.late_retrievals, 0u);  // deterministic mode waits
    }
    // HBM per sequence: per layer the windows, the tail, the largest selection of this
    // capacity, the extras (ceil(stride / block) + 1) and, not deterministic, 4 staging slots.
    const size_t max_blocks = (cap + 15) / 16;
    const size_t slots = 3 + 1 + largest(cap / 16 - 3) + 2 + (deterministic ? 0 : 4);
    const size_t block_bytes = 2 * config_.kv_dim() * 16 * 2;
    EXPECT_EQ(kv->device_kv_bytes_per_sequence(), L * std::min(slots, max_blocks) * block_bytes);
    EXPECT_LT(slots, max_blocks);
  }
}

// kvstar with a file store: the first batch dumps every full prompt block; a batch made later
// over a reopened store loads the prompts' leading blocks instead of computing them and decodes
// exactly the tokens and logits of a run without a store (chunks of one block, so that the
// computed rows are chunked alike). A damaged store falls back to a full prefill; a store that
// refuses the dumps costs the reuse, not the request.
TEST_F(CudaEngineTest, KvstarPrefixReuseFromAFileStore) {
  LoadModel(std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo");
  const auto prompts = DemoPrompts(config_.vocab_size);  // 285 and 78 tokens
  const size_t vocab = model_->config().vocab_size;
  const size_t steps = 24, bt = 16, L = config_.num_layers;
  const size_t cap = prompts[0].size() + steps + 8;
  const size_t bb = 2 * config_.kv_dim() * bt * 2;
  // 17 and 4 full blocks; the second prompt's 4 are the first prompt's first 4 (the same
  // phrase starts both), so the store holds 17 per layer and the second sequence reuses its 4
  // from the first in the same batch.
  const size_t full_blocks = 17;
  KvstarConfig k;
  k.retrieval_stride = 4;
  k.deterministic = true;
  auto make = [&](BlockStore* store) {
    BatchOptions o;
    o.mode = KvMode::kKvstar;
    o.kvstar = k;
    o.retrieval_threads = 2;
    o.batch = 2;
    o.max_tokens = cap;
    o.block_tokens = bt;
    o.prefill_chunk = bt;
    o.store = store;
    o.kv_fingerprint = KvFingerprint(weights_->fingerprint(), o.kv_dtype);
    auto b = CudaBatch::Create(*model_, o);
    EXPECT_TRUE(b.ok()) << b.status().ToString();
    return b.ok() ? std::move(*b) : nullptr;
  };
  auto ref_batch = make(nullptr);
  ASSERT_NE(ref_batch, nullptr);
  const RunOut ref = Decode(*ref_batch, prompts, steps, vocab);
  ref_batch.reset();

  const std::string dir = ::testing::TempDir() + "/kvstar_cuda_reuse_" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  auto run_with = [&](const std::string& spec, const StoreOptions& so) {
    auto store = OpenStore(spec, so);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    auto b = make(store->get());
    const RunOut r = Decode(*b, prompts, steps, vocab);
    EXPECT_EQ(r.tokens, ref.tokens);
    EXPECT_EQ(RowError(r.last_logits.data(), ref.last_logits.data(), 2 * vocab), 0.0);
    return r;
  };
  {
    SCOPED_TRACE("first run: every full prompt block is dumped");
    const RunOut r = run_with("file:" + dir, StoreOptions{});
    EXPECT_EQ(r.stats.prefix_reused_tokens, 4 * bt);  // the second sequence's, from the first
    EXPECT_EQ(r.stats.store_dumped_bytes, L * full_blocks * bb);
    EXPECT_EQ(r.stats.store_dump_failures, 0u);
  }
  {
    SCOPED_TRACE("second run, store reopened: the prefixes are loaded");
    const RunOut r = run_with("file:" + dir, StoreOptions{});
    // All full blocks before the last retrieval_stride tokens: 17 of 285 and 4 of 78 tokens.
    EXPECT_EQ(r.stats.prefix_reused_tokens, (17 + 4) * bt);
    EXPECT_EQ(r.stats.store_loaded_bytes, L * (17 + 4) * bb);
    EXPECT_EQ(r.stats.store_dumped_bytes, 0u);
  }
  {
    SCOPED_TRACE("damaged blocks: full prefill");
    size_t damaged = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
      if (!e.is_regular_file() || e.file_size() < bb) continue;
      std::FILE* f = std::fopen(e.path().c_str(), "r+b");
      ASSERT_NE(f, nullptr);
      std::fseek(f, static_cast<long>(e.file_size() - 100), SEEK_SET);
      const int c = std::fgetc(f);
      std::fseek(f, static_cast<long>(e.file_size() - 100), SEEK_SET);
      std::fputc(c ^ 0x5a, f);
      std::fclose(f);
      ++damaged;
    }
    EXPECT_EQ(damaged, L * full_blocks);
    const RunOut r = run_with("file:" + dir, StoreOptions{});
    EXPECT_EQ(r.stats.prefix_reused_tokens, 4 * bt);  // from the first sequence's new dumps
    EXPECT_EQ(r.stats.store_dumped_bytes, L * full_blocks * bb);  // rewritten
  }
  {
    SCOPED_TRACE("store refuses every dump");
    StoreOptions tiny;
    tiny.max_entry_bytes = 1024;
    const RunOut r = run_with("dram", tiny);
    EXPECT_EQ(r.stats.store_dump_failures, L * (17 + 4));  // nothing to reuse: both dump
    EXPECT_EQ(r.stats.prefix_reused_tokens, 0u);
  }
  {
    SCOPED_TRACE("blocks stored by the CPU engine");
    const std::string cpu_dir = dir + "_cpu";
    EngineOptions eo;
    eo.threads = 2;
    eo.block_tokens = bt;
    eo.kv_dtype = DType::kBF16;
    eo.mode = "kvstar";
    eo.kvstar = k;
    eo.store = "file:" + cpu_dir;
    {
      auto e = Engine::Load(std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo", eo);
      ASSERT_TRUE(e.ok()) << e.status().ToString();
      GenerateRequest req;
      req.prompt = prompts[0];
      req.max_new_tokens = 1;
      req.stop_ids = {-1};
      auto r = (*e)->Generate(req);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      ASSERT_TRUE((*e)->store()->Flush().ok());
    }
    auto store = OpenStore("file:" + cpu_dir, StoreOptions{});
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    auto b = make(store->get());
    const RunOut r = Decode(*b, prompts, steps, vocab);
    EXPECT_EQ(r.stats.prefix_reused_tokens, (17 + 4) * bt);
    // The CPU engine's K/V differ from the CUDA prefill's by rounding: the first tokens (from
    // the prompts' last logits) agree; later ones may part at a near-tie.
    EXPECT_EQ(r.tokens[0][0], ref.tokens[0][0]);
    EXPECT_EQ(r.tokens[1][0], ref.tokens[1][0]);
    size_t same = 0;
    for (size_t b2 = 0; b2 < 2; ++b2)
      for (size_t t = 0; t < steps; ++t) same += r.tokens[b2][t] == ref.tokens[b2][t];
    std::printf("prefix stored by the CPU engine: %zu of %zu decoded tokens as without reuse\n",
                same, 2 * steps);
    std::filesystem::remove_all(cpu_dir);
  }
  std::filesystem::remove_all(dir);
}

// One sequence from a one-token prompt, decoded in every mode that needs no cuBLAS at batch 1
// (every projection runs the skinny kernel, or MatVec for f16 weights): the target of
// compute-sanitizer racecheck over the whole engine (`tools/gpu_engine.sh test`), where cuBLAS's
// own kernels would drown the report. The kvstar runs (windows of 2 blocks, k = 1) retrieve with
// CPU and GPU scoring, in both timings, and at the default 100 steps (4 candidate blocks) reach a
// selection that changes and delta copies. offload gives dense's tokens. KVSTAR_SHORT_RUN_STEPS (at
// least 66: 2 candidates) shortens it for racecheck, which takes about 0.85 s per step here
// (`tools/gpu_engine.sh racecheck`); racecheck checks shared memory inside kernels, so the copies
// do not matter to it.
TEST_F(CudaEngineTest, ShortRunOfEveryModeAtBatchOne) {
  LoadModel(std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo");
  const std::vector<std::vector<int32_t>> prompt = {{17}};
  const size_t vocab = model_->config().vocab_size;
  const char* env = std::getenv("KVSTAR_SHORT_RUN_STEPS");
  const size_t steps = std::max<size_t>(env != nullptr ? std::strtoul(env, nullptr, 10) : 100, 66);
  auto done = [](const char* what) {
    std::printf("short run: %s done\n", what);
    std::fflush(stdout);
  };
  auto dense = MakeBatch(KvMode::kDense, 1, steps + 8, DType::kBF16, 16);
  ASSERT_NE(dense, nullptr);
  const RunOut ref = Decode(*dense, prompt, steps, vocab);
  done("dense");
  auto offload = MakeBatch(KvMode::kOffload, 1, steps + 8, DType::kBF16, 16);
  ASSERT_NE(offload, nullptr);
  EXPECT_EQ(Decode(*offload, prompt, steps, vocab).tokens, ref.tokens);
  done("offload");
  for (int run = 0; run < 4; ++run) {
    gpu_scoring_ = run >= 2;
    KvstarConfig k;
    k.sparse_ratio = 0.25;
    k.retrieval_stride = 4;
    k.local_window_sz = 1;
    k.deterministic = run % 2 == 0;
    auto kv = MakeBatch(KvMode::kKvstar, 1, steps + 8, DType::kBF16, 16, 0, 64, k);
    ASSERT_NE(kv, nullptr);
    const RunOut r = Decode(*kv, prompt, steps, vocab);
    EXPECT_GT(r.stats.retrievals, 0u) << "run " << run;
    if (steps >= 100) {
      EXPECT_GT(r.stats.blocks_loaded, 0u) << "run " << run;
    }
    done(run < 2 ? "kvstar, CPU scoring" : "kvstar, GPU scoring");
  }
}

// Records the selection each layer's attention reads at each decode step (CPU policy).
struct SwapLog : KvstarObserver {
  // (layer, step after which it applies) -> selection
  std::map<std::pair<int, size_t>, std::vector<uint32_t>> swaps;
  void OnSwap(int layer, size_t, size_t step, const std::vector<uint32_t>& sel) override {
    swaps[{layer, step}] = sel;
  }
  // The selection active at decode step t (1-based) of `layer`.
  std::vector<uint32_t> Active(int layer, size_t t) const {
    std::vector<uint32_t> sel;
    for (const auto& [key, s] : swaps) {
      if (key.first == layer && key.second < t) sel = s;
    }
    return sel;
  }
};

// Deterministic kvstar on CUDA selects the blocks that kvstar on the CPU selects, step by step,
// with the same tokens fed to both (teacher forcing). The two backends' queries and keys differ
// by rounding (the CUDA prefill rounds activations to bf16 for the tensor cores), so blocks whose
// scores are nearly tied may differ: at least 90% of the selected blocks must agree.
// Both first selections: from the representations (UCM) and exact (the prompt's last queries
// against every key); and synchronous re-selections in the first decode steps (sync_steps).
// Also one top-k per KV head (both hold the union of the heads' selections) and softmax_scope
// "all" (every block with a representation in each head's softmax).
TEST_F(CudaEngineTest, KvstarSelectsTheBlocksOfTheCpuPolicy) {
  LoadModel(std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo");
  for (const auto& [first, sync, per_head, scope] :
       std::vector<std::tuple<std::string, size_t, bool, std::string>>{
           {"representations", 0, false, "candidates"},
           {"exact", 0, false, "candidates"},
           {"exact", 6, false, "candidates"},
           {"representations", 0, true, "candidates"},
           {"exact", 6, true, "candidates"},
           {"representations", 0, false, "all"},
           {"exact", 6, true, "all"}}) {
    KvstarConfig k;
    k.first_selection = first;
    k.sync_steps = sync;
    k.select_per_kv_head = per_head;
    k.softmax_scope = scope;
    CompareWithCpuPolicy(k);
  }
}

// A label for the printed comparisons.
std::string Describe(const KvstarConfig& k) {
  return "first_selection " + k.first_selection + ", sync_steps " + std::to_string(k.sync_steps) +
         (k.select_per_kv_head ? ", per KV head" : "") +
         (k.softmax_scope == "all" ? ", softmax_scope all" : "");
}

void CudaEngineTest::CompareWithCpuPolicy(KvstarConfig k) {
  SCOPED_TRACE(Describe(k));
  const size_t bt = 16, R = 4, steps = 33;
  std::vector<int32_t> prompt(1000);
  uint32_t h = 99;
  for (auto& t : prompt) {
    h = h * 1103515245u + 12345u;
    t = static_cast<int32_t>(3 + (h >> 8) % (config_.vocab_size - 3));
  }
  k.retrieval_stride = R;
  k.deterministic = true;
  // CPU: the KvstarPolicy with a DRAM store, greedy.
  ThreadPool threads(2);
  KvGeometry g{config_.num_kv_heads, config_.head_dim, bt, DType::kBF16};
  DevicePool pool(g, config_.num_layers * (prompt.size() / bt + 8));
  sparse::RetrieverOptions ro;
  ro.num_threads = 2;
  sparse::Retriever retriever(ro);
  auto store = OpenStore("dram", StoreOptions{});
  ASSERT_TRUE(store.ok());
  KvstarResources res{&pool, &threads, &retriever, store->get(), Hash128{1, 2}};
  auto policy = KvstarPolicy::Create(res, k, config_.num_layers, config_.num_heads,
                                     1.0f / std::sqrt(static_cast<float>(config_.head_dim)));
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  SwapLog log;
  (*policy)->set_observer(&log);
  Transformer t(config_, *weights_, threads);
  std::vector<float> logits(config_.vocab_size);
  (*policy)->AppendTokens(prompt);
  ASSERT_TRUE(t.Prefill(prompt, 0, **policy, 64, LogitsMode::kLast, logits.data()).ok());
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < steps; ++i) {
    const int32_t next =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    tokens.push_back(next);
    (*policy)->AppendTokens(std::span(&tokens.back(), 1));
    ASSERT_TRUE(t.Forward(std::span(&tokens.back(), 1), static_cast<int64_t>(prompt.size() + i),
                          **policy, LogitsMode::kLast, logits.data())
                    .ok());
  }
  // CUDA: the same prompt and tokens.
  auto kv = MakeBatch(KvMode::kKvstar, 1, prompt.size() + steps + 8, DType::kBF16, bt, 0, 64, k);
  ASSERT_NE(kv, nullptr);
  ASSERT_TRUE(kv->Prefill(0, prompt, nullptr).ok());
  size_t agree = 0, total = 0, equal = 0, compared = 0, largest = 0;
  for (size_t step = 1; step <= steps; ++step) {
    int32_t next = 0;
    ASSERT_TRUE(kv->Step(std::span(&tokens[step - 1], 1), std::span(&next, 1)).ok());
    // The selections attention read during this step, on both backends.
    for (size_t l = 0; l < config_.num_layers; ++l) {
      const auto cpu = log.Active(static_cast<int>(l), step);
      const auto gpu = kv->kvstar_selection(l, 0);
      std::vector<uint32_t> both;
      std::set_intersection(cpu.begin(), cpu.end(), gpu.begin(), gpu.end(),
                            std::back_inserter(both));
      agree += both.size();
      total += std::max(cpu.size(), gpu.size());
      equal += cpu == gpu;
      ++compared;
      largest = std::max(largest, gpu.size());
    }
  }
  ASSERT_GT(total, 0u);
  const double overlap = static_cast<double>(agree) / static_cast<double>(total);
  std::printf(
      "%s: selection overlap %.4f, identical selections %zu of %zu, largest selection %zu\n",
      Describe(k).c_str(), overlap, equal, compared, largest);
  // 1000 prompt tokens: 62 full blocks, 59 candidates, a top-k of 15 (16 after 16 more tokens).
  if (k.select_per_kv_head) {
    EXPECT_GT(largest, 16u) << "the heads' selections never differed";
  } else {
    EXPECT_LE(largest, 16u);
  }
  if (k.sync_steps > 0) {
    const BatchStats& st = kv->stats();
    EXPECT_EQ(st.sync_retrievals, k.sync_steps * config_.num_layers);
  }
  EXPECT_GE(overlap, 0.9);
}

// The CUDA prefill logits of the demo model agree with the CPU engine's.
// GPU scoring (deterministic) selects the blocks that CPU scoring selects on the same device
// queries and keys, step by step; only near-ties of f32 summation order may differ.
// With sync_steps the first steps' re-selections are scored on the device too; with
// select_per_kv_head the device makes one score per KV head and the host their union.
TEST_F(CudaEngineTest, KvstarGpuScoringSelectsTheBlocksOfCpuScoring) {
  LoadModel(std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo");
  for (const std::string scope : {"candidates", "all"}) {
    for (bool per_head : {false, true}) {
      for (size_t sync : {0, 6}) {
        KvstarConfig k;
        k.sync_steps = sync;
        k.select_per_kv_head = per_head;
        k.softmax_scope = scope;
        CompareGpuWithCpuScoring(k);
      }
    }
  }
}

void CudaEngineTest::CompareGpuWithCpuScoring(KvstarConfig k) {
  SCOPED_TRACE(Describe(k));
  const auto prompts = DemoPrompts(config_.vocab_size);
  const size_t steps = 41, bt = 16;
  const size_t cap = prompts[0].size() + steps + 8;
  k.retrieval_stride = 4;
  k.deterministic = true;
  gpu_scoring_ = false;
  auto cpu = MakeBatch(KvMode::kKvstar, 2, cap, DType::kBF16, bt, 0, 64, k);
  gpu_scoring_ = true;
  auto gpu = MakeBatch(KvMode::kKvstar, 2, cap, DType::kBF16, bt, 0, 64, k);
  ASSERT_NE(cpu, nullptr);
  ASSERT_NE(gpu, nullptr);
  std::vector<int32_t> cur(2), next_cpu(2), next_gpu(2);
  std::vector<float> logits(config_.vocab_size);
  for (size_t b = 0; b < 2; ++b) {
    ASSERT_TRUE(cpu->Prefill(b, prompts[b], logits.data()).ok());
    ASSERT_TRUE(gpu->Prefill(b, prompts[b], nullptr).ok());
    cur[b] = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  size_t agree = 0, total = 0, equal = 0, compared = 0;
  for (size_t step = 0; step < steps; ++step) {
    ASSERT_TRUE(cpu->Step(cur, next_cpu).ok());
    ASSERT_TRUE(gpu->Step(cur, next_gpu).ok());
    for (size_t l = 0; l < config_.num_layers; ++l) {
      for (size_t b = 0; b < 2; ++b) {
        const auto a = cpu->kvstar_selection(l, b);
        const auto g = gpu->kvstar_selection(l, b);
        std::vector<uint32_t> both;
        std::set_intersection(a.begin(), a.end(), g.begin(), g.end(), std::back_inserter(both));
        agree += both.size();
        total += std::max(a.size(), g.size());
        equal += a == g;
        ++compared;
      }
    }
    cur = next_cpu;  // both continue from the same tokens
  }
  const BatchStats& st = gpu->stats();
  EXPECT_GT(st.gpu_score_groups, 0u);
  EXPECT_EQ(st.retrievals, cpu->stats().retrievals);
  EXPECT_EQ(st.sync_retrievals, cpu->stats().sync_retrievals);
  EXPECT_EQ(st.sync_retrievals, k.sync_steps * config_.num_layers * 2);
  EXPECT_EQ(st.late_retrievals, 0u);
  ASSERT_GT(total, 0u);
  const double overlap = static_cast<double>(agree) / static_cast<double>(total);
  std::printf("GPU vs CPU scoring, %s: selection overlap %.4f, identical selections %zu of %zu\n",
              Describe(k).c_str(), overlap, equal, compared);
  EXPECT_GE(overlap, 0.99);
}

// GPU scoring on a few looping CTAs (gpu_score_ctas) gives the scores of the whole grid bit for
// bit: deterministic, the same selection of every (layer, sequence) at every step, the same
// tokens and logits; also with the group's scoring spread over steps and the per-KV-head scores.
TEST_F(CudaEngineTest, KvstarGpuScoreCtasGiveTheSameSelections) {
  LoadModel(std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo");
  const auto prompts = DemoPrompts(config_.vocab_size);
  const size_t steps = 41, bt = 16, vocab = config_.vocab_size;
  const size_t cap = prompts[0].size() + steps + 8;
  gpu_scoring_ = true;
  for (int variant = 0; variant < 3; ++variant) {
    KvstarConfig k;
    k.retrieval_stride = 4;
    k.deterministic = variant < 2;
    k.select_per_kv_head = variant == 1;
    SCOPED_TRACE(Describe(k));
    gpu_score_spread_ = variant == 2 ? 3 : 1;
    gpu_score_ctas_ = 0;
    auto full = MakeBatch(KvMode::kKvstar, 2, cap, DType::kBF16, bt, 0, 64, k);
    gpu_score_ctas_ = 3;
    auto few = MakeBatch(KvMode::kKvstar, 2, cap, DType::kBF16, bt, 0, 64, k);
    gpu_score_ctas_ = 0;
    ASSERT_NE(full, nullptr);
    ASSERT_NE(few, nullptr);
    std::vector<int32_t> cur(2), next_full(2), next_few(2);
    std::vector<float> logits_full(2 * vocab), logits_few(2 * vocab);
    for (size_t b = 0; b < 2; ++b) {
      ASSERT_TRUE(full->Prefill(b, prompts[b], logits_full.data()).ok());
      ASSERT_TRUE(few->Prefill(b, prompts[b], nullptr).ok());
      cur[b] = static_cast<int32_t>(
          std::max_element(logits_full.begin(), logits_full.begin() + vocab) - logits_full.begin());
    }
    size_t compared = 0;
    for (size_t step = 0; step < steps; ++step) {
      ASSERT_TRUE(full->Step(cur, next_full, logits_full.data()).ok());
      ASSERT_TRUE(few->Step(cur, next_few, logits_few.data()).ok());
      if (k.deterministic) {
        ASSERT_EQ(next_few, next_full) << "step " << step;
        ASSERT_EQ(RowError(logits_few.data(), logits_full.data(), 2 * vocab), 0.0)
            << "step " << step;
        for (size_t l = 0; l < config_.num_layers; ++l) {
          for (size_t b = 0; b < 2; ++b) {
            ASSERT_EQ(few->kvstar_selection(l, b), full->kvstar_selection(l, b))
                << "step " << step << " layer " << l << " sequence " << b;
            ++compared;
          }
        }
      }
      cur = next_full;
    }
    EXPECT_GT(few->stats().gpu_score_groups, 0u);
    EXPECT_GT(few->stats().retrievals, 0u);
    if (k.deterministic) {
      EXPECT_EQ(few->stats().retrievals, full->stats().retrievals);
      EXPECT_EQ(compared, steps * config_.num_layers * 2);
    }
  }
  gpu_scoring_ = false;
  gpu_score_spread_ = 1;
}

// f32 KV: the tiled attention kernel; bf16 KV: the tensor-core prefill kernel (chunks of 64).
TEST_F(CudaEngineTest, PrefillMatchesCpuEngine) {
  LoadModel(std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo");
  const auto prompts = DemoPrompts(config_.vocab_size);
  const size_t vocab = model_->config().vocab_size;
  for (DType kv_dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(kv_dtype));
    const std::vector<float> cpu_logits = CpuPromptLogits(prompts[0], kv_dtype);
    auto batch = MakeBatch(KvMode::kDense, 1, prompts[0].size() + 1, kv_dtype, 128);
    ASSERT_NE(batch, nullptr);
    std::vector<float> logits(vocab);
    ASSERT_TRUE(batch->Prefill(0, prompts[0], logits.data()).ok());
    const double err =
        RowError(logits.data(), cpu_logits.data() + (prompts[0].size() - 1) * vocab, vocab);
    std::printf("prefill of %zu tokens, %s KV: CUDA vs CPU last-row logits error %.2e\n",
                prompts[0].size(), DTypeName(kv_dtype), err);
    EXPECT_LT(err, 2e-2);
  }
}

// CudaGenerate (the loop behind `generate --device cuda` and `eval --device cuda`) gives the
// golden greedy continuation in every mode (kvstar with every candidate selected).
TEST_F(CudaEngineTest, GenerateMatchesTransformersInEveryMode) {
  LoadModel(Golden("llama_tiny"));
  auto text = ReadFileToString(Golden("llama_tiny") + "/golden.json");
  ASSERT_TRUE(text.ok());
  const auto golden = nlohmann::json::parse(*text);
  // The last run: kvstar with GPU scoring.
  const KvMode modes[] = {KvMode::kDense, KvMode::kOffload, KvMode::kKvpr, KvMode::kKvstar,
                          KvMode::kKvstar};
  for (size_t run = 0; run < std::size(modes); ++run) {
    const KvMode mode = modes[run];
    BatchOptions o;
    o.mode = mode;
    o.gpu_scoring = run == std::size(modes) - 1;
    o.block_tokens = 16;
    o.kv_dtype = DType::kF32;
    o.prefill_chunk = 100;
    o.kvpr_split = 32;
    o.kvstar.sparse_ratio = 1.0;
    o.kvstar.retrieval_stride = 4;
    o.retrieval_threads = 2;
    for (const auto& p : golden["prompts"]) {
      GenerateRequest req;
      req.prompt = p["ids"].get<std::vector<int32_t>>();
      const auto expected = p["greedy"].get<std::vector<int32_t>>();
      req.max_new_tokens = expected.size();
      req.stop_ids = {-1};
      size_t streamed = 0;
      req.on_token = [&](int32_t) { ++streamed; };
      auto r = CudaGenerate(*model_, o, req, {});
      ASSERT_TRUE(r.ok()) << KvModeName(mode) << ": " << r.status().ToString();
      EXPECT_EQ(r->tokens, expected)
          << KvModeName(mode) << (o.gpu_scoring ? " (GPU scoring) " : " ") << p["name"];
      EXPECT_EQ(r->finish_reason, "length");
      EXPECT_EQ(streamed, expected.size());
      EXPECT_EQ(r->step_ms.size(), expected.size() - 1);
    }
  }
  // Cancelled before the first step: the prefill stops at its first progress callback.
  std::atomic<bool> cancel{true};
  GenerateRequest req;
  req.prompt = std::vector<int32_t>(300, 5);
  req.cancel = &cancel;
  BatchOptions o;
  auto r = CudaGenerate(*model_, o, req, {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->finish_reason, "cancelled");
  EXPECT_TRUE(r->tokens.empty());
}

TEST_F(CudaEngineTest, BadInputsAreErrors) {
  LoadModel(Golden("llama_tiny"));
  auto batch = MakeBatch(KvMode::kOffload, 2, 64, DType::kBF16, 16);
  ASSERT_NE(batch, nullptr);
  std::vector<int32_t> prompt = {1, 2, 3};
  EXPECT_EQ(batch->Prefill(2, prompt, nullptr).code(), StatusCode::kInvalidArgument);
  std::vector<int32_t> bad = {1, 999999};
  EXPECT_EQ(batch->Prefill(0, bad, nullptr).code(), StatusCode::kInvalidArgument);
  std::vector<int32_t> toolong(64, 1);
  EXPECT_EQ(batch->Prefill(0, toolong, nullptr).code(), StatusCode::kInvalidArgument);
  std::vector<int32_t> cur = {1, 1}, next(2);
  EXPECT_EQ(batch->Step(cur, next).code(), StatusCode::kFailedPrecondition);  // not prefilled
  ASSERT_TRUE(batch->Prefill(0, prompt, nullptr).ok());
  ASSERT_TRUE(batch->Prefill(1, prompt, nullptr).ok());
  EXPECT_EQ(batch->Prefill(1, prompt, nullptr).code(), StatusCode::kFailedPrecondition);
  std::vector<int32_t> bad_step = {1, -3};
  EXPECT_EQ(batch->Step(bad_step, next).code(), StatusCode::kInvalidArgument);
  for (int i = 0; i < 60; ++i) {
    const Status st = batch->Step(cur, next);
    if (!st.ok()) {
      EXPECT_EQ(st.code(), StatusCode::kOutOfRange) << st.ToString();
      break;
    }
  }
  EXPECT_EQ(batch->length(0), 63u);
  // GPU scoring takes at most 64 queries per group: rejected when the batch is made.
  BatchOptions o;
  o.mode = KvMode::kKvstar;
  o.max_tokens = 64;
  o.block_tokens = 16;
  o.gpu_scoring = true;
  o.kvstar.retrieval_stride = 65;
  EXPECT_EQ(CudaBatch::Create(*model_, o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvstar::cuda
