// Benchmark of cpu::matmul_forward_blocked / _backward_blocked (cache-blocked, register-tiled)
// on the shapes of GPT-2 training, against the plain reference loops and the machine's FMA
// ceiling; then, where the CPU has AVX512-BF16, the bf16 backend's products
// (cpu::matmul_forward_bf16 / matmul_backward_bf16) on the same shapes against the VDPBF16PS
// ceiling and the fp32 products' times, writing bf16 outputs as the backend does. Validates
// against cpu::matmul_forward / _backward first (fp32 outputs), warms up, reports the median of
// the runs.
//   FLOPs: forward 2*BT*C*OC; backward 4*BT*C*OC (dinp and dweight; dbias is negligible).
// Wall-clock GFLOP/s is what training sees; GFLOP per CPU-second (process CPU time) stays
// meaningful when other processes share the cores. Ceiling: independent 8-wide FMAs in registers
// on every thread (what the micro-kernel could reach with no memory traffic at all).
//   bench_cpu_matmul        OMP_NUM_THREADS sets the threads; no flags but --help
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "benchmarks/cpu_layers/bench_util.hpp"
#include "benchmarks/gemm_flag.hpp"
#include "core/cli.hpp"
#include "cpu/bf16.hpp"
#include "cpu/gemm.hpp"
#include "cpu/matmul.hpp"

