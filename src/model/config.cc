#include "model/config.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>

#include "base/file_util.h"

namespace kvstar {
namespace {

using nlohmann::json;

// Upper bounds far above any real model; they keep every size product in num_parameters() and
// in the forward pass far from overflowing size_t.
constexpr uint64_t kMaxDim = uint64_t{1} << 24;
constexpr uint64_t kMaxLayers = 4096;
constexpr uint64_t kMaxHeads = 4096;

const char* TypeName(const json& v) { return v.type_name(); }

// Reads an integer key. Absent or null -> `fallback` (nullopt = required). Integral floats such
// as 4096.0 are accepted because some converters write them.
StatusOr<int64_t> GetInt(const json& j, const char* key, std::optional<int64_t> fallback,
                         std::string_view src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    return InvalidArgument("%.*s: required key '%s' is missing", static_cast<int>(src.size()),
                           src.data(), key);
  }
  if (it->is_number_unsigned()) {
    const uint64_t u = it->get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return InvalidArgument("%.*s: key '%s' is too large: %llu", static_cast<int>(src.size()),
                             src.data(), key, static_cast<unsigned long long>(u));
    }
    return static_cast<int64_t>(u);
  }
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_number_float()) {
    const double d = it->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) {
      return static_cast<int64_t>(d);
    }
    return InvalidArgument("%.*s: key '%s' must be an integer, got %g",
                           static_cast<int>(src.size()), src.data(), key, d);
  }
  return InvalidArgument("%.*s: key '%s' must be an integer, got a %s",
                         static_cast<int>(src.size()), src.data(), key, TypeName(*it));
}

StatusOr<size_t> GetSize(const json& j, const char* key, std::optional<int64_t> fallback,
                         uint64_t max_value, std::string_view src) {
  KVSTAR_ASSIGN_OR_RETURN(int64_t v, GetInt(j, key, fallback, src));
  if (v <= 0) {
    return InvalidArgument("%.*s: key '%s' must be a positive integer, got %lld",
                           static_cast<int>(src.size()), src.data(), key,
                           static_cast<long long>(v));
  }
  if (static_cast<uint64_t>(v) > max_value) {
    return InvalidArgument("%.*s: key '%s' = %lld exceeds the supported maximum %llu",
                           static_cast<int>(src.size()), src.data(), key, static_cast<long long>(v),
                           static_cast<unsigned long long>(max_value));
  }
  return static_cast<size_t>(v);
}

StatusOr<double> GetDouble(const json& j, const char* key, std::optional<double> fallback,
                           std::string_view src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (fallback) return *fallback;
    return InvalidArgument("%.*s: required key '%s' is missing", static_cast<int>(src.size()),
                           src.data(), key);
  }
  if (!it->is_number()) {
    return InvalidArgument("%.*s: key '%s' must be a number, got a %s",
                           static_cast<int>(src.size()), src.data(), key, TypeName(*it));
  }
  const double d = it->get<double>();
  if (!std::isfinite(d)) {
    return InvalidArgument("%.*s: key '%s' must be finite", static_cast<int>(src.size()),
                           src.data(), key);
  }
  return d;
}

StatusOr<bool> GetBool(const json& j, const char* key, bool fallback, std::string_view src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return InvalidArgument("%.*s: key '%s' must be true or false, got a %s",
                           static_cast<int>(src.size()), src.data(), key, TypeName(*it));
  }
  return it->get<bool>();
}

StatusOr<std::optional<int32_t>> GetTokenId(const json& v, const char* key, std::string_view src) {
  if (v.is_null()) return std::optional<int32_t>();
  if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
      v.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
    return InvalidArgument("%.*s: key '%s' must hold non-negative integer token ids, got %s",
                           static_cast<int>(src.size()), src.data(), key, v.dump().c_str());
  }
  return std::optional<int32_t>(static_cast<int32_t>(v.get<int64_t>()));
}

