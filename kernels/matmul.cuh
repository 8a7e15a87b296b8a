// Linear layer on the GPU; mirrors cpu::matmul_forward / matmul_backward (cpu/matmul.hpp).
// out (B,T,OC) = inp (B,T,C) . weight (OC,C)^T + bias (OC); bias may be null.
// Backward: dinp written (=); dweight, dbias accumulate (+=); dbias may be null. fp32 GEMMs run
// through cuBLAS with CUBLAS_DEFAULT_MATH (no TF32), so results match the CPU to ~1e-6 relative;
// bf16 GEMMs run through cuBLASLt (fp32 accumulate, bias / GELU fused into the epilogue, see
// kernels/matmul_lt.cu). The *_gelu variants fuse the GELU (tanh form, cpu/gelu.hpp) that follows
// the MLP's first linear layer: out = gelu(pre), pre = inp W^T + b is saved for the backward.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>

namespace gpt2cc::cuda {

using bf16 = __nv_bfloat16;

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int T, int C, int OC,
                    cudaStream_t stream);
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int B, int T, int C, int OC, cudaStream_t stream);

// How a bf16 backward adds dbias (the fp32 backward always takes the column sums):
// - kColumnSum: after the two GEMMs, a column-sum kernel reads dout once more and adds its sums,
//   in a fixed order, into dbias (matmul_internal::accumulate_column_sums; one rounding).
// - kEpilogue: the dweight GEMM's cuBLASLt epilogue BGRADB ("bias gradient based on the input
//   matrix B ... the reduction happens over the GEMM's k dimension", cublasLt.h) sums dout's
//   columns while the GEMM streams dout anyway, into a bf16 scratch vector that is then added to
//   dbias (two roundings). Where cuBLASLt declines it (or the operands are not eligible) the plain
//   GEMM and the column sums compute the same (counted as a fallback, matmul_path_counts). Whether
//   cuBLASLt's sum has a fixed order is not documented: tests/cuda/test_bf16_matmul.cpp checks that
//   repeated calls give the same bits.
// kAuto: kColumnSum. Neither has been timed against the other on a GPU yet (bench_kernels:
// matmul_backward and matmul_backward_bgradb; the designs stage of scripts/bench_gpu.sh).
enum class BiasGradient { kAuto, kColumnSum, kEpilogue };

// What the bf16 GEMMs tell cuBLASLt's heuristic about their operands' alignment
// (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_{A,B,C,D}_BYTES; "selecting a smaller value will exclude
// algorithms that can not work with matrix A that is not as strictly aligned as they need",
// cublasLt.h, default 256):
// - kOperand: each operand's own alignment, of its pointer and its leading dimension in bytes,
//   up to 256, as PyTorch does (CUDABlas.cpp: the pointers' alignment). GPT-2's operands are all
//   256-byte aligned. The choice is cached per alignment, so a less aligned slice of the same shape
//   gets an algorithm of its own.
// - k16: 16 bytes for every operand, what cublaslt_eligible guarantees (it may exclude the
//   fastest algorithms).
// kAuto: kOperand. Not yet timed against k16 on a GPU (the designs stage of scripts/bench_gpu.sh).
enum class GemmAlignment { kAuto, kOperand, k16 };

// Which split-K reductions cuBLASLt may use for the bf16 GEMMs
// (CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK; cublasLt.h, cublasLtReductionScheme_t):
// - kFp32: only COMPUTE_TYPE, the parts' sums kept in fp32 in the workspace and added up in a
//   separate step, so a split GEMM rounds to bf16 once, like an unsplit one.
// - kAny: also INPLACE and OUTPUT_TYPE, which add the parts up in bf16 (one rounding per part):
//   PyTorch's default (torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True).
//   Where it pays: the dweight GEMMs, whose k is B*T and whose output is small.
// Both repeat their bits: INPLACE keeps the parts in order with counters in the workspace
// (cublasLt.h); the train CLI's [cuda] stop-and-resume test runs kAny and checks it.
// kAuto: kFp32. Not yet timed against kAny on a GPU (the designs stage of scripts/bench_gpu.sh).
enum class GemmSplitK { kAuto, kFp32, kAny };

