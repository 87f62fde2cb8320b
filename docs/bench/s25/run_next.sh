# Prepared, not run (the session's device time ran out): the ParallelFor caller spin (0224c56) in
# the CUDA engine, whose window threads are a ThreadPool: kvstar at 128K x 8 against the 7120e73
# build, two pairs in opposite orders (the first 128K run on a fresh machine takes over 90 s, so
# the timeouts are 150 s), dense once for the ratio. Needs a pack of tools/gpu_engine.sh prepare
# with the 7120e73 build's kvstar added as kvstar_old, and docs/bench/s13/r3/common.sh as
# .gpu-engine/common.sh.
set -u
rm -rf /tmp/kvstar-gpu
source .gpu-engine/common.sh
B48="${B128/--decode-steps 32/--decode-steps 48}"
timeout 150 $K bench $B48 --modes dense,kvstar > "$OUT/new1.json" 2> "$OUT/err.txt"; echo "new1 rc=$?"; summ "$OUT/new1.json"
timeout 150 $KO bench $B48 --modes kvstar > "$OUT/old1.json" 2>> "$OUT/err.txt"; echo "old1 rc=$?"; summ "$OUT/old1.json"
timeout 150 $KO bench $B48 --modes kvstar > "$OUT/old2.json" 2>> "$OUT/err.txt"; echo "old2 rc=$?"; summ "$OUT/old2.json"
timeout 150 $K bench $B48 --modes kvstar > "$OUT/new2.json" 2>> "$OUT/err.txt"; echo "new2 rc=$?"; summ "$OUT/new2.json"
date
