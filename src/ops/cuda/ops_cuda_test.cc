// CUDA device utilities and the element-wise, norm, RoPE, KV and sampling ops against the CPU ops
// (the reference) on random inputs; the products are in matmul_cuda_test.cc. Skips itself when no
// CUDA device is present.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "base/half.h"
#include "base/kv_layout.h"
#include "base/thread_pool.h"
#include "gtest/gtest.h"
#include "ops/cpu/ops.h"
#include "ops/cpu/ops_test_util.h"
#include "ops/cuda/cuda_test_util.h"
#include "ops/cuda/device.h"
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
using testing::Pool;
using testing::RelErr;

TEST_F(CudaOpsTest, DeviceInfoAndCopiesAcrossStreamsWithEvents) {
  const DeviceInfo& info = ctx_->info();
  EXPECT_FALSE(info.name.empty());
  EXPECT_GT(info.sm_count, 0);
  EXPECT_GT(info.total_memory, size_t{1} << 30);
  // Upload on the h2d stream, compute stream waits on an event, download on the d2h stream.
  const size_t count = (size_t{3} << 20) + 17;
  const std::vector<float> src = RandomFloats(rng_, count);
  auto pinned = PinnedHostBuffer::Allocate(count * sizeof(float));
  ASSERT_TRUE(pinned.ok());
  std::memcpy(pinned->data(), src.data(), count * sizeof(float));
  DeviceBuffer a = Poisoned(count * sizeof(float));
  DeviceBuffer b = Poisoned(count * sizeof(float));
  ASSERT_TRUE(ctx_->Synchronize(stream_).ok());
  auto uploaded = Event::Create();
  auto added = Event::Create();
  ASSERT_TRUE(uploaded.ok() && added.ok());
  ASSERT_TRUE(ctx_->CopyToDevice(a.data(), pinned->data(), count * 4, ctx_->h2d_stream()).ok());
  ASSERT_TRUE(uploaded->Record(ctx_->h2d_stream()).ok());
  ASSERT_TRUE(uploaded->WaitOn(stream_).ok());
  ASSERT_TRUE(Add(stream_, a.as<float>(), a.as<float>(), count, b.as<float>()).ok());
  ASSERT_TRUE(added->Record(stream_).ok());
  ASSERT_TRUE(added->WaitOn(ctx_->d2h_stream()).ok());
  auto back = PinnedHostBuffer::Allocate(count * sizeof(float));
  ASSERT_TRUE(back.ok());
  ASSERT_TRUE(ctx_->CopyToHost(back->data(), b.data(), count * 4, ctx_->d2h_stream()).ok());
  ASSERT_TRUE(ctx_->Synchronize(ctx_->d2h_stream()).ok());
  auto done = added->Query();
  ASSERT_TRUE(done.ok());
  EXPECT_TRUE(*done);
  const float* out = back->as<float>();
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(out[i], src[i] + src[i]) << "at " << i;
}

