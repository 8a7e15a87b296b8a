// bf16 encoder, LayerNorm, GELU, residual and dropout kernels, and the fused residual + LayerNorm
// (float and bf16), against the cpu:: references run on the SAME bf16-rounded inputs (issue 8):
// relative L2 error <= 1e-2, and element-wise within one bf16 rounding (2^-8 relative) where the
// kernel only rounds its float result once. Shapes take every launcher branch: 16-byte packs
// (C % 8 == 0, aligned), the scalar fallback (C = 36, 37, pointers offset by one element), the
// uncached LayerNorm for rows beyond the shared-memory cache (C = 12800), T = 1 and odd B.
// Backward: parameter grads and the residual stream accumulate (+=), checked by a second call; the
// encoder's and LayerNorm's parameter grads also in fp32 (a bf16 model's fp32 gradients).
#include "common/catch.hpp"

#include <algorithm>

#include "bf16_test_util.hpp"
#include "cpu/dropout.hpp"
#include "cpu/encoder.hpp"
#include "cpu/gelu.hpp"
#include "cpu/layernorm.hpp"
#include "cpu/residual.hpp"
#include "kernels/dropout.cuh"
#include "kernels/encoder.cuh"
#include "kernels/gelu.cuh"
#include "kernels/layernorm.cuh"
#include "kernels/residual.cuh"

using namespace gpt2cc;
using test::bf16;
using test::DeviceBuffer;
using test::expect_one_rounding;
using test::rounded_random;

namespace {

// The last n values of v (drops the `offset` padding elements that misalign a pointer).
std::vector<float> tail(const std::vector<float>& v, size_t n) {
  return std::vector<float>(v.end() - static_cast<std::ptrdiff_t>(n), v.end());
}
std::vector<float> padded(const std::vector<float>& v, size_t offset, float fill = 0.0f) {
  std::vector<float> r(offset, fill);
  r.insert(r.end(), v.begin(), v.end());
  return r;
}

// start + k * (once - start): the value after k identical accumulating calls.
std::vector<float> repeated(const std::vector<float>& start, const std::vector<float>& once, float k) {
  std::vector<float> r(start.size());
  for (size_t i = 0; i < r.size(); ++i) r[i] = start[i] + k * (once[i] - start[i]);
  return r;
}

std::vector<float> scaled(std::vector<float> v, float s) {
  for (float& x : v) x *= s;
  return test::round_to_bf16(v);
}

}  // namespace

TEST_CASE("bf16 encoder forward and backward match cpu", "[cuda][bf16][encoder]") {
  struct Shape {
    int B, T, C, Vp;
  };
  // C = 8, 768: 16-byte packs; C = 36, 2100: scalar (2100: nine channel tiles of the dwte kernel).
  const Shape shape = GENERATE(Shape{1, 1, 8, 16}, Shape{3, 1, 36, 4}, Shape{5, 33, 36, 50}, Shape{2, 9, 2100, 6},
                               Shape{4, 64, 768, 500});
  const int B = shape.B, T = shape.T, C = shape.C, Vp = shape.Vp;
  INFO("B=" << B << " T=" << T << " C=" << C << " Vp=" << Vp);
  const size_t BTC = size_t(B) * T * C;
  const auto inp = test::random_tokens(size_t(B) * T, 41 + C, Vp);  // few tokens: shared dwte rows
  const auto wte = rounded_random(size_t(Vp) * C, 42), wpe = rounded_random(size_t(T) * C, 43);
  const auto dout = rounded_random(BTC, 44);
  // Small starting grads, so the increment dominates and a "=" instead of "+=" shows.
  const auto dwte0 = scaled(test::random_vector(wte.size(), 45), 0.1f);
  const auto dwpe0 = scaled(test::random_vector(wpe.size(), 46), 0.1f);
  cudaStream_t stream = test::test_stream();

  std::vector<float> out(BTC);
  cpu::encoder_forward(out.data(), inp.data(), wte.data(), wpe.data(), B, T, C);
  DeviceBuffer<int> d_inp(inp);
  auto d_wte = test::device_bf16(wte), d_wpe = test::device_bf16(wpe), d_dout = test::device_bf16(dout);
  auto d_dwte = test::device_bf16(dwte0), d_dwpe = test::device_bf16(dwpe0);
  DeviceBuffer<bf16> d_out(BTC);
  d_out.poison();
  cuda::encoder_forward(d_out.get(), d_inp.get(), d_wte.get(), d_wpe.get(), B, T, C, stream);
  expect_one_rounding(test::download_float(d_out), out, "bf16 encoder out");

  std::vector<float> dwte = dwte0, dwpe = dwpe0;
  cpu::encoder_backward(dwte.data(), dwpe.data(), dout.data(), inp.data(), B, T, C);
  cuda::encoder_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_inp.get(), B, T, C, stream);
  // float sums in a fixed order, then one rounding per element per call.
  expect_one_rounding(test::download_float(d_dwte), dwte, "bf16 dwte");
  expect_one_rounding(test::download_float(d_dwpe), dwpe, "bf16 dwpe");

  cuda::encoder_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_inp.get(), B, T, C, stream);
  test::expect_rel_l2(test::download_float(d_dwte), repeated(dwte0, dwte, 2.0f), 1e-2, "bf16 dwte after two calls");
  test::expect_rel_l2(test::download_float(d_dwpe), repeated(dwpe0, dwpe, 2.0f), 1e-2, "bf16 dwpe after two calls");
}

