set -u
source .gpu-engine/common.sh  # recorded copy: docs/bench/s13/r3/common.sh
head -3 "$OUT/env.txt"; date; uptime
mkdir -p /tmp/perfpack && tar -xJf .gpu-engine/perf.tar.xz -C /tmp/perfpack
P="env LD_LIBRARY_PATH=/tmp/perfpack/lib:/tmp/kvstar-gpu/lib /tmp/perfpack/perf"
KS=$PWD/.gpu-engine/kvstar_sym   # the experimental build: --io-dispatch handoff|queue
chmod +x $KS
agg() { awk -v pat="$1" '$1 ~ pat {k=""; for(i=3;i<=NF;i++) k=k" "$i; n[k]++; t++} END {printf "%d samples\n", t; for (x in n) printf "%6.2f%% %d %s\n", 100*n[x]/t, n[x], x}' /tmp/samples.txt | sort -rn | head -${2:-30}; }
summ_store() { python3 -c "
import json,sys; d=json.load(open(sys.argv[1]))
for r in d['points']: print('  %-8s %5d KiB qd %2d io %2d load %.2f GB/s memcpy qd %.2f ratio %.2f (rounds %s)' % (d.get('io_dispatch', r.get('io_dispatch')), r['block_bytes']//1024, r['queue_depth'], r['io_threads'], r['load_gbps'], r['raw_read_qd_gbps'], r['load_ratio_qd'], ' '.join('%.2f'%x for x in r['load_ratio_qd_rounds'])))" "$1"; }
# 1. Profiles of both dispatches at 64 KiB, qd 16.
for disp in queue handoff; do
  $P record -T -F 4999 -e cpu-clock -o /tmp/p.data -- $KS store-bench --backends dram --block-sizes 64K --queue-depths 16 --total-bytes 2G --repeats 3 --io-dispatch $disp --json > "$OUT/perf_$disp.json" 2> /tmp/rec.txt; echo "record $disp rc=$?"
  summ_store "$OUT/perf_$disp.json"
  $P script -i /tmp/p.data -F comm,ip,sym,dso 2>/dev/null > /tmp/samples.txt
  { echo "== I/O threads"; agg '^kvdram-' 25; echo "== submitting thread, load passes"; agg '^sb-load$' 30; } > "$OUT/profile_$disp.txt"
  grep -A8 "== I/O" "$OUT/profile_$disp.txt" | cut -c1-130; grep -A12 "== submitting" "$OUT/profile_$disp.txt" | cut -c1-130
done
date
# 2. Plain A/B, alternating, 3 rounds per point.
for rep in 1 2; do for disp in queue handoff; do
  timeout 120 $KS store-bench --backends dram --block-sizes 64K,256K,1M --queue-depths 8,16,64 --total-bytes 256M --repeats 3 --io-dispatch $disp --json > "$OUT/ab_${disp}_$rep.json" 2>>/tmp/err.txt; echo "ab $disp $rep rc=$?"
  summ_store "$OUT/ab_${disp}_$rep.json"
done; done
tail -3 /tmp/err.txt
date
