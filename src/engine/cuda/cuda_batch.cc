#include "engine/cuda/cuda_batch.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <span>

#include "base/check.h"
#include "base/logging.h"
#include "base/timer.h"
#include "engine/cuda/cuda_batch_impl.h"
#include "store/block_id.h"

namespace kvstar::cuda {

StatusOr<KvMode> ParseKvMode(std::string_view name) {
  if (name == "dense") return KvMode::kDense;
  if (name == "offload") return KvMode::kOffload;
  if (name == "kvpr") return KvMode::kKvpr;
  if (name == "kvstar") return KvMode::kKvstar;
  return InvalidArgument("unknown CUDA decode mode '%.*s' (dense, offload, kvpr, kvstar)",
                         static_cast<int>(name.size()), name.data());
}

Status CheckGpuScoringStride(size_t retrieval_stride) {
  if (retrieval_stride <= kMaxGpuScoreQueries) return Status::Ok();
  return InvalidArgument(
      "kvstar GPU scoring takes at most %zu queries per group, one per step of the stride; "
      "retrieval_stride is %zu: use a stride of at most %zu, or score on the CPU "
      "(--retrieval-device cpu)",
      kMaxGpuScoreQueries, retrieval_stride, kMaxGpuScoreQueries);
}

const char* KvModeName(KvMode mode) {
  switch (mode) {
    case KvMode::kDense:
      return "dense";
    case KvMode::kOffload:
      return "offload";
    case KvMode::kKvpr:
      return "kvpr";
    case KvMode::kKvstar:
      return "kvstar";
  }
  return "?";
}

namespace {

// Rows of K/V recomputed per projection GEMM (bounds the f32 scratch).
constexpr size_t kRecomputeRows = 4096;

size_t RowsCap(const BatchOptions& o) { return std::max(o.batch, o.prefill_chunk); }

size_t MaxBlocks(const BatchOptions& o) {
  return (o.max_tokens + o.block_tokens - 1) / o.block_tokens;
}

// kvpr: the split of layer l (rounded down to the block, at most the capacity).
size_t LayerSplitOf(const BatchOptions& o, size_t l) {
  if (o.mode != KvMode::kKvpr) return 0;
  const size_t v = o.kvpr_layer_splits.empty() ? o.kvpr_split : o.kvpr_layer_splits[l];
  return std::min(v, o.max_tokens) / o.block_tokens * o.block_tokens;
}

// The largest layer split: how many tokens of X the host keeps per sequence.
size_t SplitOf(const BatchOptions& o) {
  if (o.mode != KvMode::kKvpr) return 0;
  size_t m = LayerSplitOf(o, 0);
  for (size_t l = 1; l < o.kvpr_layer_splits.size(); ++l) m = std::max(m, LayerSplitOf(o, l));
  return m;
}

// f32 activation floats per row of the forward pass scratch.
size_t ActivationFloatsPerRow(const ModelConfig& c) {
  return 2 * c.hidden_size + 2 * c.q_dim() + 2 * c.kv_dim() + c.hidden_size +
         2 * c.intermediate_size;
}

}  // namespace

CudaBatch::CudaBatch(CudaModel& model, const BatchOptions& options)
    : model_(model), opt_(options), impl_(std::make_unique<Impl>()) {}

CudaBatch::~CudaBatch() {
  // Copies in flight read or write buffers that are about to be freed.
  (void)model_.ctx().SynchronizeDevice();
}

size_t CudaBatch::EstimateDeviceBytes(const ModelConfig& c, const BatchOptions& o) {
  KvGeometry g{c.num_kv_heads, c.head_dim, o.block_tokens, o.kv_dtype};
  const size_t bb = g.block_bytes();
  const size_t blocks = o.batch * MaxBlocks(o);
  size_t bytes = 0;
  if (o.mode == KvMode::kDense) {
    bytes += c.num_layers * blocks * bb;
  } else if (o.mode == KvMode::kKvstar) {
    bytes += c.num_layers * o.batch * KvstarSlotsPerSeq(o, c.num_kv_heads) * bb +
             c.num_layers * o.batch * 8;
    bytes += o.gpu_scoring ? KvstarGpuScoringBytes(c, o)
                           : c.num_layers * o.batch * c.q_dim() * 4;  // q_layers
    if (o.exclusive_host) bytes += kKvstarBounceBlocks * bb;
  } else {
    bytes += 2 * blocks * bb;
  }
  const size_t split = SplitOf(o);
  const size_t wb = DTypeSize(c.torch_dtype == DType::kF32 ? DType::kF32 : DType::kBF16);
  if (o.mode == KvMode::kKvpr) {
    bytes += 2 * o.batch * split * c.hidden_size * wb + 2 * kRecomputeRows * c.kv_dim() * 4 +
             o.prefill_chunk * c.hidden_size * wb;
  }
  const size_t rows = RowsCap(o);
  bytes += rows * ActivationFloatsPerRow(c) * 4;
  bytes += rows * std::max({c.hidden_size, c.intermediate_size, c.q_dim()}) * wb;
  bytes += std::max<size_t>(o.batch, 1) * c.vocab_size * 4;
  bytes += o.max_tokens * 8 + rows * 4 + o.batch * 8;
  return bytes;
}

size_t CudaBatch::EstimateHostBytes(const ModelConfig& c, const BatchOptions& o) {
  if (o.mode == KvMode::kDense) return 0;
  KvGeometry g{c.num_kv_heads, c.head_dim, o.block_tokens, o.kv_dtype};
  size_t bytes = c.num_layers * o.batch * MaxBlocks(o) * g.block_bytes();
  if (o.mode == KvMode::kKvstar) {
    bytes = c.num_layers * KvstarHomesPerLayer(o, c.num_kv_heads) * g.block_bytes();
  }
  const size_t wb = DTypeSize(c.torch_dtype == DType::kF32 ? DType::kF32 : DType::kBF16);
  bytes += c.num_layers * o.batch * SplitOf(o) * c.hidden_size * wb;
  return bytes;
}

size_t CudaBatch::device_kv_bytes_per_sequence() const {
  const size_t per_layer = max_blocks_ * geom_.block_bytes();
  if (opt_.mode == KvMode::kKvstar) {
    return model_.config().num_layers * impl_->slots_per_seq * geom_.block_bytes();
  }
  return opt_.mode == KvMode::kDense ? model_.config().num_layers * per_layer : 2 * per_layer;
}

StatusOr<std::unique_ptr<CudaBatch>> CudaBatch::Create(CudaModel& model,
                                                       const BatchOptions& options) {
  const ModelConfig& c = model.config();
  if (options.batch == 0) return InvalidArgument("batch must be >= 1");
  if (options.max_tokens == 0) return InvalidArgument("max_tokens must be >= 1");
  if (options.block_tokens == 0 || options.prefill_chunk == 0) {
    return InvalidArgument("block_tokens and prefill_chunk must be >= 1");
  }
  if (options.max_tokens > static_cast<size_t>(c.max_position_embeddings)) {
    return InvalidArgument("max_tokens %zu exceeds the model's max_position_embeddings %lld",
                           options.max_tokens, static_cast<long long>(c.max_position_embeddings));
  }
  if (options.kv_dtype != DType::kBF16 && options.kv_dtype != DType::kF32) {
    return InvalidArgument("CUDA KV cache dtype must be bf16 or f32, not %s",
                           DTypeName(options.kv_dtype));
  }
  if (options.exclusive_host && options.mode != KvMode::kKvstar) {
    return InvalidArgument("the exclusive host tier is a kvstar option (mode %s)",
                           KvModeName(options.mode));
  }
  if (options.kvstar_cache_blocks > 0 &&
      (options.mode != KvMode::kKvstar || options.kvstar.deterministic)) {
    return InvalidArgument(
        "kvstar_cache_blocks %zu: the device cache is a kvstar option of the non-deterministic "
        "schedule",
        options.kvstar_cache_blocks);
  }
  if (options.kvstar.max_loads_per_step != 0) {
    return InvalidArgument(
        "max_loads_per_step %zu is the CPU engine's emulation of this engine's staging_slots; "
        "use staging_slots",
        options.kvstar.max_loads_per_step);
  }
  if (options.mode == KvMode::kKvpr && model.weight_dtype() == DType::kF32) {
    return InvalidArgument("kvpr keeps X in the weight dtype and needs bf16 or f16 weights");
  }
  if (!options.kvpr_layer_splits.empty() && options.kvpr_layer_splits.size() != c.num_layers) {
    return InvalidArgument("kvpr: %zu layer splits for a model of %zu layers",
                           options.kvpr_layer_splits.size(), c.num_layers);
  }
  std::unique_ptr<CudaBatch> b(new CudaBatch(model, options));
  KVSTAR_RETURN_IF_ERROR(b->Init());
  return b;
}

Status CudaBatch::Init() {
  DeviceContext& ctx = model_.ctx();
  KVSTAR_RETURN_IF_ERROR(ctx.Activate());
  const ModelConfig& c = model_.config();
  Impl& m = *impl_;
  geom_ = KvGeometry{c.num_kv_heads, c.head_dim, opt_.block_tokens, opt_.kv_dtype};
  max_blocks_ = MaxBlocks(opt_);
  split_ = SplitOf(opt_);
  layer_split_.assign(c.num_layers, 0);
  for (size_t l = 0; l < c.num_layers; ++l) layer_split_[l] = LayerSplitOf(opt_, l);
  lengths_.assign(opt_.batch, 0);
  prompt_lengths_.assign(opt_.batch, 0);
  const size_t B = opt_.batch;
  const size_t rows = RowsCap(opt_);
  const size_t wb = DTypeSize(model_.weight_dtype());
  auto alloc = [&](DeviceBuffer& buf, size_t bytes) -> Status {
    KVSTAR_ASSIGN_OR_RETURN(buf, DeviceBuffer::Allocate(bytes));
    device_bytes_ += bytes;
    return Status::Ok();
  };
  KVSTAR_RETURN_IF_ERROR(alloc(m.x, rows * c.hidden_size * 4));
  KVSTAR_RETURN_IF_ERROR(alloc(m.xn, rows * c.hidden_size * 4));
  KVSTAR_RETURN_IF_ERROR(alloc(m.q, rows * c.q_dim() * 4));
  KVSTAR_RETURN_IF_ERROR(alloc(m.k, rows * c.kv_dim() * 4));
  KVSTAR_RETURN_IF_ERROR(alloc(m.v, rows * c.kv_dim() * 4));
  KVSTAR_RETURN_IF_ERROR(alloc(m.attn, rows * c.q_dim() * 4));
  KVSTAR_RETURN_IF_ERROR(alloc(m.proj, rows * c.hidden_size * 4));
  KVSTAR_RETURN_IF_ERROR(alloc(m.gate, rows * c.intermediate_size * 4));
  KVSTAR_RETURN_IF_ERROR(alloc(m.up, rows * c.intermediate_size * 4));
  KVSTAR_RETURN_IF_ERROR(
      alloc(m.workspace, rows * std::max({c.hidden_size, c.intermediate_size, c.q_dim()}) * wb));
  KVSTAR_RETURN_IF_ERROR(alloc(m.logits, std::max<size_t>(B, 1) * c.vocab_size * 4));
  KVSTAR_RETURN_IF_ERROR(alloc(m.ids, rows * 4));
  KVSTAR_RETURN_IF_ERROR(alloc(m.step_pos, B * 8));
  KVSTAR_RETURN_IF_ERROR(alloc(m.iota, opt_.max_tokens * 8));
  if (opt_.phase_timing) {
    for (size_t i = 0; i < 4 * c.num_layers + 2 + 2; ++i) {
      KVSTAR_ASSIGN_OR_RETURN(Event e, Event::Create());
      (i < 4 * c.num_layers + 2 ? m.phase_marks : m.phase_end).push_back(std::move(e));
    }
  }
  KVSTAR_ASSIGN_OR_RETURN(m.host_ids, PinnedHostBuffer::Allocate(rows * 4));
  KVSTAR_ASSIGN_OR_RETURN(m.host_pos, PinnedHostBuffer::Allocate(B * 8));
  {
    std::vector<int64_t> iota(opt_.max_tokens);
    for (size_t i = 0; i < iota.size(); ++i) iota[i] = static_cast<int64_t>(i);
    KVSTAR_RETURN_IF_ERROR(
        ctx.CopyToDevice(m.iota.data(), iota.data(), iota.size() * 8, ctx.compute_stream()));
    KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(ctx.compute_stream()));
  }
  // KV buffers and their block tables.
  const size_t bb = geom_.block_bytes();
  const bool kvstar = opt_.mode == KvMode::kKvstar;
  const size_t num_kv = opt_.mode == KvMode::kDense || kvstar ? c.num_layers : 2;
  // kvstar: per layer [batch][slots_per_seq] slots, tables filled from the pinned mirror.
  const size_t per_seq = kvstar ? KvstarSlotsPerSeq(opt_, c.num_kv_heads) : max_blocks_;
  m.kv.resize(num_kv);
  for (auto& buf : m.kv) KVSTAR_RETURN_IF_ERROR(alloc(buf, B * per_seq * bb));
  // kvstar, CPU scoring: the step's queries, copied to the host ring once per step (with GPU
  // scoring they go straight into the device ring).
  if (kvstar && !opt_.gpu_scoring) {
    KVSTAR_RETURN_IF_ERROR(alloc(m.q_layers, c.num_layers * B * c.q_dim() * 4));
  }
  {
    std::vector<void*> table(num_kv * B * per_seq);
    for (size_t t = 0; t < num_kv; ++t) {
      for (size_t i = 0; i < B * per_seq; ++i) {
        table[t * B * per_seq + i] = static_cast<char*>(m.kv[t].data()) + i * bb;
      }
    }
    KVSTAR_RETURN_IF_ERROR(alloc(m.tables, table.size() * sizeof(void*)));
    KVSTAR_RETURN_IF_ERROR(ctx.CopyToDevice(m.tables.data(), table.data(),
                                            table.size() * sizeof(void*), ctx.compute_stream()));
    KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(ctx.compute_stream()));
  }
  if (opt_.mode != KvMode::kDense) {
    // kvstar: the host tier's homes (every block, or those off the device: HostHomes).
    const size_t homes = kvstar ? KvstarHomesPerLayer(opt_, c.num_kv_heads) : B * max_blocks_;
    if (kvstar) {
      m.homes =
          std::make_unique<HostHomes>(c.num_layers, B, max_blocks_, homes, opt_.exclusive_host);
    }
    for (size_t l = 0; l < c.num_layers; ++l) {
      KVSTAR_ASSIGN_OR_RETURN(PinnedHostBuffer h, PinnedHostBuffer::Allocate(homes * bb));
      host_bytes_ += h.bytes();
      m.host_kv.push_back(std::move(h));
    }
    for (int j = 0; j < 2; ++j) {
      for (auto* events : {&m.x_ready, &m.kv_ready, &m.attn_done, &m.staging_wb}) {
        KVSTAR_ASSIGN_OR_RETURN(Event e, Event::Create());
        events->push_back(std::move(e));
      }
    }
    for (size_t l = 0; l < c.num_layers; ++l) {
      for (auto* events : {&m.link_begin, &m.rc_begin, &m.rc_end}) {
        KVSTAR_ASSIGN_OR_RETURN(Event e, Event::Create());
        events->push_back(std::move(e));
      }
    }
    // Mark both staging buffers free (record on an idle stream: completes at once).
    for (int j = 0; j < 2; ++j) KVSTAR_RETURN_IF_ERROR(m.staging_wb[j].Record(ctx.d2h_stream()));
  }
  if (kvstar) KVSTAR_RETURN_IF_ERROR(KvstarInit());
  if (opt_.mode == KvMode::kKvpr && split_ > 0) {
    const size_t xbytes = B * split_ * c.hidden_size * wb;
    for (size_t l = 0; l < c.num_layers; ++l) {
      KVSTAR_ASSIGN_OR_RETURN(PinnedHostBuffer h, PinnedHostBuffer::Allocate(xbytes));
      host_bytes_ += h.bytes();
      m.host_x.push_back(std::move(h));
    }
    for (auto& xs : m.x_stage) KVSTAR_RETURN_IF_ERROR(alloc(xs, xbytes));
    KVSTAR_RETURN_IF_ERROR(alloc(m.rc_k, kRecomputeRows * c.kv_dim() * 4));
    KVSTAR_RETURN_IF_ERROR(alloc(m.rc_v, kRecomputeRows * c.kv_dim() * 4));
    KVSTAR_RETURN_IF_ERROR(alloc(m.x_half, opt_.prefill_chunk * c.hidden_size * wb));
  }
  return Status::Ok();
}

