// cuda::layernorm_forward / _backward and residual_layernorm_forward (kernels/layernorm.cuh) with
// their kernels on the CPU emulator against cpu::layernorm_forward / _backward, float and bf16, with
// the tolerances of tests/cuda/test_cuda_layernorm.cpp (float: 1e-5, column sums 2e-5) and
// test_bf16_elementwise.cpp (bf16: one rounding, statistics 1e-4). Shapes take every launcher
// branch: the float forward's warp-per-row kernel; bf16 and fused rows in the shared-memory cache
// with 16-byte packs (C % 8, or C % 4 for float, and aligned pointers), without (C = 37, pointers
// offset by one element), with fewer than 8 rows per block (C = 1600), and rows beyond the cache
// (C = 12800: the uncached kernel, the fused forward's unfused pair); the backward's two designs
// (cuda::LayerNormBackward): the fused one-pass kernel where it takes the shape (C a multiple of
// the 16-byte pack, C <= 1024, aligned), the two-pass one with its packed (bf16) and scalar dinp
// loops, and the fused one against the two-pass one; any one pointer off 16 bytes takes the
// scalar (two-pass) kernels. Outputs start poisoned (NaN); dinp, dweight and dbias accumulate (a
// second call doubles the increment); every warp schedule gives the same bits.
#include "common/catch.hpp"

#include <cuda_runtime.h>

#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/layernorm.hpp"
#include "cpu/residual.hpp"
#include "cuda/layernorm_test_util.hpp"
#include "emu/layer_test_util.hpp"
#include "kernels/layernorm.cuh"
#include "kernels/residual.cuh"

using namespace gpt2cc;
using test::as;
using test::bf16;
using test::padded;
using test::tail;
using test::widened;

