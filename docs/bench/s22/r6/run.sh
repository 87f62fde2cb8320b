# A second run of the largest-batch comparison with the new default, same start as r4 and r5.
source .gpu-engine/common.sh
B48="${B128/--decode-steps 32/--decode-steps 48}"
timeout 130 $K bench $B48 --modes dense,kvstar > "$OUT/main2.json"
