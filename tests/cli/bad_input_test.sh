#!/usr/bin/env bash
# Bad inputs to the kvstar CLI: each must exit non-zero with one clear message naming the input,
# and never crash (no abort, no signal).
# Usage: bad_input_test.sh KVSTAR_BINARY TEST_DATA_DIR
set -u
K="$1"
DATA="$2"
GOLD="$DATA/golden/qwen2_tiny"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0

# expect_error NAME PATTERN CMD...: non-zero exit below 128 (no signal), stderr matches PATTERN.
expect_error() {
  local name="$1" pattern="$2"
  shift 2
  "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  if [ "$rc" -eq 0 ] || [ "$rc" -ge 128 ]; then
    echo "FAIL $name: exit code $rc"; sed 's/^/    /' "$TMP/err"; fail=$((fail + 1)); return
  fi
  if ! grep -qE -- "$pattern" "$TMP/err"; then
    echo "FAIL $name: stderr does not match '$pattern':"; sed 's/^/    /' "$TMP/err"
    fail=$((fail + 1)); return
  fi
  echo "ok   $name: $(head -n 1 "$TMP/err")"
  pass=$((pass + 1))
}

copy_model() {  # a writable copy of the golden model
  rm -rf "$TMP/m"; cp -r "$GOLD" "$TMP/m"
}

expect_error "missing model dir" "nope" "$K" generate --model "$TMP/nope" --prompt hi
copy_model; rm "$TMP/m/config.json"
expect_error "missing config.json" "config.json" "$K" generate --model "$TMP/m" --prompt hi
copy_model; rm "$TMP/m/model.safetensors"
expect_error "missing weights" "safetensors" "$K" generate --model "$TMP/m" --prompt hi
copy_model; truncate -s 100000 "$TMP/m/model.safetensors"
expect_error "truncated safetensors" "model.safetensors" "$K" generate --model "$TMP/m" --prompt hi
copy_model; truncate -s 5 "$TMP/m/model.safetensors"
expect_error "safetensors shorter than its header length" "model.safetensors" \
  "$K" generate --model "$TMP/m" --prompt hi
copy_model; printf '\xff\xff\xff\xff\xff\x00\x00\x00{}' >"$TMP/m/model.safetensors"
expect_error "oversized safetensors header" "model.safetensors" "$K" inspect --model "$TMP/m"
copy_model; sed -i 's/Qwen2ForCausalLM/MambaForCausalLM/' "$TMP/m/config.json"
expect_error "unknown architecture" "MambaForCausalLM" "$K" generate --model "$TMP/m" --prompt hi
copy_model; sed -i 's/"hidden_size": 128/"hidden_size": 96/' "$TMP/m/config.json"
expect_error "config disagrees with tensor shapes" "shape" "$K" generate --model "$TMP/m" --prompt hi
copy_model; rm "$TMP/m/tokenizer.json"
expect_error "missing tokenizer.json" "tokenizer.json" "$K" generate --model "$TMP/m" --prompt hi
copy_model; echo '{"model": {"type": "WordPiece"}}' >"$TMP/m/tokenizer.json"
expect_error "unsupported tokenizer" "tokenizer.json" "$K" generate --model "$TMP/m" --prompt hi
python3 -c "print('word ' * 3000)" >"$TMP/long.txt" 2>/dev/null || yes word | head -n 3000 | tr '\n' ' ' >"$TMP/long.txt"
expect_error "prompt longer than max_position_embeddings" "max_position_embeddings" \
  "$K" generate --model "$GOLD" --prompt-file "$TMP/long.txt"
expect_error "missing prompt file" "missing.txt" "$K" generate --model "$GOLD" --prompt-file "$TMP/missing.txt"
expect_error "no prompt" "--prompt" "$K" generate --model "$GOLD"
expect_error "negative threads" "threads" "$K" generate --model "$GOLD" --prompt hi --threads -1
expect_error "bad byte size" "device-kv-budget" \
  "$K" generate --model "$GOLD" --prompt hi --device-kv-budget 12XB
