set -u
source .gpu-engine/common.sh  # recorded copy: docs/bench/s13/r3/common.sh
head -3 "$OUT/env.txt"; date
T=/tmp/kvstar-gpu
timeout 150 $T/ops_cuda_test --gtest_brief=1 > "$OUT/tests.txt" 2>&1; echo "ops rc=$?"
timeout 150 $T/cuda_engine_test --gtest_brief=1 >> "$OUT/tests.txt" 2>&1; echo "engine rc=$?"
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 $T/ops_cuda_test --gtest_brief=1 --gtest_filter='CudaOpsTest.MatMulSwiGlu*:CudaOpsTest.SkinnyMatMulEveryTile*:ScoreBlocksTest.CtaLimit*' >> "$OUT/tests.txt" 2>&1; echo "racecheck rc=$?"
timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 $T/ops_cuda_test --gtest_brief=1 --gtest_filter='CudaOpsTest.SkinnyMatMulEveryTile*' >> "$OUT/tests.txt" 2>&1; echo "memcheck rc=$?"
grep -E "FAILED|PASSED|Failure|tests ran|ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/tests.txt" | head -30
date
timeout 120 $T/cuda_bench --benchmark_filter='BM_DecodeLayerProducts/n:(1|8|9|16)/kernel:0|BM_SkinnyTiles/rows:(4096|6144|28672)/cols:4096/n:(8|16)/m_tiles:(1|2|4)/stages|BM_SkinnyTiles/rows:4096/cols:14336/n:(8|16)/' --benchmark_min_time=0.05 --benchmark_counters_tabular=true > "$OUT/gemm.txt" 2>&1; echo "gemm rc=$?"
grep -E "BM_Decode|copy" "$OUT/gemm.txt" | head -40
date
for io in 0 8; do
  timeout 30 $K store-bench --backends dram --block-sizes 64K,256K,1M --queue-depths 8,16 --total-bytes 256M --io-threads $io --json > "$OUT/store_io$io.json" 2>/dev/null; echo "store io $io rc=$?"
  python3 -c "
import json; d=json.load(open('$OUT/store_io$io.json'))
for r in d['points']: print('  %6d KiB qd %2d io %2d load %.2f GB/s raw seq %.2f qd %.2f ratio seq %.2f qd %.2f p50 %.1f us' % (r['block_bytes']//1024, r['queue_depth'], r['io_threads'], r['load_gbps'], r['raw_read_seq_gbps'], r['raw_read_qd_gbps'], r['load_ratio_seq'], r['load_ratio_qd'], r['load_p50_us']))
" 2>&1 | head -8
done
date
for st in 0 3 0 3; do
  timeout 40 $K bench-retrieval --device cuda --blocks 1024 --q-heads 32 --kv-heads 8 --gpu-tasks 256 --gpu-stages $st --json > /tmp/score.json 2>>"$OUT/err.txt"
  { echo "# bench-retrieval --device cuda --blocks 1024 --q-heads 32 --kv-heads 8 --gpu-tasks 256 --gpu-stages $st --json"; cat /tmp/score.json; } >> "$OUT/scores.txt"
  python3 -c "
import json; d=json.load(open('/tmp/score.json'))
for r in d['runs']: print('stages $st bpc', r['blocks_per_cta'], 'call %.3f ms p99 %.3f frac_copy %.3f err %.2e' % (r['median_ms_per_call'], r['p99_ms_per_call'], r['fraction_of_copy_bw'], r['max_rel_err_vs_cpu']))
" 2>&1 | tail -2
done
date
NS="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats"
for f in 'rows:4096/cols:4096/n:8/m_tiles:2/stages:0' 'rows:4096/cols:4096/n:8/m_tiles:2/stages:3' 'rows:28672/cols:4096/n:16/m_tiles:4/stages:0'; do
  echo "=== BM_SkinnyTiles/$f" >> "$OUT/ncu.txt"
  timeout 40 ncu -k regex:SkinnyMatMulKernel --launch-skip 4 --launch-count 1 $NS $T/cuda_bench --benchmark_filter="BM_SkinnyTiles/$f\$" --benchmark_min_time=0.01 >> "$OUT/ncu.txt" 2>&1; echo "ncu $f rc=$?"
done
echo "=== scoring" >> "$OUT/ncu.txt"
timeout 60 ncu -k regex:PartialKernel --launch-skip 2 --launch-count 1 $NS $K bench-retrieval --device cuda --blocks 1024 --q-heads 32 --kv-heads 8 --gpu-tasks 256 --json >> "$OUT/ncu.txt" 2>&1; echo "ncu scoring rc=$?"
grep -E "^===|Duration|DRAM Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible|Warp Cycles Per Issued" "$OUT/ncu.txt" | head -60
date
