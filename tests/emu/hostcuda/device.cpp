// The emulated device of the host CUDA runtime: which GPU it is (a profile, $GPT2CC_EMU_GPU) and
// which kernel images the emulated "binary" holds (a CMake CUDA architecture list: the build's
// GPT2CC_CUDA_ARCHITECTURES, or $GPT2CC_CUDA_ARCHITECTURES), with the rule by which a device runs
// one of them. runtime.cpp reports both (cudaGetDeviceProperties, cudaDeviceGetAttribute,
// cudaFuncGetAttributes) and enforces them (shared memory limits, cudaErrorNoKernelImageForDevice).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "emu/cuda_emu.hpp"
#include "emu/hostcuda/hostcuda.hpp"

#ifndef GPT2CC_EMU_CUDA_ARCHITECTURES
#error "GPT2CC_EMU_CUDA_ARCHITECTURES (the build's CUDA architectures, commas for semicolons) is set by CMakeLists.txt"
#endif

namespace gpt2cc::hostcuda {
namespace {

constexpr size_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

// Per compute capability, from the CUDA C++ Programming Guide's "Technical Specifications per
// Compute Capability": shared memory per SM and the most a block may opt into (7.5: 64 / 64 KiB;
// 8.0: 164 / 163 KiB; 8.9: 100 / 99 KiB; 9.0: 228 / 227 KiB), resident threads and blocks per SM
// (7.5: 1024, 16; 8.0, 9.0: 2048, 32; 8.9: 1536, 24). Per product, from NVIDIA's data sheets: SMs,
// L2, memory, bus width.
constexpr GpuProfile kProfiles[] = {
    // The emulated device from before profiles, unchanged, its name included (tests recognise the
    // emulator by that prefix); an H100 SXM5 80GB.
    {"h100", "gpt2cc CPU emulator", 9, 0, 132, 228 * KiB, 227 * KiB, 50 * MiB, 80 * GiB, 5120, 2048, 32},
    {"h200", "gpt2cc CPU emulator (NVIDIA H200)", 9, 0, 132, 228 * KiB, 227 * KiB, 50 * MiB, 141 * GiB, 6144, 2048, 32},
    {"a100", "gpt2cc CPU emulator (NVIDIA A100-SXM4-80GB)", 8, 0, 108, 164 * KiB, 163 * KiB, 40 * MiB, 80 * GiB, 5120,
     2048, 32},
    {"rtx4090", "gpt2cc CPU emulator (NVIDIA GeForce RTX 4090)", 8, 9, 128, 100 * KiB, 99 * KiB, 72 * MiB, 24 * GiB,
     384, 1536, 24},
    {"t4", "gpt2cc CPU emulator (Tesla T4)", 7, 5, 40, 64 * KiB, 64 * KiB, 4 * MiB, 15 * GiB, 256, 1024, 16},
};
static_assert(227 * KiB <= emu::kSharedCapacity, "the emulator's shared memory must hold every profile's block");

// One entry of a CMake CUDA_ARCHITECTURES list (CMake documentation, CUDA_ARCHITECTURES): "90" is
// sm_90 code (SASS) plus compute_90 PTX, "90-real" the SASS only, "90-virtual" the PTX only; a
// suffix "a" (90a) makes it arch-specific, "f" (100f) family-specific; "native", "all" and
// "all-major" are taken as code for any device.
struct ArchEntry {
  int major = 0, minor = 0;
  char variant = '\0';  // '\0', 'a' or 'f'
  bool sass = false, ptx = false, any_device = false;
};

ArchEntry parse_entry(const std::string& text) {
  ArchEntry e;
  if (text == "native" || text == "all" || text == "all-major") {
    e.any_device = true;
    return e;
  }
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  std::string rest = text.substr(digits);
  if (!rest.empty() && (rest[0] == 'a' || rest[0] == 'f')) {
    e.variant = rest[0];
    rest.erase(0, 1);
  }
  e.sass = rest.empty() || rest == "-real";
  e.ptx = rest.empty() || rest == "-virtual";
  const int number = digits >= 2 && digits <= 3 ? std::atoi(text.substr(0, digits).c_str()) : 0;
  if (number < 10 || (!e.sass && !e.ptx))
    throw std::invalid_argument("'" + text + "' is not a CUDA architecture (90, 90-real, 90-virtual, 90a, 100f, "
                                "native, all, all-major)");
  e.major = number / 10;
  e.minor = number % 10;
  return e;
}

// Whether code for `e` runs on compute capability major.minor. SASS sm_XY runs on X.y, y >= Y (the
// same major: binary compatibility holds within it only); PTX compute_XY is compiled by the driver
// for any X.Y or newer. Arch-specific code (a) runs on exactly X.Y; family-specific (f) on X.y, y >= Y.
bool sass_runs(const ArchEntry& e, int major, int minor) {
  if (!e.sass || major != e.major) return false;
  return e.variant == 'a' ? minor == e.minor : minor >= e.minor;
}
bool ptx_runs(const ArchEntry& e, int major, int minor) {
  if (!e.ptx) return false;
  if (e.variant == 'a') return major == e.major && minor == e.minor;
  if (e.variant == 'f') return major == e.major && minor >= e.minor;
  return major * 10 + minor >= e.major * 10 + e.minor;
}

// The emulated device: set from the environment at the first use, or by set_emulated_gpu.
struct Emulated {
  const GpuProfile* profile = nullptr;
  std::string architectures;
  std::optional<KernelImage> image;
  bool driver_compiles_ptx = true;
};

Emulated from_environment() {
  const int index = emu::env_choice("GPT2CC_EMU_GPU", {kProfiles[0].key, kProfiles[1].key, kProfiles[2].key,
                                                        kProfiles[3].key, kProfiles[4].key});
  const char* env = std::getenv("GPT2CC_CUDA_ARCHITECTURES");
  const bool from_env = env != nullptr && *env != '\0';
  Emulated e{&kProfiles[index], from_env ? env : GPT2CC_EMU_CUDA_ARCHITECTURES, std::nullopt,
             emu::env_choice("GPT2CC_EMU_DRIVER_PTX", {"jit", "too-new"}) == 0};
  try {
    e.image = kernel_image_for(e.architectures, e.profile->major, e.profile->minor);
  } catch (const std::invalid_argument& err) {
    std::fprintf(stderr, "%s: %s\n", from_env ? "GPT2CC_CUDA_ARCHITECTURES" : "the build's GPT2CC_CUDA_ARCHITECTURES",
                 err.what());
    std::exit(2);
  }
  return e;
}

Emulated& emulated() {
  static Emulated e = from_environment();
  return e;
}

}  // namespace

std::span<const GpuProfile> gpu_profiles() { return kProfiles; }
const GpuProfile& gpu_profile() { return *emulated().profile; }
const std::string& cuda_architectures() { return emulated().architectures; }
const std::optional<KernelImage>& kernel_image() { return emulated().image; }
bool driver_compiles_ptx() { return emulated().driver_compiles_ptx; }
void set_driver_compiles_ptx(bool compiles) { emulated().driver_compiles_ptx = compiles; }
cudaError_t kernel_image_error() {
  const Emulated& e = emulated();
  if (!e.image) return cudaErrorNoKernelImageForDevice;
  if (e.image->jit && !e.driver_compiles_ptx) return cudaErrorUnsupportedPtxVersion;
  return cudaSuccess;
}

std::optional<KernelImage> kernel_image_for(std::string_view architectures, int major, int minor) {
  std::optional<KernelImage> sass, ptx;
  const int device = major * 10 + minor;
  std::string list(architectures);
  for (char& c : list)
    if (c == ',') c = ';';
  bool any_entry = false;
  for (size_t start = 0; start <= list.size();) {
    const size_t end = std::min(list.find(';', start), list.size());
    const std::string entry = list.substr(start, end - start);
    start = end + 1;
    if (entry.empty()) continue;
    any_entry = true;
    const ArchEntry e = parse_entry(entry);
    const int arch = e.major * 10 + e.minor;
    if (e.any_device || sass_runs(e, major, minor)) {
      const int binary = e.any_device ? device : arch;
      if (!sass || binary > sass->binary_version) sass = KernelImage{binary, binary};
    } else if (ptx_runs(e, major, minor) && (!ptx || arch > ptx->ptx_version)) {
      ptx = KernelImage{device, arch, true};
    }
  }
  if (!any_entry) throw std::invalid_argument("'" + std::string(architectures) + "' names no CUDA architecture");
  return sass ? sass : ptx;  // the driver takes matching SASS over compiling PTX
}

void set_emulated_gpu(const GpuProfile& profile, std::string_view architectures) {
  Emulated& e = emulated();
  e.image = kernel_image_for(architectures, profile.major, profile.minor);
  e.profile = &profile;
  e.architectures = std::string(architectures);
}

size_t device_memory_bytes() {
  static const size_t mib_override = [] {
    const char* text = std::getenv("GPT2CC_EMU_DEVICE_MIB");
    if (text == nullptr || *text == '\0') return size_t(0);
    char* end = nullptr;
    const unsigned long long mib = std::strtoull(text, &end, 10);
    if (*end != '\0' || mib == 0 || mib > (1ull << 24) || text[0] == '-') {
      std::fprintf(stderr, "GPT2CC_EMU_DEVICE_MIB must be a positive number of MiB, got '%s'\n", text);
      std::exit(2);
    }
    return size_t(mib) << 20;
  }();
  return mib_override != 0 ? mib_override : gpu_profile().memory_bytes;
}

cudaDeviceProp device_properties() {
  const GpuProfile& g = gpu_profile();
  cudaDeviceProp prop{};
  std::strncpy(prop.name, g.name, sizeof(prop.name) - 1);
  prop.totalGlobalMem = device_memory_bytes();
  prop.sharedMemPerBlock = kDefaultMaxDynamicShared;
  prop.sharedMemPerBlockOptin = g.shared_optin;
  prop.sharedMemPerMultiprocessor = g.shared_per_sm;
  prop.regsPerBlock = 65536;
  prop.regsPerMultiprocessor = 65536;
  prop.warpSize = 32;
  prop.maxThreadsPerBlock = 1024;
  prop.maxThreadsDim[0] = 1024;
  prop.maxThreadsDim[1] = 1024;
  prop.maxThreadsDim[2] = 64;
  prop.maxGridSize[0] = 2147483647;
  prop.maxGridSize[1] = 65535;
  prop.maxGridSize[2] = 65535;
  prop.major = g.major;
  prop.minor = g.minor;
  prop.multiProcessorCount = g.sm_count;
  prop.maxThreadsPerMultiProcessor = g.max_threads_per_sm;
  prop.maxBlocksPerMultiProcessor = g.max_blocks_per_sm;
  prop.l2CacheSize = static_cast<int>(g.l2_bytes);
  prop.memoryBusWidth = g.memory_bus_width;
  prop.concurrentKernels = 1;
  prop.unifiedAddressing = 1;
  prop.memoryPoolsSupported = 1;
  prop.asyncEngineCount = 2;
  return prop;
}

}  // namespace gpt2cc::hostcuda
