// Generation throughput on the CPU backend: greedy decoding with the KV cache (one decode step
// per token: O(T) attention, weights read once per token) against recomputing the whole
// context for every token (a forward over T positions per token), for model presets with
// random weights (the speed does not depend on the weights' values). Validates first: both
// paths give the same greedy tokens and logits within 1e-4. Then --samples N: N samples of the
// prompt one after another (generate) against decoded together (generate_samples: one prefill,
// one decode forward of N rows per step), checked to give the same tokens. Reports
// tokens per wall-clock second and per CPU second (see Clock), tables, and with --json the figures.
//   bench_generate --presets d4,gpt2 --prompt-tokens 64 --new-tokens 64 --samples 4,16 --threads 2
// --dtype bf16 runs the CPU's bf16 backend (weights, activations and KV cache in bf16).
#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "benchmarks/bench_cli.hpp"
#include "benchmarks/gemm_flag.hpp"
#include "core/atomic_file.hpp"
#include "core/backend.hpp"
#include "core/check.hpp"
#include "core/cli.hpp"
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

// N samples of new_tokens each (top-k 40; sample i draws from stream i), one after another
// (generate: B = 1, a prefill each) or decoded together (generate_samples: one prefill, N rows
// per decode step, the rows' draws in parallel). Throughput counts all N x new_tokens tokens
// over the whole time, prefills and sampling included. tokens: every sample's, to compare.
struct SamplesTiming {
  double wall_tps, cpu_tps;
  std::vector<std::vector<int>> tokens;
};

SamplesTiming time_samples(GPT2& model, const std::vector<int>& prompt, int new_tokens, int samples, bool batched) {
  SampleConfig sampling;
  sampling.top_k = 40;
  sampling.seed = 7;
  Sampler sampler(sampling, model.config().vocab_size);
  GenerationConfig config;
  config.max_new_tokens = new_tokens;
  SamplesTiming t;
  Clock clock;
  if (batched) {
    ENSURE(model.kv_cache_rows() >= samples, "the model has {} KV-cache rows for {} samples", model.kv_cache_rows(),
           samples);
    for (const Sample& s : generate_samples(model, sampler, prompt, config, samples, nullptr, nullptr, nullptr).samples)
      t.tokens.push_back(s.tokens);
  } else {
    for (int i = 0; i < samples; ++i)
      t.tokens.push_back(generate(model, sampler, prompt, config, static_cast<uint32_t>(i), nullptr, nullptr).tokens);
  }
  t.wall_tps = double(samples) * new_tokens / clock.wall_s();
  t.cpu_tps = double(samples) * new_tokens / clock.cpu_s();
  return t;
}

using bench::median;

// Tokens of the validation run (validate) and of the warm-up before the timed runs.
constexpr int kCheckSteps = 4;

// Cached and recomputed logits agree along a short greedy run (the tests check 1e-5 on tiny
// models; big random models have larger logits, so 1e-4 relative to the row's largest). In bf16
// every op rounds its output to 8 bits of mantissa, and the two paths sum in different orders
// before they round: 5e-2, and the greedy token not compared (two logits within that tie).
double validate(GPT2& model, const std::vector<int>& prompt, int steps) {
  const bool bf16 = model.dtype() == DType::bf16;
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
    ENSURE(bf16 || argmax(a) == argmax(b), "KV-cache and recompute disagree on the greedy token at step {}", step);
    if (step == steps) break;
    const int token = argmax(a);
    a = cached.push(token);
    b = full.push(token);
  }
  ENSURE(worst < (bf16 ? 5e-2 : 1e-4), "KV-cache logits differ from recompute by {} (relative to the row max)", worst);
  return worst;
}

// What the flags ask for.
struct Settings {
  int prompt = 0, new_tokens = 0, recompute_new_tokens = 0, samples_new_tokens = 0, repeats = 0;
  bool recompute = true;
  std::vector<int> sample_counts;
  int longest = 0;  // positions the model needs: the prompt and the longest decode
};

