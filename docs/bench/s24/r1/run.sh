# Prepared for the next start (not run: no machine could be started). Needs the pack of
# tools/gpu_engine.sh prepare with kvstar_old and cuda_bench_old (the build before the tile change)
# added, and docs/bench/s13/r3/common.sh as .gpu-engine/common.sh.
set -u
rm -rf /tmp/kvstar-gpu
source .gpu-engine/common.sh
T=/tmp/kvstar-gpu
date
# 0. The embedding API's tests (the CUDA test among them: dense and kvstar through Llm).
timeout 60 $T/api_test --gtest_brief=1 > "$OUT/api_tests.txt" 2>&1; echo "api rc=$?"
grep -E "FAILED|PASSED|SKIPPED|tests ran" "$OUT/api_tests.txt" | head
# 1. Product tests and the whole-model suite on the new tile choice.
timeout 100 $T/ops_cuda_test --gtest_brief=1 --gtest_filter='*Skinny*:*MatMul*' > "$OUT/ops_tests.txt" 2>&1; echo "ops rc=$?"
grep -E "FAILED|PASSED|tests ran" "$OUT/ops_tests.txt" | head
timeout 100 $T/cuda_engine_test --gtest_brief=1 > "$OUT/engine_tests.txt" 2>&1; echo "engine rc=$?"
grep -E "FAILED|PASSED|tests ran" "$OUT/engine_tests.txt" | head
date
# 2. One layer's products, previous build and this one.
for b in old new; do
  bin=$T/cuda_bench; [[ $b == old ]] && bin=$T/cuda_bench_old
  timeout 40 $bin --benchmark_filter='BM_DecodeLayerProducts/n:(8|9|12|16)/kernel:0/stages:0/split:1' \
    --benchmark_min_time=0.1 --benchmark_counters_tabular=true > "$OUT/layer_$b.txt" 2>&1
  echo "== $b"; grep -E "BM_" "$OUT/layer_$b.txt" | cut -c1-140
done
date
# 3. kvstar at 128K with the device cache (9 sequences), new then old.
B48="${B128/--decode-steps 32/--decode-steps 48}"
for b in new old; do
  bin=$K; [[ $b == old ]] && bin=$KO
  timeout 100 $bin bench $B48 --modes kvstar --kvstar-cache-blocks max > "$OUT/cmax_$b.json" 2>> /tmp/err.txt; echo "cmax $b rc=$?"
  summ "$OUT/cmax_$b.json"
  date
done
# 4. The largest batches at 128K on this build (the ratio in this start).
timeout 100 $K bench $B48 --modes dense,kvstar > "$OUT/main.json" 2>> /tmp/err.txt; echo "main rc=$?"
summ "$OUT/main.json"
cp /tmp/err.txt "$OUT/err.txt"
date
