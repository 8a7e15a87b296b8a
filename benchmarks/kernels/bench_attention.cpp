// Causal attention benchmark: the fused bf16 flash kernels (kernels/flash_attention.cuh) against
// the tiled fp32 kernels (kernels/attention.cuh) at GPT-2 shapes. Each shape is first validated
// (flash out, dq, dk, dv vs the fp32 kernels on the same bf16-rounded inputs, relative L2 <= 1e-2)
// and only then timed: warm-up, CUDA events per repetition, median. Both backward designs
// (cuda::FlashBackward: split, 7 products per tile pair; fused, 5 and ordered dQ sums between
// CTAs) are validated. Reports forward, backward and forward+backward ms with TFLOP/s (the
// launchers' own choice of resident tile and backward design), forward+backward with each tile
// forced (64 and 128 rows a CTA, which must give the same bits), the backward of each design, the
// bytes each saves for the backward (lse vs att) and the backward's scratch per design.
// Shapes and JSON fields follow benchmarks/pytorch/attention_sdpa.py, so the two sit side by side.
// A head size whose kernels the device cannot hold (HS 128 on sm_86 / sm_89) is not run: its row
// says why ("not_run" in the JSON), and the other shapes still run.
//   bench_attention [--shapes 8x12x1024x64,...] [-B 8 -T 1024 --NH 12 --HS 64] [--reps 50] [--json out.json]
// (-B/--batch-size, -T/--seq-len: cxxopts makes one-letter names short options, so no --B/--T.)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include <cxxopts.hpp>

#include "benchmarks/bench_cli.hpp"
#include "benchmarks/kernels/bench_device.hpp"
#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/cli.hpp"
#include "core/rng.hpp"
#include "kernels/attention.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/flash_attention.cuh"

using namespace gpt2cc;
using cuda::bf16;
using namespace gpt2cc::bench;

