// Physical limits of the CPU, measured at run time, that benchmarks quote next to their numbers:
// decode speed as a fraction of memory read bandwidth, prefill speed as a fraction of the f32
// FMA ceiling or of our own f32 MatMul rate.
#pragma once

#include <cstddef>
#include <string>

#include "base/thread_pool.h"

namespace kvstar::ops {

// GB/s (1e9 bytes/s) reading a buffer of `bytes` (larger than the caches) with all pool threads,
// each summing its own contiguous slice; best of a few repetitions.
double MeasureMemoryReadBandwidth(ThreadPool& pool, size_t bytes = size_t{1} << 30);

// Reads data[0, count) with all pool threads (each a contiguous slice) and returns the sum: the
// kernel MeasureMemoryReadBandwidth times. data must be 64-byte aligned.
float ReadAllFloats(ThreadPool& pool, const float* data, size_t count);

// GFLOP/s (FMA = 2 FLOP) of independent register-resident f32 FMA chains on all pool threads:
// the arithmetic ceiling of the chosen SIMD target. Each thread runs `iterations` steps of 16
// vector FMAs (the default takes ~0.1 s per repetition on a 3 GHz AVX-512 core).
double MeasureF32FmaRate(ThreadPool& pool, size_t iterations = 20'000'000);

// GFLOP/s of ops::MatMul with f32 weights, size x size weights and size rows of x; best of a few
// repetitions.
double MeasureF32MatMulRate(ThreadPool& pool, size_t size = 2048);

// f32 lanes per vector of the Highway target chosen at run time (16 with AVX-512).
size_t SimdLanesF32();

// Name of the Highway target chosen at run time, e.g. "AVX3_DL", "AVX2", "EMU128".
std::string DescribeSimdTarget();

}  // namespace kvstar::ops
