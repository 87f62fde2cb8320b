// Every op against a double-precision reference written here, on random inputs, once per compiled
// and supported Highway target, with 1, 2 and 3 threads (results must be bit-identical across
// thread counts).
//
// Tolerances: the reference uses the values exactly as stored (bf16 / f16 weights already
// rounded), so every path is checked at f32 accuracy: |err| <= 1e-5 * sum|terms| for dot products
// (the magnitude a f32 accumulation error scales with), 1e-5 relative for element-wise ops,
// 1e-6 relative for exact conversions.
#include "ops/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "hwy/targets.h"
#include "ops/cpu/machine_limits.h"
#include "ops/cpu/ops_internal.h"
#include "ops/cpu/ops_test_util.h"

namespace kvstar::ops {
namespace {

using testing::ForEachTarget;
using testing::RandomFloats;
using testing::RandomTensor;
using testing::TestTensor;

constexpr DType kAllDTypes[] = {DType::kF32, DType::kBF16, DType::kF16};

std::vector<std::unique_ptr<ThreadPool>> MakePools() {
  std::vector<std::unique_ptr<ThreadPool>> pools;
  for (int t : {1, 2, 3}) pools.push_back(std::make_unique<ThreadPool>(t));
  return pools;
}

TEST(CpuOpsTargets, CompiledAndExercised) {
  const int64_t compiled = CompiledSimdTargets();
  // The portable fallback: EMU128, or SCALAR where Highway marks EMU128 broken (GCC < 12.3).
  const int64_t fallback = HWY_EMU128 | HWY_SCALAR;
  EXPECT_NE(compiled & fallback, 0) << "no portable fallback compiled";
  EXPECT_NE(compiled & HWY_AVX2, 0) << "AVX2 not compiled";
  EXPECT_NE(compiled & HWY_AVX3, 0) << "AVX3 not compiled";
  EXPECT_NE(compiled & HWY_AVX3_DL, 0) << "AVX3_DL not compiled";
  const int64_t supported = hwy::SupportedTargets();
  const int64_t ran = ForEachTarget([] {});
  EXPECT_NE(ran & fallback, 0) << "portable fallback not exercised";
  // Every x86 target this CPU supports must be exercised, whichever one dispatch prefers.
  for (int64_t t : {HWY_AVX2, HWY_AVX3, HWY_AVX3_DL}) {
    if (supported & t) {
      EXPECT_NE(ran & t, 0) << hwy::TargetName(t);
    }
  }
  std::printf("targets tested:");
  for (int64_t rest = ran; rest != 0; rest &= rest - 1) {
    std::printf(" %s", hwy::TargetName(rest & -rest));
  }
  std::printf("; dispatch picks %s\n", DescribeSimdTarget().c_str());
}

// y[i][r] and sum|terms| in double.
void ReferenceMatMul(const TestTensor& w, const std::vector<float>& x, size_t n,
                     std::vector<double>* y, std::vector<double>* mag) {
  y->assign(n * w.rows, 0.0);
  mag->assign(n * w.rows, 0.0);
  for (size_t i = 0; i < n; ++i) {
    for (size_t r = 0; r < w.rows; ++r) {
      double s = 0.0, m = 0.0;
      for (size_t k = 0; k < w.cols; ++k) {
        const double term = w.ref[r * w.cols + k] * static_cast<double>(x[i * w.cols + k]);
        s += term;
        m += std::fabs(term);
      }
      (*y)[i * w.rows + r] = s;
      (*mag)[i * w.rows + r] = m;
    }
  }
}

void ExpectDotResults(const std::vector<float>& got, const std::vector<double>& want,
                      const std::vector<double>& mag, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol * mag[i] + 1e-30) << "element " << i;
  }
}

enum class Kernel { kAuto, kDot, kPacked };

