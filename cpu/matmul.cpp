// Linear layer y = x W^T + b, forward and backward (cpu/matmul.hpp).
// inp (B,T,C), weight (OC,C), bias (OC) or null, out (B,T,OC). Backward: dinp written (=),
// dweight and dbias accumulate (+=). The *_reference functions are the plain loops (the
// specification and the test oracle); matmul_forward/backward run the same sums through one
// cache-blocked, register-tiled product (the GotoBLAS/BLIS scheme: Goto & van de Geijn 2008), and
// the forward of fewer rows than a register tile (decoding) through a matrix-vector loop.
#include "cpu/matmul.hpp"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

namespace gpt2cc::cpu {

// ---------------------------------------------------------------------------------------------
// Reference: plain loops.

// out[bt,o] = bias[o] + sum_c inp[bt,c] * weight[o,c]
void matmul_forward_reference(float* out, const float* inp, const float* weight, const float* bias, int B, int T,
                              int C, int OC) {
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
void matmul_backward_reference(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
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

// ---------------------------------------------------------------------------------------------
// Fast path: one blocked product  Cm[i,j] += sum_k A(i,k) * Bm(k,j)  that all three matmuls use.

namespace {

// Register tile: MR x NR outputs live in 12 AVX2 registers (6 rows x 2 vectors of 8) while k
// runs; each step loads 2 vectors of Bm, broadcasts 6 values of A and issues 12 FMAs.
constexpr int MR = 6;
constexpr int NR = 16;
// Cache blocks: a KC x NR panel of Bm (16 KB) stays in L1 while a column of tiles streams the
// MC x KC block of A (192 KB) from L2; the KC x NC block of Bm (256 KB) is next to it in L2.
constexpr int KC = 256;
constexpr int MC = 192;
constexpr int NC = 256;

// A strided matrix: element (i,k) is data[i*row_stride + k*col_stride]. Lets one routine read
// W^T, dout^T and plain row-major operands without copying them first.
struct View {
  const float* data;
  size_t row_stride;
  size_t col_stride;
  float at(size_t i, size_t k) const { return data[i * row_stride + k * col_stride]; }
};

// Packs rows [i0, i0+mc) x columns [k0, k0+kc) of A into MR-row panels, k-major inside a panel
// (Ap[p*kc*MR + k*MR + r]), zero-filling rows past M so every tile computes a full MR x NR.
void pack_a(float* Ap, View A, int i0, int mc, int k0, int kc, int M) {
  const int panels = (mc + MR - 1) / MR;
  for (int p = 0; p < panels; ++p) {
    float* dst = Ap + static_cast<size_t>(p) * kc * MR;
    // Walk along the operand's contiguous direction: k for row-major A, the rows for A = dout^T.
    if (A.col_stride == 1) {
      for (int r = 0; r < MR; ++r) {
        const int i = i0 + p * MR + r;
        for (int k = 0; k < kc; ++k) dst[k * MR + r] = i < M ? A.at(i, k0 + k) : 0.0f;
      }
    } else {
      for (int k = 0; k < kc; ++k) {
        for (int r = 0; r < MR; ++r) {
          const int i = i0 + p * MR + r;
          dst[k * MR + r] = i < M ? A.at(i, k0 + k) : 0.0f;
        }
      }
    }
  }
}

// Packs rows [k0, k0+kc) x columns [j0, j0+nc) of Bm into NR-column panels
// (Bp[q*kc*NR + k*NR + j]), zero-filling columns past N.
void pack_b(float* Bp, View Bm, int k0, int kc, int j0, int nc, int N) {
  const int panels = (nc + NR - 1) / NR;
  for (int q = 0; q < panels; ++q) {
    float* dst = Bp + static_cast<size_t>(q) * kc * NR;
    // Walk along the operand's contiguous direction: the columns for row-major Bm, k for W^T.
    if (Bm.col_stride == 1) {
      for (int k = 0; k < kc; ++k) {
        for (int j = 0; j < NR; ++j) {
          const int col = j0 + q * NR + j;
          dst[k * NR + j] = col < N ? Bm.at(k0 + k, col) : 0.0f;
        }
      }
    } else {
      for (int j = 0; j < NR; ++j) {
        const int col = j0 + q * NR + j;
        for (int k = 0; k < kc; ++k) dst[k * NR + j] = col < N ? Bm.at(k0 + k, col) : 0.0f;
      }
    }
  }
}

// Eight floats as one value: a GCC/Clang vector extension, which compiles to one AVX2 register
// here (two SSE registers elsewhere). Why not plain loops: g++ 12 vectorised the plain 6 x 16 tile
// only 128 bits wide and spilled the accumulators to the stack, about 10x slower.
typedef float vec8 __attribute__((vector_size(32)));
constexpr int kVecs = NR / 8;

inline vec8 load8(const float* p) {
  vec8 v;
  std::memcpy(&v, p, sizeof v);  // an unaligned vector load (vmovups)
  return v;
}

// acc[r][j] = sum_k Ap[k][r] * Bp[k][j] over one packed panel pair, then Cm[r][j] += acc[r][j]
// for the mr x nr valid part. acc is 6 x 2 vectors = 12 registers; a*b+c compiles to one FMA
// (g++ contracts it in C++ mode).
void micro_kernel(int kc, const float* __restrict Ap, const float* __restrict Bp, float* __restrict Cm, size_t ldc,
                  int mr, int nr) {
  vec8 acc[MR][kVecs] = {};
  for (int k = 0; k < kc; ++k) {
    vec8 b[kVecs];
    for (int v = 0; v < kVecs; ++v) b[v] = load8(Bp + k * NR + 8 * v);
    for (int r = 0; r < MR; ++r) {
      const float a = Ap[k * MR + r];
      for (int v = 0; v < kVecs; ++v) acc[r][v] += a * b[v];
    }
  }
  float tile[MR][NR];
  std::memcpy(tile, acc, sizeof tile);
  for (int r = 0; r < mr; ++r) {
    for (int j = 0; j < nr; ++j) Cm[r * ldc + j] += tile[r][j];
  }
}

// Cm (M x N, row-major, leading dimension ldc) += A (M x K) * Bm (K x N).
// Threads take whole MC x NC blocks of Cm, each packing its own operands: no barriers (which
// cost dearly when the cores are shared), and each output element is summed by one thread over
// k in a fixed order, so the result does not depend on the thread count (deterministic dweight).
void gemm_accumulate(float* Cm, size_t ldc, View A, View Bm, int M, int N, int K) {
  // Blocks of at most MC x NC, sized evenly so the threads get equal work (M = 256 gives two
  // blocks of 128 rows, not 192 + 64), rounded up to whole register tiles.
  const int mblocks = (M + MC - 1) / MC, nblocks = (N + NC - 1) / NC;
  const int mstep = ((M + mblocks - 1) / mblocks + MR - 1) / MR * MR;
  const int nstep = ((N + nblocks - 1) / nblocks + NR - 1) / NR * NR;
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int jb = 0; jb < nblocks; ++jb) {
    for (int ib = 0; ib < mblocks; ++ib) {
      // Per thread, reused across calls: no allocation (and no page faults) per block.
      thread_local std::vector<float> a_pack, b_pack;
      a_pack.resize(static_cast<size_t>(MC + MR) * KC);
      b_pack.resize(static_cast<size_t>(NC + NR) * KC);
      const int i0 = ib * mstep, mc = std::min(mstep, M - i0), mpanels = (mc + MR - 1) / MR;
      const int j0 = jb * nstep, nc = std::min(nstep, N - j0), npanels = (nc + NR - 1) / NR;
      if (mc <= 0 || nc <= 0) continue;  // rounding up to whole tiles can leave a last block empty
      for (int k0 = 0; k0 < K; k0 += KC) {
        const int kc = std::min(KC, K - k0);
        pack_b(b_pack.data(), Bm, k0, kc, j0, nc, N);
        pack_a(a_pack.data(), A, i0, mc, k0, kc, M);
        // Column of tiles q outermost: consecutive tiles share the L1-resident Bm panel.
        for (int q = 0; q < npanels; ++q) {
          for (int p = 0; p < mpanels; ++p) {
            const int i = i0 + p * MR, j = j0 + q * NR;
            micro_kernel(kc, a_pack.data() + static_cast<size_t>(p) * kc * MR,
                         b_pack.data() + static_cast<size_t>(q) * kc * NR, Cm + static_cast<size_t>(i) * ldc + j, ldc,
                         std::min(MR, M - i), std::min(NR, N - j));
          }
        }
      }
    }
  }
}

}  // namespace

namespace {

// Fewer rows than one register tile (KV-cache decoding: one token per sequence). The blocked
// product would pack all of W for a tile that is mostly padding; here each output reads its
// weight row once, contiguously, and dots it with every input row, so the cost is one pass over
// W, the bound for a matrix-vector product.
//   out[bt,o] = bias[o] + sum_c inp[bt,c] * weight[o,c]
void matmul_forward_few_rows(float* out, const float* inp, const float* weight, const float* bias, int BT, int C,
                             int OC) {
#pragma omp parallel for schedule(static)
  for (int o = 0; o < OC; ++o) {
    const float* w = weight + static_cast<size_t>(o) * C;
    for (int bt = 0; bt < BT; ++bt) {
      const float* x = inp + static_cast<size_t>(bt) * C;
      // Four independent accumulators hide the FMA latency; the tail runs scalar.
      vec8 acc[4] = {};
      int c = 0;
      for (; c + 32 <= C; c += 32) {
        for (int v = 0; v < 4; ++v) acc[v] += load8(x + c + 8 * v) * load8(w + c + 8 * v);
      }
      float lanes[8];
      vec8 total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
      std::memcpy(lanes, &total, sizeof lanes);
      float sum = 0.0f;
      for (float lane : lanes) sum += lane;
      for (; c < C; ++c) sum += x[c] * w[c];
      out[static_cast<size_t>(bt) * OC + o] = (bias ? bias[o] : 0.0f) + sum;
    }
  }
}

}  // namespace

// out = bias (or 0), then out += inp . W^T:  Cm = out (BT x OC), A = inp (BT x C),
// Bm(k=c, j=o) = weight[o,c] (W^T, read through strides and transposed by the packing).
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int T, int C,
                    int OC) {
  const int BT = B * T;
  if (BT < MR) {
    matmul_forward_few_rows(out, inp, weight, bias, BT, C, OC);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < BT; ++bt) {
    float* y = out + static_cast<size_t>(bt) * OC;
    for (int o = 0; o < OC; ++o) y[o] = bias ? bias[o] : 0.0f;
  }
  gemm_accumulate(out, OC, View{inp, static_cast<size_t>(C), 1}, View{weight, 1, static_cast<size_t>(C)}, BT, OC,
                  C);
}

// The reference's three sums as products (derivation above matmul_backward_reference):
//   dinp (BT x C) = dout (BT x OC) . W (OC x C)          written: zeroed, then accumulated
//   dweight (OC x C) += dout^T (OC x BT) . inp (BT x C)
//   dbias (OC) += column sums of dout
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int B, int T, int C, int OC) {
  const int BT = B * T;
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < BT; ++bt) {
    float* dx = dinp + static_cast<size_t>(bt) * C;
    for (int c = 0; c < C; ++c) dx[c] = 0.0f;
  }
  gemm_accumulate(dinp, C, View{dout, static_cast<size_t>(OC), 1}, View{weight, static_cast<size_t>(C), 1}, BT, C,
                  OC);
  gemm_accumulate(dweight, C, View{dout, 1, static_cast<size_t>(OC)}, View{inp, static_cast<size_t>(C), 1}, OC, C,
                  BT);
  if (dbias) {
    // Channels in blocks, rows in order inside each: contiguous reads, deterministic sums.
    constexpr int kBlock = 64;
    const int nblocks = (OC + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < nblocks; ++blk) {
      const int o0 = blk * kBlock, o1 = std::min(OC, o0 + kBlock);
      float sum[kBlock] = {};
      for (int bt = 0; bt < BT; ++bt) {
        const float* dy = dout + static_cast<size_t>(bt) * OC;
        for (int o = o0; o < o1; ++o) sum[o - o0] += dy[o];
      }
      for (int o = o0; o < o1; ++o) dbias[o] += sum[o - o0];
    }
  }
}

}  // namespace gpt2cc::cpu
