// Batched generation on tiny random-weight CPU models: a model whose KV cache has more rows than
// its activations (ModelOptions::kv_cache_rows) prefills and decodes each row bit for bit as a
// B = 1 model does (in fp32 and in bf16), kv_cache_select_rows shares and drops rows, and generate_samples (all
// samples decoded together, or in batches) equals generate run sample by sample, token for
// token and bit for bit in the log-probabilities, for every sampler, across context overflow
// (re-prefill with windows of >= 6 and of < 6 tokens) and with rows ending at different steps.
#include "common/catch.hpp"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/generation.hpp"
#include "tiny_config.hpp"

using namespace gpt2cc;

namespace {

constexpr int kVocab = test::kTinyVocab;
using test::tiny_config;

// Activations for `max_B` 16-token sequences (generate builds one), `rows` KV-cache rows. The
// backend sets the process's OpenMP thread count (the last one built wins).
struct TinyModel {
  TinyModel(uint64_t seed, int rows, int threads = 1, DType dtype = DType::fp32, int max_B = 1)
      : backend(make_cpu_backend(threads, dtype)) {
    ModelOptions options;
    options.kv_cache_rows = rows;
    model = std::make_unique<GPT2>(tiny_config(), *backend, max_B, 16, ModelMode::inference, options);
    model->set_parameters(test::random_vector(model->layout().total(), seed, -0.25f, 0.25f));
  }
  std::unique_ptr<Backend> backend;
  std::unique_ptr<GPT2> model;
};

std::vector<float> row(const std::vector<float>& logits, int r) {
  return std::vector<float>(logits.begin() + r * kVocab, logits.begin() + (r + 1) * kVocab);
}

std::string token_text(int id) {
  std::string text = "<";
  text += std::to_string(id);
  text += '>';
  return text;
}

// Sample i of generate_samples must be generate(..., i, ...): the same tokens, the same bits.
void expect_same_sample(const Sample& batched, const Sample& alone, const std::string& what) {
  INFO(what);
  CHECK(batched.tokens == alone.tokens);
  CHECK(batched.log_probs == alone.log_probs);  // bitwise: the logits were
  CHECK(batched.text == alone.text);
  CHECK(batched.stop == alone.stop);
  CHECK(batched.reprefills == alone.reprefills);
  CHECK(batched.prompt_tokens == alone.prompt_tokens);
}

}  // namespace

TEST_CASE("batched prefill and decode give every row the bits of a B = 1 forward (CPU)", "[generate][batch]") {
  // 8 rows: more than the CPU's 6-row matmul tile, so without grouping the rows would take the
  // blocked GEMM where a single row takes the matrix-vector loop. In bf16 that loop takes up to
  // 32 rows: activations for 3 sequences (48 positions) let a prefill of 8 rows of 6 tokens
  // exceed it, where a row alone does not. (At this size the bf16 rounding of every output hides
  // the two paths' different fp32 orders nearly always: grouping bf16 as fp32 is, by 5 rows,
  // passed this case too when tried. It shows the bits come out equal, not that they must.)
  const int rows = 8;
  const DType dtype = GENERATE(DType::fp32, DType::bf16);
  INFO(dtype_name(dtype));
  TinyModel batched(31, rows, 1, dtype, dtype == DType::bf16 ? 3 : 1), single(31, 1, 1, dtype);
  for (int T : {1, 2, 3, 5, 6, 8}) {
    INFO("prompt length " << T);
    const std::vector<int> prompts = test::random_tokens(size_t(rows) * T, 40 + T, kVocab);
    const std::vector<int> steps = test::random_tokens(size_t(rows) * (16 - T), 80 + T, kVocab);
    std::vector<float> logits = batched.model->prefill(prompts.data(), rows, T);
    REQUIRE(logits.size() == size_t(rows) * kVocab);
    // Each row alone: its prefill (compared now) and its decode steps (the batch's, below).
    std::vector<std::vector<float>> expected(rows);
    for (int r = 0; r < rows; ++r) {
      INFO("row " << r);
      REQUIRE(row(logits, r) == single.model->prefill(prompts.data() + r * T, 1, T));
      for (int pos = T; pos < 16; ++pos) {
        const int token = steps[(pos - T) * rows + r];
        std::vector<float> next = single.model->decode(&token, 1, pos);
        expected[r].insert(expected[r].end(), next.begin(), next.end());
      }
    }
    for (int pos = T; pos < 16; ++pos) {
      logits = batched.model->decode(steps.data() + (pos - T) * rows, rows, pos);
      for (int r = 0; r < rows; ++r) {
        INFO("row " << r << " position " << pos);
        const auto begin = expected[r].begin() + (pos - T) * kVocab;
        REQUIRE(row(logits, r) == std::vector<float>(begin, begin + kVocab));
      }
    }
  }
}

