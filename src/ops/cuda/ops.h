// CUDA compute backend: the ops of src/ops/cpu/ops.h with the same semantics and layouts, on
// device pointers, queued on a stream (asynchronous: a returned OK Status means the work was
// queued; errors of the work itself surface at the next synchronization).
//
// Every pointer named *device* below (and every pointer argument unless said otherwise) is device
// memory. TensorView / KvGeometry are the CPU types with `data` / block pointers on the device.
// Activations are f32; weights are bf16, f16 or f32; KV blocks are f32 or bf16.
//
// Differences from the CPU ops, each on purpose:
//  - MatMul with n > 16 (prefill) and bf16 / f16 weights rounds the activations to the weight
//    dtype and runs on the tensor cores (cuBLAS, f32 accumulation): relative error ~1e-3 against
//    the CPU op, which multiplies f32 activations. n <= 16 with bf16 weights (decode) runs the
//    skinny kernel, which keeps f32 activations (error at f32 level, results independent of n);
//    f16 weights at n <= 16 use MatVec (n = 1) or cuBLAS. f32 weights use plain f32 GEMM (no
//    TF32).
//  - Embed reads token ids from device memory and cannot report a bad id before it runs: ids must
//    be checked on the host (CheckTokenIds) where they come from the host; rows of bad ids are
//    filled with NaN.
//  - Attention takes an optional row stride of the block table so that one call serves a batch
//    of sequences (decode of several requests).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "base/kv_layout.h"
#include "base/status.h"
#include "base/tensor_view.h"
#include "ops/cuda/device.h"

