#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "base/file_util.h"

namespace kvstar {

using nlohmann::json;
using tokenizer_internal::AddedToken;
using tokenizer_internal::ByteLevelDecode;
using tokenizer_internal::ClassifyUtf8;
using tokenizer_internal::Normalizer;
using tokenizer_internal::PreTokenizer;

namespace {

constexpr uint8_t kKnown = 1;
constexpr uint8_t kSpecial = 2;

// Token contents that end a sequence in the model families in use.
constexpr std::string_view kEndTokens[] = {"<|endoftext|>", "<|im_end|>",      "<|eot_id|>",
                                           "<|eom_id|>",    "<|end_of_text|>", "</s>",
                                           "<|end|>",       "<end_of_turn>",   "<eos>"};

const json& Field(const json& j, const char* key) {
  static const json kNull;
  const auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path) {
  KVSTAR_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return FromJson(text, path);
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view json_text,
                                                         std::string_view source) {
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  Status status;
  try {
    status = tok->Init(std::string(json_text));
  } catch (const json::exception& e) {
    // Type mismatches deep inside the document (e.g. a string where a bool belongs).
    status = InvalidArgument("malformed tokenizer JSON: %s", e.what());
  }
  if (!status.ok()) return status.WithContext(source);
  return tok;
}

Status Tokenizer::Init(const std::string& json_text) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::parse_error& e) {
    return InvalidArgument("not valid JSON: %s", e.what());
  }
  if (!root.is_object()) return InvalidArgument("top level is not a JSON object");

  const json& model = Field(root, "model");
  if (!model.is_object()) return InvalidArgument("\"model\" is missing or not an object");
  const json& type = Field(model, "type");
  if (type.is_string() && type.get<std::string>() != "BPE") {
    return Unimplemented(
        "model type \"%s\" is not supported: only byte-level BPE (Qwen2, "
        "Llama-3, GPT-2 style) is",
        type.get<std::string>().c_str());
  }
  KVSTAR_RETURN_IF_ERROR(bpe_.Init(model, &vocab_token_to_id_, &id_to_token_));
  if (id_to_token_.empty()) return InvalidArgument("model.vocab is empty");

  KVSTAR_RETURN_IF_ERROR(InitAddedTokens(Field(root, "added_tokens")));
  KVSTAR_RETURN_IF_ERROR(InitNormalizer(Field(root, "normalizer")));
  KVSTAR_ASSIGN_OR_RETURN(pre_tokenizer_, PreTokenizer::FromJson(Field(root, "pre_tokenizer")));
  if (!pre_tokenizer_.has_byte_level()) {
    return Unimplemented("pre_tokenizer has no ByteLevel step: only byte-level BPE is supported");
  }
  KVSTAR_RETURN_IF_ERROR(AddPostProcessor(Field(root, "post_processor")));
  for (const auto* ids : {&special_prefix_, &special_suffix_}) {
    for (int32_t id : *ids) {
      if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) {
        return InvalidArgument("post_processor adds id %d, which no token has", id);
      }
    }
  }
  if (!special_prefix_.empty()) bos_id_ = special_prefix_.front();
  KVSTAR_RETURN_IF_ERROR(CheckDecoder(Field(root, "decoder")));

  // Per-id tables; added tokens override the vocabulary's entry for the same id.
  id_to_bytes_.assign(id_to_token_.size(), std::string());
  id_flags_.assign(id_to_token_.size(), 0);
  for (const auto& [token, id] : vocab_token_to_id_) {
    if (!ByteLevelDecode(token, &id_to_bytes_[id])) id_to_bytes_[id] = token;
    id_flags_[id] = kKnown;
  }
  for (const AddedToken& t : added_) {
    id_to_token_[t.id] = t.content;
    // As tokenizers' ByteLevel decoder: a content that is not in byte-level form decodes as its
    // own UTF-8.
    if (!ByteLevelDecode(t.content, &id_to_bytes_[t.id])) id_to_bytes_[t.id] = t.content;
    id_flags_[t.id] = kKnown | (t.special ? kSpecial : 0);
  }
  return Status::Ok();
}

