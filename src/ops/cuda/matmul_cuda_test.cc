// The CUDA products (MatMul, the skinny kernel, MatMulShared, MatMulSwiGlu) against the CPU op
// and against each other. Skips itself without a CUDA device.
#include <algorithm>
#include <vector>

#include "gtest/gtest.h"
#include "ops/cpu/ops.h"
#include "ops/cuda/cuda_test_util.h"
#include "ops/cuda/kernels.h"
#include "ops/cuda/ops.h"
#include "ops/cuda/ops_cuda_test_util.h"

namespace kvstar::cuda {
namespace {

using ops::testing::RandomFloats;
using ops::testing::RandomTensor;
using ops::testing::TestTensor;
using testing::CudaOpsTest;
using testing::DeviceTensor;
using testing::kDTypes;
using testing::kF32Tol;
using testing::kHalfTol;
using testing::Pool;
using testing::RelErr;

// SetSkinnySplit for the scope of a test body.
class ScopedSkinnySplit {
 public:
  explicit ScopedSkinnySplit(bool on) : before_(SkinnySplit()) { SetSkinnySplit(on); }
  ~ScopedSkinnySplit() { SetSkinnySplit(before_); }
  ScopedSkinnySplit(const ScopedSkinnySplit&) = delete;
  ScopedSkinnySplit& operator=(const ScopedSkinnySplit&) = delete;

