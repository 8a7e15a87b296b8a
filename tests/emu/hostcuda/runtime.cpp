// A CUDA runtime on the host, linked instead of libcudart: the cudart functions that kernels/ and
// tests/cuda call (declared by the real cuda_runtime_api.h, extern "C"), with CUDA's semantics
// on host memory and one emulated device (or copies of it: device_exists; a GPU profile and the
// kernel images of the emulated binary: device.cpp; by default an sm_90 H100 with 80 GiB) whose
// kernels run on the CPU emulator.
// - Memory: cudaMalloc / cudaMallocAsync memory is NOT zeroed on a GPU, so here it starts as
//   0xFF bytes (NaN in fp32 and bf16): a read of memory nobody wrote shows in the results.
//   Copies and memsets must stay inside one allocation on their device side. Around each
//   allocation (kGuardBytes before it; its 256-byte rounding and kGuardBytes more after it) the
//   0xFF bytes must stay: after every launch they are checked, and a kernel that wrote there stops
//   with emu::Violation, as compute-sanitizer's memcheck would stop it on a GPU (where the bytes
//   would belong to another buffer). Under AddressSanitizer those bytes are poisoned instead
//   (set_usable).
// - Streams run their work in order, at once, on the calling thread (cudaStreamSynchronize has
//   nothing to wait for). While a stream captures (cudaStreamBeginCapture), the kernels, copies,
//   memsets and GEMMs put on it are recorded instead; EndCapture gives the graph of those steps,
//   cudaGraphLaunch replays them. The capture rules of the CUDA Runtime API reference are kept:
//   synchronizing a capturing stream, or a "potentially unsafe" call (cudaMalloc, cudaFree,
//   synchronous copies, device synchronize) from a thread with a non-relaxed capture, fails with
//   cudaErrorStreamCaptureUnsupported and invalidates the capture. Memory cudaMallocAsync'ed
//   during a capture belongs to the graph (refilled with 0xFF at each replay, as a graph
//   allocation's contents are undefined) and lives until the graph and its instances are gone.
// - Accounting (cudaMemGetInfo, out-of-memory): the profile's memory, or $GPT2CC_EMU_DEVICE_MIB;
//   the default pool keeps freed blocks reserved as CUDA's stream-ordered allocator does (its
//   release threshold, cudaMemPoolTrimTo), and graph memory is reserved at a launch for the
//   capture's peak, kept until cudaDeviceGraphMemTrim (CUmemPoolHandle_st, State below). A
//   cudaMalloc that does not fit hands the default pool's cached blocks back and tries again, as
//   the driver did on an H200 (CUDA 13.0, driver 580.159.04, 2026-12-04: with 16 MiB free, 32 MiB
//   cached in the pool and 32 MiB of graph memory, a 40 MiB cudaMalloc succeeded; with nothing
//   cached one failed; the pool alone explains it, whether graph memory goes back too is not
//   known); $GPT2CC_EMU_MALLOC_RECLAIM=none turns that off (the code that hands cached memory
//   back itself is then the only way such an allocation works).
// - Errors: each failing call also sets the thread's last error (cudaGetLastError).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "emu/cp_async_emu.hpp"
#include "emu/hostcuda/hostcuda.hpp"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

namespace gpt2cc::hostcuda {
// What a captured graph's cudaMallocAsync steps hold: host memory behind each pointer from the
// capture on (kernels and copies check their ranges against it), and the peak of their bytes live
// at once in the capture, the graph memory a launch needs. The memory is charged to the device
// only as graph memory (State::graph_reserved): graph memory is mapped at the launches on a GPU.
struct GraphAllocations {
  std::vector<void*> pointers;
  size_t peak_bytes = 0;
  GraphAllocations() = default;
  GraphAllocations(const GraphAllocations&) = delete;
  GraphAllocations& operator=(const GraphAllocations&) = delete;
  ~GraphAllocations();  // hands the host memory back
};
}  // namespace gpt2cc::hostcuda

// The opaque handle types of cuda_runtime_api.h, defined here.
struct CUstream_st {
  unsigned flags = 0;
  bool capturing = false;
  bool capture_invalidated = false;
  cudaStreamCaptureMode capture_mode = cudaStreamCaptureModeGlobal;
  std::thread::id capture_thread;
  unsigned long long capture_id = 0;
  std::vector<std::function<void()>> captured;
  std::shared_ptr<gpt2cc::hostcuda::GraphAllocations> captured_allocations;
  size_t captured_live_bytes = 0;  // the capture's allocations not yet freed in it
};

// A graph's steps and the memory its cudaMallocAsync steps hold (freed with the last owner).
struct CUgraph_st {
  std::vector<std::function<void()>> steps;
  std::shared_ptr<gpt2cc::hostcuda::GraphAllocations> allocations;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> steps;
  std::shared_ptr<gpt2cc::hostcuda::GraphAllocations> allocations;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point time;
  bool recorded = false;
};
// The default pool, which cudaMallocAsync outside a capture allocates from (in a capture the memory
// is the graph's: graph memory, accounted for apart, as on a GPU). As CUDA's stream-ordered
// allocator: a freed block stays reserved by the pool (device memory in use, for cudaMemGetInfo
// and later allocations) and is reused by a later allocation it fits (the smallest such block),
// until a stream, event or device synchronisation finds more than release_threshold bytes
// reserved, or cudaMemPoolTrimTo, hands blocks back. Reused memory is refilled with 0xFF, as new.
// The pool trims itself for nobody else: a pool allocation that does not fit beside the reserved
// blocks fails. Only cudaMalloc takes its cached blocks back (malloc_reclaims_pool).
struct CUmemPoolHandle_st {
  uint64_t release_threshold = 0;
  std::map<const void*, size_t> live;     // allocated blocks: start -> bytes
  std::multimap<size_t, void*> cached;     // freed blocks the pool keeps: bytes -> start
  uint64_t used = 0, reserved = 0, used_high = 0, reserved_high = 0;
};

