// The second half of the deterministic column sums (a matmul's bias gradient, kernels/matmul.cu;
// the fused LayerNorm backward's weight and bias gradients, kernels/layernorm.cu): fp32 partial
// sums, one row per fixed slice of the input rows, added up in a fixed order and then once into
// the output column (one rounding per call). The first half, the partials, is each caller's own.
#pragma once

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda::column_sum_kernels {

// Warps per block, in the finalize and in the callers' partials kernels that share its layout.
constexpr int kColumnSumWarps = 8;

// out[c] += sum_slices partial[slice, c]: a block per 32 columns; warp w sums slices w, w + 8, ...
// of column c = 32 blockIdx.x + lane (each warp reads 128 contiguous bytes per slice), then warp 0
// adds the warps' sums in warp order: a fixed order whatever the schedule.
template <class Elem>
__global__ void column_sum_finalize_kernel(Elem* out, const float* partial, int slices, int C) {
  __shared__ float warp_sums[kColumnSumWarps][kWarpSize];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int c = blockIdx.x * kWarpSize + lane;
  float acc = 0.0f;
  if (c < C) {
#pragma unroll 4
    for (int s = warp; s < slices; s += kColumnSumWarps) acc += partial[static_cast<size_t>(s) * C + c];
  }
  warp_sums[warp][lane] = acc;
  __syncthreads();
  if (warp != 0 || c >= C) return;
  float sum = 0.0f;
#pragma unroll
  for (int w = 0; w < kColumnSumWarps; ++w) sum += warp_sums[w][lane];
  out[c] = from_float<Elem>(to_float(out[c]) + sum);
}

inline LaunchShape column_sum_finalize_launch(int C) {
  return {dim3(ceil_div(C, kWarpSize)), dim3(kColumnSumWarps * kWarpSize)};
}

}  // namespace gpt2cc::cuda::column_sum_kernels
