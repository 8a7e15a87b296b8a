// Launchers of the fused causal flash attention (kernels/flash_attention.cuh; mirrors
// cpu::attention_forward_blocked / attention_backward_blocked of cpu/attention.cpp): shape and
// alignment checks, the tile choice and the check that the device holds the kernels' shared
// memory, the opt-in to more than 48 KiB of it once per device, the fused backward's scratch, and
// the launches. The kernels themselves (FlashAttention-2 forward, deterministic split or fused
// backward, mma.sync m16n8k16 bf16 with ldmatrix) and their launch geometry are in
// flash_attention_device.cuh, which the CPU emulator of tests/emu compiles as host C++ to run the
// same code without a GPU.
#include "kernels/flash_attention.cuh"

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

#include "kernels/cuda_check.cuh"
#include "kernels/flash_attention_device.cuh"
#include "kernels/shared_memory.cuh"

namespace gpt2cc::cuda {
namespace {

using namespace flash;

// Dynamic shared memory above 48 KiB is opted into per kernel (kernels/shared_memory.cuh; with the
// two-stage pipeline HS 64 needs 45-91 KiB, HS 128 85-155 KiB: SharedNeed below). The kernel's
// static shared memory must be what SharedNeed counts, or the fit judged before launch would be
// wrong. The first opt-in on a device happens eagerly (the model runs each shape once before
// recording a CUDA graph), never inside a capture.
template <class Kernel>
void allow_flash_shared_memory(Kernel kernel, size_t bytes, size_t static_bytes = 0) {
  allow_shared_memory(kernel, bytes, static_bytes,
                      "flash attention (kBackwardFusedStaticSmem in kernels/flash_attention_device.cuh)");
}

void check_shapes(const char* op, int B, int T, int C, int NH) {
  ENSURE(B >= 0 && T >= 0 && NH >= 1, "{}: needs B, T >= 0 and NH >= 1, got B = {}, T = {}, NH = {}", op, B, T,
         NH);
  ENSURE(C % NH == 0, "{}: NH = {} must divide C = {}", op, NH, C);
  ENSURE(flash_attention_supported(C / NH), "{}: head size HS = C/NH = {} is not supported (64 or 128 only)", op,
         C / NH);
  ENSURE(C % 8 == 0, "{}: rows of qkv and out must be 16-byte multiples (C % 8 == 0), got C = {}", op, C);
  ENSURE(ceil_div(T, kTileRows) <= kMaxGridY, "{}: T = {} exceeds {} tiles of {} rows (grid.y limit)", op, T,
         kMaxGridY, kTileRows);
  ENSURE(static_cast<long long>(B) * NH <= 0x7fffffffLL, "{}: B*NH = {} exceeds the grid.x limit", op,
         static_cast<long long>(B) * NH);
}

// What the kernel a pass launches needs of one block's shared memory, dynamic + static (the
// opt-in limit covers both; the fused kernel's static part is kBackwardFusedStaticSmem). A
// split backward launches dK/dV then dQ: the larger of the two (dK/dV's, by its 1 KiB of lse and
// delta). In KiB, 64 / 128 rows: forward 45 / 54 (HS 64), 85 / 102 (HS 128); split backward
// 55 / 73, 103 / 137; fused 64 / 91, 112 / 155.
struct SharedNeed {
  const char* kernel;
  size_t bytes;
};
SharedNeed forward_need(int HS, int rows) {
  SharedNeed need{};
  dispatch(HS, rows,
           [&]<int kHS, int kRows>() { need = {"flash_attention_forward_kernel", kForwardSmem<kHS, kRows>}; });
  return need;
}
SharedNeed backward_need(int HS, int rows, FlashBackward design) {
  SharedNeed need{};
  dispatch(HS, rows, [&]<int kHS, int kRows>() {
    if (flash_attention_backward_design(design) == FlashBackward::kFused)
      need = {"flash_attention_backward_fused_kernel", kBackwardFusedSmem<kHS, kRows> + kBackwardFusedStaticSmem};
    else if (kBackwardDkdvSmem<kHS, kRows> >= kBackwardDqSmem<kHS, kRows>)
      need = {"flash_attention_backward_dkdv_kernel", kBackwardDkdvSmem<kHS, kRows>};
    else
      need = {"flash_attention_backward_dq_kernel", kBackwardDqSmem<kHS, kRows>};
  });
  return need;
}

// The architecture the code the current device runs from this build was compiled for
// (cudaFuncAttributes::ptxVersion, e.g. 90: SASS for sm_90, or compute_XY PTX the driver compiled).
// Fixed for a device for the life of the process: asked once per device ordinal (< 64), so that
// launches, also those recorded into a CUDA graph, make no driver call for it.
int flash_code_version() {
  static std::atomic<int> known[64] = {};  // 0: not asked yet
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  const bool cacheable = device >= 0 && device < 64;
  if (cacheable)
    if (const int version = known[device].load(std::memory_order_acquire); version != 0) return version;
  cudaFuncAttributes attributes{};
  CUDA_CHECK(cudaFuncGetAttributes(&attributes, flash_attention_forward_kernel<64, 64>));
  if (cacheable) known[device].store(attributes.ptxVersion, std::memory_order_release);
  return attributes.ptxVersion;
}

// 128 rows where default_tile_rows takes them (the current device's SM count) and the pass's
// 128-row kernel fits the device; else 64.
int auto_tile_rows(int B, int T, int NH, const SharedNeed& rows128) {
  int device = 0, sm_count = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device));
  return default_tile_rows(B, T, NH, sm_count) == 128 && rows128.bytes <= device_shared_optin() ? 128 : 64;
}

