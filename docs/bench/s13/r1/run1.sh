set -u
source .gpu-engine/common.sh
cat "$OUT/env.txt" | head -3
/tmp/kvstar-gpu/ops_cuda_test --gtest_brief=1 > "$OUT/ops_tests.txt" 2>&1; tail -3 "$OUT/ops_tests.txt"
timeout 200 /tmp/kvstar-gpu/cuda_engine_test --gtest_brief=1 > "$OUT/engine_tests.txt" 2>&1; tail -3 "$OUT/engine_tests.txt"
date
timeout 170 $KO bench $B128 --modes dense,kvstar > "$OUT/old_pair.json" 2> "$OUT/old_pair.err"; date
timeout 170 $K bench $B128 --modes dense,kvstar > "$OUT/new_pair.json" 2> "$OUT/new_pair.err"; date
summ "$OUT/old_pair.json" "$OUT/new_pair.json"
