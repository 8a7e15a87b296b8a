// Linear layer: out (B,T,OC) = inp (B,T,C) . weight(OC,C)^T + bias (OC); bias may be null.
// Backward: dinp written (=); dweight and dbias accumulate (+=); dbias may be null.
// matmul_forward/matmul_backward are the plain loops (the specification); the *_blocked versions
// are cache-blocked and vectorisable, tested against them, and what the cpu backend runs.
#pragma once

#include <cstdint>

namespace gpt2cc::cpu {
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int T, int C, int OC);
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int B, int T, int C, int OC);
void matmul_forward_blocked(float* out, const float* inp, const float* weight, const float* bias, int B, int T, int C,
                            int OC);
void matmul_backward_blocked(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                             const float* weight, int B, int T, int C, int OC);
// Up to this many rows go through the bf16 matrix-vector loop, which reads the bf16 weights once
// and widens them in registers; more go through the blocked product on weights widened a block
// of rows at a time, which reads them twice more as fp32 (and adds in another order).
inline constexpr int kBf16MatvecRows = 32;
// The forward with the weight in bf16 (cpu/bf16.hpp; the CPU's bf16 backend), everything else
// fp32: each output is the fp32 sum of x * widen(w) (exact products), in an order of its own.
// Decoding's few rows read each weight once as bf16: half the bytes of the fp32 forward.
void matmul_forward_bf16_weight(float* out, const float* inp, const uint16_t* weight, const float* bias, int B, int T,
                                int C, int OC);
// The same with the input in bf16 too: from 33 rows up on AMX tiles where the CPU has AMX-BF16
// and C and OC are multiples of 32 (cpu/amx.hpp), else by gemm_bf16 where the CPU has AVX512-BF16
// (cpu/gemm.hpp; both: sums in another order, bf16 denormals as 0), else widened and as above.
void matmul_forward_bf16(float* out, const uint16_t* inp, const uint16_t* weight, const float* bias, int B, int T,
                         int C, int OC);
// Whether matmul_forward_bf16 of BT rows takes AMX tiles or gemm_bf16, whose bf16 forms round the
// outputs straight into a bf16 out (below; the other paths need an fp32 out to round from).
bool matmul_forward_bf16_direct(int BT, int C, int OC);
// matmul_forward_bf16's outputs rounded into a bf16 out, with no fp32 copy of them (the bf16
// forms of amx_matmul_bf16 and gemm_bf16); requires matmul_forward_bf16_direct(B * T, C, OC).
void matmul_forward_bf16(uint16_t* out, const uint16_t* inp, const uint16_t* weight, const float* bias, int B, int T,
                         int C, int OC);
// The backward with dout, inp and weight in bf16 (dinp written, dweight and dbias accumulated, as
// above): its two products by gemm_bf16 (cpu/gemm.hpp; sums in pairs of k), which it requires
// (gemm_bf16_enabled(); the bf16 backend widens the operands for matmul_backward_blocked
// otherwise). dbias (fp32): dout's column sums in matmul_backward_blocked's order. dinp and
// dweight fp32, or bf16 (DInp, DWeight = uint16_t: each the rounding of the fp32 result, through
// gemm_bf16's bf16 form). Instantiated for every pair of the two.
template <class DInp, class DWeight>
void matmul_backward_bf16(DInp* dinp, DWeight* dweight, float* dbias, const uint16_t* dout, const uint16_t* inp,
                          const uint16_t* weight, int B, int T, int C, int OC);
}  // namespace gpt2cc::cpu
