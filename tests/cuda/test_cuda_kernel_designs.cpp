// GPT2CC_KERNELS (kernels/kernel_designs.cuh): its syntax, its errors, and that a backend made
// while it is set takes the designs it names. What proves each design was taken: a design named
// for a shape it cannot take throws where the automatic choice runs (the cached-row classifier,
// the fused LayerNorm backward), and the two flash backwards, the two bias gradients and the two
// places of the GELU, which round differently, give the named one's bits.
#include "common/catch.hpp"

#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "core/check.hpp"
#include "cuda_test_util.hpp"
#include "kernels/kernel_designs.cuh"

using namespace gpt2cc;
using cuda::BiasGradient;
using cuda::FlashBackward;
using cuda::FlashTile;
using cuda::FusedClassifier;
using cuda::GemmAlignment;
using cuda::GemmSplitK;
using cuda::LayerNormBackward;

namespace {

std::unique_ptr<Backend> backend_with(const std::optional<std::string>& designs, DType dtype) {
  const test::ScopedEnv variable(cuda::kKernelDesignsVariable, designs);
  return make_cuda_backend(0, dtype);
}

// Uploads `count` values drawn from `seed` into a tensor of the backend's dtype.
void upload_random(Backend& backend, TensorPtr t, size_t count, uint64_t seed) {
  const auto values = test::random_vector(count, seed, -2.0f, 2.0f);
  DeviceArray<float> wide(backend, count);
  backend.upload(wide.data(), values.data(), wide.bytes());
  backend.convert_from_float(t, wide.data(), count);
}

// dbias after one bf16 matmul backward (64 rows, C 64, OC 2304) from a nonzero dbias, on a backend
// made with `designs`.
std::vector<float> matmul_dbias(const std::optional<std::string>& designs) {
  const int B = 1, T = 64, C = 64, OC = 2304;
  const size_t N = size_t(B) * T;
  auto backend = backend_with(designs, DType::bf16);
  DeviceTensor dinp(*backend, N * C), dweight(*backend, size_t(OC) * C), dbias(*backend, OC), dout(*backend, N * OC),
      inp(*backend, N * C), weight(*backend, size_t(OC) * C);
  upload_random(*backend, dbias.data(), OC, 41);
  upload_random(*backend, dout.data(), N * OC, 42);
  upload_random(*backend, inp.data(), N * C, 43);
  upload_random(*backend, weight.data(), size_t(OC) * C, 44);
  backend->matmul_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(), weight.data(), B, T, C,
                           OC);
  return download_as_float(*backend, dbias.data(), OC);
}

// The MLP's two GELU launches on a backend made with `designs` (64 rows, C 64, 4C 256): the fc
// forward's gelu(pre), then the fc projection backward's dinp = (dout W) * gelu'(pre), one after
// the other in one vector.
std::vector<float> mlp_gelu_outputs(const std::optional<std::string>& designs) {
  const int B = 1, T = 64, C = 64, H = 4 * C;
  const size_t N = size_t(B) * T;
  auto backend = backend_with(designs, DType::bf16);
  DeviceTensor inp(*backend, N * C), fcw(*backend, size_t(H) * C), fcb(*backend, H), pre(*backend, N * H),
      out(*backend, N * H), projw(*backend, size_t(C) * H), dout(*backend, N * C), dinp(*backend, N * H),
      dprojw(*backend, size_t(C) * H);
  upload_random(*backend, inp.data(), N * C, 51);
  upload_random(*backend, fcw.data(), size_t(H) * C, 52);
  upload_random(*backend, fcb.data(), H, 53);
  upload_random(*backend, projw.data(), size_t(C) * H, 54);
  upload_random(*backend, dout.data(), N * C, 55);
  backend->matmul_forward_gelu(out.data(), pre.data(), inp.data(), fcw.data(), fcb.data(), B, T, C, H);
  backend->matmul_backward_gelu(dinp.data(), dprojw.data(), nullptr, dout.data(), out.data(), projw.data(),
                                pre.data(), B, T, H, C);
  std::vector<float> values = download_as_float(*backend, out.data(), N * H);
  const std::vector<float> grads = download_as_float(*backend, dinp.data(), N * H);
  values.insert(values.end(), grads.begin(), grads.end());
  return values;
}

