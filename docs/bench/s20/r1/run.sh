set -u
source .gpu-engine/common.sh  # recorded copy: docs/bench/s13/r3/common.sh
head -3 "$OUT/env.txt"; date
T=/tmp/kvstar-gpu
timeout 90 $T/ops_cuda_test --gtest_brief=1 > /tmp/tests_full.txt 2>&1; echo "ops rc=$?"
timeout 100 $T/cuda_engine_test --gtest_brief=1 >> /tmp/tests_full.txt 2>&1; echo "engine rc=$?"
grep -E "FAILED|PASSED|Failure|tests ran|Expected|Which is|actual" /tmp/tests_full.txt | head -40 | tee "$OUT/tests.txt"
date
for lay in vector head vector head; do for st in 0 3; do
  timeout 40 $K bench-retrieval --device cuda --blocks 1024 --q-heads 32 --kv-heads 8 --gpu-tasks 256 --gpu-stages $st --gpu-layout $lay --json > /tmp/score.json 2>>/tmp/err.txt
  { echo "# bench-retrieval --device cuda --blocks 1024 --q-heads 32 --kv-heads 8 --gpu-tasks 256 --gpu-stages $st --gpu-layout $lay --json"; cat /tmp/score.json; } >> "$OUT/scores.txt"
  python3 -c "
import json; d=json.load(open('/tmp/score.json'))
for r in d['runs']: print('layout $lay stages $st call %.3f ms p99 %.3f frac_copy %.3f err %.2e' % (r['median_ms_per_call'], r['p99_ms_per_call'], r['fraction_of_copy_bw'], r['max_rel_err_vs_cpu']))
" 2>&1 | tail -1
done; done
date
timeout 30 $T/cuda_bench --benchmark_filter='BM_DecodeLayerProducts/n:(1|8|9|16)/kernel:0' --benchmark_min_time=0.05 --benchmark_counters_tabular=true > "$OUT/gemm.txt" 2>&1; echo "gemm rc=$?"
grep -E "BM_|copy" "$OUT/gemm.txt" | awk '{print $1, $2, $3, $NF}' | head -40
S=$(python3 - "$OUT/gemm.txt" <<'PY'
import re,sys
best=None
for l in open(sys.argv[1]):
    m=re.match(r'BM_DecodeLayerProducts/n:8/kernel:0/stages:(\d)/manual_time\s+([\d.]+) us',l)
    if m and m.group(1)!='0':
        t=float(m.group(2))
        if best is None or t<best[1]: best=(m.group(1),t)
print(best[0] if best else 3)
PY
)
echo "chosen skinny stages $S"; date
B="--device cuda --shape llama3-8b --contexts 130944 --cuda-batch max --decode-steps 48 --retrieval-device gpu --host-memory-share 0.85 --hbm-budget 85017493504 --json --host-tier exclusive --staging_slots 2"
run() { local name=$1; shift; date; timeout 140 $K bench "$@" > "$OUT/$name.json" 2>> /tmp/err.txt; echo "$name rc=$?"; summ "$OUT/$name.json"; }
run main $B --modes dense,kvstar
run rings $B --modes dense,kvstar --cuda-skinny-stages $S --gpu-score-stages 3
run head $B --modes kvstar --cuda-skinny-stages $S --gpu-score-stages 3 --gpu-score-layout head
date
timeout 70 compute-sanitizer --tool racecheck --error-exitcode 9 $T/ops_cuda_test --gtest_brief=1 --gtest_filter='CudaOpsTest.MatMulSwiGlu*:ScoreBlocksTest.HeadMajor*' > /tmp/race.txt 2>&1; echo "racecheck rc=$?"
grep -E "FAILED|PASSED|RACECHECK SUMMARY" /tmp/race.txt | tail -4 | tee -a "$OUT/tests.txt"
date
for be in dram file,file-direct; do
  if [ $be = dram ]; then a="--block-sizes 64K,256K,1M --queue-depths 8,16 --total-bytes 256M"; else a="--dir /tmp/sb --block-sizes 1M,4M,16M --queue-depths 8,32 --total-bytes 512M"; fi
  timeout 150 $K store-bench --backends $be $a --repeats 3 --json > /tmp/store_$be.json 2>>/tmp/err.txt; echo "store $be rc=$?"
  python3 -c "
import json; d=json.load(open('/tmp/store_$be.json'))
for r in d['points']: print('  %-11s %6d KiB qd %2d load %.2f GB/s raw seq %.2f ratio seq %.2f (rounds %s) qd %.2f' % (r['backend'], r['block_bytes']//1024, r['queue_depth'], r['load_gbps'], r['raw_read_seq_gbps'], r['load_ratio_seq'], ' '.join('%.2f'%x for x in r['load_ratio_seq_rounds']), r['load_ratio_qd']))
" 2>&1 | head -14
done
python3 -c "
import json; print(json.dumps({'dram': json.load(open('/tmp/store_dram.json')), 'file': json.load(open('/tmp/store_file,file-direct.json'))}, indent=1))" > "$OUT/store.json"
tail -5 /tmp/err.txt >> "$OUT/tests.txt"
date
