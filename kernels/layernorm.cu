// LayerNorm forward and backward launchers (kernels/layernorm.cuh; mirrors cpu/layernorm.cpp),
// float and bf16, and the fused residual + LayerNorm forward. The kernels, their launch geometry
// and the branch choices are in kernels/layernorm_device.cuh: the cached-row forward (the row read
// once into shared memory; 16-byte packs where C and the pointers allow), the uncached warp-per-row
// forward for rows beyond the cache, and the backward's dinp kernel plus the slice-ordered
// parameter-gradient sums (the same bits on every run).
#include "kernels/layernorm.cuh"

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/layernorm_device.cuh"
#include "kernels/residual.cuh"

namespace gpt2cc::cuda {
namespace {

using namespace layernorm_kernels;

// Launches the cached-row forward for this shape, or returns false when one row does not fit in
// the shared-memory cache (the caller falls back to uncached kernels).
template <bool kFused, class Elem>
bool launch_cached_row_forward(LayerNormForwardParams<Elem> p, cudaStream_t stream) {
  const CachedRowLaunch l = cached_row_launch<kFused>(p);
  if (!l.fits) return false;
  p.cache_floats = l.cache_floats;
  const LaunchShape& s = l.shape;
  if (l.packed) {
    layernorm_forward_cached_row_kernel<Elem, kPack128<Elem>, kFused><<<s.grid, s.block, s.smem_bytes, stream>>>(p);
  } else {
    layernorm_forward_cached_row_kernel<Elem, 1, kFused><<<s.grid, s.block, s.smem_bytes, stream>>>(p);
  }
  CUDA_CHECK_LAUNCH();
  return true;
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int B, int T, int C, cudaStream_t stream) {
  const int rows = B * T;
  if (rows == 0) return;
  ENSURE(C >= 1, "layernorm_forward needs C >= 1, got {}", C);
  const LaunchShape l = warp_per_row_launch(rows);
  layernorm_forward_warp_per_row_kernel<float><<<l.grid, l.block, 0, stream>>>(out, mean, rstd, inp, weight, bias,
                                                                              rows, C);
  CUDA_CHECK_LAUNCH();
}

void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* weight, const bf16* bias,
                       int B, int T, int C, cudaStream_t stream) {
  const int rows = B * T;
  if (rows == 0) return;
  ENSURE(C >= 1, "layernorm_forward needs C >= 1, got {}", C);
  const LayerNormForwardParams<bf16> p{nullptr, out, mean, rstd, inp, nullptr, weight, bias, rows, C, 0};
  if (launch_cached_row_forward<false>(p, stream)) return;
  // A row larger than the shared-memory cache: the uncached kernel reads it from L1/L2 twice.
  const LaunchShape l = warp_per_row_launch(rows);
  layernorm_forward_warp_per_row_kernel<bf16><<<l.grid, l.block, 0, stream>>>(out, mean, rstd, inp, weight, bias,
                                                                             rows, C);
  CUDA_CHECK_LAUNCH();
}

namespace {

template <class Elem>
void residual_layernorm_forward_impl(Elem* residual, Elem* out, float* mean, float* rstd, const Elem* inp1,
                                     const Elem* inp2, const Elem* weight, const Elem* bias, int B, int T, int C,
                                     cudaStream_t stream) {
  const int rows = B * T;
  if (rows == 0) return;
  ENSURE(C >= 1, "residual_layernorm_forward needs C >= 1, got {}", C);
  const LayerNormForwardParams<Elem> p{residual, out, mean, rstd, inp1, inp2, weight, bias, rows, C, 0};
  if (launch_cached_row_forward<true>(p, stream)) return;
  // Rows too large for the cache: the unfused pair, which computes the same values.
  residual_forward(residual, inp1, inp2, static_cast<size_t>(rows) * C, stream);
  layernorm_forward(out, mean, rstd, residual, weight, bias, B, T, C, stream);
}

}  // namespace

void residual_layernorm_forward(float* residual, float* out, float* mean, float* rstd, const float* inp1,
                                const float* inp2, const float* weight, const float* bias, int B, int T, int C,
                                cudaStream_t stream) {
  residual_layernorm_forward_impl(residual, out, mean, rstd, inp1, inp2, weight, bias, B, T, C, stream);
}
void residual_layernorm_forward(bf16* residual, bf16* out, float* mean, float* rstd, const bf16* inp1,
                                const bf16* inp2, const bf16* weight, const bf16* bias, int B, int T, int C,
                                cudaStream_t stream) {
  residual_layernorm_forward_impl(residual, out, mean, rstd, inp1, inp2, weight, bias, B, T, C, stream);
}

namespace {

// Both element types: dinp accumulates with one rounding per element (bf16(float(dinp) + dx));
// dweight / dbias are reduced in float in a fixed order and added once (one rounding per call).
template <class Elem>
void layernorm_backward_impl(Elem* dinp, Elem* dweight, Elem* dbias, const Elem* dout, const float* mean,
                             const float* rstd, const Elem* inp, const Elem* weight, int B, int T, int C,
                             cudaStream_t stream) {
  const int rows = B * T;
  if (rows == 0) return;
  ENSURE(C >= 1, "layernorm_backward needs C >= 1, got {}", C);
  const LaunchShape ld = warp_per_row_launch(rows);
  if (backward_dinp_packed<Elem>(C, dinp, dout, inp, weight)) {
    layernorm_backward_dinp_warp_per_row_kernel<Elem, kPack128<Elem>><<<ld.grid, ld.block, 0, stream>>>(
        dinp, dout, mean, rstd, inp, weight, rows, C);
  } else {
    layernorm_backward_dinp_warp_per_row_kernel<Elem, 1><<<ld.grid, ld.block, 0, stream>>>(
        dinp, dout, mean, rstd, inp, weight, rows, C);
  }
  CUDA_CHECK_LAUNCH();

  const BackwardParamLaunch lp = backward_param_launch(rows, C);
  ScratchBuffer partials(2 * static_cast<size_t>(lp.slices) * C * sizeof(float), stream);
  float* partial_dw = partials.as<float>();
  float* partial_db = partial_dw + static_cast<size_t>(lp.slices) * C;
  layernorm_backward_param_partials_kernel<Elem><<<lp.partials.grid, lp.partials.block, 0, stream>>>(
      partial_dw, partial_db, dout, mean, rstd, inp, rows, C, lp.rows_per_slice);
  CUDA_CHECK_LAUNCH();
  layernorm_backward_param_finalize_kernel<Elem><<<lp.finalize.grid, lp.finalize.block, 0, stream>>>(
      dweight, dbias, partial_dw, partial_db, lp.slices, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                        const float* rstd, const float* inp, const float* weight, int B, int T, int C,
                        cudaStream_t stream) {
  layernorm_backward_impl(dinp, dweight, dbias, dout, mean, rstd, inp, weight, B, T, C, stream);
}

void layernorm_backward(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout, const float* mean,
                        const float* rstd, const bf16* inp, const bf16* weight, int B, int T, int C,
                        cudaStream_t stream) {
  layernorm_backward_impl(dinp, dweight, dbias, dout, mean, rstd, inp, weight, B, T, C, stream);
}

}  // namespace gpt2cc::cuda
