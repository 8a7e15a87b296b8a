// CPU training-step benchmark: one full step (forward + backward + global-norm clip + AdamW)
// of gpt2cc's GPT-2 on the CPU backend, for a list of (preset, B, T). Each configuration runs in
// its own child process so that its peak memory (getrusage max RSS) is its own. Validates each
// run (loss at init ~ ln V, checked before the timed steps, and decreasing on the repeated batch,
// checked after them: a run that fails either reports nothing), warms up, then reports the
// median of the timed steps: ms/step, tokens/s and achieved GFLOP/s (wall clock), plus the
// process CPU time per step and GFLOP per CPU-second, which stay meaningful when other
// processes share the cores (wall-clock figures then undercount the code's own speed).
// On shared cores run with OMP_WAIT_POLICY=passive: libgomp's default spin-waiting at every
// barrier then burns the time slices the other thread needs (measured: 5x slower steps).
//
// FLOPs per token (forward + backward, the matmuls only, elementwise work ignored):
//   6 * N_matmul + 6 * L * C * T,  N_matmul = L * 12 C^2 + Vp * C
// N_matmul counts each weight that takes part in a matmul once (qkv 3C^2, attention projection
// C^2, MLP 4C^2 + 4C^2, the tied output projection Vp*C); each costs 2 FLOPs forward and 4
// backward per token. Causal attention (QK^T and AV over on average T/2 positions) is 2*C*T
// forward and 4*C*T backward per layer and token.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cxxopts.hpp>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "benchmarks/bench_cli.hpp"
#include "benchmarks/gemm_flag.hpp"
#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/cli.hpp"
#include "core/model.hpp"
#include "core/grad_clip.hpp"
#include "core/rng.hpp"

using namespace gpt2cc;
using nlohmann::json;

