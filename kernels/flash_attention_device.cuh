// Device code of the fused causal flash attention, bf16 in and out, fp32 softmax statistics and
// accumulators (FlashAttention-2, Dao 2023, Algorithms 1 and 2). Per head (b,h), scale = 1/sqrt(HS):
//   forward : for each Q tile (64 or 128 rows), over the K/V tiles up to the diagonal:
//             S = scale*Q K^T ; m' = max(m, rowmax S) ; P = exp(S - m') ; l = l*exp(m-m') + rowsum P
//             O = O*exp(m-m') + P V ;  at the end O /= l, lse = m + log l (saved, (B,NH,T))
//   backward: D = rowsum(dO * O) ; P = exp(scale*Q K^T - lse) recomputed ; dP = dO V^T
//             dS = P * (dP - D) ; dV = P^T dO ; dK = scale * dS^T Q ; dQ = scale * dS K
// Two backward designs, both deterministic (no atomics on data, no T x T buffer):
//   split: one kernel per output (dK,dV over K/V tiles; dQ over Q tiles), each element of dqkv
//          written once by one warp; 7 products per tile pair (S and dP computed by both);
//   fused: one kernel over K/V tiles that also makes dQ's parts and adds them, in a fixed order,
//          into an fp32 running sum per Q tile (flags between CTAs); 5 products per tile pair.
// Matrix products on tensor cores: mma.sync m16n8k16 bf16 -> fp32, operands via ldmatrix; tiles
// copied global -> shared by cp.async, the next tile while the current one is computed.
// Included by kernels/flash_attention.cu (the launchers) and, compiled as host C++, by the CPU
// emulator in tests/emu; the launch geometry at the end is computed here for both.
#pragma once

#include <cuda_bf16.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

namespace gpt2cc::cuda::flash {

using bf16 = __nv_bfloat16;

// Two kinds of tile. A CTA owns one tile of kRows rows (Q rows in the forward and dQ kernels, K/V
// rows in dK/dV), held in shared memory throughout, 16 rows per warp (one mma M); kRows is 64 (4
// warps) or 128 (8 warps), a template parameter of the kernels. It streams the other operand
// through in tiles of kTileRows = 64 rows, which is also the N of every score tile. Why 128: each
// streamed tile is then read from L2 once for twice the rows, halving the traffic per product,
// with the same work per warp; why keep 64: a grid of half as many CTAs can leave SMs idle on
// short sequences, and the smaller CTA may fit twice on an SM where the larger fits once. Both
// give the same bits: every row sees the same streamed tiles in the same order (the tiles a warp
// skips are the ones masked whole, which add exact zeros).
constexpr int kTileRows = 64;
template <int kRows>
constexpr int kThreadsFor = kRows / 16 * 32;
constexpr int kMaxGridY = 65535;            // tiles go in grid.y, B*NH in grid.x (2^31 - 1)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Shared-memory tiles are kRows (or kTileRows) x HS bf16, row-major, each row padded by 8 bf16.
// Why: ldmatrix reads 8 rows of 16 bytes per phase at the same column. Unpadded, the row pitch
// (128 or 256 bytes) is a multiple of the 128-byte bank window and all 8 rows hit the same 4
// banks (8-way conflict). With a pitch of HS+8 elements = (HS+8)/2 words = 4 (mod 32) words, row
// i starts at bank 4*i: the 8 rows cover banks 0..31 exactly once. Rows stay 16-byte aligned
// (144 and 272 bytes), as ldmatrix and the 16-byte stores of the tile loader need.
template <int HS>
constexpr int kStride = HS + 8;
template <int HS, int kRows = kTileRows>
constexpr int kTileElems = kRows * kStride<HS>;

// All pointers of one head-batched launch. The scale is pre-multiplied by log2(e) so the
// kernels use exp2: exp(scale*s - x) = exp2(scale*log2e*s - log2e*x).
struct FlashForwardParams {
  bf16* out;          // (B,T,C)
  float* lse;         // (B,NH,T), natural log
  const bf16* qkv;    // (B,T,3C)
  int T, C, NH;
  float scale_log2;   // log2(e) / sqrt(HS)
};

struct FlashBackwardParams {
  bf16* dqkv;          // (B,T,3C), written
  const bf16* dout;    // (B,T,C)
  const float* lse;    // (B,NH,T) from the forward
  const float* delta;  // (B,NH,T): D = rowsum(dout * out)
  const bf16* qkv;     // (B,T,3C)
  int T, C, NH;
  float scale;         // 1 / sqrt(HS)
  float scale_log2;    // log2(e) / sqrt(HS)
  // The fused kernel only (null for the split ones): dQ's running sums, fp32 (B,NH,T,HS), and
  // 1 + B*NH*ceil(T/64) counters, zero at launch: the work ticket, then per (head, Q tile) the
  // number of K/V blocks that have added their part.
  float* dq_partial;
  uint32_t* dq_sync;
};

// The kernels use sm_80 instructions (cp.async, mma.sync m16n8k16 bf16). A build that also targets
// sm_75 (Turing, where the fp32 backend runs) compiles each of their bodies to a trap there; the
// launchers refuse a device below sm_80 before any launch (flash_attention.cu).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define GPT2CC_FLASH_BELOW_SM80 1
#else
#define GPT2CC_FLASH_BELOW_SM80 0
#endif

// ---------------------------------------------------------------------------------------------
// Tensor-core building blocks. Fragment layouts of mma.m16n8k16 (PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type"), lane = 4*group + quad (group 0..7, quad 0..3):
//   A (16x16, row-major), 4 x b32 each holding 2 bf16 (lower column in the low half):
//     a[0] = A[group][2q..2q+1]   a[1] = A[group+8][2q..2q+1]
//     a[2] = A[group][2q+8..+9]   a[3] = A[group+8][2q+8..+9]
//   B (16x8, "col": k x n), 2 x b32: b[0] = B[2q..2q+1][group]  b[1] = B[2q+8..+9][group]
//   C/D (16x8, fp32): c[0..1] = C[group][2q..2q+1]   c[2..3] = C[group+8][2q..2q+1]
// ldmatrix.m8n8.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i; every lane receives
// register i = (row lane/4, columns 2*(lane%4)..+1) of matrix i. With .trans it receives the
// transposed element pair instead: (rows 2*(lane%4)..+1, column lane/4).
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

#ifdef GPT2CC_CUDA_EMULATION
// Host build for the CPU emulator (tests/emu/cuda_emu.hpp and cp_async_emu.hpp, included first):
// the inline-asm instructions become the emulator's versions, written from the PTX ISA itself
// (cp.async lands each copy as late as the ISA allows: at the wait_group that completes it).
// Everything else in this file is compiled unchanged.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  ::gpt2cc::emu::ldmatrix_x4(r, shared_address(p), false);
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  ::gpt2cc::emu::ldmatrix_x4(r, shared_address(p), true);
}
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  ::gpt2cc::emu::mma_m16n8k16_bf16(c, a, b0, b1);
}
__device__ __forceinline__ void cp_async_16(void* shared_dst, const void* global_src) {
  ::gpt2cc::emu::cp_async_16(shared_dst, global_src);
}
__device__ __forceinline__ void cp_async_commit() { ::gpt2cc::emu::cp_async_commit(); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  ::gpt2cc::emu::cp_async_wait(N);
}
__device__ __forceinline__ uint32_t atomic_add_global(uint32_t* p, uint32_t v) {
  return ::gpt2cc::emu::atomic_add(p, v);
}
__device__ __forceinline__ void wait_until_equal(const uint32_t* flag, uint32_t v) {
  ::gpt2cc::emu::wait_until_equal(flag, v);
}
__device__ __forceinline__ void store_release(uint32_t* flag, uint32_t v) { ::gpt2cc::emu::store_release(flag, v); }
__device__ __forceinline__ void fence_gpu() { ::gpt2cc::emu::threadfence(); }
__device__ __forceinline__ float2 load_l2(const float* p) { return *reinterpret_cast<const float2*>(p); }
__device__ __forceinline__ void store_l2(float* p, float2 v) { *reinterpret_cast<float2*>(p) = v; }
#else
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p))
               : "memory");
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p))
               : "memory");
}

// c += a * b for one 16x8x16 tile.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 16 bytes global -> shared without passing through registers (sm_80+), .cg: cached in L2 only
// (each tile row is read once per CTA). The copy lands when a later cp_async_wait completes its
// group; the "memory" clobbers keep the compiler from moving shared-memory accesses across these.
__device__ __forceinline__ void cp_async_16(void* shared_dst, const void* global_src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(shared_dst)), "l"(global_src)
               : "memory");
}
// The thread's copies issued since its last commit become one group.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of the thread's committed groups are still in flight (the newest ones).
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Flags between CTAs of one launch (the fused backward's ordered dQ sums), by the PTX memory
// model's message-passing pattern: the writer's threads store, __threadfence, __syncthreads, then
// one thread sets the flag with st.release; the reader's one thread spins on ld.acquire until it
// sees the flag, then __syncthreads, then its threads load. The data goes through L2 only
// (ld.cg / st.cg): SMs' L1 caches are not coherent with each other.
__device__ __forceinline__ uint32_t atomic_add_global(uint32_t* p, uint32_t v) { return atomicAdd(p, v); }
__device__ __forceinline__ void wait_until_equal(const uint32_t* flag, uint32_t v) {
  uint32_t seen;
  do {
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(seen) : "l"(flag) : "memory");
  } while (seen != v);
}
__device__ __forceinline__ void store_release(uint32_t* flag, uint32_t v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;\n" ::"l"(flag), "r"(v) : "memory");
}
__device__ __forceinline__ void fence_gpu() { __threadfence(); }
__device__ __forceinline__ float2 load_l2(const float* p) { return __ldcg(reinterpret_cast<const float2*>(p)); }
__device__ __forceinline__ void store_l2(float* p, float2 v) { __stcg(reinterpret_cast<float2*>(p), v); }
#endif  // GPT2CC_CUDA_EMULATION

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lo) in the low 16 bits
  return *reinterpret_cast<uint32_t*>(&v);
}

// acc (16 x N) += A (16 x HS) * B^T, A = rows a_row0..a_row0+15 of tile `a`, B = the N rows of
// tile `b` (both [row][HS] in shared memory): the "Q K^T" product.
// A fragment (16x16 at a_row0, k0): lane l addresses row a_row0 + l%16, column k0 + 8*(l/16), so
// matrices 0..3 are (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7, cols 8-15),
// (rows 8-15, cols 8-15) = a[0..3]. B[k][n] = b[n][k]: a non-transposed 8x8 load of b rows n0..+7
// at columns k0..+7 gives b[0] of n-block n0 (lane gets b[n0+l/4][k0+2(l%4)..]); lane l addresses
// row n0 + l%8 + 8*(l/16), column k0 + 8*((l/8)%2): registers = b0, b1 of n-block n0, then b0, b1
// of n-block n0+8.
template <int HS, int N>
__device__ __forceinline__ void warp_gemm_abt(float (&acc)[N / 8][4], const bf16* a, int a_row0, const bf16* b,
                                              int lane) {
#pragma unroll
  for (int k0 = 0; k0 < HS; k0 += 16) {
    uint32_t af[4];
    ldmatrix_x4(af, a + (a_row0 + (lane & 15)) * kStride<HS> + k0 + (lane >> 4) * 8);
#pragma unroll
    for (int n0 = 0; n0 < N; n0 += 16) {
      uint32_t bf[4];
      ldmatrix_x4(bf, b + (n0 + (lane & 7) + (lane >> 4) * 8) * kStride<HS> + k0 + ((lane >> 3) & 1) * 8);
      mma_bf16(acc[n0 / 8], af, bf[0], bf[1]);
      mma_bf16(acc[n0 / 8 + 1], af, bf[2], bf[3]);
    }
  }
}

// acc (16 x N) += P (16 x 64, A fragments in registers) * B, B = the first N columns of tile `b`
// [64][HS] in shared memory (B[k][n] = b[k][n]; N = HS unless a caller splits the columns among
// warps): the "P V" product. B fragments by ldmatrix.trans: the 8x8 block of b at rows k0..+7,
// columns n0..+7 arrives as b[k0+2(l%4)..+1][n0+l/4] = b0 of n-block n0.
// Lane l addresses row k0 + l%16, column n0 + 8*(l/16): matrices (k0, n0), (k0+8, n0),
// (k0, n0+8), (k0+8, n0+8) = b0, b1 of n-block n0, then b0, b1 of n-block n0+8.
template <int HS, int N = HS>
__device__ __forceinline__ void warp_gemm_pb(float (&acc)[N / 8][4], const uint32_t (&p)[kTileRows / 16][4],
                                             const bf16* b, int lane) {
#pragma unroll
  for (int kb = 0; kb < kTileRows / 16; ++kb) {
#pragma unroll
    for (int n0 = 0; n0 < N; n0 += 16) {
      uint32_t bf[4];
      ldmatrix_x4_trans(bf, b + (kb * 16 + (lane & 15)) * kStride<HS> + n0 + (lane >> 4) * 8);
      mma_bf16(acc[n0 / 8], p[kb], bf[0], bf[1]);
      mma_bf16(acc[n0 / 8 + 1], p[kb], bf[2], bf[3]);
    }
  }
}

// The 16x64 fp32 accumulator tile (C layout) as four 16x16 bf16 A fragments: C n-blocks 2kb and
// 2kb+1 hold columns 16kb..16kb+15, and C's (group, 2q..2q+1) / (group+8, 2q..2q+1) pairs are
// exactly A's a[0] / a[1] (first n-block) and a[2] / a[3] (second n-block). No shuffles needed.
__device__ __forceinline__ void to_a_fragments(uint32_t (&p)[kTileRows / 16][4], const float (&c)[kTileRows / 8][4]) {
#pragma unroll
  for (int kb = 0; kb < kTileRows / 16; ++kb) {
    p[kb][0] = pack_bf16(c[2 * kb][0], c[2 * kb][1]);
    p[kb][1] = pack_bf16(c[2 * kb][2], c[2 * kb][3]);
    p[kb][2] = pack_bf16(c[2 * kb + 1][0], c[2 * kb + 1][1]);
    p[kb][3] = pack_bf16(c[2 * kb + 1][2], c[2 * kb + 1][3]);
  }
}

// Starts copying rows row0..row0+kRows-1 of one head (head[t*row_stride + 0..HS-1]) into a padded
// shared tile, 16 bytes per cp.async (8 bf16: the launcher checks pointer and row-stride
// alignment), spread over the kThreads threads of the CTA; rows >= T are stored as zero at once, so
// the masked scores stay finite and contribute nothing. The tile is complete after
// cp_async_commit, cp_async_wait and __syncthreads.
template <int HS, int kRows, int kThreads>
__device__ __forceinline__ void load_tile_async(bf16* tile, const bf16* head, size_t row_stride, int row0, int T) {
  constexpr int kChunksPerRow = HS / 8;
  for (int i = threadIdx.x; i < kRows * kChunksPerRow; i += kThreads) {
    const int r = i / kChunksPerRow, c = i % kChunksPerRow;
    bf16* dst = tile + r * kStride<HS> + c * 8;
    if (row0 + r < T) cp_async_16(dst, head + static_cast<size_t>(row0 + r) * row_stride + c * 8);
    else *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
  }
}

// The three kernels walk a sequence of tiles (K/V tiles for the forward and dQ, Q/dO tiles for
// dK/dV) through a two-stage pipeline: while the warps compute on tile n in buffer n%2, the copies
// of tile n+1 fill the other buffer. Why: a tile's loads from global memory take about as long as
// its matrix products; issued together (load, barrier, compute) the tensor cores wait for memory
// and the memory system for the tensor cores. Per iteration n, one barrier:
//   cp_async_wait<0>; __syncthreads   tile n is in buffer n%2 for every thread's copies, and every
//                                     warp is done with iteration n-1, the last reader of buffer (n+1)%2
//   issue tile n+1 into buffer (n+1)%2; cp_async_commit
//   compute on buffer n%2


// Writes the 16 x HS accumulator strip of a warp (rows row[0], row[1] per lane, see the C
// layout) times `scale` to head[t*row_stride + 0..HS-1], rows t < T only.
template <int HS>
__device__ __forceinline__ void store_rows(bf16* head, size_t row_stride, const float (&acc)[HS / 8][4],
                                           const int (&row)[2], const float (&scale)[2], int T, int quad) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (row[r] >= T) continue;
    bf16* dst = head + static_cast<size_t>(row[r]) * row_stride + 2 * quad;
#pragma unroll
    for (int nb = 0; nb < HS / 8; ++nb) {
      *reinterpret_cast<__nv_bfloat162*>(dst + nb * 8) =
          __floats2bfloat162_rn(acc[nb][2 * r] * scale[r], acc[nb][2 * r + 1] * scale[r]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forward. Grid (B*NH, ceil(T/kRows)), kRows/16 warps; warp w owns query rows
// q0+16w..q0+16w+15. Causal tile skipping: the CTA needs the K/V tiles up to its last row (and
// T) only, and a warp skips a tile whose first key comes after its last row (every score masked:
// P = 0, the statistics unchanged). A tile reaching past the warp's first row is masked (col >
// row); columns >= T occur only in the last tile, which then reaches past every row < T (rows >= T
// are never stored). The row statistics m, l of a row live in its quad (4 lanes); each lane keeps
// a partial l over its own columns, summed across the quad at the end.
// ---------------------------------------------------------------------------------------------
template <int HS, int kRows>
__global__ void __launch_bounds__(kThreadsFor<kRows>) flash_attention_forward_kernel(const FlashForwardParams p) {
#if GPT2CC_FLASH_BELOW_SM80
  __trap();  // never launched: flash_attention.cu refuses a device below sm_80
#else
  constexpr int kThreads = kThreadsFor<kRows>;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  // Stage n: K at stages + 2n tiles, V right after it. (Pointer arithmetic, not an array of
  // pointers: indexed by a runtime stage, an array would live in local memory.)
  bf16* stages = sQ + kTileElems<HS, kRows>;
  const auto sK = [&](int stage) { return stages + 2 * stage * kTileElems<HS>; };
  const auto sV = [&](int stage) { return stages + (2 * stage + 1) * kTileElems<HS>; };

  const int bh = blockIdx.x, b = bh / p.NH, h = bh % p.NH;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kRows;  // the longest rows (most K/V tiles) start first
  const int last_kv_tile = (min(q0 + kRows, p.T) - 1) / kTileRows;  // holds the CTA's last row < T
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, group = lane >> 2, quad = lane & 3;
  const int warp_row0 = q0 + warp * 16;
  const size_t qkv_stride = 3 * static_cast<size_t>(p.C);
  const bf16* q_head = p.qkv + static_cast<size_t>(b) * p.T * qkv_stride + h * HS;
  const bf16* k_head = q_head + p.C;
  const bf16* v_head = q_head + 2 * p.C;
  const int row[2] = {warp_row0 + group, warp_row0 + group + 8};

  load_tile_async<HS, kRows, kThreads>(sQ, q_head, qkv_stride, q0, p.T);
  load_tile_async<HS, kTileRows, kThreads>(sK(0), k_head, qkv_stride, 0, p.T);
  load_tile_async<HS, kTileRows, kThreads>(sV(0), v_head, qkv_stride, 0, p.T);
  cp_async_commit();

  float o[HS / 8][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY};  // in units of log2: max of scale*log2e*s
  float row_sum[2] = {0.0f, 0.0f};            // this lane's partial sum of exp2(s - row_max)
  for (int kv_tile = 0; kv_tile <= last_kv_tile; ++kv_tile) {
    const int k0 = kv_tile * kTileRows, stage = kv_tile & 1;
    cp_async_wait<0>();
    __syncthreads();  // K, V tile kv_tile (and sQ) landed; every warp is done with the other stage
    if (kv_tile < last_kv_tile) {
      load_tile_async<HS, kTileRows, kThreads>(sK(stage ^ 1), k_head, qkv_stride, k0 + kTileRows, p.T);
      load_tile_async<HS, kTileRows, kThreads>(sV(stage ^ 1), v_head, qkv_stride, k0 + kTileRows, p.T);
    }
    cp_async_commit();
    if (k0 > warp_row0 + 15) continue;  // every key after every row of this warp

    float s[kTileRows / 8][4] = {};
    warp_gemm_abt<HS, kTileRows>(s, sQ, warp * 16, sK(stage), lane);
    const bool masked = k0 + kTileRows - 1 > warp_row0;
#pragma unroll
    for (int nb = 0; nb < kTileRows / 8; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = k0 + nb * 8 + 2 * quad + (e & 1);
        s[nb][e] = masked && col > row[e >> 1] ? -INFINITY : s[nb][e] * p.scale_log2;
      }
    }
    // Online softmax, rows r = 0 (elements 0,1) and r = 1 (elements 2,3) of each n-block.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float m = row_max[r];
#pragma unroll
      for (int nb = 0; nb < kTileRows / 8; ++nb) m = fmaxf(m, fmaxf(s[nb][2 * r], s[nb][2 * r + 1]));
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));  // the quad holds the whole row
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
      // A row with every score masked so far keeps m = -inf; subtract 0 then so that
      // exp2(-inf - m) is 0 and never exp2(-inf + inf) = NaN.
      const float base = m == -INFINITY ? 0.0f : m;
      const float alpha = exp2f(row_max[r] - base);  // rescales the old O and l
      row_max[r] = m;
      float sum = 0.0f;
#pragma unroll
      for (int nb = 0; nb < kTileRows / 8; ++nb) {
        s[nb][2 * r] = exp2f(s[nb][2 * r] - base);
        s[nb][2 * r + 1] = exp2f(s[nb][2 * r + 1] - base);
        sum += s[nb][2 * r] + s[nb][2 * r + 1];
      }
      row_sum[r] = row_sum[r] * alpha + sum;
#pragma unroll
      for (int nb = 0; nb < HS / 8; ++nb) {
        o[nb][2 * r] *= alpha;
        o[nb][2 * r + 1] *= alpha;
      }
    }
    uint32_t pf[kTileRows / 16][4];
    to_a_fragments(pf, s);  // P rounded to bf16 for the tensor cores; l keeps the fp32 values
    warp_gemm_pb<HS>(o, pf, sV(stage), lane);
  }

  float inv_sum[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = row_sum[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv_sum[r] = l > 0.0f ? 1.0f / l : 0.0f;
    // lse = ln(sum exp(scale*s)) = ln2 * (max2 + log2 l), max2 and l in the log2 domain above.
    if (quad == 0 && row[r] < p.T) p.lse[static_cast<size_t>(bh) * p.T + row[r]] = (row_max[r] + log2f(l)) * kLn2;
  }
  store_rows<HS>(p.out + static_cast<size_t>(b) * p.T * p.C + h * HS, p.C, o, row, inv_sum, p.T, quad);
#endif
}

// ---------------------------------------------------------------------------------------------
// Backward, step 1: delta[b,h,t] = sum_d dout[b,t,h*HS+d] * out[b,t,h*HS+d] (fp32 from bf16).
// Eight lanes per (b,t,h) row, HS/8 elements each in 16-byte loads, reduced by xor shuffles;
// rows are numbered ((b*T + t)*NH + h) so consecutive groups read consecutive memory.
// ---------------------------------------------------------------------------------------------
template <int HS>
__global__ void flash_attention_delta_kernel(float* delta, const bf16* dout, const bf16* out, int B, int T, int NH) {
  constexpr int kLanesPerRow = 8, kChunks = HS / 8 / kLanesPerRow;
  const size_t rows = static_cast<size_t>(B) * T * NH;
  const size_t id = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kLanesPerRow;
  const int sub = threadIdx.x % kLanesPerRow;
  // All lanes stay for the shuffles; rows past the end read nothing and store nothing.
  const bool active = id < rows;
  float sum = 0.0f;
  if (active) {
    const size_t offset = id * HS;  // (b*T + t)*C + h*HS with C = NH*HS
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const size_t at = offset + (c * kLanesPerRow + sub) * 8;
      const uint4 dv = *reinterpret_cast<const uint4*>(dout + at);
      const uint4 ov = *reinterpret_cast<const uint4*>(out + at);
      const __nv_bfloat162* d2 = reinterpret_cast<const __nv_bfloat162*>(&dv);
      const __nv_bfloat162* o2 = reinterpret_cast<const __nv_bfloat162*>(&ov);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 df = __bfloat1622float2(d2[j]), of = __bfloat1622float2(o2[j]);
        sum += df.x * of.x + df.y * of.y;
      }
    }
  }
  sum += __shfl_xor_sync(0xffffffffu, sum, 4);
  sum += __shfl_xor_sync(0xffffffffu, sum, 2);
  sum += __shfl_xor_sync(0xffffffffu, sum, 1);
  if (active && sub == 0) {
    const size_t h = id % NH, bt = id / NH, b = bt / T, t = bt % T;
    delta[(b * NH + h) * T + t] = sum;
  }
}

// ---------------------------------------------------------------------------------------------
// Backward, step 2: dK, dV. Grid (B*NH, ceil(T/kRows)); the CTA owns the kRows keys from k0, warp
// w its key rows k0+16w..+15, and walks the 64-row Q tiles from the one holding query k0 to the
// last (the causal triangle below the diagonal), computing the transposed products directly so
// P^T and dS^T land in A-fragment layout:
//   S^T = K Q^T ; P^T = exp2(scale_log2 * S^T - log2e * lse[query]) ; dP^T = V dO^T
//   dS^T = P^T * (dP^T - D[query]) ; dV += P^T dO ; dK += dS^T Q (times scale at the end)
// Masked (P = 0): key > query (in the Q tiles that meet the CTA's keys) and query >= T (last
// tile). A warp skips a Q tile whose last query comes before its first key (all masked).
// KeyBlock holds what this kernel and the fused one (below) share: the shared-memory layout, the
// Q-tile loader, one Q tile's products and the final store, so both compute dK, dV alike.
// ---------------------------------------------------------------------------------------------
template <int HS, int kRows>
struct KeyBlock {
  static constexpr int kThreads = kThreadsFor<kRows>;
  // Shared memory: K and V (kRows rows each), then two stages of (Q, dO) 64-row tiles, then per
  // stage log2e * lse and delta of the Q tile's rows (64 floats each). (Pointer arithmetic, not
  // an array of pointers: indexed by a runtime stage, an array would live in local memory.)
  static constexpr size_t kSmemBytes =
      (2 * kTileElems<HS, kRows> + 4 * kTileElems<HS>) * sizeof(bf16) + 4 * kTileRows * sizeof(float);

  const FlashBackwardParams& p;
  bf16* sK;
  bf16* sV;
  bf16* stages;
  float* stats;
  int bh, b, h, k0, first_q_tile, num_q_tiles, warp, lane, quad, warp_key0;
  int key[2];  // this lane's key rows (C layout rows group, group+8 of the warp's 16)
  size_t qkv_stride, stat_base;
  const bf16* q_head;
  const bf16* do_head;

  __device__ __forceinline__ KeyBlock(const FlashBackwardParams& params, unsigned char* smem, int head, int block)
      : p(params), bh(head) {
    sK = reinterpret_cast<bf16*>(smem);
    sV = sK + kTileElems<HS, kRows>;
    stages = sV + kTileElems<HS, kRows>;
    stats = reinterpret_cast<float*>(stages + 4 * kTileElems<HS>);
    b = bh / p.NH;
    h = bh % p.NH;
    k0 = block * kRows;
    first_q_tile = k0 / kTileRows;
    num_q_tiles = (p.T + kTileRows - 1) / kTileRows;
    warp = threadIdx.x / 32;
    lane = threadIdx.x % 32;
    quad = lane & 3;
    warp_key0 = k0 + warp * 16;
    key[0] = warp_key0 + (lane >> 2);
    key[1] = key[0] + 8;
    qkv_stride = 3 * static_cast<size_t>(p.C);
    stat_base = static_cast<size_t>(bh) * p.T;
    q_head = p.qkv + static_cast<size_t>(b) * p.T * qkv_stride + h * HS;
    do_head = p.dout + static_cast<size_t>(b) * p.T * p.C + h * HS;
  }
  __device__ __forceinline__ bf16* sQ(int stage) const { return stages + 2 * stage * kTileElems<HS>; }
  __device__ __forceinline__ bf16* sdO(int stage) const { return stages + (2 * stage + 1) * kTileElems<HS>; }
  __device__ __forceinline__ float* s_lse(int stage) const { return stats + 2 * stage * kTileRows; }
  __device__ __forceinline__ float* s_delta(int stage) const { return stats + (2 * stage + 1) * kTileRows; }
  // Whether any key of this warp is at or before the tile's last query (else every score is masked).
  __device__ __forceinline__ bool warp_meets(int q0) const { return warp_key0 <= q0 + kTileRows - 1; }

  // The Q tile q0's rows into stage `stage`: Q and dO by cp.async, the statistics by plain loads.
  __device__ __forceinline__ void load_q_tile(int stage, int q0) const {
    load_tile_async<HS, kTileRows, kThreads>(sQ(stage), q_head, qkv_stride, q0, p.T);
    load_tile_async<HS, kTileRows, kThreads>(sdO(stage), do_head, p.C, q0, p.T);
    for (int i = threadIdx.x; i < kTileRows; i += kThreads) {
      const bool valid = q0 + i < p.T;
      s_lse(stage)[i] = valid ? p.lse[stat_base + q0 + i] * kLog2e : 0.0f;
      s_delta(stage)[i] = valid ? p.delta[stat_base + q0 + i] : 0.0f;
    }
  }
  // K, V and the first Q tile (q0) into stage 0, one cp.async group.
  __device__ __forceinline__ void start(int q0) const {
    load_tile_async<HS, kRows, kThreads>(sK, q_head + p.C, qkv_stride, k0, p.T);
    load_tile_async<HS, kRows, kThreads>(sV, q_head + 2 * p.C, qkv_stride, k0, p.T);
    load_q_tile(0, q0);
    cp_async_commit();
  }

  // The warp's products with Q tile q_tile (in `stage`): dV += P^T dO, dK += dS^T Q; dS^T is left
  // in ds as the bf16 A fragments the dK product used.
  __device__ __forceinline__ void tile_products(float (&dk)[HS / 8][4], float (&dv)[HS / 8][4],
                                                uint32_t (&ds)[kTileRows / 16][4], int q_tile, int stage) const {
    const int q0 = q_tile * kTileRows;
    const bf16* tQ = sQ(stage);
    const bf16* tdO = sdO(stage);
    const float* t_lse = s_lse(stage);
    const float* t_delta = s_delta(stage);
    float pt[kTileRows / 8][4] = {};   // S^T, then P^T
    float dst[kTileRows / 8][4] = {};  // dP^T, then dS^T
    warp_gemm_abt<HS, kTileRows>(pt, sK, warp * 16, tQ, lane);
    warp_gemm_abt<HS, kTileRows>(dst, sV, warp * 16, tdO, lane);
    const bool edge = q_tile < first_q_tile + kRows / kTileRows || q0 + kTileRows > p.T;
#pragma unroll
    for (int nb = 0; nb < kTileRows / 8; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int local = nb * 8 + 2 * quad + (e & 1), query = q0 + local;
        float prob = exp2f(pt[nb][e] * p.scale_log2 - t_lse[local]);
        if (edge && (key[e >> 1] > query || query >= p.T)) prob = 0.0f;
        pt[nb][e] = prob;
        dst[nb][e] = prob * (dst[nb][e] - t_delta[local]);
      }
    }
    to_a_fragments(ds, pt);
    warp_gemm_pb<HS>(dv, ds, tdO, lane);  // dV += P^T dO
    to_a_fragments(ds, dst);
    warp_gemm_pb<HS>(dk, ds, tQ, lane);   // dK += dS^T Q
  }

  // dK (times scale) and dV into dqkv, rows < T.
  __device__ __forceinline__ void store(const float (&dk)[HS / 8][4], const float (&dv)[HS / 8][4]) const {
    bf16* dk_head = p.dqkv + static_cast<size_t>(b) * p.T * qkv_stride + p.C + h * HS;
    const float dk_scale[2] = {p.scale, p.scale}, dv_scale[2] = {1.0f, 1.0f};
    store_rows<HS>(dk_head, qkv_stride, dk, key, dk_scale, p.T, quad);
    store_rows<HS>(dk_head + p.C, qkv_stride, dv, key, dv_scale, p.T, quad);
  }
};

template <int HS, int kRows>
__global__ void __launch_bounds__(kThreadsFor<kRows>)
    flash_attention_backward_dkdv_kernel(const FlashBackwardParams p) {
#if GPT2CC_FLASH_BELOW_SM80
  __trap();  // never launched: flash_attention.cu refuses a device below sm_80
#else
  extern __shared__ __align__(16) unsigned char smem[];
  const KeyBlock<HS, kRows> kb(p, smem, blockIdx.x, blockIdx.y);  // block 0 walks every Q tile: the longest first
  kb.start(kb.k0);

  float dk[HS / 8][4] = {};
  float dv[HS / 8][4] = {};
  for (int q_tile = kb.first_q_tile; q_tile < kb.num_q_tiles; ++q_tile) {
    const int q0 = q_tile * kTileRows, stage = (q_tile - kb.first_q_tile) & 1;
    cp_async_wait<0>();
    __syncthreads();  // Q tile q_tile (and sK, sV) landed; every warp is done with the other stage
    if (q_tile + 1 < kb.num_q_tiles) kb.load_q_tile(stage ^ 1, q0 + kTileRows);
    cp_async_commit();
    if (!kb.warp_meets(q0)) continue;
    uint32_t ds[kTileRows / 16][4];
    kb.tile_products(dk, dv, ds, q_tile, stage);
  }
  kb.store(dk, dv);
#endif
}

// ---------------------------------------------------------------------------------------------
// Backward, step 3: dQ. Grid (B*NH, ceil(T/kRows)); the CTA owns the kRows queries from q0, warp
// w its rows, and walks the K/V tiles up to its last row (as the forward, skipping the same tiles):
//   P = exp2(scale_log2 * Q K^T - log2e * lse[row]) ; dP = dO V^T ; dS = P * (dP - D[row]) ;
//   dQ += dS K (times scale at the end). Masked: key > row. Rows >= T (zero Q, dO) are never stored.
// ---------------------------------------------------------------------------------------------
template <int HS, int kRows>
__global__ void __launch_bounds__(kThreadsFor<kRows>) flash_attention_backward_dq_kernel(const FlashBackwardParams p) {
#if GPT2CC_FLASH_BELOW_SM80
  __trap();  // never launched: flash_attention.cu refuses a device below sm_80
#else
  constexpr int kThreads = kThreadsFor<kRows>;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sdO = sQ + kTileElems<HS, kRows>;
  // Stage n: K at stages + 2n tiles, V right after it (pointer arithmetic: see the forward).
  bf16* stages = sdO + kTileElems<HS, kRows>;
  const auto sK = [&](int stage) { return stages + 2 * stage * kTileElems<HS>; };
  const auto sV = [&](int stage) { return stages + (2 * stage + 1) * kTileElems<HS>; };

  const int bh = blockIdx.x, b = bh / p.NH, h = bh % p.NH;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kRows;  // the longest rows start first
  const int last_kv_tile = (min(q0 + kRows, p.T) - 1) / kTileRows;  // holds the CTA's last row < T
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, group = lane >> 2, quad = lane & 3;
  const int warp_row0 = q0 + warp * 16;
  const size_t qkv_stride = 3 * static_cast<size_t>(p.C);
  const bf16* q_head = p.qkv + static_cast<size_t>(b) * p.T * qkv_stride + h * HS;
  const size_t stat_base = static_cast<size_t>(bh) * p.T;
  const int row[2] = {warp_row0 + group, warp_row0 + group + 8};
  float lse2[2], delta[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    lse2[r] = row[r] < p.T ? p.lse[stat_base + row[r]] * kLog2e : 0.0f;
    delta[r] = row[r] < p.T ? p.delta[stat_base + row[r]] : 0.0f;
  }

  load_tile_async<HS, kRows, kThreads>(sQ, q_head, qkv_stride, q0, p.T);
  load_tile_async<HS, kRows, kThreads>(sdO, p.dout + static_cast<size_t>(b) * p.T * p.C + h * HS, p.C, q0, p.T);
  load_tile_async<HS, kTileRows, kThreads>(sK(0), q_head + p.C, qkv_stride, 0, p.T);
  load_tile_async<HS, kTileRows, kThreads>(sV(0), q_head + 2 * p.C, qkv_stride, 0, p.T);
  cp_async_commit();

  float dq[HS / 8][4] = {};
  for (int kv_tile = 0; kv_tile <= last_kv_tile; ++kv_tile) {
    const int k0 = kv_tile * kTileRows, stage = kv_tile & 1;
    cp_async_wait<0>();
    __syncthreads();  // K, V tile kv_tile (and sQ, sdO) landed; every warp is done with the other stage
    if (kv_tile < last_kv_tile) {
      load_tile_async<HS, kTileRows, kThreads>(sK(stage ^ 1), q_head + p.C, qkv_stride, k0 + kTileRows, p.T);
      load_tile_async<HS, kTileRows, kThreads>(sV(stage ^ 1), q_head + 2 * p.C, qkv_stride, k0 + kTileRows, p.T);
    }
    cp_async_commit();
    if (k0 > warp_row0 + 15) continue;  // every key after every row of this warp

    float ps[kTileRows / 8][4] = {};  // S, then dS
    float dp[kTileRows / 8][4] = {};
    warp_gemm_abt<HS, kTileRows>(ps, sQ, warp * 16, sK(stage), lane);
    warp_gemm_abt<HS, kTileRows>(dp, sdO, warp * 16, sV(stage), lane);
    const bool masked = k0 + kTileRows - 1 > warp_row0;
#pragma unroll
    for (int nb = 0; nb < kTileRows / 8; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = k0 + nb * 8 + 2 * quad + (e & 1), r = e >> 1;
        float prob = exp2f(ps[nb][e] * p.scale_log2 - lse2[r]);
        if (masked && col > row[r]) prob = 0.0f;
        ps[nb][e] = prob * (dp[nb][e] - delta[r]);
      }
    }
    uint32_t af[kTileRows / 16][4];
    to_a_fragments(af, ps);
    warp_gemm_pb<HS>(dq, af, sK(stage), lane);  // dQ += dS K
  }

  const float dq_scale[2] = {p.scale, p.scale};
  store_rows<HS>(p.dqkv + static_cast<size_t>(b) * p.T * qkv_stride + h * HS, qkv_stride, dq, row, dq_scale, p.T,
                 quad);
#endif
}


// ---------------------------------------------------------------------------------------------
// Backward, steps 2 and 3 fused (FlashBackward::kFused): dK, dV and dQ in one pass over the
// causal triangle, five matrix products per (K/V tile, Q tile) pair where the split kernels
// above make seven (both recompute S and dP). As FlashAttention-2's backward, with its atomicAdd
// of dQ replaced by sums in a fixed order, so the result stays deterministic:
//   The CTA owns kRows keys and walks the Q tiles from the LAST down to the one holding its first
//   key, computing S^T, P^T, dP^T, dS^T, dV, dK as the dK/dV kernel does; dS^T also goes to shared
//   memory (as the bf16 the dK product used), and every warp then takes a share of
//   dQ_part = dS K (64 query rows x HS; warp w: rows 16*(w%4).., columns (w/4)*kCols..).
//   Each Q tile's dQ is the sum of the parts of the K/V blocks 0..last that reach it, added in
//   that order into an fp32 running sum (p.dq_partial): block y waits until the tile's counter
//   says y blocks have added, adds (the first stores, the last writes dQ * scale as bf16 into
//   dqkv), and sets the counter to y+1. A 128-key CTA adds its two 64-key halves as two 64-key
//   CTAs would, one after the other, so both resident tiles give the same bits.
// Why it cannot hang: a CTA takes its work from a ticket counter (tickets in the order K/V block
// 0 of every head, then block 1, ...), so it only ever waits for a block with a lower ticket,
// which a CTA that is already running holds; the lowest unfinished ticket waits for nobody. Why
// descending Q tiles: every block of a head then reaches a tile after the same number of steps,
// the lower ticket usually first, so a wait is short; walking upwards, block y would reach each
// tile kRows/64 steps before block y-1 and wait that long at every tile.
// ---------------------------------------------------------------------------------------------
template <int HS, int kRows>
__global__ void __launch_bounds__(kThreadsFor<kRows>)
    flash_attention_backward_fused_kernel(const FlashBackwardParams p) {
#if GPT2CC_FLASH_BELOW_SM80
  __trap();  // never launched: flash_attention.cu refuses a device below sm_80
#else
  constexpr int kWarps = kRows / 16;
  constexpr int kCols = HS / (kWarps / 4);      // dQ columns per warp: 4 warps cover a Q tile's 64 rows
  constexpr int kSStride = kStride<kTileRows>;  // sdS rows: 64 queries + 8 bf16 of padding
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ uint32_t s_ticket;
  if (threadIdx.x == 0) s_ticket = atomic_add_global(p.dq_sync, 1u);
  __syncthreads();
  const uint32_t ticket = s_ticket;
  const int block = static_cast<int>(ticket / gridDim.x);  // the K/V block: 0 walks every Q tile
  const KeyBlock<HS, kRows> kb(p, smem, static_cast<int>(ticket % gridDim.x), block);
  // After dK/dV's layout: dS^T, kRows keys x 64 queries.
  bf16* sdS = reinterpret_cast<bf16*>(smem + KeyBlock<HS, kRows>::kSmemBytes);
  const int warp = kb.warp, lane = kb.lane, group = lane >> 2, quad = kb.quad;
  uint32_t* const tile_done = p.dq_sync + 1 + static_cast<size_t>(kb.bh) * kb.num_q_tiles;
  float* const dq_sum = p.dq_partial + kb.stat_base * HS;
  bf16* const dq_out = p.dqkv + static_cast<size_t>(kb.b) * p.T * kb.qkv_stride + kb.h * HS;
  const int dq_row0 = (warp % 4) * 16, dq_col0 = (warp / 4) * kCols;

  // The warp's share of dS (16 query rows x the 64 keys from key_base) K: A fragments from dS^T by
  // ldmatrix.trans (matrix i: keys key_base + 16kb + 8*(i/2).., queries dq_row0 + 8*(i%2)..,
  // which arrives as A's a[i]: queries in rows, keys in columns).
  const auto dq_part = [&](float (&acc)[kCols / 8][4], int key_base) {
    uint32_t a[kTileRows / 16][4];
#pragma unroll
    for (int k = 0; k < kTileRows / 16; ++k) {
      const int i = lane >> 3;
      ldmatrix_x4_trans(a[k], sdS + (key_base + k * 16 + (i >> 1) * 8 + (lane & 7)) * kSStride + dq_row0 + (i & 1) * 8);
    }
    warp_gemm_pb<HS, kCols>(acc, a, kb.sK + key_base * kStride<HS> + dq_col0, lane);
  };

  kb.start((kb.num_q_tiles - 1) * kTileRows);
  float dk[HS / 8][4] = {};
  float dv[HS / 8][4] = {};
  for (int q_tile = kb.num_q_tiles - 1; q_tile >= kb.first_q_tile; --q_tile) {
    const int q0 = q_tile * kTileRows, stage = (kb.num_q_tiles - 1 - q_tile) & 1;
    cp_async_wait<0>();
    __syncthreads();  // Q tile q_tile (and sK, sV) landed; every warp is done with the other stage and sdS
    if (q_tile > kb.first_q_tile) kb.load_q_tile(stage ^ 1, q0 - kTileRows);
    cp_async_commit();

    if (kb.warp_meets(q0)) {
      uint32_t ds[kTileRows / 16][4];
      kb.tile_products(dk, dv, ds, q_tile, stage);
      // dS^T to shared memory: ds[k] holds rows (keys) group / group+8, columns (queries)
      // 16k + 2*quad.. and 16k + 8 + 2*quad.. (see to_a_fragments), two bf16 per 32-bit word.
      uint32_t* rows[2] = {reinterpret_cast<uint32_t*>(sdS + (warp * 16 + group) * kSStride),
                           reinterpret_cast<uint32_t*>(sdS + (warp * 16 + group + 8) * kSStride)};
#pragma unroll
      for (int k = 0; k < kTileRows / 16; ++k) {
        rows[0][8 * k + quad] = ds[k][0];
        rows[1][8 * k + quad] = ds[k][1];
        rows[0][8 * k + 4 + quad] = ds[k][2];
        rows[1][8 * k + 4 + quad] = ds[k][3];
      }
    }
    __syncthreads();  // sdS holds dS^T of every warp that has keys at or before the tile's last query

    // This CTA's part of the tile's dQ, per 64-key half. The second half of a 128-key CTA meets
    // the tile only if its first key is at or before the tile's first query (keys and tiles are
    // 64-aligned, so a half is wholly in or wholly masked).
    const bool second_half = kRows == 2 * kTileRows && kb.k0 + kTileRows <= q0;
    float part0[kCols / 8][4] = {};
    float part1[kCols / 8][4] = {};
    dq_part(part0, 0);
    if (second_half) dq_part(part1, kTileRows);

    // Add it to the tile's running sum after blocks 0..block-1, in that order.
    const int last_block = (min(q0 + kTileRows, p.T) - 1) / kRows;  // holds the tile's last query
    if (block > 0) {
      if (threadIdx.x == 0) wait_until_equal(&tile_done[q_tile], static_cast<uint32_t>(block));
      __syncthreads();  // every thread's loads below come after the acquire
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = q0 + dq_row0 + group + 8 * r;
      if (row >= p.T) continue;
      float* sum_row = dq_sum + static_cast<size_t>(row) * HS + dq_col0 + 2 * quad;
      bf16* out_row = dq_out + static_cast<size_t>(row) * kb.qkv_stride + dq_col0 + 2 * quad;
#pragma unroll
      for (int nb = 0; nb < kCols / 8; ++nb) {
        float2 v = make_float2(part0[nb][2 * r], part0[nb][2 * r + 1]);
        if (block > 0) {
          const float2 before = load_l2(sum_row + nb * 8);
          v = make_float2(before.x + v.x, before.y + v.y);
        }
        if (second_half) v = make_float2(v.x + part1[nb][2 * r], v.y + part1[nb][2 * r + 1]);
        if (block == last_block)
          *reinterpret_cast<__nv_bfloat162*>(out_row + nb * 8) = __floats2bfloat162_rn(v.x * p.scale, v.y * p.scale);
        else store_l2(sum_row + nb * 8, v);
      }
    }
    if (block < last_block) {
      fence_gpu();
      __syncthreads();  // every thread's stores are visible device-wide before the flag moves on
      if (threadIdx.x == 0) store_release(&tile_done[q_tile], static_cast<uint32_t>(block + 1));
    }
  }
  kb.store(dk, dv);
#endif
}

