// Device code of LayerNorm forward and backward (kernels/layernorm.cuh; mirrors
// cpu/layernorm.cpp), float and bf16, and of the fused residual + LayerNorm forward:
//   out = (x - mean) * rstd * weight + bias, rstd = 1/sqrt(var + 1e-5), x = inp (or inp1 + inp2)
//   dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight ; dweight += sum dout*xhat,
//   dbias += sum dout over all rows, in a fixed order (deterministic).
// One warp per row: C is at most a few thousand, so a warp striding over the channels keeps the
// loads coalesced and reduces with shuffles. The parameter gradients are column sums: each block
// sums a fixed slice of rows into a partial, a second kernel adds the partials in slice order.
// bf16: statistics and sums in float, one rounding per stored element. Included by
// kernels/layernorm.cu (the launchers; tests/emu/hostcuda compiles it as host C++ for the CPU
// emulator), with the launch geometry and branch choices at the end.
#pragma once

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda::layernorm_kernels {

constexpr float kEps = 1e-5f;
constexpr int kRowsPerBlock = 8;  // warps per block in the warp-per-row kernels
// Shared memory for the cached rows: the default per-block limit, so no opt-in attribute is needed.
constexpr size_t kMaxRowCacheBytes = 48 * 1024;

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
template <class Elem, int kWidth, bool kFused>
__global__ void layernorm_forward_cached_row_kernel(LayerNormForwardParams<Elem> p) {
  extern __shared__ float row_cache[];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int row = blockIdx.x * (blockDim.x / kWarpSize) + warp;
  if (row >= p.rows) return;
  float* cache = row_cache + static_cast<size_t>(warp) * p.cache_floats;
  const size_t offset = static_cast<size_t>(row) * p.C;
  const int C = p.C;

  float sum = 0.0f;
  for (int c = lane * kWidth, j = 0; c < C; c += kWarpSize * kWidth, ++j) {
    float x[kWidth];
    load_floats(x, p.inp1 + offset + c);
    if constexpr (kFused) {
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

// dweight_c += sum_slices partial_dw[slice, c] (slice order); same for dbias.
template <class Elem>
__global__ void layernorm_backward_param_finalize_kernel(Elem* dweight, Elem* dbias, const float* partial_dw,
                                                         const float* partial_db, int slices, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float dw = 0.0f, db = 0.0f;
  for (int s = 0; s < slices; ++s) {
    dw += partial_dw[static_cast<size_t>(s) * C + c];
    db += partial_db[static_cast<size_t>(s) * C + c];
  }
  dweight[c] = from_float<Elem>(to_float(dweight[c]) + dw);
  dbias[c] = from_float<Elem>(to_float(dbias[c]) + db);
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
template <bool kFused, class Elem>
CachedRowLaunch cached_row_launch(const LayerNormForwardParams<Elem>& p) {
  constexpr int kVec = kPack128<Elem>;
  const bool packed = p.C % kVec == 0 && is_aligned16(p.out) && is_aligned16(p.inp1) && is_aligned16(p.weight) &&
                      is_aligned16(p.bias) && (!kFused || (is_aligned16(p.inp2) && is_aligned16(p.residual)));
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

}  // namespace gpt2cc::cuda::layernorm_kernels