TEST_CASE("bf16 encoder backward is bit-for-bit repeatable", "[cuda][bf16][encoder][determinism]") {
  const int B = 8, T = 512, C = 96, Vp = 20;  // 4096 positions: the merge passes too
  const auto inp = test::random_tokens(size_t(B) * T, 47, Vp);
  DeviceBuffer<int> d_inp(inp);
  auto d_dout = test::device_bf16(rounded_random(size_t(B) * T * C, 48));
  DeviceBuffer<bf16> d_dwte(size_t(Vp) * C), d_dwpe(size_t(T) * C);
  std::vector<float> first_wte, first_wpe;
  for (int run = 0; run < 2; ++run) {
    d_dwte.zero();
    d_dwpe.zero();
    cuda::encoder_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_inp.get(), B, T, C, test::test_stream());
    if (run == 0) {
      first_wte = test::download_float(d_dwte);
      first_wpe = test::download_float(d_dwpe);
    } else {
      CHECK(test::same_bits(test::download_float(d_dwte), first_wte));
      CHECK(test::same_bits(test::download_float(d_dwpe), first_wpe));
    }
  }
}

// A bf16 model's gradients in fp32 (ModelOptions::fp32_gradients): the same float sums as the bf16
// kernel's, added unrounded. From a start that is not bf16, within fp32's error of the CPU's fp32
// backward, over two accumulating calls; from a bf16 start, each sum's rounding is the bf16
// kernel's result, bit for bit.
TEST_CASE("bf16 encoder backward into fp32 gradients adds its sums unrounded", "[cuda][bf16][encoder]") {
  struct Shape {
    int B, T, C, Vp;
  };
  const auto [B, T, C, Vp] = GENERATE(Shape{3, 1, 36, 4}, Shape{5, 33, 36, 50}, Shape{4, 64, 768, 500});
  INFO("B=" << B << " T=" << T << " C=" << C << " Vp=" << Vp);
  const size_t BTC = size_t(B) * T * C;
  const auto inp = test::random_tokens(size_t(B) * T, 141 + C, Vp);
  const auto dout = rounded_random(BTC, 144);
  auto dwte0 = scaled(test::random_vector(size_t(Vp) * C, 145), 0.1f);
  auto dwpe0 = scaled(test::random_vector(size_t(T) * C, 146), 0.1f);
  DeviceBuffer<int> d_inp(inp);
  auto d_dout = test::device_bf16(dout);
  cudaStream_t stream = test::test_stream();

  // From the bf16 start: rounded, the bf16 kernel's result.
  DeviceBuffer<float> d_dwte(dwte0), d_dwpe(dwpe0);
  auto d_dwte16 = test::device_bf16(dwte0), d_dwpe16 = test::device_bf16(dwpe0);
  cuda::encoder_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_inp.get(), B, T, C, stream);
  cuda::encoder_backward(d_dwte16.get(), d_dwpe16.get(), d_dout.get(), d_inp.get(), B, T, C, stream);
  CHECK(test::same_bits(test::round_to_bf16(d_dwte.download()), test::download_float(d_dwte16)));
  CHECK(test::same_bits(test::round_to_bf16(d_dwpe.download()), test::download_float(d_dwpe16)));

  // From a start bf16 cannot hold: the fp32 sums.
  for (float& x : dwte0) x *= 1.0f + 1.0f / 1024;
  for (float& x : dwpe0) x *= 1.0f + 1.0f / 1024;
  std::vector<float> dwte = dwte0, dwpe = dwpe0;
  cpu::encoder_backward(dwte.data(), dwpe.data(), dout.data(), inp.data(), B, T, C);
  d_dwte.upload(dwte0);
  d_dwpe.upload(dwpe0);
  cuda::encoder_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_inp.get(), B, T, C, stream);
  test::expect_matches(d_dwte.download(), dwte, "fp32 dwte", 1e-5);
  test::expect_matches(d_dwpe.download(), dwpe, "fp32 dwpe", 1e-5);
  size_t unrounded = 0;
  for (float x : d_dwte.download()) unrounded += test::round_to_bf16(x) != x;
  CHECK(unrounded > dwte.size() / 2);
  cuda::encoder_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_inp.get(), B, T, C, stream);
  test::expect_matches(d_dwte.download(), repeated(dwte0, dwte, 2.0f), "fp32 dwte after two calls", 1e-5);
  test::expect_matches(d_dwpe.download(), repeated(dwpe0, dwpe, 2.0f), "fp32 dwpe after two calls", 1e-5);
}

