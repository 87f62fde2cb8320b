#include "kv/exact_selection.h"

#include <algorithm>
#include <cmath>

#include "base/half.h"

namespace kvstar {
namespace {

// Key row (head, token) of a block as floats.
void KeyRow(const KvGeometry& g, const void* block, size_t head, size_t token, float* out) {
  const size_t off = g.offset(0, head, token);
  if (g.dtype == DType::kF32) {
    const float* k = static_cast<const float*>(block) + off;
    std::copy(k, k + g.head_dim, out);
    return;
  }
  const bf16_t* k = static_cast<const bf16_t*>(block) + off;
  for (size_t c = 0; c < g.head_dim; ++c) out[c] = BF16ToF32(k[c]);
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
  std::vector<double> logits(group * num_tokens);  // [head of the group][token]
  std::vector<double> mass(nblocks);
  for (size_t kvh = 0; kvh < g.kv_heads; ++kvh) {
    for (size_t qi = 0; qi < x; ++qi) {
      // Each key row is converted once per query and met by the group's heads; each logit is
      // the same float-product, double-sum dot product in channel order as head by head.
      const float* q0 = queries + (qi * q_heads + kvh * group) * hd;
      for (size_t t = 0; t < num_tokens; ++t) {
        KeyRow(g, blocks[t / bt], kvh, t % bt, key.data());
        for (size_t j = 0; j < group; ++j) {
          const float* q = q0 + j * hd;
          double d = 0;
          for (size_t c = 0; c < hd; ++c) d += q[c] * key[c];
          logits[j * num_tokens + t] = d * scale;
        }
      }
      for (size_t j = 0; j < group; ++j) {
        double* lg = logits.data() + j * num_tokens;
        double mx = -1e300;
        for (size_t t = 0; t < num_tokens; ++t) mx = std::max(mx, lg[t]);
        double z = 0;
        for (size_t t = 0; t < num_tokens; ++t) z += (lg[t] = std::exp(lg[t] - mx));
        std::fill(mass.begin(), mass.end(), 0.0);
        for (size_t t = 0; t < num_tokens; ++t) mass[t / bt] += lg[t] / z;
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
