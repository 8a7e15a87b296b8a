// The sampler on crafted distributions: greedy and top-k = 1 are the argmax, top-p keeps exactly
// the smallest nucleus (ties included), low temperature approaches greedy, 100k seeded draws
// match the distribution by a chi-square bound, the CTRL repetition penalty, padded vocabulary
// columns, and the decoding statistics on hand-made sequences.
#include "common/catch.hpp"
#include <cmath>
#include <vector>

#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/sampler.hpp"

using namespace gpt2cc;

namespace {

std::vector<Candidate> candidates_from_probs(const std::vector<double>& probs) {
  std::vector<Candidate> c;
  for (size_t i = 0; i < probs.size(); ++i) c.push_back({static_cast<float>(std::log(probs[i])), static_cast<int>(i)});
  return c;
}

std::vector<int> kept_ids(const std::vector<double>& probs, int top_k, float top_p) {
  std::vector<double> out;
  std::vector<int> ids;
  for (const Candidate& c : truncate_candidates(candidates_from_probs(probs), top_k, top_p, out)) ids.push_back(c.id);
  return ids;
}

// Pearson chi-square statistic of observed counts against expected probabilities.
double chi_square(const std::vector<int>& counts, const std::vector<double>& probs, int draws) {
  double x2 = 0.0;
  for (size_t i = 0; i < probs.size(); ++i) {
    double expected = probs[i] * draws;
    x2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  return x2;
}

}  // namespace

TEST_CASE("invalid sampling settings are rejected with InputError", "[sampler]") {
  auto bad = [](auto edit) {
    SampleConfig c;
    edit(c);
    return c;
  };
  CHECK_THROWS_AS(validate(bad([](SampleConfig& c) { c.temperature = 0.0f; })), InputError);
  CHECK_THROWS_AS(validate(bad([](SampleConfig& c) { c.temperature = -1.0f; })), InputError);
  CHECK_THROWS_AS(validate(bad([](SampleConfig& c) { c.temperature = NAN; })), InputError);
  CHECK_THROWS_AS(validate(bad([](SampleConfig& c) { c.top_k = -1; })), InputError);
  CHECK_THROWS_AS(validate(bad([](SampleConfig& c) { c.top_p = 0.0f; })), InputError);
  CHECK_THROWS_AS(validate(bad([](SampleConfig& c) { c.top_p = 1.5f; })), InputError);
  CHECK_THROWS_AS(validate(bad([](SampleConfig& c) { c.repetition_penalty = 0.5f; })), InputError);
  CHECK_THROWS_WITH(validate(bad([](SampleConfig& c) { c.top_p = 2.0f; })), Catch::Contains("top-p"));
  CHECK_NOTHROW(validate(SampleConfig{}));
}

TEST_CASE("greedy and top-k = 1 pick the argmax, lowest id on ties", "[sampler]") {
  const int V = 300;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::vector<float> logits = test::random_vector(V, seed, -5.0f, 5.0f);
    int expected = 0;
    for (int i = 1; i < V; ++i)
      if (logits[i] > logits[expected]) expected = i;
    SampleConfig greedy;
    greedy.greedy = true;
    Sampler g(greedy, V);
    CHECK(g.sample(logits, {}, 0, seed) == expected);
    SampleConfig k1;
    k1.top_k = 1;
    k1.temperature = 0.5f + 0.1f * seed;
    Sampler s(k1, V);
    for (uint64_t step = 0; step < 10; ++step) CHECK(s.sample(logits, {}, 3, step) == expected);
  }
  std::vector<float> tied = {1.0f, 3.0f, 2.0f, 3.0f};
  CHECK(argmax(tied) == 1);
}

TEST_CASE("top-k keeps the k largest logits, ties broken by lower id", "[sampler]") {
  std::vector<double> probs = {0.1, 0.3, 0.2, 0.2, 0.2};
  CHECK(kept_ids(probs, 1, 1.0f) == std::vector<int>{1});
  CHECK(kept_ids(probs, 2, 1.0f) == std::vector<int>{1, 2});
  CHECK(kept_ids(probs, 3, 1.0f) == std::vector<int>{1, 2, 3});
  CHECK(kept_ids(probs, 5, 1.0f).size() == 5);
  CHECK(kept_ids(probs, 50, 1.0f).size() == 5);
  std::vector<double> renormalised;
  truncate_candidates(candidates_from_probs(probs), 2, 1.0f, renormalised);
  REQUIRE(renormalised.size() == 2);
  CHECK(renormalised[0] == Approx(0.6).epsilon(1e-6));
  CHECK(renormalised[1] == Approx(0.4).epsilon(1e-6));
}

