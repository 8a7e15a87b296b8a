// bf16 linear layers (kernels/matmul.cuh; mirror cpu/matmul.cpp and cpu/gelu.cpp). Each GEMM is
// one cublasLtMatmul: bf16 A/B/C/D, fp32 accumulate (CUBLAS_COMPUTE_32F, fp32 alpha/beta), one
// rounding to bf16 on store, with the bias add, the GELU (pre saved as the aux output) or the GELU
// gradient (pre read as the aux input) fused into the epilogue. The algorithm comes from
// cublasLtMatmulAlgoGetHeuristic once per shape, operand alignment and design (GemmDesign) and is
// cached; the workspace (32 MiB, GemmWorkspace) is the stream's (gemm_workspace in matmul.cuh), so
// steady-state calls allocate nothing and can be captured in CUDA graphs. The plain path,
// cublasGemmEx plus separate bias / GELU kernels, takes operands cuBLASLt cannot take (see
// cublaslt_eligible) and, as PyTorch does, shapes cuBLASLt declines: no usable algorithm from the
// heuristic, or cublasLtMatmul NOT_SUPPORTED (then cached as declined). matmul_path_counts() says
// which path each GEMM took; GPT2CC_REQUIRE_CUBLASLT=1 makes a declined eligible GEMM an error.
// dweight accumulates with beta = 1 (bf16, or fp32 C/D for a sum kept in fp32: no rounding);
// dbias is a deterministic column sum or (BiasGradient::kEpilogue) the dweight GEMM's BGRADB
// epilogue, added in. GeluFusion::kSeparate takes the GELU out of the epilogues, into
// kernels/gelu.cuh's kernels.
#include <cublasLt.h>

#include <algorithm>
#include <compare>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/gelu.cuh"
#include "kernels/gelu_math.cuh"
#include "kernels/matmul.cuh"

// What the epilogues compute (cuBLAS 13 cublasLt.h, cublasLtEpilogue_t and
// cublasLtMatmulDescAttributes_t; the same text is in the cuBLAS docs, "cublasLtEpilogue_t"):
// - BIAS: "Bias vector length must match matrix D rows, it must be packed ... broadcasted to all
//   columns and added before applying final postprocessing"; its elements have D's type (bf16)
//   unless CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE says otherwise, so the bias is passed as is.
// - GELU_AUX_BIAS: D = GELU(AB + bias) and the GELU input (AB + bias) is written to the aux
//   buffer, whose type defaults to D's (bf16) and whose leading dimension
//   (CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD) "must be divisible by 8 and be no less than the number of
//   rows in the output matrix": we give it D's leading dimension.
// - DGELU: "Apply GELU gradient to matmul output": D = (AB) * GELU'(aux), aux read with the same layout.
// - BGRADB: "Bias gradient based on the input matrix B. The bias size corresponds to the number of
//   columns of the matrix D. The reduction happens over the GEMM's "k" dimension. Stores Bias
//   gradient in the auxiliary output (see CUBLASLT_MATMUL_DESC_BIAS_POINTER)", whose elements
//   have the output's type (bf16). Written, not accumulated: beta applies to C alone.
// - Which GELU: the cuBLAS text says only "GELU". PyTorch's maintainers state that the cuBLASLt
//   GELU epilogue is the tanh approximation (pytorch/pytorch PR #104061, "Unify GELU tanh
//   approximation in _addmm_activation GPU back-end": "cuBLASLt-based fused GELU epilogue ... uses
//   tanh approximation"), the form of cpu/gelu.hpp. tests/cuda/test_bf16_matmul.cpp checks it on
//   the GPU against both the tanh and the erf form.
//
// Row-major <-> column-major, written once and used for every GEMM here. cuBLAS(Lt) is column-major:
// a row-major (R x K) matrix is, in memory, the column-major (K x R) matrix (its transpose), leading
// dimension K. So with N = B*T rows:
//   forward: out (N x OC) = inp (N x C) W^T   <=>   out^T (OC x N) = W (OC x C) . inp^T (C x N)
//            A = W's memory (C x OC, ld C) with OP_T, B = inp's memory (C x N, ld C), OP_N,
//            D = out's memory (OC x N, ld OC); m = OC, n = N, k = C. The bias (OC) is one value per
//            row of D, which is what the BIAS epilogue broadcasts; pre (aux) has D's layout, ld OC.
//   dinp:    dinp (N x C) = dout (N x OC) W (OC x C)   <=>   dinp^T (C x N) = W^T (C x OC) . dout^T (OC x N)
//            A = W's memory (C x OC, ld C), B = dout's memory (OC x N, ld OC), both OP_N,
//            D = dinp's memory (C x N, ld C); m = C, n = N, k = OC. pre (N x C) has D's layout, ld C.
//   dweight: dweight (OC x C) += dout^T inp   <=>   dweight^T (C x OC) += inp^T (C x N) . dout (N x OC)
//            A = inp's memory (C x N, ld C), OP_N, B = dout's memory (OC x N, ld OC) with OP_T,
//            C = D = dweight's memory (C x OC, ld C), beta = 1; m = C, n = OC, k = N.

