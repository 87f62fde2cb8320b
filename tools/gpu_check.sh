#!/usr/bin/env bash
# Checks the CUDA backend (src/ops/cuda) on a machine with an NVIDIA GPU.
#
#   tools/gpu_check.sh prepare [build_dir]   on the build machine: configure with -DKVSTAR_CUDA=ON,
#                                            build ops_cuda_test and cuda_bench, and copy them with
#                                            the non-system shared libraries they need into .gpu/
#   tools/gpu_check.sh run [out_dir]         on the GPU machine (which needs the NVIDIA driver and
#                                            the CUDA 13 runtime/cuBLAS, not the -dev packages):
#                                            runs the gpu tests, compute-sanitizer (memcheck on
#                                            every op, racecheck / synccheck on attention) and the
#                                            benchmarks, writing logs to out_dir (default $OUT)
#
# Environment for `run`: SANITIZE=0 skips compute-sanitizer, BENCH_FILTER=<regex> narrows the
# benchmarks, TEST_FILTER=<gtest filter> narrows the tests.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}

if [[ $mode == prepare ]]; then
  build=${2:-build/cuda}
  set -e
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVSTAR_WERROR=ON -DKVSTAR_CUDA=ON
  cmake --build "$build" --target ops_cuda_test cuda_bench -j2
  rm -rf .gpu && mkdir -p .gpu/lib
  cp "$build/src/ops/cuda/ops_cuda_test" "$build/bench/cuda_bench" .gpu/
  # Libraries outside libc / libstdc++ / CUDA (the GPU machine has its own CUDA 13 runtime).
  for bin in .gpu/ops_cuda_test .gpu/cuda_bench; do
    ldd "$bin" | awk '/=> \//{print $3}' |
      grep -Ev '/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+)\.so|/cuda' |
      xargs -r -I{} cp -L {} .gpu/lib/
  done
  cp tools/gpu_check.sh .gpu/
  ls -la .gpu .gpu/lib
  exit 0
fi

out=${2:-${OUT:-/tmp/gpu_check}}
mkdir -p "$out"
export LD_LIBRARY_PATH="$PWD/.gpu/lib:${LD_LIBRARY_PATH:-}"
status=0
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  nvcc --version | tail -2
  lscpu | grep 'Model name'
  ldd .gpu/ops_cuda_test .gpu/cuda_bench | grep -E 'not found|hwy|benchmark|cublas|cudart'
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

echo "== tests"
.gpu/ops_cuda_test --gtest_filter="${TEST_FILTER:-*}" --gtest_brief=1 >"$out/tests.txt" 2>&1 ||
  status=1
tail -25 "$out/tests.txt"

if [[ ${SANITIZE:-1} == 1 ]]; then
  echo "== compute-sanitizer"
  # memcheck over every element-wise op (except the deliberate out-of-memory test, whose failed
  # cudaMalloc memcheck reports as an API error) and small attention cases; racecheck and synccheck over
  # the attention kernel's shared-memory pipeline (split and unsplit, bf16 and f32).
  {
    compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/ops_cuda_test \
      --gtest_filter='CudaOpsTest.*:CudaAttentionTest.BatchedDecode*:CudaAttentionTest.Forced*:-*AllocationFailure*' \
      --gtest_brief=1
    echo "memcheck rc=$?"
    compute-sanitizer --tool racecheck --error-exitcode 9 .gpu/ops_cuda_test \
      --gtest_filter='CudaAttentionTest.BatchedDecode*' --gtest_brief=1
    echo "racecheck rc=$?"
    compute-sanitizer --tool synccheck --error-exitcode 9 .gpu/ops_cuda_test \
      --gtest_filter='CudaAttentionTest.BatchedDecode*' --gtest_brief=1
    echo "synccheck rc=$?"
  } >"$out/sanitizer.txt" 2>&1
  grep -E 'rc=|ERROR SUMMARY|PASSED|FAILED' "$out/sanitizer.txt"
  grep -q 'rc=[^0]' "$out/sanitizer.txt" && status=1
fi

echo "== benchmarks"
.gpu/cuda_bench --benchmark_filter="${BENCH_FILTER:-.}" --benchmark_min_time=0.2 \
  --benchmark_out="$out/bench.json" --benchmark_out_format=json \
  --benchmark_counters_tabular=true >"$out/bench.txt" 2>&1 || status=1
cat "$out/bench.txt"
exit $status
