// Shared by the CUDA op tests: the CPU thread pool of the reference ops, device copies of host
// test tensors and the CudaOpsTest fixture (random products with their CPU reference).
#pragma once

#include <random>
#include <vector>

#include "base/thread_pool.h"
#include "gtest/gtest.h"
#include "ops/cpu/ops.h"
#include "ops/cpu/ops_test_util.h"
#include "ops/cuda/cuda_test_util.h"
#include "ops/cuda/device.h"

namespace kvstar::cuda::testing {

using ops::testing::RandomFloats;
using ops::testing::RandomTensor;
using ops::testing::TestTensor;

inline constexpr DType kDTypes[] = {DType::kF32, DType::kBF16, DType::kF16};

inline ThreadPool& Pool() {
  static ThreadPool pool(2);
  return pool;
}

// Device copy of a host test tensor; the returned view points at device memory.
struct DeviceTensor {
  DeviceBuffer buf;
  TensorView view;
};

class CudaOpsTest : public CudaTest {
 protected:
  DeviceTensor ToDevice(const TestTensor& t) {
    const TensorView hv = t.view();
    DeviceTensor d;
    d.buf = UploadBytes(hv.data, hv.bytes());
    d.view = TensorView{d.buf.data(), hv.dtype, hv.rows, hv.cols};
    return d;
  }
  // A random rows x cols weight of dtype and n random activation rows, on the host and the device,
  // the CPU op's product as the reference, and a poisoned device output.
  struct MatMulCase {
    TestTensor w;
    std::vector<float> x, ref;
    DeviceTensor dw;
    DeviceBuffer dx, dy;
  };
  MatMulCase MakeMatMulCase(DType dt, size_t rows, size_t cols, size_t n) {
    MatMulCase c{RandomTensor(rng_, dt, rows, cols, 0.5f),
                 RandomFloats(rng_, n * cols),
                 std::vector<float>(n * rows),
                 {},
                 {},
                 {}};
    ops::MatMul(Pool(), c.w.view(), c.x.data(), n, c.ref.data());
    c.dw = ToDevice(c.w);
    c.dx = Upload(c.x);
    c.dy = Poisoned(c.ref.size() * 4);
    return c;
  }
  std::mt19937 rng_{1234};
};

}  // namespace kvstar::cuda::testing
