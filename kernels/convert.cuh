// Precision conversions between fp32 and bf16 buffers (mixed-precision training):
// convert rounds to nearest even (dst[i] = bf16_rn(src[i]); NaN stays NaN, overflow -> +-inf),
// widen is exact (dst[i] = float(src[i])). N elements, any N; 16-byte vector accesses when both
// pointers are 16-byte aligned, scalar otherwise. Used for the bf16 parameter copy made from the
// fp32 master weights and for reading bf16 activations / gradients back in fp32.
#pragma once

#include <cstddef>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace gpt2cc::cuda {
using bf16 = __nv_bfloat16;

void convert(bf16* dst, const float* src, size_t N, cudaStream_t stream);
void widen(float* dst, const bf16* src, size_t N, cudaStream_t stream);
}  // namespace gpt2cc::cuda
