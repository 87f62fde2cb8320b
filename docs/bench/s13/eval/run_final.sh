cd /work/main
K=build/ci/apps/kvstar/kvstar
T=niah_single,niah_single_text,niah_multikey,niah_multivalue,niah_multiquery,passkey
for len in 4096 8192; do
  for n in 1 2 4; do
    $K eval --model models/kvstar-demo --tasks $T --lengths $len --samples 5 --seed 1 \
      --mode kvstar --store dram --kvstar-config models/kvstar-demo/kvstar.json --max_loads_per_step $n \
      --json /tmp/ml2/ml${n}_${len}.json > /tmp/ml2/ml${n}_${len}.log 2>&1
    echo "$len $n done"
  done
  $K eval --model models/kvstar-demo --tasks $T --lengths $len --samples 5 --seed 1 \
    --mode kvstar --store dram --max_loads_per_step 1 --json /tmp/ml2/ucm1_${len}.json > /tmp/ml2/ucm1_${len}.log 2>&1
  echo "ucm $len done"
done
