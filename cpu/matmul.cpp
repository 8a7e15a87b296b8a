// Linear layer y = x W^T + b, forward and backward (cpu/matmul.hpp).
// inp (B,T,C), weight (OC,C), bias (OC) or null, out (B,T,OC). Backward: dinp written (=),
// dweight and dbias accumulate (+=). matmul_forward and matmul_backward are the plain loops (the
// specification and the test oracle); the *_blocked versions run the same sums through the
// blocked product of cpu/gemm.hpp, and the forward of fewer rows than a register tile (decoding)
// through a matrix-vector loop.
#include "cpu/matmul.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/check.hpp"
#include "cpu/amx.hpp"
#include "cpu/bf16.hpp"
#include "cpu/gemm.hpp"

namespace gpt2cc::cpu {

// ---------------------------------------------------------------------------------------------
// Reference: plain loops.

// out[bt,o] = bias[o] + sum_c inp[bt,c] * weight[o,c]
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int T, int C, int OC) {
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T; ++bt) {
    const float* x = inp + static_cast<size_t>(bt) * C;
    for (int o = 0; o < OC; ++o) {
      const float* w = weight + static_cast<size_t>(o) * C;
      float sum = bias ? bias[o] : 0.0f;
      for (int c = 0; c < C; ++c) sum += x[c] * w[c];
      out[static_cast<size_t>(bt) * OC + o] = sum;
    }
  }
}

// y[bt,o] = sum_c x[bt,c] W[o,c] + b[o] is linear in each of x, W, b, so
//   dinp[bt,c] = sum_o dout[bt,o] W[o,c] ; dweight[o,c] += sum_bt dout[bt,o] x[bt,c] ;
//   dbias[o] += sum_bt dout[bt,o]
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int B, int T, int C, int OC) {
  const int BT = B * T;
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < BT; ++bt) {
    const float* dy = dout + static_cast<size_t>(bt) * OC;
    float* dx = dinp + static_cast<size_t>(bt) * C;
    for (int c = 0; c < C; ++c) dx[c] = 0.0f;
    for (int o = 0; o < OC; ++o) {
      const float* w = weight + static_cast<size_t>(o) * C;
      for (int c = 0; c < C; ++c) dx[c] += dy[o] * w[c];
    }
  }
#pragma omp parallel for schedule(static)
  for (int o = 0; o < OC; ++o) {
    float* dw = dweight + static_cast<size_t>(o) * C;
    float db = 0.0f;
    for (int bt = 0; bt < BT; ++bt) {
      const float d = dout[static_cast<size_t>(bt) * OC + o];
      const float* x = inp + static_cast<size_t>(bt) * C;
      for (int c = 0; c < C; ++c) dw[c] += d * x[c];
      db += d;
    }
    if (dbias) dbias[o] += db;
  }
}

