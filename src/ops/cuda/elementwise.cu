// Element-wise and row-wise ops, KV writes, greedy sampling and dtype conversion. All are
// memory-bound and small next to the matmuls and attention: simple grid-stride kernels.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "ops/cuda/cuda_util.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/ops.h"

namespace kvstar::cuda {
namespace {

using internal::AllowDependentGrid;
using internal::AsCuda;
using internal::CudaStatus;
using internal::FromF32;
using internal::GridFor;
using internal::LaunchDependent;
using internal::LaunchStatus;
using internal::LoadStream16;
using internal::ToF32;
using internal::WaitForPriorGrid;

constexpr unsigned kThreads = 256;

// Calls f.template operator()<T>() with T the device type of dtype.
template <typename F>
Status DispatchDType(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF32:
      return f.template operator()<float>();
    case DType::kBF16:
      return f.template operator()<__nv_bfloat16>();
    case DType::kF16:
      return f.template operator()<__half>();
  }
  return InvalidArgument("unknown dtype %d", static_cast<int>(dtype));
}

template <typename T>
__global__ void AddBiasKernel(const T* __restrict__ bias, size_t cols, size_t total,
                              float* __restrict__ y) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < total;
       i += size_t{gridDim.x} * blockDim.x) {
    y[i] += ToF32(bias[i % cols]);
  }
}

// add != nullptr: x += add first (the residual), each thread reading back only the elements it
// wrote, so the result equals Add then RmsNorm bit for bit.
template <typename T>
__global__ void RmsNormKernel(float* x, const float* add, const T* __restrict__ weight, size_t dim,
                              float eps, float* out) {
  AllowDependentGrid();
  WaitForPriorGrid();
  float* row = x + blockIdx.x * dim;
  float* dst = out + blockIdx.x * dim;
  float ss = 0.0f;
  if (add != nullptr) {
    const float* a = add + blockIdx.x * dim;
    for (size_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float v = row[i] + a[i];
      row[i] = v;
      ss = fmaf(v, v, ss);
    }
  } else {
    for (size_t i = threadIdx.x; i < dim; i += blockDim.x) ss = fmaf(row[i], row[i], ss);
  }
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  __shared__ float warp_sums[32];
  const unsigned warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) warp_sums[warp] = ss;
  __syncthreads();
  if (warp == 0) {
    ss = threadIdx.x < blockDim.x / 32 ? warp_sums[threadIdx.x] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if (threadIdx.x == 0) warp_sums[0] = ss;
  }
  __syncthreads();
  const float inv = 1.0f / sqrtf(warp_sums[0] / static_cast<float>(dim) + eps);
  for (size_t i = threadIdx.x; i < dim; i += blockDim.x) {
    dst[i] = row[i] * inv * ToF32(weight[i]);
  }
}

// Rotation of the pair (a, b) = (x[i], x[i + half]) at position p; every rotating kernel uses it,
// so that their results agree bit for bit. The angle is rounded to f32 before cos/sin, as
// transformers (and the CPU op) compute it.
__device__ __forceinline__ void RotatePair(int64_t p, float inv_freq, float& a, float& b) {
  const float angle = __fmul_rn(static_cast<float>(p), inv_freq);
  const float c = cosf(angle);
  const float s = sinf(angle);
  const float ra = a * c - b * s;
  const float rb = b * c + a * s;
  a = ra;
  b = rb;
}

__global__ void RopeKernel(const float* __restrict__ inv_freq, size_t head_dim,
                           const int64_t* __restrict__ pos, size_t heads, size_t total,
                           float* __restrict__ x) {
  const size_t half = head_dim / 2;
  for (size_t j = blockIdx.x * size_t{blockDim.x} + threadIdx.x; j < total;
       j += size_t{gridDim.x} * blockDim.x) {
    const size_t i = j % half;
    const size_t th = j / half;  // t * heads + h
    const size_t t = th / heads;
    float* x1 = x + th * head_dim;
    float a = x1[i];
    float b = x1[i + half];
    RotatePair(pos[t], inv_freq[i], a, b);
    x1[i] = a;
    x1[i + half] = b;
  }
}

