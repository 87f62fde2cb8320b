// KvPolicy: how one request's KV cache is kept and read. One engine, several policies:
// dense (all KV in the device pool), and later offload, kvpr and kvstar (DESIGN.md, decode modes).
//
// The model calls Attend() once per layer per forward chunk with the chunk's new K/V (after
// RoPE) and its queries; the policy stores the K/V where it wants and computes attention over
// whatever KV it keeps. EndChunk() is called after the last layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace kvstar {

struct KvStats {
  size_t tokens = 0;               // tokens in the cache
  size_t device_blocks = 0;        // blocks held in the device pool (all layers)
  size_t device_bytes = 0;         // device KV bytes held by this request
  size_t bytes_loaded = 0;         // bytes moved store -> device (cumulative)
  size_t bytes_dumped = 0;         // bytes moved device -> store (cumulative)
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
  // After all layers of a chunk; `prefill_done` is true on the last prompt chunk.
  virtual Status EndChunk(size_t n, bool prefill_done) = 0;
  virtual size_t num_tokens() const = 0;
  virtual KvStats Stats() const = 0;
};

}  // namespace kvstar