namespace gpt2cc::hostcuda {

namespace {

constexpr unsigned char kUnwrittenByte = 0xFF;  // NaN as fp32 and as bf16
constexpr size_t kAllocationAlignment = 256;  // cudaMalloc's guarantee
constexpr size_t kSharedCanaryBytes = 4096;
// Bytes before each allocation and past its 256-byte rounding that kernels must leave as they
// are (0xFF); a multiple of kAllocationAlignment, so the allocation keeps cudaMalloc's alignment.
constexpr size_t kGuardBytes = 256;

// Every piece of state below, for every API call (the emulator runs one grid at a time). Never
// destroyed: static destructors elsewhere (GEMM workspaces, handles) still call cudaFree at exit.
std::recursive_mutex& state_mutex() {
  static auto* mutex = new std::recursive_mutex;
  return *mutex;
}
using Lock = std::lock_guard<std::recursive_mutex>;

// A device allocation: the bytes kernels may use, and the host bytes from its start that it
// occupies (its 256-byte rounding and the guard after it; a pool block reused for fewer bytes
// keeps the footprint of its first size).
struct Allocation {
  size_t bytes;
  size_t footprint;
};

struct State {
  std::map<const char*, Allocation> allocations;  // device memory, by start
  std::set<const void*> uncharged;             // those of graphs, outside allocated_bytes
  size_t allocated_bytes = 0;                  // charged to the device: in use, reserved by pools
  std::set<cudaStream_t> streams;
  std::set<cudaEvent_t> events;
  std::map<const void*, size_t> max_dynamic_shared;  // cudaFuncAttributeMaxDynamicSharedMemorySize
  CUmemPoolHandle_st default_pool;
  // Graph memory (cudaMallocAsync in a capture): reserved (charged to the device) at a launch that
  // needs more than is reserved, kept for later launches until cudaDeviceGraphMemTrim. In use only
  // during a launch (every allocation of a graph is freed in it: cudaFreeAsync refuses others), so
  // the current use between calls is 0 and the high-water mark is the largest launch's peak.
  uint64_t graph_reserved = 0, graph_reserved_high = 0, graph_used_high = 0;
  unsigned long long next_capture_id = 1;
  size_t grids_run = 0;             // by run_grid
  std::deque<GridRun> recent_grids;  // the last kRecentGrids of them
};
State& state() {
  static auto* s = new State;
  return *s;
}

thread_local cudaError_t last_error = cudaSuccess;
thread_local int current_device = 0;

// Devices 0..$GPT2CC_EMU_DEVICES-1 (default 1): copies of the one emulated device, sharing its
// memory and state, for a process that uses one of them (a rank of a data-parallel job takes the
// device of its local rank).
bool device_exists(int device) {
  static const int count = [] {
    const char* value = std::getenv("GPT2CC_EMU_DEVICES");
    const int n = value != nullptr ? std::atoi(value) : 1;
    return n >= 1 && n <= 64 ? n : 1;
  }();
  return device >= 0 && device < count;
}

// The window of launches from a TU without an `extern __shared__` array (its kernels use none).
alignas(16) thread_local unsigned char fallback_shared[emu::kSharedCapacity];
void* fallback_shared_instance() { return fallback_shared; }

bool is_legacy(cudaStream_t stream) {
  return stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread;
}

// The allocation holding [p, p + bytes), or end().
std::map<const char*, Allocation>::iterator find_allocation(const void* p, size_t bytes) {
  auto& a = state().allocations;
  const char* c = static_cast<const char*>(p);
  auto it = a.upper_bound(c);
  if (it == a.begin()) return a.end();
  --it;
  if (c + bytes > it->first + it->second.bytes || c < it->first) return a.end();
  return it;
}
bool is_device_range(const void* p, size_t bytes) { return find_allocation(p, bytes) != state().allocations.end(); }
bool touches_device_memory(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (auto& [start, allocation] : state().allocations)
    if (c < start + allocation.bytes && start < c + std::max<size_t>(bytes, 1)) return true;
  return false;
}

bool fits_on_device(size_t bytes) { return bytes <= device_memory_bytes() - state().allocated_bytes; }

size_t rounded_size(size_t bytes) { return (bytes + kAllocationAlignment - 1) / kAllocationAlignment * kAllocationAlignment; }

// Under AddressSanitizer, the kGuardBytes before an allocation and the bytes of its `footprint`
// (from its start: the 256-byte rounding, the guard after it) past the `usable` ones are poisoned:
// a kernel reading or writing outside a buffer is reported at once, to the byte, as
// compute-sanitizer's memcheck would on a GPU. Without it, a no-op.
void set_usable(void* p, size_t usable, size_t footprint) {
#if defined(__SANITIZE_ADDRESS__)
  ASAN_UNPOISON_MEMORY_REGION(p, footprint);
  ASAN_POISON_MEMORY_REGION(static_cast<char*>(p) - kGuardBytes, kGuardBytes);
  ASAN_POISON_MEMORY_REGION(static_cast<char*>(p) + usable, footprint - usable);
#else
  (void)p, (void)usable, (void)footprint;
#endif
}

// New device memory (charged: counted in allocated_bytes), or, for a graph's allocation, host memory
// behind a device pointer whose bytes are charged as graph memory instead.
cudaError_t allocate(void** ptr, size_t bytes, bool charged = true) {
  if (ptr == nullptr) return cudaErrorInvalidValue;
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  if (charged && !fits_on_device(bytes)) return cudaErrorMemoryAllocation;
  const size_t footprint = rounded_size(bytes) + kGuardBytes;
  char* const base = static_cast<char*>(std::aligned_alloc(kAllocationAlignment, kGuardBytes + footprint));
  if (base == nullptr) return cudaErrorMemoryAllocation;
  std::memset(base, kUnwrittenByte, kGuardBytes + footprint);
  void* p = base + kGuardBytes;
  set_usable(p, bytes, footprint);
  state().allocations.emplace(static_cast<const char*>(p), Allocation{bytes, footprint});
  if (charged) state().allocated_bytes += bytes;
  else state().uncharged.insert(p);
  *ptr = p;
  return cudaSuccess;
}

// Hands an allocation back to the host (and its bytes, if charged, to the device).
cudaError_t release(void* p) {
  if (p == nullptr) return cudaSuccess;
  auto it = state().allocations.find(static_cast<const char*>(p));
  if (it == state().allocations.end()) return cudaErrorInvalidValue;
  if (state().uncharged.erase(p) == 0) state().allocated_bytes -= it->second.bytes;
  char* const base = static_cast<char*>(p) - kGuardBytes;
#if defined(__SANITIZE_ADDRESS__)
  ASAN_UNPOISON_MEMORY_REGION(base, kGuardBytes + it->second.footprint);
#endif
  state().allocations.erase(it);
  std::free(base);
  return cudaSuccess;
}

// ---- the default pool (CUmemPoolHandle_st above) ----
cudaError_t pool_allocate(void** ptr, size_t bytes) {
  auto& pool = state().default_pool;
  if (ptr == nullptr) return cudaErrorInvalidValue;
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  size_t block = bytes;
  if (auto it = pool.cached.lower_bound(bytes); it != pool.cached.end()) {
    block = it->first;
    *ptr = it->second;
    pool.cached.erase(it);
    // Kernels and copies may use the bytes asked for, not the rest of a larger block.
    Allocation& allocation = state().allocations.at(static_cast<const char*>(*ptr));
    set_usable(*ptr, block, allocation.footprint);
    std::memset(*ptr, kUnwrittenByte, block);
    set_usable(*ptr, bytes, allocation.footprint);
    allocation.bytes = bytes;
  } else {
    if (const cudaError_t err = allocate(ptr, bytes); err != cudaSuccess) return err;
    pool.reserved += bytes;
    pool.reserved_high = std::max(pool.reserved_high, pool.reserved);
  }
  pool.live.emplace(*ptr, block);
  pool.used += block;
  pool.used_high = std::max(pool.used_high, pool.used);
  return cudaSuccess;
}

// A block of the pool back into it (kept reserved); false if p is not one of its live blocks.
bool pool_free(void* p) {
  auto& pool = state().default_pool;
  auto it = pool.live.find(p);
  if (it == pool.live.end()) return false;
  pool.used -= it->second;
  pool.cached.emplace(it->second, p);
  state().allocations.at(static_cast<const char*>(p)).bytes = it->second;  // the whole block again
  pool.live.erase(it);
  return true;
}

// Hands cached blocks back to the device, the largest first, while the pool reserves more than
// `keep` bytes and a block can go without leaving it under `keep`.
void pool_trim(uint64_t keep) {
  auto& pool = state().default_pool;
  for (auto it = pool.cached.end(); it != pool.cached.begin() && pool.reserved > keep;) {
    --it;
    if (pool.reserved - it->first < keep) continue;
    pool.reserved -= it->first;
    release(it->second);
    it = pool.cached.erase(it);
  }
}

// Whether a cudaMalloc that does not fit takes the default pool's cached blocks back first (as on
// an H200), unless $GPT2CC_EMU_MALLOC_RECLAIM=none (read once).
bool malloc_reclaims_pool() {
  static const bool reclaims = emu::env_choice("GPT2CC_EMU_MALLOC_RECLAIM", {"pool", "none"}) == 0;
  return reclaims;
}

// A stream, event or device synchronisation: the pool releases what it holds above its threshold.
void on_synchronize() {
  const auto& pool = state().default_pool;
  if (pool.reserved > pool.release_threshold) pool_trim(pool.release_threshold);
}

// Graph memory for a launch needing `bytes` (its graph's peak): reserved now if less is.
cudaError_t reserve_graph_memory(size_t bytes) {
  auto& st = state();
  if (bytes > st.graph_reserved) {
    const size_t more = bytes - st.graph_reserved;
    if (!fits_on_device(more)) return cudaErrorMemoryAllocation;
    st.allocated_bytes += more;
    st.graph_reserved = bytes;
    st.graph_reserved_high = std::max(st.graph_reserved_high, st.graph_reserved);
  }
  st.graph_used_high = std::max<uint64_t>(st.graph_used_high, bytes);
  return cudaSuccess;
}

// The thread's captures that forbid "potentially unsafe" calls (not relaxed; global mode ones of
// other threads too), invalidated by such a call.
bool unsafe_call_prohibited() {
  bool prohibited = false;
  for (cudaStream_t s : state().streams) {
    if (!s->capturing || s->capture_mode == cudaStreamCaptureModeRelaxed) continue;
    if (s->capture_thread == std::this_thread::get_id() || s->capture_mode == cudaStreamCaptureModeGlobal) {
      s->capture_invalidated = true;
      prohibited = true;
    }
  }
  return prohibited;
}

cudaError_t check_stream(cudaStream_t stream) {
  if (is_legacy(stream) || state().streams.count(stream) != 0) return cudaSuccess;
  return cudaErrorInvalidResourceHandle;
}

// A stream the host may wait on (synchronise, query): a valid one, not capturing; waiting on a
// capturing stream is illegal and invalidates its capture.
cudaError_t check_waitable(cudaStream_t stream) {
  if (const cudaError_t err = check_stream(stream); err != cudaSuccess) return err;
  if (!is_legacy(stream) && stream->capturing) {
    stream->capture_invalidated = true;
    return cudaErrorStreamCaptureUnsupported;
  }
  return cudaSuccess;
}

// Copies with the device side checked: each pointer CUDA takes as device memory must lie in one
// allocation; one taken as host memory must not be device memory.
cudaError_t check_copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) return cudaErrorInvalidValue;
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind == cudaMemcpyDefault)
    return (is_device_range(dst, bytes) || !touches_device_memory(dst, bytes)) &&
                   (is_device_range(src, bytes) || !touches_device_memory(src, bytes))
               ? cudaSuccess
               : cudaErrorInvalidValue;
  if (kind == cudaMemcpyHostToHost) {
    return touches_device_memory(dst, bytes) || touches_device_memory(src, bytes) ? cudaErrorInvalidValue
                                                                                   : cudaSuccess;
  }
  if (dst_device ? !is_device_range(dst, bytes) : touches_device_memory(dst, bytes)) return cudaErrorInvalidValue;
  if (src_device ? !is_device_range(src, bytes) : touches_device_memory(src, bytes)) return cudaErrorInvalidValue;
  return cudaSuccess;
}

}  // namespace

