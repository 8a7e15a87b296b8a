// LayerNorm forward and backward (kernels/layernorm.cuh; mirrors cpu/layernorm.cpp), float and
// bf16, and the fused residual + LayerNorm forward. One warp per row: C is at most a few thousand,
// so a warp striding over the channels keeps the loads coalesced and reduces with shuffles. The
// parameter gradients are column sums over all B*T rows: each block sums a fixed slice of rows
// into a partial, and a second kernel adds the partials in slice order, so the result is the same
// bits on every run. bf16: statistics and sums in float, one rounding per stored element.
#include <algorithm>

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/layernorm.cuh"
#include "kernels/residual.cuh"

namespace gpt2cc::cuda {
namespace {

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

// Launches the cached-row forward for this shape, or returns false when one row does not fit
// in kMaxRowCacheBytes of shared memory (C > 12288; the caller falls back to uncached kernels).
// The 16-byte packed variant needs C % 8 (bf16) / C % 4 (float) == 0 and every pointer aligned.
template <bool kFused, class Elem>
bool launch_cached_row_forward(LayerNormForwardParams<Elem> p, cudaStream_t stream) {
  constexpr int kVec = kPack128<Elem>;
  const bool packed = p.C % kVec == 0 && is_aligned16(p.out) && is_aligned16(p.inp1) && is_aligned16(p.weight) &&
                      is_aligned16(p.bias) && (!kFused || (is_aligned16(p.inp2) && is_aligned16(p.residual)));
  const int width = packed ? kVec : 1;
  p.cache_floats = ceil_div(p.C, kWarpSize * width) * kWarpSize * width;
  const size_t row_bytes = static_cast<size_t>(p.cache_floats) * sizeof(float);
  const int rows_per_block = static_cast<int>(std::min<size_t>(kRowsPerBlock, kMaxRowCacheBytes / row_bytes));
  if (rows_per_block == 0) return false;
  const int blocks = ceil_div(p.rows, rows_per_block);
  const size_t shared = rows_per_block * row_bytes;
  if (packed) {
    layernorm_forward_cached_row_kernel<Elem, kVec, kFused><<<blocks, rows_per_block * kWarpSize, shared, stream>>>(p);
  } else {
    layernorm_forward_cached_row_kernel<Elem, 1, kFused><<<blocks, rows_per_block * kWarpSize, shared, stream>>>(p);
  }
  CUDA_CHECK_LAUNCH();
  return true;
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int B, int T, int C, cudaStream_t stream) {
  const int rows = B * T;
  if (rows == 0) return;
  ENSURE(C >= 1, "layernorm_forward needs C >= 1, got {}", C);
  layernorm_forward_warp_per_row_kernel<float><<<ceil_div(rows, kRowsPerBlock), kRowsPerBlock * kWarpSize, 0, stream>>>(
      out, mean, rstd, inp, weight, bias, rows, C);
  CUDA_CHECK_LAUNCH();
}

void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* weight, const bf16* bias,
                       int B, int T, int C, cudaStream_t stream) {
  const int rows = B * T;
  if (rows == 0) return;
  ENSURE(C >= 1, "layernorm_forward needs C >= 1, got {}", C);
  const LayerNormForwardParams<bf16> p{nullptr, out, mean, rstd, inp, nullptr, weight, bias, rows, C, 0};
  if (launch_cached_row_forward<false>(p, stream)) return;
  // A row larger than the shared-memory cache: the uncached kernel reads it from L1/L2 twice.
  layernorm_forward_warp_per_row_kernel<bf16><<<ceil_div(rows, kRowsPerBlock), kRowsPerBlock * kWarpSize, 0, stream>>>(
      out, mean, rstd, inp, weight, bias, rows, C);
  CUDA_CHECK_LAUNCH();
}

namespace {

template <class Elem>
void residual_layernorm_forward_impl(Elem* residual, Elem* out, float* mean, float* rstd, const Elem* inp1,
                                     const Elem* inp2, const Elem* weight, const Elem* bias, int B, int T, int C,
                                     cudaStream_t stream) {
  const int rows = B * T;
  if (rows == 0) return;
  ENSURE(C >= 1, "residual_layernorm_forward needs C >= 1, got {}", C);
  const LayerNormForwardParams<Elem> p{residual, out, mean, rstd, inp1, inp2, weight, bias, rows, C, 0};
  if (launch_cached_row_forward<true>(p, stream)) return;
  // Rows too large for the cache: the unfused pair, which computes the same values.
  residual_forward(residual, inp1, inp2, static_cast<size_t>(rows) * C, stream);
  layernorm_forward(out, mean, rstd, residual, weight, bias, B, T, C, stream);
}

}  // namespace

void residual_layernorm_forward(float* residual, float* out, float* mean, float* rstd, const float* inp1,
                                const float* inp2, const float* weight, const float* bias, int B, int T, int C,
                                cudaStream_t stream) {
  residual_layernorm_forward_impl(residual, out, mean, rstd, inp1, inp2, weight, bias, B, T, C, stream);
}
void residual_layernorm_forward(bf16* residual, bf16* out, float* mean, float* rstd, const bf16* inp1,
                                const bf16* inp2, const bf16* weight, const bf16* bias, int B, int T, int C,
                                cudaStream_t stream) {
  residual_layernorm_forward_impl(residual, out, mean, rstd, inp1, inp2, weight, bias, B, T, C, stream);
}

namespace {

// Both element types: dinp accumulates with one rounding per element (bf16(float(dinp) + dx));
// dweight / dbias are reduced in float in a fixed order and added once (one rounding per call).
// packed: the dinp kernel moves 16-byte packs (the bf16 launcher's choice; fp32 keeps its scalar
// loop, whose summation order its 1e-5 CPU tests were written against).
template <class Elem>
void layernorm_backward_impl(Elem* dinp, Elem* dweight, Elem* dbias, const Elem* dout, const float* mean,
                             const float* rstd, const Elem* inp, const Elem* weight, int B, int T, int C, bool packed,
                             cudaStream_t stream) {
  const int rows = B * T;
  if (rows == 0) return;
  ENSURE(C >= 1, "layernorm_backward needs C >= 1, got {}", C);
  constexpr int kVec = kPack128<Elem>;
  const int blocks = ceil_div(rows, kRowsPerBlock);
  if (packed) {
    layernorm_backward_dinp_warp_per_row_kernel<Elem, kVec><<<blocks, kRowsPerBlock * kWarpSize, 0, stream>>>(
        dinp, dout, mean, rstd, inp, weight, rows, C);
  } else {
    layernorm_backward_dinp_warp_per_row_kernel<Elem, 1><<<blocks, kRowsPerBlock * kWarpSize, 0, stream>>>(
        dinp, dout, mean, rstd, inp, weight, rows, C);
  }
  CUDA_CHECK_LAUNCH();

  // The slice count depends only on the shape (never on the device), so the summation order and
  // therefore the bits are the same everywhere. ~64 slices fill the GPU for GPT-2 shapes
  // (C = 768 -> 3 x 64 blocks) while the finalize pass stays short.
  const int rows_per_slice = std::max(1, ceil_div(rows, 64));
  const int slices = ceil_div(rows, rows_per_slice);
  ScratchBuffer partials(2 * static_cast<size_t>(slices) * C * sizeof(float), stream);
  float* partial_dw = partials.as<float>();
  float* partial_db = partial_dw + static_cast<size_t>(slices) * C;
  constexpr int kBlock = 256;
  layernorm_backward_param_partials_kernel<Elem><<<dim3(ceil_div(C, kBlock), slices), kBlock, 0, stream>>>(
      partial_dw, partial_db, dout, mean, rstd, inp, rows, C, rows_per_slice);
  CUDA_CHECK_LAUNCH();
  layernorm_backward_param_finalize_kernel<Elem><<<ceil_div(C, kBlock), kBlock, 0, stream>>>(
      dweight, dbias, partial_dw, partial_db, slices, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                        const float* rstd, const float* inp, const float* weight, int B, int T, int C,
                        cudaStream_t stream) {
  layernorm_backward_impl(dinp, dweight, dbias, dout, mean, rstd, inp, weight, B, T, C, false, stream);
}

void layernorm_backward(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout, const float* mean,
                        const float* rstd, const bf16* inp, const bf16* weight, int B, int T, int C,
                        cudaStream_t stream) {
  const bool packed = C % kPack128<bf16> == 0 && is_aligned16(dinp) && is_aligned16(dout) && is_aligned16(inp) &&
                      is_aligned16(weight);
  layernorm_backward_impl(dinp, dweight, dbias, dout, mean, rstd, inp, weight, B, T, C, packed, stream);
}

}  // namespace gpt2cc::cuda
