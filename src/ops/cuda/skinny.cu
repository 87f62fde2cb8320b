// Skinny matrix products on the tensor cores: y_i[n][rows_i] = x[n][cols] . W_i^T for n <= 16
// activation rows (batched decode) and up to kMaxSkinnyOutputs bf16 matrices that share x (q / k /
// v, gate / up), in one launch.
//
// Decode reads every weight once per step, so these products are bound by HBM bandwidth; cuBLAS
// at n = 2..16 reaches 0.42-0.92 of it on Llama-3-8B shapes (0.70 over one layer; H100,
// docs/BENCHMARKS.md), and needs x rounded to bf16 first (a second launch and ~1e-3 error). Here:
//  - a CTA owns 32 consecutive rows of one matrix (16 or 64 for some shapes at n > 8); its 8
//    warps split the columns in k-steps of 32 (warp w takes steps w, w + 8, ...), so that the CTA
//    streams 512 contiguous bytes of each row per round;
//  - a lane loads 16 B (8 bf16) of rows g and g + 8 of each 16-row m-tile (g = lane / 4) straight
//    into registers: those 8 columns are the lane's k-slots of two m16n8k16 MMAs (the product
//    sums over k, so any assignment of columns to k-slots works when A and B use the same one),
//    and the 16 B need no shuffling;
//  - lane (g, t) reads the same 8 columns of activation row g (f32, from L2) and splits them into
//    three bf16 terms (hi + mid + lo = x to f32 precision), so the result matches f32 arithmetic
//    (the CPU op) up to summation order;
//  - the warps' partial sums are added in a fixed order through shared memory: results are
//    deterministic and do not depend on n (a sequence's logits are the same alone or in a batch).
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "ops/cuda/kernels.h"

