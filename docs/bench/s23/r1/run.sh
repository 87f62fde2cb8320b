set -u
source .gpu-engine/common.sh
T=/tmp/kvstar-gpu
date
# 1. Every CUDA op test and the whole-model suite with the k-split default (first time).
timeout 240 $T/ops_cuda_test --gtest_brief=1 > "$OUT/ops_tests.txt" 2>&1; echo "ops rc=$?"
grep -E "FAILED|PASSED|tests ran" "$OUT/ops_tests.txt" | head -20
date
timeout 300 $T/cuda_engine_test --gtest_brief=1 > "$OUT/engine_tests.txt" 2>&1; echo "engine rc=$?"
grep -E "FAILED|PASSED|tests ran|Failure" "$OUT/engine_tests.txt" | head -20
date
# 2. Row tiles against the k-split at 8-16 rows; one layer's products.
timeout 150 $T/cuda_bench --benchmark_filter='BM_SkinnyTiles/.*/split:[12]$' \
  --benchmark_min_time=0.05 --benchmark_counters_tabular=true > "$OUT/tiles.txt" 2>&1; echo "tiles rc=$?"
grep -E "device|limit|BM_" "$OUT/tiles.txt" | cut -c1-150
timeout 60 $T/cuda_bench --benchmark_filter='BM_DecodeLayerProducts/n:(8|9|12|16)/kernel:0/stages:0/split:0' \
  --benchmark_min_time=0.1 --benchmark_counters_tabular=true > "$OUT/layer.txt" 2>&1; echo "layer rc=$?"
grep -E "BM_" "$OUT/layer.txt" | cut -c1-150
date
# The tile filter above matched nothing (benchmark names end in /manual_time); the same machine
# start then ran (tiles.txt):
# source .gpu-engine/common.sh; T=/tmp/kvstar-gpu; timeout 200 $T/cuda_bench \
#   --benchmark_filter='BM_SkinnyTiles/.*/split:[12]/|BM_DecodeLayerProducts/n:(8|9|16)/kernel:0/stages:0/split' \
#   --benchmark_min_time=0.05 --benchmark_counters_tabular=true > "$OUT/tiles.txt"
