#include "ops/cpu/machine_limits.h"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "base/aligned_buffer.h"
#include "base/tensor_view.h"
#include "ops/cpu/ops.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/cpu/machine_limits.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/targets.h"
#include "ops/cpu/machine_limits-inl.h"

#if HWY_ONCE
namespace kvstar::ops {
namespace {

HWY_EXPORT(SumFloatsImpl);
HWY_EXPORT(FmaChainsImpl);
HWY_EXPORT(ChosenTargetImpl);
HWY_EXPORT(LanesF32Impl);

double Seconds(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

float ReadAllFloats(ThreadPool& pool, const float* data, size_t count) {
  const size_t parts = static_cast<size_t>(pool.parallelism());
  // Slices of whole 4 KiB pages (1024 floats); the last one takes the rest.
  const size_t per_part = std::max<size_t>(1024, count / parts / 1024 * 1024);
  std::vector<float> sums(parts, 0.0f);
  pool.ParallelFor(
      parts,
      [&](size_t begin, size_t end, int) {
        for (size_t p = begin; p < end; ++p) {
          const size_t b = std::min(count, p * per_part);
          const size_t e = p + 1 == parts ? count : std::min(count, b + per_part);
          const size_t vec_end = b + (e - b) / 1024 * 1024;
          float s = HWY_DYNAMIC_DISPATCH(SumFloatsImpl)(data + b, vec_end - b);
          for (size_t i = vec_end; i < e; ++i) s += data[i];
          sums[p] = s;
        }
      },
      1);
  float total = 0.0f;
  for (float s : sums) total += s;
  return total;
}

double MeasureMemoryReadBandwidth(ThreadPool& pool, size_t bytes) {
  const size_t parts = static_cast<size_t>(pool.parallelism());
  // Each slice is a whole number of 4 KiB pages so slices never share a page or a vector.
  const size_t floats_per_part = std::max<size_t>(1024, bytes / 4 / parts / 1024 * 1024);
  AlignedBuffer<float> buffer(floats_per_part * parts);
  // Every thread first-touches its own slice (pages are really allocated, and on NUMA machines
  // placed near the reader).
  pool.ParallelFor(
      parts,
      [&](size_t begin, size_t end, int) {
        for (size_t p = begin; p < end; ++p) {
          float* s = buffer.data() + p * floats_per_part;
          for (size_t i = 0; i < floats_per_part; ++i) s[i] = static_cast<float>(i & 255);
        }
      },
      1);
  double best = 0.0;
  float sink = 0.0f;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    sink += ReadAllFloats(pool, buffer.data(), buffer.size());
    const double s = Seconds(t0, std::chrono::steady_clock::now());
    best = std::max(best, static_cast<double>(buffer.bytes()) / s / 1e9);
  }
  volatile float keep = sink;
  (void)keep;
  return best;
}

double MeasureF32FmaRate(ThreadPool& pool, size_t iterations) {
  const size_t parts = static_cast<size_t>(pool.parallelism());
  std::vector<float> sinks(parts);
  std::vector<double> flops(parts);
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.ParallelFor(
        parts,
        [&](size_t begin, size_t end, int) {
          for (size_t p = begin; p < end; ++p) {
            flops[p] =
                HWY_DYNAMIC_DISPATCH(FmaChainsImpl)(iterations, static_cast<float>(p), &sinks[p]);
          }
        },
        1);
    const double s = Seconds(t0, std::chrono::steady_clock::now());
    double total = 0.0;
    for (double f : flops) total += f;
    best = std::max(best, total / s / 1e9);
  }
  volatile float sink = sinks[0];
  (void)sink;
  return best;
}

double MeasureF32MatMulRate(ThreadPool& pool, size_t size) {
  AlignedBuffer<float> w(size * size);  // [size][size]
  AlignedBuffer<float> x(size * size);  // [size][size]
  AlignedBuffer<float> y(size * size);  // [size][size]
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = static_cast<float>((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    x[i] = static_cast<float>((i * 40503u) % 1000) * 1e-3f - 0.5f;
  }
  const TensorView wv{w.data(), DType::kF32, size, size};
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    MatMul(pool, wv, x.data(), size, y.data());
    const double s = Seconds(t0, std::chrono::steady_clock::now());
    best = std::max(best, 2.0 * static_cast<double>(size) * size * size / s / 1e9);
  }
  return best;
}

size_t SimdLanesF32() { return HWY_DYNAMIC_DISPATCH(LanesF32Impl)(); }

std::string DescribeSimdTarget() {
  return hwy::TargetName(HWY_DYNAMIC_DISPATCH(ChosenTargetImpl)());
}

}  // namespace kvstar::ops
#endif  // HWY_ONCE
