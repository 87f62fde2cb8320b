#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kvstar {

Status ValidateSamplingParams(const SamplingParams& p) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) {
    return InvalidArgument("--temperature must be a finite number >= 0, got %g", p.temperature);
  }
  if (p.top_k < 0) return InvalidArgument("--top-k must be >= 0, got %d", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) {
    return InvalidArgument("--top-p must be in (0, 1], got %g", p.top_p);
  }
  return Status::Ok();
}

StatusOr<int32_t> Sampler::Sample(std::span<const float> logits) {
  if (logits.empty()) return InvalidArgument("empty logits");
  if (params_.temperature == 0.0f) {
    int32_t best = -1;
    float best_v = -std::numeric_limits<float>::infinity();
    for (size_t i = 0; i < logits.size(); ++i) {
      if (std::isfinite(logits[i]) && (best < 0 || logits[i] > best_v)) {
        best = static_cast<int32_t>(i);
        best_v = logits[i];
      }
    }
    if (best < 0) return Internal("all %zu logits are NaN or infinite", logits.size());
    return best;
  }
  candidates_.clear();
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isfinite(logits[i])) {
      candidates_.emplace_back(logits[i] / params_.temperature, static_cast<int32_t>(i));
    }
  }
  if (candidates_.empty()) return Internal("all %zu logits are NaN or infinite", logits.size());
  // Highest first; ties by lower id so that results do not depend on the sort's stability.
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  };
  size_t keep = candidates_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < keep) {
    keep = static_cast<size_t>(params_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<long>(keep),
                      candidates_.end(), by_logit);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  candidates_.resize(keep);
  const float max_logit = candidates_[0].first;
  double total = 0.0;
  std::vector<double> probs(keep);
  for (size_t i = 0; i < keep; ++i) {
    probs[i] = std::exp(static_cast<double>(candidates_[i].first - max_logit));
    total += probs[i];
  }
  if (params_.top_p < 1.0f) {
    double cumulative = 0.0;
    size_t cut = keep;
    for (size_t i = 0; i < keep; ++i) {
      cumulative += probs[i] / total;
      if (cumulative >= params_.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    total = 0.0;
    for (size_t i = 0; i < keep; ++i) total += probs[i];
  }
  std::uniform_real_distribution<double> uniform(0.0, total);
  double r = uniform(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= probs[i];
    if (r <= 0.0) return candidates_[i].second;
  }
  return candidates_[keep - 1].second;
}

}  // namespace kvstar
