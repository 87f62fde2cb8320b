// kvstar bench-retrieval: latency and throughput of KVstar block scoring + top-k on this machine's
// CPUs, with the memory read bandwidth measured in the same run as the physical reference.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/timer.h"
#include "cli_common.h"
#include "command.h"
#include "hwy/targets.h"
#include "json_plot.h"
#include "sparse/block_representations.h"
#include "sparse/retriever.h"
#include "sparse/score_kernels.h"
#ifdef KVSTAR_HAVE_CUDA
#include "bench_retrieval_cuda.h"
#endif

namespace kvstar::cli {
namespace {

struct RetrievalFlags {
  std::string blocks = "250,1024,4096,8192";
  std::string q_heads = "20";
  std::string kv_heads = "4";
  size_t d_pruned = 32;
  size_t head_dim = 128;
  size_t merge = 2;
  size_t block_tokens = 128;
  size_t queries = 8;
  std::string threads = "1,2";
  double sparse_ratio = 0.25;
  double min_seconds = 0.3;
  std::string simd = "best";
  bool per_kv_head = false;
  bool pin = false;
  size_t min_segments = sparse::RetrieverOptions{}.min_segments;
  size_t segment_blocks = sparse::RetrieverOptions{}.segment_blocks;
  bool json = false;
  std::string device = "cpu";         // cpu | cuda (ScoreBlocks, CUDA builds)
  size_t gpu_tasks = 32;              // cuda: tasks per ScoreBlocks call ((layer, sequence) pairs)
  std::string gpu_kernel = "auto";    // cuda: auto (tensor cores where they apply) | f32
  size_t gpu_ctas = 0;                // cuda: BlockScoreArgs::max_ctas (0: the whole grid)
  size_t gpu_blocks_per_cta = 0;      // cuda: BlockScoreArgs::blocks_per_cta (0: auto)
  int gpu_stages = 0;                 // cuda: BlockScoreArgs::stages
  std::string gpu_layout = "vector";  // cuda: vector | head (BlockScoreArgs::head_major)
  size_t in_flight = 1;               // cpu: tasks submitted together, each over its own layer
  std::string plot;                   // cpu: PNG/SVG of speedup per thread against threads
};

StatusOr<std::vector<size_t>> ParseList(const std::string& text, const char* flag) {
  std::vector<size_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v == 0 || v > (1u << 24)) {
      return InvalidArgument("%s: '%s' is not a comma-separated list of positive integers", flag,
                             text.c_str());
    }
    out.push_back(static_cast<size_t>(v));
  }
  if (out.empty()) return InvalidArgument("%s is empty", flag);
  return out;
}

double LoadAverage() {
  double load[1] = {0};
  return getloadavg(load, 1) == 1 ? load[0] : -1.0;
}

