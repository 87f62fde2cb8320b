# Block store micro-benchmarks (the end-to-end grid is `kvstar store-bench`).
if(TARGET kvstar_store)
  kvstar_bench(store_bench SRCS ${CMAKE_CURRENT_LIST_DIR}/store_bench.cc DEPS kvstar_store)
endif()