GraphAllocations::~GraphAllocations() {
  const Lock lock(state_mutex());
  for (void* p : pointers) release(p);
}

bool is_device_memory(const void* p, size_t bytes) {
  const Lock lock(state_mutex());
  return is_device_range(p, bytes);
}

cudaError_t record_error(cudaError_t err) {
  if (err != cudaSuccess) last_error = err;
  return err;
}

cudaError_t enqueue(cudaStream_t stream, std::function<void()> work) {
  const Lock lock(state_mutex());
  if (const cudaError_t err = check_stream(stream); err != cudaSuccess) return err;
  if (!is_legacy(stream) && stream->capturing) {
    if (stream->capture_invalidated) return cudaErrorStreamCaptureInvalidated;
    stream->captured.push_back(std::move(work));
    return cudaSuccess;
  }
  work();
  return cudaSuccess;
}

cudaError_t check_launch(const void* kernel, dim3 grid, dim3 block, size_t smem_bytes) {
  const Lock lock(state_mutex());
  if (const cudaError_t err = kernel_image_error(); err != cudaSuccess) return record_error(err);
  const unsigned long long threads = static_cast<unsigned long long>(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 || grid.x == 0 ||
      grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    return record_error(cudaErrorInvalidConfiguration);
  const size_t optin = gpu_profile().shared_optin;
  auto it = state().max_dynamic_shared.find(kernel);
  const size_t limit = kernel == nullptr                          ? optin
                       : it == state().max_dynamic_shared.end() ? kDefaultMaxDynamicShared
                                                                : std::min(it->second, optin);
  if (smem_bytes > limit) return record_error(cudaErrorInvalidValue);
  return cudaSuccess;
}

// The first byte of [from, to) that is not 0xFF, or `to`.
const char* first_written(const char* from, const char* to) {
  while (from < to && static_cast<unsigned char>(*from) == kUnwrittenByte) ++from;
  return from;
}

// Throws emu::Violation when a kernel wrote outside a device allocation: into the guard before it,
// or past its usable bytes (the rest of its rounding, the guard after it). The bytes are put back
// to 0xFF, so one fault is reported once. (Under AddressSanitizer they are poisoned, and a kernel
// touching them is reported at once.)
void check_allocation_bounds() {
#if !defined(__SANITIZE_ADDRESS__)
  for (const auto& [start, allocation] : state().allocations) {
    const size_t bytes = allocation.bytes;
    const char* const end = start + allocation.footprint;
    const char* const before = first_written(start - kGuardBytes, start);
    const char* const after = first_written(start + bytes, end);
    if (before == start && after == end) continue;
    std::memset(const_cast<char*>(start) - kGuardBytes, kUnwrittenByte, kGuardBytes);
    std::memset(const_cast<char*>(start) + bytes, kUnwrittenByte, static_cast<size_t>(end - start) - bytes);
    const std::string where = before != start ? std::to_string(start - before) + " bytes before its start"
                                              : "at byte " + std::to_string(after - start);
    throw emu::Violation("a kernel wrote outside a " + std::to_string(bytes) + "-byte device allocation (" + where +
                         "): on a GPU, another buffer's memory or an illegal address");
  }
#endif
}

void run_grid(const DynamicShared& shared, dim3 grid, dim3 block, size_t smem_bytes,
              const std::function<void()>& body) {
  const Lock lock(state_mutex());
  ++state().grids_run;
  state().recent_grids.push_back({grid, block, smem_bytes});
  if (state().recent_grids.size() > kRecentGrids) state().recent_grids.pop_front();
  // The emulator fills everything past smem_bytes with a canary before each block and checks it
  // after: registering only kSharedCanaryBytes more than the launch asks keeps that per-block cost
  // small (model-size grids have thousands of blocks) while still catching stores just past the end.
  void* (*instance)() = shared.instance != nullptr ? shared.instance : fallback_shared_instance;
  const size_t capacity = shared.instance != nullptr ? shared.capacity : sizeof(fallback_shared);
  emu::set_shared_memory(instance, std::min(capacity, smem_bytes + kSharedCanaryBytes));
  // The instructions the kernel may use: those of the architecture its image is compiled for
  // (check_launch already refused a launch without one).
  emu::set_code_architecture(kernel_image() ? kernel_image()->ptx_version : 0);
  try {
    emu::launch(grid, block, smem_bytes, body);
  } catch (...) {
    try {
      emu::cp_async_check_drained();
    } catch (const emu::Violation&) {  // the launch's own error is the one to report
    }
    throw;
  }
  emu::cp_async_check_drained();
  check_allocation_bounds();
}

size_t grids_run() {
  const Lock lock(state_mutex());
  return state().grids_run;
}

std::vector<GridRun> grids_run_since(size_t since) {
  const Lock lock(state_mutex());
  const std::deque<GridRun>& recent = state().recent_grids;
  const size_t first_kept = state().grids_run - recent.size();
  const size_t skip = since > first_kept ? std::min(since - first_kept, recent.size()) : 0;
  return {recent.begin() + static_cast<std::ptrdiff_t>(skip), recent.end()};
}

}  // namespace gpt2cc::hostcuda