namespace {

struct BenchConfig {
  std::string preset;
  int B = 1, T = 64;
};

// "d4:4x64" -> {d4, 4, 64}. B and T are whole numbers and nothing else ("1x8x3" is refused).
BenchConfig parse_config(const std::string& text) {
  BenchConfig bc;
  const size_t colon = text.find(':'), x = text.find('x', colon == std::string::npos ? 0 : colon);
  INPUT_CHECK(colon != std::string::npos && x != std::string::npos,
              "--configs: expected entries like 'd4:4x64' (preset:BxT), got '{}'", text);
  bc.preset = text.substr(0, colon);
  const std::string_view view = text;
  const bool whole = bench::parse_int(view.substr(colon + 1, x - colon - 1), bc.B) &&
                     bench::parse_int(view.substr(x + 1), bc.T);
  INPUT_CHECK(whole, "--configs: B and T of '{}' must be whole numbers (preset:BxT, e.g. 'd4:4x64')", text);
  INPUT_CHECK(bc.B >= 1 && bc.T >= 1, "--configs: B and T of '{}' must be >= 1", text);
  model_preset(bc.preset);  // unknown preset -> InputError listing the known ones
  INPUT_CHECK(bc.T <= model_preset(bc.preset).max_seq_len, "--configs: T of '{}' exceeds the preset's max_seq_len {}",
              text, model_preset(bc.preset).max_seq_len);
  return bc;
}

// User + system CPU time of this process (all threads), in seconds.
double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

double flops_per_token(const ModelConfig& c, int T) {
  const double L = c.num_layers, C = c.channels, Vp = c.padded_vocab_size;
  const double n_matmul = L * 12.0 * C * C + Vp * C;
  return 6.0 * n_matmul + 6.0 * L * C * T;
}

// One configuration, measured in the calling process.
json run_config(const BenchConfig& bc, int threads, int warmup, int steps, DType dtype) {
  const ModelConfig config = model_preset(bc.preset);
  auto backend = make_cpu_backend(threads, dtype);
  GPT2 model(config, *backend, bc.B, bc.T);
  model.init_weights(1);
  const size_t n = size_t(bc.B) * bc.T;
  std::vector<int> inputs(n), targets(n);
  for (size_t i = 0; i < n; ++i) {
    inputs[i] = int(philox_bits(2, 0, i) % uint32_t(config.vocab_size));
    targets[i] = int(philox_bits(3, 0, i) % uint32_t(config.vocab_size));
  }
  AdamWParams hp;
  hp.lr = 1e-3f;
  hp.weight_decay = 0.1f;
  std::vector<double> ms;
  std::vector<float> losses;
  double cpu_s_timed = 0.0;
  for (int step = 1; step <= warmup + steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const double cpu0 = process_cpu_seconds();
    model.zero_grad();
    // As the trainer runs it: forward and backward in one call (on the CPU: the fused classifier).
    losses.push_back(model.forward_backward(inputs.data(), targets.data(), bc.B, bc.T, 1.0f / float(n)));
    hp.step = step;
    hp.grad_scale = clip_scale(model.grad_norm(), 1.0);
    model.adamw_step(hp);
    const auto t1 = std::chrono::steady_clock::now();
    if (step > warmup) {
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      cpu_s_timed += process_cpu_seconds() - cpu0;
    }
  }
  // Validation: a fresh GPT-2 predicts ~uniformly (loss ~ ln V), and repeating one batch must
  // lower the loss; anything else means the step being timed is not a working training step.
  const double ln_v = std::log(double(config.vocab_size));
  ENSURE(std::isfinite(losses.front()) && std::fabs(losses.front() - ln_v) < 0.5,
         "validation failed: initial loss {} is not ~ln(V) = {}", losses.front(), ln_v);
  ENSURE(losses.back() < losses.front(), "validation failed: loss did not decrease ({} -> {})", losses.front(),
         losses.back());

  std::sort(ms.begin(), ms.end());
  const double median_ms = bench::median(ms);
  const double fpt = flops_per_token(config, bc.T);
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return json{{"preset", bc.preset},
              {"B", bc.B},
              {"T", bc.T},
              {"parameters", num_parameters(config)},
              {"backend", backend->describe()},
              {"gemm_isa", bench::gemm_isa_name(cpu::gemm_isa())},
              {"bf16_products", bench::bf16_products_name()},
              {"omp_wait_policy", std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "default"},
              {"warmup_steps", warmup},
              {"timed_steps", steps},
              {"ms_per_step_median", median_ms},
              {"ms_per_step_min", ms.front()},
              {"ms_per_step_max", ms.back()},
              {"cpu_ms_per_step", 1e3 * cpu_s_timed / steps},
              {"gflops_per_cpu_s", fpt * double(n) * steps / cpu_s_timed / 1e9},
              {"tokens_per_s", double(n) / (median_ms / 1e3)},
              {"flops_per_token", fpt},
              {"gflops_per_s", fpt * double(n) / (median_ms / 1e3) / 1e9},
              {"peak_rss_mib", double(usage.ru_maxrss) / 1024.0},  // Linux reports KiB
              {"loss_first", losses.front()},
              {"loss_last", losses.back()}};
}

// Runs one configuration in a child process and returns its JSON result (the child's own
// peak RSS is then that configuration's alone).
json run_in_child(const BenchConfig& bc, int threads, int warmup, int steps, DType dtype) {
  int fds[2];
  ENSURE(pipe(fds) == 0, "pipe() failed");
  std::fflush(nullptr);
  const pid_t pid = fork();
  ENSURE(pid >= 0, "fork() failed");
  if (pid == 0) {
    close(fds[0]);
    std::string out;
    int code = 0;
    try {
      out = run_config(bc, threads, warmup, steps, dtype).dump();
    } catch (const std::exception& e) {
      out = json{{"error", e.what()}}.dump();
      code = 1;
    }
    for (size_t done = 0; done < out.size();) {
      const ssize_t w = write(fds[1], out.data() + done, out.size() - done);
      if (w <= 0) _exit(1);
      done += size_t(w);
    }
    _exit(code);
  }
  close(fds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t r; (r = read(fds[0], buf, sizeof buf)) > 0;) text.append(buf, size_t(r));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  ENSURE(!text.empty(), "benchmark child for {} exited without a result (status {})", bc.preset, status);
  json result = json::parse(text);
  ENSURE(!result.contains("error"), "{}:{}x{}: {}", bc.preset, bc.B, bc.T, result.value("error", std::string()));
  return result;
}

int run(int argc, char** argv) {
  cxxopts::Options options("bench_train_step", "CPU training step (forward + backward + AdamW) of gpt2cc's GPT-2");
  options.add_options()
      ("configs", "comma-separated preset:BxT list", cxxopts::value<std::string>()->default_value("d4:4x64,gpt2:1x64"))
      ("threads", "OpenMP threads (0: OpenMP default)", cxxopts::value<int>()->default_value("0"))
      ("warmup", "untimed steps first, >= 1", cxxopts::value<int>()->default_value("1"))
      ("steps", "timed steps (median reported), >= 1", cxxopts::value<int>()->default_value("5"))
      ("json", "also write the results to this JSON file", cxxopts::value<std::string>())
      ("gemm", bench::kGemmFlagHelp, cxxopts::value<std::string>()->default_value("auto"))
      ("dtype", "fp32, or bf16 (the CPU's bf16 backend: bf16 storage, fp32 master weights)",
       cxxopts::value<std::string>()->default_value("fp32"))
      ("h,help", "show this help");
  const auto args = parse_flags(options, argc, argv);
  if (args.count("help")) {
    std::cout << options.help() << "\n";
    return 0;
  }
  INPUT_CHECK(args.unmatched().empty(), "unexpected argument '{}' (see --help)", args.unmatched().front());
  const int threads = args["threads"].as<int>(), warmup = args["warmup"].as<int>(), steps = args["steps"].as<int>();
  check_thread_count(threads);  // here, not in the child, where it would come back as a failed run
  INPUT_CHECK(warmup >= 1, "--warmup must be >= 1, got {}", warmup);
  INPUT_CHECK(steps >= 1, "--steps must be >= 1, got {}", steps);
  bench::apply_gemm_flag(args["gemm"].as<std::string>());
  const DType dtype = parse_dtype(args["dtype"].as<std::string>());
  std::vector<BenchConfig> configs;
  for (const std::string& item : bench::split_list("--configs", args["configs"].as<std::string>()))
    configs.push_back(parse_config(item));
  INPUT_CHECK(!configs.empty(), "--configs must name at least one preset:BxT");
  if (args.count("json")) bench::check_output_file("--json", args["json"].as<std::string>());  // before the run

  json results = json::array();
  std::printf("%-8s %4s %5s %10s %10s %12s %10s %12s %14s %10s %13s\n", "preset", "B", "T", "params(M)",
              "ms/step", "tokens/s", "GFLOP/s", "cpu-ms/step", "GFLOP/cpu-s", "RSS(MiB)", "loss");
  for (const BenchConfig& bc : configs) {
    json r = run_in_child(bc, threads, warmup, steps, dtype);
    std::printf("%-8s %4d %5d %10.1f %10.1f %12.1f %10.2f %12.1f %14.2f %10.0f %6.3f->%.3f\n",
                bc.preset.c_str(), bc.B, bc.T, r["parameters"].get<double>() / 1e6,
                r["ms_per_step_median"].get<double>(), r["tokens_per_s"].get<double>(),
                r["gflops_per_s"].get<double>(), r["cpu_ms_per_step"].get<double>(),
                r["gflops_per_cpu_s"].get<double>(), r["peak_rss_mib"].get<double>(), r["loss_first"].get<double>(),
                r["loss_last"].get<double>());
    std::fflush(stdout);
    results.push_back(r);
  }
  if (args.count("json")) write_file_atomic(args["json"].as<std::string>(), results.dump(1) + "\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_cli("bench_train_step", argc, argv, run); }
