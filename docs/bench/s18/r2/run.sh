set -u
source docs/bench/s13/r3/common.sh  # the recorded copy of .gpu-engine/common.sh
head -3 "$OUT/env.txt"; date
T=/tmp/kvstar-gpu
timeout 150 $T/ops_cuda_test --gtest_brief=1 > "$OUT/tests.txt" 2>&1; echo "ops rc=$?"
timeout 150 $T/cuda_engine_test --gtest_brief=1 >> "$OUT/tests.txt" 2>&1; echo "engine rc=$?"
timeout 120 compute-sanitizer --tool memcheck $T/ops_cuda_test --gtest_brief=1 --gtest_filter='ScoreBlocksTest.CtaLimit*:CudaOpsTest.MatMulSwiGlu*' >> "$OUT/tests.txt" 2>&1; echo "memcheck rc=$?"
grep -E "FAILED|PASSED|Failure|Expected|tests ran|ERROR SUMMARY" "$OUT/tests.txt" | head -30
date
for bpc in 16 256 0; do
  timeout 60 $K bench-retrieval --device cuda --blocks 1024 --q-heads 32 --kv-heads 8 --gpu-tasks 256 --gpu-blocks-per-cta $bpc --json > /tmp/score.json 2>>"$OUT/err.txt"
  { echo "# bench-retrieval ... --gpu-blocks-per-cta $bpc"; cat /tmp/score.json; } >> "$OUT/scores.txt"
  python3 -c "
import json; d=json.load(open('/tmp/score.json'))
for r in d['runs']: print('bpc $bpc ->', r['blocks_per_cta'], 'call %.3f ms p99 %.3f frac_copy %.3f err %.2e' % (r['median_ms_per_call'], r['p99_ms_per_call'], r['fraction_of_copy_bw'], r['max_rel_err_vs_cpu']))
" 2>&1 | tail -2
done
B="--device cuda --shape llama3-8b --contexts 130944 --cuda-batch max --decode-steps 64 --retrieval-device gpu --host-memory-share 0.85 --hbm-budget 85017493504 --json --host-tier exclusive --staging_slots 2"
run() { local name=$1; shift; date; timeout 160 $K bench "$@" > "$OUT/$name.json" 2>> "$OUT/err.txt"; echo "$name rc=$?"; summ "$OUT/$name.json"
  python3 -c "
import json
for r in json.load(open('$OUT/$name.json'))['runs']:
    print(r['mode'], 'b', r['batch'], 'fuse', r.get('fuse_swiglu'), ' '.join('%.1f'%x for x in r['step_ms'][:24]))
" 2>&1; }
run main $B --modes dense,kvstar
run b1 --device cuda --shape llama3-8b --contexts 130944 --cuda-batch 1 --decode-steps 32 --retrieval-threads 15 --json --modes dense,kvstar
run b9 $B --modes kvstar --kvstar-cache-blocks max
date