namespace {
struct LnShape {
  int B, T, C;
  size_t offset;  // elements before every tensor: 1 misaligns the 16-byte packs
};
}  // namespace

TEST_CASE("bf16 layernorm forward and backward match cpu", "[cuda][bf16][layernorm]") {
  // 8, 768, 1600: packed; 36, 37 and offset 1: scalar; 12800: beyond the row cache (uncached kernel).
  const LnShape shape = GENERATE(LnShape{1, 1, 8, 0}, LnShape{3, 1, 36, 0}, LnShape{5, 13, 37, 0},
                                 LnShape{4, 64, 768, 0}, LnShape{3, 7, 768, 1}, LnShape{1, 3, 1600, 0},
                                 LnShape{1, 2, 12800, 0});
  const int B = shape.B, T = shape.T, C = shape.C;
  const size_t o = shape.offset;
  INFO("B=" << B << " T=" << T << " C=" << C << " offset=" << o);
  const size_t N = size_t(B) * T * C, rows = size_t(B) * T;
  auto inp = test::random_vector(N, 51, -2.0f, 2.0f);
  for (float& x : inp) x += 3.0f;  // a non-zero mean, as in the residual stream
  inp = test::round_to_bf16(inp);
  const auto weight = rounded_random(C, 52, 0.5f, 1.5f), bias = rounded_random(C, 53);
  const auto dout = rounded_random(N, 54);
  const auto dinp0 = scaled(test::random_vector(N, 55), 0.1f);
  const auto dweight0 = scaled(test::random_vector(C, 56), 0.1f), dbias0 = scaled(test::random_vector(C, 57), 0.1f);
  cudaStream_t stream = test::test_stream();

  std::vector<float> out(N), mean(rows), rstd(rows);
  cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), weight.data(), bias.data(), B, T, C);
  auto d_inp = test::device_bf16(padded(inp, o)), d_weight = test::device_bf16(padded(weight, o));
  auto d_bias = test::device_bf16(padded(bias, o));
  DeviceBuffer<bf16> d_out(N + o);
  DeviceBuffer<float> d_mean(rows), d_rstd(rows);
  d_out.poison();
  d_mean.poison();
  d_rstd.poison();
  cuda::layernorm_forward(d_out.get() + o, d_mean.get(), d_rstd.get(), d_inp.get() + o, d_weight.get() + o,
                          d_bias.get() + o, B, T, C, stream);
  expect_one_rounding(tail(test::download_float(d_out), N), out, "bf16 layernorm out");
  test::expect_matches(d_mean.download(), mean, "bf16 layernorm mean", 1e-4);
  test::expect_matches(d_rstd.download(), rstd, "bf16 layernorm rstd", 1e-4);

  std::vector<float> dinp = dinp0, dweight = dweight0, dbias = dbias0;
  cpu::layernorm_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), mean.data(), rstd.data(),
                          inp.data(), weight.data(), B, T, C);
  auto d_dinp = test::device_bf16(padded(dinp0, o)), d_dout = test::device_bf16(padded(dout, o));
  auto d_dweight = test::device_bf16(dweight0), d_dbias = test::device_bf16(dbias0);
  cuda::layernorm_backward(d_dinp.get() + o, d_dweight.get(), d_dbias.get(), d_dout.get() + o, d_mean.get(),
                           d_rstd.get(), d_inp.get() + o, d_weight.get() + o, B, T, C, stream);
  // dinp = bf16(dinp0 + dx): one rounding. dweight/dbias: float column sums over B*T rows in another
  // order than the CPU's, then one rounding: a larger absolute floor for the sums' float error.
  expect_one_rounding(tail(test::download_float(d_dinp), N), dinp, "bf16 layernorm dinp (+=)", 1e-4);
  expect_one_rounding(test::download_float(d_dweight), dweight, "bf16 layernorm dweight", 1e-4);
  expect_one_rounding(test::download_float(d_dbias), dbias, "bf16 layernorm dbias", 1e-4);

  cuda::layernorm_backward(d_dinp.get() + o, d_dweight.get(), d_dbias.get(), d_dout.get() + o, d_mean.get(),
                           d_rstd.get(), d_inp.get() + o, d_weight.get() + o, B, T, C, stream);
  test::expect_rel_l2(tail(test::download_float(d_dinp), N), repeated(dinp0, dinp, 2.0f), 1e-2,
                      "bf16 dinp after two calls (residual stream accumulates)");
  test::expect_rel_l2(test::download_float(d_dweight), repeated(dweight0, dweight, 2.0f), 1e-2,
                      "bf16 dweight after two calls");
  test::expect_rel_l2(test::download_float(d_dbias), repeated(dbias0, dbias, 2.0f), 1e-2,
                      "bf16 dbias after two calls");
}