// One preset's KV-cache decoding against the full recompute (validated first): its table row and
// its JSON entry.
nlohmann::json measure_decoding(GPT2& model, const std::string& name, const std::vector<int>& prompt,
                                const Settings& s, const Backend& backend) {
  const ModelConfig& config = model.config();
  const double worst = validate(model, prompt, kCheckSteps);
  time_generation(model, prompt, kCheckSteps, true);  // warm-up: caches, thread pool, first-touch pages
  std::vector<double> kv_wall, kv_cpu, full_wall, full_cpu, prefill;
  for (int r = 0; r < s.repeats; ++r) {
    Timing kv = time_generation(model, prompt, s.new_tokens, true);
    kv_wall.push_back(kv.wall_tps);
    kv_cpu.push_back(kv.cpu_tps);
    prefill.push_back(kv.prefill_ms);
    if (!s.recompute) continue;
    Timing full = time_generation(model, prompt, s.recompute_new_tokens, false);
    full_wall.push_back(full.wall_tps);
    full_cpu.push_back(full.cpu_tps);
  }
  const int P = s.prompt, N = s.new_tokens, NR = s.recompute_new_tokens;
  const double kvw = median(kv_wall), kvc = median(kv_cpu);
  nlohmann::json entry = {{"preset", name}, {"params", num_parameters(config)}, {"prompt_tokens", P},
                          {"kv_new_tokens", N}, {"kv_tokens_per_s", kvw}, {"kv_tokens_per_cpu_s", kvc},
                          {"prefill_ms", median(prefill)}, {"validation_max_rel_diff", worst},
                          {"backend", backend.describe()}, {"bf16_products", bench::bf16_products_name()},
                          {"repeats", s.repeats}};
  if (s.recompute) {
    const double fw = median(full_wall), fc = median(full_cpu);
    std::printf("%-7s %6.1fM | %6d %10.2f %10.2f %10.1f | %6d %10.3f %10.3f | %7.1fx %7.1fx\n", name.c_str(),
                num_parameters(config) / 1e6, N, kvw, kvc, median(prefill), NR, fw, fc, kvw / fw, kvc / fc);
    entry.update({{"recompute_new_tokens", NR}, {"recompute_tokens_per_s", fw}, {"recompute_tokens_per_cpu_s", fc},
                  {"speedup_wall", kvw / fw}, {"speedup_cpu", kvc / fc}});
  } else {
    std::printf("%-7s %6.1fM | %6d %10.2f %10.2f %10.1f | %6s %10s %10s | %8s %8s\n", name.c_str(),
                num_parameters(config) / 1e6, N, kvw, kvc, median(prefill), "-", "-", "-", "-", "-");
  }
  std::fflush(stdout);
  return entry;
}

// N samples of one preset, one after another against decoded together (the same tokens either
// way): a table line each into `lines`, and their JSON.
nlohmann::json measure_samples(GPT2& model, const std::string& name, const std::vector<int>& prompt,
                               const Settings& s, std::vector<std::string>& lines) {
  const int SN = s.samples_new_tokens;
  nlohmann::json batches = nlohmann::json::array();
  for (int samples : s.sample_counts) {
    std::vector<double> seq_wall, seq_cpu, bat_wall, bat_cpu;
    for (int r = 0; r < s.repeats; ++r) {
      SamplesTiming seq = time_samples(model, prompt, SN, samples, false);
      SamplesTiming bat = time_samples(model, prompt, SN, samples, true);
      ENSURE(seq.tokens == bat.tokens, "{}: {} samples decoded together differ from one after another", name,
             samples);
      seq_wall.push_back(seq.wall_tps);
      seq_cpu.push_back(seq.cpu_tps);
      bat_wall.push_back(bat.wall_tps);
      bat_cpu.push_back(bat.cpu_tps);
    }
    const double sw = median(seq_wall), sc = median(seq_cpu), bw = median(bat_wall), bc = median(bat_cpu);
    char line[256];
    std::snprintf(line, sizeof line, "%-7s %6d %6d | %10.2f %10.2f | %10.2f %10.2f | %7.2fx %7.2fx", name.c_str(),
                  samples, SN, sw, sc, bw, bc, bw / sw, bc / sc);
    lines.push_back(line);
    batches.push_back({{"samples", samples}, {"new_tokens", SN}, {"sequential_tokens_per_s", sw},
                       {"sequential_tokens_per_cpu_s", sc}, {"batched_tokens_per_s", bw},
                       {"batched_tokens_per_cpu_s", bc}, {"speedup_wall", bw / sw}, {"speedup_cpu", bc / sc}});
  }
  return batches;
}

