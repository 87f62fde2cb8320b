// kvstar bench: decode modes side by side on one model and one device, with the physical limits
// of the machine measured in the same run.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/file_util.h"
#ifdef KVSTAR_HAVE_CUDA
#include "bench_cuda.h"
#endif
#include "base/progress.h"
#include "base/timer.h"
#include "cli_common.h"
#include "command.h"
#include "engine/engine.h"
#include "model/config.h"
#include "model/shapes.h"
#include "ops/cpu/machine_limits.h"

namespace kvstar::cli {
namespace {

struct BenchFlags {
  std::string device = "cpu";
  std::string shape = "qwen2-100m";
  std::string model;
  std::string threads = "1,2";
  size_t context = 1024;
  size_t decode_steps = 32;
  std::string weight_dtype = "bf16";
  std::string modes = "dense";
  uint64_t seed = 1;
  size_t batch = 1;
  bool json = false;
  EngineFlags engine;
  // --device cuda only.
  std::string hbm_budget;
  double host_memory_share = 0.75;
  std::string cuda_batch = "1";
  std::string contexts;
  std::string prefill = "random";
  std::string kvpr_split = "auto";
  bool kvpr_calibrate = false;
  std::string plot;
  std::string cuda_matmul = "auto";
  std::string cuda_pdl = "on";
  int cuda_skinny_stages = 0;
  std::string cuda_decode_attention = "auto";
  std::string cuda_skinny_split = "auto";
  int gpu_score_stages = 0;
  std::string gpu_score_layout = "vector";
  int64_t cuda_l2_prefetch_mib = -1;  // -1: the engine's default
  std::string cuda_fuse_swiglu = "on";
  std::string gpu_scoring_kernel = "auto";
  bool phase_timing = false;
};

StatusOr<std::vector<int>> ParseIntList(const std::string& text, const std::string& flag) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v <= 0 || v > 1024) {
      return InvalidArgument("%s: '%s' is not a list of positive integers (e.g. 1,2)", flag.c_str(),
                             text.c_str());
    }
    out.push_back(static_cast<int>(v));
  }
  if (out.empty()) return InvalidArgument("%s is empty", flag.c_str());
  return out;
}

