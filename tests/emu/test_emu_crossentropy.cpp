// cuda::crossentropy_forward / _backward and fused_classifier (kernels/crossentropy.cuh) with their
// kernels on the CPU emulator against cpu::crossentropy_forward / _backward, float and bf16 logits,
// with the tolerances of tests/cuda/test_bf16_classifier.cpp: losses within 1e-5; float dlogits
// within 1e-5, bf16 dlogits one rounding (relative L2 <= 1e-2, element-wise 5e-3); the fused
// classifier also against the two-kernel path. Shapes hit every launcher branch: the fused
// cached-row kernel (rows of 16-byte packs in shared memory, up to GPT-2's 50304 columns: 100 and
// 200 KB, opted into), the streamed kernel's 16-byte packs (forced) and its scalar kernel (Vp = 37,
// Vp = 36 for bf16, a buffer offset by one element); V = 1 .. 50257 (blocks of 512 threads stride
// several times; V not a multiple of the pack). Outputs start as NaN; padded columns hold NaN,
// +-inf or 2^14 in the logits (never part of the softmax) and must come out exactly 0; ignored
// rows (-1) give loss 0 and a zero row; an out-of-range target gives NaN. Every warp schedule
// gives the same bits; in place gives the out-of-place bits. (The cached-row kernel's refusals:
// tests/cuda/test_bf16_classifier.cpp, which CTest runs on the emulator too, as emu_cuda_bf16.)
#include "common/catch.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cpu/crossentropy.hpp"
#include "cuda/classifier_test_util.hpp"
#include "emu/layer_test_util.hpp"
#include "kernels/crossentropy.cuh"

using namespace gpt2cc;
using test::bf16;

namespace {

using Shape = test::ClassifierShape;
using Inputs = test::ClassifierInputs;

// Padded columns exactly 0; ignored rows exactly 0 everywhere with loss exactly 0.
void expect_zero_padding_and_ignored_rows(const std::vector<float>& dlogits, const std::vector<float>& losses,
                                          const std::vector<int>& targets, int V, int Vp) {
  size_t nonzero = 0;
  for (size_t r = 0; r < targets.size(); ++r) {
    const bool ignored = targets[r] == cpu::kIgnoreIndex;
    if (ignored) CHECK(losses[r] == 0.0f);
    for (int j = ignored ? 0 : V; j < Vp; ++j) nonzero += dlogits[r * Vp + j] != 0.0f;
  }
  INFO("padded or ignored dlogits that are not exactly 0");
  CHECK(nonzero == 0);
}

// dlogits of the emulated kernel (float or bf16, widened) against the CPU's.
template <class Elem>
void expect_dlogits(const std::vector<float>& got, const std::vector<float>& ref, const std::string& what) {
  if constexpr (std::is_same_v<Elem, float>) {
    test::expect_matches(got, ref, what, 1e-5);
  } else {
    test::expect_rel_l2(got, ref, 1e-2, what);
    test::expect_bf16_rounding(got, ref, what + " element-wise", 5e-3, 1e-12);
  }
}

}  // namespace