 private:
  bool before_;
};

TEST_F(CudaOpsTest, MatMulMatchesCpu) {
  struct Shape {
    size_t rows, cols, n;
  };
  const Shape shapes[] = {{1, 1, 1},      {37, 53, 1},     {129, 67, 5},
                          {256, 300, 17}, {513, 1031, 64}, {300, 4096, 1},
                          {77, 1032, 1},  {5, 2000, 1},    {130, 520, 6}};
  for (DType dt : kDTypes) {
    for (const Shape& s : shapes) {
      for (MatMulKernel kernel : {MatMulKernel::kAuto, MatMulKernel::kLibrary}) {
        SCOPED_TRACE(::testing::Message()
                     << DTypeName(dt) << " " << s.rows << "x" << s.cols << " n=" << s.n
                     << " kernel " << static_cast<int>(kernel));
        MatMulCase mc = MakeMatMulCase(dt, s.rows, s.cols, s.n);
        const std::vector<float>& ref = mc.ref;
        DeviceTensor& dw = mc.dw;
        DeviceBuffer& dx = mc.dx;
        DeviceBuffer& dy = mc.dy;
        auto ws = DeviceBuffer::Allocate(MatMulWorkspaceBytes(dw.view, s.n));
        ASSERT_TRUE(ws.ok());
        ASSERT_TRUE(
            MatMul(*ctx_, stream_, dw.view, dx.as<float>(), s.n, dy.as<float>(), ws->data(), kernel)
                .ok());
        const double err = RelErr(Download<float>(dy, ref.size()), ref);
        // MatVec (n = 1) and the skinny kernel (bf16, n <= 16, cols % 8 == 0) multiply f32
        // activations like the CPU op; cuBLAS rounds them to the weight dtype.
        const bool skinny =
            kernel == MatMulKernel::kAuto && dt == DType::kBF16 && s.n <= 16 && s.cols % 8 == 0;
        const bool rounded = dt != DType::kF32 && s.n > 1 && !skinny;
        EXPECT_LE(err, rounded ? kHalfTol : kF32Tol);
        if (rounded) {
          EXPECT_GT(err, 1e-5);  // the activations really were rounded
        }
      }
    }
  }
}

// The skinny kernel: f32-level error for every n it takes, partial tiles of rows (not a multiple
// of 32) and of columns (a multiple of 8, not of 32 or 256); a row of a batch gives the same bits
// as that row alone (batch invariance) and a second run the same bits (determinism).
TEST_F(CudaOpsTest, SkinnyMatMulMatchesCpuAndIsBatchInvariant) {
  struct Shape {
    size_t rows, cols, n;
  };
  const Shape shapes[] = {{1, 8, 1},       {37, 40, 3},  {100, 72, 8},    {33, 4104, 9},
                          {300, 1032, 16}, {64, 256, 2}, {1000, 4096, 5}, {7, 14336, 12}};
  for (int combo = 0; combo < 2 * static_cast<int>(std::size(shapes)); ++combo) {
    const Shape& s = shapes[combo / 2];
    const ScopedSkinnySplit split(combo % 2 == 1);  // with and without the k-split
    SCOPED_TRACE(::testing::Message()
                 << s.rows << "x" << s.cols << " n=" << s.n << " split=" << SkinnySplit());
    MatMulCase mc = MakeMatMulCase(DType::kBF16, s.rows, s.cols, s.n);
    const std::vector<float>& ref = mc.ref;
    DeviceTensor& dw = mc.dw;
    DeviceBuffer& dx = mc.dx;
    DeviceBuffer& dy = mc.dy;
    ASSERT_TRUE(MatMul(*ctx_, stream_, dw.view, dx.as<float>(), s.n, dy.as<float>(), nullptr,
                       MatMulKernel::kSkinny)
                    .ok());
    const std::vector<float> y = Download<float>(dy, ref.size());
    EXPECT_LE(RelErr(y, ref), kF32Tol);
    DeviceBuffer dy2 = Poisoned(ref.size() * 4);
    ASSERT_TRUE(MatMul(*ctx_, stream_, dw.view, dx.as<float>(), s.n, dy2.as<float>(), nullptr,
                       MatMulKernel::kSkinny)
                    .ok());
    EXPECT_EQ(Download<float>(dy2, ref.size()), y);
    for (size_t i = 0; i < s.n; ++i) {
      DeviceBuffer one = Poisoned(s.rows * 4);
      ASSERT_TRUE(MatMul(*ctx_, stream_, dw.view, dx.as<float>() + i * s.cols, 1, one.as<float>(),
                         nullptr, MatMulKernel::kSkinny)
                      .ok());
      const std::vector<float> alone = Download<float>(one, s.rows);
      EXPECT_TRUE(std::equal(alone.begin(), alone.end(), y.begin() + i * s.rows)) << "row " << i;
    }
  }
}

// SwiGLU's gate / up products and activation in one skinny launch (a CTA computes the same rows
// of both) or as MatMulShared then SwiGlu: the same bits, at one and two n-tiles and every tile
// choice, on the library path too.
TEST_F(CudaOpsTest, MatMulSwiGluFusedEqualsProductsThenSwiGlu) {
  struct Shape {
    size_t rows, cols, n;
  };
  const Shape shapes[] = {{37, 40, 1},      {100, 1032, 8}, {70, 4104, 9},
                          {2000, 1024, 16}, {9000, 64, 12}, {33, 14336, 3}};
  for (int combo = 0; combo < 2 * static_cast<int>(std::size(shapes)); ++combo) {
    const Shape& s = shapes[combo / 2];
    const ScopedSkinnySplit split(combo % 2 == 1);  // fused and unfused split alike
    for (MatMulKernel kernel : {MatMulKernel::kAuto, MatMulKernel::kLibrary}) {
      SCOPED_TRACE(::testing::Message() << s.rows << "x" << s.cols << " n=" << s.n << " kernel "
                                        << static_cast<int>(kernel) << " split=" << SkinnySplit());
      const TestTensor wg = RandomTensor(rng_, DType::kBF16, s.rows, s.cols, 0.5f);
      const TestTensor wu = RandomTensor(rng_, DType::kBF16, s.rows, s.cols, 0.5f);
      const DeviceTensor dwg = ToDevice(wg);
      const DeviceTensor dwu = ToDevice(wu);
      const std::vector<float> x = RandomFloats(rng_, s.n * s.cols);
      DeviceBuffer dx = Upload(x);
      DeviceBuffer ws = Poisoned(std::max<size_t>(16, MatMulWorkspaceBytes(dwg.view, s.n)));
      std::vector<float> act[2];
      for (int fuse = 0; fuse < 2; ++fuse) {
        DeviceBuffer da = Poisoned(s.n * s.rows * 4);
        DeviceBuffer du = Poisoned(s.n * s.rows * 4);
        ASSERT_TRUE(MatMulSwiGlu(*ctx_, stream_, dwg.view, dwu.view, dx.as<float>(), s.n,
                                 da.as<float>(), du.as<float>(), ws.data(), kernel, fuse == 1)
                        .ok());
        act[fuse] = Download<float>(da, s.n * s.rows);
      }
      EXPECT_EQ(act[1], act[0]);
      std::vector<float> g(s.n * s.rows), u(s.n * s.rows), ref(s.n * s.rows);
      ops::MatMul(Pool(), wg.view(), x.data(), s.n, g.data());
      ops::MatMul(Pool(), wu.view(), x.data(), s.n, u.data());
      ops::SwiGlu(g.data(), u.data(), g.size(), ref.data());
      // Each product is within MatMul's 1e-5 of the CPU op; SiluMul adds their errors (silu's
      // slope is at most 1.1), so the activation gets 3e-5 (1.04e-5 was measured on the H100).
      EXPECT_LE(RelErr(act[1], ref), kernel == MatMulKernel::kAuto ? 3e-5 : 1e-2);
      // Every tile choice of the fused launch (1 is taken as 2) and every way of reading the
      // weights give the same bits.
      for (int m_tiles : {1, 2, 4}) {
        if (kernel != MatMulKernel::kAuto) break;
        for (int stages : {0, 1, 2, 3, 4}) {
          DeviceBuffer da = Poisoned(s.n * s.rows * 4);
          const internal::SkinnyOutput outs[2] = {{dwg.view.data, s.rows, da.as<float>()},
                                                  {dwu.view.data, s.rows, nullptr}};
          ASSERT_EQ(internal::LaunchSkinnyMatMul(outs, 2, s.cols, dx.as<float>(), s.n,
                                                 reinterpret_cast<cudaStream_t>(stream_), m_tiles,
                                                 true, stages),
                    cudaSuccess);
          EXPECT_EQ(Download<float>(da, s.n * s.rows), act[1])
              << "m_tiles " << m_tiles << " stages " << stages;
        }
      }
    }
  }
}

// Every rows-per-CTA choice of the skinny kernel (16, 32, 64) with one and two n-tiles.
// Every way of reading the weights (registers, or a cp.async ring of 2-4 rounds) gives the same
// bits; 2056 columns give each warp several rounds, so the rings wrap.
TEST_F(CudaOpsTest, SkinnyMatMulEveryTileChoiceMatchesCpu) {
  const size_t rows = 150;
  for (size_t cols : {size_t{264}, size_t{2056}}) {
    const TestTensor w = RandomTensor(rng_, DType::kBF16, rows, cols, 0.5f);
    DeviceTensor dw = ToDevice(w);
    for (size_t n : {size_t{1}, size_t{7}, size_t{9}, size_t{16}}) {
      const std::vector<float> x = RandomFloats(rng_, n * cols);
      std::vector<float> ref(n * rows);
      ops::MatMul(Pool(), w.view(), x.data(), n, ref.data());
      DeviceBuffer dx = Upload(x);
      std::vector<float> first[2];  // per k-split: every tile and stage choice, the same bits
      for (int m_tiles : {1, 2, 4}) {
        for (int stages : {0, 1, 2, 3, 4}) {
          for (int k_split : {1, 2}) {
            SCOPED_TRACE(::testing::Message()
                         << "cols=" << cols << " n=" << n << " m_tiles=" << m_tiles
                         << " stages=" << stages << " k_split=" << k_split);
            DeviceBuffer dy = Poisoned(ref.size() * 4);
            const internal::SkinnyOutput out{dw.view.data, rows, dy.as<float>()};
            ASSERT_EQ(internal::LaunchSkinnyMatMul(&out, 1, cols, dx.as<float>(), n,
                                                   reinterpret_cast<cudaStream_t>(stream_), m_tiles,
                                                   false, stages, k_split),
                      cudaSuccess);
            const std::vector<float> y = Download<float>(dy, ref.size());
            EXPECT_LE(RelErr(y, ref), kF32Tol);
            std::vector<float>& f = first[k_split - 1];
            if (f.empty()) f = y;
            EXPECT_EQ(y, f);
          }
        }
      }
    }
  }
  // Other stage counts are refused.
  DeviceBuffer dy = Poisoned(16);
  DeviceBuffer dx = Upload(RandomFloats(rng_, 264));
  for (int stages : {5, 7}) {
    const TestTensor w = RandomTensor(rng_, DType::kBF16, 2, 264, 0.5f);
    DeviceTensor dw = ToDevice(w);
    const internal::SkinnyOutput o{dw.view.data, 2, dy.as<float>()};
    EXPECT_EQ(
        internal::LaunchSkinnyMatMul(&o, 1, 264, dx.as<float>(), 1,
                                     reinterpret_cast<cudaStream_t>(stream_), 0, false, stages),
        cudaErrorInvalidValue);
  }
  // So are k-splits other than 0 (the process-wide choice), 1 and 2.
  const TestTensor w = RandomTensor(rng_, DType::kBF16, 2, 264, 0.5f);
  DeviceTensor dw = ToDevice(w);
  const internal::SkinnyOutput o{dw.view.data, 2, dy.as<float>()};
  for (int k_split : {-1, 3}) {
    EXPECT_EQ(
        internal::LaunchSkinnyMatMul(&o, 1, 264, dx.as<float>(), 1,
                                     reinterpret_cast<cudaStream_t>(stream_), 0, false, 0, k_split),
        cudaErrorInvalidValue);
  }
}

// q / k / v in one launch: the same bits as three skinny products; shapes the skinny kernel does
// not take run one product each; bad requests are errors.
TEST_F(CudaOpsTest, MatMulSharedMatchesSeparateProducts) {
  const size_t cols = 136;
  const size_t rows[] = {96, 40, 33};
  for (int combo = 0; combo < 4; ++combo) {
    const DType dt = combo / 2 == 0 ? DType::kBF16 : DType::kF16;
    const ScopedSkinnySplit split(combo % 2 == 1);
    for (size_t n : {size_t{1}, size_t{4}, size_t{16}, size_t{20}}) {
      SCOPED_TRACE(::testing::Message() << DTypeName(dt) << " n=" << n);
      const std::vector<float> x = RandomFloats(rng_, n * cols);
      DeviceBuffer dx = Upload(x);
      std::vector<TestTensor> ws;
      std::vector<DeviceTensor> dws;
      std::vector<DeviceBuffer> ys;
      std::vector<MatMulTarget> targets;
      size_t ws_bytes = 0;
      for (size_t r : rows) {
        ws.push_back(RandomTensor(rng_, dt, r, cols, 0.5f));
        dws.push_back(ToDevice(ws.back()));
        ys.push_back(Poisoned(n * r * 4));
        targets.push_back(MatMulTarget{dws.back().view, ys.back().as<float>()});
        ws_bytes = std::max(ws_bytes, MatMulWorkspaceBytes(dws.back().view, n));
      }
      auto workspace = DeviceBuffer::Allocate(ws_bytes);
      ASSERT_TRUE(workspace.ok());
      ASSERT_TRUE(MatMulShared(*ctx_, stream_, targets, dx.as<float>(), n, workspace->data()).ok());
      for (size_t i = 0; i < targets.size(); ++i) {
        std::vector<float> ref(n * rows[i]);
        ops::MatMul(Pool(), ws[i].view(), x.data(), n, ref.data());
        const std::vector<float> y = Download<float>(ys[i], ref.size());
        const bool skinny = dt == DType::kBF16 && n <= 16;
        EXPECT_LE(RelErr(y, ref), skinny || n == 1 ? kF32Tol : kHalfTol) << "target " << i;
        DeviceBuffer alone = Poisoned(n * rows[i] * 4);
        ASSERT_TRUE(MatMul(*ctx_, stream_, dws[i].view, dx.as<float>(), n, alone.as<float>(),
                           workspace->data())
                        .ok());
        EXPECT_EQ(Download<float>(alone, ref.size()), y) << "target " << i;
      }
    }
  }
  // Mismatched columns; the skinny kernel forced where it does not apply.
  const TestTensor a = RandomTensor(rng_, DType::kBF16, 8, 64, 0.5f);
  const TestTensor b = RandomTensor(rng_, DType::kBF16, 8, 72, 0.5f);
  const TestTensor odd = RandomTensor(rng_, DType::kBF16, 8, 60, 0.5f);
  const TestTensor f32 = RandomTensor(rng_, DType::kF32, 8, 64, 0.5f);
  DeviceTensor da = ToDevice(a), db = ToDevice(b), dodd = ToDevice(odd), df = ToDevice(f32);
  DeviceBuffer dx = Upload(RandomFloats(rng_, 17 * 72));
  DeviceBuffer dy = Poisoned(17 * 8 * 4 * 2);
  const MatMulTarget mixed[] = {{da.view, dy.as<float>()}, {db.view, dy.as<float>() + 8}};
  EXPECT_EQ(MatMulShared(*ctx_, stream_, mixed, dx.as<float>(), 1, nullptr).code(),
            StatusCode::kInvalidArgument);
  for (const TensorView& v : {dodd.view, df.view}) {
    EXPECT_EQ(
        MatMul(*ctx_, stream_, v, dx.as<float>(), 2, dy.as<float>(), nullptr, MatMulKernel::kSkinny)
            .code(),
        StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(MatMul(*ctx_, stream_, da.view, dx.as<float>(), 17, dy.as<float>(), nullptr,
                   MatMulKernel::kSkinny)
                .code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvstar::cuda
