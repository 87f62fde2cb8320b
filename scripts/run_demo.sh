#!/usr/bin/env bash
# The main job: builds kvstar, writes a long document (~6K tokens of natural text) with one hidden
# fact, and asks the shipped demo model for it with KVstar decoding: the KV cache is offloaded to
# a DRAM block store and only the windows plus the top 25% of blocks stay in device memory.
# Usage: bash scripts/run_demo.sh [extra kvstar generate flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" --target kvstar
KVSTAR=build/release/apps/kvstar/kvstar
MODEL=models/kvstar-demo
PROMPT=build/release/demo_prompt.txt
"$KVSTAR" task --model "$MODEL" --task niah_single_text --length 6000 --seed 7 >"$PROMPT" \
  2>build/release/demo_expected.txt
echo "== prompt: $(wc -w <"$PROMPT") words; its last lines:"
tail -c 300 "$PROMPT"; echo
echo "== expected: $(cat build/release/demo_expected.txt)"
echo "== kvstar generate --mode kvstar:"
"$KVSTAR" generate --model "$MODEL" --prompt-file "$PROMPT" --max-tokens 16 --mode kvstar \
  --kvstar-config "$MODEL/kvstar.json" "$@"