expect_error "bad block tokens" "block_tokens" "$K" generate --model "$GOLD" --prompt hi --block-tokens 12
expect_error "unknown mode" "mode" "$K" generate --model "$GOLD" --prompt hi --mode magic
expect_error "bad top-p" "top-p" "$K" generate --model "$GOLD" --prompt hi --temperature 1 --top-p 0
expect_error "bad sparse ratio" "sparse_ratio" \
  "$K" generate --model "$GOLD" --prompt hi --mode kvstar --sparse_ratio 0
expect_error "bad store spec" "s3://x" "$K" generate --model "$GOLD" --prompt hi --mode kvstar --store s3://x
echo '{"sparse_ration": 0.2}' >"$TMP/kv.json"
expect_error "unknown kvstar setting" "sparse_ration" \
  "$K" generate --model "$GOLD" --prompt hi --mode kvstar --kvstar-config "$TMP/kv.json"
expect_error "unknown eval task" "nosuchtask" "$K" eval --model "$GOLD" --tasks nosuchtask
expect_error "unknown bench shape" "gpt5" "$K" bench --shape gpt5
expect_error "CUDA-only mode on the CPU" "CUDA backend only" \
  "$K" generate --model "$GOLD" --prompt hi --mode kvpr
expect_error "unknown decode mode" "not in" "$K" generate --model "$GOLD" --prompt hi --mode sparse
expect_error "unknown subcommand" "subcommand" "$K" frobnicate
expect_error "zero decode steps" "decode-steps.*not in range 1 to" "$K" bench --decode-steps 0
expect_error "host memory share out of range" "host-memory-share" "$K" bench --host-memory-share 1.5
expect_error "unknown matmul kernel" "cuda-matmul.*not in" "$K" bench --cuda-matmul cublas
expect_error "CUDA matmul choice on the CPU" "cuda-matmul: a choice of the CUDA engine" "$K" bench \
  --cuda-matmul library
expect_error "unknown PDL setting" "cuda-pdl.*not in" "$K" bench --cuda-pdl maybe
expect_error "PDL setting on the CPU" "cuda-pdl: a choice of the CUDA engine" "$K" bench --cuda-pdl off
expect_error "L2 prefetch on the CPU" "cuda-l2-prefetch: a choice of the CUDA engine" "$K" bench --cuda-l2-prefetch 8
expect_error "negative L2 prefetch" "cuda-l2-prefetch" "$K" bench --device cuda --cuda-l2-prefetch -1
expect_error "SwiGLU fusion on the CPU" "cuda-fuse-swiglu: a choice of the CUDA engine" "$K" bench --cuda-fuse-swiglu off
expect_error "skinny stages on the CPU" "cuda-skinny-stages: a choice of the CUDA engine" "$K" bench \
  --cuda-skinny-stages 3
expect_error "skinny stages out of range" "cuda-skinny-stages.*not in" "$K" bench --device cuda \
  --cuda-skinny-stages 5
expect_error "decode attention variant on the CPU" "cuda-decode-attention: a choice of the CUDA engine" \
  "$K" bench --cuda-decode-attention mma
expect_error "skinny split on the CPU" "cuda-skinny-split: a choice of the CUDA engine" "$K" bench \
  --cuda-skinny-split on
expect_error "unknown decode attention variant" "cuda-decode-attention.*not in" "$K" bench \
  --device cuda --cuda-decode-attention wmma
expect_error "device cache on the CPU" "kvstar-cache-blocks: the device cache is a CUDA engine option" "$K" bench --kvstar-cache-blocks max
expect_error "device cache on the CPU engine" "the device cache is a CUDA engine option" "$K" \
  generate --model "$GOLD" --prompt hi --mode kvstar --kvstar-cache-blocks 4
expect_error "device cache 'max' outside the bench" "a block count per|CPU backend only" "$K" \
  generate --model "$GOLD" --prompt hi --device cuda --mode kvstar --kvstar-cache-blocks max
expect_error "device cache not a number" "a block count per|CPU backend only" "$K" \
  generate --model "$GOLD" --prompt hi --device cuda --mode kvstar --kvstar-cache-blocks -3
expect_error "device cache with dense" "non-deterministic schedule|CPU backend only" "$K" \
  generate --model "$GOLD" --prompt hi --device cuda --mode dense --kvstar-cache-blocks 4
