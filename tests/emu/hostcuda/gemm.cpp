// See gemm.hpp. The operands are first gathered into contiguous fp32 rows (op(A) by rows, op(B) by
// columns), so each output is one dot product over k; the columns are spread over OpenMP threads
// (each output is summed by one thread in k order: the result does not depend on the threads).
#include "emu/hostcuda/gemm.hpp"

#include <bit>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace gpt2cc::hostcuda {

size_t stored_elements(size_t rows, size_t cols, size_t ld) {
  return rows == 0 || cols == 0 ? 0 : (cols - 1) * ld + rows;
}

size_t element_bytes(cudaDataType type) {
  switch (type) {
    case CUDA_R_32F: return 4;
    case CUDA_R_16BF: return 2;
    default: return 0;
  }
}

float load(const void* data, cudaDataType type, size_t index) {
  if (type == CUDA_R_32F) return static_cast<const float*>(data)[index];
  if (type == CUDA_R_16BF) {
    uint16_t bits;
    std::memcpy(&bits, static_cast<const char*>(data) + 2 * index, 2);
    return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
  }
  throw std::logic_error("host cuBLAS: element type " + std::to_string(static_cast<int>(type)) + " is not emulated");
}

// bf16 is the top half of an fp32; round to nearest, ties to the even half; NaN stays a (quiet) NaN.
void store(void* data, cudaDataType type, size_t index, float value) {
  if (type == CUDA_R_32F) {
    static_cast<float*>(data)[index] = value;
    return;
  }
  if (type != CUDA_R_16BF)
    throw std::logic_error("host cuBLAS: element type " + std::to_string(static_cast<int>(type)) + " is not emulated");
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  uint16_t half;
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0) half = static_cast<uint16_t>((bits >> 16) | 0x40);
  else half = static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
  std::memcpy(static_cast<char*>(data) + 2 * index, &half, 2);
}

namespace {

// op(X)[r, c] for the operand as stored: X[r, c] or X[c, r] (column-major, leading dimension ld).
float op_element(const Operand& x, size_t r, size_t c) {
  return x.trans ? load(x.data, x.type, c + r * static_cast<size_t>(x.ld))
                 : load(x.data, x.type, r + c * static_cast<size_t>(x.ld));
}

double dot(const float* a, const float* b, int k) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int i = 0;
  for (; i + 4 <= k; i += 4) {
    s0 += static_cast<double>(a[i]) * b[i];
    s1 += static_cast<double>(a[i + 1]) * b[i + 1];
    s2 += static_cast<double>(a[i + 2]) * b[i + 2];
    s3 += static_cast<double>(a[i + 3]) * b[i + 3];
  }
  for (; i < k; ++i) s0 += static_cast<double>(a[i]) * b[i];
  return (s0 + s1) + (s2 + s3);
}

}  // namespace

std::vector<double> product(const Operand& a, const Operand& b, int m, int n, int k) {
  const size_t M = m, N = n, K = k;
  std::vector<float> rows(M * K), cols(N * K);
  for (size_t i = 0; i < M; ++i)
    for (size_t l = 0; l < K; ++l) rows[i * K + l] = op_element(a, i, l);
  for (size_t j = 0; j < N; ++j)
    for (size_t l = 0; l < K; ++l) cols[j * K + l] = op_element(b, l, j);
  std::vector<double> acc(M * N);
#pragma omp parallel for schedule(static)
  for (int j = 0; j < n; ++j)
    for (size_t i = 0; i < M; ++i) acc[i + j * M] = dot(&rows[i * K], &cols[j * K], k);
  return acc;
}

}  // namespace gpt2cc::hostcuda
