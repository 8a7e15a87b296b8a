// The host CUDA runtime's inside, shared by its parts (runtime.cpp: streams, memory, graphs;
// device.cpp: the emulated GPU and its kernel images; cublas.cpp, cublaslt.cpp) and by the
// kernels/ sources that translate.py rewrote: a launch `kernel<<<grid, block, smem, stream>>>(args)`
// becomes kernel_call(shared, kernel, grid, block, smem, stream)(args), which checks the
// configuration as cudaLaunchKernel does (an error goes to cudaGetLastError and the kernel does not
// run), converts the arguments to the kernel's parameter types and copies them (as a launch does),
// then runs the grid on the CPU emulator (cuda_emu.hpp) when the stream reaches it: at once, or at
// each replay of a graph captured from the stream.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "emu/cuda_emu.hpp"

namespace gpt2cc::hostcuda {

// The GPU the emulated device is (device.cpp): what cudaGetDeviceProperties and
// cudaDeviceGetAttribute report, and the shared memory limits launches and cudaFuncSetAttribute
// are held to. Chosen by $GPT2CC_EMU_GPU (read once; default h100; an unknown name ends the
// process with exit 2 and the names): h100, h200 (sm_90), a100 (sm_80), rtx4090 (sm_89),
// t4 (sm_75: the fp32 backend only).
struct GpuProfile {
  const char* key;   // its GPT2CC_EMU_GPU value
  const char* name;  // cudaDeviceProp::name, starting "gpt2cc CPU emulator"
  int major, minor;  // compute capability
  int sm_count;
  size_t shared_per_sm;
  size_t shared_optin;  // per block, dynamic + static: cudaDevAttrMaxSharedMemoryPerBlockOptin
  size_t l2_bytes;
  size_t memory_bytes;  // unless $GPT2CC_EMU_DEVICE_MIB says otherwise
  int memory_bus_width;
  int max_threads_per_sm, max_blocks_per_sm;
};
std::span<const GpuProfile> gpu_profiles();
const GpuProfile& gpu_profile();

// Dynamic shared memory a launch may use without cudaFuncAttributeMaxDynamicSharedMemorySize.
inline constexpr size_t kDefaultMaxDynamicShared = 48 * 1024;

// A kernel image the device runs: binaryVersion and ptxVersion as cudaFuncAttributes reports them
// (major * 10 + minor): SASS sm_XY gives XY, XY; PTX compute_XY compiled for the device gives the
// device's version, XY.
struct KernelImage {
  int binary_version, ptx_version;
  bool jit = false;  // PTX the driver compiles for the device (no SASS for it)
};
// The image a device of compute capability major.minor runs from the code a CMake CUDA
// architecture list ("80;90", commas also separate) builds, none when no entry runs there (every
// launch then fails with cudaErrorNoKernelImageForDevice). SASS sm_XY runs on X.y with y >= Y;
// PTX compute_XY on any X.Y or newer (JIT); "90a" code only on 9.0; "100f" on 10.y, y >= 0;
// "native", "all", "all-major" anywhere. Matching SASS is preferred, then the newest PTX. Throws
// std::invalid_argument for an entry that is no architecture.
std::optional<KernelImage> kernel_image_for(std::string_view architectures, int major, int minor);
// The emulated "binary"'s list: the build's GPT2CC_CUDA_ARCHITECTURES, or $GPT2CC_CUDA_ARCHITECTURES
// (read once with $GPT2CC_EMU_GPU; a list that does not parse ends the process with exit 2), and
// the image the profile runs from it.
const std::string& cuda_architectures();
const std::optional<KernelImage>& kernel_image();
// For tests: the device is `profile` and the binary holds `architectures` from now on (throws as
// kernel_image_for does). Not while another thread uses the runtime.
void set_emulated_gpu(const GpuProfile& profile, std::string_view architectures);
// Whether the driver compiles the binary's PTX: $GPT2CC_EMU_DRIVER_PTX (read once with
// $GPT2CC_EMU_GPU) jit (the default: it does) or too-new (the PTX is of a newer toolkit than the
// driver: cudaDriverGetVersion reports one minor version less than the runtime). For tests:
// set_driver_compiles_ptx, under the same rule as set_emulated_gpu.
bool driver_compiles_ptx();
void set_driver_compiles_ptx(bool compiles);
// What a launch, cudaFuncGetAttributes and cudaFuncSetAttribute return before anything else:
// cudaErrorNoKernelImageForDevice without an image, cudaErrorUnsupportedPtxVersion for a PTX image
// the driver does not compile, else cudaSuccess.
cudaError_t kernel_image_error();

// The emulated device's memory: what cudaMemGetInfo and cudaGetDeviceProperties report and where
// allocations start failing. The profile's, or $GPT2CC_EMU_DEVICE_MIB MiB (read once; a value that
// is not a positive number of MiB ends the process with a message): a small device makes
// out-of-memory paths reachable (bench_train_gpu -B auto probing down from 512 rows).
size_t device_memory_bytes();

// cudaGetDeviceProperties of the emulated device (the profile's values).
cudaDeviceProp device_properties();

// The array a translation unit's `extern __shared__` declarations refer to (none: instance null):
// a thread_local array, so instance() returns the calling OS thread's (the emulator runs the
// resident blocks of an interleaved launch on threads of their own, emu::set_resident_blocks).
struct DynamicShared {
  void* (*instance)() = nullptr;
  size_t capacity = 0;
};

// Stream order: runs `work` now, or, while `stream` captures, appends it to the graph being
// captured (run at each replay). The error CUDA gives for the stream (unknown, destroyed,
// capture invalidated), and then `work` is dropped.
cudaError_t enqueue(cudaStream_t stream, std::function<void()> work);

// The checks of cudaLaunchKernel: an image the device runs (kernel_image), else
// cudaErrorNoKernelImageForDevice; block and grid limits (those of sm_80 to sm_90); dynamic shared
// memory within 48 KiB or the kernel's cudaFuncAttributeMaxDynamicSharedMemorySize (kernel null: a
// template whose arguments the launch deduces, address unknown here: the profile's opt-in limit).
// The error is also the thread's last error.
cudaError_t check_launch(const void* kernel, dim3 grid, dim3 block, size_t smem_bytes);

// Runs one grid on the emulator over `shared`, then checks no cp.async copy was left in flight.
void run_grid(const DynamicShared& shared, dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body);

// A grid run_grid ran: its shape and dynamic shared memory.
struct GridRun {
  dim3 grid, block;
  size_t smem_bytes;
};
// grids_run(): how many grids run_grid has run; grids_run_since(n): those run since grids_run()
// was n, oldest first (of the last kRecentGrids, which are kept). What a test reads to see which of
// a launcher's kernels ran where two give the same values (flash attention's 64- and 128-row
// tiles, the two decode kernels).
inline constexpr size_t kRecentGrids = 1024;
size_t grids_run();
std::vector<GridRun> grids_run_since(size_t since);

// Whether [p, p + bytes) lies inside one live device allocation (cudaMalloc / cudaMallocAsync).
bool is_device_memory(const void* p, size_t bytes);

// Sets the calling thread's last error (cudaGetLastError) when `err` is one; returns it.
cudaError_t record_error(cudaError_t err);

template <class... Params>
class KernelCall {
 public:
  KernelCall(DynamicShared shared, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes,
             cudaStream_t stream)
      : shared_(shared), kernel_(kernel), grid_(grid), block_(block), smem_bytes_(smem_bytes), stream_(stream) {}

