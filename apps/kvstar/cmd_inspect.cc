// kvstar inspect: what a model directory (or a named shape) holds and what its KV cache costs.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "command.h"
#include "model/config.h"
#include "model/shapes.h"
#include "model/weights.h"

namespace kvstar::cli {
namespace {

struct InspectOptions {
  std::string model_dir;
  std::string shape;
  bool json = false;
};

std::string HumanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", bytes, units[u]);
  return buf;
}

std::string HumanCount(double n) {
  char buf[64];
  if (n >= 1e9) {
    std::snprintf(buf, sizeof(buf), "%.2fB", n / 1e9);
  } else if (n >= 1e6) {
    std::snprintf(buf, sizeof(buf), "%.1fM", n / 1e6);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f", n);
  }
  return buf;
}

std::string RopeText(const ModelConfig& c) {
  char buf[256];
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == "llama3") {
    std::snprintf(
        buf, sizeof(buf),
        "theta %.10g, llama3 scaling (factor %g, low_freq_factor %g, high_freq_factor %g, "
        "original_max_position_embeddings %lld)",
        c.rope_theta, rs.factor, rs.low_freq_factor, rs.high_freq_factor,
        static_cast<long long>(rs.original_max_position_embeddings));
  } else if (rs.type == "linear") {
    std::snprintf(buf, sizeof(buf), "theta %.10g, linear scaling (factor %g)", c.rope_theta,
                  rs.factor);
  } else {
    std::snprintf(buf, sizeof(buf), "theta %.10g, no scaling", c.rope_theta);
  }
  return buf;
}

int Fail(const Status& s) {
  std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
  return 1;
}

int RunInspect(const InspectOptions& opt) {
  if (opt.model_dir.empty() == opt.shape.empty()) {
    return Fail(InvalidArgument("give exactly one of --model DIR or --shape NAME"));
  }
  ModelConfig cfg;
  std::unique_ptr<ModelWeights> weights;
  std::string source;
  if (!opt.model_dir.empty()) {
    source = opt.model_dir;
    auto c = LoadConfig(opt.model_dir);
    if (!c.ok()) return Fail(c.status());
    cfg = *c;
    auto w = ModelWeights::Load(opt.model_dir, cfg);
    if (!w.ok()) return Fail(w.status());
    weights = std::move(w).value();
  } else {
    source = "shape " + opt.shape;
    auto c = NamedShape(opt.shape);
    if (!c.ok()) return Fail(c.status());
    cfg = *c;
  }
  const size_t params = cfg.num_parameters();
  // Named shapes get random weights at benchmark time, in the dtype the real model ships in.
  const DType weight_dtype = weights ? weights->weight_dtype() : cfg.torch_dtype;
  const size_t weight_bytes = weights ? weights->weight_bytes() : params * DTypeSize(weight_dtype);
  const size_t kv_bf16 = cfg.kv_bytes_per_token(DType::kBF16);
  const size_t kv_f32 = cfg.kv_bytes_per_token(DType::kF32);
  const size_t kTokenCounts[] = {1024, 32768, 131072};

  if (opt.json) {
    nlohmann::json j;
    j["source"] = source;
    j["config"] = nlohmann::json::parse(cfg.ToJson());
    j["group_size"] = cfg.group_size();
    j["num_parameters"] = params;
    j["weight_bytes"] = weight_bytes;
    j["weight_dtype"] = DTypeName(weight_dtype);
    j["weights_loaded"] = weights != nullptr;
    if (weights) j["fingerprint"] = weights->fingerprint().ToHex();
    j["kv_bytes_per_token"] = {{"bf16", kv_bf16}, {"f32", kv_f32}};
    for (size_t n : kTokenCounts) {
      j["kv_bytes"][std::to_string(n)] = {{"bf16", kv_bf16 * n}, {"f32", kv_f32 * n}};
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::string eos;
  for (int32_t id : cfg.eos_token_ids) eos += (eos.empty() ? "" : ", ") + std::to_string(id);
  auto yes_no = [](bool b) { return b ? "yes" : "no"; };
  std::printf("source            %s\n", source.c_str());
  std::printf("architecture      %s\n", cfg.architecture_name.c_str());
  std::printf("layers            %zu\n", cfg.num_layers);
  std::printf("hidden            %zu (intermediate %zu)\n", cfg.hidden_size, cfg.intermediate_size);
  std::printf("heads             %zu query, %zu kv, head_dim %zu, group size %zu\n", cfg.num_heads,
              cfg.num_kv_heads, cfg.head_dim, cfg.group_size());
  std::printf("vocab             %zu\n", cfg.vocab_size);
  std::printf("max positions     %lld\n", static_cast<long long>(cfg.max_position_embeddings));
  std::printf("rope              %s\n", RopeText(cfg).c_str());
  std::printf("rms_norm_eps      %g\n", static_cast<double>(cfg.rms_norm_eps));
  std::printf("parameters        %s (%zu)\n", HumanCount(static_cast<double>(params)).c_str(),
              params);
  std::printf("weights           %s %s%s\n", HumanBytes(static_cast<double>(weight_bytes)).c_str(),
              DTypeName(weight_dtype), weights ? "" : " (when generated; not loaded)");
  if (weights) std::printf("fingerprint       %s\n", weights->fingerprint().ToHex().c_str());
  std::printf("kv per token      %s bf16, %s f32\n",
              HumanBytes(static_cast<double>(kv_bf16)).c_str(),
              HumanBytes(static_cast<double>(kv_f32)).c_str());
  for (size_t n : kTokenCounts) {
    const std::string label = "kv per " + std::to_string(n / 1024) + "K tokens";
    std::printf("%-18s%s bf16, %s f32\n", label.c_str(),
                HumanBytes(static_cast<double>(kv_bf16 * n)).c_str(),
                HumanBytes(static_cast<double>(kv_f32 * n)).c_str());
  }
  std::printf("tied embeddings   %s\n", yes_no(cfg.tie_word_embeddings));
  std::printf("biases            qkv %s, o_proj %s, mlp %s\n", yes_no(cfg.qkv_bias),
              yes_no(cfg.o_bias), yes_no(cfg.mlp_bias));
  std::printf("eos ids           %s\n", eos.empty() ? "(none)" : eos.c_str());
  std::printf("bos id            %s\n",
              cfg.bos_token_id ? std::to_string(*cfg.bos_token_id).c_str() : "(none)");
  return 0;
}

void AddInspect(CLI::App& root, int* exit_code) {
  auto opt = std::make_shared<InspectOptions>();
  auto* cmd = root.add_subcommand(
      "inspect",
      "Show a model's architecture, parameter count, weight bytes and KV-cache cost per token.\n"
      "Reads config.json and checks every weight tensor of a Hugging Face model directory\n"
      "(safetensors, memory-mapped), or describes a built-in model shape.");
  cmd->add_option("--model", opt->model_dir,
                  "Hugging Face model directory (config.json + *.safetensors)");
  std::string shapes;
  for (const std::string& s : NamedShapeList()) shapes += (shapes.empty() ? "" : ", ") + s;
  cmd->add_option("--shape", opt->shape,
                  "A built-in model shape instead of a "
                  "directory: " +
                      shapes);
  cmd->add_flag("--json", opt->json, "Print one JSON object instead of text");
  cmd->callback([opt, exit_code] { *exit_code = RunInspect(*opt); });
}

}  // namespace

KVSTAR_COMMAND(inspect, 20, AddInspect);

}  // namespace kvstar::cli