// dqkv of one bf16 attention forward and backward (B 1, T rows, NH heads of C / NH) on a backend
// made with `designs`.
std::vector<float> attention_dqkv(const std::optional<std::string>& designs, int T, int C, int NH,
                                  const DropoutParams& dropout = {}) {
  const int B = 1;
  const size_t BT = size_t(B) * T;
  auto backend = backend_with(designs, DType::bf16);
  DeviceTensor qkv(*backend, BT * 3 * C), out(*backend, BT * C), dout(*backend, BT * C), dqkv(*backend, BT * 3 * C);
  DeviceArray<float> lse(*backend, BT * NH);
  upload_random(*backend, qkv.data(), qkv.size(), 31);
  upload_random(*backend, dout.data(), dout.size(), 32);
  backend->attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH, dropout);
  backend->attention_backward(dqkv.data(), dout.data(), lse.data(), qkv.data(), out.data(), B, T, C, NH, dropout);
  return download_as_float(*backend, dqkv.data(), dqkv.size());
}

// dqkv of one flash attention backward at 320 rows and 2 heads of 64: five K/V tiles, enough for
// the two designs' different sums to show in bf16.
std::vector<float> flash_dqkv(const std::optional<std::string>& designs) {
  return attention_dqkv(designs, 320, 128, 2);
}

// One attention forward and backward at 64 rows, NH heads of C / NH.
void attention_pass(const std::optional<std::string>& designs, int C, int NH, const DropoutParams& dropout) {
  attention_dqkv(designs, 64, C, NH, dropout);
}

// One layer's results with no GPT2CC_KERNELS, with its automatic design named, and with the other
// design named: the first two the same bits, the third different bits (the premise: the two designs
// round differently, so equal bits would prove nothing) and close (`what`, tolerance `tol`).
void expect_named_design_taken(const std::vector<float>& automatic, const std::vector<float>& named_default,
                               const std::vector<float>& named_other, const char* what, double tol) {
  CHECK(test::same_bits(automatic, named_default));
  REQUIRE_FALSE(test::same_bits(named_default, named_other));
  test::expect_matches(named_other, named_default, what, tol);
}

}  // namespace

