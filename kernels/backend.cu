// CudaBackend: the Backend interface (core/backend.hpp) on one GPU, computing in fp32 or bf16
// (mixed precision: bf16 activations, compute parameters and gradients; fp32 master weights,
// moments, LayerNorm statistics and attention log-sum-exp). Device memory from cudaMalloc
// (zero-filled, out-of-memory reported with the sizes and a hint), one stream on which every
// kernel and copy runs in order, the cuda:: layers of kernels/*.cuh, the fused kernels for the
// fused ops, flash attention for bf16, and CUDA graphs for recorded replay. Also the factory
// make_cuda_backend, which throws InputError when there is no usable GPU or GPT2CC_KERNELS is
// malformed (the designs where a layer has several: kernels/kernel_designs.cuh).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/backend.hpp"
#include "core/check.hpp"
#include "kernels/adamw.cuh"
#include "kernels/attention.cuh"
#include "kernels/convert.cuh"
#include "kernels/crossentropy.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/dropout.cuh"
#include "kernels/encoder.cuh"
#include "kernels/flash_attention.cuh"
#include "kernels/gelu.cuh"
#include "kernels/kernel_designs.cuh"
#include "kernels/layernorm.cuh"
#include "kernels/matmul.cuh"
#include "kernels/residual.cuh"

