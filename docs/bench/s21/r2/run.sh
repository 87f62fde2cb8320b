set -u
source .gpu-engine/common.sh  # recorded copy: docs/bench/s13/r3/common.sh
head -3 "$OUT/env.txt"; date; uptime
T=/tmp/kvstar-gpu
O=.gpu-engine/old  # the build before the exponent change (old/kvstar, old/sparse_retrieval_bench)
chmod +x $O/*
# 1. The scoring kernel hot in cache on one core, previous and new exponent, alternating.
for rep in 1 2 3; do for b in old new; do
  bin=$T/sparse_retrieval_bench; [ $b = old ] && bin=$O/sparse_retrieval_bench
  taskset -c 4 $bin --benchmark_filter='BM_BlockLse/4/20/32' --benchmark_repetitions=3 \
    --benchmark_report_aggregates_only=true 2>&1 | grep median | sed "s/^/rep $rep $b /" | tee -a "$OUT/blocklse.txt"
done; done
date
# 2. The 250-block goal shape, one retrieval thread, previous and new, alternating (wall median;
#    the old binary's cpu_ms also counts the waiting caller's polling).
for rep in 1 2 3 4 5; do for simd in best avx2; do for b in old new; do
  bin=$K; [ $b = old ] && bin=$O/kvstar
  timeout 30 $bin bench-retrieval --blocks 250 --q-heads 20 --kv-heads 4 --threads 1 --min-seconds 1 --simd $simd --json > /tmp/r.json 2>>/tmp/err.txt
  { echo "# rep $rep $b: bench-retrieval --blocks 250 --q-heads 20 --kv-heads 4 --threads 1 --min-seconds 1 --simd $simd --json"; cat /tmp/r.json; } >> "$OUT/retrieval_250.txt"
  python3 -c "
import json; d=json.load(open('/tmp/r.json')); r=d['runs'][0]
print('rep $rep $simd $b median %.3f ms p99 %.3f cpu %.3f' % (r['median_ms'], r['p99_ms'], r['cpu_ms_per_task']))
" 2>&1 | tail -1 | tee -a "$OUT/retrieval_250_summary.txt"
done; done; done
date
# 3. Throughput scaling, 16 tasks in flight (new build), 1024 blocks, Llama-3-8B heads.
timeout 120 $K bench-retrieval --blocks 1024 --q-heads 32 --kv-heads 8 --threads 1,8,16 --in-flight 16 --min-seconds 1.0 --json > "$OUT/inflight16.json" 2>>/tmp/err.txt; echo "inflight rc=$?"
python3 -c "
import json; d=json.load(open('$OUT/inflight16.json'))
for r in d['runs']: print('threads %2d ms/task %.2f speedup/thr %.2f cpu ms %.1f' % (r['threads'], r['median_ms'], r['speedup_vs_first']/r['threads'], r['cpu_ms_per_task']))
"
date
# 4. DramStore with the defaults, 5 rounds per point.
timeout 150 $K store-bench --backends dram --block-sizes 64K,256K,1M --queue-depths 8,16 --total-bytes 256M --repeats 5 --json > "$OUT/store.json" 2>>/tmp/err.txt; echo "store rc=$?"
python3 -c "
import json; d=json.load(open('$OUT/store.json'))
for r in d['points']: print('  %5d KiB qd %2d io %2d load %.2f GB/s memcpy qd %.2f ratio qd %.2f (rounds %s)' % (r['block_bytes']//1024, r['queue_depth'], r['io_threads'], r['load_gbps'], r['raw_read_qd_gbps'], r['load_ratio_qd'], ' '.join('%.2f'%x for x in r['load_ratio_qd_rounds'])))
"
tail -5 /tmp/err.txt
date
