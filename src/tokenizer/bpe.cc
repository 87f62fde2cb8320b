#include "tokenizer/bpe.h"

#include <nlohmann/json.hpp>
#include <queue>

#include "tokenizer/unicode.h"

namespace kvstar::tokenizer_internal {

namespace {

// A piece of the word being merged: a doubly linked list over a vector, as in tokenizers'
// Word::merge_all. len == 0 marks a symbol absorbed into its left neighbour.
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  int32_t len;
};

struct QueuedMerge {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  // std::priority_queue pops the largest: lowest rank first, then leftmost.
  bool operator<(const QueuedMerge& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

}  // namespace

Status BpeModel::Init(const nlohmann::json& model, BytesToId* token_to_id,
                      std::vector<std::string>* id_to_token) {
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return InvalidArgument("model.vocab is missing or not an object");
  }
  if (!model.contains("merges") || !model["merges"].is_array()) {
    return InvalidArgument("model.merges is missing or not an array");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
      return Unimplemented("model.%s is not supported (byte-level BPE does not use it)", key);
    }
  }
  if (model.value("byte_fallback", false)) {
    return Unimplemented("model.byte_fallback is not supported (only byte-level BPE is)");
  }
  ignore_merges_ = model.value("ignore_merges", false);

  std::string bytes;
  token_to_id->reserve(model["vocab"].size());
  vocab_.reserve(model["vocab"].size());
  for (const auto& [token, id_json] : model["vocab"].items()) {
    if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 ||
        id_json.get<int64_t>() > INT32_MAX - 1) {
      return InvalidArgument("model.vocab[\"%s\"] is not a valid id: %s", token.c_str(),
                             id_json.dump().c_str());
    }
    const auto id = static_cast<int32_t>(id_json.get<int64_t>());
    if (static_cast<size_t>(id) >= id_to_token->size()) id_to_token->resize(id + 1);
    (*id_to_token)[id] = token;
    (*token_to_id)[token] = id;
    if (ByteLevelDecode(token, &bytes)) vocab_[bytes] = id;
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = vocab_.find(std::string(1, static_cast<char>(b)));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    const std::string unk = model["unk_token"].get<std::string>();
    const auto it = token_to_id->find(unk);
    if (it == token_to_id->end()) {
      return InvalidArgument("model.unk_token \"%s\" is not in the vocabulary", unk.c_str());
    }
    unk_id_ = it->second;
  }

  const auto& merges = model["merges"];
  merges_.reserve(merges.size());
  std::string merged;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& m = merges[rank];
    std::string a, b;
    if (m.is_string()) {
      const std::string line = m.get<std::string>();
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        return InvalidArgument("model.merges[%zu] \"%s\" is not two tokens separated by a space",
                               rank, line.c_str());
      }
      a = line.substr(0, space);
      b = line.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return InvalidArgument("model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]: %s", rank,
                             m.dump().c_str());
    }
    const auto ia = token_to_id->find(a);
    const auto ib = token_to_id->find(b);
    merged.assign(a).append(b);
    const auto iab = token_to_id->find(merged);
    for (const auto& [it, name] : {std::pair{ia, &a}, std::pair{ib, &b}}) {
      if (it == token_to_id->end()) {
        return InvalidArgument(
            "model.merges[%zu] (\"%s\" \"%s\") refers to \"%s\", which is not in "
            "the vocabulary",
            rank, a.c_str(), b.c_str(), name->c_str());
      }
    }
    if (iab == token_to_id->end()) {
      return InvalidArgument(
          "model.merges[%zu] (\"%s\" \"%s\") produces \"%s%s\", which is not "
          "in the vocabulary",
          rank, a.c_str(), b.c_str(), a.c_str(), b.c_str());
    }
    // A repeated pair keeps its last rank, as tokenizers' HashMap collect does.
    merges_[PairKey(ia->second, ib->second)] = {static_cast<int32_t>(rank), iab->second};
  }
  return Status::Ok();
}

void BpeModel::MergeWord(std::string_view word, std::vector<int32_t>* ids) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  for (char ch : word) {
    int32_t id = byte_ids_[static_cast<uint8_t>(ch)];
    if (id < 0) {
      // Same as tokenizers without byte_fallback: the unknown token, or nothing at all.
      if (!unk_id_.has_value()) continue;
      id = *unk_id_;
    }
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, 1});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  std::vector<QueuedMerge> heap_storage;
  heap_storage.reserve(symbols.size());
  std::priority_queue<QueuedMerge> queue(std::less<QueuedMerge>(), std::move(heap_storage));
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    const auto it = merges_.find(PairKey(symbols[i].id, symbols[i + 1].id));
    if (it != merges_.end()) {
      queue.push({it->second.rank, static_cast<int32_t>(i), it->second.new_id});
    }
  }
  while (!queue.empty()) {
    const QueuedMerge top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (cur.len == 0 || cur.next < 0) continue;
    const Symbol right = symbols[cur.next];
    // Stale entry: the pair at this position changed since it was queued.
    const auto it = merges_.find(PairKey(cur.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    symbols[cur.next].len = 0;
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (cur.prev >= 0) {
      const auto p = merges_.find(PairKey(symbols[cur.prev].id, cur.id));
      if (p != merges_.end()) queue.push({p->second.rank, cur.prev, p->second.new_id});
    }
    if (cur.next >= 0) {
      const auto n = merges_.find(PairKey(cur.id, symbols[cur.next].id));
      if (n != merges_.end()) queue.push({n->second.rank, top.pos, n->second.new_id});
    }
  }
  for (const Symbol& s : symbols) {
    if (s.len != 0) ids->push_back(s.id);
  }
}

void BpeModel::Encode(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    // Llama-3: a word that is itself a token maps to it even where merges would not reach it.
    const auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  if (word.size() > kMaxCachedWordBytes) {
    MergeWord(word, out);
    return;
  }
  CacheShard& shard = cache_[StringHash{}(word) % kCacheShards];
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    const auto it = shard.words.find(word);
    if (it != shard.words.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  MergeWord(word, &ids);
  out->insert(out->end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(shard.mu);
  // Bounded memory: a full shard starts over rather than tracking recency.
  if (shard.words.size() >= kCacheEntriesPerShard) shard.words.clear();
  shard.words.emplace(word, std::move(ids));
}

}  // namespace kvstar::tokenizer_internal