TEST_F(CudaOpsTest, BatchCopyToDevicePlacesEveryPiece) {
  // Pieces of odd sizes from a pinned buffer to scattered, shuffled places of a poisoned buffer.
  const size_t pieces = 300, piece_max = 70000;
  std::vector<size_t> sizes(pieces), src_off(pieces), dst_off(pieces);
  size_t total = 0;
  for (size_t i = 0; i < pieces; ++i) {
    sizes[i] = 1 + rng_() % piece_max;
    src_off[i] = total;
    total += sizes[i];
  }
  std::vector<size_t> order(pieces);
  for (size_t i = 0; i < pieces; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng_);
  size_t at = 0;
  for (size_t i : order) {
    dst_off[i] = at;
    at += sizes[i];
  }
  auto pinned = PinnedHostBuffer::Allocate(total);
  ASSERT_TRUE(pinned.ok());
  for (size_t i = 0; i < total; ++i) pinned->as<uint8_t>()[i] = static_cast<uint8_t>(rng_());
  DeviceBuffer dev = Poisoned(total);
  std::vector<void*> dst(pieces);
  std::vector<const void*> src(pieces);
  for (size_t i = 0; i < pieces; ++i) {
    dst[i] = dev.as<char>() + dst_off[i];
    src[i] = pinned->as<char>() + src_off[i];
  }
  ASSERT_TRUE(ctx_->Synchronize(stream_).ok());
  // One piece (the plain-copy path) first, checked on its own; then none; then all of them.
  ASSERT_TRUE(
      ctx_->CopyBatchToDevice(dst.data(), src.data(), sizes.data(), 1, ctx_->h2d_stream()).ok());
  ASSERT_TRUE(
      ctx_->CopyBatchToDevice(dst.data(), src.data(), sizes.data(), 0, ctx_->h2d_stream()).ok());
  ASSERT_TRUE(ctx_->Synchronize(ctx_->h2d_stream()).ok());
  std::vector<uint8_t> first(sizes[0]);
  ASSERT_TRUE(ctx_->CopyToHost(first.data(), dst[0], sizes[0], stream_).ok());
  ASSERT_TRUE(ctx_->Synchronize(stream_).ok());
  ASSERT_EQ(std::memcmp(first.data(), src[0], sizes[0]), 0) << "single piece";
  ASSERT_TRUE(
      ctx_->CopyBatchToDevice(dst.data(), src.data(), sizes.data(), pieces, ctx_->h2d_stream())
          .ok());
  ASSERT_TRUE(ctx_->Synchronize(ctx_->h2d_stream()).ok());
  std::vector<uint8_t> back(total);
  ASSERT_TRUE(ctx_->CopyToHost(back.data(), dev.data(), total, stream_).ok());
  ASSERT_TRUE(ctx_->Synchronize(stream_).ok());
  for (size_t i = 0; i < pieces; ++i) {
    ASSERT_EQ(std::memcmp(back.data() + dst_off[i], pinned->as<char>() + src_off[i], sizes[i]), 0)
        << "piece " << i << " of " << sizes[i] << " bytes";
  }
}

TEST_F(CudaOpsTest, DeviceBufferAllocationFailureIsAStatus) {
  auto huge = DeviceBuffer::Allocate(size_t{1} << 50);
  EXPECT_FALSE(huge.ok());
  // The context still works afterwards.
  DeviceBuffer ok = Poisoned(64);
  EXPECT_TRUE(ctx_->Synchronize(stream_).ok());
}

TEST_F(CudaOpsTest, PinnedPoolReusesFreedPiecesAndHonoursCapacity) {
  PinnedHostPool pool(size_t{8} << 20, size_t{4} << 20);
  void* a = pool.Allocate(1000, 64);
  void* b = pool.Allocate(3000, 4096);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % 4096, 0u);
  std::memset(a, 1, 1000);
  std::memset(b, 2, 3000);
  EXPECT_EQ(pool.used_bytes(), 4000u);
  pool.Free(a, 1000);
  EXPECT_EQ(pool.Allocate(1000, 64), a);  // same size and alignment: reused
  // Too large for the rest of the first arena: a second one; then the capacity (8 MiB) refuses
  // a third.
  const size_t big = (size_t{4} << 20) - 4096;
  void* c = pool.Allocate(big, 64);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(pool.pinned_bytes(), size_t{8} << 20);
  EXPECT_EQ(pool.Allocate(size_t{5} << 20, 64), nullptr);
  // Pool memory is pinned: a copy from it to the device runs and round-trips.
  std::vector<unsigned char> host(big);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<unsigned char>(i * 7 + 1);
  std::memcpy(c, host.data(), host.size());
  DeviceBuffer d = Poisoned(host.size());
  ASSERT_TRUE(ctx_->CopyToDevice(d.data(), c, host.size(), ctx_->h2d_stream()).ok());
  ASSERT_TRUE(ctx_->Synchronize(ctx_->h2d_stream()).ok());
  EXPECT_EQ(Download<unsigned char>(d, host.size()), host);
  pool.Free(b, 3000);
  pool.Free(c, big);
  EXPECT_EQ(pool.used_bytes(), 1000u);
}

