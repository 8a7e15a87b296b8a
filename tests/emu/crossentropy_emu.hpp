// cuda::crossentropy_forward / _backward / fused_classifier (kernels/crossentropy.cuh) run on the
// CPU emulator: the kernels of kernels/crossentropy_device.cuh compiled as host C++, launched with
// the launchers' geometry and branch (block_per_row_launch, fused_classifier_vectorized). Pointers
// are host memory; shapes and results as the CUDA functions (1 <= V <= Vp, target -1 = ignore).
// Misuse found while running (see cuda_emu.hpp) throws emu::Violation.
#pragma once

#include <cuda_bf16.h>

namespace gpt2cc::emu {

using bf16 = __nv_bfloat16;

void crossentropy_forward(float* losses, const float* logits, const int* targets, int B, int T, int V, int Vp);
void crossentropy_forward(float* losses, const bf16* logits, const int* targets, int B, int T, int V, int Vp);
void crossentropy_backward(float* dlogits, float dloss, const float* logits, const int* targets, int B, int T, int V,
                           int Vp);
void crossentropy_backward(bf16* dlogits, float dloss, const bf16* logits, const int* targets, int B, int T, int V,
                           int Vp);
void fused_classifier(float* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp);
void fused_classifier(bf16* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp);

}  // namespace gpt2cc::emu
