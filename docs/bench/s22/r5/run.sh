# The second part of the whole bench script (retrieval on the GPU, offload, KVPR), same start as r4.
source .gpu-engine/common.sh
timeout 420 bash tools/gpu_engine.sh bench "$OUT" 2 > "$OUT/console.txt" 2>&1
