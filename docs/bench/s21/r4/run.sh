set -u
source .gpu-engine/common.sh  # recorded copy: docs/bench/s13/r3/common.sh
head -3 "$OUT/env.txt"; date; uptime
mkdir -p /tmp/perfpack && tar -xJf .gpu-engine/perf.tar.xz -C /tmp/perfpack
P="env LD_LIBRARY_PATH=/tmp/perfpack/lib:/tmp/kvstar-gpu/lib /tmp/perfpack/perf"
KS=$PWD/.gpu-engine/kvstar_sym   # this build's kvstar with its symbols (Debian's perf 6.1 alongside)
chmod +x $KS
# The submitting thread is named sb-load during load passes, sb-dump / sb-warmup during dumps.
SB="store-bench --backends dram --block-sizes 64K --queue-depths 16 --total-bytes 2G --json"
$P record -T -F 4999 -e cpu-clock -o /tmp/p.data -- $KS $SB --repeats 3 > "$OUT/perf_store.json" 2> /tmp/rec.txt; echo "record rc=$?"; tail -1 /tmp/rec.txt
python3 -c "
import json; d=json.load(open('$OUT/perf_store.json'))
for r in d['points']: print('  %5d KiB qd %2d load %.2f GB/s memcpy qd %.2f ratio %.2f rounds %s faults %d' % (r['block_bytes']//1024, r['queue_depth'], r['load_gbps'], r['raw_read_qd_gbps'], r['load_ratio_qd'], r['load_ratio_qd_rounds'], r['load_minor_faults']))"
# Samples per symbol of each group of threads (perf script keeps each sample's comm at its time).
$P script -i /tmp/p.data -F comm,ip,sym,dso 2>/dev/null > /tmp/samples.txt
agg() { awk -v pat="$1" '$1 ~ pat {k=""; for(i=3;i<=NF;i++) k=k" "$i; n[k]++; t++} END {printf "%d samples\n", t; for (x in n) printf "%6.2f%% %d %s\n", 100*n[x]/t, n[x], x}' /tmp/samples.txt | sort -rn | head -${2:-30}; }
awk '{n[$1]++} END {for (c in n) print n[c], c}' /tmp/samples.txt | sort -rn | head -24 > "$OUT/report_comm.txt"
agg '^kvdram-' 40 > "$OUT/report_io.txt"
agg '^sb-load$' 50 > "$OUT/report_load.txt"
agg '^sb-dump$' 30 > "$OUT/report_dump.txt"
head -8 "$OUT/report_comm.txt"; echo "--- I/O threads (every pass)"; head -16 "$OUT/report_io.txt" | cut -c1-150
echo "--- submitting thread, load passes"; head -40 "$OUT/report_load.txt" | cut -c1-150
$P annotate -i /tmp/p.data --stdio -s kvstar::ThreadPool::WorkerLoop 2>/dev/null | grep -E '^\s+[0-9]+\.[0-9]+' | sort -rn | head -12 > "$OUT/annotate_worker.txt"
echo "--- WorkerLoop hottest lines"; cat "$OUT/annotate_worker.txt" | cut -c1-120
date
