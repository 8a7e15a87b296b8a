// The AdamW and sum-of-squares kernels compiled for the emulator: cuda_emu.hpp first (the CUDA
// built-ins on the host), then kernels/adamw_device.cuh. The launches below mirror
// launch_adamw_update and launch_sum_of_squares of kernels/adamw.cu through the header's functions;
// the partials live in a host buffer that starts as NaN (the device's scratch is uninitialised).
#include "emu/adamw_emu.hpp"

#include <limits>
#include <vector>

#include "emu/cuda_emu.hpp"
#include "kernels/adamw_device.cuh"

namespace gpt2cc::emu {
namespace {

namespace aw = cuda::adamw_kernels;

template <class Grad, class Param>
void update(float* params, Param* params_out, float* m, float* v, const Grad* grads, size_t N,
            const AdamWParams& hp) {
  if (hp.step < 1) throw Violation("adamw emulation: step is 1-based");
  if (N == 0) return;
  const aw::AdamWKernelParams<Grad, Param> p = aw::adamw_params(params, params_out, m, v, grads, N, hp);
  const cuda::LaunchShape l = aw::adamw_launch(N);
  launch(l.grid, l.block, l.smem_bytes, aw::adamw_update_kernel<Grad, Param>, p);
}

template <class Elem>
double squares(const Elem* x, size_t N) {
  if (N == 0) return 0.0;
  std::vector<double> partial(aw::kPartialBlocks + 1, std::numeric_limits<double>::quiet_NaN());
  double* total = partial.data() + aw::kPartialBlocks;
  const cuda::LaunchShape lp = aw::sum_of_squares_partials_launch(), lf = aw::sum_of_squares_finalize_launch();
  launch(lp.grid, lp.block, lp.smem_bytes, aw::sum_of_squares_partials_kernel<Elem>, partial.data(), x, N);
  launch(lf.grid, lf.block, lf.smem_bytes, aw::sum_of_squares_finalize_kernel, total,
         static_cast<const double*>(partial.data()), aw::kPartialBlocks);
  return *total;
}

}  // namespace

void adamw_update(float* params, float* m, float* v, const float* grads, size_t N, const AdamWParams& hp) {
  update<float, float>(params, nullptr, m, v, grads, N, hp);
}
void adamw_update(float* master, bf16* params, float* m, float* v, const bf16* grads, size_t N,
                  const AdamWParams& hp) {
  update<bf16, bf16>(master, params, m, v, grads, N, hp);
}
double sum_of_squares(const float* x, size_t N) { return squares(x, N); }
double sum_of_squares(const bf16* x, size_t N) { return squares(x, N); }

}  // namespace gpt2cc::emu