using gpt2cc::hostcuda::enqueue;
using gpt2cc::hostcuda::record_error;
namespace hc = gpt2cc::hostcuda;

namespace {
using Lock = std::lock_guard<std::recursive_mutex>;
std::recursive_mutex& api_mutex() { return hc::state_mutex(); }
}  // namespace

extern "C" {

// ---- errors ----
const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
#define GPT2CC_ERROR_NAME(e) \
  case e: return #e;
    GPT2CC_ERROR_NAME(cudaSuccess)
    GPT2CC_ERROR_NAME(cudaErrorInvalidValue)
    GPT2CC_ERROR_NAME(cudaErrorMemoryAllocation)
    GPT2CC_ERROR_NAME(cudaErrorInvalidConfiguration)
    GPT2CC_ERROR_NAME(cudaErrorInvalidDeviceFunction)
    GPT2CC_ERROR_NAME(cudaErrorNoKernelImageForDevice)
    GPT2CC_ERROR_NAME(cudaErrorUnsupportedPtxVersion)
    GPT2CC_ERROR_NAME(cudaErrorInvalidDevice)
    GPT2CC_ERROR_NAME(cudaErrorInvalidResourceHandle)
    GPT2CC_ERROR_NAME(cudaErrorNoDevice)
    GPT2CC_ERROR_NAME(cudaErrorNotReady)
    GPT2CC_ERROR_NAME(cudaErrorNotSupported)
    GPT2CC_ERROR_NAME(cudaErrorIllegalState)
    GPT2CC_ERROR_NAME(cudaErrorLaunchFailure)
    GPT2CC_ERROR_NAME(cudaErrorStreamCaptureUnsupported)
    GPT2CC_ERROR_NAME(cudaErrorStreamCaptureInvalidated)
    GPT2CC_ERROR_NAME(cudaErrorStreamCaptureUnmatched)
    GPT2CC_ERROR_NAME(cudaErrorStreamCaptureWrongThread)
#undef GPT2CC_ERROR_NAME
    default: return "cudaErrorUnknown";
  }
}