Status Tokenizer::InitAddedTokens(const json& j) {
  if (j.is_null()) return Status::Ok();
  if (!j.is_array()) return InvalidArgument("\"added_tokens\" is not an array");
  for (size_t i = 0; i < j.size(); ++i) {
    const json& e = j[i];
    if (!e.is_object() || !Field(e, "id").is_number_integer() || !Field(e, "content").is_string()) {
      return InvalidArgument("added_tokens[%zu] needs an integer \"id\" and a string \"content\"",
                             i);
    }
    AddedToken t;
    const auto id = e["id"].get<int64_t>();
    if (id < 0 || id > INT32_MAX - 1) {
      return InvalidArgument("added_tokens[%zu] has an invalid id %lld", i,
                             static_cast<long long>(id));
    }
    t.id = static_cast<int32_t>(id);
    t.content = e["content"].get<std::string>();
    t.special = e.value("special", false);
    t.single_word = e.value("single_word", false);
    t.lstrip = e.value("lstrip", false);
    t.rstrip = e.value("rstrip", false);
    t.normalized = e.value("normalized", true);
    added_.push_back(std::move(t));
  }
  AssignAddedTokenIds();
  for (const AddedToken& t : added_) {
    if (static_cast<size_t>(t.id) >= id_to_token_.size()) id_to_token_.resize(t.id + 1);
  }
  return Status::Ok();
}

void Tokenizer::AssignAddedTokenIds() {
  // The tokenizers library does not take the ids written in added_tokens: it re-adds the tokens
  // in order (AddedVocabulary::add_tokens). A token already in the vocabulary keeps that id; a new
  // one gets the next id after the vocabulary (counted in entries) or after the largest added id.
  // Published files list exactly those ids, so this changes nothing for them, and a hand-written
  // file with gaps gets the ids the library would use.
  const auto vocab_entries = static_cast<int64_t>(vocab_token_to_id_.size());
  int64_t max_added = -1;
  std::vector<AddedToken> kept;
  kept.reserve(added_.size());
  for (AddedToken& t : added_) {
    if (t.content.empty()) continue;
    int32_t id;
    if (const auto it = added_token_to_id_.find(t.content); it != added_token_to_id_.end()) {
      id = it->second;
    } else if (const auto v = vocab_token_to_id_.find(t.content); v != vocab_token_to_id_.end()) {
      id = v->second;
    } else if (max_added < 0) {
      id = static_cast<int32_t>(vocab_entries);
    } else {
      id = static_cast<int32_t>(max_added >= vocab_entries || vocab_entries == 0 ? max_added + 1
                                                                                 : vocab_entries);
    }
    max_added = std::max<int64_t>(max_added, id);
    added_token_to_id_[t.content] = id;
    t.id = id;
    // A repeated content replaces the earlier entry, as in the library.
    const auto same = std::find_if(kept.begin(), kept.end(),
                                   [&](const AddedToken& k) { return k.content == t.content; });
    if (same != kept.end()) {
      *same = std::move(t);
    } else {
      kept.push_back(std::move(t));
    }
  }
  added_ = std::move(kept);
}

