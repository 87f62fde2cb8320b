// CudaBatch::Prefill (prompt chunks through the model, the mode's KV written where it lives) and
// FillRandomContext (random K/V for benchmarks); the decode step is in cuda_batch.cc.
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

// ---- Prefill ---------------------------------------------------------------------------------

Status CudaBatch::Prefill(size_t seq, std::span<const int32_t> prompt, float* last_logits,
                          const std::function<bool(size_t, size_t)>& progress) {
  impl_->phase_have_prev = false;  // the gap to the next step is not an idle device
  DeviceContext& ctx = model_.ctx();
  KVSTAR_RETURN_IF_ERROR(ctx.Activate());
  const ModelConfig& c = model_.config();
  Impl& m = *impl_;
  const size_t n = prompt.size();
  if (seq >= opt_.batch) return InvalidArgument("sequence %zu of a batch of %zu", seq, opt_.batch);
  if (lengths_[seq] != 0) return FailedPrecondition("sequence %zu is already prefilled", seq);
  if (n == 0) return InvalidArgument("empty prompt");
  if (n >= opt_.max_tokens) {
    return InvalidArgument("prompt of %zu tokens leaves no room in a capacity of %zu tokens", n,
                           opt_.max_tokens);
  }
  KVSTAR_RETURN_IF_ERROR(CheckTokenIds(prompt.data(), n, c.vocab_size));
  // Staging buffer 0 doubles as the layer's KV during a staged prefill: nothing may be in flight.
  KVSTAR_RETURN_IF_ERROR(ctx.SynchronizeDevice());
  CudaStream* s = ctx.compute_stream();
  const size_t hidden = c.hidden_size;
  const size_t hd = c.head_dim;
  const size_t bb = geom_.block_bytes();
  const size_t wb = DTypeSize(model_.weight_dtype());
  const size_t chunk = std::min(opt_.prefill_chunk, n);
  const bool kvstar = opt_.mode == KvMode::kKvstar;
  const bool staged = opt_.mode == KvMode::kOffload || opt_.mode == KvMode::kKvpr;
  const size_t seq_split = std::min(split_, n / opt_.block_tokens * opt_.block_tokens);
  // kvstar: the layer's KV of this sequence lives in a temporary buffer during prefill; the
  // last prompt queries of each layer (group 0) make the first selection.
  DeviceBuffer layer_kv, layer_table;
  const size_t nq = kvstar ? std::min(opt_.kvstar.prompt_queries(), n) : 0;
  std::vector<std::vector<float>> group0(kvstar ? c.num_layers : 0);
  if (kvstar) {
    KVSTAR_ASSIGN_OR_RETURN(layer_kv, DeviceBuffer::Allocate(max_blocks_ * bb));
    KVSTAR_ASSIGN_OR_RETURN(layer_table, DeviceBuffer::Allocate(max_blocks_ * sizeof(void*)));
    std::vector<void*> t(max_blocks_);
    for (size_t i = 0; i < max_blocks_; ++i) t[i] = layer_kv.as<char>() + i * bb;
    KVSTAR_RETURN_IF_ERROR(
        ctx.CopyToDevice(layer_table.data(), t.data(), t.size() * sizeof(void*), s));
    KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(s));
  }
  char* layer_base = kvstar ? layer_kv.as<char>()
                            : (staged ? m.kv[0].as<char>() + seq * max_blocks_ * bb : nullptr);
  // kvstar with a store: the prompt's full blocks are content-addressed; leading blocks that the
  // store holds for every layer are loaded instead of computed, so tokens [0, p) skip the forward
  // pass. The last nq tokens are always computed (their queries form group 0).
  std::vector<Hash128> chain;
  size_t reused = 0;
  if (kvstar && opt_.store != nullptr) {
    chain = PrefixChain(opt_.kv_fingerprint, prompt, opt_.block_tokens);
    const size_t max_reuse = std::min(chain.size(), (n - nq) / opt_.block_tokens);
    KVSTAR_ASSIGN_OR_RETURN(reused, KvstarLoadPrefix(seq, chain, max_reuse));
  }
  const size_t p = reused * opt_.block_tokens;  // first computed token
  const size_t computed = n - p;
  KVSTAR_RETURN_IF_ERROR(Ensure(m.x_all, computed * hidden * 4, device_bytes_));
  KVSTAR_RETURN_IF_ERROR(Ensure(m.ids, computed * 4, device_bytes_));
  KVSTAR_RETURN_IF_ERROR(ctx.CopyToDevice(m.ids.data(), prompt.data() + p, computed * 4, s));
  KVSTAR_RETURN_IF_ERROR(
      Embed(s, model_.embed(), m.ids.as<int32_t>(), computed, m.x_all.as<float>()));
  stats_.h2d_bytes += computed * 4;
  // (layer, task). On an early return (error, cancellation) the dumps still in flight are
  // cancelled and waited for: none may read the pinned region after Prefill returns.
  struct Dumps {
    std::vector<std::pair<size_t, StoreTask>> tasks;
    ~Dumps() {
      for (auto& [l, task] : tasks) {
        if (!task.valid()) continue;
        task.Cancel();
        (void)task.Wait();
      }
    }
  } dumps;
  void* const* tables = m.tables.as<void*>();
  const size_t nblocks = (n + opt_.block_tokens - 1) / opt_.block_tokens;
  for (size_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = model_.layer(l);
    void* const* table = kvstar   ? layer_table.as<void*>()
                         : staged ? tables + seq * max_blocks_
                                  : tables + (l * opt_.batch + seq) * max_blocks_;
    if (reused > 0) {
      // The reused blocks of this layer, loaded into the pinned region, go to the layer buffer.
      KVSTAR_RETURN_IF_ERROR(KvstarHomeCopy(l, seq, 0, reused, layer_base, false, s));
      stats_.h2d_bytes += reused * bb;
    }
    for (size_t begin = p; begin < n; begin += chunk) {
      const size_t rows = std::min(chunk, n - begin);
      float* x = m.x_all.as<float>() + (begin - p) * hidden;
      const int64_t* pos = m.iota.as<int64_t>() + begin;
      float* xn = m.xn.as<float>();
      KVSTAR_RETURN_IF_ERROR(RmsNorm(s, x, L.input_norm, rows, hidden, c.rms_norm_eps, xn));
      if (opt_.mode == KvMode::kKvpr && begin < seq_split) {
        // Keep X (the attention input) of the recomputable prefix on the host.
        const size_t keep = std::min(rows, seq_split - begin);
        KVSTAR_RETURN_IF_ERROR(
            ConvertF32(s, xn, keep * hidden, model_.weight_dtype(), m.x_half.data()));
        char* dst = m.host_x[l].as<char>() + (seq * split_ + begin) * hidden * wb;
        KVSTAR_RETURN_IF_ERROR(ctx.CopyToHost(dst, m.x_half.data(), keep * hidden * wb, s));
        stats_.d2h_bytes += keep * hidden * wb;
      }
      void* ws = m.workspace.data();
      KVSTAR_RETURN_IF_ERROR(LinearShared(ctx, s,
                                          {{L.q, L.q_bias, m.q.as<float>()},
                                           {L.k, L.k_bias, m.k.as<float>()},
                                           {L.v, L.v_bias, m.v.as<float>()}},
                                          xn, rows, ws, opt_.matmul));
      KVSTAR_RETURN_IF_ERROR(
          ApplyRope(s, model_.inv_freq(), hd, pos, rows, c.num_heads, m.q.as<float>()));
      KVSTAR_RETURN_IF_ERROR(
          ApplyRope(s, model_.inv_freq(), hd, pos, rows, c.num_kv_heads, m.k.as<float>()));
      if (kvstar && begin + rows > n - nq) {
        const size_t first = std::max(begin, n - nq);
        group0[l].resize(nq * c.q_dim());
        KVSTAR_RETURN_IF_ERROR(ctx.CopyToHost(group0[l].data() + (first - (n - nq)) * c.q_dim(),
                                              m.q.as<float>() + (first - begin) * c.q_dim(),
                                              (begin + rows - first) * c.q_dim() * sizeof(float),
                                              s));
      }
      KVSTAR_RETURN_IF_ERROR(
          WriteKv(s, geom_, table, begin, rows, m.k.as<float>(), m.v.as<float>()));
      AttentionArgs a;
      a.geom = geom_;
      a.q_heads = c.num_heads;
      a.q = m.q.as<float>();
      a.n = rows;
      a.q_last = pos;
      a.blocks = table;
      a.num_tokens = begin + rows;
      a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
      a.out = m.attn.as<float>();
      KVSTAR_ASSIGN_OR_RETURN(AttentionPlan plan, PlanAttention(a, ctx.info().sm_count));
      KVSTAR_RETURN_IF_ERROR(Ensure(m.attn_ws, plan.workspace_bytes, device_bytes_));
      KVSTAR_RETURN_IF_ERROR(RunAttention(s, a, plan, m.attn_ws.data()));
      float* proj = m.proj.as<float>();
      KVSTAR_RETURN_IF_ERROR(
          Linear(ctx, s, L.o, L.o_bias, m.attn.as<float>(), rows, proj, ws, opt_.matmul));
      KVSTAR_RETURN_IF_ERROR(Add(s, x, proj, rows * hidden, x));
      KVSTAR_RETURN_IF_ERROR(RmsNorm(s, x, L.post_attn_norm, rows, hidden, c.rms_norm_eps, xn));
      float* gate = m.gate.as<float>();
      KVSTAR_RETURN_IF_ERROR(
          LinearShared(ctx, s, {{L.gate, L.gate_bias, gate}, {L.up, L.up_bias, m.up.as<float>()}},
                       xn, rows, ws, opt_.matmul));
      KVSTAR_RETURN_IF_ERROR(SwiGlu(s, gate, m.up.as<float>(), rows * c.intermediate_size, gate));
      KVSTAR_RETURN_IF_ERROR(
          Linear(ctx, s, L.down, L.down_bias, gate, rows, proj, ws, opt_.matmul));
      KVSTAR_RETURN_IF_ERROR(Add(s, x, proj, rows * hidden, x));
      if (progress && !progress(l * computed + begin - p + rows, c.num_layers * computed)) {
        KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(s));
        return Cancelled("prefill cancelled at layer %zu, token %zu of %zu", l, begin + rows, n);
      }
    }
    if (staged || kvstar) {
      // The layer's blocks go to the host; the next layer reuses the buffer after them (same
      // stream).
      if (kvstar) {
        KVSTAR_RETURN_IF_ERROR(KvstarHomeCopy(l, seq, 0, nblocks, layer_base, true, s));
      } else {
        KVSTAR_RETURN_IF_ERROR(ctx.CopyToHost(m.host_kv[l].as<char>() + seq * max_blocks_ * bb,
                                              layer_base, nblocks * bb, s));
      }
      stats_.d2h_bytes += nblocks * bb;
      if (!chain.empty() && chain.size() > reused) {
        // The store copies from the pinned region: the layer's copy must have landed.
        KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(s));
        dumps.tasks.emplace_back(l, KvstarDumpBlocks(l, seq, chain, reused, chain.size()));
      }
    }
  }
  if (last_logits != nullptr) {
    float* xn = m.xn.as<float>();
    KVSTAR_RETURN_IF_ERROR(RmsNorm(s, m.x_all.as<float>() + (computed - 1) * hidden,
                                   model_.final_norm(), 1, hidden, c.rms_norm_eps, xn));
    KVSTAR_RETURN_IF_ERROR(MatMul(ctx, s, model_.lm_head(), xn, 1, m.logits.as<float>(),
                                  m.workspace.data(), opt_.matmul));
    KVSTAR_RETURN_IF_ERROR(
        ctx.CopyToHost(last_logits, m.logits.data(), c.vocab_size * sizeof(float), s));
  }
  KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(s));
  // A store that cannot take the blocks (a full disk...) costs their reuse, not the request: the
  // pinned region holds the KV that decoding reads.
  for (auto& [l, task] : dumps.tasks) {
    const Status st = task.Wait();
    if (!st.ok()) {
      const size_t failed = task.failed_ids().size();
      if (stats_.store_dump_failures == 0) {
        KVSTAR_LOG(kWarn,
                   "%zu prompt KV blocks of layer %zu were not stored (%s); they will not "
                   "be reused by later prompts",
                   failed, l, st.ToString().c_str());
      }
      stats_.store_dump_failures += failed;
    }
    task = StoreTask();
  }
  stats_.prefix_reused_tokens += p;
  lengths_[seq] = prompt_lengths_[seq] = n;
  if (kvstar) KVSTAR_RETURN_IF_ERROR(KvstarSetupSequence(seq, group0, nq));
  return Status::Ok();
}

