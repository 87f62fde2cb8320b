// Row-wise and element-wise kernels (bias, RMSNorm, RoPE, SwiGLU, embedding lookup, add),
// compiled once per Highway target (see elementwise.cc). Single-threaded: each is a small
// fraction of a layer's time next to the matmuls and attention.

#if defined(KVSTAR_OPS_CPU_ELEMENTWISE_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVSTAR_OPS_CPU_ELEMENTWISE_INL_H_
#undef KVSTAR_OPS_CPU_ELEMENTWISE_INL_H_
#else
#define KVSTAR_OPS_CPU_ELEMENTWISE_INL_H_
#endif

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "base/check.h"
#include "base/tensor_view.h"
#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "ops/cpu/simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kvstar::ops::HWY_NAMESPACE {

template <typename T>
HWY_INLINE void AddRowTyped(const T* HWY_RESTRICT bias, size_t cols, float* HWY_RESTRICT y) {
  const DF df;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= cols; i += N) {
    hn::StoreU(hn::Add(hn::LoadU(df, y + i), LoadAsF32(df, bias + i)), df, y + i);
  }
  for (; i < cols; ++i) y[i] += ScalarAsF32(bias[i]);
}

void AddBiasImpl(const TensorView& bias, size_t n, float* y) {
  KVSTAR_CHECK(bias.rows == 1, "bias must be one row, got %zu x %zu", bias.rows, bias.cols);
  for (size_t t = 0; t < n; ++t) {
    float* row = y + t * bias.cols;
    switch (bias.dtype) {
      case DType::kF32:
        AddRowTyped(static_cast<const float*>(bias.data), bias.cols, row);
        break;
      case DType::kBF16:
        AddRowTyped(static_cast<const BF16*>(bias.data), bias.cols, row);
        break;
      case DType::kF16:
        AddRowTyped(static_cast<const F16*>(bias.data), bias.cols, row);
        break;
    }
  }
}

template <typename T>
HWY_INLINE void RmsNormRow(const float* x, const T* HWY_RESTRICT weight, size_t dim, float eps,
                           float* out) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF ss0 = hn::Zero(df);
  VF ss1 = hn::Zero(df);
  size_t i = 0;
  for (; i + 2 * N <= dim; i += 2 * N) {
    const VF a = hn::LoadU(df, x + i);
    const VF b = hn::LoadU(df, x + i + N);
    ss0 = hn::MulAdd(a, a, ss0);
    ss1 = hn::MulAdd(b, b, ss1);
  }
  for (; i + N <= dim; i += N) {
    const VF a = hn::LoadU(df, x + i);
    ss0 = hn::MulAdd(a, a, ss0);
  }
  float ss = ReduceSum(df, hn::Add(ss0, ss1));
  for (; i < dim; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
  const VF vinv = hn::Set(df, inv);
  i = 0;
  for (; i + N <= dim; i += N) {
    const VF v = hn::Mul(hn::Mul(hn::LoadU(df, x + i), vinv), LoadAsF32(df, weight + i));
    hn::StoreU(v, df, out + i);
  }
  for (; i < dim; ++i) out[i] = x[i] * inv * ScalarAsF32(weight[i]);
}

void RmsNormImpl(const float* x, const TensorView& weight, size_t n, size_t dim, float eps,
                 float* out) {
  KVSTAR_CHECK(weight.elements() == dim, "norm weight has %zu elements, dim is %zu",
               weight.elements(), dim);
  for (size_t t = 0; t < n; ++t) {
    switch (weight.dtype) {
      case DType::kF32:
        RmsNormRow(x + t * dim, static_cast<const float*>(weight.data), dim, eps, out + t * dim);
        break;
      case DType::kBF16:
        RmsNormRow(x + t * dim, static_cast<const BF16*>(weight.data), dim, eps, out + t * dim);
        break;
      case DType::kF16:
        RmsNormRow(x + t * dim, static_cast<const F16*>(weight.data), dim, eps, out + t * dim);
        break;
    }
  }
}