// The strings of the CUDA Runtime API reference (cudaError enum).
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoKernelImageForDevice: return "no kernel image is available for execution on the device";
    case cudaErrorUnsupportedPtxVersion: return "the provided PTX was compiled with an unsupported toolchain.";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureUnmatched: return "capture was not initiated in this stream";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
    default: return "unknown error";
  }
}

cudaError_t cudaGetLastError(void) {
  const cudaError_t err = hc::last_error;
  hc::last_error = cudaSuccess;
  return err;
}

cudaError_t cudaPeekAtLastError(void) { return hc::last_error; }

// ---- device ----
cudaError_t cudaGetDeviceCount(int* count) {
  if (count == nullptr) return record_error(cudaErrorInvalidValue);
  *count = 1;
  while (hc::device_exists(*count)) *count += 1;
  return cudaSuccess;
}

// The version of the toolkit whose headers this was compiled against, for both (the emulated
// device needs no driver: it supports what the runtime does), except where the driver is to be
// older than the PTX (GPT2CC_EMU_DRIVER_PTX=too-new): one minor version less.
cudaError_t cudaRuntimeGetVersion(int* runtimeVersion) {
  if (runtimeVersion == nullptr) return record_error(cudaErrorInvalidValue);
  *runtimeVersion = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* driverVersion) {
  if (driverVersion == nullptr) return record_error(cudaErrorInvalidValue);
  const int runtime = CUDART_VERSION;                                           // 13000: 13.0
  const int older = runtime % 1000 >= 10 ? runtime - 10 : runtime - 1000 + 90;  // 13.0 -> 12.9
  *driverVersion = hc::driver_compiles_ptx() ? runtime : older;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  if (device == nullptr) return record_error(cudaErrorInvalidValue);
  *device = hc::current_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  if (!hc::device_exists(device)) return record_error(cudaErrorInvalidDevice);
  hc::current_device = device;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (prop == nullptr) return record_error(cudaErrorInvalidValue);
  if (!hc::device_exists(device)) return record_error(cudaErrorInvalidDevice);
  *prop = hc::device_properties();
  // Each emulated device its own UUID (the copies share the one device's state, but a rank that
  // takes device i holds "GPU i"): "gpt2cc-emu", then the device's number.
  const char name[] = "gpt2cc-emu";
  std::memcpy(prop->uuid.bytes, name, sizeof name - 1);
  prop->uuid.bytes[15] = static_cast<char>(device);
  return cudaSuccess;
}

// The attributes the project reads, from the same properties; any other is refused (the emulated
// device does not know it), where the real one would answer.
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (value == nullptr) return record_error(cudaErrorInvalidValue);
  if (!hc::device_exists(device)) return record_error(cudaErrorInvalidDevice);
  const cudaDeviceProp prop = hc::device_properties();
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = prop.multiProcessorCount; return cudaSuccess;
    case cudaDevAttrL2CacheSize: *value = prop.l2CacheSize; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(prop.sharedMemPerBlock); return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(prop.sharedMemPerBlockOptin); return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor:
      *value = static_cast<int>(prop.sharedMemPerMultiprocessor);
      return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = prop.maxThreadsPerBlock; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = prop.maxThreadsPerMultiProcessor; return cudaSuccess;
    case cudaDevAttrMaxBlocksPerMultiprocessor: *value = prop.maxBlocksPerMultiProcessor; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *value = prop.major; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = prop.minor; return cudaSuccess;
    default: return record_error(cudaErrorInvalidValue);
  }
}

cudaError_t cudaDeviceSynchronize(void) {
  const Lock lock(api_mutex());
  if (hc::unsafe_call_prohibited()) return record_error(cudaErrorStreamCaptureUnsupported);
  hc::on_synchronize();
  return cudaSuccess;
}

