// Causal multi-head self-attention (Vaswani et al. 2017), GPT-2 layout.
// qkv (B,T,3C) holds q, k, v side by side per token, each split into NH heads of HS = C/NH.
// out (B,T,C) = concat_h softmax(q_h k_h^T / sqrt(HS), causal) v_h.
// saved: att (B,NH,T,T), the softmax probabilities BEFORE dropout (entries above the diagonal 0).
// Attention dropout (if active) drops probabilities with mask index ((b*NH+h)*T + t)*T + t2.
// Backward: dqkv written (=).
// Decode (KV cache): see core/backend.hpp attention_decode / kv_cache_store.
// The *_blocked / *_vectorized functions are what the CPU backend runs: the same sums as blocked
// products (cpu/gemm.hpp) over tiles of 64 queries x 64 keys, the tiles above the causal
// diagonal skipped, the softmax's exp vectorised (cpu/vector_exp.hpp); tiles (or, in the backward
// with two heads per thread or more, whole heads) are tasks of their own, so all cores work even
// at B = 1, and the bits do not depend on the thread count. The plain loops are the reference
// they are tested against. Like FlashAttention (Dao et al. 2022), the blocked forward saves no
// T x T matrix: only each row's log-sum-exp lse (B,NH,T) of the scaled scores, from which the
// backward recomputes each tile's P = exp(q.k scale - lse) (B*NH*T floats per layer instead of
// B*NH*T*T: 600 MB less for GPT-2 124M at 1 x 1024). The backward also takes the forward's out:
// sum_t2 att[t2] datt[t2] = dout_t . out_t, one dot per row.
#pragma once

#include <cstdint>

#include "core/rng.hpp"

namespace gpt2cc::cpu {
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH,
                       const DropoutParams& dropout);
void attention_backward(float* dqkv, const float* dout, const float* att, const float* qkv, int B, int T, int C,
                        int NH, const DropoutParams& dropout);
void attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int pos, int maxT, int C,
                      int NH);
void kv_cache_store(float* kcache, float* vcache, const float* qkv, int B, int T, int maxT, int C);

void attention_forward_blocked(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                               const DropoutParams& dropout);
void attention_backward_blocked(float* dqkv, const float* dout, const float* lse, const float* qkv, const float* out,
                                int B, int T, int C, int NH, const DropoutParams& dropout);
void attention_decode_vectorized(float* out, float* kcache, float* vcache, const float* qkv, int B, int pos, int maxT,
                                 int C, int NH);
// The decode and the cache store with qkv and the caches in bf16 (cpu/bf16.hpp; the CPU's bf16
// backend), out fp32; the store copies bits.
void attention_decode_bf16(float* out, uint16_t* kcache, uint16_t* vcache, const uint16_t* qkv, int B, int pos,
                           int maxT, int C, int NH);
void kv_cache_store_bf16(uint16_t* kcache, uint16_t* vcache, const uint16_t* qkv, int B, int T, int maxT, int C);
}  // namespace gpt2cc::cpu
