#include "kv/exact_selection.h"

#include <algorithm>
#include <cmath>

#include "base/half.h"

namespace kvstar {
namespace {

float KeyAt(const KvGeometry& g, const void* block, size_t head, size_t token, size_t c) {
  const size_t off = g.offset(0, head, token) + c;
  if (g.dtype == DType::kF32) return static_cast<const float*>(block)[off];
  return BF16ToF32(static_cast<const bf16_t*>(block)[off]);
}

}  // namespace

std::vector<uint32_t> ExactSelection(const KvGeometry& g, const float* queries, size_t x,
                                     size_t q_heads, float scale, const void* const* blocks,
                                     size_t num_tokens, const std::vector<uint32_t>& candidates,
                                     size_t k, BlockVote vote) {
  const size_t bt = g.block_tokens;
  const size_t hd = g.head_dim;
  const size_t group = q_heads / g.kv_heads;
  const size_t nblocks = (num_tokens + bt - 1) / bt;
  std::vector<double> block_score(nblocks, 0.0);
  std::vector<float> key(hd);
  std::vector<double> logits(num_tokens);
  std::vector<double> mass(nblocks);
  for (size_t kvh = 0; kvh < g.kv_heads; ++kvh) {
    for (size_t qi = 0; qi < x; ++qi) {
      for (size_t h = kvh * group; h < (kvh + 1) * group; ++h) {
        const float* q = queries + (qi * q_heads + h) * hd;
        double mx = -1e300;
        for (size_t t = 0; t < num_tokens; ++t) {
          const void* blk = blocks[t / bt];
          double d = 0;
          for (size_t c = 0; c < hd; ++c) d += q[c] * KeyAt(g, blk, kvh, t % bt, c);
          logits[t] = d * scale;
          mx = std::max(mx, logits[t]);
        }
        double z = 0;
        for (size_t t = 0; t < num_tokens; ++t) z += (logits[t] = std::exp(logits[t] - mx));
        std::fill(mass.begin(), mass.end(), 0.0);
        for (size_t t = 0; t < num_tokens; ++t) mass[t / bt] += logits[t] / z;
        for (size_t b = 0; b < nblocks; ++b) {
          block_score[b] = vote == BlockVote::kSum ? block_score[b] + mass[b]
                                                   : std::max(block_score[b], mass[b]);
        }
      }
    }
  }
  std::vector<uint32_t> order = candidates;
  k = std::min(k, order.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<long>(k), order.end(),
                    [&](uint32_t a, uint32_t b) {
                      return block_score[a] != block_score[b] ? block_score[a] > block_score[b]
                                                              : a < b;
                    });
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}

}  // namespace kvstar
