// Fused softmax + cross-entropy forward and backward launchers (kernels/crossentropy.cuh; mirrors
// cpu/crossentropy.cpp), float and bf16 logits. The kernels (one block per row; the backward
// recomputes the softmax instead of reading stored probabilities; the fused classifier does loss
// and gradient in one kernel, in place, from a row held in shared memory or streamed twice) and
// their launch geometry are in kernels/crossentropy_device.cuh.
#include "kernels/crossentropy.cuh"

#include <atomic>
#include <cstdint>

#include "kernels/common.cuh"
#include "kernels/crossentropy_device.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/shared_memory.cuh"

namespace gpt2cc::cuda {
namespace {

using namespace crossentropy_kernels;

void check_vocab(int V, int Vp) {
  ENSURE(V >= 1 && Vp >= V, "crossentropy needs 1 <= V <= Vp, got V = {}, Vp = {}", V, Vp);
}

template <class Elem>
void launch_crossentropy_forward(float* losses, const Elem* logits, const int* targets, int B, int T, int V, int Vp,
                                 cudaStream_t stream) {
  check_vocab(V, Vp);
  const int rows = B * T;
  if (rows == 0) return;
  const LaunchShape l = block_per_row_launch(rows);
  crossentropy_forward_block_per_row_kernel<Elem><<<l.grid, l.block, 0, stream>>>(losses, logits, targets, V, Vp);
  CUDA_CHECK_LAUNCH();
}

template <class Elem>
void launch_crossentropy_backward(Elem* dlogits, float dloss, const Elem* logits, const int* targets, int B, int T,
                                  int V, int Vp, cudaStream_t stream) {
  check_vocab(V, Vp);
  const int rows = B * T;
  if (rows == 0) return;
  const LaunchShape l = block_per_row_launch(rows);
  crossentropy_backward_block_per_row_kernel<Elem><<<l.grid, l.block, 0, stream>>>(dlogits, dloss, logits, targets,
                                                                                   V, Vp);
  CUDA_CHECK_LAUNCH();
}

template <class Elem>
void launch_fused_classifier(Elem* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp,
                             cudaStream_t stream, FusedClassifier design) {
  check_vocab(V, Vp);
  const bool cached = fused_classifier_vectorized(logits, Vp) &&
                      cached_row_smem<Elem>(Vp) + kCachedStaticSmem <= device_shared_optin();
  // A design asked for by name (GPT2CC_KERNELS) that the shape or device cannot take: the user's setting.
  INPUT_CHECK(design != FusedClassifier::kCachedRow || cached,
              "the cached-row fused classifier (GPT2CC_KERNELS classifier=cached-row) needs Vp a multiple of {}, "
              "16-byte aligned logits and a row within the device's {} bytes of shared memory a block; got Vp = {} "
              "({} bytes)",
              kPack128<Elem>, device_shared_optin(), Vp, Vp * sizeof(Elem));
  const int rows = B * T;
  if (rows == 0) return;
  if (cached && design != FusedClassifier::kStreamed) {
    static std::atomic<uint64_t> opted_in{0};
    once_per_device(opted_in, [] {
      allow_shared_memory(fused_classifier_cached_row_kernel<Elem>, device_shared_optin() - kCachedStaticSmem,
                          kCachedStaticSmem, "fused classifier (kCachedStaticSmem in kernels/crossentropy_device.cuh)");
    });
    const LaunchShape l = cached_row_launch<Elem>(rows, Vp);
    fused_classifier_cached_row_kernel<Elem><<<l.grid, l.block, l.smem_bytes, stream>>>(logits, losses, targets, dloss,
                                                                                         V, Vp);
  } else if (fused_classifier_vectorized(logits, Vp)) {
    const LaunchShape l = block_per_row_launch(rows);
    fused_classifier_block_per_row_kernel<Elem, true><<<l.grid, l.block, 0, stream>>>(logits, losses, targets, dloss,
                                                                                      V, Vp);
  } else {
    const LaunchShape l = block_per_row_launch(rows);
    fused_classifier_block_per_row_kernel<Elem, false><<<l.grid, l.block, 0, stream>>>(logits, losses, targets, dloss,
                                                                                       V, Vp);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void crossentropy_forward(float* losses, const float* logits, const int* targets, int B, int T, int V, int Vp,
                          cudaStream_t stream) {
  launch_crossentropy_forward(losses, logits, targets, B, T, V, Vp, stream);
}
void crossentropy_forward(float* losses, const bf16* logits, const int* targets, int B, int T, int V, int Vp,
                          cudaStream_t stream) {
  launch_crossentropy_forward(losses, logits, targets, B, T, V, Vp, stream);
}

void crossentropy_backward(float* dlogits, float dloss, const float* logits, const int* targets, int B, int T, int V,
                           int Vp, cudaStream_t stream) {
  launch_crossentropy_backward(dlogits, dloss, logits, targets, B, T, V, Vp, stream);
}
void crossentropy_backward(bf16* dlogits, float dloss, const bf16* logits, const int* targets, int B, int T, int V,
                           int Vp, cudaStream_t stream) {
  launch_crossentropy_backward(dlogits, dloss, logits, targets, B, T, V, Vp, stream);
}

void fused_classifier(float* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp,
                      cudaStream_t stream, FusedClassifier design) {
  launch_fused_classifier(logits, losses, targets, dloss, B, T, V, Vp, stream, design);
}
void fused_classifier(bf16* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp,
                      cudaStream_t stream, FusedClassifier design) {
  launch_fused_classifier(logits, losses, targets, dloss, B, T, V, Vp, stream, design);
}

}  // namespace gpt2cc::cuda