TEST_CASE("GPT2CC_KERNELS: parsed, written back, and refused naming the entry at fault", "[cuda][designs]") {
  const cuda::KernelDesigns none = cuda::parse_kernel_designs("");
  CHECK(none.classifier == FusedClassifier::kAuto);
  CHECK(none.layernorm_backward == LayerNormBackward::kAuto);
  CHECK(none.flash_backward == FlashBackward::kAuto);
  CHECK(none.flash_tile == FlashTile::kAuto);
  CHECK(cuda::kernel_designs_text(none).empty());
  CHECK(cuda::kernel_designs_text(cuda::parse_kernel_designs("classifier=auto, flash-tile=auto")).empty());

  const cuda::KernelDesigns two = cuda::parse_kernel_designs(" flash-tile = 128 , classifier=streamed,");
  CHECK(two.classifier == FusedClassifier::kStreamed);
  CHECK(two.layernorm_backward == LayerNormBackward::kAuto);
  CHECK(two.flash_backward == FlashBackward::kAuto);
  CHECK(two.flash_tile == FlashTile::kRows128);
  CHECK(cuda::kernel_designs_text(two) == "classifier=streamed,flash-tile=128");

  const std::string all =
      "classifier=cached-row,layernorm-backward=two-pass,flash-backward=fused,flash-tile=64,bias-grad=epilogue,"
      "gemm-alignment=16,gemm-split-k=any,gemm-workspace=256,gelu=separate";
  const cuda::KernelDesigns every = cuda::parse_kernel_designs(all);
  CHECK(every.classifier == FusedClassifier::kCachedRow);
  CHECK(every.layernorm_backward == LayerNormBackward::kTwoPass);
  CHECK(every.flash_backward == FlashBackward::kFused);
  CHECK(every.flash_tile == FlashTile::kRows64);
  CHECK(every.bias_gradient == BiasGradient::kEpilogue);
  CHECK(every.gemm_alignment == GemmAlignment::k16);
  CHECK(every.gemm_split_k == GemmSplitK::kAny);
  CHECK(every.gemm_workspace == cuda::GemmWorkspace::k256MiB);
  CHECK(every.gelu == cuda::GeluFusion::kSeparate);
  const cuda::GemmDesign gemm = cuda::gemm_design(every);
  CHECK(gemm.alignment == GemmAlignment::k16);
  CHECK(gemm.split_k == GemmSplitK::kAny);
  CHECK(gemm.bias_gradient == BiasGradient::kEpilogue);
  CHECK(gemm.workspace == cuda::GemmWorkspace::k256MiB);
  CHECK(gemm.gelu == cuda::GeluFusion::kSeparate);
  const cuda::KernelDesigns named_auto =
      cuda::parse_kernel_designs("gemm-alignment=operand,gemm-split-k=fp32,gemm-workspace=32,gelu=epilogue");
  CHECK(named_auto.gemm_alignment == GemmAlignment::kOperand);
  CHECK(named_auto.gemm_split_k == GemmSplitK::kFp32);
  CHECK(named_auto.gemm_workspace == cuda::GemmWorkspace::k32MiB);
  CHECK(named_auto.gelu == cuda::GeluFusion::kEpilogue);
  CHECK(cuda::gemm_design(named_auto).gelu == cuda::GeluFusion::kEpilogue);
  CHECK(cuda::kernel_designs_text(named_auto) ==
        "gemm-alignment=operand,gemm-split-k=fp32,gemm-workspace=32,gelu=epilogue");
  CHECK(cuda::parse_kernel_designs("bias-grad=column-sum").bias_gradient == BiasGradient::kColumnSum);
  CHECK(cuda::kernel_designs_text(every) == all);
  CHECK(cuda::parse_kernel_designs("layernorm-backward=fused,flash-backward=split").layernorm_backward ==
        LayerNormBackward::kFused);

  using Catch::Contains;
  CHECK_THROWS_AS(cuda::parse_kernel_designs("classifier"), InputError);
  CHECK_THROWS_WITH(cuda::parse_kernel_designs("classifier"),
                    Contains("GPT2CC_KERNELS") && Contains("'classifier' is not NAME=VALUE"));
  CHECK_THROWS_WITH(cuda::parse_kernel_designs("flash-tile=64,clasifier=streamed"),
                    Contains("unknown kernel design 'clasifier'") &&
                        Contains("classifier, layernorm-backward, flash-backward, flash-tile, bias-grad, "
                                 "gemm-alignment, gemm-split-k, gemm-workspace, gelu"));
  CHECK_THROWS_WITH(cuda::parse_kernel_designs("classifier=fast"),
                    Contains("classifier=fast is not a design") && Contains("auto | cached-row | streamed"));
  CHECK_THROWS_WITH(cuda::parse_kernel_designs("flash-tile=96"), Contains("auto | 64 | 128"));
  CHECK_THROWS_WITH(cuda::parse_kernel_designs("gemm-alignment=256"), Contains("auto | operand | 16"));
  CHECK_THROWS_WITH(cuda::parse_kernel_designs("gemm-split-k=bf16"), Contains("auto | fp32 | any"));
  CHECK_THROWS_WITH(cuda::parse_kernel_designs("gemm-workspace=64"), Contains("auto | 32 | 256"));
  CHECK_THROWS_WITH(cuda::parse_kernel_designs("gelu=fused"), Contains("auto | epilogue | separate"));
  CHECK_THROWS_WITH(cuda::parse_kernel_designs("flash-backward=split,flash-backward=fused"),
                    Contains("'flash-backward' given twice"));
  CHECK_THROWS_WITH(cuda::parse_kernel_designs("classifier=streamed,,flash-tile=64"), Contains("is not NAME=VALUE"));
}

