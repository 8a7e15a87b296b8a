// Device code of LayerNorm forward and backward (kernels/layernorm.cuh; mirrors
// cpu/layernorm.cpp), float and bf16, and of the fused residual + LayerNorm forward:
//   out = (x - mean) * rstd * weight + bias, rstd = 1/sqrt(var + 1e-5), x = inp (or inp1 + inp2)
//   dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight ; dweight += sum dout*xhat,
//   dbias += sum dout over all rows, in a fixed order (deterministic).
// One warp per row: C is at most a few thousand, so a warp striding over the channels keeps the
// loads coalesced and reduces with shuffles. The parameter gradients are column sums: each block
// sums a fixed slice of rows into a partial, a second kernel adds the partials in slice order
// (the fused backward: during its one pass over the rows; the two-pass one: in a second pass).
// bf16: statistics and sums in float, one rounding per stored element. Included by
// kernels/layernorm.cu (the launchers; tests/emu/hostcuda compiles it as host C++ for the CPU
// emulator), with the launch geometry and branch choices at the end.
#pragma once

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "kernels/column_sum_device.cuh"
#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda::layernorm_kernels {

constexpr float kEps = 1e-5f;
constexpr int kRowsPerBlock = 8;  // warps per block in the warp-per-row kernels
// Shared memory for the cached rows: the default per-block limit, so no opt-in attribute is needed.
constexpr size_t kMaxRowCacheBytes = 48 * 1024;

// The dynamic shared memory of every kernel here (the forward's row cache, the fused backward's
// per-warp sums): one array, as a file's kernels may declare only one (tests/emu/hostcuda).
extern __shared__ float shared_floats[];

