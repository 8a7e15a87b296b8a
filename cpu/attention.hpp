// Causal multi-head self-attention (Vaswani et al. 2017), GPT-2 layout.
// qkv (B,T,3C) holds q, k, v side by side per token, each split into NH heads of HS = C/NH.
// out (B,T,C) = concat_h softmax(q_h k_h^T / sqrt(HS), causal) v_h.
// saved: att (B,NH,T,T), the softmax probabilities BEFORE dropout (entries above the diagonal 0).
// Attention dropout (if active) drops probabilities with mask index ((b*NH+h)*T + t)*T + t2.
// Backward: dqkv written (=).
// Decode (KV cache): see core/backend.hpp attention_decode / kv_cache_store.
#pragma once

#include "core/rng.hpp"

namespace gpt2cc::cpu {
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH,
                       const DropoutParams& dropout);
void attention_backward(float* dqkv, const float* dout, const float* att, const float* qkv, int B, int T, int C,
                        int NH, const DropoutParams& dropout);
void attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int pos, int maxT, int C,
                      int NH);
void kv_cache_store(float* kcache, float* vcache, const float* qkv, int B, int T, int maxT, int C);
}  // namespace gpt2cc::cpu
