// Linear layer forward and backward, fp32 (kernels/matmul.cuh; mirrors cpu/matmul.cpp), and the
// helpers the bf16 path (kernels/matmul_lt.cu) shares. The GEMMs are cuBLAS sgemm calls
// (column-major, so the row-major products are written transposed, see each call); the bias add
// and the bias gradient are small kernels (kernels/matmul_device.cuh, with their launch geometry).
// The bias gradient is a column sum over B*T rows done in fixed slices (no atomics: deterministic).
// The fp32 *_gelu variants compose these with the fp32 GELU kernels (kernels/gelu.cuh), so they
// keep the 1e-5 parity with the CPU.
#include <algorithm>
#include <map>
#include <mutex>
#include <utility>
#include <vector>
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/gelu.cuh"
#include "kernels/matmul.cuh"
#include "kernels/matmul_device.cuh"

namespace gpt2cc::cuda {
namespace {

// GEMM workspaces, one per (device, stream), for every host thread: calls on one stream run in
// order, so cuBLAS and cuBLASLt can share a stream's workspace, and GEMMs on two streams (two
// backends) never share one. Allocated at a stream's first GEMM, replaced by a larger one when a
// call asks for more; the one replaced stays allocated until the stream's workspace is released
// (GEMMs still in flight, and CUDA graphs captured before, use it). CudaBackend sizes its
// stream's when it is made and releases it before destroying the stream.
class GemmWorkspaces {
 public:
  ~GemmWorkspaces() {
    // At process exit the CUDA context may already be gone; nothing useful to do on failure.
    for (auto& [key, entry] : workspaces_) free_all(entry);
  }
  GemmWorkspaceBuffer get(cudaStream_t stream, size_t bytes) {
    const std::lock_guard lock(mutex_);
    const std::pair<int, cudaStream_t> key{current_device(), stream};
    auto it = workspaces_.find(key);
    if (it != workspaces_.end() && it->second.current.bytes >= bytes) return it->second.current;
    void* data = nullptr;
    // On failure the stream keeps what it had. Memory the pool or graphs keep cached does not
    // count as free to cudaMalloc (cuda_check.cuh).
    const int device = key.first;
    const cudaError_t err = retry_after_releasing_cache(device, [&] { return cudaMalloc(&data, bytes); });
    if (err == cudaErrorMemoryAllocation) {
      const DeviceMemory m = memory_after_failed_allocation();
      throw OutOfMemoryError(format(
          "CUDA out of memory on device {}: the GEMM workspace (cuBLAS, cuBLASLt) asked for {} bytes ({}), {} bytes "
          "free ({}) of {}{}",
          device, bytes, human_bytes(double(bytes)), m.free_bytes, human_bytes(double(m.free_bytes)),
          human_bytes(double(m.total_bytes)),
          bytes > kGemmWorkspaceBytes ? format("; more than the default {} (GPT2CC_KERNELS=gemm-workspace=256 asks "
                                               "for 256 MiB: leave it out)",
                                               human_bytes(double(kGemmWorkspaceBytes)))
                                      : std::string()));
    }
    CUDA_CHECK(err);
    Entry& entry = workspaces_[key];
    if (entry.current.data != nullptr) entry.retired.push_back(entry.current.data);
    entry.current = GemmWorkspaceBuffer{data, bytes};
    return entry.current;
  }
  // Called from destructors: never throws.
  void release(cudaStream_t stream) noexcept {
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return;
    const std::lock_guard lock(mutex_);
    auto it = workspaces_.find({device, stream});
    if (it == workspaces_.end()) return;
    free_all(it->second);
    workspaces_.erase(it);
  }