// LayerNorm's dweight / dbias in fp32 (a bf16 model's fp32 gradients), both designs: dinp is the
// bf16 backward's bit for bit; the parameter gradients are its column sums unrounded (from a bf16
// start, rounded, its results bit for bit; from another start, fp32's error of the CPU's backward,
// over two accumulating calls).
TEST_CASE("bf16 layernorm backward into fp32 gradients adds its sums unrounded", "[cuda][bf16][layernorm]") {
  const LnShape shape = GENERATE(LnShape{5, 13, 37, 0}, LnShape{4, 64, 768, 0}, LnShape{3, 7, 768, 1});
  const cuda::LayerNormBackward design = GENERATE(cuda::LayerNormBackward::kAuto, cuda::LayerNormBackward::kTwoPass);
  const int B = shape.B, T = shape.T, C = shape.C;
  const size_t o = shape.offset;
  INFO("B=" << B << " T=" << T << " C=" << C << " offset=" << o << " two-pass="
            << (design == cuda::LayerNormBackward::kTwoPass));
  const size_t N = size_t(B) * T * C, rows = size_t(B) * T;
  auto inp = test::random_vector(N, 151, -2.0f, 2.0f);
  for (float& x : inp) x += 3.0f;
  inp = test::round_to_bf16(inp);
  const auto weight = rounded_random(C, 152, 0.5f, 1.5f), bias = rounded_random(C, 153);
  const auto dout = rounded_random(N, 154), dinp0 = scaled(test::random_vector(N, 155), 0.1f);
  auto dweight0 = scaled(test::random_vector(C, 156), 0.1f), dbias0 = scaled(test::random_vector(C, 157), 0.1f);
  cudaStream_t stream = test::test_stream();
  auto d_inp = test::device_bf16(padded(inp, o)), d_weight = test::device_bf16(padded(weight, o));
  auto d_bias = test::device_bf16(padded(bias, o)), d_dout = test::device_bf16(padded(dout, o));
  DeviceBuffer<bf16> d_out(N + o);
  DeviceBuffer<float> d_mean(rows), d_rstd(rows);
  cuda::layernorm_forward(d_out.get() + o, d_mean.get(), d_rstd.get(), d_inp.get() + o, d_weight.get() + o,
                          d_bias.get() + o, B, T, C, stream);
  const auto mean = d_mean.download(), rstd = d_rstd.download();
  auto backward = [&](auto& d_dinp, auto* dweight, auto* dbias) {
    cuda::layernorm_backward(d_dinp.get() + o, dweight, dbias, d_dout.get() + o, d_mean.get(), d_rstd.get(),
                             d_inp.get() + o, d_weight.get() + o, B, T, C, stream, design);
  };

  auto d_dinp = test::device_bf16(padded(dinp0, o)), d_dinp16 = test::device_bf16(padded(dinp0, o));
  DeviceBuffer<float> d_dweight(dweight0), d_dbias(dbias0);
  auto d_dweight16 = test::device_bf16(dweight0), d_dbias16 = test::device_bf16(dbias0);
  backward(d_dinp, d_dweight.get(), d_dbias.get());
  backward(d_dinp16, d_dweight16.get(), d_dbias16.get());
  CHECK(test::same_bits(test::download_float(d_dinp), test::download_float(d_dinp16)));
  CHECK(test::same_bits(test::round_to_bf16(d_dweight.download()), test::download_float(d_dweight16)));
  CHECK(test::same_bits(test::round_to_bf16(d_dbias.download()), test::download_float(d_dbias16)));

  for (float& x : dweight0) x *= 1.0f + 1.0f / 1024;
  for (float& x : dbias0) x *= 1.0f + 1.0f / 1024;
  std::vector<float> dinp = dinp0, dweight = dweight0, dbias = dbias0;
  cpu::layernorm_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), mean.data(), rstd.data(),
                          inp.data(), weight.data(), B, T, C);
  d_dweight.upload(dweight0);
  d_dbias.upload(dbias0);
  backward(d_dinp, d_dweight.get(), d_dbias.get());
  // Column sums over B*T rows in another order than the CPU's: fp32's error, a little slack.
  test::expect_matches(d_dweight.download(), dweight, "fp32 layernorm dweight", 2e-5);
  test::expect_matches(d_dbias.download(), dbias, "fp32 layernorm dbias", 2e-5);
  backward(d_dinp, d_dweight.get(), d_dbias.get());
  test::expect_matches(d_dweight.download(), repeated(dweight0, dweight, 2.0f), "fp32 dweight after two calls", 2e-5);
  test::expect_matches(d_dbias.download(), repeated(dbias0, dbias, 2.0f), "fp32 dbias after two calls", 2e-5);
}

