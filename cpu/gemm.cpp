// The blocked product Cm += A . Bm (cpu/gemm.hpp): operands packed into panels that stay in the
// caches, a 6 x 16 register tile of FMAs over them.
#include "cpu/gemm.hpp"

#include <algorithm>
#include <vector>

namespace gpt2cc::cpu {

namespace {

// Register tile: MR x NR outputs live in 12 AVX2 registers (6 rows x 2 vectors of 8) while k
// runs; each step loads 2 vectors of Bm, broadcasts 6 values of A and issues 12 FMAs.
constexpr int MR = kGemmTileRows;
constexpr int NR = 16;
// Cache blocks: a KC x NR panel of Bm (16 KB) stays in L1 while a column of tiles streams the
// MC x KC block of A (192 KB) from L2; the KC x NC block of Bm (256 KB) is next to it in L2.
constexpr int KC = 256;
constexpr int MC = 192;
constexpr int NC = 256;
constexpr int kVecs = NR / 8;

// Packs rows [i0, i0+mc) x columns [k0, k0+kc) of A into MR-row panels, k-major inside a panel
// (Ap[p*kc*MR + k*MR + r]), zero-filling rows past M so every tile computes a full MR x NR.
void pack_a(float* Ap, StridedMatrix A, int i0, int mc, int k0, int kc, int M) {
  const int panels = (mc + MR - 1) / MR;
  for (int p = 0; p < panels; ++p) {
    float* dst = Ap + static_cast<size_t>(p) * kc * MR;
    const int first = i0 + p * MR;
    if (first + MR > M) {  // the last panel, part padding
      for (int k = 0; k < kc; ++k) {
        for (int r = 0; r < MR; ++r) dst[k * MR + r] = first + r < M ? A.at(first + r, k0 + k) : 0.0f;
      }
      continue;
    }
    // Walk along the operand's contiguous direction: k for row-major A, the rows for A = dout^T.
    const float* src = A.data + first * A.row_stride + k0 * A.col_stride;
    if (A.col_stride == 1) {
      for (int r = 0; r < MR; ++r) {
        const float* row = src + r * A.row_stride;
        for (int k = 0; k < kc; ++k) dst[k * MR + r] = row[k];
      }
    } else {
      for (int k = 0; k < kc; ++k) {
        const float* column = src + k * A.col_stride;
        for (int r = 0; r < MR; ++r) dst[k * MR + r] = column[r * A.row_stride];
      }
    }
  }
}

// Packs rows [k0, k0+kc) x columns [j0, j0+nc) of Bm into NR-column panels
// (Bp[q*kc*NR + k*NR + j]), zero-filling columns past N.
void pack_b(float* Bp, StridedMatrix Bm, int k0, int kc, int j0, int nc, int N) {
  const int panels = (nc + NR - 1) / NR;
  for (int q = 0; q < panels; ++q) {
    float* dst = Bp + static_cast<size_t>(q) * kc * NR;
    const int first = j0 + q * NR;
    if (first + NR > N) {  // the last panel, part padding
      for (int k = 0; k < kc; ++k) {
        for (int j = 0; j < NR; ++j) dst[k * NR + j] = first + j < N ? Bm.at(k0 + k, first + j) : 0.0f;
      }
      continue;
    }
    // Walk along the operand's contiguous direction: the columns for row-major Bm, k for W^T.
    const float* src = Bm.data + k0 * Bm.row_stride + first * Bm.col_stride;
    if (Bm.col_stride == 1) {
      for (int k = 0; k < kc; ++k) {
        const float* row = src + k * Bm.row_stride;
        for (int j = 0; j < NR; ++j) dst[k * NR + j] = row[j];
      }
    } else {
      for (int j = 0; j < NR; ++j) {
        const float* column = src + j * Bm.col_stride;
        for (int k = 0; k < kc; ++k) dst[k * NR + j] = column[k * Bm.row_stride];
      }
    }
  }
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
  if (nr == NR) {  // whole rows of the tile: vector adds
    for (int r = 0; r < mr; ++r) {
      for (int v = 0; v < kVecs; ++v) {
        const vec8 sum = load8(Cm + r * ldc + 8 * v) + acc[r][v];
        std::memcpy(Cm + r * ldc + 8 * v, &sum, sizeof sum);
      }
    }
    return;
  }
  float tile[MR][NR];
  std::memcpy(tile, acc, sizeof tile);
  for (int r = 0; r < mr; ++r) {
    for (int j = 0; j < nr; ++j) Cm[r * ldc + j] += tile[r][j];
  }
}

// The blocks of at most MC x NC that Cm is cut into, sized evenly so threads get equal work
// (M = 256 gives two blocks of 128 rows, not 192 + 64), rounded up to whole register tiles.
struct Blocking {
  int mblocks, nblocks, mstep, nstep;
  Blocking(int M, int N) {
    mblocks = (M + MC - 1) / MC;
    nblocks = (N + NC - 1) / NC;
    mstep = ((M + mblocks - 1) / mblocks + MR - 1) / MR * MR;
    nstep = ((N + nblocks - 1) / nblocks + NR - 1) / NR * NR;
  }
};

// Block (ib, jb) of Cm += A . Bm, over all of k, on the calling thread.
void gemm_block(float* Cm, size_t ldc, StridedMatrix A, StridedMatrix Bm, int M, int N, int K, const Blocking& g,
                int ib, int jb) {
  // Per thread, reused across calls: no allocation (and no page faults) per block.
  thread_local std::vector<float> a_pack, b_pack;
  a_pack.resize(static_cast<size_t>(MC + MR) * KC);
  b_pack.resize(static_cast<size_t>(NC + NR) * KC);
  const int i0 = ib * g.mstep, mc = std::min(g.mstep, M - i0), mpanels = (mc + MR - 1) / MR;
  const int j0 = jb * g.nstep, nc = std::min(g.nstep, N - j0), npanels = (nc + NR - 1) / NR;
  if (mc <= 0 || nc <= 0) return;  // rounding up to whole tiles can leave a last block empty
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

}  // namespace

// Threads take whole MC x NC blocks of Cm, each packing its own operands: no barriers (which
// cost dearly when the cores are shared), and each output element is summed by one thread over
// k in a fixed order, so the result does not depend on the thread count (deterministic dweight).
void gemm_accumulate(float* Cm, size_t ldc, StridedMatrix A, StridedMatrix Bm, int M, int N, int K) {
  const Blocking g(M, N);
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int jb = 0; jb < g.nblocks; ++jb) {
    for (int ib = 0; ib < g.mblocks; ++ib) gemm_block(Cm, ldc, A, Bm, M, N, K, g, ib, jb);
  }
}

void gemm_accumulate_serial(float* Cm, size_t ldc, StridedMatrix A, StridedMatrix Bm, int M, int N, int K) {
  const Blocking g(M, N);
  for (int jb = 0; jb < g.nblocks; ++jb) {
    for (int ib = 0; ib < g.mblocks; ++ib) gemm_block(Cm, ldc, A, Bm, M, N, K, g, ib, jb);
  }
}

}  // namespace gpt2cc::cpu
