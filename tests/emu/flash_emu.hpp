// cuda::flash_attention_forward / _backward (kernels/flash_attention.cuh) run on the CPU emulator:
// the kernels of kernels/flash_attention_device.cuh compiled as host C++, launched with the same
// parameters and launch geometry as the CUDA launchers (forward_params, forward_launch, ...).
// Pointers are host memory; shapes as the CUDA functions (HS = C/NH of 64 or 128, T >= 1, B >= 1).
// Misuse found while running (see cuda_emu.hpp) throws emu::Violation.
#pragma once

#include <cuda_bf16.h>

namespace gpt2cc::emu {

using bf16 = __nv_bfloat16;

// tile_rows: the rows one CTA owns, 64 or 128 (cuda::FlashTile::kRows64 / kRows128).
void flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH, int tile_rows);
// out is the forward's output (for D = rowsum(dout * out)); lse the forward's saved values.
void flash_attention_backward(bf16* dqkv, const bf16* dout, const float* lse, const bf16* out, const bf16* qkv,
                              int B, int T, int C, int NH, int tile_rows);

}  // namespace gpt2cc::emu
