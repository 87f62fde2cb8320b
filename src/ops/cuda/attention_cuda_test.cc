// Attention over block tables on the device against the CPU op: head_dim 64/80/96/128, f32 and
// bf16 KV, GQA groups 1..8 (and 12, 16 across head chunks), block sizes that are and are not
// multiples of the K/V tile, partial tail blocks, decode (n = 1), several queries of one sequence,
// causal prefill, forced sequence splits (merge kernel) and batched decode over several tables.
// Both sides compute in f32 from the same stored K/V values, so f32 and bf16 KV share the f32
// tolerance. Skips itself when no CUDA device is present.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "base/half.h"
#include "base/kv_layout.h"
#include "base/thread_pool.h"
#include "gtest/gtest.h"
#include "ops/cpu/ops.h"
#include "ops/cpu/ops_test_util.h"
#include "ops/cuda/cuda_test_util.h"
#include "ops/cuda/ops.h"

namespace kvstar::cuda {
namespace {

using ops::testing::RandomFloats;
using testing::CudaTest;
using testing::kF32Tol;
using testing::RelErr;

ThreadPool& Pool() {
  static ThreadPool pool(2);
  return pool;
}

struct Case {
  size_t head_dim;
  DType dtype;
  size_t kv_heads;
  size_t group;
  size_t block_tokens;
  size_t num_tokens;
  size_t n;
  bool causal;            // q_last[i] = num_tokens - n + i; else every query sees all tokens
  size_t split_hint = 0;  // 0: the plan chooses
  AttentionKernelChoice kernel = AttentionKernelChoice::kAuto;
};

// Whether the plan should pick the decode kernel for this case.
bool DecodeKernelExpected(const Case& c) {
  return c.kernel != AttentionKernelChoice::kTiled && c.dtype == DType::kBF16 &&
         (c.head_dim == 64 || c.head_dim == 128) && c.group <= 8 && c.n == 1;
}

// Whether the plan should pick the tensor-core prefill kernel (several queries of one table).
bool PrefillKernelExpected(const Case& c) {
  return c.kernel != AttentionKernelChoice::kTiled && c.dtype == DType::kBF16 && c.n > 1;
}

// Both variants of the decode kernel, each forced.
constexpr AttentionKernelChoice kDecodeVariants[] = {AttentionKernelChoice::kDecodeFma,
                                                     AttentionKernelChoice::kDecodeMma};

// One sequence's KV blocks, on the host and on the device (device blocks in shuffled order).
struct Sequence {
  std::vector<std::vector<unsigned char>> host;  // [blocks][block_bytes]
  std::vector<const void*> host_ptrs;
  DeviceBuffer storage;
  std::vector<void*> dev_ptrs;
};

class CudaAttentionTest : public CudaTest {
 protected:
  Sequence MakeSequence(const KvGeometry& geom, size_t num_tokens) {
    Sequence s;
    const size_t blocks = (num_tokens + geom.block_tokens - 1) / geom.block_tokens;
    s.host.resize(blocks);
    const size_t elems = geom.elements_per_block();
    for (auto& b : s.host) {
      b.resize(geom.block_bytes());
      const std::vector<float> vals = RandomFloats(rng_, elems);
      if (geom.dtype == DType::kF32) {
        std::memcpy(b.data(), vals.data(), b.size());
      } else {
        auto* dst = reinterpret_cast<bf16_t*>(b.data());
        for (size_t i = 0; i < elems; ++i) dst[i] = F32ToBF16(vals[i]);
      }
      s.host_ptrs.push_back(b.data());
    }
    s.storage = Poisoned(blocks * geom.block_bytes());
    std::vector<size_t> order(blocks);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng_);
    for (size_t b = 0; b < blocks; ++b) {
      void* p = s.storage.as<unsigned char>() + order[b] * geom.block_bytes();
      s.dev_ptrs.push_back(p);
      EXPECT_TRUE(ctx_->CopyToDevice(p, s.host[b].data(), geom.block_bytes(), stream_).ok());
    }
    return s;
  }