namespace {

struct LnShape {
  int B, T, C;
  size_t offset;  // elements before every tensor: 1 misaligns the 16-byte packs
};

// Inputs as the CUDA tests draw them (bf16: rounded first, so the CPU sees what the kernel sees).
struct LnInputs {
  std::vector<float> inp, weight, bias, dout, dinp0, dweight0, dbias0;
};

template <class Elem>
LnInputs draw_inputs(const LnShape& s) {
  const size_t N = static_cast<size_t>(s.B) * s.T * s.C;
  const auto round = [](std::vector<float> v) {
    return std::is_same_v<Elem, float> ? v : test::round_to_bf16(v);
  };
  LnInputs in;
  in.inp = test::random_vector(N, 51, -2.0f, 2.0f);
  for (float& x : in.inp) x += 3.0f;  // a non-zero mean, as in the residual stream
  in.inp = round(in.inp);
  in.weight = round(test::random_vector(s.C, 52, 0.5f, 1.5f));
  in.bias = round(test::random_vector(s.C, 53));
  in.dout = round(test::random_vector(N, 54));
  // Small starting grads, so the increment dominates and a "=" instead of "+=" shows.
  const auto small = [&](size_t n, uint64_t seed) {
    auto v = test::random_vector(n, seed);
    for (float& x : v) x *= 0.1f;
    return round(v);
  };
  in.dinp0 = small(N, 55);
  in.dweight0 = small(s.C, 56);
  in.dbias0 = small(s.C, 57);
  return in;
}

// What the emulated forward and two accumulating backward calls produce.
struct LnResult {
  std::vector<float> out, mean, rstd, dinp, dweight, dbias, dinp2, dweight2, dbias2;
  std::vector<float> all() const {
    return test::concat({&out, &mean, &rstd, &dinp, &dweight, &dbias, &dinp2, &dweight2, &dbias2});
  }
};

// Two accumulating backward calls from the starting grads, with the statistics in mean / rstd.
struct BackwardResult {
  std::vector<float> dinp, dweight, dbias, dinp2, dweight2, dbias2;
  std::vector<float> all() const { return test::concat({&dinp, &dweight, &dbias, &dinp2, &dweight2, &dbias2}); }
};

template <class Elem>
BackwardResult backward_twice(const LnShape& s, const LnInputs& in, const test::DeviceBuffer<float>& mean,
                              const test::DeviceBuffer<float>& rstd, cuda::LayerNormBackward design) {
  const int B = s.B, T = s.T, C = s.C;
  const size_t N = static_cast<size_t>(B) * T * C, o = s.offset;
  const cudaStream_t stream = test::test_stream();
  const test::DeviceBuffer inp(as<Elem>(padded(in.inp, o))), weight(as<Elem>(padded(in.weight, o)));
  const test::DeviceBuffer dout(as<Elem>(padded(in.dout, o)));
  test::DeviceBuffer dinp(as<Elem>(padded(in.dinp0, o))), dweight(as<Elem>(in.dweight0)), dbias(as<Elem>(in.dbias0));
  BackwardResult r;
  for (int call = 0; call < 2; ++call) {
    cuda::layernorm_backward(dinp.get() + o, dweight.get(), dbias.get(), dout.get() + o, mean.get(), rstd.get(),
                             inp.get() + o, weight.get() + o, B, T, C, stream, design);
    (call == 0 ? r.dinp : r.dinp2) = tail(widened(dinp), N);
    (call == 0 ? r.dweight : r.dweight2) = widened(dweight);
    (call == 0 ? r.dbias : r.dbias2) = widened(dbias);
  }
  return r;
}

template <class Elem>
LnResult run_layernorm(const LnShape& s, const LnInputs& in,
                       cuda::LayerNormBackward design = cuda::LayerNormBackward::kAuto) {
  const int B = s.B, T = s.T, C = s.C;
  const size_t N = static_cast<size_t>(B) * T * C, rows = static_cast<size_t>(B) * T, o = s.offset;
  const cudaStream_t stream = test::test_stream();
  const test::DeviceBuffer inp(as<Elem>(padded(in.inp, o))), weight(as<Elem>(padded(in.weight, o)));
  const test::DeviceBuffer bias(as<Elem>(padded(in.bias, o))), dout(as<Elem>(padded(in.dout, o)));
  test::DeviceBuffer out(test::poisoned<Elem>(N + o));
  test::DeviceBuffer mean(test::poisoned<float>(rows)), rstd(test::poisoned<float>(rows));
  cuda::layernorm_forward(out.get() + o, mean.get(), rstd.get(), inp.get() + o, weight.get() + o, bias.get() + o, B,
                          T, C, stream);
  LnResult r;
  r.out = tail(widened(out), N);
  r.mean = mean.download();
  r.rstd = rstd.download();
  BackwardResult b = backward_twice<Elem>(s, in, mean, rstd, design);
  r.dinp = std::move(b.dinp);
  r.dweight = std::move(b.dweight);
  r.dbias = std::move(b.dbias);
  r.dinp2 = std::move(b.dinp2);
  r.dweight2 = std::move(b.dweight2);
  r.dbias2 = std::move(b.dbias2);
  return r;
}

// The CPU reference: forward, and the backward from the starting grads.
LnResult cpu_layernorm(const LnShape& s, const LnInputs& in) {
  const size_t N = static_cast<size_t>(s.B) * s.T * s.C, rows = static_cast<size_t>(s.B) * s.T;
  LnResult r;
  r.out.resize(N);
  r.mean.resize(rows);
  r.rstd.resize(rows);
  cpu::layernorm_forward(r.out.data(), r.mean.data(), r.rstd.data(), in.inp.data(), in.weight.data(), in.bias.data(),
                         s.B, s.T, s.C);
  r.dinp = in.dinp0;
  r.dweight = in.dweight0;
  r.dbias = in.dbias0;
  cpu::layernorm_backward(r.dinp.data(), r.dweight.data(), r.dbias.data(), in.dout.data(), r.mean.data(),
                          r.rstd.data(), in.inp.data(), in.weight.data(), s.B, s.T, s.C);
  return r;
}

}  // namespace

