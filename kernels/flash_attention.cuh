// Fused causal flash attention for bf16 (FlashAttention-2, Dao 2023, arXiv:2307.08691): the
// T x T scores never leave the chip. qkv (B,T,3C) with q, k, v of head h at columns h*HS,
// C + h*HS, 2C + h*HS; out (B,T,C); lse (B,NH,T) fp32, the row log-sum-exp of the scaled scores
// (scale 1/sqrt(HS)), saved for the backward instead of the probabilities. Mirrors
// cpu::attention_forward_blocked / attention_backward_blocked (which save lse too) without
// dropout. Backward: dqkv written (=), deterministic, by one of two designs (FlashBackward).
// Head sizes 64 and 128 (flash_attention_supported); any T >= 1 (B or T = 0: nothing to do).
// Shared memory per block, beyond the 48 KiB a launch gets by default, within the device's opt-in
// limit (227 KiB on sm_90, 163 KiB on sm_80, 99 KiB on sm_86 / sm_89): HS 64 needs 45-91 KiB,
// HS 128 85-155 KiB (flash_attention_device.cuh), so sm_86 / sm_89 hold HS 64 only (HS 128: the
// forward at 64-row tiles); flash_attention_fits_device says so before any launch. Needs a GPU of
// compute capability 8.0 or newer (sm_75 has neither cp.async nor bf16 mma.sync).
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
// kAuto: 128 unless that grid has fewer CTAs than the device has SMs, or the device cannot hold
// the 128-row kernels (judged for the forward and the backward apart). Every choice gives the
// same bits; the benchmark (bench_attention) measures both. A tile the device cannot hold throws
// gpt2cc::Error naming the kernel, its bytes, the device's limit and what to take instead.
enum class FlashTile { kAuto, kRows64, kRows128 };

// The backward's design; both are deterministic, and give different bits (sums in another order).
// kSplit: a dK/dV kernel over K/V tiles and a dQ kernel over Q tiles, each recomputing the
// scores and dP (7 matrix products per pair of tiles). kFused: one kernel over K/V tiles that also
// adds each Q tile's dQ parts, in K/V order, into an fp32 running sum (5 products, FlashAttention-2's
// count; scratch of B*T*C floats). kAuto: kSplit. On an H200 (bench_attention, 2026-12-04) the
// split backward took 0.32 / 0.58 / 0.49 / 0.92 ms where the fused one took 0.41 / 0.81 / 0.73 /
// 1.42 (B x NH x T x HS = 8/16 x 12 x 1024 x 64/128): its two more products cost less than the
// fused one's ordered dQ hand-over between CTAs. The benchmark keeps measuring both.
enum class FlashBackward { kAuto, kSplit, kFused };
// The design a launch with `design` takes (kAuto resolved), and its name: "split" or "fused".
FlashBackward flash_attention_backward_design(FlashBackward design);
const char* flash_attention_backward_name(FlashBackward design);

// Whether the code the current device runs from this build has the flash kernels: code compiled
// for sm_80 or newer (cudaFuncAttributes::ptxVersion >= 80). False on an sm_75 GPU (no cp.async
// or bf16 mma.sync: there the kernels are traps) and on a newer GPU whose only code in this build
// is compute_75 PTX (GPT2CC_CUDA_ARCHITECTURES=75). An attribute query.
bool flash_attention_built_for_device();

// Whether the current device holds (cudaDevAttrMaxSharedMemoryPerBlockOptin) the forward's kernel
// and the kernels of the backward `design`, at 64-row tiles at least: then FlashTile::kAuto always
// runs. True on sm_80 and sm_90 for both head sizes, on sm_86 / sm_89 for HS 64 only; false for an
// unsupported HS and where flash_attention_built_for_device is false (a launch there throws).
// Where it is false, the tiled attention (kernels/attention.cuh: under 48 KiB of shared memory per
// block at any HS) computes the same. Attribute queries: no synchronisation, allowed during stream
// capture.
bool flash_attention_fits_device(int HS, FlashBackward design = FlashBackward::kAuto);
// The same for the forward alone (a prefill without backward): also true for HS 128 on sm_86 / sm_89.
bool flash_attention_forward_fits_device(int HS);
// The rows (64 or 128) a forward / backward launch with `tile` takes on the current device at this
// shape (HS = C/NH supported).
int flash_attention_forward_tile_rows(FlashTile tile, int B, int T, int C, int NH);
int flash_attention_backward_tile_rows(FlashTile tile, int B, int T, int C, int NH,
                                       FlashBackward design = FlashBackward::kAuto);
// The stream-ordered scratch a backward call allocates and frees: delta (B*NH*T floats), plus for
// kFused dQ's running sums (B*T*C floats) and its counters.
size_t flash_attention_backward_scratch_bytes(int B, int T, int C, int NH, FlashBackward design);

void flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                             cudaStream_t stream, FlashTile tile = FlashTile::kAuto);
// out is the forward's output (for D = rowsum(dout * out)); lse the forward's saved values.
void flash_attention_backward(bf16* dqkv, const bf16* dout, const float* lse, const bf16* qkv, const bf16* out,
                              int B, int T, int C, int NH, cudaStream_t stream, FlashTile tile = FlashTile::kAuto,
                              FlashBackward design = FlashBackward::kAuto);

}  // namespace gpt2cc::cuda
