// KV-cache inference: prefill of a prompt then one-token decode steps must give the same
// last-position logits as recomputing the whole sequence with forward().
#include "common/catch.hpp"

#include <algorithm>
#include <unordered_map>

#include "core/check.hpp"
#include "core/model.hpp"
#include "cpu/backend.hpp"
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
  // Same ops on the same inputs: identical bits, though the inference model's layers share one slab.
  CHECK(inference.forward(tokens.data(), targets.data(), B, T) ==
        trainable.forward(tokens.data(), targets.data(), B, T));
  CHECK(inference.logits() == trainable.logits());
  CHECK_THROWS_WITH(inference.zero_grad(), Catch::Contains("inference only"));
  CHECK_THROWS_WITH(inference.backward(1.0f), Catch::Contains("inference only"));
  CHECK_THROWS_WITH(inference.grad_norm(), Catch::Contains("inference only"));
  CHECK_THROWS_WITH(inference.adamw_step(AdamWParams{}), Catch::Contains("inference only"));
  CHECK_THROWS_WITH(inference.gradients(), Catch::Contains("inference only"));

  // Generation: the inference model's one slab of activations (each layer's k, v stored into the
  // cache as the layer makes them) and its logits buffer (sized by its first use, one row per
  // sequence, then grown by a forward) give the training model's bits; decoding goes on after a
  // forward.
  GPT2 fresh(c, *backend, B, T, ModelMode::inference);
  fresh.set_parameters(params);
  const int prompt = 3;
  const std::vector<int> head = test::row_prefixes(tokens, B, T, prompt);
  CHECK(fresh.prefill(head.data(), B, prompt) == trainable.prefill(head.data(), B, prompt));
  std::vector<int> step(B);
  for (int pos = prompt; pos < T; ++pos) {
    for (int b = 0; b < B; ++b) step[b] = tokens[size_t(b) * T + pos];
    INFO("position " << pos);
    CHECK(fresh.decode(step.data(), B, pos) == trainable.decode(step.data(), B, pos));
    if (pos == prompt + 1) {
      CHECK(fresh.forward(tokens.data(), targets.data(), B, T) ==
            trainable.forward(tokens.data(), targets.data(), B, T));
      CHECK(fresh.logits() == trainable.logits());
    }
  }
}

namespace {

// The CPU backend, counting the bytes it holds.
class CountingCpuBackend : public cpu::CpuBackend {
 public:
  CountingCpuBackend() : CpuBackend(1) {}
  void* allocate(size_t bytes) override {
    void* p = CpuBackend::allocate(bytes);
    sizes_[p] = bytes;
    in_use += bytes;
    return p;
  }
  void release(void* p) noexcept override {
    if (auto it = sizes_.find(p); it != sizes_.end()) {
      in_use -= it->second;
      sizes_.erase(it);
    }
    CpuBackend::release(p);
  }
  size_t in_use = 0;

 private:
  std::unordered_map<void*, size_t> sizes_;
};

}  // namespace

