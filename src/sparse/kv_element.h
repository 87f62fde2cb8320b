// Scalar element access to KV blocks of any dtype (internal to src/sparse).
#pragma once

#include <cstddef>

#include "base/half.h"

namespace kvstar::sparse::internal {

inline float LoadAsF32(const void* base, DType dtype, size_t index) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(base)[index];
    case DType::kBF16:
      return BF16ToF32(static_cast<const bf16_t*>(base)[index]);
    case DType::kF16:
      return F16ToF32(static_cast<const f16_t*>(base)[index]);
  }
  return 0.0f;
}

}  // namespace kvstar::sparse::internal