namespace gpt2cc::cuda {
namespace {

constexpr uint32_t kOperandAlignment = 16;  // what cublaslt_eligible guarantees for A, B, C, D

// The cuBLAS type of a GEMM output element.
template <class Elem>
constexpr cudaDataType kDataType = std::is_same_v<Elem, float> ? CUDA_R_32F : CUDA_R_16BF;

// One column-major GEMM D = A B (+ beta C, with C = D) and its epilogue, in cuBLAS terms. A and B
// are bf16; D is bf16, or fp32 for a weight gradient summed in fp32 (no epilogue then).
struct Gemm {
  int m, n, k;
  bool trans_a, trans_b;
  const bf16* a;
  int lda;
  const bf16* b;
  int ldb;
  void* d;
  int ldd;
  float beta;                                          // 0: D = AB (+ epilogue); 1: D += AB
  cudaDataType d_type = CUDA_R_16BF;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const bf16* bias = nullptr;                          // BIAS, GELU_AUX_BIAS: one per row of D
  bf16* bias_grad = nullptr;                           // BGRADB: written, one per column of D
  const bf16* aux = nullptr;                           // GELU_AUX*: written; DGELU: read; D's layout
};

// The largest power of two up to 256 that divides `value` (an address or a byte count).
uint32_t alignment_of(uintptr_t value) {
  uint32_t alignment = 256;
  while (alignment > 1 && value % alignment != 0) alignment /= 2;
  return alignment;
}
uint32_t pointer_alignment(const void* p) { return alignment_of(reinterpret_cast<uintptr_t>(p)); }

size_t element_bytes(cudaDataType type) { return type == CUDA_R_32F ? sizeof(float) : sizeof(bf16); }

// The alignment the heuristic may count on for an operand of `type` with leading dimension ld
// (GemmAlignment, kernels/matmul.cuh). An algorithm's alignment is "required for buffer pointer,
// leading dimension, and possibly other strides" (cublasLt.h,
// CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_A_BYTES), so the leading dimension's bytes bound it too.
uint32_t promised_alignment(const void* p, int ld, GemmAlignment design, cudaDataType type = CUDA_R_16BF) {
  if (design == GemmAlignment::k16) return kOperandAlignment;
  return std::min(pointer_alignment(p), alignment_of(static_cast<uintptr_t>(ld) * element_bytes(type)));
}

// What the heuristic's answer depends on, so the cache key: the shape, D's type, the epilogue,
// the operand alignments promised in the preference, the alignment of the epilogue pointers
// (cublasLt.h says the heuristic depends on the bias and aux pointers' values for it), the
// split-K schemes allowed and the workspace offered.
struct AlgoKey {
  int m, n, k;
  bool trans_a, trans_b;
  int d_type;
  int epilogue;
  uint32_t a_alignment, b_alignment, d_alignment, bias_alignment, aux_alignment;
  uint32_t reduction_schemes;
  size_t workspace_bytes;
  auto operator<=>(const AlgoKey&) const = default;
};

// What the cache holds for a key: the algorithm, or why cuBLASLt declined the problem (the plain
// path runs it; the reason goes into GPT2CC_REQUIRE_CUBLASLT's error).
struct LtChoice {
  std::optional<cublasLtMatmulAlgo_t> algo;
  std::string declined;
};

// The cuBLASLt handle and algorithm cache of one device for one host thread (a handle is tied to
// the device current at creation and must not be shared by threads). The workspace is the
// stream's (gemm_workspace), passed with each call.
class LtContext {
 public:
  LtContext() { CUBLAS_CHECK(cublasLtCreate(&handle_)); }
  LtContext(const LtContext&) = delete;
  LtContext& operator=(const LtContext&) = delete;
  ~LtContext() {
    // At process exit the CUDA context may already be gone; nothing useful to do on failure.
    cublasLtDestroy(handle_);
  }
  cublasLtHandle_t handle() const { return handle_; }
  std::map<AlgoKey, LtChoice>& algos() { return algos_; }

