# s25/r3 (one command line): 128K with a 0.95 host share, without and with the device cache.
source .gpu-engine/common.sh; B48="${B128/--decode-steps 32/--decode-steps 48}"
timeout 140 $K bench ${B48/0.85/0.95} --modes kvstar > "$OUT/s95_nocache.json" 2> "$OUT/err.txt"; echo "nocache rc=$?"; summ "$OUT/s95_nocache.json"
timeout 160 $K bench ${B48/0.85/0.95} --modes kvstar --kvstar-cache-blocks max > "$OUT/s95_cache.json" 2>> "$OUT/err.txt"; echo "cache rc=$?"; summ "$OUT/s95_cache.json"; free -g | head -2; date
