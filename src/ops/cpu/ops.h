// CPU compute backend: the ops a Qwen2/Llama forward pass needs, on activations in f32 and
// weights / KV blocks in their stored dtype (bf16, f16 or f32, converted on the fly, never copied
// to f32 as a whole). SIMD through Highway with the best target chosen at run time; the ops that
// take a ThreadPool parallelise through its ParallelFor.
//
// Results do not depend on the number of threads: every output element is computed by the same
// sequence of operations whichever thread runs it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/kv_layout.h"  // KvGeometry: block layout [2][kv_heads][block_tokens][head_dim]
#include "base/status.h"
#include "base/tensor_view.h"  // TensorView {data, dtype (f32/bf16/f16), rows, cols}
#include "base/thread_pool.h"

namespace kvstar::ops {

// y[rows] = W[rows][cols] . x[cols]. W in any dtype, f32 accumulate. Parallel over rows.
void MatVec(ThreadPool& pool, const TensorView& w, const float* x, float* y);

// y[n][rows] = x[n][cols] . W^T (prefill). Each weight tile is converted to f32 once and reused
// for all n rows of x; parallel over weight row panels. n == 1 forwards to MatVec.
void MatMul(ThreadPool& pool, const TensorView& w, const float* x, size_t n, float* y);

// y[n][cols] += bias (bias: rows == 1, any dtype).
void AddBias(const TensorView& bias, size_t n, float* y);

// out[n][dim] = x / sqrt(mean(x^2) + eps) * weight  (weight: 1 x dim, any dtype). out may alias x.
void RmsNorm(const float* x, const TensorView& weight, size_t n, size_t dim, float eps, float* out);

// In-place rotary embedding, Hugging Face "rotate_half" convention: for each token t, head h,
// i < head_dim/2: angle = float(pos[t]) * inv_freq[i];
//   (x_i, x_{i+half}) <- (x_i cos - x_{i+half} sin, x_{i+half} cos + x_i sin)
// x: [n][heads][head_dim]. cos/sin computed in f32 from the f32 angle, as transformers does.
void ApplyRope(const float* inv_freq, size_t head_dim, const int64_t* pos, size_t n, size_t heads,
               float* x);

// out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)). out may alias gate.
void SwiGlu(const float* gate, const float* up, size_t count, float* out);

// out[i][cols] = table row tokens[i] (table: [vocab][cols] any dtype). InvalidArgument if a token
// id is out of range (nothing is written then).
Status Embed(const TensorView& table, const int32_t* tokens, size_t n, float* out);

// out[i] = a[i] + b[i]. out may alias a or b.
void Add(const float* a, const float* b, size_t count, float* out);

// Writes k, v ([n][kv_heads][head_dim] f32) for logical tokens [first_token, first_token + n) into
// the blocks of a block table (token t goes to blocks[t / block_tokens], row t % block_tokens),
// converting to geom.dtype (bf16: round to nearest even).
void WriteKv(const KvGeometry& geom, void* const* blocks, size_t first_token, size_t n,
             const float* k, const float* v);

// Attention of n queries over the first num_tokens logical tokens of a block table (the logical
// token t is in blocks[t / block_tokens], row t % block_tokens).
// q: [n][q_heads][head_dim] f32; query i attends keys t <= q_last[i] (causal; decode passes
// q_last = num_tokens - 1). GQA: query head h uses KV head h / (q_heads / kv_heads).
// out: [n][q_heads][head_dim] f32 = softmax(q.k * scale) . v, f32 accumulation, online softmax.
// Each K/V row is read once per KV head for all query heads of its group. Parallel over
// (query tile, KV head) and, when those are few (decode), over fixed-length pieces of the sequence
// merged by log-sum-exp, so that one decode step uses all threads.
void AttentionOverBlocks(ThreadPool& pool, const KvGeometry& geom, size_t q_heads, const float* q,
                         size_t n, const int64_t* q_last, const void* const* blocks,
                         size_t num_tokens, float scale, float* out);

// Bit set of the Highway targets this library was compiled for (hwy/detect_targets.h values).
// Tests run every op once per target in (CompiledSimdTargets() & hwy::SupportedTargets()).
int64_t CompiledSimdTargets();

}  // namespace kvstar::ops
