// The GELU, dropout, conversion and encoder kernels compiled for the emulator: cuda_emu.hpp first
// (the CUDA built-ins on the host), then the device headers unchanged. The functions below mirror
// the launchers of kernels/gelu.cu, dropout.cu, convert.cu and encoder.cu through the headers'
// geometry and branch functions (an inactive dropout is the launcher's copy, here a memcpy).
#include "emu/elementwise_emu.hpp"

#include <cstring>

#include "emu/cuda_emu.hpp"
#include "kernels/convert_device.cuh"
#include "kernels/dropout_device.cuh"
#include "kernels/encoder_device.cuh"
#include "kernels/gelu_device.cuh"

namespace gpt2cc::cuda::encoder_kernels {
// What the owner kernel's `extern __shared__ int matches[]` refers to on the host.
GPT2CC_EMU_DYNAMIC_SHARED(int, matches);
}  // namespace gpt2cc::cuda::encoder_kernels

namespace gpt2cc::emu {
namespace {

namespace gk = cuda::gelu_kernels;
namespace dk = cuda::dropout_kernels;
namespace ck = cuda::convert_kernels;
namespace ek = cuda::encoder_kernels;
using cuda::kPack128;
using cuda::LaunchShape;

template <class Elem>
void gelu_forward_impl(Elem* out, const Elem* inp, size_t N) {
  if (N == 0) return;
  const bool packed = cuda::use_packs<Elem>(N, out, inp);
  const LaunchShape l = cuda::elementwise_launch<Elem>(N, packed);
  if (packed) launch(l.grid, l.block, 0, gk::gelu_forward_kernel<Elem, kPack128<Elem>>, out, inp, N);
  else launch(l.grid, l.block, 0, gk::gelu_forward_kernel<Elem, 1>, out, inp, N);
}

template <class Elem>
void gelu_backward_impl(Elem* dinp, const Elem* dout, const Elem* inp, size_t N) {
  if (N == 0) return;
  const bool packed = cuda::use_packs<Elem>(N, dinp, dout, inp);
  const LaunchShape l = cuda::elementwise_launch<Elem>(N, packed);
  if (packed) launch(l.grid, l.block, 0, gk::gelu_backward_kernel<Elem, kPack128<Elem>>, dinp, dout, inp, N);
  else launch(l.grid, l.block, 0, gk::gelu_backward_kernel<Elem, 1>, dinp, dout, inp, N);
}

template <class Elem>
void apply_mask(Elem* y, const Elem* x, const DropoutParams& dropout, size_t N) {
  if (N == 0) return;
  if (!dropout.active()) {
    if (y != x) std::memcpy(static_cast<void*>(y), x, N * sizeof(Elem));
    return;
  }
  const LaunchShape l = dk::mask_launch(N);
  launch(l.grid, l.block, 0, dk::dropout_mask_four_per_thread_kernel<Elem>, y, x, dropout, N);
}

template <class Elem>
void encoder_backward_impl(Elem* dwte, Elem* dwpe, const Elem* dout, const int* inp, int B, int T, int C) {
  ENSURE(C <= ek::kMaxChannels, "encoder_backward supports C <= {} channels, got C = {}", ek::kMaxChannels, C);
  const int N = B * T;
  if (N == 0 || C == 0) return;
  const LaunchShape lp = ek::backward_wpe_launch(T, C);
  launch(lp.grid, lp.block, 0, ek::encoder_backward_wpe_kernel<Elem>, dwpe, dout, B, T, C);
  const LaunchShape lw = ek::backward_wte_owner_launch(N, C);
  set_shared_memory(ek::matches, sizeof(ek::matches));
  launch(lw.grid, lw.block, lw.smem_bytes, ek::encoder_backward_wte_owner_kernel<Elem>, dwte, dout, inp, N, C);
}

}  // namespace

void gelu_forward(float* out, const float* inp, size_t N) { gelu_forward_impl(out, inp, N); }
void gelu_forward(bf16* out, const bf16* inp, size_t N) { gelu_forward_impl(out, inp, N); }
void gelu_backward(float* dinp, const float* dout, const float* inp, size_t N) {
  gelu_backward_impl(dinp, dout, inp, N);
}
void gelu_backward(bf16* dinp, const bf16* dout, const bf16* inp, size_t N) { gelu_backward_impl(dinp, dout, inp, N); }

void dropout_forward(float* out, const float* inp, const DropoutParams& dropout, size_t N) {
  apply_mask(out, inp, dropout, N);
}
void dropout_forward(bf16* out, const bf16* inp, const DropoutParams& dropout, size_t N) {
  apply_mask(out, inp, dropout, N);
}
void dropout_backward(float* dinp, const float* dout, const DropoutParams& dropout, size_t N) {
  apply_mask(dinp, dout, dropout, N);
}
void dropout_backward(bf16* dinp, const bf16* dout, const DropoutParams& dropout, size_t N) {
  apply_mask(dinp, dout, dropout, N);
}

void convert(bf16* dst, const float* src, size_t N) {
  if (N == 0) return;
  const LaunchShape l = ck::group_launch(N);
  if (ck::aligned16(dst, src)) launch(l.grid, l.block, 0, ck::convert_kernel<true>, dst, src, N);
  else launch(l.grid, l.block, 0, ck::convert_kernel<false>, dst, src, N);
}

void widen(float* dst, const bf16* src, size_t N) {
  if (N == 0) return;
  const LaunchShape l = ck::group_launch(N);
  if (ck::aligned16(dst, src)) launch(l.grid, l.block, 0, ck::widen_kernel<true>, dst, src, N);
  else launch(l.grid, l.block, 0, ck::widen_kernel<false>, dst, src, N);
}

void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C) {
  const size_t total = static_cast<size_t>(B) * T * C;
  if (total == 0) return;
  const LaunchShape l = ek::forward_launch<float>(total, false);
  launch(l.grid, l.block, 0, ek::encoder_forward_elementwise_kernel<float>, out, inp, wte, wpe, B, T, C);
}

void encoder_forward(bf16* out, const int* inp, const bf16* wte, const bf16* wpe, int B, int T, int C) {
  const size_t total = static_cast<size_t>(B) * T * C;
  if (total == 0) return;
  const bool packed = ek::forward_packed<bf16>(C, out, wte, wpe);
  const LaunchShape l = ek::forward_launch<bf16>(total, packed);
  if (packed) {
    launch(l.grid, l.block, 0, ek::encoder_forward_packed_kernel<bf16, kPack128<bf16>>, out, inp, wte, wpe, B, T, C);
  } else {
    launch(l.grid, l.block, 0, ek::encoder_forward_elementwise_kernel<bf16>, out, inp, wte, wpe, B, T, C);
  }
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C) {
  encoder_backward_impl(dwte, dwpe, dout, inp, B, T, C);
}
void encoder_backward(bf16* dwte, bf16* dwpe, const bf16* dout, const int* inp, int B, int T, int C) {
  encoder_backward_impl(dwte, dwpe, dout, inp, B, T, C);
}

}  // namespace gpt2cc::emu
