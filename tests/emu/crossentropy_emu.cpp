// The classifier kernels compiled for the emulator: cuda_emu.hpp first (the CUDA built-ins on the
// host), then kernels/crossentropy_device.cuh. The launches below mirror launch_crossentropy_forward,
// launch_crossentropy_backward and launch_fused_classifier of kernels/crossentropy.cu through the
// header's geometry and branch functions.
#include "emu/crossentropy_emu.hpp"

#include "emu/cuda_emu.hpp"
#include "kernels/crossentropy_device.cuh"

namespace gpt2cc::emu {
namespace {

namespace ce = cuda::crossentropy_kernels;

void check_vocab(int V, int Vp) {
  if (V < 1 || Vp < V) throw Violation("crossentropy emulation: needs 1 <= V <= Vp");
}

template <class Elem>
void forward(float* losses, const Elem* logits, const int* targets, int B, int T, int V, int Vp) {
  check_vocab(V, Vp);
  if (B * T == 0) return;
  const cuda::LaunchShape l = ce::block_per_row_launch(B * T);
  launch(l.grid, l.block, l.smem_bytes, ce::crossentropy_forward_block_per_row_kernel<Elem>, losses, logits, targets,
         V, Vp);
}

template <class Elem>
void backward(Elem* dlogits, float dloss, const Elem* logits, const int* targets, int B, int T, int V, int Vp) {
  check_vocab(V, Vp);
  if (B * T == 0) return;
  const cuda::LaunchShape l = ce::block_per_row_launch(B * T);
  launch(l.grid, l.block, l.smem_bytes, ce::crossentropy_backward_block_per_row_kernel<Elem>, dlogits, dloss, logits,
         targets, V, Vp);
}

template <class Elem>
void fused(Elem* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp) {
  check_vocab(V, Vp);
  if (B * T == 0) return;
  const cuda::LaunchShape l = ce::block_per_row_launch(B * T);
  if (ce::fused_classifier_vectorized(logits, Vp)) {
    launch(l.grid, l.block, l.smem_bytes, ce::fused_classifier_block_per_row_kernel<Elem, true>, logits, losses,
           targets, dloss, V, Vp);
  } else {
    launch(l.grid, l.block, l.smem_bytes, ce::fused_classifier_block_per_row_kernel<Elem, false>, logits, losses,
           targets, dloss, V, Vp);
  }
}

}  // namespace

void crossentropy_forward(float* losses, const float* logits, const int* targets, int B, int T, int V, int Vp) {
  forward(losses, logits, targets, B, T, V, Vp);
}
void crossentropy_forward(float* losses, const bf16* logits, const int* targets, int B, int T, int V, int Vp) {
  forward(losses, logits, targets, B, T, V, Vp);
}
void crossentropy_backward(float* dlogits, float dloss, const float* logits, const int* targets, int B, int T, int V,
                           int Vp) {
  backward(dlogits, dloss, logits, targets, B, T, V, Vp);
}
void crossentropy_backward(bf16* dlogits, float dloss, const bf16* logits, const int* targets, int B, int T, int V,
                           int Vp) {
  backward(dlogits, dloss, logits, targets, B, T, V, Vp);
}
void fused_classifier(float* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp) {
  fused(logits, losses, targets, dloss, B, T, V, Vp);
}
void fused_classifier(bf16* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp) {
  fused(logits, losses, targets, dloss, B, T, V, Vp);
}

}  // namespace gpt2cc::emu
