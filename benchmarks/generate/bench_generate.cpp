// Generation throughput on the CPU backend: greedy decoding with the KV cache (one decode step
// per token: O(T) attention, weights read once per token) against recomputing the whole
// context for every token (O(T^2) work), for model presets with random weights (the speed
// does not depend on the weights' values). Validates first: both paths must give the same
// greedy tokens and logits within 1e-4. Prints a table and, with --json, writes the figures.
//   bench_generate --presets d4,gpt2 --prompt-tokens 64 --new-tokens 64 --threads 2
#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "core/check.hpp"
#include "core/generation.hpp"

using namespace gpt2cc;

namespace {

std::vector<int> prompt_tokens(int n, int vocab) {
  std::vector<int> tokens(n);
  for (int i = 0; i < n; ++i) tokens[i] = static_cast<int>(philox_bits(42, 0, i) % static_cast<uint32_t>(vocab));
  return tokens;
}

// Decode-phase throughput of one greedy sample: generated tokens / time after the prefill.
struct Timing {
  double tokens_per_s, prefill_ms, first_token_ms;
};

Timing time_generation(GPT2& model, const std::vector<int>& prompt, int new_tokens, bool use_kv_cache) {
  SampleConfig greedy;
  greedy.greedy = true;
  Sampler sampler(greedy, model.config().vocab_size);
  GenerationConfig gen;
  gen.max_new_tokens = new_tokens;
  gen.use_kv_cache = use_kv_cache;
  Sample s = generate(model, sampler, prompt, gen, 0, nullptr, nullptr);
  ENSURE(static_cast<int>(s.tokens.size()) == new_tokens, "expected {} tokens, got {}", new_tokens, s.tokens.size());
  return {s.tokens.size() / (s.total_seconds - s.prefill_seconds), 1e3 * s.prefill_seconds, 1e3 * s.first_token_seconds};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Cached and recomputed logits agree along a short greedy run (the tests check 1e-5 on tiny
// models; big random models have larger logits, so 1e-4 relative to the row's largest).
double validate(GPT2& model, const std::vector<int>& prompt, int steps) {
  Context cached(model, true), full(model, false);
  std::vector<float> a = cached.start(prompt);
  std::vector<float> b = full.start(prompt);
  double worst = 0.0;
  for (int step = 0;; ++step) {
    double scale = 0.0, diff = 0.0;
    for (size_t i = 0; i < a.size(); ++i) {
      scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
      diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    }
    worst = std::max(worst, diff / std::max(scale, 1e-30));
    ENSURE(argmax(a) == argmax(b), "KV-cache and recompute disagree on the greedy token at step {}", step);
    if (step == steps) break;
    const int token = argmax(a);
    a = cached.push(token);
    b = full.push(token);
  }
  ENSURE(worst < 1e-4, "KV-cache logits differ from recompute by {} (relative to the row max)", worst);
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("bench_generate", "Generated tokens/s: KV cache vs full recompute (CPU, random weights)");
  options.add_options()
      ("presets", "comma-separated model presets", cxxopts::value<std::string>()->default_value("d4,gpt2"))
      ("prompt-tokens", "prompt length", cxxopts::value<int>()->default_value("64"))
      ("new-tokens", "tokens generated per run", cxxopts::value<int>()->default_value("64"))
      ("recompute-new-tokens", "tokens generated per full-recompute run (slow); 0 = --new-tokens",
       cxxopts::value<int>()->default_value("0"))
      ("repeats", "timed runs per measurement (the median is reported)", cxxopts::value<int>()->default_value("3"))
      ("threads", "CPU threads; 0 = OpenMP default", cxxopts::value<int>()->default_value("0"))
      ("json", "write the results to this file", cxxopts::value<std::string>())
      ("h,help", "show this help");
  try {
    auto args = options.parse(argc, argv);
    if (args.count("help")) {
      std::printf("%s\n", options.help().c_str());
      return 0;
    }
    const int P = args["prompt-tokens"].as<int>(), N = args["new-tokens"].as<int>();
    const int NR = args["recompute-new-tokens"].as<int>() == 0 ? N : args["recompute-new-tokens"].as<int>();
    const int repeats = args["repeats"].as<int>();
    INPUT_CHECK(P >= 1 && N >= 1 && NR >= 1 && repeats >= 1, "lengths and repeats must be >= 1");
    auto backend = make_cpu_backend(args["threads"].as<int>());
    std::printf("backend: %s; greedy, prompt %d tokens; median of %d runs; random weights\n",
                backend->describe().c_str(), P, repeats);
    std::printf("%-8s %8s | %10s %12s %10s | %10s %12s | %8s\n", "preset", "params", "new (KV)", "KV tok/s",
                "TTFT ms", "new (full)", "full tok/s", "speed-up");
    nlohmann::json results = nlohmann::json::array();
    std::stringstream presets(args["presets"].as<std::string>());
    for (std::string name; std::getline(presets, name, ',');) {
      ModelConfig config = model_preset(name);
      INPUT_CHECK(P + std::max(N, NR) <= config.max_seq_len, "prompt + new tokens exceed {}'s context of {}", name,
                  config.max_seq_len);
      GPT2 model(config, *backend, 1, P + std::max(N, NR));
      model.init_weights(1);
      const std::vector<int> prompt = prompt_tokens(P, config.vocab_size);
      const double worst = validate(model, prompt, 4);
      time_generation(model, prompt, 4, true);  // warm-up: caches, thread pool, first-touch pages
      std::vector<double> kv, full, ttft;
      for (int r = 0; r < repeats; ++r) {
        Timing t = time_generation(model, prompt, N, true);
        kv.push_back(t.tokens_per_s);
        ttft.push_back(t.first_token_ms);
        full.push_back(time_generation(model, prompt, NR, false).tokens_per_s);
      }
      const double kv_tps = median(kv), full_tps = median(full);
      std::printf("%-8s %7.1fM | %10d %12.1f %10.1f | %10d %12.2f | %7.1fx\n", name.c_str(),
                  num_parameters(config) / 1e6, N, kv_tps, median(ttft), NR, full_tps, kv_tps / full_tps);
      std::fflush(stdout);
      results.push_back({{"preset", name}, {"params", num_parameters(config)}, {"prompt_tokens", P},
                         {"kv_new_tokens", N}, {"kv_tokens_per_s", kv_tps}, {"time_to_first_token_ms", median(ttft)},
                         {"recompute_new_tokens", NR}, {"recompute_tokens_per_s", full_tps},
                         {"speedup", kv_tps / full_tps}, {"validation_max_rel_diff", worst},
                         {"backend", backend->describe()}, {"repeats", repeats}});
    }
    if (args.count("json")) {
      std::ofstream(args["json"].as<std::string>()) << results.dump(2) << "\n";
    }
    return 0;
  } catch (const cxxopts::exceptions::exception& e) {
    std::fprintf(stderr, "bench_generate: %s\n", e.what());
    return 2;
  } catch (const InputError& e) {
    std::fprintf(stderr, "bench_generate: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_generate: error: %s\n", e.what());
    return 1;
  }
}
