set -u
source .gpu-engine/common.sh
T=/tmp/kvstar-gpu
date
# 1. Every CUDA suite with the tensor-core decode kernel as the default.
timeout 150 $T/ops_cuda_test --gtest_brief=1 > "$OUT/tests.txt" 2>&1; echo "ops rc=$?"
timeout 150 $T/cuda_engine_test --gtest_brief=1 >> "$OUT/tests.txt" 2>&1; echo "engine rc=$?"
grep -E "FAILED|PASSED|Failure|tests ran|Which is|actual|Expected" "$OUT/tests.txt" | head -30
date
for tool in memcheck racecheck synccheck; do
  timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 $T/ops_cuda_test \
    --gtest_filter='CudaAttentionTest.BatchedDecode*:CudaAttentionTest.LongDecode*' --gtest_brief=1 > /tmp/san_$tool.txt 2>&1; echo "$tool rc=$?"
  grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED' /tmp/san_$tool.txt | tee -a "$OUT/sanitizer.txt"
done
date
# 2. Batch 1 at 128K: kvstar's step against dense's (goal <= 0.7).
timeout 100 $K bench --device cuda --shape llama3-8b --contexts 130944 --cuda-batch 1 --decode-steps 32 --retrieval-threads 15 --json --modes dense,kvstar > "$OUT/b1.json" 2>> /tmp/err.txt; echo "b1 rc=$?"
summ "$OUT/b1.json"
date
# 3. kvstar with the device cache: the largest batch becomes 9.
B48="${B128/--decode-steps 32/--decode-steps 48}"
timeout 130 $K bench $B48 --modes kvstar --kvstar-cache-blocks max > "$OUT/cmax.json" 2>> /tmp/err.txt; echo "cmax rc=$?"
summ "$OUT/cmax.json"
tail -3 /tmp/err.txt
date