// ---- Decode ----------------------------------------------------------------------------------

Status CudaBatch::AddPhaseTimes(size_t parity) {
  Impl& m = *impl_;
  const size_t L = model_.config().num_layers;
  auto ms = [&](size_t from, size_t to) -> StatusOr<double> {
    KVSTAR_ASSIGN_OR_RETURN(float t, m.phase_marks[to].ElapsedMsSince(m.phase_marks[from]));
    return static_cast<double>(t);
  };
  for (size_t l = 0; l < L; ++l) {
    const size_t b = 1 + 4 * l;
    KVSTAR_ASSIGN_OR_RETURN(double pre, ms(b, b + 1));
    KVSTAR_ASSIGN_OR_RETURN(double wait, ms(b + 1, b + 2));
    KVSTAR_ASSIGN_OR_RETURN(double attention, ms(b + 2, b + 3));
    KVSTAR_ASSIGN_OR_RETURN(double post, ms(b + 3, b + 4));
    stats_.phase_pre_ms += pre;
    stats_.phase_wait_ms += wait;
    stats_.phase_attention_ms += attention;
    stats_.phase_post_ms += post;
  }
  KVSTAR_ASSIGN_OR_RETURN(double embed, ms(0, 1));
  KVSTAR_ASSIGN_OR_RETURN(float head, m.phase_end[parity].ElapsedMsSince(m.phase_marks[4 * L + 1]));
  stats_.phase_head_ms += embed + head;
  if (m.phase_have_prev) {
    KVSTAR_ASSIGN_OR_RETURN(float gap, m.phase_marks[0].ElapsedMsSince(m.phase_end[1 - parity]));
    stats_.phase_gap_ms += gap;
  }
  m.phase_have_prev = true;
  ++stats_.phase_steps;
  return Status::Ok();
}

