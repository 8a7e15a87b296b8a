// bf16 products on AMX tiles (cpu/amx.hpp).
//
// The product is computed transposed, out^T = W . A^T, so that W, the large operand, is read
// in place: a tile of 16 of its rows x 32 values is one strided tile load, where the other
// operand of TDPBF16PS must hold pairs of consecutive k side by side for each column (the "VNNI"
// layout), which only the small one, A, is repacked into: for each 16 rows of A and 32 k, a
// 16 x 16 block of 32-bit words, word (p, m) = A[m][2p], A[m][2p + 1] (Ap below). A task owns 32
// columns of out (two W tiles) and a chunk of rows; per 32 rows it keeps four 16 x 16 fp32
// accumulator tiles (tmm0-3) while k runs, then writes them out transposed, adding the bias (and,
// for a bf16 out, rounding each sum once: its k's are all done by then).
#include "cpu/amx.hpp"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <vector>

#include "core/check.hpp"
#include "cpu/bf16.hpp"

#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define GPT2CC_AMX 1
#endif

namespace gpt2cc::cpu {

namespace {

constexpr int kTile = 16;       // rows of a tile; also its columns of fp32 (64 bytes)
constexpr int kDepth = 32;      // bf16 values of k in one tile row
constexpr int kRowChunk = 128;  // rows of A a task takes: its packed part stays in L2

#if defined(GPT2CC_AMX)
// CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE; then Linux's permission for the tile data
// (XFEATURE_XTILEDATA = 18), without which the first tile instruction faults.
bool detect_amx_bf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (!(d & (1u << 22)) || !(d & (1u << 24))) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

// Palette 1, all eight tiles 16 rows x 64 bytes (the layout _tile_loadconfig reads).
struct TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

template <class Out>  // float, or uint16_t (bf16)
__attribute__((target("amx-tile,amx-bf16"))) void matmul_tiles(Out* out, const uint32_t* Ap, const uint16_t* W,
                                                               const float* bias, int M, int N, int K, int Mp) {
  const int kblocks = K / kDepth, nblocks = N / (2 * kTile), chunks = (Mp + kRowChunk - 1) / kRowChunk;
  const size_t packed_rows16 = size_t(kblocks) * kTile * kTile;  // words of 16 packed rows of A
  const size_t w_stride = size_t(K) * sizeof(uint16_t);
#pragma omp parallel
  {
    TileConfig config;
    for (int t = 0; t < 8; ++t) {
      config.rows[t] = kTile;
      config.bytes_per_row[t] = 64;
    }
    _tile_loadconfig(&config);
    alignas(64) float acc[4][kTile][kTile];
#pragma omp for schedule(static)
    for (int task = 0; task < nblocks * chunks; ++task) {
      const int n0 = (task % nblocks) * 2 * kTile, chunk = task / nblocks;
      const uint16_t* w0 = W + size_t(n0) * K;
      const uint16_t* w1 = w0 + size_t(kTile) * K;
      for (int m0 = chunk * kRowChunk; m0 < std::min(Mp, (chunk + 1) * kRowChunk); m0 += 2 * kTile) {
        const uint32_t* a0 = Ap + size_t(m0 / kTile) * packed_rows16;
        const uint32_t* a1 = a0 + packed_rows16;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int kb = 0; kb < kblocks; ++kb) {
          _tile_loadd(4, w0 + kb * kDepth, w_stride);
          _tile_loadd(5, w1 + kb * kDepth, w_stride);
          _tile_loadd(6, a0 + size_t(kb) * kTile * kTile, 64);
          _tile_loadd(7, a1 + size_t(kb) * kTile * kTile, 64);
          _tile_dpbf16ps(0, 4, 6);  // out^T rows n0..+15, columns m0..+15
          _tile_dpbf16ps(1, 4, 7);  //                    columns m0+16..+31
          _tile_dpbf16ps(2, 5, 6);  // rows n0+16..+31
          _tile_dpbf16ps(3, 5, 7);
        }
        _tile_stored(0, acc[0], 64);
        _tile_stored(1, acc[1], 64);
        _tile_stored(2, acc[2], 64);
        _tile_stored(3, acc[3], 64);
        for (int t = 0; t < 4; ++t) {
          const int n = n0 + (t / 2) * kTile, m = m0 + (t % 2) * kTile;
          for (int j = 0; j < kTile && m + j < M; ++j) {
            Out* row = out + size_t(m + j) * N + n;
            for (int i = 0; i < kTile; ++i) put_float(row[i], (bias ? bias[n + i] : 0.0f) + acc[t][i][j]);
          }
        }
      }
    }
    _tile_release();
  }
}
#endif

std::atomic<bool>& enabled_flag() {
  static std::atomic<bool> on{amx_bf16_available()};
  return on;
}

}  // namespace

bool amx_bf16_available() {
#if defined(GPT2CC_AMX)
  static const bool available = detect_amx_bf16();
  return available;
#else
  return false;
#endif
}

bool amx_bf16_enabled() { return enabled_flag().load(std::memory_order_relaxed); }

void set_amx_bf16_enabled(bool on) {
  ENSURE(!on || amx_bf16_available(), "AMX-BF16 switched on where this CPU or kernel does not offer it");
  enabled_flag().store(on, std::memory_order_relaxed);
}

bool amx_bf16_shape(int N, int K) { return N > 0 && K > 0 && N % (2 * kTile) == 0 && K % kDepth == 0; }

namespace {
template <class Out>
void amx_product(Out* out, const uint16_t* A, const uint16_t* W, const float* bias, int M, int N, int K) {
  ENSURE(amx_bf16_enabled() && amx_bf16_shape(N, K), "amx_matmul_bf16: AMX off or shape {} x {} not taken", N, K);
#if defined(GPT2CC_AMX)
  // A's rows in blocks of 16 (the padding rows 0), each block as kblocks 16 x 16 word tiles.
  const int Mp = (M + 2 * kTile - 1) / (2 * kTile) * (2 * kTile), kblocks = K / kDepth;
  std::vector<uint32_t> Ap(size_t(Mp) * K / 2, 0);
#pragma omp parallel for schedule(static)
  for (int m = 0; m < M; ++m) {
    const uint16_t* row = A + size_t(m) * K;
    uint32_t* block = Ap.data() + size_t(m / kTile) * kblocks * kTile * kTile + m % kTile;
    for (int kb = 0; kb < kblocks; ++kb) {
      for (int p = 0; p < kTile; ++p) {
        uint32_t word;
        std::memcpy(&word, row + kb * kDepth + 2 * p, sizeof word);
        block[(size_t(kb) * kTile + p) * kTile] = word;
      }
    }
  }
  matmul_tiles(out, Ap.data(), W, bias, M, N, K, Mp);
#else
  (void)out, (void)A, (void)W, (void)bias, (void)M;
#endif
}
}  // namespace

void amx_matmul_bf16(float* out, const uint16_t* A, const uint16_t* W, const float* bias, int M, int N, int K) {
  amx_product(out, A, W, bias, M, N, K);
}
void amx_matmul_bf16(uint16_t* out, const uint16_t* A, const uint16_t* W, const float* bias, int M, int N, int K) {
  amx_product(out, A, W, bias, M, N, K);
}

}  // namespace gpt2cc::cpu
