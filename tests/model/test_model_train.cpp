// Whole-model training behaviour on the CPU backend: loss at initialisation, overfitting one
// batch with AdamW, gradient accumulation equal to one big batch, weight decay only on the
// weight matrices, deterministic dropout, and the errors for bad calls.
#include "common/catch.hpp"

#include <algorithm>
#include <cmath>
#include <span>

#include "core/check.hpp"
#include "core/model.hpp"
#include "core/grad_clip.hpp"
#include "core/rng.hpp"
#include "model_test_util.hpp"

using namespace gpt2cc;

TEST_CASE("loss at initialisation is about ln(V)", "[model][train]") {
  // d2's shape with a 4000-token vocabulary: at N(0, 0.02) init the logits have std
  // ~0.02*sqrt(C) ~0.23, so the loss sits just above ln(V) = 8.29 (by ~var/2 ~ 0.03).
  ModelConfig c = model_preset("d2");
  c.vocab_size = 4000;
  c.padded_vocab_size = padded_vocab(c.vocab_size);
  c.max_seq_len = 32;
  auto backend = make_cpu_backend(1);
  const int B = 2, T = 32;
  GPT2 model(c, *backend, B, T);
  model.init_weights(1234);
  const auto inputs = test::random_tokens(B * T, 1, c.vocab_size);
  const auto targets = test::random_tokens(B * T, 2, c.vocab_size);
  const float loss = model.forward(inputs.data(), targets.data(), B, T);
  CHECK(model.num_targets() == B * T);
  CHECK(std::fabs(loss - std::log(float(c.vocab_size))) < 0.1f);

  // init_weights is deterministic in its seed and leaves padded rows and biases at 0.
  const auto p = model.parameters();
  model.init_weights(1234);
  CHECK(model.parameters() == p);
  model.init_weights(1235);
  CHECK(model.parameters() != p);
  const ParamTensor& wte = model.layout()[Param::wte];
  for (size_t k = size_t(c.vocab_size) * c.channels; k < wte.numel; ++k) REQUIRE(p[wte.offset + k] == 0.0f);
  const ParamTensor& qkvb = model.layout()[Param::qkvb];
  for (size_t k = 0; k < qkvb.numel; ++k) REQUIRE(p[qkvb.offset + k] == 0.0f);
  const ParamTensor& lnfw = model.layout()[Param::lnfw];
  for (size_t k = 0; k < lnfw.numel; ++k) REQUIRE(p[lnfw.offset + k] == 1.0f);
  // The weight standard deviations: 0.02, and 0.02/sqrt(2L) for the residual projections.
  auto stddev = [&](Param which) {
    const ParamTensor& t = model.layout()[which];
    double sum2 = 0;
    for (size_t k = 0; k < t.numel; ++k) sum2 += double(p[t.offset + k]) * p[t.offset + k];
    return std::sqrt(sum2 / t.numel);
  };
  CHECK(stddev(Param::fcw) == Approx(0.02).epsilon(0.02));
  CHECK(stddev(Param::fcprojw) == Approx(0.02 / std::sqrt(2.0 * c.num_layers)).epsilon(0.02));
}

TEST_CASE("one fixed batch overfits to loss < 0.05", "[model][train]") {
  ModelConfig c = test::tiny_config();
  c.channels = 32;
  c.num_heads = 4;
  c.max_seq_len = 16;
  auto backend = make_cpu_backend(1);
  const int B = 2, T = 16;
  GPT2 model(c, *backend, B, T);
  model.init_weights(7);
  const auto inputs = test::random_tokens(B * T, 8, c.vocab_size);
  const auto targets = test::random_tokens(B * T, 9, c.vocab_size);
  AdamWParams hp;
  hp.lr = 1e-2f;
  hp.weight_decay = 0.0f;
  float first = 0, loss = 0;
  int step = 0;
  for (step = 1; step <= 300; ++step) {
    model.zero_grad();
    loss = model.forward(inputs.data(), targets.data(), B, T);
    if (step == 1) first = loss;
    if (loss < 0.05f) break;
    model.backward(1.0f / model.num_targets());
    hp.step = step;
    hp.grad_scale = clip_scale(model.grad_norm(), 1.0);
    model.adamw_step(hp);
  }
  INFO("loss " << first << " -> " << loss << " after " << step << " steps");
  CHECK(first > 3.0f);
  CHECK(loss < 0.05f);
}

