#include "sparse/retrieval_reference.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "sparse/channel_importance.h"

namespace kvstar::sparse::testing {

std::vector<double> ReferenceScores(const RetrievalTask& t) {
  const RepresentationView& v = t.reps;
  const size_t kvh = v.kv_heads();
  const size_t d = v.d_pruned();
  const size_t hd = v.head_dim();
  const size_t m_per_block = v.vectors_per_block();
  const size_t group = t.q_heads / kvh;
  const size_t c_count = t.candidates.size();
  const double scale = t.options.scale_by_inv_sqrt_head_dim ? 1.0 / std::sqrt(double(hd)) : 1.0;
  std::vector<double> head_scores(c_count * kvh, 0.0);  // [candidates][kv_heads]
  std::vector<double> logits(c_count * m_per_block);
  for (size_t g = 0; g < kvh; ++g) {
    const uint16_t* chans = v.channels().head(g);
    for (size_t x = 0; x < t.num_queries; ++x) {
      for (size_t j = 0; j < group; ++j) {
        const float* q = t.queries.data() + (x * t.q_heads + g * group + j) * hd;
        double mx = -INFINITY;
        for (size_t i = 0; i < c_count; ++i) {
          const uint16_t* rep = v.block(t.candidates[i]);
          for (size_t m = 0; m < m_per_block; ++m) {
            double s = 0;
            for (size_t c = 0; c < d; ++c) {
              const uint16_t bits = rep[(m * kvh + g) * d + c];
              const double k =
                  v.dtype() == DType::kBF16 ? BF16ToF32(bf16_t{bits}) : F16ToF32(f16_t{bits});
              s += double(q[chans[c]]) * k;
            }
            logits[i * m_per_block + m] = s * scale;
            mx = std::max(mx, s * scale);
          }
        }
        double z = 0;
        for (double& l : logits) z += (l = std::exp(l - mx));
        for (size_t i = 0; i < c_count; ++i) {
          double p = 0;
          for (size_t m = 0; m < m_per_block; ++m) p += logits[i * m_per_block + m];
          head_scores[i * kvh + g] += p / z;
        }
      }
    }
  }
  if (t.options.select_per_kv_head) return head_scores;
  std::vector<double> scores(c_count, 0.0);
  for (size_t i = 0; i < c_count; ++i) {
    for (size_t g = 0; g < kvh; ++g) scores[i] += head_scores[i * kvh + g];
  }
  return scores;
}

std::vector<uint32_t> ReferenceTopK(const std::vector<double>& scores, size_t stride,
                                    const std::vector<uint32_t>& candidates, size_t k) {
  std::vector<size_t> pos(candidates.size());
  std::iota(pos.begin(), pos.end(), size_t{0});
  std::sort(pos.begin(), pos.end(), [&](size_t a, size_t b) {
    const double sa = scores[a * stride], sb = scores[b * stride];
    return sa != sb ? sa > sb : candidates[a] < candidates[b];
  });
  std::vector<uint32_t> out;
  for (size_t i = 0; i < std::min(k, pos.size()); ++i) out.push_back(candidates[pos[i]]);
  std::sort(out.begin(), out.end());
  return out;
}

SelectionComparison CompareSelection(const std::vector<double>& scores, size_t stride,
                                     const std::vector<uint32_t>& candidates, size_t k,
                                     const std::vector<uint32_t>& got, double rel_eps) {
  SelectionComparison r;
  const std::vector<uint32_t> want = ReferenceTopK(scores, stride, candidates, k);
  if (k == 0 || candidates.empty()) {
    r.mismatches = r.unexplained = got.size();
    return r;
  }
  std::vector<double> sorted;
  for (size_t i = 0; i < candidates.size(); ++i) sorted.push_back(scores[i * stride]);
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  const double kth = sorted[std::min(k, sorted.size()) - 1];
  const double tol = rel_eps * std::abs(kth) + 1e-30;
  std::vector<uint32_t> diff;
  std::set_symmetric_difference(want.begin(), want.end(), got.begin(), got.end(),
                                std::back_inserter(diff));
  r.mismatches = diff.size();
  for (uint32_t b : diff) {
    const auto it = std::find(candidates.begin(), candidates.end(), b);
    if (it == candidates.end()) {
      ++r.unexplained;
      continue;
    }
    const double s = scores[size_t(it - candidates.begin()) * stride];
    if (std::abs(s - kth) > tol) ++r.unexplained;
  }
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (std::abs(scores[i * stride] - kth) <= tol) ++r.near_ties;
  }
  return r;
}

std::unique_ptr<BlockRepresentations> RandomRepresentations(const RandomLayerSpec& spec,
                                                            std::mt19937_64& rng) {
  const KvGeometry geo{.kv_heads = spec.kv_heads,
                       .head_dim = spec.head_dim,
                       .block_tokens = spec.block_tokens,
                       .dtype = spec.kv_dtype};
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uni(0.2f, 2.0f);
  std::vector<float> chan_scale(spec.kv_heads * spec.head_dim);
  for (float& s : chan_scale) s = uni(rng);
  std::vector<uint8_t> block(geo.block_bytes());
  std::vector<float> bias(spec.kv_heads * spec.head_dim);
  auto fill = [&] {
    for (float& b : bias) b = 1.5f * normal(rng);
    for (size_t h = 0; h < spec.kv_heads; ++h) {
      for (size_t t = 0; t < spec.block_tokens; ++t) {
        for (size_t c = 0; c < spec.head_dim; ++c) {
          const float k =
              normal(rng) * chan_scale[h * spec.head_dim + c] + bias[h * spec.head_dim + c];
          const size_t off = geo.offset(0, h, t) + c;
          if (spec.kv_dtype == DType::kF32) {
            reinterpret_cast<float*>(block.data())[off] = k;
          } else if (spec.kv_dtype == DType::kBF16) {
            reinterpret_cast<bf16_t*>(block.data())[off] = F32ToBF16(k);
          } else {
            reinterpret_cast<f16_t*>(block.data())[off] = F32ToF16(k);
          }
        }
      }
    }
  };
  // Channel importance from the first few blocks (a "prompt"), then every block is appended.
  ChannelImportanceAccumulator acc(spec.kv_heads, spec.head_dim, spec.prune_ratio);
  std::mt19937_64 saved = rng;
  for (size_t b = 0; b < std::min<size_t>(spec.blocks, 4); ++b) {
    fill();
    KVSTAR_CHECK(acc.AddBlock(block.data(), geo).ok(), "AddBlock");
  }
  rng = saved;
  auto channels = acc.Finalize();
  KVSTAR_CHECK(channels.ok(), "%s", channels.status().ToString().c_str());
  auto reps = BlockRepresentations::Create(
      geo, std::move(channels).value(),
      RepresentationOptions{.merge = spec.merge, .dtype = spec.rep_dtype});
  KVSTAR_CHECK(reps.ok(), "%s", reps.status().ToString().c_str());
  for (size_t b = 0; b < spec.blocks; ++b) {
    fill();
    KVSTAR_CHECK((*reps)->Append(block.data(), geo).ok(), "Append");
  }
  return std::move(reps).value();
}

std::vector<float> RandomQueries(size_t num_queries, size_t q_heads, size_t head_dim, float scale,
                                 std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> q(num_queries * q_heads * head_dim);
  for (float& v : q) v = normal(rng);
  return q;
}

}  // namespace kvstar::sparse::testing
