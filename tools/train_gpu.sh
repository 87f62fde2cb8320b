#!/usr/bin/env bash
# Launcher for tools/train_demo.py on the GPU machine. Needs data/kjv_ot.txt (scripts/make_haystack.sh).
# Trains into $WORK (default /tmp/kvstar-demo) and, when $OUT is set, copies the result there as
# the safetensors shards + one tarball of the small files + the log (few files, each < 16 MB).
# Usage: OUT=/some/dir bash tools/train_gpu.sh --minutes 8 [train_demo.py flags]
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
WORK="${WORK:-/tmp/kvstar-demo}"
OUT="${OUT:-$root/out}"
mkdir -p "$WORK" "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 tools/train_demo.py --out "$WORK" "$@" 2>&1 | tee "$OUT/train.log"
rc=${PIPESTATUS[0]}
cp "$WORK"/*.safetensors "$OUT"/ 2>/dev/null
(cd "$WORK" && tar czf "$OUT/small.tgz" --exclude='*.safetensors' .)
ls -la "$OUT"
exit "$rc"
