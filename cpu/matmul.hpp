// Linear layer: out (B,T,OC) = inp (B,T,C) . weight(OC,C)^T + bias (OC); bias may be null.
// Backward: dinp written (=); dweight and dbias accumulate (+=); dbias may be null.
// matmul_forward/matmul_backward are cache-blocked and vectorisable; the *_reference versions
// are the plain loops they are tested against.
#pragma once

namespace gpt2cc::cpu {
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int T, int C, int OC);
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int B, int T, int C, int OC);
void matmul_forward_reference(float* out, const float* inp, const float* weight, const float* bias, int B, int T,
                              int C, int OC);
void matmul_backward_reference(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                               const float* weight, int B, int T, int C, int OC);
}  // namespace gpt2cc::cpu