namespace {

struct Shape {
  int B, NH, T, HS;
};

// sdpa's default shapes plus GPT-2 124M's own C = 768 split as 6 heads of 128.
constexpr const char* kDefaultShapes = "8x12x1024x64,16x12x1024x64,8x6x1024x128,8x12x1024x128,16x12x1024x128";
constexpr double kTolerance = 1e-2;  // relative L2, bf16 vs fp32 (issue 8)

struct Options {
  std::vector<Shape> shapes;
  int reps = 50, warmup = 10;
  std::string json_path;
};

Shape parse_shape(const std::string& entry) {
  Shape s{};
  char x1 = 0, x2 = 0, x3 = 0;
  std::istringstream in(entry);
  in >> s.B >> x1 >> s.NH >> x2 >> s.T >> x3 >> s.HS;
  const bool ok = in && in.peek() == std::char_traits<char>::eof() && x1 == 'x' && x2 == 'x' && x3 == 'x' &&
                  s.B >= 1 && s.NH >= 1 && s.T >= 1;
  INPUT_CHECK(ok, "--shapes: expected entries like 8x12x1024x64 (BxNHxTxHS, all >= 1), got '{}'", entry);
  INPUT_CHECK(cuda::flash_attention_supported(s.HS), "--shapes: '{}': head size {} is not supported (64 or 128)",
              entry, s.HS);
  return s;
}

Options parse(int argc, char** argv) {
  cxxopts::Options cli("bench_attention",
                       "Validate, then time, the bf16 flash attention kernels against the tiled fp32 ones");
  cli.add_options()("shapes", "comma-separated BxNHxTxHS shapes",
                    cxxopts::value<std::string>()->default_value(kDefaultShapes))(
      "B,batch-size", "one shape instead of --shapes: batch size", cxxopts::value<int>()->default_value("8"))(
      "T,seq-len", "one shape: sequence length", cxxopts::value<int>()->default_value("1024"))(
      "NH", "one shape: number of heads", cxxopts::value<int>()->default_value("12"))(
      "HS", "one shape: head size (64 or 128)", cxxopts::value<int>()->default_value("64"))(
      "reps", "timed repetitions per figure (median reported)", cxxopts::value<int>()->default_value("50"))(
      "warmup", "untimed repetitions first", cxxopts::value<int>()->default_value("10"))(
      "json", "also write the results to this JSON file", cxxopts::value<std::string>()->default_value(""))(
      "h,help", "show this help");
  const auto args = parse_flags(cli, argc, argv);
  if (args.count("help")) {
    std::cout << cli.help() << "\n";
    std::exit(0);
  }
  INPUT_CHECK(args.unmatched().empty(), "unexpected argument '{}' (see --help)", args.unmatched().front());
  Options o;
  o.reps = args["reps"].as<int>();
  o.warmup = args["warmup"].as<int>();
  o.json_path = args["json"].as<std::string>();
  if (!o.json_path.empty()) bench::check_output_file("--json", o.json_path);  // before the GPU runs
  INPUT_CHECK(o.reps >= 1, "--reps must be >= 1, got {}", o.reps);
  INPUT_CHECK(o.warmup >= 1, "--warmup must be >= 1, got {}", o.warmup);
  const bool single = args.count("batch-size") || args.count("seq-len") || args.count("NH") || args.count("HS");
  INPUT_CHECK(!(single && args.count("shapes")), "give either --shapes or -B/-T/--NH/--HS, not both");
  if (single) {
    const Shape s{args["batch-size"].as<int>(), args["NH"].as<int>(), args["seq-len"].as<int>(),
                  args["HS"].as<int>()};
    INPUT_CHECK(s.B >= 1, "--batch-size must be >= 1, got {}", s.B);
    INPUT_CHECK(s.T >= 1, "--seq-len must be >= 1, got {}", s.T);
    INPUT_CHECK(s.NH >= 1, "--NH must be >= 1, got {}", s.NH);
    INPUT_CHECK(cuda::flash_attention_supported(s.HS), "--HS must be 64 or 128, got {}", s.HS);
    o.shapes.push_back(s);
  } else {
    for (const std::string& entry : bench::split_list("--shapes", args["shapes"].as<std::string>()))
      o.shapes.push_back(parse_shape(entry));
    INPUT_CHECK(!o.shapes.empty(), "--shapes must name at least one BxNHxTxHS shape");
  }
  return o;
}

// Uniform in [-1, 1), rounded through bf16 so both kernels see the same values.
std::vector<float> random_bf16_values(size_t n, uint64_t seed) { return rounded<bf16>(random_floats(n, seed)); }

// One backward design's validation: relative L2 vs the fp32 kernels (64-row tiles), and whether
// the 128-row tiles gave the same bits.
struct Check {
  double out = 0, dq = 0, dk = 0, dv = 0;
  bool tiles_agree = false;
  bool ok() const { return std::max({out, dq, dk, dv}) <= kTolerance && tiles_agree; }
};

struct Result {
  Shape shape;
  Check check;        // the design FlashBackward::kAuto takes
  Check check_other;  // the other one
  bool valid = false;
  double fwd_ms = 0, bwd_ms = 0, fwd_bwd_ms = 0;
  int auto_tile_rows = 0;                            // what FlashTile::kAuto took
  cuda::FlashBackward auto_design = cuda::FlashBackward::kFused;  // what FlashBackward::kAuto took
  double fwd_bwd_ms_rows64 = 0, fwd_bwd_ms_rows128 = 0;  // each resident tile forced
  double bwd_ms_split = 0, bwd_ms_fused = 0;             // each backward design forced
  double tiled_fwd_ms = 0, tiled_bwd_ms = 0;
  double flash_saved_bytes = 0, tiled_scratch_bytes = 0;
  double bwd_scratch_split = 0, bwd_scratch_fused = 0;
  std::string not_run;  // why the shape was not run (the device cannot hold its kernels), or empty
};

// Why flash attention cannot run at head size HS on this device (both backward designs are run
// here), or empty: HS 128 needs more shared memory per block than sm_86 / sm_89 have.
std::string unfit_reason(int HS, const cudaDeviceProp& props) {
  if (cuda::flash_attention_fits_device(HS, cuda::FlashBackward::kSplit) &&
      cuda::flash_attention_fits_device(HS, cuda::FlashBackward::kFused))
    return "";
  return format("flash attention's HS {} kernels need more shared memory per block than {} (sm_{}{}) allows ({} "
                "bytes)",
                HS, props.name, props.major, props.minor, props.sharedMemPerBlockOptin);
}

// Causal attention FLOPs, matmuls only (as attention_sdpa.py): forward = QK^T and PV, each
// 2*B*NH*T^2*HS, halved by the causal mask: fwd = 4*B*NH*T^2*HS / 2. Backward = five such
// matmuls (recomputed QK^T, dO V^T, P^T dO, dS K, dS^T Q): bwd = 2.5 * fwd; fwd+bwd = 3.5 * fwd.
// The same count for both designs (the split one's two recomputed products are not useful work),
// so their TFLOP/s compare as their times do.
double forward_flops(const Shape& s) { return 4.0 * s.B * s.NH * static_cast<double>(s.T) * s.T * s.HS / 2.0; }

Result bench_shape(const Shape& s, const Options& o, cudaStream_t stream) {
  const int B = s.B, T = s.T, NH = s.NH, C = NH * s.HS;
  const size_t qkv_n = static_cast<size_t>(B) * T * 3 * C, out_n = static_cast<size_t>(B) * T * C;
  const size_t stat_n = static_cast<size_t>(B) * NH * T, att_n = stat_n * T;
  const auto qkv = random_bf16_values(qkv_n, 1), dout = random_bf16_values(out_n, 2);
  Result r;
  r.shape = s;
  r.flash_saved_bytes = static_cast<double>(stat_n) * sizeof(float);  // lse (the tiled path's too)
  // The tiled kernels' T x T probabilities, scratch during a call (the backward's dP as much again).
  r.tiled_scratch_bytes = static_cast<double>(att_n) * sizeof(float);
  r.bwd_scratch_split =
      static_cast<double>(cuda::flash_attention_backward_scratch_bytes(B, T, C, NH, cuda::FlashBackward::kSplit));
  r.bwd_scratch_fused =
      static_cast<double>(cuda::flash_attention_backward_scratch_bytes(B, T, C, NH, cuda::FlashBackward::kFused));
  const DropoutParams no_dropout{};

  DeviceVec<float> f_qkv(qkv), f_dout(dout), f_out(out_n), f_lse(stat_n), f_dqkv(qkv_n);
  DeviceVec<bf16> h_qkv(to_elem<bf16>(qkv)), h_dout(to_elem<bf16>(dout)), h_out(out_n), h_dqkv(qkv_n);
  DeviceVec<float> lse(stat_n);
  auto tiled_fwd = [&] {
    cuda::attention_forward(f_out.get(), f_lse.get(), f_qkv.get(), B, T, C, NH, no_dropout, stream);
  };
  auto tiled_bwd = [&] {
    cuda::attention_backward(f_dqkv.get(), f_dout.get(), f_lse.get(), f_qkv.get(), f_out.get(), B, T, C, NH,
                             no_dropout, stream);
  };
  auto flash_fwd = [&](cuda::FlashTile tile) {
    cuda::flash_attention_forward(h_out.get(), lse.get(), h_qkv.get(), B, T, C, NH, stream, tile);
  };
  auto flash_bwd = [&](cuda::FlashTile tile, cuda::FlashBackward design) {
    cuda::flash_attention_backward(h_dqkv.get(), h_dout.get(), lse.get(), h_qkv.get(), h_out.get(), B, T, C, NH,
                                   stream, tile, design);
  };
  constexpr cuda::FlashTile kAuto = cuda::FlashTile::kAuto, kRows64 = cuda::FlashTile::kRows64,
                            kRows128 = cuda::FlashTile::kRows128;
  constexpr cuda::FlashBackward kAutoDesign = cuda::FlashBackward::kAuto, kSplit = cuda::FlashBackward::kSplit,
                                kFused = cuda::FlashBackward::kFused;
  r.auto_tile_rows = cuda::flash_attention_forward_tile_rows(kAuto, B, T, C, NH);
  r.auto_design = cuda::flash_attention_backward_design(kAutoDesign);

  tiled_fwd();
  tiled_bwd();
  const auto ref_out = f_out.host(), ref_dqkv = f_dqkv.host();
  const auto same_bytes = [](const std::vector<bf16>& a, const std::vector<bf16>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(bf16)) == 0;
  };
  const auto check_design = [&](cuda::FlashBackward design) {
    flash_fwd(kRows128);
    flash_bwd(kRows128, design);
    const auto out128 = h_out.host(), dqkv128 = h_dqkv.host();
    flash_fwd(kRows64);
    flash_bwd(kRows64, design);
    const auto out64 = h_out.host(), dqkv64 = h_dqkv.host();
    const auto got_out = to_float<bf16>(out64), got_dqkv = to_float<bf16>(dqkv64);
    const size_t rows = static_cast<size_t>(B) * T;
    Check c;
    c.out = rel_l2(got_out, ref_out, rows, C, 0, C);
    c.dq = rel_l2(got_dqkv, ref_dqkv, rows, 3 * C, 0, C);
    c.dk = rel_l2(got_dqkv, ref_dqkv, rows, 3 * C, C, C);
    c.dv = rel_l2(got_dqkv, ref_dqkv, rows, 3 * C, 2 * C, C);
    c.tiles_agree = same_bytes(out64, out128) && same_bytes(dqkv64, dqkv128);
    if (!c.ok())
      std::fprintf(stderr,
                   "VALIDATION FAILED: %dx%dx%dx%d, %s backward: rel. L2 vs fp32 out %.3g dq %.3g dk %.3g dv %.3g "
                   "(> %.0e); 64- and 128-row tiles give %s; not timed\n",
                   B, NH, T, s.HS, cuda::flash_attention_backward_name(design), c.out, c.dq, c.dk, c.dv, kTolerance,
                   c.tiles_agree ? "the same bits" : "DIFFERENT bits");
    return c;
  };
  r.check = check_design(r.auto_design);
  r.check_other = check_design(r.auto_design == kSplit ? kFused : kSplit);
  r.valid = r.check.ok() && r.check_other.ok();
  if (!r.valid) return r;
  // No L2 flush between repetitions, like attention_sdpa.py: the inputs of one head stay
  // L2-resident across its tiles either way. The backward alone re-reads the saved forward
  // results, which stay valid between repetitions.
  Timer timer(stream, o.warmup, o.reps, false);
  r.fwd_ms = timer.median_ms([&] { flash_fwd(kAuto); });
  r.bwd_ms_split = timer.median_ms([&] { flash_bwd(kAuto, kSplit); });
  r.bwd_ms_fused = timer.median_ms([&] { flash_bwd(kAuto, kFused); });
  r.bwd_ms = r.auto_design == kSplit ? r.bwd_ms_split : r.bwd_ms_fused;
  const auto fwd_bwd = [&](cuda::FlashTile tile) {
    return timer.median_ms([&] {
      flash_fwd(tile);
      flash_bwd(tile, kAutoDesign);
    });
  };
  r.fwd_bwd_ms = fwd_bwd(kAuto);
  r.fwd_bwd_ms_rows64 = fwd_bwd(kRows64);
  r.fwd_bwd_ms_rows128 = fwd_bwd(kRows128);
  r.tiled_fwd_ms = timer.median_ms(tiled_fwd);
  r.tiled_bwd_ms = timer.median_ms(tiled_bwd);
  return r;
}

