// The arithmetic shared by the host cuBLAS (cublas.cpp) and cuBLASLt (cublaslt.cpp): column-major
// operands as the cuBLAS documentation defines them (element (i, j) of a matrix with leading
// dimension ld at index i + j * ld; op(X) = X or X^T), their product with every product exact
// and the sum over k taken in double (a GPU sums in fp32 in an order of its own; the tests'
// tolerances hold both), and fp32 / bf16 loads and stores, bf16 rounded once to nearest even.
#pragma once

#include <library_types.h>

#include <cstddef>
#include <vector>

namespace gpt2cc::hostcuda {

// A matrix as cuBLAS reads it: op(X) is the rows x cols operand; X is stored transposed when trans.
struct Operand {
  const void* data;
  cudaDataType type;
  int ld;
  bool trans;
};

// Elements from the first to the last one a column-major rows x cols matrix with leading
// dimension ld touches: what must be device memory.
size_t stored_elements(size_t rows, size_t cols, size_t ld);
size_t element_bytes(cudaDataType type);  // 4 for CUDA_R_32F, 2 for CUDA_R_16BF, else 0

float load(const void* data, cudaDataType type, size_t index);
void store(void* data, cudaDataType type, size_t index, float value);  // bf16: round to nearest even

// acc[i + j * m] = sum_k op(A)[i, k] * op(B)[k, j] (op(A) is m x k, op(B) is k x n).
std::vector<double> product(const Operand& a, const Operand& b, int m, int n, int k);

}  // namespace gpt2cc::hostcuda
