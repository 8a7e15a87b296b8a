// AdamW and the gradient sum of squares launchers (kernels/adamw.cuh; mirrors cpu/adamw.cpp). The
// kernels, their parameters (bias corrections in double, as the CPU) and launch geometry are in
// kernels/adamw_device.cuh. sum_of_squares: a fixed partition into kPartialBlocks double partials,
// then a fixed-order sum of them (no atomics: the same bits on every run and every GPU).
// bf16 overloads: gradients and the parameter copy in bf16, master weights and moments in fp32;
// each element is read and written once, so the clip scale and the bf16 refresh cost no pass.
#include "kernels/adamw.cuh"

#include "kernels/adamw_device.cuh"
#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda {
namespace {

using namespace adamw_kernels;

template <class Grad, class Param>
void launch_adamw_update(float* params, Param* params_out, float* m, float* v, const Grad* grads, size_t N,
                         const AdamWParams& hp, cudaStream_t stream) {
  ENSURE(hp.step >= 1, "AdamW step is 1-based, got {}", hp.step);
  if (N == 0) return;
  const AdamWKernelParams<Grad, Param> p = adamw_params(params, params_out, m, v, grads, N, hp);
  const LaunchShape l = adamw_launch(N);
  adamw_update_kernel<<<l.grid, l.block, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

template <class Elem>
double launch_sum_of_squares(const Elem* x, size_t N, cudaStream_t stream) {
  if (N == 0) return 0.0;
  ScratchBuffer partial((kPartialBlocks + 1) * sizeof(double), stream);
  double* partials = partial.as<double>();
  double* total = partials + kPartialBlocks;
  const LaunchShape lp = sum_of_squares_partials_launch(), lf = sum_of_squares_finalize_launch();
  sum_of_squares_partials_kernel<Elem><<<lp.grid, lp.block, 0, stream>>>(partials, x, N);
  CUDA_CHECK_LAUNCH();
  sum_of_squares_finalize_kernel<<<lf.grid, lf.block, 0, stream>>>(total, partials, kPartialBlocks);
  CUDA_CHECK_LAUNCH();
  double result = 0.0;
  CUDA_CHECK(cudaMemcpyAsync(&result, total, sizeof(double), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return result;
}

}  // namespace

void adamw_update(float* params, float* m, float* v, const float* grads, size_t N, const AdamWParams& hp,
                  cudaStream_t stream) {
  launch_adamw_update<float, float>(params, nullptr, m, v, grads, N, hp, stream);
}

void adamw_update(float* master, bf16* params, float* m, float* v, const bf16* grads, size_t N,
                  const AdamWParams& hp, cudaStream_t stream) {
  launch_adamw_update<bf16, bf16>(master, params, m, v, grads, N, hp, stream);
}

void adamw_update(float* master, bf16* params, float* m, float* v, const float* grads, size_t N,
                  const AdamWParams& hp, cudaStream_t stream) {
  launch_adamw_update<float, bf16>(master, params, m, v, grads, N, hp, stream);
}

double sum_of_squares(const float* x, size_t N, cudaStream_t stream) { return launch_sum_of_squares(x, N, stream); }

double sum_of_squares(const bf16* x, size_t N, cudaStream_t stream) { return launch_sum_of_squares(x, N, stream); }

}  // namespace gpt2cc::cuda