TEST_CASE("gradient accumulation over two half batches equals one batch", "[model][train]") {
  const ModelConfig c = test::tiny_config();
  auto backend = make_cpu_backend(1);
  const int B = 8, T = 8;
  GPT2 model(c, *backend, B, T);
  model.set_parameters(test::random_parameters(model.layout(), c, 51));
  const auto inputs = test::random_tokens(B * T, 52, c.vocab_size);
  const auto targets = test::targets_with_ignored(B * T, 53, c.vocab_size);

  model.zero_grad();
  const float loss = model.forward(inputs.data(), targets.data(), B, T);
  const int total = model.num_targets();
  model.backward(1.0f / total);
  const auto full = model.gradients();

  model.zero_grad();
  const size_t half = size_t(B / 2) * T;
  const float loss_a = model.forward(inputs.data(), targets.data(), B / 2, T);
  const int n_a = model.num_targets();
  model.backward(1.0f / total);
  const float loss_b = model.forward(inputs.data() + half, targets.data() + half, B / 2, T);
  const int n_b = model.num_targets();
  model.backward(1.0f / total);
  const auto accumulated = model.gradients();

  CHECK(n_a + n_b == total);
  CHECK(std::fabs((loss_a * n_a + loss_b * n_b) / total - loss) < 1e-5f);
  CHECK(test::rel_error(accumulated, full) < 1e-6);
  for (const ParamTensor& t : model.layout().tensors()) {
    INFO(t.name);
    CHECK(test::rel_error(accumulated.data() + t.offset, full.data() + t.offset, t.numel) < 1e-6);
  }
}

TEST_CASE("adamw_step decays exactly the tensors the layout flags", "[model][train]") {
  // With zero gradients the Adam term is 0, so each parameter becomes p - lr*wd*p exactly where
  // weight decay applies and stays put everywhere else. Which tensors are flagged: test_params.
  const ModelConfig c = test::tiny_config();
  auto backend = make_cpu_backend(1);
  GPT2 model(c, *backend, 1, 8);
  const auto before = test::random_parameters(model.layout(), c, 61);
  model.set_parameters(before);
  model.zero_grad();
  AdamWParams hp;
  hp.lr = 0.1f;
  hp.weight_decay = 0.5f;
  model.adamw_step(hp);
  const auto after = model.parameters();
  for (const ParamTensor& t : model.layout().tensors()) {
    std::vector<float> expected(before.begin() + t.offset, before.begin() + t.offset + t.numel);
    if (t.weight_decay)
      for (float& p : expected) p -= hp.lr * hp.weight_decay * p;
    test::expect_close(after.data() + t.offset, expected.data(), t.numel, 0.0, 1e-6, t.name);
  }
}

TEST_CASE("clip_scale follows torch.nn.utils.clip_grad_norm_", "[model][train]") {
  CHECK(clip_scale(0.5, 1.0) == 1.0f);
  CHECK(clip_scale(4.0, 1.0) == Approx(1.0 / (4.0 + 1e-6)));
  CHECK(clip_scale(4.0, 0.0) == 1.0f);  // clipping off
}

