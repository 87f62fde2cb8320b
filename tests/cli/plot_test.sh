#!/usr/bin/env bash
# kvstar plot: bench JSON in, PNG / SVG out; series per input or per field, ratios, filters; and
# one clear error for each bad input.
# Usage: plot_test.sh KVSTAR_BINARY [TEST_DATA_DIR]
set -u
K="$1"
source "$(dirname "$0")/check.sh"

cat >"$TMP/a.json" <<'JSON'
{"runs": [
  {"blocks": 1024, "threads": 16, "median_ms": 2.0, "speedup_vs_first": 12.0, "simd": "avx2"},
  {"blocks": 1024, "threads": 1, "median_ms": 20.0, "speedup_vs_first": 1.0, "simd": "avx2"},
  {"blocks": 250, "threads": 1, "median_ms": 4.0, "speedup_vs_first": 1.0, "simd": "avx2"},
  {"blocks": 250, "threads": 16, "median_ms": 0.8, "speedup_vs_first": 5.0, "simd": "avx2"}
]}
JSON
cat >"$TMP/b.json" <<'JSON'
{"points": [{"block_bytes": 65536, "queue_depth": 8, "load_gbps": 20.5},
            {"block_bytes": 1048576, "queue_depth": 8, "load_gbps": 35.0}]}
JSON

"$K" plot --input "$TMP/a.json" --x threads --y speedup_vs_first/threads --series blocks \
  --out "$TMP/a.png" >"$TMP/out" 2>&1
check "png written, 2 series of 2 points" grep -q "2 series, 4 points" "$TMP/out"
check "png signature" test "$(head -c 8 "$TMP/a.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a"
"$K" plot --input "$TMP/a.json,$TMP/b.json" --rows runs --x threads --y median_ms \
  --out "$TMP/x.svg" >"$TMP/out" 2>&1
check "--rows runs fails for the file without it" test $? -ne 0
"$K" plot --input "$TMP/a.json" --x threads --y median_ms --where blocks=250 --where simd=avx2 \
  --labels small --log-y --out "$TMP/a.svg" >"$TMP/out" 2>&1
check "svg with filters: 1 series of 2 points" grep -q "1 series, 2 points" "$TMP/out"
check "svg content" grep -q "<svg" "$TMP/a.svg"
check "svg legend label" grep -q ">small<" "$TMP/a.svg"
"$K" plot --input "$TMP/b.json" --x block_bytes --y load_gbps --log-x --out "$TMP/b.png" \
  >"$TMP/out" 2>&1
check "points array found by default" grep -q "1 series, 2 points" "$TMP/out"

# An array field (bench's per-step times) against its index.
cat >"$TMP/c.json" <<'JSON'
{"runs": [{"mode": "dense", "step_ms": [3.0, 3.1, 3.0]},
          {"mode": "kvstar", "step_ms": [1.0, 1.2, 4.0, 1.1], "median_ms": 1.1}]}
JSON
"$K" plot --input "$TMP/c.json" --x index --y step_ms --series mode --out "$TMP/c.svg" \
  >"$TMP/out" 2>&1
check "array y against its index: 2 series, 7 points" grep -q "2 series, 7 points" "$TMP/out"
"$K" plot --input "$TMP/c.json" --x index --y step_ms --where mode=kvstar --out "$TMP/c.png" \
  >"$TMP/out" 2>&1
check "array y filtered: 1 series, 4 points" grep -q "1 series, 4 points" "$TMP/out"

# The --plot flags of the bench commands (tiny runs).
"$K" store-bench --backends dram --block-sizes 64K,256K --queue-depths 1,2 --total-bytes 4M \
  --plot "$TMP/store.png" >"$TMP/out" 2>&1
check "store-bench --plot" test -s "$TMP/store.png"
# store-bench --repeats: each point keeps its rounds' ratios (plotted against their index).
"$K" store-bench --backends dram --block-sizes 64K --queue-depths 1 --total-bytes 1M --repeats 3 \
  --json >"$TMP/rounds.json" 2>&1
"$K" plot --input "$TMP/rounds.json" --x index --y load_ratio_seq_rounds --out "$TMP/rounds.png" \
  >"$TMP/out" 2>&1
check "store-bench --repeats 3: 3 rounds per point" grep -q "1 series, 3 points" "$TMP/out"
"$K" bench-retrieval --blocks 64 --threads 1,2 --min-seconds 0.02 --plot "$TMP/retr.svg" \
  >"$TMP/out" 2>&1
check "bench-retrieval --plot" grep -q "blocks 64, H 20, h 4" "$TMP/retr.svg"
# eval --plot: one line per task (tiny model of the test data, short prompts).
if [ -n "${2:-}" ]; then
  "$K" eval --model "$2/golden/qwen2_tiny" --tasks passkey,niah_single --lengths 256,512 \
    --samples 1 --plot "$TMP/eval.svg" >"$TMP/out" 2>&1
  check "eval --plot" grep -q ">niah_single<" "$TMP/eval.svg"
fi

# expect_error NAME PATTERN ARGS...: non-zero exit below 128, stderr matches PATTERN.
expect_error() {
  local name="$1" pattern="$2"; shift 2
  "$K" plot "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  if [ "$rc" -eq 0 ] || [ "$rc" -ge 128 ] || ! grep -qE -- "$pattern" "$TMP/err"; then
    echo "FAIL $name (exit $rc):"; sed 's/^/    /' "$TMP/err"; fail=$((fail + 1)); return
  fi
  echo "ok   $name: $(head -n 1 "$TMP/err")"
}
echo '{"runs": [' >"$TMP/bad.json"
expect_error "missing input" "cannot open" --input "$TMP/nope.json" --x a --y b --out "$TMP/o.png"
expect_error "not JSON" "not valid JSON" --input "$TMP/bad.json" --x a --y b --out "$TMP/o.png"
expect_error "unknown field" "no field 'nope'" --input "$TMP/a.json" --x nope --y median_ms \
  --out "$TMP/o.png"
expect_error "text field as number" "'simd' is not a number" --input "$TMP/a.json" --x simd \
  --y median_ms --out "$TMP/o.png"
expect_error "bad --where" "FIELD=VALUE" --input "$TMP/a.json" --x threads --y median_ms \
  --where blocks --out "$TMP/o.png"
expect_error "nothing matches" "no record matched" --input "$TMP/a.json" --x threads \
  --y median_ms --where blocks=7 --out "$TMP/o.png"
expect_error "labels count" "2 names for 1 inputs" --input "$TMP/a.json" --labels a,b --x threads \
  --y median_ms --out "$TMP/o.png"
expect_error "bad ratio" "FIELD or FIELD/FIELD" --input "$TMP/a.json" --x threads --y median_ms/ \
  --out "$TMP/o.png"
expect_error "array y without --x index" "is an array: use --x index" --input "$TMP/c.json" \
  --x median_ms --y step_ms --out "$TMP/o.png"
expect_error "array y as a ratio" "is an array: plot it without a ratio" --input "$TMP/c.json" \
  --x index --y step_ms/median_ms --out "$TMP/o.png"
expect_error "unwritable output" "$TMP/no/dir" --input "$TMP/a.json" --x threads --y median_ms \
  --out "$TMP/no/dir/o.png"
if [ "$fail" -ne 0 ]; then echo "$fail check(s) failed"; exit 1; fi
echo "all plot checks passed"
