// MatVec / MatMul kernels, compiled once per Highway target (see matmul.cc).
//
// Two kernel shapes:
// - Dot tiles (decode and small n): 4 weight rows x up to 4 rows of x, accumulating along the
//   shared `cols` dimension in vectors, reduced at the end. Weights are read straight from their
//   storage and promoted in registers; this is memory-bound, so the point is to read W once, and
//   each load prefetches the same place one tile further (short rows are too short a stream for
//   the hardware prefetchers).
// - Packed outer-product tiles (prefill): a panel of kNR weight rows x kKc columns is converted to
//   f32 once and stored transposed ([kKc][kNR]); then every group of kMR rows of x runs a register
//   tile of kMR x kNR accumulators (broadcast x, FMA with weight vectors): no horizontal
//   reductions, and the panel stays in L1/L2 while all rows of x stream past it.

#if defined(KVSTAR_OPS_CPU_MATMUL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef KVSTAR_OPS_CPU_MATMUL_INL_H_
#undef KVSTAR_OPS_CPU_MATMUL_INL_H_
#else
#define KVSTAR_OPS_CPU_MATMUL_INL_H_
#endif

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "base/check.h"
#include "base/tensor_view.h"
#include "base/thread_pool.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "ops/cpu/simd_common-inl.h"

HWY_BEFORE_NAMESPACE();
namespace kvstar::ops::HWY_NAMESPACE {

// ---------------------------------------------------------------------------------------------
// Dot tiles.

// Prefetches element `elems` of p into the caches. The address may lie past the array (the last
// tile prefetches beyond the matrix): it is formed as an integer, and a prefetch never faults.
template <typename T>
HWY_INLINE void PrefetchAhead(const T* p, size_t elems) {
  hwy::Prefetch(reinterpret_cast<const T*>(reinterpret_cast<uintptr_t>(p) + elems * sizeof(T)));
}

// y[i * y_stride + j] = dot(w row j, x row i) for i < kX, j < kW; rows of w are `cols` apart,
// rows of x are `x_stride` apart.
template <size_t kX, size_t kW, typename TW>
HWY_INLINE void DotTile(const TW* HWY_RESTRICT w, size_t cols, const float* HWY_RESTRICT x,
                        size_t x_stride, float* HWY_RESTRICT y, size_t y_stride) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF acc[kX][kW];
  for (size_t i = 0; i < kX; ++i) {
    for (size_t j = 0; j < kW; ++j) acc[i][j] = hn::Zero(df);
  }
  size_t k = 0;
  for (; k + N <= cols; k += N) {
    VF wv[kW];
    for (size_t j = 0; j < kW; ++j) {
      // The same place in the next tile's row j (the rows below these kW): every weight line is
      // requested one tile before it is read, whatever the row length.
      PrefetchAhead(w, (kW + j) * cols + k);
      wv[j] = LoadAsF32(df, w + j * cols + k);
    }
    for (size_t i = 0; i < kX; ++i) {
      const VF xv = hn::LoadU(df, x + i * x_stride + k);
      for (size_t j = 0; j < kW; ++j) acc[i][j] = hn::MulAdd(wv[j], xv, acc[i][j]);
    }
  }
  float sums[kX][kW];
  for (size_t i = 0; i < kX; ++i) {
    for (size_t j = 0; j < kW; ++j) sums[i][j] = ReduceSum(df, acc[i][j]);
  }
  for (; k < cols; ++k) {
    for (size_t j = 0; j < kW; ++j) {
      const float wk = ScalarAsF32(w[j * cols + k]);
      for (size_t i = 0; i < kX; ++i) sums[i][j] += wk * x[i * x_stride + k];
    }
  }
  for (size_t i = 0; i < kX; ++i) {
    for (size_t j = 0; j < kW; ++j) y[i * y_stride + j] = sums[i][j];
  }
}

// Weight rows [r0, r1) against kX rows of x.
template <size_t kX, typename TW>
HWY_INLINE void DotRows(const TW* HWY_RESTRICT w, size_t cols, size_t r0, size_t r1,
                        const float* HWY_RESTRICT x, float* HWY_RESTRICT y, size_t y_stride) {
  size_t r = r0;
  for (; r + 4 <= r1; r += 4) DotTile<kX, 4>(w + r * cols, cols, x, cols, y + r, y_stride);
  for (; r < r1; ++r) DotTile<kX, 1>(w + r * cols, cols, x, cols, y + r, y_stride);
}