TEMPLATE_TEST_CASE("emulated crossentropy forward and backward match cpu", "[emu][crossentropy]", float, bf16) {
  using Elem = TestType;
  const Shape s = GENERATE(Shape{1, 1, 1, 1}, Shape{1, 1, 5, 8}, Shape{3, 2, 37, 40}, Shape{1, 3, 1000, 1024},
                           Shape{1, 2, 5000, 5008});
  INFO("B=" << s.B << " T=" << s.T << " V=" << s.V << " Vp=" << s.Vp);
  const size_t rows = size_t(s.B) * s.T, n = rows * s.Vp;
  const Inputs in = test::classifier_inputs(s, 201);
  std::vector<float> losses(rows), dlogits(n);
  cpu::crossentropy_forward(losses.data(), in.logits.data(), in.targets.data(), s.B, s.T, s.V, s.Vp);
  cpu::crossentropy_backward(dlogits.data(), in.dloss, in.logits.data(), in.targets.data(), s.B, s.T, s.V, s.Vp);

  const cudaStream_t stream = test::test_stream();
  const test::DeviceBuffer logits(test::as<Elem>(in.logits));
  const test::DeviceBuffer targets(in.targets);
  // The losses and dlogits of a forward and a backward over poisoned outputs.
  const auto run = [&] {
    test::DeviceBuffer losses_d(test::poisoned<float>(rows)), dlogits_d(test::poisoned<Elem>(n));
    cuda::crossentropy_forward(losses_d.get(), logits.get(), targets.get(), s.B, s.T, s.V, s.Vp, stream);
    cuda::crossentropy_backward(dlogits_d.get(), in.dloss, logits.get(), targets.get(), s.B, s.T, s.V, s.Vp, stream);
    return std::pair(losses_d.download(), test::widened(dlogits_d));
  };
  const auto [got_losses, got] = run();
  test::expect_matches(got_losses, losses, "emulated losses", 1e-5);
  expect_dlogits<Elem>(got, dlogits, "emulated dlogits");
  expect_zero_padding_and_ignored_rows(got, got_losses, in.targets, s.V, s.Vp);

  // In place over the logits: the same bits as out of place.
  test::DeviceBuffer in_place(logits.download());
  cuda::crossentropy_backward(in_place.get(), in.dloss, in_place.get(), targets.get(), s.B, s.T, s.V, s.Vp, stream);
  CHECK(test::same_bits(test::widened(in_place), got));

  test::check_every_schedule(test::concat({&got_losses, &got}), [&] {
    const auto [losses2, dlogits2] = run();
    return test::concat({&losses2, &dlogits2});
  });
}

TEMPLATE_TEST_CASE("emulated fused classifier matches cpu and the two-kernel path", "[emu][crossentropy][fused]",
                   float, bf16) {
  using Elem = TestType;
  constexpr bool kIsFloat = std::is_same_v<Elem, float>;
  const Shape s = GENERATE(Shape{1, 1, 1, 1}, Shape{1, 1, 5, 8}, Shape{3, 1, 37, 37}, Shape{3, 1, 37, 40},
                           Shape{2, 2, 33, 36}, Shape{1, 3, 1000, 1024}, Shape{1, 2, 5000, 5008},
                           Shape{1, 2, 50257, 50304});
  // offset 1 element: the buffer is no longer 16-byte aligned and the scalar kernel runs.
  const int offset = GENERATE(0, 1);
  // kAuto: the cached-row kernel where the rows are packs (GPT-2's rows: 100 or 200 KB of shared
  // memory, opted into); kStreamed: the block-per-row kernel on the same shapes.
  const auto design = GENERATE(cuda::FusedClassifier::kAuto, cuda::FusedClassifier::kStreamed);
  INFO("B=" << s.B << " T=" << s.T << " V=" << s.V << " Vp=" << s.Vp << " offset=" << offset
            << " streamed=" << (design == cuda::FusedClassifier::kStreamed));
  const size_t rows = size_t(s.B) * s.T, n = rows * s.Vp;
  const Inputs in = test::classifier_inputs(s, 211);
  std::vector<float> losses(rows), dlogits(n);
  cpu::crossentropy_forward(losses.data(), in.logits.data(), in.targets.data(), s.B, s.T, s.V, s.Vp);
  cpu::crossentropy_backward(dlogits.data(), in.dloss, in.logits.data(), in.targets.data(), s.B, s.T, s.V, s.Vp);

  // The buffer starts 16-byte aligned (cudaMalloc's 256 bytes).
  const cudaStream_t stream = test::test_stream();
  const std::vector<Elem> start = test::as<Elem>(test::padded(in.logits, offset));
  const test::DeviceBuffer targets(in.targets);
  test::DeviceBuffer buffer(start), reference(test::poisoned<Elem>(n));
  test::DeviceBuffer reference_losses(test::poisoned<float>(rows)), got_losses_d(test::poisoned<float>(rows));
  Elem* logits = buffer.get() + offset;
  cuda::crossentropy_forward(reference_losses.get(), logits, targets.get(), s.B, s.T, s.V, s.Vp, stream);
  cuda::crossentropy_backward(reference.get(), in.dloss, logits, targets.get(), s.B, s.T, s.V, s.Vp, stream);
  cuda::fused_classifier(logits, got_losses_d.get(), targets.get(), in.dloss, s.B, s.T, s.V, s.Vp, stream, design);

  const std::vector<float> all = test::widened(buffer), got_losses = got_losses_d.download();
  const std::vector<float> got(all.begin() + offset, all.end());
  const std::vector<float> two_kernel = test::widened(reference);
  test::expect_matches(got_losses, losses, "fused losses vs cpu", 1e-5);
  // The fused kernels add in another order than the two-kernel reduction: a few float ulps.
  test::expect_matches(got_losses, reference_losses.download(), "fused losses vs two-kernel", 2e-6);
  expect_dlogits<Elem>(got, dlogits, "fused dlogits vs cpu");
  if constexpr (kIsFloat) {
    test::expect_matches(got, two_kernel, "fused dlogits vs two-kernel", 2e-6);
  } else {
    // Two roundings of nearly equal floats: at most one bf16 ulp (2^-7 relative) apart.
    test::expect_rel_l2(got, two_kernel, 1e-2, "fused bf16 dlogits vs two-kernel");
    test::expect_bf16_rounding(got, two_kernel, "fused bf16 dlogits vs two-kernel element-wise", 8e-3, 1e-12);
  }
  expect_zero_padding_and_ignored_rows(got, got_losses, in.targets, s.V, s.Vp);
  CHECK(std::equal(all.begin(), all.begin() + offset, test::widened(start).begin()));

  test::check_every_schedule(test::concat({&all, &got_losses}), [&] {
    test::DeviceBuffer buffer2(start), losses2(test::poisoned<float>(rows));
    cuda::fused_classifier(buffer2.get() + offset, losses2.get(), targets.get(), in.dloss, s.B, s.T, s.V, s.Vp, stream,
                           design);
    const std::vector<float> all2 = test::widened(buffer2), losses2_host = losses2.download();
    return test::concat({&all2, &losses2_host});
  });
}