// The workspace the bf16 GEMMs offer cuBLASLt (CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES; the
// stream's workspace grows to it, gemm_workspace below). Split-K with fp32 partial sums
// (GemmSplitK::kFp32) keeps one m x n fp32 part per split there, so the workspace bounds the splits
// of the dweight GEMMs, whose output is small and whose k is B*T: fc's 768 x 3072 is 9.4 MB a
// part, 3 parts in 32 MiB, so 216 CTAs of 128 x 256 for 132 SMs on an H200.
// - k32MiB: NVIDIA's recommendation for Hopper (cuBLAS docs, cublasSetWorkspace).
// - k256MiB: room for 28 such parts, at 224 MiB more device memory.
// kAuto: k32MiB. Not yet timed against k256MiB on a GPU (the designs stage of scripts/bench_gpu.sh).
enum class GemmWorkspace { kAuto, k32MiB, k256MiB };

// Where the bf16 *_gelu launchers compute the MLP's GELU and its gradient:
// - kEpilogue: in the GEMM's cuBLASLt epilogue. The forward's GELU_AUX_BIAS writes both pre (the
//   aux output) and gelu(pre); the backward's DGELU reads pre while the dinp GEMM stores.
// - kSeparate: the GEMM with the bias epilogue alone writes pre, then the GELU kernel of
//   kernels/gelu.cuh reads it and writes gelu(pre); the backward's dinp GEMM stores dout W, which
//   the GELU backward kernel multiplies by gelu'(pre) in place. So the GELU reads pre rounded to
//   bf16, and dout W is rounded before the product is. llm.c's default (its gelu_fusion 0): an
//   epilogue's algorithm may lose more than the kernel's pass over the (B, T, 4C) tensor costs
//   (bench_kernels at B = 8 on an H200: the fc forward with the epilogue at 49% of the bf16 peak,
//   the qkv forward without one at 61%).
// kAuto: kEpilogue. Not yet timed against kSeparate on a GPU (the designs stage of
// scripts/bench_gpu.sh).
enum class GeluFusion { kAuto, kEpilogue, kSeparate };
// The designs of one bf16 GEMM call (kernels/kernel_designs.cuh names them for the backend).
struct GemmDesign {
  GemmAlignment alignment = GemmAlignment::kAuto;
  GemmSplitK split_k = GemmSplitK::kAuto;
  BiasGradient bias_gradient = BiasGradient::kAuto;  // backward launchers only
  GemmWorkspace workspace = GemmWorkspace::kAuto;
  GeluFusion gelu = GeluFusion::kAuto;  // *_gelu launchers only
};

void matmul_forward(bf16* out, const bf16* inp, const bf16* weight, const bf16* bias, int B, int T, int C, int OC,
                    cudaStream_t stream, const GemmDesign& design = {});
void matmul_backward(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout, const bf16* inp, const bf16* weight,
                     int B, int T, int C, int OC, cudaStream_t stream, const GemmDesign& design = {});
// The same with the parameter gradients in fp32: the dweight GEMM's output type (cuBLASLt D and
// C, or cublasGemmEx's C, CUDA_R_32F) is fp32, so its products add to dweight unrounded (a sum kept
// in fp32 across calls: a model's fp32 gradients, or the classifier chunks' sum of wte's); dbias
// (fp32) by the column sums whatever the design (BGRADB would write its sums in D's type).
void matmul_backward(bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp, const bf16* weight,
                     int B, int T, int C, int OC, cudaStream_t stream, const GemmDesign& design = {});

// out = gelu(pre), pre = inp W^T + b (both (B,T,OC); bias may be null).
void matmul_forward_gelu(float* out, float* pre, const float* inp, const float* weight, const float* bias, int B, int T,
                         int C, int OC, cudaStream_t stream);
void matmul_forward_gelu(bf16* out, bf16* pre, const bf16* inp, const bf16* weight, const bf16* bias, int B, int T,
                         int C, int OC, cudaStream_t stream, const GemmDesign& design = {});
