#!/usr/bin/env bash
# The CUDA engine (src/engine/cuda, `kvstar bench --device cuda`) on a machine with an NVIDIA GPU
# that has the driver and the CUDA 13 runtime but none of the Debian -dev packages.
#
#   tools/gpu_engine.sh prepare [build_dir]  on the build machine: configure with -DKVSTAR_CUDA=ON,
#                                            build `kvstar`, `cuda_engine_test`, `ops_cuda_test`,
#                                            `api_test`, `cuda_bench` and `sparse_retrieval_bench`,
#                                            and pack them with the non-system shared libraries
#                                            they need into .gpu-engine/pack.tar.xz (about 3 MB)
#   tools/gpu_engine.sh test [out_dir]       on the GPU machine: the CUDA op tests (memcheck,
#                                            racecheck and synccheck over the scoring and
#                                            decode attention kernels),
#                                            the whole-model GPU tests, the embedding API's
#                                            tests (device cuda among them) and memcheck over
#                                            the offload, kvpr, kvstar and dependent-launch
#                                            tests
#   tools/gpu_engine.sh racecheck [out_dir]  on the GPU machine: compute-sanitizer racecheck over
#                                            the whole engine on a short run of dense, offload
#                                            and kvstar without cuBLAS (about 6 minutes)
#   tools/gpu_engine.sh bench [out_dir] [part]
#                                            on the GPU machine: the runs of docs/BENCHMARKS.md
#                                            ("CUDA engine"), JSON and PNG plots into out_dir;
#                                            part 1 (kvstar against dense), 2 (retrieval, offload,
#                                            KVPR) or all (the default; about 10 minutes)
#
# ICU: the CLI links the tokenizer, whose NFC normalizer needs ICU's 30 MB data library. The
# benchmarks and these tests use token ids only, so the pack carries libicuuc and a stand-in
# libicudata.so.72 that defines the data symbol with no data: any use of the tokenizer on the GPU
# machine then fails with an ICU error instead of loading the real data.
#
# Tests need the repository at the path they were built in (KVSTAR_SOURCE_DIR); `test` links
# that path to the current checkout when it does not exist.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-test}
pack=.gpu-engine

if [[ $mode == prepare ]]; then
  build=${2:-build/cuda}
  set -e
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVSTAR_WERROR=ON -DKVSTAR_CUDA=ON
  cmake --build "$build" --target kvstar cuda_engine_test ops_cuda_test api_test cuda_bench \
    sparse_retrieval_bench -j"$(nproc)"
  tmp=$(mktemp -d)
  mkdir -p "$tmp/lib"
  bins=(kvstar cuda_engine_test ops_cuda_test api_test cuda_bench sparse_retrieval_bench)
  cp "$build/apps/kvstar/kvstar" "$build/src/engine/cuda/cuda_engine_test" \
    "$build/src/ops/cuda/ops_cuda_test" "$build/src/api/api_test" "$build/bench/cuda_bench" \
    "$build/bench/sparse_retrieval_bench" "$tmp/"
  for b in "${bins[@]}"; do strip "$tmp/$b"; done
  for bin in "${bins[@]/#/$tmp/}"; do
    ldd "$bin" | awk '/=> \//{print $3}' | grep -Ev '/(libc|libm|libdl|libpthread|librt)\.so|/cuda|icudata' |
      xargs -r -I{} cp -L {} "$tmp/lib/"
  done
  echo 'const char icudt72_dat[16] __attribute__((aligned(16))) = {0};' > "$tmp/icustub.c"
  gcc -shared -fPIC -Wl,-soname,libicudata.so.72 -o "$tmp/lib/libicudata.so.72" "$tmp/icustub.c"
  echo "$PWD" > "$tmp/source_dir"
  mkdir -p "$pack"
  (cd "$tmp" && tar -cf - "${bins[@]}" lib source_dir | xz -T0 -6) \
    > "$pack/pack.tar.xz"
  rm -rf "$tmp"
  ls -la "$pack"
  exit 0
fi

out=${2:-${OUT:-/tmp/gpu_engine}}
mkdir -p "$out" /tmp/kvstar-gpu
tar -xJf "$pack/pack.tar.xz" -C /tmp/kvstar-gpu
src=$(cat /tmp/kvstar-gpu/source_dir)
[[ -e $src ]] || { mkdir -p "$(dirname "$src")" && ln -s "$PWD" "$src"; }
export LD_LIBRARY_PATH=/tmp/kvstar-gpu/lib
K=/tmp/kvstar-gpu/kvstar
{
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv
  lscpu | grep 'Model name'
  free -g
} >"$out/env.txt" 2>&1
status=0

