// LayerNorm over the channels on the GPU (eps = 1e-5); mirrors cpu::layernorm_forward /
// layernorm_backward (cpu/layernorm.hpp). inp, out (B,T,C); weight, bias (C); mean, rstd (B,T).
// Backward: dinp ACCUMULATES (+=, residual stream); dweight, dbias accumulate (+=), summed over
// rows in a fixed order (deterministic). bf16 overloads: mean/rstd stay float, arithmetic in
// float; dinp += dx rounds once per element, dweight/dbias are summed in float and added once.
// Two designs (LayerNormBackward below), giving the same values up to the order of float sums.
//
// residual_layernorm_forward (float and bf16) fuses residual_forward + layernorm_forward:
//   residual = inp1 + inp2 (stored: the residual stream), out = LN(residual) with mean/rstd,
// reading each row from memory once. The statistics are those of the STORED residual (bf16:
// after rounding), so layernorm_backward(..., inp = residual, ...) is consistent with them.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace gpt2cc::cuda {

// The backward's design. kFused: one pass over dout and inp; a warp per row keeps the row in
// registers, adds dx into dinp and sums its rows' dweight / dbias terms; each CTA (at most 264,
// from the shape) writes its partial sums, a second kernel adds them in a fixed order. It needs C a
// multiple of 8 (bf16) / 4 (float), C <= 1024, and 16-byte aligned dinp, dout, inp and weight.
// kTwoPass: a warp-per-row dinp kernel, then column sums over 64 fixed slices of rows that read
// dout and inp again; any shape. kAuto: kFused where it fits, else kTwoPass. Both are
// deterministic, their partitions of the rows the shape's alone: the same bits on every run and
// GPU. dinp: the same arithmetic in the same order as kTwoPass's bf16 loop (float: another order
// of the row sums). kFused on a shape it does not take throws InputError. bench_kernels times
// both (rows layernorm_backward, the kAuto choice, and layernorm_backward_twopass).
enum class LayerNormBackward { kAuto, kFused, kTwoPass };

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int B, int T, int C, cudaStream_t stream);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                        const float* rstd, const float* inp, const float* weight, int B, int T, int C,
                        cudaStream_t stream, LayerNormBackward design = LayerNormBackward::kAuto);
void residual_layernorm_forward(float* residual, float* out, float* mean, float* rstd, const float* inp1,
                                const float* inp2, const float* weight, const float* bias, int B, int T, int C,
                                cudaStream_t stream);

using bf16 = __nv_bfloat16;
void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* weight, const bf16* bias,
                       int B, int T, int C, cudaStream_t stream);
void layernorm_backward(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout, const float* mean,
                        const float* rstd, const bf16* inp, const bf16* weight, int B, int T, int C,
                        cudaStream_t stream, LayerNormBackward design = LayerNormBackward::kAuto);
// dweight / dbias in fp32 (a bf16 model's fp32 gradients): the same sums, added unrounded.
void layernorm_backward(bf16* dinp, float* dweight, float* dbias, const bf16* dout, const float* mean,
                        const float* rstd, const bf16* inp, const bf16* weight, int B, int T, int C,
                        cudaStream_t stream, LayerNormBackward design = LayerNormBackward::kAuto);
void residual_layernorm_forward(bf16* residual, bf16* out, float* mean, float* rstd, const bf16* inp1,
                                const bf16* inp2, const bf16* weight, const bf16* bias, int B, int T, int C,
                                cudaStream_t stream);
}  // namespace gpt2cc::cuda
