// KvPolicy: how one request's KV cache is kept and read. One engine, several policies:
// dense (all KV in the device pool), and later offload, kvpr and kvstar (DESIGN.md, decode modes).
//
// Call order for one request:
//   AppendTokens(prompt)            every token of the sequence is appended once, before its K/V
//   PrepareReuse(prompt)            once: how many prompt tokens the policy already holds
//   prefill, layer-major:  for each layer: Attend(layer, chunk...) for every chunk, then
//                          EndLayerPrefill(layer); finally EndChunk(n, prefill_done = true)
//   decode, per step:      AppendTokens({token}), Attend(layer, 1 token) for every layer,
//                          EndChunk(1, false)  -- the step boundary
// Attend receives the new K/V (after RoPE) and the queries; the policy stores the K/V where it
// wants and computes attention over whatever KV it keeps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "base/status.h"

namespace kvstar {

struct KvStats {
  size_t tokens = 0;         // tokens in the cache
  size_t device_blocks = 0;  // blocks held in the device pool (all layers)
  size_t device_bytes = 0;   // device KV bytes held by this request
  size_t bytes_loaded = 0;   // bytes moved store -> device (cumulative)
  size_t bytes_dumped = 0;   // bytes moved device -> store (cumulative)
  // Sparse policies (kvstar); zero otherwise.
  size_t candidate_blocks = 0;    // blocks that could be selected now (all layers)
  size_t selected_blocks = 0;     // blocks in the active selections (all layers)
  size_t retrievals = 0;          // retrieval tasks completed (sync_retrievals included)
  size_t async_retrievals = 0;    // of which scheduled asynchronously (retrieval_ms_total's)
  size_t sync_retrievals = 0;     // retrievals a decode step waited for (sync_steps)
  size_t skipped_retrievals = 0;  // groups not retrieved because the previous one was running
  size_t swaps = 0;               // selections applied
  size_t late_swaps = 0;          // selections not applied by UCM's deadline (decode went on)
  size_t blocks_loaded = 0;
  double retrieval_ms_total = 0;    // submit -> observed done, summed
  double decode_wait_ms = 0;        // time the decode thread waited for retrieval or loads
  double sync_wait_ms = 0;          // of which in sync_steps re-selections (waited by design)
  size_t prefix_reused_tokens = 0;  // prompt tokens whose KV came from the store
};

class KvPolicy {
 public:
  virtual ~KvPolicy() = default;
  virtual const char* name() const = 0;

  // Layer `layer` of a chunk of n tokens at positions [first_pos, first_pos + n):
  //   q: [n][q_heads][head_dim], k, v: [n][kv_heads][head_dim] (f32, RoPE applied to q and k)
  //   out: [n][q_heads][head_dim]: causal attention over the cache including the new tokens.
  virtual Status Attend(int layer, const float* q, const float* k, const float* v, size_t n,
                        int64_t first_pos, float* out) = 0;
  // Prompt tokens [0, returned) are already cached (prefix reuse); prefill starts there.
  virtual StatusOr<size_t> PrepareReuse(std::span<const int32_t> prompt) { return size_t{0}; }
  // Every token of the sequence, in order, before its K/V is produced (block ids hash them).
  virtual void AppendTokens(std::span<const int32_t> tokens) {}
  // Layer-major prefill: every prompt token of `layer` has been through Attend.
  virtual Status EndLayerPrefill(int layer) { return Status::Ok(); }
  // After all layers of a chunk (a decode step boundary); `prefill_done` ends the prompt.
  virtual Status EndChunk(size_t n, bool prefill_done) = 0;
  virtual size_t num_tokens() const = 0;
  virtual KvStats Stats() const = 0;
};

}  // namespace kvstar
