// The blocked product Cm += A . Bm (cpu/gemm.hpp): A M x K and Bm K x N strided views (a
// transposed matrix read in place), Cm M x N row-major with leading dimension ldc. Operands packed
// into panels that stay in the caches, a 6 x 16 register tile of FMAs over them (AVX2), or 6 x 32
// where the CPU has AVX-512.
#include "cpu/gemm.hpp"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/check.hpp"
#include "cpu/bf16.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace gpt2cc::cpu {

namespace {

// Register tile: MR x NR outputs live in 12 vector registers (6 rows x 2 vectors) while k runs;
// each step loads 2 vectors of Bm, broadcasts 6 values of A and issues 12 FMAs. The vectors are
// AVX2's 8 floats (NR = 16) or AVX-512's 16 (NR = 32): Vec and NR below, the tile's template
// arguments. Either way each output element gets the same FMAs in the same order: same bits.
constexpr int MR = kGemmTileRows;
constexpr int KC = kGemmDepthBlock;
// Sixteen floats as one value (one AVX-512 register), as vec8 is eight (cpu/gemm.hpp).
typedef float vec16 __attribute__((vector_size(64)));
// Cache blocks: a KC x NR panel of Bm (16 KB; 32 KB with AVX-512) stays in L1 while the column
// of tiles below it streams the packed MC x KC block of A (at most 384 KB) from L2.
constexpr int MC = 384;
// Columns of one task at most: bounds a task's time, so the dynamic schedule can even out
// threads slowed by a shared core (the classifier's 50304 columns become 25 or more tasks).
constexpr int kMaxTaskColumns = 2048;
// The cost of packing one float, in flops of the micro-kernel (a rough measure on this code's
// x86-64 build: packing reads the operand once from L2/L3 and transposes it).
constexpr double kPackCost = 16.0;
// Operands (A and Bm together) of more floats than this (32 MiB, the 2-core machine's L3) are
// packed from memory, and every further cut of Cm reads one of them from memory once more: the
// d2 classifier's dinp (dlogits 256 x 50304 times wte 50304 x 128) took ~20 ms at 2 threads cut
// into two tasks, ~27 ms cut into the four that two tasks per thread asked for (2026-12-04).
// Packing such an operand costs about this many flops per float (perf: ~70 for wte's rows read
// 64 bytes at a time).
constexpr double kStreamedFloats = 8.0 * 1024 * 1024;
constexpr double kStreamedPackCost = 64.0;

int ceil_div(int a, int b) { return (a + b - 1) / b; }
int round_up(int a, int b) { return ceil_div(a, b) * b; }

// The 8 x 8 block in r[0..7] (row i in r[i]) transposed in place, in three rounds of two-vector
// shuffles (vunpcklps/vunpckhps, vshufps, vperm2f128 on AVX2): packing an operand that is
// contiguous along the other direction than its panel then moves 8 floats per load and store
// instead of one.
inline void transpose8x8(vec8 (&r)[8]) {
  vec8 pairs[8], quads[8];
  for (int i = 0; i < 4; ++i) {  // rows 2i, 2i+1 interleaved: columns (0 1 4 5) and (2 3 6 7)
    pairs[2 * i] = __builtin_shufflevector(r[2 * i], r[2 * i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    pairs[2 * i + 1] = __builtin_shufflevector(r[2 * i], r[2 * i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int h = 0; h < 2; ++h) {  // rows 4h..4h+3 of columns c and c + 4, c = 0..3
    const vec8 *low = pairs + 4 * h, *high = pairs + 4 * h + 2;
    quads[4 * h + 0] = __builtin_shufflevector(low[0], high[0], 0, 1, 8, 9, 4, 5, 12, 13);
    quads[4 * h + 1] = __builtin_shufflevector(low[0], high[0], 2, 3, 10, 11, 6, 7, 14, 15);
    quads[4 * h + 2] = __builtin_shufflevector(low[1], high[1], 0, 1, 8, 9, 4, 5, 12, 13);
    quads[4 * h + 3] = __builtin_shufflevector(low[1], high[1], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int c = 0; c < 4; ++c) {  // columns c and c + 4, all 8 rows
    r[c] = __builtin_shufflevector(quads[c], quads[4 + c], 0, 1, 2, 3, 8, 9, 10, 11);
    r[c + 4] = __builtin_shufflevector(quads[c], quads[4 + c], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// Lines [0, n) of a panel W wide, n <= 8, over depth [0, k8) (k8 a multiple of 8), from lines
// at row_stride contiguous along k: an n x 8 block at a time (zero rows below n), transposed in
// registers. n is a constant so that the block stays in registers and each store is a fixed size:
// with a run-time n, g++ kept the block on the stack and stored it 8 bytes at a time, and packing
// the weights of gpt2's forward products (64 rows, 1 thread) took longer than the products.
template <int W, int n>
[[gnu::always_inline]] inline void transpose_lines(float* dst, const float* src, size_t row_stride, int k8) {
  for (int k = 0; k < k8; k += 8) {
    vec8 block[8] = {};
    for (int i = 0; i < n; ++i) block[i] = load8(src + i * row_stride + k);
    transpose8x8(block);
    for (int t = 0; t < 8; ++t) std::memcpy(dst + (k + t) * W, &block[t], n * sizeof(float));
  }
}

// Packs lines [first, first + W) x depth [k0, k0 + kc) of `lines`, whose element (i, k) is line
// i's k-th value, as one panel, k-major (dst[k * W + i - first]), zero-filling lines past
// `count` so every tile computes a full MR x NR: A's rows with W = MR, and Bm's columns with
// W = NR through the transposed view.
template <int W>
void pack_panel(float* dst, StridedMatrix lines, int first, int k0, int kc, int count) {
  if (first + W > count) {  // the last panel, part padding
    for (int k = 0; k < kc; ++k) {
      for (int i = 0; i < W; ++i) dst[k * W + i] = first + i < count ? lines.at(first + i, k0 + k) : 0.0f;
    }
    return;
  }
  const float* src = lines.data + first * lines.row_stride + k0 * lines.col_stride;
  if (lines.col_stride == 1) {  // lines contiguous along k (row-major A; Bm = W^T, K^T): transposed
    const int k8 = kc / 8 * 8;
    const size_t stride = lines.row_stride;
    for (int g = 0; g + 8 <= W; g += 8) transpose_lines<W, 8>(dst + g, src + g * stride, stride, k8);
    if constexpr (W % 8 != 0) {  // A's 6 rows
      constexpr int g = W / 8 * 8;
      transpose_lines<W, W % 8>(dst + g, src + g * stride, stride, k8);
    }
    for (int k = k8; k < kc; ++k) {
      for (int i = 0; i < W; ++i) dst[k * W + i] = src[i * stride + k];
    }
  } else if (lines.row_stride == 1) {  // lines side by side (row-major Bm; such an A: pack_a_block): W per k
    for (int k = 0; k < kc; ++k) std::memcpy(dst + k * W, src + k * lines.col_stride, W * sizeof(float));
  } else {
    for (int k = 0; k < kc; ++k) {
      for (int i = 0; i < W; ++i) dst[k * W + i] = lines.at(first + i, k0 + k);
    }
  }
}

StridedMatrix transposed(StridedMatrix m) { return {m.data, m.col_stride, m.row_stride}; }

// A's rows [i0, i0 + mpanels * MR) over depth [k0, k0 + kc), as mpanels panels of pack_panel<MR>
// one after another. Where A's rows lie side by side (row_stride 1: dout^T in a dweight product),
// k is the outer loop, so that each k reads one contiguous run of the block's mc values rather
// than each panel reading MR values from each of kc rows far apart: for the classifier's dwte
// (A = dlogits^T, its k rows 201 KB apart in gpt2), most of those reads missed every cache and
// no prefetcher followed them (perf: the pack took a third of d2's classifier backward). The
// same values land in the same places either way.
void pack_a_block(float* dst, StridedMatrix A, int i0, int mpanels, int k0, int kc, int M) {
  const size_t panel = static_cast<size_t>(kc) * MR;  // floats of one packed panel
  if (A.row_stride != 1 || A.col_stride == 1) {  // (both 1: pack_panel's transposing path)
    for (int p = 0; p < mpanels; ++p) pack_panel<MR>(dst + p * panel, A, i0 + p * MR, k0, kc, M);
    return;
  }
  const int full = std::min(mpanels, (M - i0) / MR);  // panels without padding
  for (int k = 0; k < kc; ++k) {
    const float* src = A.data + static_cast<size_t>(k0 + k) * A.col_stride + i0;
    float* out = dst + static_cast<size_t>(k) * MR;
    for (int p = 0; p < full; ++p) std::memcpy(out + p * panel, src + p * MR, MR * sizeof(float));
    for (int p = full; p < mpanels; ++p) {
      for (int i = 0; i < MR; ++i) out[p * panel + i] = i0 + p * MR + i < M ? src[p * MR + i] : 0.0f;
    }
  }
}

// bf16 operands are packed as pairs: the panel's line i at depth pair p is one 32-bit word
// holding line i's k = 2p (low half) and 2p + 1 (high half; 0 past kc), dst[p * W + i], in float
// storage (the kernel broadcasts and loads the words' bits; nothing converts them).
uint32_t bf16_pair(uint16_t low, uint16_t high) { return uint32_t(low) | uint32_t(high) << 16; }

void put_word(float* dst, uint32_t word) { std::memcpy(dst, &word, sizeof word); }

template <int W>
void pack_panel_bf16(float* dst, Bf16Matrix lines, int first, int k0, int kc, int count) {
  const int pairs = (kc + 1) / 2;
  auto value = [&](int i, int k) -> uint16_t {  // 0 past the lines and the depth block
    return first + i < count && k < kc ? lines.at(first + i, k0 + k) : uint16_t{0};
  };
  const bool whole = first + W <= count;
  const bool word_aligned =
      reinterpret_cast<uintptr_t>(lines.data) % 4 == 0 && lines.row_stride % 2 == 0 && k0 % 2 == 0;
  if (whole && lines.col_stride == 1 && word_aligned) {
    // Lines contiguous along k (row-major A; Bm = W^T): each pair is one word in place, and the
    // words are transposed as floats are, 8 x 8 at a time (their bits only moved).
    const float* src = reinterpret_cast<const float*>(lines.data + first * lines.row_stride + k0);
    const size_t stride = lines.row_stride / 2;
    const int p8 = kc / 2 / 8 * 8;
    for (int g = 0; g + 8 <= W; g += 8) transpose_lines<W, 8>(dst + g, src + g * stride, stride, p8);
    if constexpr (W % 8 != 0) {
      constexpr int g = W / 8 * 8;
      transpose_lines<W, W % 8>(dst + g, src + g * stride, stride, p8);
    }
    for (int p = p8; p < pairs; ++p) {
      for (int i = 0; i < W; ++i) put_word(dst + p * W + i, bf16_pair(value(i, 2 * p), value(i, 2 * p + 1)));
    }
  } else if (whole && lines.row_stride == 1) {  // lines side by side (row-major Bm, dout^T): two k rows interleaved
    for (int p = 0; p < pairs; ++p) {
      const uint16_t* low = lines.data + (k0 + 2 * p) * lines.col_stride + first;
      const uint16_t* high = 2 * p + 1 < kc ? low + lines.col_stride : nullptr;
      for (int i = 0; i < W; ++i) put_word(dst + p * W + i, bf16_pair(low[i], high ? high[i] : uint16_t{0}));
    }
  } else {
    for (int p = 0; p < pairs; ++p) {
      for (int i = 0; i < W; ++i) put_word(dst + p * W + i, bf16_pair(value(i, 2 * p), value(i, 2 * p + 1)));
    }
  }
}

Bf16Matrix transposed(Bf16Matrix m) { return {m.data, m.col_stride, m.row_stride}; }

// What the blocked product needs of its operands' type: the matrix view, how a block of A and a
// panel of Bm are packed, and the floats of one packed line per depth block of kc.
struct Fp32Operands {
  using Matrix = StridedMatrix;
  static int line_floats(int kc) { return kc; }
  static void pack_a(float* dst, Matrix A, int i0, int mpanels, int k0, int kc, int M) {
    pack_a_block(dst, A, i0, mpanels, k0, kc, M);
  }
  template <int NR>
  static void pack_b(float* dst, Matrix Bm, int j, int k0, int kc, int N) {
    pack_panel<NR>(dst, transposed(Bm), j, k0, kc, N);
  }
};

struct Bf16Operands {
  using Matrix = Bf16Matrix;
  static int line_floats(int kc) { return (kc + 1) / 2; }
  static void pack_a(float* dst, Matrix A, int i0, int mpanels, int k0, int kc, int M) {
    const size_t panel = static_cast<size_t>(line_floats(kc)) * MR;
    for (int p = 0; p < mpanels; ++p) pack_panel_bf16<MR>(dst + p * panel, A, i0 + p * MR, k0, kc, M);
  }
  template <int NR>
  static void pack_b(float* dst, Matrix Bm, int j, int k0, int kc, int N) {
    pack_panel_bf16<NR>(dst, transposed(Bm), j, k0, kc, N);
  }
};

// Where a tile's sums go: added to Cm's values, or, in the first depth block of gemm_assign,
// written over them onto the columns' initial values (init[j], or 0 where init is null; init
// already points at the tile's first column). Both give Cm[i][j] = base + acc with the same
// base, so assigning has the bits of filling Cm with the initial values and accumulating.
struct TileStore {
  bool assign = false;
  const float* init = nullptr;
};

// A micro-kernel's end: Cm[r][j] = base + acc[r][j] for the mr x nr valid part of the tile (base
// as in TileStore). The stores index acc by constants only (loops over MR unrolled, left at row
// mr) and copy its vectors by value: a row index known only at run time, or acc's address, made
// g++ keep acc in memory as well, zeroed by a call to memset on every entry (5% of the d2 demo's
// training step). Inlined, it leaves the fp32 kernels' instructions as they were (counted).
template <class Vec, int NR>
[[gnu::always_inline]] inline void store_tile(const Vec (&acc)[MR][NR / (sizeof(Vec) / sizeof(float))],
                                              float* __restrict Cm, size_t ldc, int mr, int nr, TileStore store) {
  constexpr int kLanes = sizeof(Vec) / sizeof(float), kVecs = NR / kLanes;
  if (nr == NR) {  // whole rows of the tile: vector adds
    Vec init[kVecs] = {};
    if (store.assign && store.init) {
      for (int v = 0; v < kVecs; ++v) std::memcpy(&init[v], store.init + kLanes * v, sizeof(Vec));
    }
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      if (r == mr) break;
      for (int v = 0; v < kVecs; ++v) {
        Vec sum = init[v];
        if (!store.assign) std::memcpy(&sum, Cm + r * ldc + kLanes * v, sizeof(Vec));
        sum += acc[r][v];
        std::memcpy(Cm + r * ldc + kLanes * v, &sum, sizeof sum);
      }
    }
    return;
  }
  // A ragged tile: row by row through a copy.
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    if (r == mr) break;
    float row[NR];
    for (int v = 0; v < kVecs; ++v) {
      const Vec part = acc[r][v];
      std::memcpy(row + kLanes * v, &part, sizeof part);
    }
    for (int j = 0; j < nr; ++j) {
      const float base = !store.assign ? Cm[r * ldc + j] : store.init ? store.init[j] : 0.0f;
      Cm[r * ldc + j] = base + row[j];
    }
  }
}

// acc[r][j] = sum_k Ap[k][r] * Bp[k][j] over one packed panel pair, then store_tile. acc is 6 x 2
// vectors = 12 registers; a*b+c compiles to one FMA (g++ contracts it in C++ mode). A template
// always inlined into one function per instruction set (below), which compiles it for that set's
// registers.
template <class Vec, int NR>
[[gnu::always_inline]] inline void micro_kernel(int kc, const float* __restrict Ap, const float* __restrict Bp,
                                                float* __restrict Cm, size_t ldc, int mr, int nr, TileStore store) {
  constexpr int kLanes = sizeof(Vec) / sizeof(float), kVecs = NR / kLanes;
  Vec acc[MR][kVecs] = {};
  for (int k = 0; k < kc; ++k) {
    Vec b[kVecs];
    for (int v = 0; v < kVecs; ++v) std::memcpy(&b[v], Bp + k * NR + kLanes * v, sizeof(Vec));
    for (int r = 0; r < MR; ++r) {
      const float a = Ap[k * MR + r];
      for (int v = 0; v < kVecs; ++v) acc[r][v] += a * b[v];
    }
  }
  store_tile<Vec, NR>(acc, Cm, ldc, mr, nr, store);
}

// The kernel of each instruction set, compiled for its registers; gemm_tiles (below) takes one
// with its NR.
using MicroKernel = void (*)(int kc, const float* __restrict Ap, const float* __restrict Bp, float* __restrict Cm,
                             size_t ldc, int mr, int nr, TileStore store);

// For the build's own instruction set: where the CPU lacks AVX2 and FMA (a build without the
// Release flags on an old x86-64, or another architecture). Its bits are not the others' when the
// build's set has no FMA (a multiply and an add round twice).
void micro_kernel_generic(int kc, const float* __restrict Ap, const float* __restrict Bp, float* __restrict Cm,
                          size_t ldc, int mr, int nr, TileStore store) {
  micro_kernel<vec8, 16>(kc, Ap, Bp, Cm, ldc, mr, nr, store);
}

#if defined(__x86_64__)
// Both name their instruction sets themselves, FMA included, so that each a * b + c is one FMA
// whatever flags the rest of the build has (Release's -march=x86-64-v3 or none): the same bits.
__attribute__((target("avx2,fma"))) void micro_kernel_avx2(int kc, const float* __restrict Ap,
                                                           const float* __restrict Bp, float* __restrict Cm,
                                                           size_t ldc, int mr, int nr, TileStore store) {
  micro_kernel<vec8, 16>(kc, Ap, Bp, Cm, ldc, mr, nr, store);
}

__attribute__((target("avx512f,fma"))) void micro_kernel_avx512(int kc, const float* __restrict Ap,
                                                                const float* __restrict Bp, float* __restrict Cm,
                                                                size_t ldc, int mr, int nr, TileStore store) {
  micro_kernel<vec16, 32>(kc, Ap, Bp, Cm, ldc, mr, nr, store);
}

// bf16 operands packed in pairs (pack_panel_bf16): per pair of k, one VDPBF16PS per 16 outputs
// adds both products (exact in fp32) to the accumulator, as many instructions per k pair as
// the fp32 tile's FMAs per k. The instruction reads bf16 denormals as 0 and flushes denormal
// sums; how it rounds inside the pair is the CPU's (Intel adds the odd k's product first).
__attribute__((target("avx512f,avx512bf16"))) void micro_kernel_bf16(int kc, const float* __restrict Ap,
                                                                    const float* __restrict Bp,
                                                                    float* __restrict Cm, size_t ldc, int mr, int nr,
                                                                    TileStore store) {
  constexpr int NR = 32;
  __m512 acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  const int pairs = (kc + 1) / 2;
  for (int p = 0; p < pairs; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_castps_si512(_mm512_loadu_ps(Bp + p * NR));
    const __m512bh b1 = (__m512bh)_mm512_castps_si512(_mm512_loadu_ps(Bp + p * NR + 16));
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = (__m512bh)_mm512_castps_si512(_mm512_set1_ps(Ap[p * MR + r]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
    }
  }
  vec16 sums[MR][2];
  for (int r = 0; r < MR; ++r) {
    sums[r][0] = (vec16)acc[r][0];
    sums[r][1] = (vec16)acc[r][1];
  }
  store_tile<vec16, NR>(sums, Cm, ldc, mr, nr, store);
}
#endif

bool cpu_supports_avx2_fma() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool cpu_supports_avx512() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx512f") && cpu_supports_avx2_fma();
#else
  return false;
#endif
}

bool cpu_supports_avx512_bf16() {
#if defined(__x86_64__)
  return __builtin_cpu_supports("avx512bf16") && cpu_supports_avx512();
#else
  return false;
#endif
}

std::atomic<bool>& bf16_products_on() {
  static std::atomic<bool> on{cpu_supports_avx512_bf16()};
  return on;
}

std::atomic<GemmIsa>& isa_in_use() {
  static std::atomic<GemmIsa> isa{cpu_supports_avx512() ? GemmIsa::avx512 : GemmIsa::avx2};
  return isa;
}

// How Cm is cut into tasks: blocks of mstep x nstep (whole register tiles), which threads take
// one at a time. A task packs its rows of A once per depth block and each NR-column panel of Bm
// once, so more row blocks repack Bm and more column blocks repack A. Chosen to finish soonest:
// rounds of tasks (ceil(tasks / threads)) times a task's flops plus its packing, with the A block
// within MC rows and a task within kMaxTaskColumns columns. Where the operands fit in the cache
// and the shape allows, at least two tasks per thread come first, so that a thread slowed by a
// shared core is not waited on for half the product; operands streamed from memory (more than
// kStreamedFloats) make each extra cut cost more than that guards against, and the model alone
// decides. The blocking changes no bits: each element is still summed in the order of
// cpu/gemm.hpp.
struct Blocking {
  int mblocks = 1, nblocks = 1, mstep = 0, nstep = 0;

  // tile_columns: the tile's NR.
  Blocking(int M, int N, int K, int threads, int tile_columns) : NR(tile_columns) {
    const int m_fewest = ceil_div(M, MC), n_fewest = ceil_div(N, kMaxTaskColumns);
    set(M, N, m_fewest, n_fewest);
    if (threads <= 1) return;
    const bool streamed = (static_cast<double>(M) + N) * K > kStreamedFloats;
    const double pack_cost = streamed ? kStreamedPackCost : kPackCost;
    const int m_most = std::min(ceil_div(M, MR), m_fewest + 4 * threads);
    const int n_most = std::min(ceil_div(N, NR), n_fewest + 4 * threads);
    double best = -1.0;
    bool best_has_wanted_tasks = false;
    for (int mb = m_fewest; mb <= m_most; ++mb) {
      for (int nb = n_fewest; nb <= n_most; ++nb) {
        Blocking candidate(M, N, K, 1, tile_columns);
        candidate.set(M, N, mb, nb);
        const int tasks = candidate.mblocks * candidate.nblocks;
        const bool has_wanted_tasks = !streamed && tasks >= 2 * threads;
        const double task = 2.0 * candidate.mstep * candidate.nstep + pack_cost * (candidate.mstep + candidate.nstep);
        const double time = ceil_div(tasks, threads) * task;
        if (best < 0.0 || (has_wanted_tasks && !best_has_wanted_tasks) ||
            (has_wanted_tasks == best_has_wanted_tasks && time < best)) {
          best = time;
          best_has_wanted_tasks = has_wanted_tasks;
          *this = candidate;
        }
      }
    }
  }

 private:
  int NR;

  // mb x nb blocks of even size, rounded up to whole tiles (which can leave fewer blocks).
  void set(int M, int N, int mb, int nb) {
    mstep = round_up(ceil_div(M, mb), MR);
    nstep = round_up(ceil_div(N, nb), NR);
    mblocks = ceil_div(M, mstep);
    nblocks = ceil_div(N, nstep);
  }
};

// Block (ib, jb) of Cm += A . Bm, over all of k, on the calling thread, in NR-column tiles of
// `kernel`; with `assign`, the first depth block writes over Cm (TileStore). Cm fp32, or bf16
// (Out = uint16_t): then the tiles sum into the block's fp32 sums in a buffer of the thread
// (Cm's widened values first unless assigning), rounded into Cm once the block's k's are done:
// each element as an fp32 Cm rounded afterwards, with no fp32 copy of Cm.
template <class Ops, int NR, MicroKernel kernel, class Out>
void gemm_block(Out* Cm, size_t ldc, typename Ops::Matrix A, typename Ops::Matrix Bm, int M, int N, int K,
                const Blocking& g, int ib, int jb, bool assign, const float* init) {
  // Per thread, reused across calls: no allocation (and no page faults) per block.
  thread_local std::vector<float> a_pack(static_cast<size_t>(MC) * Ops::line_floats(KC)),
      b_panel(static_cast<size_t>(NR) * Ops::line_floats(KC));
  const int i0 = ib * g.mstep, mc = std::min(g.mstep, M - i0), mpanels = ceil_div(mc, MR);
  const int j0 = jb * g.nstep, nc = std::min(g.nstep, N - j0), npanels = ceil_div(nc, NR);
  // Where tile (i, j) of the block is summed, `lds` floats a row.
  float* sums;
  size_t lds;
  if constexpr (std::is_same_v<Out, float>) {
    sums = Cm + static_cast<size_t>(i0) * ldc + j0;
    lds = ldc;
  } else {
    thread_local std::vector<float> block;  // grown only: a resize to a larger size would zero it
    lds = static_cast<size_t>(nc);
    if (block.size() < static_cast<size_t>(mc) * lds) block.resize(static_cast<size_t>(mc) * lds);
    sums = block.data();
    if (!assign) {
      for (int r = 0; r < mc; ++r) {
        const uint16_t* src = Cm + static_cast<size_t>(i0 + r) * ldc + j0;
        for (int j = 0; j < nc; ++j) sums[r * lds + j] = widen_bf16(src[j]);
      }
    }
  }
  for (int k0 = 0; k0 < K; k0 += KC) {
    const int kc = std::min(KC, K - k0);
    Ops::pack_a(a_pack.data(), A, i0, mpanels, k0, kc, M);
    // Column of tiles q outermost: the panel of Bm is packed into L1 just before the tiles that
    // share it.
    for (int q = 0; q < npanels; ++q) {
      const int j = j0 + q * NR;
      Ops::template pack_b<NR>(b_panel.data(), Bm, j, k0, kc, N);
      for (int p = 0; p < mpanels; ++p) {
        const int i = i0 + p * MR;
        kernel(kc, a_pack.data() + static_cast<size_t>(p) * Ops::line_floats(kc) * MR, b_panel.data(),
               sums + static_cast<size_t>(i - i0) * lds + (j - j0), lds, std::min(MR, M - i), std::min(NR, N - j),
               TileStore{assign && k0 == 0, init ? init + j : nullptr});
      }
    }
  }
  if constexpr (!std::is_same_v<Out, float>) {
    for (int r = 0; r < mc; ++r) {
      uint16_t* dst = Cm + static_cast<size_t>(i0 + r) * ldc + j0;
      for (int j = 0; j < nc; ++j) dst[j] = round_to_bf16(sums[r * lds + j]);
    }
  }
}

// Cm = init (per column, or 0) over an empty product: what gemm_assign owes when K = 0.
template <class Out>
void assign_initial(Out* Cm, size_t ldc, int M, int N, const float* init) {
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) put_float(Cm[i * ldc + j], init ? init[j] : 0.0f);
  }
}

// Threads take whole blocks of Cm, each packing its own operands: no barriers (which cost dearly
// when the cores are shared), and each output element is summed by one thread over k in a fixed
// order, so the result does not depend on the thread count (deterministic dweight).
template <class Ops, int NR, MicroKernel kernel, class Out>
void gemm_tiles(Out* Cm, size_t ldc, typename Ops::Matrix A, typename Ops::Matrix Bm, int M, int N, int K,
                bool assign, const float* init, bool parallel) {
  const Blocking g(M, N, K, parallel ? omp_get_max_threads() : 1, NR);
  if (!parallel) {  // no OpenMP region (the serial forms run inside the callers' own)
    for (int jb = 0; jb < g.nblocks; ++jb) {
      for (int ib = 0; ib < g.mblocks; ++ib)
        gemm_block<Ops, NR, kernel, Out>(Cm, ldc, A, Bm, M, N, K, g, ib, jb, assign, init);
    }
    return;
  }
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int jb = 0; jb < g.nblocks; ++jb) {
    for (int ib = 0; ib < g.mblocks; ++ib)
      gemm_block<Ops, NR, kernel, Out>(Cm, ldc, A, Bm, M, N, K, g, ib, jb, assign, init);
  }
}

// On the OpenMP threads, or (parallel false) the calling thread alone, with the tile of the
// instruction set in use.
void gemm(float* Cm, size_t ldc, StridedMatrix A, StridedMatrix Bm, int M, int N, int K, bool assign,
          const float* init, bool parallel) {
#if defined(__x86_64__)
  if (gemm_isa() == GemmIsa::avx512)
    return gemm_tiles<Fp32Operands, 32, micro_kernel_avx512>(Cm, ldc, A, Bm, M, N, K, assign, init, parallel);
  static const bool avx2_fma = cpu_supports_avx2_fma();
  if (avx2_fma) return gemm_tiles<Fp32Operands, 16, micro_kernel_avx2>(Cm, ldc, A, Bm, M, N, K, assign, init, parallel);
#endif
  gemm_tiles<Fp32Operands, 16, micro_kernel_generic>(Cm, ldc, A, Bm, M, N, K, assign, init, parallel);
}

}  // namespace

bool cpu_has_avx512() { return cpu_supports_avx512(); }

bool gemm_bf16_available() { return cpu_supports_avx512_bf16(); }
bool gemm_bf16_enabled() { return bf16_products_on().load(std::memory_order_relaxed); }
void set_gemm_bf16_enabled(bool on) {
  if (on && !cpu_supports_avx512_bf16()) throw Error("set_gemm_bf16_enabled: this CPU has no AVX512-BF16");
  bf16_products_on().store(on, std::memory_order_relaxed);
}

namespace {
template <class Out>
void bf16_product(Out* Cm, size_t ldc, Bf16Matrix A, Bf16Matrix Bm, int M, int N, int K, bool assign,
                  const float* init) {
  ENSURE(gemm_bf16_enabled(), "gemm_bf16: the bf16 products are off or this CPU has no AVX512-BF16");
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (assign) assign_initial(Cm, ldc, M, N, init);
    return;
  }
#if defined(__x86_64__)
  gemm_tiles<Bf16Operands, 32, micro_kernel_bf16>(Cm, ldc, A, Bm, M, N, K, assign, init, true);
#endif
}
}  // namespace

void gemm_bf16(float* Cm, size_t ldc, Bf16Matrix A, Bf16Matrix Bm, int M, int N, int K, bool assign,
               const float* init) {
  bf16_product(Cm, ldc, A, Bm, M, N, K, assign, init);
}
void gemm_bf16(uint16_t* Cm, size_t ldc, Bf16Matrix A, Bf16Matrix Bm, int M, int N, int K, bool assign,
               const float* init) {
  bf16_product(Cm, ldc, A, Bm, M, N, K, assign, init);
}

GemmIsa gemm_isa() { return isa_in_use().load(std::memory_order_relaxed); }

void set_gemm_isa(GemmIsa isa) {
  if (isa == GemmIsa::avx512 && !cpu_supports_avx512()) throw Error("set_gemm_isa: this CPU has no AVX-512");
  isa_in_use().store(isa, std::memory_order_relaxed);
}

void gemm_accumulate(float* Cm, size_t ldc, StridedMatrix A, StridedMatrix Bm, int M, int N, int K) {
  if (M <= 0 || N <= 0 || K <= 0) return;
  gemm(Cm, ldc, A, Bm, M, N, K, false, nullptr, true);
}

void gemm_accumulate_serial(float* Cm, size_t ldc, StridedMatrix A, StridedMatrix Bm, int M, int N, int K) {
  if (M <= 0 || N <= 0 || K <= 0) return;
  gemm(Cm, ldc, A, Bm, M, N, K, false, nullptr, false);
}

void gemm_assign(float* Cm, size_t ldc, StridedMatrix A, StridedMatrix Bm, int M, int N, int K, const float* init) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return assign_initial(Cm, ldc, M, N, init);
  gemm(Cm, ldc, A, Bm, M, N, K, true, init, true);
}

void gemm_assign_serial(float* Cm, size_t ldc, StridedMatrix A, StridedMatrix Bm, int M, int N, int K,
                        const float* init) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return assign_initial(Cm, ldc, M, N, init);
  gemm(Cm, ldc, A, Bm, M, N, K, true, init, false);
}

}  // namespace gpt2cc::cpu