double tflops(double flops, double ms) { return flops / (ms * 1e-3) / 1e12; }

nlohmann::json error_json(const Check& c) {
  return {{"out", c.out}, {"dq", c.dq}, {"dk", c.dk}, {"dv", c.dv}, {"tiles_agree", c.tiles_agree}};
}

void write_json(const std::string& path, const cudaDeviceProp& props, const Options& o,
                const std::vector<Result>& results) {
  nlohmann::json j{{"benchmark", "gpt2cc_flash_attention_causal"}, {"device", props.name}, {"dtype", "bf16"},
                   {"backend", "gpt2cc flash (mma.sync m16n8k16)"}, {"reps", o.reps}, {"warmup", o.warmup}};
  j["results"] = nlohmann::json::array();
  for (const Result& r : results) {
    const double fwd = forward_flops(r.shape);
    nlohmann::json row{{"B", r.shape.B},
                       {"NH", r.shape.NH},
                       {"T", r.shape.T},
                       {"HS", r.shape.HS},
                       {"valid", r.valid}};
    if (!r.not_run.empty()) {
      row["not_run"] = r.not_run;
      j["results"].push_back(row);
      continue;
    }
    row["bwd_design_auto"] = cuda::flash_attention_backward_name(r.auto_design);
    row["rel_error"] = error_json(r.check);
    row["rel_error_other_design"] = error_json(r.check_other);
    row["saved_bytes"] = r.flash_saved_bytes;
    row["tiled_fp32_scratch_bytes"] = r.tiled_scratch_bytes;
    row["bwd_scratch_bytes_split"] = r.bwd_scratch_split;
    row["bwd_scratch_bytes_fused"] = r.bwd_scratch_fused;
    if (r.valid) {
      row["fwd_ms"] = r.fwd_ms;
      row["fwd_tflops"] = tflops(fwd, r.fwd_ms);
      row["bwd_ms"] = r.bwd_ms;
      row["bwd_tflops"] = tflops(2.5 * fwd, r.bwd_ms);
      row["fwd_bwd_ms"] = r.fwd_bwd_ms;
      row["fwd_bwd_tflops"] = tflops(3.5 * fwd, r.fwd_bwd_ms);
      row["tile_rows_auto"] = r.auto_tile_rows;
      row["fwd_bwd_ms_rows64"] = r.fwd_bwd_ms_rows64;
      row["fwd_bwd_ms_rows128"] = r.fwd_bwd_ms_rows128;
      row["bwd_ms_split"] = r.bwd_ms_split;
      row["bwd_ms_fused"] = r.bwd_ms_fused;
      row["tiled_fp32_fwd_ms"] = r.tiled_fwd_ms;
      row["tiled_fp32_bwd_ms"] = r.tiled_bwd_ms;
    }
    j["results"].push_back(row);
  }
  write_file_atomic(path, j.dump(2) + "\n");  // never a half-written results file
}

