// Fused softmax + cross-entropy forward and backward (kernels/crossentropy.cuh; mirrors
// cpu/crossentropy.cpp). One block per row (b,t): the V logits of a row (50257 for GPT-2) are
// reduced to max and sum_j exp(l_j - max) by the block, then the loss or every dlogit is
// written. The backward recomputes the softmax from the logits rather than reading stored
// probabilities: one extra pass over the row, no (B,T,Vp) buffer.
#include "kernels/common.cuh"
#include "kernels/crossentropy.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda {
namespace {

constexpr int kIgnoreIndex = -1;
constexpr int kBlock = 512;  // 16 warps: ~100 logits per thread for GPT-2's vocabulary

// max_j l_j and sum_j exp(l_j - max) over j < V, for the whole block.
template <class Elem>
__device__ void row_max_and_sum(const Elem* row, int V, float* shared, float& maxval, float& sum) {
  float m = -INFINITY;
  for (int j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, to_float(row[j]));
  maxval = block_max(m, shared);
  float s = 0.0f;
  for (int j = threadIdx.x; j < V; j += blockDim.x) s += expf(to_float(row[j]) - maxval);
  sum = block_sum(s, shared);
}

// loss = log(sum_j exp(l_j - max)) + max - l_y
template <class Elem>
__global__ void crossentropy_forward_block_per_row_kernel(float* losses, const Elem* logits, const int* targets,
                                                          int V, int Vp) {
  __shared__ float shared[kWarpSize];
  const size_t bt = blockIdx.x;
  const int y = targets[bt];
  if (y == kIgnoreIndex) {
    if (threadIdx.x == 0) losses[bt] = 0.0f;
    return;
  }
  if (y < 0 || y >= V) {
    if (threadIdx.x == 0) losses[bt] = NAN;
    return;
  }
  const Elem* row = logits + bt * Vp;
  float maxval, sum;
  row_max_and_sum(row, V, shared, maxval, sum);
  if (threadIdx.x == 0) losses[bt] = logf(sum) + maxval - to_float(row[y]);
}

// dlogits_j = dloss * (p_j - [j == y]) for j < V; 0 for j >= V and for ignored rows.
// In place is safe: both reductions finish (block barriers) before any element is written, and
// each element is then read and written by the same thread.
template <class Elem>
__global__ void crossentropy_backward_block_per_row_kernel(Elem* dlogits, float dloss, const Elem* logits,
                                                           const int* targets, int V, int Vp) {
  __shared__ float shared[kWarpSize];
  const size_t bt = blockIdx.x;
  const int y = targets[bt];
  const Elem* row = logits + bt * Vp;
  Elem* drow = dlogits + bt * Vp;
  if (y == kIgnoreIndex || y < 0 || y >= V) {
    const float fill = y == kIgnoreIndex ? 0.0f : NAN;
    for (int j = threadIdx.x; j < Vp; j += blockDim.x) drow[j] = from_float<Elem>(j < V ? fill : 0.0f);
    return;
  }
  float maxval, sum;
  row_max_and_sum(row, V, shared, maxval, sum);
  const float inv_sum = 1.0f / sum;
  for (int j = threadIdx.x; j < Vp; j += blockDim.x) {
    float g = 0.0f;
    if (j < V) g = dloss * (expf(to_float(row[j]) - maxval) * inv_sum - (j == y ? 1.0f : 0.0f));
    drow[j] = from_float<Elem>(g);
  }
}

void check_vocab(int V, int Vp) {
  ENSURE(V >= 1 && Vp >= V, "crossentropy needs 1 <= V <= Vp, got V = {}, Vp = {}", V, Vp);
}

}  // namespace

void crossentropy_forward(float* losses, const float* logits, const int* targets, int B, int T, int V, int Vp,
                          cudaStream_t stream) {
  check_vocab(V, Vp);
  const int rows = B * T;
  if (rows == 0) return;
  crossentropy_forward_block_per_row_kernel<float><<<rows, kBlock, 0, stream>>>(losses, logits, targets, V, Vp);
  CUDA_CHECK_LAUNCH();
}

void crossentropy_backward(float* dlogits, float dloss, const float* logits, const int* targets, int B, int T, int V,
                           int Vp, cudaStream_t stream) {
  check_vocab(V, Vp);
  const int rows = B * T;
  if (rows == 0) return;
  crossentropy_backward_block_per_row_kernel<float><<<rows, kBlock, 0, stream>>>(dlogits, dloss, logits, targets, V,
                                                                                 Vp);
  CUDA_CHECK_LAUNCH();
}

}  // namespace gpt2cc::cuda