namespace {

// Rows of W that the matrix-vector loop dots together (dot_rows): four streams from memory at once
// instead of one took gpt2's decoding products from ~10 to ~12 GB/s at one thread (2026-12-06).
constexpr int kMatvecRows = 4;

// Fewer rows than one register tile (KV-cache decoding: one token per sequence). The blocked
// product would pack all of W for a tile that is mostly padding; here each group of kMatvecRows
// outputs reads its weight rows once, contiguously, and dots them with every input row, so the
// cost is one pass over W, the bound for a matrix-vector product. Each output's sum is
// dot_vectorized's, whichever group it falls in.
//   out[bt,o] = bias[o] + sum_c inp[bt,c] * weight[o,c]
void matmul_forward_few_rows(float* out, const float* inp, const float* weight, const float* bias, int BT, int C,
                             int OC) {
  const int groups = (OC + kMatvecRows - 1) / kMatvecRows;
#pragma omp parallel for schedule(static)
  for (int g = 0; g < groups; ++g) {
    const int o0 = g * kMatvecRows, count = std::min(kMatvecRows, OC - o0);
    const float* w = weight + static_cast<size_t>(o0) * C;
    for (int bt = 0; bt < BT; ++bt) {
      const float* x = inp + static_cast<size_t>(bt) * C;
      float sums[kMatvecRows];
      if (count == kMatvecRows) {
        dot_rows<kMatvecRows>(sums, x, w, C, C);
      } else {
        for (int r = 0; r < count; ++r) sums[r] = dot_vectorized(x, w + static_cast<size_t>(r) * C, C);
      }
      float* y = out + static_cast<size_t>(bt) * OC + o0;
      for (int r = 0; r < count; ++r) y[r] = (bias ? bias[o0 + r] : 0.0f) + sums[r];
    }
  }
}

// ---- bf16 weights ----
// A bf16 weight row is read 16 values (32 bytes) at a time as eight 32-bit words, each two
// neighbours: word << 16 is the even value as a float, word & 0xffff0000 the odd one (on a
// little-endian CPU, which every target of this code is). Two integer
// operations on the FMA's ports, where widening eight values at once (vpmovzxwd) goes through the
// one shuffle port: over gpt2's weights at one thread that took 32 ms (18 with the prefetch
// below), as long as fp32's pass, against 16-17.5 here. The input row is laid out to match once
// per call (split_even_odd).
constexpr int kPairBlock = 16;

typedef uint32_t words8 __attribute__((vector_size(32)));

// x (n floats) with each whole block of 16 stored as its 8 even elements, then its 8 odd ones;
// the tail past the last whole block as it is.
void split_even_odd(float* dst, const float* x, int n) {
  int i = 0;
  for (; i + kPairBlock <= n; i += kPairBlock) {
    for (int l = 0; l < kPairBlock / 2; ++l) {
      dst[i + l] = x[i + 2 * l];
      dst[i + kPairBlock / 2 + l] = x[i + 2 * l + 1];
    }
  }
  for (; i < n; ++i) dst[i] = x[i];
}

// How far ahead (in bf16 values) each weight row is prefetched: with the hardware prefetcher
// alone this loop took 21-24 ms over gpt2's weights at one thread, with 2 KB ahead 16-17.5, the
// time of a plain streaming read (2026-12-06); 2 KB was the best of 512 B, 2 KB and 4 KB.
constexpr int kPrefetchAhead = 1024;

// sums[r] = sum_i x[i] * widen(rows[r * row_stride + i]), r < R, with xs = split_even_odd(x):
// per row an even and an odd accumulator, added, the lanes in order, then the tail in order.
template <int R>
inline void dot_rows_bf16(float* sums, const float* xs, const uint16_t* rows, size_t row_stride, int n) {
  vec8 acc[R][2] = {};
  int i = 0;
  for (; i + kPairBlock <= n; i += kPairBlock) {
    if (i % 32 == 0)  // one prefetch per 64-byte line
      for (int r = 0; r < R; ++r) __builtin_prefetch(rows + r * row_stride + i + kPrefetchAhead);
    const vec8 even = load8(xs + i), odd = load8(xs + i + kPairBlock / 2);
    for (int r = 0; r < R; ++r) {
      words8 w;
      std::memcpy(&w, rows + r * row_stride + i, sizeof w);
      const words8 low = w << 16, high = w & 0xffff0000u;
      vec8 wl, wh;
      std::memcpy(&wl, &low, sizeof wl);
      std::memcpy(&wh, &high, sizeof wh);
      acc[r][0] += even * wl;
      acc[r][1] += odd * wh;
    }
  }
  for (int r = 0; r < R; ++r) {
    const vec8 total = acc[r][0] + acc[r][1];
    float sum = 0.0f;
    for (int lane = 0; lane < 8; ++lane) sum += total[lane];
    const uint16_t* row = rows + r * row_stride;
    for (int j = i; j < n; ++j) sum += xs[j] * widen_bf16(row[j]);
    sums[r] = sum;
  }
}

void matmul_forward_few_rows_bf16(float* out, const float* inp, const uint16_t* weight, const float* bias, int BT,
                                  int C, int OC) {
  std::vector<float> split(static_cast<size_t>(BT) * C);
  for (int bt = 0; bt < BT; ++bt)
    split_even_odd(split.data() + static_cast<size_t>(bt) * C, inp + static_cast<size_t>(bt) * C, C);
  const int groups = (OC + kMatvecRows - 1) / kMatvecRows;
#pragma omp parallel for schedule(static)
  for (int g = 0; g < groups; ++g) {
    const int o0 = g * kMatvecRows, count = std::min(kMatvecRows, OC - o0);
    const uint16_t* w = weight + static_cast<size_t>(o0) * C;
    for (int bt = 0; bt < BT; ++bt) {
      const float* xs = split.data() + static_cast<size_t>(bt) * C;
      float sums[kMatvecRows];
      if (count == kMatvecRows) {
        dot_rows_bf16<kMatvecRows>(sums, xs, w, C, C);
      } else {
        for (int r = 0; r < count; ++r) dot_rows_bf16<1>(sums + r, xs, w + static_cast<size_t>(r) * C, C, C);
      }
      float* y = out + static_cast<size_t>(bt) * OC + o0;
      for (int r = 0; r < count; ++r) y[r] = (bias ? bias[o0 + r] : 0.0f) + sums[r];
    }
  }
}

}  // namespace

