set -u
source docs/bench/s13/r3/common.sh  # the recorded copy of .gpu-engine/common.sh
head -3 "$OUT/env.txt"; date
timeout 150 /tmp/kvstar-gpu/ops_cuda_test --gtest_brief=1 > "$OUT/tests.txt" 2>&1; echo "ops rc=$?"
timeout 150 /tmp/kvstar-gpu/cuda_engine_test --gtest_brief=1 >> "$OUT/tests.txt" 2>&1; echo "engine rc=$?"
grep -E "FAILED|PASSED|Failure|Expected|tests ran" "$OUT/tests.txt" | head -30
date
for bpc in 16 32 64 128 0; do
  timeout 60 $K bench-retrieval --device cuda --blocks 1024 --q-heads 32 --kv-heads 8 --gpu-tasks 256 --gpu-blocks-per-cta $bpc --json > "$OUT/score_bpc$bpc.json" 2>>"$OUT/err.txt"
  python3 -c "
import json; d=json.load(open('$OUT/score_bpc$bpc.json'))
for r in d['runs']: print('bpc $bpc ->', r['blocks_per_cta'], 'call %.3f ms p99 %.3f frac_copy %.3f err %.2e' % (r['median_ms_per_call'], r['p99_ms_per_call'], r['fraction_of_copy_bw'], r['max_rel_err_vs_cpu']))
" 2>&1 | tail -2
done
B="--device cuda --shape llama3-8b --contexts 130944 --cuda-batch max --decode-steps 64 --retrieval-device gpu --host-memory-share 0.85 --hbm-budget 85017493504 --json --host-tier exclusive --staging_slots 2"
run() { local name=$1; shift; date; timeout 160 $K bench $B "$@" > "$OUT/$name.json" 2>> "$OUT/err.txt"; echo "$name rc=$?"; summ "$OUT/$name.json"
  python3 -c "
import json
for r in json.load(open('$OUT/$name.json'))['runs']:
    print(r['mode'], 'fuse', r.get('fuse_swiglu'), ' '.join('%.1f'%x for x in r['step_ms'][:24]))
" 2>&1; }
run glu_on --modes dense,kvstar --cuda-fuse-swiglu on
run glu_off --modes dense,kvstar --cuda-fuse-swiglu off
date
