// kvstar on CUDA: ratio 1 gives dense's tokens, the exclusive host tier keeps every block, the
// device budget, prefix reuse from a file store, the CPU policy's selections, GPU scoring against
// CPU scoring, and the scoring kernels' CTA limit. Needs a GPU (label gpu).
#include "engine/cuda/cuda_engine_test_util.h"

namespace kvstar::cuda::testing {

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

namespace {

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
// decoded KV differs; one staging slot and 96 steps, so that slots run out): blocks that left
// the selection keep their slots until a copy or a new tail needs one, then go home on the d2h
// stream, and afterwards every prompt block holds the bytes of the inclusive tier's copy. Runs 6
// and 7 add a device cache of 6 slots, run 7 with sync steps (their re-selections take cached
// blocks back and evict for their copies): the same holds, and selections take some blocks back
// from the cache. Run 8 asks for a cache larger than the capacity: it gets the slots the
// capacity leaves, every block stays on the device, and no block is ever copied in.
TEST_F(CudaEngineTest, KvstarExclusiveHostTierKeepsEveryBlock) {
  LoadModel(std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo");
  const auto prompts = DemoPrompts(config_.vocab_size);
  const size_t vocab = model_->config().vocab_size;
  const size_t bt = 16;
  size_t evictions = 0;
  for (int run = 0; run < 9; ++run) {
    const bool deterministic = run < 4;
    const size_t steps = deterministic ? 48 : 96;
    const size_t cap = prompts[0].size() + steps + 8;
    gpu_scoring_ = run % 2 == 1;
    cache_blocks_ = run == 8 ? 100000 : run >= 6 ? 6 : 0;
    KvstarConfig k;
    k.retrieval_stride = 4;
    k.deterministic = deterministic;
    if (!deterministic) k.staging_slots = 1;
    if (run == 2 || run == 3 || run == 7) {
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
    EXPECT_GT(exc->stats().blocks_loaded + exc->stats().cache_hits, 0u);
    if (!deterministic) {
      std::printf(
          "run %d: %zu blocks taken back from the device cache, %zu copied in, %zu "
          "cached blocks written back for a slot\n",
          run, exc->stats().cache_hits, exc->stats().blocks_loaded, exc->stats().cache_evictions);
      evictions += exc->stats().cache_evictions;
    }
    if (cache_blocks_ > 0) {
      EXPECT_GT(exc->stats().cache_hits, 0u);
      EXPECT_GT(inc->stats().cache_hits, 0u);
    }
    if (run == 8) {
      EXPECT_EQ(exc->stats().blocks_loaded, 0u);
      EXPECT_EQ(exc->stats().cache_evictions, 0u);
    } else {
      // Blocks left the device: written back (d2h), which the inclusive tier never does.
      EXPECT_GT(exc->stats().d2h_bytes, inc->stats().d2h_bytes);
    }
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
  EXPECT_GT(evictions, 0u) << "no cached block ever left the device";
  gpu_scoring_ = false;
  cache_blocks_ = 0;
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
    // HBM per sequence: per layer the windows, the tail, the largest selection of this
    // capacity, the extras (ceil(stride / block) + 1) and, not deterministic, 4 staging slots.
    const size_t max_blocks = (cap + 15) / 16;
    const size_t slots = 3 + 1 + largest(cap / 16 - 3) + 2 + (deterministic ? 0 : 4);
    EXPECT_EQ(r.stats.candidate_blocks, cands * L);
    // Attention reads the windows, the tails and the selections.
    EXPECT_EQ(r.stats.table_blocks, windows + r.stats.selected_blocks);
    if (deterministic) {
      EXPECT_EQ(r.stats.device_blocks, r.stats.table_blocks);
    } else {
      // Plus the blocks of the next selection still being copied and the blocks that left the
      // selection and keep their slots until one is needed.
      EXPECT_GE(r.stats.device_blocks, r.stats.table_blocks);
      EXPECT_LE(r.stats.device_blocks, 2 * L * std::min(slots, max_blocks));
    }
    EXPECT_LE(r.stats.selected_blocks, most);
    EXPECT_GT(r.stats.selected_blocks, 0u);
    EXPECT_GT(r.stats.retrievals, 0u);
    EXPECT_GT(r.stats.blocks_loaded + r.stats.cache_hits, 0u) << "the selection never changed";
    if (deterministic) {
      EXPECT_EQ(r.stats.late_retrievals, 0u);  // deterministic mode waits
    }
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

// GPU scoring on a few looping CTAs (gpu_score_ctas) gives the scores of the whole grid bit for
// bit: deterministic, the same selection of every (layer, sequence) at every step, the same
// tokens and logits; also with the group's scoring spread over steps and the per-KV-head scores,
// and (variant 3) with head-major representations in HBM (gpu_score_head_major), whose tail
// blocks are transposed as they are appended.
TEST_F(CudaEngineTest, KvstarGpuScoreCtasGiveTheSameSelections) {
  LoadModel(std::string(KVSTAR_SOURCE_DIR) + "/models/kvstar-demo");
  const auto prompts = DemoPrompts(config_.vocab_size);
  const size_t steps = 41, bt = 16, vocab = config_.vocab_size;
  const size_t cap = prompts[0].size() + steps + 8;
  gpu_scoring_ = true;
  for (int variant = 0; variant < 4; ++variant) {
    KvstarConfig k;
    k.retrieval_stride = 4;
    k.deterministic = variant != 2;
    k.select_per_kv_head = variant == 1;
    SCOPED_TRACE(Describe(k) + ", variant " + std::to_string(variant));
    gpu_score_spread_ = variant == 2 ? 3 : 1;
    gpu_score_ctas_ = 0;
    auto full = MakeBatch(KvMode::kKvstar, 2, cap, DType::kBF16, bt, 0, 64, k);
    gpu_score_ctas_ = 3;
    gpu_score_head_major_ = variant == 3;
    auto few = MakeBatch(KvMode::kKvstar, 2, cap, DType::kBF16, bt, 0, 64, k);
    gpu_score_ctas_ = 0;
    gpu_score_head_major_ = false;
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

}  // namespace
}  // namespace kvstar::cuda::testing
