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

// partial[slice, o] = sum over the slice's rows of dout[r, o]; thread = output column.
template <class Elem>
__global__ void column_sum_partials_kernel(float* partial, const Elem* dout, int rows, int OC, int rows_per_slice) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= OC) return;
  const int r0 = blockIdx.y * rows_per_slice, r1 = min(rows, r0 + rows_per_slice);
  float acc = 0.0f;
  for (int r = r0; r < r1; ++r) acc += to_float(dout[static_cast<size_t>(r) * OC + o]);
  partial[static_cast<size_t>(blockIdx.y) * OC + o] = acc;
}

// dbias[o] += sum_slices partial[slice, o], in slice order.
template <class Elem>
__global__ void column_sum_finalize_kernel(Elem* dbias, const float* partial, int slices, int OC) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= OC) return;
  float acc = 0.0f;
  for (int s = 0; s < slices; ++s) acc += partial[static_cast<size_t>(s) * OC + o];
  dbias[o] = from_float<Elem>(to_float(dbias[o]) + acc);
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

// The bias gradient's row slices: at most 64, from the shape only (deterministic on every device).
struct ColumnSumSlices {
  int rows_per_slice;
  int slices;
};
inline ColumnSumSlices column_sum_slices(int rows) {
  const int rows_per_slice = std::max(1, ceil_div(rows, 64));
  return {rows_per_slice, ceil_div(rows, rows_per_slice)};
}

// Partials: a thread per column, a grid row per slice; finalize: a thread per column.
inline LaunchShape column_sum_partials_launch(int OC, int slices) {
  return {dim3(ceil_div(OC, kBlock), slices), dim3(kBlock)};
}
inline LaunchShape column_sum_finalize_launch(int OC) { return {dim3(ceil_div(OC, kBlock)), dim3(kBlock)}; }

}  // namespace gpt2cc::cuda::matmul_kernels