// mean = sum_c x_c / C ; var = sum_c (x_c - mean)^2 / C ; rstd = 1/sqrt(var + eps)
// out_c = (x_c - mean) * rstd * weight_c + bias_c. Two passes over the row (the second reads it
// from L1) instead of E[x^2] - mean^2, which cancels badly when |mean| >> std.
template <class Elem>
__global__ void layernorm_forward_warp_per_row_kernel(Elem* out, float* mean, float* rstd, const Elem* inp,
                                                      const Elem* weight, const Elem* bias, int rows, int C) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= rows) return;
  const Elem* x = inp + static_cast<size_t>(row) * C;
  Elem* y = out + static_cast<size_t>(row) * C;
  float sum = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) sum += to_float(x[c]);
  const float m = warp_sum(sum) / C;
  float sq = 0.0f;
  for (int c = lane; c < C; c += kWarpSize) {
    const float d = to_float(x[c]) - m;
    sq += d * d;
  }
  const float s = rsqrtf(warp_sum(sq) / C + kEps);
  for (int c = lane; c < C; c += kWarpSize) {
    y[c] = from_float<Elem>((to_float(x[c]) - m) * s * to_float(weight[c]) + to_float(bias[c]));
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

// Arguments of the cached-row forward (plain LayerNorm: inp2 and residual are null).
template <class Elem>
struct LayerNormForwardParams {
  Elem* residual;      // (rows, C) fused only: inp1 + inp2, stored
  Elem* out;           // (rows, C)
  float* mean;         // (rows)
  float* rstd;         // (rows)
  const Elem* inp1;    // (rows, C) the LayerNorm input, or the first residual operand
  const Elem* inp2;    // (rows, C) fused only: the second residual operand
  const Elem* weight;  // (C)
  const Elem* bias;    // (C)
  int rows, C;
  int cache_floats;    // floats of shared memory per warp: ceil(C / (32 kWidth)) * 32 kWidth
};

// x = inp1 (+ inp2, stored to residual and re-read as its stored value, rounded for bf16, so the
// statistics describe exactly the tensor a later layernorm_backward gets), then
// mean = sum_c x_c / C ; var = sum_c (x_c - mean)^2 / C ; rstd = 1/sqrt(var + eps)
// out_c = (x_c - mean) * rstd * weight_c + bias_c.
// One warp per row; the row is read from global memory ONCE and kept in shared memory for the
// variance and output passes (two-pass variance: E[x^2] - mean^2 cancels when |mean| >> std).
// Why the cache layout [pack j][element k][lane]: each lane re-reads only its own values, and with
// the lane index fastest the 32 lanes hit 32 different banks (a row-major copy of a 16-byte pack
// per lane would be an 8-way bank conflict).
template <class Elem, int kWidth, bool kWithResidual>
__global__ void layernorm_forward_cached_row_kernel(LayerNormForwardParams<Elem> p) {
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int row = blockIdx.x * (blockDim.x / kWarpSize) + warp;
  if (row >= p.rows) return;
  float* cache = shared_floats + static_cast<size_t>(warp) * p.cache_floats;
  const size_t offset = static_cast<size_t>(row) * p.C;
  const int C = p.C;

  float sum = 0.0f;
  for (int c = lane * kWidth, j = 0; c < C; c += kWarpSize * kWidth, ++j) {
    float x[kWidth];
    load_floats(x, p.inp1 + offset + c);
    if constexpr (kWithResidual) {
      float y[kWidth];
      load_floats(y, p.inp2 + offset + c);
#pragma unroll
      for (int k = 0; k < kWidth; ++k) x[k] = to_float(from_float<Elem>(x[k] + y[k]));
      store_floats(p.residual + offset + c, x);
    }
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      cache[(j * kWidth + k) * kWarpSize + lane] = x[k];
      sum += x[k];
    }
  }
  const float m = warp_sum(sum) / C;
  float sq = 0.0f;
  for (int c = lane * kWidth, j = 0; c < C; c += kWarpSize * kWidth, ++j) {
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      const float d = cache[(j * kWidth + k) * kWarpSize + lane] - m;
      sq += d * d;
    }
  }
  const float s = rsqrtf(warp_sum(sq) / C + kEps);
  for (int c = lane * kWidth, j = 0; c < C; c += kWarpSize * kWidth, ++j) {
    float w[kWidth], b[kWidth], y[kWidth];
    load_floats(w, p.weight + c);
    load_floats(b, p.bias + c);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) y[k] = (cache[(j * kWidth + k) * kWarpSize + lane] - m) * s * w[k] + b[k];
    store_floats(p.out + offset + c, y);
  }
  if (lane == 0) {
    p.mean[row] = m;
    p.rstd[row] = s;
  }
}

// g_c = dout_c * weight_c ; dx_c += rstd * (g_c - mean(g) - xhat_c * mean(g * xhat))
// (from dL/dx of y = g-weighted xhat: the mean and variance both depend on every x_c). Lane l
// handles the packs of kWidth channels starting at c = kWidth (l + 32 j); kWidth = 1 is the plain
// strided loop, kWidth = 16 / sizeof(Elem) moves 16 bytes per load (C % kWidth == 0, aligned).
template <class Elem, int kWidth>
__global__ void layernorm_backward_dinp_warp_per_row_kernel(Elem* dinp, const Elem* dout, const float* mean,
                                                            const float* rstd, const Elem* inp, const Elem* weight,
                                                            int rows, int C) {
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= rows) return;
  const Elem* dy = dout + static_cast<size_t>(row) * C;
  const Elem* x = inp + static_cast<size_t>(row) * C;
  Elem* dx = dinp + static_cast<size_t>(row) * C;
  const float m = mean[row], s = rstd[row];
  float g_sum = 0.0f, gx_sum = 0.0f;
  for (int c = lane * kWidth; c < C; c += kWarpSize * kWidth) {
    float dyv[kWidth], wv[kWidth], xv[kWidth];
    load_floats(dyv, dy + c);
    load_floats(wv, weight + c);
    load_floats(xv, x + c);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      const float g = dyv[k] * wv[k];
      g_sum += g;
      gx_sum += g * (xv[k] - m) * s;
    }
  }
  const float g_mean = warp_sum(g_sum) / C;
  const float gx_mean = warp_sum(gx_sum) / C;
  for (int c = lane * kWidth; c < C; c += kWarpSize * kWidth) {
    float dyv[kWidth], wv[kWidth], xv[kWidth], dxv[kWidth];
    load_floats(dyv, dy + c);
    load_floats(wv, weight + c);
    load_floats(xv, x + c);
    load_floats(dxv, dx + c);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      const float xhat = (xv[k] - m) * s;
      const float g = dyv[k] * wv[k];
      dxv[k] = dxv[k] + s * (g - g_mean - xhat * gx_mean);
    }
    store_floats(dx + c, dxv);
  }
}

