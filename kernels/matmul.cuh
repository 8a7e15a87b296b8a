// Linear layer on the GPU through cuBLAS; mirrors cpu::matmul_forward / matmul_backward
// (cpu/matmul.hpp). out (B,T,OC) = inp (B,T,C) . weight (OC,C)^T + bias (OC); bias may be null.
// Backward: dinp written (=); dweight, dbias accumulate (+=); dbias may be null. fp32 GEMMs run
// with CUBLAS_DEFAULT_MATH (no TF32), so results match the CPU to ~1e-6 relative.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace gpt2cc::cuda {
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int T, int C, int OC,
                    cudaStream_t stream);
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int B, int T, int C, int OC, cudaStream_t stream);

// The cuBLAS handle of the current device for this host thread (created on first use, TF32
// off), bound to `stream`.
cublasHandle_t cublas_handle(cudaStream_t stream);
}  // namespace gpt2cc::cuda
