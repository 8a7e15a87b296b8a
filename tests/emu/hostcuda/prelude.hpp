// Included first by every kernels/*.cu file that translate.py rewrote into host C++: the CUDA
// built-ins of the CPU emulator (cuda_emu.hpp, cp_async_emu.hpp), GPT2CC_CUDA_EMULATION (the
// device headers then take the emulator's inline-asm replacements), kernel_call for the launches,
// and the declaration of the TU's dynamic shared memory, which the generated epilogue defines.
#pragma once

#include "emu/cp_async_emu.hpp"
#include "emu/cuda_emu.hpp"
#include "emu/hostcuda/hostcuda.hpp"

#define GPT2CC_CUDA_EMULATION 1

[[maybe_unused]] static ::gpt2cc::hostcuda::DynamicShared gpt2cc_hostcuda_dynamic_shared();

// cuda_runtime.h declares its C++ overloads taking the kernel itself only for nvcc.
template <class Kernel>
cudaError_t cudaFuncSetAttribute(Kernel* entry, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}
template <class Kernel>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, Kernel* entry) {
  return ::cudaFuncGetAttributes(attr, reinterpret_cast<const void*>(entry));
}
