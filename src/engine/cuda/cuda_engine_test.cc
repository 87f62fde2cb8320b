// The whole model on CUDA: logits against the golden Hugging Face outputs and against the CPU
// engine; offload and kvpr (every split) give the tokens of dense; generate in every mode; bad
// inputs. Needs a GPU (label gpu); the kvstar tests are in cuda_kvstar_test.cc.
#include "engine/cuda/cuda_engine_test_util.h"

namespace kvstar::cuda::testing {
namespace {

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

// Programmatic dependent launches (ops.h) change when the decode kernels are scheduled, never
// what they compute: every mode, and kvstar with CPU scoring, GPU scoring and the exclusive host
// tier, gives the same tokens at every step and the same last logits bit for bit with them on
// and off (deterministic kvstar: the same selections).
// Launches one after the other, as dependents, as dependents with a prefetch of the next weights
// into L2 after each stage (BatchOptions::l2_prefetch_bytes), each with SwiGLU in its own launch,
// as dependents with SwiGLU's activation written by the gate / up product
// (BatchOptions::fuse_swiglu, the default), and that with the products' weights read through a
// 3-round cp.async ring (SetSkinnyStages): the same results.
TEST_F(CudaEngineTest, LaunchChoicesChangeNoResult) {
  LoadModel(std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo");
  const auto prompts = DemoPrompts(config_.vocab_size);
  const size_t vocab = config_.vocab_size;
  const size_t steps = 24;
  const size_t cap = prompts[0].size() + steps + 8;
  KvstarConfig k;
  k.retrieval_stride = 4;
  k.deterministic = true;
  struct Restore {
    ~Restore() {
      SetDependentLaunches(true);
      SetSkinnyStages(0);
    }
  } restore;
  for (int run = 0; run < 6; ++run) {
    const KvMode mode = run == 0   ? KvMode::kDense
                        : run == 1 ? KvMode::kOffload
                        : run == 2 ? KvMode::kKvpr
                                   : KvMode::kKvstar;
    gpu_scoring_ = run >= 4;
    exclusive_host_ = run == 5;
    SCOPED_TRACE(std::string(KvModeName(mode)) + " run " + std::to_string(run));
    RunOut out[5];
    for (int v = 0; v < 5; ++v) {
      SetDependentLaunches(v >= 1);
      l2_prefetch_bytes_ = v == 2 ? int64_t{1} << 20 : 0;
      fuse_swiglu_ = v >= 3;
      SetSkinnyStages(v == 4 ? 3 : 0);
      auto b = MakeBatch(mode, 2, cap, DType::kBF16, 16, mode == KvMode::kKvpr ? 32 : 0, 64, k);
      ASSERT_NE(b, nullptr);
      out[v] = Decode(*b, prompts, steps, vocab);
      if (mode == KvMode::kKvstar) {
        EXPECT_GT(out[v].stats.retrievals, 0u);
      }
    }
    for (int v = 1; v < 5; ++v) {
      EXPECT_EQ(out[v].tokens, out[0].tokens) << v;
      EXPECT_EQ(RowError(out[v].last_logits.data(), out[0].last_logits.data(), 2 * vocab), 0.0);
    }
  }
  gpu_scoring_ = false;
  exclusive_host_ = false;
  l2_prefetch_bytes_ = -1;
  fuse_swiglu_ = true;
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
      // Copies, or blocks that left the selection and came back while they kept their slots.
      EXPECT_GT(r.stats.blocks_loaded + r.stats.cache_hits, 0u) << "run " << run;
    }
    done(run < 2 ? "kvstar, CPU scoring" : "kvstar, GPU scoring");
  }
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
}  // namespace kvstar::cuda::testing
