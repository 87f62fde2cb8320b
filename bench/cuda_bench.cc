// CUDA kernel benchmarks. Before they run, the device limits are measured in the same process:
//   copy_gbs  device-to-device copy of 1 GiB, bytes read + written per second (HBM ceiling)
//   read_gbs  1 GiB read once into registers, no writes (the ceiling of a streaming read)
//   h2d_gbs   pinned host-to-device copy of 256 MiB (PCIe ceiling)
//   gemm_tfs  bf16 MatMul 8192 x 8192 x 8192 (tensor-core ceiling through cuBLAS)
// Each benchmark reports its rate and its fraction of the matching limit. Times come from CUDA
// events around the timed work (manual time), after warm-up. Inputs are random (never zeros) and
// rotate among enough copies to exceed the L2 cache, so that repeated runs read HBM.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "base/half.h"
#include "base/kv_layout.h"
#include "base/tensor_view.h"
#include "ops/cuda/device.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/ops.h"

namespace kvstar::cuda {
namespace {

DeviceContext* g_ctx = nullptr;
double g_copy_gbs = 0.0;
double g_read_gbs = 0.0;
double g_h2d_gbs = 0.0;
double g_gemm_tfs = 0.0;

void Fail(benchmark::State& state, const Status& s) { state.SkipWithError(s.ToString().c_str()); }

// Times `body` (which enqueues on `stream`) with events; returns seconds.
template <typename F>
double TimeOnStream(CudaStream* stream, Event& start, Event& stop, F&& body) {
  if (!start.Record(stream).ok()) return -1.0;
  if (!body()) return -1.0;
  if (!stop.Record(stream).ok() || !stop.Synchronize().ok()) return -1.0;
  auto ms = stop.ElapsedMsSince(start);
  return ms.ok() ? *ms * 1e-3 : -1.0;
}

// Decode attention: `seqs` sequences of `tokens` tokens each, one query token per sequence,
// Llama-3-8B shapes (32 query heads, 8 KV heads, head_dim 128), bf16 KV in 128-token blocks.
void BM_DecodeAttention(benchmark::State& state) {
  const size_t tokens = static_cast<size_t>(state.range(0));
  const size_t seqs = static_cast<size_t>(state.range(1));
  const size_t split_hint = static_cast<size_t>(state.range(2));  // 0: the plan chooses
  // kernel: 0 the decode kernel's FMA form, 1 the tiled kernel, 2 the decode kernel on the
  // tensor cores.
  const AttentionKernelChoice kernel = state.range(3) == 0   ? AttentionKernelChoice::kDecodeFma
                                       : state.range(3) == 1 ? AttentionKernelChoice::kTiled
                                                             : AttentionKernelChoice::kDecodeMma;
  const bool shuffle = state.range(4) != 0;  // blocks in a random order, as kvstar's slots are
  const KvGeometry geom{.kv_heads = 8, .head_dim = 128, .block_tokens = 128, .dtype = DType::kBF16};
  const size_t q_heads = 32;
  const size_t blocks_per_seq = (tokens + geom.block_tokens - 1) / geom.block_tokens;
  const size_t kv_bytes = seqs * blocks_per_seq * geom.block_bytes();
  // Copies of the whole KV set so that one pass over all of them exceeds L2 several times.
  const size_t copies = std::max<size_t>(1, (size_t{512} << 20) / kv_bytes);
  CudaStream* s = g_ctx->compute_stream();
  auto storage = DeviceBuffer::Allocate(copies * kv_bytes);
  if (!storage.ok()) return Fail(state, storage.status());
  if (Status st = FillRandom(s, storage->data(), copies * kv_bytes / 2, DType::kBF16, 1.0f, 5);
      !st.ok()) {
    return Fail(state, st);
  }
  std::vector<const void*> table(copies * seqs * blocks_per_seq);
  for (size_t i = 0; i < table.size(); ++i) {
    table[i] = storage->as<unsigned char>() + i * geom.block_bytes();
  }
  if (shuffle) {  // a fixed permutation (Fisher-Yates on a 64-bit LCG)
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = table.size(); i > 1; --i) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      std::swap(table[i - 1], table[(x >> 33) % i]);
    }
  }
  auto dtable = DeviceBuffer::Allocate(table.size() * sizeof(void*));
  auto dq = DeviceBuffer::Allocate(seqs * q_heads * 128 * sizeof(float));
  auto dout = DeviceBuffer::Allocate(seqs * q_heads * 128 * sizeof(float));
  auto dlast = DeviceBuffer::Allocate(seqs * sizeof(int64_t));
  if (!dtable.ok() || !dq.ok() || !dout.ok() || !dlast.ok()) {
    return Fail(state, ResourceExhausted("decode attention buffers"));
  }
  const std::vector<int64_t> q_last(seqs, static_cast<int64_t>(tokens) - 1);
  if (Status st = g_ctx->CopyToDevice(dtable->data(), table.data(), dtable->bytes(), s); !st.ok()) {
    return Fail(state, st);
  }
  if (Status st = g_ctx->CopyToDevice(dlast->data(), q_last.data(), dlast->bytes(), s); !st.ok()) {
    return Fail(state, st);
  }
  if (Status st = FillRandom(s, dq->data(), seqs * q_heads * 128, DType::kF32, 1.0f, 9); !st.ok()) {
    return Fail(state, st);
  }
  AttentionArgs args;
  args.geom = geom;
  args.q_heads = q_heads;
  args.q = dq->as<float>();
  args.n = seqs;
  args.q_last = dlast->as<int64_t>();
  args.blocks_stride = seqs > 1 ? blocks_per_seq : 0;
  args.num_tokens = tokens;
  args.scale = 0.088f;
  args.out = dout->as<float>();
  auto plan = PlanAttention(args, g_ctx->info().sm_count, split_hint, kernel);
  if (!plan.ok()) return Fail(state, plan.status());
  auto ws = DeviceBuffer::Allocate(plan->workspace_bytes);
  if (!ws.ok()) return Fail(state, ws.status());
  auto start = Event::Create();
  auto stop = Event::Create();
  if (!start.ok() || !stop.ok()) return Fail(state, Internal("events"));
  size_t copy = 0;
  auto run = [&] {
    args.blocks = static_cast<const void* const*>(dtable->data()) + copy * seqs * blocks_per_seq;
    copy = (copy + 1) % copies;
    return RunAttention(s, args, *plan, ws->data()).ok();
  };
  for (int i = 0; i < 3; ++i) run();
  for (auto _ : state) {
    const double sec = TimeOnStream(s, *start, *stop, run);
    if (sec <= 0) return Fail(state, Internal("attention run failed"));
    state.SetIterationTime(sec);
  }
  const double gbs = static_cast<double>(kv_bytes) * static_cast<double>(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(gbs / 1e9, benchmark::Counter::kIsRate);
  state.counters["kv_MiB"] = static_cast<double>(kv_bytes) / (1 << 20);
  state.counters["splits"] = static_cast<double>(plan->num_splits);
  state.counters["decode_kernel"] = plan->decode_kernel ? (plan->decode_mma ? 2 : 1) : 0;
  // frac_copy = (KV bytes read / s) / (device copy bytes read + written / s).
  state.counters["frac_copy"] =
      benchmark::Counter(gbs / 1e9 / g_copy_gbs, benchmark::Counter::kIsRate);
  state.counters["frac_read"] =
      benchmark::Counter(gbs / 1e9 / g_read_gbs, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeAttention)
    ->ArgNames({"tokens", "seqs", "split", "kernel", "shuffle"})
    ->ArgsProduct({{4096, 32768, 131072}, {1, 4}, {0}, {0, 1, 2}, {0}})
    ->Args({32768, 16, 0, 0, 0})
    ->Args({32768, 16, 0, 1, 0})
    ->Args({32768, 16, 0, 2, 0})
    ->Args({32768, 1, 256, 0, 0})
    ->Args({32768, 1, 1024, 0, 0})
    ->Args({32768, 1, 2048, 0, 0})
    ->Args({131072, 1, 1024, 0, 0})
    ->Args({131072, 1, 4096, 0, 0})
    // The engine's largest batches at 128K (Llama-3.1-8B, 80 GB): kvstar's 8 sequences of about
    // a quarter of the context in scattered slots, dense's 3 of the whole context; piece lengths
    // around the plan's.
    ->ArgsProduct({{33024}, {8}, {0, 1376, 2752, 11008}, {0, 2}, {0, 1}})
    ->ArgsProduct({{130944}, {3}, {0}, {0, 2}, {0}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// Pinned host -> device copies of one size, back to back on the h2d stream (as the KV onboarding
// path issues them); throughput over a batch of at least 64 MiB.
void BM_PinnedH2D(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  const size_t batch = std::max<size_t>(1, (size_t{64} << 20) / bytes);
  auto host = PinnedHostBuffer::Allocate(bytes * batch);
  auto dev = DeviceBuffer::Allocate(bytes * batch);
  if (!host.ok() || !dev.ok()) return Fail(state, ResourceExhausted("h2d buffers"));
  std::fill_n(host->as<unsigned char>(), host->bytes(), static_cast<unsigned char>(0x3c));
  CudaStream* s = g_ctx->h2d_stream();
  auto start = Event::Create();
  auto stop = Event::Create();
  if (!start.ok() || !stop.ok()) return Fail(state, Internal("events"));
  auto run = [&] {
    for (size_t i = 0; i < batch; ++i) {
      if (!g_ctx
               ->CopyToDevice(dev->as<unsigned char>() + i * bytes,
                              host->as<unsigned char>() + i * bytes, bytes, s)
               .ok()) {
        return false;
      }
    }
    return true;
  };
  run();
  for (auto _ : state) {
    const double sec = TimeOnStream(s, *start, *stop, run);
    if (sec <= 0) return Fail(state, Internal("copy failed"));
    state.SetIterationTime(sec);
  }
  const double moved = static_cast<double>(bytes * batch) * static_cast<double>(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(moved / 1e9, benchmark::Counter::kIsRate);
  state.counters["frac_h2d"] =
      benchmark::Counter(moved / 1e9 / g_h2d_gbs, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PinnedH2D)
    ->RangeMultiplier(4)
    ->Range(64 << 10, 64 << 20)
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

MatMulKernel KernelArg(int64_t v) {
  return v == 1 ? MatMulKernel::kLibrary : v == 2 ? MatMulKernel::kSkinny : MatMulKernel::kAuto;
}

// MatMul at Llama-3-8B projection shapes: rows x cols weights, n activation rows. dtype 1 = bf16
// weights, 0 = f32 weights and f32 GEMM (the alternative that keeps f32 activations in cuBLAS, at
// twice the weight bytes). kernel 0 = auto, 1 = library (MatVec for n = 1, cuBLAS with
// activations rounded to bf16 for n > 1), 2 = the skinny tensor-core kernel (bf16, n <= 16).
void BM_Gemm(benchmark::State& state) {
  const size_t rows = static_cast<size_t>(state.range(0));
  const size_t cols = static_cast<size_t>(state.range(1));
  const size_t n = static_cast<size_t>(state.range(2));
  const DType dtype = state.range(3) == 1 ? DType::kBF16 : DType::kF32;
  const MatMulKernel kernel = KernelArg(state.range(4));
  const size_t wbytes = rows * cols * DTypeSize(dtype);
  const size_t copies = std::max<size_t>(1, (size_t{256} << 20) / wbytes);
  CudaStream* s = g_ctx->compute_stream();
  auto w = DeviceBuffer::Allocate(copies * wbytes);
  auto x = DeviceBuffer::Allocate(n * cols * sizeof(float));
  auto y = DeviceBuffer::Allocate(n * rows * sizeof(float));
  if (!w.ok() || !x.ok() || !y.ok()) return Fail(state, ResourceExhausted("gemm buffers"));
  if (!FillRandom(s, w->data(), copies * rows * cols, dtype, 0.05f, 3).ok() ||
      !FillRandom(s, x->data(), n * cols, DType::kF32, 1.0f, 4).ok()) {
    return Fail(state, Internal("fill"));
  }
  auto ws = DeviceBuffer::Allocate(MatMulWorkspaceBytes(TensorView{nullptr, dtype, rows, cols}, n));
  if (!ws.ok()) return Fail(state, ws.status());
  auto start = Event::Create();
  auto stop = Event::Create();
  if (!start.ok() || !stop.ok()) return Fail(state, Internal("events"));
  size_t copy = 0;
  auto run = [&] {
    const TensorView wv{w->as<unsigned char>() + copy * wbytes, dtype, rows, cols};
    copy = (copy + 1) % copies;
    return MatMul(*g_ctx, s, wv, x->as<float>(), n, y->as<float>(), ws->data(), kernel).ok();
  };
  for (int i = 0; i < 3; ++i) run();
  for (auto _ : state) {
    const double sec = TimeOnStream(s, *start, *stop, run);
    if (sec <= 0) return Fail(state, Internal("gemm failed"));
    state.SetIterationTime(sec);
  }
  const double it = static_cast<double>(state.iterations());
  const double flop = 2.0 * static_cast<double>(rows * cols * n) * it;
  const double bytes = static_cast<double>(wbytes + n * (cols + rows) * 4) * it;
  state.counters["TFLOP/s"] = benchmark::Counter(flop / 1e12, benchmark::Counter::kIsRate);
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
  state.counters["frac_copy"] =
      benchmark::Counter(bytes / 1e9 / g_copy_gbs, benchmark::Counter::kIsRate);
  state.counters["frac_gemm"] =
      benchmark::Counter(flop / 1e12 / g_gemm_tfs, benchmark::Counter::kIsRate);
}
// Llama-3-8B: qkv 6144 x 4096, o 4096 x 4096, gate+up 28672 x 4096, down 4096 x 14336,
// lm_head 128256 x 4096; n = 1 (decode), 16, 512 and 4096 (prefill chunks).
BENCHMARK(BM_Gemm)
    ->ArgNames({"rows", "cols", "n", "bf16", "kernel"})
    ->ArgsProduct({{6144}, {4096}, {1, 16, 512, 4096}, {1, 0}, {0}})
    ->Args({4096, 4096, 1, 1, 0})
    ->Args({4096, 4096, 512, 1, 0})
    ->Args({28672, 4096, 1, 1, 0})
    ->Args({28672, 4096, 512, 1, 0})
    ->Args({4096, 14336, 1, 1, 0})
    ->Args({4096, 14336, 512, 1, 0})
    ->Args({128256, 4096, 1, 1, 0})
    ->Args({128256, 4096, 512, 1, 0})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
// Decode batch sizes: the library path against the skinny kernel, same shapes.
BENCHMARK(BM_Gemm)
    ->Name("BM_GemmDecode")
    ->ArgNames({"rows", "cols", "n", "bf16", "kernel"})
    ->ArgsProduct({{6144, 4096, 28672}, {4096}, {1, 2, 4, 6, 8, 16}, {1}, {1, 2}})
    ->ArgsProduct({{4096}, {14336}, {1, 2, 4, 6, 8, 16}, {1}, {1, 2}})
    ->ArgsProduct({{128256}, {4096}, {1, 6, 16}, {1}, {1, 2}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// The skinny kernel's rows per CTA (16 x m_tiles) at Llama-3-8B shapes (q / k / v as one 6144-row
// matrix), to choose the default: rows x cols weights, n activation rows.
void BM_SkinnyTiles(benchmark::State& state) {
  const size_t rows = static_cast<size_t>(state.range(0));
  const size_t cols = static_cast<size_t>(state.range(1));
  const size_t n = static_cast<size_t>(state.range(2));
  const int m_tiles = static_cast<int>(state.range(3));
  const int stages = static_cast<int>(state.range(4));
  const int k_split = static_cast<int>(state.range(5));  // 0 the launcher's choice, 1 none, 2 split
  const size_t wbytes = rows * cols * 2;
  const size_t copies = std::max<size_t>(1, (size_t{256} << 20) / wbytes);
  CudaStream* s = g_ctx->compute_stream();
  auto w = DeviceBuffer::Allocate(copies * wbytes);
  auto x = DeviceBuffer::Allocate(n * cols * sizeof(float));
  auto y = DeviceBuffer::Allocate(n * rows * sizeof(float));
  if (!w.ok() || !x.ok() || !y.ok()) return Fail(state, ResourceExhausted("skinny buffers"));
  if (!FillRandom(s, w->data(), copies * rows * cols, DType::kBF16, 0.05f, 3).ok() ||
      !FillRandom(s, x->data(), n * cols, DType::kF32, 1.0f, 4).ok()) {
    return Fail(state, Internal("fill"));
  }
  auto start = Event::Create();
  auto stop = Event::Create();
  if (!start.ok() || !stop.ok()) return Fail(state, Internal("events"));
  size_t copy = 0;
  auto run = [&] {
    const internal::SkinnyOutput out{w->as<unsigned char>() + copy * wbytes, rows, y->as<float>()};
    copy = (copy + 1) % copies;
    return internal::LaunchSkinnyMatMul(&out, 1, cols, x->as<float>(), n,
                                        reinterpret_cast<cudaStream_t>(s), m_tiles, false, stages,
                                        k_split) == cudaSuccess;
  };
  for (int i = 0; i < 3; ++i) run();
  for (auto _ : state) {
    const double sec = TimeOnStream(s, *start, *stop, run);
    if (sec <= 0) return Fail(state, Internal("skinny failed"));
    state.SetIterationTime(sec);
  }
  const double bytes = static_cast<double>(wbytes) * static_cast<double>(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
  state.counters["frac_copy"] =
      benchmark::Counter(bytes / 1e9 / g_copy_gbs, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_SkinnyTiles)
    ->ArgNames({"rows", "cols", "n", "m_tiles", "stages", "split"})
    ->ArgsProduct({{6144, 4096, 28672}, {4096}, {1, 8, 16}, {1, 2, 4}, {0, 2, 3, 4}, {0}})
    ->ArgsProduct({{4096}, {14336}, {1, 8, 16}, {1, 2, 4}, {0, 2, 3, 4}, {0}})
    // Tiles against the k-split at 8 and more rows (o, down; q / k / v stacked).
    ->ArgsProduct({{4096, 6144}, {4096}, {8, 9, 12, 16}, {1, 2, 4}, {0}, {1, 2}})
    ->ArgsProduct({{4096}, {14336}, {8, 9, 12, 16}, {1, 2, 4}, {0}, {1, 2}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// One Llama-3-8B decoder layer's products at decode batch n, as the engine issues them: q / k /
// v and gate / up share x (MatMulShared), then o and down. kernel 0 = auto (the skinny kernel,
// one launch per shared group), 1 = library (one launch per matrix, plus a rounding launch each
// for n > 1). GB/s counts the weights (416 MiB) once.
void BM_DecodeLayerProducts(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const MatMulKernel kernel = KernelArg(state.range(1));
  SetSkinnyStages(static_cast<int>(state.range(2)));
  SetSkinnySplit(state.range(3) != 0);  // the o and down products halve their k-steps
  struct RestoreStages {
    ~RestoreStages() {
      SetSkinnyStages(0);
      SetSkinnySplit(true);
    }
  } restore;
  constexpr size_t kHidden = 4096, kKv = 1024, kInter = 14336;
  struct Shape {
    size_t rows, cols;
  };
  const Shape shapes[] = {{kHidden, kHidden}, {kKv, kHidden},    {kKv, kHidden},
                          {kHidden, kHidden}, {kInter, kHidden}, {kInter, kHidden},
                          {kHidden, kInter}};
  CudaStream* s = g_ctx->compute_stream();
  size_t wbytes = 0;
  for (const Shape& sh : shapes) wbytes += sh.rows * sh.cols * 2;
  auto w = DeviceBuffer::Allocate(wbytes);
  auto x = DeviceBuffer::Allocate(n * kInter * sizeof(float));
  auto y = DeviceBuffer::Allocate(3 * n * kInter * sizeof(float));
  auto ws = DeviceBuffer::Allocate(n * kInter * 2);
  if (!w.ok() || !x.ok() || !y.ok() || !ws.ok()) {
    return Fail(state, ResourceExhausted("layer buffers"));
  }
  if (!FillRandom(s, w->data(), wbytes / 2, DType::kBF16, 0.05f, 3).ok() ||
      !FillRandom(s, x->data(), n * kInter, DType::kF32, 1.0f, 4).ok()) {
    return Fail(state, Internal("fill"));
  }
  std::vector<TensorView> views;
  size_t off = 0;
  for (const Shape& sh : shapes) {
    views.push_back(TensorView{w->as<unsigned char>() + off, DType::kBF16, sh.rows, sh.cols});
    off += sh.rows * sh.cols * 2;
  }
  float* y0 = y->as<float>();
  float* y1 = y0 + n * kInter;
  float* y2 = y1 + n * kInter;
  const float* xf = x->as<float>();
  const MatMulTarget qkv[] = {{views[0], y0}, {views[1], y1}, {views[2], y2}};
  const MatMulTarget gate_up[] = {{views[4], y0}, {views[5], y1}};
  auto run = [&] {
    return MatMulShared(*g_ctx, s, qkv, xf, n, ws->data(), kernel).ok() &&
           MatMul(*g_ctx, s, views[3], xf, n, y2, ws->data(), kernel).ok() &&
           MatMulShared(*g_ctx, s, gate_up, xf, n, ws->data(), kernel).ok() &&
           MatMul(*g_ctx, s, views[6], xf, n, y2, ws->data(), kernel).ok();
  };
  auto start = Event::Create();
  auto stop = Event::Create();
  if (!start.ok() || !stop.ok()) return Fail(state, Internal("events"));
  for (int i = 0; i < 3; ++i) run();
  for (auto _ : state) {
    const double sec = TimeOnStream(s, *start, *stop, run);
    if (sec <= 0) return Fail(state, Internal("layer products failed"));
    state.SetIterationTime(sec);
  }
  const double bytes = static_cast<double>(wbytes) * static_cast<double>(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
  state.counters["frac_copy"] =
      benchmark::Counter(bytes / 1e9 / g_copy_gbs, benchmark::Counter::kIsRate);
  state.counters["frac_read"] =
      benchmark::Counter(bytes / 1e9 / g_read_gbs, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeLayerProducts)
    ->ArgNames({"n", "kernel", "stages", "split"})
    ->ArgsProduct({{1, 2, 3, 4, 6, 8, 9, 12, 16}, {0, 1}, {0}, {0}})
    ->ArgsProduct({{1, 8, 9, 16}, {0}, {1, 2, 3, 4}, {0}})
    ->ArgsProduct({{1, 3, 8, 9, 16}, {0}, {0}, {1}})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace kvstar::cuda

int main(int argc, char** argv) {
  using namespace kvstar::cuda;
  benchmark::Initialize(&argc, argv);
  if (DeviceCount() == 0) {
    std::printf("cuda_bench: no CUDA device, nothing to measure\n");
    return 0;
  }
  auto ctx = DeviceContext::Create(0);
  if (!ctx.ok()) {
    std::fprintf(stderr, "cuda_bench: %s\n", ctx.status().ToString().c_str());
    return 1;
  }
  g_ctx = ctx->get();
  auto copy = MeasureDeviceCopyBandwidth(*g_ctx, size_t{1} << 30, 20);
  auto read = MeasureDeviceReadBandwidth(*g_ctx, size_t{1} << 30, 20);
  auto h2d = MeasurePinnedH2DBandwidth(*g_ctx, size_t{256} << 20, 10);
  auto gemm = MeasureGemmRate(*g_ctx, kvstar::DType::kBF16, 8192, 8192, 8192, 10);
  if (!copy.ok() || !read.ok() || !h2d.ok() || !gemm.ok()) {
    std::fprintf(stderr, "cuda_bench: limit measurement failed: %s %s %s %s\n",
                 copy.status().ToString().c_str(), read.status().ToString().c_str(),
                 h2d.status().ToString().c_str(), gemm.status().ToString().c_str());
    return 1;
  }
  g_copy_gbs = *copy;
  g_read_gbs = *read;
  g_h2d_gbs = *h2d;
  g_gemm_tfs = *gemm;
  const DeviceInfo& info = g_ctx->info();
  benchmark::AddCustomContext("device", info.name);
  benchmark::AddCustomContext("sm_count", std::to_string(info.sm_count));
  benchmark::AddCustomContext("copy_gbs", std::to_string(g_copy_gbs));
  benchmark::AddCustomContext("read_gbs", std::to_string(g_read_gbs));
  benchmark::AddCustomContext("h2d_gbs", std::to_string(g_h2d_gbs));
  benchmark::AddCustomContext("gemm_bf16_tflops", std::to_string(g_gemm_tfs));
  std::printf(
      "device %s, %d SMs: copy %.0f GB/s (read + write), read %.0f GB/s, pinned H2D %.1f GB/s, "
      "bf16 GEMM %.0f TFLOP/s\n",
      info.name.c_str(), info.sm_count, g_copy_gbs, g_read_gbs, g_h2d_gbs, g_gemm_tfs);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  g_ctx = nullptr;
  return 0;
}