int run(int argc, char** argv) {
  const Options o = parse(argc, argv);
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  ENSURE(err == cudaSuccess && count > 0, "no CUDA device present ({}); this benchmark needs a GPU",
         err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
  cudaDeviceProp props{};
  CUDA_CHECK(cudaGetDeviceProperties(&props, 0));
  INPUT_CHECK(cuda::flash_attention_built_for_device(),
              "flash attention does not run on {} (sm_{}{}): it needs a GPU of compute capability 8.0 or newer and "
              "this build's code for it (-DGPT2CC_CUDA_ARCHITECTURES={}{})",
              props.name, props.major, props.minor, props.major, props.minor);
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::printf("device %s, bf16 flash vs fp32 tiled, validated first (rel. L2 <= %.0e), median of %d after %d "
              "warm-up\n",
              props.name, kTolerance, o.reps, o.warmup);
  std::printf("| B | NH | T | HS | fwd ms | fwd TFLOP/s | bwd ms | bwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s "
              "| fwd+bwd ms, 64 / 128-row tiles (auto) | bwd ms, split / fused (auto) | bwd scratch MiB, split / "
              "fused | saved MiB / tiled T×T scratch MiB | tiled fp32 fwd, bwd ms |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::vector<Result> results;
  bool all_valid = true;
  for (const Shape& s : o.shapes) {
    if (std::string why = unfit_reason(s.HS, props); !why.empty()) {
      std::printf("| %d | %d | %d | %d | not run: %s |\n", s.B, s.NH, s.T, s.HS, why.c_str());
      Result r;
      r.shape = s;
      r.not_run = std::move(why);
      results.push_back(r);
      continue;
    }
    const Result r = bench_shape(s, o, stream);
    results.push_back(r);
    all_valid = all_valid && r.valid;
    if (!r.valid) {
      std::printf("| %d | %d | %d | %d | INVALID |\n", s.B, s.NH, s.T, s.HS);
      continue;
    }
    const double fwd = forward_flops(s);
    std::printf("| %d | %d | %d | %d | %.3f | %.1f | %.3f | %.1f | %.3f | %.1f | %.3f / %.3f (%d) | %.3f / %.3f (%s) "
                "| %.1f / %.1f | %.2f / %.1f | %.3f, %.3f |\n",
                s.B, s.NH, s.T, s.HS, r.fwd_ms, tflops(fwd, r.fwd_ms), r.bwd_ms, tflops(2.5 * fwd, r.bwd_ms),
                r.fwd_bwd_ms, tflops(3.5 * fwd, r.fwd_bwd_ms), r.fwd_bwd_ms_rows64, r.fwd_bwd_ms_rows128,
                r.auto_tile_rows, r.bwd_ms_split, r.bwd_ms_fused, cuda::flash_attention_backward_name(r.auto_design),
                r.bwd_scratch_split / (1 << 20), r.bwd_scratch_fused / (1 << 20), r.flash_saved_bytes / (1 << 20),
                r.tiled_scratch_bytes / (1 << 20), r.tiled_fwd_ms, r.tiled_bwd_ms);
  }
  if (!o.json_path.empty()) write_json(o.json_path, props, o, results);
  CUDA_CHECK(cudaStreamDestroy(stream));
  return all_valid ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return run_cli("bench_attention", argc, argv, run); }
