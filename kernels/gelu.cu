// GELU forward and backward (kernels/gelu.cuh; mirrors cpu/gelu.cpp). Element-wise and memory
// bound: when N is a multiple of 4 and the pointers are 16-byte aligned, each thread moves a
// float4 (one 128-bit load per operand, a quarter of the memory instructions); otherwise one
// float per thread.
#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/gelu.cuh"

namespace gpt2cc::cuda {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kCubic = 0.044715f;
constexpr int kBlock = 256;

// gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
__device__ __forceinline__ float gelu(float x) {
  const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
  return 0.5f * x * (1.0f + tanhf(u));
}

// dgelu/dx = 0.5 (1 + tanh u) + 0.5 x sech^2(u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
__device__ __forceinline__ float gelu_grad(float x) {
  const float u = kSqrt2OverPi * (x + kCubic * x * x * x);
  const float th = tanhf(u);
  const float sech2 = 1.0f - th * th;
  return 0.5f * (1.0f + th) + 0.5f * x * sech2 * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
}

template <class Elem>
__global__ void gelu_forward_scalar_kernel(Elem* out, const Elem* inp, size_t N) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < N) out[i] = from_float<Elem>(gelu(to_float(inp[i])));
}

__global__ void gelu_forward_vec4_kernel(float4* out, const float4* inp, size_t N4) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N4) return;
  const float4 x = inp[i];
  out[i] = make_float4(gelu(x.x), gelu(x.y), gelu(x.z), gelu(x.w));
}

template <class Elem>
__global__ void gelu_backward_scalar_kernel(Elem* dinp, const Elem* dout, const Elem* inp, size_t N) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < N) dinp[i] = from_float<Elem>(to_float(dout[i]) * gelu_grad(to_float(inp[i])));
}

__global__ void gelu_backward_vec4_kernel(float4* dinp, const float4* dout, const float4* inp, size_t N4) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N4) return;
  const float4 x = inp[i], g = dout[i];
  dinp[i] = make_float4(g.x * gelu_grad(x.x), g.y * gelu_grad(x.y), g.z * gelu_grad(x.z), g.w * gelu_grad(x.w));
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void gelu_forward(float* out, const float* inp, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  if (N % 4 == 0 && aligned16(out) && aligned16(inp)) {
    gelu_forward_vec4_kernel<<<ceil_div(N / 4, kBlock), kBlock, 0, stream>>>(
        reinterpret_cast<float4*>(out), reinterpret_cast<const float4*>(inp), N / 4);
  } else {
    gelu_forward_scalar_kernel<float><<<ceil_div(N, kBlock), kBlock, 0, stream>>>(out, inp, N);
  }
  CUDA_CHECK_LAUNCH();
}

void gelu_backward(float* dinp, const float* dout, const float* inp, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  if (N % 4 == 0 && aligned16(dinp) && aligned16(dout) && aligned16(inp)) {
    gelu_backward_vec4_kernel<<<ceil_div(N / 4, kBlock), kBlock, 0, stream>>>(
        reinterpret_cast<float4*>(dinp), reinterpret_cast<const float4*>(dout), reinterpret_cast<const float4*>(inp),
        N / 4);
  } else {
    gelu_backward_scalar_kernel<float><<<ceil_div(N, kBlock), kBlock, 0, stream>>>(dinp, dout, inp, N);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace gpt2cc::cuda