  template <class... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params), "a kernel launch with the wrong number of arguments");
    std::tuple<std::decay_t<Params>...> values(std::forward<Args>(args)...);
    if (check_launch(reinterpret_cast<const void*>(kernel_), grid_, block_, smem_bytes_) != cudaSuccess) return;
    record_error(enqueue(stream_, [shared = shared_, kernel = kernel_, grid = grid_, block = block_,
                                   smem_bytes = smem_bytes_, values = std::move(values)] {
      run_grid(shared, grid, block, smem_bytes, [&] { std::apply(kernel, values); });
    }));
  }

 private:
  DynamicShared shared_;
  void (*kernel_)(Params...);
  dim3 grid_, block_;
  size_t smem_bytes_;
  cudaStream_t stream_;
};

// A launch of a kernel template whose template arguments CUDA deduces from the launch's
// arguments: `call` is a generic lambda calling the kernel, the arguments are kept as given.
template <class Call>
class DeducedKernelCall {
 public:
  DeducedKernelCall(DynamicShared shared, Call call, dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream)
      : shared_(shared), call_(call), grid_(grid), block_(block), smem_bytes_(smem_bytes), stream_(stream) {}

  template <class... Args>
  void operator()(Args&&... args) const {
    std::tuple<std::decay_t<Args>...> values(std::forward<Args>(args)...);
    if (check_launch(nullptr, grid_, block_, smem_bytes_) != cudaSuccess) return;
    record_error(enqueue(stream_, [shared = shared_, call = call_, grid = grid_, block = block_,
                                   smem_bytes = smem_bytes_, values = std::move(values)] {
      run_grid(shared, grid, block, smem_bytes, [&] { std::apply(call, values); });
    }));
  }

 private:
  DynamicShared shared_;
  Call call_;
  dim3 grid_, block_;
  size_t smem_bytes_;
  cudaStream_t stream_;
};

template <class Call>
DeducedKernelCall<Call> kernel_call_deduced(DynamicShared shared, Call call, dim3 grid, dim3 block,
                                            size_t smem_bytes = 0, cudaStream_t stream = nullptr) {
  return DeducedKernelCall<Call>(shared, call, grid, block, smem_bytes, stream);
}

template <class... Params>
KernelCall<Params...> kernel_call(DynamicShared shared, void (*kernel)(Params...), dim3 grid, dim3 block,
                                  size_t smem_bytes = 0, cudaStream_t stream = nullptr) {
  return KernelCall<Params...>(shared, kernel, grid, block, smem_bytes, stream);
}

}  // namespace gpt2cc::hostcuda
