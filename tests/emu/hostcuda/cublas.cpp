// A host cuBLAS, linked instead of libcublas: the handle calls and the two GEMMs kernels/ uses,
// written from the cuBLAS documentation ("cublas<t>gemm()", "cublasGemmEx()"):
//   C = alpha * op(A) op(B) + beta * C, column-major, op(A) m x k, op(B) k x n, C m x n,
//   lda >= max(1, rows of A as stored) (m for OP_N, k for OP_T), ldb likewise, ldc >= max(1, m);
//   when beta == 0, C need not hold valid numbers (it is not read).
// Every product is exact and the sum is taken in double (gemm.hpp); bf16 C is rounded once. A GEMM
// runs on the handle's stream: at once, or at each replay of a graph captured from it. Operand
// memory must be device memory (cudaMalloc'ed), as on a GPU, where a host pointer faults.
// Modes the emulation does not model (TF32 math, device pointer mode, other types) throw.
#include <cublas_v2.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "emu/hostcuda/gemm.hpp"
#include "emu/hostcuda/hostcuda.hpp"

struct cublasContext {
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
};

namespace gpt2cc::hostcuda {
namespace {

[[noreturn]] void not_emulated(const std::string& what) { throw std::logic_error("host cuBLAS: " + what + " is not emulated"); }

void require_device(const char* call, const char* name, const void* p, size_t bytes) {
  if (bytes > 0 && !is_device_memory(p, bytes))
    throw std::logic_error(std::string(call) + ": " + name + " (" + std::to_string(bytes) +
                           " bytes) is not inside one device allocation; on a GPU this is an illegal address");
}

struct GemmCall {
  cublasOperation_t transa, transb;
  int m, n, k;
  float alpha, beta;
  const void* a;
  cudaDataType atype;
  int lda;
  const void* b;
  cudaDataType btype;
  int ldb;
  void* c;
  cudaDataType ctype;
  int ldc;
};

cublasStatus_t gemm(const char* name, cublasHandle_t handle, const GemmCall& g, const void* alpha, const void* beta) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  // N, T or C; for real types C is T (cuBLAS docs, cublasOperation_t).
  if (g.transa > CUBLAS_OP_C || g.transb > CUBLAS_OP_C) return CUBLAS_STATUS_INVALID_VALUE;
  const bool ta = g.transa != CUBLAS_OP_N, tb = g.transb != CUBLAS_OP_N;
  const int a_rows = ta ? g.k : g.m, b_rows = tb ? g.n : g.k;
  if (g.m < 0 || g.n < 0 || g.k < 0 || g.lda < std::max(1, a_rows) || g.ldb < std::max(1, b_rows) ||
      g.ldc < std::max(1, g.m) || alpha == nullptr || beta == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (handle->pointer_mode != CUBLAS_POINTER_MODE_HOST) not_emulated("CUBLAS_POINTER_MODE_DEVICE");
  if ((handle->math & ~CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION) != CUBLAS_DEFAULT_MATH &&
      (handle->math & ~CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION) != CUBLAS_PEDANTIC_MATH)
    not_emulated("math mode " + std::to_string(static_cast<int>(handle->math)));
  if (g.m == 0 || g.n == 0) return CUBLAS_STATUS_SUCCESS;
  GemmCall call = g;
  call.alpha = *static_cast<const float*>(alpha);
  call.beta = *static_cast<const float*>(beta);
  const size_t a_cols = ta ? g.m : g.k, b_cols = tb ? g.k : g.n;
  if (g.k > 0 && call.alpha != 0.0f) {
    require_device(name, "A", g.a, stored_elements(a_rows, a_cols, g.lda) * element_bytes(g.atype));
    require_device(name, "B", g.b, stored_elements(b_rows, b_cols, g.ldb) * element_bytes(g.btype));
  }
  require_device(name, "C", g.c, stored_elements(g.m, g.n, g.ldc) * element_bytes(g.ctype));
  const cudaError_t err = enqueue(handle->stream, [call, ta, tb] {
    std::vector<double> acc;
    if (call.k > 0 && call.alpha != 0.0f)
      acc = product(Operand{call.a, call.atype, call.lda, ta}, Operand{call.b, call.btype, call.ldb, tb}, call.m,
                    call.n, call.k);
    for (size_t j = 0; j < static_cast<size_t>(call.n); ++j) {
      for (size_t i = 0; i < static_cast<size_t>(call.m); ++i) {
        const size_t at = i + j * call.ldc;
        double value = acc.empty() ? 0.0 : call.alpha * acc[i + j * call.m];
        if (call.beta != 0.0f) value += static_cast<double>(call.beta) * load(call.c, call.ctype, at);
        store(call.c, call.ctype, at, static_cast<float>(value));
      }
    }
  });
  return err == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

}  // namespace
}  // namespace gpt2cc::hostcuda

namespace hc = gpt2cc::hostcuda;

extern "C" {

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

// cuBLAS docs, cublasSetStream: "resets the user-provided workspace to the default workspace pool".
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t streamId) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = streamId;
  handle->workspace = nullptr;
  handle->workspace_bytes = 0;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t* streamId) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (streamId == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *streamId = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

// cuBLAS docs, cublasSetWorkspace: the workspace pointer must be aligned to at least 256 bytes.
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t workspaceSizeInBytes) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (reinterpret_cast<uintptr_t>(workspace) % 256 != 0) return CUBLAS_STATUS_INVALID_VALUE;
  if (workspaceSizeInBytes > 0 && !hc::is_device_memory(workspace, workspaceSizeInBytes))
    return CUBLAS_STATUS_INVALID_VALUE;
  handle->workspace = workspace;
  handle->workspace_bytes = workspaceSizeInBytes;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                           int k, const float* alpha, const float* A, int lda, const float* B, int ldb,
                           const float* beta, float* C, int ldc) {
  return hc::gemm("cublasSgemm", handle,
                  hc::GemmCall{transa, transb, m, n, k, 0.0f, 0.0f, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, C,
                               CUDA_R_32F, ldc},
                  alpha, beta);
}