TEST_CASE("dropout: deterministic in the seed, off outside training", "[model][dropout]") {
  const ModelConfig c = test::tiny_config(0.3f);
  auto backend = make_cpu_backend(1);
  const int B = 2, T = 8;
  GPT2 model(c, *backend, B, T);
  model.set_parameters(test::random_parameters(model.layout(), c, 71));
  const auto inputs = test::random_tokens(B * T, 72, c.vocab_size);
  const auto targets = test::random_tokens(B * T, 73, c.vocab_size);

  const float a = model.forward(inputs.data(), targets.data(), B, T, true, 5);
  const auto logits_a = model.logits();
  const float b = model.forward(inputs.data(), targets.data(), B, T, true, 5);
  CHECK(a == b);
  CHECK(model.logits() == logits_a);
  const float other = model.forward(inputs.data(), targets.data(), B, T, true, 6);
  CHECK(other != a);
  const float eval1 = model.forward(inputs.data(), targets.data(), B, T, false, 5);
  const float eval2 = model.forward(inputs.data(), targets.data(), B, T, false, 6);
  CHECK(eval1 == eval2);
  CHECK(eval1 != a);
}

TEST_CASE("bad calls are rejected with a clear error", "[model]") {
  const ModelConfig c = test::tiny_config();
  auto backend = make_cpu_backend(1);
  GPT2 model(c, *backend, 2, 8);
  std::vector<int> tokens(24, 1), targets(24, 1);
  CHECK_THROWS_WITH(model.forward(tokens.data(), targets.data(), 3, 8), Catch::Contains("batch size B"));
  CHECK_THROWS_WITH(model.forward(tokens.data(), targets.data(), 2, 9), Catch::Contains("sequence length T"));
  tokens[5] = c.vocab_size;
  CHECK_THROWS_WITH(model.forward(tokens.data(), targets.data(), 2, 8), Catch::Contains("input token 37"));
  tokens[5] = 1;
  targets[2] = -2;
  CHECK_THROWS_AS(model.forward(tokens.data(), targets.data(), 2, 8), InputError);
  // A forward without targets returns NaN and cannot be followed by backward.
  CHECK(std::isnan(model.forward(tokens.data(), nullptr, 2, 8)));
  CHECK_THROWS_WITH(model.backward(1.0f), Catch::Contains("forward with targets"));
  targets[2] = 1;
  model.forward(tokens.data(), targets.data(), 2, 8);
  model.backward(1.0f / 16);
  CHECK_THROWS_WITH(model.backward(1.0f), Catch::Contains("already run"));
  CHECK_THROWS_AS(model.logits(), InputError);
  CHECK_THROWS_AS(model.set_parameters(std::vector<float>(3)), InputError);
  AdamWParams hp;
  hp.step = 0;
  CHECK_THROWS_AS(model.adamw_step(hp), InputError);
}

