# First call (binary of commit 32634df: SwiGLU fused into the down product, on by default; PrefetchL2 off by default)
# .gpu-engine/common.sh is the copy in docs/bench/s13/r3/common.sh (unchanged since).
set -u
source .gpu-engine/common.sh
head -3 "$OUT/env.txt"; date
timeout 100 /tmp/kvstar-gpu/ops_cuda_test --gtest_brief=1 > "$OUT/tests.txt" 2>&1; echo "ops rc=$?"
timeout 150 /tmp/kvstar-gpu/cuda_engine_test --gtest_brief=1 >> "$OUT/tests.txt" 2>&1; echo "engine rc=$?"
grep -E "FAILED|PASSED|Failure|Expected|tests ran|taken back" "$OUT/tests.txt" | head -30
B="--device cuda --shape llama3-8b --contexts 130944 --cuda-batch max --decode-steps 64 --retrieval-device gpu --host-memory-share 0.85 --hbm-budget 85017493504 --json --host-tier exclusive --staging_slots 2"
run() { local name=$1; shift; date; timeout 150 $K bench $B "$@" > "$OUT/$name.json" 2>> "$OUT/err.txt"; echo "$name rc=$?"; summ "$OUT/$name.json"
  python3 -c "
import json
for r in json.load(open('$OUT/$name.json'))['runs']:
    print(r['mode'], 'l2', r.get('l2_prefetch_bytes'), 'fuse', r.get('fuse_swiglu'), ' '.join('%.1f'%x for x in r['step_ms'][:24]))
" 2>&1; }
run p0 --modes dense,kvstar --cuda-l2-prefetch 0
run p16 --modes dense,kvstar --cuda-l2-prefetch 16
run nofuse --modes dense,kvstar --cuda-l2-prefetch 0 --cuda-fuse-swiglu off
date
# Second call, same warm machine, same binary:
#   run p4 --modes dense,kvstar --cuda-l2-prefetch 4 --cuda-fuse-swiglu off
#   run nofuse2 --modes dense,kvstar --cuda-l2-prefetch 0 --cuda-fuse-swiglu off