Status ParseArchitecture(const json& j, ModelConfig* cfg, std::string_view src) {
  std::string name;
  auto arch_it = j.find("architectures");
  if (arch_it != j.end() && !arch_it->is_null()) {
    if (!arch_it->is_array() || arch_it->empty() || !(*arch_it)[0].is_string()) {
      return InvalidArgument("%.*s: key 'architectures' must be a non-empty list of strings",
                             static_cast<int>(src.size()), src.data());
    }
    name = (*arch_it)[0].get<std::string>();
  } else {
    auto mt = j.find("model_type");
    if (mt == j.end() || !mt->is_string()) {
      return InvalidArgument(
          "%.*s: neither key 'architectures' nor key 'model_type' names the architecture",
          static_cast<int>(src.size()), src.data());
    }
    const std::string model_type = mt->get<std::string>();
    if (model_type == "qwen2") {
      name = "Qwen2ForCausalLM";
    } else if (model_type == "llama") {
      name = "LlamaForCausalLM";
    } else {
      name = model_type;
    }
  }
  if (name == "Qwen2ForCausalLM") {
    cfg->arch = Architecture::kQwen2;
  } else if (name == "LlamaForCausalLM") {
    cfg->arch = Architecture::kLlama;
  } else {
    return Unimplemented(
        "%.*s: architecture '%s' is not supported; supported: Qwen2ForCausalLM, "
        "LlamaForCausalLM",
        static_cast<int>(src.size()), src.data(), name.c_str());
  }
  cfg->architecture_name = name;
  return Status::Ok();
}

// Parses one RoPE description: transformers < 5 writes "rope_scaling" (null for plain RoPE);
// transformers >= 5 writes "rope_parameters" holding rope_theta and rope_type ("default" too).
Status ParseRopeObject(const json& rs, const char* key, bool type_required, ModelConfig* cfg,
                       std::string_view src) {
  const int n = static_cast<int>(src.size());
  if (!rs.is_object()) {
    return InvalidArgument("%.*s: key '%s' must be an object or null", n, src.data(), key);
  }
  // transformers accepts "rope_type" and, in older files, "type".
  std::string type;
  for (const char* type_key : {"rope_type", "type"}) {
    auto t = rs.find(type_key);
    if (t != rs.end() && t->is_string()) {
      type = t->get<std::string>();
      break;
    }
  }
  if (type.empty()) {
    if (type_required) {
      return InvalidArgument("%.*s: key '%s' has no string 'rope_type' (or 'type')", n, src.data(),
                             key);
    }
    type = "default";
  }
  RopeScaling& out = cfg->rope_scaling;
  if (type == "default") {
    out.type = "default";
    return Status::Ok();
  }
  if (type != "llama3" && type != "linear") {
    return Unimplemented(
        "%.*s: key '%s': rope type '%s' is not supported; supported: llama3, linear, default", n,
        src.data(), key, type.c_str());
  }
  out.type = type;
  const std::string ctx = std::string(src) + ": key '" + key + "'";
  KVSTAR_ASSIGN_OR_RETURN(out.factor, GetDouble(rs, "factor", std::nullopt, ctx));
  if (!(out.factor > 0)) {
    return InvalidArgument("%s: 'factor' must be > 0, got %g", ctx.c_str(), out.factor);
  }
  if (type == "llama3") {
    KVSTAR_ASSIGN_OR_RETURN(out.low_freq_factor, GetDouble(rs, "low_freq_factor", 1.0, ctx));
    KVSTAR_ASSIGN_OR_RETURN(out.high_freq_factor, GetDouble(rs, "high_freq_factor", 4.0, ctx));
    KVSTAR_ASSIGN_OR_RETURN(out.original_max_position_embeddings,
                            GetInt(rs, "original_max_position_embeddings", 8192, ctx));
    if (!(out.low_freq_factor > 0) || !(out.high_freq_factor > out.low_freq_factor)) {
      return InvalidArgument(
          "%s: need 0 < low_freq_factor < high_freq_factor, got low_freq_factor %g, "
          "high_freq_factor %g",
          ctx.c_str(), out.low_freq_factor, out.high_freq_factor);
    }
    if (out.original_max_position_embeddings <= 0) {
      return InvalidArgument("%s: 'original_max_position_embeddings' must be > 0, got %lld",
                             ctx.c_str(),
                             static_cast<long long>(out.original_max_position_embeddings));
    }
  }
  return Status::Ok();
}

Status ParseRope(const json& j, ModelConfig* cfg, std::string_view src) {
  KVSTAR_ASSIGN_OR_RETURN(cfg->rope_theta, GetDouble(j, "rope_theta", 10000.0, src));
  auto params = j.find("rope_parameters");
  if (params != j.end() && !params->is_null()) {
    if (params->is_object()) {
      const std::string ctx = std::string(src) + ": key 'rope_parameters'";
      KVSTAR_ASSIGN_OR_RETURN(cfg->rope_theta,
                              GetDouble(*params, "rope_theta", cfg->rope_theta, ctx));
    }
    return ParseRopeObject(*params, "rope_parameters", /*type_required=*/false, cfg, src);
  }
  auto scaling = j.find("rope_scaling");
  if (scaling == j.end() || scaling->is_null()) return Status::Ok();
  return ParseRopeObject(*scaling, "rope_scaling", /*type_required=*/true, cfg, src);
}

