set -u
source .gpu-engine/common.sh  # recorded copy: docs/bench/s13/r3/common.sh
head -3 "$OUT/env.txt"; date; uptime
T=/tmp/kvstar-gpu
# 1. The CUDA suites on the final build (store I/O threads with the direct hand-off).
timeout 90 $T/ops_cuda_test --gtest_brief=1 > /tmp/tests_full.txt 2>&1; echo "ops rc=$?"
timeout 100 $T/cuda_engine_test --gtest_brief=1 >> /tmp/tests_full.txt 2>&1; echo "engine rc=$?"
grep -E "FAILED|PASSED|Failure|tests ran|Expected|Which is|actual" /tmp/tests_full.txt | head -40 | tee "$OUT/tests.txt"
date
summ_store() { python3 -c "
import json,sys; d=json.load(open(sys.argv[1]))
for r in d['points']: print('  %-11s %6d KiB qd %2d io %2d load %.2f GB/s raw seq %.2f qd %.2f ratio seq %.2f qd %.2f (qd rounds %s)' % (r['backend'], r['block_bytes']//1024, r['queue_depth'], r['io_threads'], r['load_gbps'], r['raw_read_seq_gbps'], r['raw_read_qd_gbps'], r['load_ratio_seq'], r['load_ratio_qd'], ' '.join('%.2f'%x for x in r['load_ratio_qd_rounds'])))" "$1"; }
# 2. Both store goals with the defaults of this build.
timeout 120 $K store-bench --backends dram --block-sizes 64K,256K,1M --queue-depths 8,16,64 --total-bytes 256M --repeats 3 --json > "$OUT/store_dram.json" 2>>/tmp/err.txt; echo "dram rc=$?"
summ_store "$OUT/store_dram.json"
date
timeout 300 $K store-bench --dir /tmp/sb --backends file,file-direct --block-sizes 1M,4M,16M --queue-depths 8,32 --total-bytes 512M --repeats 3 --json > "$OUT/store_file.json" 2>>/tmp/err.txt; echo "file rc=$?"
summ_store "$OUT/store_file.json"
tail -3 /tmp/err.txt
date
