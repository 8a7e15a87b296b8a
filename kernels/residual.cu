// Residual forward and backward (kernels/residual.cuh; mirrors cpu/residual.cpp). Memory bound:
// float4 per thread when N % 4 == 0 and every pointer is 16-byte aligned (a quarter of the
// memory instructions), one float per thread otherwise.
#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/residual.cuh"

namespace gpt2cc::cuda {
namespace {

constexpr int kBlock = 256;

template <class Elem>
__global__ void residual_forward_scalar_kernel(Elem* out, const Elem* inp1, const Elem* inp2, size_t N) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < N) out[i] = from_float<Elem>(to_float(inp1[i]) + to_float(inp2[i]));
}

__global__ void residual_forward_vec4_kernel(float4* out, const float4* inp1, const float4* inp2, size_t N4) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N4) return;
  const float4 a = inp1[i], b = inp2[i];
  out[i] = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

// dinp1 += dout ; dinp2 += dout
template <class Elem>
__global__ void residual_backward_scalar_kernel(Elem* dinp1, Elem* dinp2, const Elem* dout, size_t N) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N) return;
  const float g = to_float(dout[i]);
  dinp1[i] = from_float<Elem>(to_float(dinp1[i]) + g);
  dinp2[i] = from_float<Elem>(to_float(dinp2[i]) + g);
}

__global__ void residual_backward_vec4_kernel(float4* dinp1, float4* dinp2, const float4* dout, size_t N4) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N4) return;
  const float4 g = dout[i];
  float4 a = dinp1[i], b = dinp2[i];
  dinp1[i] = make_float4(a.x + g.x, a.y + g.y, a.z + g.z, a.w + g.w);
  dinp2[i] = make_float4(b.x + g.x, b.y + g.y, b.z + g.z, b.w + g.w);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void residual_forward(float* out, const float* inp1, const float* inp2, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  if (N % 4 == 0 && aligned16(out) && aligned16(inp1) && aligned16(inp2)) {
    residual_forward_vec4_kernel<<<ceil_div(N / 4, kBlock), kBlock, 0, stream>>>(
        reinterpret_cast<float4*>(out), reinterpret_cast<const float4*>(inp1), reinterpret_cast<const float4*>(inp2),
        N / 4);
  } else {
    residual_forward_scalar_kernel<float><<<ceil_div(N, kBlock), kBlock, 0, stream>>>(out, inp1, inp2, N);
  }
  CUDA_CHECK_LAUNCH();
}

void residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  if (N % 4 == 0 && aligned16(dinp1) && aligned16(dinp2) && aligned16(dout)) {
    residual_backward_vec4_kernel<<<ceil_div(N / 4, kBlock), kBlock, 0, stream>>>(
        reinterpret_cast<float4*>(dinp1), reinterpret_cast<float4*>(dinp2), reinterpret_cast<const float4*>(dout),
        N / 4);
  } else {
    residual_backward_scalar_kernel<float><<<ceil_div(N, kBlock), kBlock, 0, stream>>>(dinp1, dinp2, dout, N);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace gpt2cc::cuda
