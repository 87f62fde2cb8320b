set -u
source .gpu-engine/common.sh
T=/tmp/kvstar-gpu
date
# 1. The products' tests (with and without the k-split), sanitizers on the split kernel.
timeout 100 $T/ops_cuda_test --gtest_brief=1 --gtest_filter='*Skinny*:*MatMul*' > "$OUT/tests.txt" 2>&1; echo "tests rc=$?"
grep -E "FAILED|PASSED|Failure|tests ran|Which is|actual|Expected|split=" "$OUT/tests.txt" | head -20
for tool in memcheck racecheck; do
  timeout 100 compute-sanitizer --tool $tool --error-exitcode 9 $T/ops_cuda_test \
    --gtest_filter='*SkinnyMatMulMatchesCpuAndIsBatchInvariant*' --gtest_brief=1 > /tmp/san_$tool.txt 2>&1; echo "$tool rc=$?"
  grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|PASSED|FAILED' /tmp/san_$tool.txt | tee -a "$OUT/sanitizer.txt"
done
date
# 2. One layer's products with and without the split.
timeout 100 $T/cuda_bench --benchmark_filter='BM_DecodeLayerProducts/n:(3|8|9|16)/kernel:0/stages:0/split' \
  --benchmark_min_time=0.1 --benchmark_counters_tabular=true > "$OUT/bench.txt" 2>&1; echo "bench rc=$?"
grep -E "device|BM_" "$OUT/bench.txt" | cut -c1-170
date
# 3. The engine at its largest batches with and without the split.
B48="${B128/--decode-steps 32/--decode-steps 48}"
for sp in on off; do
timeout 120 $K bench $B48 --modes dense,kvstar --cuda-skinny-split $sp > "$OUT/main_split_$sp.json" 2>> /tmp/err.txt; echo "$sp rc=$?"
summ "$OUT/main_split_$sp.json"
done
tail -2 /tmp/err.txt
date