// Before a pass launches anything: its kernel at (HS, rows) must fit the current device's opt-in
// limit, else gpt2cc::Error with the kernel, the bytes, the device and the way out (a 64-row tile
// when that fits, else head size 64 or the tiled attention). `rows64` is the pass's 64-row need.
// Code compiled below sm_80 is refused first, whatever the tile.
void require_fits(const char* op, const SharedNeed& need, int HS, int rows, const SharedNeed& rows64) {
  const int code = flash_code_version();
  const size_t optin = device_shared_optin();
  if (code >= 80 && need.bytes <= optin) return;
  int device = 0;
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  if (code < 80) {
    const std::string why =
        prop.major < 8 ? format("needs a GPU of compute capability 8.0 or newer (cp.async, bf16 mma.sync), and device "
                                "{} ({}) is sm_{}{}",
                                device, prop.name, prop.major, prop.minor)
                       : format("has no kernels for device {} ({}, sm_{}{}) in this build, whose code for it is "
                                "compute_{} (rebuild with -DGPT2CC_CUDA_ARCHITECTURES={}{} for them)",
                                device, prop.name, prop.major, prop.minor, code, prop.major, prop.minor);
    throw Error(format("{}: flash attention {} (cuda::flash_attention_fits_device says so beforehand): use the tiled "
                       "attention (cuda::attention_forward / attention_backward)",
                       op, why));
  }
  const std::string way_out =
      rows == 128 && rows64.bytes <= optin
          ? "take 64-row tiles (FlashTile::kRows64, which FlashTile::kAuto takes on this device)"
          : format("{} at head size {} does not fit this device even at 64-row tiles "
                   "(cuda::flash_attention_fits_device says so beforehand): use {}the tiled attention "
                   "(cuda::attention_forward / attention_backward)",
                   op, HS, HS == 128 ? "head size 64 or " : "");
  throw Error(format("{}: {}<HS {}, {} rows> needs {} bytes of shared memory per block, more than the {} that device "
                     "{} ({}, sm_{}{}) lets a block opt into; {}",
                     op, need.kernel, HS, rows, need.bytes, optin, device, prop.name, prop.major, prop.minor, way_out));
}

void check_aligned(const char* op, const void* ptr, const char* name) {
  ENSURE(reinterpret_cast<uintptr_t>(ptr) % 16 == 0, "{}: {} must be 16-byte aligned for vector loads, got {}",
         op, name, ptr);
}