TEST_F(CudaOpsTest, AddBiasMatchesCpu) {
  for (DType dt : kDTypes) {
    for (size_t cols : {1, 7, 896, 4099}) {
      for (size_t n : {1, 3}) {
        const TestTensor bias = RandomTensor(rng_, dt, 1, cols);
        std::vector<float> y = RandomFloats(rng_, n * cols);
        DeviceTensor db = ToDevice(bias);
        DeviceBuffer dy = Upload(y);
        ops::AddBias(bias.view(), n, y.data());
        ASSERT_TRUE(AddBias(stream_, db.view, n, dy.as<float>()).ok());
        EXPECT_LE(RelErr(Download<float>(dy, y.size()), y), kF32Tol) << DTypeName(dt) << cols;
      }
    }
  }
  const TestTensor two_rows = RandomTensor(rng_, DType::kF32, 2, 4);
  EXPECT_EQ(AddBias(stream_, two_rows.view(), 1, nullptr).code(), StatusCode::kInvalidArgument);
}

TEST_F(CudaOpsTest, RmsNormMatchesCpu) {
  for (DType dt : kDTypes) {
    for (size_t dim : {1, 7, 896, 4097}) {
      for (size_t n : {1, 5}) {
        const TestTensor w = RandomTensor(rng_, dt, 1, dim);
        const std::vector<float> x = RandomFloats(rng_, n * dim, 3.0f);
        std::vector<float> ref(x.size());
        ops::RmsNorm(x.data(), w.view(), n, dim, 1e-6f, ref.data());
        DeviceTensor dw = ToDevice(w);
        DeviceBuffer dx = Upload(x);
        DeviceBuffer dout = Poisoned(x.size() * 4);
        ASSERT_TRUE(
            RmsNorm(stream_, dx.as<float>(), dw.view, n, dim, 1e-6f, dout.as<float>()).ok());
        EXPECT_LE(RelErr(Download<float>(dout, x.size()), ref), kF32Tol) << DTypeName(dt) << dim;
        // In place (out aliases x).
        ASSERT_TRUE(RmsNorm(stream_, dx.as<float>(), dw.view, n, dim, 1e-6f, dx.as<float>()).ok());
        EXPECT_LE(RelErr(Download<float>(dx, x.size()), ref), kF32Tol);
      }
    }
  }
}

