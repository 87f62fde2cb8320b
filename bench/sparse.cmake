# KVstar retrieval micro-benchmarks (src/sparse).
if(TARGET kvstar_sparse)
  kvstar_bench(sparse_retrieval_bench SRCS ${CMAKE_CURRENT_LIST_DIR}/sparse_retrieval_bench.cc
               DEPS kvstar_sparse)
endif()