__global__ void SwiGluKernel(const float* gate, const float* __restrict__ up, size_t count,
                             float* out) {
  AllowDependentGrid();
  WaitForPriorGrid();
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < count;
       i += size_t{gridDim.x} * blockDim.x) {
    out[i] = internal::SiluMul(gate[i], up[i]);
  }
}

// Every lane asks for one piece of one row (PrefetchL2): cp.async.bulk.prefetch on sm_90 (one
// instruction per piece), prefetch.global.L2 per 128-byte line before. Lets its dependent launch
// at once, and waits for the kernel before it only at the end.
__global__ void PrefetchL2Kernel(const char* p, size_t rows, size_t pitch, size_t row_bytes,
                                 size_t piece) {
  AllowDependentGrid();
  const size_t per_row = (row_bytes + piece - 1) / piece;
  const size_t lane = blockIdx.x * size_t{blockDim.x} + threadIdx.x;
  if (lane < rows * per_row) {
    const size_t off = lane % per_row * piece;
    const char* a = p + lane / per_row * pitch + off;
    const size_t size = min(piece, row_bytes - off);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(a),
                 "r"(static_cast<unsigned>(size))
                 : "memory");
#else
    for (size_t b = 0; b < size; b += 128) asm volatile("prefetch.global.L2 [%0];\n" ::"l"(a + b));
#endif
  }
  WaitForPriorGrid();
}

__global__ void AddKernel(const float* a, const float* b, size_t count, float* out) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < count;
       i += size_t{gridDim.x} * blockDim.x) {
    out[i] = a[i] + b[i];
  }
}

template <typename T>
__global__ void EmbedKernel(const T* __restrict__ table, size_t vocab, size_t cols,
                            const int32_t* __restrict__ tokens, size_t total,
                            float* __restrict__ out) {
  AllowDependentGrid();
  WaitForPriorGrid();
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < total;
       i += size_t{gridDim.x} * blockDim.x) {
    const int32_t id = tokens[i / cols];
    const size_t c = i % cols;
    out[i] = (id >= 0 && static_cast<size_t>(id) < vocab)
                 ? ToF32(table[static_cast<size_t>(id) * cols + c])
                 : __int_as_float(0x7fc00000);
  }
}

template <typename T>
__global__ void WriteKvKernel(void* const* __restrict__ blocks, size_t kv_heads, size_t head_dim,
                              size_t block_tokens, size_t first_token, size_t total,
                              const float* __restrict__ k, const float* __restrict__ v) {
  for (size_t j = blockIdx.x * size_t{blockDim.x} + threadIdx.x; j < total;
       j += size_t{gridDim.x} * blockDim.x) {
    // j indexes k/v as [i][h][d].
    const size_t d = j % head_dim;
    const size_t h = (j / head_dim) % kv_heads;
    const size_t i = j / (head_dim * kv_heads);
    const size_t t = first_token + i;
    T* block = static_cast<T*>(blocks[t / block_tokens]);
    const size_t row = t % block_tokens;
    block[((0 * kv_heads + h) * block_tokens + row) * head_dim + d] = FromF32<T>(k[j]);
    block[((1 * kv_heads + h) * block_tokens + row) * head_dim + d] = FromF32<T>(v[j]);
  }
}