// Partial column sums over one slice of rows: partial_dw[slice, c] = sum_rows dout*xhat,
// partial_db[slice, c] = sum_rows dout. Grid (ceil(C / blockDim), slices); thread = channel,
// so consecutive threads read consecutive addresses of each row.
template <class Elem>
__global__ void layernorm_backward_param_partials_kernel(float* partial_dw, float* partial_db, const Elem* dout,
                                                         const float* mean, const float* rstd, const Elem* inp,
                                                         int rows, int C, int rows_per_slice) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int r0 = blockIdx.y * rows_per_slice, r1 = min(rows, r0 + rows_per_slice);
  float dw = 0.0f, db = 0.0f;
  for (int r = r0; r < r1; ++r) {
    const float dy = to_float(dout[static_cast<size_t>(r) * C + c]);
    dw += dy * (to_float(inp[static_cast<size_t>(r) * C + c]) - mean[r]) * rstd[r];
    db += dy;
  }
  partial_dw[static_cast<size_t>(blockIdx.y) * C + c] = dw;
  partial_db[static_cast<size_t>(blockIdx.y) * C + c] = db;
}

// dweight_c += sum_slices partial_dw[slice, c] (slice order); same for dbias. Grad: the element
// type, or float (fp32 gradients of a bf16 model).
template <class Grad>
__global__ void layernorm_backward_param_finalize_kernel(Grad* dweight, Grad* dbias, const float* partial_dw,
                                                         const float* partial_db, int slices, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float dw = 0.0f, db = 0.0f;
  for (int s = 0; s < slices; ++s) {
    dw += partial_dw[static_cast<size_t>(s) * C + c];
    db += partial_db[static_cast<size_t>(s) * C + c];
  }
  dweight[c] = from_float<Grad>(to_float(dweight[c]) + dw);
  dbias[c] = from_float<Grad>(to_float(dbias[c]) + db);
}

// ---- The fused backward: dinp and the CTA's parameter-gradient partials in one pass ----

constexpr int kFusedWarps = 8;  // warps (rows at a time) per CTA; a power of two (the tree sum)
// 16-byte packs a lane keeps in registers per row: C <= 32 lanes * kFusedMaxPacks * kPack128, so
// C <= 1024 (bf16: 4 packs of 8, float: 8 packs of 4); 32 channels a lane.
template <class Elem>
inline constexpr int kFusedMaxPacks = 32 / kPack128<Elem>;
// CTAs per SM the kernel is compiled for (__launch_bounds__) and launched with (one wave): 2 up to
// 24 channels a lane (C <= 768), where ptxas fits it in 128 registers a thread (2 x 256 threads
// fill the 64 K registers of an SM) with no spills; beyond that 1 (up to 255 registers: the
// channels' dweight / dbias sums alone take 64).
template <class Elem>
constexpr int fused_ctas_per_sm(int packs) {
  return packs * kPack128<Elem> <= 24 ? 2 : 1;
}