expect_error "unknown host tier" "host-tier.*not in" "$K" bench --host-tier none
expect_error "GPU scoring stride over 64 (bench)" "at most 64 queries per group|CPU backend only" \
  "$K" bench --device cuda --modes kvstar --retrieval-device gpu --retrieval_stride 65
expect_error "GPU scoring stride over 64 (generate)" "at most 64 queries per group|CPU backend only" \
  "$K" generate --model "$GOLD" --prompt hi --device cuda --mode kvstar --retrieval-device gpu \
  --retrieval_stride 65
expect_error "score spread without GPU scoring" "only GPU scoring is spread" "$K" bench \
  --gpu-score-spread 4
expect_error "score spread out of range" "gpu-score-spread.*not in range" "$K" bench --gpu-score-spread 0
expect_error "score spread on the CPU engine" "only GPU scoring is spread" "$K" generate \
  --model "$GOLD" --prompt hi --mode kvstar --gpu-score-spread 2
expect_error "score spread with CPU scoring on CUDA" "only GPU scoring is spread|CPU backend only" \
  "$K" generate --model "$GOLD" --prompt hi --device cuda --mode kvstar --gpu-score-spread 2
expect_error "score CTAs without GPU scoring" "only GPU scoring has kernels to limit" "$K" bench \
  --gpu-score-ctas 32
expect_error "score CTAs out of range" "gpu-score-ctas.*not in range" "$K" bench --gpu-score-ctas -1
expect_error "score CTAs on the CPU engine" "only GPU scoring has kernels to limit" "$K" eval \
  --model "$GOLD" --mode kvstar --gpu-score-ctas 8
expect_error "score CTAs with CPU scoring on CUDA" "add --device cuda --retrieval-device gpu|CPU backend only" \
  "$K" generate --model "$GOLD" --prompt hi --device cuda --mode kvstar --gpu-score-ctas 8
expect_error "max loads per step on CUDA" "use --staging_slots|CPU backend only" "$K" generate \
  --model "$GOLD" --prompt hi --device cuda --mode kvstar --max_loads_per_step 2
expect_error "bench: max loads per step on CUDA" "use --staging_slots|CPU backend only" "$K" bench \
  --device cuda --modes kvstar --max_loads_per_step 2
expect_error "max loads per step with the deterministic schedule" "needs the asynchronous" "$K" \
  generate --model "$GOLD" --prompt hi --mode kvstar --max_loads_per_step 2 --deterministic
expect_error "phase timing on the CPU" "phase-timing.*--device cuda" "$K" bench --phase-timing
expect_error "unknown scoring kernel" "gpu-scoring-kernel.*not in" "$K" bench --gpu-scoring-kernel tf32
expect_error "scoring kernel without GPU scoring" "only GPU scoring has a kernel" "$K" bench \
  --gpu-scoring-kernel f32
expect_error "bench: exclusive host tier without kvstar" "only --modes kvstar has a host tier|CPU backend only" \
  "$K" bench --device cuda --modes dense --host-tier exclusive
expect_error "exclusive host tier with CUDA dense" "only --mode kvstar has a host tier|CPU backend only" \
  "$K" generate --model "$GOLD" --prompt hi --device cuda --host-tier exclusive
expect_error "retrieval CTA limit on the CPU" "gpu-ctas.*device cuda" "$K" bench-retrieval \
  --gpu-ctas 16
expect_error "retrieval work item size on the CPU" "gpu-blocks-per-cta.*device cuda" "$K" \
  bench-retrieval --gpu-blocks-per-cta 32
expect_error "scoring ring on the CPU" "gpu-stages.*device cuda" "$K" bench-retrieval --gpu-stages 3
expect_error "scoring ring depth" "gpu-stages.*not in" "$K" bench-retrieval --device cuda --gpu-stages 2
expect_error "engine scoring ring without GPU scoring" "gpu-score-stages 3.*retrieval-device gpu" "$K" \
  bench --device cuda --gpu-score-stages 3
expect_error "scoring layout on the CPU" "gpu-layout head.*device cuda" "$K" bench-retrieval \
  --gpu-layout head
