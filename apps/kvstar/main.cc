// kvstar: long-context LLM decoding with offloaded, sparsely retrieved KV caches.
#include <algorithm>
#include <string>
#include <vector>

#include "command.h"

namespace kvstar::cli {
namespace {

struct Entry {
  const char* name;
  int order;
  CommandAdder adder;
};

std::vector<Entry>& Registry() {
  static std::vector<Entry> registry;
  return registry;
}

}  // namespace

bool RegisterCommand(const char* name, int order, CommandAdder adder) {
  Registry().push_back({name, order, adder});
  return true;
}

void AddAllCommands(CLI::App& root, int* exit_code) {
  auto& reg = Registry();
  std::sort(reg.begin(), reg.end(), [](const Entry& a, const Entry& b) {
    return a.order != b.order ? a.order < b.order : std::string(a.name) < b.name;
  });
  for (const Entry& e : reg) e.adder(root, exit_code);
}

}  // namespace kvstar::cli

int main(int argc, char** argv) {
  CLI::App app{
      "kvstar: long-context LLM decoding whose KV cache does not have to fit in device memory.\n"
      "Loads Hugging Face model directories (Qwen2, Llama) and decodes with dense attention or\n"
      "with KVstar sparse retrieval over an offloaded KV store.",
      "kvstar"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "kvstar 0.1.0");
  int exit_code = 0;
  kvstar::cli::AddAllCommands(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