namespace kvstar::cuda::internal {
namespace {

// Whether every image built has thread-block clusters (sm_90; the condition of the dependent
// launches, src/ops/cuda/CMakeLists.txt).
#if defined(KVSTAR_CUDA_PDL) && KVSTAR_CUDA_PDL
constexpr bool kClusters = true;
#else
constexpr bool kClusters = false;
#endif
constexpr int kSkWarps = 8;
constexpr int kSkThreads = kSkWarps * 32;
constexpr int kSkDefaultMTiles = 2;  // 16-row MMA tiles per CTA (every warp covers all)
constexpr int kSkStepCols = 32;      // columns per k-step of one warp (4 lanes x 8)

struct SkinnyParams {
  const __nv_bfloat16* w[kMaxSkinnyOutputs];
  float* y[kMaxSkinnyOutputs];
  unsigned rows[kMaxSkinnyOutputs];
  unsigned cta_begin[kMaxSkinnyOutputs];  // first CTA of each matrix
  int count;
  unsigned cols;
  unsigned n;
  const float* x;
};

// Eight f32 activations of one lane as the B fragments of two k16 MMAs, three bf16 terms each:
// b[j][term][0 / 1] for k-chunk j.
__device__ __forceinline__ void SplitEight(const float (&v)[8], uint32_t (&b)[2][3][2]) {
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    SplitPair(v[4 * j], v[4 * j + 1], b[j][0][0], b[j][1][0], b[j][2][0]);
    SplitPair(v[4 * j + 2], v[4 * j + 3], b[j][0][1], b[j][1][1], b[j][2][1]);
  }
}

// 16 B loads of a lane per k-round (kSkUnroll k-steps x m-tiles x 2 rows): 8 at every m-tile
// count.
constexpr int kSkLoads = 8;

// Dynamic shared memory of the STAGES-deep pipeline: each warp's ring of STAGES rounds (the
// partial sums reuse it at the end).
constexpr size_t SkinnyPipelineSmem(int stages) {
  return size_t(stages) * kSkWarps * kSkLoads * 32 * sizeof(uint4);
}

// NT: n-tiles of 8 activation rows, 1 (n <= 8) or 2 (n <= 16). MT: 16-row m-tiles per CTA; each
// lane reads 8 pieces of 16 B a round (MT x 2 rows x kUnroll k-steps). GLU (MT even): the CTA's
// first MT / 2 m-tiles are rows of matrix 0 (gate), the others the same rows of matrix 1 (up), and
// it writes SiluMul(gate, up) to y_0 only (SwiGLU without its own launch; each sum is the one the
// plain kernel makes, so the same bits as the products then SwiGlu).
// STAGES 0: a round's weights are loaded into registers at the top of the round (8 loads in
// flight per lane, then none while the round computes). STAGES 1: the same, with the next round's
// loads issued before the round computes (a second register set). STAGES >= 2: cp.async copies them
// into the warp's own ring in shared memory, STAGES - 1 rounds ahead of the round that computes (up
// to 8 (STAGES - 1) loads in flight per lane at all times); a lane reads back only the pieces it
// copied itself, so no barrier is needed. The same sums in the same order either way.
// KS 2 (sm_90 clusters): the two CTAs of a cluster take the same rows and each half of the
// k-steps; the second hands its sums to the first through distributed shared memory and the
// first adds them after its own (a fixed order, whatever n: still independent of n; with GLU,
// SiluMul of the two added sums, as the split products then SwiGlu). Twice the CTAs for matrices
// that would otherwise leave SMs with one CTA (8 warps) to stream.
template <int NT, int MT, bool GLU, int STAGES, int KS>
__global__ void __launch_bounds__(kSkThreads, 2) SkinnyMatMulKernel(const SkinnyParams p) {
  static_assert(KS == 1 || KS == 2, "a k-split pairs two CTAs");
  constexpr int kSkMTiles = MT;
  constexpr int kSkUnroll = 4 / MT;
  static_assert(kSkUnroll * MT * 2 == kSkLoads, "8 pieces per lane and round");
  const __nv_bfloat16* w = p.w[0];
  float* y = p.y[0];
  unsigned rows = p.rows[0];
  const unsigned cta = blockIdx.x / KS;  // row tile over every matrix of the launch
  const unsigned part = blockIdx.x % KS;
  unsigned tile = cta;
#pragma unroll
  for (int i = 1; i < kMaxSkinnyOutputs; ++i) {
    if (i < p.count && cta >= p.cta_begin[i]) {
      w = p.w[i];
      y = p.y[i];
      rows = p.rows[i];
      tile = cta - p.cta_begin[i];
    }
  }
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int t = lane % 4;
  const unsigned cols = p.cols;
  static_assert(!GLU || MT % 2 == 0, "GLU pairs m-tiles of gate and up");
  constexpr int kOwnTiles = GLU ? MT / 2 : MT;  // m-tiles of the CTA's own rows
  const unsigned row0 = tile * (16 * kOwnTiles);

  // Rows g and g + 8 of each m-tile; rows past the end read the last row (discarded at the end).
  const __nv_bfloat16* wrow[kSkMTiles][2];
#pragma unroll
  for (int mt = 0; mt < kSkMTiles; ++mt) {
    const __nv_bfloat16* wm = GLU && mt >= kOwnTiles ? p.w[1] : w;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const unsigned r = min(row0 + (mt % kOwnTiles) * 16 + g + h * 8, rows - 1);
      wrow[mt][h] = wm + size_t{r} * cols + t * 8;
    }
  }
  const float* xrow[NT];
  bool xvalid[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const unsigned v = nt * 8 + g;
    xvalid[nt] = v < p.n;
    xrow[nt] = p.x + size_t{xvalid[nt] ? v : 0} * cols + t * 8;
  }

  float acc[kSkMTiles][NT][4] = {};
  const unsigned steps = (cols + kSkStepCols - 1) / kSkStepCols;
  // This CTA's k-steps [s_begin, s_end): all of them, or its part's half.
  const unsigned s_begin = static_cast<unsigned>(uint64_t{steps} * part / KS);
  const unsigned s_end = static_cast<unsigned>(uint64_t{steps} * (part + 1) / KS);
  constexpr unsigned kRoundSteps = kSkWarps * kSkUnroll;  // k-steps of one round of the CTA
  uint4 wv[kSkUnroll][kSkMTiles][2];

