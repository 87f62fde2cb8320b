// KVstar settings. Keys keep UCM's names so that settings carry over; ours are block_tokens
// (engine-wide), select_per_kv_head, deterministic and staging_slots.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "base/status.h"

namespace kvstar {

struct KvstarConfig {
  size_t init_window_sz = 1;                // first blocks, always on device, never scored
  size_t local_window_sz = 2;               // newest full blocks, always on device
  double sparse_ratio = 0.25;               // share of candidate blocks selected
  size_t retrieval_stride = 8;              // decode steps per query group / retrieval
  double blk_repre_dim_prune_ratio = 0.25;  // share of channels kept in representations
  size_t blk_repre_inner_token_merge = 2;   // tokens averaged into one representation vector
  bool select_per_kv_head = false;          // top-k per KV head (device holds the union)
  bool deterministic = false;               // fixed swap timing (UCM's): for tests
  size_t staging_slots = 4;                 // per layer: extra slots for delta loads
  // CPU engine, not deterministic (ours): at most this many blocks of a new selection are loaded
  // per layer and step, highest score first, each replacing the lowest-scoring block that left
  // it; the rest follow in the next steps. 0 = the whole delta at once. Emulates how the CUDA
  // engine's staging_slots converge to a selection, to measure what that costs in accuracy.
  size_t max_loads_per_step = 0;
  // Prompt queries that make the first selection (group 0); 0 = retrieval_stride, as in UCM.
  size_t prompt_query_window = 0;
  // The first selection (end of prefill): "representations" (UCM) or "exact" (the real keys,
  // which are all on the device at that moment).
  std::string first_selection = "representations";
  // How a block's attention mass is combined over queries and heads: "sum" (UCM) or "max".
  std::string vote = "sum";
  // Which blocks a query head's softmax spans when scoring representations: "candidates" (UCM)
  // or "all" (windows too, as in attention; only candidates are selected).
  std::string softmax_scope = "candidates";
  // The first sync_steps decode steps re-select synchronously with their own query before that
  // step's attention (representations scored, the delta loaded from the store; the step waits).
  // 0 = UCM (decode steps 1..R use the prompt's selection). Short answers are decided in these
  // steps, where a stale selection costs the most.
  size_t sync_steps = 0;

  size_t prompt_queries() const {
    return prompt_query_window > 0 ? prompt_query_window : retrieval_stride;
  }

  Status Validate(size_t block_tokens) const;
  std::string ToJson() const;
};

// Parses a JSON object with any of the keys above; unknown keys are an error naming the key.
StatusOr<KvstarConfig> ParseKvstarConfig(std::string_view json, std::string_view source,
                                         KvstarConfig base = {});

}  // namespace kvstar