if [[ $mode == test ]]; then
  /tmp/kvstar-gpu/ops_cuda_test --gtest_brief=1 >"$out/ops_tests.txt" 2>&1 || status=1
  tail -2 "$out/ops_tests.txt"
  /tmp/kvstar-gpu/cuda_engine_test --gtest_brief=1 >"$out/tests.txt" 2>&1 || status=1
  tail -5 "$out/tests.txt"
  /tmp/kvstar-gpu/api_test --gtest_brief=1 >"$out/api_tests.txt" 2>&1 || status=1
  tail -3 "$out/api_tests.txt"
  for tool in memcheck racecheck synccheck; do
    compute-sanitizer --tool $tool --error-exitcode 9 /tmp/kvstar-gpu/ops_cuda_test \
      --gtest_filter='ScoreBlocks*:CudaAttentionTest.BatchedDecode*:CudaAttentionTest.LongDecode*' --gtest_brief=1 >"$out/ops_$tool.txt" 2>&1 || status=1
    grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/ops_$tool.txt"
  done
  compute-sanitizer --tool memcheck --error-exitcode 9 /tmp/kvstar-gpu/cuda_engine_test \
    --gtest_filter='*Kvstar*:*Offload*:*DependentLaunches*' --gtest_brief=1 >"$out/memcheck.txt" 2>&1 || status=1
  grep -E 'ERROR SUMMARY' "$out/memcheck.txt"
  exit $status
fi

if [[ $mode == racecheck ]]; then
  # The whole engine without cuBLAS (batch 1, one-token prompt: every projection is a skinny
  # product):
  # dense, offload and kvstar (CPU and GPU scoring, both timings). About 6 minutes.
  KVSTAR_SHORT_RUN_STEPS=66 compute-sanitizer --tool racecheck --error-exitcode 9 \
    /tmp/kvstar-gpu/cuda_engine_test --gtest_filter='*ShortRunOfEveryMode*' \
    >"$out/racecheck_engine.txt" 2>&1 || status=1
  grep -E 'RACECHECK SUMMARY|PASSED|FAILED' "$out/racecheck_engine.txt"
  exit $status
fi

# bench: KVstar vs dense (Llama-3.1-8B shape), offload, KVPR (Llama-2-7B-32K shape, MHA) and
# the GQA shape where KVPR must keep l = 0.
part=${3:-all}
[[ $part == 1 || $part == 2 || $part == all ]] || { echo "part must be 1, 2 or all" >&2; exit 2; }
r=15  # retrieval threads: all CPU cores but one
if [[ $part != 2 ]]; then
  $K bench --device cuda --shape llama3-8b --contexts 8K,32K,64K,130944 --cuda-batch 1 \
    --modes dense,kvstar --decode-steps 32 --retrieval-threads $r \
    --plot "$out/kvstar_llama3_8b_b1.png" --json >"$out/kvstar_b1.json" || status=1
  $K bench --device cuda --shape llama3-8b --contexts 32K --cuda-batch max --modes dense,kvstar \
    --decode-steps 32 --retrieval-threads 13 --json >"$out/kvstar_max.json" || status=1
  # Block scoring on the GPU: the largest batch at 32K (also with one staging slot) and 128K, and
  # the scoring kernels alone next to the CPU retriever.
  for ctx in 32K 130944; do
    $K bench --device cuda --shape llama3-8b --contexts $ctx --cuda-batch max --modes kvstar \
      --decode-steps 32 --retrieval-device gpu --json >"$out/kvstar_max_gpu_$ctx.json" || status=1
  done
  $K bench --device cuda --shape llama3-8b --contexts 32K --cuda-batch max --modes kvstar \
    --decode-steps 32 --retrieval-device gpu --staging_slots 1 --json \
    >"$out/kvstar_max_gpu_32K_ss1.json" || status=1
fi
[[ $part == 1 ]] && exit $status
$K bench-retrieval --device cuda --blocks 1024 --q-heads 32 --kv-heads 8 --gpu-tasks 160 --json \
  >"$out/retrieval_gpu.json" || status=1
$K bench --device cuda --shape llama3-8b --contexts 130944 --cuda-batch 1 --modes offload \
  --decode-steps 16 --json >"$out/offload_128k.json" || status=1
# K/V and X of 8 sequences at 16K pin more than the default 3/4 of a 125 GiB host.
$K bench --device cuda --shape llama2-7b-32k --contexts 2K,4K,8K,16K --cuda-batch 8 \
  --modes dense,offload,kvpr --decode-steps 6 --host-memory-share 0.85 \
  --plot "$out/kvpr_llama2_7b_b8.png" --json >"$out/kvpr_b8.json" || status=1
$K bench --device cuda --shape llama3-8b --contexts 16K --cuda-batch 4 --modes offload,kvpr \
  --decode-steps 6 --json >"$out/kvpr_gqa.json" || status=1
exit $status
