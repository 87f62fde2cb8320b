# .gpu-engine/common.sh is the copy in docs/bench/s13/r3/common.sh (unchanged since).
set -u
source .gpu-engine/common.sh
head -3 "$OUT/env.txt"; nvidia-smi --query-gpu=memory.used,memory.free --format=csv; date
timeout 110 /tmp/kvstar-gpu/cuda_engine_test --gtest_brief=1 > "$OUT/tests.txt" 2>&1; echo "engine rc=$?"
grep -E "FAILED|PASSED|Failure|Expected|tests ran|taken back" "$OUT/tests.txt" | head -24
B="--device cuda --shape llama3-8b --contexts 130944 --cuda-batch max --decode-steps 64 --retrieval-device gpu --host-memory-share 0.85 --hbm-budget 85017493504 --json --host-tier exclusive --staging_slots 2"
run() { local name=$1; shift; date; timeout 150 $K bench $B "$@" > "$OUT/$name.json" 2>> "$OUT/err.txt"; echo "$name rc=$?"; tail -2 "$OUT/err.txt"; summ "$OUT/$name.json"
  python3 -c "
import json
for r in json.load(open('$OUT/$name.json'))['runs']:
    if r['mode']!='kvstar': continue
    kv=r['kvstar']
    print(' '.join('%.1f'%x for x in r['step_ms']))
    print('win', r.get('window_split_ms_per_step'), 'max %.1f' % r.get('host_window_ms_max',0), 'late', kv['late_retrievals'], 'loaded/step %.1f hits/step %.1f cache %d' % (kv['blocks_loaded_per_step'], kv.get('cache_hits_per_step',0), kv.get('cache_blocks',0)), 'h2d/step %.0f MB' % (r['h2d_bytes_per_step']/1e6), 'pinned %.1f GB dev %.1f GB' % (r['host_pinned_bytes']/1e9, (r['device_bytes_batch']+r['weight_bytes'])/1e9))
" 2>&1; }
run base --modes dense,kvstar
B8="${B/--cuda-batch max/--cuda-batch 8}"; Bsave="$B"; B="$B8"; run c8max --modes kvstar --kvstar-cache-blocks max; B="$Bsave"
run cmax --modes kvstar --kvstar-cache-blocks max
run cmax_t8 --modes kvstar --kvstar-cache-blocks max --retrieval-threads 8
date
# Then, on the same warm machine (two more calls):
#   $K bench $B --modes kvstar --retrieval-threads 8 > b8_t8.json
#   $K bench --device cuda --shape llama3-8b --contexts 130944 --cuda-batch 1 --decode-steps 32 \
#       --retrieval-threads 15 --json --modes dense,kvstar > b1.json
