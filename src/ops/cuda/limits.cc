// Physical limits measured on the device, quoted by the benchmarks next to their numbers.
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "ops/cuda/cuda_util.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/ops.h"

namespace kvstar::cuda {
namespace {

// Median milliseconds of `reps` runs of enqueue(), each bracketed by events on `stream`, after
// two warm-up runs.
template <typename F>
StatusOr<double> MedianMs(CudaStream* stream, int reps, F&& enqueue) {
  KVSTAR_ASSIGN_OR_RETURN(Event start, Event::Create());
  KVSTAR_ASSIGN_OR_RETURN(Event stop, Event::Create());
  for (int i = 0; i < 2; ++i) KVSTAR_RETURN_IF_ERROR(enqueue());
  std::vector<double> ms;
  for (int i = 0; i < std::max(reps, 1); ++i) {
    KVSTAR_RETURN_IF_ERROR(start.Record(stream));
    KVSTAR_RETURN_IF_ERROR(enqueue());
    KVSTAR_RETURN_IF_ERROR(stop.Record(stream));
    KVSTAR_RETURN_IF_ERROR(stop.Synchronize());
    KVSTAR_ASSIGN_OR_RETURN(float t, stop.ElapsedMsSince(start));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

StatusOr<double> MeasurePinnedH2DBandwidth(const DeviceContext& ctx, size_t bytes, int reps) {
  KVSTAR_RETURN_IF_ERROR(ctx.Activate());
  KVSTAR_ASSIGN_OR_RETURN(PinnedHostBuffer host, PinnedHostBuffer::Allocate(bytes));
  KVSTAR_ASSIGN_OR_RETURN(DeviceBuffer dev, DeviceBuffer::Allocate(bytes));
  std::fill_n(host.as<unsigned char>(), bytes, static_cast<unsigned char>(0x5a));
  CudaStream* s = ctx.h2d_stream();
  KVSTAR_ASSIGN_OR_RETURN(double ms, MedianMs(s, reps, [&] {
                            return ctx.CopyToDevice(dev.data(), host.data(), bytes, s);
                          }));
  return static_cast<double>(bytes) / (ms * 1e6);
}

StatusOr<double> MeasureDeviceCopyBandwidth(const DeviceContext& ctx, size_t bytes, int reps) {
  KVSTAR_RETURN_IF_ERROR(ctx.Activate());
  KVSTAR_ASSIGN_OR_RETURN(DeviceBuffer a, DeviceBuffer::Allocate(bytes));
  KVSTAR_ASSIGN_OR_RETURN(DeviceBuffer b, DeviceBuffer::Allocate(bytes));
  CudaStream* s = ctx.compute_stream();
  KVSTAR_CUDA_RETURN_IF_ERROR(
      internal::LaunchFillRandom(a.data(), bytes / 4, DType::kF32, 1.0f, 7, internal::AsCuda(s)));
  KVSTAR_ASSIGN_OR_RETURN(
      double ms, MedianMs(s, reps, [&] { return ctx.CopyOnDevice(b.data(), a.data(), bytes, s); }));
  return 2.0 * static_cast<double>(bytes) / (ms * 1e6);
}

StatusOr<double> MeasureDeviceReadBandwidth(const DeviceContext& ctx, size_t bytes, int reps) {
  if (bytes < 16) return InvalidArgument("read-rate measurement of %zu bytes: 16 at least", bytes);
  KVSTAR_RETURN_IF_ERROR(ctx.Activate());
  bytes = bytes / 16 * 16;
  KVSTAR_ASSIGN_OR_RETURN(DeviceBuffer a, DeviceBuffer::Allocate(bytes));
  KVSTAR_ASSIGN_OR_RETURN(DeviceBuffer sink, DeviceBuffer::Allocate(sizeof(unsigned)));
  CudaStream* s = ctx.compute_stream();
  KVSTAR_CUDA_RETURN_IF_ERROR(
      internal::LaunchFillRandom(a.data(), bytes / 4, DType::kF32, 1.0f, 7, internal::AsCuda(s)));
  struct Shape {
    int threads, loads, ctas_per_sm;
  };
  constexpr Shape kShapes[] = {{256, 4, 4}, {256, 8, 4}, {512, 4, 4}, {1024, 4, 2}, {1024, 8, 2}};
  double best = 0.0;
  for (const Shape& sh : kShapes) {
    KVSTAR_ASSIGN_OR_RETURN(double ms, MedianMs(s, reps, [&]() -> Status {
                              KVSTAR_CUDA_RETURN_IF_ERROR(internal::LaunchReadStream(
                                  a.data(), bytes, sh.threads, sh.loads, sh.ctas_per_sm,
                                  ctx.info().sm_count, sink.as<unsigned>(), internal::AsCuda(s)));
                              return Status::Ok();
                            }));
    best = std::max(best, static_cast<double>(bytes) / (ms * 1e6));
  }
  return best;
}

StatusOr<double> MeasureGemmRate(const DeviceContext& ctx, DType dtype, size_t m, size_t n,
                                 size_t k, int reps) {
  KVSTAR_RETURN_IF_ERROR(ctx.Activate());
  KVSTAR_ASSIGN_OR_RETURN(DeviceBuffer w, DeviceBuffer::Allocate(m * k * DTypeSize(dtype)));
  KVSTAR_ASSIGN_OR_RETURN(DeviceBuffer x, DeviceBuffer::Allocate(n * k * sizeof(float)));
  KVSTAR_ASSIGN_OR_RETURN(DeviceBuffer y, DeviceBuffer::Allocate(n * m * sizeof(float)));
  const TensorView wv{w.data(), dtype, m, k};
  KVSTAR_ASSIGN_OR_RETURN(DeviceBuffer ws, DeviceBuffer::Allocate(MatMulWorkspaceBytes(wv, n)));
  CudaStream* s = ctx.compute_stream();
  KVSTAR_CUDA_RETURN_IF_ERROR(
      internal::LaunchFillRandom(w.data(), m * k, dtype, 0.05f, 11, internal::AsCuda(s)));
  KVSTAR_CUDA_RETURN_IF_ERROR(
      internal::LaunchFillRandom(x.data(), n * k, DType::kF32, 1.0f, 13, internal::AsCuda(s)));
  KVSTAR_ASSIGN_OR_RETURN(double ms, MedianMs(s, reps, [&] {
                            return MatMul(ctx, s, wv, x.as<float>(), n, y.as<float>(), ws.data());
                          }));
  return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) /
         (ms * 1e9);
}

}  // namespace kvstar::cuda
