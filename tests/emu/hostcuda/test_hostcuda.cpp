// Self-tests of the host CUDA runtime, cuBLAS and cuBLASLt (runtime.cpp, cublas.cpp, cublaslt.cpp):
// the behaviour the emu_cuda_* tests rely on, each checked against what CUDA documents: device
// memory starts as NaN bytes, copies outside device memory fail, a kernel's store outside an
// allocation stops its launch, launches check their configuration, stream capture records
// instead of running and refuses synchronisation, graphs replay, the default pool keeps and hands
// back freed blocks by its release threshold, graph memory is reserved at launches for the
// capture's peak; GEMMs against plain loops for every op(A) / op(B), leading dimensions, alpha /
// beta, bf16 rounding, the cuBLASLt epilogues and their alignment rules, the heuristic within
// MAX_WORKSPACE_BYTES and the declines tests can ask for (cublaslt_faults.hpp); unsupported modes
// throw.
#include "common/catch.hpp"
#include <cublasLt.h>
#include <cublas_v2.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "emu/hostcuda/cublaslt_faults.hpp"
#include "emu/hostcuda/prelude.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace {

namespace hc = gpt2cc::hostcuda;

// out[i] = x[i] + 1 for i < n, one thread per element.
__global__ void add_one_kernel(float* out, const float* x, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = x[i] + 1.0f;
}

// out[i] = 1, by one thread.
__global__ void store_one_kernel(float* out, int i) {
  if (blockIdx.x == 0 && threadIdx.x == 0) out[i] = 1.0f;
}

// One warp's mma.sync m16n8k16 bf16 (an sm_80 instruction) on zeros: out[lane] = 0.
__global__ void mma_zero_kernel(float* out) {
  float c[4] = {};
  const uint32_t a[4] = {};
  gpt2cc::emu::mma_m16n8k16_bf16(c, a, 0, 0);
  out[threadIdx.x] = c[0];
}

}  // namespace

[[maybe_unused]] static hc::DynamicShared gpt2cc_hostcuda_dynamic_shared() { return {}; }

namespace {

template <class T>
T* device_alloc(size_t count) {
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, count * sizeof(T)) == cudaSuccess);
  return static_cast<T*>(p);
}

std::vector<float> download(const float* d, size_t count) {
  std::vector<float> h(count);
  REQUIRE(cudaMemcpy(h.data(), d, count * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  return h;
}

void upload(float* d, const std::vector<float>& h) {
  REQUIRE(cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
}

std::vector<float> random_values(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Column-major op(X)[r, c].
float op_at(const std::vector<float>& x, int ld, bool trans, int r, int c) {
  return trans ? x[static_cast<size_t>(c) + static_cast<size_t>(r) * ld] : x[static_cast<size_t>(r) + static_cast<size_t>(c) * ld];
}

// cudaMemGetInfo's free bytes.
size_t device_free() {
  size_t free_bytes = 0, total = 0;
  REQUIRE(cudaMemGetInfo(&free_bytes, &total) == cudaSuccess);
  return free_bytes;
}

float bf16_round(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  return std::bit_cast<float>(((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16) << 16);
}

}  // namespace

TEST_CASE("host cudart: device memory starts as NaN and copies stay inside allocations", "[emu][hostcuda]") {
  float* d = device_alloc<float>(8);
  for (float x : download(d, 8)) CHECK(std::isnan(x));
#if defined(__SANITIZE_ADDRESS__)
  // Under AddressSanitizer the rest of the 256-byte rounding and the guards around an allocation
  // are poisoned: a kernel running past a buffer's end or before its start is reported to the byte.
  CHECK_FALSE(__asan_address_is_poisoned(d));
  CHECK_FALSE(__asan_address_is_poisoned(d + 7));
  CHECK(__asan_address_is_poisoned(d + 8));
  CHECK(__asan_address_is_poisoned(d - 1));
#endif
  std::vector<float> host(16, 1.0f);
  // 16 floats into an 8-float allocation, and a host pointer taken as device memory.
  CHECK(cudaMemcpy(d, host.data(), 16 * sizeof(float), cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaSuccess);  // read and reset
  CHECK(cudaMemcpy(host.data(), host.data() + 8, 8 * sizeof(float), cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
  CHECK(cudaMemset(host.data(), 0, 4) == cudaErrorInvalidValue);
  cudaGetLastError();
  CHECK(cudaFree(d) == cudaSuccess);
  CHECK(cudaFree(d) == cudaErrorInvalidValue);  // already freed
  cudaGetLastError();
  size_t free_bytes = 0, total = 0;
  CHECK(cudaMemGetInfo(&free_bytes, &total) == cudaSuccess);
  void* huge = nullptr;
  CHECK(cudaMalloc(&huge, total + 1) == cudaErrorMemoryAllocation);
  cudaGetLastError();
}

TEST_CASE("host cudart: device attributes agree with the device properties", "[emu][hostcuda]") {
  cudaDeviceProp prop{};
  REQUIRE(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
  int sms = 0, l2 = 0, optin = 0, major = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) == cudaSuccess);
  CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0) == cudaSuccess);
  CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) == cudaSuccess);
  CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0) == cudaSuccess);
  CHECK(sms == prop.multiProcessorCount);
  CHECK(l2 == prop.l2CacheSize);
  CHECK(static_cast<size_t>(optin) == prop.sharedMemPerBlockOptin);
  CHECK(major == prop.major);
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 1) == cudaErrorInvalidDevice);
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrClockRate, 0) == cudaErrorInvalidValue);  // not emulated
  cudaGetLastError();
}

namespace {

// The emulated device is `profile`, its binary built for `architectures`, until the end of scope.
class EmulatedGpu {
 public:
  EmulatedGpu(const hc::GpuProfile& profile, const char* architectures)
      : profile_(hc::gpu_profile()), architectures_(hc::cuda_architectures()) {
    hc::set_emulated_gpu(profile, architectures);
  }
  ~EmulatedGpu() { hc::set_emulated_gpu(profile_, architectures_); }
  EmulatedGpu(const EmulatedGpu&) = delete;
  EmulatedGpu& operator=(const EmulatedGpu&) = delete;

 private:
  const hc::GpuProfile& profile_;
  std::string architectures_;
};

// What each profile must report, written out from the CUDA C++ Programming Guide's compute
// capability table (shared memory per SM / opt-in per block, resident threads / blocks per SM)
// and the products' data sheets (SMs, L2, memory).
struct ExpectedGpu {
  const char* key;
  const char* name;
  int major, minor, sms;
  size_t shared_per_sm, optin;
  int l2;
  size_t memory;
  int threads_per_sm, blocks_per_sm;
};
constexpr size_t kGiB = size_t(1) << 30;
constexpr ExpectedGpu kExpectedGpus[] = {
    {"h100", "gpt2cc CPU emulator", 9, 0, 132, 233472, 232448, 50 << 20, 80 * kGiB, 2048, 32},
    {"h200", "gpt2cc CPU emulator (NVIDIA H200)", 9, 0, 132, 233472, 232448, 50 << 20, 141 * kGiB, 2048, 32},
    {"a100", "gpt2cc CPU emulator (NVIDIA A100-SXM4-80GB)", 8, 0, 108, 167936, 166912, 40 << 20, 80 * kGiB, 2048, 32},
    {"rtx4090", "gpt2cc CPU emulator (NVIDIA GeForce RTX 4090)", 8, 9, 128, 102400, 101376, 72 << 20, 24 * kGiB, 1536,
     24},
    {"t4", "gpt2cc CPU emulator (Tesla T4)", 7, 5, 40, 65536, 65536, 4 << 20, 15 * kGiB, 1024, 16},
};

int device_attribute(cudaDeviceAttr attr) {
  int value = -1;
  REQUIRE(cudaDeviceGetAttribute(&value, attr, 0) == cudaSuccess);
  return value;
}

}  // namespace