TEST_F(CudaOpsTest, AddRmsNormEqualsAddThenRmsNorm) {
  for (DType dt : kDTypes) {
    for (size_t dim : {1, 7, 4097}) {
      const size_t n = 5;
      const TestTensor w = RandomTensor(rng_, dt, 1, dim);
      const std::vector<float> x = RandomFloats(rng_, n * dim, 3.0f);
      const std::vector<float> add = RandomFloats(rng_, n * dim, 2.0f);
      std::vector<float> sum(x.size()), ref(x.size());
      ops::Add(x.data(), add.data(), x.size(), sum.data());
      ops::RmsNorm(sum.data(), w.view(), n, dim, 1e-6f, ref.data());
      DeviceTensor dw = ToDevice(w);
      DeviceBuffer dx = Upload(x), dadd = Upload(add), dout = Poisoned(x.size() * 4);
      ASSERT_TRUE(AddRmsNorm(stream_, dx.as<float>(), dadd.as<float>(), dw.view, n, dim, 1e-6f,
                             dout.as<float>())
                      .ok());
      const std::vector<float> fused = Download<float>(dout, x.size());
      EXPECT_EQ(Download<float>(dx, x.size()), sum) << "x += add in place, bit-exact";
      EXPECT_LE(RelErr(fused, ref), kF32Tol) << DTypeName(dt) << dim;
      // The separate ops on the device give the same bits.
      DeviceBuffer dx2 = Upload(x), dout2 = Poisoned(x.size() * 4);
      ASSERT_TRUE(Add(stream_, dx2.as<float>(), dadd.as<float>(), x.size(), dx2.as<float>()).ok());
      ASSERT_TRUE(
          RmsNorm(stream_, dx2.as<float>(), dw.view, n, dim, 1e-6f, dout2.as<float>()).ok());
      EXPECT_EQ(Download<float>(dout2, x.size()), fused);
    }
  }
  const TestTensor w = RandomTensor(rng_, DType::kF32, 1, 8);
  DeviceTensor dw = ToDevice(w);
  DeviceBuffer dx = Poisoned(64);
  EXPECT_EQ(
      AddRmsNorm(stream_, dx.as<float>(), nullptr, dw.view, 2, 8, 1e-6f, dx.as<float>()).code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(
      AddRmsNorm(stream_, dx.as<float>(), dx.as<float>(), dw.view, 2, 9, 1e-6f, dx.as<float>())
          .code(),
      StatusCode::kInvalidArgument);
}

TEST_F(CudaOpsTest, RopeMatchesCpu) {
  for (size_t hd : {64, 80, 128, 6}) {
    for (size_t n : {1, 9}) {
      const size_t heads = 3;
      std::vector<float> inv_freq(hd / 2);
      for (size_t i = 0; i < hd / 2; ++i) {
        inv_freq[i] = std::pow(500000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(hd));
      }
      std::vector<int64_t> pos(n);
      std::uniform_int_distribution<int64_t> pd(0, 130000);
      for (auto& p : pos) p = pd(rng_);
      std::vector<float> x = RandomFloats(rng_, n * heads * hd);
      DeviceBuffer df = Upload(inv_freq);
      DeviceBuffer dp = Upload(pos);
      DeviceBuffer dx = Upload(x);
      ops::ApplyRope(inv_freq.data(), hd, pos.data(), n, heads, x.data());
      ASSERT_TRUE(
          ApplyRope(stream_, df.as<float>(), hd, dp.as<int64_t>(), n, heads, dx.as<float>()).ok());
      EXPECT_LE(RelErr(Download<float>(dx, x.size()), x), kF32Tol) << hd << " n=" << n;
    }
  }
  EXPECT_EQ(ApplyRope(stream_, nullptr, 5, nullptr, 1, 1, nullptr).code(),
            StatusCode::kInvalidArgument);
}

TEST_F(CudaOpsTest, SwiGluAndAddMatchCpu) {
  for (size_t count : {1, 31, 100003}) {
    std::vector<float> gate = RandomFloats(rng_, count, 12.0f);
    if (count > 10) {
      gate[3] = -120.0f;  // exp overflow side
      gate[4] = 95.0f;
    }
    const std::vector<float> up = RandomFloats(rng_, count);
    std::vector<float> ref(count);
    ops::SwiGlu(gate.data(), up.data(), count, ref.data());
    DeviceBuffer dg = Upload(gate);
    DeviceBuffer du = Upload(up);
    DeviceBuffer dout = Poisoned(count * 4);
    ASSERT_TRUE(SwiGlu(stream_, dg.as<float>(), du.as<float>(), count, dout.as<float>()).ok());
    EXPECT_LE(RelErr(Download<float>(dout, count), ref), kF32Tol) << count;
    ASSERT_TRUE(SwiGlu(stream_, dg.as<float>(), du.as<float>(), count, dg.as<float>()).ok());
    const std::vector<float> in_place = Download<float>(dg, count);
    EXPECT_LE(RelErr(in_place, ref), kF32Tol);

    std::vector<float> sum(count);
    ops::Add(in_place.data(), up.data(), count, sum.data());
    ASSERT_TRUE(Add(stream_, dg.as<float>(), du.as<float>(), count, dg.as<float>()).ok());
    EXPECT_EQ(Download<float>(dg, count), sum);  // one rounding each: bit-exact
  }
}

// A prefetch between two dependent kernels: the second still sees every write of the first (the
// prefetch kernel completes only after its predecessor), and the prefetched bytes do not change.
TEST_F(CudaOpsTest, PrefetchL2KeepsTheOrderAndChangesNothing) {
  const size_t count = 300007;
  const std::vector<float> gate = RandomFloats(rng_, count, 12.0f);
  const std::vector<float> up = RandomFloats(rng_, count);
  const std::vector<float> weights = RandomFloats(rng_, (3 << 20) / 4 + 5);
  DeviceBuffer dg = Upload(gate);
  DeviceBuffer du = Upload(up);
  DeviceBuffer dw = Upload(weights);
  const size_t all = weights.size() * 4 / 16 * 16;
  // (rows, pitch, bytes per row): nothing, less than 16 bytes, one 16-byte unit, pieces of
  // several rows, rows longer than one piece, everything as one row.
  const size_t shapes[][3] = {{0, 16, 16},       {1, 16, 15},          {1, 16, 16},
                              {700, 4096, 1040}, {3, 1 << 20, 200000}, {1, all, all}};
  for (const auto& [rows, pitch, bytes] : shapes) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(bytes));
    DeviceBuffer dout = Poisoned(count * 4);
    ASSERT_TRUE(SwiGlu(stream_, dg.as<float>(), du.as<float>(), count, dout.as<float>()).ok());
    ASSERT_TRUE(PrefetchL2(stream_, dw.data(), rows, pitch, bytes).ok());
    ASSERT_TRUE(Add(stream_, dout.as<float>(), du.as<float>(), count, dg.as<float>()).ok());
    const std::vector<float> swiglu = Download<float>(dout, count);
    std::vector<float> sum(count);
    ops::Add(swiglu.data(), up.data(), count, sum.data());
    EXPECT_EQ(Download<float>(dg, count), sum);
    dg = Upload(gate);
  }
  EXPECT_EQ(Download<float>(dw, weights.size()), weights);
  // The engine's form: rows of a weight matrix; odd rows (pitch 14 bytes) are skipped, not errors.
  for (size_t cols : {size_t{7}, size_t{1032}}) {
    const DeviceTensor w = ToDevice(RandomTensor(rng_, DType::kBF16, 300, cols, 0.5f));
    for (size_t bytes : {size_t{0}, size_t{100}, size_t{4096}, size_t{1} << 20}) {
      EXPECT_TRUE(PrefetchWeightsL2(*ctx_, stream_, w.view, bytes).ok()) << cols << " " << bytes;
    }
  }
  EXPECT_FALSE(PrefetchL2(stream_, dw.as<char>() + 4, 1, 4096, 4096).ok());
  EXPECT_FALSE(PrefetchL2(stream_, dw.data(), 2, 4104, 4096).ok());
  EXPECT_FALSE(PrefetchL2(stream_, dw.data(), 2, 4096, 4112).ok());
  ASSERT_TRUE(ctx_->Synchronize(stream_).ok());
}

