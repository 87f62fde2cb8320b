// Helpers shared by the CLI sub-commands: engine flags, byte sizes, error reporting.
#pragma once

#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "base/status.h"
#include "engine/engine.h"

namespace kvstar::cli {

// "512M", "2G", "1.5GiB", "1048576" -> bytes. InvalidArgument naming the flag otherwise.
StatusOr<size_t> ParseBytes(const std::string& text, const std::string& flag);

// Flags that configure the engine (threads, KV layout, decode mode), bound to strings that
// FinishEngineOptions validates after parsing.
struct EngineFlags {
  int threads = 0;
  std::string kv_dtype = "bf16";
  size_t block_tokens = 128;
  size_t prefill_chunk = 256;
  std::string device_kv_budget;  // bytes with optional K/M/G suffix; empty = automatic
  std::string mode = "dense";
  // kvstar mode: a JSON file of settings (UCM key names), then flags of the same names.
  std::string kvstar_config;
  std::string store = "dram";
  std::string store_dram;
  int retrieval_threads = 1;
  KvstarConfig kvstar;                    // values of the individual flags
  std::vector<CLI::Option*> kvstar_flags;  // to know which were given
};
// with_threads = false when the command has its own --threads (bench: a list).
void AddEngineFlags(CLI::App* cmd, EngineFlags* flags, bool with_threads = true);
StatusOr<EngineOptions> FinishEngineOptions(const EngineFlags& flags);

// The KV side of a finished request as JSON: layout, device bytes, and for kvstar the settings,
// bytes loaded per step, retrieval latency and the share of it hidden, late swaps.
nlohmann::json KvReportJson(const EngineOptions& options, const GenerateResult& result);

// Prints "error: <message>" on stderr and returns the exit code 1.
int ReportError(const Status& status);

}  // namespace kvstar::cli
