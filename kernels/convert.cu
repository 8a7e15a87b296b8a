// fp32 <-> bf16 conversion launchers (kernels/convert.cuh). The kernels and their launch geometry
// are in kernels/convert_device.cuh: a group of 8 elements per thread, 16-byte accesses when both
// pointers are aligned, element by element otherwise. Rounding is __float2bfloat16_rn (RNE).
#include "kernels/convert.cuh"

#include "kernels/common.cuh"
#include "kernels/convert_device.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda {

using namespace convert_kernels;

void convert(bf16* dst, const float* src, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  const LaunchShape l = group_launch(N);
  if (aligned16(dst, src)) {
    convert_kernel<true><<<l.grid, l.block, 0, stream>>>(dst, src, N);
  } else {
    convert_kernel<false><<<l.grid, l.block, 0, stream>>>(dst, src, N);
  }
  CUDA_CHECK_LAUNCH();
}

void widen(float* dst, const bf16* src, size_t N, cudaStream_t stream) {
  if (N == 0) return;
  const LaunchShape l = group_launch(N);
  if (aligned16(dst, src)) {
    widen_kernel<true><<<l.grid, l.block, 0, stream>>>(dst, src, N);
  } else {
    widen_kernel<false><<<l.grid, l.block, 0, stream>>>(dst, src, N);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace gpt2cc::cuda
