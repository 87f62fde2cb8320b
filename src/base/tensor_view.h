// TensorView: a non-owning view of a row-major 2-D array kept in its stored dtype (weights stay
// bf16/f16/f32 as loaded; kernels convert on the fly and accumulate in f32).
#pragma once

#include <cstddef>

#include "base/half.h"

namespace kvstar {

struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  size_t rows = 0;  // 1 for vectors (norm weights, biases)
  size_t cols = 0;

  size_t elements() const { return rows * cols; }
  size_t bytes() const { return elements() * DTypeSize(dtype); }
  const void* row(size_t r) const {
    return static_cast<const char*>(data) + r * cols * DTypeSize(dtype);
  }
  bool empty() const { return data == nullptr; }
};

}  // namespace kvstar
