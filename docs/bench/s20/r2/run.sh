set -u
source .gpu-engine/common.sh  # recorded copy: docs/bench/s13/r3/common.sh
head -3 "$OUT/env.txt"; date
timeout 60 /tmp/kvstar-gpu/ops_cuda_test --gtest_brief=1 --gtest_filter='ScoreBlocksTest.*' > "$OUT/tests.txt" 2>&1; echo "scoring tests rc=$?"
grep -E "FAILED|PASSED|Failure" "$OUT/tests.txt" | head
for it in 1 4 16; do for rb in 0 256K; do
  timeout 40 $K store-bench --backends dram --block-sizes 64K --queue-depths 16 --total-bytes 256M --repeats 3 --items-per-task $it --dram-bytes-per-runner $rb --json > /tmp/s.json 2>>/tmp/err.txt; echo "items $it runner $rb rc=$?"
  { echo "# store-bench --backends dram --block-sizes 64K --queue-depths 16 --total-bytes 256M --repeats 3 --items-per-task $it --dram-bytes-per-runner $rb --json"; cat /tmp/s.json; } >> "$OUT/store_small.txt"
  python3 -c "
import json; d=json.load(open('/tmp/s.json'))
for r in d['points']: print('  items $it runner $rb: load %.2f GB/s raw qd %.2f ratio qd %.2f (rounds %s)' % (r['load_gbps'], r['raw_read_qd_gbps'], r['load_ratio_qd'], ' '.join('%.2f'%x for x in r['load_ratio_qd_rounds'])))
" 2>&1 | tail -1
done; done
date
B="--device cuda --shape llama3-8b --contexts 130944 --cuda-batch max --decode-steps 48 --retrieval-device gpu --host-memory-share 0.85 --hbm-budget 85017493504 --json --host-tier exclusive --staging_slots 2 --modes kvstar"
run() { local name=$1; shift; date; timeout 100 $K bench "$@" > "$OUT/$name.json" 2>> /tmp/err.txt; echo "$name rc=$?"; summ "$OUT/$name.json"; }
run base1 $B
run score1 $B --gpu-score-stages 3 --gpu-score-layout head
run base2 $B
run score2 $B --gpu-score-stages 3 --gpu-score-layout head
date
