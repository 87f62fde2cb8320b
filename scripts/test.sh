#!/usr/bin/env bash
# The test command: installs dependencies, builds (warnings as errors) and runs every test that
# needs no GPU. When a CUDA toolkit (nvcc) is present, the CUDA backend is compiled too and its
# tests (label gpu) skip themselves without a device.
# Usage: bash scripts/test.sh [ctest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cuda_flags=()
nvcc_path=$(command -v nvcc || true)
[ -z "$nvcc_path" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc_path=/usr/local/cuda/bin/nvcc
if [ -n "$nvcc_path" ]; then
  echo "test.sh: CUDA toolkit found ($nvcc_path): compiling the CUDA backend"
  cuda_flags=(-DKVSTAR_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc_path")
else
  echo "test.sh: no nvcc: the CUDA backend is not compiled"
fi
cmake --preset ci "${cuda_flags[@]}"
cmake --build --preset ci -j "$(nproc)"
ctest --preset ci -j "$(nproc)" "$@"
