// The LayerNorm and residual kernels compiled for the emulator: cuda_emu.hpp first (the CUDA
// built-ins on the host), then the device headers unchanged. The functions below mirror the
// launchers of kernels/layernorm.cu and kernels/residual.cu through the headers' geometry and
// branch functions; the backward's stream-ordered scratch becomes a host vector filled with NaN
// (device scratch is uninitialised: a partial the kernels forgot to write shows as NaN).
#include "emu/norm_emu.hpp"

#include <limits>
#include <vector>

#include "emu/cuda_emu.hpp"
#include "kernels/layernorm_device.cuh"
#include "kernels/residual_device.cuh"

namespace gpt2cc::cuda::layernorm_kernels {
// What the cached-row kernel's `extern __shared__ float row_cache[]` refers to on the host.
GPT2CC_EMU_DYNAMIC_SHARED(float, row_cache);
}  // namespace gpt2cc::cuda::layernorm_kernels

namespace gpt2cc::emu {
namespace {

namespace ln = cuda::layernorm_kernels;
namespace res = cuda::residual_kernels;
using cuda::kPack128;
using cuda::LaunchShape;

template <class Elem>
void residual_forward_impl(Elem* out, const Elem* inp1, const Elem* inp2, size_t N) {
  if (N == 0) return;
  const bool packed = cuda::use_packs<Elem>(N, out, inp1, inp2);
  const LaunchShape l = cuda::elementwise_launch<Elem>(N, packed);
  if (packed) launch(l.grid, l.block, 0, res::residual_forward_kernel<Elem, kPack128<Elem>>, out, inp1, inp2, N);
  else launch(l.grid, l.block, 0, res::residual_forward_kernel<Elem, 1>, out, inp1, inp2, N);
}

template <class Elem>
void residual_backward_impl(Elem* dinp1, Elem* dinp2, const Elem* dout, size_t N) {
  if (N == 0) return;
  const bool packed = cuda::use_packs<Elem>(N, dinp1, dinp2, dout);
  const LaunchShape l = cuda::elementwise_launch<Elem>(N, packed);
  if (packed) launch(l.grid, l.block, 0, res::residual_backward_kernel<Elem, kPack128<Elem>>, dinp1, dinp2, dout, N);
  else launch(l.grid, l.block, 0, res::residual_backward_kernel<Elem, 1>, dinp1, dinp2, dout, N);
}

template <bool kFused, class Elem>
bool launch_cached_row_forward(ln::LayerNormForwardParams<Elem> p) {
  const ln::CachedRowLaunch l = ln::cached_row_launch<kFused>(p);
  if (!l.fits) return false;
  p.cache_floats = l.cache_floats;
  const LaunchShape& s = l.shape;
  set_shared_memory(ln::row_cache, sizeof(ln::row_cache));
  if (l.packed) {
    launch(s.grid, s.block, s.smem_bytes, ln::layernorm_forward_cached_row_kernel<Elem, kPack128<Elem>, kFused>, p);
  } else {
    launch(s.grid, s.block, s.smem_bytes, ln::layernorm_forward_cached_row_kernel<Elem, 1, kFused>, p);
  }
  return true;
}

template <class Elem>
void layernorm_forward_uncached(Elem* out, float* mean, float* rstd, const Elem* inp, const Elem* weight,
                                const Elem* bias, int rows, int C) {
  const LaunchShape l = ln::warp_per_row_launch(rows);
  launch(l.grid, l.block, 0, ln::layernorm_forward_warp_per_row_kernel<Elem>, out, mean, rstd, inp, weight, bias,
         rows, C);
}

template <class Elem>
void residual_layernorm_forward_impl(Elem* residual, Elem* out, float* mean, float* rstd, const Elem* inp1,
                                     const Elem* inp2, const Elem* weight, const Elem* bias, int B, int T, int C) {
  const int rows = B * T;
  if (rows == 0) return;
  ENSURE(C >= 1, "residual_layernorm_forward needs C >= 1, got {}", C);
  const ln::LayerNormForwardParams<Elem> p{residual, out, mean, rstd, inp1, inp2, weight, bias, rows, C, 0};
  if (launch_cached_row_forward<true>(p)) return;
  residual_forward(residual, inp1, inp2, static_cast<size_t>(rows) * C);
  layernorm_forward(out, mean, rstd, residual, weight, bias, B, T, C);
}

template <class Elem>
void layernorm_backward_impl(Elem* dinp, Elem* dweight, Elem* dbias, const Elem* dout, const float* mean,
                             const float* rstd, const Elem* inp, const Elem* weight, int B, int T, int C) {
  const int rows = B * T;
  if (rows == 0) return;
  ENSURE(C >= 1, "layernorm_backward needs C >= 1, got {}", C);
  const LaunchShape ld = ln::warp_per_row_launch(rows);
  if (ln::backward_dinp_packed<Elem>(C, dinp, dout, inp, weight)) {
    launch(ld.grid, ld.block, 0, ln::layernorm_backward_dinp_warp_per_row_kernel<Elem, kPack128<Elem>>, dinp, dout,
           mean, rstd, inp, weight, rows, C);
  } else {
    launch(ld.grid, ld.block, 0, ln::layernorm_backward_dinp_warp_per_row_kernel<Elem, 1>, dinp, dout, mean, rstd,
           inp, weight, rows, C);
  }
  const ln::BackwardParamLaunch lp = ln::backward_param_launch(rows, C);
  std::vector<float> partials(2 * static_cast<size_t>(lp.slices) * C, std::numeric_limits<float>::quiet_NaN());
  float* partial_dw = partials.data();
  float* partial_db = partial_dw + static_cast<size_t>(lp.slices) * C;
  launch(lp.partials.grid, lp.partials.block, 0, ln::layernorm_backward_param_partials_kernel<Elem>, partial_dw,
         partial_db, dout, mean, rstd, inp, rows, C, lp.rows_per_slice);
  launch(lp.finalize.grid, lp.finalize.block, 0, ln::layernorm_backward_param_finalize_kernel<Elem>, dweight, dbias,
         partial_dw, partial_db, lp.slices, C);
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int B, int T, int C) {
  const int rows = B * T;
  if (rows == 0) return;
  ENSURE(C >= 1, "layernorm_forward needs C >= 1, got {}", C);
  layernorm_forward_uncached(out, mean, rstd, inp, weight, bias, rows, C);
}

void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* weight, const bf16* bias,
                       int B, int T, int C) {
  const int rows = B * T;
  if (rows == 0) return;
  ENSURE(C >= 1, "layernorm_forward needs C >= 1, got {}", C);
  const ln::LayerNormForwardParams<bf16> p{nullptr, out, mean, rstd, inp, nullptr, weight, bias, rows, C, 0};
  if (launch_cached_row_forward<false>(p)) return;
  layernorm_forward_uncached(out, mean, rstd, inp, weight, bias, rows, C);
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                        const float* rstd, const float* inp, const float* weight, int B, int T, int C) {
  layernorm_backward_impl(dinp, dweight, dbias, dout, mean, rstd, inp, weight, B, T, C);
}
void layernorm_backward(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout, const float* mean,
                        const float* rstd, const bf16* inp, const bf16* weight, int B, int T, int C) {
  layernorm_backward_impl(dinp, dweight, dbias, dout, mean, rstd, inp, weight, B, T, C);
}

void residual_layernorm_forward(float* residual, float* out, float* mean, float* rstd, const float* inp1,
                                const float* inp2, const float* weight, const float* bias, int B, int T, int C) {
  residual_layernorm_forward_impl(residual, out, mean, rstd, inp1, inp2, weight, bias, B, T, C);
}
void residual_layernorm_forward(bf16* residual, bf16* out, float* mean, float* rstd, const bf16* inp1,
                                const bf16* inp2, const bf16* weight, const bf16* bias, int B, int T, int C) {
  residual_layernorm_forward_impl(residual, out, mean, rstd, inp1, inp2, weight, bias, B, T, C);
}

void residual_forward(float* out, const float* inp1, const float* inp2, size_t N) {
  residual_forward_impl(out, inp1, inp2, N);
}
void residual_forward(bf16* out, const bf16* inp1, const bf16* inp2, size_t N) {
  residual_forward_impl(out, inp1, inp2, N);
}
void residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N) {
  residual_backward_impl(dinp1, dinp2, dout, N);
}
void residual_backward(bf16* dinp1, bf16* dinp2, const bf16* dout, size_t N) {
  residual_backward_impl(dinp1, dinp2, dout, N);
}

}  // namespace gpt2cc::emu
