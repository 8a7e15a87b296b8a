// Whole-model gradients against finite differences: for every parameter tensor, the gradient
// from backward() at several elements (the largest in magnitude and some random ones) must
// match a central difference of the loss computed by forward(). Also run with dropout on, the
// masks fixed by the seed, so the loss stays a smooth function of the parameters.
#include "common/catch.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/model.hpp"
#include "model_test_util.hpp"

using namespace gpt2cc;

namespace {

// Finite-difference check of `model` at its current parameters on one batch.
//
// Step and tolerance: the loss is evaluated in float (relative round-off ~1e-7 per op, a few
// 1e-7 of the ~3.6 loss after the reductions). A central difference with h = 2^-7 (exact in
// binary, so p +- h is exact for |p| < 1 down to 2^-31) turns that into ~1e-5 of noise in the
// derivative, while its truncation error h^2/6 * f''' stays ~1e-5 for O(1) third derivatives
// (measured on this model: |fd - g| <= 1.5e-5 for |g| < 1e-2; <= 3.5e-4, i.e. <= 1e-3
// relative, for the largest |g| ~ 0.3). Hence |fd - g| <= 5e-5 + 1e-2 |g|: the 3 largest-|g|
// elements of every tensor (|g| ~ 1e-2..4e-1 with the random weights of model_test_util.hpp)
// are checked to 1e-2 relative, random elements (|g| down to ~1e-3) to a few percent.
void check_gradients_by_finite_differences(GPT2& model, const std::vector<int>& inputs,
                                           const std::vector<int>& targets, int B, int T, bool training,
                                           uint64_t seed) {
  const ParameterLayout& layout = model.layout();
  const ModelConfig& c = model.config();
  std::vector<float> params = model.parameters();

  model.zero_grad();
  model.forward(inputs.data(), targets.data(), B, T, training, seed);
  model.backward(1.0f / float(model.num_targets()));
  const std::vector<float> grads = model.gradients();

  const float h = 1.0f / 128.0f;
  auto loss_at = [&](size_t i, float value) {
    const float saved = params[i];
    params[i] = value;
    model.set_parameters(params);
    const double loss = model.forward(inputs.data(), targets.data(), B, T, training, seed);
    params[i] = saved;
    return loss;
  };

  for (const ParamTensor& t : layout.tensors()) {
    // Only the real vocabulary rows of wte carry gradient; the padded ones are checked elsewhere.
    const size_t n = t.name == "wte" ? size_t(c.vocab_size) * c.channels : t.numel;
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), size_t(0));
    std::partial_sort(order.begin(), order.begin() + 3, order.end(), [&](size_t a, size_t b) {
      return std::fabs(grads[t.offset + a]) > std::fabs(grads[t.offset + b]);
    });
    std::vector<size_t> picks(order.begin(), order.begin() + 3);
    const std::vector<int> random = test::random_tokens(3, 977 + t.offset, int(n));
    picks.insert(picks.end(), random.begin(), random.end());

    for (size_t k : picks) {
      const size_t i = t.offset + k;
      const double fd = (loss_at(i, params[i] + h) - loss_at(i, params[i] - h)) / (2.0 * h);
      const double g = grads[i];
      INFO(t.name << "[" << k << "]: backward " << g << ", finite difference " << fd);
      CHECK(std::isfinite(g));
      CHECK(std::fabs(fd - g) <= 5e-5 + 1e-2 * std::fabs(g));
    }
  }
  model.set_parameters(params);
}

}  // namespace

TEST_CASE("whole-model gradients match finite differences", "[model][grad]") {
  const ModelConfig c = test::tiny_config();
  auto backend = make_cpu_backend(1);
  const int B = 2, T = 7;
  GPT2 model(c, *backend, B, c.max_seq_len);
  model.set_parameters(test::random_parameters(model.layout(), c, 11));
  const auto inputs = test::random_tokens(B * T, 12, c.vocab_size);
  const auto targets = test::targets_with_ignored(B * T, 13, c.vocab_size);
  check_gradients_by_finite_differences(model, inputs, targets, B, T, false, 0);
}

TEST_CASE("whole-model gradients match finite differences with dropout on", "[model][grad][dropout]") {
  const ModelConfig c = test::tiny_config(0.2f);
  auto backend = make_cpu_backend(1);
  const int B = 3, T = 8;
  GPT2 model(c, *backend, B, T);
  model.set_parameters(test::random_parameters(model.layout(), c, 21));
  const auto inputs = test::random_tokens(B * T, 22, c.vocab_size);
  const auto targets = test::targets_with_ignored(B * T, 23, c.vocab_size);
  check_gradients_by_finite_differences(model, inputs, targets, B, T, true, 0xD50Bu);
}

TEST_CASE("padded vocabulary rows get no gradient", "[model][grad]") {
  const ModelConfig c = test::tiny_config();
  auto backend = make_cpu_backend(1);
  GPT2 model(c, *backend, 2, 8);
  model.set_parameters(test::random_parameters(model.layout(), c, 31));
  const auto inputs = test::random_tokens(16, 32, c.vocab_size);
  const auto targets = test::random_tokens(16, 33, c.vocab_size);
  model.zero_grad();
  model.forward(inputs.data(), targets.data(), 2, 8);
  model.backward(1.0f / 16);
  const auto grads = model.gradients();
  const ParamTensor& wte = model.layout()[Param::wte];
  const size_t real = size_t(c.vocab_size) * c.channels;
  size_t nonzero = 0;
  for (size_t k = real; k < wte.numel; ++k) nonzero += grads[wte.offset + k] != 0.0f;
  CHECK(nonzero == 0);
  double real_norm = 0;
  for (size_t k = 0; k < real; ++k) real_norm += double(grads[wte.offset + k]) * grads[wte.offset + k];
  CHECK(real_norm > 0.0);
}

TEST_CASE("backward accumulates: twice the same batch doubles every gradient", "[model][grad]") {
  const ModelConfig c = test::tiny_config();
  auto backend = make_cpu_backend(1);
  GPT2 model(c, *backend, 2, 8);
  model.set_parameters(test::random_parameters(model.layout(), c, 41));
  const auto inputs = test::random_tokens(16, 42, c.vocab_size);
  const auto targets = test::targets_with_ignored(16, 43, c.vocab_size);
  model.zero_grad();
  model.forward(inputs.data(), targets.data(), 2, 8);
  model.backward(0.1f);
  std::vector<float> once = model.gradients();
  model.forward(inputs.data(), targets.data(), 2, 8);
  model.backward(0.1f);
  std::vector<float> twice = model.gradients();
  for (float& g : once) g *= 2.0f;
  test::expect_close(twice, once, 1e-7, 1e-5, "gradients after two backwards vs 2x one backward");
}