namespace {

using namespace gpt2cc;
using namespace gpt2cc::bench;

struct Shape {
  const char* name;
  int BT, C, OC;
};

// n bf16 values: filled()'s, rounded.
std::vector<uint16_t> filled_bf16(size_t n, unsigned seed) {
  const auto wide = filled(n, seed);
  std::vector<uint16_t> out(n);
  cpu::round_to_bf16(out.data(), wide.data(), n);
  return out;
}

std::vector<float> widened(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  cpu::widen_bf16(out.data(), v.data(), v.size());
  return out;
}

// The bf16 products on the same shapes (operands rounded to bf16), validated against the
// reference loops on the widened operands, timed against the VDPBF16PS ceiling and beside the
// fp32 products' times (fp32_seconds: forward, backward per shape).
int run_bf16(const std::vector<Shape>& shapes, const std::vector<std::pair<double, double>>& fp32_seconds) {
  double ceiling_cpu = 0;
  const double ceiling = dpbf16_ceiling_gflops(ceiling_cpu);
  std::printf("\nbf16 products (%s)   VDPBF16PS ceiling (measured): %.1f GFLOP/s wall clock, %.1f GFLOP per "
              "CPU-second\n\n",
              bf16_products_name(), ceiling, ceiling_cpu);
  std::printf("%-16s %5s %5s %6s | %8s %8s %6s | %8s %8s %6s | %8s %8s\n", "shape", "BT", "C", "OC", "fwd", "fwd/cpu",
              "core%", "bwd", "bwd/cpu", "core%", "fwd/fp32", "bwd/fp32");
  for (size_t i = 0; i < shapes.size(); ++i) {
    const Shape& s = shapes[i];
    const size_t BT = s.BT;
    const auto inp = filled_bf16(BT * s.C, 1), weight = filled_bf16(size_t(s.OC) * s.C, 2),
               dout = filled_bf16(BT * s.OC, 4);
    const auto bias = filled(s.OC, 3);
    // Validate on the first 64 rows (past the matrix-vector loop's 32) against the reference.
    const int check_rows = std::min(s.BT, 64);
    std::vector<float> out(size_t(check_rows) * s.OC), dinp(size_t(check_rows) * s.C),
        dweight(size_t(s.OC) * s.C, 0.0f), dbias(s.OC, 0.0f);
    const auto inp32 = widened(inp), weight32 = widened(weight), dout32 = widened(dout);
    std::vector<float> out_ref(size_t(check_rows) * s.OC), dinp_ref(size_t(check_rows) * s.C),
        dweight_ref(dweight.size(), 0.0f), dbias_ref(s.OC, 0.0f);
    cpu::matmul_forward_bf16(out.data(), inp.data(), weight.data(), bias.data(), 1, check_rows, s.C, s.OC);
    cpu::matmul_forward(out_ref.data(), inp32.data(), weight32.data(), bias.data(), 1, check_rows, s.C, s.OC);
    cpu::matmul_backward_bf16(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(), weight.data(), 1,
                              check_rows, s.C, s.OC);
    cpu::matmul_backward(dinp_ref.data(), dweight_ref.data(), dbias_ref.data(), dout32.data(), inp32.data(),
                         weight32.data(), 1, check_rows, s.C, s.OC);
    const double err = std::max({rel_error(out, out_ref), rel_error(dinp, dinp_ref), rel_error(dweight, dweight_ref)});
    if (!(err < 1e-5)) {
      std::fprintf(stderr, "%s: bf16 matmul differs from the reference (relative error %.3g)\n", s.name, err);
      return 1;
    }

    // Timed as the bf16 backend runs them: the outputs, dinp and dweight bf16, rounded by the
    // products themselves (the forward on AMX tiles where it runs there, else VDPBF16PS).
    std::vector<uint16_t> out16(BT * s.OC), dinp16(BT * s.C), dweight16(size_t(s.OC) * s.C, 0);
    const int reps = 5;
    const double flop = 2.0 * BT * s.C * s.OC;
    Timing fwd = time_median(
        [&] { cpu::matmul_forward_bf16(out16.data(), inp.data(), weight.data(), bias.data(), 1, s.BT, s.C, s.OC); },
        reps);
    Timing bwd = time_median(
        [&] {
          cpu::matmul_backward_bf16(dinp16.data(), dweight16.data(), dbias.data(), dout.data(), inp.data(),
                                    weight.data(), 1, s.BT, s.C, s.OC);
        },
        reps);
    const double f = flop / fwd.wall_s * 1e-9, b = 2 * flop / bwd.wall_s * 1e-9;
    const double fc = flop / fwd.cpu_s * 1e-9, bc = 2 * flop / bwd.cpu_s * 1e-9;
    std::printf("%-16s %5d %5d %6d | %8.1f %8.1f %5.0f%% | %8.1f %8.1f %5.0f%% | %7.2fx %7.2fx\n", s.name, s.BT,
                s.C, s.OC, f, fc, 100 * fc / ceiling_cpu, b, bc, 100 * bc / ceiling_cpu,
                fp32_seconds[i].first / fwd.wall_s, fp32_seconds[i].second / bwd.wall_s);
  }
  std::printf("\ncore%% against the VDPBF16PS ceiling (the forward on AMX tiles, where it runs there, can pass it); "
              "fwd/fp32, bwd/fp32 = the fp32 products' time over the bf16 ones' (same shape, same run).\n");
  return 0;
}

int run(int argc, char** argv) {
  cxxopts::Options options(
      "bench_cpu_matmul",
      "cpu::matmul_forward_blocked / _backward_blocked on GPT-2 shapes against the reference loops and "
      "the FMA ceiling; where the CPU has AVX512-BF16, the bf16 backend's products against the VDPBF16PS "
      "ceiling too (OMP_NUM_THREADS sets the threads)");
  options.add_options()("h,help", "show this help");
  const cxxopts::ParseResult args = parse_flags(options, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  INPUT_CHECK(args.unmatched().empty(), "unexpected argument '{}' (see --help)", args.unmatched().front());
  // GPT-2 124M (C = 768) at B x T = 4 x 64, the d4 preset's widths (C = 256) at 8 x 128, and the
  // demo's classifier (d2, C = 128, at 4 x 64).
  const std::vector<Shape> shapes = {{"gpt2 qkv", 256, 768, 2304},     {"gpt2 fc", 256, 768, 3072},
                          {"gpt2 fcproj", 256, 3072, 768},  {"gpt2 attproj", 256, 768, 768},
                          {"gpt2 classifier", 256, 768, 50304}, {"d4 fc", 1024, 256, 1024},
                          {"d4 classifier", 1024, 256, 50304}, {"d2 classifier", 256, 128, 50304}};
  const int threads = omp_get_max_threads();
  double ceiling_cpu = 0;
  const double ceiling = fma_ceiling_gflops(ceiling_cpu);
  std::printf("threads: %d   FMA ceiling (measured): %.1f GFLOP/s wall clock, %.1f GFLOP per CPU-second\n\n",
              threads, ceiling, ceiling_cpu);
  std::printf("%-16s %5s %5s %6s | %8s %8s %6s | %8s %8s %6s | %8s %7s\n", "shape", "BT", "C", "OC", "fwd", "fwd/cpu",
              "core%", "bwd", "bwd/cpu", "core%", "ref fwd", "speedup");
  std::vector<std::pair<double, double>> fp32_seconds;  // forward, backward of each shape
  for (const Shape& s : shapes) {
    const size_t BT = s.BT;
    auto inp = filled(BT * s.C, 1), weight = filled(size_t(s.OC) * s.C, 2), bias = filled(s.OC, 3);
    auto dout = filled(BT * s.OC, 4);
    std::vector<float> out(BT * s.OC), out_ref(BT * s.OC), dinp(BT * s.C), dinp_ref(BT * s.C);
    std::vector<float> dweight(size_t(s.OC) * s.C, 0.0f), dweight_ref(dweight.size(), 0.0f), dbias(s.OC, 0.0f),
        dbias_ref(s.OC, 0.0f);

    // Validate before timing, on the first rows only (the reference loops are ~20x slower):
    // every tile, block and edge of the blocked code is already exercised at 32 rows.
    const int check_rows = std::min(s.BT, 32);
    out.resize(size_t(check_rows) * s.OC);
    out_ref.resize(out.size());
    dinp.resize(size_t(check_rows) * s.C);
    dinp_ref.resize(dinp.size());
    cpu::matmul_forward_blocked(out.data(), inp.data(), weight.data(), bias.data(), 1, check_rows, s.C, s.OC);
    cpu::matmul_forward(out_ref.data(), inp.data(), weight.data(), bias.data(), 1, check_rows, s.C, s.OC);
    cpu::matmul_backward_blocked(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(), weight.data(), 1,
                                 check_rows, s.C, s.OC);
    cpu::matmul_backward(dinp_ref.data(), dweight_ref.data(), dbias_ref.data(), dout.data(), inp.data(), weight.data(),
                         1, check_rows, s.C, s.OC);
    // Compared at the checked rows' size, then grown to the whole shape for the timing.
    const double err = std::max({rel_error(out, out_ref), rel_error(dinp, dinp_ref), rel_error(dweight, dweight_ref)});
    if (!(err < 1e-5)) {
      std::fprintf(stderr, "%s: blocked matmul differs from the reference (relative error %.3g)\n", s.name, err);
      return 1;
    }
    out.resize(BT * s.OC);
    dinp.resize(BT * s.C);

    const int reps = 5;
    const double flop = 2.0 * BT * s.C * s.OC;
    Timing fwd = time_median(
        [&] { cpu::matmul_forward_blocked(out.data(), inp.data(), weight.data(), bias.data(), 1, s.BT, s.C, s.OC); },
        reps);
    Timing bwd = time_median(
        [&] {
          cpu::matmul_backward_blocked(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(),
                                       weight.data(), 1, s.BT, s.C, s.OC);
        },
        reps);
    Timing ref = time_median(
        [&] { cpu::matmul_forward(out_ref.data(), inp.data(), weight.data(), bias.data(), 1, check_rows, s.C, s.OC); },
        1);
    fp32_seconds.push_back({fwd.wall_s, bwd.wall_s});
    const double ref_flop = 2.0 * check_rows * s.C * s.OC;
    const double f = flop / fwd.wall_s * 1e-9, b = 2 * flop / bwd.wall_s * 1e-9;
    const double fc = flop / fwd.cpu_s * 1e-9, bc = 2 * flop / bwd.cpu_s * 1e-9, r = ref_flop / ref.wall_s * 1e-9;
    std::printf("%-16s %5d %5d %6d | %8.1f %8.1f %5.0f%% | %8.1f %8.1f %5.0f%% | %8.1f %6.1fx\n", s.name, s.BT, s.C,
                s.OC, f, fc, 100 * fc / ceiling_cpu, b, bc, 100 * bc / ceiling_cpu, r, f / r);
  }
  std::printf("\nGFLOP/s: fwd, bwd = wall clock; fwd/cpu, bwd/cpu = GFLOP per CPU-second (summed over threads); "
              "core%% = per CPU-second rate / the FMA ceiling's per CPU-second rate (fraction of one core's peak "
              "while running); ref fwd = reference loops, wall clock, first 32 rows.\n");
  if (!cpu::gemm_bf16_enabled()) {
    std::printf("\nbf16: this CPU has no AVX512-BF16: the bf16 backend's backward widens its operands for the "
                "fp32 product (not timed here)\n");
    return 0;
  }
  return run_bf16(shapes, fp32_seconds);
}

}  // namespace

int main(int argc, char** argv) { return gpt2cc::run_cli("bench_cpu_matmul", argc, argv, run); }