TEST_F(CudaOpsTest, EmbedMatchesCpuAndMarksBadIds) {
  for (DType dt : kDTypes) {
    const size_t vocab = 1000;
    const size_t cols = 67;
    const TestTensor table = RandomTensor(rng_, dt, vocab, cols);
    const std::vector<int32_t> tokens = {0, 999, 17, 17, 500};
    std::vector<float> ref(tokens.size() * cols);
    ASSERT_TRUE(ops::Embed(table.view(), tokens.data(), tokens.size(), ref.data()).ok());
    DeviceTensor dt_table = ToDevice(table);
    DeviceBuffer dtok = Upload(tokens);
    DeviceBuffer dout = Poisoned(ref.size() * 4);
    ASSERT_TRUE(CheckTokenIds(tokens.data(), tokens.size(), vocab).ok());
    ASSERT_TRUE(
        Embed(stream_, dt_table.view, dtok.as<int32_t>(), tokens.size(), dout.as<float>()).ok());
    EXPECT_EQ(Download<float>(dout, ref.size()), ref) << DTypeName(dt);  // exact conversions

    const std::vector<int32_t> bad = {3, 1000, -1};
    EXPECT_EQ(CheckTokenIds(bad.data(), bad.size(), vocab).code(), StatusCode::kInvalidArgument);
    DeviceBuffer dbad = Upload(bad);
    ASSERT_TRUE(
        Embed(stream_, dt_table.view, dbad.as<int32_t>(), bad.size(), dout.as<float>()).ok());
    const std::vector<float> got = Download<float>(dout, bad.size() * cols);
    for (size_t c = 0; c < cols; ++c) {
      EXPECT_EQ(got[c], static_cast<float>(table.ref[3 * cols + c]));
      EXPECT_TRUE(std::isnan(got[cols + c]));
      EXPECT_TRUE(std::isnan(got[2 * cols + c]));
    }
  }
}

