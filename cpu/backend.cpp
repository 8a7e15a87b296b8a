// The CPU backend (cpu/backend.hpp): host memory (64-byte aligned, zero-filled) and every layer
// op forwarded to the gpt2cc::cpu:: function of the same name and argument order, or to its
// faster variant (cpu/backend.hpp lists them).
// fp32 throughout (its bf16 form: cpu/backend_bf16.cpp); OpenMP threads as requested (0 = the
// OpenMP default).
#include "cpu/backend.hpp"

#include <omp.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>

#include "core/check.hpp"
#include "cpu/adamw.hpp"
#include "cpu/attention.hpp"
#include "cpu/crossentropy.hpp"
#include "cpu/dropout.hpp"
#include "cpu/encoder.hpp"
#include "cpu/gelu.hpp"
#include "cpu/layernorm.hpp"
#include "cpu/matmul.hpp"
#include "cpu/residual.hpp"

namespace gpt2cc {

namespace cpu {

// 64 bytes: one cache line, and a whole AVX-512 vector, so no vector load straddles two lines.
constexpr size_t kAlignment = 64;
// A huge page of x86-64 and of most arm64 Linux kernels (allocate()).
constexpr size_t kHugePage = size_t{2} << 20;

namespace {

constexpr size_t round_up(size_t n, size_t multiple) { return (n + multiple - 1) / multiple * multiple; }

// The memory this process can still fill: MemAvailable of /proc/meminfo, less where a cgroup (v2)
// limit leaves less; nullopt where neither can be read (not Linux).
std::optional<size_t> available_memory_bytes() {
  std::optional<size_t> available;
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    size_t kib = 0;
    meminfo >> kib;
    if (key == "MemAvailable:") {
      available = kib * 1024;
      break;
    }
    meminfo.ignore(256, '\n');
  }
  std::ifstream max_file("/sys/fs/cgroup/memory.max"), current_file("/sys/fs/cgroup/memory.current");
  size_t max = 0, current = 0;
  if (max_file >> max && current_file >> current) {  // "max" (no limit) does not read as a number
    const size_t left = max > current ? max - current : 0;
    available = available ? std::min(*available, left) : left;
  }
  return available;
}

// Allocations of this size or more are set against available_memory_bytes before they are filled:
// Linux grants a malloc beyond the memory it has, and the zero fill would then wake the OOM killer
// (exit 137, no message) instead of the error below.
constexpr size_t kCheckedAllocation = size_t(64) << 20;

}  // namespace

CpuBackend::CpuBackend(int threads) {
  check_thread_count(threads, "cpu backend: threads");
  if (threads > 0) omp_set_num_threads(threads);
  threads_ = omp_get_max_threads();
  if (threads == 0) check_environment_thread_count(threads_);
}

std::string CpuBackend::describe() const {
  return format("cpu {} ({} thread{})", dtype_name(dtype()), threads_, threads_ == 1 ? "" : "s");
}

void* CpuBackend::allocate(size_t bytes) {
  // aligned_alloc wants a size that is a multiple of the alignment (and > 0 for a usable pointer).
  size_t rounded = round_up(bytes, kAlignment);
  if (rounded == 0) rounded = kAlignment;
  const auto out_of_memory = [&](const std::string& why) {
    return OutOfMemoryError(format("cpu backend: out of memory allocating {} bytes ({} MiB){}; try a smaller batch "
                                   "size or sequence length, or a smaller model",
                                   bytes, bytes >> 20, why));
  };
  if (rounded >= kCheckedAllocation) {
    const std::optional<size_t> available = available_memory_bytes();
    if (available && rounded > *available)
      throw out_of_memory(format(": {} MiB of memory are available", *available >> 20));
  }
  // From 4 MiB up, whole 2 MiB pages, asked to be huge pages (Linux's transparent huge pages,
  // which distributions commonly grant on madvise only). gpt2's 2 GB of weights, gradients and
  // moments are otherwise half a million 4 KiB pages, a TLB miss every 4 KiB of every pass over
  // them: with huge pages the training steps ran 1.06-1.26x faster, gpt2's decoding 1.45x at one
  // thread (benchmarks/RESULTS.md, "CPU memory"). At most 2 MiB more memory per such allocation.
  const bool huge = rounded >= 2 * kHugePage;
  if (huge) rounded = round_up(rounded, kHugePage);
  void* ptr = std::aligned_alloc(huge ? kHugePage : kAlignment, rounded);
  if (!ptr) throw out_of_memory("");
#if defined(MADV_HUGEPAGE)
  // Advice only: where the kernel has no transparent huge pages this fails and changes nothing.
  if (huge) static_cast<void>(madvise(ptr, rounded, MADV_HUGEPAGE));
#endif
  std::memset(ptr, 0, rounded);
  return ptr;
}

void CpuBackend::release(void* ptr) noexcept { std::free(ptr); }
void CpuBackend::upload(void* dst, const void* host_src, size_t bytes) { std::memcpy(dst, host_src, bytes); }
void CpuBackend::download(void* host_dst, const void* src, size_t bytes) { std::memcpy(host_dst, src, bytes); }
void CpuBackend::copy(void* dst, const void* src, size_t bytes) { std::memmove(dst, src, bytes); }

namespace {
// Zeroes [begin, end) with streaming stores where the CPU has them: they write whole lines
// without reading them into the cache first, as memset's stores do (a store to a line not in
// the cache reads it from memory before overwriting it). Half the traffic: over gpt2's 0.5 GB of
// gradients 29 ms against memset's 54 at one thread (bench_cpu_layers), 14 against 27 at two. The
// lines are not left in the cache, which only a buffer small enough to stay there would miss.
void zero_streaming(char* begin, char* end) {
#if defined(__SSE2__)
  constexpr size_t kVector = sizeof(__m128i);
  char* const first = std::min(end, reinterpret_cast<char*>(round_up(reinterpret_cast<uintptr_t>(begin), kVector)));
  std::memset(begin, 0, size_t(first - begin));
  char* at = first;
  const __m128i zeros = _mm_setzero_si128();
  for (; at + kVector <= end; at += kVector) _mm_stream_si128(reinterpret_cast<__m128i*>(at), zeros);
  std::memset(at, 0, size_t(end - at));
  _mm_sfence();  // the streamed stores ordered before whatever reads the buffer next
#else
  std::memset(begin, 0, size_t(end - begin));
#endif
}
}  // namespace

// From 1 MiB up every thread zeroes a contiguous part of whole cache lines (one thread's memset
// writes at about half the rate two reach here), and from 16 MiB up with streaming stores (below
// that, the lines memset leaves in the cache are worth keeping for what reads the buffer next).
// bench_cpu_layers' zero_grad row: the gradients are zeroed before every step.
void CpuBackend::zero(void* ptr, size_t bytes) {
  constexpr size_t kParallelFrom = size_t{1} << 20, kStreamFrom = size_t{16} << 20;
  char* const bytes_at = static_cast<char*>(ptr);
  const auto zero_part = [&](size_t begin, size_t end) {
    if (bytes >= kStreamFrom) {
      zero_streaming(bytes_at + begin, bytes_at + end);
    } else {
      std::memset(bytes_at + begin, 0, end - begin);
    }
  };
  if (bytes < kParallelFrom || threads_ == 1) {
    zero_part(0, bytes);
    return;
  }
#pragma omp parallel
  {
    const size_t threads = omp_get_num_threads(), thread = omp_get_thread_num();
    const size_t part = round_up((bytes + threads - 1) / threads, kAlignment);
    const size_t begin = std::min(bytes, thread * part), end = std::min(bytes, begin + part);
    zero_part(begin, end);
  }
}

namespace {
// CpuBackend computes in fp32: every compute-dtype tensor is a float array (CpuBf16Backend widens
// its bf16 tensors before it calls these ops).
float* f32(TensorPtr p) {
  ENSURE(!p || p.dtype == DType::fp32, "cpu backend: got a {} tensor where an fp32 one was due",
         dtype_name(p.dtype));
  return static_cast<float*>(p.data);
}
const float* f32(ConstTensorPtr p) {
  ENSURE(!p || p.dtype == DType::fp32, "cpu backend: got a {} tensor where an fp32 one was due",
         dtype_name(p.dtype));
  return static_cast<const float*>(p.data);
}
}  // namespace

void CpuBackend::convert_from_float(TensorPtr dst, const float* src, size_t N) {
  std::memmove(f32(dst), src, N * sizeof(float));
}
void CpuBackend::convert_to_float(float* dst, ConstTensorPtr src, size_t N) {
  std::memmove(dst, f32(src), N * sizeof(float));
}

void CpuBackend::encoder_forward(TensorPtr out, const int* inp, ConstTensorPtr wte, ConstTensorPtr wpe, int B, int T,
                                 int C) {
  cpu::encoder_forward(f32(out), inp, f32(wte), f32(wpe), B, T, C);
}
void CpuBackend::encoder_backward(TensorPtr dwte, TensorPtr dwpe, ConstTensorPtr dout, const int* inp, int B, int T,
                                  int C) {
  cpu::encoder_backward(f32(dwte), f32(dwpe), f32(dout), inp, B, T, C);
}

void CpuBackend::layernorm_forward(TensorPtr out, float* mean, float* rstd, ConstTensorPtr inp, ConstTensorPtr weight,
                                   ConstTensorPtr bias, int B, int T, int C) {
  cpu::layernorm_forward_vectorized(f32(out), mean, rstd, f32(inp), f32(weight), f32(bias), B, T, C);
}
void CpuBackend::layernorm_backward(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout,
                                    const float* mean, const float* rstd, ConstTensorPtr inp, ConstTensorPtr weight,
                                    int B, int T, int C) {
  cpu::layernorm_backward_vectorized(f32(dinp), f32(dweight), f32(dbias), f32(dout), mean, rstd, f32(inp),
                                     f32(weight), B, T, C);
}

void CpuBackend::matmul_forward(TensorPtr out, ConstTensorPtr inp, ConstTensorPtr weight, ConstTensorPtr bias, int B,
                                int T, int C, int OC) {
  cpu::matmul_forward_blocked(f32(out), f32(inp), f32(weight), f32(bias), B, T, C, OC);
}
void CpuBackend::matmul_backward(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout,
                                 ConstTensorPtr inp, ConstTensorPtr weight, int B, int T, int C, int OC) {
  cpu::matmul_backward_blocked(f32(dinp), f32(dweight), f32(dbias), f32(dout), f32(inp), f32(weight), B, T, C, OC);
}

// The blocked attention saves each row's log-sum-exp (B, NH, T), with or without dropout.
void CpuBackend::attention_forward(TensorPtr out, float* saved, ConstTensorPtr qkv, int B, int T, int C, int NH,
                                   const DropoutParams& dropout) {
  cpu::attention_forward_blocked(f32(out), saved, f32(qkv), B, T, C, NH, dropout);
}
// The backward takes the forward's output for each row's dout . out (cpu/attention.hpp).
void CpuBackend::attention_backward(TensorPtr dqkv, ConstTensorPtr dout, const float* saved, ConstTensorPtr qkv,
                                    ConstTensorPtr out, int B, int T, int C, int NH, const DropoutParams& dropout) {
  cpu::attention_backward_blocked(f32(dqkv), f32(dout), saved, f32(qkv), f32(out), B, T, C, NH, dropout);
}
void CpuBackend::attention_decode(TensorPtr out, TensorPtr kcache, TensorPtr vcache, ConstTensorPtr qkv, int B,
                                  int pos, int maxT, int C, int NH) {
  cpu::attention_decode_vectorized(f32(out), f32(kcache), f32(vcache), f32(qkv), B, pos, maxT, C, NH);
}
void CpuBackend::kv_cache_store(TensorPtr kcache, TensorPtr vcache, ConstTensorPtr qkv, int B, int T, int maxT,
                                int C) {
  cpu::kv_cache_store(f32(kcache), f32(vcache), f32(qkv), B, T, maxT, C);
}

void CpuBackend::gelu_forward(TensorPtr out, ConstTensorPtr inp, size_t N) {
  cpu::gelu_forward_vectorized(f32(out), f32(inp), N);
}
void CpuBackend::gelu_backward(TensorPtr dinp, ConstTensorPtr dout, ConstTensorPtr inp, size_t N) {
  cpu::gelu_backward_vectorized(f32(dinp), f32(dout), f32(inp), N);
}

void CpuBackend::residual_forward(TensorPtr out, ConstTensorPtr inp1, ConstTensorPtr inp2, size_t N) {
  cpu::residual_forward(f32(out), f32(inp1), f32(inp2), N);
}
void CpuBackend::residual_backward(TensorPtr dinp1, TensorPtr dinp2, ConstTensorPtr dout, size_t N) {
  cpu::residual_backward(f32(dinp1), f32(dinp2), f32(dout), N);
}

void CpuBackend::dropout_forward(TensorPtr out, ConstTensorPtr inp, const DropoutParams& dropout, size_t N) {
  cpu::dropout_forward(f32(out), f32(inp), dropout, N);
}
void CpuBackend::dropout_backward(TensorPtr dinp, ConstTensorPtr dout, const DropoutParams& dropout, size_t N) {
  cpu::dropout_backward(f32(dinp), f32(dout), dropout, N);
}

void CpuBackend::crossentropy_forward(float* losses, ConstTensorPtr logits, const int* targets, int B, int T, int V,
                                      int Vp) {
  cpu::crossentropy_forward_vectorized(losses, f32(logits), targets, B, T, V, Vp);
}
void CpuBackend::crossentropy_backward(TensorPtr dlogits, float dloss, ConstTensorPtr logits, const int* targets,
                                       int B, int T, int V, int Vp) {
  cpu::crossentropy_backward(f32(dlogits), dloss, f32(logits), targets, B, T, V, Vp);
}
void CpuBackend::fused_classifier(TensorPtr logits, float* losses, const int* targets, float dloss, int B, int T,
                                  int V, int Vp) {
  cpu::fused_classifier(f32(logits), losses, targets, dloss, B, T, V, Vp);
}

double CpuBackend::sum_of_squares(ConstTensorPtr x, size_t N) { return cpu::sum_of_squares(f32(x), N); }
// fp32 only: the compute copy of the parameters is the master itself.
void CpuBackend::adamw_update(float* master, TensorPtr params, float* m, float* v, ConstTensorPtr grads, size_t N,
                              const AdamWParams& hp) {
  ENSURE(f32(params) == master, "cpu backend: adamw_update's params must be the fp32 master weights themselves");
  cpu::adamw_update(master, m, v, f32(grads), N, hp);
}

}  // namespace cpu

std::unique_ptr<Backend> make_cpu_backend(int threads, DType dtype) {
  if (dtype == DType::bf16) return std::make_unique<cpu::CpuBf16Backend>(threads);
  return std::make_unique<cpu::CpuBackend>(threads);
}

}  // namespace gpt2cc
