// The classifier on the GPU: softmax over the first V of Vp padded logits fused with
// cross-entropy; mirrors cpu::crossentropy_forward / crossentropy_backward (cpu/crossentropy.hpp).
// logits (B,T,Vp) float or bf16; targets (B,T), -1 = ignore; losses (B,T) float = -log p[target]
// (0 if ignored). Backward writes (=) dlogits = dloss * (softmax - onehot) for columns < V, 0 for
// padded columns and ignored rows, without storing the probabilities. dlogits may alias logits.
// fused_classifier does both in one kernel, in place. A target outside [0, V) (other than -1)
// gives a NaN loss / NaN gradient row: the device cannot throw, so the error shows in the loss.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace gpt2cc::cuda {
using bf16 = __nv_bfloat16;

void crossentropy_forward(float* losses, const float* logits, const int* targets, int B, int T, int V, int Vp,
                          cudaStream_t stream);
void crossentropy_backward(float* dlogits, float dloss, const float* logits, const int* targets, int B, int T, int V,
                           int Vp, cudaStream_t stream);
// bf16 logits, fp32 softmax and losses; dlogits rounded once to bf16.
void crossentropy_forward(float* losses, const bf16* logits, const int* targets, int B, int T, int V, int Vp,
                          cudaStream_t stream);
void crossentropy_backward(bf16* dlogits, float dloss, const bf16* logits, const int* targets, int B, int T, int V,
                           int Vp, cudaStream_t stream);

// Fused classifier: one block per row finds the row's max and sum exp(l - max) (fp32), writes
// losses[row] = logsumexp - logit[target], then overwrites the row in place with
// dlogits = dloss * (softmax - onehot) (0 in padded columns and in ignored rows, whose loss is 0).
// Same results as crossentropy_forward followed by crossentropy_backward up to the order of float
// sums, one launch and no probability buffer. Two designs:
// - kCachedRow: the row is read once into the block's shared memory (16-byte packs; needs Vp a
//   multiple of 16 / sizeof(elem), logits 16-byte aligned, and the row within the device's
//   shared memory a block: 227 KiB on an H100 / H200, so 116,000 bf16 or 58,000 floats).
// - kStreamed: the row is read twice, an online max + sum pass, then the gradient pass (16-byte
//   packs where the rows allow, else scalar). Any shape.
// kAuto: kCachedRow where it fits (GPT-2's rows, Vp 50304: bf16 100.6 KB on sm_80 and newer, fp32
// 201.2 KB on an H100 / H200 only, one block of 512 threads per SM), else kStreamed. kCachedRow
// on a shape it does not take throws InputError. bench_kernels times both (fused_classifier,
// the kAuto choice, and fused_classifier_streamed); neither has been timed against the other on
// a GPU.
enum class FusedClassifier { kAuto, kCachedRow, kStreamed };

void fused_classifier(float* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp,
                      cudaStream_t stream, FusedClassifier design = FusedClassifier::kAuto);
void fused_classifier(bf16* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp,
                      cudaStream_t stream, FusedClassifier design = FusedClassifier::kAuto);
}  // namespace gpt2cc::cuda