TEST_CASE("emulated layernorm (float) matches cpu", "[emu][layernorm]") {
  // The float forward is always the warp-per-row kernel. Backward, kAuto: fused for C = 8, 768
  // (C % 4 == 0, aligned), else two-pass with its scalar dinp loop; kTwoPass: always the latter.
  const LnShape shape = GENERATE(LnShape{1, 1, 1, 0}, LnShape{1, 1, 8, 0}, LnShape{3, 5, 7, 0},
                                 LnShape{5, 13, 33, 0}, LnShape{2, 9, 768, 0}, LnShape{1, 3, 1601, 1});
  const auto design = GENERATE(cuda::LayerNormBackward::kAuto, cuda::LayerNormBackward::kTwoPass);
  INFO("B=" << shape.B << " T=" << shape.T << " C=" << shape.C << " offset=" << shape.offset
            << " design=" << static_cast<int>(design));
  const LnInputs in = draw_inputs<float>(shape);
  const LnResult ref = cpu_layernorm(shape, in);
  const LnResult got = run_layernorm<float>(shape, in, design);
  test::expect_matches(got.out, ref.out, "layernorm out");
  test::expect_matches(got.mean, ref.mean, "layernorm mean");
  test::expect_matches(got.rstd, ref.rstd, "layernorm rstd");
  test::expect_matches(got.dinp, ref.dinp, "layernorm dinp (+=)", 1e-5);
  // Column sums over B*T rows in a different order from the CPU's: a little more slack.
  test::expect_matches(got.dweight, ref.dweight, "layernorm dweight", 2e-5);
  test::expect_matches(got.dbias, ref.dbias, "layernorm dbias", 2e-5);
  test::expect_matches(got.dinp2, test::repeated(in.dinp0, got.dinp, 2.0f), "dinp after two calls", 1e-5);
  test::expect_matches(got.dweight2, test::repeated(in.dweight0, got.dweight, 2.0f), "dweight after two calls", 1e-5);
  test::expect_matches(got.dbias2, test::repeated(in.dbias0, got.dbias, 2.0f), "dbias after two calls", 1e-5);
  test::check_every_schedule(got.all(), [&] { return run_layernorm<float>(shape, in, design).all(); });
}

TEST_CASE("emulated layernorm (bf16) matches cpu", "[emu][layernorm][bf16]") {
  // 8, 768: cached rows, packed; 36, 37 and offset 1: cached, scalar; 1600: packed, 6 rows per
  // block; 12800: beyond the row cache (the uncached kernel). Backward, kAuto: fused for C = 8,
  // 768 (aligned); two-pass for the others, packed where C % 8 == 0; kTwoPass: always two-pass.
  const LnShape shape = GENERATE(LnShape{1, 1, 8, 0}, LnShape{3, 1, 36, 0}, LnShape{5, 13, 37, 0},
                                 LnShape{2, 9, 768, 0}, LnShape{3, 7, 768, 1}, LnShape{1, 3, 1600, 0},
                                 LnShape{1, 2, 12800, 0});
  const auto design = GENERATE(cuda::LayerNormBackward::kAuto, cuda::LayerNormBackward::kTwoPass);
  INFO("B=" << shape.B << " T=" << shape.T << " C=" << shape.C << " offset=" << shape.offset
            << " design=" << static_cast<int>(design));
  const LnInputs in = draw_inputs<bf16>(shape);
  const LnResult ref = cpu_layernorm(shape, in);
  const LnResult got = run_layernorm<bf16>(shape, in, design);
  test::expect_one_rounding(got.out, ref.out, "bf16 layernorm out");
  test::expect_matches(got.mean, ref.mean, "bf16 layernorm mean", 1e-4);
  test::expect_matches(got.rstd, ref.rstd, "bf16 layernorm rstd", 1e-4);
  // dinp = bf16(dinp0 + dx): one rounding. dweight/dbias: float column sums over B*T rows in another
  // order than the CPU's, then one rounding: a larger absolute floor for the sums' float error.
  test::expect_one_rounding(got.dinp, ref.dinp, "bf16 layernorm dinp (+=)", 1e-4);
  test::expect_one_rounding(got.dweight, ref.dweight, "bf16 layernorm dweight", 1e-4);
  test::expect_one_rounding(got.dbias, ref.dbias, "bf16 layernorm dbias", 1e-4);
  test::expect_rel_l2(got.dinp2, test::repeated(in.dinp0, ref.dinp, 2.0f), 1e-2, "bf16 dinp after two calls");
  test::expect_rel_l2(got.dweight2, test::repeated(in.dweight0, ref.dweight, 2.0f), 1e-2,
                      "bf16 dweight after two calls");
  test::expect_rel_l2(got.dbias2, test::repeated(in.dbias0, ref.dbias, 2.0f), 1e-2, "bf16 dbias after two calls");
  test::check_every_schedule(got.all(), [&] { return run_layernorm<bf16>(shape, in, design).all(); });
}