namespace kvstar::cuda {

// ---- Programmatic dependent launch -----------------------------------------------------------

// Whether the decode-step kernels (norms, skinny products, RoPE + KV write, decode attention and
// its merge, SwiGLU, embedding, sampling) are launched as programmatic dependents of the kernel
// before them in the stream (sm_90+; process-wide, on by default). Each such kernel lets its
// successor launch as soon as all of its own CTAs are resident, and waits for its predecessor
// (griddepcontrol.wait) before it touches any activation, cache or table; only the skinny
// products read weights before that wait. So a kernel's CTAs become resident, and start to
// stream their weights, while the kernel before it drains. Results are the same bit for bit
// either way; off is for measurements and for debugging. Weights must not be written by a kernel
// that runs just before a product in the same stream (they are written at load time).
void SetDependentLaunches(bool on);
bool DependentLaunches();

// ---- How the skinny products read their weights -----------------------------------------------

// 0: each warp loads a round of weights (8 pieces of 16 B per lane) into registers at the top of
// the round, then computes it. 1: the same, with the next round's loads issued before a round
// computes (a second set of registers). 2, 3 or 4: cp.async copies them into a per-warp ring of
// that many rounds in shared memory, the next rounds in flight while one computes (32 KiB of shared
// memory per round and CTA). The same results bit for bit; process-wide; 0 by default: in the
// engine the rings made no step faster (docs/BENCHMARKS.md, "The rings and head-major
// representations").
bool SkinnyStagesValid(int stages);
void SetSkinnyStages(int stages);  // checked: SkinnyStagesValid(stages)
int SkinnyStages();

// Whether a skinny launch of at most 32 weight rows per SM in all (Llama-3-8B's o and down
// products; q, k or v alone) halves each row tile's k-steps between the two CTAs of a cluster
// (sm_90), which add their sums in a fixed order: twice the CTAs streaming weights.
// Process-wide, on by default (H100: one layer's products take 5.0-6.3% less time at 1-8 rows;
// at 9-16 rows split launches take 32-row tiles, 7.6-13.1% faster than 16-row ones for o and
// down; docs/BENCHMARKS.md); results independent of n either way, equal to f32 arithmetic up to
// summation order (not the same bits as without the split).
void SetSkinnySplit(bool on);
bool SkinnySplit();

// ---- Matrix products (cuBLAS) ----------------------------------------------------------------

// Device scratch bytes MatMul needs for these shapes (the activations in the weight dtype).
size_t MatMulWorkspaceBytes(const TensorView& w, size_t n);

// The kernel a product runs on. kAuto: the skinny tensor-core kernel where it applies (bf16
// weights, n <= 16, cols % 8 == 0, 16 B aligned), else the library path. kLibrary: the
// warp-per-row MatVec kernel for n = 1, cuBLAS for n > 1. kSkinny: the skinny kernel, or
// InvalidArgument where it does not apply. The forced choices are for tests and benchmarks.
enum class MatMulKernel { kAuto, kLibrary, kSkinny };

// y[n][rows] = x[n][cols] . W^T, f32 accumulation. w.data, x, y and workspace on the device;
// workspace holds at least MatMulWorkspaceBytes(w, n) bytes.
Status MatMul(const DeviceContext& ctx, CudaStream* stream, const TensorView& w, const float* x,
              size_t n, float* y, void* workspace, MatMulKernel kernel = MatMulKernel::kAuto);

// One product of a MatMulShared call: y[n][w.rows].
struct MatMulTarget {
  TensorView w;
  float* y;
};

// MatMul of one x[n][cols] by several matrices of cols columns (q / k / v, gate / up): one launch
// of the skinny kernel where it applies to all of them (up to 3), else one MatMul each. The
// workspace holds the largest MatMulWorkspaceBytes of the targets.
Status MatMulShared(const DeviceContext& ctx, CudaStream* stream,
                    std::span<const MatMulTarget> targets, const float* x, size_t n,
                    void* workspace, MatMulKernel kernel = MatMulKernel::kAuto);

// SwiGLU's input products and activation: act[n][rows] = gate / (1 + exp(-gate)) * up with
// gate = x . W_gate^T and up = x . W_up^T (equal shapes). With fuse and the skinny kernel, one
// launch computes both products for the same rows and writes only act (up is not written);
// otherwise MatMulShared writes gate into act and up, then SwiGlu. The same bits either way.
Status MatMulSwiGlu(const DeviceContext& ctx, CudaStream* stream, const TensorView& w_gate,
                    const TensorView& w_up, const float* x, size_t n, float* act, float* up,
                    void* workspace, MatMulKernel kernel = MatMulKernel::kAuto, bool fuse = true);

// MatMul with n = 1.
inline Status MatVec(const DeviceContext& ctx, CudaStream* stream, const TensorView& w,
                     const float* x, float* y, void* workspace) {
  return MatMul(ctx, stream, w, x, 1, y, workspace);
}

// MatMul whose activations x[n][cols] are already in the weight dtype (bf16 / f16), e.g. stored
// activations brought back from host memory (KVPR recomputation): no conversion, no workspace.
// Always a GEMM, also for n = 1.
Status MatMulConverted(const DeviceContext& ctx, CudaStream* stream, const TensorView& w,
                       const void* x, size_t n, float* y);

// dst[count] = src rounded to dtype (bf16 / f16: round to nearest even; f32: a copy).
Status ConvertF32(CudaStream* stream, const float* src, size_t count, DType dtype, void* dst);

// ---- Element-wise and row-wise ops -----------------------------------------------------------

// y[n][cols] += bias (bias: rows == 1, any dtype).
Status AddBias(CudaStream* stream, const TensorView& bias, size_t n, float* y);

// out[n][dim] = x / sqrt(mean(x^2) + eps) * weight. out may alias x.
Status RmsNorm(CudaStream* stream, const float* x, const TensorView& weight, size_t n, size_t dim,
               float eps, float* out);

// x[n][dim] += add, then out = RmsNorm(x) (the residual add fused into the next norm; equal bit
// for bit to Add then RmsNorm). out may alias x; add must not.
Status AddRmsNorm(CudaStream* stream, float* x, const float* add, const TensorView& weight,
                  size_t n, size_t dim, float eps, float* out);

// In-place rotary embedding (rotate_half), angle = float(pos[t]) * inv_freq[i] in f32, then
// cos/sin in f32. inv_freq: [head_dim / 2]; pos: [n] (device int64); x: [n][heads][head_dim].
Status ApplyRope(CudaStream* stream, const float* inv_freq, size_t head_dim, const int64_t* pos,
                 size_t n, size_t heads, float* x);

// Asks L2 to fetch the first bytes_per_row bytes (rounded down to 16) of each of `rows` rows of
// device memory, pitch bytes apart (weights the next kernel reads), as a programmatic dependent of
// the kernel before it in the stream: the prefetch kernel becomes resident as that kernel's CTAs
// leave, so the reads fill HBM time its tail leaves idle, and it completes only after that kernel
// (the chain's order holds). A hint: no data changes. p and pitch 16-byte aligned,
// bytes_per_row <= pitch. Nothing is launched where kernels are not launched as dependents
// (SetDependentLaunches off, or a build for an architecture older than sm_90).
Status PrefetchL2(CudaStream* stream, const void* p, size_t rows, size_t pitch,
                  size_t bytes_per_row);

// PrefetchL2 of up to `bytes` of w for the product after the kernel queued last: the first bytes
// of each row that the skinny kernel's first wave of CTAs reads, so that every CTA of that wave
// starts from L2. Nothing for bytes 0 or rows the prefetch cannot address (pitch or data not
// 16-byte aligned).
Status PrefetchWeightsL2(const DeviceContext& ctx, CudaStream* stream, const TensorView& w,
                         size_t bytes);

// out[i] = gate[i] / (1 + exp(-gate[i])) * up[i]. out may alias gate.
Status SwiGlu(CudaStream* stream, const float* gate, const float* up, size_t count, float* out);

// out[i][cols] = table row tokens[i] (tokens: device int32). Rows of ids outside [0, vocab) are
// NaN (see the header comment).
Status Embed(CudaStream* stream, const TensorView& table, const int32_t* tokens, size_t n,
             float* out);

// InvalidArgument naming the first id outside [0, vocab) of a HOST array (as ops::Embed checks).
Status CheckTokenIds(const int32_t* host_tokens, size_t n, size_t vocab);

// out[i] = a[i] + b[i]. out may alias a or b.
Status Add(CudaStream* stream, const float* a, const float* b, size_t count, float* out);

// k, v: [n][kv_heads][head_dim] f32 for tokens [first_token, first_token + n), written to row
// t % block_tokens of blocks[t / block_tokens] (blocks: device array of device block pointers)
// in geom.dtype (bf16: round to nearest even).
Status WriteKv(CudaStream* stream, const KvGeometry& geom, void* const* blocks, size_t first_token,
               size_t n, const float* k, const float* v);

// One decode token for each of n sequences in one launch: q [n][q_heads][head_dim] and k
// [n][kv_heads][head_dim] rotated in place at pos[i] (as ApplyRope), then k and v of sequence i
// written to row rows[i] (logical token index in its table) of the table blocks + i *
// blocks_stride (as WriteKv). inv_freq null: no rotation and q untouched (a write only); blocks
// null: the rotation only. Rotations agree bit for bit with ApplyRope's. pos, rows: device int64
// [n].
Status RopeWriteKv(CudaStream* stream, const KvGeometry& geom, const float* inv_freq,
                   const int64_t* pos, size_t q_heads, float* q, size_t n, float* k, const float* v,
                   void* const* blocks, size_t blocks_stride, const int64_t* rows);

// ids[i] = argmax of logits[i][vocab] (lowest id on ties; non-finite logits count as -inf; -1 when
// a row has no finite logit). ids: device int32 [n].
Status ArgmaxSample(CudaStream* stream, const float* logits, size_t n, size_t vocab, int32_t* ids);

// ---- Attention over block tables -------------------------------------------------------------

struct AttentionArgs {
  KvGeometry geom;           // head_dim 64, 80, 96 or 128; dtype f32 or bf16
  size_t q_heads = 0;        // multiple of geom.kv_heads, at most 64 per KV head
  const float* q = nullptr;  // [n][q_heads][head_dim]
  size_t n = 0;              // queries
  // [n] device: query i attends logical tokens 0..q_last[i], 0 <= q_last[i] < num_tokens (larger
  // values are clipped to num_tokens - 1; a negative one gives a NaN row).
  const int64_t* q_last = nullptr;
  const void* const* blocks = nullptr;  // device array of device block pointers
  // 0: all queries share one block table (prefill / several queries of one sequence, as the CPU
  // op). > 0: query i uses the table blocks + i * blocks_stride (a batch of sequences).
  size_t blocks_stride = 0;
  size_t num_tokens = 0;  // upper bound of q_last[i] + 1 (sizes the plan)
  float scale = 1.0f;
  float* out = nullptr;  // [n][q_heads][head_dim]
};

// How one attention call is cut into CTAs: decided on the host from the shapes alone, so it can
// be computed once per step and reused for every layer (same shapes, same plan).
struct AttentionPlan {
  size_t queries_per_cta = 1;  // consecutive queries sharing the K/V tiles of one CTA
  size_t heads_per_cta = 1;    // query heads of one KV head handled together (<= 8)
  size_t head_chunks = 1;      // ceil(group / heads_per_cta)
  size_t split_tokens = 0;     // tokens per piece (tiled: multiple of the K/V tile; decode: of 32)
  size_t num_splits = 1;       // pieces merged by log-sum-exp when > 1
  size_t workspace_bytes = 0;  // device scratch for the pieces' partial results
  // The decode kernel (one query per CTA, bf16 KV, head_dim 64 or 128, group <= 8): warps stream
  // K/V straight into registers, no shared-memory tiles. Otherwise the tiled kernel.
  bool decode_kernel = false;
  // With decode_kernel: the dot products and the weighted sum of V on the tensor cores
  // (DecodeMmaKernel, f32-accurate like the FMA kernel) instead of FMAs and shuffles.
  bool decode_mma = false;
  // The prefill kernel (several queries sharing one block table, bf16 KV, head_dim a multiple of
  // 16): 64 (query, head) rows per CTA on the tensor cores, f32-accurate (see attention.cu).
  bool prefill_kernel = false;
};

enum class AttentionKernelChoice {
  kAuto,       // the decode or prefill kernel where one applies, else the tiled one; the decode
               // kernel's variant per SetDecodeAttentionOnTensorCores
  kTiled,      // always the tiled kernel (for comparisons)
  kDecodeFma,  // as kAuto, with the decode kernel's FMA variant
  kDecodeMma,  // as kAuto, with the decode kernel's tensor-core variant
};

// Which variant of the decode kernel kAuto plans (process-wide): the tensor-core one (true, the
// default: 0.96-0.99 of the read limit at 32K+ tokens against 0.88-0.89 for the FMA one on the
// H100, docs/BENCHMARKS.md) or the FMA one. The same results up to f32 summation order.
void SetDecodeAttentionOnTensorCores(bool on);
bool DecodeAttentionOnTensorCores();

// sm_count: DeviceInfo::sm_count; with the kernel's occupancy on the current device it decides
// how finely a long decode is split (one wave of resident CTAs). split_tokens_hint: 0 = choose;
// otherwise the piece length (rounded up to the tile), for tests and benchmarks.
StatusOr<AttentionPlan> PlanAttention(const AttentionArgs& args, int sm_count,
                                      size_t split_tokens_hint = 0,
                                      AttentionKernelChoice kernel = AttentionKernelChoice::kAuto);

// Runs the plan: the split kernel then, when num_splits > 1, the merge kernel. workspace: device,
// at least plan.workspace_bytes (may be null when 0).
Status RunAttention(CudaStream* stream, const AttentionArgs& args, const AttentionPlan& plan,
                    void* workspace);

// dst[count] = values in [-scale, scale] of dtype, never zero, from a counter hash of (index,
// seed): test and benchmark data without a host round trip (not a quality generator).
Status FillRandom(CudaStream* stream, void* dst, size_t count, DType dtype, float scale,
                  uint32_t seed);

// ---- KVstar block scoring -------------------------------------------------------------------

// One scoring task: the candidate blocks [cand_begin, cand_end) of one (layer, sequence), scored
// as sparse::RunRetrieval scores them (per query and query head, softmax over every candidate
// merged vector of q.k * scale on the head's kept channels; a block's score is the sum of its
// vectors' probabilities over queries and heads). All pointers are device memory.
struct BlockScoreTask {
  // f16 / bf16 [blocks][vectors_per_block][kv_heads][d_pruned] (sparse::BlockRepresentations'
  // layout), or [blocks][kv_heads][vectors_per_block][d_pruned] with BlockScoreArgs::head_major.
  const void* reps = nullptr;
  const uint16_t* channels = nullptr;  // [kv_heads][d_pruned] kept channels, each < head_dim
  const float* queries = nullptr;      // query x at queries + x * query_stride: [q_heads][head_dim]
  float* scores = nullptr;  // [cand_end - cand_begin] out ([...][kv_heads] with per_kv_head)
  uint32_t cand_begin = 0;
  uint32_t cand_end = 0;  // cand_end == cand_begin: nothing to score (scores untouched)
};

struct BlockScoreArgs {
  const BlockScoreTask* tasks = nullptr;  // device array [num_tasks]
  size_t num_tasks = 0;
  size_t max_candidates = 0;  // >= cand_end - cand_begin of every task (sizes grid, workspace)
  size_t num_queries = 0;     // x, 1 .. 64
  size_t query_stride = 0;    // floats between consecutive queries of a task
  size_t q_heads = 0;         // a multiple of kv_heads
  size_t kv_heads = 0;
  size_t head_dim = 0;
  size_t d_pruned = 0;  // 1 .. head_dim, any value
  size_t vectors_per_block = 0;
  DType dtype = DType::kF16;  // of the representations: kF16 or kBF16
  float scale = 1.0f;         // 1 / sqrt(head_dim), or 1 for the reference's unscaled softmax
  // Scores per KV head, [candidates][kv_heads] (each summed over the head's query heads and the
  // queries), instead of one per block (summed over every head).
  bool per_kv_head = false;
  // The tensor-core kernel where it applies (d_pruned 32, vectors_per_block a multiple of 16 up
  // to 64, x * group <= 64, 16-byte aligned representations); false: always the f32 kernel (for
  // comparisons).
  bool tensor_cores = true;
  // 0: one CTA per work item, the whole grid at once (the fastest alone). N > 0: at most N CTAs of
  // 64 threads, each looping over work items, so that the scoring holds a small, fixed share of
  // the SMs while decode kernels run beside it (the same scores, bit for bit).
  size_t max_ctas = 0;
  // Candidate blocks per work item of the partial kernel, 1 .. 1024; 0: auto (128, or fewer when
  // the grid would be small). Each block's arithmetic is the same whatever the chunking, so the
  // scores are bit-identical for every value.
  size_t blocks_per_cta = 0;
  // How the tensor-core kernel reads the representations: 0, a warp's block into registers,
  // then its scores; 3, through a per-warp ring of 3 blocks in shared memory filled by cp.async,
  // the next two in flight while one is scored (96 KiB per CTA of 8 warps). The same scores bit
  // for bit; the f32 kernel ignores it.
  int stages = 0;
  // The representations of every task are head-major (BlockScoreTask::reps;
  // RepresentationsToHeadMajor makes them): a KV head's vectors of a block are contiguous, so the
  // work item of one KV head reads contiguous lines instead of its d_pruned channels from every
  // vector's row of all heads. The same scores bit for bit (1.06x for the kernel alone on the
  // H100, no change in the engine: off by default).
  bool head_major = false;
};

// Copies `blocks` representation blocks from sparse::BlockRepresentations' layout
// [blocks][vectors][kv_heads][d_pruned] to the head-major one [blocks][kv_heads][vectors][d_pruned]
// (16-bit elements: f16 or bf16). Host memory; src and dst must not overlap.
void RepresentationsToHeadMajor(const uint16_t* src, size_t blocks, size_t vectors_per_block,
                                size_t kv_heads, size_t d_pruned, uint16_t* dst);

// The shape checks of ScoreBlocks without launching (InvalidArgument naming the first problem),
// so that a caller can reject a configuration before its first group.
Status ValidateBlockScoreShape(const BlockScoreArgs& args);

// The candidate blocks per partial work item ScoreBlocks uses (BlockScoreArgs::blocks_per_cta, or
// the auto choice).
size_t BlockScoreBlocksPerCta(const BlockScoreArgs& args);

// Whether ScoreBlocks takes the tensor-core kernel for these shapes (BlockScoreArgs::tensor_cores).
bool BlockScoreUsesTensorCores(const BlockScoreArgs& args);

// Device scratch bytes for ScoreBlocks with these shapes (per task: two floats per (query head,
// query, candidate) and two per (query head, query)).
size_t BlockScoreWorkspaceBytes(const BlockScoreArgs& args);

// Scores every task (three kernels: per-block partial softmax terms, per-query normalisers,
// block sums). f32 arithmetic; scores are NaN / Inf when queries or representations hold NaN /
// Inf, for the caller to report. InvalidArgument on bad shapes (including x * group * d_pruned
// over 12288 with x * group rounded up to 16 and d_pruned to 8: the queries kept in shared
// memory).
Status ScoreBlocks(CudaStream* stream, const BlockScoreArgs& args, void* workspace);

// ---- Physical limits for benchmarks ----------------------------------------------------------

// GB/s (1e9 B/s) of pinned host -> device copies of `bytes` on the h2d stream; median of reps.
StatusOr<double> MeasurePinnedH2DBandwidth(const DeviceContext& ctx, size_t bytes, int reps = 20);

// GB/s of a device-to-device copy of `bytes`, counting bytes read plus bytes written; median.
StatusOr<double> MeasureDeviceCopyBandwidth(const DeviceContext& ctx,
                                            size_t bytes = size_t{1} << 30, int reps = 20);

// GB/s of reading `bytes` once into registers (16 B loads, no writes): the best of a few
// launch shapes, each the median of reps. Streaming kernels (decode attention, the skinny
// products) compare against this; the copy rate above counts a write for every byte read.
StatusOr<double> MeasureDeviceReadBandwidth(const DeviceContext& ctx,
                                            size_t bytes = size_t{1} << 30, int reps = 20);

// TFLOP/s (2 m n k per product) of MatMul with [m][k] weights in `dtype` and n rows of
// activations, on random data; median of reps.
StatusOr<double> MeasureGemmRate(const DeviceContext& ctx, DType dtype, size_t m, size_t n,
                                 size_t k, int reps = 20);

}  // namespace kvstar::cuda
