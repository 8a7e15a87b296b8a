// Device code of the AdamW update and the gradient sum of squares (kernels/adamw.cuh; mirrors
// cpu/adamw.cpp):
//   g = grad * grad_scale ; m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2
//   p -= lr * ( mhat / (sqrt(vhat) + eps) + wd * p ),  mhat = m/(1-b1^step), vhat = v/(1-b2^step)
// sum_of_squares: kPartialBlocks blocks stride over x (a partition fixed by N alone), each block
// reduces in double to one partial, then one block adds the partials in a fixed tree: no atomics,
// the same bits on every run. Included by kernels/adamw.cu (the launchers; tests/emu/hostcuda
// compiles it as host C++ for the CPU emulator), with the parameters and launch geometry at the end.
#pragma once

#include <cmath>
#include <cstddef>
#include <type_traits>

#include "core/backend.hpp"
#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda::adamw_kernels {

constexpr int kBlock = 256;
constexpr int kPartialBlocks = 512;

// bf16 params (Param = bf16): `params` is the fp32 master copy and `params_out` the bf16 copy
// refreshed from it; fp32 params (Param = float): params_out is unused (null).
template <class Grad, class Param>
struct AdamWKernelParams {
  float* params;
  Param* params_out;
  float* m;
  float* v;
  const Grad* grads;
  size_t N;
  AdamWParams hp;
  float bias_correction1;  // 1 - beta1^step
  float bias_correction2;  // 1 - beta2^step
};

template <class Grad, class Param>
__global__ void adamw_update_kernel(AdamWKernelParams<Grad, Param> p) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.N) return;
  const AdamWParams& hp = p.hp;
  const float g = to_float(p.grads[i]) * hp.grad_scale;
  const float mi = hp.beta1 * p.m[i] + (1.0f - hp.beta1) * g;
  const float vi = hp.beta2 * p.v[i] + (1.0f - hp.beta2) * g * g;
  p.m[i] = mi;
  p.v[i] = vi;
  const float mhat = mi / p.bias_correction1;
  const float vhat = vi / p.bias_correction2;
  const float param = p.params[i];
  const float updated = param - hp.lr * (mhat / (sqrtf(vhat) + hp.eps) + hp.weight_decay * param);
  p.params[i] = updated;
  if constexpr (!std::is_same_v<Param, float>) p.params_out[i] = __float2bfloat16_rn(updated);
}

__device__ double block_sum_double(double x, double* shared) {
  return block_reduce(x, shared, [](double value) { return warp_sum(value); }, 0.0);
}

// partial[block] = sum over i = block*blockDim + thread + k * gridDim*blockDim of x_i^2 (double).
template <class Elem>
__global__ void sum_of_squares_partials_kernel(double* partial, const Elem* x, size_t N) {
  __shared__ double shared[kWarpSize];
  double acc = 0.0;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < N;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const double value = to_float(x[i]);
    acc += value * value;
  }
  acc = block_sum_double(acc, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void sum_of_squares_finalize_kernel(double* total, const double* partial, int count) {
  __shared__ double shared[kWarpSize];
  double acc = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = block_sum_double(acc, shared);
  if (threadIdx.x == 0) *total = acc;
}

// ---------------------------------------------------------------------------------------------
// Parameters and launch geometry: used by the launchers in adamw.cu.
// ---------------------------------------------------------------------------------------------

// The kernel's parameters; the bias corrections in double on the host, as the CPU computes them,
// so both sides divide by the same float values. hp.step >= 1 (checked by the launcher).
template <class Grad, class Param>
AdamWKernelParams<Grad, Param> adamw_params(float* params, Param* params_out, float* m, float* v, const Grad* grads,
                                            size_t N, const AdamWParams& hp) {
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(hp.beta1), hp.step));
  const float bc2 = static_cast<float>(1.0 - std::pow(static_cast<double>(hp.beta2), hp.step));
  return {params, params_out, m, v, grads, N, hp, bc1, bc2};
}

// One thread per parameter.
inline LaunchShape adamw_launch(size_t N) { return {dim3(static_cast<unsigned>(ceil_div(N, kBlock))), dim3(kBlock)}; }

// kPartialBlocks partials whatever N is (the fixed partition), then one block adds them.
inline LaunchShape sum_of_squares_partials_launch() { return {dim3(kPartialBlocks), dim3(kBlock)}; }
inline LaunchShape sum_of_squares_finalize_launch() { return {dim3(1), dim3(kBlock)}; }

}  // namespace gpt2cc::cuda::adamw_kernels
