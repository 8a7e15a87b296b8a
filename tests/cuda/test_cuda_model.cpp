// The whole model on the CUDA backend against the CPU backend (core/model.hpp, written once for
// both): one training step (loss, logits, every gradient tensor, the gradient norm, parameters
// after AdamW) with and without dropout; 20 steps of a small model whose losses track the CPU's;
// KV-cache decoding against a full recompute; batched generation against sample by sample; and
// bit-exact repeatability and resume on CUDA; a recorded step (CUDA graph) after the logits moved.
#include "common/catch.hpp"

#include <algorithm>
#include <cmath>
#include <memory>

#include "core/generation.hpp"
#include "core/model.hpp"
#include "core/grad_clip.hpp"
#include "cpu/adamw.hpp"
#include "cuda_test_util.hpp"
#include "model/model_test_util.hpp"

using namespace gpt2cc;

namespace {

// L=2, C=36, NH=3 (HS=12, C not a multiple of 8), V=101 in Vp=128, maxT=16.
ModelConfig small_config(float dropout) {
  ModelConfig c;
  c.num_layers = 2;
  c.channels = 36;
  c.num_heads = 3;
  c.vocab_size = 101;
  c.padded_vocab_size = padded_vocab(c.vocab_size);
  c.max_seq_len = 16;
  c.dropout = dropout;
  return c;
}

// Compares two flat parameter-sized buffers tensor by tensor, so a failure names the tensor.
void expect_tensors_match(const std::vector<float>& actual, const std::vector<float>& expected,
                          const ParameterLayout& layout, const std::string& what, double tol) {
  REQUIRE(actual.size() == expected.size());
  for (const ParamTensor& t : layout.tensors()) {
    const auto begin = static_cast<std::ptrdiff_t>(t.offset), end = static_cast<std::ptrdiff_t>(t.offset + t.numel);
    test::expect_matches(std::vector<float>(actual.begin() + begin, actual.begin() + end),
                         std::vector<float>(expected.begin() + begin, expected.begin() + end), what + " " + t.name, tol);
  }
}

AdamWParams step_params(int step, float grad_scale) {
  AdamWParams hp;
  hp.lr = 1e-3f;
  hp.weight_decay = 0.1f;
  hp.step = step;
  hp.grad_scale = grad_scale;
  return hp;
}

// One optimisation step; returns the loss.
float train_step(GPT2& model, const std::vector<int>& inputs, const std::vector<int>& targets, int B, int T, int step,
                 uint64_t dropout_seed) {
  model.zero_grad();
  const float loss = model.forward(inputs.data(), targets.data(), B, T, true, dropout_seed);
  model.backward(1.0f / static_cast<float>(model.num_targets()));
  model.adamw_step(step_params(step, clip_scale(model.grad_norm(), 1.0)));
  return loss;
}

}  // namespace

