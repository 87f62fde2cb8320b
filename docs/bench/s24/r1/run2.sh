# Second call of the start: the first call's main.json / ops_tests.txt if still on disk, then
# the 9-sequence kvstar pair in the other order (old first), then dense at 32K, largest batch.
set -u
source .gpu-engine/common.sh
T=/tmp/kvstar-gpu
find / -xdev -name main.json -newer $T/kvstar -path '*' 2>/dev/null | grep -v kvstar-gpu | head -3 > "$OUT/found.txt"
f=$(head -1 "$OUT/found.txt"); [[ -n $f ]] && cp "$f" "$OUT/main.json" && cp "$(dirname "$f")/ops_tests.txt" "$OUT/ops_tests.txt" 2>/dev/null
B48="${B128/--decode-steps 32/--decode-steps 48}"
for b in old new; do
  bin=$K; [[ $b == old ]] && bin=$KO
  timeout 110 $bin bench $B48 --modes kvstar --kvstar-cache-blocks max > "$OUT/cmax2_$b.json" 2>> /tmp/err2.txt; echo "cmax2 $b rc=$?"
  summ "$OUT/cmax2_$b.json"
done
D32="--device cuda --shape llama3-8b --contexts 32K --cuda-batch max --decode-steps 32 --hbm-budget 85017493504 --json --modes dense"
for b in new old; do
  bin=$K; [[ $b == old ]] && bin=$KO
  timeout 80 $bin bench $D32 > "$OUT/d32_$b.json" 2>> /tmp/err2.txt; echo "d32 $b rc=$?"
  summ "$OUT/d32_$b.json"
done
cp /tmp/err2.txt "$OUT/err2.txt"
date
