// The public C++ API for embedding kvstar in a program: open a Hugging Face model directory on
// the CPU or a CUDA GPU, in a decode mode (dense, kvstar; on CUDA also offload and kvpr), and
// complete prompts, streaming the text. This header and kvstar/status.h are all a program needs;
// link the CMake target kvstar::kvstar (add_subdirectory on this repository).
//
//   auto llm = kvstar::Llm::Open("models/kvstar-demo", {.mode = "kvstar"});
//   if (!llm.ok()) { fprintf(stderr, "%s\n", llm.status().ToString().c_str()); return 1; }
//   auto out = (*llm)->Complete({.prompt = long_document, .max_new_tokens = 32});
//   if (out.ok()) puts(out->text.c_str());
//
// Errors are Status values (kvstar/status.h) with one message that names the option or input at
// fault; nothing here throws or aborts on bad input.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kvstar/status.h"

namespace kvstar {

// (done, total) of a long piece of work; called on the calling thread.
using ProgressFn = std::function<void(size_t done, size_t total)>;

struct LlmOptions {
  // "cpu", or "cuda" (the first GPU; builds with -DKVSTAR_CUDA=ON).
  std::string device = "cpu";
  // cpu: dense | kvstar | oracle (the exact per-step top-k, the accuracy baseline);
  // cuda: dense | offload | kvpr | kvstar.
  std::string mode = "dense";
  // CPU compute threads (on cuda: those that load the weights); 0 = every hardware thread.
  int threads = 0;
  // KV cache element type: "bf16" or "f32".
  std::string kv_dtype = "bf16";
  size_t block_tokens = 128;   // tokens per KV block, a multiple of 8 in [8, 4096]
  size_t prefill_chunk = 256;  // prompt tokens per prefill forward
  // kvstar: where every full block lives, "dram", "file:DIR" or (cpu) "tiered:DIR". A file
  // store keeps the prompt's blocks: a later request with the same prefix skips its prefill.
  std::string store = "dram";
  // kvstar / oracle: a JSON object of settings under UCM's names (init_window_sz,
  // local_window_sz, sparse_ratio, retrieval_stride, blk_repre_dim_prune_ratio,
  // blk_repre_inner_token_merge) and ours (`kvstar generate --help`); "" = the defaults.
  std::string kvstar_settings;
  // kvstar: CPU threads that score blocks; 0 = the device's default (1 on cpu).
  int retrieval_threads = 0;
  // cuda, kvstar: "cpu" (CPU threads score the blocks) or "gpu" (the GPU does).
  std::string retrieval_device = "cpu";
  // cuda, kvstar: "inclusive" (pinned host memory holds every block) or "exclusive" (only the
  // blocks off the device).
  std::string host_tier = "inclusive";
  // Told of the weights read from the directory, then (cuda) of the layers copied to the GPU.
  ProgressFn on_load_progress;
};

struct TextRequest {
  // The prompt as plain text (no chat template; the tokenizer's BOS is added where the model
  // has one), or, when `prompt` is empty, as token ids.
  std::string prompt;
  std::vector<int32_t> prompt_tokens;
  size_t max_new_tokens = 128;
  float temperature = 0.0f;  // 0 = greedy
  int top_k = 0;             // 0 = off
  float top_p = 1.0f;
  uint64_t seed = 0;
  // Polled between steps; when it turns true the request ends with finish_reason "cancelled".
  const std::atomic<bool>* cancel = nullptr;
  // The text as it is generated, in pieces that end on whole UTF-8 characters; their
  // concatenation is TextResult::text.
  std::function<void(std::string_view piece)> on_text;
  ProgressFn on_prefill_progress;
};

struct TextResult {
  std::string text;             // the generated text, without the stop token
  std::vector<int32_t> tokens;  // the generated ids, with the stop token if one was hit
  std::string finish_reason;    // "eos", "length", "max_position" or "cancelled"
  size_t prompt_tokens = 0;
  size_t reused_prompt_tokens = 0;  // prompt tokens whose KV came from the store
  double prefill_seconds = 0;
  double decode_seconds = 0;  // the first token (from the prefill) not counted
  double prefill_tokens_per_second = 0;
  double decode_tokens_per_second = 0;
  size_t device_kv_bytes = 0;  // KV bytes the request held on the device at its end
  size_t kv_bytes_loaded = 0;  // KV bytes moved from the store to the device (kvstar)
};

class Llm {
 public:
  // Loads config.json, *.safetensors and tokenizer.json from `model_dir`, then (cuda) copies
  // the weights to the GPU.
  static StatusOr<std::unique_ptr<Llm>> Open(const std::string& model_dir,
                                             const LlmOptions& options = {});
  ~Llm();
  Llm(const Llm&) = delete;
  Llm& operator=(const Llm&) = delete;

  // Prefill, then decode until a stop token, max_new_tokens, the model's last position or a
  // cancel. Safe to call from several threads: on cpu the requests run concurrently, on cuda
  // one after the other.
  StatusOr<TextResult> Complete(const TextRequest& request);

  // The tokenizer: text to ids (with BOS when `add_special` and the model has one) and back
  // (special tokens skipped).
  std::vector<int32_t> Encode(std::string_view text, bool add_special = true) const;
  std::string Decode(const std::vector<int32_t>& ids) const;

  const LlmOptions& options() const;
  std::string device_name() const;  // "cpu" or the GPU's name
  size_t vocab_size() const;
  size_t max_position() const;  // the model's max_position_embeddings

 private:
  struct Impl;
  explicit Llm(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvstar
