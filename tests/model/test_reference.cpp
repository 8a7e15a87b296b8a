// Parity with PyTorch: tests/make_reference.py builds the same GPT-2 in plain PyTorch with fixed
// weights and one fixed batch, and records logits, loss, every parameter gradient and the losses
// of 10 AdamW steps (warm-up, clipping, weight decay on the weight matrices only) in
// tests/fixtures/reference.{json,bin} (L=2, C=64, NH=4, V=500 padded to 512, B=3 x T=24) and
// reference_tiles.{json,bin} (C=40, NH=5: head size 8, V=7 padded to 128, B=2 x T=70: two
// attention tiles of the blocked CPU attention, the second partial; sizes no fast path divides).
// The engine loads the same weights and must match: logits and each gradient tensor to <= 1e-4
// relative error (||a - b|| / ||b||), the losses to <= 1e-4 absolute.
#include "common/catch.hpp"

#include <nlohmann/json.hpp>

#include "common/array_fixture.hpp"
#include "common/test_common.hpp"
#include "core/model.hpp"
#include "core/grad_clip.hpp"

using namespace gpt2cc;
using nlohmann::json;

namespace {

using Fixture = test::ArrayFixture;

Fixture load_fixture(const std::string& name) {
  return test::load_array_fixture(name, "python3 tests/make_reference.py");
}

ModelConfig fixture_config(const json& j) {
  ModelConfig c;
  c.num_layers = j["num_layers"];
  c.channels = j["channels"];
  c.num_heads = j["num_heads"];
  c.vocab_size = j["vocab_size"];
  c.padded_vocab_size = j["padded_vocab_size"];
  c.max_seq_len = j["max_seq_len"];
  return c;
}

}  // namespace

TEST_CASE("logits, loss and every gradient match PyTorch", "[model][reference]") {
  const std::string fixture = GENERATE(as<std::string>{}, "reference", "reference_tiles");
  INFO("fixture " << fixture);
  const Fixture f = load_fixture(fixture);
  const ModelConfig c = fixture_config(f.meta["config"]);
  const int B = f.meta["batch"]["B"], T = f.meta["batch"]["T"];
  auto backend = make_cpu_backend(1);
  GPT2 model(c, *backend, B, T);
  REQUIRE(c.padded_vocab_size == padded_vocab(c.vocab_size));
  const size_t N = model.layout().total();
  const auto tokens = f.array<int32_t>("tokens", size_t(B) * T);
  const auto targets = f.array<int32_t>("targets", size_t(B) * T);
  model.set_parameters(f.array<float>("params", N));

  model.zero_grad();
  const float loss = model.forward(tokens.data(), targets.data(), B, T);
  CHECK(std::fabs(loss - f.meta["loss"].get<double>()) <= 1e-4);

  // Logits: the fixture holds the first V columns of each (b, t) row.
  const auto expected_logits = f.array<float>("logits", size_t(B) * T * c.vocab_size);
  const auto padded = model.logits();
  std::vector<float> logits(expected_logits.size());
  for (size_t row = 0; row < size_t(B) * T; ++row)
    for (int i = 0; i < c.vocab_size; ++i)
      logits[row * c.vocab_size + i] = padded[row * c.padded_vocab_size + i];
  const double logits_error = test::rel_error(logits, expected_logits);
  INFO("logits relative error " << logits_error);
  CHECK(logits_error <= 1e-4);

  model.backward(1.0f / model.num_targets());
  const auto grads = model.gradients();
  const auto expected_grads = f.array<float>("grads", N);
  for (const ParamTensor& t : model.layout().tensors()) {
    const double error = test::rel_error(grads.data() + t.offset, expected_grads.data() + t.offset, t.numel);
    INFO("gradient of " << t.name << ": relative error " << error);
    CHECK(error <= 1e-4);
  }
}

TEST_CASE("10 AdamW steps with warm-up and clipping match PyTorch's losses", "[model][reference]") {
  const std::string fixture = GENERATE(as<std::string>{}, "reference", "reference_tiles");
  INFO("fixture " << fixture);
  const Fixture f = load_fixture(fixture);
  const ModelConfig c = fixture_config(f.meta["config"]);
  const int B = f.meta["batch"]["B"], T = f.meta["batch"]["T"];
  auto backend = make_cpu_backend(1);
  GPT2 model(c, *backend, B, T);
  const auto tokens = f.array<int32_t>("tokens", size_t(B) * T);
  const auto targets = f.array<int32_t>("targets", size_t(B) * T);
  model.set_parameters(f.array<float>("params", model.layout().total()));

  const json& adamw = f.meta["adamw"];
  const auto lrs = adamw["lrs"].get<std::vector<double>>();
  const auto expected_losses = f.meta["step_losses"].get<std::vector<double>>();
  const auto expected_norms = f.meta["step_grad_norms"].get<std::vector<double>>();
  REQUIRE(lrs.size() == expected_losses.size());
  AdamWParams hp;
  hp.beta1 = adamw["betas"][0];
  hp.beta2 = adamw["betas"][1];
  hp.eps = adamw["eps"];
  hp.weight_decay = adamw["weight_decay"];
  const double max_norm = adamw["max_norm"];
  for (size_t step = 0; step < lrs.size(); ++step) {
    model.zero_grad();
    const float loss = model.forward(tokens.data(), targets.data(), B, T);
    model.backward(1.0f / model.num_targets());
    const double norm = model.grad_norm();
    INFO("step " << step + 1 << ": loss " << loss << " (PyTorch " << expected_losses[step] << "), grad norm "
                 << norm << " (PyTorch " << expected_norms[step] << ")");
    CHECK(std::fabs(loss - expected_losses[step]) <= 1e-4);
    CHECK(std::fabs(norm - expected_norms[step]) <= 1e-4 * expected_norms[step]);
    hp.lr = float(lrs[step]);
    hp.step = int(step) + 1;
    hp.grad_scale = clip_scale(norm, max_norm);
    model.adamw_step(hp);
  }
}
