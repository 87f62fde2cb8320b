#include "cli_common.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "base/file_util.h"
#include "base/progress.h"

namespace kvstar::cli {

StatusOr<size_t> ParseBytes(const std::string& text, const std::string& flag) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
    ++i;
  std::string number = text.substr(0, i);
  std::string suffix = text.substr(i);
  for (char& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double mult = 1;
  if (suffix.empty() || suffix == "B")
    mult = 1;
  else if (suffix == "K" || suffix == "KB" || suffix == "KIB")
    mult = 1024.0;
  else if (suffix == "M" || suffix == "MB" || suffix == "MIB")
    mult = 1024.0 * 1024;
  else if (suffix == "G" || suffix == "GB" || suffix == "GIB")
    mult = 1024.0 * 1024 * 1024;
  else if (suffix == "T" || suffix == "TB" || suffix == "TIB")
    mult = 1024.0 * 1024 * 1024 * 1024;
  else
    number.clear();
  char* end = nullptr;
  const double value = number.empty() ? NAN : std::strtod(number.c_str(), &end);
  if (number.empty() || end != number.c_str() + number.size() || !(value > 0) ||
      !std::isfinite(value * mult)) {
    return InvalidArgument(
        "%s: '%s' is not a byte size; use a number with an optional K, M, G "
        "or T suffix (powers of 1024), e.g. 512M",
        flag.c_str(), text.c_str());
  }
  return static_cast<size_t>(value * mult);
}

void AddEngineFlags(CLI::App* cmd, EngineFlags* f, bool with_threads) {
  if (with_threads) {
    cmd->add_option("--threads", f->threads, "Compute threads (0 = all hardware threads)")
        ->check(CLI::Range(0, 4096));
  }
  cmd->add_option("--kv-dtype", f->kv_dtype, "KV cache element type: bf16 or f32")
      ->check(CLI::IsMember({"bf16", "f32"}));
  cmd->add_option("--block-tokens", f->block_tokens,
                  "Tokens per KV block (multiple of 8): the unit of storage and retrieval");
  cmd->add_option("--prefill-chunk", f->prefill_chunk, "Prompt tokens per prefill forward pass")
      ->check(AtLeastOne());
  cmd->add_option("--device-kv-budget", f->device_kv_budget,
                  "Bytes of device memory for KV blocks, e.g. 2G (default: the model's whole "
                  "context, at most 4G)");
  cmd->add_option("--mode", f->mode,
                  "Decode mode: dense (all KV on the device) or kvstar (KV offloaded to the "
                  "store, top blocks retrieved every retrieval_stride steps); with --device "
                  "cuda also offload (all KV streamed from host memory every step) and kvpr "
                  "(offload with a planned prefix recomputed from its activations); oracle "
                  "(CPU, a research baseline: all KV on the device, but each decode step "
                  "attends only to the windows and the sparse_ratio share of blocks with the "
                  "most exact attention mass for its own query)")
      ->check(CLI::IsMember({"dense", "kvstar", "offload", "kvpr", "oracle"}));
  const char* group = "KVstar (--mode kvstar; names as in UCM)";
  cmd->add_option("--store", f->store,
                  "Where offloaded KV blocks live: dram, file:DIR (local disk or a shared mount "
                  "such as NFS) or tiered:DIR (DRAM in front of files). File stores survive "
                  "restarts: a repeated prompt reuses its KV. With --device cuda the offloaded KV "
                  "lives in pinned host memory (the DRAM tier); file:DIR adds a file store "
                  "that keeps the prompt's blocks for reuse (tiered and --store-dram are "
                  "CPU-engine options)")
      ->group(group);
  cmd->add_option("--store-dram", f->store_dram, "DRAM store capacity, e.g. 8G (default 4G)")
      ->group(group);
  f->retrieval_threads_flag =
      cmd->add_option("--retrieval-threads", f->retrieval_threads,
                      "CPU threads that score blocks (default 1; with --device cuda all "
                      "hardware threads but three); with --retrieval-device gpu, the threads of "
                      "each step's kvstar bookkeeping (default: all hardware threads but three, at "
                      "most 8; 1: the decoding thread alone)")
          ->check(CLI::Range(1, 4096))
          ->group(group);
  cmd->add_option("--retrieval-device", f->retrieval_device,
                  "Where blocks are scored: cpu (CPU threads; default) or gpu (with --device "
                  "cuda: the representations also live in HBM and the scoring kernels run on a "
                  "low-priority stream; for batches whose retrieval the CPU cannot keep up with)")
      ->check(CLI::IsMember({"cpu", "gpu"}))
      ->group(group);
  cmd->add_option("--host-tier", f->host_tier,
                  "With --device cuda, kvstar: what the pinned host memory keeps. inclusive "
                  "(default): every block, so a block leaving the device needs no copy. "
                  "exclusive: only the blocks the device does not hold (about 1 - sparse_ratio "
                  "of the KV), so more sequences fit the host; each block leaving the device is "
                  "written back (as many bytes device to host as the delta moves host to device)")
      ->check(CLI::IsMember({"inclusive", "exclusive"}))
      ->group(group);
  cmd->add_option("--gpu-score-spread", f->gpu_score_spread,
                  "With --retrieval-device gpu: queue each group's scoring over this many decode "
                  "steps (its layers in equal shares; at most retrieval_stride) instead of all in "
                  "one step: a lower latency peak every retrieval_stride steps, selections up to "
                  "that many steps later")
      ->check(CLI::Range(1, 64))
      ->group(group);
  cmd->add_option("--gpu-score-ctas", f->gpu_score_ctas,
                  "With --retrieval-device gpu: run the groups' scoring kernels on at most this "
                  "many CTAs of 64 threads that loop over the work, so that scoring keeps a small, "
                  "fixed share of the SMs beside decoding instead of filling every free slot "
                  "between its launches (0, the default: the whole grid at once). Same scores "
                  "either way; for measurements: every N tried was slower than the default on an "
                  "H100 (docs/BENCHMARKS.md)")
      ->check(CLI::Range(0, 1 << 20))
      ->group(group);
  cmd->add_option("--kvstar-cache-blocks", f->kvstar_cache_blocks,
                  "With --device cuda, kvstar (not deterministic): HBM slots per (layer, "
                  "sequence) beyond the selection's, used as a device cache: a block that leaves "
                  "the selection keeps its slot until the slot is needed, and returns without a "
                  "copy if selected again; with --host-tier exclusive the host pins that many "
                  "fewer blocks. bench also takes 'max': as many as keep each batch within "
                  "--hbm-budget less 2 GiB (so --cuda-batch max may find a larger batch)")
      ->capture_default_str()
      ->group(group);
  cmd->add_option("--kvstar-config", f->kvstar_config,
                  "JSON file of KVstar settings with UCM's keys; the flags below override it")
      ->check(CLI::ExistingFile)
      ->group(group);
  KvstarConfig& k = f->kvstar;
  auto& v = f->kvstar_flags;
  v.push_back(cmd->add_option("--init_window_sz", k.init_window_sz,
                              "First blocks always kept on the device (default 1)")
                  ->group(group));
  v.push_back(cmd->add_option("--local_window_sz", k.local_window_sz,
                              "Newest full blocks always kept (default 2)")
                  ->group(group));
  v.push_back(cmd->add_option("--sparse_ratio", k.sparse_ratio,
                              "Share of candidate blocks selected (default 0.25)")
                  ->group(group));
  v.push_back(cmd->add_option("--retrieval_stride", k.retrieval_stride,
                              "Decode steps per retrieval (default 8)")
                  ->group(group));
  v.push_back(cmd->add_option("--blk_repre_dim_prune_ratio", k.blk_repre_dim_prune_ratio,
                              "Share of key channels kept in block representations (default 0.25)")
                  ->group(group));
  v.push_back(cmd->add_option("--blk_repre_inner_token_merge", k.blk_repre_inner_token_merge,
                              "Tokens averaged per representation vector (default 2)")
                  ->group(group));
  v.push_back(cmd->add_flag("--select_per_kv_head", k.select_per_kv_head,
                            "One top-k per KV head (the device holds their union)")
                  ->group(group));
  v.push_back(cmd->add_flag("--deterministic", k.deterministic,
                            "UCM's fixed swap timing (reproducible; may wait for retrieval)")
                  ->group(group));
  v.push_back(cmd->add_option("--staging_slots", k.staging_slots,
                              "Per layer: free slots that delta loads go to before outgoing "
                              "blocks' slots are reused (default 4)")
                  ->group(group));
  v.push_back(cmd->add_option("--max_loads_per_step", k.max_loads_per_step,
                              "CPU engine, not deterministic: at most this many blocks of a new "
                              "selection load per layer and step, highest score first (0 = all "
                              "at once); emulates the CUDA engine's staging_slots")
                  ->group(group));
  v.push_back(cmd->add_option("--prompt_query_window", k.prompt_query_window,
                              "Last prompt tokens whose queries make the first selection "
                              "(default 0 = retrieval_stride, as in UCM)")
                  ->group(group));
  v.push_back(cmd->add_option("--sync_steps", k.sync_steps,
                              "First decode steps that re-select synchronously with their own "
                              "query before attending (the step waits for retrieval and the "
                              "delta load; default 0 = UCM)")
                  ->group(group));
  v.push_back(cmd->add_option("--first_selection", k.first_selection,
                              "First selection at the end of prefill: representations (UCM) or "
                              "exact (the real keys, all on the device then)")
                  ->check(CLI::IsMember({"representations", "exact"}))
                  ->group(group));
  v.push_back(
      cmd->add_option(
             "--vote", k.vote,
             "Block score over queries and heads in the exact first selection: sum (UCM's soft "
             "vote) or max")
          ->check(CLI::IsMember({"sum", "max"}))
          ->group(group));
  v.push_back(cmd->add_option("--softmax_scope", k.softmax_scope,
                              "Blocks each head's softmax spans when scoring: candidates (UCM) or "
                              "all (windows too, as in attention)")
                  ->check(CLI::IsMember({"candidates", "all"}))
                  ->group(group));
}

StatusOr<EngineOptions> FinishEngineOptions(const EngineFlags& f) {
  EngineOptions o;
  o.threads = f.threads;
  o.kv_dtype = f.kv_dtype == "f32" ? DType::kF32 : DType::kBF16;
  o.block_tokens = f.block_tokens;
  o.prefill_chunk = f.prefill_chunk;
  o.mode = f.mode;
  if (!f.device_kv_budget.empty()) {
    KVSTAR_ASSIGN_OR_RETURN(o.device_kv_budget,
                            ParseBytes(f.device_kv_budget, "--device-kv-budget"));
  }
  o.store = f.store;
  o.retrieval_threads = f.retrieval_threads;
  if (f.retrieval_device == "gpu") {
    return InvalidArgument(
        "--retrieval-device gpu needs --device cuda (the CPU engine scores "
        "blocks on CPU threads)");
  }
  if (f.host_tier == "exclusive") {
    return InvalidArgument(
        "--host-tier exclusive needs --device cuda (the CPU engine keeps offloaded blocks in "
        "its block store)");
  }
  if (f.gpu_score_spread != 1) return GpuScoreSpreadError(f.gpu_score_spread);
  if (f.gpu_score_ctas != 0) return GpuScoreCtasError(f.gpu_score_ctas);
  if (f.kvstar_cache_blocks != "0") {
    return InvalidArgument(
        "--kvstar-cache-blocks: the device cache is a CUDA engine option (add --device cuda)");
  }
  if (!f.store_dram.empty()) {
    KVSTAR_ASSIGN_OR_RETURN(o.store_dram_bytes, ParseBytes(f.store_dram, "--store-dram"));
  }
  if (!f.kvstar_config.empty()) {
    KVSTAR_ASSIGN_OR_RETURN(std::string text, ReadFileToString(f.kvstar_config));
    KVSTAR_ASSIGN_OR_RETURN(o.kvstar, ParseKvstarConfig(text, f.kvstar_config));
  }
  // Flags given on the command line override the file.
  const KvstarConfig& k = f.kvstar;
  for (CLI::Option* opt : f.kvstar_flags) {
    if (opt->count() == 0) continue;
    const std::string name = opt->get_name();
    if (name == "--init_window_sz")
      o.kvstar.init_window_sz = k.init_window_sz;
    else if (name == "--local_window_sz")
      o.kvstar.local_window_sz = k.local_window_sz;
    else if (name == "--sparse_ratio")
      o.kvstar.sparse_ratio = k.sparse_ratio;
    else if (name == "--retrieval_stride")
      o.kvstar.retrieval_stride = k.retrieval_stride;
    else if (name == "--blk_repre_dim_prune_ratio")
      o.kvstar.blk_repre_dim_prune_ratio = k.blk_repre_dim_prune_ratio;
    else if (name == "--blk_repre_inner_token_merge")
      o.kvstar.blk_repre_inner_token_merge = k.blk_repre_inner_token_merge;
    else if (name == "--select_per_kv_head")
      o.kvstar.select_per_kv_head = k.select_per_kv_head;
    else if (name == "--deterministic")
      o.kvstar.deterministic = k.deterministic;
    else if (name == "--staging_slots")
      o.kvstar.staging_slots = k.staging_slots;
    else if (name == "--max_loads_per_step")
      o.kvstar.max_loads_per_step = k.max_loads_per_step;
    else if (name == "--prompt_query_window")
      o.kvstar.prompt_query_window = k.prompt_query_window;
    else if (name == "--sync_steps")
      o.kvstar.sync_steps = k.sync_steps;
    else if (name == "--first_selection")
      o.kvstar.first_selection = k.first_selection;
    else if (name == "--vote")
      o.kvstar.vote = k.vote;
    else if (name == "--softmax_scope")
      o.kvstar.softmax_scope = k.softmax_scope;
  }
  KVSTAR_RETURN_IF_ERROR(ValidateEngineOptions(o));
  return o;
}

nlohmann::json KvReportJson(const EngineOptions& o, const GenerateResult& r) {
  const KvStats& s = r.kv;
  nlohmann::json j = {
      {"mode", o.mode},     {"dtype", DTypeName(o.kv_dtype)},   {"block_tokens", o.block_tokens},
      {"tokens", s.tokens}, {"device_blocks", s.device_blocks}, {"device_bytes", s.device_bytes}};
  if (o.mode == "kvstar") {
    const double steps = std::max<double>(1.0, static_cast<double>(r.step_ms.size()));
    const double decode_ms = r.decode_seconds * 1e3;
    j["settings"] = nlohmann::json::parse(o.kvstar.ToJson());
    j["store"] = o.store;
    j["candidate_blocks"] = s.candidate_blocks;
    j["selected_blocks"] = s.selected_blocks;
    j["bytes_loaded"] = s.bytes_loaded;
    j["bytes_loaded_per_step"] = static_cast<double>(s.bytes_loaded) / steps;
    j["bytes_dumped"] = s.bytes_dumped;
    j["blocks_loaded"] = s.blocks_loaded;
    j["retrievals"] = s.retrievals;
    j["skipped_retrievals"] = s.skipped_retrievals;
    j["sync_retrievals"] = s.sync_retrievals;
    j["swaps"] = s.swaps;
    j["late_swaps"] = s.late_swaps;
    // Means and shares are over the asynchronous retrievals (the first selection and the
    // sync_steps re-selections run inside a step by design: sync_retrievals, sync_wait_ms).
    j["retrieval_ms_mean"] =
        s.async_retrievals ? s.retrieval_ms_total / static_cast<double>(s.async_retrievals) : 0.0;
    j["decode_wait_ms"] = s.decode_wait_ms;
    j["sync_wait_ms"] = s.sync_wait_ms;
    // Asynchronous retrieval time the decode thread did not wait for, over all of it.
    const double async_wait = std::max(0.0, s.decode_wait_ms - s.sync_wait_ms);
    j["retrieval_hidden_share"] =
        s.retrieval_ms_total > 0 ? std::max(0.0, 1.0 - async_wait / s.retrieval_ms_total) : 1.0;
    j["decode_wait_share"] = decode_ms > 0 ? s.decode_wait_ms / decode_ms : 0.0;
    j["prefix_reused_tokens"] = s.prefix_reused_tokens;
  }
  return j;
}

int ReportError(const Status& status) {
  std::fprintf(stderr, "error: %s\n", status.message().c_str());
  return 1;
}

void AddDeviceFlag(CLI::App* cmd, std::string* device) {
  cmd->add_option("--device", *device,
                  "cpu, or cuda (CUDA builds): the weights are copied to the GPU and --mode may "
                  "be dense, offload, kvpr or kvstar")
      ->check(CLI::IsMember({"cpu", "cuda"}));
}

const CLI::Validator& AtLeastOne() {
  static const CLI::Range range(int64_t{1}, int64_t{1} << 40);
  return range;
}

bool RetrievalThreadsGiven(const EngineFlags& flags) {
  return flags.retrieval_threads_flag != nullptr && flags.retrieval_threads_flag->count() > 0;
}

StatusOr<EngineOptions> FinishDeviceEngineOptions(const EngineFlags& flags,
                                                  const std::string& device, std::string* mode) {
  const bool cuda = device == "cuda";
#ifndef KVSTAR_HAVE_CUDA
  if (cuda) {
    return InvalidArgument(
        "--device cuda: this build has the CPU backend only (build with -DKVSTAR_CUDA=ON)");
  }
#endif
  // Said, not ignored: a user who asked for a store must not believe the KV went there.
  if (cuda && (flags.store.starts_with("tiered:") || !flags.store_dram.empty())) {
    return InvalidArgument(
        "--store %s%s: with --device cuda the offloaded KV lives in pinned host memory (one "
        "region per sequence), which is already the DRAM tier. Use --store file:DIR to keep "
        "the prompt's blocks for reuse, or --device cpu for a tiered store",
        flags.store.c_str(), flags.store_dram.empty() ? "" : " / --store-dram");
  }
  if (cuda && flags.store != "dram" && flags.mode != "kvstar") {
    return InvalidArgument(
        "--store %s: with --device cuda a block store is used by --mode kvstar only (mode "
        "%s keeps its KV in HBM or pinned host memory)",
        flags.store.c_str(), flags.mode.c_str());
  }
  if (cuda && flags.host_tier == "exclusive" && flags.mode != "kvstar") {
    return InvalidArgument(
        "--host-tier exclusive: only --mode kvstar has a host tier to choose (mode %s keeps its "
        "KV in HBM or pins every block)",
        flags.mode.c_str());
  }
  EngineFlags cpu = flags;
  if (cuda) {
    cpu.mode = "dense";
    cpu.retrieval_device = "cpu";
    cpu.host_tier = "inclusive";
    cpu.gpu_score_spread = 1;
    cpu.gpu_score_ctas = 0;
    cpu.kvstar_cache_blocks = "0";
  }
  if (cuda && flags.gpu_score_spread != 1 && flags.retrieval_device != "gpu") {
    return GpuScoreSpreadError(flags.gpu_score_spread);
  }
  if (cuda && flags.gpu_score_ctas != 0 && flags.retrieval_device != "gpu") {
    return GpuScoreCtasError(flags.gpu_score_ctas);
  }
  KVSTAR_ASSIGN_OR_RETURN(EngineOptions o, FinishEngineOptions(cpu));
  if (cuda && o.kvstar.max_loads_per_step != 0) return CudaMaxLoadsError();
  o.gpu_scoring = cuda && flags.retrieval_device == "gpu";
  o.exclusive_host = cuda && flags.host_tier == "exclusive";
  o.gpu_score_spread = cuda ? flags.gpu_score_spread : 1;
  o.gpu_score_ctas = cuda ? flags.gpu_score_ctas : 0;
  if (cuda && flags.kvstar_cache_blocks != "0") {
    KVSTAR_ASSIGN_OR_RETURN(const size_t n,
                            ParseKvstarCacheBlocks(flags.kvstar_cache_blocks, /*allow_max=*/false));
    if (n > 0 && (flags.mode != "kvstar" || o.kvstar.deterministic)) {
      return InvalidArgument(
          "--kvstar-cache-blocks: the device cache is part of kvstar's non-deterministic "
          "schedule (use --mode kvstar without --deterministic)");
    }
    o.kvstar_cache_blocks = n;
  }
  if (cuda && !RetrievalThreadsGiven(flags)) o.retrieval_threads = 0;  // the CUDA default
  *mode = cuda ? flags.mode : o.mode;
  return o;
}

#ifdef KVSTAR_HAVE_CUDA
StatusOr<std::unique_ptr<cuda::CudaRunner>> CreateCudaRunner(const Engine& engine,
                                                             const std::string& mode,
                                                             const EngineOptions& options,
                                                             bool show_progress) {
  Progress upload("weights to the GPU (layers)", engine.config().num_layers, show_progress);
  auto runner = cuda::CudaRunner::Create(engine, mode, options,
                                         [&](size_t done, size_t) { upload.Update(done); });
  upload.Finish();
  return runner;
}
#endif

StatusOr<size_t> ParseKvstarCacheBlocks(const std::string& text, bool allow_max) {
  if (allow_max && text == "max") return kCacheBlocksMax;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || text[0] < '0' || text[0] > '9' || *end != '\0' || n > (1ull << 30)) {
    return InvalidArgument("--kvstar-cache-blocks '%s': %s", text.c_str(),
                           allow_max ? "must be max or a block count per (layer, sequence)"
                                     : "a block count per (layer, sequence) ('max' is a choice "
                                       "of kvstar bench, which sizes the cache to each batch's "
                                       "HBM budget)");
  }
  return static_cast<size_t>(n);
}

Status GpuScoreSpreadError(size_t spread) {
  return InvalidArgument(
      "--gpu-score-spread %zu: only GPU scoring is spread over steps (add --device cuda "
      "--retrieval-device gpu)",
      spread);
}

Status GpuScoreCtasError(size_t ctas) {
  return InvalidArgument(
      "--gpu-score-ctas %zu: only GPU scoring has kernels to limit (add --device cuda "
      "--retrieval-device gpu)",
      ctas);
}

Status CudaMaxLoadsError() {
  return InvalidArgument(
      "max_loads_per_step is the CPU engine's emulation of the CUDA engine's staging slots; "
      "with --device cuda use --staging_slots");
}

std::string DumpJson(const nlohmann::json& j) {
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace kvstar::cli