namespace {

// The backward alone, with the CPU forward's statistics (so that designs differ in the backward
// only).
template <class Elem>
BackwardResult run_backward(const LnShape& s, const LnInputs& in, const LnResult& stats,
                            cuda::LayerNormBackward design) {
  return backward_twice<Elem>(s, in, test::DeviceBuffer(stats.mean), test::DeviceBuffer(stats.rstd), design);
}

// More rows than the fused backward's grid has warps (at most 264 CTAs of 8 warps, from the shape:
// kernels/layernorm_device.cuh): each warp takes 2 or 3 rows, and the last CTA fewer rows than the
// others (4261 rows: 251 CTAs of 17 rows, the last of 11).
int rows_beyond_one_per_warp() { return 2 * (264 * 8) + 37; }

template <class Elem>
void check_fused_backward(const LnShape& shape) {
  constexpr bool kBf16 = !std::is_same_v<Elem, float>;
  const LnInputs in = draw_inputs<Elem>(shape);
  const LnResult ref = cpu_layernorm(shape, in);
  const BackwardResult fused = run_backward<Elem>(shape, in, ref, cuda::LayerNormBackward::kFused);
  const BackwardResult two_pass = run_backward<Elem>(shape, in, ref, cuda::LayerNormBackward::kTwoPass);
  if constexpr (kBf16) {
    test::expect_one_rounding(fused.dinp, ref.dinp, "fused bf16 dinp (+=)", 1e-4);
    test::expect_one_rounding(fused.dweight, ref.dweight, "fused bf16 dweight", 1e-4);
    test::expect_one_rounding(fused.dbias, ref.dbias, "fused bf16 dbias", 1e-4);
    // The two-pass kernel's 16-byte dinp loop: the same expressions summed in the same order, but a
    // compiler may contract a product and a sum into an FMA in one kernel and not in the other
    // (the ThreadSanitizer build of this test does, for one element in a few thousand; nvcc may
    // too): within a rounding of each other.
    test::expect_one_rounding(fused.dinp, two_pass.dinp, "fused vs two-pass bf16 dinp", 1e-5, 2);
    test::expect_one_rounding(fused.dinp2, two_pass.dinp2, "fused vs two-pass bf16 dinp, two calls", 1e-5, 2);
    // Float column sums in another order, each rounded once: one bf16 ulp apart at most.
    test::expect_one_rounding(fused.dweight, two_pass.dweight, "fused vs two-pass bf16 dweight", 1e-5, 2);
    test::expect_one_rounding(fused.dbias, two_pass.dbias, "fused vs two-pass bf16 dbias", 1e-5, 2);
    test::expect_rel_l2(fused.dinp2, test::repeated(in.dinp0, ref.dinp, 2.0f), 1e-2, "fused bf16 dinp, two calls");
    test::expect_rel_l2(fused.dweight2, test::repeated(in.dweight0, ref.dweight, 2.0f), 1e-2,
                        "fused bf16 dweight, two calls");
    test::expect_rel_l2(fused.dbias2, test::repeated(in.dbias0, ref.dbias, 2.0f), 1e-2, "fused bf16 dbias, two calls");
  } else {
    test::expect_fused_layernorm_backward({fused.dinp, fused.dweight, fused.dbias},
                                          {two_pass.dinp, two_pass.dweight, two_pass.dbias},
                                          {ref.dinp, ref.dweight, ref.dbias});
    test::expect_matches(fused.dinp2, test::repeated(in.dinp0, fused.dinp, 2.0f), "fused dinp, two calls", 1e-5);
    test::expect_matches(fused.dweight2, test::repeated(in.dweight0, fused.dweight, 2.0f), "fused dweight, two calls",
                         1e-5);
    test::expect_matches(fused.dbias2, test::repeated(in.dbias0, fused.dbias, 2.0f), "fused dbias, two calls", 1e-5);
  }
  // Deterministic: another run, and every warp schedule, give the same bits.
  const auto again = [&] { return run_backward<Elem>(shape, in, ref, cuda::LayerNormBackward::kFused).all(); };
  CHECK(test::same_bits(again(), fused.all()));
  test::check_every_schedule(fused.all(), again);
  // kAuto takes the fused design for these shapes.
  CHECK(test::same_bits(run_backward<Elem>(shape, in, ref, cuda::LayerNormBackward::kAuto).all(), fused.all()));
}

}  // namespace