  // x of one round (the warp's k-steps s0, s0 + 8, ...), from L2; mma then multiplies it, as three
  // bf16 terms, with the round's weights in wv.
  auto load_x = [&](unsigned s0, float(&xv)[kSkUnroll][NT][8]) {
#pragma unroll
    for (int u = 0; u < kSkUnroll; ++u) {
      const unsigned c = (s0 + u * kSkWarps) * kSkStepCols;
      const bool in = s0 + u * kSkWarps < s_end && c + t * 8 < cols;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a;
        if (in && xvalid[nt]) {
          a = __ldg(reinterpret_cast<const float4*>(xrow[nt] + c));
          b = __ldg(reinterpret_cast<const float4*>(xrow[nt] + c + 4));
        }
        xv[u][nt][0] = a.x;
        xv[u][nt][1] = a.y;
        xv[u][nt][2] = a.z;
        xv[u][nt][3] = a.w;
        xv[u][nt][4] = b.x;
        xv[u][nt][5] = b.y;
        xv[u][nt][6] = b.z;
        xv[u][nt][7] = b.w;
      }
    }
  };
  auto mma = [&](const float(&xv)[kSkUnroll][NT][8]) {
#pragma unroll
    for (int u = 0; u < kSkUnroll; ++u) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        uint32_t b[2][3][2];
        SplitEight(xv[u][nt], b);
#pragma unroll
        for (int mt = 0; mt < kSkMTiles; ++mt) {
          const uint4& lo = wv[u][mt][0];                   // row g
          const uint4& hi = wv[u][mt][1];                   // row g + 8
          const uint32_t a0[4] = {lo.x, hi.x, lo.y, hi.y};  // columns 0-3 of the lane's 8
          const uint32_t a1[4] = {lo.z, hi.z, lo.w, hi.w};  // columns 4-7
#pragma unroll
          for (int term = 0; term < 3; ++term) {
            Mma16816(acc[mt][nt], a0, b[0][term][0], b[0][term][1]);
            Mma16816(acc[mt][nt], a1, b[1][term][0], b[1][term][1]);
          }
        }
      }
    }
  };

  constexpr int kPerLane = kSkMTiles * NT * 4;
  float* red;  // [kSkWarps][kPerLane][32]: the warps' partial sums
  if constexpr (STAGES <= 1) {
    __shared__ float red_static[kSkWarps * kPerLane * 32];
    red = red_static;
    // The weights of k-steps s0, s0 + 8, ... (zero past the last column).
    auto load_weights = [&](unsigned s0, uint4(&dst)[kSkUnroll][kSkMTiles][2]) {
#pragma unroll
      for (int u = 0; u < kSkUnroll; ++u) {
        const unsigned c = (s0 + u * kSkWarps) * kSkStepCols;  // + t * 8 in the row pointers
        // cols % 8 == 0: a lane's 8 columns are in or out.
        const bool in = s0 + u * kSkWarps < s_end && c + t * 8 < cols;
#pragma unroll
        for (int mt = 0; mt < kSkMTiles; ++mt) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            dst[u][mt][h] = in ? LoadStream16(wrow[mt][h] + c) : make_uint4(0, 0, 0, 0);
          }
        }
      }
    };
    // Launched as a programmatic dependent: the first weights are read (they are not written by
    // any kernel of the step) while the kernel before this one drains; x only after it completed.
    const unsigned first = s_begin + warp;
    AllowDependentGrid();
    load_weights(first, wv);
    WaitForPriorGrid();
    if constexpr (STAGES == 0) {
      for (unsigned s0 = first; s0 < s_end; s0 += kRoundSteps) {
        if (s0 != first) load_weights(s0, wv);
        float xv[kSkUnroll][NT][8];
        load_x(s0, xv);
        mma(xv);
      }
    } else {
      // The next round's weights are requested before this round computes: loads in flight
      // while the MMAs run, at the cost of a second set of registers.
      for (unsigned s0 = first; s0 < s_end; s0 += kRoundSteps) {
        uint4 wn[kSkUnroll][kSkMTiles][2];
        const bool more = s0 + kRoundSteps < s_end;
        if (more) load_weights(s0 + kRoundSteps, wn);
        float xv[kSkUnroll][NT][8];
        load_x(s0, xv);
        mma(xv);
        if (more) {
#pragma unroll
          for (int u = 0; u < kSkUnroll; ++u) {
#pragma unroll
            for (int mt = 0; mt < kSkMTiles; ++mt) {
              wv[u][mt][0] = wn[u][mt][0];
              wv[u][mt][1] = wn[u][mt][1];
            }
          }
        }
      }
    }
  } else {
    extern __shared__ uint4 sk_ring[];  // [kSkWarps][STAGES][kSkLoads][32]
    red = reinterpret_cast<float*>(sk_ring);
    uint4* ring = sk_ring + size_t(warp) * STAGES * kSkLoads * 32 + lane;
    const unsigned first = s_begin + warp;
    const unsigned rounds = first < s_end ? (s_end - first + kRoundSteps - 1) / kRoundSteps : 0;
    auto issue = [&](unsigned round) {
      const unsigned s0 = first + round * kRoundSteps;
      uint4* slot = ring + (round % STAGES) * kSkLoads * 32;
#pragma unroll
      for (int u = 0; u < kSkUnroll; ++u) {
        const unsigned c = (s0 + u * kSkWarps) * kSkStepCols;
        const bool in = s0 + u * kSkWarps < s_end && c + t * 8 < cols;
#pragma unroll
        for (int mt = 0; mt < kSkMTiles; ++mt) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            CpAsync16(slot + ((u * kSkMTiles + mt) * 2 + h) * 32,
                      in ? wrow[mt][h] + c : wrow[mt][h], in);
          }
        }
      }
    };
    AllowDependentGrid();