  // Runs the case on both sides and returns ||gpu - cpu|| / ||cpu||.
  double RunCase(const Case& c) {
    const KvGeometry geom{.kv_heads = c.kv_heads,
                          .head_dim = c.head_dim,
                          .block_tokens = c.block_tokens,
                          .dtype = c.dtype};
    const size_t q_heads = c.kv_heads * c.group;
    Sequence seq = MakeSequence(geom, c.num_tokens);
    const std::vector<float> q = RandomFloats(rng_, c.n * q_heads * c.head_dim, 2.0f);
    std::vector<int64_t> q_last(c.n);
    for (size_t i = 0; i < c.n; ++i) {
      q_last[i] = c.causal ? static_cast<int64_t>(c.num_tokens - c.n + i)
                           : static_cast<int64_t>(c.num_tokens - 1);
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    std::vector<float> ref(q.size());
    ops::AttentionOverBlocks(Pool(), geom, q_heads, q.data(), c.n, q_last.data(),
                             seq.host_ptrs.data(), c.num_tokens, scale, ref.data());

    DeviceBuffer dq = Upload(q);
    DeviceBuffer dlast = Upload(q_last);
    DeviceBuffer dtable = Upload(seq.dev_ptrs);
    DeviceBuffer dout = Poisoned(q.size() * 4);
    AttentionArgs args;
    args.geom = geom;
    args.q_heads = q_heads;
    args.q = dq.as<float>();
    args.n = c.n;
    args.q_last = dlast.as<int64_t>();
    args.blocks = dtable.as<const void*>();
    args.num_tokens = c.num_tokens;
    args.scale = scale;
    args.out = dout.as<float>();
    auto plan = PlanAttention(args, ctx_->info().sm_count, c.split_hint, c.kernel);
    EXPECT_TRUE(plan.ok()) << plan.status().ToString();
    if (!plan.ok()) return INFINITY;
    EXPECT_EQ(plan->decode_kernel, DecodeKernelExpected(c));
    if (c.kernel == AttentionKernelChoice::kDecodeFma ||
        c.kernel == AttentionKernelChoice::kDecodeMma) {
      EXPECT_EQ(plan->decode_mma,
                plan->decode_kernel && c.kernel == AttentionKernelChoice::kDecodeMma);
    }
    EXPECT_EQ(plan->prefill_kernel, PrefillKernelExpected(c));
    if (c.split_hint > 0 && c.split_hint < c.num_tokens) {
      EXPECT_GT(plan->num_splits, 1u);
    }
    auto ws = DeviceBuffer::Allocate(plan->workspace_bytes);
    EXPECT_TRUE(ws.ok());
    const Status st = RunAttention(stream_, args, *plan, ws->data());
    EXPECT_TRUE(st.ok()) << st.ToString();
    return RelErr(Download<float>(dout, q.size()), ref);
  }

  std::mt19937 rng_{99};
};

TEST_F(CudaAttentionTest, DecodeHeadDimsGroupsAndDTypes) {
  for (AttentionKernelChoice k :
       {AttentionKernelChoice::kDecodeFma, AttentionKernelChoice::kDecodeMma,
        AttentionKernelChoice::kTiled}) {
    for (DType dt : {DType::kBF16, DType::kF32}) {
      for (size_t hd : {64, 80, 96, 128}) {
        for (size_t group : {1, 2, 3, 4, 5, 6, 7, 8}) {
          Case c{hd, dt, 2, group, 128, 777 + 31 * group, 1, true};
          c.kernel = k;
          SCOPED_TRACE(::testing::Message() << DTypeName(dt) << " hd=" << hd << " g=" << group
                                            << " kernel=" << static_cast<int>(k));
          EXPECT_LE(RunCase(c), kF32Tol);
        }
      }
    }
  }
}

// The decode kernel reads each token's block through the table per lane: block sizes that are
// not multiples of its loads, sequences shorter than one load, and forced pieces that end inside
// a block.
TEST_F(CudaAttentionTest, DecodeKernelOddBlocksShortSequencesAndPieces) {
  for (size_t hd : {64, 128}) {
    for (size_t bt : {1, 16, 48, 200}) {
      for (size_t tokens : {1, 3, 17, 1000}) {
        for (size_t group : {1, 4, 5, 8}) {
          for (AttentionKernelChoice k : kDecodeVariants) {
            SCOPED_TRACE(::testing::Message()
                         << "hd=" << hd << " bt=" << bt << " tokens=" << tokens << " g=" << group
                         << " kernel=" << static_cast<int>(k));
            EXPECT_LE(RunCase({hd, DType::kBF16, 3, group, bt, tokens, 1, true, 0, k}), kF32Tol);
            if (tokens > 64) {
              EXPECT_LE(RunCase({hd, DType::kBF16, 3, group, bt, tokens, 1, true, 64, k}), kF32Tol);
            }
          }
        }
      }
    }
  }
}

TEST_F(CudaAttentionTest, PrefillCausalAndMultiQuery) {
  using K = AttentionKernelChoice;
  for (DType dt : {DType::kBF16, DType::kF32}) {
    for (size_t group : {1, 3, 4, 8}) {
      for (size_t bt : {16, 128, 48}) {
        // bf16: the tensor-core prefill kernel, and the tiled kernel forced.
        for (K kernel :
             dt == DType::kBF16 ? std::vector<K>{K::kAuto, K::kTiled} : std::vector<K>{K::kAuto}) {
          SCOPED_TRACE(::testing::Message() << DTypeName(dt) << " g=" << group << " bt=" << bt
                                            << (kernel == K::kTiled ? " tiled" : ""));
          // Whole-prompt prefill, a chunk of a prompt after a prefix, several decode queries.
          EXPECT_LE(RunCase({128, dt, 2, group, bt, 300, 300, true, 0, kernel}), kF32Tol);
          EXPECT_LE(RunCase({80, dt, 1, group, bt, 1000, 37, true, 0, kernel}), kF32Tol);
          EXPECT_LE(RunCase({64, dt, 4, group, bt, 513, 3, false, 0, kernel}), kF32Tol);
        }
      }
    }
  }
  // Prefill kernel: a long chunk (many tiles and CTAs), 96-dim heads, a row count that leaves
  // most of a CTA empty (5 queries x group 3), and a prompt inside one tile.
  EXPECT_LE(RunCase({128, DType::kBF16, 8, 4, 128, 2500, 700, true}), kF32Tol);
  EXPECT_LE(RunCase({96, DType::kBF16, 2, 2, 64, 700, 200, true}), kF32Tol);
  EXPECT_LE(RunCase({64, DType::kBF16, 3, 3, 16, 90, 5, true}), kF32Tol);
  EXPECT_LE(RunCase({128, DType::kBF16, 1, 4, 128, 40, 40, true}), kF32Tol);
}

TEST_F(CudaAttentionTest, ForcedSplitsAndLargeGroups) {
  for (DType dt : {DType::kBF16, DType::kF32}) {
    for (size_t split : {32, 64, 200, 1000}) {
      SCOPED_TRACE(::testing::Message() << DTypeName(dt) << " split=" << split);
      EXPECT_LE(RunCase({128, dt, 8, 4, 128, 3000, 1, true, split}), kF32Tol);
      EXPECT_LE(RunCase({96, dt, 2, 2, 48, 1500, 20, true, split}), kF32Tol);
    }
    for (size_t group : {12, 16}) {
      SCOPED_TRACE(::testing::Message() << DTypeName(dt) << " g=" << group);
      EXPECT_LE(RunCase({128, dt, 2, group, 64, 900, 1, true}), kF32Tol);
      EXPECT_LE(RunCase({64, dt, 1, group, 64, 400, 50, true}), kF32Tol);
    }
  }
}

TEST_F(CudaAttentionTest, LongDecodeAutoSplit) {
  for (AttentionKernelChoice k : kDecodeVariants) {
    EXPECT_LE(RunCase({128, DType::kBF16, 8, 4, 128, 40000, 1, true, 0, k}), kF32Tol);
  }
  EXPECT_LE(RunCase({128, DType::kF32, 2, 8, 256, 20011, 2, true}), kF32Tol);
}

// Decode of several sequences of different lengths in one call (blocks_stride > 0), each against
// the CPU op on its own table.
TEST_F(CudaAttentionTest, BatchedDecodeOverSeveralTables) {
  // Variants: the decode kernel's FMA and tensor-core forms, the tiled kernel, f32 KV.
  for (int variant = 0; variant < 4; ++variant) {
    const DType dt = variant == 3 ? DType::kF32 : DType::kBF16;
    const AttentionKernelChoice kernel = variant == 0   ? AttentionKernelChoice::kDecodeFma
                                         : variant == 1 ? AttentionKernelChoice::kDecodeMma
                                         : variant == 2 ? AttentionKernelChoice::kTiled
                                                        : AttentionKernelChoice::kAuto;
    const KvGeometry geom{.kv_heads = 4, .head_dim = 128, .block_tokens = 128, .dtype = dt};
    const size_t group = 4;
    const size_t q_heads = geom.kv_heads * group;
    const std::vector<size_t> lens = {5000, 1, 129, 3333};
    const size_t max_blocks = (5000 + 127) / 128;
    std::vector<Sequence> seqs;
    std::vector<void*> table(lens.size() * max_blocks, nullptr);
    for (size_t s = 0; s < lens.size(); ++s) {
      seqs.push_back(MakeSequence(geom, lens[s]));
      std::copy(seqs[s].dev_ptrs.begin(), seqs[s].dev_ptrs.end(), table.begin() + s * max_blocks);
    }
    const std::vector<float> q = RandomFloats(rng_, lens.size() * q_heads * 128, 2.0f);
    std::vector<int64_t> q_last(lens.size());
    for (size_t s = 0; s < lens.size(); ++s) q_last[s] = static_cast<int64_t>(lens[s]) - 1;
    const float scale = 0.088f;
    std::vector<float> ref(q.size());
    for (size_t s = 0; s < lens.size(); ++s) {
      ops::AttentionOverBlocks(Pool(), geom, q_heads, q.data() + s * q_heads * 128, 1, &q_last[s],
                               seqs[s].host_ptrs.data(), lens[s], scale,
                               ref.data() + s * q_heads * 128);
    }
    DeviceBuffer dq = Upload(q);
    DeviceBuffer dlast = Upload(q_last);
    DeviceBuffer dtable = Upload(table);
    DeviceBuffer dout = Poisoned(q.size() * 4);
    AttentionArgs args;
    args.geom = geom;
    args.q_heads = q_heads;
    args.q = dq.as<float>();
    args.n = lens.size();
    args.q_last = dlast.as<int64_t>();
    args.blocks = dtable.as<const void*>();
    args.blocks_stride = max_blocks;
    args.num_tokens = 5000;
    args.scale = scale;
    args.out = dout.as<float>();
    auto plan = PlanAttention(args, ctx_->info().sm_count, 0, kernel);
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    EXPECT_GT(plan->num_splits, 1u);
    EXPECT_EQ(plan->decode_kernel, variant <= 1);
    EXPECT_EQ(plan->decode_mma, variant == 1);
    auto ws = DeviceBuffer::Allocate(plan->workspace_bytes);
    ASSERT_TRUE(ws.ok());
    ASSERT_TRUE(RunAttention(stream_, args, *plan, ws->data()).ok());
    EXPECT_LE(RelErr(Download<float>(dout, q.size()), ref), kF32Tol) << "variant " << variant;
  }
}

// kAuto plans the variant chosen process-wide; the forced choices ignore it.
TEST_F(CudaAttentionTest, AutoPlansTheProcessWideDecodeVariant) {
  const bool before = DecodeAttentionOnTensorCores();
  AttentionArgs args;
  args.geom = KvGeometry{.kv_heads = 2, .head_dim = 128, .block_tokens = 16, .dtype = DType::kBF16};
  args.q_heads = 8;
  args.n = 1;
  args.num_tokens = 100;
  for (bool on : {false, true}) {
    SetDecodeAttentionOnTensorCores(on);
    auto plan = PlanAttention(args, ctx_->info().sm_count);
    ASSERT_TRUE(plan.ok());
    EXPECT_TRUE(plan->decode_kernel);
    EXPECT_EQ(plan->decode_mma, on);
    plan = PlanAttention(args, ctx_->info().sm_count, 0, AttentionKernelChoice::kDecodeFma);
    ASSERT_TRUE(plan.ok());
    EXPECT_FALSE(plan->decode_mma);
    plan = PlanAttention(args, ctx_->info().sm_count, 0, AttentionKernelChoice::kDecodeMma);
    ASSERT_TRUE(plan.ok());
    EXPECT_TRUE(plan->decode_mma);
  }
  SetDecodeAttentionOnTensorCores(before);
}

TEST_F(CudaAttentionTest, PlanRejectsUnsupportedShapes) {
  AttentionArgs args;
  args.geom = KvGeometry{.kv_heads = 2, .head_dim = 72, .block_tokens = 16, .dtype = DType::kBF16};
  args.q_heads = 4;
  args.n = 1;
  args.num_tokens = 10;
  EXPECT_EQ(PlanAttention(args, 132).status().code(), StatusCode::kUnimplemented);
  args.geom.head_dim = 128;
  args.q_heads = 3;
  EXPECT_EQ(PlanAttention(args, 132).status().code(), StatusCode::kInvalidArgument);
  args.q_heads = 4;
  args.geom.dtype = DType::kF16;
  EXPECT_EQ(PlanAttention(args, 132).status().code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace kvstar::cuda
