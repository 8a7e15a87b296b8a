// cuda::adamw_update and cuda::sum_of_squares (kernels/adamw.cuh) with their kernels on the CPU
// emulator against cpu::adamw_update / cpu::sum_of_squares, with the tolerances of
// tests/cuda/test_cuda_adamw.cpp and test_bf16_optimizer.cpp: fp32 params, m, v within 1e-5; with
// bf16 grads, the fp32 master weights and moments within 1e-6 of the CPU's on the same bf16 grads
// and the bf16 copy exactly the master rounded to nearest even. Three steps (bias correction),
// weight decay on and off, clip scale 1 and 0.375, N = 1, 1001 (a partial last block), 5003.
// The whole run repeats bit for bit under another warp schedule. sum_of_squares in double within
// 1e-10 relative, for N below and above the fixed 512 x 256 partition, the same bits under every
// warp schedule.
#include "common/catch.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/adamw.hpp"
#include "emu/layer_test_util.hpp"
#include "kernels/adamw.cuh"

using namespace gpt2cc;
using test::bf16;
using test::bf16_bits;
using test::rne_bits;

namespace {

struct State {
  std::vector<float> params, m, v;
  std::vector<bf16> params_bf16;
};

}  // namespace

TEMPLATE_TEST_CASE("emulated adamw matches cpu over three steps", "[emu][adamw]", float, bf16) {
  using Grad = TestType;
  constexpr bool kIsFloat = std::is_same_v<Grad, float>;
  const size_t N = GENERATE(size_t(1), size_t(1001), size_t(5003));
  const float weight_decay = GENERATE(0.1f, 0.0f);
  const float grad_scale = GENERATE(1.0f, 0.375f);
  INFO("N=" << N << " weight_decay=" << weight_decay << " grad_scale=" << grad_scale);
  AdamWParams hp;
  hp.lr = 1e-3f;
  hp.weight_decay = weight_decay;
  hp.grad_scale = grad_scale;
  const State start{test::random_vector(N, 301), test::random_vector(N, 302, -0.1f, 0.1f),
                    test::random_vector(N, 303, 0.0f, 0.01f), {}};
  // Both runs from the same start must end with the same bits; the second runs the warps in
  // lockstep (the kernel shares nothing between threads: any order must give the same bits).
  std::vector<State> runs;
  for (int run = 0; run < 2; ++run) {
    emu::set_schedule(run == 0 ? emu::Schedule::kWarpsAscending : emu::Schedule::kLockstep);
    State cpu_state = start, emu_state = start;
    test::DeviceBuffer params(start.params), m(start.m), v(start.v);
    test::DeviceBuffer params_bf16(test::poisoned<bf16>(N));
    for (int step = 1; step <= 3; ++step) {
      INFO("run " << run << " step " << step);
      hp.step = step;
      // The CPU sees exactly the gradient values the kernel reads (bf16-rounded for bf16 grads).
      const auto grads = test::round_to_bf16(test::random_vector(N, 310 + step, -2.0f, 2.0f));
      cpu::adamw_update(cpu_state.params.data(), cpu_state.m.data(), cpu_state.v.data(), grads.data(), N, hp);
      const double tol = kIsFloat ? 1e-5 : 1e-6;
      if constexpr (kIsFloat) {
        const test::DeviceBuffer d_grads(grads);
        cuda::adamw_update(params.get(), m.get(), v.get(), d_grads.get(), N, hp, test::test_stream());
      } else {
        params_bf16.poison();
        const test::DeviceBuffer d_grads(test::to_bf16(grads));
        cuda::adamw_update(params.get(), params_bf16.get(), m.get(), v.get(), d_grads.get(), N, hp,
                           test::test_stream());
      }
      emu_state = {params.download(), m.download(), v.download(), params_bf16.download()};
      if constexpr (!kIsFloat) {
        size_t mismatches = 0;
        for (size_t i = 0; i < N; ++i) mismatches += bf16_bits(emu_state.params_bf16[i]) != rne_bits(emu_state.params[i]);
        INFO("bf16 params that are not the master weights rounded to nearest even");
        CHECK(mismatches == 0);
      }
      test::expect_matches(emu_state.params, cpu_state.params, kIsFloat ? "params" : "master weights", tol);
      test::expect_matches(emu_state.m, cpu_state.m, "m", tol);
      test::expect_matches(emu_state.v, cpu_state.v, "v", tol);
    }
    runs.push_back(emu_state);
  }
  emu::set_schedule(emu::Schedule::kWarpsAscending);
  CHECK(test::same_bits(runs[1].params, runs[0].params));
  CHECK(test::same_bits(runs[1].m, runs[0].m));
  CHECK(test::same_bits(runs[1].v, runs[0].v));
  CHECK(test::same_bits(test::widened(runs[1].params_bf16), test::widened(runs[0].params_bf16)));
}

TEMPLATE_TEST_CASE("emulated adamw applies the clip factor to the gradient", "[emu][adamw]", float, bf16) {
  // Step 1 from zero moments: m = (1-b1) g s and v = (1-b2) (g s)^2 show the scale s directly.
  const size_t N = 64;
  AdamWParams hp;
  hp.grad_scale = 0.25f;
  const test::DeviceBuffer grads(test::as<TestType>(std::vector<float>(N, 2.0f)));
  test::DeviceBuffer params(std::vector<float>(N, 1.0f)), m(std::vector<float>(N, 0.0f));
  test::DeviceBuffer v(std::vector<float>(N, 0.0f));
  test::DeviceBuffer<bf16> params_bf16(N);
  if constexpr (std::is_same_v<TestType, float>) {
    cuda::adamw_update(params.get(), m.get(), v.get(), grads.get(), N, hp, test::test_stream());
  } else {
    cuda::adamw_update(params.get(), params_bf16.get(), m.get(), v.get(), grads.get(), N, hp, test::test_stream());
  }
  const float g = 2.0f * 0.25f;
  test::expect_matches(m.download(), std::vector<float>(N, (1.0f - hp.beta1) * g), "m of the scaled gradient");
  test::expect_matches(v.download(), std::vector<float>(N, (1.0f - hp.beta2) * g * g), "v of the scaled gradient");
}

TEMPLATE_TEST_CASE("emulated sum_of_squares matches cpu and repeats exactly", "[emu][adamw][determinism]", float,
                   bf16) {
  using Elem = TestType;
  const size_t N = GENERATE(size_t(0), size_t(1000), size_t(512 * 256 + 17));
  INFO("N=" << N);
  const auto x = test::round_to_bf16(test::random_vector(N, 321, -3.0f, 3.0f));
  const test::DeviceBuffer x_elem(test::as<Elem>(x));
  // Squares of bf16-grid values are exact in double; only the order of the additions differs.
  const double expected = cpu::sum_of_squares(x.data(), N);
  const double got = cuda::sum_of_squares(x_elem.get(), N, test::test_stream());
  CHECK(std::fabs(got - expected) <= 1e-10 * std::max(1.0, std::fabs(expected)));
  if (N > 0) CHECK(got > 0.0);
  // The same bits again, under each other warp schedule (as a float pair: the double's two words).
  const auto words = [](double value) {
    std::vector<float> w(2);
    std::memcpy(w.data(), &value, sizeof(value));
    return w;
  };
  test::check_every_schedule(words(got),
                             [&] { return words(cuda::sum_of_squares(x_elem.get(), N, test::test_stream())); });
}