TEST_CASE("a training step on cuda matches the cpu backend", "[cuda][model]") {
  const float dropout = GENERATE(0.0f, 0.1f);
  // The CUDA model's classifier in one chunk of rows, or in chunks of 10 of the 39 (the loss, the
  // logits projected again by logits() and by backward, dwte summed over the chunks).
  ModelOptions options;
  options.classifier_rows = GENERATE(8192, 10);
  INFO("dropout " << dropout << ", classifier_rows " << options.classifier_rows);
  const ModelConfig c = small_config(dropout);
  const int B = 3, T = 13;
  auto cpu_backend = make_cpu_backend(0);
  auto cuda_backend = make_cuda_backend(0);
  GPT2 cpu_model(c, *cpu_backend, B, T), cuda_model(c, *cuda_backend, B, T, ModelMode::training, options);
  const auto params = test::random_parameters(cpu_model.layout(), c, 131);
  cpu_model.set_parameters(params);
  cuda_model.set_parameters(params);
  const auto inputs = test::random_tokens(size_t(B) * T, 132, c.vocab_size);
  const auto targets = test::targets_with_ignored(size_t(B) * T, 133, c.vocab_size);

  const float cpu_loss = cpu_model.forward(inputs.data(), targets.data(), B, T, true, 134);
  const float cuda_loss = cuda_model.forward(inputs.data(), targets.data(), B, T, true, 134);
  CHECK(std::fabs(cuda_loss - cpu_loss) <= 1e-5 * std::fabs(cpu_loss));
  REQUIRE(cuda_model.num_targets() == cpu_model.num_targets());
  test::expect_matches(cuda_model.logits(), cpu_model.logits(), "logits");
  test::expect_matches(cuda_model.losses(), cpu_model.losses(), "per-token losses");

  cpu_model.zero_grad();
  cuda_model.zero_grad();
  cpu_model.backward(1.0f / static_cast<float>(cpu_model.num_targets()));
  cuda_model.backward(1.0f / static_cast<float>(cuda_model.num_targets()));
  expect_tensors_match(cuda_model.gradients(), cpu_model.gradients(), cpu_model.layout(), "gradient", 1e-5);
  const double cpu_norm = cpu_model.grad_norm(), cuda_norm = cuda_model.grad_norm();
  CHECK(std::fabs(cuda_norm - cpu_norm) <= 1e-5 * cpu_norm);

  // AdamW on CUDA, checked two ways. (1) Same inputs: the CUDA model's step against
  // cpu::adamw_update applied on the host to the same parameters and the CUDA gradients.
  const AdamWParams hp = step_params(1, clip_scale(cpu_norm, 1.0));
  const auto cuda_grads = cuda_model.gradients(), cpu_grads = cpu_model.gradients();
  std::vector<float> expected = cuda_model.parameters(), m, v;
  cuda_model.optimizer_state(m, v);
  for (const ParamTensor& t : cuda_model.layout().tensors()) {
    AdamWParams tensor_hp = hp;
    tensor_hp.weight_decay = t.weight_decay ? hp.weight_decay : 0.0f;
    cpu::adamw_update(expected.data() + t.offset, m.data() + t.offset, v.data() + t.offset,
                      cuda_grads.data() + t.offset, t.numel, tensor_hp);
  }
  cpu_model.adamw_step(hp);
  cuda_model.adamw_step(hp);
  const auto cuda_params = cuda_model.parameters(), cpu_params = cpu_model.parameters();
  expect_tensors_match(cuda_params, expected, cuda_model.layout(), "parameter after AdamW (same gradients)", 1e-5);
  std::vector<float> cuda_m, cuda_v;
  cuda_model.optimizer_state(cuda_m, cuda_v);
  expect_tensors_match(cuda_m, m, cuda_model.layout(), "AdamW m", 1e-5);
  expect_tensors_match(cuda_v, v, cuda_model.layout(), "AdamW v", 1e-5);

  // (2) End to end, CPU model against CUDA model. At step 1 the update is lr * g / (|g| + eps),
  // whose slope lr * eps / (|g| + eps)^2 is huge for |g| near round-off: the key bias's gradient,
  // for one, is exactly 0 in exact arithmetic (softmax ignores a shift shared by a row) and
  // round-off on each backend, so its update is +-lr on either side at random. The allowed
  // difference therefore adds the gradient tolerance checked above (1e-5 * max|g| of the
  // tensor) carried through that slope, capped at 2 lr (the largest possible disagreement).
  for (const ParamTensor& t : cpu_model.layout().tensors()) {
    double gmax = 0.0;
    for (size_t k = 0; k < t.numel; ++k) gmax = std::max(gmax, std::fabs(double(cpu_grads[t.offset + k])));
    const double dg = 1e-5 * gmax, eps = hp.eps;
    size_t bad = 0, worst = 0;
    double worst_excess = -1.0;
    for (size_t k = t.offset; k < t.offset + t.numel; ++k) {
      const double g = std::fabs(double(cpu_grads[k])) * hp.grad_scale;
      const double carried = std::min(2.0 * hp.lr, hp.lr * eps * dg * hp.grad_scale / ((g + eps) * (g + eps)));
      const double allowed = 1e-5 * std::fabs(double(cpu_params[k])) + 1e-7 + carried;
      const double diff = std::fabs(double(cuda_params[k]) - cpu_params[k]);
      if (!(diff <= allowed)) {
        ++bad;
        if (diff - allowed > worst_excess) {
          worst_excess = diff - allowed;
          worst = k;
        }
      }
    }
    INFO("parameter after AdamW " << t.name << ": " << bad << " of " << t.numel << " elements differ; worst at ["
                                  << worst - t.offset << "]: cuda " << cuda_params[worst] << ", cpu "
                                  << cpu_params[worst] << ", gradient " << cpu_grads[worst]);
    CHECK(bad == 0);
  }
}

TEST_CASE("20 training steps on cuda track the cpu losses", "[cuda][model]") {
  ModelConfig c = small_config(0.0f);
  c.channels = 64;
  c.num_heads = 4;
  c.max_seq_len = 32;
  const int B = 4, T = 32;
  auto cpu_backend = make_cpu_backend(0);
  auto cuda_backend = make_cuda_backend(0);
  GPT2 cpu_model(c, *cpu_backend, B, T), cuda_model(c, *cuda_backend, B, T);
  cpu_model.init_weights(141);
  cuda_model.init_weights(141);
  REQUIRE(test::same_bits(cuda_model.parameters(), cpu_model.parameters()));
  for (int step = 1; step <= 20; ++step) {
    const auto inputs = test::random_tokens(size_t(B) * T, 1000 + step, c.vocab_size);
    const auto targets = test::random_tokens(size_t(B) * T, 2000 + step, c.vocab_size);
    const float cpu_loss = train_step(cpu_model, inputs, targets, B, T, step, 0);
    const float cuda_loss = train_step(cuda_model, inputs, targets, B, T, step, 0);
    INFO("step " << step << ": cpu loss " << cpu_loss << ", cuda loss " << cuda_loss);
    CHECK(std::fabs(cuda_loss - cpu_loss) <= 1e-4 * std::fabs(cpu_loss));
  }
}