TEST_CASE("init, parameters and moments go a bounded piece at a time, as the whole would", "[model][train]") {
  // d2 with GPT-2's vocabulary: 6.9M parameters, more than the 4M floats (1 << 22) of one piece
  // of init_weights, with wte across the boundary between its pieces.
  const ModelConfig c = model_preset("d2");
  const size_t piece = size_t(1) << 22, odd = 1000003;  // read and written here in pieces of `odd`
  const auto inputs = test::random_tokens(8, 1, c.vocab_size), targets = test::random_tokens(8, 2, c.vocab_size);
  // Millions of floats: compared to a bool (Catch would print both vectors of a failed ==).
  const auto same = [](const std::vector<float>& a, const std::vector<float>& b) { return a == b; };
  for (const DType dtype : {DType::fp32, DType::bf16}) {
    INFO(dtype_name(dtype));
    auto backend = make_cpu_backend(1, dtype);
    GPT2 model(c, *backend, 1, 8);
    const size_t N = model.layout().total();
    REQUIRE(N > piece);
    model.init_weights(99);
    const std::vector<float> p = model.parameters();
    // Every weight is its tensor's counter-based draw, on both sides of a piece's end.
    const ParamTensor& wte = model.layout()[Param::wte];
    REQUIRE(wte.offset < piece);
    for (const size_t k :
         {size_t(0), piece - 1 - wte.offset, piece - wte.offset, size_t(c.vocab_size) * c.channels - 1})
      REQUIRE(p[wte.offset + k] == float(0.02f * philox_normal(99, uint32_t(Param::wte), k)));
    const ParamTensor& fcprojw = model.layout()[Param::fcprojw];
    const double residual = 0.02f / std::sqrt(2.0f * c.num_layers);
    CHECK(p[fcprojw.offset + fcprojw.numel - 1] ==
          float(residual * philox_normal(99, uint32_t(Param::fcprojw), fcprojw.numel - 1)));

    const auto each_piece = [&](auto&& f) {
      for (size_t at = 0; at < N; at += odd) f(at, std::min(odd, N - at));
    };
    std::vector<float> pieces(N);
    each_piece([&](size_t at, size_t n) { model.read_parameters(at, std::span<float>(pieces.data() + at, n)); });
    CHECK(same(pieces, p));

    // Written in pieces: the master and, in bf16, the compute copy, as set_parameters writes them.
    const std::vector<float> q = test::random_vector(N, 5, -0.05f, 0.05f);
    each_piece([&](size_t at, size_t n) { model.write_parameters(at, std::span<const float>(q.data() + at, n)); });
    CHECK(same(model.parameters(), q));
    GPT2 whole(c, *backend, 1, 8);
    whole.set_parameters(q);
    CHECK(model.forward(inputs.data(), targets.data(), 1, 8) == whole.forward(inputs.data(), targets.data(), 1, 8));

    // The moments after a step, read and written in pieces.
    AdamWParams hp;
    model.zero_grad();
    model.forward_backward(inputs.data(), targets.data(), 1, 8, 1.0f / 8);
    model.adamw_step(hp);
    std::vector<float> m, v;
    model.optimizer_state(m, v);
    REQUIRE(std::count(v.begin(), v.end(), 0.0f) < std::ptrdiff_t(N));
    std::vector<float> m_pieces(N), v_pieces(N);
    each_piece([&](size_t at, size_t n) {
      model.read_moment(GPT2::Moment::m, at, std::span<float>(m_pieces.data() + at, n));
      model.read_moment(GPT2::Moment::v, at, std::span<float>(v_pieces.data() + at, n));
    });
    CHECK(same(m_pieces, m));
    CHECK(same(v_pieces, v));
    each_piece([&](size_t at, size_t n) {
      whole.write_moment(GPT2::Moment::m, at, std::span<const float>(m.data() + at, n));
      whole.write_moment(GPT2::Moment::v, at, std::span<const float>(v.data() + at, n));
    });
    std::vector<float> whole_m, whole_v;
    whole.optimizer_state(whole_m, whole_v);
    CHECK(same(whole_m, m));
    CHECK(same(whole_v, v));

    // A piece past the end is refused, naming the range.
    std::vector<float> two(2);
    CHECK_THROWS_WITH(model.read_parameters(N - 1, two), Catch::Contains("outside the model's"));
    CHECK_THROWS_AS(model.write_parameters(N, std::span<const float>(two)), InputError);
    CHECK_THROWS_AS(model.read_moment(GPT2::Moment::v, N - 1, two), InputError);
    CHECK_THROWS_AS(model.write_moment(GPT2::Moment::m, N - 1, std::span<const float>(two)), InputError);
  }

  // A bf16 inference model keeps no master: its pieces are the bf16 weights, written and widened.
  auto backend = make_cpu_backend(1, DType::bf16);
  GPT2 pieces(c, *backend, 1, 8, ModelMode::inference), whole(c, *backend, 1, 8, ModelMode::inference);
  const size_t N = pieces.layout().total();
  const std::vector<float> q = test::random_vector(N, 6);
  for (size_t at = 0; at < N; at += odd)
    pieces.write_parameters(at, std::span<const float>(q.data() + at, std::min(odd, N - at)));
  whole.set_parameters(q);
  const std::vector<float> expected = whole.parameters();
  CHECK_FALSE(same(expected, q));  // rounded to bf16
  std::vector<float> got(N);
  for (size_t at = 0; at < N; at += odd)
    pieces.read_parameters(at, std::span<float>(got.data() + at, std::min(odd, N - at)));
  CHECK(same(got, expected));
  std::vector<float> one(1);
  CHECK_THROWS_AS(pieces.read_moment(GPT2::Moment::m, 0, one), Error);  // inference: no moments
}