TEST_F(CudaOpsTest, WriteKvMatchesCpuBytes) {
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (size_t bt : {16, 128, 48}) {
      const KvGeometry geom{.kv_heads = 3, .head_dim = 80, .block_tokens = bt, .dtype = dt};
      const size_t num_blocks = 9;
      const size_t first = bt + 5;  // starts inside the second block
      const size_t n = std::min<size_t>(num_blocks * bt - first, 3 * bt + 7);
      // Host blocks initialised with a pattern; device blocks with the same, in reverse order.
      std::vector<std::vector<unsigned char>> host(num_blocks,
                                                   std::vector<unsigned char>(geom.block_bytes()));
      for (size_t b = 0; b < num_blocks; ++b) {
        for (size_t i = 0; i < host[b].size(); ++i) host[b][i] = static_cast<unsigned char>(b + i);
      }
      DeviceBuffer storage = Poisoned(num_blocks * geom.block_bytes());
      std::vector<void*> dev_ptrs(num_blocks);
      std::vector<void*> host_ptrs(num_blocks);
      for (size_t b = 0; b < num_blocks; ++b) {
        dev_ptrs[b] = storage.as<unsigned char>() + (num_blocks - 1 - b) * geom.block_bytes();
        host_ptrs[b] = host[b].data();
        ASSERT_TRUE(
            ctx_->CopyToDevice(dev_ptrs[b], host[b].data(), geom.block_bytes(), stream_).ok());
      }
      DeviceBuffer table = Upload(dev_ptrs);
      const std::vector<float> k = RandomFloats(rng_, n * geom.kv_heads * geom.head_dim);
      const std::vector<float> v = RandomFloats(rng_, k.size());
      DeviceBuffer dk = Upload(k);
      DeviceBuffer dv = Upload(v);
      ops::WriteKv(geom, host_ptrs.data(), first, n, k.data(), v.data());
      ASSERT_TRUE(
          WriteKv(stream_, geom, table.as<void*>(), first, n, dk.as<float>(), dv.as<float>()).ok());
      const std::vector<unsigned char> got =
          Download<unsigned char>(storage, num_blocks * geom.block_bytes());
      for (size_t b = 0; b < num_blocks; ++b) {
        const unsigned char* g = got.data() + (num_blocks - 1 - b) * geom.block_bytes();
        EXPECT_EQ(std::memcmp(g, host[b].data(), geom.block_bytes()), 0)
            << DTypeName(dt) << " bt=" << bt << " block " << b;
      }
    }
  }
}