// Decode: thread j covers the pair (d, d + half) of one head of one sequence; heads
// [0, q_heads) are q's, [q_heads, q_heads + kv_heads) k's (and v's). Rotation as RopeKernel
// (when kRope), then k and v go to row rows[i] of sequence i's table, as WriteKvKernel.
template <typename T, bool kRope>
__global__ void RopeWriteKvKernel(const float* __restrict__ inv_freq,
                                  const int64_t* __restrict__ pos, size_t q_heads,
                                  float* __restrict__ q, size_t kv_heads, size_t head_dim,
                                  size_t block_tokens, float* __restrict__ k,
                                  const float* __restrict__ v, void* const* __restrict__ blocks,
                                  size_t blocks_stride, const int64_t* __restrict__ rows,
                                  size_t total) {
  AllowDependentGrid();
  WaitForPriorGrid();
  const size_t half = head_dim / 2;
  const size_t heads = q_heads + kv_heads;
  for (size_t j = blockIdx.x * size_t{blockDim.x} + threadIdx.x; j < total;
       j += size_t{gridDim.x} * blockDim.x) {
    const size_t d = j % half;
    const size_t h = (j / half) % heads;
    const size_t i = j / (half * heads);
    const bool is_q = h < q_heads;
    float* x =
        is_q ? q + (i * q_heads + h) * head_dim : k + (i * kv_heads + (h - q_heads)) * head_dim;
    float a = x[d];
    float b = x[d + half];
    if constexpr (kRope) {
      RotatePair(pos[i], inv_freq[d], a, b);
      x[d] = a;
      x[d + half] = b;
    }
    if (is_q || blocks == nullptr) continue;
    const size_t kh = h - q_heads;
    const size_t t = static_cast<size_t>(rows[i]);
    T* block = static_cast<T*>(blocks[i * blocks_stride + t / block_tokens]);
    const size_t row = t % block_tokens;
    T* kd = block + ((0 * kv_heads + kh) * block_tokens + row) * head_dim;
    T* vd = block + ((1 * kv_heads + kh) * block_tokens + row) * head_dim;
    const float* vs = v + (i * kv_heads + kh) * head_dim;
    kd[d] = FromF32<T>(a);
    kd[d + half] = FromF32<T>(b);
    vd[d] = FromF32<T>(vs[d]);
    vd[d + half] = FromF32<T>(vs[d + half]);
  }
}

// One block per row; (value, id) pairs reduced with "larger value, then lower id" wins.
__device__ __forceinline__ void ArgmaxPick(float& v, int32_t& id, float ov, int32_t oid) {
  if (ov > v || (ov == v && oid != -1 && (id == -1 || oid < id))) {
    v = ov;
    id = oid;
  }
}

__global__ void ArgmaxKernel(const float* __restrict__ logits, size_t vocab,
                             int32_t* __restrict__ ids) {
  AllowDependentGrid();
  WaitForPriorGrid();
  const float* row = logits + blockIdx.x * vocab;
  float best = -INFINITY;
  int32_t best_id = -1;
  for (size_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float x = row[i];
    // Strictly greater keeps the lowest id of this thread's ascending ids on ties.
    if (isfinite(x) && (best_id == -1 || x > best)) {
      best = x;
      best_id = static_cast<int32_t>(i);
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int32_t oid = __shfl_xor_sync(0xffffffffu, best_id, o);
    ArgmaxPick(best, best_id, ov, oid);
  }
  __shared__ float vals[32];
  __shared__ int32_t idx[32];
  const unsigned warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) {
    vals[warp] = best;
    idx[warp] = best_id;
  }
  __syncthreads();
  if (warp == 0) {
    best = -INFINITY;
    best_id = -1;
    if (threadIdx.x < blockDim.x / 32) {
      best = vals[threadIdx.x];
      best_id = idx[threadIdx.x];
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int32_t oid = __shfl_xor_sync(0xffffffffu, best_id, o);
      ArgmaxPick(best, best_id, ov, oid);
    }
    if (threadIdx.x == 0) ids[blockIdx.x] = best_id;
  }
}

template <typename T>
__global__ void ConvertKernel(const float* __restrict__ src, size_t count, T* __restrict__ dst) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < count;
       i += size_t{gridDim.x} * blockDim.x) {
    dst[i] = FromF32<T>(src[i]);
  }
}

template <typename T>
__global__ void FillRandomKernel(T* __restrict__ dst, size_t count, float scale, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < count;
       i += size_t{gridDim.x} * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 0x9e3779b1u ^ seed ^ static_cast<uint32_t>(i >> 32);
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    // (h + 0.5) / 2^32 is never 0 or 1, so the value is never zero.
    const float u = (static_cast<float>(h >> 8) + 0.5f) * (1.0f / 16777216.0f);
    dst[i] = FromF32<T>((2.0f * u - 1.0f) * scale);
  }
}

