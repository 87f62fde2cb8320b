# s25/r2: is kvstar's largest batch at 128K bound by the host's pinned memory? The default
# comparison (dense b3, kvstar b8 at host share 0.85), then the batches that a larger share
# admits: 9 sequences without the device cache (share 0.90: 120.6 GB pinned) and 10 with it
# (share 0.93: 124.1 GB pinned, 68 cache blocks per (layer, sequence)).
set -u
source .gpu-engine/common.sh
B48="${B128/--decode-steps 32/--decode-steps 48}"
date
timeout 150 $K bench $B48 --modes dense,kvstar > "$OUT/main.json" 2> "$OUT/err.txt"; echo "main rc=$?"
summ "$OUT/main.json"; date
timeout 140 $K bench ${B48/0.85/0.90} --modes kvstar > "$OUT/b9_nocache.json" 2>> "$OUT/err.txt"; echo "b9 nocache rc=$?"
summ "$OUT/b9_nocache.json"; date
timeout 150 $K bench ${B48/0.85/0.93} --modes kvstar --kvstar-cache-blocks max > "$OUT/b10_cache.json" 2>> "$OUT/err.txt"; echo "b10 cache rc=$?"
summ "$OUT/b10_cache.json"; free -g | head -2; date
timeout 120 $K bench ${B128/0.85/0.90} --modes kvstar --phase-timing > "$OUT/b9_phase.json" 2>> "$OUT/err.txt"; echo "b9 phase rc=$?"
summ "$OUT/b9_phase.json"; date
