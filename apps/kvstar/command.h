// Sub-command registry of the kvstar CLI. Each cmd_*.cc file registers one sub-command:
//
//   static void AddFoo(CLI::App& root, int* exit_code) {
//     auto* cmd = root.add_subcommand("foo", "What foo does");
//     ...
//     cmd->callback([=] { *exit_code = RunFoo(...); });
//   }
//   KVSTAR_COMMAND(foo, 50, AddFoo);
//
// The order number sorts sub-commands in --help.
#pragma once

#include <CLI/CLI.hpp>

namespace kvstar::cli {

using CommandAdder = void (*)(CLI::App& root, int* exit_code);
bool RegisterCommand(const char* name, int order, CommandAdder adder);
void AddAllCommands(CLI::App& root, int* exit_code);

}  // namespace kvstar::cli

#define KVSTAR_COMMAND(name, order, adder)                              \
  [[maybe_unused]] static const bool kvstar_command_registered_##name = \
      ::kvstar::cli::RegisterCommand(#name, order, adder)