TEST_CASE("kv_cache_select_rows shares a prefill and drops rows", "[generate][batch]") {
  TinyModel batched(37, 6), single(37, 1);
  const std::vector<int> prompt = {4, 8, 15, 16, 23, 42, 7};
  const int T = static_cast<int>(prompt.size());
  batched.model->prefill(prompt.data(), 1, T);
  batched.model->kv_cache_select_rows(std::vector<int>(6, 0));  // six copies of the one prefill
  const std::vector<int> tokens = {1, 2, 3, 4, 5, 6};
  std::vector<float> logits = batched.model->decode(tokens.data(), 6, T);
  for (int r = 0; r < 6; ++r) {
    single.model->prefill(prompt.data(), 1, T);
    CHECK(row(logits, r) == single.model->decode(&tokens[r], 1, T));
  }
  // Drop rows 0, 2, 3: rows 1 stays, 4 and 5 move into 0 and 2. Decode the survivors once more.
  const std::vector<int> keep = {4, 1, 5};
  batched.model->kv_cache_select_rows(keep);
  const std::vector<int> next = {9, 10, 11};
  logits = batched.model->decode(next.data(), 3, T + 1);
  for (int i = 0; i < 3; ++i) {
    single.model->prefill(prompt.data(), 1, T);
    single.model->decode(&tokens[keep[i]], 1, T);
    CHECK(row(logits, i) == single.model->decode(&next[i], 1, T + 1));
  }
  CHECK_THROWS_WITH(batched.model->decode(next.data(), 2, T + 2), Catch::Contains("batch size"));
  CHECK_THROWS_WITH(batched.model->kv_cache_select_rows(std::vector<int>{0, 3}), Catch::Contains("outside"));
  CHECK_THROWS_WITH(batched.model->kv_cache_select_rows(std::vector<int>(7, 0)), Catch::Contains("between 1 and 6"));
  // Row 1 copied to row 0 while row 1 itself becomes row 0's old contents: not possible in place.
  CHECK_THROWS_WITH(batched.model->kv_cache_select_rows(std::vector<int>{1, 0}), Catch::Contains("overwritten"));
  CHECK_THROWS_WITH(batched.model->prefill(prompt.data(), 7, 1), Catch::Contains("KV cache's rows"));
  TinyModel fresh(37, 2);
  CHECK_THROWS_WITH(fresh.model->kv_cache_select_rows(std::vector<int>{0, 0}), Catch::Contains("prefill first"));
}

TEST_CASE("generate_samples equals generate sample by sample, for every sampler", "[generate][batch]") {
  struct Case {
    std::string name;
    SampleConfig sampling;
  };
  std::vector<Case> cases;
  SampleConfig c;
  c.greedy = true;
  cases.push_back({"greedy", c});
  c = {};
  c.seed = 5;
  cases.push_back({"pure sampling", c});
  c.temperature = 0.7f;
  c.top_k = 8;
  c.seed = 6;
  cases.push_back({"temperature + top-k", c});
  c = {};
  c.top_p = 0.8f;
  c.seed = 7;
  cases.push_back({"top-p", c});
  c.repetition_penalty = 1.5f;
  c.temperature = 1.3f;
  c.seed = 8;
  cases.push_back({"top-p + temperature + repetition penalty", c});

  const std::vector<int> prompt = {3, 1, 4, 1, 5};
  const int N = 7;
  for (const Case& tc : cases) {
    // keep 0 (= 8: the re-prefill batch takes the GEMM) and keep 3 (< 6 tokens: groups of one
    // row on the CPU, as a single row's matrix-vector loop); 40 tokens overflow the 16-token
    // context several times. Batch sizes: all 7 at once, and 3 + 3 + 1.
    for (int keep : {0, 3}) {
      for (int rows : {N, 3}) {
        const std::string what = tc.name + ", keep " + std::to_string(keep) + ", " + std::to_string(rows) + " rows";
        GenerationConfig config;
        config.max_new_tokens = 40;
        config.keep = keep;
        // 2 threads: the rows draw in parallel (each thread its own sampler copy).
        TinyModel single(41, 1), batched(41, rows, 2);
        Sampler sampler(tc.sampling, kVocab);
        std::vector<int> done;
        Generation g = generate_samples(*batched.model, sampler, prompt, config, N, nullptr, nullptr,
                                        [&](int i, const Sample&) { done.push_back(i); });
        REQUIRE(g.samples.size() == size_t(N));
        CHECK(done.size() == size_t(N));
        CHECK(g.prefill_tokens == prompt.size() * ((N + rows - 1) / rows));  // one prefill per batch
        for (int i = 0; i < N; ++i) {
          Sample alone = generate(*single.model, sampler, prompt, config, static_cast<uint32_t>(i), nullptr, nullptr);
          REQUIRE(alone.reprefills > 0);
          expect_same_sample(g.samples[i], alone, what + ", sample " + std::to_string(i));
        }
        if (!tc.sampling.greedy) CHECK(g.samples[0].tokens != g.samples[1].tokens);  // streams differ
      }
    }
  }
}