Status Tokenizer::InitNormalizer(const json& j) {
  std::vector<Normalizer::Form> forms;
  std::vector<const json*> todo = {&j};
  // A Sequence is flattened in order.
  for (size_t k = 0; k < todo.size(); ++k) {
    const json& n = *todo[k];
    if (n.is_null()) continue;
    const json& type = Field(n, "type");
    if (!type.is_string())
      return InvalidArgument("normalizer without a \"type\": %s", n.dump().c_str());
    const std::string t = type.get<std::string>();
    if (t == "Sequence") {
      const json& subs = Field(n, "normalizers");
      if (!subs.is_array()) return InvalidArgument("normalizer Sequence without \"normalizers\"");
      todo.erase(todo.begin() + static_cast<std::ptrdiff_t>(k));
      std::vector<const json*> expanded;
      for (const json& s : subs) expanded.push_back(&s);
      todo.insert(todo.begin() + static_cast<std::ptrdiff_t>(k), expanded.begin(), expanded.end());
      --k;
    } else if (t == "NFC") {
      forms.push_back(Normalizer::Form::kNfc);
    } else if (t == "NFD") {
      forms.push_back(Normalizer::Form::kNfd);
    } else if (t == "NFKC") {
      forms.push_back(Normalizer::Form::kNfkc);
    } else if (t == "NFKD") {
      forms.push_back(Normalizer::Form::kNfkd);
    } else {
      return Unimplemented(
          "normalizer \"%s\" is not supported (supported: NFC, NFD, NFKC, NFKD, "
          "Sequence)",
          t.c_str());
    }
  }
  KVSTAR_ASSIGN_OR_RETURN(normalizer_, Normalizer::Create(forms));

  // Added tokens: normalized=false ones match the raw text, the others the normalized text
  // (their content normalized the same way), as in tokenizers' AddedVocabulary.
  std::vector<const AddedToken*> raw, norm;
  std::vector<std::string> raw_patterns, norm_patterns;
  for (const AddedToken& t : added_) {
    if (t.normalized) {
      norm.push_back(&t);
      std::string n;
      norm_patterns.push_back(normalizer_.Normalize(t.content, &n) ? n : t.content);
    } else {
      raw.push_back(&t);
      raw_patterns.push_back(t.content);
    }
  }
  raw_matcher_.Build(raw, std::move(raw_patterns));
  normalized_matcher_.Build(norm, std::move(norm_patterns));
  return Status::Ok();
}

Status Tokenizer::AddPostProcessor(const json& j) {
  if (j.is_null()) return Status::Ok();
  const json& type = Field(j, "type");
  if (!type.is_string()) return InvalidArgument("post_processor without a \"type\"");
  const std::string t = type.get<std::string>();
  std::vector<int32_t> prefix, suffix;
  if (t == "ByteLevel") return Status::Ok();  // offsets only
  if (t == "Sequence") {
    const json& subs = Field(j, "processors");
    if (!subs.is_array()) return InvalidArgument("post_processor Sequence without \"processors\"");
    for (const json& s : subs) KVSTAR_RETURN_IF_ERROR(AddPostProcessor(s));
    return Status::Ok();
  }
  if (t == "TemplateProcessing") {
    const json& single = Field(j, "single");
    if (!single.is_array()) {
      return InvalidArgument("post_processor TemplateProcessing without a \"single\" template");
    }
    const json& specials = Field(j, "special_tokens");
    bool seen_sequence = false;
    for (const json& piece : single) {
      if (piece.contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      const json& st = Field(piece, "SpecialToken");
      if (!Field(st, "id").is_string()) {
        return InvalidArgument("post_processor template piece not understood: %s",
                               piece.dump().c_str());
      }
      const std::string name = st["id"].get<std::string>();
      const json& entry = specials.is_object() ? Field(specials, name.c_str()) : json();
      if (!Field(entry, "ids").is_array()) {
        return InvalidArgument(
            "post_processor template uses \"%s\", which special_tokens does "
            "not define",
            name.c_str());
      }
      for (const json& id : entry["ids"]) {
        if (!id.is_number_integer())
          return InvalidArgument("special_tokens[\"%s\"].ids", name.c_str());
        (seen_sequence ? suffix : prefix).push_back(id.get<int32_t>());
      }
    }
  } else if (t == "RobertaProcessing" || t == "BertProcessing") {
    for (const char* key : {"cls", "sep"}) {
      const json& p = Field(j, key);
      if (!p.is_array() || p.size() != 2 || !p[1].is_number_integer()) {
        return InvalidArgument("post_processor %s: \"%s\" is not [token, id]", t.c_str(), key);
      }
    }
    prefix.push_back(j["cls"][1].get<int32_t>());
    suffix.push_back(j["sep"][1].get<int32_t>());
  } else {
    return Unimplemented(
        "post_processor \"%s\" is not supported (supported: TemplateProcessing, "
        "ByteLevel, RobertaProcessing, BertProcessing, Sequence)",
        t.c_str());
  }
  // A later processor wraps what the earlier ones produced.
  special_prefix_.insert(special_prefix_.begin(), prefix.begin(), prefix.end());
  special_suffix_.insert(special_suffix_.end(), suffix.begin(), suffix.end());
  return Status::Ok();
}

Status Tokenizer::CheckDecoder(const json& j) {
  // No decoder at all is read as ByteLevel: for a byte-level vocabulary nothing else gives text.
  if (j.is_null()) return Status::Ok();
  const json& type = Field(j, "type");
  if (!type.is_string()) return InvalidArgument("decoder without a \"type\"");
  const std::string t = type.get<std::string>();
  if (t == "ByteLevel") return Status::Ok();
  if (t == "Sequence" && Field(j, "decoders").is_array()) {
    for (const json& d : j["decoders"]) KVSTAR_RETURN_IF_ERROR(CheckDecoder(d));
    return Status::Ok();
  }
  return Unimplemented("decoder \"%s\" is not supported (only ByteLevel)", t.c_str());
}

void Tokenizer::EncodeNormalized(std::string_view text, std::vector<int32_t>* out) const {
  auto encode_words = [&](std::string_view piece) {
    pre_tokenizer_.Split(piece, [&](std::string_view word) { bpe_.Encode(word, out); });
  };
  if (normalized_matcher_.empty()) {
    encode_words(text);
    return;
  }
  normalized_matcher_.Split(text, [&](std::string_view piece, int32_t id) {
    if (id >= 0) {
      out->push_back(id);
    } else {
      encode_words(piece);
    }
  });
}

void Tokenizer::EncodeText(std::string_view text, std::vector<int32_t>* out) const {
  auto encode_piece = [&](std::string_view piece) {
    std::string normalized;
    if (normalizer_.Normalize(piece, &normalized)) {
      EncodeNormalized(normalized, out);
    } else {
      EncodeNormalized(piece, out);
    }
  };
  if (raw_matcher_.empty()) {
    encode_piece(text);
    return;
  }
  raw_matcher_.Split(text, [&](std::string_view piece, int32_t id) {
    if (id >= 0) {
      out->push_back(id);
    } else {
      encode_piece(piece);
    }
  });
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  if (add_special) ids.insert(ids.end(), special_prefix_.begin(), special_prefix_.end());
  EncodeText(text, &ids);
  if (add_special) ids.insert(ids.end(), special_suffix_.begin(), special_suffix_.end());
  return ids;
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string text;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= id_flags_.size()) continue;
    const uint8_t flags = id_flags_[id];
    if (!(flags & kKnown) || (skip_special && (flags & kSpecial))) continue;
    text += id_to_bytes_[id];
  }
  return text;
}