// y[n][rows] for small n (n <= 4 per pass): W is read ceil(n / 4) times.
template <typename TW>
void DotMatMul(ThreadPool& pool, const TW* w, size_t rows, size_t cols, const float* x, size_t n,
               float* y) {
  // Enough rows per chunk that waking a thread pays off (~64K weights).
  const size_t min_chunk =
      RoundUpTo(std::max<size_t>(4, (size_t{1} << 16) / std::max<size_t>(cols, 1)), 4);
  pool.ParallelFor(
      rows,
      [&](size_t begin, size_t end, int) {
        for (size_t i0 = 0; i0 < n; i0 += 4) {
          const float* xi = x + i0 * cols;
          float* yi = y + i0 * rows;
          switch (std::min<size_t>(4, n - i0)) {
            case 1:
              DotRows<1>(w, cols, begin, end, xi, yi, rows);
              break;
            case 2:
              DotRows<2>(w, cols, begin, end, xi, yi, rows);
              break;
            case 3:
              DotRows<3>(w, cols, begin, end, xi, yi, rows);
              break;
            default:
              DotRows<4>(w, cols, begin, end, xi, yi, rows);
              break;
          }
        }
      },
      min_chunk);
}

// ---------------------------------------------------------------------------------------------
// Packed outer-product tiles.

// Accumulator tile: kMR rows of x by kNRV vectors of weight rows. AVX-512 has 32 registers
// (16 accumulators + 4 weight vectors + 1 broadcast); AVX2 and EMU128 have 16.
constexpr size_t kMR = 4;
#if HWY_TARGET <= HWY_AVX3
constexpr size_t kNRV = 4;
#else
constexpr size_t kNRV = 2;
#endif
// Columns per packed panel: the panel (kKc x kNR f32, 32 KiB with AVX-512) stays in L1/L2.
constexpr size_t kKc = 128;

// wt[k][r] = f32(W[r0 + r][k0 + k]) for r < nr, k < kc; rows r >= valid are zero.
template <typename TW>
HWY_INLINE void PackPanelTransposed(const TW* HWY_RESTRICT w, size_t cols, size_t r0, size_t valid,
                                    size_t nr, size_t k0, size_t kc, float* HWY_RESTRICT tmp,
                                    float* HWY_RESTRICT wt) {
  for (size_t r = 0; r < nr; ++r) {
    if (r < valid) {
      // Vector conversion of the contiguous row piece, then a strided scatter from L1.
      ConvertToF32(w + (r0 + r) * cols + k0, kc, tmp);
      for (size_t k = 0; k < kc; ++k) wt[k * nr + r] = tmp[k];
    } else {
      for (size_t k = 0; k < kc; ++k) wt[k * nr + r] = 0.0f;
    }
  }
}

// c[i][0, kNRV * N) (+)= sum_k xr[i][k] * wt[k][.] for i < kMR.
HWY_INLINE void OuterTile(const float* const* HWY_RESTRICT xr, const float* HWY_RESTRICT wt,
                          size_t kc, bool accumulate, float* HWY_RESTRICT c) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const size_t nr = kNRV * N;
  VF acc[kMR][kNRV];
  for (size_t i = 0; i < kMR; ++i) {
    for (size_t j = 0; j < kNRV; ++j) {
      acc[i][j] = accumulate ? hn::Load(df, c + i * nr + j * N) : hn::Zero(df);
    }
  }
  const float* x0 = xr[0];
  const float* x1 = xr[1];
  const float* x2 = xr[2];
  const float* x3 = xr[3];
  for (size_t k = 0; k < kc; ++k) {
    VF b[kNRV];
    for (size_t j = 0; j < kNRV; ++j) b[j] = hn::Load(df, wt + k * nr + j * N);
    const VF a0 = hn::Set(df, x0[k]);
    for (size_t j = 0; j < kNRV; ++j) acc[0][j] = hn::MulAdd(a0, b[j], acc[0][j]);
    const VF a1 = hn::Set(df, x1[k]);
    for (size_t j = 0; j < kNRV; ++j) acc[1][j] = hn::MulAdd(a1, b[j], acc[1][j]);
    const VF a2 = hn::Set(df, x2[k]);
    for (size_t j = 0; j < kNRV; ++j) acc[2][j] = hn::MulAdd(a2, b[j], acc[2][j]);
    const VF a3 = hn::Set(df, x3[k]);
    for (size_t j = 0; j < kNRV; ++j) acc[3][j] = hn::MulAdd(a3, b[j], acc[3][j]);
  }
  for (size_t i = 0; i < kMR; ++i) {
    for (size_t j = 0; j < kNRV; ++j) hn::Store(acc[i][j], df, c + i * nr + j * N);
  }
}
static_assert(kMR == 4, "OuterTile is written out for 4 rows of x");