// 16 B of weights as floats (8 bf16 / f16 or 4 f32) times the matching x values, added to acc.
__device__ __forceinline__ float Dot16(const float* w, const float* x, float acc) {
  const float4 a = *reinterpret_cast<const float4*>(w);
  const float4 b = __ldg(reinterpret_cast<const float4*>(x));
  return fmaf(a.w, b.w, fmaf(a.z, b.z, fmaf(a.y, b.y, fmaf(a.x, b.x, acc))));
}
template <typename T>
__device__ __forceinline__ float Dot16(const T* w, const float* x, float acc) {
  const uint4 u = *reinterpret_cast<const uint4*>(w);
  const T* h = reinterpret_cast<const T*>(&u);
  const float4 b0 = __ldg(reinterpret_cast<const float4*>(x));
  const float4 b1 = __ldg(reinterpret_cast<const float4*>(x + 4));
  acc = fmaf(ToF32(h[0]), b0.x, acc);
  acc = fmaf(ToF32(h[1]), b0.y, acc);
  acc = fmaf(ToF32(h[2]), b0.z, acc);
  acc = fmaf(ToF32(h[3]), b0.w, acc);
  acc = fmaf(ToF32(h[4]), b1.x, acc);
  acc = fmaf(ToF32(h[5]), b1.y, acc);
  acc = fmaf(ToF32(h[6]), b1.z, acc);
  return fmaf(ToF32(h[7]), b1.w, acc);
}

constexpr int kMatVecWarps = 8;

// One warp per row; 16 B loads, four in flight per lane (independent accumulators), when rows
// and x are 16 B aligned; a scalar loop otherwise.
template <typename T>
__global__ void __launch_bounds__(kMatVecWarps * 32)
    MatVecKernel(const T* __restrict__ w, size_t rows, size_t cols, const float* __restrict__ x,
                 float* __restrict__ y, bool vector) {
  const size_t row = blockIdx.x * size_t{kMatVecWarps} + threadIdx.x / 32;
  const unsigned lane = threadIdx.x % 32;
  if (row >= rows) return;
  const T* wr = w + row * cols;
  constexpr size_t kE = 16 / sizeof(T);  // elements per 16 B
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  size_t c = 0;
  if (vector) {
    for (c = lane * kE; c + 3 * 32 * kE < cols; c += 4 * 32 * kE) {
#pragma unroll
      for (int u = 0; u < 4; ++u) acc[u] = Dot16(wr + c + u * 32 * kE, x + c + u * 32 * kE, acc[u]);
    }
    for (; c < cols; c += 32 * kE) acc[0] = Dot16(wr + c, x + c, acc[0]);
  } else {
    for (c = lane; c < cols; c += 32) acc[0] = fmaf(ToF32(wr[c]), x[c], acc[0]);
  }
  float sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (lane == 0) y[row] = sum;
}

