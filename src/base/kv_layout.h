// The KV block layout shared by the store, the retriever, the ops and the KV policies.
//
// A block holds `block_tokens` consecutive tokens of one sequence for one layer:
//   [2][kv_heads][block_tokens][head_dim]   (index 0 = K after RoPE, 1 = V)
// in `dtype` (f32 or bf16). Tokens past the sequence end in a partial tail block are unused.
#pragma once

#include <cstddef>

#include "base/half.h"

namespace kvstar {

struct KvGeometry {
  size_t kv_heads = 0;
  size_t head_dim = 0;
  size_t block_tokens = 128;
  DType dtype = DType::kBF16;

  size_t elements_per_head() const { return block_tokens * head_dim; }
  // Elements of K (or of V) in one block: [kv_heads][block_tokens][head_dim].
  size_t elements_per_half() const { return kv_heads * block_tokens * head_dim; }
  size_t elements_per_block() const { return 2 * elements_per_half(); }
  size_t block_bytes() const { return elements_per_block() * DTypeSize(dtype); }
  // Element offset of (kv = 0 for K / 1 for V, head, token) inside a block.
  size_t offset(size_t kv, size_t head, size_t token) const {
    return ((kv * kv_heads + head) * block_tokens + token) * head_dim;
  }
  // KV bytes per token per layer.
  size_t bytes_per_token() const { return 2 * kv_heads * head_dim * DTypeSize(dtype); }
};

}  // namespace kvstar