std::string Tokenizer::Normalize(std::string_view text) const {
  std::string normalized;
  if (normalizer_.Normalize(text, &normalized)) return normalized;
  return std::string(text);
}

std::string_view Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_bytes_.size()) return {};
  return id_to_bytes_[id];
}

std::string_view Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) return {};
  return id_to_token_[id];
}

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (const auto it = added_token_to_id_.find(token); it != added_token_to_id_.end()) {
    return it->second;
  }
  if (const auto it = vocab_token_to_id_.find(token); it != vocab_token_to_id_.end()) {
    return it->second;
  }
  return std::nullopt;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < id_flags_.size() && (id_flags_[id] & kSpecial);
}

std::vector<int32_t> Tokenizer::eos_candidates() const {
  std::vector<int32_t> ids;
  for (const AddedToken& t : added_) {
    if (t.special && std::find(std::begin(kEndTokens), std::end(kEndTokens), t.content) !=
                         std::end(kEndTokens)) {
      ids.push_back(t.id);
    }
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

std::string StreamDecoder::Push(int32_t id) {
  if (skip_special_ && tokenizer_.IsSpecial(id)) return {};
  pending_ += tokenizer_.TokenBytes(id);
  std::string out;
  const auto* p = reinterpret_cast<const uint8_t*>(pending_.data());
  size_t i = 0;
  while (i < pending_.size()) {
    char32_t cp;
    const int r = ClassifyUtf8(p + i, pending_.size() - i, &cp);
    if (r == 0) break;  // the rest of this character has not been generated yet
    if (r > 0) {
      out.append(pending_, i, r);
      i += r;
    } else {
      out.append("\xEF\xBF\xBD");
      i += -r;
    }
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::Flush() {
  std::string out = tokenizer_internal::ToValidUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace kvstar