TEST_CASE("fused residual + layernorm (float) matches the unfused pair", "[cuda][layernorm][fused]") {
  // float packs need C % 4 == 0: 8, 36, 768, 1600 packed; 37 and offset 1 scalar; 12800 unfused fallback.
  const LnShape shape = GENERATE(LnShape{1, 1, 8, 0}, LnShape{3, 1, 36, 0}, LnShape{5, 13, 37, 0},
                                 LnShape{4, 64, 768, 0}, LnShape{3, 7, 768, 1}, LnShape{1, 3, 1600, 0},
                                 LnShape{1, 2, 12800, 0});
  const int B = shape.B, T = shape.T, C = shape.C;
  const size_t o = shape.offset;
  INFO("B=" << B << " T=" << T << " C=" << C << " offset=" << o);
  const size_t N = size_t(B) * T * C, rows = size_t(B) * T;
  auto inp1 = test::random_vector(N, 61, -2.0f, 2.0f);
  for (float& x : inp1) x += 3.0f;
  const auto inp2 = test::random_vector(N, 62);
  const auto weight = test::random_vector(C, 63, 0.5f, 1.5f), bias = test::random_vector(C, 64);
  cudaStream_t stream = test::test_stream();

  std::vector<float> residual(N), out(N), mean(rows), rstd(rows);
  cpu::residual_forward(residual.data(), inp1.data(), inp2.data(), N);
  cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), residual.data(), weight.data(), bias.data(), B, T, C);

  DeviceBuffer<float> d_inp1(padded(inp1, o)), d_inp2(padded(inp2, o)), d_weight(padded(weight, o)),
      d_bias(padded(bias, o)), d_residual(N + o), d_out(N + o), d_mean(rows), d_rstd(rows);
  d_residual.poison();
  d_out.poison();
  d_mean.poison();
  d_rstd.poison();
  cuda::residual_layernorm_forward(d_residual.get() + o, d_out.get() + o, d_mean.get(), d_rstd.get(),
                                   d_inp1.get() + o, d_inp2.get() + o, d_weight.get() + o, d_bias.get() + o, B, T,
                                   C, stream);
  const auto g_residual = tail(d_residual.download(), N), g_out = tail(d_out.download(), N);
  const auto g_mean = d_mean.download(), g_rstd = d_rstd.download();
  test::expect_matches(g_residual, residual, "fused residual", 1e-5);
  test::expect_matches(g_out, out, "fused out", 1e-5);
  test::expect_matches(g_mean, mean, "fused mean", 1e-5);
  test::expect_matches(g_rstd, rstd, "fused rstd", 1e-5);

  // Against the GPU's own unfused kernels: the same values up to the order of the row sums.
  DeviceBuffer<float> d_residual2(N), d_out2(N), d_mean2(rows), d_rstd2(rows);
  cuda::residual_forward(d_residual2.get(), d_inp1.get() + o, d_inp2.get() + o, N, stream);
  cuda::layernorm_forward(d_out2.get(), d_mean2.get(), d_rstd2.get(), d_residual2.get(), d_weight.get() + o,
                          d_bias.get() + o, B, T, C, stream);
  CHECK(test::same_bits(g_residual, d_residual2.download()));
  test::expect_matches(g_out, d_out2.download(), "fused out vs cuda unfused", 2e-6);
  test::expect_matches(g_mean, d_mean2.download(), "fused mean vs cuda unfused", 2e-6);
  test::expect_matches(g_rstd, d_rstd2.download(), "fused rstd vs cuda unfused", 2e-6);
}

