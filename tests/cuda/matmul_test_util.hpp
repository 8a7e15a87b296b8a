// Which path the bf16 GEMMs took (cuda::matmul_path_counts, kernels/matmul.cuh), for the CUDA
// matmul tests and their emulated twins (tests/emu/test_emu_matmul.cpp).
#pragma once

#include "common/catch.hpp"

#include <cstdint>

#include "kernels/matmul.cuh"

namespace gpt2cc::test {

// Since the last cuda::reset_matmul_path_counts: `lt` GEMMs ran through cuBLASLt, `plain` through
// cublasGemmEx plus separate kernels, `fallback` of those because cuBLASLt declined eligible operands.
inline void check_matmul_paths(uint64_t lt, uint64_t plain, uint64_t fallback = 0) {
  const cuda::MatmulPathCounts counts = cuda::matmul_path_counts();
  INFO("GEMMs through cuBLASLt " << counts.lt << ", plain " << counts.plain << ", of which cuBLASLt declined "
                                 << counts.fallback);
  CHECK(counts.lt == lt);
  CHECK(counts.plain == plain);
  CHECK(counts.fallback == fallback);
}

}  // namespace gpt2cc::test
