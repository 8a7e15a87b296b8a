// GELU forward and backward launchers (kernels/gelu.cuh; mirrors cpu/gelu.cpp), float and bf16.
// The kernels and their launch geometry are in kernels/gelu_device.cuh: one 16-byte pack per
// operand per thread when N and the pointers allow it, one element per thread otherwise.
#include "kernels/gelu.cuh"

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/gelu_device.cuh"

namespace gpt2cc::cuda {
namespace {

using namespace gelu_kernels;

template <class Elem>
void gelu_forward_impl(Elem* out, const Elem* inp, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  const bool packed = use_packs<Elem>(N, out, inp);
  const LaunchShape l = elementwise_launch<Elem>(N, packed);
  if (packed) {
    gelu_forward_kernel<Elem, kPack128<Elem>><<<l.grid, l.block, 0, stream>>>(out, inp, N);
  } else {
    gelu_forward_kernel<Elem, 1><<<l.grid, l.block, 0, stream>>>(out, inp, N);
  }
  CUDA_CHECK_LAUNCH();
}

template <class Elem>
void gelu_backward_impl(Elem* dinp, const Elem* dout, const Elem* inp, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  const bool packed = use_packs<Elem>(N, dinp, dout, inp);
  const LaunchShape l = elementwise_launch<Elem>(N, packed);
  if (packed) {
    gelu_backward_kernel<Elem, kPack128<Elem>><<<l.grid, l.block, 0, stream>>>(dinp, dout, inp, N);
  } else {
    gelu_backward_kernel<Elem, 1><<<l.grid, l.block, 0, stream>>>(dinp, dout, inp, N);
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