TEST_CASE("emulated fused layernorm backward matches cpu and the two-pass design", "[emu][layernorm][backward]") {
  // Packs of 16 bytes per lane (bf16 / float): C = 8: 1 / 1, only lane 0 (0 and 1) holding data;
  // 264: 2 / 3, the last pack of the row on lane 0 only; 520: 3 / 5; 768: 3 / 6 (GPT-2 124M);
  // 896: 4 / 7; 1024: 4 / 8 (launch bounds of 1 CTA per SM beyond 24 channels a lane). Rows: 1; fewer than a
  // CTA's 8 warps; a CTA of 6 or 7 rows; several rows per warp (rows_beyond_one_per_warp).
  const LnShape shape = GENERATE(LnShape{1, 1, 8, 0}, LnShape{3, 7, 264, 0}, LnShape{1, 5, 520, 0},
                                 LnShape{2, 9, 768, 0}, LnShape{2, 3, 896, 0}, LnShape{3, 5, 1024, 0},
                                 LnShape{1, rows_beyond_one_per_warp(), 64, 0});
  const bool is_bf16 = GENERATE(false, true);
  INFO("B=" << shape.B << " T=" << shape.T << " C=" << shape.C << " bf16=" << is_bf16);
  if (is_bf16) {
    check_fused_backward<bf16>(shape);
  } else {
    check_fused_backward<float>(shape);
  }
}

TEST_CASE("emulated layernorm backward: kFused refuses what it does not take, kAuto runs two-pass there",
          "[emu][layernorm][backward]") {
  // C not a multiple of the pack (37), beyond 32 channels a lane (1032), pointers offset by one
  // element (768, offset 1).
  const LnShape shape = GENERATE(LnShape{2, 3, 37, 0}, LnShape{1, 2, 1032, 0}, LnShape{2, 3, 768, 1});
  const bool is_bf16 = GENERATE(false, true);
  INFO("B=" << shape.B << " T=" << shape.T << " C=" << shape.C << " offset=" << shape.offset << " bf16=" << is_bf16);
  const auto check = [&]<class Elem>(Elem) {
    const LnInputs in = draw_inputs<Elem>(shape);
    const LnResult ref = cpu_layernorm(shape, in);
    // Asked for by name (GPT2CC_KERNELS): the user's setting, refused as such.
    CHECK_THROWS_AS(run_backward<Elem>(shape, in, ref, cuda::LayerNormBackward::kFused), InputError);
    CHECK_THROWS_WITH(run_backward<Elem>(shape, in, ref, cuda::LayerNormBackward::kFused),
                      Catch::Contains("GPT2CC_KERNELS layernorm-backward=fused") &&
                          Catch::Contains("got C = " + std::to_string(shape.C)));
    CHECK(test::same_bits(run_backward<Elem>(shape, in, ref, cuda::LayerNormBackward::kAuto).all(),
                          run_backward<Elem>(shape, in, ref, cuda::LayerNormBackward::kTwoPass).all()));
  };
  if (is_bf16) {
    check(bf16{});
  } else {
    check(0.0f);
  }
}