void RunMatMul(Kernel kernel, ThreadPool& pool, const TensorView& w, const float* x, size_t n,
               float* y) {
  switch (kernel) {
    case Kernel::kAuto:
      if (n == 1) return MatVec(pool, w, x, y);
      return MatMul(pool, w, x, n, y);
    case Kernel::kDot:
      return internal::MatMulDot(pool, w, x, n, y);
    case Kernel::kPacked:
      return internal::MatMulPacked(pool, w, x, n, y);
  }
}

TEST(CpuOps, MatVecAndMatMulAllDTypesShapesKernels) {
  auto pools = MakePools();
  std::mt19937 rng(1);
  struct Shape {
    size_t rows, cols;
  };
  const Shape shapes[] = {{1, 1}, {7, 13}, {33, 100}, {64, 257}, {130, 96}, {67, 300}};
  for (DType dtype : kAllDTypes) {
    for (const Shape& shape : shapes) {
      for (size_t n : {1, 2, 3, 5, 8, 13}) {
        SCOPED_TRACE(::testing::Message() << testing::Name(dtype) << " rows=" << shape.rows
                                          << " cols=" << shape.cols << " n=" << n);
        const TestTensor w = RandomTensor(rng, dtype, shape.rows, shape.cols);
        const std::vector<float> x = RandomFloats(rng, n * shape.cols);
        std::vector<double> want, mag;
        ReferenceMatMul(w, x, n, &want, &mag);
        ForEachTarget([&] {
          for (Kernel kernel : {Kernel::kAuto, Kernel::kDot, Kernel::kPacked}) {
            std::vector<float> first;
            for (auto& pool : pools) {
              std::vector<float> y(n * shape.rows, -7.0f);
              RunMatMul(kernel, *pool, w.view(), x.data(), n, y.data());
              ExpectDotResults(y, want, mag, 1e-5);
              if (first.empty()) {
                first = y;
              } else {
                ASSERT_EQ(0, std::memcmp(first.data(), y.data(), y.size() * 4))
                    << "result depends on the thread count (" << pool->parallelism() << ")";
              }
            }
          }
        });
      }
    }
  }
}

// Several packed panels, several column chunks with a tail, n not a multiple of the tile.
TEST(CpuOps, MatMulLargerThanOneTile) {
  auto pools = MakePools();
  std::mt19937 rng(2);
  for (DType dtype : kAllDTypes) {
    SCOPED_TRACE(testing::Name(dtype));
    const size_t rows = 200, cols = 531, n = 37;
    const TestTensor w = RandomTensor(rng, dtype, rows, cols);
    const std::vector<float> x = RandomFloats(rng, n * cols);
    std::vector<double> want, mag;
    ReferenceMatMul(w, x, n, &want, &mag);
    ForEachTarget([&] {
      std::vector<float> first;
      for (auto& pool : pools) {
        std::vector<float> y(n * rows);
        MatMul(*pool, w.view(), x.data(), n, y.data());
        ExpectDotResults(y, want, mag, 1e-5);
        if (first.empty()) first = y;
        ASSERT_EQ(0, std::memcmp(first.data(), y.data(), y.size() * 4));
      }
    });
  }
}

// Narrow weights and many rows of x: MatMul also splits x into pieces (how many depends on the
// thread count, which must not change the result).
TEST(CpuOps, MatMulNarrowWeightsSplitsRowsOfX) {
  auto pools = MakePools();
  std::mt19937 rng(9);
  for (DType dtype : {DType::kBF16, DType::kF32}) {
    SCOPED_TRACE(testing::Name(dtype));
    const size_t rows = 40, cols = 70, n = 333;
    const TestTensor w = RandomTensor(rng, dtype, rows, cols);
    const std::vector<float> x = RandomFloats(rng, n * cols);
    std::vector<double> want, mag;
    ReferenceMatMul(w, x, n, &want, &mag);
    ForEachTarget([&] {
      std::vector<float> first;
      for (auto& pool : pools) {
        std::vector<float> y(n * rows, -7.0f);
        MatMul(*pool, w.view(), x.data(), n, y.data());
        ExpectDotResults(y, want, mag, 1e-5);
        if (first.empty()) first = y;
        ASSERT_EQ(0, std::memcmp(first.data(), y.data(), y.size() * 4));
      }
    });
  }
}