TEST_CASE("top-p keeps exactly the smallest set whose probability reaches p", "[sampler]") {
  // Sorted: id1 0.3, id2 0.2, id3 0.2, id4 0.2, id0 0.1 (the three 0.2 are tied).
  std::vector<double> probs = {0.1, 0.3, 0.2, 0.2, 0.2};
  CHECK(kept_ids(probs, 0, 0.05f) == std::vector<int>{1});
  CHECK(kept_ids(probs, 0, 0.3f) == std::vector<int>{1});
  CHECK(kept_ids(probs, 0, 0.31f) == std::vector<int>{1, 2});
  CHECK(kept_ids(probs, 0, 0.5f) == std::vector<int>{1, 2});       // reached exactly, tie cut by id
  CHECK(kept_ids(probs, 0, 0.51f) == std::vector<int>{1, 2, 3});
  CHECK(kept_ids(probs, 0, 0.7f) == std::vector<int>{1, 2, 3});
  CHECK(kept_ids(probs, 0, 0.71f) == std::vector<int>{1, 2, 3, 4});
  CHECK(kept_ids(probs, 0, 0.9f) == std::vector<int>{1, 2, 3, 4});
  CHECK(kept_ids(probs, 0, 0.91f).size() == 5);
  // All tied: p = 0.5 over four equal tokens needs exactly two of them.
  CHECK(kept_ids({0.25, 0.25, 0.25, 0.25}, 0, 0.5f) == std::vector<int>{0, 1});
  // top-p applies to the distribution left after top-k: top-2 renormalised is {0.6, 0.4}.
  CHECK(kept_ids(probs, 2, 0.6f) == std::vector<int>{1});
  CHECK(kept_ids(probs, 2, 0.61f) == std::vector<int>{1, 2});
  // The probabilities returned are those of the kept tokens, renormalised over them.
  std::vector<double> out;
  const auto kept = truncate_candidates(candidates_from_probs(probs), 0, 0.71f, out);
  REQUIRE(out.size() == kept.size());
  CHECK(out[0] == Approx(0.3 / 0.9));
  CHECK(out[3] == Approx(0.2 / 0.9));
  CHECK(out[0] + out[1] + out[2] + out[3] == Approx(1.0));
}

