# CPU kernels: MatVec / MatMul / attention against the machine's measured limits.
# Run: build/<dir>/bench/ops_bench  (see docs/BENCHMARKS.md, "CPU kernels")
kvstar_bench(ops_bench SRCS ${CMAKE_CURRENT_SOURCE_DIR}/ops_bench.cc DEPS kvstar_ops_cpu)
