// Device code of the fp32 <-> bf16 conversions (kernels/convert.cuh): convert rounds to nearest
// even (dst[i] = bf16_rn(src[i])), widen is exact (dst[i] = float(src[i])). Each thread handles a
// group of 8 elements: with both pointers 16-byte aligned a full group is two float4 and one
// 16-byte bf16 load/store (why: the conversion is pure bandwidth, and 128-bit accesses need a
// quarter of the memory instructions); the last partial group, and every group when a pointer is
// misaligned, goes element by element. Included by kernels/convert.cu (the launchers;
// tests/emu/hostcuda compiles it as host C++ for the CPU emulator), with the launch geometry at
// the end.
#pragma once

#include <cstddef>

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda::convert_kernels {

constexpr int kGroup = 8;  // elements per thread: 16 bytes of bf16, 32 bytes of float
constexpr int kHalf = kGroup / 2;  // one 16-byte pack of float
constexpr int kBlock = 256;

// dst[i] = bf16_rn(src[i]) for i in [8g, min(8g + 8, N)), g = this thread's group.
template <bool kAligned>
__global__ void convert_kernel(bf16* dst, const float* src, size_t N) {
  const size_t i0 = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kGroup;
  if (i0 >= N) return;
  if (kAligned && i0 + kGroup <= N) {
    float lo[kHalf], hi[kHalf], x[kGroup];
    load_floats(lo, src + i0);
    load_floats(hi, src + i0 + kHalf);
    for (int k = 0; k < kHalf; ++k) {
      x[k] = lo[k];
      x[kHalf + k] = hi[k];
    }
    store_floats(dst + i0, x);  // from_float<bf16> is __float2bfloat16_rn
    return;
  }
  for (size_t i = i0; i < N && i < i0 + kGroup; ++i) dst[i] = __float2bfloat16_rn(src[i]);
}

// dst[i] = float(src[i]) (exact) for the thread's group of 8.
template <bool kAligned>
__global__ void widen_kernel(float* dst, const bf16* src, size_t N) {
  const size_t i0 = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kGroup;
  if (i0 >= N) return;
  if (kAligned && i0 + kGroup <= N) {
    float x[kGroup], lo[kHalf], hi[kHalf];
    load_floats(x, src + i0);
    for (int k = 0; k < kHalf; ++k) {
      lo[k] = x[k];
      hi[k] = x[kHalf + k];
    }
    store_floats(dst + i0, lo);
    store_floats(dst + i0 + kHalf, hi);
    return;
  }
  for (size_t i = i0; i < N && i < i0 + kGroup; ++i) dst[i] = __bfloat162float(src[i]);
}

// ---------------------------------------------------------------------------------------------
// Launch geometry: used by the launchers in convert.cu.
// ---------------------------------------------------------------------------------------------

// Group g starts at byte 32g of the float buffer and 16g of the bf16 one: aligned bases keep every
// full group aligned, so the kAligned kernels may be used.
inline bool aligned16(const void* a, const void* b) { return is_aligned16(a) && is_aligned16(b); }

// One thread per group of kGroup elements, kBlock threads per block.
inline LaunchShape group_launch(size_t N) {
  return {dim3(static_cast<unsigned>(ceil_div(ceil_div(N, kGroup), kBlock))), dim3(kBlock)};
}

}  // namespace gpt2cc::cuda::convert_kernels