Status CudaBatch::FillRandomContext(size_t seq, size_t tokens, uint32_t seed) {
  impl_->phase_have_prev = false;  // the gap to the next step is not an idle device
  DeviceContext& ctx = model_.ctx();
  KVSTAR_RETURN_IF_ERROR(ctx.Activate());
  const ModelConfig& c = model_.config();
  Impl& m = *impl_;
  if (seq >= opt_.batch) return InvalidArgument("sequence %zu of a batch of %zu", seq, opt_.batch);
  if (tokens == 0 || tokens >= opt_.max_tokens) {
    return InvalidArgument("random context of %zu tokens in a capacity of %zu", tokens,
                           opt_.max_tokens);
  }
  KVSTAR_RETURN_IF_ERROR(ctx.SynchronizeDevice());
  CudaStream* s = ctx.compute_stream();
  const size_t bb = geom_.block_bytes();
  const size_t nblocks = (tokens + opt_.block_tokens - 1) / opt_.block_tokens;
  const size_t off = seq * max_blocks_ * bb;
  const size_t count = nblocks * geom_.elements_per_block();
  if (opt_.mode == KvMode::kDense) {
    for (size_t l = 0; l < c.num_layers; ++l) {
      KVSTAR_RETURN_IF_ERROR(FillRandom(s, m.kv[l].as<char>() + off, count, geom_.dtype, 1.0f,
                                        seed + static_cast<uint32_t>(l)));
    }
  } else if (opt_.mode == KvMode::kKvstar) {
    // Random K/V per layer through a temporary buffer; random group-0 queries (there is no
    // prompt) make the first selection.
    KVSTAR_ASSIGN_OR_RETURN(DeviceBuffer tmp, DeviceBuffer::Allocate(nblocks * bb));
    for (size_t l = 0; l < c.num_layers; ++l) {
      KVSTAR_RETURN_IF_ERROR(
          FillRandom(s, tmp.data(), count, geom_.dtype, 1.0f, seed + static_cast<uint32_t>(l)));
      KVSTAR_RETURN_IF_ERROR(KvstarHomeCopy(l, seq, 0, nblocks, tmp.as<char>(), true, s));
    }
    KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(s));
    const size_t nq = opt_.kvstar.prompt_queries();
    std::vector<std::vector<float>> group0(c.num_layers, std::vector<float>(nq * c.q_dim()));
    uint32_t h = seed * 2654435761u + 1;
    for (auto& q : group0) {
      for (float& v : q) {
        h = h * 1664525u + 1013904223u;
        v = static_cast<float>(static_cast<int32_t>(h >> 8) % 2001 - 1000) / 1000.0f;
      }
    }
    lengths_[seq] = prompt_lengths_[seq] = tokens;
    return KvstarSetupSequence(seq, group0, nq);
  } else {
    // One random layer, copied to every layer's host region (the values do not matter).
    KVSTAR_RETURN_IF_ERROR(FillRandom(s, m.kv[0].as<char>() + off, count, geom_.dtype, 1.0f, seed));
    for (size_t l = 0; l < c.num_layers; ++l) {
      KVSTAR_RETURN_IF_ERROR(
          ctx.CopyToHost(m.host_kv[l].as<char>() + off, m.kv[0].as<char>() + off, nblocks * bb, s));
    }
    const size_t seq_split = std::min(split_, tokens / opt_.block_tokens * opt_.block_tokens);
    if (opt_.mode == KvMode::kKvpr && seq_split > 0) {
      const size_t wb = DTypeSize(model_.weight_dtype());
      const size_t xoff = seq * split_ * c.hidden_size * wb;
      // Activations after RMSNorm have unit RMS: values of scale 1 are realistic.
      KVSTAR_RETURN_IF_ERROR(FillRandom(s, m.x_stage[0].as<char>() + xoff,
                                        seq_split * c.hidden_size, model_.weight_dtype(), 1.0f,
                                        seed + 1));
      for (size_t l = 0; l < c.num_layers; ++l) {
        KVSTAR_RETURN_IF_ERROR(ctx.CopyToHost(m.host_x[l].as<char>() + xoff,
                                              m.x_stage[0].as<char>() + xoff,
                                              seq_split * c.hidden_size * wb, s));
      }
    }
  }
  KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(s));
  lengths_[seq] = prompt_lengths_[seq] = tokens;
  return Status::Ok();
}

}  // namespace kvstar::cuda
