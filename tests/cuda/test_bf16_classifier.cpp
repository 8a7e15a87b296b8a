// The bf16 classifier (issue 8): cuda::crossentropy_forward / _backward on bf16 logits and
// cuda::fused_classifier (float and bf16) against cpu:: on the same bf16-rounded logits, and the
// fused kernel against the two-kernel path it replaces. Shapes cover every fused branch (the
// cached-row kernel and the streamed one, forced, on 16-byte packs: Vp a multiple of 4 floats /
// 8 bf16 and an aligned buffer; the streamed scalar kernel: Vp = 37, Vp = 36 for bf16, a
// misaligned buffer), V not a multiple of 8 (1000 in 1024, GPT-2's 50257 in 50304), ignored rows
// (target -1), and padded columns holding NaN, +-inf or 2^14 (classifier_test_util.hpp) that must
// never enter the softmax and must come out exactly 0; the cached-row kernel
// refuses rows that are not packs or do not fit the device's shared memory (with its own static
// 128 bytes: a row of exactly the opt-in limit is streamed).
#include "common/catch.hpp"

#include <cmath>
#include <type_traits>

#include "bf16_test_util.hpp"
#include "classifier_test_util.hpp"
#include "cpu/crossentropy.hpp"
#include "kernels/crossentropy.cuh"
#include "kernels/shared_memory.cuh"

using namespace gpt2cc;
using test::bf16;
using test::DeviceBuffer;

namespace {

using Shape = test::ClassifierShape;
using Inputs = test::ClassifierInputs;

// Padded columns exactly 0; ignored rows exactly 0 everywhere with loss exactly 0.
void expect_zero_padding_and_ignored_rows(const std::vector<float>& dlogits, const std::vector<float>& losses,
                                          const std::vector<int>& targets, int V, int Vp) {
  for (size_t r = 0; r < targets.size(); ++r) {
    const bool ignored = targets[r] == cpu::kIgnoreIndex;
    if (ignored) REQUIRE(losses[r] == 0.0f);
    for (int j = ignored ? 0 : V; j < Vp; ++j) {
      INFO("row " << r << " column " << j);
      REQUIRE(dlogits[r * Vp + j] == 0.0f);
    }
  }
}

}  // namespace

TEST_CASE("bf16 crossentropy forward and backward match cpu", "[cuda][bf16][crossentropy]") {
  const Shape s = GENERATE(Shape{1, 1, 5, 8}, Shape{3, 5, 37, 40}, Shape{1, 4, 1000, 1024}, Shape{2, 3, 50257, 50304});
  INFO("B=" << s.B << " T=" << s.T << " V=" << s.V << " Vp=" << s.Vp);
  const size_t rows = size_t(s.B) * s.T, n = rows * s.Vp;
  const Inputs in = test::classifier_inputs(s, 201);
  std::vector<float> losses(rows), dlogits(n);
  cpu::crossentropy_forward(losses.data(), in.logits.data(), in.targets.data(), s.B, s.T, s.V, s.Vp);
  cpu::crossentropy_backward(dlogits.data(), in.dloss, in.logits.data(), in.targets.data(), s.B, s.T, s.V, s.Vp);

  cudaStream_t stream = test::test_stream();
  DeviceBuffer<bf16> d_logits(test::to_bf16(in.logits)), d_dlogits(n);
  DeviceBuffer<float> d_losses(rows);
  DeviceBuffer<int> d_targets(in.targets);
  d_losses.poison();
  d_dlogits.poison();
  cuda::crossentropy_forward(d_losses.get(), d_logits.get(), d_targets.get(), s.B, s.T, s.V, s.Vp, stream);
  cuda::crossentropy_backward(d_dlogits.get(), in.dloss, d_logits.get(), d_targets.get(), s.B, s.T, s.V, s.Vp, stream);
  // The losses are fp32 math on the same inputs as the CPU; dlogits add one rounding to bf16.
  const auto got_losses = d_losses.download();
  test::expect_matches(got_losses, losses, "bf16 losses", 1e-5);
  const auto got = test::from_bf16(d_dlogits.download());
  test::expect_rel_l2(got, dlogits, 1e-2, "bf16 dlogits");
  test::expect_bf16_rounding(got, dlogits, "bf16 dlogits element-wise", 5e-3, 1e-12);
  expect_zero_padding_and_ignored_rows(got, got_losses, in.targets, s.V, s.Vp);

  // In place over the logits.
  cuda::crossentropy_backward(d_logits.get(), in.dloss, d_logits.get(), d_targets.get(), s.B, s.T, s.V, s.Vp, stream);
  CHECK(test::same_bits(test::from_bf16(d_logits.download()), got));
}

