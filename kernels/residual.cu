// Residual forward and backward (kernels/residual.cuh; mirrors cpu/residual.cpp), float and bf16.
// Memory bound: one 16-byte pack per operand per thread (4 floats, 8 bf16) when N is a multiple of
// the pack and every pointer is 16-byte aligned (one 128-bit access instead of 4 or 8), one element
// per thread otherwise. Arithmetic in float; a bf16 output is rounded once per call.
#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/residual.cuh"

namespace gpt2cc::cuda {
namespace {

constexpr int kBlock = 256;

// out = inp1 + inp2; thread i handles elements [kWidth i, kWidth (i + 1)), N % kWidth == 0.
template <class Elem, int kWidth>
__global__ void residual_forward_kernel(Elem* out, const Elem* inp1, const Elem* inp2, size_t N) {
  const size_t i = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
  if (i >= N) return;
  float a[kWidth], b[kWidth];
  load_floats(a, inp1 + i);
  load_floats(b, inp2 + i);
#pragma unroll
  for (int k = 0; k < kWidth; ++k) a[k] += b[k];
  store_floats(out + i, a);
}

// dinp1 += dout ; dinp2 += dout
template <class Elem, int kWidth>
__global__ void residual_backward_kernel(Elem* dinp1, Elem* dinp2, const Elem* dout, size_t N) {
  const size_t i = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
  if (i >= N) return;
  float g[kWidth], a[kWidth], b[kWidth];
  load_floats(g, dout + i);
  load_floats(a, dinp1 + i);
  load_floats(b, dinp2 + i);
#pragma unroll
  for (int k = 0; k < kWidth; ++k) {
    a[k] += g[k];
    b[k] += g[k];
  }
  store_floats(dinp1 + i, a);
  store_floats(dinp2 + i, b);
}

template <class Elem>
void residual_forward_impl(Elem* out, const Elem* inp1, const Elem* inp2, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  constexpr int kVec = kPack128<Elem>;
  if (N % kVec == 0 && is_aligned16(out) && is_aligned16(inp1) && is_aligned16(inp2)) {
    residual_forward_kernel<Elem, kVec><<<ceil_div(N / kVec, kBlock), kBlock, 0, stream>>>(out, inp1, inp2, N);
  } else {
    residual_forward_kernel<Elem, 1><<<ceil_div(N, kBlock), kBlock, 0, stream>>>(out, inp1, inp2, N);
  }
  CUDA_CHECK_LAUNCH();
}

template <class Elem>
void residual_backward_impl(Elem* dinp1, Elem* dinp2, const Elem* dout, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  constexpr int kVec = kPack128<Elem>;
  if (N % kVec == 0 && is_aligned16(dinp1) && is_aligned16(dinp2) && is_aligned16(dout)) {
    residual_backward_kernel<Elem, kVec><<<ceil_div(N / kVec, kBlock), kBlock, 0, stream>>>(dinp1, dinp2, dout, N);
  } else {
    residual_backward_kernel<Elem, 1><<<ceil_div(N, kBlock), kBlock, 0, stream>>>(dinp1, dinp2, dout, N);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void residual_forward(float* out, const float* inp1, const float* inp2, size_t N, cudaStream_t stream) {
  residual_forward_impl(out, inp1, inp2, N, stream);
}
void residual_forward(bf16* out, const bf16* inp1, const bf16* inp2, size_t N, cudaStream_t stream) {
  residual_forward_impl(out, inp1, inp2, N, stream);
}

void residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N, cudaStream_t stream) {
  residual_backward_impl(dinp1, dinp2, dout, N, stream);
}
void residual_backward(bf16* dinp1, bf16* dinp2, const bf16* dout, size_t N, cudaStream_t stream) {
  residual_backward_impl(dinp1, dinp2, dout, N, stream);
}

}  // namespace gpt2cc::cuda