TEST_CASE("emulated fused classifier: kCachedRow runs the cached-row kernel, as kAuto does where it fits",
          "[emu][crossentropy][fused]") {
  // The two fused kernels reduce in different orders (exact max then sum; online max and sum), so
  // their float bits differ (bf16 dlogits may round them alike): the named design must give
  // kAuto's bits (rows of packs that fit) and not the streamed kernel's.
  const Shape s{1, 3, 1000, 1024};
  const size_t rows = size_t(s.B) * s.T, n = rows * s.Vp;
  const Inputs in = test::classifier_inputs(s, 241);
  const cudaStream_t stream = test::test_stream();
  const test::DeviceBuffer targets(in.targets);
  const auto run = [&](cuda::FusedClassifier design) {
    test::DeviceBuffer logits(in.logits), losses(test::poisoned<float>(rows));
    cuda::fused_classifier(logits.get(), losses.get(), targets.get(), in.dloss, s.B, s.T, s.V, s.Vp, stream, design);
    const std::vector<float> dlogits = test::widened(logits), got_losses = losses.download();
    REQUIRE(dlogits.size() == n);
    return test::concat({&dlogits, &got_losses});
  };
  const std::vector<float> automatic = run(cuda::FusedClassifier::kAuto);
  const std::vector<float> streamed = run(cuda::FusedClassifier::kStreamed);
  REQUIRE_FALSE(test::same_bits(automatic, streamed));
  CHECK(test::same_bits(run(cuda::FusedClassifier::kCachedRow), automatic));
}

