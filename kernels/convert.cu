// fp32 <-> bf16 conversion kernels (kernels/convert.cuh). Each thread handles a group of 8
// elements: with both pointers 16-byte aligned a full group is two float4 and one 16-byte bf16
// load/store (why: the conversion is pure bandwidth, and 128-bit accesses need a quarter of the
// memory instructions); the last partial group, and every group when a pointer is misaligned,
// goes element by element. Rounding is __float2bfloat16_rn / __floats2bfloat162_rn (RNE).
#include <cstdint>

#include "kernels/convert.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda {
namespace {

constexpr int kGroup = 8;  // elements per thread: 16 bytes of bf16, 32 bytes of float
constexpr int kBlock = 256;

// Eight bf16 as one 16-byte word.
struct alignas(16) Bf16x8 {
  __nv_bfloat162 pair[kGroup / 2];
};

// dst[i] = bf16_rn(src[i]) for i in [8g, min(8g + 8, N)), g = this thread's group.
template <bool kAligned>
__global__ void convert_kernel(bf16* dst, const float* src, size_t N) {
  const size_t i0 = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kGroup;
  if (i0 >= N) return;
  if (kAligned && i0 + kGroup <= N) {
    const float4 lo = reinterpret_cast<const float4*>(src + i0)[0];
    const float4 hi = reinterpret_cast<const float4*>(src + i0)[1];
    Bf16x8 out;
    out.pair[0] = __floats2bfloat162_rn(lo.x, lo.y);
    out.pair[1] = __floats2bfloat162_rn(lo.z, lo.w);
    out.pair[2] = __floats2bfloat162_rn(hi.x, hi.y);
    out.pair[3] = __floats2bfloat162_rn(hi.z, hi.w);
    *reinterpret_cast<Bf16x8*>(dst + i0) = out;
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
    const Bf16x8 in = *reinterpret_cast<const Bf16x8*>(src + i0);
    const float2 a = __bfloat1622float2(in.pair[0]), b = __bfloat1622float2(in.pair[1]);
    const float2 c = __bfloat1622float2(in.pair[2]), d = __bfloat1622float2(in.pair[3]);
    reinterpret_cast<float4*>(dst + i0)[0] = make_float4(a.x, a.y, b.x, b.y);
    reinterpret_cast<float4*>(dst + i0)[1] = make_float4(c.x, c.y, d.x, d.y);
    return;
  }
  for (size_t i = i0; i < N && i < i0 + kGroup; ++i) dst[i] = __bfloat162float(src[i]);
}

bool aligned16(const void* a, const void* b) {
  return reinterpret_cast<uintptr_t>(a) % 16 == 0 && reinterpret_cast<uintptr_t>(b) % 16 == 0;
}

}  // namespace

void convert(bf16* dst, const float* src, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  const size_t grid = ceil_div(ceil_div(N, kGroup), kBlock);
  // Group g starts at byte 32g of src and 16g of dst: aligned bases keep every full group aligned.
  if (aligned16(dst, src)) {
    convert_kernel<true><<<grid, kBlock, 0, stream>>>(dst, src, N);
  } else {
    convert_kernel<false><<<grid, kBlock, 0, stream>>>(dst, src, N);
  }
  CUDA_CHECK_LAUNCH();
}

void widen(float* dst, const bf16* src, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  const size_t grid = ceil_div(ceil_div(N, kGroup), kBlock);
  if (aligned16(dst, src)) {
    widen_kernel<true><<<grid, kBlock, 0, stream>>>(dst, src, N);
  } else {
    widen_kernel<false><<<grid, kBlock, 0, stream>>>(dst, src, N);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace gpt2cc::cuda