// The blocked product's widened weights: a block of rows, kWidenedFloats floats (in L3). The
// matrix-vector loop takes up to kBf16MatvecRows rows (cpu/matmul.hpp; CpuBf16Backend reports it,
// matvec_rows, so that batched decoding groups rows by it).
constexpr size_t kWidenedFloats = size_t{2} << 20;

void matmul_forward_bf16_weight(float* out, const float* inp, const uint16_t* weight, const float* bias, int B, int T,
                                int C, int OC) {
  const int BT = B * T;
  if (BT <= kBf16MatvecRows) {
    matmul_forward_few_rows_bf16(out, inp, weight, bias, BT, C, OC);
    return;
  }
  const size_t c = static_cast<size_t>(C);
  const int block = static_cast<int>(std::max<size_t>(kMatvecRows, kWidenedFloats / c));
  thread_local std::vector<float> widened;
  widened.resize(static_cast<size_t>(std::min(block, OC)) * c);
  for (int o0 = 0; o0 < OC; o0 += block) {
    const int rows = std::min(block, OC - o0);
    widen_bf16(widened.data(), weight + static_cast<size_t>(o0) * c, static_cast<size_t>(rows) * c);
    gemm_assign(out + o0, OC, StridedMatrix{inp, c, 1}, StridedMatrix{widened.data(), 1, c}, BT, rows, C,
                bias ? bias + o0 : nullptr);
  }
}

namespace {
// Which way matmul_forward_bf16 takes for BT rows.
enum class Bf16Forward { amx, dpbf16, widened };
Bf16Forward bf16_forward(int BT, int C, int OC) {
  if (BT > kBf16MatvecRows && amx_bf16_enabled() && amx_bf16_shape(OC, C)) return Bf16Forward::amx;
  if (BT > kBf16MatvecRows && gemm_bf16_enabled()) return Bf16Forward::dpbf16;
  return Bf16Forward::widened;
}

// The forward on AMX tiles or by gemm_bf16 (path amx or dpbf16), into an fp32 or a bf16 out.
template <class Out>
void forward_direct(Bf16Forward path, Out* out, const uint16_t* inp, const uint16_t* weight, const float* bias,
                    int BT, int C, int OC) {
  if (path == Bf16Forward::amx) return amx_matmul_bf16(out, inp, weight, bias, BT, OC, C);
  const size_t c = static_cast<size_t>(C);
  gemm_bf16(out, OC, Bf16Matrix{inp, c, 1}, Bf16Matrix{weight, 1, c}, BT, OC, C, true, bias);
}
}  // namespace

bool matmul_forward_bf16_direct(int BT, int C, int OC) { return bf16_forward(BT, C, OC) != Bf16Forward::widened; }

// From 33 rows up, AMX tiles where the CPU has them and the shape suits (cpu/amx.hpp), else the
// bf16 blocked product where the CPU has AVX512-BF16 (cpu/gemm.hpp); the sums of either depend on
// no row but their own, as the matrix-vector loop's, so the model's row groups (by 32) keep each
// row's bits either way. Else the paths of matmul_forward_bf16_weight.
void matmul_forward_bf16(float* out, const uint16_t* inp, const uint16_t* weight, const float* bias, int B, int T,
                         int C, int OC) {
  const int BT = B * T;
  const Bf16Forward path = bf16_forward(BT, C, OC);
  if (path != Bf16Forward::widened) return forward_direct(path, out, inp, weight, bias, BT, C, OC);
  thread_local std::vector<float> wide_inp;
  wide_inp.resize(static_cast<size_t>(BT) * C);
  widen_bf16(wide_inp.data(), inp, wide_inp.size());
  matmul_forward_bf16_weight(out, wide_inp.data(), weight, bias, B, T, C, OC);
}