#pragma unroll
    for (int r = 0; r < STAGES - 1; ++r) {
      if (r < static_cast<int>(rounds)) issue(r);
      CpAsyncCommit();
    }
    WaitForPriorGrid();
    for (unsigned r = 0; r < rounds; ++r) {
      if (r + STAGES - 1 < rounds) issue(r + STAGES - 1);
      CpAsyncCommit();  // (empty near the end) keeps one group per round
      float xv[kSkUnroll][NT][8];
      load_x(first + r * kRoundSteps, xv);
      CpAsyncWait<STAGES - 1>();  // round r's group is complete
      const uint4* slot = ring + (r % STAGES) * kSkLoads * 32;
#pragma unroll
      for (int u = 0; u < kSkUnroll; ++u) {
#pragma unroll
        for (int mt = 0; mt < kSkMTiles; ++mt) {
#pragma unroll
          for (int h = 0; h < 2; ++h) wv[u][mt][h] = slot[((u * kSkMTiles + mt) * 2 + h) * 32];
        }
      }
      mma(xv);
    }
    CpAsyncWait<0>();
    __syncthreads();  // every warp is done with its ring before the partial sums overwrite it
  }

  // Sum the warps' partials in warp order.
#pragma unroll
  for (int mt = 0; mt < kSkMTiles; ++mt) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        red[(warp * kPerLane + (mt * NT + nt) * 4 + e) * 32 + lane] = acc[mt][nt][e];
      }
    }
  }
  __syncthreads();
  // GLU: slot s (gate) and s + kPerLane / 2 (up, the same row) make one output.
  constexpr int kOutSlots = GLU ? kPerLane / 2 : kPerLane;
  // Output i = slot * 32 + lane l: accumulator e = slot % 4 of m-tile slot / (4 NT), n-tile
  // slot / 4 % NT, which holds row l / 4 (+ 8 for e >= 2) and activation row 2 (l % 4) + (e & 1).
  auto store = [&](int i, float sum) {
    const int slot = i / 32;
    const int l = i % 32;
    const int mt = slot / (NT * 4);
    const int nt = slot / 4 % NT;
    const int e = slot % 4;
    const unsigned r = row0 + mt * 16 + l / 4 + (e >= 2 ? 8 : 0);
    const unsigned v = nt * 8 + 2 * (l % 4) + (e & 1);
    if (r < rows && v < p.n) y[size_t{v} * rows + r] = sum;
  };
  [[maybe_unused]] __shared__ float part_sum[KS > 1 ? kPerLane * 32 : 1];
  if constexpr (KS > 1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    // Each CTA's sums of its half, then the first adds the second's after its own.
    for (int i = threadIdx.x; i < kPerLane * 32; i += kSkThreads) {
      float sum = 0.0f;
#pragma unroll
      for (int wi = 0; wi < kSkWarps; ++wi) sum += red[(wi * kPerLane + i / 32) * 32 + i % 32];
      part_sum[i] = sum;
    }
    cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
    cluster.sync();
    if (part == 0) {
      const float* other = cluster.map_shared_rank(part_sum, 1);
      for (int i = threadIdx.x; i < kOutSlots * 32; i += kSkThreads) {
        float sum = part_sum[i] + other[i];
        if constexpr (GLU) {
          sum = SiluMul(sum, part_sum[i + kOutSlots * 32] + other[i + kOutSlots * 32]);
        }
        store(i, sum);
      }
    }
    cluster.sync();  // the second CTA's sums stay in its shared memory until they were read
#endif
  } else {
    for (int i = threadIdx.x; i < kOutSlots * 32; i += kSkThreads) {
      const int slot = i / 32;
      const int l = i % 32;
      float sum = 0.0f;
#pragma unroll
      for (int wi = 0; wi < kSkWarps; ++wi) sum += red[(wi * kPerLane + slot) * 32 + l];
      if constexpr (GLU) {
        float up = 0.0f;
#pragma unroll
        for (int wi = 0; wi < kSkWarps; ++wi)
          up += red[(wi * kPerLane + slot + kOutSlots) * 32 + l];
        sum = SiluMul(sum, up);
      }
      store(i, sum);
    }
  }
}