TEST_CASE("host cudart: the emulated GPU is the profile GPT2CC_EMU_GPU names, h100 by default", "[emu][hostcuda]") {
  const char* env = std::getenv("GPT2CC_EMU_GPU");
  CHECK(std::string(hc::gpu_profile().key) == (env != nullptr ? env : "h100"));
  REQUIRE(hc::gpu_profiles().size() == std::size(kExpectedGpus));
  if (env == nullptr && std::getenv("GPT2CC_EMU_DEVICE_MIB") == nullptr) {
    // The device every emulated run had before profiles: the same properties.
    cudaDeviceProp prop{};
    REQUIRE(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
    CHECK(std::string(prop.name) == "gpt2cc CPU emulator");
    CHECK(prop.major == 9);
    CHECK(prop.minor == 0);
    CHECK(prop.sharedMemPerBlockOptin == 227 * 1024);
    CHECK(prop.totalGlobalMem == 80 * kGiB);
  }
}

TEST_CASE("host cudart: each GPU profile is reported and its shared memory limit enforced", "[emu][hostcuda]") {
  const size_t mib_env = std::getenv("GPT2CC_EMU_DEVICE_MIB") != nullptr ? hc::device_memory_bytes() : 0;
  const int n = 64;
  float* x = device_alloc<float>(n);
  float* y = device_alloc<float>(n);
  upload(x, std::vector<float>(n, 2.0f));
  for (size_t i = 0; i < std::size(kExpectedGpus); ++i) {
    const ExpectedGpu& want = kExpectedGpus[i];
    const hc::GpuProfile& profile = hc::gpu_profiles()[i];
    INFO("profile " << want.key);
    REQUIRE(std::string(profile.key) == want.key);
    const EmulatedGpu gpu(profile, "75;80");  // SASS sm_75 (7.5), sm_80 (8.0, 8.9); compute_80 PTX (9.0)
    cudaDeviceProp prop{};
    REQUIRE(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
    CHECK(std::string(prop.name) == want.name);
    CHECK(prop.major == want.major);
    CHECK(prop.minor == want.minor);
    CHECK(prop.multiProcessorCount == want.sms);
    CHECK(prop.sharedMemPerMultiprocessor == want.shared_per_sm);
    CHECK(prop.sharedMemPerBlockOptin == want.optin);
    CHECK(prop.sharedMemPerBlock == 48 * 1024);
    CHECK(prop.l2CacheSize == want.l2);
    CHECK(prop.totalGlobalMem == (mib_env != 0 ? mib_env : want.memory));
    CHECK(prop.maxThreadsPerMultiProcessor == want.threads_per_sm);
    CHECK(prop.maxBlocksPerMultiProcessor == want.blocks_per_sm);
    size_t free_bytes = 0, total = 0;
    CHECK(cudaMemGetInfo(&free_bytes, &total) == cudaSuccess);
    CHECK(total == prop.totalGlobalMem);
    CHECK(device_attribute(cudaDevAttrComputeCapabilityMajor) == want.major);
    CHECK(device_attribute(cudaDevAttrComputeCapabilityMinor) == want.minor);
    CHECK(device_attribute(cudaDevAttrMultiProcessorCount) == want.sms);
    CHECK(device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin) == static_cast<int>(want.optin));
    CHECK(device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor) == static_cast<int>(want.shared_per_sm));
    CHECK(device_attribute(cudaDevAttrMaxSharedMemoryPerBlock) == 48 * 1024);
    CHECK(device_attribute(cudaDevAttrL2CacheSize) == want.l2);
    CHECK(device_attribute(cudaDevAttrMaxThreadsPerMultiProcessor) == want.threads_per_sm);
    CHECK(device_attribute(cudaDevAttrMaxBlocksPerMultiprocessor) == want.blocks_per_sm);
    CHECK(device_attribute(cudaDevAttrMaxThreadsPerBlock) == 1024);

    // The opt-in limit, to the byte: the attribute up to it, a launch up to it, not a byte more.
    const int optin = static_cast<int>(want.optin);
    CHECK(cudaFuncSetAttribute(add_one_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin + 1) ==
          cudaErrorInvalidValue);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue);
    REQUIRE(cudaFuncSetAttribute(add_one_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin) == cudaSuccess);
    cudaFuncAttributes attr{};
    REQUIRE(cudaFuncGetAttributes(&attr, add_one_kernel) == cudaSuccess);
    CHECK(attr.maxDynamicSharedSizeBytes == optin);
    cudaMemset(y, 0xFF, n * sizeof(float));
    hc::kernel_call(gpt2cc_hostcuda_dynamic_shared(), add_one_kernel, dim3(2), dim3(32), want.optin + 16)(y, x, n);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue);
    CHECK(std::isnan(download(y, n)[0]));
    hc::kernel_call(gpt2cc_hostcuda_dynamic_shared(), add_one_kernel, dim3(2), dim3(32), want.optin)(y, x, n);
    CHECK(cudaGetLastError() == cudaSuccess);
    CHECK(download(y, n)[n - 1] == 3.0f);
    // A kernel template launched by deduction (address unknown): held to the opt-in limit itself.
    const auto deduced = [](const auto&... args) { add_one_kernel(args...); };
    cudaMemset(y, 0xFF, n * sizeof(float));
    hc::kernel_call_deduced(gpt2cc_hostcuda_dynamic_shared(), deduced, dim3(2), dim3(32), want.optin + 16)(y, x, n);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue);
    CHECK(std::isnan(download(y, n)[0]));
    hc::kernel_call_deduced(gpt2cc_hostcuda_dynamic_shared(), deduced, dim3(2), dim3(32), want.optin)(y, x, n);
    CHECK(cudaGetLastError() == cudaSuccess);
    CHECK(download(y, n)[0] == 3.0f);
  }
  // Back to the default, which the launch test below starts from.
  REQUIRE(cudaFuncSetAttribute(add_one_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 48 * 1024) == cudaSuccess);
  cudaFree(x);
  cudaFree(y);
}

