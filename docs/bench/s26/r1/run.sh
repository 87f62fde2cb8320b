# One call: dense and kvstar at 128K (new build), then kvstar with retrieval taken out of the
# step (one selection from the prompt's last 8 queries, then --retrieval_stride 4096: no scoring
# and no delta copies in the 48 decode steps) at 8 sequences (default share) and 9 (share 0.95),
# then the ParallelFor caller-spin A/B (kvstar_old = this build without 0224c56's spin), as far
# as the call's time allows.
set -u
SECONDS=0
rm -rf /tmp/kvstar-gpu
source .gpu-engine/common.sh
B48="${B128/--decode-steps 32/--decode-steps 48}"
B95="${B48/--host-memory-share 0.85/--host-memory-share 0.95}"
NS="--retrieval_stride 4096 --prompt_query_window 8"
go() {  # name binary args...
  local name=$1 bin=$2; shift 2
  if (( SECONDS > 470 )); then echo "$name skipped at ${SECONDS}s"; return; fi
  timeout 150 $bin bench "$@" > "$OUT/$name.json" 2>> "$OUT/err.txt"; echo "$name rc=$? at ${SECONDS}s"
  summ "$OUT/$name.json"
}
go main $K $B48 --modes dense,kvstar
go ceil_b8 $K $B48 --modes kvstar $NS
go ceil_b9 $K $B95 --modes kvstar $NS
go old1 $KO $B48 --modes kvstar
go new2 $K $B48 --modes kvstar
go old2 $KO $B48 --modes kvstar
tail -3 "$OUT/err.txt"; date; nvidia-smi --query-gpu=name --format=csv,noheader
