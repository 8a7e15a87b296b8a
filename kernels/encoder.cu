// Token + position embedding launchers, forward and backward (kernels/encoder.cuh; mirrors
// cpu/encoder.cpp), float and bf16. The kernels and their launch geometry are in
// kernels/encoder_device.cuh: an element-wise forward (16-byte packs for bf16 where C and the
// pointers allow), and a deterministic backward (dwpe by one thread per element; dwte by sorting
// the positions by token and giving each token's run to one block: no atomics).
#include "kernels/encoder.cuh"

#include <cstdint>
#include <utility>

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/encoder_device.cuh"

namespace gpt2cc::cuda {

using namespace encoder_kernels;

void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C,
                     cudaStream_t stream) {
  const size_t total = static_cast<size_t>(B) * T * C;
  if (total == 0) return;
  const LaunchShape l = forward_launch<float>(total, false);
  encoder_forward_elementwise_kernel<float><<<l.grid, l.block, 0, stream>>>(out, inp, wte, wpe, B, T, C);
  CUDA_CHECK_LAUNCH();
}

void encoder_forward(bf16* out, const int* inp, const bf16* wte, const bf16* wpe, int B, int T, int C,
                     cudaStream_t stream) {
  const size_t total = static_cast<size_t>(B) * T * C;
  if (total == 0) return;
  const bool packed = forward_packed<bf16>(C, out, wte, wpe);
  const LaunchShape l = forward_launch<bf16>(total, packed);
  if (packed) {
    encoder_forward_packed_kernel<bf16, kPack128<bf16>><<<l.grid, l.block, 0, stream>>>(out, inp, wte, wpe, B, T, C);
  } else {
    encoder_forward_elementwise_kernel<bf16><<<l.grid, l.block, 0, stream>>>(out, inp, wte, wpe, B, T, C);
  }
  CUDA_CHECK_LAUNCH();
}

// Both element types: fp32 accumulation in a fixed order, one rounding per += into bf16 dwte /
// dwpe (Grad = Elem), none into fp32 ones (Grad = float).
template <class Elem, class Grad>
void encoder_backward_impl(Grad* dwte, Grad* dwpe, const Elem* dout, const int* inp, int B, int T, int C,
                           cudaStream_t stream) {
  const int N = B * T;
  if (N == 0 || C == 0) return;
  const LaunchShape lp = backward_wpe_launch(T, C);
  encoder_backward_wpe_kernel<Elem, Grad><<<lp.grid, lp.block, 0, stream>>>(dwpe, dout, B, T, C);
  CUDA_CHECK_LAUNCH();

  // The (token, position) keys, sorted: tiles, then merge passes between the two halves.
  ScratchBuffer keys(2 * static_cast<size_t>(N) * sizeof(uint64_t), stream);
  uint64_t* sorted = keys.as<uint64_t>();
  uint64_t* other = sorted + N;
  const LaunchShape ls = sort_tiles_launch(N);
  encoder_sort_tile_keys_kernel<<<ls.grid, ls.block, 0, stream>>>(sorted, inp, N);
  CUDA_CHECK_LAUNCH();
  const LaunchShape lm = merge_launch(N);
  for (size_t width = kSortTile; width < static_cast<size_t>(N); width *= 2) {
    encoder_merge_keys_kernel<<<lm.grid, lm.block, 0, stream>>>(other, sorted, width, N);
    CUDA_CHECK_LAUNCH();
    std::swap(sorted, other);
  }

  const LaunchShape lw = backward_wte_launch(N, C);
  if (backward_wte_packed<Elem>(C, dout)) {
    encoder_backward_wte_kernel<Elem, Grad, kPack128<Elem>><<<lw.grid, lw.block, 0, stream>>>(dwte, dout, sorted, N,
                                                                                                C);
  } else {
    encoder_backward_wte_kernel<Elem, Grad, 1><<<lw.grid, lw.block, 0, stream>>>(dwte, dout, sorted, N, C);
  }
  CUDA_CHECK_LAUNCH();
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C,
                      cudaStream_t stream) {
  encoder_backward_impl(dwte, dwpe, dout, inp, B, T, C, stream);
}
void encoder_backward(bf16* dwte, bf16* dwpe, const bf16* dout, const int* inp, int B, int T, int C,
                      cudaStream_t stream) {
  encoder_backward_impl(dwte, dwpe, dout, inp, B, T, C, stream);
}
void encoder_backward(float* dwte, float* dwpe, const bf16* dout, const int* inp, int B, int T, int C,
                      cudaStream_t stream) {
  encoder_backward_impl(dwte, dwpe, dout, inp, B, T, C, stream);
}

}  // namespace gpt2cc::cuda
