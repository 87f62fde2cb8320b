set -u
source .gpu-engine/common.sh  # recorded copy: docs/bench/s13/r3/common.sh
head -3 "$OUT/env.txt"; date
T=/tmp/kvstar-gpu
grep -o -E 'avx512_fp16|amx_bf16|avx512_bf16' /proc/cpuinfo | sort -u | tr '\n' ' '; grep -m1 MHz /proc/cpuinfo
uptime
# 1. The CUDA suites (the fused SwiGLU test's check moved out of its loops last session).
timeout 90 $T/ops_cuda_test --gtest_brief=1 > /tmp/tests_full.txt 2>&1; echo "ops rc=$?"
timeout 100 $T/cuda_engine_test --gtest_brief=1 >> /tmp/tests_full.txt 2>&1; echo "engine rc=$?"
grep -E "FAILED|PASSED|Failure|tests ran|Expected|Which is|actual" /tmp/tests_full.txt | head -40 | tee "$OUT/tests.txt"
date
# 2. Retrieval goal shape on one Xeon core: the kernel hot in cache, then whole tasks, alternating.
taskset -c 4 $T/sparse_retrieval_bench --benchmark_filter='BM_BlockLse' --benchmark_repetitions=5 \
  --benchmark_report_aggregates_only=true > "$OUT/blocklse.txt" 2>&1
grep -E "median|cv" "$OUT/blocklse.txt"
for rep in 1 2 3; do for simd in best avx2; do
  timeout 30 $K bench-retrieval --blocks 250 --q-heads 20 --kv-heads 4 --threads 1 --min-seconds 1 --simd $simd --json > /tmp/r.json 2>>/tmp/err.txt
  { echo "# rep $rep: bench-retrieval --blocks 250 --q-heads 20 --kv-heads 4 --threads 1 --min-seconds 1 --simd $simd --json"; cat /tmp/r.json; } >> "$OUT/retrieval_250.txt"
  python3 -c "
import json; d=json.load(open('/tmp/r.json'))
t=d['config'].get('simd_target') or d['machine'].get('simd_target')
for r in d['runs']: print('rep $rep simd $simd', t, 'median %.3f ms cpu %.3f ms' % (r['median_ms'], r['cpu_ms_per_task']))
" 2>&1 | tail -1
done; done
date
# 3. DramStore: shared queue against direct hand-off, alternating, 3 rounds per point.
for rep in 1 2; do for disp in queue handoff; do
  timeout 120 $K store-bench --backends dram --block-sizes 64K,256K,1M --queue-depths 8,16 --total-bytes 256M --repeats 3 --io-dispatch $disp --json > /tmp/store_$disp$rep.json 2>>/tmp/err.txt; echo "store $disp $rep rc=$?"
  python3 -c "
import json; d=json.load(open('/tmp/store_$disp$rep.json'))
for r in d['points']: print('  %-8s %5d KiB qd %2d io %2d load %.2f GB/s memcpy qd %.2f ratio qd %.2f (rounds %s)' % ('$disp', r['block_bytes']//1024, r['queue_depth'], r['io_threads'], r['load_gbps'], r['raw_read_qd_gbps'], r['load_ratio_qd'], ' '.join('%.2f'%x for x in r['load_ratio_qd_rounds'])))
" 2>&1 | head -8
done; done
python3 -c "
import json; print(json.dumps({k: json.load(open('/tmp/store_%s.json' % k)) for k in ['queue1','handoff1','queue2','handoff2']}, indent=1))" > "$OUT/store.json"
date
# 4. The engine's kvstar at its largest batch, 128K (regression check of this build).
B="--device cuda --shape llama3-8b --contexts 130944 --cuda-batch max --decode-steps 48 --retrieval-device gpu --host-memory-share 0.85 --hbm-budget 85017493504 --json --host-tier exclusive --staging_slots 2"
timeout 140 $K bench $B --modes dense,kvstar > "$OUT/main.json" 2>> /tmp/err.txt; echo "main rc=$?"
summ "$OUT/main.json"
tail -5 /tmp/err.txt >> "$OUT/tests.txt"
date
