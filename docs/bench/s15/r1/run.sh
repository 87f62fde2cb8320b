set -u
source .gpu-engine/common.sh
head -2 "$OUT/env.txt"; date
timeout 120 /tmp/kvstar-gpu/ops_cuda_test --gtest_brief=1 > "$OUT/tests.txt" 2>&1; echo "ops rc=$?"
timeout 120 /tmp/kvstar-gpu/cuda_engine_test --gtest_brief=1 >> "$OUT/tests.txt" 2>&1; echo "engine rc=$?"
grep -E "FAILED|PASSED|Failure|tests ran" "$OUT/tests.txt" | head -20
date
B="--device cuda --shape llama3-8b --contexts 130944 --cuda-batch max --decode-steps 64 --retrieval-device gpu --host-memory-share 0.85 --hbm-budget 85017493504 --json --host-tier exclusive --staging_slots 2 --modes dense,kvstar"
timeout 170 $K bench $B --cuda-pdl off > "$OUT/max_off.json" 2> "$OUT/max_off.err"; date
timeout 170 $K bench $B --cuda-pdl on > "$OUT/max_on.json" 2> "$OUT/max_on.err"; date
summ "$OUT"/max_*.json
B1="--device cuda --shape llama3-8b --contexts 130944 --cuda-batch 1 --decode-steps 32 --retrieval-threads 15 --json --modes dense,kvstar"
timeout 60 $K bench $B1 --cuda-pdl off > "$OUT/b1_off.json" 2> "$OUT/b1_off.err"; date
timeout 60 $K bench $B1 --cuda-pdl on > "$OUT/b1_on.json" 2> "$OUT/b1_on.err"; date
summ "$OUT"/b1_*.json
timeout 45 compute-sanitizer --tool memcheck /tmp/kvstar-gpu/cuda_engine_test --gtest_brief=1 --gtest_filter='*DependentLaunches*' > "$OUT/pdl_memcheck.txt" 2>&1; echo "memcheck rc=$?"; tail -3 "$OUT/pdl_memcheck.txt"
