# Same start as r7: one layer's products at one row, and batch 1 at 128K, with and without the split.
source .gpu-engine/common.sh
T=/tmp/kvstar-gpu
timeout 60 $T/cuda_bench --benchmark_filter='BM_DecodeLayerProducts/n:1/kernel:0/stages:0/split' --benchmark_min_time=0.1 --benchmark_counters_tabular=true > "$OUT/bench_n1.txt" 2>&1
for sp in on off; do timeout 80 $K bench --device cuda --shape llama3-8b --contexts 130944 --cuda-batch 1 --decode-steps 32 --retrieval-threads 15 --json --modes dense,kvstar --cuda-skinny-split $sp > "$OUT/b1_split_$sp.json"; done
