// The generation loop on tiny random-weight models (no checkpoint): KV-cached logits equal a
// full recompute at every step of a generation longer than the context (sliding window with
// re-prefill), greedy is deterministic and the argmax of recomputed logits, end-of-text and stop
// strings end a sample, UTF-8 streaming, and sliding-window scoring.
#include "common/catch.hpp"
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/generation.hpp"
#include "tiny_config.hpp"

using namespace gpt2cc;

namespace {

using test::tiny_config;

// A model with fresh uniform weights large enough that attention is far from uniform.
struct TinyModel {
  explicit TinyModel(uint64_t seed, int max_T = 16) : backend(make_cpu_backend(1)) {
    model = std::make_unique<GPT2>(tiny_config(), *backend, 1, max_T);
    model->set_parameters(test::random_vector(model->layout().total(), seed, -0.25f, 0.25f));
  }
  std::unique_ptr<Backend> backend;
  std::unique_ptr<GPT2> model;
};

// Last-position logits (first V columns) of a full forward over `window`.
std::vector<float> recompute_logits(GPT2& model, const std::vector<int>& window) {
  const int T = static_cast<int>(window.size());
  model.forward(window.data(), nullptr, 1, T);
  std::vector<float> all = model.logits();
  const size_t Vp = model.config().padded_vocab_size, V = model.config().vocab_size;
  return std::vector<float>(all.begin() + (T - 1) * Vp, all.begin() + (T - 1) * Vp + V);
}

std::string token_text(int id) {
  std::string text = "<";  // built with += : g++ 12 warns falsely (-Wrestrict) on "<" + std::string
  text += std::to_string(id);
  text += '>';
  return text;
}

}  // namespace

TEST_CASE("KV-cache logits equal full-recompute logits across a generation longer than the context", "[generate]") {
  TinyModel cached(7), reference(7);
  const std::vector<int> prompt = {3, 14, 15, 9, 26};
  for (int keep : {0, 1, 5, 15, 16}) {
    Context context(*cached.model, true, keep);
    std::vector<float> logits = context.start(prompt);
    std::vector<int> expected_window = prompt;
    const std::vector<int> pushed = test::random_tokens(45, 100 + keep, 61);  // 50 tokens through a 16-token context
    for (size_t step = 0; step <= pushed.size(); ++step) {
      std::vector<int> window(context.window().begin(), context.window().end());
      REQUIRE(window == expected_window);
      test::expect_close(logits, recompute_logits(*reference.model, window), 1e-5, 1e-5,
                         "keep " + std::to_string(keep) + " step " + std::to_string(step));
      if (step == pushed.size()) break;
      logits = context.push(pushed[step]);
      // The documented rule: on overflow the window becomes the last `keep` tokens.
      expected_window.push_back(pushed[step]);
      if (expected_window.size() > 16) {
        const size_t k = keep == 0 ? 8 : keep;
        expected_window.erase(expected_window.begin(), expected_window.end() - k);
      }
    }
    CHECK(context.reprefills() > 0);
  }
}

TEST_CASE("greedy generation is deterministic and the argmax of recomputed logits at every step", "[generate]") {
  TinyModel tiny(11), reference(11);
  SampleConfig greedy;
  greedy.greedy = true;
  Sampler sampler(greedy, 61);
  GenerationConfig config;
  config.max_new_tokens = 40;  // past the 16-token context: exercises re-prefill
  const std::vector<int> prompt = {1, 2, 3};
  Sample first = generate(*tiny.model, sampler, prompt, config, 0, nullptr, nullptr);
  Sample second = generate(*tiny.model, sampler, prompt, config, 0, nullptr, nullptr);
  REQUIRE(first.tokens.size() == 40);
  CHECK(first.tokens == second.tokens);
  CHECK(first.stop == SampleStop::max_tokens);
  CHECK(first.reprefills > 0);

  std::vector<int> window = prompt;
  for (size_t step = 0; step < first.tokens.size(); ++step) {
    std::vector<float> logits = recompute_logits(*reference.model, window);
    INFO("step " << step);
    REQUIRE(argmax(logits) == first.tokens[step]);
    CHECK(first.log_probs[step] == Approx(log_prob(logits, first.tokens[step])).margin(1e-5));
    window.push_back(first.tokens[step]);
    if (window.size() > 16) window.erase(window.begin(), window.end() - 8);
  }

  GenerationConfig recompute = config;
  recompute.use_kv_cache = false;
  CHECK(generate(*tiny.model, sampler, prompt, recompute, 0, nullptr, nullptr).tokens == first.tokens);
}