 private:
  cublasLtHandle_t handle_ = nullptr;
  std::map<AlgoKey, LtChoice> algos_;
};

LtContext& lt_context() {
  thread_local std::map<int, std::unique_ptr<LtContext>> contexts;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  auto& context = contexts[device];
  if (!context) context = std::make_unique<LtContext>();
  return *context;
}

template <class Handle, cublasStatus_t (*Destroy)(Handle)>
struct LtDeleter {
  void operator()(Handle h) const { Destroy(h); }
};
using MatmulDesc = std::unique_ptr<cublasLtMatmulDescOpaque_t,
                                   LtDeleter<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>>;
using MatrixLayout = std::unique_ptr<cublasLtMatrixLayoutOpaque_t,
                                     LtDeleter<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>>;
using MatmulPreference = std::unique_ptr<cublasLtMatmulPreferenceOpaque_t,
                                         LtDeleter<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>>;

template <class Value>
void set_attribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const Value& value) {
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)));
}
template <class Value>
void set_preference(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attribute,
                    const Value& value) {
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attribute, &value, sizeof(value)));
}

// A matrix of `type` as stored: `rows` x `cols` column-major with leading dimension ld.
MatrixLayout matrix_layout(int rows, int cols, int ld, cudaDataType type = CUDA_R_16BF) {
  cublasLtMatrixLayout_t layout = nullptr;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows),
                                          static_cast<uint64_t>(cols), static_cast<int64_t>(ld)));
  return MatrixLayout(layout);
}

// The heuristic's answer for one problem. cublasLt.h: NOT_SUPPORTED is "no heuristic function
// available for current configuration"; on SUCCESS, "inspect heuristicResultsArray[0 to
// (returnAlgoCount - 1)].state", the other fields being valid only where it is SUCCESS. The
// workspace it needs is within MAX_WORKSPACE_BYTES by the heuristic's contract; checked anyway,
// since cublasLtMatmul would fail (INVALID_VALUE) with less than the algorithm needs.
LtChoice heuristic_choice(cublasStatus_t status, int returned, const cublasLtMatmulHeuristicResult_t& result,
                          size_t workspace_bytes) {
  if (status == CUBLAS_STATUS_NOT_SUPPORTED)
    return {std::nullopt, "cublasLtMatmulAlgoGetHeuristic returned CUBLAS_STATUS_NOT_SUPPORTED"};
  CUBLAS_CHECK(status);
  if (returned < 1) return {std::nullopt, "cublasLtMatmulAlgoGetHeuristic returned no algorithm"};
  if (result.state != CUBLAS_STATUS_SUCCESS)
    return {std::nullopt, format("the heuristic's algorithm has state {}", cublasGetStatusName(result.state))};
  if (result.workspaceSize > workspace_bytes)
    return {std::nullopt, format("the heuristic's algorithm needs {} bytes of workspace, {} allowed",
                                 result.workspaceSize, workspace_bytes)};
  return {result.algo, ""};
}

