set -u
source .gpu-engine/common.sh  # recorded copy: docs/bench/s13/r3/common.sh
head -3 "$OUT/env.txt"; date; uptime
# 1. DramStore with the defaults at queue depths 8, 16 and 64 (64: more blocks in flight than I/O
#    threads, so a late submitter does not leave a thread idle), 3 rounds per point.
timeout 200 $K store-bench --backends dram --block-sizes 64K,256K,1M --queue-depths 8,16,64 --total-bytes 256M --repeats 3 --json > "$OUT/store.json" 2>>/tmp/err.txt; echo "store rc=$?"
python3 -c "
import json; d=json.load(open('$OUT/store.json'))
for r in d['points']: print('  %5d KiB qd %2d io %2d load %.2f GB/s memcpy 1 thr %.2f, qd %.2f ratio qd %.2f (rounds %s)' % (r['block_bytes']//1024, r['queue_depth'], r['io_threads'], r['load_gbps'], r['raw_read_seq_gbps'], r['raw_read_qd_gbps'], r['load_ratio_qd'], ' '.join('%.2f'%x for x in r['load_ratio_qd_rounds'])))
"
date
# 2. Retrieval throughput scaling, 16 tasks in flight, AVX-512 and AVX2.
for simd in best avx2; do
  timeout 150 $K bench-retrieval --blocks 1024 --q-heads 32 --kv-heads 8 --threads 1,4,8,16 --in-flight 16 --min-seconds 1.0 --simd $simd --json > "$OUT/inflight16_$simd.json" 2>>/tmp/err.txt; echo "inflight $simd rc=$?"
  python3 -c "
import json; d=json.load(open('$OUT/inflight16_$simd.json'))
for r in d['runs']: print('$simd threads %2d ms/task %.2f speedup/thr %.2f cpu ms %.1f' % (r['threads'], r['median_ms'], r['speedup_vs_first']/r['threads'], r['cpu_ms_per_task']))
"
done
tail -5 /tmp/err.txt
date