template <typename TW>
void PackedMatMul(ThreadPool& pool, const TW* w, size_t rows, size_t cols, const float* x, size_t n,
                  float* y) {
  const DF df;
  const size_t nr = kNRV * hn::Lanes(df);
  const size_t panels = (rows + nr - 1) / nr;
  // Few panels (narrow weights such as K/V projections of small models): also split the rows
  // of x so that every thread has work; each piece packs its panel again. The split does not
  // change any sum, so results stay independent of the thread count.
  const size_t want_items = 2 * static_cast<size_t>(pool.parallelism());
  const size_t n_pieces = std::clamp<size_t>((want_items + panels - 1) / panels, 1, (n + 63) / 64);
  const size_t piece_rows = RoundUpTo((n + n_pieces - 1) / n_pieces, kMR);
  pool.ParallelFor(
      panels * n_pieces,
      [&](size_t begin, size_t end, int) {
        float* wt = ThreadScratch(0, kKc * nr);        // [kKc][nr]
        float* tmp = ThreadScratch(1, kKc);            // one converted row piece
        float* c = ThreadScratch(2, piece_rows * nr);  // [piece_rows][nr] partial sums
        for (size_t item = begin; item < end; ++item) {
          const size_t p = item / n_pieces;
          const size_t n0 = (item % n_pieces) * piece_rows;
          if (n0 >= n) continue;
          const size_t n1 = std::min(n, n0 + piece_rows);
          const size_t r0 = p * nr;
          const size_t valid = std::min(nr, rows - r0);
          for (size_t k0 = 0; k0 < cols; k0 += kKc) {
            const size_t kc = std::min(kKc, cols - k0);
            PackPanelTransposed(w, cols, r0, valid, nr, k0, kc, tmp, wt);
            for (size_t i0 = n0; i0 < n1; i0 += kMR) {
              // Rows past n1 repeat the last row; their sums land in the padding of c.
              const float* xr[kMR];
              for (size_t i = 0; i < kMR; ++i) xr[i] = x + std::min(i0 + i, n1 - 1) * cols + k0;
              OuterTile(xr, wt, kc, k0 > 0, c + (i0 - n0) * nr);
            }
          }
          for (size_t i = n0; i < n1; ++i) {
            std::copy(c + (i - n0) * nr, c + (i - n0) * nr + valid, y + i * rows + r0);
          }
        }
      },
      1);
}

// Below this many rows of x, packing costs more than it saves.
constexpr size_t kPackedMinRows = 8;

enum class MatMulKernel { kAuto, kDot, kPacked };

template <typename TW>
void MatMulTyped(ThreadPool& pool, MatMulKernel kernel, const TW* w, size_t rows, size_t cols,
                 const float* x, size_t n, float* y) {
  if (kernel == MatMulKernel::kAuto) {
    kernel = n < kPackedMinRows ? MatMulKernel::kDot : MatMulKernel::kPacked;
  }
  if (kernel == MatMulKernel::kDot) {
    DotMatMul(pool, w, rows, cols, x, n, y);
  } else {
    PackedMatMul(pool, w, rows, cols, x, n, y);
  }
}

HWY_INLINE void MatMulWith(ThreadPool& pool, MatMulKernel kernel, const TensorView& w,
                           const float* x, size_t n, float* y) {
  if (n == 0 || w.rows == 0) return;
  if (w.cols == 0) {
    std::fill(y, y + n * w.rows, 0.0f);
    return;
  }
  switch (w.dtype) {
    case DType::kF32:
      return MatMulTyped(pool, kernel, static_cast<const float*>(w.data), w.rows, w.cols, x, n, y);
    case DType::kBF16:
      return MatMulTyped(pool, kernel, static_cast<const BF16*>(w.data), w.rows, w.cols, x, n, y);
    case DType::kF16:
      return MatMulTyped(pool, kernel, static_cast<const F16*>(w.data), w.rows, w.cols, x, n, y);
  }
  KVSTAR_CHECK(false, "unknown weight dtype %d", static_cast<int>(w.dtype));
}

void MatMulImpl(ThreadPool& pool, const TensorView& w, const float* x, size_t n, float* y) {
  MatMulWith(pool, MatMulKernel::kAuto, w, x, n, y);
}
void MatVecImpl(ThreadPool& pool, const TensorView& w, const float* x, float* y) {
  MatMulWith(pool, MatMulKernel::kDot, w, x, 1, y);
}
void PackedMatMulImpl(ThreadPool& pool, const TensorView& w, const float* x, size_t n, float* y) {
  MatMulWith(pool, MatMulKernel::kPacked, w, x, n, y);
}
void DotMatMulImpl(ThreadPool& pool, const TensorView& w, const float* x, size_t n, float* y) {
  MatMulWith(pool, MatMulKernel::kDot, w, x, n, y);
}

}  // namespace kvstar::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // KVSTAR_OPS_CPU_MATMUL_INL_H_
