# s25/r5: the CUDA engine's tests on the build with the ParallelFor caller spin (0224c56).
set -u
rm -rf /tmp/kvstar-gpu
source .gpu-engine/common.sh
T=/tmp/kvstar-gpu
timeout 150 $T/cuda_engine_test --gtest_brief=1 > "$OUT/engine_tests.txt" 2>&1; echo "engine rc=$?"
grep -E 'PASSED|FAILED' "$OUT/engine_tests.txt" | tail -3
date
