cd /work/main
K=build/ci/apps/kvstar/kvstar
T=niah_single,niah_single_text,niah_multikey,niah_multivalue,niah_multiquery,passkey
for len in 4096 8192; do
  for n in 0 1 2 4; do
    [[ $len == 4096 && $n == 0 ]] && continue
    /usr/bin/time -f "%e s" $K eval --model models/kvstar-demo --tasks $T --lengths $len --samples 5 --seed 1 \
      --mode kvstar --store dram --kvstar-config models/kvstar-demo/kvstar.json --max_loads_per_step $n \
      --json /tmp/ml/ml${n}_${len}.json > /tmp/ml/ml${n}_${len}.log 2>&1
    echo "$len $n done $(tail -1 /tmp/ml/ml${n}_${len}.log)"
  done
done
