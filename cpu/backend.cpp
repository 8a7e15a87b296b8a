// The CPU backend (cpu/backend.hpp): host memory (64-byte aligned, zero-filled) and every layer
// op forwarded to the gpt2cc::cpu:: reference functions of the same name and argument order.
// fp32 throughout; OpenMP threads as requested (0 = the OpenMP default).
#include "cpu/backend.hpp"

#include <omp.h>

#include <cstdlib>
#include <cstring>

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

CpuBackend::CpuBackend(int threads) {
  INPUT_CHECK(threads >= 0, "cpu backend: threads must be >= 0 (0: OpenMP default), got {}", threads);
  if (threads > 0) omp_set_num_threads(threads);
  threads_ = omp_get_max_threads();
}

std::string CpuBackend::describe() const {
  return format("cpu fp32 ({} thread{})", threads_, threads_ == 1 ? "" : "s");
}

void* CpuBackend::allocate(size_t bytes) {
  // aligned_alloc wants a size that is a multiple of the alignment (and > 0 for a usable pointer).
  size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded == 0) rounded = kAlignment;
  void* ptr = std::aligned_alloc(kAlignment, rounded);
  if (!ptr) throw Error(format("cpu backend: out of memory allocating {} bytes ({} MiB)", bytes, bytes >> 20));
  std::memset(ptr, 0, rounded);
  return ptr;
}

void CpuBackend::release(void* ptr) noexcept { std::free(ptr); }
void CpuBackend::upload(void* dst, const void* host_src, size_t bytes) { std::memcpy(dst, host_src, bytes); }
void CpuBackend::download(void* host_dst, const void* src, size_t bytes) { std::memcpy(host_dst, src, bytes); }
void CpuBackend::copy(void* dst, const void* src, size_t bytes) { std::memmove(dst, src, bytes); }
void CpuBackend::zero(void* ptr, size_t bytes) { std::memset(ptr, 0, bytes); }

// The CPU attention stores the full probability matrix per head (B, NH, T, T).
size_t CpuBackend::attention_saved_floats(int B, int T, int NH) const { return size_t(B) * NH * T * T; }

void CpuBackend::encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C) {
  cpu::encoder_forward(out, inp, wte, wpe, B, T, C);
}
void CpuBackend::encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C) {
  cpu::encoder_backward(dwte, dwpe, dout, inp, B, T, C);
}

void CpuBackend::layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                   const float* bias, int B, int T, int C) {
  cpu::layernorm_forward(out, mean, rstd, inp, weight, bias, B, T, C);
}
void CpuBackend::layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                                    const float* rstd, const float* inp, const float* weight, int B, int T, int C) {
  cpu::layernorm_backward(dinp, dweight, dbias, dout, mean, rstd, inp, weight, B, T, C);
}

void CpuBackend::matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int B, int T,
                                int C, int OC) {
  cpu::matmul_forward(out, inp, weight, bias, B, T, C, OC);
}
void CpuBackend::matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                                 const float* weight, int B, int T, int C, int OC) {
  cpu::matmul_backward(dinp, dweight, dbias, dout, inp, weight, B, T, C, OC);
}

void CpuBackend::attention_forward(float* out, float* saved, const float* qkv, int B, int T, int C, int NH,
                                   const DropoutParams& dropout) {
  cpu::attention_forward(out, saved, qkv, B, T, C, NH, dropout);
}
void CpuBackend::attention_backward(float* dqkv, const float* dout, const float* saved, const float* qkv, int B,
                                    int T, int C, int NH, const DropoutParams& dropout) {
  cpu::attention_backward(dqkv, dout, saved, qkv, B, T, C, NH, dropout);
}
void CpuBackend::attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int pos,
                                  int maxT, int C, int NH) {
  cpu::attention_decode(out, kcache, vcache, qkv, B, pos, maxT, C, NH);
}
void CpuBackend::kv_cache_store(float* kcache, float* vcache, const float* qkv, int B, int T, int maxT, int C) {
  cpu::kv_cache_store(kcache, vcache, qkv, B, T, maxT, C);
}

void CpuBackend::gelu_forward(float* out, const float* inp, size_t N) { cpu::gelu_forward(out, inp, N); }
void CpuBackend::gelu_backward(float* dinp, const float* dout, const float* inp, size_t N) {
  cpu::gelu_backward(dinp, dout, inp, N);
}

void CpuBackend::residual_forward(float* out, const float* inp1, const float* inp2, size_t N) {
  cpu::residual_forward(out, inp1, inp2, N);
}
void CpuBackend::residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N) {
  cpu::residual_backward(dinp1, dinp2, dout, N);
}

void CpuBackend::dropout_forward(float* out, const float* inp, const DropoutParams& dropout, size_t N) {
  cpu::dropout_forward(out, inp, dropout, N);
}
void CpuBackend::dropout_backward(float* dinp, const float* dout, const DropoutParams& dropout, size_t N) {
  cpu::dropout_backward(dinp, dout, dropout, N);
}

void CpuBackend::crossentropy_forward(float* losses, const float* logits, const int* targets, int B, int T, int V,
                                      int Vp) {
  cpu::crossentropy_forward(losses, logits, targets, B, T, V, Vp);
}
void CpuBackend::crossentropy_backward(float* dlogits, float dloss, const float* logits, const int* targets, int B,
                                       int T, int V, int Vp) {
  cpu::crossentropy_backward(dlogits, dloss, logits, targets, B, T, V, Vp);
}

double CpuBackend::sum_of_squares(const float* x, size_t N) { return cpu::sum_of_squares(x, N); }
void CpuBackend::adamw_update(float* params, float* m, float* v, const float* grads, size_t N,
                              const AdamWParams& hp) {
  cpu::adamw_update(params, m, v, grads, N, hp);
}

}  // namespace cpu

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<cpu::CpuBackend>(threads); }

}  // namespace gpt2cc