namespace {

// The fused forward and, for comparison, the unfused pair on the same inputs.
struct FusedResult {
  std::vector<float> residual, out, mean, rstd, residual2, out2, mean2, rstd2;
  std::vector<float> all() const { return test::concat({&residual, &out, &mean, &rstd}); }
};

template <class Elem>
FusedResult run_fused(const LnShape& s, const std::vector<float>& inp1_f, const std::vector<float>& inp2_f,
                      const std::vector<float>& weight_f, const std::vector<float>& bias_f) {
  const int B = s.B, T = s.T, C = s.C;
  const size_t N = static_cast<size_t>(B) * T * C, rows = static_cast<size_t>(B) * T, o = s.offset;
  const cudaStream_t stream = test::test_stream();
  const test::DeviceBuffer inp1(as<Elem>(padded(inp1_f, o))), inp2(as<Elem>(padded(inp2_f, o)));
  const test::DeviceBuffer weight(as<Elem>(padded(weight_f, o))), bias(as<Elem>(padded(bias_f, o)));
  test::DeviceBuffer residual(test::poisoned<Elem>(N + o)), out(test::poisoned<Elem>(N + o));
  test::DeviceBuffer mean(test::poisoned<float>(rows)), rstd(test::poisoned<float>(rows));
  cuda::residual_layernorm_forward(residual.get() + o, out.get() + o, mean.get(), rstd.get(), inp1.get() + o,
                                   inp2.get() + o, weight.get() + o, bias.get() + o, B, T, C, stream);
  test::DeviceBuffer residual2(test::poisoned<Elem>(N)), out2(test::poisoned<Elem>(N));
  test::DeviceBuffer mean2(test::poisoned<float>(rows)), rstd2(test::poisoned<float>(rows));
  cuda::residual_forward(residual2.get(), inp1.get() + o, inp2.get() + o, N, stream);
  cuda::layernorm_forward(out2.get(), mean2.get(), rstd2.get(), residual2.get(), weight.get() + o, bias.get() + o, B,
                          T, C, stream);
  return {tail(widened(residual), N), tail(widened(out), N), mean.download(),  rstd.download(),
          widened(residual2),         widened(out2),         mean2.download(), rstd2.download()};
}

}  // namespace

TEST_CASE("emulated fused residual + layernorm matches cpu and the unfused pair", "[emu][layernorm][fused]") {
  // float packs need C % 4 == 0 (8, 36, 768, 1600), bf16 C % 8 == 0 (8, 768, 1600); 37 and
  // offset 1: scalar; 12800: the unfused fallback.
  const LnShape shape = GENERATE(LnShape{1, 1, 8, 0}, LnShape{3, 1, 36, 0}, LnShape{5, 13, 37, 0},
                                 LnShape{2, 9, 768, 0}, LnShape{3, 7, 768, 1}, LnShape{1, 3, 1600, 0},
                                 LnShape{1, 2, 12800, 0});
  const bool is_bf16 = GENERATE(false, true);
  const int B = shape.B, T = shape.T, C = shape.C;
  INFO("B=" << B << " T=" << T << " C=" << C << " offset=" << shape.offset << " bf16=" << is_bf16);
  const size_t N = static_cast<size_t>(B) * T * C, rows = static_cast<size_t>(B) * T;
  const auto round = [&](std::vector<float> v) { return is_bf16 ? test::round_to_bf16(v) : v; };
  auto inp1 = test::random_vector(N, 61, -2.0f, 2.0f);
  for (float& x : inp1) x += 3.0f;
  inp1 = round(inp1);
  const auto inp2 = round(test::random_vector(N, 62));
  const auto weight = round(test::random_vector(C, 63, 0.5f, 1.5f)), bias = round(test::random_vector(C, 64));

  // The CPU reference normalises the residual as stored: for bf16 the float sum, rounded once.
  std::vector<float> residual(N), out(N), mean(rows), rstd(rows);
  cpu::residual_forward(residual.data(), inp1.data(), inp2.data(), N);
  residual = round(residual);
  cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), residual.data(), weight.data(), bias.data(), B, T, C);

  const auto run = [&] {
    return is_bf16 ? run_fused<bf16>(shape, inp1, inp2, weight, bias)
                   : run_fused<float>(shape, inp1, inp2, weight, bias);
  };
  const FusedResult got = run();
  // The same float addition (and, for bf16, the same round to nearest even) on both sides.
  CHECK(test::same_bits(got.residual, residual));
  CHECK(test::same_bits(got.residual2, residual));
  if (is_bf16) {
    test::expect_one_rounding(got.out, out, "bf16 fused out");
    test::expect_matches(got.mean, mean, "bf16 fused mean (of the stored residual)", 1e-4);
    test::expect_matches(got.rstd, rstd, "bf16 fused rstd (of the stored residual)", 1e-4);
    test::expect_one_rounding(got.out, got.out2, "bf16 fused out vs unfused", 1e-5, 2);
  } else {
    test::expect_matches(got.out, out, "fused out", 1e-5);
    test::expect_matches(got.mean, mean, "fused mean", 1e-5);
    test::expect_matches(got.rstd, rstd, "fused rstd", 1e-5);
    test::expect_matches(got.out, got.out2, "fused out vs unfused", 2e-6);
  }
  // Against the unfused kernels: the same values up to the order of the row sums.
  test::expect_matches(got.mean, got.mean2, "fused mean vs unfused", 2e-6);
  test::expect_matches(got.rstd, got.rstd2, "fused rstd vs unfused", 2e-6);
  test::check_every_schedule(got.all(), [&] { return run().all(); });
}

