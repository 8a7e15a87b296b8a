// Test-only controls of the host cuBLASLt (cublaslt.cpp). The emulated heuristic normally offers
// one algorithm for every problem it models; a real cuBLASLt may decline a shape on some GPU or
// version. These make it decline in each documented way, so that the callers' fallback
// (kernels/matmul_lt.cu: cublasGemmEx plus separate kernels) runs in CI: tests/emu/test_emu_matmul.cpp.
// Process-wide settings; a test sets them and puts the defaults back (CublasLtFaultScope).
#pragma once

#include <cstddef>
#include <cstdint>

namespace gpt2cc::hostcuda {

enum class CublasLtFault {
  none,                      // the heuristic offers its one algorithm; cublasLtMatmul runs it
  heuristic_not_supported,   // cublasLtMatmulAlgoGetHeuristic returns CUBLAS_STATUS_NOT_SUPPORTED
  heuristic_no_algorithm,    // ... returns CUBLAS_STATUS_SUCCESS and *returnAlgoCount = 0
  heuristic_result_state,    // ... returns one result whose state is CUBLAS_STATUS_NOT_SUPPORTED
  heuristic_over_workspace,  // ... returns one result needing MAX_WORKSPACE_BYTES + 1 bytes (cuBLASLt
                             //     promises never to; a caller that checks takes it as declined)
  matmul_not_supported,      // cublasLtMatmul returns CUBLAS_STATUS_NOT_SUPPORTED and runs nothing
};
void set_cublaslt_fault(CublasLtFault fault);

// The workspace the one algorithm needs (default 0). The heuristic honours the preference's
// CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES (default 0): it offers the algorithm only if that allows
// this much, and otherwise none (CUBLAS_STATUS_SUCCESS, *returnAlgoCount = 0); cublasLtMatmul
// returns CUBLAS_STATUS_INVALID_VALUE when given a smaller workspace (cublasLt.h) and requires the
// workspace it is given to be device memory.
void set_cublaslt_algo_workspace(size_t bytes);

// What the heuristic (cublasLtMatmulAlgoGetHeuristic) was asked last: the preference's
// MIN_ALIGNMENT_{A,B,C,D}_BYTES (default 256), REDUCTION_SCHEME_MASK (default all schemes) and
// MAX_WORKSPACE_BYTES (default 0), and how many times it has been asked in this process (a query served from a caller's cache
// does not reach it). For the tests of what the launchers ask (tests/emu/test_emu_matmul.cpp).
struct CublasLtQuery {
  uint32_t min_alignment[4];  // A, B, C, D
  uint32_t reduction_scheme_mask;
  uint64_t max_workspace_bytes;
  uint64_t count;
};
CublasLtQuery last_cublaslt_query();

// A GEMM's problem as the host cuBLASLt sees it: op(A) m x k, op(B) k x n, the transposes, the
// epilogue, and the alignment of the bias and aux pointers (1 where the epilogue has none).
struct CublasLtProblem {
  int m, n, k;
  bool trans_a, trans_b;
  uint32_t epilogue;
  uint32_t bias_alignment, aux_alignment;
  bool operator==(const CublasLtProblem&) const = default;
};
// An algorithm the heuristic returned, and what it was chosen for: the problem, and the
// preference's MIN_ALIGNMENT_{A,B,C,D}_BYTES, REDUCTION_SCHEME_MASK and MAX_WORKSPACE_BYTES; and
// the workspace it needs.
struct CublasLtAlgorithm {
  CublasLtProblem problem;
  uint32_t min_alignment[4];  // A, B, C, D
  uint32_t reduction_scheme_mask;
  uint64_t max_workspace_bytes;
  uint64_t workspace_bytes;
};
// The last cublasLtMatmul that ran, and the algorithm it was given. cuBLASLt lets any algorithm
// run any problem it supports, so the emulator does not refuse a foreign one; this is for the
// tests that a caller's algorithm cache gives each GEMM one chosen for it (kernels/matmul_lt.cu's
// key).
struct CublasLtMatmulRecord {
  CublasLtProblem call;
  uint64_t call_workspace_bytes;  // its workspaceSizeInBytes
  CublasLtAlgorithm algo;
  uint64_t count;    // cublasLtMatmul calls that ran, in this process
  uint64_t foreign;  // ... of which with an algorithm chosen for another problem or workspace
};
CublasLtMatmulRecord last_cublaslt_matmul();

// Sets a fault and a workspace requirement for one scope, then puts the defaults back.
struct CublasLtFaultScope {
  explicit CublasLtFaultScope(CublasLtFault fault, size_t algo_workspace = 0) {
    set_cublaslt_fault(fault);
    set_cublaslt_algo_workspace(algo_workspace);
  }
  ~CublasLtFaultScope() {
    set_cublaslt_fault(CublasLtFault::none);
    set_cublaslt_algo_workspace(0);
  }
  CublasLtFaultScope(const CublasLtFaultScope&) = delete;
  CublasLtFaultScope& operator=(const CublasLtFaultScope&) = delete;
};

}  // namespace gpt2cc::hostcuda
