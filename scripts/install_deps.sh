#!/usr/bin/env bash
# Installs the Debian packages kvstar needs to build and test. Idempotent; needs root (or sudo).
set -euo pipefail
PKGS=(
  build-essential cmake ninja-build ccache pkg-config
  libgtest-dev libgmock-dev libbenchmark-dev
  libhwy-dev            # SIMD kernels with runtime dispatch (AVX2 / AVX-512 / NEON / scalar)
  nlohmann-json3-dev    # config.json, tokenizer.json, --json output
  libcli11-dev          # command line
  libpcre2-dev          # tokenizer pre-split regex (Unicode classes)
  libicu-dev            # tokenizer NFC normalization (Qwen2 tokenizer.json)
  libxxhash-dev         # XXH3-128 block ids
  bible-kjv-text        # natural-text haystacks for the eval suite
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PKGS[@]} packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install_deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