// Runs g as one cublasLtMatmul and returns null, or returns why cuBLASLt declined it (the caller
// then takes the plain path): the heuristic offered no usable algorithm, or cublasLtMatmul
// refused the call with NOT_SUPPORTED; either is cached for the key. Other failures throw.
// Descriptors are host objects, cheap to build per call.
const std::string* lt_matmul(const Gemm& g, const GemmDesign& design, cudaStream_t stream) {
  LtContext& context = lt_context();
  cublasLtMatmulDesc_t raw_desc = nullptr;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&raw_desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  MatmulDesc desc(raw_desc);
  const cublasOperation_t op_a = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  set_attribute(raw_desc, CUBLASLT_MATMUL_DESC_TRANSA, op_a);
  set_attribute(raw_desc, CUBLASLT_MATMUL_DESC_TRANSB, op_b);
  set_attribute(raw_desc, CUBLASLT_MATMUL_DESC_EPILOGUE, g.epilogue);
  if (g.bias != nullptr) set_attribute(raw_desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(g.bias));
  if (g.bias_grad != nullptr)
    set_attribute(raw_desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<void*>(g.bias_grad));
  if (g.aux != nullptr) {
    set_attribute(raw_desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<const void*>(g.aux));
    set_attribute(raw_desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, static_cast<int64_t>(g.ldd));
  }
  // The stored shapes: op(A) is m x k, so A is stored k x m when transposed; op(B) is k x n.
  const MatrixLayout a_layout = g.trans_a ? matrix_layout(g.k, g.m, g.lda) : matrix_layout(g.m, g.k, g.lda);
  const MatrixLayout b_layout = g.trans_b ? matrix_layout(g.n, g.k, g.ldb) : matrix_layout(g.k, g.n, g.ldb);
  const MatrixLayout d_layout = matrix_layout(g.m, g.n, g.ldd, g.d_type);

  const void* bias = g.bias != nullptr ? static_cast<const void*>(g.bias) : g.bias_grad;
  // Split-K only with fp32 partials reduced in a fixed order in the workspace (COMPUTE_TYPE),
  // unless the design allows bf16 partial sums too (GemmSplitK::kAny: INPLACE and OUTPUT_TYPE).
  // Algorithms without split-K (scheme NONE = 0) pass any mask.
  const uint32_t reduction_schemes = design.split_k == GemmSplitK::kAny
                                         ? static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_MASK)
                                         : static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE);
  const AlgoKey key{g.m,
                    g.n,
                    g.k,
                    g.trans_a,
                    g.trans_b,
                    static_cast<int>(g.d_type),
                    static_cast<int>(g.epilogue),
                    promised_alignment(g.a, g.lda, design.alignment),
                    promised_alignment(g.b, g.ldb, design.alignment),
                    promised_alignment(g.d, g.ldd, design.alignment, g.d_type),
                    bias ? pointer_alignment(bias) : 0,
                    g.aux ? pointer_alignment(g.aux) : 0,
                    reduction_schemes,
                    gemm_workspace_bytes(design.workspace)};
  auto found = context.algos().find(key);
  if (found == context.algos().end()) {
    cublasLtMatmulPreference_t raw_pref = nullptr;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&raw_pref));
    MatmulPreference pref(raw_pref);
    set_preference(raw_pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(key.workspace_bytes));
    // The default (256) would let the heuristic pick algorithms that need 256-byte aligned
    // operands; callers may pass slices of larger buffers, which cublaslt_eligible guarantees
    // only 16 bytes: the key's alignments say what these operands have (C is D).
    set_preference(raw_pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.a_alignment);
    set_preference(raw_pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.b_alignment);
    set_preference(raw_pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.d_alignment);
    set_preference(raw_pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.d_alignment);
    set_preference(raw_pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, reduction_schemes);
    cublasLtMatmulHeuristicResult_t result{};
    int returned = 0;
    const cublasStatus_t status =
        cublasLtMatmulAlgoGetHeuristic(context.handle(), raw_desc, a_layout.get(), b_layout.get(), d_layout.get(),
                                       d_layout.get(), raw_pref, 1, &result, &returned);
    found = context.algos().emplace(key, heuristic_choice(status, returned, result, key.workspace_bytes)).first;
  }
  LtChoice& choice = found->second;
  if (!choice.algo) return &choice.declined;
  const float alpha = 1.0f;
  const GemmWorkspaceBuffer workspace = gemm_workspace(stream, key.workspace_bytes);
  const cublasStatus_t status =
      cublasLtMatmul(context.handle(), raw_desc, &alpha, g.a, a_layout.get(), g.b, b_layout.get(), &g.beta, g.d,
                     d_layout.get(), g.d, d_layout.get(), &*choice.algo, workspace.data, key.workspace_bytes, stream);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
    choice = LtChoice{std::nullopt, "cublasLtMatmul returned CUBLAS_STATUS_NOT_SUPPORTED"};
    return &choice.declined;
  }
  if (status != CUBLAS_STATUS_SUCCESS) fail_cublas(status, "cublasLtMatmul", __FILE__, __LINE__);
  return nullptr;
}

// Plain-path GELU_AUX(_BIAS): pre holds AB (column-major m x n, packed); x = pre + bias[row];
// pre = bf16(x); out = bf16(gelu(x)). bias may be null.
__global__ void bias_gelu_kernel(bf16* out, bf16* pre, const bf16* bias, size_t count, int m) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  float x = __bfloat162float(pre[i]);
  if (bias != nullptr) x += __bfloat162float(bias[i % m]);
  pre[i] = __float2bfloat16_rn(x);
  out[i] = __float2bfloat16_rn(gelu(x));
}