TEST_CASE("rows that end early (end of text, stop strings) leave the others unchanged", "[generate][batch]") {
  SampleConfig sampling;
  sampling.top_k = 12;
  sampling.seed = 21;
  const std::vector<int> prompt = {2, 7, 1, 8};
  const int N = 8;
  TinyModel probe(43, 1);
  Sampler sampler(sampling, kVocab);
  GenerationConfig free_run;
  free_run.max_new_tokens = 30;
  // End of text: the token sample 0 draws at step 4, so sample 0 ends there and others at
  // whatever step they first draw it (or never).
  const int eot = generate(*probe.model, sampler, prompt, free_run, 0, nullptr, nullptr).tokens[4];

  std::vector<GenerationConfig> configs(3, free_run);
  configs[0].eot_id = eot;
  configs[1].stop_strings = {"3>", "<5"};  // ends at a token ending in 3 or starting with 5
  configs[2] = configs[1];
  configs[2].eot_id = eot;
  for (size_t k = 0; k < configs.size(); ++k) {
    INFO("config " << k);
    TinyModel batched(43, N), single(43, 1);
    std::vector<std::string> streamed(N);
    std::vector<int> calls(N, 0);
    Generation g = generate_samples(
        *batched.model, sampler, prompt, configs[k], N, token_text,
        [&](int i, std::string_view piece) { streamed[i] += piece; }, [&](int i, const Sample&) { ++calls[i]; });
    std::vector<size_t> lengths;
    for (int i = 0; i < N; ++i) {
      std::string alone_text;
      Sample alone = generate(*single.model, sampler, prompt, configs[k], static_cast<uint32_t>(i), token_text,
                              [&](std::string_view piece) { alone_text += piece; });
      expect_same_sample(g.samples[i], alone, "sample " + std::to_string(i));
      CHECK(streamed[i] == alone_text);
      CHECK(calls[i] == 1);
      lengths.push_back(g.samples[i].tokens.size());
    }
    // The rows really ended at different steps, some before the others' context overflowed.
    std::sort(lengths.begin(), lengths.end());
    CHECK(std::unique(lengths.begin(), lengths.end()) - lengths.begin() >= 3);
    CHECK(lengths.front() < 12);
  }
}

TEST_CASE("generate_samples without the KV cache runs the reference one sample at a time", "[generate][batch]") {
  GenerationConfig config;
  config.max_new_tokens = 20;
  config.use_kv_cache = false;
  SampleConfig sampling;
  sampling.seed = 3;
  Sampler sampler(sampling, kVocab);
  TinyModel model(47, 1);
  const std::vector<int> prompt = {9, 9, 9};
  Generation g = generate_samples(*model.model, sampler, prompt, config, 3, nullptr, nullptr, nullptr);
  CHECK(g.prefill_tokens == 9);  // every sample prefills its own prompt
  for (int i = 0; i < 3; ++i)
    expect_same_sample(g.samples[i], generate(*model.model, sampler, prompt, config, i, nullptr, nullptr),
                       "sample " + std::to_string(i));
  CHECK_THROWS_AS(generate_samples(*model.model, sampler, prompt, config, 0, nullptr, nullptr, nullptr), InputError);
  CHECK_THROWS_WITH(BatchContext(*model.model, 2), Catch::Contains("KV cache has 1"));
}
