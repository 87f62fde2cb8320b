#include "store/block_id.h"

#include <bit>
#include <cstring>
#include <string>

#include "base/check.h"

namespace kvstar {
namespace {

// Token ids are hashed as their in-memory int32 bytes; ids must not depend on the host.
static_assert(std::endian::native == std::endian::little, "block ids assume a little-endian host");

// Domain separators keep the three kinds of hashes from ever colliding with each other.
constexpr char kChainDomain[] = "kvstar.block.chain.v1";
constexpr char kLayerDomain[] = "kvstar.block.layer.v1";
constexpr char kDerivedDomain[] = "kvstar.block.derived.v1";

}  // namespace

Hash128 KvFingerprint(const Hash128& model_fingerprint, DType kv_dtype) {
  return DerivedId(model_fingerprint, std::string("kv.") + DTypeName(kv_dtype));
}

std::vector<Hash128> PrefixChain(const Hash128& model_fingerprint, std::span<const int32_t> tokens,
                                 size_t block_tokens) {
  KVSTAR_CHECK(block_tokens > 0, "block_tokens=%zu", block_tokens);
  const size_t blocks = tokens.size() / block_tokens;
  std::vector<Hash128> chain;
  chain.reserve(blocks);
  Hash128 prev = HashChain(model_fingerprint, kChainDomain, sizeof(kChainDomain) - 1);
  for (size_t b = 0; b < blocks; ++b) {
    prev = HashChain(prev, tokens.data() + b * block_tokens, block_tokens * sizeof(int32_t));
    chain.push_back(prev);
  }
  return chain;
}

Hash128 LayerBlockId(const Hash128& prefix_hash, int layer) {
  unsigned char buf[sizeof(kLayerDomain) - 1 + sizeof(int32_t)];
  std::memcpy(buf, kLayerDomain, sizeof(kLayerDomain) - 1);
  const int32_t l = layer;
  std::memcpy(buf + sizeof(kLayerDomain) - 1, &l, sizeof(l));
  return HashChain(prefix_hash, buf, sizeof(buf));
}

std::vector<Hash128> BlockIds(const Hash128& model_fingerprint, int layer,
                              std::span<const int32_t> tokens, size_t block_tokens) {
  std::vector<Hash128> ids = PrefixChain(model_fingerprint, tokens, block_tokens);
  for (Hash128& id : ids) id = LayerBlockId(id, layer);
  return ids;
}

Hash128 DerivedId(const Hash128& id, std::string_view tag) {
  std::string buf(kDerivedDomain, sizeof(kDerivedDomain) - 1);
  // The tag length goes in first so that ("ab","c") and ("a","bc")-style splits cannot meet.
  const uint64_t len = tag.size();
  buf.append(reinterpret_cast<const char*>(&len), sizeof(len));
  buf.append(tag);
  return HashChain(id, buf.data(), buf.size());
}

}  // namespace kvstar