StatusOr<DType> ParseTorchDtype(const json& j, std::string_view src) {
  // transformers >= 4.56 writes "dtype"; older versions "torch_dtype".
  for (const char* key : {"torch_dtype", "dtype"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    const int n = static_cast<int>(src.size());
    if (!it->is_string()) {
      return InvalidArgument("%.*s: key '%s' must be a string", n, src.data(), key);
    }
    const std::string s = it->get<std::string>();
    if (s == "bfloat16") return DType::kBF16;
    if (s == "float16" || s == "half") return DType::kF16;
    if (s == "float32" || s == "float") return DType::kF32;
    return Unimplemented(
        "%.*s: key '%s': '%s' is not supported; supported: bfloat16, float16, "
        "float32",
        n, src.data(), key, s.c_str());
  }
  return DType::kF32;  // transformers' default when the key is absent
}

// The shortest decimal that round-trips the float, as a double: 1e-06, not 9.99999997e-07.
double FloatAsShortDouble(float f) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf) - 1, f);
  *res.ptr = '\0';
  return std::strtod(buf, nullptr);
}

}  // namespace

const char* ArchitectureName(Architecture arch) {
  return arch == Architecture::kQwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
}

size_t ModelConfig::kv_bytes_per_token(DType kv_dtype) const {
  return num_layers * 2 * num_kv_heads * head_dim * DTypeSize(kv_dtype);
}

size_t ModelConfig::num_parameters() const {
  const size_t h = hidden_size;
  size_t per_layer = 2 * h;                     // input + post-attention norms
  per_layer += h * q_dim() + 2 * h * kv_dim();  // q, k, v
  per_layer += q_dim() * h;                     // o
  per_layer += 3 * h * intermediate_size;       // gate, up, down
  if (qkv_bias) per_layer += q_dim() + 2 * kv_dim();
  if (o_bias) per_layer += h;
  if (mlp_bias) per_layer += 2 * intermediate_size + h;
  size_t total = vocab_size * h + h + num_layers * per_layer;
  if (!tie_word_embeddings) total += vocab_size * h;
  return total;
}

std::string ModelConfig::ToJson() const {
  json j;
  j["architecture"] = architecture_name.empty() ? ArchitectureName(arch) : architecture_name;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["head_dim"] = head_dim;
  j["vocab_size"] = vocab_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rope_theta"] = rope_theta;
  if (rope_scaling.type.empty()) {
    j["rope_scaling"] = nullptr;
  } else {
    json rs;
    rs["rope_type"] = rope_scaling.type;
    rs["factor"] = rope_scaling.factor;
    if (rope_scaling.type == "llama3") {
      rs["low_freq_factor"] = rope_scaling.low_freq_factor;
      rs["high_freq_factor"] = rope_scaling.high_freq_factor;
      rs["original_max_position_embeddings"] = rope_scaling.original_max_position_embeddings;
    }
    j["rope_scaling"] = rs;
  }
  j["rms_norm_eps"] = FloatAsShortDouble(rms_norm_eps);
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["qkv_bias"] = qkv_bias;
  j["o_bias"] = o_bias;
  j["mlp_bias"] = mlp_bias;
  j["eos_token_id"] = eos_token_ids;
  j["bos_token_id"] = bos_token_id ? json(*bos_token_id) : json(nullptr);
  j["torch_dtype"] = torch_dtype == DType::kBF16  ? "bfloat16"
                     : torch_dtype == DType::kF16 ? "float16"
                                                  : "float32";
  return j.dump();
}