TEST(CpuOps, AddBias) {
  std::mt19937 rng(3);
  for (DType dtype : kAllDTypes) {
    for (size_t cols : {1, 15, 16, 33, 200}) {
      const size_t n = 3;
      const TestTensor bias = RandomTensor(rng, dtype, 1, cols);
      const std::vector<float> y0 = RandomFloats(rng, n * cols);
      ForEachTarget([&] {
        std::vector<float> y = y0;
        AddBias(bias.view(), n, y.data());
        for (size_t i = 0; i < n * cols; ++i) {
          const double want = static_cast<double>(y0[i]) + bias.ref[i % cols];
          ASSERT_NEAR(y[i], want, 1e-6 * (std::fabs(want) + 1.0)) << testing::Name(dtype);
        }
      });
    }
  }
}

TEST(CpuOps, RmsNormAllowsAliasing) {
  std::mt19937 rng(4);
  for (DType dtype : kAllDTypes) {
    for (size_t dim : {1, 7, 64, 65, 896, 1000}) {
      const size_t n = 3;
      const float eps = 1e-6f;
      const TestTensor weight = RandomTensor(rng, dtype, 1, dim);
      const std::vector<float> x = RandomFloats(rng, n * dim, 3.0f);
      std::vector<double> want(n * dim);
      for (size_t t = 0; t < n; ++t) {
        double ss = 0.0;
        for (size_t i = 0; i < dim; ++i) ss += double{x[t * dim + i]} * x[t * dim + i];
        const double inv = 1.0 / std::sqrt(ss / dim + eps);
        for (size_t i = 0; i < dim; ++i) want[t * dim + i] = x[t * dim + i] * inv * weight.ref[i];
      }
      ForEachTarget([&] {
        std::vector<float> out(n * dim);
        RmsNorm(x.data(), weight.view(), n, dim, eps, out.data());
        std::vector<float> in_place = x;
        RmsNorm(in_place.data(), weight.view(), n, dim, eps, in_place.data());
        for (size_t i = 0; i < n * dim; ++i) {
          ASSERT_NEAR(out[i], want[i], 1e-5 * (std::fabs(want[i]) + 1e-3))
              << testing::Name(dtype) << " dim=" << dim << " i=" << i;
          ASSERT_EQ(out[i], in_place[i]);
        }
      });
    }
  }
}

TEST(CpuOps, RopeMatchesRotateHalf) {
  std::mt19937 rng(5);
  for (size_t head_dim : {64, 80, 128, 6}) {
    const size_t half = head_dim / 2, heads = 3, n = 4;
    std::vector<float> inv_freq(half);
    for (size_t i = 0; i < half; ++i) {
      // As transformers: 1 / base^(2i/d) in f32.
      inv_freq[i] = 1.0f / std::pow(1000000.0f, static_cast<float>(2 * i) / head_dim);
    }
    const std::vector<int64_t> pos = {0, 1, 517, 32767};
    const std::vector<float> x0 = RandomFloats(rng, n * heads * head_dim);
    std::vector<double> want(x0.size());
    for (size_t t = 0; t < n; ++t) {
      for (size_t h = 0; h < heads; ++h) {
        const size_t base = (t * heads + h) * head_dim;
        for (size_t i = 0; i < half; ++i) {
          const float angle = static_cast<float>(pos[t]) * inv_freq[i];
          const double c = std::cos(double{angle}), s = std::sin(double{angle});
          const double a = x0[base + i], b = x0[base + i + half];
          want[base + i] = a * c - b * s;
          want[base + i + half] = b * c + a * s;
        }
      }
    }
    ForEachTarget([&] {
      std::vector<float> x = x0;
      ApplyRope(inv_freq.data(), head_dim, pos.data(), n, heads, x.data());
      for (size_t i = 0; i < x.size(); ++i) {
        ASSERT_NEAR(x[i], want[i], 1e-5) << "head_dim=" << head_dim << " i=" << i;
      }
    });
  }
}