 private:
  struct Entry {
    GemmWorkspaceBuffer current{nullptr, 0};
    std::vector<void*> retired;  // replaced by a larger one
  };
  static void free_all(const Entry& entry) noexcept {
    cudaFree(entry.current.data);
    for (void* p : entry.retired) cudaFree(p);
  }
  static int current_device() {
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    return device;
  }
  std::mutex mutex_;
  std::map<std::pair<int, cudaStream_t>, Entry> workspaces_;
};

GemmWorkspaces& gemm_workspaces() {
  static GemmWorkspaces workspaces;
  return workspaces;
}

// One handle per (host thread, device): a cuBLAS handle is tied to the device current when it
// was created and must not be used by two threads at once. get() binds it to the stream and that
// stream's workspace on every call, because cublasSetStream resets the handle to cuBLAS's default
// workspace pool (cuBLAS docs, cublasSetStream): with a workspace of its own no GEMM allocates,
// so the calls can be captured in CUDA graphs.
class CublasHandles {
 public:
  ~CublasHandles() {
    for (auto& [device, handle] : handles_) cublasDestroy(handle);
  }
  cublasHandle_t get(cudaStream_t stream) {
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    auto it = handles_.find(device);
    if (it == handles_.end()) {
      cublasHandle_t handle = nullptr;
      CUBLAS_CHECK(cublasCreate(&handle));
      // Plain fp32 FMA GEMMs: TF32 (10-bit mantissa) would break the 1e-5 parity with the CPU.
      CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
      it = handles_.emplace(device, handle).first;
    }
    CUBLAS_CHECK(cublasSetStream(it->second, stream));
    const GemmWorkspaceBuffer workspace = gemm_workspace(stream);
    CUBLAS_CHECK(cublasSetWorkspace(it->second, workspace.data, workspace.bytes));
    return it->second;
  }

 private:
  std::map<int, cublasHandle_t> handles_;
};

}  // namespace

GemmWorkspaceBuffer gemm_workspace(cudaStream_t stream, size_t bytes) { return gemm_workspaces().get(stream, bytes); }

size_t gemm_workspace_bytes(GemmWorkspace design) {
  return design == GemmWorkspace::k256MiB ? size_t{256} << 20 : kGemmWorkspaceBytes;
}

void release_gemm_workspace(cudaStream_t stream) noexcept { gemm_workspaces().release(stream); }

cublasHandle_t cublas_handle(cudaStream_t stream) {
  thread_local CublasHandles handles;
  return handles.get(stream);
}

namespace matmul_internal {

using namespace matmul_kernels;
using column_sum_kernels::column_sum_finalize_kernel;
using column_sum_kernels::column_sum_finalize_launch;

// The branch and geometry are matmul_device.cuh's: a float4 per thread for aligned fp32 rows of
// whole 16-byte vectors, else one element per thread.
template <class Elem>
void add_bias(Elem* out, const Elem* bias, int rows, int OC, cudaStream_t stream) {
  if (static_cast<size_t>(rows) * OC == 0) return;
  const bool vectorized = add_bias_vectorized(out, bias, OC);
  const LaunchShape l = add_bias_launch(rows, OC, vectorized);
  if constexpr (std::is_same_v<Elem, float>) {
    if (vectorized) {
      add_bias_vec4_kernel<<<l.grid, l.block, 0, stream>>>(reinterpret_cast<float4*>(out),
                                                           reinterpret_cast<const float4*>(bias), rows, OC / 4);
      CUDA_CHECK_LAUNCH();
      return;
    }
  }
  add_bias_scalar_kernel<Elem><<<l.grid, l.block, 0, stream>>>(out, bias, rows, OC);
  CUDA_CHECK_LAUNCH();
}

// Slices from the shape only (deterministic on every device): column_sum_slices in
// kernels/matmul_device.cuh.
template <class Out, class Elem>
void accumulate_column_sums(Out* dbias, const Elem* dout, int rows, int OC, cudaStream_t stream) {
  if (rows == 0 || OC == 0) return;
  const ColumnSumSlices s = column_sum_slices(rows);
  ScratchBuffer partial(static_cast<size_t>(s.slices) * OC * sizeof(float), stream);
  const LaunchShape lf = column_sum_finalize_launch(OC);
  if (column_sum_packed(dout, OC)) {
    constexpr int kWidth = kPack128<Elem>;
    const LaunchShape lp = column_sum_partials_launch(OC, s.slices, kWidth);
    column_sum_partials_kernel<Elem, kWidth><<<lp.grid, lp.block, 0, stream>>>(partial.as<float>(), dout, rows, OC,
                                                                               s.rows_per_slice);
  } else {
    const LaunchShape lp = column_sum_partials_launch(OC, s.slices, 1);
    column_sum_partials_kernel<Elem, 1><<<lp.grid, lp.block, 0, stream>>>(partial.as<float>(), dout, rows, OC,
                                                                          s.rows_per_slice);
  }
  CUDA_CHECK_LAUNCH();
  column_sum_finalize_kernel<Out><<<lf.grid, lf.block, 0, stream>>>(dbias, partial.as<float>(), s.slices, OC);
  CUDA_CHECK_LAUNCH();
}

template void add_bias<float>(float*, const float*, int, int, cudaStream_t);
template void add_bias<bf16>(bf16*, const bf16*, int, int, cudaStream_t);
template void accumulate_column_sums<float, float>(float*, const float*, int, int, cudaStream_t);
template void accumulate_column_sums<bf16, bf16>(bf16*, const bf16*, int, int, cudaStream_t);
template void accumulate_column_sums<float, bf16>(float*, const bf16*, int, int, cudaStream_t);

}  // namespace matmul_internal

// Row-major out (N x OC) = inp (N x C) . W^T. cuBLAS is column-major: read that way, out's
// memory is out^T (OC x N), inp's is inp^T (C x N) and W's is W^T (C x OC). So cuBLAS computes
//   out^T (OC x N) = W (OC x C) . inp^T (C x N)   with OP_T on W's memory: m = OC, n = N, k = C.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int T, int C, int OC,
                    cudaStream_t stream) {
  const int N = B * T;
  if (N == 0 || OC == 0) return;
  ENSURE(C >= 1, "matmul_forward needs C >= 1, got {}", C);
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasSgemm(cublas_handle(stream), CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, &one, weight, C, inp, C, &zero,
                           out, OC));
  if (bias != nullptr) matmul_internal::add_bias(out, bias, N, OC, stream);
}

