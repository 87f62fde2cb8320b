// Helpers for the CPU ops tests: random tensors in any storage dtype together with the exact
// values the kernels see (as double), and a loop over every compiled + supported Highway target.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/half.h"
#include "base/tensor_view.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"
#include "ops/cpu/machine_limits.h"
#include "ops/cpu/ops.h"

namespace kvstar::ops::testing {

// A row-major [rows][cols] tensor stored in `dtype`; `ref` holds the stored values exactly.
struct TestTensor {
  DType dtype = DType::kF32;
  size_t rows = 0;
  size_t cols = 0;
  std::vector<float> f32;
  std::vector<uint16_t> half;  // bf16 or f16 bits
  std::vector<double> ref;

  TensorView view() const {
    const void* data = dtype == DType::kF32 ? static_cast<const void*>(f32.data())
                                            : static_cast<const void*>(half.data());
    return TensorView{data, dtype, rows, cols};
  }
};

inline float StoredValue(float v, DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return v;
    case DType::kBF16:
      return BF16ToF32(F32ToBF16(v));
    case DType::kF16:
      return F16ToF32(F32ToF16(v));
  }
  return v;
}

// Uniform in [-scale, scale], never exactly zero.
inline std::vector<float> RandomFloats(std::mt19937& rng, size_t count, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(count);
  for (float& x : v) {
    do {
      x = dist(rng);
    } while (x == 0.0f);
  }
  return v;
}

inline TestTensor RandomTensor(std::mt19937& rng, DType dtype, size_t rows, size_t cols,
                               float scale = 1.0f) {
  TestTensor t;
  t.dtype = dtype;
  t.rows = rows;
  t.cols = cols;
  const std::vector<float> values = RandomFloats(rng, rows * cols, scale);
  t.ref.resize(values.size());
  if (dtype == DType::kF32) {
    t.f32 = values;
  } else {
    t.half.resize(values.size());
  }
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::kBF16) t.half[i] = F32ToBF16(values[i]).bits;
    if (dtype == DType::kF16) t.half[i] = F32ToF16(values[i]).bits;
    t.ref[i] = StoredValue(values[i], dtype);
  }
  return t;
}

// Bit set of targets the tests run: compiled into the library and supported by this CPU.
inline int64_t TargetsToTest() { return hwy::SupportedTargets() & CompiledSimdTargets(); }

// Runs fn() once per target in TargetsToTest() with dispatch forced to that target; returns the
// targets run. Checks that dispatch really switched.
template <class Fn>
int64_t ForEachTarget(const Fn& fn) {
  const int64_t targets = TargetsToTest();
  int64_t ran = 0;
  for (int64_t rest = targets; rest != 0; rest &= rest - 1) {
    const int64_t target = rest & -rest;
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(std::string("target ") + hwy::TargetName(target));
    EXPECT_EQ(DescribeSimdTarget(), hwy::TargetName(target));
    fn();
    ran |= target;
  }
  hwy::SetSupportedTargetsForTest(0);
  return ran;
}

inline const char* Name(DType t) { return DTypeName(t); }

}  // namespace kvstar::ops::testing
