# .gpu-engine/common.sh is the copy in docs/bench/s13/r3/common.sh (unchanged since).
set -u
source .gpu-engine/common.sh
head -3 "$OUT/env.txt"; date
B="--device cuda --shape llama3-8b --contexts 130944 --cuda-batch max --decode-steps 64 --retrieval-device gpu --host-memory-share 0.85 --hbm-budget 85017493504 --json --host-tier exclusive --staging_slots 2"
timeout 150 $K bench $B --modes dense,kvstar > "$OUT/default.json" 2> "$OUT/err.txt"; echo rc=$?
summ "$OUT/default.json"
python3 -c "
import json
for r in json.load(open('$OUT/default.json'))['runs']:
    if r['mode']!='kvstar': continue
    kv=r['kvstar']
    print(' '.join('%.1f'%x for x in r['step_ms']))
    print('threads', kv['retrieval_threads'], r['window_split_ms_per_step'], 'late', kv['late_retrievals'], 'loaded %.0f hits %.0f' % (kv['blocks_loaded_per_step'], kv['cache_hits_per_step']))
"
date
