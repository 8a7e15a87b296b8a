// LayerNorm forward and backward (kernels/layernorm.cuh; mirrors cpu/layernorm.cpp).
// One warp per row: C is at most a few thousand, so a warp striding over the channels keeps the
// loads coalesced and reduces with shuffles, no shared memory. The parameter gradients are column
// sums over all B*T rows: each block sums a fixed slice of rows into a partial, and a second
// kernel adds the partials in slice order, so the result is the same bits on every run.
#include <algorithm>

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/layernorm.cuh"

namespace gpt2cc::cuda {
namespace {

constexpr float kEps = 1e-5f;
constexpr int kRowsPerBlock = 8;  // warps per block in the warp-per-row kernels

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

// g_c = dout_c * weight_c ; dx_c += rstd * (g_c - mean(g) - xhat_c * mean(g * xhat))
template <class Elem>
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
  for (int c = lane; c < C; c += kWarpSize) {
    const float g = to_float(dy[c]) * to_float(weight[c]);
    g_sum += g;
    gx_sum += g * (to_float(x[c]) - m) * s;
  }
  const float g_mean = warp_sum(g_sum) / C;
  const float gx_mean = warp_sum(gx_sum) / C;
  for (int c = lane; c < C; c += kWarpSize) {
    const float xhat = (to_float(x[c]) - m) * s;
    const float g = to_float(dy[c]) * to_float(weight[c]);
    dx[c] = from_float<Elem>(to_float(dx[c]) + s * (g - g_mean - xhat * gx_mean));
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

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                        const float* rstd, const float* inp, const float* weight, int B, int T, int C,
                        cudaStream_t stream) {
  const int rows = B * T;
  if (rows == 0) return;
  ENSURE(C >= 1, "layernorm_backward needs C >= 1, got {}", C);
  layernorm_backward_dinp_warp_per_row_kernel<float>
      <<<ceil_div(rows, kRowsPerBlock), kRowsPerBlock * kWarpSize, 0, stream>>>(dinp, dout, mean, rstd, inp, weight,
                                                                                rows, C);
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
  layernorm_backward_param_partials_kernel<float><<<dim3(ceil_div(C, kBlock), slices), kBlock, 0, stream>>>(
      partial_dw, partial_db, dout, mean, rstd, inp, rows, C, rows_per_slice);
  CUDA_CHECK_LAUNCH();
  layernorm_backward_param_finalize_kernel<float><<<ceil_div(C, kBlock), kBlock, 0, stream>>>(
      dweight, dbias, partial_dw, partial_db, slices, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace gpt2cc::cuda