// CMake's CUDA_ARCHITECTURES lists against compute capabilities, as the driver loads them: SASS
// within one major version, upwards; PTX compiled for any newer device; arch-specific code for
// its own only.
TEST_CASE("host cudart: a device runs a kernel image by CMake's architecture rules", "[emu][hostcuda]") {
  struct Case {
    const char* list;
    int major, minor;
    int binary, ptx;  // the image taken (binaryVersion, ptxVersion); 0: none runs
  };
  const Case cases[] = {
      {"90", 8, 0, 0, 0},          {"90", 9, 0, 90, 90},           {"90", 10, 0, 100, 90},  // JIT from compute_90
      {"90-real", 10, 0, 0, 0},    {"90-real", 9, 0, 90, 90},      {"90-virtual", 9, 0, 90, 90},
      {"90-virtual", 8, 9, 0, 0},  {"80-real", 8, 9, 80, 80},      {"80-real", 8, 0, 80, 80},
      {"86-real", 8, 0, 0, 0},     {"86-real", 8, 9, 86, 86},      {"80;90", 8, 6, 80, 80},
      {"80;90", 9, 0, 90, 90},     {"80,90", 12, 0, 120, 90},      {"80-real;90-real", 12, 0, 0, 0},
      {"90a-real", 9, 0, 90, 90},  {"90a-real", 10, 0, 0, 0},      {"90a", 10, 0, 0, 0},
      {"100f-real", 10, 3, 100, 100}, {"100f-real", 12, 0, 0, 0},  {"89", 8, 9, 89, 89},
      {"89", 9, 0, 90, 89},        {"native", 8, 9, 89, 89},       {"all", 12, 0, 120, 120},
      {"all-major", 8, 0, 80, 80}, {"80-virtual;89-real", 8, 9, 89, 89},
      {"80-virtual;86-real", 8, 9, 86, 86},
  };
  for (const Case& c : cases) {
    INFO("\"" << c.list << "\" on compute capability " << c.major << "." << c.minor);
    const std::optional<hc::KernelImage> image = hc::kernel_image_for(c.list, c.major, c.minor);
    CHECK(image.has_value() == (c.binary != 0));
    if (image && c.binary != 0) {
      CHECK(image->binary_version == c.binary);
      CHECK(image->ptx_version == c.ptx);
    }
  }
  for (const char* bad : {"", ";", "sm_90", "9", "90-realish", "90b", "1000"})
    CHECK_THROWS_AS(hc::kernel_image_for(bad, 9, 0), std::invalid_argument);
  // Which of them the driver compiles from PTX: no SASS for the device.
  CHECK(hc::kernel_image_for("89", 9, 0)->jit);
  CHECK(hc::kernel_image_for("90-virtual", 9, 0)->jit);
  CHECK_FALSE(hc::kernel_image_for("89", 8, 9)->jit);
  CHECK_FALSE(hc::kernel_image_for("80-virtual;89-real", 8, 9)->jit);
  CHECK_FALSE(hc::kernel_image_for("native", 9, 0)->jit);
}

// The code a device runs is compiled for one architecture (the image's ptxVersion), and an
// instruction only newer ones have is not in it: on a GPU gpt2cc's flash kernels are traps there.
TEST_CASE("host cudart: a kernel has the instructions of the architecture its image is compiled for",
          "[emu][hostcuda]") {
  float* y = device_alloc<float>(32);
  const hc::GpuProfile &h100 = hc::gpu_profiles()[0], &t4 = hc::gpu_profiles()[4];
  REQUIRE(std::string(t4.key) == "t4");
  const auto run = [&] { hc::kernel_call(gpt2cc_hostcuda_dynamic_shared(), mma_zero_kernel, dim3(1), dim3(32))(y); };
  {
    const EmulatedGpu gpu(t4, "75;90");  // sm_75 SASS
    REQUIRE(hc::kernel_image()->ptx_version == 75);
    CHECK_THROWS_WITH(run(), Catch::Contains("mma.sync.m16n8k16 with bf16 requires sm_80, and this code is compiled "
                                             "for sm_75"));
  }
  {
    const EmulatedGpu gpu(h100, "75");  // compute_75 PTX, compiled for 9.0 by the driver: still sm_75 code
    REQUIRE(hc::kernel_image()->jit);
    REQUIRE(hc::kernel_image()->ptx_version == 75);
    CHECK_THROWS_WITH(run(), Catch::Contains("compiled for sm_75"));
  }
  {
    const EmulatedGpu gpu(h100, "75;90");  // sm_90 SASS
    cudaMemset(y, 0xFF, 32 * sizeof(float));
    CHECK_NOTHROW(run());
    CHECK(cudaGetLastError() == cudaSuccess);
    for (float v : download(y, 32)) CHECK(v == 0.0f);
  }
  cudaFree(y);
}

// A driver older than the toolkit cannot compile its PTX: a binary that runs on the device only
// through PTX then fails as one without an image does, with cudaErrorUnsupportedPtxVersion; SASS
// for the device still runs.
TEST_CASE("host cudart: PTX the driver cannot compile fails like a missing image", "[emu][hostcuda]") {
  const int n = 64;
  float* x = device_alloc<float>(n);
  float* y = device_alloc<float>(n);
  upload(x, std::vector<float>(n, 2.0f));
  const hc::GpuProfile& h100 = hc::gpu_profiles()[0];
  REQUIRE(std::string(h100.key) == "h100");
  const bool compiles = hc::driver_compiles_ptx();
  hc::set_driver_compiles_ptx(false);
  int runtime = 0, driver = 0;
  CHECK(cudaRuntimeGetVersion(&runtime) == cudaSuccess);
  CHECK(cudaDriverGetVersion(&driver) == cudaSuccess);
  CHECK(driver < runtime);
  {
    const EmulatedGpu gpu(h100, "80");  // sm_80 SASS does not run on 9.0; compute_80 PTX would
    REQUIRE(hc::kernel_image()->jit);
    cudaMemset(y, 0xFF, n * sizeof(float));
    hc::kernel_call(gpt2cc_hostcuda_dynamic_shared(), add_one_kernel, dim3(2), dim3(32))(y, x, n);
    CHECK(cudaGetLastError() == cudaErrorUnsupportedPtxVersion);
    cudaFuncAttributes attr{};
    CHECK(cudaFuncGetAttributes(&attr, add_one_kernel) == cudaErrorUnsupportedPtxVersion);
    CHECK(cudaFuncSetAttribute(add_one_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 1024) ==
          cudaErrorUnsupportedPtxVersion);
    cudaGetLastError();
    CHECK(std::string(cudaGetErrorName(cudaErrorUnsupportedPtxVersion)) == "cudaErrorUnsupportedPtxVersion");
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
    for (float v : download(y, n)) CHECK(std::isnan(v));  // nothing ran
  }
  {
    const EmulatedGpu gpu(h100, "80;90");  // sm_90 SASS: no PTX needed
    REQUIRE_FALSE(hc::kernel_image()->jit);
    hc::kernel_call(gpt2cc_hostcuda_dynamic_shared(), add_one_kernel, dim3(2), dim3(32))(y, x, n);
    CHECK(cudaGetLastError() == cudaSuccess);
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
    for (float v : download(y, n)) CHECK(v == 3.0f);
  }
  hc::set_driver_compiles_ptx(true);
  {
    const EmulatedGpu gpu(h100, "80");  // a driver that compiles it runs the PTX
    hc::kernel_call(gpt2cc_hostcuda_dynamic_shared(), add_one_kernel, dim3(2), dim3(32))(y, x, n);
    CHECK(cudaGetLastError() == cudaSuccess);
  }
  CHECK(cudaDriverGetVersion(&driver) == cudaSuccess);
  CHECK(driver == runtime);
  hc::set_driver_compiles_ptx(compiles);
  cudaFree(x);
  cudaFree(y);
}