namespace gpt2cc {
namespace {

using cuda::bf16;

// Never launched: cudaFuncGetAttributes on it tells whether this build has code for a device.
__global__ void kernel_image_probe() {}

// The architectures this build has code for (CMake's GPT2CC_CUDA_ARCHITECTURES, kernels/CMakeLists.txt).
#ifndef GPT2CC_BUILT_CUDA_ARCHITECTURES
#define GPT2CC_BUILT_CUDA_ARCHITECTURES "?"
#endif

// A binary holds code only for the architectures it was built for; on any other GPU every launch
// would fail with "no kernel image". Says so at once, with the way out.
void check_kernel_image(int device, const cudaDeviceProp& props) {
  cudaFuncAttributes attributes{};
  const cudaError_t err = cudaFuncGetAttributes(&attributes, kernel_image_probe);
  const int arch = props.major * 10 + props.minor;
  if (err == cudaErrorUnsupportedPtxVersion || err == cudaErrorInvalidPtx || err == cudaErrorJitCompilerNotFound ||
      err == cudaErrorInvalidKernelImage) {
    // Only PTX matches this GPU (built for an older architecture) and the driver cannot compile it:
    // typically PTX of a newer toolkit than the driver knows.
    cudaGetLastError();
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    fail_input(format("--device cuda: the driver cannot load this gpt2cc's code for device {} ({}, sm_{}): {} ({}); "
                      "the driver supports CUDA {}.{}, gpt2cc was built with CUDA {}.{} for architectures {}: "
                      "rebuild it with -DGPT2CC_CUDA_ARCHITECTURES={} (native code, no compilation by the "
                      "driver) or update the NVIDIA driver",
                      device, props.name, arch, cudaGetErrorName(err), cudaGetErrorString(err), driver / 1000,
                      driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10, GPT2CC_BUILT_CUDA_ARCHITECTURES, arch));
  }
  if (err != cudaErrorNoKernelImageForDevice && err != cudaErrorInvalidDeviceFunction) {
    CUDA_CHECK(err);
    return;
  }
  cudaGetLastError();
  if (arch < 75)
    fail_input(format("--device cuda: device {} ({}) is sm_{}, and gpt2cc's CUDA backend needs sm_75 or newer "
                      "(fp32; --dtype bf16 needs sm_80); use --device cpu",
                      device, props.name, arch));
  fail_input(format("--device cuda: this gpt2cc was built for CUDA architectures {} and has no code for device {} "
                    "({}, sm_{}): rebuild it with -DGPT2CC_CUDA_ARCHITECTURES={} (a build on this machine picks its "
                    "GPUs by default)",
                    GPT2CC_BUILT_CUDA_ARCHITECTURES, device, props.name, arch, arch));
}

std::string gib(size_t bytes) { return format("{} GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0)); }

// The element type of a compute-dtype tensor, checked: a tensor of the other dtype is a bug in
// the caller (core/ allocates everything in the backend's dtype).
template <class Elem>
constexpr DType dtype_of = std::is_same_v<Elem, float> ? DType::fp32 : DType::bf16;

template <class Elem>
Elem* as(TensorPtr p) {
  ENSURE(!p || p.dtype == dtype_of<Elem>, "cuda backend: a {} tensor where {} was expected", dtype_name(p.dtype),
         dtype_name(dtype_of<Elem>));
  return static_cast<Elem*>(p.data);
}
template <class Elem>
const Elem* as(ConstTensorPtr p) {
  ENSURE(!p || p.dtype == dtype_of<Elem>, "cuda backend: a {} tensor where {} was expected", dtype_name(p.dtype),
         dtype_name(dtype_of<Elem>));
  return static_cast<const Elem*>(p.data);
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, DType dtype, const cuda::KernelDesigns& designs)
      : device_(device), dtype_(dtype), designs_(designs) {
    CUDA_CHECK(cudaSetDevice(device_));
    CUDA_CHECK(cudaGetDeviceProperties(&props_, device_));
    check_kernel_image(device_, props_);
    INPUT_CHECK(dtype_ != DType::bf16 || props_.major >= 8,
                "--dtype bf16 needs a GPU of compute capability 8.0 or newer (bf16 tensor cores); device {} ({}) is "
                "sm_{}{}: use --dtype fp32",
                device_, props_.name, props_.major, props_.minor);
    INPUT_CHECK(dtype_ == DType::bf16 || designs_.bias_gradient != cuda::BiasGradient::kEpilogue,
                "{}: bias-grad=epilogue is a design of the bf16 GEMMs (cuBLASLt's BGRADB epilogue); the fp32 ones "
                "run through cuBLAS: use --dtype bf16 or drop it",
                cuda::kKernelDesignsVariable);
    INPUT_CHECK(dtype_ == DType::bf16 || (designs_.gemm_alignment == cuda::GemmAlignment::kAuto &&
                                          designs_.gemm_split_k == cuda::GemmSplitK::kAuto &&
                                          designs_.gemm_workspace == cuda::GemmWorkspace::kAuto &&
                                          designs_.gelu == cuda::GeluFusion::kAuto),
                "{}: gemm-alignment, gemm-split-k, gemm-workspace and gelu are designs of the bf16 GEMMs "
                "(cuBLASLt's preferences and epilogues); the fp32 ones run through cuBLAS: use --dtype bf16 or drop "
                "them",
                cuda::kKernelDesignsVariable);
    INPUT_CHECK(dtype_ == DType::bf16 ||
                    (designs_.flash_tile == cuda::FlashTile::kAuto && designs_.flash_backward == cuda::FlashBackward::kAuto),
                "{}: flash-tile and flash-backward are designs of the bf16 flash attention; fp32 runs the tiled "
                "attention: use --dtype bf16 or drop them",
                cuda::kKernelDesignsVariable);
    flash_built_ = cuda::flash_attention_built_for_device();
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    // The per-op scratch buffers (cuda_check.cuh ScratchBuffer) come from the device's default
    // memory pool; keeping freed blocks in the pool instead of returning them to the driver at
    // each synchronisation makes every step after the first allocation-free.
    cudaMemPool_t pool;
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device_));
    uint64_t threshold = UINT64_MAX;
    CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    // The cuBLAS handle and the stream's GEMM workspace (kernels/matmul.cuh), of the size the GEMM
    // design offers cuBLASLt, are created here, outside any CUDA-graph capture (they allocate).
    cuda::gemm_workspace(stream_, cuda::gemm_workspace_bytes(gemm_design_.workspace));
    cuda::cublas_handle(stream_);
  }
  ~CudaBackend() override {
    for (const Recording& r : graphs_) cudaGraphExecDestroy(r.exec);
    cudaStreamSynchronize(stream_);
    cudaDeviceGraphMemTrim(device_);  // the graphs' memory stays reserved until trimmed
    cudaSetDevice(device_);  // the workspace is keyed by (device, stream)
    cuda::release_gemm_workspace(stream_);
    cudaStreamDestroy(stream_);
  }

