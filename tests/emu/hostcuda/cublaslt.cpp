// A host cuBLASLt, linked instead of libcublasLt, written from cublasLt.h's documentation (the
// text of the cuBLAS docs, "cublasLtMatmul", "cublasLtEpilogue_t", "cublasLtMatmulDescAttributes_t"):
//   D = epilogue(alpha * op(A) op(B) + beta * C), column-major, C read only when beta != 0;
//   BIAS: "broadcasted to all columns and added before applying final postprocessing", one
//     element per row of D, of D's type (BIAS_DATA_TYPE default);
//   GELU: x := GELU(x); *_AUX: the GELU input is also written to the aux buffer (D's type,
//     leading dimension EPILOGUE_AUX_LD, "divisible by 8 and no less than the number of rows");
//   DGELU: "Apply GELU gradient to matmul output": D = x * GELU'(aux);
//   BGRADB: "Bias gradient based on the input matrix B ... the number of columns of the matrix
//     D. The reduction happens over the GEMM's k dimension", written to the bias pointer in D's
//     type: bias[j] = sum_k op(B)[k, j], in double, rounded once (whether alpha scales it the
//     header does not say: only alpha = 1 is emulated).
// GELU is the tanh form, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (cuBLAS does not say;
// see kernels/matmul_lt.cu for the evidence), computed in double and rounded once to D's type.
// The heuristic returns one algorithm and remembers what it was chosen for: the problem, the
// operand alignments of the preference (default 256 bytes) and the alignment of the bias and aux
// pointers (cublasLt.h: the heuristic "depend[s] on its value to determine expected pointer
// alignment"); cublasLtMatmul refuses (NOT_SUPPORTED) pointers less aligned than that, and tells
// the tests which problem its algorithm was chosen for (last_cublaslt_matmul). The algorithm
// needs no workspace unless a test says otherwise; the heuristic offers it only within the
// preference's MAX_WORKSPACE_BYTES, and cublasLtMatmul refuses (INVALID_VALUE) a smaller
// workspace. Tests can also make either call decline, and read what the heuristic was last asked
// (cublaslt_faults.hpp). Attributes, epilogues and types not modelled here throw instead of
// being ignored.
#include <cublasLt.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "emu/hostcuda/cublaslt_faults.hpp"
#include "emu/hostcuda/gemm.hpp"
#include "emu/hostcuda/hostcuda.hpp"

struct cublasLtContext {
  int device = 0;
};

