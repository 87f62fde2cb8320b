set -u
source .gpu-engine/common.sh
T=/tmp/kvstar-gpu
date
# 1. Attention tests (both decode variants forced, against the CPU op), limits, skinny tiles.
timeout 200 $T/ops_cuda_test --gtest_brief=1 --gtest_filter='CudaAttentionTest.*:*Limit*:*Skinny*' > "$OUT/tests.txt" 2>&1; echo "tests rc=$?"
grep -E "FAILED|PASSED|Failure|tests ran|Which is|actual|kernel=|Expected" "$OUT/tests.txt" | head -30
date
# 2. The decode kernels: FMA (kernel 0) against tensor cores (kernel 2).
timeout 200 $T/cuda_bench --benchmark_filter='BM_DecodeAttention/tokens:(33024|130944|32768|131072)/seqs:(1|3|4|8|16)/split:0/kernel:(0|2)' \
  --benchmark_min_time=0.2 --benchmark_counters_tabular=true > "$OUT/bench.txt" 2>&1; echo "bench rc=$?"
grep -E "device|BM_" "$OUT/bench.txt" | cut -c1-200
date
timeout 100 ncu -k regex:DecodeMmaKernel --launch-skip 4 --launch-count 1 --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
  $T/cuda_bench --benchmark_filter='BM_DecodeAttention/tokens:33024/seqs:8/split:0/kernel:2/shuffle:1' --benchmark_min_time=0.01 > "$OUT/ncu.txt" 2>&1; echo "ncu rc=$?"
grep -E "Duration|DRAM Throughput|Issued Warp|No Eligible|Registers|Achieved Occupancy|Block Limit" "$OUT/ncu.txt"
date