TEST_CASE("fused residual + layernorm (bf16) matches cpu on the rounded residual", "[cuda][bf16][layernorm][fused]") {
  const LnShape shape = GENERATE(LnShape{1, 1, 8, 0}, LnShape{3, 1, 36, 0}, LnShape{5, 13, 37, 0},
                                 LnShape{4, 64, 768, 0}, LnShape{3, 7, 768, 1}, LnShape{1, 3, 1600, 0},
                                 LnShape{1, 2, 12800, 0});
  const int B = shape.B, T = shape.T, C = shape.C;
  const size_t o = shape.offset;
  INFO("B=" << B << " T=" << T << " C=" << C << " offset=" << o);
  const size_t N = size_t(B) * T * C, rows = size_t(B) * T;
  auto inp1 = test::random_vector(N, 71, -2.0f, 2.0f);
  for (float& x : inp1) x += 3.0f;
  inp1 = test::round_to_bf16(inp1);
  const auto inp2 = rounded_random(N, 72);
  const auto weight = rounded_random(C, 73, 0.5f, 1.5f), bias = rounded_random(C, 74);
  cudaStream_t stream = test::test_stream();

  // The CPU reference normalises the residual as stored in bf16: the float sum, rounded once.
  std::vector<float> residual(N), out(N), mean(rows), rstd(rows);
  cpu::residual_forward(residual.data(), inp1.data(), inp2.data(), N);
  residual = test::round_to_bf16(residual);
  cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), residual.data(), weight.data(), bias.data(), B, T, C);

  auto d_inp1 = test::device_bf16(padded(inp1, o)), d_inp2 = test::device_bf16(padded(inp2, o));
  auto d_weight = test::device_bf16(padded(weight, o)), d_bias = test::device_bf16(padded(bias, o));
  DeviceBuffer<bf16> d_residual(N + o), d_out(N + o);
  DeviceBuffer<float> d_mean(rows), d_rstd(rows);
  d_residual.poison();
  d_out.poison();
  d_mean.poison();
  d_rstd.poison();
  cuda::residual_layernorm_forward(d_residual.get() + o, d_out.get() + o, d_mean.get(), d_rstd.get(),
                                   d_inp1.get() + o, d_inp2.get() + o, d_weight.get() + o, d_bias.get() + o, B, T,
                                   C, stream);
  const auto g_residual = tail(test::download_float(d_residual), N);
  const auto g_out = tail(test::download_float(d_out), N);
  // The same float addition and the same round-to-nearest-even on both sides: bit-identical.
  CHECK(test::same_bits(g_residual, residual));
  expect_one_rounding(g_out, out, "bf16 fused out");
  test::expect_matches(d_mean.download(), mean, "bf16 fused mean (of the stored residual)", 1e-4);
  test::expect_matches(d_rstd.download(), rstd, "bf16 fused rstd (of the stored residual)", 1e-4);

  // The unfused bf16 pair on the GPU gives the same residual and statistics.
  DeviceBuffer<bf16> d_residual2(N), d_out2(N);
  DeviceBuffer<float> d_mean2(rows), d_rstd2(rows);
  cuda::residual_forward(d_residual2.get(), d_inp1.get() + o, d_inp2.get() + o, N, stream);
  cuda::layernorm_forward(d_out2.get(), d_mean2.get(), d_rstd2.get(), d_residual2.get(), d_weight.get() + o,
                          d_bias.get() + o, B, T, C, stream);
  CHECK(test::same_bits(g_residual, test::download_float(d_residual2)));
  test::expect_matches(d_mean.download(), d_mean2.download(), "bf16 fused mean vs cuda unfused", 2e-6);
  test::expect_matches(d_rstd.download(), d_rstd2.download(), "bf16 fused rstd vs cuda unfused", 2e-6);
  expect_one_rounding(g_out, test::download_float(d_out2), "bf16 fused out vs cuda unfused", 1e-5, 2);
}

