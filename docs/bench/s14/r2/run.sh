set -u
source .gpu-engine/common.sh
KP=/tmp/kvstar-gpu/kvstar_prev
B="--device cuda --shape llama3-8b --contexts 130944 --cuda-batch max --decode-steps 64 --retrieval-device gpu --host-memory-share 0.85 --hbm-budget 85017493504 --json --host-tier exclusive --staging_slots 2"
head -2 "$OUT/env.txt"; date
/tmp/kvstar-gpu/ops_cuda_test --gtest_brief=1 > "$OUT/tests.txt" 2>&1
grep -E "FAILED|PASSED|rel. error" "$OUT/tests.txt" | head -12; grep -B2 -A10 "Failure" "$OUT/tests.txt" | head -60
timeout 200 /tmp/kvstar-gpu/cuda_engine_test --gtest_brief=1 --gtest_filter='*GpuScor*:*RatioOne*' >> "$OUT/tests.txt" 2>&1; grep -E "FAILED|PASSED|overlap" "$OUT/tests.txt" | tail -12
date
R="bench-retrieval --device cuda --blocks 1024 --q-heads 32 --kv-heads 8 --gpu-tasks 256 --json"
for b in $KP $K $KP $K; do echo "retr $(basename $b): $(timeout 60 $b $R 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); r=d["runs"][0]; print("call_ms %.3f frac_copy %.3f copy %.0f err %.2e" % (r["median_ms_per_call"], r["fraction_of_copy_bw"], d["gpu_copy_gbps"], r["max_rel_err_vs_cpu"]))')"; done
date
timeout 100 $KP bench $B --modes kvstar > "$OUT/prev_kv.json" 2> "$OUT/prev_kv.err"; date
timeout 150 $K bench $B --modes dense,kvstar > "$OUT/new_pair.json" 2> "$OUT/new_pair.err"; date
summ "$OUT"/*.json
python3 - "$OUT"/*.json <<'PY'
import json,sys
for f in sys.argv[1:]:
    try:
        for r in json.load(open(f))['runs']:
            if r['mode']=='kvstar': print(f.split('/')[-1], ' '.join('%.1f'%x for x in r['step_ms']), 'score ms/group %.1f late %d applied %d' % (r['kvstar']['gpu_score_ms_per_group'], r['kvstar']['late_retrievals'], r['kvstar']['retrievals_applied']))
    except Exception as e: print(f, 'bad', e)
PY
