// The classifier: softmax over the first V of Vp padded logits, then cross-entropy.
// logits (B,T,Vp); targets (B,T) with -1 = ignore; losses (B,T) = -log p[target] (0 if ignored).
// Backward writes (=) dlogits = dloss * (softmax - onehot(target)) for columns < V, 0 for padded
// columns and for ignored rows; dloss is d(total loss)/d(each token loss), e.g. 1/(#targets).
// dlogits may alias logits (in place).
// fused_classifier: the two in one pass over each row, in place over the logits, with one exp per
// logit (vectorised) where the pair takes three; they stay its reference.
// crossentropy_forward_vectorized: the forward alone (evaluation), logits read-only, with the
// fused classifier's arithmetic: its losses bit for bit; crossentropy_forward is its reference.
// The bf16 overloads (the CPU's bf16 backend; cpu/bf16.hpp) widen one row at a time into a buffer
// of the thread, run the fp32 arithmetic on it and round what they write: the bits of the fp32
// functions on widened logits, rounded, without a widened copy of all of them.
#pragma once

#include <cstdint>

namespace gpt2cc::cpu {
inline constexpr int kIgnoreIndex = -1;
void crossentropy_forward(float* losses, const float* logits, const int* targets, int B, int T, int V, int Vp);
void crossentropy_backward(float* dlogits, float dloss, const float* logits, const int* targets, int B, int T, int V,
                           int Vp);
void crossentropy_forward_vectorized(float* losses, const float* logits, const int* targets, int B, int T, int V,
                                     int Vp);
void fused_classifier(float* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp);

void crossentropy_backward(uint16_t* dlogits, float dloss, const uint16_t* logits, const int* targets, int B, int T,
                           int V, int Vp);
void crossentropy_forward_vectorized(float* losses, const uint16_t* logits, const int* targets, int B, int T, int V,
                                     int Vp);
void fused_classifier(uint16_t* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp);
}  // namespace gpt2cc::cpu