int run(int argc, char** argv) {
  cxxopts::Options options("bench_generate",
                           "Generated tokens/s: KV cache vs full recompute, N samples one after another vs together "
                           "(CPU, random weights)");
  options.add_options()
      ("presets", "comma-separated model presets", cxxopts::value<std::string>()->default_value("d4,gpt2"))
      ("prompt-tokens", "prompt length", cxxopts::value<int>()->default_value("64"))
      ("new-tokens", "tokens generated per run", cxxopts::value<int>()->default_value("64"))
      ("recompute-new-tokens", "tokens generated per full-recompute run (slow); 0 = --new-tokens",
       cxxopts::value<int>()->default_value("0"))
      ("samples", "comma-separated sample counts N for sequential vs batched (empty: skip)",
       cxxopts::value<std::string>()->default_value("4,16"))
      ("samples-new-tokens", "tokens per sample in the sequential/batched runs; 0 = --new-tokens",
       cxxopts::value<int>()->default_value("0"))
      ("skip-recompute", "measure only the KV cache and the batched samples")
      ("repeats", "timed runs per measurement (the median is reported)", cxxopts::value<int>()->default_value("3"))
      ("threads", "CPU threads; 0 = OpenMP default", cxxopts::value<int>()->default_value("0"))
      ("dtype", "fp32, or bf16 (bf16 weights, activations and KV cache; fp32 arithmetic)",
       cxxopts::value<std::string>()->default_value("fp32"))
      ("json", "write the results to this file", cxxopts::value<std::string>())
      ("h,help", "show this help");
  const cxxopts::ParseResult args = parse_flags(options, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  INPUT_CHECK(args.unmatched().empty(), "unexpected argument '{}' (see --help)", args.unmatched().front());
  Settings s;
  s.prompt = args["prompt-tokens"].as<int>();
  s.new_tokens = args["new-tokens"].as<int>();
  const int N = s.new_tokens;
  s.recompute_new_tokens = args["recompute-new-tokens"].as<int>() == 0 ? N : args["recompute-new-tokens"].as<int>();
  s.samples_new_tokens = args["samples-new-tokens"].as<int>() == 0 ? N : args["samples-new-tokens"].as<int>();
  s.recompute = !switch_on(args, "skip-recompute");
  s.repeats = args["repeats"].as<int>();
  struct Count {
    const char* flag;
    int value;
    bool zero_is_new_tokens;
  };
  for (const Count& c : {Count{"--prompt-tokens", s.prompt, false}, Count{"--new-tokens", N, false},
                         Count{"--recompute-new-tokens", args["recompute-new-tokens"].as<int>(), true},
                         Count{"--samples-new-tokens", args["samples-new-tokens"].as<int>(), true},
                         Count{"--repeats", s.repeats, false}})
    INPUT_CHECK(c.value >= 1 || (c.zero_is_new_tokens && c.value == 0), "{} must be >= 1{}, got {}", c.flag,
                c.zero_is_new_tokens ? " (or 0: --new-tokens)" : "", c.value);
  s.sample_counts = bench::parse_count_list("--samples", args["samples"].as<std::string>());
  const int max_samples =
      s.sample_counts.empty() ? 1 : *std::max_element(s.sample_counts.begin(), s.sample_counts.end());
  // Validation and warm-up run kCheckSteps tokens: the context holds those too.
  s.longest = s.prompt + std::max({kCheckSteps, N, s.recompute ? s.recompute_new_tokens : 1,
                                   s.sample_counts.empty() ? 1 : s.samples_new_tokens});
  std::vector<std::string> preset_names;
  const std::vector<std::string> names = bench::split_list("--presets", args["presets"].as<std::string>());
  INPUT_CHECK(!names.empty(), "--presets must name at least one preset");
  for (const std::string& name : names) {
    const ModelConfig config = model_preset(name);  // an unknown one: InputError listing the presets
    INPUT_CHECK(s.longest <= config.max_seq_len,
                "--prompt-tokens {} and the longest decode ({} tokens; validation and warm-up take {}) need {} "
                "positions, more than {}'s context of {}",
                s.prompt, s.longest - s.prompt, kCheckSteps, s.longest, name, config.max_seq_len);
    preset_names.push_back(name);
  }
  INPUT_CHECK(!preset_names.empty(), "--presets must name at least one preset");
  const std::string json_path = args.count("json") ? args["json"].as<std::string>() : "";
  if (args.count("json")) bench::check_output_file("--json", json_path);  // before the minutes of the run
  auto backend = make_cpu_backend(args["threads"].as<int>(), parse_dtype(args["dtype"].as<std::string>()));
  std::printf("backend: %s; greedy, prompt %d tokens; median of %d runs; random weights\n",
              backend->describe().c_str(), s.prompt, s.repeats);
  std::printf("%-7s %7s | %6s %10s %10s %10s | %6s %10s %10s | %8s %8s\n", "preset", "params", "new", "KV tok/s",
              "KV tok/cpu", "prefill ms", "new", "full tok/s", "full t/cpu", "wall x", "cpu x");
  nlohmann::json results = nlohmann::json::array();
  std::vector<std::string> batch_lines;
  for (const std::string& name : preset_names) {
    const ModelConfig config = model_preset(name);
    // Rows for the longest context reached: prompt + new tokens (no overflow, no re-prefill);
    // one KV-cache row per sample of the largest --samples count.
    ModelOptions model_options;
    model_options.kv_cache_rows = max_samples;
    GPT2 model(config, *backend, 1, s.longest, ModelMode::inference, model_options);
    model.init_weights(1);
    const std::vector<int> prompt = prompt_tokens(s.prompt, config.vocab_size);
    nlohmann::json entry = measure_decoding(model, name, prompt, s, *backend);
    entry["samples"] = measure_samples(model, name, prompt, s, batch_lines);
    results.push_back(entry);
  }
  if (!batch_lines.empty()) {
    std::printf("\nN samples (top-k 40, all tokens / total time, prefills included): "
                "one after another vs together\n");
    std::printf("%-7s %6s %6s | %10s %10s | %10s %10s | %8s %8s\n", "preset", "N", "new", "seq tok/s", "seq t/cpu",
                "batch t/s", "batch t/cpu", "wall x", "cpu x");
    for (const std::string& line : batch_lines) std::printf("%s\n", line.c_str());
  }
  if (!json_path.empty()) write_file_atomic(json_path, results.dump(2) + "\n");  // failure: exit 1 naming it
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_cli("bench_generate", argc, argv, run); }
