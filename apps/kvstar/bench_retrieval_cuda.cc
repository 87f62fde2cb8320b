#include "bench_retrieval_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/timer.h"
#include "ops/cuda/device.h"
#include "ops/cuda/ops.h"
#include "sparse/retriever.h"

namespace kvstar::cli {

namespace {

StatusOr<std::unique_ptr<cuda::DeviceContext>> OpenDevice() {
  if (cuda::DeviceCount() == 0) {
    return FailedPrecondition("--device cuda: no CUDA device is visible");
  }
  return cuda::DeviceContext::Create(0);
}

}  // namespace

StatusOr<GpuScoringRun> TimeGpuScoring(const sparse::RepresentationView& reps,
                                       const std::vector<float>& queries, size_t num_queries,
                                       size_t q_heads, size_t tasks, bool per_kv_head,
                                       double min_seconds, const GpuScoringChoices& choices) {
  KVSTAR_ASSIGN_OR_RETURN(auto ctx, OpenDevice());
  cuda::CudaStream* s = ctx->compute_stream();
  const size_t nb = reps.num_blocks();
  const size_t per = per_kv_head ? reps.kv_heads() : 1;  // scores per block
  const size_t rep_bytes = nb * reps.block_elements() * 2;
  std::vector<uint16_t> flat(nb * reps.block_elements());
  for (size_t b = 0; b < nb; ++b) {
    uint16_t* dst = flat.data() + b * reps.block_elements();
    if (choices.head_major) {
      cuda::RepresentationsToHeadMajor(reps.block(b), 1, reps.vectors_per_block(), reps.kv_heads(),
                                       reps.d_pruned(), dst);
    } else {
      std::memcpy(dst, reps.block(b), reps.block_elements() * 2);
    }
  }
  const std::vector<uint16_t>& chan = reps.channels().channels;
  KVSTAR_ASSIGN_OR_RETURN(auto reps_dev, cuda::DeviceBuffer::Allocate(tasks * rep_bytes));
  KVSTAR_ASSIGN_OR_RETURN(auto chan_dev, cuda::DeviceBuffer::Allocate(chan.size() * 2));
  KVSTAR_ASSIGN_OR_RETURN(auto q_dev, cuda::DeviceBuffer::Allocate(queries.size() * 4));
  KVSTAR_ASSIGN_OR_RETURN(auto scores_dev, cuda::DeviceBuffer::Allocate(tasks * nb * per * 4));
  KVSTAR_ASSIGN_OR_RETURN(auto tasks_dev,
                          cuda::DeviceBuffer::Allocate(tasks * sizeof(cuda::BlockScoreTask)));
  KVSTAR_RETURN_IF_ERROR(ctx->CopyToDevice(reps_dev.data(), flat.data(), rep_bytes, s));
  for (size_t t = 1; t < tasks; ++t) {
    KVSTAR_RETURN_IF_ERROR(
        ctx->CopyOnDevice(reps_dev.as<char>() + t * rep_bytes, reps_dev.data(), rep_bytes, s));
  }
  KVSTAR_RETURN_IF_ERROR(ctx->CopyToDevice(chan_dev.data(), chan.data(), chan.size() * 2, s));
  KVSTAR_RETURN_IF_ERROR(ctx->CopyToDevice(q_dev.data(), queries.data(), queries.size() * 4, s));
  std::vector<cuda::BlockScoreTask> host(tasks);
  for (size_t t = 0; t < tasks; ++t) {
    host[t].reps = reps_dev.as<char>() + t * rep_bytes;
    host[t].channels = chan_dev.as<uint16_t>();
    host[t].queries = q_dev.as<float>();
    host[t].scores = scores_dev.as<float>() + t * nb * per;
    host[t].cand_begin = 0;
    host[t].cand_end = static_cast<uint32_t>(nb);
  }
  KVSTAR_RETURN_IF_ERROR(
      ctx->CopyToDevice(tasks_dev.data(), host.data(), tasks * sizeof(cuda::BlockScoreTask), s));
  cuda::BlockScoreArgs a;
  a.tasks = tasks_dev.as<cuda::BlockScoreTask>();
  a.num_tasks = tasks;
  a.max_candidates = nb;
  a.num_queries = num_queries;
  a.query_stride = q_heads * reps.head_dim();
  a.q_heads = q_heads;
  a.kv_heads = reps.kv_heads();
  a.head_dim = reps.head_dim();
  a.d_pruned = reps.d_pruned();
  a.vectors_per_block = reps.vectors_per_block();
  a.dtype = reps.dtype();
  a.scale = 1.0f / std::sqrt(static_cast<float>(reps.head_dim()));
  a.per_kv_head = per_kv_head;
  a.tensor_cores = choices.tensor_cores;
  a.max_ctas = choices.max_ctas;
  a.blocks_per_cta = choices.blocks_per_cta;
  a.stages = choices.stages;
  a.head_major = choices.head_major;
  KVSTAR_RETURN_IF_ERROR(cuda::ValidateBlockScoreShape(a));
  KVSTAR_ASSIGN_OR_RETURN(auto ws, cuda::DeviceBuffer::Allocate(cuda::BlockScoreWorkspaceBytes(a)));
  KVSTAR_ASSIGN_OR_RETURN(cuda::Event start, cuda::Event::Create());
  KVSTAR_ASSIGN_OR_RETURN(cuda::Event stop, cuda::Event::Create());
  GpuScoringRun run;
  run.device = ctx->info().name;
  run.tensor_cores = cuda::BlockScoreUsesTensorCores(a);
  run.blocks_per_cta = cuda::BlockScoreBlocksPerCta(a);
  for (int i = 0; i < 2; ++i) KVSTAR_RETURN_IF_ERROR(cuda::ScoreBlocks(s, a, ws.data()));
  KVSTAR_RETURN_IF_ERROR(ctx->Synchronize(s));
  Stopwatch total;
  while (run.call_ms.size() < 5 || (total.Seconds() < min_seconds && run.call_ms.size() < 2000)) {
    KVSTAR_RETURN_IF_ERROR(start.Record(s));
    KVSTAR_RETURN_IF_ERROR(cuda::ScoreBlocks(s, a, ws.data()));
    KVSTAR_RETURN_IF_ERROR(stop.Record(s));
    KVSTAR_RETURN_IF_ERROR(stop.Synchronize());
    KVSTAR_ASSIGN_OR_RETURN(float ms, stop.ElapsedMsSince(start));
    run.call_ms.push_back(ms);
  }
  // The scores against the CPU scorer's, for the first task.
  std::vector<float> got(nb * per);
  KVSTAR_RETURN_IF_ERROR(ctx->CopyToHost(got.data(), scores_dev.data(), got.size() * 4, s));
  KVSTAR_RETURN_IF_ERROR(ctx->Synchronize(s));
  sparse::RetrievalTask cpu;
  cpu.reps = reps;
  cpu.queries = queries;
  cpu.num_queries = num_queries;
  cpu.q_heads = q_heads;
  cpu.options.select_per_kv_head = per_kv_head;
  for (size_t b = 0; b < nb; ++b) cpu.candidates.push_back(static_cast<uint32_t>(b));
  KVSTAR_ASSIGN_OR_RETURN(sparse::RetrievalResult ref, sparse::RunRetrieval(cpu));
  for (size_t b = 0; b < got.size(); ++b) {
    const double r = ref.candidate_scores[b];
    const double err = std::fabs(got[b] - r) / std::max(std::fabs(r), 1e-12);
    // NaN (a non-finite score on either side) counts as an infinite error.
    run.max_rel_err =
        std::isnan(err) || std::isinf(err) ? INFINITY : std::max(run.max_rel_err, err);
  }
  return run;
}

StatusOr<std::pair<double, double>> MeasureGpuLimits() {
  KVSTAR_ASSIGN_OR_RETURN(auto ctx, OpenDevice());
  KVSTAR_ASSIGN_OR_RETURN(double tflops,
                          cuda::MeasureGemmRate(*ctx, DType::kF32, 4096, 4096, 4096, 10));
  KVSTAR_ASSIGN_OR_RETURN(double gbps, cuda::MeasureDeviceCopyBandwidth(*ctx));
  return std::make_pair(tflops, gbps);
}

}  // namespace kvstar::cli