// Streams `chunks` 16 B pieces (16 B aligned) through registers with kU independent loads in
// flight per thread, grid-stride; the XOR of what was read lands in sink only when it equals a
// value random data never gives, so the loads stay and nothing is written.
template <int kU>
__global__ void ReadStreamKernel(const uint4* __restrict__ src, size_t chunks, unsigned* sink) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned acc = 0;
  for (; i + (kU - 1) * stride < chunks; i += kU * stride) {
    uint4 v[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) v[u] = LoadStream16(src + i + u * stride);
#pragma unroll
    for (int u = 0; u < kU; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < chunks; i += stride) {
    const uint4 v = LoadStream16(src + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

}  // namespace

namespace internal {

cudaError_t LaunchReadStream(const void* src, size_t bytes, int threads, int loads_in_flight,
                             int ctas_per_sm, int sm_count, unsigned* sink, cudaStream_t stream) {
  const size_t chunks = bytes / 16;
  if (chunks == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(std::max(1, ctas_per_sm * sm_count));
  const auto* p = static_cast<const uint4*>(src);
  switch (loads_in_flight) {
    case 2:
      ReadStreamKernel<2><<<grid, threads, 0, stream>>>(p, chunks, sink);
      break;
    case 4:
      ReadStreamKernel<4><<<grid, threads, 0, stream>>>(p, chunks, sink);
      break;
    case 8:
      ReadStreamKernel<8><<<grid, threads, 0, stream>>>(p, chunks, sink);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t LaunchMatVec(const void* w, DType dtype, size_t rows, size_t cols, const float* x,
                         float* y, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const size_t e = 16 / DTypeSize(dtype);
  const bool vector = cols % e == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0 &&
                      reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const unsigned grid = static_cast<unsigned>((rows + kMatVecWarps - 1) / kMatVecWarps);
  switch (dtype) {
    case DType::kF32:
      MatVecKernel<<<grid, kMatVecWarps * 32, 0, stream>>>(static_cast<const float*>(w), rows, cols,
                                                           x, y, vector);
      break;
    case DType::kBF16:
      MatVecKernel<<<grid, kMatVecWarps * 32, 0, stream>>>(static_cast<const __nv_bfloat16*>(w),
                                                           rows, cols, x, y, vector);
      break;
    case DType::kF16:
      MatVecKernel<<<grid, kMatVecWarps * 32, 0, stream>>>(static_cast<const __half*>(w), rows,
                                                           cols, x, y, vector);
      break;
  }
  return cudaGetLastError();
}

cudaError_t LaunchConvertF32(const float* src, size_t count, DType dtype, void* dst,
                             cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const unsigned grid = GridFor(count, kThreads);
  if (dtype == DType::kBF16) {
    ConvertKernel<<<grid, kThreads, 0, stream>>>(src, count, static_cast<__nv_bfloat16*>(dst));
  } else if (dtype == DType::kF16) {
    ConvertKernel<<<grid, kThreads, 0, stream>>>(src, count, static_cast<__half*>(dst));
  } else {
    return cudaMemcpyAsync(dst, src, count * sizeof(float), cudaMemcpyDeviceToDevice, stream);
  }
  return cudaGetLastError();
}

cudaError_t LaunchFillRandom(void* dst, size_t count, DType dtype, float scale, uint32_t seed,
                             cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const unsigned grid = GridFor(count, kThreads);
  switch (dtype) {
    case DType::kF32:
      FillRandomKernel<<<grid, kThreads, 0, stream>>>(static_cast<float*>(dst), count, scale, seed);
      break;
    case DType::kBF16:
      FillRandomKernel<<<grid, kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(dst), count,
                                                      scale, seed);
      break;
    case DType::kF16:
      FillRandomKernel<<<grid, kThreads, 0, stream>>>(static_cast<__half*>(dst), count, scale,
                                                      seed);
      break;
  }
  return cudaGetLastError();
}

}  // namespace internal

Status FillRandom(CudaStream* stream, void* dst, size_t count, DType dtype, float scale,
                  uint32_t seed) {
  return internal::CudaStatus(
      internal::LaunchFillRandom(dst, count, dtype, scale, seed, AsCuda(stream)), "FillRandom");
}

Status AddBias(CudaStream* stream, const TensorView& bias, size_t n, float* y) {
  if (bias.rows != 1) {
    return InvalidArgument("bias must be one row, got %zu x %zu", bias.rows, bias.cols);
  }
  const size_t total = n * bias.cols;
  if (total == 0) return Status::Ok();
  return DispatchDType(bias.dtype, [&]<typename T>() {
    AddBiasKernel<T><<<GridFor(total, kThreads), kThreads, 0, AsCuda(stream)>>>(
        static_cast<const T*>(bias.data), bias.cols, total, y);
    return LaunchStatus("AddBiasKernel");
  });
}

namespace {

// RmsNorm and AddRmsNorm: add == nullptr leaves x unwritten.
Status LaunchRmsNorm(CudaStream* stream, float* x, const float* add, const TensorView& weight,
                     size_t n, size_t dim, float eps, float* out) {
  if (weight.elements() != dim) {
    return InvalidArgument("norm weight has %zu elements, dim is %zu", weight.elements(), dim);
  }
  if (n == 0 || dim == 0) return Status::Ok();
  if (n > 0x7fffffff) return InvalidArgument("RmsNorm: %zu rows", n);
  return DispatchDType(weight.dtype, [&]<typename T>() {
    return CudaStatus(
        LaunchDependent(RmsNormKernel<T>, static_cast<unsigned>(n), 256, 0, AsCuda(stream), x, add,
                        static_cast<const T*>(weight.data), dim, eps, out),
        "RmsNormKernel");
  });
}

}  // namespace

Status RmsNorm(CudaStream* stream, const float* x, const TensorView& weight, size_t n, size_t dim,
               float eps, float* out) {
  return LaunchRmsNorm(stream, const_cast<float*>(x), nullptr, weight, n, dim, eps, out);
}

Status AddRmsNorm(CudaStream* stream, float* x, const float* add, const TensorView& weight,
                  size_t n, size_t dim, float eps, float* out) {
  if (add == nullptr) return InvalidArgument("AddRmsNorm: no residual to add");
  return LaunchRmsNorm(stream, x, add, weight, n, dim, eps, out);
}

Status ApplyRope(CudaStream* stream, const float* inv_freq, size_t head_dim, const int64_t* pos,
                 size_t n, size_t heads, float* x) {
  if (head_dim % 2 != 0) return InvalidArgument("rotary head_dim must be even, got %zu", head_dim);
  const size_t total = n * heads * (head_dim / 2);
  if (total == 0) return Status::Ok();
  RopeKernel<<<GridFor(total, kThreads), kThreads, 0, AsCuda(stream)>>>(inv_freq, head_dim, pos,
                                                                        heads, total, x);
  return LaunchStatus("RopeKernel");
}

Status SwiGlu(CudaStream* stream, const float* gate, const float* up, size_t count, float* out) {
  if (count == 0) return Status::Ok();
  return CudaStatus(LaunchDependent(SwiGluKernel, GridFor(count, kThreads), kThreads, 0,
                                    AsCuda(stream), gate, up, count, out),
                    "SwiGluKernel");
}

Status PrefetchL2(CudaStream* stream, const void* p, size_t rows, size_t pitch,
                  size_t bytes_per_row) {
  // Whole 16-byte units (the bulk prefetch's granule), in pieces of at most 64 KiB, one per lane
  // of CTAs of one warp: small CTAs that fit beside the draining kernel's.
  constexpr unsigned kLanes = 32;
  constexpr size_t kMaxPiece = 65536;
  bytes_per_row = bytes_per_row / 16 * 16;
  if (rows == 0 || bytes_per_row == 0 || p == nullptr) return Status::Ok();
#if !defined(KVSTAR_CUDA_PDL) || !KVSTAR_CUDA_PDL
  const bool dependent = false;
#else
  const bool dependent = DependentLaunches();
#endif
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0 || pitch % 16 != 0 || bytes_per_row > pitch) {
    return InvalidArgument(
        "PrefetchL2: %p, pitch %zu and %zu bytes per row (16-byte aligned, at "
        "most the pitch)",
        p, pitch, bytes_per_row);
  }
  const size_t piece = std::min(bytes_per_row, kMaxPiece);
  const size_t lanes = rows * ((bytes_per_row + piece - 1) / piece);
  const size_t ctas = (lanes + kLanes - 1) / kLanes;
  if (ctas > 0x7fffffff) return InvalidArgument("PrefetchL2: %zu rows", rows);
  // Launched after the kernel before it has completed, it would only add a launch between two.
  if (!dependent) return Status::Ok();
  return CudaStatus(
      LaunchDependent(PrefetchL2Kernel, static_cast<unsigned>(ctas), kLanes, 0, AsCuda(stream),
                      static_cast<const char*>(p), rows, pitch, bytes_per_row, piece),
      "PrefetchL2Kernel");
}

Status Add(CudaStream* stream, const float* a, const float* b, size_t count, float* out) {
  if (count == 0) return Status::Ok();
  AddKernel<<<GridFor(count, kThreads), kThreads, 0, AsCuda(stream)>>>(a, b, count, out);
  return LaunchStatus("AddKernel");
}

Status Embed(CudaStream* stream, const TensorView& table, const int32_t* tokens, size_t n,
             float* out) {
  const size_t total = n * table.cols;
  if (total == 0) return Status::Ok();
  return DispatchDType(table.dtype, [&]<typename T>() {
    return CudaStatus(LaunchDependent(EmbedKernel<T>, GridFor(total, kThreads), kThreads, 0,
                                      AsCuda(stream), static_cast<const T*>(table.data), table.rows,
                                      table.cols, tokens, total, out),
                      "EmbedKernel");
  });
}

Status CheckTokenIds(const int32_t* host_tokens, size_t n, size_t vocab) {
  for (size_t t = 0; t < n; ++t) {
    if (host_tokens[t] < 0 || static_cast<size_t>(host_tokens[t]) >= vocab) {
      return InvalidArgument("token id %d at position %zu is outside the vocabulary [0, %zu)",
                             host_tokens[t], t, vocab);
    }
  }
  return Status::Ok();
}

Status WriteKv(CudaStream* stream, const KvGeometry& geom, void* const* blocks, size_t first_token,
               size_t n, const float* k, const float* v) {
  if (geom.block_tokens == 0 || geom.head_dim == 0 || geom.kv_heads == 0) {
    return InvalidArgument("WriteKv: kv_heads=%zu head_dim=%zu block_tokens=%zu", geom.kv_heads,
                           geom.head_dim, geom.block_tokens);
  }
  const size_t total = n * geom.kv_heads * geom.head_dim;
  if (total == 0) return Status::Ok();
  return DispatchDType(geom.dtype, [&]<typename T>() {
    WriteKvKernel<T><<<GridFor(total, kThreads), kThreads, 0, AsCuda(stream)>>>(
        blocks, geom.kv_heads, geom.head_dim, geom.block_tokens, first_token, total, k, v);
    return LaunchStatus("WriteKvKernel");
  });
}

Status RopeWriteKv(CudaStream* stream, const KvGeometry& geom, const float* inv_freq,
                   const int64_t* pos, size_t q_heads, float* q, size_t n, float* k, const float* v,
                   void* const* blocks, size_t blocks_stride, const int64_t* rows) {
  if (geom.block_tokens == 0 || geom.head_dim == 0 || geom.kv_heads == 0 ||
      geom.head_dim % 2 != 0) {
    return InvalidArgument("RopeWriteKv: kv_heads=%zu head_dim=%zu (even) block_tokens=%zu",
                           geom.kv_heads, geom.head_dim, geom.block_tokens);
  }
  if (blocks != nullptr && n > 1 && blocks_stride == 0) {
    return InvalidArgument("RopeWriteKv: %zu sequences need a table stride", n);
  }
  const bool rope = inv_freq != nullptr;
  if (!rope && blocks == nullptr) return Status::Ok();
  if (!rope) q_heads = 0;
  const size_t total = n * (q_heads + geom.kv_heads) * (geom.head_dim / 2);
  if (total == 0) return Status::Ok();
  return DispatchDType(geom.dtype, [&]<typename T>() {
    const auto kernel = rope ? RopeWriteKvKernel<T, true> : RopeWriteKvKernel<T, false>;
    return CudaStatus(LaunchDependent(kernel, GridFor(total, kThreads), kThreads, 0, AsCuda(stream),
                                      inv_freq, pos, q_heads, q, geom.kv_heads, geom.head_dim,
                                      geom.block_tokens, k, v, blocks, blocks_stride, rows, total),
                      "RopeWriteKvKernel");
  });
}

Status ArgmaxSample(CudaStream* stream, const float* logits, size_t n, size_t vocab, int32_t* ids) {
  if (n == 0) return Status::Ok();
  if (vocab == 0 || vocab > 0x7fffffff || n > 0x7fffffff) {
    return InvalidArgument("ArgmaxSample: n=%zu vocab=%zu", n, vocab);
  }
  return CudaStatus(LaunchDependent(ArgmaxKernel, static_cast<unsigned>(n), 1024, 0, AsCuda(stream),
                                    logits, vocab, ids),
                    "ArgmaxKernel");
}

}  // namespace kvstar::cuda
