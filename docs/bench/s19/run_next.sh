set -u
source .gpu-engine/common.sh  # recorded copy: docs/bench/s13/r3/common.sh
head -3 "$OUT/env.txt"; date
T=/tmp/kvstar-gpu
timeout 60 $T/ops_cuda_test --gtest_brief=1 > "$OUT/tests.txt" 2>&1; echo "ops rc=$?"
timeout 70 $T/cuda_engine_test --gtest_brief=1 >> "$OUT/tests.txt" 2>&1; echo "engine rc=$?"
grep -E "FAILED|PASSED|Failure|ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/tests.txt" | head -30
date
timeout 25 $T/cuda_bench --benchmark_filter='BM_DecodeLayerProducts/n:(1|8|9|16)/kernel:0' --benchmark_min_time=0.05 --benchmark_counters_tabular=true > "$OUT/gemm.txt" 2>&1; echo "gemm rc=$?"
grep -E "BM_|copy" "$OUT/gemm.txt" | awk '{print $1, $2, $3, $NF}' | head -60
S=$(python3 - "$OUT/gemm.txt" <<'PY'
import re,sys
best=None
for l in open(sys.argv[1]):
    m=re.match(r'BM_DecodeLayerProducts/n:8/kernel:0/stages:(\d)/manual_time\s+([\d.]+) us',l)
    if m and m.group(1)!='0':
        t=float(m.group(2))
        if best is None or t<best[1]: best=(m.group(1),t)
print(best[0] if best else 3)
PY
)
echo "chosen skinny stages $S"; date
B="--device cuda --shape llama3-8b --contexts 130944 --cuda-batch max --decode-steps 48 --retrieval-device gpu --host-memory-share 0.85 --hbm-budget 85017493504 --json --host-tier exclusive --staging_slots 2"
run() { local name=$1; shift; date; timeout 140 $K bench "$@" > "$OUT/$name.json" 2>> "$OUT/err.txt"; echo "$name rc=$?"; summ "$OUT/$name.json"; }
run main $B --modes dense,kvstar
run sk$S $B --modes kvstar --cuda-skinny-stages $S --gpu-score-stages 3
date
timeout 80 compute-sanitizer --tool racecheck --error-exitcode 9 $T/ops_cuda_test --gtest_brief=1 --gtest_filter='CudaOpsTest.MatMulSwiGlu*' >> "$OUT/tests.txt" 2>&1; echo "racecheck rc=$?"
grep -E "FAILED|PASSED|RACECHECK SUMMARY" "$OUT/tests.txt" | tail -4
date