TEST_CASE("cuda KV-cache decoding equals a full recompute and the cpu", "[cuda][model][decode]") {
  const ModelConfig c = small_config(0.0f);
  const int B = 3, maxT = c.max_seq_len, prompt = 5;
  auto cpu_backend = make_cpu_backend(0);
  auto cuda_backend = make_cuda_backend(0);
  GPT2 cpu_model(c, *cpu_backend, B, maxT), model(c, *cuda_backend, B, maxT);
  const auto params = test::random_parameters(model.layout(), c, 151);
  cpu_model.set_parameters(params);
  model.set_parameters(params);
  const auto seq = test::random_tokens(size_t(B) * maxT, 152, c.vocab_size);
  // Logits of the last position of seq[:, :len] by a full forward, first V columns.
  auto recompute = [&](int len) { return test::full_forward_last_logits(model, seq, B, maxT, len); };
  const std::vector<int> head = test::row_prefixes(seq, B, maxT, prompt);
  const auto cached = model.prefill(head.data(), B, prompt);
  test::expect_matches(cached, recompute(prompt), "prefill logits");
  test::expect_matches(cached, cpu_model.prefill(head.data(), B, prompt), "prefill logits vs cpu");
  for (int pos = prompt; pos < maxT; ++pos) {
    INFO("position " << pos);
    std::vector<int> step(B);
    for (int b = 0; b < B; ++b) step[b] = seq[size_t(b) * maxT + pos];
    const auto reference = recompute(pos + 1);  // a forward between decode steps must not disturb the cache
    const auto decoded = model.decode(step.data(), B, pos);
    test::expect_matches(decoded, reference, "decode logits");
    test::expect_matches(decoded, cpu_model.decode(step.data(), B, pos), "decode logits vs cpu");
  }
}

TEST_CASE("cuda batched generation equals generating sample by sample", "[cuda][model][decode][batch]") {
  const ModelConfig c = small_config(0.0f);  // maxT 16
  const int rows = 6;
  auto backend = make_cuda_backend(0);
  ModelOptions options;
  options.kv_cache_rows = rows;
  // As generate builds them: activations for one sequence, one KV-cache row per sample.
  GPT2 batched(c, *backend, 1, c.max_seq_len, ModelMode::inference, options);
  GPT2 single(c, *backend, 1, c.max_seq_len, ModelMode::inference);
  const auto params = test::random_parameters(batched.layout(), c, 161);
  batched.set_parameters(params);
  single.set_parameters(params);

  // One prefill shared by every row, then each row decodes its own tokens. cuBLAS may round a
  // product of 6 rows differently from one row, so the rows match B = 1 to rounding.
  const std::vector<int> prompt = {7, 3, 99, 42, 0};
  const int T = static_cast<int>(prompt.size());
  batched.prefill(prompt.data(), 1, T);
  batched.kv_cache_select_rows(std::vector<int>(rows, 0));
  const auto steps = test::random_tokens(size_t(rows) * (c.max_seq_len - T), 162, c.vocab_size);
  for (int r = 0; r < rows; ++r) single.prefill(prompt.data(), 1, T);
  std::vector<std::vector<float>> batch_logits;
  for (int pos = T; pos < c.max_seq_len; ++pos)
    batch_logits.push_back(batched.decode(&steps[(pos - T) * rows], rows, pos));
  for (int r = 0; r < rows; ++r) {
    single.prefill(prompt.data(), 1, T);
    for (int pos = T; pos < c.max_seq_len; ++pos) {
      INFO("row " << r << " position " << pos);
      const auto alone = single.decode(&steps[(pos - T) * rows + r], 1, pos);
      const auto& all = batch_logits[pos - T];
      const std::vector<float> row(all.begin() + r * c.vocab_size, all.begin() + (r + 1) * c.vocab_size);
      test::expect_matches(row, alone, "batched decode row");
    }
  }

  // Whole generations past the 16-token context (batched re-prefill), greedy and sampled: the
  // tokens agree (random-weight logits are far from ties at this rounding), log-probs to 1e-4.
  SampleConfig greedy, sampled;
  greedy.greedy = true;
  sampled.top_k = 20;
  sampled.temperature = 0.9f;
  sampled.seed = 163;
  for (const SampleConfig& sampling : {greedy, sampled}) {
    Sampler sampler(sampling, c.vocab_size);
    GenerationConfig config;
    config.max_new_tokens = 30;
    config.eot_id = sampling.greedy ? -1 : 5;  // sampled rows may end early, at different steps
    const Generation g = generate_samples(batched, sampler, prompt, config, rows + 1, nullptr, nullptr, nullptr);
    for (int i = 0; i <= rows; ++i) {  // 7 samples: a batch of 6, then one
      INFO((sampling.greedy ? "greedy" : "sampled") << " sample " << i);
      const Sample alone = generate(single, sampler, prompt, config, static_cast<uint32_t>(i), nullptr, nullptr);
      REQUIRE(g.samples[i].tokens == alone.tokens);
      CHECK(g.samples[i].stop == alone.stop);
      CHECK(g.samples[i].reprefills == alone.reprefills);
      for (size_t t = 0; t < alone.log_probs.size(); ++t)
        CHECK(std::fabs(g.samples[i].log_probs[t] - alone.log_probs[t]) <= 1e-4);
    }
  }
}