// One decode token per sequence: the fused rotation and K/V write of a batch against ApplyRope
// and WriteKv on the CPU, each sequence with its own table and row.
TEST_F(CudaOpsTest, RopeWriteKvMatchesCpuPerSequence) {
  for (DType dt : {DType::kF32, DType::kBF16}) {
    for (size_t hd : {64, 128, 80}) {
      for (bool rope : {true, false}) {
        const size_t n = 5, q_heads = 8, bt = 16, per_seq = 4;
        const KvGeometry geom{.kv_heads = 2, .head_dim = hd, .block_tokens = bt, .dtype = dt};
        const size_t bb = geom.block_bytes();
        std::vector<float> inv_freq(hd / 2);
        for (size_t i = 0; i < hd / 2; ++i) {
          inv_freq[i] = std::pow(500000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(hd));
        }
        std::vector<int64_t> pos(n), rows(n);
        std::uniform_int_distribution<int64_t> pd(0, 130000), rd(0, per_seq * bt - 1);
        for (size_t i = 0; i < n; ++i) {
          pos[i] = pd(rng_);
          rows[i] = rd(rng_);
        }
        std::vector<float> q = RandomFloats(rng_, n * q_heads * hd);
        std::vector<float> k = RandomFloats(rng_, n * geom.kv_heads * hd);
        const std::vector<float> v = RandomFloats(rng_, k.size());
        // Host blocks with a pattern; the device holds them in a shuffled order (table stride
        // per_seq + 1: one unused entry per sequence).
        const size_t nb = n * per_seq;
        std::vector<std::vector<unsigned char>> host(nb, std::vector<unsigned char>(bb));
        for (size_t b = 0; b < nb; ++b) {
          for (size_t i = 0; i < bb; ++i) host[b][i] = static_cast<unsigned char>(3 * b + i);
        }
        DeviceBuffer storage = Poisoned(nb * bb);
        std::vector<void*> dev_table(n * (per_seq + 1), nullptr);
        for (size_t b = 0; b < nb; ++b) {
          void* d = storage.as<unsigned char>() + ((b * 7) % nb) * bb;
          dev_table[(b / per_seq) * (per_seq + 1) + b % per_seq] = d;
          ASSERT_TRUE(ctx_->CopyToDevice(d, host[b].data(), bb, stream_).ok());
        }
        DeviceBuffer table = Upload(dev_table);
        DeviceBuffer df = Upload(inv_freq), dp = Upload(pos), dr = Upload(rows);
        DeviceBuffer dq = Upload(q), dk = Upload(k), dv = Upload(v);
        ASSERT_TRUE(RopeWriteKv(stream_, geom, rope ? df.as<float>() : nullptr, dp.as<int64_t>(),
                                q_heads, dq.as<float>(), n, dk.as<float>(), dv.as<float>(),
                                table.as<void*>(), per_seq + 1, dr.as<int64_t>())
                        .ok());
        const std::vector<float> got_q = Download<float>(dq, q.size());
        const std::vector<float> got_k = Download<float>(dk, k.size());
        if (rope) {
          // ApplyRope on the device gives the same bits; so does the rotation alone (no blocks).
          DeviceBuffer aq = Upload(q), ak = Upload(k), oq = Upload(q), ok = Upload(k);
          ASSERT_TRUE(
              ApplyRope(stream_, df.as<float>(), hd, dp.as<int64_t>(), n, q_heads, aq.as<float>())
                  .ok());
          ASSERT_TRUE(ApplyRope(stream_, df.as<float>(), hd, dp.as<int64_t>(), n, geom.kv_heads,
                                ak.as<float>())
                          .ok());
          ASSERT_TRUE(RopeWriteKv(stream_, geom, df.as<float>(), dp.as<int64_t>(), q_heads,
                                  oq.as<float>(), n, ok.as<float>(), dv.as<float>(), nullptr, 0,
                                  nullptr)
                          .ok());
          EXPECT_EQ(Download<float>(aq, q.size()), got_q);
          EXPECT_EQ(Download<float>(ak, k.size()), got_k);
          EXPECT_EQ(Download<float>(oq, q.size()), got_q);
          EXPECT_EQ(Download<float>(ok, k.size()), got_k);
          ops::ApplyRope(inv_freq.data(), hd, pos.data(), n, q_heads, q.data());
          ops::ApplyRope(inv_freq.data(), hd, pos.data(), n, geom.kv_heads, k.data());
          EXPECT_LE(RelErr(got_q, q), kF32Tol);
          EXPECT_LE(RelErr(got_k, k), kF32Tol);
        } else {
          EXPECT_EQ(got_q, q);
          EXPECT_EQ(got_k, k);
        }
        // The blocks: the CPU write of the device's rotated k, sequence by sequence.
        std::vector<void*> host_ptrs(nb);
        for (size_t b = 0; b < nb; ++b) host_ptrs[b] = host[b].data();
        for (size_t i = 0; i < n; ++i) {
          ops::WriteKv(geom, host_ptrs.data() + i * per_seq, static_cast<size_t>(rows[i]), 1,
                       got_k.data() + i * geom.kv_heads * hd, v.data() + i * geom.kv_heads * hd);
        }
        const std::vector<unsigned char> got = Download<unsigned char>(storage, nb * bb);
        for (size_t b = 0; b < nb; ++b) {
          EXPECT_EQ(std::memcmp(got.data() + ((b * 7) % nb) * bb, host[b].data(), bb), 0)
              << DTypeName(dt) << " hd=" << hd << " rope=" << rope << " block " << b;
        }
      }
    }
  }
  const KvGeometry odd{.kv_heads = 1, .head_dim = 5, .block_tokens = 16, .dtype = DType::kF32};
  EXPECT_EQ(RopeWriteKv(stream_, odd, nullptr, nullptr, 0, nullptr, 1, nullptr, nullptr, nullptr, 1,
                        nullptr)
                .code(),
            StatusCode::kInvalidArgument);
}