// For a layer whose input went through a GELU: inp = gelu(pre), pre (B,T,C) saved by the forward.
// dinp = (dout W) * gelu'(pre) (written), dweight += dout^T inp, dbias += sum_rows dout (may be null).
void matmul_backward_gelu(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                          const float* weight, const float* pre, int B, int T, int C, int OC, cudaStream_t stream);
void matmul_backward_gelu(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout, const bf16* inp,
                          const bf16* weight, const bf16* pre, int B, int T, int C, int OC, cudaStream_t stream,
                          const GemmDesign& design = {});
void matmul_backward_gelu(bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp,
                          const bf16* weight, const bf16* pre, int B, int T, int C, int OC, cudaStream_t stream,
                          const GemmDesign& design = {});

// Whether the bf16 launchers can hand a GEMM over C and OC with these operands to cuBLASLt:
// every pointer (nulls ignored) 16-byte aligned and C, OC multiples of 8 (leading dimensions of
// whole 16-byte vectors, and the GELU aux leading dimension must be divisible by 8). Otherwise
// they take the plain path (cublasGemmEx + separate bias / GELU kernels). Exposed for the tests.
bool cublaslt_eligible(int C, int OC, std::initializer_list<const void*> pointers);

// How this host thread's bf16 GEMMs ran, one count per GEMM (a forward call makes one, a
// backward call two), by the path it took: `lt` one cublasLtMatmul with the epilogue fused
// (for a BiasGradient::kEpilogue backward, the dweight GEMM's BGRADB included);
// `plain` cublasGemmEx plus the separate bias / GELU kernels. `fallback` counts the plain GEMMs
// whose operands were eligible, where cuBLASLt itself declined (no algorithm from the heuristic,
// or cublasLtMatmul NOT_SUPPORTED; with GPT2CC_REQUIRE_CUBLASLT=1 those throw instead, naming the
// shape and the status). Counted on the host when a launcher runs (no synchronisation, no
// allocation): a CUDA graph replay runs no host code, so only the captured calls count. For the
// tests (tests/cuda/test_bf16_matmul.cpp) and for diagnostics; fp32 GEMMs are not counted.
struct MatmulPathCounts {
  uint64_t lt = 0;
  uint64_t plain = 0;
  uint64_t fallback = 0;  // included in plain
};
MatmulPathCounts matmul_path_counts();
void reset_matmul_path_counts();

// The GEMM workspace of `stream` on the current device, of `bytes` at least (allocated at the
// stream's first call, by cudaMalloc, so not inside a CUDA-graph capture of the global mode: a
// backend sizes it when it is made; a smaller one is replaced, and stays allocated for the GEMMs
// in flight and the CUDA graphs captured with it until the release):
// cuBLAS and cuBLASLt calls on that stream use it, so no GEMM allocates (the calls can be captured
// in CUDA graphs) and GEMMs on different streams can run concurrently. release_gemm_workspace
// frees it; call it once the stream's work is done, before destroying it.
inline constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;  // NVIDIA's recommendation for Hopper
struct GemmWorkspaceBuffer {
  void* data;
  size_t bytes;
};
GemmWorkspaceBuffer gemm_workspace(cudaStream_t stream, size_t bytes = kGemmWorkspaceBytes);
void release_gemm_workspace(cudaStream_t stream) noexcept;
// The bytes a GemmWorkspace design offers.
size_t gemm_workspace_bytes(GemmWorkspace design);

// The cuBLAS handle of the current device for this host thread (created on first use, TF32
// off), bound to `stream` and to that stream's GEMM workspace.
cublasHandle_t cublas_handle(cudaStream_t stream);

// Helpers shared by the fp32 launchers (matmul.cu) and the bf16 ones (matmul_lt.cu); instantiated
// for float and bf16. Arithmetic in float, one rounding on store.
namespace matmul_internal {
// out[r, o] += bias[o] for r < rows.
template <class Elem>
void add_bias(Elem* out, const Elem* bias, int rows, int OC, cudaStream_t stream);
// dbias[o] = dbias[o] + sum_{r < rows} dout[r, o], summed in a fixed order (deterministic, no atomics).
// Out = Elem, or float for bf16 dout (fp32 gradients).
template <class Out, class Elem>
void accumulate_column_sums(Out* dbias, const Elem* dout, int rows, int OC, cudaStream_t stream);
}  // namespace matmul_internal

}  // namespace gpt2cc::cuda