// A kernel without an image for the device cannot be set (the call fails as its launches do); the
// dynamic shared memory asked for may not exceed the profile's opt-in limit (static shared memory,
// unknown here, counted as 0).
cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  const Lock lock(api_mutex());
  if (func == nullptr) return record_error(cudaErrorInvalidDeviceFunction);
  if (const cudaError_t err = hc::kernel_image_error(); err != cudaSuccess) return record_error(err);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || static_cast<size_t>(value) > hc::gpu_profile().shared_optin)
      return record_error(cudaErrorInvalidValue);
    hc::state().max_dynamic_shared[func] = static_cast<size_t>(value);
    return cudaSuccess;
  }
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) {
    return value >= -1 && value <= 100 ? cudaSuccess : record_error(cudaErrorInvalidValue);
  }
  return record_error(cudaErrorNotSupported);
}

// Filled: maxThreadsPerBlock (the device's 1024: __launch_bounds__ is not seen here),
// maxDynamicSharedSizeBytes (48 KiB, or what cudaFuncSetAttribute set), binaryVersion and
// ptxVersion (the image the device runs: kernel_image). Everything else is 0 (sharedSizeBytes,
// numRegs, ...: what only a compiler knows). No image: cudaErrorNoKernelImageForDevice.
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, const void* func) {
  const Lock lock(api_mutex());
  if (attr == nullptr) return record_error(cudaErrorInvalidValue);
  if (func == nullptr) return record_error(cudaErrorInvalidDeviceFunction);
  if (const cudaError_t err = hc::kernel_image_error(); err != cudaSuccess) return record_error(err);
  const auto& image = hc::kernel_image();
  *attr = cudaFuncAttributes{};
  attr->maxThreadsPerBlock = hc::device_properties().maxThreadsPerBlock;
  const auto& set = hc::state().max_dynamic_shared;
  const auto it = set.find(func);
  attr->maxDynamicSharedSizeBytes = static_cast<int>(it == set.end() ? hc::kDefaultMaxDynamicShared : it->second);
  attr->binaryVersion = image->binary_version;
  attr->ptxVersion = image->ptx_version;
  return cudaSuccess;
}

// ---- memory ----
cudaError_t cudaMalloc(void** devPtr, size_t size) {
  const Lock lock(api_mutex());
  if (hc::unsafe_call_prohibited()) return record_error(cudaErrorStreamCaptureUnsupported);
  cudaError_t err = hc::allocate(devPtr, size);
  if (err == cudaErrorMemoryAllocation && hc::malloc_reclaims_pool() && !hc::state().default_pool.cached.empty()) {
    hc::pool_trim(0);
    err = hc::allocate(devPtr, size);
  }
  return record_error(err);
}

// Memory of the default pool goes back to the pool (cudaFree synchronises first, which also
// applies the pool's release threshold).
cudaError_t cudaFree(void* devPtr) {
  const Lock lock(api_mutex());
  if (hc::unsafe_call_prohibited()) return record_error(cudaErrorStreamCaptureUnsupported);
  if (hc::pool_free(devPtr)) {
    hc::on_synchronize();
    return cudaSuccess;
  }
  return record_error(hc::release(devPtr));
}

cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  const Lock lock(api_mutex());
  if (free == nullptr || total == nullptr) return record_error(cudaErrorInvalidValue);
  *total = hc::device_memory_bytes();
  *free = hc::device_memory_bytes() - hc::state().allocated_bytes;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* memPool, int device) {
  if (memPool == nullptr) return record_error(cudaErrorInvalidValue);
  if (!hc::device_exists(device)) return record_error(cudaErrorInvalidDevice);
  *memPool = &hc::state().default_pool;
  return cudaSuccess;
}

// Settable: the release threshold, and the two high-water marks, to 0 only (the CUDA Runtime API
// reference: "It is illegal to set this attribute to a non-zero value"): they restart at the
// current value.
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t memPool, cudaMemPoolAttr attr, void* value) {
  const Lock lock(api_mutex());
  if (memPool != &hc::state().default_pool || value == nullptr) return record_error(cudaErrorInvalidValue);
  const uint64_t v = *static_cast<uint64_t*>(value);
  switch (attr) {
    case cudaMemPoolAttrReleaseThreshold: memPool->release_threshold = v; return cudaSuccess;
    case cudaMemPoolAttrUsedMemHigh:
      if (v != 0) return record_error(cudaErrorInvalidValue);
      memPool->used_high = memPool->used;
      return cudaSuccess;
    case cudaMemPoolAttrReservedMemHigh:
      if (v != 0) return record_error(cudaErrorInvalidValue);
      memPool->reserved_high = memPool->reserved;
      return cudaSuccess;
    default: return record_error(cudaErrorNotSupported);
  }
}

cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t memPool, cudaMemPoolAttr attr, void* value) {
  const Lock lock(api_mutex());
  if (memPool != &hc::state().default_pool || value == nullptr) return record_error(cudaErrorInvalidValue);
  uint64_t& out = *static_cast<uint64_t*>(value);
  switch (attr) {
    case cudaMemPoolAttrReleaseThreshold: out = memPool->release_threshold; return cudaSuccess;
    case cudaMemPoolAttrUsedMemCurrent: out = memPool->used; return cudaSuccess;
    case cudaMemPoolAttrReservedMemCurrent: out = memPool->reserved; return cudaSuccess;
    case cudaMemPoolAttrUsedMemHigh: out = memPool->used_high; return cudaSuccess;
    case cudaMemPoolAttrReservedMemHigh: out = memPool->reserved_high; return cudaSuccess;
    default: return record_error(cudaErrorNotSupported);
  }
}

cudaError_t cudaMemPoolTrimTo(cudaMemPool_t memPool, size_t minBytesToKeep) {
  const Lock lock(api_mutex());
  if (memPool != &hc::state().default_pool) return record_error(cudaErrorInvalidValue);
  hc::pool_trim(minBytesToKeep);
  return cudaSuccess;
}

