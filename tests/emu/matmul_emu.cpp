// The linear layer's hand-written kernels compiled for the emulator: cuda_emu.hpp first (the CUDA
// built-ins on the host), then kernels/matmul_device.cuh. The launches below mirror
// matmul_internal::add_bias and accumulate_column_sums of kernels/matmul.cu through the header's
// functions; the partials are a host buffer that starts as NaN (the device's scratch is uninitialised).
#include "emu/matmul_emu.hpp"

#include <limits>
#include <type_traits>
#include <vector>

#include "emu/cuda_emu.hpp"
#include "kernels/matmul_device.cuh"

namespace gpt2cc::emu {
namespace {

namespace mm = cuda::matmul_kernels;

template <class Elem>
void add_bias(Elem* out, const Elem* bias, int rows, int OC) {
  if (static_cast<size_t>(rows) * OC == 0) return;
  const bool vectorized = mm::add_bias_vectorized(out, bias, OC);
  const cuda::LaunchShape l = mm::add_bias_launch(rows, OC, vectorized);
  if constexpr (std::is_same_v<Elem, float>) {
    if (vectorized) {
      launch(l.grid, l.block, l.smem_bytes, mm::add_bias_vec4_kernel, reinterpret_cast<float4*>(out),
             reinterpret_cast<const float4*>(bias), static_cast<size_t>(rows), OC / 4);
      return;
    }
  }
  launch(l.grid, l.block, l.smem_bytes, mm::add_bias_scalar_kernel<Elem>, out, bias, static_cast<size_t>(rows), OC);
}

template <class Elem>
void column_sums(Elem* dbias, const Elem* dout, int rows, int OC) {
  if (rows == 0 || OC == 0) return;
  const mm::ColumnSumSlices s = mm::column_sum_slices(rows);
  std::vector<float> partial(static_cast<size_t>(s.slices) * OC, std::numeric_limits<float>::quiet_NaN());
  const cuda::LaunchShape lp = mm::column_sum_partials_launch(OC, s.slices), lf = mm::column_sum_finalize_launch(OC);
  launch(lp.grid, lp.block, lp.smem_bytes, mm::column_sum_partials_kernel<Elem>, partial.data(), dout, rows, OC,
         s.rows_per_slice);
  launch(lf.grid, lf.block, lf.smem_bytes, mm::column_sum_finalize_kernel<Elem>, dbias,
         static_cast<const float*>(partial.data()), s.slices, OC);
}

}  // namespace

void matmul_add_bias(float* out, const float* bias, int rows, int OC) { add_bias(out, bias, rows, OC); }
void matmul_add_bias(bf16* out, const bf16* bias, int rows, int OC) { add_bias(out, bias, rows, OC); }
void matmul_accumulate_column_sums(float* dbias, const float* dout, int rows, int OC) {
  column_sums(dbias, dout, rows, OC);
}
void matmul_accumulate_column_sums(bf16* dbias, const bf16* dout, int rows, int OC) {
  column_sums(dbias, dout, rows, OC);
}

}  // namespace gpt2cc::emu
