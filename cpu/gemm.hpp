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
#include <cstdint>
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

// The register tile's instruction set: AVX2 (6 x 16 outputs in 8-float registers), or AVX-512
// (6 x 32 in 16-float registers) where the CPU has it, the default there. The same FMAs in the
// same order for every element, so the same bits either way (tested); only the speed differs.
// (A CPU without AVX2 and FMA runs the 6 x 16 tile in the build's own instructions.)
enum class GemmIsa { avx2, avx512 };
bool cpu_has_avx512();
GemmIsa gemm_isa();  // the one every product uses now
// For tests and benchmarks (not while products run): avx512 on a CPU without it is an Error.
void set_gemm_isa(GemmIsa isa);

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

// A bf16 matrix (each value's bits as a uint16_t, cpu/bf16.hpp): element (i, k) is
// data[i * row_stride + k * col_stride].
struct Bf16Matrix {
  const uint16_t* data;
  size_t row_stride;
  size_t col_stride;
  uint16_t at(size_t i, size_t k) const { return data[i * row_stride + k * col_stride]; }
};

// The same blocked product with A and Bm in bf16 and Cm fp32, where the CPU has AVX512-BF16
// (Zen 4 and later, Cooper Lake and Sapphire Rapids Xeons): VDPBF16PS adds two exact products per
// instruction, twice the fp32 tile's multiply-adds per instruction. Cm = init + A . Bm when
// `assign` (init per column, or null for 0; Cm not read), else Cm += A . Bm. Same blocking and
// order as the fp32 product, by pairs of k, so the bits depend on neither the threads nor M, but
// the instruction's rounding inside a pair is the CPU's (sums within fp32 rounding of the exact
// one; bf16 denormals read as 0). gemm_bf16_enabled(): available, unless switched off (tests and
// benchmarks compare it with the widening paths); gemm_bf16 requires it.
bool gemm_bf16_available();
bool gemm_bf16_enabled();
void set_gemm_bf16_enabled(bool on);  // on where not available is an Error
void gemm_bf16(float* Cm, size_t ldc, Bf16Matrix A, Bf16Matrix Bm, int M, int N, int K, bool assign,
               const float* init = nullptr);
// The same into a bf16 Cm (cpu/bf16.hpp): each element the rounding of what the fp32 form leaves
// in an fp32 Cm holding Cm's widened values, with only a block of fp32 sums per thread (at most
// 384 x 2048) in place of an fp32 copy of Cm, in cache while it is rounded.
void gemm_bf16(uint16_t* Cm, size_t ldc, Bf16Matrix A, Bf16Matrix Bm, int M, int N, int K, bool assign,
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

// The sum over a row of n floats of term(i) (a vec8 for elements i..i+7, or one float):
// four vector accumulators of 32 elements a round (the adds' latency hidden), then eight at a
// time into the first, the lanes in order, then the scalar tail. One fixed order for a given n.
template <class VectorTerm, class ScalarTerm>
inline float row_sum(int n, VectorTerm vector_term, ScalarTerm scalar_term) {
  vec8 acc[4] = {};
  int i = 0;
  for (; i + 32 <= n; i += 32)
    for (int v = 0; v < 4; ++v) acc[v] += vector_term(i + 8 * v);
  for (; i + 8 <= n; i += 8) acc[0] += vector_term(i);
  const vec8 total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  float sum = 0.0f;
  for (int lane = 0; lane < 8; ++lane) sum += total[lane];
  for (; i < n; ++i) sum += scalar_term(i);
  return sum;
}

// sums[r] = sum_i x[i] * rows[r * row_stride + i] over n floats, for r = 0..R-1, each in
// row_sum's order (so the same bits as R dot_vectorized calls): the R rows are read side by side,
// R streams from memory at once where a matrix-vector product is bound by memory bandwidth.
template <int R>
inline void dot_rows(float* sums, const float* x, const float* rows, size_t row_stride, int n) {
  vec8 acc[R][4] = {};
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    for (int v = 0; v < 4; ++v) {
      const vec8 xv = load8(x + i + 8 * v);
      for (int r = 0; r < R; ++r) acc[r][v] += xv * load8(rows + r * row_stride + i + 8 * v);
    }
  }
  for (; i + 8 <= n; i += 8) {
    const vec8 xv = load8(x + i);
    for (int r = 0; r < R; ++r) acc[r][0] += xv * load8(rows + r * row_stride + i);
  }
  for (int r = 0; r < R; ++r) {
    const vec8 total = (acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3]);
    float sum = 0.0f;
    for (int lane = 0; lane < 8; ++lane) sum += total[lane];
    const float* row = rows + r * row_stride;
    for (int j = i; j < n; ++j) sum += x[j] * row[j];
    sums[r] = sum;
  }
}

// sum_i x[i] * y[i] over n floats, in row_sum's order.
inline float dot_vectorized(const float* x, const float* y, int n) {
  float sum;
  dot_rows<1>(&sum, x, y, 0, n);
  return sum;
}

}  // namespace gpt2cc::cpu
