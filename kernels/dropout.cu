// Dropout forward and backward (kernels/dropout.cuh; mirrors cpu/dropout.cpp), float and bf16. The
// same masked scaling y = keep(i) * x / (1 - p) serves both directions. keep(i) draws lane i % 4 of
// the Philox block i / 4 (core/rng.hpp), so a thread handling elements 4j..4j+3 gets all four
// draws from ONE Philox call instead of four. The mask depends only on (seed, stream, i), never on
// the element type: float and bf16 drop exactly the same elements as the CPU.
#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/dropout.cuh"

namespace gpt2cc::cuda {
namespace {

constexpr int kBlock = 256;

// y[i] = keep(i) ? x[i] * scale : 0 for i in [4j, 4j + 4) ∩ [0, N); thread j. In place safe.
template <class Elem>
__global__ void dropout_mask_four_per_thread_kernel(Elem* y, const Elem* x, DropoutParams dropout, size_t N) {
  const size_t j = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t i0 = 4 * j;
  if (i0 >= N) return;
  const Philox4 r = philox4x32_10(static_cast<uint32_t>(j), static_cast<uint32_t>(j >> 32), dropout.stream, 0u,
                                  static_cast<uint32_t>(dropout.seed), static_cast<uint32_t>(dropout.seed >> 32));
  const float scale = dropout.scale();
  for (int lane = 0; lane < 4 && i0 + lane < N; ++lane) {
    // Same test as DropoutParams::keep: uniform from the top 24 bits, kept when >= p.
    const float u = static_cast<float>(r.v[lane] >> 8) * (1.0f / 16777216.0f);
    y[i0 + lane] = from_float<Elem>(u >= dropout.p ? to_float(x[i0 + lane]) * scale : 0.0f);
  }
}

template <class Elem>
void apply_mask(Elem* y, const Elem* x, const DropoutParams& dropout, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  if (!dropout.active()) {
    if (y != x) CUDA_CHECK(cudaMemcpyAsync(y, x, N * sizeof(Elem), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  dropout_mask_four_per_thread_kernel<Elem><<<ceil_div(ceil_div(N, 4), kBlock), kBlock, 0, stream>>>(y, x, dropout, N);
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