TEMPLATE_TEST_CASE("fused classifier matches cpu and the two-kernel path", "[cuda][bf16][crossentropy][fused]", float,
                   bf16) {
  using Elem = TestType;
  constexpr bool kIsFloat = std::is_same_v<Elem, float>;
  const Shape s = GENERATE(Shape{1, 1, 1, 1}, Shape{1, 1, 5, 8}, Shape{3, 5, 37, 37}, Shape{3, 5, 37, 40},
                           Shape{2, 3, 33, 36}, Shape{1, 4, 1000, 1024}, Shape{2, 3, 50257, 50304});
  // offset 1 element: the buffer is no longer 16-byte aligned and the scalar kernel runs.
  const int offset = GENERATE(0, 1);
  // kAuto: the cached-row kernel where the rows are packs; kStreamed: the block-per-row kernel.
  const auto design = GENERATE(cuda::FusedClassifier::kAuto, cuda::FusedClassifier::kStreamed);
  INFO((kIsFloat ? "float" : "bf16") << " B=" << s.B << " T=" << s.T << " V=" << s.V << " Vp=" << s.Vp
                                     << " offset=" << offset
                                     << " streamed=" << (design == cuda::FusedClassifier::kStreamed));
  const size_t rows = size_t(s.B) * s.T, n = rows * s.Vp;
  const Inputs in = test::classifier_inputs(s, 211);
  std::vector<float> losses(rows), dlogits(n);
  cpu::crossentropy_forward(losses.data(), in.logits.data(), in.targets.data(), s.B, s.T, s.V, s.Vp);
  cpu::crossentropy_backward(dlogits.data(), in.dloss, in.logits.data(), in.targets.data(), s.B, s.T, s.V, s.Vp);

  cudaStream_t stream = test::test_stream();
  std::vector<float> padded(offset, 0.0f);
  padded.insert(padded.end(), in.logits.begin(), in.logits.end());
  DeviceBuffer<Elem> d_buffer(test::as<Elem>(padded)), d_reference(n);
  Elem* d_logits = d_buffer.get() + offset;
  DeviceBuffer<float> d_losses(rows), d_reference_losses(rows);
  DeviceBuffer<int> d_targets(in.targets);
  d_losses.poison();
  d_reference.poison();
  d_reference_losses.poison();

  // The two-kernel path on the same logits first (out of place), then the fused kernel in place.
  cuda::crossentropy_forward(d_reference_losses.get(), d_logits, d_targets.get(), s.B, s.T, s.V, s.Vp, stream);
  cuda::crossentropy_backward(d_reference.get(), in.dloss, d_logits, d_targets.get(), s.B, s.T, s.V, s.Vp, stream);
  cuda::fused_classifier(d_logits, d_losses.get(), d_targets.get(), in.dloss, s.B, s.T, s.V, s.Vp, stream, design);

  const auto got_losses = d_losses.download();
  const auto all = test::widened(d_buffer);
  const std::vector<float> got(all.begin() + offset, all.end());
  const auto two_kernel = test::widened(d_reference);
  test::expect_matches(got_losses, losses, "fused losses vs cpu", 1e-5);
  // The fused kernels add in another order than the two-kernel reduction: a few float ulps.
  test::expect_matches(got_losses, d_reference_losses.download(), "fused losses vs two-kernel", 2e-6);
  if constexpr (kIsFloat) {
    test::expect_matches(got, dlogits, "fused dlogits vs cpu", 1e-5);
    test::expect_matches(got, two_kernel, "fused dlogits vs two-kernel", 2e-6);
  } else {
    test::expect_rel_l2(got, dlogits, 1e-2, "fused bf16 dlogits vs cpu");
    test::expect_bf16_rounding(got, dlogits, "fused bf16 dlogits vs cpu element-wise", 5e-3, 1e-12);
    // Two roundings of nearly equal floats: at most one bf16 ulp (2^-7 relative) apart.
    test::expect_rel_l2(got, two_kernel, 1e-2, "fused bf16 dlogits vs two-kernel");
    test::expect_bf16_rounding(got, two_kernel, "fused bf16 dlogits vs two-kernel element-wise", 8e-3, 1e-12);
  }
  expect_zero_padding_and_ignored_rows(got, got_losses, in.targets, s.V, s.Vp);

  // Deterministic: the same logits give the same bits.
  d_buffer.upload(test::as<Elem>(padded));
  cuda::fused_classifier(d_logits, d_losses.get(), d_targets.get(), in.dloss, s.B, s.T, s.V, s.Vp, stream, design);
  const auto again = test::widened(d_buffer);
  CHECK(test::same_bits(std::vector<float>(again.begin() + offset, again.end()), got));
  CHECK(test::same_bits(d_losses.download(), got_losses));
}