// Arguments of the fused backward.
template <class Elem>
struct LayerNormBackwardParams {
  Elem* dinp;              // (rows, C) accumulated: dinp += dx
  float* partial_dweight;  // (CTAs, C) written: each CTA's sum over its rows of dout * xhat
  float* partial_dbias;    // (CTAs, C) written: each CTA's sum over its rows of dout
  const Elem* dout;        // (rows, C)
  const float* mean;       // (rows)
  const float* rstd;       // (rows)
  const Elem* inp;         // (rows, C)
  const Elem* weight;      // (C)
  int rows, C;
  int rows_per_cta;  // CTA b owns rows [b rows_per_cta, min(rows, (b + 1) rows_per_cta))
};

// dx_c += rstd * (g_c - mean(g) - xhat_c * mean(g * xhat)), g = dout * weight, with the
// expressions and the summation order of the two-pass kernel's 16-byte loop (the same dinp, up to
// where a compiler contracts a product and a sum into an FMA in one kernel and not the other);
// in the same pass, for the CTA's rows: dweight_c += dout_c * xhat_c, dbias_c += dout_c.
// Why one pass: the two-pass design reads dout and inp twice (per row for dinp, per column for the
// parameter sums). Here warp w takes rows r0 + w, r0 + w + 8, ... of its CTA's slice; each lane
// holds its kPacks 16-byte packs of dout and inp in registers (raw, 2 channels a register for
// bf16) through the row's two reductions, and its channels' dweight / dbias sums in registers
// across the rows: a lane always owns channels c = kWidth (lane + 32 j) + k, so no two threads
// add into one sum. At the end the warps' sums meet in a fixed tree through shared memory (warp w
// adds warp w + 4's, then w + 2's, then w + 1's; layout [slot][value][lane]: the lanes hit 32
// different banks) and warp 0 writes the CTA's partial; a second kernel adds the partials.
template <class Elem, int kPacks>
__global__ void __launch_bounds__(kFusedWarps * kWarpSize, fused_ctas_per_sm<Elem>(kPacks))
    layernorm_backward_fused_kernel(const LayerNormBackwardParams<Elem> p) {
  constexpr int kWidth = kPack128<Elem>;
  using Row = Pack128<Elem>;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int C = p.C;
  const int r0 = blockIdx.x * p.rows_per_cta, r1 = min(p.rows, r0 + p.rows_per_cta);
  float dw[kPacks][kWidth] = {}, db[kPacks][kWidth] = {};
  for (int row = r0 + warp; row < r1; row += kFusedWarps) {
    const size_t offset = static_cast<size_t>(row) * C;
    const float m = p.mean[row], s = p.rstd[row];
    Row dy[kPacks] = {}, x[kPacks] = {};
#pragma unroll
    for (int j = 0; j < kPacks; ++j) {
      const int c = (lane + j * kWarpSize) * kWidth;
      if (c < C) {
        dy[j] = *reinterpret_cast<const Row*>(p.dout + offset + c);
        x[j] = *reinterpret_cast<const Row*>(p.inp + offset + c);
      }
    }
    float g_sum = 0.0f, gx_sum = 0.0f;
#pragma unroll
    for (int j = 0; j < kPacks; ++j) {
      const int c = (lane + j * kWarpSize) * kWidth;
      if (c >= C) continue;
      float w[kWidth];
      load_floats(w, p.weight + c);
#pragma unroll
      for (int k = 0; k < kWidth; ++k) {
        const float g = to_float(dy[j].v[k]) * w[k];
        g_sum += g;
        gx_sum += g * (to_float(x[j].v[k]) - m) * s;
      }
    }
    const float g_mean = warp_sum(g_sum) / C;
    const float gx_mean = warp_sum(gx_sum) / C;
#pragma unroll
    for (int j = 0; j < kPacks; ++j) {
      const int c = (lane + j * kWarpSize) * kWidth;
      if (c >= C) continue;
      float w[kWidth], dx[kWidth];
      load_floats(w, p.weight + c);
      load_floats(dx, p.dinp + offset + c);
#pragma unroll
      for (int k = 0; k < kWidth; ++k) {
        const float dyk = to_float(dy[j].v[k]);
        const float xhat = (to_float(x[j].v[k]) - m) * s;
        const float g = dyk * w[k];
        dx[k] = dx[k] + s * (g - g_mean - xhat * gx_mean);
        dw[j][k] += dyk * xhat;
        db[j][k] += dyk;
      }
      store_floats(p.dinp + offset + c, dx);
    }
  }

  // The tree over the warps: slot i (2 kPacks kWidth values per lane) carries warp half + i's sums.
  constexpr int kSlotFloats = 2 * kPacks * kWidth * kWarpSize;
#pragma unroll
  for (int half = kFusedWarps / 2; half > 0; half /= 2) {
    float* slot = shared_floats + (warp % half) * kSlotFloats + lane;
    if (warp >= half && warp < 2 * half) {
#pragma unroll
      for (int j = 0; j < kPacks; ++j) {
#pragma unroll
        for (int k = 0; k < kWidth; ++k) {
          slot[(2 * (j * kWidth + k)) * kWarpSize] = dw[j][k];
          slot[(2 * (j * kWidth + k) + 1) * kWarpSize] = db[j][k];
        }
      }
    }
    __syncthreads();
    if (warp < half) {
#pragma unroll
      for (int j = 0; j < kPacks; ++j) {
#pragma unroll
        for (int k = 0; k < kWidth; ++k) {
          dw[j][k] += slot[(2 * (j * kWidth + k)) * kWarpSize];
          db[j][k] += slot[(2 * (j * kWidth + k) + 1) * kWarpSize];
        }
      }
    }
    __syncthreads();  // the slots are written again by the next level
  }
  if (warp != 0) return;
  const size_t partial = static_cast<size_t>(blockIdx.x) * C;
#pragma unroll
  for (int j = 0; j < kPacks; ++j) {
    const int c = (lane + j * kWarpSize) * kWidth;
    if (c >= C) continue;
    store_floats(p.partial_dweight + partial + c, dw[j]);
    store_floats(p.partial_dbias + partial + c, db[j]);
  }
}

