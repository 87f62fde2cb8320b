#include "cli_common.h"

#include <cctype>
#include <cmath>
#include <cstdio>

namespace kvstar::cli {

StatusOr<size_t> ParseBytes(const std::string& text, const std::string& flag) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  std::string number = text.substr(0, i);
  std::string suffix = text.substr(i);
  for (char& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double mult = 1;
  if (suffix.empty() || suffix == "B") mult = 1;
  else if (suffix == "K" || suffix == "KB" || suffix == "KIB") mult = 1024.0;
  else if (suffix == "M" || suffix == "MB" || suffix == "MIB") mult = 1024.0 * 1024;
  else if (suffix == "G" || suffix == "GB" || suffix == "GIB") mult = 1024.0 * 1024 * 1024;
  else if (suffix == "T" || suffix == "TB" || suffix == "TIB") mult = 1024.0 * 1024 * 1024 * 1024;
  else number.clear();
  char* end = nullptr;
  const double value = number.empty() ? NAN : std::strtod(number.c_str(), &end);
  if (number.empty() || end != number.c_str() + number.size() || !(value > 0) ||
      !std::isfinite(value * mult)) {
    return InvalidArgument("%s: '%s' is not a byte size; use a number with an optional K, M, G "
                           "or T suffix (powers of 1024), e.g. 512M",
                           flag.c_str(), text.c_str());
  }
  return static_cast<size_t>(value * mult);
}

void AddEngineFlags(CLI::App* cmd, EngineFlags* f) {
  cmd->add_option("--threads", f->threads, "Compute threads (0 = all hardware threads)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--kv-dtype", f->kv_dtype, "KV cache element type: bf16 or f32")
      ->check(CLI::IsMember({"bf16", "f32"}));
  cmd->add_option("--block-tokens", f->block_tokens,
                  "Tokens per KV block (multiple of 8): the unit of storage and retrieval");
  cmd->add_option("--prefill-chunk", f->prefill_chunk, "Prompt tokens per prefill forward pass")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--device-kv-budget", f->device_kv_budget,
                  "Bytes of device memory for KV blocks, e.g. 2G (default: the model's whole "
                  "context, at most 4G)");
  cmd->add_option("--mode", f->mode, "Decode mode: dense");
}

StatusOr<EngineOptions> FinishEngineOptions(const EngineFlags& f) {
  EngineOptions o;
  o.threads = f.threads;
  o.kv_dtype = f.kv_dtype == "f32" ? DType::kF32 : DType::kBF16;
  o.block_tokens = f.block_tokens;
  o.prefill_chunk = f.prefill_chunk;
  o.mode = f.mode;
  if (!f.device_kv_budget.empty()) {
    KVSTAR_ASSIGN_OR_RETURN(o.device_kv_budget, ParseBytes(f.device_kv_budget, "--device-kv-budget"));
  }
  KVSTAR_RETURN_IF_ERROR(ValidateEngineOptions(o));
  return o;
}

int ReportError(const Status& status) {
  std::fprintf(stderr, "error: %s\n", status.message().c_str());
  return 1;
}

}  // namespace kvstar::cli