TEST(CpuOps, SwiGluIncludingExtremes) {
  std::mt19937 rng(6);
  std::vector<float> gate = RandomFloats(rng, 1001, 8.0f);
  gate[0] = 100.0f;
  gate[1] = -100.0f;
  gate[2] = 1e20f;
  gate[3] = -1e20f;
  gate[4] = -87.5f;
  const std::vector<float> up = RandomFloats(rng, gate.size());
  std::vector<double> want(gate.size());
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i];
    want[i] = g / (1.0 + std::exp(-g)) * up[i];
  }
  ForEachTarget([&] {
    std::vector<float> out(gate.size());
    SwiGlu(gate.data(), up.data(), gate.size(), out.data());
    std::vector<float> aliased = gate;
    SwiGlu(aliased.data(), up.data(), gate.size(), aliased.data());
    for (size_t i = 0; i < gate.size(); ++i) {
      ASSERT_TRUE(std::isfinite(out[i])) << "gate=" << gate[i];
      ASSERT_NEAR(out[i], want[i], 1e-5 * std::fabs(want[i]) + 1e-30) << "gate=" << gate[i];
      ASSERT_EQ(out[i], aliased[i]);
    }
  });
}

TEST(CpuOps, EmbedAndRangeCheck) {
  std::mt19937 rng(7);
  for (DType dtype : kAllDTypes) {
    const size_t vocab = 50, cols = 37;
    const TestTensor table = RandomTensor(rng, dtype, vocab, cols);
    const std::vector<int32_t> tokens = {3, 0, 49, 3, 17};
    ForEachTarget([&] {
      std::vector<float> out(tokens.size() * cols, -1.0f);
      ASSERT_TRUE(Embed(table.view(), tokens.data(), tokens.size(), out.data()).ok());
      for (size_t i = 0; i < tokens.size(); ++i) {
        for (size_t c = 0; c < cols; ++c) {
          ASSERT_EQ(out[i * cols + c], table.ref[tokens[i] * cols + c]);
        }
      }
      for (int32_t bad : {50, -1, 1 << 30}) {
        const int32_t bad_tokens[] = {1, bad};
        std::vector<float> untouched(2 * cols, 5.0f);
        const Status s = Embed(table.view(), bad_tokens, 2, untouched.data());
        EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
        EXPECT_NE(s.message().find(std::to_string(bad)), std::string::npos) << s.message();
        EXPECT_TRUE(
            std::all_of(untouched.begin(), untouched.end(), [](float v) { return v == 5.0f; }));
      }
    });
  }
}

TEST(CpuOps, AddAllowsAliasing) {
  std::mt19937 rng(8);
  for (size_t count : {1, 17, 1000}) {
    const std::vector<float> a = RandomFloats(rng, count), b = RandomFloats(rng, count);
    ForEachTarget([&] {
      std::vector<float> out(count);
      Add(a.data(), b.data(), count, out.data());
      std::vector<float> in_place = a;
      Add(in_place.data(), b.data(), count, in_place.data());
      for (size_t i = 0; i < count; ++i) {
        ASSERT_EQ(out[i], a[i] + b[i]);
        ASSERT_EQ(in_place[i], out[i]);
      }
    });
  }
}

TEST(CpuOps, MachineLimitsArePlausible) {
  ThreadPool pool(2);
  const double bw = MeasureMemoryReadBandwidth(pool, size_t{64} << 20);
  EXPECT_GT(bw, 0.1);
  EXPECT_LT(bw, 10000.0);
  const double fma = MeasureF32FmaRate(pool, 200'000);
  EXPECT_GT(fma, 0.1);
  const double mm = MeasureF32MatMulRate(pool, 256);
  EXPECT_GT(mm, 0.01);
  EXPECT_FALSE(DescribeSimdTarget().empty());
}

}  // namespace
}  // namespace kvstar::ops