namespace {
struct Case {
  size_t N;
  size_t offset;  // elements past an aligned allocation: 1 makes every pointer misaligned
};
}  // namespace

TEST_CASE("bf16 gelu matches cpu", "[cuda][bf16][gelu]") {
  // 1000 and 98304: 16-byte packs (N % 8 == 0); 1, 1001 and offset 1: scalar.
  const Case c = GENERATE(Case{1, 0}, Case{1000, 0}, Case{1001, 0}, Case{1000, 1}, Case{4 * 8 * 1024 * 3, 0});
  INFO("N=" << c.N << " offset=" << c.offset);
  const size_t o = c.offset;
  const auto inp = rounded_random(c.N, 81, -4.0f, 4.0f), dout = rounded_random(c.N, 82);
  std::vector<float> out(c.N), dinp(c.N);
  cpu::gelu_forward(out.data(), inp.data(), c.N);
  cpu::gelu_backward(dinp.data(), dout.data(), inp.data(), c.N);
  auto d_inp = test::device_bf16(padded(inp, o)), d_dout = test::device_bf16(padded(dout, o));
  DeviceBuffer<bf16> d_out(c.N + o), d_dinp(c.N + o);
  d_out.poison();
  d_dinp.poison();
  cuda::gelu_forward(d_out.get() + o, d_inp.get() + o, c.N, test::test_stream());
  cuda::gelu_backward(d_dinp.get() + o, d_dout.get() + o, d_inp.get() + o, c.N, test::test_stream());
  expect_one_rounding(tail(test::download_float(d_out), c.N), out, "bf16 gelu out");
  expect_one_rounding(tail(test::download_float(d_dinp), c.N), dinp, "bf16 gelu dinp");

  // In place (out == inp) is allowed for the forward.
  cuda::gelu_forward(d_inp.get() + o, d_inp.get() + o, c.N, test::test_stream());
  expect_one_rounding(tail(test::download_float(d_inp), c.N), out, "bf16 gelu out in place");
}