double CpuSeconds(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// CPU seconds of every thread but the calling one: the retriever's workers. The caller only
// submits and waits, but its wait polls (spins, then yields) for a while before it sleeps, which
// process CPU time would count as retrieval work.
double WorkerCpuSeconds() {
  return CpuSeconds(CLOCK_PROCESS_CPUTIME_ID) - CpuSeconds(CLOCK_THREAD_CPUTIME_ID);
}

// Restricts runtime dispatch to `name` or lower targets (to measure the AVX2 or scalar path on a
// machine with AVX-512).
Status RestrictSimd(const std::string& name) {
  if (name == "best") return Status::Ok();
  int64_t disable = 0;
  if (name == "avx2") {
    disable = HWY_AVX3 | HWY_AVX3_DL;
  } else if (name == "sse4") {
    disable = HWY_AVX3 | HWY_AVX3_DL | HWY_AVX2;
  } else if (name == "scalar") {
    disable = HWY_AVX3 | HWY_AVX3_DL | HWY_AVX2 | HWY_SSE4 | HWY_SSSE3;
  } else {
    return InvalidArgument("--simd must be best, avx2, sse4 or scalar, got '%s'", name.c_str());
  }
  hwy::DisableTargets(disable);
  return Status::Ok();
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

// Sequential read bandwidth (bytes/s) of `threads` threads over a buffer far larger than the
// caches: the physical limit for scoring representations that do not fit in cache.
double MeasureReadBandwidth(int threads) {
  const size_t bytes = size_t{1} << 30;
  AlignedBuffer<uint64_t> buf(bytes / 8);
  std::vector<std::thread> init;
  for (int t = 0; t < threads; ++t) {
    init.emplace_back([&, t] {
      const size_t n = buf.size() / threads;
      for (size_t i = n * t; i < n * (t + 1); ++i) buf[i] = i;
    });
  }
  for (auto& th : init) th.join();
  double best = 0;
  std::atomic<uint64_t> sink{0};
  for (int rep = 0; rep < 3; ++rep) {
    Stopwatch sw;
    std::vector<std::thread> readers;
    for (int t = 0; t < threads; ++t) {
      readers.emplace_back([&, t] {
        const size_t n = buf.size() / threads;
        const uint64_t* p = buf.data() + n * t;
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (size_t i = 0; i + 4 <= n; i += 4) {
          s0 += p[i];
          s1 ^= p[i + 1];
          s2 += p[i + 2];
          s3 ^= p[i + 3];
        }
        sink += s0 + s1 + s2 + s3;
      });
    }
    for (auto& th : readers) th.join();
    best = std::max(best, static_cast<double>(bytes) / sw.Seconds());
  }
  return best;
}

struct Layer {
  std::unique_ptr<sparse::BlockRepresentations> reps;
  std::vector<float> queries;
};

// Representations of `blocks` random blocks (32 distinct key blocks, cycled) and random queries.
StatusOr<Layer> MakeLayer(const RetrievalFlags& f, size_t blocks, size_t q_heads, size_t kv_heads,
                          std::mt19937_64& rng) {
  const KvGeometry geo{.kv_heads = kv_heads,
                       .head_dim = f.head_dim,
                       .block_tokens = f.block_tokens,
                       .dtype = DType::kBF16};
  sparse::ChannelIndex idx{.kv_heads = kv_heads, .head_dim = f.head_dim, .d_pruned = f.d_pruned};
  for (size_t h = 0; h < kv_heads; ++h) {
    for (size_t c = 0; c < f.d_pruned; ++c) {
      idx.channels.push_back(static_cast<uint16_t>(c * f.head_dim / f.d_pruned));
    }
  }
  Layer layer;
  KVSTAR_ASSIGN_OR_RETURN(
      layer.reps, sparse::BlockRepresentations::Create(geo, std::move(idx), {.merge = f.merge}));
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<std::vector<bf16_t>> sources(32, std::vector<bf16_t>(geo.elements_per_block()));
  for (auto& s : sources) {
    for (auto& v : s) v = F32ToBF16(n(rng));
  }
  for (size_t b = 0; b < blocks; ++b) {
    KVSTAR_RETURN_IF_ERROR(layer.reps->Append(sources[b % sources.size()].data(), geo));
  }
  layer.queries.resize(f.queries * q_heads * f.head_dim);
  for (float& q : layer.queries) q = n(rng);
  return layer;
}

int RunBenchRetrieval(const RetrievalFlags& f) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    return 1;
  };
  auto blocks = ParseList(f.blocks, "--blocks");
  auto q_heads = ParseList(f.q_heads, "--q-heads");
  auto kv_heads = ParseList(f.kv_heads, "--kv-heads");
  auto threads = ParseList(f.threads, "--threads");
  for (const Status& s : {blocks.status(), q_heads.status(), kv_heads.status(), threads.status()}) {
    if (!s.ok()) return fail(s);
  }
  if (f.d_pruned == 0 || f.d_pruned > f.head_dim || f.merge == 0 || f.block_tokens % f.merge ||
      f.queries == 0) {
    return fail(
        InvalidArgument("need 0 < --d-pruned <= --head-dim, --merge dividing "
                        "--block-tokens and --queries >= 1"));
  }
  if (Status s = RestrictSimd(f.simd); !s.ok()) return fail(s);
  const bool gpu = f.device == "cuda";
#ifndef KVSTAR_HAVE_CUDA
  if (gpu) {
    return fail(InvalidArgument(
        "--device cuda: this build has the CPU backend only (build with -DKVSTAR_CUDA=ON)"));
  }
#endif
  if (!gpu && f.gpu_kernel != "auto") {
    return fail(InvalidArgument("--gpu-kernel %s: the kernel of --device cuda; add it",
                                f.gpu_kernel.c_str()));
  }
  if (!gpu && f.gpu_ctas != 0) {
    return fail(
        InvalidArgument("--gpu-ctas %zu: the scoring kernels' CTA limit of --device cuda; "
                        "add it",
                        f.gpu_ctas));
  }
  if (!gpu && f.gpu_blocks_per_cta != 0) {
    return fail(InvalidArgument(
        "--gpu-blocks-per-cta %zu: the scoring kernel's work item size of --device cuda; add it",
        f.gpu_blocks_per_cta));
  }
  if (!gpu && f.gpu_stages != 0) {
    return fail(InvalidArgument(
        "--gpu-stages %d: how the scoring kernel of --device cuda reads; add it", f.gpu_stages));
  }
  if (!gpu && f.gpu_layout != "vector") {
    return fail(InvalidArgument(
        "--gpu-layout %s: the representations' layout in the GPU's memory (--device cuda); add it",
        f.gpu_layout.c_str()));
  }
  if (gpu && !f.plot.empty()) {
    return fail(
        InvalidArgument("--plot draws thread scaling of the CPU retriever; drop it with "
                        "--device cuda"));
  }
  const size_t vectors = f.block_tokens / f.merge;
  nlohmann::json out;
  out["machine"] = {{"hardware_threads", std::thread::hardware_concurrency()},
                    {"simd_target", sparse::kernels::CurrentTargetName()}};
  out["machine"]["load_average_1min"] = LoadAverage();
  out["config"] = {{"d_pruned", f.d_pruned},
                   {"head_dim", f.head_dim},
                   {"merge", f.merge},
                   {"block_tokens", f.block_tokens},
                   {"vectors_per_block", vectors},
                   {"queries", f.queries},
                   {"sparse_ratio", f.sparse_ratio},
                   {"select_per_kv_head", f.per_kv_head},
                   {"min_segments", f.min_segments},
                   {"segment_blocks", f.segment_blocks},
                   {"in_flight", f.in_flight},
                   {"pinned", f.pin}};
  nlohmann::json bw = nlohmann::json::object();
  double gemm_tflops = 0, copy_gbps = 0;  // --device cuda: this GPU's limits
  if (gpu) {
#ifdef KVSTAR_HAVE_CUDA
    auto limits = MeasureGpuLimits();
    if (!limits.ok()) return fail(limits.status());
    gemm_tflops = limits->first;
    copy_gbps = limits->second;
#endif
    out["gpu_f32_gemm_tflops"] = gemm_tflops;
    out["gpu_copy_gbps"] = copy_gbps;
    out["config"]["device"] = "cuda";
    out["config"]["tasks_per_call"] = f.gpu_tasks;
    out["config"]["max_ctas"] = f.gpu_ctas;
    out["config"]["blocks_per_cta"] = f.gpu_blocks_per_cta;
    if (!f.json) {
      std::printf(
          "GPU limits measured now: f32 GEMM %.1f TFLOP/s, device copy %.0f GB/s\n%7s "
          "%4s %4s %6s %10s %10s %9s %10s %12s %6s %9s %6s %9s\n",
          gemm_tflops, copy_gbps, "blocks", "H", "h", "tasks", "call_ms", "p99_ms", "task_ms",
          "Mvec/s", "GFLOP/s", "%gemm", "rep_GB/s", "%copy", "rel_err");
    }
  } else {
    for (size_t t : *threads) {
      bw[std::to_string(t)] = MeasureReadBandwidth(static_cast<int>(t)) / 1e9;
    }
    out["memory_read_gbps"] = bw;
  }
  if (!f.json && !gpu) {
    std::printf("SIMD target %s; load average %.1f; memory read bandwidth:",
                sparse::kernels::CurrentTargetName(), LoadAverage());
    for (size_t t : *threads)
      std::printf(" %zu thr %.1f GB/s", t, bw[std::to_string(t)].get<double>());
    std::printf("\n%7s %4s %4s %4s %10s %10s %8s %10s %12s %9s %7s %8s\n", "blocks", "H", "h",
                "thr", "median_ms", "p99_ms", "cpu_ms", "Mvec/s", "GFLOP/s", "rep_GB/s", "%bw",
                "scaling");
  }
  nlohmann::json runs = nlohmann::json::array();
  std::mt19937_64 rng(1);
  for (size_t kvh : *kv_heads) {
    for (size_t qh : *q_heads) {
      if (qh % kvh != 0) continue;
      for (size_t nb : *blocks) {
        // --in-flight N: N layers, each with its own representations (as the layers of one
        // retrieval group), so that the tasks do not share cached data.
        const size_t n_layers = gpu ? 1 : f.in_flight;
        std::vector<Layer> layers;
        std::vector<sparse::RetrievalTask> tasks;
        for (size_t i = 0; i < n_layers; ++i) {
          auto layer = MakeLayer(f, nb, qh, kvh, rng);
          if (!layer.ok()) return fail(layer.status());
          layers.push_back(std::move(*layer));
          sparse::RetrievalTask t;
          t.reps = layers.back().reps->View();
          t.queries = layers.back().queries;
          t.num_queries = f.queries;
          t.q_heads = qh;
          t.sparse_ratio = f.sparse_ratio;
          t.options.select_per_kv_head = f.per_kv_head;
          for (size_t b = 0; b < nb; ++b) t.candidates.push_back(static_cast<uint32_t>(b));
          tasks.push_back(std::move(t));
        }
        const Layer* layer = &layers.front();
        const double vecs = double(nb) * double(vectors) * double(kvh);
        const double flops = 2.0 * double(nb) * double(vectors) * double(qh) * double(f.queries) *
                             double(f.d_pruned);
        const double bytes = double(nb) * double(layer->reps->block_bytes());
        if (gpu) {
#ifdef KVSTAR_HAVE_CUDA
          const sparse::RetrievalTask& task = tasks.front();
          GpuScoringChoices choices;
          choices.tensor_cores = f.gpu_kernel == "auto";
          choices.max_ctas = f.gpu_ctas;
          choices.blocks_per_cta = f.gpu_blocks_per_cta;
          choices.stages = f.gpu_stages;
          choices.head_major = f.gpu_layout == "head";
          auto g = TimeGpuScoring(task.reps, task.queries, f.queries, qh, f.gpu_tasks,
                                  f.per_kv_head, f.min_seconds, choices);
          if (!g.ok()) return fail(g.status());
          const double call = Percentile(g->call_ms, 0.5);
          const double n = static_cast<double>(f.gpu_tasks);
          const double gflops = n * flops / (call * 1e-3) / 1e9;
          const double rep_gbps = n * bytes / (call * 1e-3) / 1e9;
          runs.push_back({{"blocks", nb},
                          {"q_heads", qh},
                          {"kv_heads", kvh},
                          {"device", g->device},
                          {"kernel", g->tensor_cores ? "tensor_cores" : "f32"},
                          {"tasks_per_call", f.gpu_tasks},
                          {"max_ctas", f.gpu_ctas},
                          {"blocks_per_cta", g->blocks_per_cta},
                          {"stages", f.gpu_stages},
                          {"layout", f.gpu_layout},
                          {"iterations", g->call_ms.size()},
                          {"median_ms_per_call", call},
                          {"p99_ms_per_call", Percentile(g->call_ms, 0.99)},
                          {"ms_per_task", call / n},
                          {"vectors_per_s", n * vecs / (call * 1e-3)},
                          {"gflops", gflops},
                          {"fraction_of_f32_gemm", gflops / (gemm_tflops * 1e3)},
                          {"rep_bytes_per_task", bytes},
                          {"rep_gbps", rep_gbps},
                          {"fraction_of_copy_bw", rep_gbps / copy_gbps},
                          {"max_rel_err_vs_cpu", g->max_rel_err}});
          if (!f.json) {
            std::printf(
                "%7zu %4zu %4zu %6zu %10.3f %10.3f %9.4f %10.1f %12.1f %5.1f%% %9.1f "
                "%5.1f%% %9.1e\n",
                nb, qh, kvh, f.gpu_tasks, call, Percentile(g->call_ms, 0.99), call / n,
                n * vecs / (call * 1e-3) / 1e6, gflops, 100 * gflops / (gemm_tflops * 1e3),
                rep_gbps, 100 * rep_gbps / copy_gbps, g->max_rel_err);
          }
#endif
          continue;
        }
        double single_median = 0;
        for (size_t t : *threads) {
          sparse::Retriever retriever({.num_threads = static_cast<int>(t),
                                       .pin_to_cores = f.pin,
                                       .min_segments = f.min_segments,
                                       .segment_blocks = f.segment_blocks});
          // One round: every task submitted at once, then waited for. ms: wall time per round
          // divided by the tasks in it (per task for --in-flight 1).
          std::vector<double> ms;
          std::vector<double> task_ms;  // submit to completion, each task of every round
          auto round = [&]() -> Status {
            std::vector<sparse::RetrievalHandle> handles;
            Stopwatch sw;
            for (const auto& task : tasks) handles.push_back(retriever.Submit(task));
            for (auto& h : handles) {
              KVSTAR_RETURN_IF_ERROR(h.Wait());
              task_ms.push_back(sw.Millis());
            }
            ms.push_back(sw.Millis() / static_cast<double>(tasks.size()));
            return Status::Ok();
          };
          Stopwatch total;
          const double cpu0 = WorkerCpuSeconds();
          for (int i = 0; i < 2; ++i) {  // warm-up
            if (Status s = round(); !s.ok()) return fail(s);
          }
          ms.clear();
          task_ms.clear();
          while (ms.size() < 5 || (total.Seconds() < f.min_seconds && ms.size() < 2000)) {
            if (Status s = round(); !s.ok()) return fail(s);
          }
          // CPU seconds per task of the retriever's threads: robust against other load on the
          // machine, unlike wall time.
          const double cpu_ms =
              (WorkerCpuSeconds() - cpu0) * 1e3 / double((ms.size() + 2) * tasks.size());
          const double median = Percentile(ms, 0.5);
          if (t == threads->front()) single_median = median * static_cast<double>(t);
          const double rep_gbps = bytes / (median * 1e-3) / 1e9;
          const double mem = bw[std::to_string(t)].get<double>();
          const double scaling = single_median / median;
          nlohmann::json run = {{"blocks", nb},
                                {"q_heads", qh},
                                {"kv_heads", kvh},
                                {"threads", t},
                                {"in_flight", tasks.size()},
                                {"iterations", ms.size()},
                                {"median_ms", median},
                                {"cpu_ms_per_task", cpu_ms},
                                {"p99_ms", Percentile(ms, 0.99)},
                                {"task_latency_median_ms", Percentile(task_ms, 0.5)},
                                {"tasks_per_s", 1e3 / median},
                                {"vectors_per_s", vecs / (median * 1e-3)},
                                {"gflops", flops / (median * 1e-3) / 1e9},
                                {"rep_bytes_per_task", bytes},
                                {"rep_gbps", rep_gbps},
                                {"fraction_of_memory_bw", rep_gbps / mem},
                                {"speedup_vs_first", scaling}};
          runs.push_back(run);
          if (!f.json) {
            std::printf(
                "%7zu %4zu %4zu %4zu %10.3f %10.3f %8.3f %10.1f %12.1f %9.2f %6.1f%% %8.2f\n", nb,
                qh, kvh, t, median, Percentile(ms, 0.99), cpu_ms, vecs / (median * 1e-3) / 1e6,
                flops / (median * 1e-3) / 1e9, rep_gbps, 100 * rep_gbps / mem, scaling);
          }
        }
      }
    }
  }
  out["runs"] = runs;
  if (f.json) std::printf("%s\n", out.dump(2).c_str());
  if (!f.plot.empty()) {
    LinePlot plot;
    plot.title = std::string("Retrieval speedup per thread (") +
                 sparse::kernels::CurrentTargetName() + ", " + std::to_string(f.in_flight) +
                 (f.in_flight == 1 ? " task" : " tasks") + " in flight)";
    plot.x_label = "threads";
    plot.y_label = "speedup / threads";
    RecordPlotSpec spec;
    spec.x = "threads";
    spec.y = "speedup_vs_first";
    spec.y_div = "threads";
    spec.group_by = {"blocks", "q_heads", "kv_heads"};
    spec.group_names = {"blocks", "H", "h"};
    const Status st = PlotRecordsToFile(std::move(plot), runs, spec, "bench-retrieval", f.plot);
    if (!st.ok()) return fail(st);
    if (!f.json) std::printf("plot: %s\n", f.plot.c_str());
  }
  return 0;
}