double Percentile(std::vector<float> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

// Bytes one decode step must read: every weight matrix once (the embedding table only for the
// one row it looks up, unless it doubles as the LM head) plus the whole KV cache.
double DecodeBytesPerStep(const Engine& e, double context_tokens) {
  const ModelWeights& w = e.weights();
  const ModelConfig& c = e.config();
  double bytes = static_cast<double>(w.weight_bytes());
  if (!c.tie_word_embeddings) bytes -= static_cast<double>(w.embed.bytes());
  bytes += context_tokens * static_cast<double>(c.kv_bytes_per_token(e.options().kv_dtype));
  return bytes;
}

// FLOPs of a prefill of n tokens: 2 per weight per token for the matrices, plus attention
// (QK^T and PV over the causal triangle).
double PrefillFlops(const ModelConfig& c, double n) {
  const double per_layer = static_cast<double>(c.hidden_size) *
                               (c.num_heads * c.head_dim * 2 + c.num_kv_heads * c.head_dim * 2) +
                           3.0 * c.hidden_size * c.intermediate_size;
  const double matrices =
      per_layer * c.num_layers + static_cast<double>(c.vocab_size) * c.hidden_size / n;
  const double attention = 2.0 * 2.0 * c.num_layers * c.num_heads * c.head_dim * n * (n + 1) / 2;
  return 2.0 * matrices * n + attention;
}

int RunBench(const BenchFlags& f) {
  if (f.engine.gpu_score_spread != 1 && f.engine.retrieval_device != "gpu") {
    return ReportError(GpuScoreSpreadError(f.engine.gpu_score_spread));
  }
  if (f.engine.gpu_score_ctas != 0 && f.engine.retrieval_device != "gpu") {
    return ReportError(GpuScoreCtasError(f.engine.gpu_score_ctas));
  }
  if (f.phase_timing && f.device != "cuda") {
    return ReportError(
        InvalidArgument("--phase-timing times the CUDA engine's phases (add --device cuda)"));
  }
  if (f.device != "cuda") {
    const char* flag = f.cuda_matmul != "auto"             ? "--cuda-matmul"
                       : f.cuda_pdl != "on"                ? "--cuda-pdl"
                       : f.cuda_skinny_stages != 0         ? "--cuda-skinny-stages"
                       : f.cuda_decode_attention != "auto" ? "--cuda-decode-attention"
                       : f.cuda_skinny_split != "auto"     ? "--cuda-skinny-split"
                       : f.cuda_l2_prefetch_mib >= 0       ? "--cuda-l2-prefetch"
                       : f.cuda_fuse_swiglu != "on"        ? "--cuda-fuse-swiglu"
                                                           : nullptr;
    if (flag != nullptr) {
      return ReportError(
          InvalidArgument("%s: a choice of the CUDA engine's kernels (add --device cuda)", flag));
    }
  }
  if (f.gpu_score_stages != 0 && f.engine.retrieval_device != "gpu") {
    return ReportError(InvalidArgument(
        "--gpu-score-stages %d: how GPU scoring reads the representations (add --device cuda "
        "--retrieval-device gpu)",
        f.gpu_score_stages));
  }
  if (f.gpu_score_layout != "vector" && f.engine.retrieval_device != "gpu") {
    return ReportError(InvalidArgument(
        "--gpu-score-layout %s: how GPU scoring lays out the representations in HBM (add "
        "--device cuda --retrieval-device gpu)",
        f.gpu_score_layout.c_str()));
  }
  if (f.gpu_scoring_kernel != "auto" && f.engine.retrieval_device != "gpu") {
    return ReportError(InvalidArgument(
        "--gpu-scoring-kernel %s: only GPU scoring has a kernel to choose (add --device cuda "
        "--retrieval-device gpu)",
        f.gpu_scoring_kernel.c_str()));
  }
  if (f.device == "cuda") {
#ifdef KVSTAR_HAVE_CUDA
    CudaBenchFlags c;
    if (!f.model.empty()) c.model = f.model;
    c.shape = f.shape;
    c.contexts = f.contexts.empty() ? std::to_string(f.context) : f.contexts;
    c.batch = f.cuda_batch;
    c.modes = f.modes;
    c.hbm_budget = f.hbm_budget;
    c.host_memory_share = f.host_memory_share;
    c.decode_steps = f.decode_steps;
    c.weight_dtype = f.weight_dtype;
    c.kv_dtype = f.engine.kv_dtype;
    c.block_tokens = f.engine.block_tokens;
    c.prefill = f.prefill;
    c.store = f.engine.store;
    c.kvpr_split = f.kvpr_split;
    c.matmul = f.cuda_matmul;
    c.pdl = f.cuda_pdl == "on";
    c.skinny_stages = f.cuda_skinny_stages;
    c.decode_attention = f.cuda_decode_attention;
    c.skinny_split = f.cuda_skinny_split;
    c.score_stages = f.gpu_score_stages;
    c.score_head_major = f.gpu_score_layout == "head";
    c.l2_prefetch_bytes = f.cuda_l2_prefetch_mib < 0 ? -1 : f.cuda_l2_prefetch_mib << 20;
    c.fuse_swiglu = f.cuda_fuse_swiglu == "on";
    c.kvstar_cache_blocks = f.engine.kvstar_cache_blocks;
    c.kvpr_calibrate = f.kvpr_calibrate;
    c.seed = f.seed;
    c.plot = f.plot;
    c.json = f.json;
    EngineFlags engine = f.engine;
    engine.retrieval_device = "cpu";  // checked by the CPU engine's options otherwise
    engine.host_tier = "inclusive";
    engine.gpu_score_spread = 1;
    engine.gpu_score_ctas = 0;
    engine.kvstar_cache_blocks = "0";
    auto eo = FinishEngineOptions(engine);
    if (!eo.ok()) return ReportError(eo.status());
    if (eo->kvstar.max_loads_per_step != 0) return ReportError(CudaMaxLoadsError());
    c.kvstar = eo->kvstar;
    c.gpu_scoring = f.engine.retrieval_device == "gpu";
    c.exclusive_host = f.engine.host_tier == "exclusive";
    c.score_tensor_cores = f.gpu_scoring_kernel == "auto";
    c.phase_timing = f.phase_timing;
    c.gpu_score_spread = f.engine.gpu_score_spread;
    c.gpu_score_ctas = f.engine.gpu_score_ctas;
    // Not given: the CUDA engine's default (all hardware threads but three).
    c.retrieval_threads = RetrievalThreadsGiven(f.engine) ? eo->retrieval_threads : 0;
    return RunCudaBench(c);
#else
    return ReportError(InvalidArgument(
        "--device cuda: this build has the CPU backend only (build with -DKVSTAR_CUDA=ON on a "
        "machine with nvcc)"));
#endif
  }
  if (f.device != "cpu") {
    return ReportError(
        InvalidArgument("--device %s: unknown device (cpu or cuda)", f.device.c_str()));
  }
  std::vector<std::string> modes;
  {
    std::stringstream ss(f.modes);
    std::string m;
    while (std::getline(ss, m, ',')) {
      if (m != "dense" && m != "kvstar") {
        return ReportError(
            InvalidArgument("--modes: unknown mode '%s'; available: dense, kvstar", m.c_str()));
      }
      modes.push_back(m);
    }
    if (modes.empty()) return ReportError(InvalidArgument("--modes is empty"));
  }
  auto threads = ParseIntList(f.threads, "--threads");
  if (!threads.ok()) return ReportError(threads.status());
  auto base_options = FinishEngineOptions(f.engine);
  if (!base_options.ok()) return ReportError(base_options.status());
  const DType wdtype = f.weight_dtype == "f32"   ? DType::kF32
                       : f.weight_dtype == "f16" ? DType::kF16
                                                 : DType::kBF16;

  nlohmann::json runs = nlohmann::json::array();
  if (!f.json) {
    std::printf("%-7s %-6s %8s %10s %9s %9s %7s %9s %8s %8s %8s %7s %9s\n", "threads", "mode",
                "context", "prefill/s", "pf_GFLOP", "mm_GFLOP", "pf/mm", "decode/s", "step_ms",
                "p99_ms", "GB/s", "of_bw", "KV_MiB");
  }
  for (int t : *threads)
    for (const std::string& mode : modes) {
      EngineOptions opt = *base_options;
      opt.threads = t;
      opt.mode = mode;
      std::unique_ptr<Engine> engine;
      std::string model_name;
      if (opt.device_kv_budget == 0) {
        // Without --device-kv-budget: room for `batch` dense requests of this length, so that
        // every mode runs; give a budget to compare what fits.
        auto cfg = f.model.empty() ? NamedShape(f.shape) : LoadConfig(f.model);
        if (!cfg.ok()) return ReportError(cfg.status());
        KvGeometry g{.kv_heads = cfg->num_kv_heads,
                     .head_dim = cfg->head_dim,
                     .block_tokens = opt.block_tokens,
                     .dtype = opt.kv_dtype};
        const size_t blocks =
            (f.context + f.decode_steps + 1 + opt.block_tokens - 1) / opt.block_tokens + 1;
        opt.device_kv_budget = f.batch * cfg->num_layers * blocks * g.block_bytes();
      }
      if (!f.model.empty()) {
        auto e = Engine::Load(f.model, opt);
        if (!e.ok()) return ReportError(e.status());
        engine = std::move(*e);
        model_name = f.model;
      } else {
        auto cfg = NamedShape(f.shape);
        if (!cfg.ok()) return ReportError(cfg.status());
        auto e = Engine::FromRandom(*cfg, wdtype, f.seed, opt);
        if (!e.ok()) return ReportError(e.status());
        engine = std::move(*e);
        model_name = f.shape;
      }
      const ModelConfig& c = engine->config();
      if (f.context + f.decode_steps + 1 >= static_cast<size_t>(c.max_position_embeddings)) {
        return ReportError(OutOfRange(
            "--context %zu + --decode-steps %zu exceed the model's %lld "
            "positions",
            f.context, f.decode_steps, static_cast<long long>(c.max_position_embeddings)));
      }
      // Physical limits with the same threads, measured in this run.
      const double bandwidth = ops::MeasureMemoryReadBandwidth(engine->threads());
      const double matmul_rate = ops::MeasureF32MatMulRate(engine->threads());
      const double fma_rate = ops::MeasureF32FmaRate(engine->threads());

      std::mt19937 rng(static_cast<uint32_t>(f.seed));
      std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(c.vocab_size) - 1);
      // `batch` concurrent requests with different prompts share the engine (weights, threads,
      // device pool, store, retriever); the first one's numbers fill the per-request columns.
      std::vector<GenerateRequest> reqs(f.batch);
      for (auto& req : reqs) {
        req.prompt.resize(f.context);
        for (auto& x : req.prompt) x = tok(rng);
        req.max_new_tokens = f.decode_steps + 1;
        req.stop_ids = {-1};  // never stop early
      }
      std::vector<StatusOr<GenerateResult>> results(f.batch, Internal("not run"));
      Stopwatch wall;
      {
        std::vector<std::thread> workers;
        for (size_t i = 1; i < f.batch; ++i) {
          workers.emplace_back([&, i] { results[i] = engine->Generate(reqs[i]); });
        }
        results[0] = engine->Generate(reqs[0]);
        for (auto& w : workers) w.join();
      }
      const double wall_s = wall.Seconds();
      size_t total_tokens = 0, total_device = 0;
      for (auto& res : results) {
        if (!res.ok()) return ReportError(res.status());
        total_tokens += res->tokens.size();
        total_device += res->kv.device_bytes;
      }
      StatusOr<GenerateResult>& r = results[0];

      const double step_ms = Percentile(r->step_ms, 0.5);
      // KVstar's device KV target: windows + tail + ratio x candidates, per layer.
      double expected_device = static_cast<double>(r->kv.device_bytes);
      if (mode == "kvstar") {
        const size_t bt = opt.block_tokens;
        const size_t full = r->kv.tokens / bt;
        const KvstarConfig& k = opt.kvstar;
        const size_t windows = std::min(full, k.init_window_sz + k.local_window_sz);
        const size_t cands = full - windows;
        const size_t sel =
            static_cast<size_t>(std::ceil(static_cast<double>(cands) * k.sparse_ratio));
        expected_device = static_cast<double>((windows + sel + 1) * c.num_layers) *
                          static_cast<double>(engine->device_pool().block_bytes());
      }
      const double p99_ms = Percentile(r->step_ms, 0.99);
      const double mean_ctx = static_cast<double>(f.context) + f.decode_steps / 2.0;
      // KV read per step: dense reads the whole cache; kvstar reads what it holds on the device.
      const double attended_tokens =
          mode == "kvstar" ? static_cast<double>(r->kv.device_bytes) /
                                 static_cast<double>(c.kv_bytes_per_token(opt.kv_dtype))
                           : mean_ctx;
      const double bytes = DecodeBytesPerStep(*engine, attended_tokens);
      const double achieved_gbs = bytes / (step_ms * 1e-3) / 1e9;
      const double prefill_gflops =
          PrefillFlops(c, static_cast<double>(f.context)) / r->prefill_seconds / 1e9;
      nlohmann::json run = {
          {"device", "cpu"},
          {"simd_target", ops::DescribeSimdTarget()},
          {"model", model_name},
          {"mode", opt.mode},
          {"threads", engine->threads().parallelism()},
          {"context", f.context},
          {"decode_steps", r->step_ms.size()},
          {"weight_dtype", DTypeName(engine->weights().weight_dtype())},
          {"kv_dtype", DTypeName(opt.kv_dtype)},
          {"parameters", c.num_parameters()},
          {"prefill_tokens_per_second", r->prefill_tokens_per_second()},
          {"prefill_gflops", prefill_gflops},
          {"decode_tokens_per_second", 1e3 / step_ms},
          {"step_ms_median", step_ms},
          {"step_ms_p99", p99_ms},
          {"bytes_per_step", bytes},
          {"decode_gbytes_per_second", achieved_gbs},
          {"kv_device_bytes", r->kv.device_bytes},
          {"kv_device_bytes_target", expected_device},
          {"kv", KvReportJson(opt, *r)},
          {"batch", f.batch},
          {"batch_wall_seconds", wall_s},
          {"batch_generated_tokens", total_tokens},
          // Prefill included: every request prefills, then decodes, concurrently.
          {"batch_tokens_per_second_with_prefill", static_cast<double>(total_tokens) / wall_s},
          {"batch_kv_device_bytes", total_device},
          {"limits",
           {{"memory_read_gbytes_per_second", bandwidth},
            {"f32_matmul_gflops", matmul_rate},
            {"f32_fma_gflops", fma_rate}}},
          {"fraction_of_bandwidth", achieved_gbs / bandwidth},
          {"prefill_fraction_of_matmul_rate", prefill_gflops / matmul_rate},
      };
      runs.push_back(run);
      if (!f.json) {
        std::printf(
            "%-7d %-6s %8zu %10.1f %9.1f %9.1f %7.2f %9.2f %8.2f %8.2f %8.2f %6.0f%% %9.1f\n",
            engine->threads().parallelism(), opt.mode.c_str(), f.context,
            r->prefill_tokens_per_second(), prefill_gflops, matmul_rate,
            prefill_gflops / matmul_rate, 1e3 / step_ms, step_ms, p99_ms, achieved_gbs,
            100.0 * achieved_gbs / bandwidth, r->kv.device_bytes / 1048576.0);
      }
    }
  if (f.json) {
    std::printf("%s\n", nlohmann::json{{"runs", runs}}.dump(2).c_str());
  } else {
    std::printf(
        "limits measured in this run: memory read bandwidth (GB/s) and f32 matmul "
        "rate per thread count are in --json; of_bw = achieved / measured bandwidth\n");
  }
  return 0;
}