// ---------------------------------------------------------------------------------------------
// Launch geometry and branch choices: used by the launchers in layernorm.cu.
// ---------------------------------------------------------------------------------------------

// The warp-per-row kernels (uncached forward, backward dinp): kRowsPerBlock rows per block.
inline LaunchShape warp_per_row_launch(int rows) {
  return {dim3(static_cast<unsigned>(ceil_div(rows, kRowsPerBlock))), dim3(kRowsPerBlock * kWarpSize)};
}

// The cached-row forward for one shape: whether a row fits the cache (else the caller falls back
// to uncached kernels), whether it moves 16-byte packs, the cache per warp and the grid.
struct CachedRowLaunch {
  bool fits;
  bool packed;
  int cache_floats;
  LaunchShape shape;
};

// A row fits when one warp's cache (C rounded up to whole packs of all 32 lanes) is at most
// kMaxRowCacheBytes (C <= 12288). The 16-byte packed variant needs C % 8 (bf16) / C % 4 (float)
// == 0 and every pointer aligned. As many rows per block as fit, up to kRowsPerBlock.
template <bool kWithResidual, class Elem>
CachedRowLaunch cached_row_launch(const LayerNormForwardParams<Elem>& p) {
  constexpr int kVec = kPack128<Elem>;
  const bool packed = p.C % kVec == 0 && is_aligned16(p.out) && is_aligned16(p.inp1) && is_aligned16(p.weight) &&
                      is_aligned16(p.bias) && (!kWithResidual || (is_aligned16(p.inp2) && is_aligned16(p.residual)));
  const int width = packed ? kVec : 1;
  const int cache_floats = ceil_div(p.C, kWarpSize * width) * kWarpSize * width;
  const size_t row_bytes = static_cast<size_t>(cache_floats) * sizeof(float);
  const int rows_per_block = static_cast<int>(std::min<size_t>(kRowsPerBlock, kMaxRowCacheBytes / row_bytes));
  if (rows_per_block == 0) return {false, packed, cache_floats, {}};
  const LaunchShape shape{dim3(static_cast<unsigned>(ceil_div(p.rows, rows_per_block))),
                          dim3(rows_per_block * kWarpSize), rows_per_block * row_bytes};
  return {true, packed, cache_floats, shape};
}