TEST_CASE("a model holds what docs/model.md's memory formulas say, in training and in inference",
          "[model][decode]") {
  const ModelConfig c = test::tiny_config();
  const size_t N = ParameterLayout(c).total(), L = c.num_layers, C = c.channels, Vp = c.padded_vocab_size;
  const int B = 2, T = c.max_seq_len - 2, rows = 3;  // T short of the context: the KV cache is T long
  const size_t BT = size_t(B) * T, S = size_t(B) * c.num_heads * T;  // S: attention's row log-sum-exp
  const size_t kv = 2 * L * rows * size_t(T) * C;
  CountingCpuBackend backend;
  ModelOptions options;
  options.kv_cache_rows = rows;
  const auto tokens = test::random_tokens(size_t(rows) * T, 95, c.vocab_size);
  {
    // Training: parameters, gradients, m, v; every layer's activations; the logits; the scratch;
    // the inputs and targets (2 BT ints, 4 bytes as a float).
    GPT2 model(c, backend, B, T, ModelMode::training, options);
    const size_t held =
        4 * N + L * (16 * BT * C + 4 * BT + S) + 2 * BT * C + BT * Vp + 3 * BT + 10 * BT * C + 2 * BT;
    CHECK(backend.in_use == 4 * held);
    // memory() says the same, by what the bytes are for.
    const ModelMemory m = model.memory();
    CHECK(m.total() == backend.in_use);
    CHECK(m.parameters == 4 * N);
    CHECK(m.gradients == 4 * N);
    CHECK(m.optimizer == 8 * N);
    CHECK(m.activations == 4 * (L * (16 * BT * C + 4 * BT + S) + 2 * BT * C + BT * Vp + 3 * BT + 2 * BT));
    CHECK(m.logits == 4 * BT * Vp);
    CHECK(m.scratch == 4 * 10 * BT * C);
    CHECK(m.kv_cache == 0);
    model.prefill(tokens.data(), rows, 2);
    CHECK(backend.in_use == 4 * (held + kv));
    CHECK(model.memory().kv_cache == 4 * kv);
    CHECK(model.memory().total() == backend.in_use);
  }
  CHECK(backend.in_use == 0);
  // Inference: the parameters, one layer's activations (which every layer reuses) and no logits
  // until a use sizes them: a row per sequence for generation, B x T for a forward.
  GPT2 model(c, backend, B, T, ModelMode::inference, options);
  const size_t held = N + 16 * BT * C + 4 * BT + S + 2 * BT * C + 3 * BT + BT * C + 2 * BT;
  CHECK(backend.in_use == 4 * held);
  CHECK(model.memory().total() == backend.in_use);
  CHECK(model.memory().gradients + model.memory().optimizer == 0);
  model.prefill(tokens.data(), rows, 2);
  // The logits of the rows one forward takes (all `rows`, or fewer in the CPU's small groups).
  REQUIRE(backend.in_use > 4 * (held + kv));
  CHECK(backend.in_use - 4 * (held + kv) <= 4 * size_t(rows) * Vp);
  CHECK((backend.in_use - 4 * (held + kv)) % (4 * Vp) == 0);
  model.forward(tokens.data(), nullptr, B, T);
  CHECK(backend.in_use == 4 * (held + kv + BT * Vp));
  model.decode(tokens.data(), rows, 2);
  CHECK(backend.in_use == 4 * (held + kv + BT * Vp));
  // The cache holds max_T positions: a sequence of T tokens decodes no further.
  model.prefill(tokens.data(), rows, T);
  CHECK_THROWS_WITH(model.decode(tokens.data(), rows, T), Catch::Contains("the cache's 6 positions"));
}

// ModelOptions::classifier_rows: a training model holds one chunk of logits, R = min(B·T, rows),
// not B·T of them (docs/model.md); a forward with targets keeps to it, logits() projects all
// rows into a buffer of its own call, and only a forward without targets, whose logits are what
// is wanted, grows the buffer to B·T. An inference model's forward with targets takes R rows.
TEST_CASE("the classifier's chunks bound the logits a model holds", "[model][decode]") {
  const ModelConfig c = test::tiny_config();
  const size_t N = ParameterLayout(c).total(), L = c.num_layers, C = c.channels, Vp = c.padded_vocab_size;
  const int B = 2, T = c.max_seq_len, R = 5;
  const size_t BT = size_t(B) * T, S = size_t(B) * c.num_heads * T;
  const auto tokens = test::random_tokens(BT, 96, c.vocab_size);
  CountingCpuBackend backend;
  ModelOptions options;
  options.classifier_rows = R;
  {
    GPT2 model(c, backend, B, T, ModelMode::training, options);
    const size_t held = 4 * N + L * (16 * BT * C + 4 * BT + S) + 2 * BT * C + R * Vp + 3 * BT + 10 * BT * C + 2 * BT;
    CHECK(backend.in_use == 4 * held);
    model.zero_grad();
    model.forward_backward(tokens.data(), tokens.data(), B, T, 0.1f);
    CHECK(backend.in_use == 4 * held);
    model.forward(tokens.data(), tokens.data(), B, T);
    CHECK(model.logits().size() == BT * Vp);
    CHECK(backend.in_use == 4 * held);
    model.forward(tokens.data(), nullptr, B, T);
    CHECK(backend.in_use == 4 * (held - R * Vp + BT * Vp));
    CHECK(model.memory().total() == backend.in_use);
    CHECK(model.memory().logits == 4 * BT * Vp);
  }
  CHECK(backend.in_use == 0);
  GPT2 model(c, backend, B, T, ModelMode::inference, options);
  const size_t held = N + 16 * BT * C + 4 * BT + S + 2 * BT * C + 3 * BT + BT * C + 2 * BT;
  CHECK(backend.in_use == 4 * held);
  model.forward(tokens.data(), tokens.data(), B, T);
  CHECK(backend.in_use == 4 * (held + R * Vp));
}
