// LayerNorm over the last dimension (Ba et al. 2016), eps = 1e-5 as in GPT-2.
// inp, out (B,T,C); weight, bias (C); mean, rstd (B,T) saved for the backward.
// Backward: dinp ACCUMULATES (+=; the input is the residual stream), dweight/dbias accumulate.
// The *_vectorized pair is what the CPU backend runs: the same arithmetic with the row sums in
// eight-wide vector accumulators (the reference's one running sum per row waits on each add),
// and the backward's dweight/dbias sums taken in the same pass over the rows (per fixed block
// of rows, then the blocks in order: the bits do not depend on the thread count). The plain
// pair is the reference they are tested against.
#pragma once

namespace gpt2cc::cpu {
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int B, int T, int C);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                        const float* rstd, const float* inp, const float* weight, int B, int T, int C);
void layernorm_forward_vectorized(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                  const float* bias, int B, int T, int C);
void layernorm_backward_vectorized(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                                   const float* rstd, const float* inp, const float* weight, int B, int T, int C);
}  // namespace gpt2cc::cpu