// The kernel for (n-tiles, m-tiles, GLU, stages, k-split) and the dynamic shared memory it needs
// (up to 128 KiB; LaunchSkinnyMatMul raises the kernel's limit to it before each launch).
template <int NT, int MT, bool GLU, int KS = 1>
void (*PickStages(int stages, size_t* smem))(SkinnyParams) {
  void (*k)(SkinnyParams) = nullptr;
  switch (stages) {
    case 0:
      *smem = 0;
      return SkinnyMatMulKernel<NT, MT, GLU, 0, KS>;
    case 1:
      *smem = 0;
      return SkinnyMatMulKernel<NT, MT, GLU, 1, KS>;
    case 2:
      k = SkinnyMatMulKernel<NT, MT, GLU, 2, KS>;
      break;
    case 3:
      k = SkinnyMatMulKernel<NT, MT, GLU, 3, KS>;
      break;
    case 4:
      k = SkinnyMatMulKernel<NT, MT, GLU, 4, KS>;
      break;
    default:
      return nullptr;
  }
  *smem = SkinnyPipelineSmem(stages);
  return k;
}

// The kernel for (n-tiles, m-tiles, GLU, k-split, stages).
template <int NT, int MT, bool GLU>
void (*PickKernel(int k_split, int stages, size_t* smem))(SkinnyParams) {
  return k_split == 2 ? PickStages<NT, MT, GLU, 2>(stages, smem)
                      : PickStages<NT, MT, GLU, 1>(stages, smem);
}

// Multiprocessors of the current device (the first one asked about: the engine uses one).
int SmCount() {
  static const int count = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
}

}  // namespace

SkinnyLaunchChoice ChooseSkinnyLaunch(size_t total_rows, size_t cols, size_t n, bool glu,
                                      int m_tiles, int k_split, bool split_on, size_t sm_count,
                                      bool clusters) {
  SkinnyLaunchChoice c;
  // k-split: only where clusters exist in every image built, for launches of at most 32 weight
  // rows per SM in all (their CTAs of 32 rows, doubled, fit one wave of two per SM), with two
  // k-steps at least.
  c.k_split = k_split == 0 ? (split_on && total_rows <= 32 * sm_count ? 2 : 1) : k_split;
  if (!clusters || (cols + kSkStepCols - 1) / kSkStepCols < 2) c.k_split = 1;
  c.m_tiles = m_tiles;
  if (c.m_tiles == 0) {
    // Measured on the H100 (docs/BENCHMARKS.md, "Skinny products" and "Row tiles of the k-split
    // at 9-16 rows"): 32 rows per CTA at n <= 8 on every Llama-3-8B shape; at n = 9-16 (two
    // n-tiles), 64 rows from 16384 rows in total on, and 16 rows for up to 4096 rows without the
    // k-split, 32 with it (the o and down products: 7.6-13.1% less time than 16 rows split).
    c.m_tiles = kSkDefaultMTiles;
    if (n > 8 && total_rows <= 4096 && c.k_split != 2) c.m_tiles = 1;
    if (n > 8 && total_rows >= 16384) c.m_tiles = 4;
  }
  if (glu && c.m_tiles == 1) c.m_tiles = 2;  // a CTA pairs whole m-tiles of gate and up
  return c;
}

