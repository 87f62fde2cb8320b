set -u
source .gpu-engine/common.sh
head -3 "$OUT/env.txt"; date
T=/tmp/kvstar-gpu
# 1. Limits and the decode attention kernel at the engine's 128K shapes; one layer's products.
timeout 150 $T/cuda_bench --benchmark_filter='BM_DecodeAttention/tokens:(33024|130944)|BM_DecodeLayerProducts/n:(3|8)/kernel:0/stages:(0|1)' \
  --benchmark_min_time=0.2 --benchmark_counters_tabular=true > "$OUT/bench.txt" 2>&1; echo "bench rc=$?"
grep -E "device|read|BM_" "$OUT/bench.txt" | cut -c1-220
date
# 2. ncu: the decode kernel at kvstar's shape (8 x 33024, scattered) and dense's (3 x 130944).
for f in 'BM_DecodeAttention/tokens:33024/seqs:8/split:0/tiled:0/shuffle:1' 'BM_DecodeAttention/tokens:130944/seqs:3/split:0/tiled:0/shuffle:0'; do
timeout 120 ncu -k regex:DecodeKernel --launch-skip 4 --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
  $T/cuda_bench --benchmark_filter="$f" --benchmark_min_time=0.01 >> "$OUT/ncu.txt" 2>&1; echo "ncu rc=$?"
done
timeout 120 ncu -k regex:Skinny --launch-skip 12 --launch-count 4 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
  $T/cuda_bench --benchmark_filter='BM_DecodeLayerProducts/n:8/kernel:0/stages:0' --benchmark_min_time=0.01 >> "$OUT/ncu.txt" 2>&1; echo "ncu rc=$?"
grep -E "DecodeKernel|Skinny|Duration|DRAM Throughput|Memory Throughput|Issue Slots Busy|Issued Warp|No Eligible|Achieved Occupancy|Warp Cycles Per Issued|Stall|L2 Hit|Registers|Mem Busy|Max Bandwidth" "$OUT/ncu.txt" | head -150
date