void matmul_forward_bf16(uint16_t* out, const uint16_t* inp, const uint16_t* weight, const float* bias, int B, int T,
                         int C, int OC) {
  const int BT = B * T;
  const Bf16Forward path = bf16_forward(BT, C, OC);
  ENSURE(path != Bf16Forward::widened, "matmul_forward_bf16: a bf16 out needs AMX or the bf16 product (rows {}, C {}, "
                                       "OC {})", BT, C, OC);
  forward_direct(path, out, inp, weight, bias, BT, C, OC);
}

// out = bias (or 0) + inp . W^T:  Cm = out (BT x OC), A = inp (BT x C), Bm(k=c, j=o) = weight[o,c]
// (W^T, read through strides and transposed by the packing); out is written once, never read.
void matmul_forward_blocked(float* out, const float* inp, const float* weight, const float* bias, int B, int T, int C,
                            int OC) {
  const int BT = B * T;
  if (BT < kGemmTileRows) {
    matmul_forward_few_rows(out, inp, weight, bias, BT, C, OC);
    return;
  }
  const size_t c = static_cast<size_t>(C);
  gemm_assign(out, OC, StridedMatrix{inp, c, 1}, StridedMatrix{weight, 1, c}, BT, OC, C, bias);
}

namespace {
// dbias (OC) += column sums of dout (BT x OC), fp32 or bf16: channels in blocks, rows in order
// inside each (contiguous reads, deterministic sums).
template <class E>
void add_column_sums(float* dbias, const E* dout, int BT, int OC) {
  constexpr int kBlock = 64;
  const int nblocks = (OC + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < nblocks; ++blk) {
    const int o0 = blk * kBlock, o1 = std::min(OC, o0 + kBlock);
    float sum[kBlock] = {};
    for (int bt = 0; bt < BT; ++bt) {
      const E* dy = dout + static_cast<size_t>(bt) * OC;
      for (int o = o0; o < o1; ++o) sum[o - o0] += as_float(dy[o]);
    }
    for (int o = o0; o < o1; ++o) dbias[o] += sum[o - o0];
  }
}
}  // namespace

// The reference's three sums as products (derivation above matmul_backward):
//   dinp (BT x C) = dout (BT x OC) . W (OC x C)          written (assigned)
//   dweight (OC x C) += dout^T (OC x BT) . inp (BT x C)
//   dbias (OC) += column sums of dout
void matmul_backward_blocked(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                             const float* weight, int B, int T, int C, int OC) {
  const int BT = B * T;
  const size_t c = static_cast<size_t>(C), oc = static_cast<size_t>(OC);
  gemm_assign(dinp, C, StridedMatrix{dout, oc, 1}, StridedMatrix{weight, c, 1}, BT, C, OC);
  gemm_accumulate(dweight, C, StridedMatrix{dout, 1, oc}, StridedMatrix{inp, c, 1}, OC, C, BT);
  if (dbias) add_column_sums(dbias, dout, BT, OC);
}

template <class DInp, class DWeight>
void matmul_backward_bf16(DInp* dinp, DWeight* dweight, float* dbias, const uint16_t* dout, const uint16_t* inp,
                          const uint16_t* weight, int B, int T, int C, int OC) {
  const int BT = B * T;
  const size_t c = static_cast<size_t>(C), oc = static_cast<size_t>(OC);
  gemm_bf16(dinp, c, Bf16Matrix{dout, oc, 1}, Bf16Matrix{weight, c, 1}, BT, C, OC, true);
  gemm_bf16(dweight, c, Bf16Matrix{dout, 1, oc}, Bf16Matrix{inp, c, 1}, OC, C, BT, false);
  if (dbias) add_column_sums(dbias, dout, BT, OC);
}
template void matmul_backward_bf16(float*, float*, float*, const uint16_t*, const uint16_t*, const uint16_t*, int, int,
                                   int, int);
template void matmul_backward_bf16(float*, uint16_t*, float*, const uint16_t*, const uint16_t*, const uint16_t*, int,
                                   int, int, int);
template void matmul_backward_bf16(uint16_t*, float*, float*, const uint16_t*, const uint16_t*, const uint16_t*, int,
                                   int, int, int);
template void matmul_backward_bf16(uint16_t*, uint16_t*, float*, const uint16_t*, const uint16_t*, const uint16_t*,
                                   int, int, int, int);

}  // namespace gpt2cc::cpu
