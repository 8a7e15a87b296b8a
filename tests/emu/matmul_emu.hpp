// The hand-written kernels of the linear layer (cuda::matmul_internal::add_bias and
// accumulate_column_sums, kernels/matmul.cuh; the GEMMs are cuBLAS and are not emulated) run on the
// CPU emulator: the kernels of kernels/matmul_device.cuh compiled as host C++, with the helpers'
// branch (add_bias_vectorized) and geometry (add_bias_launch, column_sum_slices, ...). Pointers
// are host memory. Misuse found while running (see cuda_emu.hpp) throws emu::Violation.
#pragma once

#include <cuda_bf16.h>

namespace gpt2cc::emu {

using bf16 = __nv_bfloat16;

// out[r, o] += bias[o] for r < rows.
void matmul_add_bias(float* out, const float* bias, int rows, int OC);
void matmul_add_bias(bf16* out, const bf16* bias, int rows, int OC);
// dbias[o] += sum_{r < rows} dout[r, o] (fp32 partials over fixed row slices, summed in order).
void matmul_accumulate_column_sums(float* dbias, const float* dout, int rows, int OC);
void matmul_accumulate_column_sums(bf16* dbias, const bf16* dout, int rows, int OC);

}  // namespace gpt2cc::emu
