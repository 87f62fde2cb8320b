set -u
source .gpu-engine/common.sh
date
timeout 170 $K bench $B128 --modes dense,kvstar --phase-timing > "$OUT/new_phase.json" 2> "$OUT/new_phase.err"; date
timeout 120 $K bench $B128 --modes kvstar --phase-timing --retrieval_stride 16 > "$OUT/new_phase_s16.json" 2> "$OUT/new_phase_s16.err"; date
timeout 120 $KO bench $B128 --modes kvstar > "$OUT/old_kv2.json" 2> "$OUT/old_kv2.err"; date
summ "$OUT"/new_phase.json "$OUT"/new_phase_s16.json "$OUT"/old_kv2.json