TEST_CASE("host cudart: without a kernel image for the device, launches and function calls fail", "[emu][hostcuda]") {
  const int n = 64;
  float* x = device_alloc<float>(n);
  float* y = device_alloc<float>(n);
  upload(x, std::vector<float>(n, 2.0f));
  cudaMemset(y, 0xFF, n * sizeof(float));
  const hc::GpuProfile& rtx4090 = hc::gpu_profiles()[3];
  REQUIRE(std::string(rtx4090.key) == "rtx4090");
  {
    const EmulatedGpu gpu(rtx4090, "90");  // sm_90 SASS and compute_90 PTX: neither runs on 8.9
    CHECK_FALSE(hc::kernel_image().has_value());
    hc::kernel_call(gpt2cc_hostcuda_dynamic_shared(), add_one_kernel, dim3(2), dim3(32))(y, x, n);
    CHECK(cudaGetLastError() == cudaErrorNoKernelImageForDevice);
    hc::kernel_call_deduced(gpt2cc_hostcuda_dynamic_shared(),
                            [](const auto&... args) { add_one_kernel(args...); }, dim3(2), dim3(32))(y, x, n);
    CHECK(cudaGetLastError() == cudaErrorNoKernelImageForDevice);
    cudaFuncAttributes attr{};
    CHECK(cudaFuncGetAttributes(&attr, add_one_kernel) == cudaErrorNoKernelImageForDevice);
    CHECK(cudaGetLastError() == cudaErrorNoKernelImageForDevice);
    CHECK(cudaFuncSetAttribute(add_one_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 1024) ==
          cudaErrorNoKernelImageForDevice);
    cudaGetLastError();
    CHECK(std::string(cudaGetErrorName(cudaErrorNoKernelImageForDevice)) == "cudaErrorNoKernelImageForDevice");
    CHECK(std::string(cudaGetErrorString(cudaErrorNoKernelImageForDevice)) ==
          "no kernel image is available for execution on the device");
  }
  for (float v : download(y, n)) CHECK(std::isnan(v));  // nothing ran
  {
    const EmulatedGpu gpu(rtx4090, "80;90");  // sm_80 SASS runs on 8.9
    cudaFuncAttributes attr{};
    REQUIRE(cudaFuncGetAttributes(&attr, add_one_kernel) == cudaSuccess);
    CHECK(attr.binaryVersion == 80);
    CHECK(attr.ptxVersion == 80);
    CHECK(attr.maxThreadsPerBlock == 1024);
    hc::kernel_call(gpt2cc_hostcuda_dynamic_shared(), add_one_kernel, dim3(2), dim3(32))(y, x, n);
    CHECK(cudaGetLastError() == cudaSuccess);
    CHECK(download(y, n)[0] == 3.0f);
  }
  // The C API takes the kernel's address; a null one is no device function.
  cudaFuncAttributes attr{};
  CHECK(cudaFuncGetAttributes(&attr, static_cast<const void*>(nullptr)) == cudaErrorInvalidDeviceFunction);
  cudaGetLastError();
  cudaFree(x);
  cudaFree(y);
}

TEST_CASE("host cudart: launches run on the emulator and check their configuration", "[emu][hostcuda]") {
  const int n = 100;
  float* x = device_alloc<float>(n);
  float* y = device_alloc<float>(n);
  upload(x, std::vector<float>(n, 2.0f));
  hc::kernel_call(gpt2cc_hostcuda_dynamic_shared(), add_one_kernel, dim3(4), dim3(32))(y, x, n);
  CHECK(cudaGetLastError() == cudaSuccess);
  for (float v : download(y, n)) CHECK(v == 3.0f);

  cudaMemset(y, 0xFF, n * sizeof(float));
  hc::kernel_call(gpt2cc_hostcuda_dynamic_shared(), add_one_kernel, dim3(1), dim3(2048))(y, x, n);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  // More than 48 KiB of dynamic shared memory needs cudaFuncSetAttribute first.
  hc::kernel_call(gpt2cc_hostcuda_dynamic_shared(), add_one_kernel, dim3(4), dim3(32), 64 * 1024)(y, x, n);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  for (float v : download(y, n)) CHECK(std::isnan(v));  // neither launch ran
  REQUIRE(cudaFuncSetAttribute(add_one_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024) == cudaSuccess);
  hc::kernel_call(gpt2cc_hostcuda_dynamic_shared(), add_one_kernel, dim3(4), dim3(32), 64 * 1024)(y, x, n);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(download(y, n)[n - 1] == 3.0f);
  cudaFree(x);
  cudaFree(y);
}

#if !defined(__SANITIZE_ADDRESS__)  // there AddressSanitizer reports such a store at once
TEST_CASE("host cudart: a kernel that writes outside an allocation stops the launch", "[emu][hostcuda]") {
  const auto store = [](float* out, int i) {
    hc::kernel_call(gpt2cc_hostcuda_dynamic_shared(), store_one_kernel, dim3(1), dim3(32))(out, i);
  };
  const auto outside = [](size_t bytes, const std::string& where) {
    return "outside a " + std::to_string(bytes) + "-byte device allocation (" + where + ")";
  };
  const auto at = [](size_t byte) { return "at byte " + std::to_string(byte); };
  // 100 floats: 400 bytes in a 512-byte rounding; 64 floats: 256 bytes, no rounding to spare.
  float* x = device_alloc<float>(100);
  float* y = device_alloc<float>(64);
  store(x, 99);
  store(y, 63);
  CHECK(download(x, 100)[99] == 1.0f);
  CHECK(download(y, 64)[63] == 1.0f);
  CHECK_THROWS_WITH(store(x, 100), Catch::Contains(outside(400, at(400))));
  CHECK_THROWS_WITH(store(x, 127), Catch::Contains(outside(400, at(508))));
  CHECK_THROWS_WITH(store(y, 64), Catch::Contains(outside(256, at(256))));  // the guard past the rounding
  CHECK_THROWS_WITH(store(y, 127), Catch::Contains(outside(256, at(508))));
  CHECK_THROWS_WITH(store(y, -1), Catch::Contains(outside(256, "4 bytes before its start")));
  CHECK_THROWS_WITH(store(x, -64), Catch::Contains(outside(400, "256 bytes before its start")));
  // Each fault is reported once (the bytes are put back); the buffers' own bytes are untouched.
  store(x, 0);
  CHECK(download(x, 100)[99] == 1.0f);
  CHECK(std::isnan(download(y, 64)[0]));
  // A pool block taken again for fewer bytes: its end is the new size.
  cudaStream_t stream = nullptr;
  void* block = nullptr;
  REQUIRE(cudaMallocAsync(&block, 1024, stream) == cudaSuccess);
  REQUIRE(cudaFreeAsync(block, stream) == cudaSuccess);
  void* again = nullptr;
  REQUIRE(cudaMallocAsync(&again, 400, stream) == cudaSuccess);
  REQUIRE(again == block);
  CHECK_THROWS_WITH(store(static_cast<float*>(again), 100), Catch::Contains(outside(400, at(400))));
  CHECK(cudaFreeAsync(again, stream) == cudaSuccess);
  CHECK(cudaFree(x) == cudaSuccess);
  CHECK(cudaFree(y) == cudaSuccess);
}
#endif

