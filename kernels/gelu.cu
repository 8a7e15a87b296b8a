// GELU forward and backward (kernels/gelu.cuh; mirrors cpu/gelu.cpp), float and bf16. Element-wise
// and memory bound: when N is a multiple of the 16-byte pack (4 floats, 8 bf16) and the pointers
// are 16-byte aligned, each thread moves one pack per operand (one 128-bit load instead of 4 or 8);
// otherwise one element per thread. Arithmetic in float, one rounding on a bf16 store.
#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/gelu.cuh"
#include "kernels/gelu_math.cuh"

namespace gpt2cc::cuda {
namespace {

constexpr int kBlock = 256;

// Thread i handles elements [kWidth i, kWidth (i + 1)); the launcher guarantees N % kWidth == 0.
template <class Elem, int kWidth>
__global__ void gelu_forward_kernel(Elem* out, const Elem* inp, size_t N) {
  const size_t i = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
  if (i >= N) return;
  float x[kWidth];
  load_floats(x, inp + i);
#pragma unroll
  for (int k = 0; k < kWidth; ++k) x[k] = gelu(x[k]);
  store_floats(out + i, x);
}

template <class Elem, int kWidth>
__global__ void gelu_backward_kernel(Elem* dinp, const Elem* dout, const Elem* inp, size_t N) {
  const size_t i = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
  if (i >= N) return;
  float x[kWidth], g[kWidth];
  load_floats(x, inp + i);
  load_floats(g, dout + i);
#pragma unroll
  for (int k = 0; k < kWidth; ++k) g[k] *= gelu_grad(x[k]);
  store_floats(dinp + i, g);
}

template <class Elem>
void gelu_forward_impl(Elem* out, const Elem* inp, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  constexpr int kVec = kPack128<Elem>;
  if (N % kVec == 0 && is_aligned16(out) && is_aligned16(inp)) {
    gelu_forward_kernel<Elem, kVec><<<ceil_div(N / kVec, kBlock), kBlock, 0, stream>>>(out, inp, N);
  } else {
    gelu_forward_kernel<Elem, 1><<<ceil_div(N, kBlock), kBlock, 0, stream>>>(out, inp, N);
  }
  CUDA_CHECK_LAUNCH();
}

template <class Elem>
void gelu_backward_impl(Elem* dinp, const Elem* dout, const Elem* inp, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  constexpr int kVec = kPack128<Elem>;
  if (N % kVec == 0 && is_aligned16(dinp) && is_aligned16(dout) && is_aligned16(inp)) {
    gelu_backward_kernel<Elem, kVec><<<ceil_div(N / kVec, kBlock), kBlock, 0, stream>>>(dinp, dout, inp, N);
  } else {
    gelu_backward_kernel<Elem, 1><<<ceil_div(N, kBlock), kBlock, 0, stream>>>(dinp, dout, inp, N);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void gelu_forward(float* out, const float* inp, size_t N, cudaStream_t stream) {
  gelu_forward_impl(out, inp, N, stream);
}
void gelu_forward(bf16* out, const bf16* inp, size_t N, cudaStream_t stream) { gelu_forward_impl(out, inp, N, stream); }

void gelu_backward(float* dinp, const float* dout, const float* inp, size_t N, cudaStream_t stream) {
  gelu_backward_impl(dinp, dout, inp, N, stream);
}
void gelu_backward(bf16* dinp, const bf16* dout, const bf16* inp, size_t N, cudaStream_t stream) {
  gelu_backward_impl(dinp, dout, inp, N, stream);
}

}  // namespace gpt2cc::cuda
