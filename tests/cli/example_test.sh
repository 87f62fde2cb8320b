#!/usr/bin/env bash
# examples/complete.cc (the embedding API alone) answers a passkey prompt written by
# `kvstar task`, dense and kvstar, and reports a bad option as one error line and exit 1.
# Usage: example_test.sh EXAMPLE_BINARY KVSTAR_BINARY MODEL_DIR
set -u
EX="$1" K="$2" MODEL="$3"
source "$(dirname "$0")/check.sh"

"$K" task --model "$MODEL" --task passkey --length 2000 --seed 11 >"$TMP/prompt.txt" 2>"$TMP/expected"
key=$(sed -n 's/.*expected: \([0-9]*\)\].*/\1/p' "$TMP/expected")
check "task printed a key" test -n "$key"
"$EX" "$MODEL" "$TMP/prompt.txt" >"$TMP/dense.out" 2>"$TMP/dense.err"
check "dense exit 0" test $? -eq 0
check "dense answers $key" grep -q "$key" "$TMP/dense.out"
check "dense counts line" grep -q "dense on cpu" "$TMP/dense.err"
"$EX" "$MODEL" "$TMP/prompt.txt" kvstar "$MODEL/kvstar.json" >"$TMP/kvstar.out" 2>"$TMP/kvstar.err"
check "kvstar exit 0" test $? -eq 0
check "kvstar answers $key" grep -q "$key" "$TMP/kvstar.out"
"$EX" "$MODEL" "$TMP/prompt.txt" offload >"$TMP/bad.out" 2>"$TMP/bad.err"
check "bad mode exit 1" test $? -eq 1
check "bad mode one line naming it" bash -c "test \$(wc -l <'$TMP/bad.err') -eq 1 && grep -q offload '$TMP/bad.err'"
cat "$TMP"/*.err
exit $fail