TEMPLATE_TEST_CASE("emulated classifier marks an out-of-range target with NaN", "[emu][crossentropy]", float, bf16) {
  using Elem = TestType;
  // Targets V (the first out-of-range value: its column is padding, a logit the kernels could read
  // as the target's), Vp - 1 and -2; both fused kernels (kAuto: the cached row; kStreamed).
  const int V = 5, Vp = 8, rows = 4;
  const auto design = GENERATE(cuda::FusedClassifier::kAuto, cuda::FusedClassifier::kStreamed);
  INFO("streamed=" << (design == cuda::FusedClassifier::kStreamed));
  const cudaStream_t stream = test::test_stream();
  const auto logits_host = test::as<Elem>(test::random_vector(rows * Vp, 221));
  const test::DeviceBuffer logits(logits_host);
  const test::DeviceBuffer targets(std::vector<int>{2, V, Vp - 1, -2});
  test::DeviceBuffer losses_d(test::poisoned<float>(rows)), fused_losses_d(test::poisoned<float>(rows));
  test::DeviceBuffer dlogits(test::poisoned<Elem>(logits_host.size())), fused(logits_host);
  cuda::crossentropy_forward(losses_d.get(), logits.get(), targets.get(), 1, rows, V, Vp, stream);
  cuda::crossentropy_backward(dlogits.get(), 1.0f, logits.get(), targets.get(), 1, rows, V, Vp, stream);
  cuda::fused_classifier(fused.get(), fused_losses_d.get(), targets.get(), 1.0f, 1, rows, V, Vp, stream, design);
  const std::vector<float> losses = losses_d.download(), fused_losses = fused_losses_d.download();
  for (const auto* l : {&losses, &fused_losses}) {
    CHECK(std::isfinite((*l)[0]));
    for (int row = 1; row < rows; ++row) CHECK(std::isnan((*l)[row]));
  }
  for (const auto& g : {test::widened(dlogits), test::widened(fused)}) {
    CHECK(std::isfinite(g[0]));
    for (int row = 1; row < rows; ++row) {
      for (int j = 0; j < V; ++j) CHECK(std::isnan(g[row * Vp + j]));
      for (int j = V; j < Vp; ++j) CHECK(g[row * Vp + j] == 0.0f);
    }
  }
}

TEMPLATE_TEST_CASE("emulated classifier treats a -inf logit as probability 0, like cpu", "[emu][crossentropy]",
                   float, bf16) {
  using Elem = TestType;
  // -inf where a thread starts (columns 0, 1: its first logit, before any finite maximum), inside
  // a 16-byte pack and in the last column; rows of V = 37 in Vp = 40 (the fused kernel's packs) and
  // Vp = 37 (its scalar kernel).
  const int V = 37, B = 1, T = 2;
  const int Vp = GENERATE(37, 40);
  INFO("Vp=" << Vp);
  auto logits = test::round_to_bf16(test::random_vector(size_t(T) * Vp, 231, -4.0f, 4.0f));
  for (const int j : {0, 1, 6, V - 1}) logits[j] = -INFINITY;
  logits[Vp] = -INFINITY;
  const std::vector<int> targets{3, 0};  // row 1's target is a -inf logit: loss +inf
  std::vector<float> losses(T), dlogits(logits.size());
  cpu::crossentropy_forward(losses.data(), logits.data(), targets.data(), B, T, V, Vp);
  cpu::crossentropy_backward(dlogits.data(), 1.0f, logits.data(), targets.data(), B, T, V, Vp);
  REQUIRE(std::isfinite(losses[0]));
  REQUIRE(std::isinf(losses[1]));

  const cudaStream_t stream = test::test_stream();
  const test::DeviceBuffer start(test::as<Elem>(logits));
  const test::DeviceBuffer d_targets(targets);
  test::DeviceBuffer two_kernel_losses_d(test::poisoned<float>(T)), fused_losses_d(test::poisoned<float>(T));
  test::DeviceBuffer two_kernel(test::poisoned<Elem>(logits.size())), fused(start.download());
  cuda::crossentropy_forward(two_kernel_losses_d.get(), start.get(), d_targets.get(), B, T, V, Vp, stream);
  cuda::crossentropy_backward(two_kernel.get(), 1.0f, start.get(), d_targets.get(), B, T, V, Vp, stream);
  cuda::fused_classifier(fused.get(), fused_losses_d.get(), d_targets.get(), 1.0f, B, T, V, Vp, stream);
  const std::vector<float> two_kernel_losses = two_kernel_losses_d.download(), fused_losses = fused_losses_d.download();
  for (const auto* got : {&two_kernel_losses, &fused_losses}) {
    CHECK((*got)[0] == Approx(losses[0]).epsilon(1e-5));
    CHECK((*got)[1] == losses[1]);
  }
  for (const auto& got : {test::widened(two_kernel), test::widened(fused)}) {
    expect_dlogits<Elem>(got, dlogits, "dlogits with -inf logits");
  }
}
