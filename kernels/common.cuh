// Device helpers shared by the kernels: warp and block reductions, element-type conversion.
// Kernels are templated on the element type (`class Elem`) and instantiated for float only;
// bf16 (issue 8) adds __nv_bfloat16 instantiations, with arithmetic always done in float through
// to_float / from_float.
#pragma once

#include <cuda_runtime.h>

namespace gpt2cc::cuda {

inline constexpr int kWarpSize = 32;

template <class Elem>
__device__ __forceinline__ float to_float(Elem x) {
  return static_cast<float>(x);
}
template <class Elem>
__device__ __forceinline__ Elem from_float(float x) {
  return static_cast<Elem>(x);
}

// Butterfly reductions: every lane ends with the result, in a fixed order (deterministic).
__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}
__device__ __forceinline__ double warp_sum(double x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

// Block-wide sum / max for blockDim.x a multiple of 32 (at most 1024): warps reduce, warp 0
// reduces the per-warp results. `shared` holds 32 values; every thread gets the result.
template <class Value, class Reduce>
__device__ Value block_reduce(Value x, Value* shared, Reduce warp_reduce, Value identity) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  x = warp_reduce(x);
  __syncthreads();  // `shared` may still be read by a previous reduction
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  x = lane < num_warps ? shared[lane] : identity;
  return warp_reduce(x);
}

__device__ __forceinline__ float block_sum(float x, float* shared) {
  return block_reduce(x, shared, [](float v) { return warp_sum(v); }, 0.0f);
}
__device__ __forceinline__ float block_max(float x, float* shared) {
  return block_reduce(x, shared, [](float v) { return warp_max(v); }, -INFINITY);
}

}  // namespace gpt2cc::cuda
