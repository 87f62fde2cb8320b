// Block ids: 128-bit content ids for KV blocks. The id of block i of layer L is a hash chain over
// the token ids of blocks 0..i, seeded with the model fingerprint and mixed with L. Equal prefixes
// therefore give equal ids across requests and process restarts (prefix reuse), and a block's id
// changes as soon as any earlier token differs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/half.h"
#include "base/hash.h"

namespace kvstar {

// The seed of a KV cache's block ids: the model's weights fingerprint mixed with the KV element
// type, so that caches of one model in bf16 and in f32 never share an id (their blocks differ in
// size and layout). The CPU and CUDA engines use the same seed: a prefix stored by one is reused
// by the other.
Hash128 KvFingerprint(const Hash128& model_fingerprint, DType kv_dtype);

// Layer-independent chain: element i hashes (model_fingerprint, tokens of blocks 0..i). Only full
// blocks get a hash; a partial tail block has none (it is never stored).
std::vector<Hash128> PrefixChain(const Hash128& model_fingerprint, std::span<const int32_t> tokens,
                                 size_t block_tokens);

// The id of one block for one layer, given its PrefixChain element.
Hash128 LayerBlockId(const Hash128& prefix_hash, int layer);

// One id per full block of `tokens` for `layer`: LayerBlockId(PrefixChain(...)[i], layer).
// Callers that need ids for many layers should compute PrefixChain once.
std::vector<Hash128> BlockIds(const Hash128& model_fingerprint, int layer,
                              std::span<const int32_t> tokens, size_t block_tokens);

// Id of a companion entry of a block (e.g. DerivedId(block_id, "repr") for its KVstar
// representation). Distinct tags give distinct ids.
Hash128 DerivedId(const Hash128& id, std::string_view tag);

}  // namespace kvstar
