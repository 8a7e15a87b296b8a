// The kernel designs the CUDA backend takes where a layer has more than one (the launchers'
// design enums), and the environment variable that overrides their automatic choice, so that one
// design can be measured against another in whole training steps (scripts/bench_gpu.sh's
// `designs` stage) and on a user's own GPU, without a rebuild:
//   GPT2CC_KERNELS=NAME=VALUE[,NAME=VALUE...]
//     classifier          auto | cached-row | streamed   FusedClassifier (crossentropy.cuh)
//     layernorm-backward  auto | fused | two-pass        LayerNormBackward (layernorm.cuh)
//     flash-backward      auto | split | fused           FlashBackward (flash_attention.cuh)
//     flash-tile          auto | 64 | 128                FlashTile (the rows a flash CTA owns)
//     bias-grad           auto | column-sum | epilogue   BiasGradient (matmul.cuh; bf16 only)
//     gemm-alignment      auto | operand | 16            GemmAlignment (matmul.cuh; bf16 only)
//     gemm-split-k        auto | fp32 | any              GemmSplitK (matmul.cuh; bf16 only)
//     gemm-workspace      auto | 32 | 256                GemmWorkspace, MiB (matmul.cuh; bf16 only)
//     gelu                auto | epilogue | separate     GeluFusion (matmul.cuh; bf16 only)
// e.g. GPT2CC_KERNELS=classifier=streamed,flash-backward=fused. Unset or empty: every one auto.
// Every design computes the same function (the tests hold each to the CPU reference); designs of
// one layer may round differently (sums in another order), so a run's bits depend on the choice,
// and a resumed run should keep it. A design the shape or device cannot take throws InputError
// (exit 2: the user's setting) at its first launch, naming it (e.g. classifier=cached-row for fp32
// GPT-2's rows on an A100, whose 163 KiB of shared memory a block cannot hold one; a flash design
// where the tiled attention runs: attention dropout, another head size or device).
#pragma once

#include <string>

#include "kernels/crossentropy.cuh"
#include "kernels/flash_attention.cuh"
#include "kernels/layernorm.cuh"
#include "kernels/matmul.cuh"

namespace gpt2cc::cuda {

inline constexpr const char* kKernelDesignsVariable = "GPT2CC_KERNELS";

struct KernelDesigns {
  FusedClassifier classifier = FusedClassifier::kAuto;
  LayerNormBackward layernorm_backward = LayerNormBackward::kAuto;
  FlashBackward flash_backward = FlashBackward::kAuto;
  FlashTile flash_tile = FlashTile::kAuto;
  BiasGradient bias_gradient = BiasGradient::kAuto;
  GemmAlignment gemm_alignment = GemmAlignment::kAuto;
  GemmSplitK gemm_split_k = GemmSplitK::kAuto;
  GemmWorkspace gemm_workspace = GemmWorkspace::kAuto;
  GeluFusion gelu = GeluFusion::kAuto;
};

// The bf16 GEMMs' part of `designs`.
inline GemmDesign gemm_design(const KernelDesigns& designs) {
  return GemmDesign{designs.gemm_alignment, designs.gemm_split_k, designs.bias_gradient, designs.gemm_workspace,
                    designs.gelu};
}

// Parses GPT2CC_KERNELS' syntax (spaces around names and values are ignored); gpt2cc::InputError
// naming the variable, the entry at fault and what it may be.
KernelDesigns parse_kernel_designs(const std::string& text);
// parse_kernel_designs of the variable's value; all auto when it is unset.
KernelDesigns kernel_designs_from_environment();
// The entries that are not auto, in the variable's syntax and the order above ("" when none).
std::string kernel_designs_text(const KernelDesigns& designs);

}  // namespace gpt2cc::cuda
