# Sourced by the run scripts: unpack the new build (and the previous commit's kvstar), env.
mkdir -p /tmp/kvstar-gpu /tmp/kvold "$OUT"
[[ -x /tmp/kvstar-gpu/kvstar ]] || tar -xJf .gpu-engine/pack.tar.xz -C /tmp/kvstar-gpu
src=$(cat /tmp/kvstar-gpu/source_dir)
[[ -e $src ]] || { mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; }
export LD_LIBRARY_PATH=/tmp/kvstar-gpu/lib
K=/tmp/kvstar-gpu/kvstar
KO=/tmp/kvstar-gpu/kvstar_old
B128="--device cuda --shape llama3-8b --contexts 130944 --cuda-batch max --decode-steps 32 --retrieval-device gpu --host-memory-share 0.85 --hbm-budget 85017493504 --json --host-tier exclusive --staging_slots 2"
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv; lscpu | grep 'Model name'; free -g; } > "$OUT/env.txt" 2>&1
summ() { python3 - "$@" <<'PY'
import json,sys
for f in sys.argv[1:]:
    try: d=json.load(open(f))
    except Exception as e: print(f, 'unreadable', e); continue
    for r in d['runs']:
        p=r.get('device_phase_ms_per_step')
        print(f.split('/')[-1], r['mode'], 'b%d'%r['batch'], 'med %.2f mean %.2f p99 %.2f tok/s %.1f bound %.2f win %.2f' % (r['step_ms_median'], r['step_ms_mean'], r['step_ms_p99'], r['decode_tokens_per_second'], r['bound_ms'], r.get('host_window_ms_per_step',0)))
        if p: print('   phases', {k: round(v,3) for k,v in p.items()})
PY
}
