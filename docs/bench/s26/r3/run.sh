# Phase timing of the retrieval-free steps at 128K (dense 3, kvstar 8), run as one command:
source .gpu-engine/common.sh; B32="$B128 --retrieval_stride 64 --prompt_query_window 8 --phase-timing"; timeout 200 $K bench $B32 --modes dense,kvstar > $OUT/ceil_phase_b8.json 2> $OUT/err3.txt; echo rc=$?; summ $OUT/ceil_phase_b8.json; tail -2 $OUT/err3.txt