// dinp (N x C) = dout (N x OC) . W (OC x C)      -> column-major: dinp^T = W^T . dout^T
//   cuBLAS: m = C, n = N, k = OC, A = W viewed (C x OC), B = dout viewed (OC x N), both as is.
// dweight (OC x C) += dout^T (OC x N) . inp (N x C) -> column-major: dweight^T += inp^T . dout
//   cuBLAS: m = C, n = OC, k = N, A = inp viewed (C x N) as is, B = dout viewed (OC x N)
//   transposed, beta = 1 (accumulate).
// dbias[o] += sum_r dout[r, o].
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int B, int T, int C, int OC, cudaStream_t stream) {
  const int N = B * T;
  if (N == 0 || OC == 0 || C == 0) return;
  const float one = 1.0f, zero = 0.0f;
  cublasHandle_t handle = cublas_handle(stream);
  CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, &one, weight, C, dout, OC, &zero, dinp, C));
  CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, &one, inp, C, dout, OC, &one, dweight, C));
  if (dbias != nullptr) matmul_internal::accumulate_column_sums(dbias, dout, N, OC, stream);
}

// pre = inp W^T + b; out = gelu(pre).
void matmul_forward_gelu(float* out, float* pre, const float* inp, const float* weight, const float* bias, int B, int T,
                         int C, int OC, cudaStream_t stream) {
  matmul_forward(pre, inp, weight, bias, B, T, C, OC, stream);
  gelu_forward(out, pre, static_cast<size_t>(B) * T * OC, stream);
}

// dinp = (dout W) * gelu'(pre): the plain backward writes dout W into a scratch buffer (not into
// dinp, so gelu_backward never runs in place), then the GELU backward applies gelu'(pre).
void matmul_backward_gelu(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                          const float* weight, const float* pre, int B, int T, int C, int OC, cudaStream_t stream) {
  const size_t count = static_cast<size_t>(B) * T * C;
  if (count == 0 || OC == 0) return;
  ScratchBuffer dgelu_out(count * sizeof(float), stream);
  matmul_backward(dgelu_out.as<float>(), dweight, dbias, dout, inp, weight, B, T, C, OC, stream);
  gelu_backward(dinp, dgelu_out.as<float>(), pre, count, stream);
}

}  // namespace gpt2cc::cuda