TEST_CASE("host cudart: stream capture records, graphs replay, synchronising a capture fails", "[emu][hostcuda]") {
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  const int n = 64;
  float* x = device_alloc<float>(n);
  upload(x, std::vector<float>(n, 0.0f));

  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  cudaStreamCaptureStatus status{};
  CHECK(cudaStreamIsCapturing(stream, &status) == cudaSuccess);
  CHECK(status == cudaStreamCaptureStatusActive);
  void* scratch = nullptr;
  REQUIRE(cudaMallocAsync(&scratch, n * sizeof(float), stream) == cudaSuccess);
  hc::kernel_call(gpt2cc_hostcuda_dynamic_shared(), add_one_kernel, dim3(2), dim3(32), 0, stream)(
      static_cast<float*>(scratch), x, n);
  CHECK(cudaMemcpyAsync(x, scratch, n * sizeof(float), cudaMemcpyDeviceToDevice, stream) == cudaSuccess);
  CHECK(cudaFreeAsync(scratch, stream) == cudaSuccess);
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
  CHECK(download(x, n)[0] == 0.0f);  // recorded, not run
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  CHECK(cudaGraphDestroy(graph) == cudaSuccess);  // the instance keeps what it needs
  for (int replay = 1; replay <= 3; ++replay) {
    REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
    CHECK(download(x, n)[n - 1] == static_cast<float>(replay));
  }
  CHECK(cudaGraphExecDestroy(exec) == cudaSuccess);

  // Synchronising the capturing stream fails and invalidates the capture.
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  CHECK(cudaStreamSynchronize(stream) == cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamEndCapture(stream, &graph) == cudaErrorStreamCaptureInvalidated);
  CHECK(graph == nullptr);
  // cudaMalloc is a "potentially unsafe" call while this thread captures (not relaxed).
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  void* p = nullptr;
  CHECK(cudaMalloc(&p, 16) == cudaErrorStreamCaptureUnsupported);
  CHECK(cudaStreamEndCapture(stream, &graph) == cudaErrorStreamCaptureInvalidated);
  // Relaxed mode allows it.
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed) == cudaSuccess);
  CHECK(cudaMalloc(&p, 16) == cudaSuccess);
  CHECK(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
  cudaGraphDestroy(graph);
  cudaFree(p);
  cudaGetLastError();
  cudaFree(x);
  CHECK(cudaStreamDestroy(stream) == cudaSuccess);
  CHECK(cudaStreamDestroy(stream) == cudaErrorInvalidResourceHandle);
  cudaGetLastError();
}

TEST_CASE("host cudart: the default pool keeps freed blocks as its release threshold says", "[emu][hostcuda]") {
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  cudaMemPool_t pool = nullptr;
  REQUIRE(cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess);
  auto attr = [&](cudaMemPoolAttr a) {
    uint64_t v = 0;
    REQUIRE(cudaMemPoolGetAttribute(pool, a, &v) == cudaSuccess);
    return v;
  };
  uint64_t threshold = 0;
  REQUIRE(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold) == cudaSuccess);
  REQUIRE(cudaMemPoolTrimTo(pool, 0) == cudaSuccess);
  REQUIRE(attr(cudaMemPoolAttrReservedMemCurrent) == attr(cudaMemPoolAttrUsedMemCurrent));
  const size_t free0 = device_free();
  const size_t mib = size_t(1) << 20;

  // Threshold 0 (CUDA's default): a freed block stays reserved until the next synchronisation.
  void* a = nullptr;
  REQUIRE(cudaMallocAsync(&a, mib, stream) == cudaSuccess);
  CHECK(attr(cudaMemPoolAttrUsedMemCurrent) == mib);
  CHECK(device_free() == free0 - mib);
  REQUIRE(cudaFreeAsync(a, stream) == cudaSuccess);
  CHECK(attr(cudaMemPoolAttrUsedMemCurrent) == 0);
  CHECK(attr(cudaMemPoolAttrReservedMemCurrent) == mib);
  CHECK(device_free() == free0 - mib);
  REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
  CHECK(attr(cudaMemPoolAttrReservedMemCurrent) == 0);
  CHECK(device_free() == free0);

  // Threshold "never": blocks stay across synchronisations and are reused (refilled as new);
  // a larger request takes new memory; the high-water marks reset to 0 only; a trim hands back.
  threshold = UINT64_MAX;
  REQUIRE(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold) == cudaSuccess);
  REQUIRE(cudaMallocAsync(&a, mib, stream) == cudaSuccess);
  REQUIRE(cudaMemsetAsync(a, 0, mib, stream) == cudaSuccess);
  REQUIRE(cudaFreeAsync(a, stream) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
  CHECK(attr(cudaMemPoolAttrReservedMemCurrent) == mib);
  void* b = nullptr;
  REQUIRE(cudaMallocAsync(&b, mib / 2, stream) == cudaSuccess);
  CHECK(b == a);
  CHECK(attr(cudaMemPoolAttrReservedMemCurrent) == mib);
  CHECK(std::isnan(download(static_cast<float*>(b), 4)[0]));
  std::vector<float> past(mib / 2 / sizeof(float) + 1);  // one float past what was asked for
  CHECK(cudaMemcpy(past.data(), b, past.size() * sizeof(float), cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
  cudaGetLastError();
  void* c = nullptr;
  REQUIRE(cudaMallocAsync(&c, 2 * mib, stream) == cudaSuccess);
  CHECK(attr(cudaMemPoolAttrReservedMemCurrent) == 3 * mib);
  CHECK(attr(cudaMemPoolAttrUsedMemHigh) >= 3 * mib);
  REQUIRE(cudaFreeAsync(c, stream) == cudaSuccess);
  uint64_t zero = 0, one = 1;
  REQUIRE(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero) == cudaSuccess);
  CHECK(attr(cudaMemPoolAttrUsedMemHigh) == mib);  // restarts at the current use (b's block)
  CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &one) == cudaErrorInvalidValue);
  cudaGetLastError();
  REQUIRE(cudaFreeAsync(b, stream) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
  CHECK(attr(cudaMemPoolAttrReservedMemCurrent) == 3 * mib);
  CHECK(device_free() == free0 - 3 * mib);
  REQUIRE(cudaMemPoolTrimTo(pool, 2 * mib) == cudaSuccess);  // keeps at least 2 MiB: the 1 MiB block goes
  CHECK(attr(cudaMemPoolAttrReservedMemCurrent) == 2 * mib);
  REQUIRE(cudaMemPoolTrimTo(pool, 0) == cudaSuccess);
  CHECK(attr(cudaMemPoolAttrReservedMemCurrent) == 0);
  CHECK(device_free() == free0);
  threshold = 0;
  REQUIRE(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold) == cudaSuccess);
  CHECK(cudaStreamDestroy(stream) == cudaSuccess);
}

