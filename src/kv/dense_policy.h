// DensePolicy: every KV block of the request lives in the device pool; attention reads all of
// them through a per-layer block table. The reference every other mode is compared with.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "base/thread_pool.h"
#include "kv/device_pool.h"
#include "kv/kv_policy.h"
#include "kv/kvstar_config.h"

namespace kvstar {

class DensePolicy final : public KvPolicy {
 public:
  // q_heads: query heads of the model; pool geometry gives kv_heads, head_dim and block_tokens.
  DensePolicy(DevicePool& pool, ThreadPool& threads, size_t num_layers, size_t q_heads,
              float attn_scale);
  // Oracle top-k (a research baseline, not a memory saving): every block stays on the device,
  // but each decode step's attention of a layer reads only the windows of `oracle` and the
  // ceil(sparse_ratio x candidates) candidate blocks with the most exact attention mass for
  // that step's own query (summed over the layer's heads). It bounds what any block selection
  // of that ratio and those windows can reach.
  void set_oracle(const KvstarConfig& oracle) { oracle_ = oracle; }
  ~DensePolicy() override;
  DensePolicy(const DensePolicy&) = delete;
  DensePolicy& operator=(const DensePolicy&) = delete;

  const char* name() const override { return oracle_ ? "oracle" : "dense"; }
  Status Attend(int layer, const float* q, const float* k, const float* v, size_t n,
                int64_t first_pos, float* out) override;
  Status EndChunk(size_t n, bool prefill_done) override;
  size_t num_tokens() const override { return num_tokens_; }
  KvStats Stats() const override;

 private:
  // Makes sure layer's block table covers tokens [0, end).
  Status Reserve(int layer, size_t end);
  // Oracle decode step: attention over the windows and the exact top-k blocks for q.
  void OracleAttend(int layer, const float* q, size_t pos, float* out);

  DevicePool& pool_;
  ThreadPool& threads_;
  size_t q_heads_;
  float attn_scale_;
  size_t num_tokens_ = 0;
  std::vector<std::vector<int>> slots_;         // [layer][block] slot indices
  std::vector<std::vector<void*>> block_ptrs_;  // [layer][block] slot addresses
  std::vector<size_t> layer_tokens_;            // [layer] tokens written (layer-major prefill)
  std::vector<int64_t> q_last_;                 // scratch [n]
  std::optional<KvstarConfig> oracle_;
  bool prefill_done_ = false;
  std::vector<const void*> table_;  // scratch: oracle block table
};

}  // namespace kvstar
