#include "sparse/channel_importance.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "sparse/kv_element.h"

namespace kvstar::sparse {

ChannelIndex ChannelIndex::Identity(size_t kv_heads, size_t head_dim) {
  ChannelIndex index{.kv_heads = kv_heads, .head_dim = head_dim, .d_pruned = head_dim};
  index.channels.resize(kv_heads * head_dim);
  for (size_t h = 0; h < kv_heads; ++h) {
    for (size_t c = 0; c < head_dim; ++c)
      index.channels[h * head_dim + c] = static_cast<uint16_t>(c);
  }
  return index;
}

Status ChannelIndex::Validate() const {
  if (kv_heads == 0 || head_dim == 0 || d_pruned == 0 || d_pruned > head_dim) {
    return InvalidArgument("channel index shape kv_heads=%zu head_dim=%zu d_pruned=%zu is invalid",
                           kv_heads, head_dim, d_pruned);
  }
  if (head_dim > 65535) return InvalidArgument("head_dim %zu exceeds 65535", head_dim);
  if (channels.size() != kv_heads * d_pruned) {
    return InvalidArgument("channel index holds %zu entries, expected kv_heads*d_pruned = %zu",
                           channels.size(), kv_heads * d_pruned);
  }
  for (size_t h = 0; h < kv_heads; ++h) {
    const uint16_t* c = head(h);
    for (size_t i = 0; i < d_pruned; ++i) {
      if (c[i] >= head_dim || (i > 0 && c[i] <= c[i - 1])) {
        return InvalidArgument(
            "channel index of KV head %zu is not strictly ascending inside [0, %zu) at %zu", h,
            head_dim, i);
      }
    }
  }
  return Status::Ok();
}

StatusOr<size_t> PrunedDim(size_t head_dim, double prune_ratio) {
  if (!(prune_ratio > 0.0) || prune_ratio > 1.0) {
    return InvalidArgument("blk_repre_dim_prune_ratio must be in (0, 1], got %g", prune_ratio);
  }
  if (prune_ratio >= 0.98) return head_dim;
  const auto d = static_cast<size_t>(std::lround(static_cast<double>(head_dim) * prune_ratio));
  if (d == 0) {
    return InvalidArgument("blk_repre_dim_prune_ratio %g keeps no channel of head_dim %zu",
                           prune_ratio, head_dim);
  }
  return std::min(d, head_dim);
}

ChannelImportanceAccumulator::ChannelImportanceAccumulator(size_t kv_heads, size_t head_dim,
                                                           double prune_ratio)
    : kv_heads_(kv_heads),
      head_dim_(head_dim),
      prune_ratio_(prune_ratio),
      abs_sum_(kv_heads * head_dim, 0.0) {}

Status ChannelImportanceAccumulator::AddBlock(const void* block, const KvGeometry& geometry,
                                              size_t valid_tokens) {
  if (geometry.kv_heads != kv_heads_ || geometry.head_dim != head_dim_) {
    return InvalidArgument(
        "block geometry kv_heads=%zu head_dim=%zu does not match the accumulator's %zu/%zu",
        geometry.kv_heads, geometry.head_dim, kv_heads_, head_dim_);
  }
  if (valid_tokens > geometry.block_tokens) {
    return InvalidArgument("valid_tokens %zu exceeds block_tokens %zu", valid_tokens,
                           geometry.block_tokens);
  }
  if (block == nullptr && valid_tokens > 0) return InvalidArgument("null KV block");
  for (size_t h = 0; h < kv_heads_; ++h) {
    double* sums = abs_sum_.data() + h * head_dim_;
    for (size_t t = 0; t < valid_tokens; ++t) {
      const size_t base = geometry.offset(0, h, t);
      for (size_t c = 0; c < head_dim_; ++c) {
        sums[c] += std::fabs(internal::LoadAsF32(block, geometry.dtype, base + c));
      }
    }
  }
  tokens_ += valid_tokens;
  return Status::Ok();
}

std::vector<double> ChannelImportanceAccumulator::Importance() const {
  if (tokens_ == 0) return {};
  std::vector<double> mean(abs_sum_);
  for (double& v : mean) v /= static_cast<double>(tokens_);
  return mean;
}

StatusOr<ChannelIndex> ChannelImportanceAccumulator::Finalize() const {
  if (tokens_ == 0) {
    return FailedPrecondition("channel importance needs at least one prompt token");
  }
  const std::vector<double> importance = Importance();
  return SelectChannels(importance, kv_heads_, head_dim_, prune_ratio_);
}

StatusOr<ChannelIndex> SelectChannels(std::span<const double> importance, size_t kv_heads,
                                      size_t head_dim, double prune_ratio) {
  KVSTAR_ASSIGN_OR_RETURN(const size_t d_pruned, PrunedDim(head_dim, prune_ratio));
  if (importance.size() != kv_heads * head_dim) {
    return InvalidArgument("importance table has %zu entries, expected %zu", importance.size(),
                           kv_heads * head_dim);
  }
  if (head_dim == 0 || head_dim > 65535) return InvalidArgument("head_dim %zu", head_dim);
  ChannelIndex index{.kv_heads = kv_heads, .head_dim = head_dim, .d_pruned = d_pruned};
  index.channels.reserve(kv_heads * d_pruned);
  std::vector<uint16_t> order(head_dim);
  for (size_t h = 0; h < kv_heads; ++h) {
    const double* imp = importance.data() + h * head_dim;
    for (size_t c = 0; c < head_dim; ++c) {
      if (!std::isfinite(imp[c])) {
        return InvalidArgument("channel importance of KV head %zu channel %zu is %g (NaN/Inf keys)",
                               h, c, imp[c]);
      }
    }
    std::iota(order.begin(), order.end(), uint16_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [imp](uint16_t a, uint16_t b) { return imp[a] > imp[b]; });
    std::vector<uint16_t> kept(order.begin(), order.begin() + static_cast<ptrdiff_t>(d_pruned));
    std::sort(kept.begin(), kept.end());
    index.channels.insert(index.channels.end(), kept.begin(), kept.end());
  }
  return index;
}

}  // namespace kvstar::sparse
