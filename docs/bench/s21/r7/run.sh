set -u
source .gpu-engine/common.sh  # recorded copy: docs/bench/s13/r3/common.sh
head -3 "$OUT/env.txt"; date
T=/tmp/kvstar-gpu
ls models/kvstar-demo | head -3
timeout 100 $T/cuda_engine_test --gtest_brief=1 > /tmp/tests_engine.txt 2>&1; echo "engine rc=$?"
grep -E "FAILED|PASSED|Failure|tests ran|Expected|Which is|actual" /tmp/tests_engine.txt | head -40 | tee "$OUT/tests.txt"
date