namespace {

// The cached-row forward (bf16 LayerNorm, or the fused residual + LayerNorm) with tensor k offset
// by one element where bit k of `misaligned` is set (0 out, 1 inp1, 2 weight, 3 bias, 4 inp2, 5
// residual: the last two fused only): out, residual (fused), mean, rstd.
template <class Elem>
std::vector<float> run_forward_misaligned(const LnShape& s, const LnInputs& in, const std::vector<float>& inp2_f,
                                          bool fused, unsigned misaligned) {
  const int B = s.B, T = s.T, C = s.C;
  const size_t N = static_cast<size_t>(B) * T * C, rows = static_cast<size_t>(B) * T;
  const auto at = [&](int k) { return static_cast<size_t>((misaligned >> k) & 1u); };
  const cudaStream_t stream = test::test_stream();
  const test::DeviceBuffer inp1(as<Elem>(padded(in.inp, at(1)))), weight(as<Elem>(padded(in.weight, at(2))));
  const test::DeviceBuffer bias(as<Elem>(padded(in.bias, at(3)))), inp2(as<Elem>(padded(inp2_f, at(4))));
  test::DeviceBuffer out(test::poisoned<Elem>(N + at(0))), residual(test::poisoned<Elem>(N + at(5)));
  test::DeviceBuffer mean(test::poisoned<float>(rows)), rstd(test::poisoned<float>(rows));
  if (fused) {
    cuda::residual_layernorm_forward(residual.get() + at(5), out.get() + at(0), mean.get(), rstd.get(),
                                     inp1.get() + at(1), inp2.get() + at(4), weight.get() + at(2),
                                     bias.get() + at(3), B, T, C, stream);
  } else {
    cuda::layernorm_forward(out.get() + at(0), mean.get(), rstd.get(), inp1.get() + at(1), weight.get() + at(2),
                            bias.get() + at(3), B, T, C, stream);
  }
  const std::vector<float> o = tail(widened(out), N), m = mean.download(), r = rstd.download();
  const std::vector<float> res = fused ? tail(widened(residual), N) : std::vector<float>{};
  return test::concat({&o, &res, &m, &r});
}

}  // namespace

TEST_CASE("emulated layernorm forward: any one pointer off 16 bytes takes the scalar cached-row kernel",
          "[emu][layernorm][fused]") {
  // The packed kernel moves 16-byte packs, which a GPU faults on at an address that is not a
  // multiple of 16 (the emulator only where the host compiler chose aligned vector instructions):
  // each pointer alone one element off must send cached_row_launch to the scalar kernel. The two
  // kernels sum a row's channels in different orders (different bits), so each such run must give
  // the bits of the run with every pointer off. (The float LayerNorm forward is the warp-per-row
  // kernel only.)
  const auto [is_bf16, fused] = GENERATE(std::pair{true, false}, std::pair{true, true}, std::pair{false, true});
  INFO("bf16=" << is_bf16 << " fused=" << fused);
  const LnShape shape{1, 8, 768, 0};
  LnInputs in = is_bf16 ? draw_inputs<bf16>(shape) : draw_inputs<float>(shape);
  // Magnitudes from 2^-6 to 2^6 (exact scalings, bf16 values stay bf16): a row's float sums round,
  // so that the two summation orders give different statistics (bf16 sums of like magnitudes are
  // exact in float, the same in any order).
  for (size_t i = 0; i < in.inp.size(); ++i) in.inp[i] = std::ldexp(in.inp[i], static_cast<int>(i * 7 % 13) - 6);
  const std::vector<float> inp2 = is_bf16 ? test::round_to_bf16(in.dout) : in.dout;
  const auto run = [&](unsigned misaligned) {
    return is_bf16 ? run_forward_misaligned<bf16>(shape, in, inp2, fused, misaligned)
                   : run_forward_misaligned<float>(shape, in, inp2, fused, misaligned);
  };
  const int tensors = fused ? 6 : 4;
  const std::vector<float> scalar = run((1u << tensors) - 1);
  REQUIRE_FALSE(test::same_bits(run(0), scalar));
  const char* const names[] = {"out", "inp1", "weight", "bias", "inp2", "residual"};
  for (int k = 0; k < tensors; ++k) {
    INFO(names[k] << " alone off by one element");
    CHECK(test::same_bits(run(1u << k), scalar));
  }
}