// ---------------------------------------------------------------------------------------------
// Launch geometry and parameters, one instantiation per head size: used by the launchers in
// flash_attention.cu and by the emulator, so both run the kernels on the same grid.
// ---------------------------------------------------------------------------------------------
// Shared memory: the resident tiles (kRows x (HS+8) bf16 each) plus two stages of the streamed
// ones (64 x (HS+8) bf16 each: 9 KiB at HS 64, 17 KiB at HS 128). Forward Q + 2 x (K, V); dK/dV
// K, V + 2 x (Q, dO, 64 lse + 64 delta); dQ Q, dO + 2 x (K, V); fused: dK/dV's and dS^T (kRows x
// 72 bf16). In KiB, kRows 64 / 128: HS 64: 45 / 54, 55 / 73, 54 / 72, 64 / 91; HS 128: 85 / 102,
// 103 / 137, 102 / 136, 112 / 155.
template <int HS, int kRows>
constexpr size_t kForwardSmem = (kTileElems<HS, kRows> + 4 * kTileElems<HS>) * sizeof(bf16);
template <int HS, int kRows>
constexpr size_t kBackwardDkdvSmem = KeyBlock<HS, kRows>::kSmemBytes;
template <int HS, int kRows>
constexpr size_t kBackwardDqSmem = (2 * kTileElems<HS, kRows> + 4 * kTileElems<HS>) * sizeof(bf16);
template <int HS, int kRows>
constexpr size_t kBackwardFusedSmem = kBackwardDkdvSmem<HS, kRows> + kTileElems<kTileRows, kRows> * sizeof(bf16);
// The fused kernel's static shared memory: its 4-byte ticket, s_ticket, which ptxas lays out in 16
// bytes (the dynamic buffer behind it is 16-byte aligned). The other kernels have none. A block
// needs dynamic + static within the device's opt-in limit; CTest cuda_kernel_static_smem checks
// this figure against ptxas, and the launcher against cudaFuncGetAttributes on the GPU.
constexpr size_t kBackwardFusedStaticSmem = 16;
constexpr int kDeltaThreads = 256;  // 32 rows of 8 lanes

struct LaunchShape {
  dim3 grid, block;
  size_t smem_bytes;  // dynamic shared memory
};

// Which resident tile the launchers take when not told: 128 rows, unless its grid of
// B*NH*ceil(T/128) CTAs would leave some of the device's SMs without one; then 64 (twice the CTAs).
// A rule from the traffic argument at the top, not yet from a measurement.
inline int default_tile_rows(int B, int T, int NH, int sm_count) {
  const long long ctas = static_cast<long long>(B) * NH * ((T + 127) / 128);
  return ctas >= sm_count ? 128 : 64;
}

// Calls f.template operator()<HS, kRows>() for a run-time head size (64 or 128) and resident tile
// (64 or 128 rows): the four compiled combinations, for the launchers and the emulator alike.
template <class F>
void dispatch(int HS, int tile_rows, F&& f) {
  if (HS == 64) tile_rows == 128 ? f.template operator()<64, 128>() : f.template operator()<64, 64>();
  else tile_rows == 128 ? f.template operator()<128, 128>() : f.template operator()<128, 64>();
}

// The forward and the backward kernels: grid (B*NH, ceil(T/kRows)), one CTA per (head, tile).
template <int kRows>
dim3 tile_grid(int B, int T, int NH) {
  return dim3(B * NH, (T + kRows - 1) / kRows);
}

template <int HS, int kRows>
LaunchShape forward_launch(int B, int T, int NH) {
  return {tile_grid<kRows>(B, T, NH), dim3(kThreadsFor<kRows>), kForwardSmem<HS, kRows>};
}
template <int HS, int kRows>
LaunchShape backward_dkdv_launch(int B, int T, int NH) {
  return {tile_grid<kRows>(B, T, NH), dim3(kThreadsFor<kRows>), kBackwardDkdvSmem<HS, kRows>};
}
template <int HS, int kRows>
LaunchShape backward_dq_launch(int B, int T, int NH) {
  return {tile_grid<kRows>(B, T, NH), dim3(kThreadsFor<kRows>), kBackwardDqSmem<HS, kRows>};
}
// The fused kernel's grid has the same shape; its CTAs take their (head, K/V block) by ticket.
template <int HS, int kRows>
LaunchShape backward_fused_launch(int B, int T, int NH) {
  return {tile_grid<kRows>(B, T, NH), dim3(kThreadsFor<kRows>), kBackwardFusedSmem<HS, kRows>};
}
// The fused kernel's scratch: dQ's fp32 running sums and its counters (zeroed before each launch).
inline size_t fused_partial_floats(int B, int T, int C) { return static_cast<size_t>(B) * T * C; }
inline size_t fused_sync_words(int B, int T, int NH) {
  return 1 + static_cast<size_t>(B) * NH * ((T + kTileRows - 1) / kTileRows);
}
// The delta kernel: 8 lanes per (b,t,h) row, kDeltaThreads per block.
inline LaunchShape delta_launch(int B, int T, int NH) {
  const size_t lanes = static_cast<size_t>(B) * T * NH * 8;
  return {dim3(static_cast<unsigned>((lanes + kDeltaThreads - 1) / kDeltaThreads)), dim3(kDeltaThreads), 0};
}

inline FlashForwardParams forward_params(bf16* out, float* lse, const bf16* qkv, int T, int C, int NH) {
  return {out, lse, qkv, T, C, NH, kLog2e / std::sqrt(static_cast<float>(C / NH))};
}
// scale_log2 by the forward's exact expression, so P is recomputed with the same scale bit for bit.
// dq_partial and dq_sync: the fused kernel's scratch (null for the split kernels).
inline FlashBackwardParams backward_params(bf16* dqkv, const bf16* dout, const float* lse, const float* delta,
                                           const bf16* qkv, int T, int C, int NH, float* dq_partial = nullptr,
                                           uint32_t* dq_sync = nullptr) {
  const float hs = static_cast<float>(C / NH);
  return {dqkv, dout, lse, delta, qkv, T, C, NH, 1.0f / std::sqrt(hs), kLog2e / std::sqrt(hs),
          dq_partial, dq_sync};
}

}  // namespace gpt2cc::cuda::flash