void AddBench(CLI::App& root, int* exit_code) {
  auto f = std::make_shared<BenchFlags>();
  CLI::App* cmd = root.add_subcommand(
      "bench",
      "Measure prefill and decode speed of the decode modes on one model, with the machine's\n"
      "memory bandwidth and matmul rate measured in the same run. Random weights of a named\n"
      "shape are generated in memory (no files), or a model directory is loaded.");
  cmd->add_option("--device", f->device,
                  "cpu, or cuda (builds with -DKVSTAR_CUDA=ON): modes dense, offload, kvpr on "
                  "the GPU with random weights made on the device");
  auto* shape = cmd->add_option(
      "--shape", f->shape, "Named model shape with random weights: " + [] {
        std::string s;
        for (const auto& n : NamedShapeList()) s += (s.empty() ? "" : ", ") + n;
        return s;
      }());
  auto* model = cmd->add_option("--model", f->model, "Model directory instead of a shape")
                    ->check(CLI::ExistingDirectory);
  shape->excludes(model);
  cmd->add_option("--threads", f->threads, "Comma-separated thread counts to run, e.g. 1,2");
  cmd->add_option("--context", f->context, "Prompt tokens before decoding")->check(AtLeastOne());
  cmd->add_option("--decode-steps", f->decode_steps, "Decode steps timed")->check(AtLeastOne());
  cmd->add_option("--weight-dtype", f->weight_dtype, "Weight type of random shapes")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}));
  cmd->add_option("--modes", f->modes,
                  "Comma-separated decode modes to compare: cpu: dense,kvstar; cuda: "
                  "dense,offload,kvpr,kvstar");
  cmd->add_option("--seed", f->seed, "Seed of the random weights and prompt");
  cmd->add_option("--batch", f->batch,
                  "Concurrent requests (different prompts) sharing the engine, device pool, "
                  "store and retriever; per-request columns show the first one")
      ->check(CLI::Range(size_t{1}, size_t{256}));
  cmd->add_flag("--json", f->json, "Print one JSON object with every run");
  cmd->add_option("--contexts", f->contexts,
                  "cuda: comma-separated contexts (e.g. 8K,32K,128K) instead of --context");
  cmd->add_option("--cuda-batch", f->cuda_batch,
                  "cuda: comma-separated batch sizes, or 'max' for the largest batch of each "
                  "mode that fits --hbm-budget (and host memory for offload / kvpr)");
  cmd->add_option("--hbm-budget", f->hbm_budget,
                  "cuda: device bytes for weights + KV + scratch (e.g. 80G); default: all of it");
  cmd->add_option("--host-memory-share", f->host_memory_share,
                  "cuda: share of the host's available memory (MemAvailable) that a batch's "
                  "pinned KV may take when --cuda-batch max searches the largest batch "
                  "(offload, kvpr, kvstar)")
      ->check(CLI::Range(0.05, 0.95))
      ->capture_default_str();
  cmd->add_option("--prefill", f->prefill,
                  "cuda: 'random' fills the context with random K/V (decode cost does not depend "
                  "on the values; fast at 128K), 'real' runs random prompts through the model "
                  "and reports prefill tokens/s (with kvstar and --store file:DIR, a repeated run "
                  "with the same --seed loads the prompts' blocks instead)")
      ->check(CLI::IsMember({"real", "random"}));
  cmd->add_option("--kvpr-split", f->kvpr_split,
                  "cuda, kvpr: tokens recomputed from X per sequence, or 'auto' (the planner, "
                  "from a measured or cached profile)");
  cmd->add_flag("--kvpr-calibrate", f->kvpr_calibrate,
                "cuda, kvpr: after the runs, save measured / modelled recomputation time "
                "(kvpr runs) and link time (offload runs) in the device's cached KVPR profile "
                "(recompute_scale, link_scale), used by the planner and the model's predictions "
                "from the next invocation on");
  cmd->add_option("--plot", f->plot, "cuda: write a PNG of decode tokens/s vs context per mode");
  cmd->add_option("--cuda-matmul", f->cuda_matmul,
                  "cuda: kernel of the matrix products: auto (the skinny tensor-core kernel at "
                  "decode batch sizes up to 16, f32 activations) or library (MatVec at batch 1, "
                  "cuBLAS with bf16-rounded activations above), to compare the two")
      ->check(CLI::IsMember({"auto", "library"}))
      ->capture_default_str();
  cmd->add_option("--cuda-pdl", f->cuda_pdl,
                  "cuda: on (default) launches each decode kernel as a programmatic dependent "
                  "of the one before it, so that it is scheduled, and the matrix products start "
                  "to read their weights, while that kernel drains; off launches them one after "
                  "the other, to compare (the results are the same bit for bit)")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  cmd->add_option(
         "--cuda-skinny-stages", f->cuda_skinny_stages,
         "cuda: how the skinny products read their weights: 0 (default) loads each "
         "round of a warp into registers, then computes it; 1 also requests the next round "
         "before it computes one (a second register set); 2, 3 or 4 copies the rounds "
         "asynchronously into a ring of that many rounds in shared memory, the next "
         "ones in flight while one computes (the results are the same bit for bit)")
      ->check(CLI::IsMember({0, 1, 2, 3, 4}))
      ->capture_default_str();
  cmd->add_option("--cuda-decode-attention", f->cuda_decode_attention,
                  "cuda: the decode attention kernel's arithmetic: auto (the engine's default), "
                  "fma (dot products and the weighted sum of V on the FMA units, partial dots "
                  "reduced by shuffles) or mma (both on the tensor cores, q and p as three bf16 "
                  "terms each); the results agree to f32 summation order")
      ->check(CLI::IsMember({"auto", "fma", "mma"}))
      ->capture_default_str();
  cmd->add_option("--cuda-skinny-split", f->cuda_skinny_split,
                  "cuda: auto (the engine's default), on or off: whether the skinny products of "
                  "at most 32 weight rows per SM (Llama-3-8B's o and down) halve each row tile's "
                  "columns between the two CTAs of a cluster, twice the CTAs streaming weights "
                  "(the results agree to f32 summation order and stay independent of the batch)")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  cmd->add_option("--gpu-score-stages", f->gpu_score_stages,
                  "cuda, kvstar, --retrieval-device gpu: how the scoring kernel reads the "
                  "representations: 0 (default), each warp's block into registers, then its "
                  "scores; 3, through a ring of 3 blocks per warp in shared memory, the next two "
                  "in flight (the same scores)")
      ->check(CLI::IsMember({0, 3}))
      ->capture_default_str();
  cmd->add_option("--gpu-score-layout", f->gpu_score_layout,
                  "cuda, kvstar, --retrieval-device gpu: the representations' layout in HBM: "
                  "vector (default), each merged vector's channels of every KV head together, as "
                  "on the host; head, each KV head's vectors of a block together, so that a "
                  "scoring work item (one KV head) reads contiguous lines (the same scores)")
      ->check(CLI::IsMember({"vector", "head"}))
      ->capture_default_str();
  cmd->add_option("--cuda-l2-prefetch", f->cuda_l2_prefetch_mib,
                  "cuda: MiB of the next stage's weights asked into L2 while each decode stage "
                  "(attention, the o, gate / up and down products) drains, so that the reads "
                  "fill the HBM time its tail leaves idle; default 0 (off); the results are the "
                  "same bit for bit")
      ->check(CLI::Range(int64_t{0}, int64_t{1024}));
  cmd->add_option("--cuda-fuse-swiglu", f->cuda_fuse_swiglu,
                  "cuda: on (default) computes SwiGLU's activation in the gate / up product (a CTA "
                  "takes the same rows of both and writes only the activation); off runs it as "
                  "its own kernel after the product (the same bits, one launch more per layer)")
      ->check(CLI::IsMember({"on", "off"}))
      ->capture_default_str();
  cmd->add_option("--gpu-scoring-kernel", f->gpu_scoring_kernel,
                  "cuda, --retrieval-device gpu: auto (the tensor-core scoring kernel where it "
                  "applies) or f32 (the CUDA-core kernel), to compare the two")
      ->check(CLI::IsMember({"auto", "f32"}))
      ->capture_default_str();
  cmd->add_flag("--phase-timing", f->phase_timing,
                "cuda: time each decode phase on the device with events (before attention, "
                "waiting for KV, attention, after attention, head, idle between steps) and "
                "report them per step next to the weight and KV bounds");
  AddEngineFlags(cmd, &f->engine, /*with_threads=*/false);
  cmd->callback([f, exit_code] { *exit_code = RunBench(*f); });
}

}  // namespace

KVSTAR_COMMAND(bench, 40, AddBench);

}  // namespace kvstar::cli
