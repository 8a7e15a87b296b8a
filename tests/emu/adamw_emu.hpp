// cuda::adamw_update and cuda::sum_of_squares (kernels/adamw.cuh) run on the CPU emulator: the
// kernels of kernels/adamw_device.cuh compiled as host C++, with the launchers' parameters
// (adamw_params) and geometry (adamw_launch, the fixed 512-block partition of sum_of_squares).
// Pointers are host memory; semantics as the CUDA functions (hp.step >= 1).
// Misuse found while running (see cuda_emu.hpp) throws emu::Violation.
#pragma once

#include <cuda_bf16.h>

#include <cstddef>

#include "core/backend.hpp"

namespace gpt2cc::emu {

using bf16 = __nv_bfloat16;

void adamw_update(float* params, float* m, float* v, const float* grads, size_t N, const AdamWParams& hp);
// fp32 master weights and moments, bf16 grads; params = bf16_rn(master) after the update.
void adamw_update(float* master, bf16* params, float* m, float* v, const bf16* grads, size_t N,
                  const AdamWParams& hp);
double sum_of_squares(const float* x, size_t N);
double sum_of_squares(const bf16* x, size_t N);

}  // namespace gpt2cc::emu