TEST_F(CudaOpsTest, ArgmaxTakesLowestIdOnTiesAndSkipsNonFinite) {
  const size_t vocab = 151937;
  const size_t n = 5;
  std::vector<float> logits = RandomFloats(rng_, n * vocab, 10.0f);
  std::vector<int32_t> expect(n);
  // Row 0: plain. Row 1: tie between ids 100 and 90000. Row 2: NaN / inf larger than the max.
  // Row 3: all non-finite. Row 4: tie at ids 7 and 8 far from the others.
  logits[1 * vocab + 100] = 50.0f;
  logits[1 * vocab + 90000] = 50.0f;
  logits[2 * vocab + 5] = std::numeric_limits<float>::quiet_NaN();
  logits[2 * vocab + 6] = std::numeric_limits<float>::infinity();
  logits[2 * vocab + 77777] = 42.0f;
  for (size_t i = 0; i < vocab; ++i)
    logits[3 * vocab + i] = -std::numeric_limits<float>::infinity();
  logits[3 * vocab + 9] = std::numeric_limits<float>::quiet_NaN();
  logits[4 * vocab + 7] = 99.0f;
  logits[4 * vocab + 8] = 99.0f;
  for (size_t r = 0; r < n; ++r) {
    int32_t best = -1;
    for (size_t i = 0; i < vocab; ++i) {
      const float x = logits[r * vocab + i];
      if (std::isfinite(x) && (best < 0 || x > logits[r * vocab + best])) {
        best = static_cast<int32_t>(i);
      }
    }
    expect[r] = best;
  }
  EXPECT_EQ(expect[1], 100);
  EXPECT_EQ(expect[2], 77777);
  EXPECT_EQ(expect[3], -1);
  EXPECT_EQ(expect[4], 7);
  DeviceBuffer dl = Upload(logits);
  DeviceBuffer ids = Poisoned(n * 4);
  ASSERT_TRUE(ArgmaxSample(stream_, dl.as<float>(), n, vocab, ids.as<int32_t>()).ok());
  EXPECT_EQ(Download<int32_t>(ids, n), expect);
}

TEST_F(CudaOpsTest, LimitHelpersReturnPlausibleNumbers) {
  auto h2d = MeasurePinnedH2DBandwidth(*ctx_, size_t{8} << 20, 3);
  ASSERT_TRUE(h2d.ok()) << h2d.status().ToString();
  EXPECT_GT(*h2d, 1.0);  // GB/s: any PCIe link
  auto copy = MeasureDeviceCopyBandwidth(*ctx_, size_t{64} << 20, 3);
  ASSERT_TRUE(copy.ok()) << copy.status().ToString();
  EXPECT_GT(*copy, *h2d);
  auto read = MeasureDeviceReadBandwidth(*ctx_, size_t{64} << 20, 3);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_GT(*read, *h2d);  // a read-only stream of HBM beats any PCIe link
  auto gemm = MeasureGemmRate(*ctx_, DType::kBF16, 1024, 256, 1024, 3);
  ASSERT_TRUE(gemm.ok()) << gemm.status().ToString();
  EXPECT_GT(*gemm, 0.1);  // TFLOP/s
}

}  // namespace
}  // namespace kvstar::cuda