void ApplyRopeImpl(const float* inv_freq, size_t head_dim, const int64_t* pos, size_t n,
                   size_t heads, float* x) {
  KVSTAR_CHECK(head_dim % 2 == 0, "rotary head_dim must be even, got %zu", head_dim);
  const size_t half = head_dim / 2;
  const DF df;
  const size_t N = hn::Lanes(df);
  float* cos_t = ThreadScratch(0, half);  // [half]
  float* sin_t = ThreadScratch(1, half);  // [half]
  for (size_t t = 0; t < n; ++t) {
    const float p = static_cast<float>(pos[t]);
    for (size_t i = 0; i < half; ++i) {
      // The angle is rounded to f32 before cos/sin, as transformers computes it.
      const float angle = p * inv_freq[i];
      cos_t[i] = std::cos(angle);
      sin_t[i] = std::sin(angle);
    }
    for (size_t h = 0; h < heads; ++h) {
      float* x1 = x + (t * heads + h) * head_dim;
      float* x2 = x1 + half;
      size_t i = 0;
      for (; i + N <= half; i += N) {
        const VF a = hn::LoadU(df, x1 + i);
        const VF b = hn::LoadU(df, x2 + i);
        const VF c = hn::LoadU(df, cos_t + i);
        const VF s = hn::LoadU(df, sin_t + i);
        hn::StoreU(hn::NegMulAdd(b, s, hn::Mul(a, c)), df, x1 + i);
        hn::StoreU(hn::MulAdd(a, s, hn::Mul(b, c)), df, x2 + i);
      }
      for (; i < half; ++i) {
        const float a = x1[i];
        const float b = x2[i];
        x1[i] = a * cos_t[i] - b * sin_t[i];
        x2[i] = b * cos_t[i] + a * sin_t[i];
      }
    }
  }
}

HWY_INLINE float SiluScalar(float g) { return g / (1.0f + std::exp(-g)); }

void SwiGluImpl(const float* gate, const float* up, size_t count, float* out) {
  const DF df;
  const size_t N = hn::Lanes(df);
  // hn::Exp is valid up to +104 and is exactly 0 below -104; clamping keeps huge |g| away from
  // its float-to-int conversion. For g < -88, |silu(g)| < 1e-36: flushed to 0 as std::exp does.
  const VF kMaxArg = hn::Set(df, 88.0f);
  const VF kMinArg = hn::Set(df, -105.0f);
  const VF kOne = hn::Set(df, 1.0f);
  size_t i = 0;
  for (; i + N <= count; i += N) {
    const VF g = hn::LoadU(df, gate + i);
    const VF neg = hn::Neg(g);
    const VF e = hn::Exp(df, hn::Max(hn::Min(neg, kMaxArg), kMinArg));
    const VF silu = hn::IfThenZeroElse(hn::Gt(neg, kMaxArg), hn::Div(g, hn::Add(kOne, e)));
    hn::StoreU(hn::Mul(silu, hn::LoadU(df, up + i)), df, out + i);
  }
  for (; i < count; ++i) out[i] = SiluScalar(gate[i]) * up[i];
}

void EmbedRowsImpl(const TensorView& table, const int32_t* tokens, size_t n, float* out) {
  for (size_t t = 0; t < n; ++t) {
    const void* row = table.row(static_cast<size_t>(tokens[t]));
    float* dst = out + t * table.cols;
    switch (table.dtype) {
      case DType::kF32:
        ConvertToF32(static_cast<const float*>(row), table.cols, dst);
        break;
      case DType::kBF16:
        ConvertToF32(static_cast<const BF16*>(row), table.cols, dst);
        break;
      case DType::kF16:
        ConvertToF32(static_cast<const F16*>(row), table.cols, dst);
        break;
    }
  }
}

void AddImpl(const float* a, const float* b, size_t count, float* out) {
  const DF df;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= count; i += N) {
    hn::StoreU(hn::Add(hn::LoadU(df, a + i), hn::LoadU(df, b + i)), df, out + i);
  }
  for (; i < count; ++i) out[i] = a[i] + b[i];
}

}  // namespace kvstar::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // KVSTAR_OPS_CPU_ELEMENTWISE_INL_H_
