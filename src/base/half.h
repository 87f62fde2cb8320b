// 16-bit float types and scalar conversions. SIMD paths convert with Highway
// (PromoteTo / DemoteTo); these scalar versions are the reference and the fallback.
#pragma once

#include <cstdint>
#include <cstring>

namespace kvstar {

enum class DType : uint8_t { kF32 = 0, kBF16 = 1, kF16 = 2 };

inline constexpr size_t DTypeSize(DType t) { return t == DType::kF32 ? 4 : 2; }
inline constexpr const char* DTypeName(DType t) {
  return t == DType::kF32 ? "f32" : (t == DType::kBF16 ? "bf16" : "f16");
}

struct bf16_t {
  uint16_t bits;
};
struct f16_t {
  uint16_t bits;
};
static_assert(sizeof(bf16_t) == 2 && sizeof(f16_t) == 2);

inline float BF16ToF32(bf16_t v) {
  const uint32_t u = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline bf16_t F32ToBF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{static_cast<uint16_t>((u >> 16) | 0x40)};
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{static_cast<uint16_t>((u + rounding) >> 16)};
}

inline float F16ToF32(f16_t v) {
  const uint32_t h = v.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      u = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, overflow to Inf, NaN preserved.
inline f16_t F32ToF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return f16_t{static_cast<uint16_t>(sign | 0x7e00u)};
  if (absu >= 0x477ff000u) return f16_t{static_cast<uint16_t>(sign | 0x7c00u)};  // >= 65520
  if (absu < 0x38800000u) {  // below 2^-14: f16 subnormal or zero
    if (absu < 0x33000000u) return f16_t{static_cast<uint16_t>(sign)};  // below 2^-25
    // value = mant * 2^(exp-150); in units of the f16 subnormal step 2^-24 that is
    // mant >> (126 - exp), rounded to nearest even. A carry into 0x400 gives the smallest normal.
    const uint32_t exp = absu >> 23;
    const uint32_t mant = (absu & 0x7fffffu) | 0x800000u;
    const uint32_t s = 126 - exp;  // 14..24
    const uint32_t q = mant >> s;
    const uint32_t rem = mant & ((1u << s) - 1);
    const uint32_t halfway = 1u << (s - 1);
    const uint32_t r = q + ((rem > halfway || (rem == halfway && (q & 1u))) ? 1u : 0u);
    return f16_t{static_cast<uint16_t>(sign | r)};
  }
  const uint32_t rounded = absu + 0x0fffu + ((absu >> 13) & 1u);
  return f16_t{static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13))};
}

}  // namespace kvstar