namespace {

// One kAuto or kTwoPass backward from the starting grads with tensor k offset by one element where
// bit k of `misaligned` is set (0 dinp, 1 dout, 2 inp, 3 weight), on the CPU forward's statistics.
template <class Elem>
std::vector<float> run_backward_misaligned(const LnShape& s, const LnInputs& in, const LnResult& stats,
                                           cuda::LayerNormBackward design, unsigned misaligned) {
  const int B = s.B, T = s.T, C = s.C;
  const size_t N = static_cast<size_t>(B) * T * C;
  const auto at = [&](int k) { return static_cast<size_t>((misaligned >> k) & 1u); };
  const cudaStream_t stream = test::test_stream();
  const test::DeviceBuffer dout(as<Elem>(padded(in.dout, at(1)))), inp(as<Elem>(padded(in.inp, at(2))));
  const test::DeviceBuffer weight(as<Elem>(padded(in.weight, at(3))));
  const test::DeviceBuffer mean(stats.mean), rstd(stats.rstd);
  test::DeviceBuffer dinp(as<Elem>(padded(in.dinp0, at(0))));
  test::DeviceBuffer dweight(as<Elem>(in.dweight0)), dbias(as<Elem>(in.dbias0));
  cuda::layernorm_backward(dinp.get() + at(0), dweight.get(), dbias.get(), dout.get() + at(1), mean.get(), rstd.get(),
                           inp.get() + at(2), weight.get() + at(3), B, T, C, stream, design);
  const std::vector<float> dx = tail(widened(dinp), N), dw = widened(dweight), db = widened(dbias);
  return test::concat({&dx, &dw, &db});
}

}  // namespace

TEST_CASE("emulated layernorm backward: any one pointer off 16 bytes takes the two-pass kernels",
          "[emu][layernorm][backward]") {
  // The fused backward moves 16-byte packs of dinp, dout, inp and weight: each pointer alone one
  // element off must make kAuto take the two-pass design (its bits, which differ from the fused
  // design's: the column sums add in another order). float: in bf16 the sums' last bits are
  // rounded away and the two designs' dinp are the same expressions, so their bits agree.
  const LnShape shape{1, 64, 768, 0};  // 8 CTAs of the fused kernel, 64 slices of the two-pass sums
  const LnInputs in = draw_inputs<float>(shape);
  const LnResult ref = cpu_layernorm(shape, in);
  const auto run = [&](cuda::LayerNormBackward design, unsigned misaligned) {
    return run_backward_misaligned<float>(shape, in, ref, design, misaligned);
  };
  REQUIRE_FALSE(test::same_bits(run(cuda::LayerNormBackward::kAuto, 0), run(cuda::LayerNormBackward::kTwoPass, 0)));
  const char* const names[] = {"dinp", "dout", "inp", "weight"};
  for (int k = 0; k < 4; ++k) {
    INFO(names[k] << " alone off by one element");
    CHECK(test::same_bits(run(cuda::LayerNormBackward::kAuto, 1u << k),
                          run(cuda::LayerNormBackward::kTwoPass, 1u << k)));
  }
}
