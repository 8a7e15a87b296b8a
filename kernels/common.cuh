// Device helpers shared by the kernels: warp and block reductions, element-type conversion and
// 16-byte vector access. Kernels are templated on the element type (`class Elem`) and instantiated
// for float and bf16 (__nv_bfloat16); arithmetic is always done in float through to_float /
// from_float, and a bf16 store rounds once, to nearest even.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace gpt2cc::cuda {

using bf16 = __nv_bfloat16;

inline constexpr int kWarpSize = 32;

template <class Elem>
__device__ __forceinline__ float to_float(Elem x) {
  return static_cast<float>(x);
}
template <class Elem>
__device__ __forceinline__ Elem from_float(float x) {
  return static_cast<Elem>(x);
}
template <>
__device__ __forceinline__ float to_float<bf16>(bf16 x) {
  return __bfloat162float(x);
}
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

// kWidth consecutive elements moved by ONE load or store instruction. Why: the element-wise and
// normalisation kernels are memory bound, and a 128-bit access (Pack128<Elem>: 8 x bf16 or
// 4 x float) moves 16 bytes per instruction instead of 2 or 4, so fewer instructions are in flight
// per byte. The pointer must be aligned to the pack size (is_aligned16 for 16-byte packs).
template <class Elem, int kWidth>
struct alignas(sizeof(Elem) * kWidth) Pack {
  Elem v[kWidth];
};
template <class Elem>
inline constexpr int kPack128 = static_cast<int>(16 / sizeof(Elem));
template <class Elem>
using Pack128 = Pack<Elem, kPack128<Elem>>;

// x[k] = float(p[k]) for k < kWidth, one load.
template <int kWidth, class Elem>
__device__ __forceinline__ void load_floats(float (&x)[kWidth], const Elem* p) {
  const Pack<Elem, kWidth> pack = *reinterpret_cast<const Pack<Elem, kWidth>*>(p);
#pragma unroll
  for (int k = 0; k < kWidth; ++k) x[k] = to_float(pack.v[k]);
}
// p[k] = Elem(x[k]) for k < kWidth (rounded once), one store.
template <int kWidth, class Elem>
__device__ __forceinline__ void store_floats(Elem* p, const float (&x)[kWidth]) {
  Pack<Elem, kWidth> pack;
#pragma unroll
  for (int k = 0; k < kWidth; ++k) pack.v[k] = from_float<Elem>(x[k]);
  *reinterpret_cast<Pack<Elem, kWidth>*>(p) = pack;
}

// Host side: may a 16-byte pack be loaded from / stored to p?
inline bool is_aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// One kernel launch's geometry, computed by a function in the kernel's *_device.cuh that its
// launcher (.cu) calls.
struct LaunchShape {
  dim3 grid, block;
  size_t smem_bytes = 0;  // dynamic shared memory
};

// The element-wise kernels (gelu, residual): one thread per 16-byte pack when N is a multiple of
// the pack and every pointer is 16-byte aligned (use_packs), else one per element; 256 threads a
// block.
inline constexpr int kElementwiseBlock = 256;
template <class Elem, class... Pointers>
bool use_packs(size_t N, Pointers... pointers) {
  return N % kPack128<Elem> == 0 && (is_aligned16(pointers) && ...);
}
template <class Elem>
LaunchShape elementwise_launch(size_t N, bool packed) {
  const size_t threads = packed ? N / kPack128<Elem> : N;
  return {dim3(static_cast<unsigned>((threads + kElementwiseBlock - 1) / kElementwiseBlock)), dim3(kElementwiseBlock)};
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
