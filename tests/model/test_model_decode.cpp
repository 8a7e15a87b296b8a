// KV-cache inference: prefill of a prompt then one-token decode steps must give the same
// last-position logits as recomputing the whole sequence with forward().
#include <catch2/catch.hpp>

#include "core/check.hpp"
#include "core/model.hpp"
#include "model_test_util.hpp"

using namespace gpt2cc;

TEST_CASE("prefill + decode logits equal a full recompute", "[model][decode]") {
  const ModelConfig c = test::tiny_config();
  auto backend = make_cpu_backend(1);
  const int B = 3, maxT = c.max_seq_len, prompt = GENERATE(1, 3);
  const ModelMode mode = GENERATE(ModelMode::training, ModelMode::inference);
  INFO("prompt length " << prompt << ", " << (mode == ModelMode::training ? "training" : "inference") << " model");
  GPT2 model(c, *backend, B, maxT, mode);
  model.set_parameters(test::random_parameters(model.layout(), c, 81));
  const auto seq = test::random_tokens(size_t(B) * maxT, 82, c.vocab_size);  // (B, maxT)

  // Prompt = the first `prompt` tokens of each row.
  const std::vector<int> head = test::row_prefixes(seq, B, maxT, prompt);
  auto cached = model.prefill(head.data(), B, prompt);
  test::expect_close(cached, test::full_forward_last_logits(model, seq, B, maxT, prompt), 1e-5, 1e-5,
                     "prefill logits");

  for (int pos = prompt; pos < maxT; ++pos) {
    std::vector<int> step(B);
    for (int b = 0; b < B; ++b) step[b] = seq[size_t(b) * maxT + pos];
    // A forward between decode steps must not disturb the cache.
    const auto reference = test::full_forward_last_logits(model, seq, B, maxT, pos + 1);
    cached = model.decode(step.data(), B, pos);
    INFO("position " << pos);
    test::expect_close(cached, reference, 1e-5, 1e-5, "decode logits");
    CHECK(test::rel_error(cached, reference) < 1e-5);
  }
  std::vector<int> one(B, 1);
  CHECK_THROWS_WITH(model.decode(one.data(), B, maxT), Catch::Contains("position"));
  CHECK_THROWS_WITH(model.decode(one.data(), B - 1, 2), Catch::Contains("batch size"));
}

TEST_CASE("decode before prefill is an error", "[model][decode]") {
  const ModelConfig c = test::tiny_config();
  auto backend = make_cpu_backend(1);
  GPT2 model(c, *backend, 1, 8);
  int token = 0;
  CHECK_THROWS_WITH(model.decode(&token, 1, 1), Catch::Contains("prefill"));
}

TEST_CASE("an inference model computes the training model's logits and refuses to train", "[model][decode]") {
  const ModelConfig c = test::tiny_config();
  auto backend = make_cpu_backend(1);
  const int B = 2, T = c.max_seq_len;
  GPT2 trainable(c, *backend, B, T), inference(c, *backend, B, T, ModelMode::inference);
  CHECK(inference.mode() == ModelMode::inference);
  const auto params = test::random_parameters(trainable.layout(), c, 91);
  trainable.set_parameters(params);
  inference.set_parameters(params);
  const auto tokens = test::random_tokens(size_t(B) * T, 92, c.vocab_size);
  const auto targets = test::random_tokens(size_t(B) * T, 93, c.vocab_size);
  // Same ops on the same inputs: identical bits, though attention's saved values share one slab.
  CHECK(inference.forward(tokens.data(), targets.data(), B, T) == trainable.forward(tokens.data(), targets.data(), B, T));
  CHECK(inference.logits() == trainable.logits());
  CHECK_THROWS_WITH(inference.zero_grad(), Catch::Contains("inference only"));
  CHECK_THROWS_WITH(inference.backward(1.0f), Catch::Contains("inference only"));
  CHECK_THROWS_WITH(inference.grad_norm(), Catch::Contains("inference only"));
  CHECK_THROWS_WITH(inference.adamw_step(AdamWParams{}), Catch::Contains("inference only"));
  CHECK_THROWS_WITH(inference.gradients(), Catch::Contains("inference only"));
}
