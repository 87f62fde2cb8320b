// 128-bit hashing (XXH3-128 from libxxhash). Used for block ids and model fingerprints.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace kvstar {

struct Hash128 {
  uint64_t lo = 0;
  uint64_t hi = 0;

  bool operator==(const Hash128&) const = default;
  auto operator<=>(const Hash128&) const = default;
  // 32 lowercase hex digits, hi first.
  std::string ToHex() const;
  static bool FromHex(std::string_view hex, Hash128* out);
};

Hash128 HashBytes(const void* data, size_t size, uint64_t seed = 0);
// Hash of (prev, data): used to chain hashes (block id = Hash(prev_block_id, token ids)).
Hash128 HashChain(const Hash128& prev, const void* data, size_t size);

struct Hash128Hasher {
  size_t operator()(const Hash128& h) const {
    return static_cast<size_t>(h.lo ^ (h.hi * 0x9e3779b97f4a7c15ull));
  }
};

}  // namespace kvstar