// Hidden ([.]): it fills the device, which must be small (CTest runs it on a 64 MiB device, once
// with each $GPT2CC_EMU_MALLOC_RECLAIM). As on an H200: a cudaMalloc that does not fit in what is
// free takes the default pool's cached blocks back first; with "none" it fails and they stay.
TEST_CASE("host cudart: a cudaMalloc that does not fit takes the pool's cached blocks back",
          "[.][emu][hostcuda][reclaim]") {
  const char* mode = std::getenv("GPT2CC_EMU_MALLOC_RECLAIM");
  const bool reclaims = mode == nullptr || *mode == '\0' || std::string(mode) == "pool";
  INFO("GPT2CC_EMU_MALLOC_RECLAIM=" << (mode ? mode : "(unset)"));
  size_t free_bytes = 0, total = 0;
  REQUIRE(cudaMemGetInfo(&free_bytes, &total) == cudaSuccess);
  const size_t mib = size_t(1) << 20;
  REQUIRE(total <= 256 * mib);  // run with GPT2CC_EMU_DEVICE_MIB=64: the filling is real memory
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  cudaMemPool_t pool = nullptr;
  REQUIRE(cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess);
  uint64_t threshold = UINT64_MAX, reserved = 0;
  REQUIRE(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold) == cudaSuccess);
  void* cached = nullptr;
  REQUIRE(cudaMallocAsync(&cached, 16 * mib, stream) == cudaSuccess);
  REQUIRE(cudaFreeAsync(cached, stream) == cudaSuccess);
  REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
  REQUIRE(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved) == cudaSuccess);
  REQUIRE(reserved == 16 * mib);
  void* filler = nullptr;
  REQUIRE(cudaMalloc(&filler, device_free() - 8 * mib) == cudaSuccess);  // fits: nothing reclaimed
  REQUIRE(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved) == cudaSuccess);
  REQUIRE(reserved == 16 * mib);
  REQUIRE(device_free() == 8 * mib);

  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, 20 * mib);  // 8 free + 16 cached
  REQUIRE(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved) == cudaSuccess);
  if (reclaims) {
    CHECK(err == cudaSuccess);
    CHECK(reserved == 0);
    CHECK(device_free() == 4 * mib);
  } else {
    CHECK(err == cudaErrorMemoryAllocation);
    CHECK(p == nullptr);
    CHECK(reserved == 16 * mib);
  }
  cudaGetLastError();
  CHECK(cudaFree(p) == cudaSuccess);
  CHECK(cudaFree(filler) == cudaSuccess);
  REQUIRE(cudaMemPoolTrimTo(pool, 0) == cudaSuccess);
  threshold = 0;
  REQUIRE(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold) == cudaSuccess);
  CHECK(cudaStreamDestroy(stream) == cudaSuccess);
}

TEST_CASE("host cudart: graph memory is reserved at a launch, for the capture's peak, until trimmed",
          "[emu][hostcuda]") {
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  auto graph_attr = [](cudaGraphMemAttributeType a) {
    uint64_t v = 0;
    REQUIRE(cudaDeviceGetGraphMemAttribute(0, a, &v) == cudaSuccess);
    return v;
  };
  REQUIRE(cudaDeviceGraphMemTrim(0) == cudaSuccess);
  uint64_t zero = 0;
  REQUIRE(cudaDeviceSetGraphMemAttribute(0, cudaGraphMemAttrUsedMemHigh, &zero) == cudaSuccess);
  const size_t free0 = device_free(), mib = size_t(1) << 20;

  // 1 MiB allocated and freed, then 2 MiB: at most 2 MiB live at once.
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  void* a = nullptr;
  void* b = nullptr;
  REQUIRE(cudaMallocAsync(&a, mib, stream) == cudaSuccess);
  REQUIRE(cudaMemsetAsync(a, 0, mib, stream) == cudaSuccess);
  REQUIRE(cudaFreeAsync(a, stream) == cudaSuccess);
  REQUIRE(cudaMallocAsync(&b, 2 * mib, stream) == cudaSuccess);
  REQUIRE(cudaMemsetAsync(b, 0, 2 * mib, stream) == cudaSuccess);
  REQUIRE(cudaFreeAsync(b, stream) == cudaSuccess);
  cudaGraph_t graph = nullptr;
  REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  CHECK(device_free() == free0);  // nothing reserved before a launch
  CHECK(graph_attr(cudaGraphMemAttrReservedMemCurrent) == 0);
  for (int launch = 0; launch < 2; ++launch) {
    REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
    CHECK(graph_attr(cudaGraphMemAttrReservedMemCurrent) == 2 * mib);  // kept for the next launch
    CHECK(graph_attr(cudaGraphMemAttrUsedMemHigh) == 2 * mib);
    CHECK(device_free() == free0 - 2 * mib);
  }
  CHECK(cudaDeviceSetGraphMemAttribute(0, cudaGraphMemAttrUsedMemCurrent, &zero) == cudaErrorInvalidValue);
  cudaGetLastError();
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  CHECK(device_free() == free0 - 2 * mib);  // still reserved by the graph allocator
  REQUIRE(cudaDeviceGraphMemTrim(0) == cudaSuccess);
  CHECK(graph_attr(cudaGraphMemAttrReservedMemCurrent) == 0);
  CHECK(device_free() == free0);
  CHECK(cudaStreamDestroy(stream) == cudaSuccess);
}

TEST_CASE("host cudart: runtime and driver versions are the toolkit's", "[emu][hostcuda]") {
  int runtime = 0, driver = 0;
  CHECK(cudaRuntimeGetVersion(&runtime) == cudaSuccess);
  CHECK(cudaDriverGetVersion(&driver) == cudaSuccess);
  CHECK(runtime == CUDART_VERSION);
  CHECK(driver >= runtime);
}

TEST_CASE("host cuBLAS: sgemm and bf16 GemmEx are the documented column-major products", "[emu][hostcuda]") {
  cublasHandle_t handle = nullptr;
  REQUIRE(cublasCreate(&handle) == CUBLAS_STATUS_SUCCESS);
  const int m = 5, n = 7, k = 3;
  for (const bool ta : {false, true}) {
    for (const bool tb : {false, true}) {
      const int lda = (ta ? k : m) + 2, ldb = (tb ? n : k) + 1, ldc = m + 3;
      const auto a = random_values(static_cast<size_t>(lda) * (ta ? m : k), 1);
      const auto b = random_values(static_cast<size_t>(ldb) * (tb ? k : n), 2);
      const auto c0 = random_values(static_cast<size_t>(ldc) * n, 3);
      float* da = device_alloc<float>(a.size());
      float* db = device_alloc<float>(b.size());
      float* dc = device_alloc<float>(c0.size());
      upload(da, a);
      upload(db, b);
      upload(dc, c0);
      const float alpha = 0.5f, beta = -2.0f;
      REQUIRE(cublasSgemm(handle, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, da,
                          lda, db, ldb, &beta, dc, ldc) == CUBLAS_STATUS_SUCCESS);
      const auto c = download(dc, c0.size());
      for (int j = 0; j < n; ++j) {
        for (int i = 0; i < ldc; ++i) {
          const size_t at = static_cast<size_t>(i) + static_cast<size_t>(j) * ldc;
          double expected = c0[at];  // rows past m are left alone
          if (i < m) {
            double s = 0.0;
            for (int l = 0; l < k; ++l) s += static_cast<double>(op_at(a, lda, ta, i, l)) * op_at(b, ldb, tb, l, j);
            expected = alpha * s + beta * static_cast<double>(c0[at]);
          }
          CHECK(c[at] == Approx(expected).margin(1e-6));
        }
      }
      cudaFree(da);
      cudaFree(db);
      cudaFree(dc);
    }
  }
  // lda smaller than the rows of A is refused; host memory is not device memory.
  float one = 1.0f, zero = 0.0f;
  float* d = device_alloc<float>(64);
  CHECK(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, d, 3, d, 4, &zero, d, 4) ==
        CUBLAS_STATUS_INVALID_VALUE);
  std::vector<float> host(16);
  CHECK_THROWS_WITH(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, host.data(), 4, d, 4, &zero, d, 4),
                    Catch::Contains("not inside one device allocation"));
  CHECK(cublasSetMathMode(handle, CUBLAS_TF32_TENSOR_OP_MATH) == CUBLAS_STATUS_SUCCESS);
  CHECK_THROWS_WITH(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, d, 4, d, 4, &zero, d, 4),
                    Catch::Contains("not emulated"));

  // bf16 in and out: the fp32 product of the bf16 inputs, rounded once to nearest even.
  CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH) == CUBLAS_STATUS_SUCCESS);
  std::vector<uint16_t> a16(16), b16(16);
  std::vector<float> af(16), bf(16);
  const auto ra = random_values(16, 4), rb = random_values(16, 5);
  for (int i = 0; i < 16; ++i) {
    af[i] = bf16_round(ra[i]);
    bf[i] = bf16_round(rb[i]);
    a16[i] = static_cast<uint16_t>(std::bit_cast<uint32_t>(af[i]) >> 16);
    b16[i] = static_cast<uint16_t>(std::bit_cast<uint32_t>(bf[i]) >> 16);
  }
  auto* d16 = device_alloc<uint16_t>(48);
  REQUIRE(cudaMemcpy(d16, a16.data(), 32, cudaMemcpyHostToDevice) == cudaSuccess);
  REQUIRE(cudaMemcpy(d16 + 16, b16.data(), 32, cudaMemcpyHostToDevice) == cudaSuccess);
  REQUIRE(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, 4, 4, 4, &one, d16, CUDA_R_16BF, 4, d16 + 16, CUDA_R_16BF, 4,
                       &zero, d16 + 32, CUDA_R_16BF, 4, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
  std::vector<uint16_t> c16(16);
  REQUIRE(cudaMemcpy(c16.data(), d16 + 32, 32, cudaMemcpyDeviceToHost) == cudaSuccess);
  for (int j = 0; j < 4; ++j) {
    for (int i = 0; i < 4; ++i) {
      double s = 0.0;
      for (int l = 0; l < 4; ++l) s += static_cast<double>(af[l + i * 4]) * bf[l + j * 4];
      CHECK(c16[i + j * 4] == static_cast<uint16_t>(std::bit_cast<uint32_t>(bf16_round(static_cast<float>(s))) >> 16));
    }
  }
  cudaFree(d16);
  cudaFree(d);
  cublasDestroy(handle);
  cudaGetLastError();
}