cudaError_t cudaDeviceGetGraphMemAttribute(int device, cudaGraphMemAttributeType attr, void* value) {
  const Lock lock(api_mutex());
  if (!hc::device_exists(device)) return record_error(cudaErrorInvalidDevice);
  if (value == nullptr) return record_error(cudaErrorInvalidValue);
  uint64_t& out = *static_cast<uint64_t*>(value);
  const auto& st = hc::state();
  switch (attr) {
    case cudaGraphMemAttrUsedMemCurrent: out = 0; return cudaSuccess;  // between launches (State)
    case cudaGraphMemAttrUsedMemHigh: out = st.graph_used_high; return cudaSuccess;
    case cudaGraphMemAttrReservedMemCurrent: out = st.graph_reserved; return cudaSuccess;
    case cudaGraphMemAttrReservedMemHigh: out = st.graph_reserved_high; return cudaSuccess;
    default: return record_error(cudaErrorInvalidValue);
  }
}

// The high-water marks only, and to 0 only (as the pool's): they restart at the current value.
cudaError_t cudaDeviceSetGraphMemAttribute(int device, cudaGraphMemAttributeType attr, void* value) {
  const Lock lock(api_mutex());
  if (!hc::device_exists(device)) return record_error(cudaErrorInvalidDevice);
  if (value == nullptr || *static_cast<uint64_t*>(value) != 0) return record_error(cudaErrorInvalidValue);
  auto& st = hc::state();
  if (attr == cudaGraphMemAttrUsedMemHigh) st.graph_used_high = 0;
  else if (attr == cudaGraphMemAttrReservedMemHigh) st.graph_reserved_high = st.graph_reserved;
  else return record_error(cudaErrorInvalidValue);
  return cudaSuccess;
}

// Nothing runs in the background here: all of the reserved graph memory goes back.
cudaError_t cudaDeviceGraphMemTrim(int device) {
  const Lock lock(api_mutex());
  if (!hc::device_exists(device)) return record_error(cudaErrorInvalidDevice);
  auto& st = hc::state();
  st.allocated_bytes -= st.graph_reserved;
  st.graph_reserved = 0;
  return cudaSuccess;
}

// Stream-ordered allocation. Outside a capture the stream has already reached this point (it
// runs at once), so the memory is simply allocated. In a capture it becomes the graph's.
cudaError_t cudaMallocAsync(void** devPtr, size_t size, cudaStream_t stream) {
  const Lock lock(api_mutex());
  if (const cudaError_t err = hc::check_stream(stream); err != cudaSuccess) return record_error(err);
  if (hc::is_legacy(stream) || !stream->capturing) return record_error(hc::pool_allocate(devPtr, size));
  if (stream->capture_invalidated) return record_error(cudaErrorStreamCaptureInvalidated);
  if (const cudaError_t err = hc::allocate(devPtr, size, /*charged=*/false); err != cudaSuccess)
    return record_error(err);
  void* p = *devPtr;
  auto& graph = *stream->captured_allocations;
  stream->captured_live_bytes += size;
  graph.peak_bytes = std::max(graph.peak_bytes, stream->captured_live_bytes);
  graph.pointers.push_back(p);
  stream->captured.push_back([p, size] { std::memset(p, hc::kUnwrittenByte, size); });
  return cudaSuccess;
}

cudaError_t cudaFreeAsync(void* devPtr, cudaStream_t stream) {
  const Lock lock(api_mutex());
  if (const cudaError_t err = hc::check_stream(stream); err != cudaSuccess) return record_error(err);
  if (hc::is_legacy(stream) || !stream->capturing) {
    if (hc::pool_free(devPtr)) return cudaSuccess;
    return record_error(hc::release(devPtr));
  }
  if (stream->capture_invalidated) return record_error(cudaErrorStreamCaptureInvalidated);
  auto& own = stream->captured_allocations->pointers;
  // A graph here may free only what it allocated: the memory stays the graph's until it is destroyed.
  if (std::find(own.begin(), own.end(), devPtr) == own.end()) {
    stream->capture_invalidated = true;
    return record_error(cudaErrorNotSupported);
  }
  stream->captured_live_bytes -= hc::state().allocations.find(static_cast<const char*>(devPtr))->second.bytes;
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
  const Lock lock(api_mutex());
  if (const cudaError_t err = hc::check_copy(dst, src, count, kind); err != cudaSuccess) return record_error(err);
  return record_error(enqueue(stream, [dst, src, count] {
    if (count > 0) std::memmove(dst, src, count);
  }));
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  const Lock lock(api_mutex());
  if (hc::unsafe_call_prohibited()) return record_error(cudaErrorStreamCaptureUnsupported);
  return cudaMemcpyAsync(dst, src, count, kind, nullptr);
}

cudaError_t cudaMemsetAsync(void* devPtr, int value, size_t count, cudaStream_t stream) {
  const Lock lock(api_mutex());
  if (count == 0) return cudaSuccess;
  if (!hc::is_device_range(devPtr, count)) return record_error(cudaErrorInvalidValue);
  return record_error(enqueue(stream, [devPtr, value, count] { std::memset(devPtr, value, count); }));
}

cudaError_t cudaMemset(void* devPtr, int value, size_t count) {
  const Lock lock(api_mutex());
  if (hc::unsafe_call_prohibited()) return record_error(cudaErrorStreamCaptureUnsupported);
  return cudaMemsetAsync(devPtr, value, count, nullptr);
}