  DeviceKind kind() const override { return DeviceKind::cuda; }
  DType dtype() const override { return dtype_; }
  std::string device_name() const override { return props_.name; }
  std::string device_uuid() const override {
    std::string text = "GPU-";
    for (int i = 0; i < 16; ++i) {
      if (i == 4 || i == 6 || i == 8 || i == 10) text += '-';
      text += hex_byte(static_cast<unsigned char>(props_.uuid.bytes[i]));
    }
    return text;
  }
  std::string describe() const override {
    std::string text = format("cuda {} (device {}: {}, {}, sm_{}{})", dtype_name(dtype_), device_, props_.name,
                              gib(props_.totalGlobalMem), props_.major, props_.minor);
    // bf16 on a GPU whose code in this build is older than sm_80 (a build for 75 only): correct,
    // through the tiled attention, but without flash attention; says how to get it.
    if (dtype_ == DType::bf16 && !flash_built_)
      text += format("; this build has no flash attention for it (tiled attention instead): rebuild with "
                     "-DGPT2CC_CUDA_ARCHITECTURES={}{}",
                     props_.major, props_.minor);
    const std::string designs = cuda::kernel_designs_text(designs_);
    if (!designs.empty()) text += format("; kernel designs {}", designs);
    return text;
  }

  void* allocate(size_t bytes) override {
    CUDA_CHECK(cudaSetDevice(device_));
    void* ptr = nullptr;
    // Memory the pool or graphs keep cached (cuda_check.cuh) does not count as free to cudaMalloc.
    const cudaError_t err =
        cuda::retry_after_releasing_cache(device_, [&] { return cudaMalloc(&ptr, bytes == 0 ? 1 : bytes); });
    if (err == cudaErrorMemoryAllocation) {
      const cuda::DeviceMemory m = cuda::memory_after_failed_allocation();
      throw OutOfMemoryError(format("CUDA out of memory on device {} ({}): asked for {} bytes ({}), {} bytes free ({}) "
                                    "of {}; try a smaller batch size or sequence length, {}or a smaller model",
                                    device_, props_.name, bytes, gib(bytes), m.free_bytes, gib(m.free_bytes),
                                    gib(m.total_bytes), dtype_ == DType::fp32 ? "--dtype bf16, " : ""));
    }
    CUDA_CHECK(err);
    CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    return ptr;
  }
  void release(void* ptr) noexcept override {
    // cudaFree waits for the device; an error here (e.g. at teardown) cannot be acted on.
    if (ptr) cudaFree(ptr);
  }
  void upload(void* dst, const void* host_src, size_t bytes) override {
    CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // host_src may be freed by the caller right after
  }
  void download(void* host_dst, const void* src, size_t bytes) override {
    CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void zero(void* ptr, size_t bytes) override { CUDA_CHECK(cudaMemsetAsync(ptr, 0, bytes, stream_)); }
  void synchronize() override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  void* stream_handle() override { return stream_; }
  void convert_from_float(TensorPtr dst, const float* src, size_t N) override {
    if (dtype_ == DType::bf16) return cuda::convert(as<bf16>(dst), src, N, stream_);
    copy(as<float>(dst), src, N * sizeof(float));
  }
  void convert_to_float(float* dst, ConstTensorPtr src, size_t N) override {
    if (dtype_ == DType::bf16) return cuda::widen(dst, as<bf16>(src), N, stream_);
    copy(dst, as<float>(src), N * sizeof(float));
  }

  void encoder_forward(TensorPtr out, const int* inp, ConstTensorPtr wte, ConstTensorPtr wpe, int B, int T,
                       int C) override {
    with_elem([&]<class E>() {
      cuda::encoder_forward(as<E>(out), inp, as<E>(wte), as<E>(wpe), B, T, C, stream_);
    });
  }
  void encoder_backward(TensorPtr dwte, TensorPtr dwpe, ConstTensorPtr dout, const int* inp, int B, int T,
                        int C) override {
    if (fp32_gradients(dwte))
      return cuda::encoder_backward(as<float>(dwte), as<float>(dwpe), as<bf16>(dout), inp, B, T, C, stream_);
    with_elem([&]<class E>() {
      cuda::encoder_backward(as<E>(dwte), as<E>(dwpe), as<E>(dout), inp, B, T, C, stream_);
    });
  }
  void layernorm_forward(TensorPtr out, float* mean, float* rstd, ConstTensorPtr inp, ConstTensorPtr weight,
                         ConstTensorPtr bias, int B, int T, int C) override {
    with_elem([&]<class E>() {
      cuda::layernorm_forward(as<E>(out), mean, rstd, as<E>(inp), as<E>(weight), as<E>(bias), B, T, C, stream_);
    });
  }
  void layernorm_backward(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout, const float* mean,
                          const float* rstd, ConstTensorPtr inp, ConstTensorPtr weight, int B, int T,
                          int C) override {
    if (fp32_gradients(dweight))
      return cuda::layernorm_backward(as<bf16>(dinp), as<float>(dweight), as<float>(dbias), as<bf16>(dout), mean, rstd,
                                      as<bf16>(inp), as<bf16>(weight), B, T, C, stream_, designs_.layernorm_backward);
    with_elem([&]<class E>() {
      cuda::layernorm_backward(as<E>(dinp), as<E>(dweight), as<E>(dbias), as<E>(dout), mean, rstd, as<E>(inp),
                               as<E>(weight), B, T, C, stream_, designs_.layernorm_backward);
    });
  }
  void matmul_forward(TensorPtr out, ConstTensorPtr inp, ConstTensorPtr weight, ConstTensorPtr bias, int B, int T,
                      int C, int OC) override {
    if (dtype_ == DType::bf16)
      return cuda::matmul_forward(as<bf16>(out), as<bf16>(inp), as<bf16>(weight), as<bf16>(bias), B, T, C, OC, stream_,
                                  gemm_design_);
    cuda::matmul_forward(as<float>(out), as<float>(inp), as<float>(weight), as<float>(bias), B, T, C, OC, stream_);
  }
  void matmul_backward(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout, ConstTensorPtr inp,
                       ConstTensorPtr weight, int B, int T, int C, int OC) override {
    if (fp32_gradients(dweight))
      return cuda::matmul_backward(as<bf16>(dinp), as<float>(dweight), as<float>(dbias), as<bf16>(dout),
                                   as<bf16>(inp), as<bf16>(weight), B, T, C, OC, stream_, gemm_design_);
    if (dtype_ == DType::bf16)
      return cuda::matmul_backward(as<bf16>(dinp), as<bf16>(dweight), as<bf16>(dbias), as<bf16>(dout), as<bf16>(inp),
                                   as<bf16>(weight), B, T, C, OC, stream_, gemm_design_);
    cuda::matmul_backward(as<float>(dinp), as<float>(dweight), as<float>(dbias), as<float>(dout), as<float>(inp),
                          as<float>(weight), B, T, C, OC, stream_);
  }
  // Both attention paths (flash for bf16 without attention dropout, use_flash; the tiled kernels
  // otherwise) save each row's log-sum-exp, like the CPU.
  void attention_forward(TensorPtr out, float* saved, ConstTensorPtr qkv, int B, int T, int C, int NH,
                         const DropoutParams& dropout) override {
    if (use_flash(C / NH, dropout.active()))
      return cuda::flash_attention_forward(as<bf16>(out), saved, as<bf16>(qkv), B, T, C, NH, stream_,
                                           designs_.flash_tile);
    with_elem([&]<class E>() {
      cuda::attention_forward(as<E>(out), saved, as<E>(qkv), B, T, C, NH, dropout, stream_);
    });
  }
  void attention_backward(TensorPtr dqkv, ConstTensorPtr dout, const float* saved, ConstTensorPtr qkv,
                          ConstTensorPtr out, int B, int T, int C, int NH, const DropoutParams& dropout) override {
    if (use_flash(C / NH, dropout.active()))
      return cuda::flash_attention_backward(as<bf16>(dqkv), as<bf16>(dout), saved, as<bf16>(qkv), as<bf16>(out), B,
                                            T, C, NH, stream_, designs_.flash_tile, designs_.flash_backward);
    with_elem([&]<class E>() {
      cuda::attention_backward(as<E>(dqkv), as<E>(dout), saved, as<E>(qkv), as<E>(out), B, T, C, NH, dropout,
                               stream_);
    });
  }
  void attention_decode(TensorPtr out, TensorPtr kcache, TensorPtr vcache, ConstTensorPtr qkv, int B, int pos,
                        int maxT, int C, int NH) override {
    with_elem([&]<class E>() {
      cuda::attention_decode(as<E>(out), as<E>(kcache), as<E>(vcache), as<E>(qkv), B, pos, maxT, C, NH, stream_);
    });
  }
  void kv_cache_store(TensorPtr kcache, TensorPtr vcache, ConstTensorPtr qkv, int B, int T, int maxT,
                      int C) override {
    with_elem([&]<class E>() {
      cuda::kv_cache_store(as<E>(kcache), as<E>(vcache), as<E>(qkv), B, T, maxT, C, stream_);
    });
  }
  void gelu_forward(TensorPtr out, ConstTensorPtr inp, size_t N) override {
    with_elem([&]<class E>() {
      cuda::gelu_forward(as<E>(out), as<E>(inp), N, stream_);
    });
  }
  void gelu_backward(TensorPtr dinp, ConstTensorPtr dout, ConstTensorPtr inp, size_t N) override {
    with_elem([&]<class E>() {
      cuda::gelu_backward(as<E>(dinp), as<E>(dout), as<E>(inp), N, stream_);
    });
  }
  void residual_forward(TensorPtr out, ConstTensorPtr inp1, ConstTensorPtr inp2, size_t N) override {
    if (dtype_ == DType::bf16 && inp2.dtype == DType::fp32)  // a sum kept in fp32 (core/backend.hpp)
      return cuda::residual_forward(as<bf16>(out), as<bf16>(inp1), as<float>(inp2), N, stream_);
    with_elem([&]<class E>() {
      cuda::residual_forward(as<E>(out), as<E>(inp1), as<E>(inp2), N, stream_);
    });
  }
  void residual_backward(TensorPtr dinp1, TensorPtr dinp2, ConstTensorPtr dout, size_t N) override {
    with_elem([&]<class E>() {
      cuda::residual_backward(as<E>(dinp1), as<E>(dinp2), as<E>(dout), N, stream_);
    });
  }
  void dropout_forward(TensorPtr out, ConstTensorPtr inp, const DropoutParams& dropout, size_t N) override {
    with_elem([&]<class E>() {
      cuda::dropout_forward(as<E>(out), as<E>(inp), dropout, N, stream_);
    });
  }
  void dropout_backward(TensorPtr dinp, ConstTensorPtr dout, const DropoutParams& dropout, size_t N) override {
    with_elem([&]<class E>() {
      cuda::dropout_backward(as<E>(dinp), as<E>(dout), dropout, N, stream_);
    });
  }
  void crossentropy_forward(float* losses, ConstTensorPtr logits, const int* targets, int B, int T, int V,
                            int Vp) override {
    with_elem([&]<class E>() {
      cuda::crossentropy_forward(losses, as<E>(logits), targets, B, T, V, Vp, stream_);
    });
  }
  void crossentropy_backward(TensorPtr dlogits, float dloss, ConstTensorPtr logits, const int* targets, int B, int T,
                             int V, int Vp) override {
    with_elem([&]<class E>() {
      cuda::crossentropy_backward(as<E>(dlogits), dloss, as<E>(logits), targets, B, T, V, Vp, stream_);
    });
  }

  // ---- fused ops: one kernel (or one GEMM with an epilogue) each ----
  void residual_layernorm_forward(TensorPtr residual, TensorPtr out, float* mean, float* rstd, ConstTensorPtr inp1,
                                  ConstTensorPtr inp2, ConstTensorPtr weight, ConstTensorPtr bias, int B, int T,
                                  int C) override {
    with_elem([&]<class E>() {
      cuda::residual_layernorm_forward(as<E>(residual), as<E>(out), mean, rstd, as<E>(inp1), as<E>(inp2),
                                       as<E>(weight), as<E>(bias), B, T, C, stream_);
    });
  }
  void matmul_forward_gelu(TensorPtr out, TensorPtr pre, ConstTensorPtr inp, ConstTensorPtr weight,
                           ConstTensorPtr bias, int B, int T, int C, int OC) override {
    if (dtype_ == DType::bf16)
      return cuda::matmul_forward_gelu(as<bf16>(out), as<bf16>(pre), as<bf16>(inp), as<bf16>(weight), as<bf16>(bias),
                                       B, T, C, OC, stream_, gemm_design_);
    cuda::matmul_forward_gelu(as<float>(out), as<float>(pre), as<float>(inp), as<float>(weight), as<float>(bias), B, T,
                              C, OC, stream_);
  }
  void matmul_backward_gelu(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout,
                            ConstTensorPtr inp, ConstTensorPtr weight, ConstTensorPtr pre, int B, int T, int C,
                            int OC) override {
    if (fp32_gradients(dweight))
      return cuda::matmul_backward_gelu(as<bf16>(dinp), as<float>(dweight), as<float>(dbias), as<bf16>(dout),
                                        as<bf16>(inp), as<bf16>(weight), as<bf16>(pre), B, T, C, OC, stream_,
                                        gemm_design_);
    if (dtype_ == DType::bf16)
      return cuda::matmul_backward_gelu(as<bf16>(dinp), as<bf16>(dweight), as<bf16>(dbias), as<bf16>(dout),
                                        as<bf16>(inp), as<bf16>(weight), as<bf16>(pre), B, T, C, OC, stream_,
                                        gemm_design_);
    cuda::matmul_backward_gelu(as<float>(dinp), as<float>(dweight), as<float>(dbias), as<float>(dout),
                               as<float>(inp), as<float>(weight), as<float>(pre), B, T, C, OC, stream_);
  }
  void fused_classifier(TensorPtr logits, float* losses, const int* targets, float dloss, int B, int T, int V,
                        int Vp) override {
    with_elem([&]<class E>() {
      cuda::fused_classifier(as<E>(logits), losses, targets, dloss, B, T, V, Vp, stream_, designs_.classifier);
    });
  }

  double sum_of_squares(ConstTensorPtr x, size_t N) override {
    if (dtype_ == DType::bf16 && x.dtype == DType::bf16) return cuda::sum_of_squares(as<bf16>(x), N, stream_);
    return cuda::sum_of_squares(as<float>(x), N, stream_);
  }
  void adamw_update(float* master, TensorPtr params, float* m, float* v, ConstTensorPtr grads, size_t N,
                    const AdamWParams& hp) override {
    if (fp32_gradients(grads))
      return cuda::adamw_update(master, as<bf16>(params), m, v, as<float>(grads), N, hp, stream_);
    if (dtype_ == DType::bf16)
      return cuda::adamw_update(master, as<bf16>(params), m, v, as<bf16>(grads), N, hp, stream_);
    ENSURE(as<float>(params) == master, "cuda backend: in fp32, adamw_update's params must be the master weights");
    cuda::adamw_update(master, m, v, as<float>(grads), N, hp, stream_);
  }

  // ---- CUDA graphs: a recording is the stream capture of the ops between begin and end ----
  bool begin_recording() override {
    // Thread-local capture: another host thread (the data loader's prefetch) may call CUDA
    // meanwhile without invalidating this capture.
    CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    cuda::captured_scratch = {};
    return true;
  }
  void end_recording(uint64_t key) override {
    cudaGraph_t captured = nullptr;
    CUDA_CHECK(cudaStreamEndCapture(stream_, &captured));
    const std::unique_ptr<std::remove_pointer_t<cudaGraph_t>, decltype(&cudaGraphDestroy)> graph(captured,
                                                                                          &cudaGraphDestroy);
    // The recorded ops' scratch is graph memory, apart from the default pool, which still holds
    // (release threshold: never) what the same ops took when they ran directly: without handing
    // that back, every recorded step would keep its scratch on the device twice, and a batch that
    // fits when run directly could run out of memory as a graph. Once per recording; the trim
    // releases only blocks whose frees the host has seen, hence the synchronisation.
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    cudaMemPool_t pool = nullptr;
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device_));
    CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
    cudaGraphExec_t exec = nullptr;
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph.get(), 0));
    // A few shapes at most recur (training batches, evaluation batches): keep the most recently
    // replayed.
    if (graphs_.size() >= kMaxGraphs) destroy_recording(graphs_.begin());  // the stream is synchronised above
    graphs_.push_back({key, exec, cuda::captured_scratch.peak});
  }
  void abort_recording() noexcept override {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream_, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
      cudaGraph_t graph = nullptr;
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
    }
    cudaGetLastError();
  }
  void drop_recording(uint64_t key) override {
    auto found = std::find_if(graphs_.begin(), graphs_.end(), [&](const Recording& r) { return r.key == key; });
    if (found == graphs_.end()) return;
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // no launch of it still in flight
    destroy_recording(found);
  }
  bool replay(uint64_t key) override {
    auto found = std::find_if(graphs_.begin(), graphs_.end(), [&](const Recording& r) { return r.key == key; });
    if (found == graphs_.end()) return false;
    std::rotate(found, found + 1, graphs_.end());  // now the most recently replayed: evicted last
    const Recording& recording = graphs_.back();
    // A launch maps the graph's scratch (graph memory) when it is not mapped already, which fails
    // when the device is full: the memory CUDA keeps cached (the default pool's, the other graphs'
    // idle graph memory) goes back and the launch is tried once more.
    const cudaError_t err =
        cuda::retry_after_releasing_cache(device_, [&] { return cudaGraphLaunch(recording.exec, stream_); });
    if (err == cudaErrorMemoryAllocation) {
      const cuda::DeviceMemory m = cuda::memory_after_failed_allocation();
      throw OutOfMemoryError(format("CUDA out of memory on device {} ({}) launching a recorded step (CUDA graph) "
                                    "whose scratch needs {} bytes ({}) at once: {} bytes free ({}) of {}; try a "
                                    "smaller batch size or sequence length",
                                    device_, props_.name, recording.scratch_peak, gib(recording.scratch_peak),
                                    m.free_bytes, gib(m.free_bytes), gib(m.total_bytes)));
    }
    CUDA_CHECK(err);
    return true;
  }

 private:
  static constexpr size_t kMaxGraphs = 4;

  // Calls fn.operator()<E>() with E the element type of this backend's dtype: fn is a templated
  // lambda, [&]<class E>() { ... }.
  template <class Fn>
  void with_elem(Fn&& fn) {
    if (dtype_ == DType::bf16)
      fn.template operator()<bf16>();
    else
      fn.template operator()<float>();
  }
  // A parameter gradient in fp32 in this bf16 backend (core/backend.hpp): a bf16 model's fp32
  // gradients, or the classifier chunks' sum of wte's.
  bool fp32_gradients(ConstTensorPtr grad) const { return dtype_ == DType::bf16 && grad.dtype == DType::fp32; }
  // Flash where its kernels fit the device's shared memory (not HS 128 on sm_86 / sm_89): the
  // tiled kernels compute the same anywhere. A flash design named where the tiled kernels run
  // would do nothing, so it is refused, naming why (fp32 is refused at construction).
  bool use_flash(int HS, bool dropout) const {
    const bool flash = dtype_ == DType::bf16 && !dropout && cuda::flash_attention_supported(HS) &&
                       cuda::flash_attention_fits_device(HS, designs_.flash_backward);
    const bool named = designs_.flash_tile != cuda::FlashTile::kAuto ||
                       designs_.flash_backward != cuda::FlashBackward::kAuto;
    if (flash || !named) return flash;
    const std::string why =
        dropout ? std::string("attention dropout (--dropout above 0) runs the tiled attention")
        : !cuda::flash_attention_supported(HS)
            ? format("head size {} runs the tiled attention (flash takes 64 and 128)", HS)
        : !cuda::flash_attention_built_for_device()
            ? format("this build has no sm_80 or newer code for device {} ({}, sm_{}{}), where flash attention is, so "
                     "the tiled attention runs",
                     device_, props_.name, props_.major, props_.minor)
            : format("device {} ({}, sm_{}{}) cannot hold flash attention at head size {} with these designs, so the "
                     "tiled attention runs",
                     device_, props_.name, props_.major, props_.minor, HS);
    throw InputError(format("{}: flash-tile and flash-backward are designs of the flash attention, which this run "
                            "does not use: {}; drop them",
                            cuda::kKernelDesignsVariable, why));
  }
  // Destroys a recording (the caller has synchronised the stream: no launch of it in flight) and
  // hands back the graph memory only it used.
  template <class It>
  void destroy_recording(It recording) {
    CUDA_CHECK(cudaGraphExecDestroy(recording->exec));
    graphs_.erase(recording);
    CUDA_CHECK(cudaDeviceGraphMemTrim(device_));
  }

  int device_;
  DType dtype_;
  cuda::KernelDesigns designs_;  // GPT2CC_KERNELS (kernels/kernel_designs.cuh)
  cuda::GemmDesign gemm_design_ = cuda::gemm_design(designs_);  // the bf16 GEMMs' part of it
  bool flash_built_ = false;  // cuda::flash_attention_built_for_device()
  cudaDeviceProp props_{};
  cudaStream_t stream_ = nullptr;
  // The recordings, least recently replayed first; scratch_peak: their graph memory (ScratchBuffer).
  struct Recording {
    uint64_t key;
    cudaGraphExec_t exec;
    size_t scratch_peak;
  };
  std::vector<Recording> graphs_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device, DType dtype) {
  // Read first: a mistyped GPT2CC_KERNELS fails before any GPU work.
  const cuda::KernelDesigns designs = cuda::kernel_designs_from_environment();
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    fail_input(format("--device cuda: no usable CUDA GPU ({}: {}); use --device cpu", cudaGetErrorName(err),
                      cudaGetErrorString(err)));
  }
  if (count == 0) fail_input("--device cuda: no CUDA GPU is present on this machine; use --device cpu");
  INPUT_CHECK(device >= 0 && device < count, "--cuda-device {} does not exist: this machine has {} CUDA device(s) (0..{})",
              device, count, count - 1);
  return std::make_unique<CudaBackend>(device, dtype, designs);
}

bool cuda_backend_built() { return true; }

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: none
    return 0;
  }
  return count;
}

}  // namespace gpt2cc
