// CudaBatch, kvstar mode: sync steps (KvstarConfig::sync_steps). Inside each of the batch's first
// sync_steps decode steps, every layer is re-selected from the step's own query before its
// attention, synchronously, as KvstarPolicy::SyncReselect does on the CPU (cuda_kvstar.cc has
// the asynchronous schedule). The scoring runs on the retriever's threads, or with gpu_scoring
// on the device (KvstarSyncScoreOnDevice, cuda_kvstar_gpu.cc).
#include <vector>

#include "base/check.h"
#include "base/timer.h"
#include "engine/cuda/cuda_batch.h"
#include "engine/cuda/cuda_batch_impl.h"

namespace kvstar::cuda {

Status CudaBatch::KvstarSyncReselect(size_t l, const float* q) {
  DeviceContext& ctx = model_.ctx();
  const KvstarConfig& k = opt_.kvstar;
  Impl& m = *impl_;
  const size_t B = opt_.batch;
  CudaStream* s = ctx.compute_stream();
  Stopwatch wait;
  std::vector<uint32_t> cand_end(B, 0);
  for (size_t b = 0; b < B; ++b) {
    const size_t full = lengths_[b] / opt_.block_tokens;
    if (full <= KvstarWindows(k)) continue;  // no candidates
    const KvstarSeqLayer& st = m.ks[l][b];
    // No group is submitted before the sync steps end, so nothing is in flight.
    KVSTAR_CHECK(st.pending.empty() && st.arriving.empty(),
                 "sync step with %zu retrievals and %zu copies in flight (layer %zu, seq %zu)",
                 st.pending.size(), st.arriving.size(), l, b);
    cand_end[b] = static_cast<uint32_t>(full - k.local_window_sz);
  }
  std::vector<sparse::RetrievalResult> results(B);
  // Both return with the device idle: slots of blocks that leave are free to reuse at once.
  KVSTAR_RETURN_IF_ERROR(opt_.gpu_scoring ? KvstarSyncScoreOnDevice(l, q, cand_end, &results)
                                          : KvstarSyncScoreOnHost(l, q, cand_end, &results));
  // The copies go on the compute stream, ahead of this layer's attention.
  m.copy_dst.clear();
  m.copy_src.clear();
  m.copy_bytes.clear();
  for (size_t b = 0; b < B; ++b) {
    if (cand_end[b] == 0) continue;
    ++stats_.sync_retrievals;
    // Every candidate was scored, extras included.
    KVSTAR_RETURN_IF_ERROR(KvstarReplaceSelection(l, b, results[b].blocks, cand_end[b]));
  }
  if (!m.copy_dst.empty()) {
    KVSTAR_RETURN_IF_ERROR(ctx.CopyBatchToDevice(m.copy_dst.data(), m.copy_src.data(),
                                                 m.copy_bytes.data(), m.copy_dst.size(), s));
  }
  KVSTAR_RETURN_IF_ERROR(KvstarIssueSwaps(s));  // exclusive host tier
  // This layer's tables and q_last, ahead of its attention; waited for, so that the mirrors can
  // be rewritten in this step's window.
  const size_t row = m.slots_per_seq * sizeof(void*);
  KVSTAR_RETURN_IF_ERROR(ctx.CopyToDevice(m.tables.as<char>() + l * B * row,
                                          m.table_mirror.as<char>() + l * B * row, B * row, s));
  KVSTAR_RETURN_IF_ERROR(ctx.CopyToDevice(m.qlast_dev.as<int64_t>() + l * B,
                                          m.qlast_mirror.as<int64_t>() + l * B, B * 8, s));
  stats_.h2d_bytes += B * row + B * 8;
  KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(s));
  stats_.sync_wait_ms += wait.Millis();
  return Status::Ok();
}

Status CudaBatch::KvstarSyncScoreOnHost(size_t l, const float* q,
                                        const std::vector<uint32_t>& cand_end,
                                        std::vector<sparse::RetrievalResult>* results) {
  DeviceContext& ctx = model_.ctx();
  const ModelConfig& c = model_.config();
  const KvstarConfig& k = opt_.kvstar;
  Impl& m = *impl_;
  const size_t B = opt_.batch;
  CudaStream* s = ctx.compute_stream();
  // The step's own queries of this layer (the device finishes everything queued before them).
  std::vector<float> qh(B * c.q_dim());
  KVSTAR_RETURN_IF_ERROR(ctx.CopyToHost(qh.data(), q, qh.size() * sizeof(float), s));
  KVSTAR_RETURN_IF_ERROR(ctx.Synchronize(s));
  // Every sequence's task at once on the retriever's threads (each split across them).
  std::vector<sparse::RetrievalHandle> handles(B);
  for (size_t b = 0; b < B; ++b) {
    if (cand_end[b] == 0) continue;
    sparse::RetrievalTask t;
    t.reps = m.ks[l][b].reps->View();
    t.queries.assign(qh.begin() + static_cast<std::ptrdiff_t>(b * c.q_dim()),
                     qh.begin() + static_cast<std::ptrdiff_t>((b + 1) * c.q_dim()));
    t.num_queries = 1;
    t.q_heads = c.num_heads;
    KvstarSetTask(k, cand_end[b], &t);
    handles[b] = m.retriever->Submit(std::move(t));
  }
  for (size_t b = 0; b < B; ++b) {
    if (cand_end[b] == 0) continue;
    KVSTAR_RETURN_IF_ERROR(handles[b].Wait().WithContext("kvstar sync-step retrieval"));
    (*results)[b] = KvstarCandidateResult(k, m.score_per, handles[b].result(), cand_end[b]);
  }
  return Status::Ok();
}

}  // namespace kvstar::cuda
