// Helpers for the CUDA ops tests: a shared device context (tests skip without a device), uploads,
// downloads, poisoned outputs and the relative error ||out - ref|| / ||ref||.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "ops/cuda/device.h"

namespace kvstar::cuda::testing {

// The process-wide context, or nullptr when there is no CUDA device.
inline DeviceContext* SharedContext() {
  static DeviceContext* ctx = []() -> DeviceContext* {
    if (DeviceCount() == 0) return nullptr;
    auto c = DeviceContext::Create(0);
    if (!c.ok()) {
      ADD_FAILURE() << c.status().ToString();
      return nullptr;
    }
    return std::move(c).value().release();  // lives until exit
  }();
  return ctx;
}

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ctx_ = SharedContext();
    if (ctx_ == nullptr) GTEST_SKIP() << "no CUDA device";
    ASSERT_TRUE(ctx_->Activate().ok());
    stream_ = ctx_->compute_stream();
  }

  template <typename T>
  DeviceBuffer Upload(const std::vector<T>& host) {
    auto buf = DeviceBuffer::Allocate(std::max<size_t>(host.size() * sizeof(T), 1));
    EXPECT_TRUE(buf.ok()) << buf.status().ToString();
    if (!host.empty()) {
      EXPECT_TRUE(
          ctx_->CopyToDevice(buf->data(), host.data(), host.size() * sizeof(T), stream_).ok());
    }
    return std::move(buf).value();
  }
  DeviceBuffer UploadBytes(const void* data, size_t bytes) {
    auto buf = DeviceBuffer::Allocate(std::max<size_t>(bytes, 1));
    EXPECT_TRUE(buf.ok()) << buf.status().ToString();
    if (bytes > 0) {
      EXPECT_TRUE(ctx_->CopyToDevice(buf->data(), data, bytes, stream_).ok());
    }
    return std::move(buf).value();
  }
  // A device buffer of `count` floats filled with NaN bytes (0xff): any element a kernel fails
  // to write stays NaN and fails the comparison.
  DeviceBuffer Poisoned(size_t bytes) {
    auto buf = DeviceBuffer::Allocate(std::max<size_t>(bytes, 1));
    EXPECT_TRUE(buf.ok()) << buf.status().ToString();
    EXPECT_TRUE(ctx_->Memset(buf->data(), 0xff, bytes, stream_).ok());
    return std::move(buf).value();
  }
  template <typename T>
  std::vector<T> Download(const DeviceBuffer& buf, size_t count) {
    std::vector<T> host(count);
    if (count > 0) {
      EXPECT_TRUE(ctx_->CopyToHost(host.data(), buf.data(), count * sizeof(T), stream_).ok());
    }
    EXPECT_TRUE(ctx_->Synchronize(stream_).ok());
    return host;
  }

  DeviceContext* ctx_ = nullptr;
  CudaStream* stream_ = nullptr;
};

// ||out - ref|| / ||ref||; +inf if any out element is not finite or the sizes differ.
inline double RelErr(const std::vector<float>& out, const std::vector<float>& ref) {
  if (out.size() != ref.size()) return INFINITY;
  double num = 0.0;
  double den = 0.0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

constexpr double kF32Tol = 1e-5;   // f32 arithmetic in both ops, different summation order
constexpr double kHalfTol = 1e-2;  // activations rounded to bf16/f16 for the tensor cores

}  // namespace kvstar::cuda::testing