namespace gpt2cc::hostcuda {
namespace {

// The one algorithm, in cublasLtMatmulAlgo_t::data: [0] this magic (an algorithm this heuristic
// returned), [1] its index in g_algorithms, which holds what it was chosen for.
constexpr uint64_t kAlgoMagic = 0x67707432636345ull;

std::atomic<CublasLtFault> g_fault{CublasLtFault::none};
std::mutex g_query_mutex;
CublasLtQuery g_last_query{};                 // guarded by g_query_mutex
std::vector<CublasLtAlgorithm> g_algorithms;  // guarded by g_query_mutex
CublasLtMatmulRecord g_last_matmul{};         // guarded by g_query_mutex
std::atomic<size_t> g_algo_workspace{0};

[[noreturn]] void not_emulated(const std::string& what) { throw std::logic_error("host cuBLASLt: " + what + " is not emulated"); }

struct Desc {
  cublasLtMatmulDescOpaque_t opaque;  // first: the handle points at it
  cublasComputeType_t compute;
  cudaDataType scale;
  cublasOperation_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  const void* aux = nullptr;
  int64_t aux_ld = 0;
};
struct Layout {
  cublasLtMatrixLayoutOpaque_t opaque;
  cudaDataType type;
  uint64_t rows, cols;
  int64_t ld;
};
struct Preference {
  cublasLtMatmulPreferenceOpaque_t opaque;
  uint64_t max_workspace = 0;
  uint32_t min_alignment[4] = {256, 256, 256, 256};  // A, B, C, D
  uint32_t reduction_scheme_mask = CUBLASLT_REDUCTION_SCHEME_MASK;
};

Desc* desc_of(cublasLtMatmulDesc_t d) { return reinterpret_cast<Desc*>(d); }
Layout* layout_of(cublasLtMatrixLayout_t l) { return reinterpret_cast<Layout*>(l); }
Preference* preference_of(cublasLtMatmulPreference_t p) { return reinterpret_cast<Preference*>(p); }

template <class Value>
bool read_attribute(Value& out, const void* buf, size_t size) {
  if (buf == nullptr || size != sizeof(Value)) return false;
  std::memcpy(&out, buf, sizeof(Value));
  return true;
}

uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

bool uses_bias(cublasLtEpilogue_t e) { return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS; }
bool bias_gradient(cublasLtEpilogue_t e) { return e == CUBLASLT_EPILOGUE_BGRADB; }
bool writes_aux(cublasLtEpilogue_t e) { return e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS; }
bool applies_gelu(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_GELU || e == CUBLASLT_EPILOGUE_GELU_BIAS || writes_aux(e);
}

double gelu(double x) {
  const double s = std::sqrt(2.0 / M_PI);
  return 0.5 * x * (1.0 + std::tanh(s * (x + 0.044715 * x * x * x)));
}
// d/dx of gelu: 0.5 (1 + t) + 0.5 x (1 - t^2) s (1 + 3 * 0.044715 x^2), t = tanh(s (x + 0.044715 x^3)).
double gelu_grad(double x) {
  const double s = std::sqrt(2.0 / M_PI);
  const double t = std::tanh(s * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * s * (1.0 + 3.0 * 0.044715 * x * x);
}

// The problem the descriptors describe: op(A) m x k, op(B) k x n, C and D m x n; false when the
// layouts disagree (CUBLAS_STATUS_INVALID_VALUE) or the epilogue lacks its pointers.
struct Problem {
  int m, n, k;
};
cublasStatus_t problem_of(const Desc& d, const Layout& a, const Layout& b, const Layout& c, const Layout& dl, Problem& p) {
  const bool ta = d.transa != CUBLAS_OP_N, tb = d.transb != CUBLAS_OP_N;
  const uint64_t m = dl.rows, n = dl.cols, k = ta ? a.rows : a.cols;
  if ((ta ? a.cols : a.rows) != m || (tb ? b.rows : b.cols) != n || (tb ? b.cols : b.rows) != k || c.rows != m ||
      c.cols != n || c.ld != dl.ld || c.type != dl.type)
    return CUBLAS_STATUS_INVALID_VALUE;
  for (const Layout* l : {&a, &b, &c, &dl})
    if (l->ld < static_cast<int64_t>(std::max<uint64_t>(1, l->rows))) return CUBLAS_STATUS_INVALID_VALUE;
  if ((uses_bias(d.epilogue) || bias_gradient(d.epilogue)) && d.bias == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (writes_aux(d.epilogue) || d.epilogue == CUBLASLT_EPILOGUE_DGELU) {
    if (d.aux == nullptr || d.aux_ld % 8 != 0 || d.aux_ld < static_cast<int64_t>(m)) return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (d.compute != CUBLAS_COMPUTE_32F || d.scale != CUDA_R_32F) not_emulated("a compute/scale type other than 32F/32F");
  if (a.type != b.type || (a.type != CUDA_R_16BF && a.type != CUDA_R_32F) || element_bytes(dl.type) == 0)
    not_emulated("these A/B/C/D types");
  p = Problem{static_cast<int>(m), static_cast<int>(n), static_cast<int>(k)};
  return CUBLAS_STATUS_SUCCESS;
}

CublasLtProblem problem_record(const Desc& d, const Problem& p) {
  return CublasLtProblem{p.m,
                         p.n,
                         p.k,
                         d.transa != CUBLAS_OP_N,
                         d.transb != CUBLAS_OP_N,
                         static_cast<uint32_t>(d.epilogue),
                         d.bias != nullptr ? alignment_of(d.bias) : 1,
                         d.aux != nullptr ? alignment_of(d.aux) : 1};
}

// The algorithm a cublasLtMatmulAlgo_t names, or null for one this heuristic did not return.
std::optional<CublasLtAlgorithm> algorithm_of(const cublasLtMatmulAlgo_t& algo) {
  const std::lock_guard lock(g_query_mutex);
  if (algo.data[0] != kAlgoMagic || algo.data[1] >= g_algorithms.size()) return std::nullopt;
  return g_algorithms[algo.data[1]];
}

void require_device(const char* name, const void* p, size_t bytes) {
  if (bytes > 0 && !is_device_memory(p, bytes))
    throw std::logic_error(std::string("cublasLtMatmul: ") + name + " (" + std::to_string(bytes) +
                           " bytes) is not inside one device allocation; on a GPU this is an illegal address");
}

}  // namespace

void set_cublaslt_fault(CublasLtFault fault) { g_fault = fault; }
void set_cublaslt_algo_workspace(size_t bytes) { g_algo_workspace = bytes; }
CublasLtQuery last_cublaslt_query() {
  const std::lock_guard lock(g_query_mutex);
  return g_last_query;
}
CublasLtMatmulRecord last_cublaslt_matmul() {
  const std::lock_guard lock(g_query_mutex);
  return g_last_matmul;
}

}  // namespace gpt2cc::hostcuda

namespace hc = gpt2cc::hostcuda;

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* lightHandle) {
  if (lightHandle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *lightHandle = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t lightHandle) {
  if (lightHandle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete lightHandle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* matmulDesc, cublasComputeType_t computeType,
                                        cudaDataType_t scaleType) {
  if (matmulDesc == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  auto* d = new hc::Desc{};
  d->compute = computeType;
  d->scale = scaleType;
  *matmulDesc = &d->opaque;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t matmulDesc) {
  delete hc::desc_of(matmulDesc);
  return CUBLAS_STATUS_SUCCESS;
}

// Sizes from cublasLt.h: TRANSA/TRANSB int32_t, EPILOGUE uint32_t, pointers void*, AUX_LD int64_t.
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t matmulDesc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t sizeInBytes) {
  if (matmulDesc == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  hc::Desc& d = *hc::desc_of(matmulDesc);
  int32_t i32 = 0;
  uint32_t u32 = 0;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB:
      if (!hc::read_attribute(i32, buf, sizeInBytes) || i32 < CUBLAS_OP_N || i32 > CUBLAS_OP_C)
        return CUBLAS_STATUS_INVALID_VALUE;
      (attr == CUBLASLT_MATMUL_DESC_TRANSA ? d.transa : d.transb) = static_cast<cublasOperation_t>(i32);
      return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: {
      if (!hc::read_attribute(u32, buf, sizeInBytes)) return CUBLAS_STATUS_INVALID_VALUE;
      const auto e = static_cast<cublasLtEpilogue_t>(u32);
      if (e != CUBLASLT_EPILOGUE_DEFAULT && !hc::uses_bias(e) && !hc::applies_gelu(e) && e != CUBLASLT_EPILOGUE_DGELU &&
          !hc::bias_gradient(e))
        hc::not_emulated("epilogue " + std::to_string(u32));
      d.epilogue = e;
      return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      return hc::read_attribute(d.bias, buf, sizeInBytes) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER:
      return hc::read_attribute(d.aux, buf, sizeInBytes) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD:
      return hc::read_attribute(d.aux_ld, buf, sizeInBytes) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
    default:
      hc::not_emulated("matmul descriptor attribute " + std::to_string(static_cast<int>(attr)));
  }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* matLayout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (matLayout == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  auto* l = new hc::Layout{{}, type, rows, cols, ld};
  *matLayout = &l->opaque;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t matLayout) {
  delete hc::layout_of(matLayout);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  if (pref == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  auto* p = new hc::Preference{};
  *pref = &p->opaque;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete hc::preference_of(pref);
  return CUBLAS_STATUS_SUCCESS;
}

// Sizes from cublasLt.h: MAX_WORKSPACE_BYTES uint64_t, REDUCTION_SCHEME_MASK and MIN_ALIGNMENT_* uint32_t.
// The one algorithm here reduces in the compute type (COMPUTE_TYPE scheme, or none).
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t sizeInBytes) {
  if (pref == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  hc::Preference& p = *hc::preference_of(pref);
  uint32_t u32 = 0;
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      return hc::read_attribute(p.max_workspace, buf, sizeInBytes) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK:
      return hc::read_attribute(p.reduction_scheme_mask, buf, sizeInBytes) ? CUBLAS_STATUS_SUCCESS
                                                                           : CUBLAS_STATUS_INVALID_VALUE;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      if (!hc::read_attribute(u32, buf, sizeInBytes)) return CUBLAS_STATUS_INVALID_VALUE;
      p.min_alignment[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES] = u32;
      return CUBLAS_STATUS_SUCCESS;
    default:
      hc::not_emulated("matmul preference attribute " + std::to_string(static_cast<int>(attr)));
  }
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t operationDesc,
                                              cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
                                              cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                                              cublasLtMatmulPreference_t preference, int requestedAlgoCount,
                                              cublasLtMatmulHeuristicResult_t heuristicResultsArray[],
                                              int* returnAlgoCount) {
  if (lightHandle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (operationDesc == nullptr || Adesc == nullptr || Bdesc == nullptr || Cdesc == nullptr || Ddesc == nullptr ||
      preference == nullptr || requestedAlgoCount < 1 || heuristicResultsArray == nullptr || returnAlgoCount == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  const hc::Desc& d = *hc::desc_of(operationDesc);
  hc::Problem problem{};
  if (const cublasStatus_t s = hc::problem_of(d, *hc::layout_of(Adesc), *hc::layout_of(Bdesc), *hc::layout_of(Cdesc),
                                              *hc::layout_of(Ddesc), problem);
      s != CUBLAS_STATUS_SUCCESS)
    return s;
  const hc::Preference& p = *hc::preference_of(preference);
  {
    const std::lock_guard lock(hc::g_query_mutex);
    hc::CublasLtQuery& q = hc::g_last_query;
    std::copy(std::begin(p.min_alignment), std::end(p.min_alignment), std::begin(q.min_alignment));
    q.reduction_scheme_mask = p.reduction_scheme_mask;
    q.max_workspace_bytes = p.max_workspace;
    ++q.count;
  }
  const hc::CublasLtFault fault = hc::g_fault;
  const size_t workspace = hc::g_algo_workspace;
  if (fault == hc::CublasLtFault::heuristic_not_supported) return CUBLAS_STATUS_NOT_SUPPORTED;
  *returnAlgoCount = 0;
  if (fault == hc::CublasLtFault::heuristic_no_algorithm || workspace > p.max_workspace) return CUBLAS_STATUS_SUCCESS;
  cublasLtMatmulHeuristicResult_t result{};
  result.state = CUBLAS_STATUS_SUCCESS;
  result.workspaceSize = workspace;
  if (fault == hc::CublasLtFault::heuristic_over_workspace) result.workspaceSize = p.max_workspace + 1;
  // "other fields are only valid if ... this member is set to CUBLAS_STATUS_SUCCESS": no algorithm.
  if (fault == hc::CublasLtFault::heuristic_result_state) {
    result.state = CUBLAS_STATUS_NOT_SUPPORTED;
  } else {
    hc::CublasLtAlgorithm chosen{hc::problem_record(d, problem), {}, p.reduction_scheme_mask, p.max_workspace,
                                 result.workspaceSize};
    std::copy(std::begin(p.min_alignment), std::end(p.min_alignment), std::begin(chosen.min_alignment));
    const std::lock_guard lock(hc::g_query_mutex);
    result.algo.data[0] = hc::kAlgoMagic;
    result.algo.data[1] = hc::g_algorithms.size();
    hc::g_algorithms.push_back(chosen);
  }
  result.wavesCount = 1.0f;
  heuristicResultsArray[0] = result;
  *returnAlgoCount = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc, const void* alpha,
                              const void* A, cublasLtMatrixLayout_t Adesc, const void* B, cublasLtMatrixLayout_t Bdesc,
                              const void* beta, const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* algo, void* workspace,
                              size_t workspaceSizeInBytes, cudaStream_t stream) {
  if (lightHandle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (computeDesc == nullptr || alpha == nullptr || beta == nullptr || Adesc == nullptr || Bdesc == nullptr ||
      Cdesc == nullptr || Ddesc == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (algo == nullptr) hc::not_emulated("cublasLtMatmul without an algorithm (an internal heuristic query)");
  const std::optional<hc::CublasLtAlgorithm> chosen = hc::algorithm_of(*algo);
  if (!chosen) return CUBLAS_STATUS_INVALID_VALUE;
  if (hc::g_fault == hc::CublasLtFault::matmul_not_supported) return CUBLAS_STATUS_NOT_SUPPORTED;
  // "INVALID_VALUE ... when workspaceSizeInBytes is less than workspace required by configured algo"
  if (workspaceSizeInBytes < chosen->workspace_bytes) return CUBLAS_STATUS_INVALID_VALUE;
  const hc::Desc d = *hc::desc_of(computeDesc);
  const hc::Layout a = *hc::layout_of(Adesc), b = *hc::layout_of(Bdesc), c = *hc::layout_of(Cdesc),
                   dl = *hc::layout_of(Ddesc);
  hc::Problem p{};
  if (const cublasStatus_t s = hc::problem_of(d, a, b, c, dl, p); s != CUBLAS_STATUS_SUCCESS) return s;
  // The algorithm was chosen for these alignments; a less aligned pointer is outside what it supports.
  const void* operands[4] = {A, B, C, D};
  for (int i = 0; i < 4; ++i)
    if (hc::alignment_of(operands[i]) < chosen->min_alignment[i]) return CUBLAS_STATUS_NOT_SUPPORTED;
  if ((d.bias != nullptr && hc::alignment_of(d.bias) < chosen->problem.bias_alignment) ||
      (d.aux != nullptr && hc::alignment_of(d.aux) < chosen->problem.aux_alignment))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (workspaceSizeInBytes > 0) hc::require_device("the workspace", workspace, workspaceSizeInBytes);
  const float alpha_value = *static_cast<const float*>(alpha), beta_value = *static_cast<const float*>(beta);
  const bool ta = d.transa != CUBLAS_OP_N, tb = d.transb != CUBLAS_OP_N;
  hc::require_device("A", A, hc::stored_elements(a.rows, a.cols, a.ld) * hc::element_bytes(a.type));
  hc::require_device("B", B, hc::stored_elements(b.rows, b.cols, b.ld) * hc::element_bytes(b.type));
  if (beta_value != 0.0f) hc::require_device("C", C, hc::stored_elements(c.rows, c.cols, c.ld) * hc::element_bytes(c.type));
  hc::require_device("D", D, hc::stored_elements(dl.rows, dl.cols, dl.ld) * hc::element_bytes(dl.type));
  if (hc::uses_bias(d.epilogue)) hc::require_device("the bias", d.bias, p.m * hc::element_bytes(dl.type));
  if (hc::bias_gradient(d.epilogue)) {
    hc::require_device("the bias gradient", d.bias, p.n * hc::element_bytes(dl.type));
    if (alpha_value != 1.0f) hc::not_emulated("BGRADB with alpha other than 1");
  }
  if (hc::writes_aux(d.epilogue) || d.epilogue == CUBLASLT_EPILOGUE_DGELU)
    hc::require_device("the aux buffer", d.aux, hc::stored_elements(p.m, p.n, d.aux_ld) * hc::element_bytes(dl.type));

  const cudaError_t err = hc::enqueue(stream, [=] {
    std::vector<double> acc;
    if (p.k > 0) acc = hc::product(hc::Operand{A, a.type, static_cast<int>(a.ld), ta},
                                   hc::Operand{B, b.type, static_cast<int>(b.ld), tb}, p.m, p.n, p.k);
    for (size_t j = 0; j < static_cast<size_t>(p.n); ++j) {
      for (size_t i = 0; i < static_cast<size_t>(p.m); ++i) {
        double x = acc.empty() ? 0.0 : alpha_value * acc[i + j * p.m];
        if (beta_value != 0.0f) x += static_cast<double>(beta_value) * hc::load(C, c.type, i + j * c.ld);
        x = static_cast<float>(x);  // the fp32 accumulator / scale type
        if (hc::uses_bias(d.epilogue)) x = static_cast<float>(x + hc::load(d.bias, dl.type, i));
        const size_t aux_at = i + j * static_cast<size_t>(d.aux_ld);
        if (hc::writes_aux(d.epilogue)) hc::store(const_cast<void*>(d.aux), dl.type, aux_at, static_cast<float>(x));
        if (hc::applies_gelu(d.epilogue)) x = hc::gelu(x);
        if (d.epilogue == CUBLASLT_EPILOGUE_DGELU) x *= hc::gelu_grad(hc::load(d.aux, dl.type, aux_at));
        hc::store(D, dl.type, i + j * dl.ld, static_cast<float>(x));
      }
    }
    if (hc::bias_gradient(d.epilogue)) {
      for (size_t j = 0; j < static_cast<size_t>(p.n); ++j) {
        double sum = 0.0;  // op(B)[kk, j] is B[j, kk] when transposed, else B[kk, j]
        for (size_t kk = 0; kk < static_cast<size_t>(p.k); ++kk)
          sum += hc::load(B, b.type, tb ? j + kk * b.ld : kk + j * b.ld);
        hc::store(const_cast<void*>(d.bias), dl.type, j, static_cast<float>(sum));
      }
    }
  });
  if (err != cudaSuccess) return CUBLAS_STATUS_EXECUTION_FAILED;
  const std::lock_guard lock(hc::g_query_mutex);
  hc::CublasLtMatmulRecord& record = hc::g_last_matmul;
  record.call = hc::problem_record(d, p);
  record.call_workspace_bytes = workspaceSizeInBytes;
  record.algo = *chosen;
  ++record.count;
  if (!(record.call == chosen->problem) || workspaceSizeInBytes != chosen->max_workspace_bytes) ++record.foreign;
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