TEST_CASE("sampled generation is reproducible from the seed", "[generate]") {
  TinyModel tiny(13);
  SampleConfig config;
  config.top_k = 20;
  config.top_p = 0.95f;
  config.temperature = 1.2f;
  config.seed = 99;
  GenerationConfig gen;
  gen.max_new_tokens = 30;
  const std::vector<int> prompt = {5, 6};
  Sampler a(config, 61), b(config, 61);
  std::vector<int> sample0 = generate(*tiny.model, a, prompt, gen, 0, nullptr, nullptr).tokens;
  CHECK(generate(*tiny.model, b, prompt, gen, 0, nullptr, nullptr).tokens == sample0);
  CHECK(generate(*tiny.model, b, prompt, gen, 1, nullptr, nullptr).tokens != sample0);
  config.seed = 100;
  Sampler c(config, 61);
  CHECK(generate(*tiny.model, c, prompt, gen, 0, nullptr, nullptr).tokens != sample0);
}

TEST_CASE("end-of-text and stop strings end a sample; text streams as produced", "[generate]") {
  TinyModel tiny(17);
  SampleConfig greedy;
  greedy.greedy = true;
  Sampler sampler(greedy, 61);
  GenerationConfig config;
  config.max_new_tokens = 20;
  const std::vector<int> prompt = {8, 9, 10};
  std::vector<int> free_run = generate(*tiny.model, sampler, prompt, config, 0, nullptr, nullptr).tokens;
  REQUIRE(free_run.size() == 20);

  GenerationConfig eot = config;
  eot.eot_id = free_run[3];
  Sample ended = generate(*tiny.model, sampler, prompt, eot, 0, nullptr, nullptr);
  CHECK(ended.stop == SampleStop::end_of_text);
  size_t first_eot = 0;
  while (free_run[first_eot] != eot.eot_id) ++first_eot;
  CHECK(ended.tokens == std::vector<int>(free_run.begin(), free_run.begin() + first_eot));

  GenerationConfig stop = config;
  stop.stop_strings = {token_text(free_run[4])};
  std::string streamed;
  Sample stopped = generate(*tiny.model, sampler, prompt, stop, 0, token_text,
                            [&](std::string_view piece) { streamed += piece; });
  size_t first_stop = 0;
  while (free_run[first_stop] != free_run[4]) ++first_stop;
  std::string expected;
  for (size_t i = 0; i < first_stop; ++i) expected += token_text(free_run[i]);
  CHECK(stopped.stop == SampleStop::stop_string);
  CHECK(stopped.text == expected);
  CHECK(streamed == expected);
}

TEST_CASE("bad generation input is an InputError", "[generate]") {
  TinyModel tiny(19);
  Context context(*tiny.model, true);
  CHECK_THROWS_AS(context.start(std::vector<int>{}), InputError);
  CHECK_THROWS_WITH(context.start(std::vector<int>(17, 1)), Catch::Contains("more than the model's context"));
  CHECK_THROWS_AS(context.start(std::vector<int>{1, 61}), InputError);
  CHECK_THROWS_AS(Context(*tiny.model, true, 17), InputError);
  GenerationConfig zero;
  zero.max_new_tokens = 0;
  CHECK_THROWS_AS(validate(zero), InputError);
  GenerationConfig empty_stop;
  empty_stop.stop_strings = {""};
  CHECK_THROWS_AS(validate(empty_stop), InputError);
}