void AddBenchRetrieval(CLI::App& root, int* exit_code) {
  // Shared with the callback, which the app keeps as long as the options that point into it.
  auto flags = std::make_shared<RetrievalFlags>();
  auto* cmd = root.add_subcommand(
      "bench-retrieval",
      "Benchmark KVstar retrieval (block scoring, soft vote, top-k) on the CPU (or the block\n"
      "scoring on the GPU with --device cuda).\n"
      "Builds random fp16 block representations in memory, runs whole retrieval tasks through a\n"
      "Retriever with each --threads count and reports latency per task (median, p99), merged\n"
      "vectors scored per second, GFLOP/s, and representation bytes read per second next to the\n"
      "memory read bandwidth measured in the same run with the same thread count. The scaling\n"
      "column is the speedup over the first --threads entry (scaled to one thread). With\n"
      "--in-flight N, N tasks over N layers are submitted together and the times are per task\n"
      "of such a round: the scaling column is then the throughput scaling.\n"
      "Example: kvstar bench-retrieval --blocks 250,8192 --q-heads 20,32 --kv-heads 4,8 "
      "--threads 1,2 --json");
  cmd->add_option("--blocks", flags->blocks, "Candidate blocks per task, comma-separated")
      ->capture_default_str();
  cmd->add_option("--q-heads", flags->q_heads, "Query heads (H), comma-separated")
      ->capture_default_str();
  cmd->add_option("--kv-heads", flags->kv_heads,
                  "KV heads (h), comma-separated; pairs with H % h != 0 are skipped")
      ->capture_default_str();
  cmd->add_option("--d-pruned", flags->d_pruned, "Kept channels per KV head (d')")
      ->capture_default_str();
  cmd->add_option("--head-dim", flags->head_dim, "Head dimension (sets the 1/sqrt scale)")
      ->capture_default_str();
  cmd->add_option("--merge", flags->merge, "Tokens merged into one vector")->capture_default_str();
  cmd->add_option("--block-tokens", flags->block_tokens, "Tokens per block")->capture_default_str();
  cmd->add_option("--queries", flags->queries, "Queries per task (x, the retrieval stride)")
      ->capture_default_str();
  cmd->add_option("--threads", flags->threads, "Retriever thread counts, comma-separated")
      ->capture_default_str();
  cmd->add_option("--sparse-ratio", flags->sparse_ratio, "Fraction of candidates selected")
      ->capture_default_str();
  cmd->add_option("--min-seconds", flags->min_seconds, "Measuring time per configuration")
      ->capture_default_str();
  cmd->add_option("--simd", flags->simd,
                  "Highest SIMD target to dispatch to: best, avx2, sse4 or scalar")
      ->capture_default_str();
  cmd->add_flag("--per-kv-head", flags->per_kv_head, "One top-k per KV head");
  cmd->add_flag("--pin", flags->pin, "Pin retriever threads to cores 0..threads-1");
  cmd->add_option("--segment-blocks", flags->segment_blocks,
                  "Candidates per segment, the unit the threads of one task claim")
      ->check(AtLeastOne())
      ->capture_default_str();
  cmd->add_option("--min-segments", flags->min_segments,
                  "Fewest segments of 32 candidates per part when a task is split over threads")
      ->check(AtLeastOne());
  cmd->add_option("--device", flags->device,
                  "cpu (Retriever threads) or cuda (the GPU scoring kernels of --retrieval-device "
                  "gpu, against this GPU's f32 GEMM rate and copy bandwidth measured in the run)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--gpu-tasks", flags->gpu_tasks,
                  "--device cuda: tasks per call, each with its own copy of the "
                  "representations (e.g. 32 layers x batch)")
      ->check(AtLeastOne())
      ->capture_default_str();
  cmd->add_option("--gpu-kernel", flags->gpu_kernel,
                  "--device cuda: auto (the tensor-core kernel where it applies: d_pruned 32, up "
                  "to 64 vectors per block and 64 queries per KV head) or f32 (the CUDA-core "
                  "kernel, to compare)")
      ->check(CLI::IsMember({"auto", "f32"}))
      ->capture_default_str();
  cmd->add_option("--gpu-ctas", flags->gpu_ctas,
                  "--device cuda: run the scoring kernels on at most this many CTAs of 64 threads "
                  "that loop over the work (--gpu-score-ctas of the engine commands; 0: the whole "
                  "grid at once)")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  cmd->add_option("--gpu-blocks-per-cta", flags->gpu_blocks_per_cta,
                  "--device cuda: candidate blocks per work item of the scoring kernel (each item "
                  "loads its KV head's queries once; the same scores for every value); 0: auto "
                  "(128, fewer when the grid would be small)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  cmd->add_option("--gpu-stages", flags->gpu_stages,
                  "--device cuda: how the tensor-core scoring kernel reads the representations: "
                  "0, each warp's block into registers, then its scores; 3, through a ring of 3 "
                  "blocks per warp in shared memory, the next two in flight (the same scores)")
      ->check(CLI::IsMember({0, 3}))
      ->capture_default_str();
  cmd->add_option("--gpu-layout", flags->gpu_layout,
                  "--device cuda: the representations' layout in the GPU's memory: vector, each "
                  "merged vector's channels of every KV head together (as on the host); head, "
                  "each KV head's vectors of a block together, so that a work item (one KV head) "
                  "reads contiguous lines (the same scores)")
      ->check(CLI::IsMember({"vector", "head"}))
      ->capture_default_str();
  cmd->add_option("--in-flight", flags->in_flight,
                  "CPU: tasks submitted together, each over its own copy of the representations "
                  "(the layers of one retrieval group); times are then per task of a round "
                  "(throughput), and task_latency_median_ms is submit to completion")
      ->check(CLI::Range(size_t{1}, size_t{256}))
      ->capture_default_str();
  cmd->add_flag("--json", flags->json, "Print one JSON object instead of a table");
  cmd->add_option("--plot", flags->plot,
                  "CPU: also draw speedup per thread against threads, one line per shape, to "
                  "this PNG (or SVG when it ends in .svg)");
  cmd->callback([flags, exit_code] { *exit_code = RunBenchRetrieval(*flags); });
}

}  // namespace

KVSTAR_COMMAND(bench_retrieval, 70, AddBenchRetrieval);

}  // namespace kvstar::cli
