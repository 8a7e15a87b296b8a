// bf16 products on Intel AMX (Advanced Matrix Extensions: Sapphire Rapids and later Xeons), for
// the CPU's bf16 backend: out = bias + A . W^T with A and W in bf16, on tiles of 16 x 32 bf16
// whose dot products (TDPBF16PS) add exact bf16 x bf16 products into fp32 accumulators. Used
// where the CPU has AMX-BF16 and Linux grants a process its tile state (arch_prctl
// ARCH_REQ_XCOMP_PERM, Linux 5.16 and later); elsewhere the callers take their AVX2 / AVX-512
// paths. AMX reads a bf16 denormal as zero (the only difference from exact products).
#pragma once

#include <cstdint>

namespace gpt2cc::cpu {

// The CPU has AMX-BF16 and the kernel granted this process the tile data (asked once).
bool amx_bf16_available();
// Whether amx_matmul_bf16 may be used: available, unless switched off (tests and benchmarks
// compare both paths). Switching on where it is not available is an Error.
bool amx_bf16_enabled();
void set_amx_bf16_enabled(bool on);
// The shapes amx_matmul_bf16 takes: K (the depth) a multiple of 32, N a multiple of 32.
bool amx_bf16_shape(int N, int K);

// out (M x N, row-major) = bias (per column, or null for 0) + A (M x K, row-major) . W^T, with W
// (N x K, row-major) in bf16, over the OpenMP threads. Each output is the fp32 sum over k in
// blocks of 32, in order, of exact products: the same bits whatever M and whichever rows share
// the call. Requires amx_bf16_enabled() and amx_bf16_shape(N, K).
void amx_matmul_bf16(float* out, const uint16_t* A, const uint16_t* W, const float* bias, int M, int N, int K);
// The same sums, each rounded once into a bf16 out (cpu/bf16.hpp): the fp32 form's out rounded.
void amx_matmul_bf16(uint16_t* out, const uint16_t* A, const uint16_t* W, const float* bias, int M, int N, int K);

}  // namespace gpt2cc::cpu