TEST_CASE("a cuda backend takes the kernel designs GPT2CC_KERNELS names", "[cuda][backend][designs]") {
  SECTION("malformed: refused when the backend is made, naming the variable") {
    CHECK_THROWS_AS(backend_with("classifier=quick", DType::fp32), InputError);
    CHECK_THROWS_WITH(backend_with("classifier=quick", DType::fp32), Catch::Contains("GPT2CC_KERNELS"));
  }
  SECTION("named in the description; none named, none listed") {
    CHECK_THAT(backend_with("layernorm-backward=two-pass,classifier=streamed", DType::fp32)->describe(),
               Catch::EndsWith("; kernel designs classifier=streamed,layernorm-backward=two-pass"));
    CHECK_THAT(backend_with(std::nullopt, DType::fp32)->describe(), !Catch::Contains("kernel designs"));
    CHECK_THAT(backend_with("", DType::fp32)->describe(), !Catch::Contains("kernel designs"));
  }
  SECTION("classifier=cached-row: a row beyond the device's shared memory is refused, auto streams it") {
    const int V = 65536, Vp = 65536;  // 256 KiB of fp32 a row: above every device's opt-in limit
    for (const char* designs : {"classifier=cached-row", "classifier=auto"}) {
      auto backend = backend_with(designs, DType::fp32);
      DeviceArray<float> logits(*backend, Vp), losses(*backend, 1);
      DeviceArray<int> targets(*backend, 1);
      const auto run = [&] {
        backend->fused_classifier(logits.data(), losses.data(), targets.data(), 1.0f, 1, 1, V, Vp);
      };
      if (std::string(designs) == "classifier=auto") {
        run();
        std::vector<float> loss(1);
        backend->download(loss.data(), losses.data(), sizeof(float));
        CHECK(loss[0] == Approx(std::log(double(V))).epsilon(1e-5));  // all-zero logits: uniform
      } else {
        // The user's setting, not an internal check: exit 2 from a CLI.
        CHECK_THROWS_AS(run(), InputError);
        CHECK_THROWS_WITH(run(), Catch::Contains("cached-row fused classifier (GPT2CC_KERNELS classifier=cached-row) "
                                                 "needs"));
      }
    }
  }
  SECTION("layernorm-backward=fused: C above its limit is refused, auto takes the two-pass kernels") {
    const int B = 1, T = 3, C = 1032;  // the fused kernel holds C <= 1024
    for (const char* designs : {"layernorm-backward=fused", "layernorm-backward=auto"}) {
      auto backend = backend_with(designs, DType::fp32);
      const size_t N = size_t(B) * T * C;
      DeviceTensor dinp(*backend, N), dout(*backend, N), inp(*backend, N), weight(*backend, C),
          dweight(*backend, C), dbias(*backend, C);
      DeviceArray<float> mean(*backend, size_t(B) * T), rstd(*backend, size_t(B) * T);
      const auto run = [&] {
        backend->layernorm_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), mean.data(), rstd.data(),
                                    inp.data(), weight.data(), B, T, C);
        backend->synchronize();
      };
      if (std::string(designs) == "layernorm-backward=auto") {
        CHECK_NOTHROW(run());
      } else {
        CHECK_THROWS_AS(run(), InputError);
        CHECK_THROWS_WITH(run(), Catch::Contains("fused design (GPT2CC_KERNELS layernorm-backward=fused) needs"));
      }
    }
  }
  SECTION("bias-grad=epilogue: bf16 only; the named design's bits (auto is column-sum)") {
    CHECK_THROWS_WITH(backend_with("bias-grad=epilogue", DType::fp32),
                      Catch::Contains("bias-grad=epilogue is a design of the bf16 GEMMs"));
    if (test::device_dtypes().size() < 2) {
      WARN("no bf16 on this device: the bias-gradient designs are not compared");
      return;
    }
    expect_named_design_taken(matmul_dbias(std::nullopt), matmul_dbias("bias-grad=column-sum"),
                              matmul_dbias("bias-grad=epilogue"), "epilogue vs column-sum dbias", 1e-2);
  }
  SECTION("gemm-alignment, gemm-split-k, gemm-workspace, gelu: bf16 only") {
    for (const char* designs : {"gemm-alignment=16", "gemm-split-k=any", "gemm-alignment=operand", "gemm-workspace=256",
                                "gelu=separate", "gelu=epilogue"})
      CHECK_THROWS_WITH(backend_with(designs, DType::fp32),
                        Catch::Contains("gemm-alignment, gemm-split-k, gemm-workspace and gelu are designs of the "
                                        "bf16 GEMMs"));
    CHECK_NOTHROW(backend_with("gemm-alignment=auto,gemm-split-k=auto,gemm-workspace=auto,gelu=auto", DType::fp32));
  }
  SECTION("flash-tile, flash-backward: bf16 only") {
    for (const char* designs : {"flash-tile=64", "flash-tile=128", "flash-backward=fused", "flash-backward=split"})
      CHECK_THROWS_WITH(backend_with(designs, DType::fp32),
                        Catch::Contains("flash-tile and flash-backward are designs of the bf16 flash attention"));
    CHECK_NOTHROW(backend_with("flash-tile=auto,flash-backward=auto", DType::fp32));
  }
  SECTION("flash-tile, flash-backward where the tiled attention runs: refused there, naming why") {
    if (test::device_dtypes().size() < 2) {
      WARN("no bf16 on this device: fp32's refusal of the flash designs is checked above");
      return;
    }
    const DropoutParams dropout{0.1f, 7, 1};
    for (const char* designs : {"flash-tile=64", "flash-backward=split"}) {
      INFO(designs);
      CHECK_THROWS_AS(attention_pass(designs, 128, 2, dropout), InputError);
      CHECK_THROWS_WITH(attention_pass(designs, 128, 2, dropout),
                        Catch::Contains("attention dropout (--dropout above 0) runs the tiled attention"));
      CHECK_THROWS_WITH(attention_pass(designs, 64, 2, DropoutParams{}),
                        Catch::Contains("head size 32 runs the tiled attention"));
      if (cuda::flash_attention_fits_device(64))
        CHECK_NOTHROW(attention_pass(designs, 128, 2, DropoutParams{}));
      else  // a build without flash code for the device (CTest emu_cuda_model_sm75_code)
        CHECK_THROWS_WITH(attention_pass(designs, 128, 2, DropoutParams{}),
                          Catch::Contains("has no sm_80 or newer code for device"));
    }
    CHECK_NOTHROW(attention_pass("flash-tile=auto,flash-backward=auto", 128, 2, dropout));
    CHECK_NOTHROW(attention_pass(std::nullopt, 64, 2, DropoutParams{}));
  }
  SECTION("gelu: the named design's bits (auto is epilogue)") {
    if (test::device_dtypes().size() < 2) {
      WARN("no bf16 on this device: the GELU designs are not compared");
      return;
    }
    expect_named_design_taken(mlp_gelu_outputs(std::nullopt), mlp_gelu_outputs("gelu=epilogue"),
                              mlp_gelu_outputs("gelu=separate"), "separate vs epilogue GELU", 1e-2);
  }
  SECTION("flash-backward: the named design's bits (auto is split)") {
    // Flash needs bf16 (sm_80) and this build's sm_80+ code for the device (a T4, or a build for
    // sm_75 alone, runs the tiled attention: CTest emu_cuda_model_t4, emu_cuda_model_sm75_code).
    if (test::device_dtypes().size() < 2 || !cuda::flash_attention_fits_device(64)) {
      WARN("no flash attention on this device in this build: the flash backward designs are not compared");
      return;
    }
    expect_named_design_taken(flash_dqkv(std::nullopt), flash_dqkv("flash-backward=split"),
                              flash_dqkv("flash-backward=fused,flash-tile=64"), "fused vs split flash backward", 2e-2);
  }
}
