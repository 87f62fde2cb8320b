cd /work/main
K=build/ci/apps/kvstar/kvstar
T=niah_single,niah_single_text,niah_multikey,niah_multivalue,niah_multiquery,passkey
while pgrep -f /tmp/ml/run.sh > /dev/null; do sleep 5; done
for len in 4096 8192; do
  for n in 0 1; do
    /usr/bin/time -f "%e s" $K eval --model models/kvstar-demo --tasks $T --lengths $len --samples 5 --seed 1 \
      --mode kvstar --store dram --max_loads_per_step $n \
      --json /tmp/ml/ucm${n}_${len}.json > /tmp/ml/ucm${n}_${len}.log 2>&1
    echo "ucm $len $n done $(tail -1 /tmp/ml/ucm${n}_${len}.log)"
  done
done
