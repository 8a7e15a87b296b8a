// The classifier on the GPU: softmax over the first V of Vp padded logits fused with
// cross-entropy; mirrors cpu::crossentropy_forward / crossentropy_backward (cpu/crossentropy.hpp).
// logits (B,T,Vp); targets (B,T), -1 = ignore; losses (B,T) = -log p[target] (0 if ignored).
// Backward writes (=) dlogits = dloss * (softmax - onehot) for columns < V, 0 for padded columns
// and ignored rows, without storing the probabilities. dlogits may alias logits (in place).
// A target outside [0, V) (other than -1) gives a NaN loss / NaN gradient row: the device cannot
// throw, so the error surfaces in the loss instead of reading out of bounds.
#pragma once

#include <cuda_runtime.h>

namespace gpt2cc::cuda {
void crossentropy_forward(float* losses, const float* logits, const int* targets, int B, int T, int V, int Vp,
                          cudaStream_t stream);
void crossentropy_backward(float* dlogits, float dloss, const float* logits, const int* targets, int B, int T, int V,
                           int Vp, cudaStream_t stream);
}  // namespace gpt2cc::cuda
