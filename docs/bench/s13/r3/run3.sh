set -u
source .gpu-engine/common.sh
KP=/tmp/kvstar-gpu/kvstar_prev
head -2 "$OUT/env.txt"
/tmp/kvstar-gpu/ops_cuda_test --gtest_brief=1 > "$OUT/ops_tests.txt" 2>&1; grep -E "FAILED|PASSED|rel. error" "$OUT/ops_tests.txt" | head -12
timeout 200 /tmp/kvstar-gpu/cuda_engine_test --gtest_brief=1 > "$OUT/engine_tests.txt" 2>&1; grep -E "FAILED|PASSED" "$OUT/engine_tests.txt" | head -5
date
R="bench-retrieval --device cuda --blocks 1024 --q-heads 32 --kv-heads 8 --gpu-tasks 256 --json"
timeout 60 $KP $R > "$OUT/retr_prev.json" 2>&1
timeout 60 $K $R > "$OUT/retr_new.json" 2>&1
python3 - "$OUT"/retr_*.json <<'PY'
import json,sys
for f in sys.argv[1:]:
    try:
        d=json.load(open(f)); print(f.split('/')[-1], json.dumps(d)[:700])
    except Exception as e: print(f, 'bad', e)
PY
date
timeout 150 $KP bench $B128 --modes dense,kvstar > "$OUT/prev_pair.json" 2> "$OUT/prev_pair.err"; date
timeout 110 $K bench $B128 --modes kvstar > "$OUT/new_kv.json" 2> "$OUT/new_kv.err"; date
timeout 110 $K bench $B128 --modes kvstar --gpu-score-spread 8 > "$OUT/new_kv_sp8.json" 2> "$OUT/new_kv_sp8.err"; date
summ "$OUT/prev_pair.json" "$OUT/new_kv.json" "$OUT/new_kv_sp8.json" "$OUT/new_kv_sp4.json"
python3 - "$OUT/prev_pair.json" "$OUT/new_kv.json" "$OUT/new_kv_sp8.json" "$OUT/new_kv_sp4.json" <<'PY'
import json,sys
for f in sys.argv[1:]:
    try:
        for r in json.load(open(f))['runs']:
            if r['mode']=='kvstar': print(f.split('/')[-1], ' '.join('%.1f'%x for x in r['step_ms']), 'score ms/group %.1f late %d applied %d' % (r['kvstar']['gpu_score_ms_per_group'], r['kvstar']['late_retrievals'], r['kvstar']['retrievals_applied']))
    except Exception as e: print(f, 'bad', e)
PY