// Plain-path DGELU: d = bf16(d * gelu'(pre)).
__global__ void dgelu_kernel(bf16* d, const bf16* pre, size_t count) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  d[i] = __float2bfloat16_rn(__bfloat162float(d[i]) * gelu_grad(__bfloat162float(pre[i])));
}

// Adds `sums` into dbias (one rounding): the BGRADB epilogue writes its sums, dbias accumulates.
__global__ void add_bias_gradient_kernel(bf16* dbias, const bf16* sums, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dbias[i] = __float2bfloat16_rn(__bfloat162float(dbias[i]) + __bfloat162float(sums[i]));
}

// cublasGemmEx (bf16 in/out, fp32 accumulate; any alignment and leading dimension), then the
// epilogue as separate kernels. The GEMM result is rounded to bf16 before the epilogue reads it
// (one extra rounding compared with cuBLASLt, well inside the bf16 tolerance).
void plain_matmul(const Gemm& g, cudaStream_t stream) {
  ENSURE(g.ldd == g.m, "plain bf16 matmul expects a packed D (ld {} for {} rows)", g.ldd, g.m);
  ENSURE(g.d_type == CUDA_R_16BF || g.epilogue == CUBLASLT_EPILOGUE_DEFAULT,
         "plain bf16 matmul: an epilogue with an fp32 D");
  const bool gelu_forward = g.epilogue == CUBLASLT_EPILOGUE_GELU_AUX || g.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  // GELU forward: the GEMM writes into the aux buffer (pre); the kernel then writes pre and D.
  void* gemm_out = gelu_forward ? const_cast<bf16*>(g.aux) : g.d;
  const float alpha = 1.0f;
  CUBLAS_CHECK(cublasGemmEx(cublas_handle(stream), g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                            g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, g.m, g.n, g.k, &alpha, g.a, CUDA_R_16BF, g.lda, g.b,
                            CUDA_R_16BF, g.ldb, &g.beta, gemm_out, g.d_type, g.ldd, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
  constexpr int kBlock = 256;
  const size_t count = static_cast<size_t>(g.m) * g.n;
  bf16* d = static_cast<bf16*>(g.d);  // bf16 wherever an epilogue follows
  if (gelu_forward) {
    bias_gelu_kernel<<<ceil_div(count, kBlock), kBlock, 0, stream>>>(d, static_cast<bf16*>(gemm_out), g.bias, count,
                                                                     g.m);
    CUDA_CHECK_LAUNCH();
  } else if (g.epilogue == CUBLASLT_EPILOGUE_DGELU) {
    dgelu_kernel<<<ceil_div(count, kBlock), kBlock, 0, stream>>>(d, g.aux, count);
    CUDA_CHECK_LAUNCH();
  } else if (g.epilogue == CUBLASLT_EPILOGUE_BIAS) {
    // D (m x n column-major) is the row-major (n x m) matrix, bias indexed by its column.
    matmul_internal::add_bias(d, g.bias, g.n, g.m, stream);
  } else if (g.epilogue == CUBLASLT_EPILOGUE_BGRADB) {
    // op(B) (k x n) is B's memory (n x k column-major, ld n) transposed: the row-major (k x n)
    // matrix, whose column sums are the bias gradient.
    ENSURE(g.trans_b && g.ldb == g.n, "plain bf16 matmul: BGRADB expects op(B) = B^T packed (ld {} for {})", g.ldb,
           g.n);
    CUDA_CHECK(cudaMemsetAsync(g.bias_grad, 0, static_cast<size_t>(g.n) * sizeof(bf16), stream));
    matmul_internal::accumulate_column_sums(g.bias_grad, g.b, g.k, g.n, stream);
  } else {
    ENSURE(g.epilogue == CUBLASLT_EPILOGUE_DEFAULT, "plain bf16 matmul: unexpected epilogue {}",
           static_cast<int>(g.epilogue));
  }
}

MatmulPathCounts& path_counts() {
  thread_local MatmulPathCounts counts;
  return counts;
}

// GPT2CC_REQUIRE_CUBLASLT: unset or 0, a GEMM cuBLASLt declines takes the plain path; 1, it is an
// error (for runs that must measure the fused path). Read at each such GEMM, never on the fast path.
bool cublaslt_required() {
  const char* value = std::getenv("GPT2CC_REQUIRE_CUBLASLT");
  if (value == nullptr || std::strcmp(value, "0") == 0) return false;
  INPUT_CHECK(std::strcmp(value, "1") == 0, "GPT2CC_REQUIRE_CUBLASLT must be 0 or 1, got '{}'", value);
  return true;
}

const char* epilogue_name(cublasLtEpilogue_t epilogue) {
  switch (epilogue) {
    case CUBLASLT_EPILOGUE_DEFAULT: return "DEFAULT";
    case CUBLASLT_EPILOGUE_BIAS: return "BIAS";
    case CUBLASLT_EPILOGUE_GELU_AUX: return "GELU_AUX";
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: return "GELU_AUX_BIAS";
    case CUBLASLT_EPILOGUE_DGELU: return "DGELU";
    case CUBLASLT_EPILOGUE_BGRADB: return "BGRADB";
    default: return "?";
  }
}

// `eligible`: cublaslt_eligible held for the operands. Counts the path taken (matmul_path_counts).
void run_matmul(const Gemm& g, bool eligible, const GemmDesign& design, cudaStream_t stream) {
  MatmulPathCounts& counts = path_counts();
  if (eligible) {
    const std::string* declined = lt_matmul(g, design, stream);
    if (declined == nullptr) {
      ++counts.lt;
      return;
    }
    ENSURE(!cublaslt_required(),
           "GPT2CC_REQUIRE_CUBLASLT=1, but cuBLASLt declined the bf16 GEMM m={} n={} k={} op(A)={} op(B)={} "
           "epilogue {}: {}",
           g.m, g.n, g.k, g.trans_a ? "T" : "N", g.trans_b ? "T" : "N", epilogue_name(g.epilogue), *declined);
    ++counts.fallback;
  }
  ++counts.plain;
  plain_matmul(g, stream);
}

// out^T = W inp^T (+ epilogue): m = OC, n = N, k = C (see the mapping at the top).
Gemm forward_gemm(bf16* out, const bf16* inp, const bf16* weight, int N, int C, int OC) {
  return Gemm{OC, N, C, true, false, weight, C, inp, C, out, OC, 0.0f};
}
// dinp^T = W^T dout^T: m = C, n = N, k = OC.
Gemm dinp_gemm(bf16* dinp, const bf16* dout, const bf16* weight, int N, int C, int OC) {
  return Gemm{C, N, OC, false, false, weight, C, dout, OC, dinp, C, 0.0f};
}
// dweight^T += inp^T dout: m = C, n = OC, k = N, beta = 1; dweight bf16 or fp32.
template <class DWeight>
Gemm dweight_gemm(DWeight* dweight, const bf16* dout, const bf16* inp, int N, int C, int OC) {
  return Gemm{C, OC, N, false, true, inp, C, dout, OC, dweight, C, 1.0f, kDataType<DWeight>};
}

// DWeight: bf16, or float for fp32 gradients (dweight and dbias of that type).
template <class DWeight>
void backward(bf16* dinp, DWeight* dweight, DWeight* dbias, const bf16* dout, const bf16* inp, const bf16* weight,
              const bf16* pre, int B, int T, int C, int OC, cudaStream_t stream, const GemmDesign& design) {
  const int N = B * T;
  if (N == 0 || OC == 0 || C == 0) return;
  const bool eligible = cublaslt_eligible(C, OC, {dinp, dweight, dout, inp, weight, pre});
  Gemm g = dinp_gemm(dinp, dout, weight, N, C, OC);
  const bool separate_gelu = pre != nullptr && design.gelu == GeluFusion::kSeparate;
  if (pre != nullptr && !separate_gelu) {
    g.epilogue = CUBLASLT_EPILOGUE_DGELU;
    g.aux = pre;
  }
  run_matmul(g, eligible, design, stream);
  if (separate_gelu) gelu_backward(dinp, dinp, pre, static_cast<size_t>(N) * C, stream);  // in place
  Gemm dw = dweight_gemm(dweight, dout, inp, N, C, OC);
  // BGRADB writes its sums in D's type: with fp32 gradients the column sums make dbias.
  if constexpr (std::is_same_v<DWeight, bf16>) {
    if (dbias != nullptr && design.bias_gradient == BiasGradient::kEpilogue) {
      // The sums of this call, then added in (dbias accumulates; the epilogue writes).
      // Stream-ordered scratch: 256-byte aligned (cudaMallocAsync), so the heuristic's answer is
      // one per shape.
      ScratchBuffer sums(static_cast<size_t>(OC) * sizeof(bf16), stream);
      dw.epilogue = CUBLASLT_EPILOGUE_BGRADB;
      dw.bias_grad = sums.as<bf16>();
      run_matmul(dw, eligible, design, stream);
      constexpr int kBlock = 256;
      add_bias_gradient_kernel<<<ceil_div(OC, kBlock), kBlock, 0, stream>>>(dbias, dw.bias_grad, OC);
      CUDA_CHECK_LAUNCH();
      return;
    }
  }
  run_matmul(dw, eligible, design, stream);
  if (dbias != nullptr) matmul_internal::accumulate_column_sums(dbias, dout, N, OC, stream);
}

}  // namespace

MatmulPathCounts matmul_path_counts() { return path_counts(); }
void reset_matmul_path_counts() { path_counts() = MatmulPathCounts{}; }

bool cublaslt_eligible(int C, int OC, std::initializer_list<const void*> pointers) {
  if (C % 8 != 0 || OC % 8 != 0) return false;
  for (const void* p : pointers)
    if (p != nullptr && reinterpret_cast<uintptr_t>(p) % kOperandAlignment != 0) return false;
  return true;
}

void matmul_forward(bf16* out, const bf16* inp, const bf16* weight, const bf16* bias, int B, int T, int C, int OC,
                    cudaStream_t stream, const GemmDesign& design) {
  const int N = B * T;
  if (N == 0 || OC == 0) return;
  ENSURE(C >= 1, "matmul_forward needs C >= 1, got {}", C);
  Gemm g = forward_gemm(out, inp, weight, N, C, OC);
  if (bias != nullptr) {
    g.epilogue = CUBLASLT_EPILOGUE_BIAS;
    g.bias = bias;
  }
  run_matmul(g, cublaslt_eligible(C, OC, {out, inp, weight, bias}), design, stream);
}

void matmul_forward_gelu(bf16* out, bf16* pre, const bf16* inp, const bf16* weight, const bf16* bias, int B, int T,
                         int C, int OC, cudaStream_t stream, const GemmDesign& design) {
  const int N = B * T;
  if (N == 0 || OC == 0) return;
  ENSURE(C >= 1, "matmul_forward_gelu needs C >= 1, got {}", C);
  if (design.gelu == GeluFusion::kSeparate) {  // pre = inp W^T + b, then out = gelu(pre)
    matmul_forward(pre, inp, weight, bias, B, T, C, OC, stream, design);
    gelu_forward(out, pre, static_cast<size_t>(N) * OC, stream);
    return;
  }
  Gemm g = forward_gemm(out, inp, weight, N, C, OC);
  g.epilogue = bias != nullptr ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
  g.bias = bias;
  g.aux = pre;
  run_matmul(g, cublaslt_eligible(C, OC, {out, pre, inp, weight, bias}), design, stream);
}

void matmul_backward(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout, const bf16* inp, const bf16* weight,
                     int B, int T, int C, int OC, cudaStream_t stream, const GemmDesign& design) {
  backward(dinp, dweight, dbias, dout, inp, weight, nullptr, B, T, C, OC, stream, design);
}
void matmul_backward(bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp, const bf16* weight,
                     int B, int T, int C, int OC, cudaStream_t stream, const GemmDesign& design) {
  backward(dinp, dweight, dbias, dout, inp, weight, nullptr, B, T, C, OC, stream, design);
}

void matmul_backward_gelu(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout, const bf16* inp,
                          const bf16* weight, const bf16* pre, int B, int T, int C, int OC, cudaStream_t stream,
                          const GemmDesign& design) {
  ENSURE(pre != nullptr, "matmul_backward_gelu needs the saved GELU input `pre`");
  backward(dinp, dweight, dbias, dout, inp, weight, pre, B, T, C, OC, stream, design);
}
void matmul_backward_gelu(bf16* dinp, float* dweight, float* dbias, const bf16* dout, const bf16* inp,
                          const bf16* weight, const bf16* pre, int B, int T, int C, int OC, cudaStream_t stream,
                          const GemmDesign& design) {
  ENSURE(pre != nullptr, "matmul_backward_gelu needs the saved GELU input `pre`");
  backward(dinp, dweight, dbias, dout, inp, weight, pre, B, T, C, OC, stream, design);
}

}  // namespace gpt2cc::cuda