TEMPLATE_TEST_CASE("fused classifier marks an out-of-range target with NaN", "[cuda][bf16][crossentropy][fused]",
                   float, bf16) {
  const int V = 5, Vp = 8;
  const auto logits = test::random_vector(2 * Vp, 221);
  DeviceBuffer<TestType> d_logits(test::as<TestType>(logits));
  DeviceBuffer<float> d_losses(2);
  DeviceBuffer<int> d_targets(std::vector<int>{2, 7});
  cuda::fused_classifier(d_logits.get(), d_losses.get(), d_targets.get(), 1.0f, 1, 2, V, Vp, test::test_stream());
  const auto losses = d_losses.download();
  CHECK(std::isfinite(losses[0]));
  CHECK(std::isnan(losses[1]));
  const auto g = test::widened(d_logits);
  CHECK(std::isnan(g[Vp]));
  CHECK(g[Vp + V] == 0.0f);
}

TEST_CASE("fused classifier rejects a vocabulary larger than its padding", "[cuda][bf16][crossentropy][fused]") {
  CHECK_THROWS_WITH(cuda::fused_classifier(static_cast<bf16*>(nullptr), nullptr, nullptr, 1.0f, 1, 1, 9, 8,
                                           test::test_stream()),
                    Catch::Contains("V <= Vp"));
  CHECK_THROWS_WITH(cuda::fused_classifier(static_cast<float*>(nullptr), nullptr, nullptr, 1.0f, 1, 1, 9, 8,
                                           test::test_stream()),
                    Catch::Contains("V <= Vp"));
}

TEMPLATE_TEST_CASE("cached-row fused classifier refuses rows it cannot hold", "[cuda][bf16][crossentropy][fused]",
                   float, bf16) {
  using Elem = TestType;
  const auto cached = cuda::FusedClassifier::kCachedRow;
  DeviceBuffer<Elem> logits(test::as<Elem>(test::random_vector(41, 241)));
  DeviceBuffer<float> losses(1);
  DeviceBuffer<int> targets(std::vector<int>{0});
  cudaStream_t stream = test::test_stream();
  // Not packs: Vp = 37, or the logits one element past an aligned start.
  CHECK_THROWS_WITH(cuda::fused_classifier(logits.get(), losses.get(), targets.get(), 1.0f, 1, 1, 37, 37, stream,
                                           cached),
                    Catch::Contains("cached-row fused classifier"));
  CHECK_THROWS_WITH(cuda::fused_classifier(logits.get() + 1, losses.get(), targets.get(), 1.0f, 1, 1, 40, 40, stream,
                                           cached),
                    Catch::Contains("16-byte aligned"));
  // A row past the device's shared memory a block: refused as kCachedRow, streamed by kAuto.
  const int Vp = static_cast<int>(cuda::device_shared_optin() / sizeof(Elem)) + 16;
  DeviceBuffer<Elem> wide(test::as<Elem>(test::random_vector(size_t(Vp), 242)));
  CHECK_THROWS_WITH(cuda::fused_classifier(wide.get(), losses.get(), targets.get(), 1.0f, 1, 1, Vp, Vp, stream, cached),
                    Catch::Contains("shared memory a block"));
  cuda::fused_classifier(wide.get(), losses.get(), targets.get(), 1.0f, 1, 1, Vp, Vp, stream);
  CHECK(std::isfinite(losses.download()[0]));
  // At the edge: the block needs the row plus its 128 bytes of static shared memory (the block
  // reductions' 32 floats). A row of exactly the opt-in limit is refused and streamed; the largest
  // row that leaves room for them is held.
  const size_t optin = cuda::device_shared_optin(), static_bytes = 32 * sizeof(float);
  for (const size_t row_bytes : {optin, optin - static_bytes}) {
    const bool fits = row_bytes + static_bytes <= optin;
    const int edge = static_cast<int>(row_bytes / sizeof(Elem));
    INFO("a row of " << row_bytes << " bytes, opt-in limit " << optin);
    DeviceBuffer<Elem> row(test::as<Elem>(test::random_vector(size_t(edge), 243)));
    const auto run = [&](cuda::FusedClassifier design) {
      cuda::fused_classifier(row.get(), losses.get(), targets.get(), 1.0f, 1, 1, edge, edge, stream, design);
      return losses.download()[0];
    };
    if (fits) {
      CHECK(std::isfinite(run(cached)));
    } else {
      CHECK_THROWS_WITH(run(cached), Catch::Contains("shared memory a block"));
      CHECK(std::isfinite(run(cuda::FusedClassifier::kAuto)));
    }
  }
}