TEST_CASE("UTF-8 streaming holds incomplete characters and replaces invalid bytes", "[generate][utf8]") {
  std::string out;
  TextStream stream({}, [&](std::string_view s) { out += s; });
  stream.append("caf\xC3");
  CHECK(out == "caf");  // the first byte of the two-byte "é" is held back
  stream.append("\xA9 \xE2\x82");
  CHECK(out == "caf\xC3\xA9 ");
  stream.append("\xAC!");  // "€!"
  CHECK(out == "caf\xC3\xA9 \xE2\x82\xAC!");
  stream.append("\xFF" "a" "\xE2\x82" "b" "\x80");
  CHECK(out == "caf\xC3\xA9 \xE2\x82\xAC!\xEF\xBF\xBD" "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
  stream.append("\xF0\x9F");
  stream.finish();  // an incomplete ending becomes one U+FFFD
  CHECK(out == "caf\xC3\xA9 \xE2\x82\xAC!\xEF\xBF\xBD" "a\xEF\xBF\xBD" "b\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(stream.text() == out);

  std::string overlong;
  append_valid_utf8("\xC0\xAF\xED\xA0\x80", true, overlong);  // overlong '/' and a surrogate
  CHECK(overlong.find('/') == std::string::npos);
  CHECK(overlong.size() % 3 == 0);
}

TEST_CASE("stop strings are matched across token boundaries and never printed", "[generate][utf8]") {
  std::string out;
  TextStream stream({"END", "\n\n"}, [&](std::string_view s) { out += s; });
  CHECK_FALSE(stream.append("abcE"));
  CHECK(out == "abc");  // "E" could start "END"
  CHECK_FALSE(stream.append("x\n"));
  CHECK(out == "abcEx");
  CHECK(stream.append("\nEND"));  // "\n\n" comes first
  stream.finish();
  CHECK(out == "abcEx");
  CHECK(stream.append("more"));  // after a stop nothing more is emitted
  CHECK(out == "abcEx");

  // Pieces that are nothing but a stop string's beginning, one after another.
  std::string split;
  TextStream pieces({"END"}, [&](std::string_view s) { split += s; });
  CHECK_FALSE(pieces.append("E"));
  CHECK_FALSE(pieces.append("N"));
  CHECK(split.empty());
  CHECK(pieces.append("D"));
  pieces.finish();
  CHECK(split.empty());
  CHECK(pieces.text().empty());

  // The earliest of several stop strings wins, though the last listed never appears.
  TextStream earliest({"END", "\n\n"}, nullptr);
  CHECK(earliest.append("aEND b"));
  CHECK(earliest.text() == "a");
  // A stop string right after an incomplete UTF-8 sequence: the text is final there, so the
  // sequence becomes U+FFFD rather than being held back for bytes that never come.
  TextStream cut({"END"}, nullptr);
  CHECK(cut.append("abc\xE2\x82" "END"));
  CHECK(cut.text() == "abc\xEF\xBF\xBD");
}

TEST_CASE("scoring: each token once, non-overlapping windows equal their forward losses", "[generate][score]") {
  TinyModel tiny(23);
  const std::vector<int> tokens = test::random_tokens(50, 5, 61);
  for (int window : {1, 7, 16}) {
    for (int stride : {1, 3, window}) {
      if (stride > window) continue;
      ScoreResult r = score(*tiny.model, tokens, window, stride);
      CHECK(r.tokens == 49);
      CHECK(r.perplexity == Approx(std::exp(r.loss)));
    }
  }
  // stride = window: the mean of chunk losses weighted by their lengths (16, 16, 16, 1).
  double sum = 0.0;
  for (int b = 0; b < 49; b += 16) {
    const int T = std::min(16, 49 - b);
    std::vector<int> targets(tokens.begin() + b + 1, tokens.begin() + b + 1 + T);
    sum += static_cast<double>(tiny.model->forward(tokens.data() + b, targets.data(), 1, T)) * T;
  }
  ScoreResult chunks = score(*tiny.model, tokens, 16, 16);
  CHECK(chunks.windows == 4);
  CHECK(chunks.loss == Approx(sum / 49).epsilon(1e-6));
  // stride 1, window 16: the last token is predicted from the 16 tokens before it.
  ScoreResult sliding = score(*tiny.model, tokens, 16, 1);
  CHECK(sliding.windows == 49 - 16 + 1);
  CHECK(sliding.loss != Approx(chunks.loss).epsilon(1e-6));  // more context changes the loss

  CHECK_THROWS_AS(score(*tiny.model, std::vector<int>{4}, 16, 8), InputError);
  CHECK_THROWS_AS(score(*tiny.model, tokens, 17, 8), InputError);
  CHECK_THROWS_AS(score(*tiny.model, tokens, 8, 9), InputError);
  CHECK_THROWS_AS(score(*tiny.model, tokens, 8, 0), InputError);
}