// cuBLAS docs, cublasGemmEx: with CUBLAS_COMPUTE_32F (or _PEDANTIC) alpha and beta are float;
// emulated type combinations: A, B, C all CUDA_R_32F, or A, B CUDA_R_16BF with C CUDA_R_16BF or
// CUDA_R_32F. The algorithm argument selects nothing here (every algorithm gives the same product).
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
  if (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_PEDANTIC)
    hc::not_emulated("cublasGemmEx compute type " + std::to_string(static_cast<int>(computeType)));
  const bool all_fp32 = Atype == CUDA_R_32F && Btype == CUDA_R_32F && Ctype == CUDA_R_32F;
  const bool bf16_in = Atype == CUDA_R_16BF && Btype == CUDA_R_16BF && (Ctype == CUDA_R_16BF || Ctype == CUDA_R_32F);
  if (!all_fp32 && !bf16_in) hc::not_emulated("cublasGemmEx with these A/B/C types");
  return hc::gemm("cublasGemmEx", handle,
                  hc::GemmCall{transa, transb, m, n, k, 0.0f, 0.0f, A, Atype, lda, B, Btype, ldb, C, Ctype, ldc},
                  alpha, beta);
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
#define GPT2CC_STATUS_NAME(s) \
  case s: return #s;
    GPT2CC_STATUS_NAME(CUBLAS_STATUS_SUCCESS)
    GPT2CC_STATUS_NAME(CUBLAS_STATUS_NOT_INITIALIZED)
    GPT2CC_STATUS_NAME(CUBLAS_STATUS_ALLOC_FAILED)
    GPT2CC_STATUS_NAME(CUBLAS_STATUS_INVALID_VALUE)
    GPT2CC_STATUS_NAME(CUBLAS_STATUS_ARCH_MISMATCH)
    GPT2CC_STATUS_NAME(CUBLAS_STATUS_MAPPING_ERROR)
    GPT2CC_STATUS_NAME(CUBLAS_STATUS_EXECUTION_FAILED)
    GPT2CC_STATUS_NAME(CUBLAS_STATUS_INTERNAL_ERROR)
    GPT2CC_STATUS_NAME(CUBLAS_STATUS_NOT_SUPPORTED)
    GPT2CC_STATUS_NAME(CUBLAS_STATUS_LICENSE_ERROR)
#undef GPT2CC_STATUS_NAME
    default: return "<unknown>";
  }
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "an error was detected when checking the current licensing";
    default: return "unknown error";
  }
}

}  // extern "C"
