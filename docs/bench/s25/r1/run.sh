# s25/r1: the sanitizers prepared in s24/run_next.sh (racecheck and memcheck over the skinny
# products with the 32-row split tiles), then api_test on the final build (CudaRunner::CheckOptions).
set -u
rm -rf /tmp/kvstar-gpu
source .gpu-engine/common.sh
T=/tmp/kvstar-gpu
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 $T/ops_cuda_test \
  --gtest_filter='*Skinny*' --gtest_brief=1 > "$OUT/racecheck_skinny.txt" 2>&1; echo "racecheck skinny rc=$?"
grep -E 'RACECHECK SUMMARY|PASSED|FAILED' "$OUT/racecheck_skinny.txt" | tail -3
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 $T/ops_cuda_test \
  --gtest_filter='*Skinny*:*MatMul*' --gtest_brief=1 > "$OUT/memcheck_skinny.txt" 2>&1; echo "memcheck skinny rc=$?"
grep -E 'ERROR SUMMARY|PASSED|FAILED' "$OUT/memcheck_skinny.txt" | tail -3
timeout 120 $T/api_test --gtest_brief=1 > "$OUT/api_tests.txt" 2>&1; echo "api_test rc=$?"
grep -E 'PASSED|FAILED|SKIPPED' "$OUT/api_tests.txt" | tail -4
date