// ---- streams ----
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* pStream, unsigned int flags) {
  const Lock lock(api_mutex());
  if (pStream == nullptr || (flags & ~cudaStreamNonBlocking) != 0) return record_error(cudaErrorInvalidValue);
  auto* stream = new CUstream_st;
  stream->flags = flags;
  hc::state().streams.insert(stream);
  *pStream = stream;
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* pStream) { return cudaStreamCreateWithFlags(pStream, cudaStreamDefault); }

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  const Lock lock(api_mutex());
  if (hc::is_legacy(stream) || hc::state().streams.count(stream) == 0) return record_error(cudaErrorInvalidResourceHandle);
  if (stream->capturing) return record_error(cudaErrorStreamCaptureUnsupported);
  hc::state().streams.erase(stream);
  delete stream;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  const Lock lock(api_mutex());
  if (const cudaError_t err = hc::check_waitable(stream); err != cudaSuccess) return record_error(err);
  if (hc::unsafe_call_prohibited()) return record_error(cudaErrorStreamCaptureUnsupported);
  hc::on_synchronize();
  return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t stream) {
  const Lock lock(api_mutex());
  if (const cudaError_t err = hc::check_waitable(stream); err != cudaSuccess) return record_error(err);
  return cudaSuccess;
}

// ---- stream capture and graphs ----
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  const Lock lock(api_mutex());
  // The legacy stream cannot be captured (Runtime API reference, cudaStreamBeginCapture).
  if (hc::is_legacy(stream)) return record_error(cudaErrorStreamCaptureUnsupported);
  if (hc::state().streams.count(stream) == 0) return record_error(cudaErrorInvalidResourceHandle);
  if (stream->capturing) return record_error(cudaErrorIllegalState);
  stream->capturing = true;
  stream->capture_invalidated = false;
  stream->capture_mode = mode;
  stream->capture_thread = std::this_thread::get_id();
  stream->capture_id = hc::state().next_capture_id++;
  stream->captured.clear();
  stream->captured_allocations = std::make_shared<hc::GraphAllocations>();
  stream->captured_live_bytes = 0;
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* pGraph) {
  const Lock lock(api_mutex());
  if (pGraph == nullptr) return record_error(cudaErrorInvalidValue);
  *pGraph = nullptr;
  if (hc::is_legacy(stream) || hc::state().streams.count(stream) == 0) return record_error(cudaErrorInvalidResourceHandle);
  if (!stream->capturing) return record_error(cudaErrorIllegalState);
  if (stream->capture_mode == cudaStreamCaptureModeThreadLocal && stream->capture_thread != std::this_thread::get_id())
    return record_error(cudaErrorStreamCaptureWrongThread);
  stream->capturing = false;
  auto allocations = std::move(stream->captured_allocations);
  std::vector<std::function<void()>> steps = std::move(stream->captured);
  stream->captured.clear();
  if (stream->capture_invalidated) {
    stream->capture_invalidated = false;
    return record_error(cudaErrorStreamCaptureInvalidated);
  }
  *pGraph = new CUgraph_st{std::move(steps), std::move(allocations)};
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* pCaptureStatus) {
  const Lock lock(api_mutex());
  if (pCaptureStatus == nullptr) return record_error(cudaErrorInvalidValue);
  if (const cudaError_t err = hc::check_stream(stream); err != cudaSuccess) return record_error(err);
  if (hc::is_legacy(stream) || !stream->capturing) *pCaptureStatus = cudaStreamCaptureStatusNone;
  else *pCaptureStatus = stream->capture_invalidated ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* pGraphExec, cudaGraph_t graph, unsigned long long flags) {
  const Lock lock(api_mutex());
  if (pGraphExec == nullptr || graph == nullptr || flags != 0) return record_error(cudaErrorInvalidValue);
  *pGraphExec = new CUgraphExec_st{graph->steps, graph->allocations};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t graphExec, cudaStream_t stream) {
  const Lock lock(api_mutex());
  if (graphExec == nullptr) return record_error(cudaErrorInvalidValue);
  if (const cudaError_t err = hc::check_stream(stream); err != cudaSuccess) return record_error(err);
  if (const cudaError_t err = hc::reserve_graph_memory(graphExec->allocations->peak_bytes); err != cudaSuccess)
    return record_error(err);
  return record_error(enqueue(stream, [steps = graphExec->steps, allocations = graphExec->allocations] {
    for (const auto& step : steps) step();
  }));
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  const Lock lock(api_mutex());
  if (graph == nullptr) return record_error(cudaErrorInvalidValue);
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t graphExec) {
  const Lock lock(api_mutex());
  if (graphExec == nullptr) return record_error(cudaErrorInvalidValue);
  delete graphExec;
  return cudaSuccess;
}

// ---- events: host timestamps taken when the stream reaches the record ----
cudaError_t cudaEventCreate(cudaEvent_t* event) {
  const Lock lock(api_mutex());
  if (event == nullptr) return record_error(cudaErrorInvalidValue);
  *event = new CUevent_st;
  hc::state().events.insert(*event);
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) { return cudaEventCreate(event); }

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  const Lock lock(api_mutex());
  if (hc::state().events.erase(event) == 0) return record_error(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  const Lock lock(api_mutex());
  if (hc::state().events.count(event) == 0) return record_error(cudaErrorInvalidResourceHandle);
  return record_error(enqueue(stream, [event] {
    event->time = std::chrono::steady_clock::now();
    event->recorded = true;
  }));
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  const Lock lock(api_mutex());
  if (hc::state().events.count(event) == 0) return record_error(cudaErrorInvalidResourceHandle);
  if (hc::unsafe_call_prohibited()) return record_error(cudaErrorStreamCaptureUnsupported);
  hc::on_synchronize();
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  const Lock lock(api_mutex());
  if (ms == nullptr) return record_error(cudaErrorInvalidValue);
  if (hc::state().events.count(start) == 0 || hc::state().events.count(end) == 0)
    return record_error(cudaErrorInvalidResourceHandle);
  if (!start->recorded || !end->recorded) return record_error(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->time - start->time).count();
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
  const Lock lock(api_mutex());
  if (hc::state().events.count(event) == 0) return record_error(cudaErrorInvalidResourceHandle);
  return record_error(hc::check_stream(stream));
}

}  // extern "C"