TEST_CASE("cuda training is bit-for-bit repeatable and resumes exactly", "[cuda][model][determinism]") {
  const ModelConfig c = small_config(0.1f);
  const int B = 2, T = 16, steps = 4;
  auto backend = make_cuda_backend(0);
  std::vector<std::vector<int>> inputs, targets;
  for (int s = 0; s < steps; ++s) {
    inputs.push_back(test::random_tokens(size_t(B) * T, 161 + s, c.vocab_size));
    targets.push_back(test::targets_with_ignored(size_t(B) * T, 171 + s, c.vocab_size));
  }
  auto run = [&](GPT2& model, int first, int last, std::vector<float>& losses) {
    for (int s = first; s < last; ++s) losses.push_back(train_step(model, inputs[s], targets[s], B, T, s + 1, 500 + s));
  };

  std::vector<float> losses_a, losses_b, losses_c;
  GPT2 a(c, *backend, B, T);
  a.init_weights(181);
  run(a, 0, steps, losses_a);
  GPT2 b(c, *backend, B, T);
  b.init_weights(181);
  run(b, 0, steps, losses_b);
  CHECK(test::same_bits(losses_a, losses_b));
  CHECK(test::same_bits(a.parameters(), b.parameters()));

  // Resume: half the steps, then a fresh model from the saved parameters and optimizer state.
  GPT2 first_half(c, *backend, B, T);
  first_half.init_weights(181);
  run(first_half, 0, steps / 2, losses_c);
  std::vector<float> m, v;
  first_half.optimizer_state(m, v);
  GPT2 resumed(c, *backend, B, T);
  resumed.set_parameters(first_half.parameters());
  resumed.set_optimizer_state(m, v);
  run(resumed, steps / 2, steps, losses_c);
  CHECK(test::same_bits(losses_c, losses_a));
  CHECK(test::same_bits(resumed.parameters(), a.parameters()));
}

// A forward without targets wants every row's logits: in a training model with chunked logits it
// allocates a larger buffer. The recorded step (CUDA graph) made before then held the old one's
// address; replaying it afterwards wrote into freed memory (NaN gradients on the emulator).
TEST_CASE("a recorded training step after a forward without targets moved the logits", "[cuda][model][graphs]") {
  const ModelConfig c = small_config(0.0f);
  const int B = 3, T = 13;  // 39 rows: 4 chunks of 10
  auto backend = make_cuda_backend(0);
  ModelOptions recorded, direct;
  recorded.classifier_rows = direct.classifier_rows = 10;
  direct.cuda_graphs = false;
  GPT2 a(c, *backend, B, T, ModelMode::training, recorded), b(c, *backend, B, T, ModelMode::training, direct);
  const auto inputs = test::random_tokens(size_t(B) * T, 191, c.vocab_size);
  const auto targets = test::random_tokens(size_t(B) * T, 192, c.vocab_size);
  std::vector<float> losses_a, losses_b;
  for (auto [model, losses] : {std::pair{&a, &losses_a}, std::pair{&b, &losses_b}}) {
    model->init_weights(193);
    model->zero_grad();
    const float dloss = 1.0f / float(B * T);
    // The first call runs directly, the second records and replays: a recording exists.
    for (int i = 0; i < 2; ++i) losses->push_back(model->forward_backward(inputs.data(), targets.data(), B, T, dloss));
    model->forward(inputs.data(), nullptr, B, T);
    REQUIRE(model->logits().size() == size_t(B) * T * c.padded_vocab_size);
    losses->push_back(model->forward_backward(inputs.data(), targets.data(), B, T, dloss));
  }
  CHECK(test::same_bits(losses_a, losses_b));
  const std::vector<float> grads = a.gradients();
  CHECK(std::all_of(grads.begin(), grads.end(), [](float g) { return std::isfinite(g); }));
  CHECK(test::same_bits(grads, b.gradients()));
}
