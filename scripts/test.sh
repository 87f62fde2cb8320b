#!/usr/bin/env bash
# The test command: installs dependencies, builds (warnings as errors) and runs every test that
# needs no GPU. Usage: bash scripts/test.sh [ctest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake --preset ci
cmake --build --preset ci -j "$(nproc)"
ctest --preset ci -j "$(nproc)" "$@"
