// tokenizer.json "model" of type BPE over raw bytes: the vocabulary is kept as byte strings
// (GPT-2's byte <-> unicode map undone at load time) so that encoding never builds the
// unicode-mapped text.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"

namespace kvstar::tokenizer_internal {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using BytesToId = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  BpeModel() = default;
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // model: the tokenizer.json "model" object (type BPE). Fills token_to_id and id_to_token
  // (index = id) with the vocabulary's own spelling; ids without a token stay empty.
  Status Init(const nlohmann::json& model, BytesToId* token_to_id,
              std::vector<std::string>* id_to_token);

  // Appends the ids of one pre-tokenized word (raw bytes). Thread-safe.
  void Encode(std::string_view word, std::vector<int32_t>* out) const;

  size_t num_merges() const { return merges_.size(); }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void MergeWord(std::string_view word, std::vector<int32_t>* ids) const;

  BytesToId vocab_;                      // raw bytes -> id (byte-level-encodable tokens only)
  std::array<int32_t, 256> byte_ids_{};  // -1: byte not in the vocabulary
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> rank, merged id
  std::optional<int32_t> unk_id_;
  bool ignore_merges_ = false;

  // Word cache, sharded to keep threads that encode at once off each other's lock.
  static constexpr size_t kCacheShards = 16;
  static constexpr size_t kCacheEntriesPerShard = 8192;
  static constexpr size_t kMaxCachedWordBytes = 256;
  struct CacheShard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> words;
  };
  mutable std::array<CacheShard, kCacheShards> cache_;
};

}  // namespace kvstar::tokenizer_internal
