// Device code of the linear layer's hand-written kernels (kernels/matmul.cuh; mirrors the bias
// parts of cpu/matmul.cpp): the bias add after a GEMM, out[r, o] += bias[o], and the
// deterministic bias gradient, dbias[o] += sum_r dout[r, o], as fixed row slices (one fp32 partial
// per slice and column) summed in slice order: no atomics, the same bits on every run. The GEMMs
// themselves are cuBLAS / cuBLASLt calls (not here). Included by kernels/matmul.cu (the helpers in
// matmul_internal; tests/emu/hostcuda compiles it as host C++ for the CPU emulator), with the
// branch and launch geometry at the end.
#pragma once

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "kernels/column_sum_device.cuh"
#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda::matmul_kernels {

constexpr int kBlock = 256;

// out[r, o] += bias[o]; float4 version: OC % 4 == 0 and 16-byte aligned rows.
__global__ void add_bias_vec4_kernel(float4* out, const float4* bias, size_t rows, int OC4) {
  const size_t idx = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * OC4) return;
  const float4 b = bias[idx % OC4];
  float4 o = out[idx];
  o.x += b.x;
  o.y += b.y;
  o.z += b.z;
  o.w += b.w;
  out[idx] = o;
}

template <class Elem>
__global__ void add_bias_scalar_kernel(Elem* out, const Elem* bias, size_t rows, int OC) {
  const size_t idx = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * OC) return;
  out[idx] = from_float<Elem>(to_float(out[idx]) + to_float(bias[idx % OC]));
}

// The bias gradient's blocks: kColumnSumWarps warps (kernels/column_sum_device.cuh, whose finalize
// adds the partials). In the partials kernels the warps take a slice's rows in turn (warp w: rows
// r0 + w, r0 + w + kColumnSumWarps, ...); each block then adds its warps' sums in warp order: a
// fixed order whatever the schedule.
using column_sum_kernels::kColumnSumWarps;

// partial[slice, o] = sum over the slice's rows of dout[r, o]. Packed: lane l of a warp reads the
// kWidth columns from (blockIdx.x * 32 + l) * kWidth of each row as one 16-byte load (a warp reads
// 512 contiguous bytes of a row), so OC % kWidth == 0 and dout is 16-byte aligned; kWidth = 1 is
// the element-wise fallback. Many loads stay in flight (a warp's row loop is unrolled, the grid
// has a block per slice and column group), where a thread per column adding one 2-byte element
// per row at a time left the memory system idle (bench_kernels on an H200, 2026-12-04: the bf16
// attention projection's backward at 30% of the tensor-core peak, the GEMMs alone at 50-70%).
template <class Elem, int kWidth>
__global__ void column_sum_partials_kernel(float* partial, const Elem* dout, int rows, int OC, int rows_per_slice) {
  constexpr int kColumns = kWarpSize * kWidth;  // a block's columns
  __shared__ float warp_sums[kColumnSumWarps][kColumns];
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int o = (blockIdx.x * kWarpSize + lane) * kWidth;
  const int r0 = blockIdx.y * rows_per_slice, r1 = min(rows, r0 + rows_per_slice);
  float acc[kWidth] = {};
  if (o < OC) {
#pragma unroll 4
    for (int r = r0 + warp; r < r1; r += kColumnSumWarps) {
      float x[kWidth];
      load_floats(x, dout + static_cast<size_t>(r) * OC + o);
#pragma unroll
      for (int k = 0; k < kWidth; ++k) acc[k] += x[k];
    }
  }
#pragma unroll
  for (int k = 0; k < kWidth; ++k) warp_sums[warp][lane * kWidth + k] = acc[k];
  __syncthreads();
  for (int c = threadIdx.x; c < kColumns; c += blockDim.x) {
    const int column = blockIdx.x * kColumns + c;
    if (column >= OC) break;
    float sum = 0.0f;
#pragma unroll
    for (int w = 0; w < kColumnSumWarps; ++w) sum += warp_sums[w][c];
    partial[static_cast<size_t>(blockIdx.y) * OC + column] = sum;
  }
}

// ---------------------------------------------------------------------------------------------
// Branch and launch geometry: used by matmul.cu.
// ---------------------------------------------------------------------------------------------

// fp32 moves a float4 per thread when the rows are whole 16-byte vectors (a quarter of the memory
// instructions); otherwise, and for bf16 (only on the plain fallback path), one element per thread.
template <class Elem>
bool add_bias_vectorized(const Elem* out, const Elem* bias, int OC) {
  return std::is_same_v<Elem, float> && OC % 4 == 0 && is_aligned16(out) && is_aligned16(bias);
}

// One thread per float4 (vectorized) or per element of the rows x OC output.
inline LaunchShape add_bias_launch(int rows, int OC, bool vectorized) {
  const size_t threads = static_cast<size_t>(rows) * (vectorized ? OC / 4 : OC);
  return {dim3(static_cast<unsigned>(ceil_div(threads, kBlock))), dim3(kBlock)};
}

// The bias gradient's row slices, from the shape only (the same bits on every device): at most
// kMaxColumnSumSlices, of at least kMinColumnSumRows rows (4 per warp).
constexpr int kMaxColumnSumSlices = 256, kMinColumnSumRows = 4 * kColumnSumWarps;
struct ColumnSumSlices {
  int rows_per_slice;
  int slices;
};
inline ColumnSumSlices column_sum_slices(int rows) {
  const int rows_per_slice = std::max(kMinColumnSumRows, ceil_div(rows, kMaxColumnSumSlices));
  return {rows_per_slice, ceil_div(rows, rows_per_slice)};
}

// 16-byte packs of dout's rows: OC a multiple of the pack and dout 16-byte aligned.
template <class Elem>
bool column_sum_packed(const Elem* dout, int OC) {
  return OC % kPack128<Elem> == 0 && is_aligned16(dout);
}

// Partials: a block per (column group of 32 * width columns, slice), kColumnSumWarps warps.
inline LaunchShape column_sum_partials_launch(int OC, int slices, int width) {
  return {dim3(ceil_div(OC, kWarpSize * width), slices), dim3(kColumnSumWarps * kWarpSize)};
}

}  // namespace gpt2cc::cuda::matmul_kernels
