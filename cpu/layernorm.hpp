// LayerNorm over the last dimension (Ba et al. 2016), eps = 1e-5 as in GPT-2.
// inp, out (B,T,C); weight, bias (C); mean, rstd (B,T) saved for the backward.
// Backward: dinp ACCUMULATES (+=; the input is the residual stream), dweight/dbias accumulate.
#pragma once

namespace gpt2cc::cpu {
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int B, int T, int C);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                        const float* rstd, const float* inp, const float* weight, int B, int T, int C);
}  // namespace gpt2cc::cpu