Status ValidateConfig(const ModelConfig& cfg, std::string_view src) {
  const int n = static_cast<int>(src.size());
  const char* s = src.data();
  struct Positive {
    const char* key;
    size_t value;
  };
  for (const Positive& p :
       {Positive{"hidden_size", cfg.hidden_size},
        Positive{"intermediate_size", cfg.intermediate_size},
        Positive{"num_hidden_layers", cfg.num_layers},
        Positive{"num_attention_heads", cfg.num_heads},
        Positive{"num_key_value_heads", cfg.num_kv_heads}, Positive{"head_dim", cfg.head_dim},
        Positive{"vocab_size", cfg.vocab_size}}) {
    if (p.value == 0) return InvalidArgument("%.*s: key '%s' must be positive", n, s, p.key);
  }
  if (cfg.num_heads % cfg.num_kv_heads != 0) {
    return InvalidArgument(
        "%.*s: key 'num_key_value_heads': %zu does not divide num_attention_heads %zu", n, s,
        cfg.num_kv_heads, cfg.num_heads);
  }
  if (cfg.head_dim % 2 != 0) {
    return InvalidArgument("%.*s: key 'head_dim': rotary embeddings need an even head_dim, got %zu",
                           n, s, cfg.head_dim);
  }
  if (cfg.max_position_embeddings <= 0) {
    return InvalidArgument("%.*s: key 'max_position_embeddings' must be positive, got %lld", n, s,
                           static_cast<long long>(cfg.max_position_embeddings));
  }
  if (!(cfg.rope_theta > 0) || !std::isfinite(cfg.rope_theta)) {
    return InvalidArgument("%.*s: key 'rope_theta' must be a finite number > 0, got %g", n, s,
                           cfg.rope_theta);
  }
  if (!(cfg.rms_norm_eps > 0) || !std::isfinite(cfg.rms_norm_eps)) {
    return InvalidArgument("%.*s: key 'rms_norm_eps' must be a finite number > 0, got %g", n, s,
                           static_cast<double>(cfg.rms_norm_eps));
  }
  const std::string& t = cfg.rope_scaling.type;
  if (!t.empty() && t != "default" && t != "llama3" && t != "linear") {
    return Unimplemented("%.*s: key 'rope_scaling': rope type '%s' is not supported", n, s,
                         t.c_str());
  }
  return Status::Ok();
}

