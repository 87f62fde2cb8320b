# Prepared, not run (no machine could be started): run it first next time with the pack of
# tools/gpu_engine.sh prepare and docs/bench/s13/r3/common.sh as .gpu-engine/common.sh.
# Sanitizers on the final build: racecheck and memcheck over the skinny products (the 32-row
# split tiles).
set -u
rm -rf /tmp/kvstar-gpu
source .gpu-engine/common.sh
T=/tmp/kvstar-gpu
timeout 90 compute-sanitizer --tool racecheck --error-exitcode 9 $T/ops_cuda_test \
  --gtest_filter='*Skinny*' --gtest_brief=1 > "$OUT/racecheck_skinny.txt" 2>&1; echo "racecheck skinny rc=$?"
grep -E 'RACECHECK SUMMARY|PASSED|FAILED' "$OUT/racecheck_skinny.txt" | tail -3
timeout 45 compute-sanitizer --tool memcheck --error-exitcode 9 $T/ops_cuda_test \
  --gtest_filter='*Skinny*:*MatMul*' --gtest_brief=1 > "$OUT/memcheck_skinny.txt" 2>&1; echo "memcheck skinny rc=$?"
grep -E 'ERROR SUMMARY|PASSED|FAILED' "$OUT/memcheck_skinny.txt" | tail -3
date