bool SkinnyMatMulApplies(DType dtype, size_t rows, size_t cols, size_t n, const void* w,
                         const float* x) {
  return dtype == DType::kBF16 && n >= 1 && n <= kMaxSkinnyRows && rows < (size_t{1} << 30) &&
         cols > 0 && cols % 8 == 0 && cols <= (size_t{1} << 30) &&
         reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

cudaError_t LaunchSkinnyMatMul(const SkinnyOutput* outputs, int count, size_t cols, const float* x,
                               size_t n, cudaStream_t stream, int m_tiles, bool glu, int stages,
                               int k_split) {
  if (k_split < 0 || k_split > 2) return cudaErrorInvalidValue;
  size_t total_rows = 0;
  for (int i = 0; i < count && i < kMaxSkinnyOutputs; ++i) total_rows += outputs[i].rows;
  const SkinnyLaunchChoice choice =
      ChooseSkinnyLaunch(total_rows, cols, n, glu, m_tiles, k_split, SkinnySplit(),
                         static_cast<size_t>(std::max(SmCount(), 0)), kClusters);
  m_tiles = choice.m_tiles;
  k_split = choice.k_split;
  if (stages < 0) stages = SkinnyStages();
  if (count < 1 || count > kMaxSkinnyOutputs || n < 1 || n > kMaxSkinnyRows ||
      (m_tiles != 1 && m_tiles != 2 && m_tiles != 4) || !SkinnyStagesValid(stages) ||
      (glu && (count != 2 || outputs[0].rows != outputs[1].rows || outputs[0].rows == 0))) {
    return cudaErrorInvalidValue;
  }
  // GLU: a CTA's rows of gate and the same rows of up.
  const unsigned rows_per_cta = 16u * static_cast<unsigned>(glu ? m_tiles / 2 : m_tiles);
  SkinnyParams p{};
  unsigned ctas = 0;
  int used = 0;
  for (int i = 0; i < count; ++i) {
    if (outputs[i].rows == 0) continue;
    if (!SkinnyMatMulApplies(DType::kBF16, outputs[i].rows, cols, n, outputs[i].w, x)) {
      return cudaErrorInvalidValue;
    }
    p.w[used] = static_cast<const __nv_bfloat16*>(outputs[i].w);
    p.y[used] = outputs[i].y;
    p.rows[used] = static_cast<unsigned>(outputs[i].rows);
    p.cta_begin[used] = ctas;
    if (!glu || i == 0) {
      ctas += static_cast<unsigned>((outputs[i].rows + rows_per_cta - 1) / rows_per_cta);
    }
    ++used;
  }
  if (glu) p.cta_begin[1] = ~0u;  // every CTA takes matrix 0's rows (and up's alongside)
  if (used == 0) return cudaSuccess;
  p.count = used;
  p.cols = static_cast<unsigned>(cols);
  p.n = static_cast<unsigned>(n);
  p.x = x;
  const bool two = n > 8;
  size_t smem = 0;
  void (*kernel)(SkinnyParams) = nullptr;
  if (glu) {
    kernel = m_tiles == 2 ? (two ? PickKernel<2, 2, true>(k_split, stages, &smem)
                                 : PickKernel<1, 2, true>(k_split, stages, &smem))
                          : (two ? PickKernel<2, 4, true>(k_split, stages, &smem)
                                 : PickKernel<1, 4, true>(k_split, stages, &smem));
  } else if (m_tiles == 1) {
    kernel = two ? PickKernel<2, 1, false>(k_split, stages, &smem)
                 : PickKernel<1, 1, false>(k_split, stages, &smem);
  } else if (m_tiles == 2) {
    kernel = two ? PickKernel<2, 2, false>(k_split, stages, &smem)
                 : PickKernel<1, 2, false>(k_split, stages, &smem);
  } else {
    kernel = two ? PickKernel<2, 4, false>(k_split, stages, &smem)
                 : PickKernel<1, 4, false>(k_split, stages, &smem);
  }
  if (kernel == nullptr) return cudaErrorInvalidValue;
  if (smem > 0) {
    // Above the default 48 KiB; set on every launch (cheap, host only) so that it holds on
    // whichever device is current.
    const cudaError_t err = cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  return LaunchDependentCluster(kernel, ctas * static_cast<unsigned>(k_split), kSkThreads, smem,
                                stream, static_cast<unsigned>(k_split), p);
}

}  // namespace kvstar::cuda::internal