StatusOr<ModelConfig> ParseConfig(std::string_view text, std::string_view src_view) {
  const std::string src(src_view);
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return InvalidArgument("%s: invalid JSON: %s", src.c_str(), e.what());
  }
  if (!j.is_object()) {
    return InvalidArgument("%s: expected a JSON object at the top level, got a %s", src.c_str(),
                           j.type_name());
  }
  ModelConfig cfg;
  KVSTAR_RETURN_IF_ERROR(ParseArchitecture(j, &cfg, src));
  const bool qwen = cfg.arch == Architecture::kQwen2;

  KVSTAR_ASSIGN_OR_RETURN(cfg.hidden_size, GetSize(j, "hidden_size", std::nullopt, kMaxDim, src));
  KVSTAR_ASSIGN_OR_RETURN(cfg.intermediate_size,
                          GetSize(j, "intermediate_size", std::nullopt, kMaxDim, src));
  KVSTAR_ASSIGN_OR_RETURN(cfg.num_layers,
                          GetSize(j, "num_hidden_layers", std::nullopt, kMaxLayers, src));
  KVSTAR_ASSIGN_OR_RETURN(cfg.num_heads,
                          GetSize(j, "num_attention_heads", std::nullopt, kMaxHeads, src));
  // transformers: num_key_value_heads defaults to num_attention_heads (multi-head attention).
  KVSTAR_ASSIGN_OR_RETURN(
      cfg.num_kv_heads,
      GetSize(j, "num_key_value_heads", static_cast<int64_t>(cfg.num_heads), kMaxHeads, src));
  KVSTAR_ASSIGN_OR_RETURN(cfg.vocab_size, GetSize(j, "vocab_size", std::nullopt, kMaxDim, src));

  auto hd = j.find("head_dim");
  if (hd != j.end() && !hd->is_null()) {
    KVSTAR_ASSIGN_OR_RETURN(cfg.head_dim, GetSize(j, "head_dim", std::nullopt, kMaxDim, src));
  } else {
    if (cfg.hidden_size % cfg.num_heads != 0) {
      return InvalidArgument(
          "%s: key 'hidden_size': %zu is not a multiple of num_attention_heads %zu and no "
          "'head_dim' is given",
          src.c_str(), cfg.hidden_size, cfg.num_heads);
    }
    cfg.head_dim = cfg.hidden_size / cfg.num_heads;
  }

  KVSTAR_ASSIGN_OR_RETURN(cfg.max_position_embeddings,
                          GetInt(j, "max_position_embeddings", qwen ? 32768 : 2048, src));
  KVSTAR_ASSIGN_OR_RETURN(double eps, GetDouble(j, "rms_norm_eps", 1e-6, src));
  cfg.rms_norm_eps = static_cast<float>(eps);
  KVSTAR_RETURN_IF_ERROR(ParseRope(j, &cfg, src));
  KVSTAR_ASSIGN_OR_RETURN(cfg.tie_word_embeddings, GetBool(j, "tie_word_embeddings", false, src));

  if (qwen) {
    cfg.qkv_bias = true;
  } else {
    KVSTAR_ASSIGN_OR_RETURN(bool attention_bias, GetBool(j, "attention_bias", false, src));
    cfg.qkv_bias = attention_bias;
    cfg.o_bias = attention_bias;
    KVSTAR_ASSIGN_OR_RETURN(cfg.mlp_bias, GetBool(j, "mlp_bias", false, src));
  }

  auto act = j.find("hidden_act");
  if (act != j.end() && !act->is_null()) {
    if (!act->is_string()) {
      return InvalidArgument("%s: key 'hidden_act' must be a string", src.c_str());
    }
    if (act->get<std::string>() != "silu") {
      return Unimplemented("%s: key 'hidden_act': '%s' is not supported; supported: silu",
                           src.c_str(), act->get<std::string>().c_str());
    }
  }
  KVSTAR_ASSIGN_OR_RETURN(double partial_rotary, GetDouble(j, "partial_rotary_factor", 1.0, src));
  if (partial_rotary != 1.0) {
    return Unimplemented("%s: key 'partial_rotary_factor': %g is not supported; only 1.0",
                         src.c_str(), partial_rotary);
  }
  if (qwen) {
    // Qwen2 applies the window to layers >= max_window_layers when use_sliding_window is set.
    KVSTAR_ASSIGN_OR_RETURN(bool sliding, GetBool(j, "use_sliding_window", false, src));
    if (sliding) {
      KVSTAR_ASSIGN_OR_RETURN(int64_t max_window_layers, GetInt(j, "max_window_layers", 28, src));
      if (max_window_layers < static_cast<int64_t>(cfg.num_layers)) {
        return Unimplemented(
            "%s: key 'use_sliding_window': sliding-window attention (layers >= "
            "max_window_layers %lld of %zu) is not supported; set use_sliding_window to false",
            src.c_str(), static_cast<long long>(max_window_layers), cfg.num_layers);
      }
    }
  }

  // transformers >= 5 lists the attention kind of every layer.
  auto layer_types = j.find("layer_types");
  if (layer_types != j.end() && !layer_types->is_null()) {
    if (!layer_types->is_array()) {
      return InvalidArgument("%s: key 'layer_types' must be a list", src.c_str());
    }
    for (size_t i = 0; i < layer_types->size(); ++i) {
      const json& t = (*layer_types)[i];
      if (!t.is_string() || t.get<std::string>() != "full_attention") {
        return Unimplemented(
            "%s: key 'layer_types': layer %zu is %s; only full_attention is supported "
            "(sliding-window attention is not)",
            src.c_str(), i, t.dump().c_str());
      }
    }
  }

  auto eos = j.find("eos_token_id");
  if (eos != j.end() && !eos->is_null()) {
    if (eos->is_array()) {
      for (const json& v : *eos) {
        KVSTAR_ASSIGN_OR_RETURN(std::optional<int32_t> id, GetTokenId(v, "eos_token_id", src));
        if (id) cfg.eos_token_ids.push_back(*id);
      }
    } else {
      KVSTAR_ASSIGN_OR_RETURN(std::optional<int32_t> id, GetTokenId(*eos, "eos_token_id", src));
      if (id) cfg.eos_token_ids.push_back(*id);
    }
  }
  auto bos = j.find("bos_token_id");
  if (bos != j.end()) {
    KVSTAR_ASSIGN_OR_RETURN(cfg.bos_token_id, GetTokenId(*bos, "bos_token_id", src));
  }
  KVSTAR_ASSIGN_OR_RETURN(cfg.torch_dtype, ParseTorchDtype(j, src));

  KVSTAR_RETURN_IF_ERROR(ValidateConfig(cfg, src));
  return cfg;
}

StatusOr<ModelConfig> LoadConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  auto text = ReadFileToString(path);
  if (!text.ok()) {
    return Status(text.status().code(),
                  text.status().message() + " (expected a Hugging Face model directory)");
  }
  return ParseConfig(*text, path);
}

}  // namespace kvstar
