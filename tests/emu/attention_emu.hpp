// cuda::attention_forward / _backward / kv_cache_store / attention_decode (the tiled kernels of
// kernels/attention.cuh) run on the CPU emulator: the kernels of kernels/attention_device.cuh
// compiled as host C++, launched in the launchers' order with their parameters (forward_gemms,
// backward_gemms, decode_params), geometry and decode branch. Pointers are host memory; shapes and
// semantics as the CUDA functions (att fp32, dqkv written). max_grid_z caps the head products'
// grid.z as the launcher caps it at 65535 (the default), so that a test with a few heads
// exercises the blocks' loop over heads. Misuse found while running throws emu::Violation.
#pragma once

#include <cuda_bf16.h>

#include "core/rng.hpp"

namespace gpt2cc::emu {

using bf16 = __nv_bfloat16;

inline constexpr int kAttentionMaxGridZ = 65535;

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH,
                       const DropoutParams& dropout, int max_grid_z = kAttentionMaxGridZ);
void attention_forward(bf16* out, float* att, const bf16* qkv, int B, int T, int C, int NH,
                       const DropoutParams& dropout, int max_grid_z = kAttentionMaxGridZ);
void attention_backward(float* dqkv, const float* dout, const float* att, const float* qkv, int B, int T, int C,
                        int NH, const DropoutParams& dropout, int max_grid_z = kAttentionMaxGridZ);
void attention_backward(bf16* dqkv, const bf16* dout, const float* att, const bf16* qkv, int B, int T, int C, int NH,
                        const DropoutParams& dropout, int max_grid_z = kAttentionMaxGridZ);
void kv_cache_store(float* kcache, float* vcache, const float* qkv, int B, int T, int maxT, int C);
void kv_cache_store(bf16* kcache, bf16* vcache, const bf16* qkv, int B, int T, int maxT, int C);
void attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int pos, int maxT, int C,
                      int NH);
void attention_decode(bf16* out, bf16* kcache, bf16* vcache, const bf16* qkv, int B, int pos, int maxT, int C, int NH);
// Which decode kernel attention_decode launches at (pos, HS): the shared-scores one, or the
// online-softmax fallback.
bool attention_decode_scores_fit_shared(int pos, int HS);

}  // namespace gpt2cc::emu
