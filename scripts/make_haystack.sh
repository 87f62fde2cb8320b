#!/usr/bin/env bash
# Writes the natural-text haystacks used by the demo model's training and by `kvstar eval`, from the
# public-domain King James Bible of the Debian package bible-kjv-text (scripts/install_deps.sh).
#   data/kjv_ot.txt           Old Testament, one verse per line: training text (ignored folder, carried
#                             to the GPU machine by tools/train.sh).
#   src/eval/data/kjv_nt.txt  New Testament, one verse per line: the eval haystack (committed, so the
#                             eval does not need the package at run time). Held out from training.
# Usage: bash scripts/make_haystack.sh [--eval]   (--eval also rewrites the committed eval file)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
command -v bible >/dev/null || { echo "make_haystack: 'bible' not found; run scripts/install_deps.sh" >&2; exit 1; }
# -f formats, -l100000 keeps each verse on one line; the first field is the reference (e.g. Ge1:1).
verses() { bible -f -l100000 "$1" | awk 'NF > 1 { $1 = ""; sub(/^ +/, ""); print }'; }
mkdir -p "$root/data"
verses "Gen1:1-Mal4:6" > "$root/data/kjv_ot.txt"
echo "make_haystack: wrote $root/data/kjv_ot.txt ($(wc -l < "$root/data/kjv_ot.txt") verses)"
if [ "${1:-}" = "--eval" ]; then
  verses "Mat1:1-Rev22:21" > "$root/src/eval/data/kjv_nt.txt"
  echo "make_haystack: wrote $root/src/eval/data/kjv_nt.txt ($(wc -l < "$root/src/eval/data/kjv_nt.txt") verses)"
fi
