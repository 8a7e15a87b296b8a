// Benchmark of the CPU backend's attention (cpu::attention_forward_blocked / _backward_blocked:
// products over 64 x 64 tiles, cpu/gemm.hpp) against the plain reference loops, on GPT-2 shapes.
// Validates the blocked functions against the loops first, then reports the median of the runs.
//   Useful FLOPs over the causal half (t2 <= t), B*NH heads of HS = C/NH channels:
//   forward 2 products (q.k, a.v) = 4 * B*NH * T(T+1)/2 * HS; backward 4 products = twice that
//   (the blocked backward computes three products more per tile pair, P = q.k in both of its
//   tasks and dP' in the second, not counted).
// Memory ("saved MB"): what the forward keeps per layer for the backward, the loops' B*NH*T*T
// probabilities against the blocked functions' B*NH*T log-sum-exp; the blocked functions add
// per-thread scratch (64 x T for the forward, two 64 x 64 tiles for the backward), under 1 MB.
//   bench_cpu_attention [--reps N] [--json FILE]   (or positional: [reps [json]]); OMP_NUM_THREADS
//   sets the threads; --json also writes the rows
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "benchmarks/bench_cli.hpp"
#include "benchmarks/cpu_layers/bench_util.hpp"
#include "core/atomic_file.hpp"
#include "core/cli.hpp"
#include "core/rng.hpp"
#include "cpu/attention.hpp"

namespace {

using namespace gpt2cc;
using bench::filled;
using bench::rel_error;

// Median wall-clock seconds per call.
template <class F>
double median_seconds(F&& f, int reps) {
  return bench::time_median(f, reps).wall_s;
}

int run(int argc, char** argv) {
  cxxopts::Options options("bench_cpu_attention",
                           "the blocked CPU attention against the reference loops on GPT-2 shapes "
                           "(OMP_NUM_THREADS sets the threads)");
  options.positional_help("[reps [json]]");
  options.add_options()
      ("reps", "timed runs per measurement (the median is reported)", cxxopts::value<int>()->default_value("3"))
      ("json", "also write the rows to this file", cxxopts::value<std::string>()->default_value(""))
      ("h,help", "show this help");
  options.parse_positional({"reps", "json"});
  options.show_positional_help();
  const cxxopts::ParseResult args = parse_flags(options, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  INPUT_CHECK(args.unmatched().empty(), "unexpected argument '{}' (see --help)", args.unmatched().front());
  const int reps = args["reps"].as<int>();
  INPUT_CHECK(reps >= 1, "--reps must be >= 1, got {}", reps);
  const std::string json_path = args["json"].as<std::string>();
  if (!json_path.empty()) bench::check_output_file("--json", json_path);  // before the run
  nlohmann::json rows = nlohmann::json::array();
  struct Shape {
    const char* name;
    int B, T, C, NH;
  };
  const Shape shapes[] = {{"d4", 8, 128, 256, 4},
                          {"d4", 1, 1024, 256, 4},
                          {"gpt2", 4, 256, 768, 12},
                          {"gpt2", 1, 1024, 768, 12}};
  std::printf("threads: %d, median of %d\n\n", omp_get_max_threads(), reps);
  std::printf("%-5s %2s %5s %4s %3s | %9s %9s %9s %9s | %9s %9s %9s %9s | %7s %7s | %9s %9s | %8s\n", "model", "B",
              "T", "C", "NH", "fwd ms", "GFLOP/s", "loops ms", "GFLOP/s", "bwd ms", "GFLOP/s", "loops ms", "GFLOP/s",
              "fwd x", "bwd x", "saved MB", "loops MB", "rel err");
  for (const Shape& s : shapes) {
    const size_t n_qkv = size_t(s.B) * s.T * 3 * s.C, n_out = size_t(s.B) * s.T * s.C;
    const size_t n_att = size_t(s.B) * s.NH * s.T * s.T, n_lse = size_t(s.B) * s.NH * s.T;
    const auto qkv = filled(n_qkv, 1), dout = filled(n_out, 2);
    std::vector<float> out(n_out), lse(n_lse), dqkv(n_qkv), out_ref(n_out), att_ref(n_att), dqkv_ref(n_qkv);
    const DropoutParams none{};
    auto forward = [&] {
      cpu::attention_forward_blocked(out.data(), lse.data(), qkv.data(), s.B, s.T, s.C, s.NH, none);
    };
    auto backward = [&] {
      cpu::attention_backward_blocked(dqkv.data(), dout.data(), lse.data(), qkv.data(), out.data(), s.B, s.T, s.C,
                                      s.NH, none);
    };
    auto forward_ref = [&] {
      cpu::attention_forward(out_ref.data(), att_ref.data(), qkv.data(), s.B, s.T, s.C, s.NH, none);
    };
    auto backward_ref = [&] {
      cpu::attention_backward(dqkv_ref.data(), dout.data(), att_ref.data(), qkv.data(), s.B, s.T, s.C, s.NH, none);
    };
    forward();
    backward();
    forward_ref();
    backward_ref();
    const double err = std::max(rel_error(out, out_ref), rel_error(dqkv, dqkv_ref));
    if (!(err < 1e-5)) {
      std::fprintf(stderr, "%s B=%d T=%d: blocked attention differs from the loops (relative error %.3g)\n", s.name,
                   s.B, s.T, err);
      return 1;
    }
    const double flop = 4.0 * s.B * s.NH * (double(s.T) * (s.T + 1) / 2) * (s.C / s.NH);
    const double f = median_seconds(forward, reps), b = median_seconds(backward, reps);
    const double fr = median_seconds(forward_ref, reps), br = median_seconds(backward_ref, reps);
    const double saved_mb = n_lse * sizeof(float) / 1e6, loops_mb = n_att * sizeof(float) / 1e6;
    std::printf(
        "%-5s %2d %5d %4d %3d | %9.2f %9.1f %9.2f %9.1f | %9.2f %9.1f %9.2f %9.1f | %6.1fx %6.1fx | %9.3f %9.1f | "
        "%8.1e\n",
        s.name, s.B, s.T, s.C, s.NH, f * 1e3, flop / f * 1e-9, fr * 1e3, flop / fr * 1e-9, b * 1e3, 2 * flop / b * 1e-9,
        br * 1e3, 2 * flop / br * 1e-9, fr / f, br / b, saved_mb, loops_mb, err);
    rows.push_back({{"model", s.name}, {"B", s.B}, {"T", s.T}, {"C", s.C}, {"NH", s.NH},
                    {"forward_ms", f * 1e3}, {"forward_loops_ms", fr * 1e3}, {"backward_ms", b * 1e3},
                    {"backward_loops_ms", br * 1e3}, {"forward_gflops", flop / f * 1e-9},
                    {"backward_gflops", 2 * flop / b * 1e-9}, {"saved_mb", saved_mb}, {"loops_saved_mb", loops_mb},
                    {"relative_error", err}});
  }
  if (!json_path.empty()) {
    const nlohmann::json out = {{"threads", omp_get_max_threads()}, {"median_of", reps}, {"rows", rows}};
    write_file_atomic(json_path, out.dump(2) + "\n");  // failure: exit 1 naming the file
  }
  std::printf("\nms: wall clock per call; GFLOP/s: useful FLOPs (causal half) per wall-clock second; loops = the "
              "reference cpu::attention_forward/_backward; saved MB: per layer, kept for the backward; rel err: L2 over "
              "out and dqkv.\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return gpt2cc::run_cli("bench_cpu_attention", argc, argv, run); }