TEST_CASE("100k seeded draws match the distribution (chi-square)", "[sampler]") {
  const std::vector<double> probs = {0.30, 0.20, 0.15, 0.10, 0.08, 0.07, 0.05, 0.03, 0.015, 0.005};
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  SampleConfig config;
  config.seed = 20240601;
  Sampler sampler(config, static_cast<int>(probs.size()));
  const int draws = 100000;
  std::vector<int> counts(probs.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts[sampler.sample(logits, {}, 0, i)];
  // 9 degrees of freedom: P(chi2 > 27.88) = 0.001.
  CHECK(chi_square(counts, probs, draws) < 27.88);

  // Temperature 2 flattens to p^(1/2) renormalised; top-k 4 then keeps the first four.
  config.temperature = 2.0f;
  config.top_k = 4;
  Sampler flat(config, static_cast<int>(probs.size()));
  std::vector<double> expected;
  double z = 0.0;
  for (int i = 0; i < 4; ++i) z += std::sqrt(probs[i]);
  for (int i = 0; i < 4; ++i) expected.push_back(std::sqrt(probs[i]) / z);
  std::vector<int> counts4(probs.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts4[flat.sample(logits, {}, 1, i)];
  for (size_t i = 4; i < probs.size(); ++i) CHECK(counts4[i] == 0);
  counts4.resize(4);
  CHECK(chi_square(counts4, expected, draws) < 16.27);  // 3 degrees of freedom, P = 0.001

  // top-p 0.6 keeps the nucleus {0.30, 0.20, 0.15} (0.65 >= 0.6), renormalised.
  config.temperature = 1.0f;
  config.top_k = 0;
  config.top_p = 0.6f;
  Sampler nucleus(config, static_cast<int>(probs.size()));
  std::vector<int> counts3(probs.size(), 0);
  for (int i = 0; i < draws; ++i) ++counts3[nucleus.sample(logits, {}, 2, i)];
  for (size_t i = 3; i < probs.size(); ++i) CHECK(counts3[i] == 0);
  counts3.resize(3);
  CHECK(chi_square(counts3, {0.30 / 0.65, 0.20 / 0.65, 0.15 / 0.65}, draws) < 13.82);  // 2 d.o.f., P = 0.001
}

TEST_CASE("draw_index is the inverse CDF: the first i with u < p_0 + ... + p_i", "[sampler]") {
  const std::vector<double> probs = {0.0, 0.5, 0.0, 0.25, 0.25, 0.0};
  CHECK(draw_index(probs, 0.0) == 1);  // a zero-probability token is never drawn, even at u = 0
  CHECK(draw_index(probs, 0.4999) == 1);
  CHECK(draw_index(probs, 0.5) == 3);  // a boundary belongs to the token above it
  CHECK(draw_index(probs, 0.75) == 4);
  CHECK(draw_index(probs, 0.9999) == 4);
  // Probabilities whose rounded total falls short of u: the last token with nonzero
  // probability, never the zero-probability ones after it.
  const std::vector<double> short_total = {0.5, 0.25, 0.0, 0.0};
  CHECK(draw_index(short_total, 0.9) == 1);
}

TEST_CASE("draws are reproducible from (seed, stream, index)", "[sampler]") {
  std::vector<float> logits = test::random_vector(1000, 5, -2.0f, 2.0f);
  SampleConfig config;
  config.top_p = 0.9f;
  Sampler a(config, 1000), b(config, 1000);
  std::vector<int> ra, rb, rc;
  for (int i = 0; i < 50; ++i) {
    ra.push_back(a.sample(logits, {}, 0, i));
    rb.push_back(b.sample(logits, {}, 0, i));
    rc.push_back(b.sample(logits, {}, 1, i));
  }
  CHECK(ra == rb);
  CHECK(ra != rc);
  for (int i = 0; i < 10000; ++i) {
    double u = uniform_double(9, 2, i);
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
  }
}

TEST_CASE("very low temperature approaches greedy", "[sampler]") {
  std::vector<float> logits = {0.0f, 1.0f, 2.9f, 3.0f, 2.95f, -1.0f};
  double previous_share = 0.0;
  for (float temperature : {2.0f, 1.0f, 0.3f, 0.1f, 0.001f}) {
    SampleConfig config;
    config.temperature = temperature;
    Sampler sampler(config, 6);
    int argmax_hits = 0;
    for (int i = 0; i < 4000; ++i) argmax_hits += sampler.sample(logits, {}, 0, i) == 3;
    double share = argmax_hits / 4000.0;
    CHECK(share > previous_share);
    previous_share = share;
  }
  CHECK(previous_share == 1.0);  // at T = 0.001 the 0.05 gap is a factor e^-50
}

TEST_CASE("a temperature so small that l / T overflows still samples the argmax", "[sampler]") {
  // 1 / 1e-45 is infinite in float, and 3.0 / 1e-38 overflows too: the sampler takes
  // (l - max l) / T instead, whose maximum is 0. So with every logit negative (as a trained
  // model's are), where every l / T overflows to -inf, none of them finite.
  const std::vector<float> mixed = {0.0f, 1.0f, 2.9f, 3.0f, 2.95f, -1.0f};
  const std::vector<float> negative = {-50.0f, -60.0f, -41.0f, -40.0f, -40.5f, -70.0f};
  for (const std::vector<float>& logits : {mixed, negative}) {
    for (float temperature : {1e-45f, 1e-38f}) {
      INFO("first logit " << logits[0] << ", temperature " << temperature);
      SampleConfig config;
      config.temperature = temperature;
      Sampler sampler(config, 6);
      for (int i = 0; i < 100; ++i) REQUIRE(sampler.sample(logits, {}, 0, i) == 3);
    }
  }
}

TEST_CASE("non-finite logits are refused as a broken model, not sampled", "[sampler]") {
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    std::vector<float> logits = {0.0f, 1.0f, bad, 0.5f};
    for (bool greedy : {false, true}) {
      SampleConfig config;
      config.greedy = greedy;
      Sampler sampler(config, 4);
      CHECK_THROWS_MATCHES(sampler.sample(logits, {}, 0, 0), InputError,
                           Catch::Message("the model's next-token logits are not finite (1 of 4 are NaN or infinite): "
                                          "its weights have diverged or are corrupt"));
    }
  }
}

TEST_CASE("padded vocabulary columns are never sampled", "[sampler]") {
  const int V = 200, Vp = 256;
  std::vector<float> row = test::random_vector(Vp, 11, -1.0f, 1.0f);
  for (int i = V; i < Vp; ++i) row[i] = 1e4f;  // would win everything if looked at
  SampleConfig greedy;
  greedy.greedy = true;
  CHECK(Sampler(greedy, V).sample(row, {}, 0, 0) < V);
  SampleConfig hot;
  hot.temperature = 5.0f;
  Sampler sampler(hot, V);
  for (int i = 0; i < 5000; ++i) REQUIRE(sampler.sample(row, {}, 0, i) < V);
}

TEST_CASE("repetition penalty divides positive and multiplies negative logits of seen tokens", "[sampler]") {
  std::vector<float> logits = {2.0f, -2.0f, 1.0f, 0.5f};
  apply_repetition_penalty(logits, std::vector<int>{0, 1, 0, 7, -1}, 2.0f);
  CHECK(logits == std::vector<float>{1.0f, -4.0f, 1.0f, 0.5f});  // token 0 once, 7 and -1 ignored
  std::vector<float> unchanged = {2.0f, -2.0f};
  apply_repetition_penalty(unchanged, std::vector<int>{0, 1}, 1.0f);
  CHECK(unchanged == std::vector<float>{2.0f, -2.0f});

  // Greedy would repeat token 0; the penalty moves the choice to token 2.
  SampleConfig config;
  config.greedy = true;
  config.repetition_penalty = 3.0f;
  std::vector<float> row = {3.0f, 0.0f, 1.5f};
  std::vector<int> history = {0};
  CHECK(Sampler(config, 3).sample(row, history, 0, 0) == 2);
  CHECK(row[0] == 3.0f);  // the caller's logits are not modified
}

TEST_CASE("log_prob is the log-softmax of the row", "[sampler]") {
  std::vector<float> logits = {0.0f, static_cast<float>(std::log(3.0))};
  CHECK(log_prob(logits, 1) == Approx(std::log(0.75)).epsilon(1e-6));
  CHECK(log_prob(logits, 0) == Approx(std::log(0.25)).epsilon(1e-6));
  std::vector<float> large = {1000.0f, 1000.0f};
  CHECK(log_prob(large, 0) == Approx(std::log(0.5)).epsilon(1e-9));
}

TEST_CASE("decoding statistics on hand-made sequences", "[sampler][stats]") {
  std::vector<std::vector<int>> one = {{1, 2, 3, 1, 2, 3}};
  CHECK(distinct_n(one, 1) == Approx(3.0 / 6));
  CHECK(distinct_n(one, 2) == Approx(3.0 / 5));
  CHECK(distinct_n(one, 3) == Approx(3.0 / 4));
  // n-grams never cross sequences: {1,2} twice is one distinct bigram out of two, no trigram.
  std::vector<std::vector<int>> two = {{1, 2}, {1, 2}};
  CHECK(distinct_n(two, 2) == Approx(0.5));
  CHECK(distinct_n(two, 3) == 0.0);
  CHECK(distinct_n(std::vector<std::vector<int>>{{5, 6}, {6, 5}}, 2) == 1.0);

  std::vector<std::vector<int>> rep = {{1, 2, 1, 3, 1}};
  CHECK(repetition_rate(rep, 64) == Approx(0.5));  // positions 2 and 4 repeat token 1
  CHECK(repetition_rate(rep, 1) == 0.0);           // the previous token only: never equal
  CHECK(repetition_rate(rep, 2) == Approx(0.5));
  CHECK(repetition_rate(std::vector<std::vector<int>>{{4, 4, 4}, {7}}, 64) == Approx(1.0));
  CHECK(repetition_rate(std::vector<std::vector<int>>{}, 64) == 0.0);

  CHECK(mean_log_prob({{-1.0f, -2.0f}, {-3.0f}}) == Approx(-2.0));
  CHECK(std::isnan(mean_log_prob(std::vector<std::vector<float>>{})));
}
