# CUDA kernels (KVSTAR_CUDA=ON): decode attention, pinned host-to-device copies and GEMMs against
# the device limits measured in the same process. Run: build/<dir>/bench/cuda_bench
# (tools/gpu_check.sh runs it on the GPU machine; see docs/BENCHMARKS.md, "CUDA kernels").
if(KVSTAR_CUDA)
  kvstar_bench(cuda_bench SRCS ${CMAKE_CURRENT_SOURCE_DIR}/cuda_bench.cc DEPS kvstar_ops_cuda)
endif()
