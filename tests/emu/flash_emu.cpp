// The flash attention kernels compiled for the emulator: cuda_emu.hpp and cp_async_emu.hpp first
// (the CUDA built-ins on the host), then the device header with GPT2CC_CUDA_EMULATION, which swaps
// only the bodies of ldmatrix_x4, ldmatrix_x4_trans, mma_bf16 and the cp.async trio for the
// emulator's. The launches below mirror launch_forward / launch_backward of
// kernels/flash_attention.cu through the header's functions; after each, no thread may have left
// copies in flight.
#include "emu/flash_emu.hpp"

#include <vector>

#include "emu/cp_async_emu.hpp"
#include "emu/cuda_emu.hpp"
#define GPT2CC_CUDA_EMULATION 1
#include "kernels/flash_attention_device.cuh"

namespace gpt2cc::cuda::flash {
// What the kernels' `extern __shared__ unsigned char smem[]` declarations refer to on the host.
GPT2CC_EMU_DYNAMIC_SHARED(unsigned char, smem);
}  // namespace gpt2cc::cuda::flash

namespace gpt2cc::emu {
namespace {

namespace flash = cuda::flash;

// One launch, then the cp.async check (which also clears what a failed launch left behind).
template <class Kernel, class... Args>
void run(const flash::LaunchShape& l, Kernel kernel, const Args&... args) {
  try {
    launch(l.grid, l.block, l.smem_bytes, kernel, args...);
  } catch (...) {
    try {
      cp_async_check_drained();
    } catch (const Violation&) {  // the launch's own error is the one to report
    }
    throw;
  }
  cp_async_check_drained();
}

template <int HS, int kRows>
void launch_forward(const flash::FlashForwardParams& p, int B) {
  run(flash::forward_launch<HS, kRows>(B, p.T, p.NH), flash::flash_attention_forward_kernel<HS, kRows>, p);
}

template <int HS, int kRows>
void launch_backward(const flash::FlashBackwardParams& p, const bf16* out, float* delta, int B) {
  run(flash::delta_launch(B, p.T, p.NH), flash::flash_attention_delta_kernel<HS>, delta, p.dout, out, B, p.T, p.NH);
  run(flash::backward_dkdv_launch<HS, kRows>(B, p.T, p.NH), flash::flash_attention_backward_dkdv_kernel<HS, kRows>,
      p);
  run(flash::backward_dq_launch<HS, kRows>(B, p.T, p.NH), flash::flash_attention_backward_dq_kernel<HS, kRows>, p);
}

void check_shape(int C, int NH, int tile_rows) {
  if (NH < 1 || C % NH != 0 || (C / NH != 64 && C / NH != 128))
    throw Violation("flash attention emulation: head size C/NH must be 64 or 128");
  if (tile_rows != 64 && tile_rows != 128) throw Violation("flash attention emulation: tile_rows must be 64 or 128");
}


}  // namespace

void flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH, int tile_rows) {
  check_shape(C, NH, tile_rows);
  set_shared_memory(flash::smem, sizeof(flash::smem));
  const flash::FlashForwardParams p = flash::forward_params(out, lse, qkv, T, C, NH);
  flash::dispatch(C / NH, tile_rows, [&]<int HS, int kRows>() { launch_forward<HS, kRows>(p, B); });
}

void flash_attention_backward(bf16* dqkv, const bf16* dout, const float* lse, const bf16* out, const bf16* qkv,
                              int B, int T, int C, int NH, int tile_rows) {
  check_shape(C, NH, tile_rows);
  set_shared_memory(flash::smem, sizeof(flash::smem));
  std::vector<float> delta(static_cast<size_t>(B) * NH * T);
  const flash::FlashBackwardParams p = flash::backward_params(dqkv, dout, lse, delta.data(), qkv, T, C, NH);
  flash::dispatch(C / NH, tile_rows, [&]<int HS, int kRows>() { launch_backward<HS, kRows>(p, out, delta.data(), B); });
}

}  // namespace gpt2cc::emu