expect_error "unknown scoring layout" "gpu-layout.*not in" "$K" bench-retrieval --device cuda \
  --gpu-layout heads
expect_error "engine scoring layout without GPU scoring" "gpu-score-layout head.*retrieval-device gpu" \
  "$K" bench --device cuda --gpu-score-layout head
expect_error "retrieval work item size out of range" "gpu-blocks-per-cta" "$K" bench-retrieval \
  --device cuda --gpu-blocks-per-cta 1025
expect_error "unknown retrieval kernel" "gpu-kernel.*not in" "$K" bench-retrieval --gpu-kernel mma
expect_error "GPU kernel on the CPU retriever" "the kernel of --device cuda" "$K" bench-retrieval \
  --gpu-kernel f32
expect_error "exclusive host tier on the CPU" "host-tier exclusive needs --device cuda" "$K" generate \
  --model "$GOLD" --prompt hi --host-tier exclusive
expect_error "in-flight out of range" "in-flight" "$K" bench-retrieval --in-flight 0
expect_error "zero retrieval threads" "retrieval-threads.*not in range 1 to 4096" "$K" generate \
  --model "$GOLD" --prompt hi --retrieval-threads 0
expect_error "GPU scoring on the CPU engine" "retrieval-device gpu needs --device cuda" "$K" \
  generate --model "$GOLD" --prompt hi --mode kvstar --retrieval-device gpu
expect_error "unknown retrieval device" "retrieval-device.*not in" "$K" generate --model "$GOLD" \
  --prompt hi --retrieval-device tpu
expect_error "store-bench unknown backend" "unknown backend 'tape'" "$K" store-bench --backends tape
expect_error "store-bench bad runner bytes" "dram-bytes-per-runner.*not a byte size" "$K" \
  store-bench --dram-bytes-per-runner 1Q
expect_error "store-bench zero items per task" "items-per-task must be >= 1" "$K" store-bench \
  --items-per-task 0
expect_error "store-bench zero rounds" "repeats must be in 1..100" "$K" store-bench --repeats 0
expect_error "store-bench unknown I/O dispatch" "is not handoff or queue" "$K" store-bench \
  --io-dispatch fifo
# Stores the CUDA engine does not use are refused, not ignored (builds without CUDA refuse the
# device first).
expect_error "tiered store with the CUDA engine" "already the DRAM tier|CPU backend only" "$K" \
  generate --model "$GOLD" --prompt hi --device cuda --mode kvstar --store "tiered:$TMP/kv"
expect_error "DRAM store size with the CUDA engine" "already the DRAM tier|CPU backend only" \
  "$K" generate --model "$GOLD" --prompt hi --device cuda --mode kvstar --store-dram 1G
expect_error "file store with CUDA dense" "used by --mode kvstar only|CPU backend only" "$K" \
  generate --model "$GOLD" --prompt hi --device cuda --store "file:$TMP/kv"
# The CUDA bench's store is for kvstar's prefix reuse: a file store, with prompts (real prefill).
expect_error "bench: store with random contexts" "with --prefill real|CPU backend only" "$K" \
  bench --device cuda --modes kvstar --store "file:$TMP/kv"
expect_error "bench: store without kvstar" "only --modes kvstar uses a block store|CPU backend only" \
  "$K" bench --device cuda --modes dense --prefill real --store "file:$TMP/kv"
expect_error "bench: tiered store on CUDA" "takes a file store|CPU backend only" "$K" \
  bench --device cuda --modes kvstar --prefill real --store "tiered:$TMP/kv"
# Generated bytes that are not valid UTF-8 (a byte-level token cut mid-character) still give
# valid JSON (U+FFFD), not a crash.
if "$K" generate --model "$GOLD" --prompt "The quick brown fox jumps over the lazy dog, again and again" \
    --max-tokens 12 --block-tokens 16 --json >"$TMP/out" 2>"$TMP/err" &&
    grep -q '"text"' "$TMP/out"; then
  echo "ok   generate --json with invalid UTF-8 output"; pass=$((pass + 1))
else
  echo "FAIL generate --json with invalid UTF-8 output"; sed 's/^/    /' "$TMP/err"; fail=$((fail + 1))
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
