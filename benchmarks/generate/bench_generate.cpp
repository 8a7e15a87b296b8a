// Generation throughput on the CPU backend: greedy decoding with the KV cache (one decode step
// per token: O(T) attention, weights read once per token) against recomputing the whole
// context for every token (a forward over T positions per token), for model presets with
// random weights (the speed does not depend on the weights' values). Validates first: both
// paths give the same greedy tokens and logits within 1e-4. Reports tokens per wall-clock
// second and per CPU second (see Clock), a table, and with --json the figures.
//   bench_generate --presets d4,gpt2 --prompt-tokens 64 --new-tokens 64 --threads 2
#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
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

// Wall-clock and process CPU seconds. On a shared machine the CPU time of a one-thread run
// measures the work itself; the wall time also counts the time other processes held the core.
struct Clock {
  std::chrono::steady_clock::time_point wall = std::chrono::steady_clock::now();
  std::clock_t cpu = std::clock();
  double wall_s() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count(); }
  double cpu_s() const { return static_cast<double>(std::clock() - cpu) / CLOCKS_PER_SEC; }
};

// One greedy generation of new_tokens after the prompt, the loop of core/generation.cpp without
// text: prefill, then per token argmax + push (a decode step, or a full forward without cache).
// Throughput counts the tokens after the prefill over the time after the prefill.
struct Timing {
  double wall_tps, cpu_tps, prefill_ms;
};

Timing time_generation(GPT2& model, const std::vector<int>& prompt, int new_tokens, bool use_kv_cache) {
  Context context(model, use_kv_cache);
  Clock prefill;
  std::vector<float> logits = context.start(prompt);
  const double prefill_ms = 1e3 * prefill.wall_s();
  Clock decode;
  for (int i = 0; i < new_tokens; ++i) logits = context.push(argmax(logits));
  ENSURE(context.reprefills() == 0, "the benchmark must stay inside the context");
  return {new_tokens / decode.wall_s(), new_tokens / decode.cpu_s(), prefill_ms};
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
    std::printf("%-7s %7s | %6s %10s %10s %10s | %6s %10s %10s | %8s %8s\n", "preset", "params", "new", "KV tok/s",
                "KV tok/cpu", "prefill ms", "new", "full tok/s", "full t/cpu", "wall x", "cpu x");
    nlohmann::json results = nlohmann::json::array();
    std::stringstream presets(args["presets"].as<std::string>());
    for (std::string name; std::getline(presets, name, ',');) {
      ModelConfig config = model_preset(name);
      INPUT_CHECK(P + std::max(N, NR) <= config.max_seq_len, "prompt + new tokens exceed {}'s context of {}", name,
                  config.max_seq_len);
      // Rows for the longest context reached: prompt + new tokens (no overflow, no re-prefill).
      GPT2 model(config, *backend, 1, P + std::max(N, NR), ModelMode::inference);
      model.init_weights(1);
      const std::vector<int> prompt = prompt_tokens(P, config.vocab_size);
      const double worst = validate(model, prompt, 4);
      time_generation(model, prompt, 4, true);  // warm-up: caches, thread pool, first-touch pages
      std::vector<double> kv_wall, kv_cpu, full_wall, full_cpu, prefill;
      for (int r = 0; r < repeats; ++r) {
        Timing kv = time_generation(model, prompt, N, true);
        kv_wall.push_back(kv.wall_tps);
        kv_cpu.push_back(kv.cpu_tps);
        prefill.push_back(kv.prefill_ms);
        Timing full = time_generation(model, prompt, NR, false);
        full_wall.push_back(full.wall_tps);
        full_cpu.push_back(full.cpu_tps);
      }
      const double kvw = median(kv_wall), kvc = median(kv_cpu), fw = median(full_wall), fc = median(full_cpu);
      std::printf("%-7s %6.1fM | %6d %10.2f %10.2f %10.1f | %6d %10.3f %10.3f | %7.1fx %7.1fx\n", name.c_str(),
                  num_parameters(config) / 1e6, N, kvw, kvc, median(prefill), NR, fw, fc, kvw / fw, kvc / fc);
      std::fflush(stdout);
      results.push_back({{"preset", name}, {"params", num_parameters(config)}, {"prompt_tokens", P},
                         {"kv_new_tokens", N}, {"kv_tokens_per_s", kvw}, {"kv_tokens_per_cpu_s", kvc},
                         {"prefill_ms", median(prefill)}, {"recompute_new_tokens", NR},
                         {"recompute_tokens_per_s", fw}, {"recompute_tokens_per_cpu_s", fc},
                         {"speedup_wall", kvw / fw}, {"speedup_cpu", kvc / fc},
                         {"validation_max_rel_diff", worst}, {"backend", backend->describe()},
                         {"repeats", repeats}});
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
