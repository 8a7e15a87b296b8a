// The CPU's one fast matrix product, Cm += A . Bm (or Cm = init + A . Bm), and its vector
// helpers: what the blocked matmul (cpu/matmul.cpp) and the blocked attention
// (cpu/attention.cpp) are built from.
// Operands are strided views, so a transposed matrix, or one head's columns of the interleaved
// q|k|v rows, is read in place. Cache-blocked and register-tiled (the GotoBLAS/BLIS scheme: Goto
// & van de Geijn 2008); every output element is summed by one thread in one fixed order, so
// results depend neither on the thread count nor on how the product is cut into tasks: for each
// block of kGemmDepthBlock k's in turn, acc = 0, then acc += A[i][k] * Bm[k][j] (one FMA) for the
// block's k in order, then Cm[i][j] += acc. The assigning form starts from Cm[i][j] = init[j]
// (or 0) without reading Cm: the same bits as filling Cm and accumulating, one pass less over it.
#pragma once

#include <cstddef>
#include <cstring>

namespace gpt2cc::cpu {

// Element (i, k) is data[i * row_stride + k * col_stride].
struct StridedMatrix {
  const float* data;
  size_t row_stride;
  size_t col_stride;
  float at(size_t i, size_t k) const { return data[i * row_stride + k * col_stride]; }
};

// Rows of the register tile: a product of fewer rows computes mostly padding (the matmul's
// decoding path takes a matrix-vector loop instead).
inline constexpr int kGemmTileRows = 6;
// The depth (k) of one packed block: the unit of the summation order above.
inline constexpr int kGemmDepthBlock = 256;

// Cm (M x N, row-major, leading dimension ldc) += A (M x K) . Bm (K x N), spread over the OpenMP
// threads in blocks of Cm.
void gemm_accumulate(float* Cm, size_t ldc, StridedMatrix A, StridedMatrix Bm, int M, int N, int K);
// The same product on the calling thread alone, for callers that are already one task of a
// parallel loop (one attention head's block). Same bits as gemm_accumulate.
void gemm_accumulate_serial(float* Cm, size_t ldc, StridedMatrix A, StridedMatrix Bm, int M, int N, int K);
// Cm[i][j] = init[j] + (A . Bm)[i][j], init per column (a bias) or null for zeros: Cm's old values
// are never read. Serial form as above.
void gemm_assign(float* Cm, size_t ldc, StridedMatrix A, StridedMatrix Bm, int M, int N, int K,
                 const float* init = nullptr);
void gemm_assign_serial(float* Cm, size_t ldc, StridedMatrix A, StridedMatrix Bm, int M, int N, int K,
                        const float* init = nullptr);

// Eight floats as one value: a GCC/Clang vector extension, which compiles to one AVX2 register
// here (two SSE registers elsewhere). Why not plain loops: g++ 12 vectorised the plain 6 x 16
// register tile only 128 bits wide and spilled the accumulators to the stack, about 10x slower.
typedef float vec8 __attribute__((vector_size(32)));

inline vec8 load8(const float* p) {
  vec8 v;
  std::memcpy(&v, p, sizeof v);  // an unaligned vector load (vmovups)
  return v;
}

inline void store8(float* p, vec8 v) { std::memcpy(p, &v, sizeof v); }  // an unaligned vector store

// sum_i x[i] * y[i] over n floats: four independent vector accumulators hide the FMA latency,
// then lanes in order, then the tail scalar. A fixed order for a given n.
inline float dot_vectorized(const float* x, const float* y, int n) {
  vec8 acc[4] = {};
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int v = 0; v < 4; ++v) acc[v] += load8(x + i + 8 * v) * load8(y + i + 8 * v);
  }
  for (; i + 8 <= n; i += 8) acc[0] += load8(x + i) * load8(y + i);
  float lanes[8];
  const vec8 total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  std::memcpy(lanes, &total, sizeof lanes);
  float sum = 0.0f;
  for (float lane : lanes) sum += lane;
  for (; i < n; ++i) sum += x[i] * y[i];
  return sum;
}

}  // namespace gpt2cc::cpu
