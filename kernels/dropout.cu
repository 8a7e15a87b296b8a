// Dropout forward and backward launchers (kernels/dropout.cuh; mirrors cpu/dropout.cpp), float and
// bf16. The kernel and its launch geometry are in kernels/dropout_device.cuh: four elements (one
// Philox call) per thread, the CPU's mask (seed, stream, index), so both backends drop the same
// elements. An inactive dropout (p == 0) is a copy.
#include "kernels/dropout.cuh"

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/dropout_device.cuh"

namespace gpt2cc::cuda {
namespace {

using namespace dropout_kernels;

template <class Elem>
void apply_mask(Elem* y, const Elem* x, const DropoutParams& dropout, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  if (!dropout.active()) {
    if (y != x) CUDA_CHECK(cudaMemcpyAsync(y, x, N * sizeof(Elem), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  const LaunchShape l = mask_launch(N);
  dropout_mask_four_per_thread_kernel<Elem><<<l.grid, l.block, 0, stream>>>(y, x, dropout, N);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

// out = mask * inp / (1 - p)
void dropout_forward(float* out, const float* inp, const DropoutParams& dropout, size_t N, cudaStream_t stream) {
  apply_mask(out, inp, dropout, N, stream);
}
void dropout_forward(bf16* out, const bf16* inp, const DropoutParams& dropout, size_t N, cudaStream_t stream) {
  apply_mask(out, inp, dropout, N, stream);
}

// dinp = mask * dout / (1 - p), the same mask regenerated from (seed, stream, i)
void dropout_backward(float* dinp, const float* dout, const DropoutParams& dropout, size_t N, cudaStream_t stream) {
  apply_mask(dinp, dout, dropout, N, stream);
}
void dropout_backward(bf16* dinp, const bf16* dout, const DropoutParams& dropout, size_t N, cudaStream_t stream) {
  apply_mask(dinp, dout, dropout, N, stream);
}

}  // namespace gpt2cc::cuda