template <int HS, int kRows>
void launch_forward(const FlashForwardParams& p, int B, cudaStream_t stream) {
  static std::atomic<uint64_t> smem_ready{0};
  once_per_device(smem_ready, [] {
    allow_flash_shared_memory(flash_attention_forward_kernel<HS, kRows>, kForwardSmem<HS, kRows>);
  });
  const LaunchShape l = forward_launch<HS, kRows>(B, p.T, p.NH);
  flash_attention_forward_kernel<HS, kRows><<<l.grid, l.block, l.smem_bytes, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

// Opts in only the kernels of `design`: on a device that holds one design's kernels and not the
// other's, the one it holds runs.
template <int HS, int kRows>
void launch_backward(const FlashBackwardParams& p, const bf16* out, float* delta, int B, FlashBackward design,
                     cudaStream_t stream) {
  static std::atomic<uint64_t> split_ready{0}, fused_ready{0};
  if (design == FlashBackward::kFused) {
    once_per_device(fused_ready, [] {
      allow_flash_shared_memory(flash_attention_backward_fused_kernel<HS, kRows>, kBackwardFusedSmem<HS, kRows>,
                                kBackwardFusedStaticSmem);
    });
  } else {
    once_per_device(split_ready, [] {
      allow_flash_shared_memory(flash_attention_backward_dkdv_kernel<HS, kRows>, kBackwardDkdvSmem<HS, kRows>);
      allow_flash_shared_memory(flash_attention_backward_dq_kernel<HS, kRows>, kBackwardDqSmem<HS, kRows>);
    });
  }
  const LaunchShape ld = delta_launch(B, p.T, p.NH);
  flash_attention_delta_kernel<HS><<<ld.grid, ld.block, ld.smem_bytes, stream>>>(delta, p.dout, out, B, p.T, p.NH);
  CUDA_CHECK_LAUNCH();
  if (design == FlashBackward::kFused) {
    const LaunchShape lf = backward_fused_launch<HS, kRows>(B, p.T, p.NH);
    flash_attention_backward_fused_kernel<HS, kRows><<<lf.grid, lf.block, lf.smem_bytes, stream>>>(p);
    CUDA_CHECK_LAUNCH();
    return;
  }
  const LaunchShape lk = backward_dkdv_launch<HS, kRows>(B, p.T, p.NH);
  flash_attention_backward_dkdv_kernel<HS, kRows><<<lk.grid, lk.block, lk.smem_bytes, stream>>>(p);
  CUDA_CHECK_LAUNCH();
  const LaunchShape lq = backward_dq_launch<HS, kRows>(B, p.T, p.NH);
  flash_attention_backward_dq_kernel<HS, kRows><<<lq.grid, lq.block, lq.smem_bytes, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool flash_attention_supported(int HS) { return HS == 64 || HS == 128; }

bool flash_attention_built_for_device() { return flash_code_version() >= 80; }

bool flash_attention_forward_fits_device(int HS) {
  return flash_attention_supported(HS) && flash_attention_built_for_device() &&
         forward_need(HS, 64).bytes <= device_shared_optin();
}

bool flash_attention_fits_device(int HS, FlashBackward design) {
  return flash_attention_forward_fits_device(HS) && backward_need(HS, 64, design).bytes <= device_shared_optin();
}

// The caller's choice, or auto_tile_rows (attribute queries: allowed during stream capture).
int flash_attention_forward_tile_rows(FlashTile tile, int B, int T, int C, int NH) {
  if (tile != FlashTile::kAuto) return tile == FlashTile::kRows128 ? 128 : 64;
  return auto_tile_rows(B, T, NH, forward_need(C / NH, 128));
}

int flash_attention_backward_tile_rows(FlashTile tile, int B, int T, int C, int NH, FlashBackward design) {
  if (tile != FlashTile::kAuto) return tile == FlashTile::kRows128 ? 128 : 64;
  return auto_tile_rows(B, T, NH, backward_need(C / NH, 128, design));
}

void flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                             cudaStream_t stream, FlashTile tile) {
  check_shapes("flash_attention_forward", B, T, C, NH);
  check_aligned("flash_attention_forward", qkv, "qkv");
  check_aligned("flash_attention_forward", out, "out");
  if (B == 0 || T == 0) return;  // nothing to compute (an empty launch grid would be an error)
  const int HS = C / NH, rows = flash_attention_forward_tile_rows(tile, B, T, C, NH);
  require_fits("flash_attention_forward", forward_need(HS, rows), HS, rows, forward_need(HS, 64));
  const FlashForwardParams p = forward_params(out, lse, qkv, T, C, NH);
  dispatch(HS, rows, [&]<int kHS, int kRows>() { launch_forward<kHS, kRows>(p, B, stream); });
}

FlashBackward flash_attention_backward_design(FlashBackward design) {
  return design == FlashBackward::kAuto ? FlashBackward::kSplit : design;
}

const char* flash_attention_backward_name(FlashBackward design) {
  return flash_attention_backward_design(design) == FlashBackward::kSplit ? "split" : "fused";
}

size_t flash_attention_backward_scratch_bytes(int B, int T, int C, int NH, FlashBackward design) {
  if (B <= 0 || T <= 0 || NH <= 0) return 0;
  const size_t delta = static_cast<size_t>(B) * NH * T * sizeof(float);
  if (flash_attention_backward_design(design) == FlashBackward::kSplit) return delta;
  return delta + fused_partial_floats(B, T, C) * sizeof(float) + fused_sync_words(B, T, NH) * sizeof(uint32_t);
}

void flash_attention_backward(bf16* dqkv, const bf16* dout, const float* lse, const bf16* qkv, const bf16* out,
                              int B, int T, int C, int NH, cudaStream_t stream, FlashTile tile,
                              FlashBackward design) {
  check_shapes("flash_attention_backward", B, T, C, NH);
  check_aligned("flash_attention_backward", dqkv, "dqkv");
  check_aligned("flash_attention_backward", dout, "dout");
  check_aligned("flash_attention_backward", out, "out");
  check_aligned("flash_attention_backward", qkv, "qkv");
  design = flash_attention_backward_design(design);
  const size_t sync_words = fused_sync_words(B, T, NH);
  if (design == FlashBackward::kFused) {
    // Its tickets and counters are 32-bit (a bound no shape that fits in memory comes near).
    ENSURE(sync_words < 0x80000000ULL,
           "flash_attention_backward: B*NH*ceil(T/64) = {} work items exceed the fused kernel's 32-bit counters",
           sync_words - 1);
  }
  if (B == 0 || T == 0) return;
  const int HS = C / NH, rows = flash_attention_backward_tile_rows(tile, B, T, C, NH, design);
  require_fits("flash_attention_backward", backward_need(HS, rows, design), HS, rows, backward_need(HS, 64, design));
  ScratchBuffer delta(static_cast<size_t>(B) * NH * T * sizeof(float), stream);
  std::optional<ScratchBuffer> dq_partial, dq_sync;
  if (design == FlashBackward::kFused) {
    dq_partial.emplace(fused_partial_floats(B, T, C) * sizeof(float), stream);
    dq_sync.emplace(sync_words * sizeof(uint32_t), stream);
    CUDA_CHECK(cudaMemsetAsync(dq_sync->as<uint32_t>(), 0, sync_words * sizeof(uint32_t), stream));
  }
  const FlashBackwardParams p =
      backward_params(dqkv, dout, lse, delta.as<float>(), qkv, T, C, NH,
                      dq_partial ? dq_partial->as<float>() : nullptr, dq_sync ? dq_sync->as<uint32_t>() : nullptr);
  dispatch(HS, rows,
           [&]<int kHS, int kRows>() { launch_backward<kHS, kRows>(p, out, delta.as<float>(), B, design, stream); });
}

}  // namespace gpt2cc::cuda
