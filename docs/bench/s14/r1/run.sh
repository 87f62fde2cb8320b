set -u
source .gpu-engine/common.sh
B="--device cuda --shape llama3-8b --contexts 130944 --cuda-batch max --decode-steps 64 --retrieval-device gpu --host-memory-share 0.85 --hbm-budget 85017493504 --json --host-tier exclusive --staging_slots 2"
head -2 "$OUT/env.txt"; date
/tmp/kvstar-gpu/ops_cuda_test --gtest_brief=1 --gtest_filter='ScoreBlocks*' > "$OUT/tests.txt" 2>&1; grep -E "FAILED|PASSED" "$OUT/tests.txt" | head -8
timeout 120 /tmp/kvstar-gpu/cuda_engine_test --gtest_brief=1 --gtest_filter='*GpuScoreCtas*:*RatioOne*' >> "$OUT/tests.txt" 2>&1; grep -E "FAILED|PASSED" "$OUT/tests.txt" | tail -4
timeout 90 compute-sanitizer --tool racecheck /tmp/kvstar-gpu/ops_cuda_test --gtest_brief=1 --gtest_filter='ScoreBlocksTest.CtaLimit*' 2>&1 | tail -3 >> "$OUT/tests.txt"; tail -2 "$OUT/tests.txt"
date
for c in 0 132 264; do
  echo "retr ctas $c: $(timeout 60 $K bench-retrieval --device cuda --blocks 1024 --q-heads 32 --kv-heads 8 --gpu-tasks 256 --gpu-ctas $c --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); r=d["runs"][0]; print("call_ms %.3f frac_copy %.3f copy %.0f" % (r["median_ms_per_call"], r["fraction_of_copy_bw"], d["gpu_copy_gbps"]))')"
done | tee "$OUT/retr.txt"
date
timeout 150 $K bench $B --modes dense,kvstar > "$OUT/c0.json" 2> "$OUT/c0.err"; date
for c in 132 264 66; do timeout 100 $K bench $B --modes kvstar --gpu-score-ctas $c > "$OUT/c$c.json" 2> "$OUT/c$c.err"; date; done
summ "$OUT"/c*.json
python3 - "$OUT"/c*.json <<'PY'
import json,sys
for f in sys.argv[1:]:
    try:
        for r in json.load(open(f))['runs']:
            if r['mode']=='kvstar': print(f.split('/')[-1], ' '.join('%.1f'%x for x in r['step_ms']), 'score ms/group %.1f late %d applied %d' % (r['kvstar']['gpu_score_ms_per_group'], r['kvstar']['late_retrievals'], r['kvstar']['retrievals_applied']))
    except Exception as e: print(f, 'bad', e)
PY
