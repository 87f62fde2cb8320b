# s25/r4 (one command line): 9 sequences (0.95 host share) with --phase-timing.
source .gpu-engine/common.sh; timeout 140 $K bench ${B128/0.85/0.95} --modes kvstar --phase-timing > "$OUT/b9_phase.json" 2> "$OUT/err.txt"; echo "b9 phase rc=$?"; summ "$OUT/b9_phase.json"; date