namespace {

// One cuBLASLt GEMM D (m x n) = epilogue(A^T B) on bf16, m = 8, n = 3, k = 16, fp32 compute.
struct LtRun {
  std::vector<float> d, aux;
  cublasStatus_t status;
};
LtRun run_lt(cublasLtEpilogue_t epilogue, const std::vector<float>& a, const std::vector<float>& b,
             const std::vector<float>& bias, const std::vector<float>& aux_in, size_t d_offset) {
  const int m = 8, n = 3, k = 16;
  auto to16 = [](const std::vector<float>& v) {
    std::vector<uint16_t> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<uint16_t>(std::bit_cast<uint32_t>(v[i]) >> 16);
    return out;
  };
  auto* buf = device_alloc<uint16_t>(1024);
  uint16_t *da = buf, *db = buf + 256, *dbias = buf + 512, *daux = buf + 640, *dd = buf + 768 + d_offset;
  auto put = [](uint16_t* dst, const std::vector<uint16_t>& h) {
    if (!h.empty()) REQUIRE(cudaMemcpy(dst, h.data(), h.size() * 2, cudaMemcpyHostToDevice) == cudaSuccess);
  };
  put(da, to16(a));
  put(db, to16(b));
  put(dbias, to16(bias));
  put(daux, to16(aux_in));
  cublasLtHandle_t lt = nullptr;
  REQUIRE(cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulDesc_t desc = nullptr;
  REQUIRE(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS);
  const int32_t op_t = CUBLAS_OP_T;
  REQUIRE(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)) ==
          CUBLAS_STATUS_SUCCESS);
  const void* bias_ptr = dbias;
  const void* aux_ptr = daux;
  const int64_t aux_ld = m;
  REQUIRE(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr, sizeof(bias_ptr)) ==
          CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux_ptr, sizeof(aux_ptr)) ==
          CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof(aux_ld)) ==
          CUBLAS_STATUS_SUCCESS);
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  REQUIRE(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, k, m, k) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, k, n, k) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, m, n, m) == CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulPreference_t pref = nullptr;
  REQUIRE(cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  REQUIRE(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, ld, ld, pref, 1, &result, &returned) == CUBLAS_STATUS_SUCCESS);
  REQUIRE(returned == 1);
  const float alpha = 1.0f, beta = 0.0f;
  LtRun run;
  run.status = cublasLtMatmul(lt, desc, &alpha, da, la, db, lb, &beta, dd, ld, dd, ld, &result.algo, nullptr, 0, nullptr);
  std::vector<uint16_t> d16(m * n), aux16(m * n);
  REQUIRE(cudaMemcpy(d16.data(), dd, d16.size() * 2, cudaMemcpyDeviceToHost) == cudaSuccess);
  REQUIRE(cudaMemcpy(aux16.data(), daux, aux16.size() * 2, cudaMemcpyDeviceToHost) == cudaSuccess);
  for (uint16_t h : d16) run.d.push_back(std::bit_cast<float>(static_cast<uint32_t>(h) << 16));
  for (uint16_t h : aux16) run.aux.push_back(std::bit_cast<float>(static_cast<uint32_t>(h) << 16));
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(ld);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(lt);
  cudaFree(buf);
  return run;
}

}  // namespace

TEST_CASE("host cuBLASLt: epilogues as cublasLt.h describes them, alignment kept", "[emu][hostcuda]") {
  const int m = 8, n = 3, k = 16;
  auto rounded = [](std::vector<float> v) {
    for (float& x : v) x = bf16_round(x);
    return v;
  };
  const auto a = rounded(random_values(k * m, 6)), b = rounded(random_values(k * n, 7));
  const auto bias = rounded(random_values(m, 8)), pre = rounded(random_values(m * n, 9));
  auto gemm = [&](int i, int j) {
    double s = 0.0;
    for (int l = 0; l < k; ++l) s += static_cast<double>(a[l + i * k]) * b[l + j * k];
    return static_cast<float>(s);
  };
  const double s2pi = std::sqrt(2.0 / M_PI);
  auto gelu = [&](double x) { return 0.5 * x * (1.0 + std::tanh(s2pi * (x + 0.044715 * x * x * x))); };
  auto gelu_grad = [&](double x) {
    const double h = 1e-4;
    return (gelu(x + h) - gelu(x - h)) / (2 * h);
  };
  const LtRun plain = run_lt(CUBLASLT_EPILOGUE_DEFAULT, a, b, bias, pre, 0);
  const LtRun biased = run_lt(CUBLASLT_EPILOGUE_BIAS, a, b, bias, pre, 0);
  const LtRun gelu_aux = run_lt(CUBLASLT_EPILOGUE_GELU_AUX_BIAS, a, b, bias, pre, 0);
  const LtRun dgelu = run_lt(CUBLASLT_EPILOGUE_DGELU, a, b, bias, pre, 0);
  for (const LtRun* r : {&plain, &biased, &gelu_aux, &dgelu}) REQUIRE(r->status == CUBLAS_STATUS_SUCCESS);
  for (int j = 0; j < n; ++j) {
    for (int i = 0; i < m; ++i) {
      const int at = i + j * m;
      const float x = gemm(i, j), xb = x + bias[i];
      CHECK(plain.d[at] == bf16_round(x));
      CHECK(biased.d[at] == bf16_round(xb));  // one bias per row of D
      CHECK(gelu_aux.aux[at] == bf16_round(xb));
      CHECK(gelu_aux.d[at] == bf16_round(static_cast<float>(gelu(xb))));
      CHECK(dgelu.d[at] == Approx(x * gelu_grad(pre[at])).epsilon(1e-2).margin(1e-3));
      CHECK(dgelu.aux[at] == pre[at]);  // read, not written
    }
  }
  // An algorithm chosen for 256-byte aligned operands refuses a D that is only 2-byte aligned.
  CHECK(run_lt(CUBLASLT_EPILOGUE_DEFAULT, a, b, bias, pre, 1).status == CUBLAS_STATUS_NOT_SUPPORTED);
  // Epilogues the emulation does not model are refused loudly.
  cublasLtMatmulDesc_t desc = nullptr;
  REQUIRE(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS);
  const cublasLtEpilogue_t relu = CUBLASLT_EPILOGUE_RELU;
  CHECK_THROWS_WITH(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &relu, sizeof(relu)),
                    Catch::Contains("not emulated"));
  const int64_t wrong_size = CUBLAS_OP_T;
  CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &wrong_size, sizeof(wrong_size)) ==
        CUBLAS_STATUS_INVALID_VALUE);
  cublasLtMatmulDescDestroy(desc);
}

