set -u
source .gpu-engine/common.sh
T=/tmp/kvstar-gpu
date
B48="${B128/--decode-steps 32/--decode-steps 48}"
# The engine at its largest batches: the decode attention kernel on the tensor cores (the new
# default) against the FMA kernel, alternating; then phase timing with the new default.
for v in mma fma; do
timeout 130 $K bench $B48 --modes dense,kvstar --cuda-decode-attention $v > "$OUT/main_$v.json" 2>> /tmp/err.txt; echo "$v rc=$?"
summ "$OUT/main_$v.json"
date
done
timeout 130 $K bench ${B128/--decode-steps 32/--decode-steps 24} --modes dense,kvstar --phase-timing > "$OUT/phase.json" 2>> /tmp/err.txt; echo "phase rc=$?"
summ "$OUT/phase.json"
tail -3 /tmp/err.txt
date
