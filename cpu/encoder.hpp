// Token + position embedding. out (B,T,C) = wte[inp[b,t]] + wpe[t]; wte (Vp,C), wpe (maxT,C).
// Backward accumulates (+=) into dwte and dwpe, in a fixed order (deterministic).
#pragma once

namespace gpt2cc::cpu {
void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C);
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C);
}  // namespace gpt2cc::cpu