Status CudaBatch::Step(std::span<const int32_t> tokens, std::span<int32_t> next, float* logits) {
  DeviceContext& ctx = model_.ctx();
  KVSTAR_RETURN_IF_ERROR(ctx.Activate());
  const ModelConfig& c = model_.config();
  Impl& m = *impl_;
  const size_t B = opt_.batch;
  if (tokens.size() != B || next.size() != B) {
    return InvalidArgument("Step: %zu tokens and %zu outputs for a batch of %zu", tokens.size(),
                           next.size(), B);
  }
  for (size_t b = 0; b < B; ++b) {
    if (lengths_[b] == 0) return FailedPrecondition("sequence %zu has no context", b);
    if (lengths_[b] + 1 > opt_.max_tokens) {
      return OutOfRange("sequence %zu is full (%zu tokens of capacity %zu)", b, lengths_[b],
                        opt_.max_tokens);
    }
  }
  KVSTAR_RETURN_IF_ERROR(CheckTokenIds(tokens.data(), B, c.vocab_size));
  CudaStream* s = ctx.compute_stream();
  CudaStream* h2d = ctx.h2d_stream();
  CudaStream* d2h = ctx.d2h_stream();
  const size_t hidden = c.hidden_size;
  const size_t hd = c.head_dim;
  const size_t bt = opt_.block_tokens;
  const size_t bb = geom_.block_bytes();
  const size_t wb = DTypeSize(model_.weight_dtype());
  const bool staged = opt_.mode == KvMode::kOffload || opt_.mode == KvMode::kKvpr;
  const bool kvpr = opt_.mode == KvMode::kKvpr;
  const bool kvstar = opt_.mode == KvMode::kKvstar;
  Stopwatch host_idle;
  if (kvstar) KVSTAR_RETURN_IF_ERROR(KvstarBoundary());
  stats_.host_boundary_ms_total += host_idle.Millis();
  // phase_timing: mark i of the step (see Impl::phase_marks).
  const bool timing = opt_.phase_timing;
  auto mark = [&](size_t i) -> Status {
    return timing ? m.phase_marks[i].Record(s) : Status::Ok();
  };
  KVSTAR_RETURN_IF_ERROR(mark(0));

  // Inputs: tokens and positions through pinned memory.
  std::memcpy(m.host_ids.data(), tokens.data(), B * 4);
  size_t max_len = 0;
  for (size_t b = 0; b < B; ++b) {
    m.host_pos.as<int64_t>()[b] = static_cast<int64_t>(lengths_[b]);
    max_len = std::max(max_len, lengths_[b] + 1);
  }
  KVSTAR_RETURN_IF_ERROR(ctx.CopyToDevice(m.ids.data(), m.host_ids.data(), B * 4, s));
  KVSTAR_RETURN_IF_ERROR(ctx.CopyToDevice(m.step_pos.data(), m.host_pos.data(), B * 8, s));
  stats_.h2d_bytes += B * 12;
  const int64_t* pos = m.step_pos.as<int64_t>();
  float* x = m.x.as<float>();
  float* xn = m.xn.as<float>();
  KVSTAR_RETURN_IF_ERROR(Embed(s, model_.embed(), m.ids.as<int32_t>(), B, x));
  double idle_ms = host_idle.Millis();

  // Per sequence: tokens recomputed (kvpr) and blocks streamed this step.
  std::vector<size_t> seq_blocks(B);
  for (size_t b = 0; b < B; ++b) seq_blocks[b] = (lengths_[b] + 1 + bt - 1) / bt;
  auto seq_split = [&](size_t l, size_t b) -> size_t {
    return kvpr ? std::min(layer_split_[l], prompt_lengths_[b] / bt * bt) : 0;
  };
  // Queues layer l's X and K/V on the h2d stream into staging l % 2.
  auto prefetch = [&](size_t l) -> Status {
    const size_t j = l % 2;
    KVSTAR_RETURN_IF_ERROR(m.staging_wb[j].WaitOn(h2d));
    KVSTAR_RETURN_IF_ERROR(m.link_begin[l].Record(h2d));
    if (kvpr) {
      for (size_t b = 0; b < B; ++b) {
        if (seq_split(l, b) == 0) continue;
        const size_t off = b * split_ * hidden * wb;
        const size_t bytes = seq_split(l, b) * hidden * wb;
        KVSTAR_RETURN_IF_ERROR(ctx.CopyToDevice(m.x_stage[j].as<char>() + off,
                                                m.host_x[l].as<char>() + off, bytes, h2d));
        stats_.h2d_bytes += bytes;
      }
      KVSTAR_RETURN_IF_ERROR(m.x_ready[j].Record(h2d));
    }
    for (size_t b = 0; b < B; ++b) {
      const size_t first = seq_split(l, b) / bt;
      const size_t off = (b * max_blocks_ + first) * bb;
      const size_t bytes = (seq_blocks[b] - first) * bb;
      KVSTAR_RETURN_IF_ERROR(
          ctx.CopyToDevice(m.kv[j].as<char>() + off, m.host_kv[l].as<char>() + off, bytes, h2d));
      stats_.h2d_bytes += bytes;
    }
    return m.kv_ready[j].Record(h2d);
  };
  // kvpr: K/V[0, split) of layer l recomputed from X into staging l % 2 (compute stream).
  auto recompute = [&](size_t l) -> Status {
    const size_t j = l % 2;
    const LayerWeights& L = model_.layer(l);
    KVSTAR_RETURN_IF_ERROR(m.x_ready[j].WaitOn(s));
    KVSTAR_RETURN_IF_ERROR(m.rc_begin[l].Record(s));
    for (size_t b = 0; b < B; ++b) {
      void* const* table = m.tables.as<void*>() + (j * B + b) * max_blocks_;
      const size_t split = seq_split(l, b);
      for (size_t r0 = 0; r0 < split; r0 += kRecomputeRows) {
        const size_t rows = std::min(kRecomputeRows, split - r0);
        const char* xs = m.x_stage[j].as<char>() + (b * split_ + r0) * hidden * wb;
        float* k = m.rc_k.as<float>();
        float* v = m.rc_v.as<float>();
        KVSTAR_RETURN_IF_ERROR(MatMulConverted(ctx, s, L.k, xs, rows, k));
        if (!L.k_bias.empty()) KVSTAR_RETURN_IF_ERROR(AddBias(s, L.k_bias, rows, k));
        KVSTAR_RETURN_IF_ERROR(MatMulConverted(ctx, s, L.v, xs, rows, v));
        if (!L.v_bias.empty()) KVSTAR_RETURN_IF_ERROR(AddBias(s, L.v_bias, rows, v));
        KVSTAR_RETURN_IF_ERROR(ApplyRope(s, model_.inv_freq(), hd, m.iota.as<int64_t>() + r0, rows,
                                         c.num_kv_heads, k));
        KVSTAR_RETURN_IF_ERROR(WriteKv(s, geom_, table, r0, rows, k, v));
        stats_.recomputed_tokens += rows;
      }
    }
    return m.rc_end[l].Record(s);
  };

  AttentionArgs a;
  a.geom = geom_;
  a.q_heads = c.num_heads;
  a.q = m.q.as<float>();
  a.n = B;
  a.q_last = pos;
  a.blocks_stride = max_blocks_;
  a.num_tokens = max_len;
  const size_t row_stride = kvstar ? m.slots_per_seq : max_blocks_;
  if (kvstar) {
    // Table coordinates: the new token's row in its table (q_last) is at most slots * bt.
    const int64_t* ql = m.qlast_mirror.as<int64_t>();
    int64_t top = 0;
    for (size_t i = 0; i < c.num_layers * B; ++i) top = std::max(top, ql[i]);
    a.blocks_stride = m.slots_per_seq;
    a.num_tokens = static_cast<size_t>(top) + 1;
    // A sync step re-makes the tables inside the step: plan for the largest table.
    if (kv_steps_ < opt_.kvstar.sync_steps) a.num_tokens = m.slots_per_seq * bt;
  }
  a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  a.out = m.attn.as<float>();
  a.blocks = m.tables.as<void*>();
  KVSTAR_ASSIGN_OR_RETURN(AttentionPlan plan, PlanAttention(a, ctx.info().sm_count));
  KVSTAR_RETURN_IF_ERROR(Ensure(m.attn_ws, plan.workspace_bytes, device_bytes_));

  if (staged) KVSTAR_RETURN_IF_ERROR(prefetch(0));
  void* ws = m.workspace.data();
  // The first bytes of the next product's weights into L2 while this stage drains.
  auto prefetch_l2 = [&](const TensorView& w) -> Status {
    return PrefetchWeightsL2(ctx, s, w, opt_.l2_prefetch_bytes);
  };
  // The residual adds are fused into the next norm: proj holds the output to add to x.
  float* proj = m.proj.as<float>();
  for (size_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = model_.layer(l);
    const size_t j = l % 2;
    if (staged && l + 1 < c.num_layers) KVSTAR_RETURN_IF_ERROR(prefetch(l + 1));
    KVSTAR_RETURN_IF_ERROR(mark(1 + 4 * l));
    if (kvpr) KVSTAR_RETURN_IF_ERROR(recompute(l));
    KVSTAR_RETURN_IF_ERROR(
        l == 0 ? RmsNorm(s, x, L.input_norm, B, hidden, c.rms_norm_eps, xn)
               : AddRmsNorm(s, x, proj, L.input_norm, B, hidden, c.rms_norm_eps, xn));
    float* q = m.q.as<float>();
    if (kvstar) {
      // GPU scoring: row kv_steps_ % 2R of the device ring; otherwise the step's query buffer.
      q = opt_.gpu_scoring
              ? m.q_ring_dev.as<float>() +
                    ((kv_steps_ % (2 * opt_.kvstar.retrieval_stride)) * c.num_layers + l) * B *
                        c.q_dim()
              : m.q_layers.as<float>() + l * B * c.q_dim();
    }
    KVSTAR_RETURN_IF_ERROR(LinearShared(
        ctx, s,
        {{L.q, L.q_bias, q}, {L.k, L.k_bias, m.k.as<float>()}, {L.v, L.v_bias, m.v.as<float>()}},
        xn, B, ws, opt_.matmul));
    const size_t table_index = staged ? j : l;
    void* const* table = m.tables.as<void*>() + table_index * B * row_stride;
    KVSTAR_RETURN_IF_ERROR(mark(2 + 4 * l));
    if (staged) KVSTAR_RETURN_IF_ERROR(m.kv_ready[j].WaitOn(s));
    // Rotation of q and k and the new token's K/V, every sequence in one launch; rows are the
    // new token's index in each table (its position, or q_last in kvstar's tables).
    const int64_t* rows = pos;
    bool rotated = false;
    if (kvstar) {
      if (kv_steps_ < opt_.kvstar.sync_steps) {
        // The re-selection scores the rotated query, and re-makes the tables the write goes to.
        KVSTAR_RETURN_IF_ERROR(RopeWriteKv(s, geom_, model_.inv_freq(), pos, c.num_heads, q, B,
                                           m.k.as<float>(), m.v.as<float>(), nullptr, row_stride,
                                           nullptr));
        rotated = true;
        KVSTAR_RETURN_IF_ERROR(KvstarSyncReselect(l, q));
      }
      // This layer's delta copies before its attention (earlier layers ran while they streamed).
      if (m.load_pending[l]) KVSTAR_RETURN_IF_ERROR(m.load_done[l].WaitOn(s));
      rows = m.qlast_dev.as<int64_t>() + l * B;
      a.q_last = rows;
      a.q = q;
    }
    KVSTAR_RETURN_IF_ERROR(mark(3 + 4 * l));
    KVSTAR_RETURN_IF_ERROR(RopeWriteKv(s, geom_, rotated ? nullptr : model_.inv_freq(), pos,
                                       c.num_heads, q, B, m.k.as<float>(), m.v.as<float>(), table,
                                       row_stride, rows));
    a.blocks = table;
    KVSTAR_RETURN_IF_ERROR(RunAttention(s, a, plan, m.attn_ws.data()));
    KVSTAR_RETURN_IF_ERROR(prefetch_l2(L.o));
    KVSTAR_RETURN_IF_ERROR(mark(4 + 4 * l));
    if (kvstar && !m.attn_read.empty()) KVSTAR_RETURN_IF_ERROR(m.attn_read[l].Record(s));
    if (staged) {
      // The block that received the new token goes back to the host; staging j is free for
      // layer l + 2 once this copy is done.
      KVSTAR_RETURN_IF_ERROR(m.attn_done[j].Record(s));
      KVSTAR_RETURN_IF_ERROR(m.attn_done[j].WaitOn(d2h));
      for (size_t b = 0; b < B; ++b) {
        const size_t off = (b * max_blocks_ + lengths_[b] / bt) * bb;
        KVSTAR_RETURN_IF_ERROR(
            ctx.CopyToHost(m.host_kv[l].as<char>() + off, m.kv[j].as<char>() + off, bb, d2h));
        stats_.d2h_bytes += bb;
      }
      KVSTAR_RETURN_IF_ERROR(m.staging_wb[j].Record(d2h));
    }
    KVSTAR_RETURN_IF_ERROR(
        Linear(ctx, s, L.o, L.o_bias, m.attn.as<float>(), B, proj, ws, opt_.matmul));
    KVSTAR_RETURN_IF_ERROR(prefetch_l2(L.gate));
    KVSTAR_RETURN_IF_ERROR(AddRmsNorm(s, x, proj, L.post_attn_norm, B, hidden, c.rms_norm_eps, xn));
    float* gate = m.gate.as<float>();
    if (L.gate_bias.empty() && L.up_bias.empty()) {
      KVSTAR_RETURN_IF_ERROR(MatMulSwiGlu(ctx, s, L.gate, L.up, xn, B, gate, m.up.as<float>(), ws,
                                          opt_.matmul, opt_.fuse_swiglu));
      KVSTAR_RETURN_IF_ERROR(prefetch_l2(L.down));
    } else {
      KVSTAR_RETURN_IF_ERROR(
          LinearShared(ctx, s, {{L.gate, L.gate_bias, gate}, {L.up, L.up_bias, m.up.as<float>()}},
                       xn, B, ws, opt_.matmul));
      KVSTAR_RETURN_IF_ERROR(prefetch_l2(L.down));
      KVSTAR_RETURN_IF_ERROR(SwiGlu(s, gate, m.up.as<float>(), B * c.intermediate_size, gate));
    }
    KVSTAR_RETURN_IF_ERROR(Linear(ctx, s, L.down, L.down_bias, gate, B, proj, ws, opt_.matmul));
    KVSTAR_RETURN_IF_ERROR(
        prefetch_l2(l + 1 < c.num_layers ? model_.layer(l + 1).q : model_.lm_head()));
  }
  KVSTAR_RETURN_IF_ERROR(mark(4 * c.num_layers + 1));
  if (kvstar && !opt_.gpu_scoring) {
    // The step's queries of every layer to the host ring (row step % 2R of each layer) for
    // retrieval, in one copy; the host reads them after the step has finished.
    const size_t R = opt_.kvstar.retrieval_stride;
    const size_t row_bytes = B * c.q_dim() * sizeof(float);
    float* ring = m.query_ring.as<float>() + (kv_steps_ % (2 * R)) * B * c.q_dim();
    KVSTAR_RETURN_IF_ERROR(ctx.CopyToHost2D(ring, 2 * R * row_bytes, m.q_layers.data(), row_bytes,
                                            row_bytes, c.num_layers, s));
  }
  KVSTAR_RETURN_IF_ERROR(
      AddRmsNorm(s, x, proj, model_.final_norm(), B, hidden, c.rms_norm_eps, xn));
  float* lg = m.logits.as<float>();
  KVSTAR_RETURN_IF_ERROR(MatMul(ctx, s, model_.lm_head(), xn, B, lg, ws, opt_.matmul));
  KVSTAR_RETURN_IF_ERROR(ArgmaxSample(s, lg, B, c.vocab_size, m.ids.as<int32_t>()));
  KVSTAR_RETURN_IF_ERROR(ctx.CopyToHost(m.host_ids.data(), m.ids.data(), B * 4, s));
  stats_.d2h_bytes += B * 4;
  if (logits != nullptr) {
    KVSTAR_RETURN_IF_ERROR(ctx.CopyToHost(logits, lg, B * c.vocab_size * 4, s));
    stats_.d2h_bytes += B * c.vocab_size * 4;
  }
  const size_t parity = stats_.decode_steps % 2;
  if (timing) KVSTAR_RETURN_IF_ERROR(m.phase_end[parity].Record(s));
  if (kvstar) {
    Stopwatch window;
    KVSTAR_RETURN_IF_ERROR(KvstarIssueCopies());
    const double ms = window.Millis();
    stats_.host_window_ms_total += ms;
    stats_.host_window_ms_max = std::max(stats_.host_window_ms_max, ms);
  }
  KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(s));
  Stopwatch after;
  if (staged) {
    for (size_t l = 0; l < c.num_layers; ++l) {
      // The link is busy for layer l from its first copy until layer l + 1's first copy
      // (that includes waiting for a staging buffer); the last layer until its K/V arrived.
      if (l + 1 < c.num_layers) {
        KVSTAR_ASSIGN_OR_RETURN(float ms, m.link_begin[l + 1].ElapsedMsSince(m.link_begin[l]));
        stats_.link_ms_total += ms;
      } else {
        KVSTAR_ASSIGN_OR_RETURN(float ms, m.kv_ready[l % 2].ElapsedMsSince(m.link_begin[l]));
        stats_.link_ms_total += ms;
      }
      if (kvpr) {
        KVSTAR_ASSIGN_OR_RETURN(float ms, m.rc_end[l].ElapsedMsSince(m.rc_begin[l]));
        stats_.recompute_ms_total += ms;
      }
    }
  }
  if (timing) KVSTAR_RETURN_IF_ERROR(AddPhaseTimes(parity));
  std::memcpy(next.data(), m.host_ids.data(), B * 4);
  for (size_t b = 0; b < B; ++b) ++lengths_[b];
  ++stats_.decode_steps;
  if (kvstar) KVSTAR_RETURN_IF_ERROR(KvstarAfterStep());
  idle_ms += after.Millis();
  stats_.host_after_ms_total += after.Millis();
  stats_.host_idle_ms_total += idle_ms;
  return Status::Ok();
}

}  // namespace kvstar::cuda
