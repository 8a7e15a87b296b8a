// Causal multi-head self-attention on the GPU; mirrors cpu::attention_forward_blocked /
// _backward_blocked (lse, not the probabilities; unlike the CPU and flash backwards, this backward
// does not read out) / attention_decode / kv_cache_store (cpu/attention.hpp). qkv (B,T,3C),
// out (B,T,C), HS = C/NH.
// lse (B,NH,T): each row's log-sum-exp of the scaled scores, log sum_{t2 <= t} exp(S[t, t2]), saved
// for the backward as the CPU's blocked attention saves it; the backward recomputes the
// probabilities P = exp(S - lse) from qkv. The T x T probabilities live in stream-ordered scratch
// only during a call (B*NH*T*T floats; the backward's dP as much again). Attention dropout drops
// probabilities with mask index ((b*NH+h)*T + t)*T + t2, the CPU's. Backward: dqkv written (=),
// deterministic (no atomics). These are the tiled kernels, float and bf16 (qkv, out, dout, dqkv,
// caches in bf16; lse, P and dP fp32; fp32 math inside). The fused flash-attention kernels are
// kernels/flash_attention.cuh; the tiled ones serve fp32, attention dropout and head sizes the
// flash kernels do not support.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "core/rng.hpp"

namespace gpt2cc::cuda {
using bf16 = __nv_bfloat16;

void attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                       const DropoutParams& dropout, cudaStream_t stream);
void attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                       const DropoutParams& dropout, cudaStream_t stream);
// `out` is the forward's output (B,T,C). The flash backward needs it (D = rowsum(dout * out));
// these tiled kernels do not read it (their softmax backward forms D from P and dP) and accept
// any pointer, null included.
void attention_backward(float* dqkv, const float* dout, const float* lse, const float* qkv, const float* out, int B,
                        int T, int C, int NH, const DropoutParams& dropout, cudaStream_t stream);
void attention_backward(bf16* dqkv, const bf16* dout, const float* lse, const bf16* qkv, const bf16* out, int B,
                        int T, int C, int NH, const DropoutParams& dropout, cudaStream_t stream);
// KV cache (B, maxT, C) each: decode stores the k, v of the token at `pos` and attends over
// positions 0..pos; kv_cache_store copies a prompt's k, v (positions 0..T-1).
void attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int pos, int maxT, int C,
                      int NH, cudaStream_t stream);
void attention_decode(bf16* out, bf16* kcache, bf16* vcache, const bf16* qkv, int B, int pos, int maxT, int C, int NH,
                      cudaStream_t stream);
void kv_cache_store(float* kcache, float* vcache, const float* qkv, int B, int T, int maxT, int C,
                    cudaStream_t stream);
void kv_cache_store(bf16* kcache, bf16* vcache, const bf16* qkv, int B, int T, int maxT, int C, cudaStream_t stream);

// The decode kernel keeps the scores of positions 0..pos in shared memory while
// (pos + 1 + HS + 32) floats fit in 48 KiB; beyond that it uses a kernel without shared scores.
// Exposed so tests can exercise both.
bool attention_decode_scores_fit_shared(int pos, int HS);
}  // namespace gpt2cc::cuda
