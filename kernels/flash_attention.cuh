// Fused causal flash attention for bf16 (FlashAttention-2, Dao 2023, arXiv:2307.08691): the
// T x T scores never leave the chip. qkv (B,T,3C) with q, k, v of head h at columns h*HS,
// C + h*HS, 2C + h*HS; out (B,T,C); lse (B,NH,T) fp32, the row log-sum-exp of the scaled scores
// (scale 1/sqrt(HS)), saved for the backward instead of the probabilities. Mirrors
// cpu::attention_forward / attention_backward without dropout. Backward: dqkv written (=),
// deterministic, by one of two designs (FlashBackward).
// Head sizes 64 and 128 (flash_attention_supported); any T >= 1 (B or T = 0: nothing to do).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace gpt2cc::cuda {

using bf16 = __nv_bfloat16;

// True for the head sizes the kernels are compiled for (64, 128).
bool flash_attention_supported(int HS);

// The rows one CTA owns (Q rows in the forward and dQ kernels, K/V rows in dK/dV), 16 per warp:
// kRows128 reads each streamed tile once for twice the rows, kRows64 launches twice the CTAs.
// kAuto: 128 unless that grid has fewer CTAs than the device has SMs. Every choice gives the
// same bits; the benchmark (bench_attention) measures both.
enum class FlashTile { kAuto, kRows64, kRows128 };
// The rows (64 or 128) a launch with `tile` takes on the current device at this shape.
int flash_attention_tile_rows(FlashTile tile, int B, int T, int NH);

// The backward's design; both are deterministic, and give different bits (sums in another order).
// kSplit: a dK/dV kernel over K/V tiles and a dQ kernel over Q tiles, each recomputing the
// scores and dP (7 matrix products per pair of tiles). kFused: one kernel over K/V tiles that also
// adds each Q tile's dQ parts, in K/V order, into an fp32 running sum (5 products, FlashAttention-2's
// count; scratch of B*T*C floats). kAuto: kFused (fewer products; the benchmark measures both).
enum class FlashBackward { kAuto, kSplit, kFused };
// The design a launch with `design` takes (kAuto resolved), and its name: "split" or "fused".
FlashBackward flash_attention_backward_design(FlashBackward design);
const char* flash_attention_backward_name(FlashBackward design);
// The stream-ordered scratch a backward call allocates and frees: delta (B*NH*T floats), plus for
// kFused dQ's running sums (B*T*C floats) and its counters.
size_t flash_attention_backward_scratch_bytes(int B, int T, int C, int NH, FlashBackward design);

void flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                             cudaStream_t stream, FlashTile tile = FlashTile::kAuto);
// out is the forward's output (for D = rowsum(dout * out)); lse the forward's saved values.
void flash_attention_backward(bf16* dqkv, const bf16* dout, const float* lse, const bf16* out, const bf16* qkv,
                              int B, int T, int C, int NH, cudaStream_t stream, FlashTile tile = FlashTile::kAuto,
                              FlashBackward design = FlashBackward::kAuto);

}  // namespace gpt2cc::cuda
