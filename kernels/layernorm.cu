// LayerNorm forward and backward launchers (kernels/layernorm.cuh; mirrors cpu/layernorm.cpp),
// float and bf16, and the fused residual + LayerNorm forward. The kernels, their launch geometry
// and the branch choices are in kernels/layernorm_device.cuh: the cached-row forward (the row read
// once into shared memory; 16-byte packs where C and the pointers allow), the uncached warp-per-row
// forward for rows beyond the cache, and the backward's two designs (LayerNormBackward): the
// fused one-pass kernel plus the fixed-order sum of its partials, or the dinp kernel plus the
// slice-ordered parameter-gradient sums (each the same bits on every run). The fp32 standalone
// forward runs only the warp-per-row kernel: it is the one LayerNorm before layer 0 (every other
// one is the fused residual + LayerNorm, which takes the cached-row path in both dtypes).
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
template <bool kWithResidual, class Elem>
bool launch_cached_row_forward(LayerNormForwardParams<Elem> p, cudaStream_t stream) {
  const CachedRowLaunch l = cached_row_launch<kWithResidual>(p);
  if (!l.fits) return false;
  p.cache_floats = l.cache_floats;
  const LaunchShape& s = l.shape;
  if (l.packed) {
    layernorm_forward_cached_row_kernel<Elem, kPack128<Elem>, kWithResidual>
        <<<s.grid, s.block, s.smem_bytes, stream>>>(p);
  } else {
    layernorm_forward_cached_row_kernel<Elem, 1, kWithResidual><<<s.grid, s.block, s.smem_bytes, stream>>>(p);
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

// The fused kernel instantiated for l.packs packs per lane (1 .. kFusedMaxPacks<Elem>).
template <class Elem, int kPacks = 1>
void launch_fused_backward_kernel(const FusedBackwardLaunch& l, const LayerNormBackwardParams<Elem>& p,
                                  cudaStream_t stream) {
  if constexpr (kPacks < kFusedMaxPacks<Elem>) {
    if (l.packs > kPacks) return launch_fused_backward_kernel<Elem, kPacks + 1>(l, p, stream);
  }
  layernorm_backward_fused_kernel<Elem, kPacks><<<l.fused.grid, l.fused.block, l.fused.smem_bytes, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

// The fused backward, or false when it does not take the shape (the caller falls back).
template <class Elem, class Grad>
bool launch_fused_backward(Elem* dinp, Grad* dweight, Grad* dbias, const Elem* dout, const float* mean,
                           const float* rstd, const Elem* inp, const Elem* weight, int rows, int C,
                           cudaStream_t stream) {
  const bool aligned = is_aligned16(dinp) && is_aligned16(dout) && is_aligned16(inp) && is_aligned16(weight);
  const FusedBackwardLaunch l = fused_backward_launch<Elem>(rows, C, aligned);
  if (!l.fits) return false;
  ScratchBuffer partials(2 * static_cast<size_t>(l.ctas) * C * sizeof(float), stream);
  float* partial_dweight = partials.as<float>();
  float* partial_dbias = partial_dweight + static_cast<size_t>(l.ctas) * C;
  const LayerNormBackwardParams<Elem> p{dinp, partial_dweight, partial_dbias, dout, mean, rstd, inp, weight,
                                        rows, C, l.rows_per_cta};
  launch_fused_backward_kernel(l, p, stream);
  // The partials added in CTA order (the matmul bias gradient's finalize), dweight's then dbias's.
  const LaunchShape lf = column_sum_kernels::column_sum_finalize_launch(C);
  column_sum_kernels::column_sum_finalize_kernel<Grad><<<lf.grid, lf.block, 0, stream>>>(dweight, partial_dweight,
                                                                                          l.ctas, C);
  CUDA_CHECK_LAUNCH();
  column_sum_kernels::column_sum_finalize_kernel<Grad><<<lf.grid, lf.block, 0, stream>>>(dbias, partial_dbias, l.ctas,
                                                                                          C);
  CUDA_CHECK_LAUNCH();
  return true;
}

// Both element types: dinp accumulates with one rounding per element (bf16(float(dinp) + dx));
// dweight / dbias are reduced in float in a fixed order and added once (one rounding per call into
// bf16 ones, Grad = Elem; none into fp32 ones, Grad = float).
template <class Elem, class Grad>
void layernorm_backward_impl(Elem* dinp, Grad* dweight, Grad* dbias, const Elem* dout, const float* mean,
                             const float* rstd, const Elem* inp, const Elem* weight, int B, int T, int C,
                             cudaStream_t stream, LayerNormBackward design) {
  const int rows = B * T;
  if (rows == 0) return;
  ENSURE(C >= 1, "layernorm_backward needs C >= 1, got {}", C);
  if (design != LayerNormBackward::kTwoPass) {
    if (launch_fused_backward(dinp, dweight, dbias, dout, mean, rstd, inp, weight, rows, C, stream)) return;
    constexpr int kWidth = kPack128<Elem>;
    // A design asked for by name (GPT2CC_KERNELS) that the shape cannot take: the user's setting.
    INPUT_CHECK(design == LayerNormBackward::kAuto,
                "layernorm_backward's fused design (GPT2CC_KERNELS layernorm-backward=fused) needs C a multiple of "
                "{} and at most {} and 16-byte aligned dinp, dout, inp and weight, got C = {}",
                kWidth, kWarpSize * kWidth * kFusedMaxPacks<Elem>, C);
  }
  // The two-pass design: any C, any alignment.
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
  layernorm_backward_param_finalize_kernel<Grad><<<lp.finalize.grid, lp.finalize.block, 0, stream>>>(
      dweight, dbias, partial_dw, partial_db, lp.slices, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                        const float* rstd, const float* inp, const float* weight, int B, int T, int C,
                        cudaStream_t stream, LayerNormBackward design) {
  layernorm_backward_impl(dinp, dweight, dbias, dout, mean, rstd, inp, weight, B, T, C, stream, design);
}

void layernorm_backward(bf16* dinp, bf16* dweight, bf16* dbias, const bf16* dout, const float* mean,
                        const float* rstd, const bf16* inp, const bf16* weight, int B, int T, int C,
                        cudaStream_t stream, LayerNormBackward design) {
  layernorm_backward_impl(dinp, dweight, dbias, dout, mean, rstd, inp, weight, B, T, C, stream, design);
}

void layernorm_backward(bf16* dinp, float* dweight, float* dbias, const bf16* dout, const float* mean,
                        const float* rstd, const bf16* inp, const bf16* weight, int B, int T, int C,
                        cudaStream_t stream, LayerNormBackward design) {
  layernorm_backward_impl(dinp, dweight, dbias, dout, mean, rstd, inp, weight, B, T, C, stream, design);
}

}  // namespace gpt2cc::cuda