// The emulated heuristic within MAX_WORKSPACE_BYTES (cublasLt.h: "Maximum allowed workspace
// size"; cublasLtMatmul: INVALID_VALUE "when workspaceSizeInBytes is less than workspace required
// by configured algo"), and each decline of cublaslt_faults.hpp as a caller sees it.
TEST_CASE("host cuBLASLt: the heuristic keeps within MAX_WORKSPACE_BYTES; declines set by a test", "[emu][hostcuda]") {
  using hc::CublasLtFault;
  constexpr int m = 8;
  float* buf = device_alloc<float>(3 * m * m + 256);
  float *a = buf, *b = buf + m * m, *d = buf + 2 * m * m, *workspace = buf + 3 * m * m;
  upload(a, random_values(m * m, 21));
  upload(b, random_values(m * m, 22));
  cublasLtHandle_t lt = nullptr;
  REQUIRE(cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS);
  cublasLtMatmulDesc_t desc = nullptr;
  REQUIRE(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS);
  cublasLtMatrixLayout_t layout = nullptr;
  REQUIRE(cublasLtMatrixLayoutCreate(&layout, CUDA_R_32F, m, m, m) == CUBLAS_STATUS_SUCCESS);
  struct Outcome {
    cublasStatus_t heuristic;
    int returned;
    cublasStatus_t state;
    size_t workspace;
    cublasStatus_t matmul = CUBLAS_STATUS_SUCCESS;
  };
  // fp32 D (8 x 8) = A B through the heuristic's algorithm, the preference allowing `max_workspace`
  // bytes and the call given `workspace_bytes` of device memory.
  const auto run = [&](uint64_t max_workspace, size_t workspace_bytes) {
    cublasLtMatmulPreference_t pref = nullptr;
    REQUIRE(cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS);
    if (max_workspace > 0)
      REQUIRE(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace,
                                                   sizeof(max_workspace)) == CUBLAS_STATUS_SUCCESS);
    cublasLtMatmulHeuristicResult_t result{};
    result.state = CUBLAS_STATUS_INTERNAL_ERROR;  // unwritten
    Outcome out{};
    out.returned = -1;
    out.heuristic = cublasLtMatmulAlgoGetHeuristic(lt, desc, layout, layout, layout, layout, pref, 1, &result,
                                                   &out.returned);
    out.state = result.state;
    out.workspace = result.workspaceSize;
    if (out.heuristic == CUBLAS_STATUS_SUCCESS && out.returned == 1) {
      const float alpha = 1.0f, beta = 0.0f;
      out.matmul = cublasLtMatmul(lt, desc, &alpha, a, layout, b, layout, &beta, d, layout, d, layout, &result.algo,
                                  workspace_bytes > 0 ? workspace : nullptr, workspace_bytes, nullptr);
    }
    cublasLtMatmulPreferenceDestroy(pref);
    return out;
  };
  {
    INFO("no workspace needed: offered under the default MAX_WORKSPACE_BYTES (0)");
    const Outcome o = run(0, 0);
    CHECK((o.heuristic == CUBLAS_STATUS_SUCCESS && o.returned == 1 && o.state == CUBLAS_STATUS_SUCCESS));
    CHECK(o.workspace == 0);
    CHECK(o.matmul == CUBLAS_STATUS_SUCCESS);
  }
  {
    const hc::CublasLtFaultScope scope(CublasLtFault::none, 1024);
    INFO("an algorithm needing 1024 bytes: none offered within 1023 bytes");
    const Outcome none = run(1023, 0);
    CHECK((none.heuristic == CUBLAS_STATUS_SUCCESS && none.returned == 0));
    INFO("offered within 1024, and cublasLtMatmul takes 1024 bytes but refuses 1023");
    const Outcome ok = run(1024, 1024);
    CHECK((ok.returned == 1 && ok.state == CUBLAS_STATUS_SUCCESS && ok.workspace == 1024));
    CHECK(ok.matmul == CUBLAS_STATUS_SUCCESS);
    CHECK(run(1024, 1023).matmul == CUBLAS_STATUS_INVALID_VALUE);
  }
  {
    const hc::CublasLtFaultScope scope(CublasLtFault::heuristic_not_supported);
    CHECK(run(0, 0).heuristic == CUBLAS_STATUS_NOT_SUPPORTED);
  }
  {
    const hc::CublasLtFaultScope scope(CublasLtFault::heuristic_no_algorithm);
    const Outcome o = run(0, 0);
    CHECK((o.heuristic == CUBLAS_STATUS_SUCCESS && o.returned == 0));
  }
  {
    const hc::CublasLtFaultScope scope(CublasLtFault::heuristic_result_state);
    const Outcome o = run(0, 0);
    CHECK((o.returned == 1 && o.state == CUBLAS_STATUS_NOT_SUPPORTED));
    CHECK(o.matmul == CUBLAS_STATUS_INVALID_VALUE);  // its algorithm is not one to run
  }
  {
    const hc::CublasLtFaultScope scope(CublasLtFault::heuristic_over_workspace);
    const Outcome o = run(1024, 1024);
    CHECK((o.returned == 1 && o.state == CUBLAS_STATUS_SUCCESS && o.workspace == 1025));
    CHECK(o.matmul == CUBLAS_STATUS_INVALID_VALUE);
  }
  {
    const hc::CublasLtFaultScope scope(CublasLtFault::matmul_not_supported);
    upload(d, std::vector<float>(m * m, 7.0f));
    const Outcome o = run(0, 0);
    CHECK(o.matmul == CUBLAS_STATUS_NOT_SUPPORTED);
    CHECK(download(d, m * m) == std::vector<float>(m * m, 7.0f));  // nothing ran
  }
  {
    INFO("the defaults are back");
    const Outcome o = run(0, 0);
    CHECK((o.returned == 1 && o.matmul == CUBLAS_STATUS_SUCCESS));
  }
  cublasLtMatrixLayoutDestroy(layout);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(lt);
  cudaFree(buf);
}