TEST_CASE("bf16 residual matches cpu", "[cuda][bf16][residual]") {
  const Case c = GENERATE(Case{1, 0}, Case{1000, 0}, Case{1001, 0}, Case{1000, 1}, Case{4 * 8 * 1024 * 3, 0});
  INFO("N=" << c.N << " offset=" << c.offset);
  const size_t o = c.offset, N = c.N;
  const auto a = rounded_random(N, 83), b = rounded_random(N, 84), dout = rounded_random(N, 85);
  const auto da0 = rounded_random(N, 86), db0 = rounded_random(N, 87);
  std::vector<float> out(N), da = da0, db = db0;
  cpu::residual_forward(out.data(), a.data(), b.data(), N);
  cpu::residual_backward(da.data(), db.data(), dout.data(), N);
  auto d_a = test::device_bf16(padded(a, o)), d_b = test::device_bf16(padded(b, o));
  // The padding elements are sentinels: an accumulation that spills into them changes 7 into 8.
  auto d_dout = test::device_bf16(padded(dout, o, 1.0f));
  auto d_da = test::device_bf16(padded(da0, o, 7.0f)), d_db = test::device_bf16(padded(db0, o));
  DeviceBuffer<bf16> d_out(N + o);
  d_out.poison();
  cuda::residual_forward(d_out.get() + o, d_a.get() + o, d_b.get() + o, N, test::test_stream());
  cuda::residual_backward(d_da.get() + o, d_db.get() + o, d_dout.get() + o, N, test::test_stream());
  // float sums of bf16 values, rounded once: exactly the CPU's float sums rounded.
  CHECK(test::same_bits(tail(test::download_float(d_out), N), test::round_to_bf16(out)));
  CHECK(test::same_bits(tail(test::download_float(d_da), N), test::round_to_bf16(da)));
  CHECK(test::same_bits(tail(test::download_float(d_db), N), test::round_to_bf16(db)));
  expect_one_rounding(tail(test::download_float(d_out), N), out, "bf16 residual out");
  expect_one_rounding(tail(test::download_float(d_da), N), da, "bf16 residual dinp1 (+=)");
  const auto g_da = test::download_float(d_da);
  CHECK(std::all_of(g_da.begin(), g_da.begin() + static_cast<std::ptrdiff_t>(o), [](float x) { return x == 7.0f; }));

  // inp2 in fp32 (a sum kept in fp32, core/backend.hpp): its values unrounded, added with one
  // rounding, through 4-element packs where N and the pointers allow them.
  std::vector<float> b32(N), out32(N);
  for (size_t i = 0; i < N; ++i) b32[i] = b[i] * (1.0f + 1.0f / 1024) + 1e-3f;
  cpu::residual_forward(out32.data(), a.data(), b32.data(), N);
  DeviceBuffer<float> d_b32(padded(b32, o));
  d_out.poison();
  cuda::residual_forward(d_out.get() + o, d_a.get() + o, d_b32.get() + o, N, test::test_stream());
  CHECK(test::same_bits(tail(test::download_float(d_out), N), test::round_to_bf16(out32)));
  if (N >= 1000)  // the premise: b32's own values count
    CHECK_FALSE(test::same_bits(test::round_to_bf16(out32), test::round_to_bf16(out)));
}

TEST_CASE("bf16 dropout draws the cpu's and the float kernel's mask", "[cuda][bf16][dropout]") {
  const size_t N = GENERATE(size_t(1), size_t(4), size_t(1003), size_t(65536 + 3));
  const float p = GENERATE(0.0f, 0.1f, 0.5f);
  INFO("N=" << N << " p=" << p);
  const DropoutParams dropout{p, 0xfeedull, 5};
  const auto inp = rounded_random(N, 88), dout = rounded_random(N, 89);
  std::vector<float> out(N), dinp(N);
  cpu::dropout_forward(out.data(), inp.data(), dropout, N);
  cpu::dropout_backward(dinp.data(), dout.data(), dropout, N);
  auto d_inp = test::device_bf16(inp), d_dout = test::device_bf16(dout);
  DeviceBuffer<bf16> d_out(N), d_dinp(N);
  d_out.poison();
  d_dinp.poison();
  cuda::dropout_forward(d_out.get(), d_inp.get(), dropout, N, test::test_stream());
  cuda::dropout_backward(d_dinp.get(), d_dout.get(), dropout, N, test::test_stream());
  const auto g_out = test::download_float(d_out);
  expect_one_rounding(g_out, out, "bf16 dropout out");
  expect_one_rounding(test::download_float(d_dinp), dinp, "bf16 dropout dinp");

  // The float kernel on the same values drops exactly the same elements.
  DeviceBuffer<float> f_inp(inp), f_out(N);
  f_out.poison();
  cuda::dropout_forward(f_out.get(), f_inp.get(), dropout, N, test::test_stream());
  const auto g_float = f_out.download();
  size_t dropped = 0;
  for (size_t i = 0; i < N; ++i) {
    if ((g_out[i] == 0.0f) != (out[i] == 0.0f)) FAIL("element " << i << " dropped by only one of bf16 and cpu");
    if ((g_out[i] == 0.0f) != (g_float[i] == 0.0f)) FAIL("element " << i << " dropped by only one of bf16 and float");
    dropped += g_out[i] == 0.0f;
  }
  if (p == 0.0f) CHECK(dropped == 0);
  if (p == 0.5f && N > 1000) CHECK(dropped > N / 4);

  // In place.
  cuda::dropout_forward(d_inp.get(), d_inp.get(), dropout, N, test::test_stream());
  expect_one_rounding(test::download_float(d_inp), out, "bf16 dropout in place");
}
