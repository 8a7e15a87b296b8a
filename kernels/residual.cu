// Residual forward and backward launchers (kernels/residual.cuh; mirrors cpu/residual.cpp), float
// and bf16. The kernels and their launch geometry are in kernels/residual_device.cuh: one 16-byte
// pack per operand per thread when N and the pointers allow it (with an fp32 inp2 into bf16, 4
// elements a thread: 16 bytes of it, 8 of the others), one element per thread otherwise.
#include "kernels/residual.cuh"

#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/residual_device.cuh"

namespace gpt2cc::cuda {
namespace {

using namespace residual_kernels;

// In2: inp2's element, Elem or (bf16 out) float. The packs are of the wider operand's 16 bytes.
template <class Elem, class In2 = Elem>
void residual_forward_impl(Elem* out, const Elem* inp1, const In2* inp2, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  using Wide = std::conditional_t<(sizeof(In2) > sizeof(Elem)), In2, Elem>;
  const bool packed = use_packs<Wide>(N, out, inp1, inp2);
  const LaunchShape l = elementwise_launch<Wide>(N, packed);
  if (packed) {
    residual_forward_kernel<Elem, kPack128<Wide>, In2><<<l.grid, l.block, 0, stream>>>(out, inp1, inp2, N);
  } else {
    residual_forward_kernel<Elem, 1, In2><<<l.grid, l.block, 0, stream>>>(out, inp1, inp2, N);
  }
  CUDA_CHECK_LAUNCH();
}

template <class Elem>
void residual_backward_impl(Elem* dinp1, Elem* dinp2, const Elem* dout, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  const bool packed = use_packs<Elem>(N, dinp1, dinp2, dout);
  const LaunchShape l = elementwise_launch<Elem>(N, packed);
  if (packed) {
    residual_backward_kernel<Elem, kPack128<Elem>><<<l.grid, l.block, 0, stream>>>(dinp1, dinp2, dout, N);
  } else {
    residual_backward_kernel<Elem, 1><<<l.grid, l.block, 0, stream>>>(dinp1, dinp2, dout, N);
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
void residual_forward(bf16* out, const bf16* inp1, const float* inp2, size_t N, cudaStream_t stream) {
  residual_forward_impl(out, inp1, inp2, N, stream);
}

void residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N, cudaStream_t stream) {
  residual_backward_impl(dinp1, dinp2, dout, N, stream);
}
void residual_backward(bf16* dinp1, bf16* dinp2, const bf16* dout, size_t N, cudaStream_t stream) {
  residual_backward_impl(dinp1, dinp2, dout, N, stream);
}

}  // namespace gpt2cc::cuda