// Does the backward's dinp kernel move 16-byte packs? The bf16 launcher's choice (C % 8 == 0,
// pointers aligned); fp32 keeps its scalar loop, whose summation order its 1e-5 CPU tests were
// written against.
template <class Elem>
bool backward_dinp_packed(int C, const void* dinp, const void* dout, const void* inp, const void* weight) {
  if constexpr (std::is_same_v<Elem, float>) {
    return false;
  } else {
    return C % kPack128<Elem> == 0 && is_aligned16(dinp) && is_aligned16(dout) && is_aligned16(inp) &&
           is_aligned16(weight);
  }
}

// The parameter-gradient passes: rows_per_slice rows per partial, slices partials of C floats
// each for dweight and for dbias; partials grid (ceil(C / 256), slices), finalize ceil(C / 256).
// The slice count depends only on the shape (never on the device), so the summation order and
// therefore the bits are the same everywhere. ~64 slices fill the GPU for GPT-2 shapes
// (C = 768 -> 3 x 64 blocks) while the finalize pass stays short.
struct BackwardParamLaunch {
  int rows_per_slice;
  int slices;
  LaunchShape partials, finalize;
};

inline BackwardParamLaunch backward_param_launch(int rows, int C) {
  constexpr int kBlock = 256;
  const int rows_per_slice = std::max(1, ceil_div(rows, 64));
  const int slices = ceil_div(rows, rows_per_slice);
  const dim3 columns(static_cast<unsigned>(ceil_div(C, kBlock)));
  return {rows_per_slice, slices, {dim3(columns.x, static_cast<unsigned>(slices)), dim3(kBlock)},
          {columns, dim3(kBlock)}};
}

// The fused backward for one shape: whether it takes the shape (C a multiple of the pack, at most
// kFusedMaxPacks packs per lane, the four pointers 16-byte aligned; else the two-pass kernels),
// its packs per lane, and its partition: at most kFusedMaxCtas CTAs of kFusedWarps warps (the
// fewer CTAs, the fewer partial sums to add), each owning rows_per_cta consecutive rows. 264 is
// one wave of fused_ctas_per_sm = 2 on the 132 SMs of an H100 / H200 (two at C > 768); other GPUs
// take more or fewer waves. The partition, and so the summation order of dweight / dbias, is the
// shape's alone: the same bits on every run and every GPU.
inline constexpr int kFusedMaxCtas = 264;
struct FusedBackwardLaunch {
  bool fits;
  int packs;
  int rows_per_cta;
  int ctas;  // partial sums: ctas x C floats for dweight and as many for dbias
  LaunchShape fused;
};

template <class Elem>
FusedBackwardLaunch fused_backward_launch(int rows, int C, bool aligned) {
  constexpr int kWidth = kPack128<Elem>;
  const int packs = ceil_div(C, kWarpSize * kWidth);
  if (C % kWidth != 0 || packs > kFusedMaxPacks<Elem> || !aligned) return {false, packs, 0, 0, {}};
  const int ctas_wanted = std::min(kFusedMaxCtas, ceil_div(rows, kFusedWarps));
  const int rows_per_cta = ceil_div(rows, ctas_wanted);
  const int ctas = ceil_div(rows, rows_per_cta);
  const size_t smem = static_cast<size_t>(kFusedWarps / 2) * 2 * packs * kWidth * kWarpSize * sizeof(float);
  return {true,
          packs,
          rows_per_cta,
          ctas,
          {dim3(static_cast<unsigned>(ctas)), dim3(kFusedWarps * kWarpSize), smem}};
}

}  // namespace gpt2cc::cuda::layernorm_kernels
