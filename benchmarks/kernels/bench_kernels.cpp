// CUDA kernel benchmark: every cuda:: layer of kernels/, fp32 and bf16, is first validated
// against its cpu:: reference (at a reduced batch for the CPU's sake unless --validate-full; bf16
// kernels against the CPU run on the same bf16-rounded inputs), then timed at GPT-2 124M shapes
// (default B=8, T=1024): warm-up, CUDA events around each repetition, the L2 cache flushed before
// each one, the median reported with GB/s (memory-bound kernels) or TFLOP/s (matmul, attention).
// Roofline column: the fraction of this machine's ceiling for the kernel's kind of work,
//   memory-bound: achieved GB/s / device-to-device cudaMemcpyAsync bandwidth (1 GiB, measured in
//                 this run, bytes read + written);
//   compute:      achieved TFLOP/s / datasheet peak from benchmarks/gpu/peaks.json, the dense bf16
//                 tensor-core rate for bf16 kernels and the plain fp32 rate for fp32 ones (cuBLAS
//                 runs fp32 with TF32 off); n/a when the GPU is not in the table. The measured
//                 cuBLAS sgemm rate is printed too, as a second fp32 reference.
//   bench_kernels [--batch-size 8] [--seq-len 1024] [--reps 50] [--dtype all|fp32|bf16]
//                 [--only matmul] [--json results.json]
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cxxopts.hpp>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "benchmarks/bench_cli.hpp"
#include "benchmarks/kernels/bench_device.hpp"
#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/cli.hpp"
#include "core/device_peaks.hpp"
#include "cpu/adamw.hpp"
#include "cpu/attention.hpp"
#include "cpu/crossentropy.hpp"
#include "cpu/dropout.hpp"
#include "cpu/encoder.hpp"
#include "cpu/gelu.hpp"
#include "cpu/layernorm.hpp"
#include "cpu/matmul.hpp"
#include "cpu/residual.hpp"
#include "kernels/adamw.cuh"
#include "kernels/attention.cuh"
#include "kernels/convert.cuh"
#include "kernels/crossentropy.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/dropout.cuh"
#include "kernels/encoder.cuh"
#include "kernels/gelu.cuh"
#include "kernels/layernorm.cuh"
#include "kernels/matmul.cuh"
#include "kernels/residual.cuh"

using namespace gpt2cc;
using namespace gpt2cc::bench;
using bf16 = __nv_bfloat16;

namespace {

struct Options {
  int B = 8, T = 1024, C = 768, NH = 12, V = 50257, Vp = 50304;
  int reps = 50, warmup = 5;
  bool validate_full = false, fp32 = true, bf16 = true;
  std::string only, json_path, peaks_path;  // peaks_path empty: the table built in
};

// ---- element types: fp32 kernels are validated at 1e-4, bf16 ones at 1e-2 (issue 8) ----
template <class Elem>
constexpr const char* type_name() {
  return std::is_same_v<Elem, bf16> ? "bf16" : "fp32";
}
template <class Elem>
constexpr double tolerance() {
  return std::is_same_v<Elem, bf16> ? 1e-2 : 1e-4;
}

std::vector<float> zeros(size_t n) { return std::vector<float>(n, 0.0f); }

std::vector<int> random_ints(size_t n, uint64_t seed, int bound) {
  std::vector<int> v(n);
  uint64_t s = seed * 6364136223846793005ull + 1;
  for (int& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = static_cast<int>((s >> 33) % static_cast<uint64_t>(bound));
  }
  return v;
}

// Tokens as text has them: Zipf's law over the vocabulary (rank r has probability ~ 1/r; the most
// frequent token is ~6% of the positions for V = 50257), so the embedding backward meets the long
// runs of one token that real batches have, not the near-distinct tokens of uniform draws.
std::vector<int> zipf_tokens(size_t n, uint64_t seed, int V) {
  std::vector<int> v = random_ints(n, seed, 1 << 30);
  for (int& x : v) {
    const double u = x / double(1 << 30);
    x = std::min(V - 1, static_cast<int>(std::floor(std::pow(double(V), u))) - 1);
  }
  return v;
}

// A device array of element type T holding host floats (rounded to T), and its values as floats.
template <class Elem>
DeviceVec<Elem> upload(const std::vector<float>& host) {
  return DeviceVec<Elem>(to_elem<Elem>(host));
}
template <class Elem>
std::vector<float> download(const DeviceVec<Elem>& d) {
  return to_float<Elem>(d.host());
}

struct Row {
  std::string name, dtype, shape;
  double bytes = 0.0;  // minimum DRAM traffic (memory-bound kernels), 0 otherwise
  double flops = 0.0;  // arithmetic (matmul, attention), 0 otherwise
  double tolerance = 1e-4;
  double rel_error = 0.0;  // validation: ||gpu - cpu|| / ||cpu||
  bool valid = false;
  double ms = 0.0;
};

template <class Elem>
Row mem_row(const std::string& name, const std::string& shape, double bytes) {
  return Row{name, type_name<Elem>(), shape, bytes, 0.0, tolerance<Elem>()};
}
template <class Elem>
Row compute_row(const std::string& name, const std::string& shape, double flops) {
  return Row{name, type_name<Elem>(), shape, 0.0, flops, tolerance<Elem>()};
}

class Bench {
 public:
  Bench(const Options& opt, cudaStream_t stream)
      : opt_(opt), stream_(stream), timer_(stream, opt.warmup, opt.reps, /*flush_l2=*/true) {}

  bool selected(const std::string& name) const {
    return opt_.only.empty() || name.find(opt_.only) != std::string::npos;
  }
  template <class Elem>
  bool dtype_selected() const {
    return std::is_same_v<Elem, bf16> ? opt_.bf16 : opt_.fp32;
  }
  // Validation shape: the benchmark's, or B=1, T=min(T,64) when the CPU reference would be slow.
  int vB() const { return opt_.validate_full ? opt_.B : 1; }
  int vT() const { return opt_.validate_full ? opt_.T : std::min(opt_.T, 64); }

  // Records one kernel: `errors` are the rel. L2 errors of its validated outputs; it is timed
  // only when all are within the row's tolerance.
  void add(Row row, const std::vector<double>& errors, const std::function<void()>& op) {
    row.rel_error = errors.empty() ? 0.0 : *std::max_element(errors.begin(), errors.end());
    row.valid = row.rel_error <= row.tolerance;  // NaN fails: the comparison is false
    if (row.valid) {
      row.ms = timer_.median_ms(op);
    } else {
      std::fprintf(stderr, "VALIDATION FAILED: %s %s: relative error %.3g > %.0e vs cpu::; not timed\n",
                   row.name.c_str(), row.dtype.c_str(), row.rel_error, row.tolerance);
    }
    rows_.push_back(row);
  }
  std::vector<Row>& rows() { return rows_; }
  Timer& timer() { return timer_; }
  cudaStream_t stream() const { return stream_; }
  const Options& opt() const { return opt_; }

 private:
  const Options& opt_;
  cudaStream_t stream_;
  Timer timer_;
  std::vector<Row> rows_;
};

std::string shape_btc(int B, int T, int C) { return format("B={} T={} C={}", B, T, C); }

// ---- the kernels: validate at (vB, vT), then time at (B, T). E = bytes per element of T;
// ---- LayerNorm statistics, losses, attention probabilities and AdamW state are always fp32.

template <class Elem>
void bench_encoder(Bench& b) {
  const auto& o = b.opt();
  const int C = o.C;
  std::vector<double> err;
  {
    const int B = b.vB(), T = b.vT();
    const auto inp = zipf_tokens(size_t(B) * T, 1, o.V);
    const auto wte = rounded<Elem>(random_floats(size_t(o.Vp) * C, 2)),
               wpe = rounded<Elem>(random_floats(size_t(T) * C, 3));
    const auto dout = rounded<Elem>(random_floats(size_t(B) * T * C, 4));
    std::vector<float> out(size_t(B) * T * C), dwte(wte.size(), 0.0f), dwpe(wpe.size(), 0.0f);
    cpu::encoder_forward(out.data(), inp.data(), wte.data(), wpe.data(), B, T, C);
    cpu::encoder_backward(dwte.data(), dwpe.data(), dout.data(), inp.data(), B, T, C);
    DeviceVec<int> d_inp(inp);
    auto d_wte = upload<Elem>(wte), d_wpe = upload<Elem>(wpe), d_dout = upload<Elem>(dout);
    auto d_dwte = upload<Elem>(zeros(wte.size())), d_dwpe = upload<Elem>(zeros(wpe.size()));
    DeviceVec<Elem> d_out(out.size());
    cuda::encoder_forward(d_out.get(), d_inp.get(), d_wte.get(), d_wpe.get(), B, T, C, b.stream());
    cuda::encoder_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_inp.get(), B, T, C, b.stream());
    err = {rel_l2(download(d_out), out), rel_l2(download(d_dwte), dwte), rel_l2(download(d_dwpe), dwpe)};
  }
  const int B = o.B, T = o.T;
  const double BTC = double(B) * T * C, E = sizeof(Elem);
  DeviceVec<int> inp(zipf_tokens(size_t(B) * T, 5, o.V));
  auto wte = upload<Elem>(random_floats(size_t(o.Vp) * C, 6)), wpe = upload<Elem>(random_floats(size_t(T) * C, 7));
  DeviceVec<Elem> out(static_cast<size_t>(BTC)), dwte(size_t(o.Vp) * C), dwpe(size_t(T) * C);
  // bytes (the minimum, as bench_cpu_layers counts it): read the wte rows as if all tokens differ
  // (BTC) and wpe once (T C: its rows repeat across the batch), write out (BTC), the int tokens.
  b.add(mem_row<Elem>("encoder_forward", shape_btc(B, T, C), E * (2 * BTC + double(T) * C) + 4.0 * B * T), {err[0]},
        [&] { cuda::encoder_forward(out.get(), inp.get(), wte.get(), wpe.get(), B, T, C, b.stream()); });
  // bytes (the minimum): read dout once, read+write dwpe and the touched dwte rows (<= BTC), the
  // int tokens. The kernel reads dout twice (a wpe pass, a wte pass) and sorts keys: its overhead,
  // not counted.
  b.add(mem_row<Elem>("encoder_backward", shape_btc(B, T, C), E * (BTC + 2.0 * T * C + 2 * BTC) + 4.0 * B * T),
        {err[1], err[2]},
        [&] { cuda::encoder_backward(dwte.get(), dwpe.get(), out.get(), inp.get(), B, T, C, b.stream()); });
}

template <class Elem>
void bench_layernorm(Bench& b) {
  const auto& o = b.opt();
  const int C = o.C;
  std::vector<double> err;
  {
    const int B = b.vB(), T = b.vT();
    const size_t N = size_t(B) * T * C, R = size_t(B) * T;
    const auto inp = rounded<Elem>(random_floats(N, 11)), inp2 = rounded<Elem>(random_floats(N, 18));
    const auto w = rounded<Elem>(random_floats(C, 12, 0.5f, 1.5f)), bias = rounded<Elem>(random_floats(C, 13));
    const auto dout = rounded<Elem>(random_floats(N, 14));
    std::vector<float> out(N), mean(R), rstd(R), dinp(N, 0.0f), dw(C, 0.0f), db(C, 0.0f);
    cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), bias.data(), B, T, C);
    cpu::layernorm_backward(dinp.data(), dw.data(), db.data(), dout.data(), mean.data(), rstd.data(), inp.data(),
                            w.data(), B, T, C);
    // The fused residual + LayerNorm: residual = inp + inp2, out = LN(residual). The reference
    // normalises the exact fp32 sum; a bf16 kernel may normalise the sum before or after rounding
    // it to bf16, a difference far inside the 1e-2 tolerance.
    std::vector<float> res(N), res_out(N), res_mean(R), res_rstd(R);
    cpu::residual_forward(res.data(), inp.data(), inp2.data(), N);
    cpu::layernorm_forward(res_out.data(), res_mean.data(), res_rstd.data(), res.data(), w.data(), bias.data(), B, T,
                           C);
    auto d_inp = upload<Elem>(inp), d_inp2 = upload<Elem>(inp2), d_w = upload<Elem>(w), d_b = upload<Elem>(bias),
         d_dout = upload<Elem>(dout);
    DeviceVec<Elem> d_out(N), d_res(N), d_res_out(N);
    DeviceVec<float> d_mean(R), d_rstd(R), d_res_mean(R), d_res_rstd(R);
    cuda::layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_inp.get(), d_w.get(), d_b.get(), B, T, C,
                            b.stream());
    // The backward's worst rel. error of dinp, dweight, dbias (from zero) for one design.
    const auto backward_error = [&](cuda::LayerNormBackward design) {
      auto d_dinp = upload<Elem>(zeros(N)), d_dw = upload<Elem>(zeros(C)), d_db = upload<Elem>(zeros(C));
      cuda::layernorm_backward(d_dinp.get(), d_dw.get(), d_db.get(), d_dout.get(), d_mean.get(), d_rstd.get(),
                               d_inp.get(), d_w.get(), B, T, C, b.stream(), design);
      return std::max({rel_l2(download(d_dinp), dinp), rel_l2(download(d_dw), dw), rel_l2(download(d_db), db)});
    };
    cuda::residual_layernorm_forward(d_res.get(), d_res_out.get(), d_res_mean.get(), d_res_rstd.get(), d_inp.get(),
                                     d_inp2.get(), d_w.get(), d_b.get(), B, T, C, b.stream());
    err = {rel_l2(download(d_out), out), backward_error(cuda::LayerNormBackward::kAuto),
           backward_error(cuda::LayerNormBackward::kTwoPass),
           std::max({rel_l2(download(d_res), res), rel_l2(download(d_res_out), res_out),
                     rel_l2(d_res_mean.host(), res_mean), rel_l2(d_res_rstd.host(), res_rstd)})};
  }
  const int B = o.B, T = o.T;
  const size_t N = size_t(B) * T * C, R = size_t(B) * T;
  const double E = sizeof(Elem);
  auto inp = upload<Elem>(random_floats(N, 15)), inp2 = upload<Elem>(random_floats(N, 19)),
       w = upload<Elem>(random_floats(C, 16)), bias = upload<Elem>(random_floats(C, 17));
  DeviceVec<Elem> out(N), dinp(N), dw(C), db(C), res(N);
  DeviceVec<float> mean(R), rstd(R);
  // bytes: read inp, write out (2N elements), write mean and rstd (fp32).
  b.add(mem_row<Elem>("layernorm_forward", shape_btc(B, T, C), E * 2.0 * N + 4.0 * 2.0 * R), {err[0]}, [&] {
    cuda::layernorm_forward(out.get(), mean.get(), rstd.get(), inp.get(), w.get(), bias.get(), B, T, C, b.stream());
  });
  // The backward's two designs (cuda::LayerNormBackward), on the same minimal byte count, so that
  // their GB/s compare as their times do. bytes: read dout and inp, read + write dinp (4N
  // elements), read mean and rstd; the weight and the parameter gradients (C each) are negligible.
  // kAuto takes the fused one-pass kernel at GPT-2 shapes; the two-pass one reads dout, inp twice.
  const double backward_bytes = E * 4.0 * N + 4.0 * 2.0 * R;
  b.add(mem_row<Elem>("layernorm_backward", shape_btc(B, T, C), backward_bytes), {err[1]}, [&] {
    cuda::layernorm_backward(dinp.get(), dw.get(), db.get(), out.get(), mean.get(), rstd.get(), inp.get(), w.get(), B,
                             T, C, b.stream());
  });
  b.add(mem_row<Elem>("layernorm_backward_twopass", shape_btc(B, T, C), backward_bytes), {err[2]}, [&] {
    cuda::layernorm_backward(dinp.get(), dw.get(), db.get(), out.get(), mean.get(), rstd.get(), inp.get(), w.get(), B,
                             T, C, b.stream(), cuda::LayerNormBackward::kTwoPass);
  });
  // bytes: read inp1 and inp2, write residual and out (4N elements), write mean and rstd.
  b.add(mem_row<Elem>("residual_layernorm_forward", shape_btc(B, T, C), E * 4.0 * N + 4.0 * 2.0 * R), {err[3]}, [&] {
    cuda::residual_layernorm_forward(res.get(), out.get(), mean.get(), rstd.get(), inp.get(), inp2.get(), w.get(),
                                     bias.get(), B, T, C, b.stream());
  });
}

// The rows of one linear layer: matmul_forward / matmul_backward with the automatic GEMM designs
// (suffix ""), then, in bf16, with each other design (kernels/matmul.cuh) as rows of their own.
struct GemmDesignRows {
  const char* suffix;
  cuda::GemmDesign design;
  bool forward;          // a forward row too (the backward always)
  bool needs_bias;       // only for layers with a bias
  const char* declined;  // the shape's note when cuBLASLt declined the design's epilogue (or null)
};
const GemmDesignRows kGemmDesignRows[] = {
    {"", {}, true, false, nullptr},  // the automatic designs: the only rows in fp32
    // dbias from the dweight GEMM's BGRADB epilogue
    {"_bgradb", {.bias_gradient = cuda::BiasGradient::kEpilogue}, false, true,
     " (cuBLASLt declined BGRADB: column sums)"},
    // the heuristic promised 16-byte operands (the automatic design tells it each operand's alignment)
    {"_align16", {.alignment = cuda::GemmAlignment::k16}, true, false, nullptr},
    // split-K allowed to add its parts in bf16 (the dweight GEMM, k = B*T)
    {"_splitk_any", {.split_k = cuda::GemmSplitK::kAny}, false, false, nullptr},
    // a 256 MiB workspace offered: more fp32 split-K parts for the dweight GEMM
    {"_ws256", {.workspace = cuda::GemmWorkspace::k256MiB}, false, false, nullptr},
};

template <class Elem>
void bench_matmul(Bench& b, const std::string& which, int C, int OC, bool bias) {
  const auto& o = b.opt();
  // The rows this dtype and layer get: the fp32 launchers have no designs.
  std::vector<GemmDesignRows> rows;
  for (const GemmDesignRows& d : kGemmDesignRows)
    if ((std::is_same_v<Elem, bf16> || *d.suffix == '\0') && (bias || !d.needs_bias)) rows.push_back(d);
  // The launchers at B x T with `design`; pointers as matmul_forward / matmul_backward take them.
  const auto forward = [&](const cuda::GemmDesign& design, int B, int T, auto... pointers) {
    if constexpr (std::is_same_v<Elem, bf16>)
      cuda::matmul_forward(pointers..., B, T, C, OC, b.stream(), design);
    else
      cuda::matmul_forward(pointers..., B, T, C, OC, b.stream());
  };
  const auto backward = [&](const cuda::GemmDesign& design, int B, int T, auto... pointers) {
    if constexpr (std::is_same_v<Elem, bf16>)
      cuda::matmul_backward(pointers..., B, T, C, OC, b.stream(), design);
    else
      cuda::matmul_backward(pointers..., B, T, C, OC, b.stream());
  };
  // Per row set: the forward's error against the CPU, then the backward's (dinp, dweight, dbias).
  std::vector<std::vector<double>> errors;
  // bf16's lm_head also into an fp32 dweight (the model's fp32 sum of wte's gradient over the
  // classifier's chunks, of 8192 rows: B x T here): dinp's and dweight's errors.
  const bool fp32_dweight = std::is_same_v<Elem, bf16> && which == "lm_head";
  std::vector<double> fp32_dweight_errors;
  {
    const int B = b.vB(), T = b.vT();
    const size_t R = size_t(B) * T;
    const auto inp = rounded<Elem>(random_floats(R * C, 21)), w = rounded<Elem>(random_floats(size_t(OC) * C, 22)),
               bs = rounded<Elem>(random_floats(OC, 23)), dout = rounded<Elem>(random_floats(R * OC, 24));
    std::vector<float> out(R * OC), dinp(R * C), dw(w.size(), 0.0f), db(OC, 0.0f);
    cpu::matmul_forward_blocked(out.data(), inp.data(), w.data(), bias ? bs.data() : nullptr, B, T, C, OC);
    cpu::matmul_backward_blocked(dinp.data(), dw.data(), bias ? db.data() : nullptr, dout.data(), inp.data(), w.data(),
                                 B, T, C, OC);
    auto d_inp = upload<Elem>(inp), d_w = upload<Elem>(w), d_b = upload<Elem>(bs), d_dout = upload<Elem>(dout);
    DeviceVec<Elem> d_out(out.size()), d_dinp(dinp.size());
    for (const GemmDesignRows& d : rows) {  // dweight and dbias from zero
      auto d_dw = upload<Elem>(zeros(w.size())), d_db = upload<Elem>(zeros(OC));
      forward(d.design, B, T, d_out.get(), d_inp.get(), d_w.get(), bias ? d_b.get() : nullptr);
      backward(d.design, B, T, d_dinp.get(), d_dw.get(), bias ? d_db.get() : nullptr, d_dout.get(), d_inp.get(),
               d_w.get());
      std::vector<double> e{rel_l2(download(d_out), out), rel_l2(download(d_dinp), dinp), rel_l2(download(d_dw), dw)};
      if (bias) e.push_back(rel_l2(download(d_db), db));
      errors.push_back(std::move(e));
    }
    if constexpr (std::is_same_v<Elem, bf16>) {
      if (fp32_dweight) {
        DeviceVec<float> d_dw32(zeros(w.size()));
        cuda::matmul_backward(d_dinp.get(), d_dw32.get(), nullptr, d_dout.get(), d_inp.get(), d_w.get(), B, T, C, OC,
                              b.stream());
        fp32_dweight_errors = {rel_l2(download(d_dinp), dinp), rel_l2(download(d_dw32), dw)};
      }
    }
  }
  const int B = o.B, T = o.T;
  const size_t R = size_t(B) * T;
  auto inp = upload<Elem>(random_floats(R * C, 25)), w = upload<Elem>(random_floats(size_t(OC) * C, 26)),
       bs = upload<Elem>(random_floats(OC, 27));
  DeviceVec<Elem> out(R * OC), dinp(R * C), dw(size_t(OC) * C), db(OC);
  const std::string shape = format("{} B={} T={} C={} OC={}", which, B, T, C, OC);
  const double flops = 2.0 * R * C * OC;  // one multiply-add per (row, in, out)
  for (size_t i = 0; i < rows.size(); ++i) {
    const GemmDesignRows& d = rows[i];
    const std::vector<double>& e = errors[i];
    if (d.forward)
      b.add(compute_row<Elem>(std::string("matmul_forward") + d.suffix, shape, flops), {e[0]},
            [&] { forward(d.design, B, T, out.get(), inp.get(), w.get(), bias ? bs.get() : nullptr); });
    cuda::reset_matmul_path_counts();
    // the dinp and dweight GEMMs
    b.add(compute_row<Elem>(std::string("matmul_backward") + d.suffix, shape, 2 * flops),
          std::vector<double>(e.begin() + 1, e.end()), [&] {
            backward(d.design, B, T, dinp.get(), dw.get(), bias ? db.get() : nullptr, out.get(), inp.get(), w.get());
          });
    // At the timed shape (the heuristic answers per shape): did cuBLASLt take the epilogue?
    if (d.declined != nullptr && cuda::matmul_path_counts().fallback > 0) b.rows().back().shape += d.declined;
  }
  if constexpr (std::is_same_v<Elem, bf16>) {
    if (fp32_dweight) {  // the same GEMMs, the dweight one reading and writing fp32 (C = D)
      DeviceVec<float> dw32(zeros(size_t(OC) * C));
      cuda::reset_matmul_path_counts();
      b.add(compute_row<Elem>("matmul_backward_fp32_dweight", shape, 2 * flops), fp32_dweight_errors, [&] {
        cuda::matmul_backward(dinp.get(), dw32.get(), nullptr, out.get(), inp.get(), w.get(), B, T, C, OC, b.stream());
      });
      if (cuda::matmul_path_counts().fallback > 0) b.rows().back().shape += " (cuBLASLt declined the fp32 D: plain)";
    }
  }
}

// The MLP's GELU fused into its GEMMs: fc forward (out = gelu(inp W^T + b), pre saved) and the
// fc-projection backward (dinp = (dout W) * gelu'(pre)). CPU reference: matmul then gelu. In bf16
// also with the GELU in its own kernels after the GEMMs (cuda::GeluFusion::kSeparate; rows
// *_separate), on the same FLOP count, so that their TFLOP/s compare as their times do.
template <class Elem>
void bench_matmul_gelu(Bench& b) {
  const auto& o = b.opt();
  const int C = o.C, H = 4 * o.C;
  struct Design {
    const char* suffix;
    cuda::GemmDesign design;
  };
  std::vector<Design> designs{{"", {}}};
  if constexpr (std::is_same_v<Elem, bf16>) designs.push_back({"_separate", {.gelu = cuda::GeluFusion::kSeparate}});
  // The launchers with `design` (the fp32 ones have none); pointers as they take them.
  const auto forward = [&](const cuda::GemmDesign& design, int B, int T, auto... pointers) {
    if constexpr (std::is_same_v<Elem, bf16>)
      cuda::matmul_forward_gelu(pointers..., B, T, C, H, b.stream(), design);
    else
      cuda::matmul_forward_gelu(pointers..., B, T, C, H, b.stream());
  };
  const auto backward = [&](const cuda::GemmDesign& design, int B, int T, auto... pointers) {
    if constexpr (std::is_same_v<Elem, bf16>)
      cuda::matmul_backward_gelu(pointers..., B, T, H, C, b.stream(), design);
    else
      cuda::matmul_backward_gelu(pointers..., B, T, H, C, b.stream());
  };
  std::vector<std::vector<double>> errors;  // per design: forward, then dinp, dweight, dbias
  {
    const int B = b.vB(), T = b.vT();
    const size_t R = size_t(B) * T;
    // forward: (R, C) x (H, C)^T -> (R, H)
    const auto inp = rounded<Elem>(random_floats(R * C, 81)), w = rounded<Elem>(random_floats(size_t(H) * C, 82)),
               bs = rounded<Elem>(random_floats(H, 83));
    std::vector<float> pre(R * H), out(R * H);
    cpu::matmul_forward_blocked(pre.data(), inp.data(), w.data(), bs.data(), B, T, C, H);
    cpu::gelu_forward(out.data(), pre.data(), pre.size());
    // backward of the projection (R, H) x (C, H)^T -> (R, C), its input gelu(pre2)
    const auto pre2 = rounded<Elem>(random_floats(R * H, 84, -3.0f, 3.0f)),
               w2 = rounded<Elem>(random_floats(size_t(C) * H, 85)), dout = rounded<Elem>(random_floats(R * C, 86));
    std::vector<float> act2(R * H), dact(R * H), dinp(R * H), dw(w2.size(), 0.0f), db(C, 0.0f);
    cpu::gelu_forward(act2.data(), pre2.data(), act2.size());
    const auto act2_t = rounded<Elem>(act2);  // the forward stored gelu(pre) as T
    cpu::matmul_backward_blocked(dact.data(), dw.data(), db.data(), dout.data(), act2_t.data(), w2.data(), B, T, H, C);
    cpu::gelu_backward(dinp.data(), dact.data(), pre2.data(), dinp.size());
    auto d_inp = upload<Elem>(inp), d_w = upload<Elem>(w), d_b = upload<Elem>(bs), d_pre2 = upload<Elem>(pre2),
         d_act2 = upload<Elem>(act2_t), d_w2 = upload<Elem>(w2), d_dout = upload<Elem>(dout);
    DeviceVec<Elem> d_pre(pre.size()), d_out(out.size()), d_dinp(dinp.size());
    for (const Design& d : designs) {  // dweight and dbias from zero
      auto d_dw = upload<Elem>(zeros(w2.size())), d_db = upload<Elem>(zeros(C));
      forward(d.design, B, T, d_out.get(), d_pre.get(), d_inp.get(), d_w.get(), d_b.get());
      backward(d.design, B, T, d_dinp.get(), d_dw.get(), d_db.get(), d_dout.get(), d_act2.get(), d_w2.get(),
               d_pre2.get());
      errors.push_back({std::max(rel_l2(download(d_pre), pre), rel_l2(download(d_out), out)),
                        rel_l2(download(d_dinp), dinp), rel_l2(download(d_dw), dw), rel_l2(download(d_db), db)});
    }
  }
  const int B = o.B, T = o.T;
  const size_t R = size_t(B) * T;
  auto inp = upload<Elem>(random_floats(R * C, 87)), w = upload<Elem>(random_floats(size_t(H) * C, 88)),
       bs = upload<Elem>(random_floats(H, 89)), w2 = upload<Elem>(random_floats(size_t(C) * H, 90)),
       dout = upload<Elem>(random_floats(R * C, 91));
  DeviceVec<Elem> pre(R * H), out(R * H), dinp(R * H), dw(size_t(C) * H), db(C);
  const double flops = 2.0 * R * C * H;
  for (size_t i = 0; i < designs.size(); ++i) {
    const Design& d = designs[i];
    const std::vector<double>& e = errors[i];
    b.add(compute_row<Elem>(std::string("matmul_forward_gelu") + d.suffix,
                            format("fc B={} T={} C={} OC={}", B, T, C, H), flops),
          {e[0]}, [&] { forward(d.design, B, T, out.get(), pre.get(), inp.get(), w.get(), bs.get()); });
    b.add(compute_row<Elem>(std::string("matmul_backward_gelu") + d.suffix,
                            format("fcproj B={} T={} C={} OC={}", B, T, H, C), 2 * flops),
          {e[1], e[2], e[3]}, [&] {
            backward(d.design, B, T, dinp.get(), dw.get(), db.get(), dout.get(), out.get(), w2.get(), pre.get());
          });
  }
}

template <class Elem>
void bench_attention(Bench& b) {
  const auto& o = b.opt();
  const int C = o.C, NH = o.NH, HS = C / NH;
  const DropoutParams none{};
  std::vector<double> err;
  {
    const int B = b.vB(), T = b.vT();
    const auto qkv = rounded<Elem>(random_floats(size_t(B) * T * 3 * C, 31)),
               dout = rounded<Elem>(random_floats(size_t(B) * T * C, 32));
    std::vector<float> out(size_t(B) * T * C), att(size_t(B) * NH * T * T), dqkv(qkv.size());
    std::vector<float> blocked_out(out.size()), lse(size_t(B) * NH * T);
    cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH, none);
    cpu::attention_backward(dqkv.data(), dout.data(), att.data(), qkv.data(), B, T, C, NH, none);
    cpu::attention_forward_blocked(blocked_out.data(), lse.data(), qkv.data(), B, T, C, NH, none);
    auto d_qkv = upload<Elem>(qkv), d_dout = upload<Elem>(dout);
    DeviceVec<Elem> d_out(out.size()), d_dqkv(qkv.size());
    DeviceVec<float> d_lse(lse.size());
    cuda::attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, none, b.stream());
    cuda::attention_backward(d_dqkv.get(), d_dout.get(), d_lse.get(), d_qkv.get(), d_out.get(), B, T, C, NH, none,
                             b.stream());
    err = {rel_l2(download(d_out), out), rel_l2(d_lse.host(), lse), rel_l2(download(d_dqkv), dqkv)};
  }
  const int B = o.B, T = o.T;
  auto qkv = upload<Elem>(random_floats(size_t(B) * T * 3 * C, 33)),
       dout = upload<Elem>(random_floats(size_t(B) * T * C, 34));
  DeviceVec<Elem> out(size_t(B) * T * C), dqkv(size_t(B) * T * 3 * C);
  DeviceVec<float> att(size_t(B) * NH * T);  // the saved log-sum-exp
  const std::string shape = format("tiled B={} T={} NH={} HS={}", B, T, NH, HS);
  // Causal: QK^T and PV each do T*T/2 dot products of length HS per head, 2 FLOPs per term.
  const double forward_flops = 2.0 * (2.0 * B * NH * (double(T) * T / 2) * HS);
  b.add(compute_row<Elem>("attention_forward", shape, forward_flops), {err[0], err[1]},
        [&] { cuda::attention_forward(out.get(), att.get(), qkv.get(), B, T, C, NH, none, b.stream()); });
  // Backward: Q K^T again, dout V^T, dS K, dS^T Q, P^T dout: five products of half the forward's
  // FLOPs each (the recomputed scores counted: work the kernels do).
  b.add(compute_row<Elem>("attention_backward", shape, 2.5 * forward_flops), {err[2]}, [&] {
    cuda::attention_backward(dqkv.get(), dout.get(), att.get(), qkv.get(), out.get(), B, T, C, NH, none, b.stream());
  });
}

template <class Elem>
void bench_elementwise(Bench& b) {
  const auto& o = b.opt();
  const DropoutParams dropout{0.1f, 42, 1};
  std::vector<double> err;
  {
    const size_t N = size_t(b.vB()) * b.vT() * 4 * o.C;
    const auto x = rounded<Elem>(random_floats(N, 41, -4.0f, 4.0f)), y = rounded<Elem>(random_floats(N, 42)),
               g = rounded<Elem>(random_floats(N, 43));
    std::vector<float> gelu(N), dgelu(N), sum(N), dx(N, 0.0f), dy(N, 0.0f), drop(N);
    cpu::gelu_forward(gelu.data(), x.data(), N);
    cpu::gelu_backward(dgelu.data(), g.data(), x.data(), N);
    cpu::residual_forward(sum.data(), x.data(), y.data(), N);
    cpu::residual_backward(dx.data(), dy.data(), g.data(), N);
    cpu::dropout_forward(drop.data(), x.data(), dropout, N);
    auto d_x = upload<Elem>(x), d_y = upload<Elem>(y), d_g = upload<Elem>(g), d_dx = upload<Elem>(zeros(N)),
         d_dy = upload<Elem>(zeros(N));
    DeviceVec<Elem> d_gelu(N), d_dgelu(N), d_sum(N), d_drop(N);
    cuda::gelu_forward(d_gelu.get(), d_x.get(), N, b.stream());
    cuda::gelu_backward(d_dgelu.get(), d_g.get(), d_x.get(), N, b.stream());
    cuda::residual_forward(d_sum.get(), d_x.get(), d_y.get(), N, b.stream());
    cuda::residual_backward(d_dx.get(), d_dy.get(), d_g.get(), N, b.stream());
    cuda::dropout_forward(d_drop.get(), d_x.get(), dropout, N, b.stream());
    err = {rel_l2(download(d_gelu), gelu), rel_l2(download(d_dgelu), dgelu), rel_l2(download(d_sum), sum),
           std::max(rel_l2(download(d_dx), dx), rel_l2(download(d_dy), dy)), rel_l2(download(d_drop), drop)};
  }
  const size_t N4 = size_t(o.B) * o.T * 4 * o.C, N = size_t(o.B) * o.T * o.C;
  const double E = sizeof(Elem);
  auto x = upload<Elem>(random_floats(N4, 44)), y = upload<Elem>(random_floats(N4, 45));
  DeviceVec<Elem> z(N4);
  const std::string s4 = format("N={} (B*T*4C)", N4), s1 = format("N={} (B*T*C)", N);
  // elements moved: gelu fwd reads x writes y (2N); bwd reads dout and x, writes dinp (3N);
  // residual fwd reads 2 writes 1 (3N); bwd reads dout and read-writes two grads (5N); dropout
  // reads 1 writes 1 (2N).
  b.add(mem_row<Elem>("gelu_forward", s4, E * 2.0 * N4), {err[0]},
        [&] { cuda::gelu_forward(z.get(), x.get(), N4, b.stream()); });
  b.add(mem_row<Elem>("gelu_backward", s4, E * 3.0 * N4), {err[1]},
        [&] { cuda::gelu_backward(z.get(), y.get(), x.get(), N4, b.stream()); });
  b.add(mem_row<Elem>("residual_forward", s1, E * 3.0 * N), {err[2]},
        [&] { cuda::residual_forward(z.get(), x.get(), y.get(), N, b.stream()); });
  b.add(mem_row<Elem>("residual_backward", s1, E * 5.0 * N), {err[3]},
        [&] { cuda::residual_backward(z.get(), y.get(), x.get(), N, b.stream()); });
  b.add(mem_row<Elem>("dropout_forward", s1, E * 2.0 * N), {err[4]},
        [&] { cuda::dropout_forward(z.get(), x.get(), dropout, N, b.stream()); });
}

template <class Elem>
void bench_crossentropy(Bench& b) {
  const auto& o = b.opt();
  std::vector<double> err;
  {
    const int B = b.vB(), T = b.vT();
    const size_t R = size_t(B) * T;
    const auto logits = rounded<Elem>(random_floats(R * o.Vp, 51, -4.0f, 4.0f));
    const auto targets = random_ints(R, 52, o.V);
    std::vector<float> losses(R), dlogits(logits.size());
    cpu::crossentropy_forward(losses.data(), logits.data(), targets.data(), B, T, o.V, o.Vp);
    cpu::crossentropy_backward(dlogits.data(), 1.0f / R, logits.data(), targets.data(), B, T, o.V, o.Vp);
    auto d_logits = upload<Elem>(logits), d_fused = upload<Elem>(logits), d_streamed = upload<Elem>(logits);
    DeviceVec<float> d_losses(R), d_fused_losses(R), d_streamed_losses(R);
    DeviceVec<Elem> d_dlogits(logits.size());
    DeviceVec<int> d_targets(targets);
    cuda::crossentropy_forward(d_losses.get(), d_logits.get(), d_targets.get(), B, T, o.V, o.Vp, b.stream());
    cuda::crossentropy_backward(d_dlogits.get(), 1.0f / R, d_logits.get(), d_targets.get(), B, T, o.V, o.Vp,
                                b.stream());
    cuda::fused_classifier(d_fused.get(), d_fused_losses.get(), d_targets.get(), 1.0f / R, B, T, o.V, o.Vp, b.stream());
    cuda::fused_classifier(d_streamed.get(), d_streamed_losses.get(), d_targets.get(), 1.0f / R, B, T, o.V, o.Vp,
                           b.stream(), cuda::FusedClassifier::kStreamed);
    err = {rel_l2(d_losses.host(), losses), rel_l2(download(d_dlogits), dlogits),
           std::max(rel_l2(d_fused_losses.host(), losses), rel_l2(download(d_fused), dlogits)),
           std::max(rel_l2(d_streamed_losses.host(), losses), rel_l2(download(d_streamed), dlogits))};
  }
  const int B = o.B, T = o.T;
  const size_t R = size_t(B) * T;
  const double E = sizeof(Elem);
  auto logits = upload<Elem>(random_floats(R * o.Vp, 53, -4.0f, 4.0f));
  DeviceVec<float> losses(R);
  DeviceVec<Elem> dlogits(R * o.Vp);
  DeviceVec<int> targets(random_ints(R, 54, o.V));
  const std::string shape = format("B={} T={} V={} Vp={}", B, T, o.V, o.Vp);
  // bytes: forward reads the logits once (the second pass over a row hits L1/L2); backward reads
  // them and writes dlogits; the fused classifier reads them once and writes them once in place.
  b.add(mem_row<Elem>("crossentropy_forward", shape, E * R * o.Vp), {err[0]},
        [&] { cuda::crossentropy_forward(losses.get(), logits.get(), targets.get(), B, T, o.V, o.Vp, b.stream()); });
  b.add(mem_row<Elem>("crossentropy_backward", shape, 2.0 * E * R * o.Vp), {err[1]}, [&] {
    cuda::crossentropy_backward(dlogits.get(), 1.0f / R, logits.get(), targets.get(), B, T, o.V, o.Vp, b.stream());
  });
  // Repeated in place over its own output: the values stay finite (dlogits are small), and the
  // time of one pass does not depend on them. fused_classifier: the kAuto design (the cached row
  // where it fits); fused_classifier_streamed: the block-per-row kernel that reads each row twice.
  b.add(mem_row<Elem>("fused_classifier", shape, 2.0 * E * R * o.Vp + 4.0 * R), {err[2]}, [&] {
    cuda::fused_classifier(logits.get(), losses.get(), targets.get(), 1.0f / R, B, T, o.V, o.Vp, b.stream());
  });
  b.add(mem_row<Elem>("fused_classifier_streamed", shape, 2.0 * E * R * o.Vp + 4.0 * R), {err[3]}, [&] {
    cuda::fused_classifier(logits.get(), losses.get(), targets.get(), 1.0f / R, B, T, o.V, o.Vp, b.stream(),
                           cuda::FusedClassifier::kStreamed);
  });
}

// GPT-2 124M: 12 layers of 12 C^2 + 13 C, plus Vp*C + maxT*C + 2C.
size_t gpt2_parameters(const Options& o) {
  const size_t C = o.C;
  return 12 * (12 * C * C + 13 * C) + size_t(o.Vp) * C + 1024 * C + 2 * C;
}

AdamWParams bench_hp() {
  AdamWParams hp;
  hp.weight_decay = 0.1f;
  hp.step = 3;
  hp.grad_scale = 0.5f;
  return hp;
}

void bench_adamw_fp32(Bench& b) {
  const auto& o = b.opt();
  const AdamWParams hp = bench_hp();
  std::vector<double> err;
  {
    const size_t N = 1 << 20;
    auto p = random_floats(N, 61), g = random_floats(N, 62), m = random_floats(N, 63, -0.1f, 0.1f),
         v = random_floats(N, 64, 0.0f, 0.01f);
    DeviceVec<float> d_p(p), d_g(g), d_m(m), d_v(v);
    cpu::adamw_update(p.data(), m.data(), v.data(), g.data(), N, hp);
    const double ss = cpu::sum_of_squares(g.data(), N);
    cuda::adamw_update(d_p.get(), d_m.get(), d_v.get(), d_g.get(), N, hp, b.stream());
    const double ss_gpu = cuda::sum_of_squares(d_g.get(), N, b.stream());
    err = {std::max({rel_l2(d_p.host(), p), rel_l2(d_m.host(), m), rel_l2(d_v.host(), v)}),
           std::fabs(ss_gpu - ss) / ss};
  }
  const size_t N = gpt2_parameters(o);
  DeviceVec<float> p(random_floats(N, 65)), g(random_floats(N, 66)), m(zeros(N)), v(zeros(N));
  const std::string shape = format("N={} (GPT-2 124M)", N);
  // bytes: read p, m, v, g; write p, m, v.
  b.add(mem_row<float>("adamw_update", shape, 28.0 * N), {err[0]},
        [&] { cuda::adamw_update(p.get(), m.get(), v.get(), g.get(), N, hp, b.stream()); });
  // bytes: read x once. (Includes the device-to-host copy of the result and a stream sync.)
  b.add(mem_row<float>("sum_of_squares", shape, 4.0 * N), {err[1]},
        [&] { cuda::sum_of_squares(g.get(), N, b.stream()); });
}

// Mixed precision: fp32 master weights and moments, bf16 gradients in, bf16 parameter copy out.
void bench_adamw_bf16(Bench& b) {
  const auto& o = b.opt();
  const AdamWParams hp = bench_hp();
  std::vector<double> err;
  {
    const size_t N = 1 << 20;
    auto master = random_floats(N, 161), m = random_floats(N, 163, -0.1f, 0.1f), v = random_floats(N, 164, 0.0f, 0.01f);
    const auto g = rounded<bf16>(random_floats(N, 162));
    DeviceVec<float> d_master(master), d_m(m), d_v(v);
    auto d_g = upload<bf16>(g);
    DeviceVec<bf16> d_params(N);
    cpu::adamw_update(master.data(), m.data(), v.data(), g.data(), N, hp);
    const double ss = cpu::sum_of_squares(g.data(), N);
    cuda::adamw_update(d_master.get(), d_params.get(), d_m.get(), d_v.get(), d_g.get(), N, hp, b.stream());
    const double ss_gpu = cuda::sum_of_squares(d_g.get(), N, b.stream());
    err = {std::max({rel_l2(d_master.host(), master), rel_l2(d_m.host(), m), rel_l2(d_v.host(), v),
                     rel_l2(download(d_params), rounded<bf16>(master))}),
           std::fabs(ss_gpu - ss) / ss};
  }
  const size_t N = gpt2_parameters(o);
  DeviceVec<float> master(random_floats(N, 165)), m(zeros(N)), v(zeros(N));
  auto g = upload<bf16>(random_floats(N, 166));
  DeviceVec<bf16> params(N);
  const std::string shape = format("N={} (GPT-2 124M)", N);
  // bytes: read+write master, m, v (fp32: 24 N), read bf16 grads, write bf16 params (4 N).
  b.add(mem_row<bf16>("adamw_update", shape, 28.0 * N), {err[0]},
        [&] { cuda::adamw_update(master.get(), params.get(), m.get(), v.get(), g.get(), N, hp, b.stream()); });
  b.add(mem_row<bf16>("sum_of_squares", shape, 2.0 * N), {err[1]},
        [&] { cuda::sum_of_squares(g.get(), N, b.stream()); });
}

// fp32 <-> bf16 conversions (the bf16 parameter copy, reading bf16 tensors back in fp32).
void bench_convert(Bench& b) {
  const auto& o = b.opt();
  std::vector<double> err;
  {
    const size_t N = (1 << 20) + 3;  // odd: the scalar tail
    const auto x = random_floats(N, 171, -100.0f, 100.0f);
    DeviceVec<float> d_x(x), d_back(N);
    DeviceVec<bf16> d_h(N);
    cuda::convert(d_h.get(), d_x.get(), N, b.stream());
    cuda::widen(d_back.get(), d_h.get(), N, b.stream());
    const auto ref = rounded<bf16>(x);
    err = {rel_l2(download(d_h), ref), rel_l2(d_back.host(), ref)};
  }
  const size_t N = gpt2_parameters(o);
  DeviceVec<float> x(random_floats(N, 172)), y(N);
  DeviceVec<bf16> h(N);
  const std::string shape = format("N={} (GPT-2 124M)", N);
  // bytes: 4 read + 2 written per element (convert), 2 read + 4 written (widen).
  b.add(mem_row<bf16>("convert", shape, 6.0 * N), {err[0]}, [&] { cuda::convert(h.get(), x.get(), N, b.stream()); });
  b.add(mem_row<bf16>("widen", shape, 6.0 * N), {err[1]}, [&] { cuda::widen(y.get(), h.get(), N, b.stream()); });
}

template <class Elem>
void bench_dtype(Bench& b) {
  const auto& o = b.opt();
  if (!b.dtype_selected<Elem>()) return;
  if (b.selected("encoder")) bench_encoder<Elem>(b);
  if (b.selected("layernorm")) bench_layernorm<Elem>(b);
  if (b.selected("matmul")) {
    bench_matmul<Elem>(b, "qkv", o.C, 3 * o.C, true);
    bench_matmul<Elem>(b, "attproj", o.C, o.C, true);
    bench_matmul<Elem>(b, "fc", o.C, 4 * o.C, true);
    bench_matmul<Elem>(b, "fcproj", 4 * o.C, o.C, true);
    bench_matmul<Elem>(b, "lm_head", o.C, o.Vp, false);
    bench_matmul_gelu<Elem>(b);
  }
  if (b.selected("attention")) bench_attention<Elem>(b);
  if (b.selected("gelu") || b.selected("residual") || b.selected("dropout")) bench_elementwise<Elem>(b);
  if (b.selected("crossentropy") || b.selected("classifier")) bench_crossentropy<Elem>(b);
  if (b.selected("adamw") || b.selected("sum_of_squares")) {
    if constexpr (std::is_same_v<Elem, bf16>) {
      bench_adamw_bf16(b);
    } else {
      bench_adamw_fp32(b);
    }
  }
  if constexpr (std::is_same_v<Elem, bf16>) {
    if (b.selected("convert") || b.selected("widen")) bench_convert(b);
  }
}

// The ceilings measured in this run: device-to-device copy bandwidth (bytes read + written per
// second) over 1 GiB, and the cuBLAS sgemm rate (TF32 off) at M = N = K = 4096 (2*M*N*K FLOPs).
struct Ceilings {
  double copy_gbps = 0.0, sgemm_tflops = 0.0;
};

Ceilings measure_ceilings(Bench& b) {
  Ceilings c;
  const size_t bytes = size_t(1) << 30;
  DeviceVec<char> src(bytes), dst(bytes);
  CUDA_CHECK(cudaMemset(src.get(), 1, bytes));
  CUDA_CHECK(cudaDeviceSynchronize());
  const double copy_ms = b.timer().median_ms(
      [&] { CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, b.stream())); });
  c.copy_gbps = 2.0 * bytes / (copy_ms * 1e-3) / 1e9;
  const int n = 4096;
  DeviceVec<float> A(random_floats(size_t(n) * n, 71)), B(random_floats(size_t(n) * n, 72)), Cm(size_t(n) * n);
  const float one = 1.0f, zero = 0.0f;
  const double gemm_ms = b.timer().median_ms([&] {
    CUBLAS_CHECK(cublasSgemm(cuda::cublas_handle(b.stream()), CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, A.get(), n,
                             B.get(), n, &zero, Cm.get(), n));
  });
  c.sgemm_tflops = 2.0 * n * n * double(n) / (gemm_ms * 1e-3) / 1e12;
  return c;
}

// A row's rate and its roofline: memory-bound rows against the measured copy bandwidth, compute
// rows against the datasheet peak for their dtype (nullopt when peaks.json has none).
struct Roofline {
  double rate = 0.0;  // GB/s or TFLOP/s
  std::optional<double> fraction;
  std::string ceiling;
};

Roofline roofline(const Row& r, const Ceilings& c, const DevicePeaks& peaks) {
  Roofline f;
  if (r.flops > 0) {
    f.rate = r.flops / (r.ms * 1e-3) / 1e12;
    const bool is_bf16 = r.dtype == "bf16";
    const std::optional<double> peak = matmul_peak_tflops(peaks, is_bf16 ? DType::bf16 : DType::fp32);
    f.ceiling = is_bf16 ? "bf16 dense tensor peak" : "fp32 non-tensor peak";
    if (peak) {
      f.fraction = f.rate / *peak;
      f.ceiling = format("{} {} TF/s ({})", f.ceiling, *peak, peaks.name);
    } else {
      f.ceiling += " unknown (peaks.json)";
    }
  } else {
    f.rate = r.bytes / (r.ms * 1e-3) / 1e9;
    f.fraction = f.rate / c.copy_gbps;
    f.ceiling = format("measured D2D copy {} GB/s", std::round(c.copy_gbps));
  }
  return f;
}

Options parse(int argc, char** argv) {
  cxxopts::Options cli("bench_kernels", "Validate every CUDA kernel against the CPU reference, then time it");
  Options o;
  std::string dtype;
  cli.add_options()("b,batch-size", "batch size B", cxxopts::value(o.B)->default_value("8"))(
      "t,seq-len", "sequence length T", cxxopts::value(o.T)->default_value("1024"))(
      "reps", "timed repetitions per kernel (median reported)", cxxopts::value(o.reps)->default_value("50"))(
      "warmup", "untimed runs before timing", cxxopts::value(o.warmup)->default_value("5"))(
      "dtype", "kernels to run: all, fp32 or bf16", cxxopts::value(dtype)->default_value("all"))(
      "only", "run only kernels whose name contains this", cxxopts::value(o.only)->default_value(""))(
      "validate-full", "validate at the benchmark shape instead of B=1, T<=64 (slow: the CPU runs it)")(
      "peaks", "GPU peak table file (default: the one built in, from benchmarks/gpu/peaks.json)",
      cxxopts::value(o.peaks_path))(
      "json", "also write the results as JSON to this file", cxxopts::value(o.json_path)->default_value(""))(
      "h,help", "show this help");
  const auto args = parse_flags(cli, argc, argv);
  if (args.count("help")) {
    std::cout << cli.help() << "\n";
    std::exit(0);
  }
  INPUT_CHECK(args.unmatched().empty(), "unexpected argument '{}' (see --help)", args.unmatched().front());
  o.validate_full = switch_on(args, "validate-full");
  if (!o.json_path.empty()) bench::check_output_file("--json", o.json_path);  // before the GPU runs
  INPUT_CHECK(dtype == "all" || dtype == "fp32" || dtype == "bf16", "--dtype must be all, fp32 or bf16, got '{}'",
              dtype);
  o.fp32 = dtype != "bf16";
  o.bf16 = dtype != "fp32";
  INPUT_CHECK(o.B >= 1, "--batch-size must be >= 1, got {}", o.B);
  INPUT_CHECK(o.T >= 1 && o.T <= 1024, "--seq-len must be in [1, 1024] (GPT-2's context), got {}", o.T);
  INPUT_CHECK(o.reps >= 1, "--reps must be >= 1, got {}", o.reps);
  INPUT_CHECK(o.warmup >= 0, "--warmup must be >= 0, got {}", o.warmup);
  return o;
}

void write_json(const std::string& path, const cudaDeviceProp& props, const Options& o, const Ceilings& c,
                const DevicePeaks& peaks, const std::vector<Row>& rows) {
  auto opt = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
  nlohmann::json j;
  j["benchmark"] = "gpt2cc_kernels";
  j["device"] = props.name;
  j["B"] = o.B;
  j["T"] = o.T;
  j["reps"] = o.reps;
  j["copy_bandwidth_gbps"] = c.copy_gbps;
  j["sgemm_tflops"] = c.sgemm_tflops;
  j["peaks_entry"] = peaks.matched ? nlohmann::json(peaks.name) : nlohmann::json(nullptr);
  j["peak_bf16_dense_tflops"] = opt(peaks.bf16_dense_tflops);
  j["peak_fp32_tflops"] = opt(peaks.fp32_tflops);
  j["datasheet_memory_gbps"] = opt(peaks.hbm_gbps);
  j["kernels"] = nlohmann::json::array();
  for (const Row& r : rows) {
    nlohmann::json k{{"kernel", r.name},         {"dtype", r.dtype}, {"shape", r.shape},
                     {"tolerance", r.tolerance}, {"valid", r.valid}, {"rel_error", r.rel_error}};
    if (r.valid) {
      const Roofline f = roofline(r, c, peaks);
      k["ms"] = r.ms;
      k[r.flops > 0 ? "tflops" : "gbps"] = f.rate;
      k["roofline_fraction"] = opt(f.fraction);
      k["roofline_ceiling"] = f.ceiling;
      if (r.flops > 0 && r.dtype == "fp32") k["of_measured_sgemm"] = f.rate / c.sgemm_tflops;
    }
    j["kernels"].push_back(k);
  }
  write_file_atomic(path, j.dump(2) + "\n");
}

int bench_main(int argc, char** argv) {
  Options o = parse(argc, argv);
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::fprintf(stderr, "bench_kernels: no CUDA device present (%s); this benchmark needs a GPU\n",
                 err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    return 1;
  }
  cudaDeviceProp props{};
  CUDA_CHECK(cudaGetDeviceProperties(&props, 0));
  // bf16 kernels need bf16 tensor cores (cuBLASLt's bf16 GEMMs): sm_80 or newer.
  if (props.major < 8 && o.bf16) {
    INPUT_CHECK(o.fp32, "--dtype bf16 needs a GPU of compute capability 8.0 or newer; {} is sm_{}{}", props.name,
                props.major, props.minor);
    std::printf("%s is sm_%d%d: the bf16 kernels need sm_80 or newer, so only the fp32 ones run\n", props.name,
                props.major, props.minor);
    o.bf16 = false;
  }
  const DevicePeaks peaks = lookup_device_peaks(props.name, o.peaks_path);  // empty: the built-in table
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  Bench bench(o, stream);
  const Ceilings ceilings = measure_ceilings(bench);
  std::printf("%s: device-to-device copy %.0f GB/s, cuBLAS sgemm (fp32, TF32 off) %.1f TFLOP/s (measured)\n",
              props.name, ceilings.copy_gbps, ceilings.sgemm_tflops);
  if (peaks.matched) {
    auto text = [](const std::optional<double>& v) { return v ? format("{}", *v) : std::string("n/a"); };
    std::printf("peaks.json '%s': bf16 dense %s TFLOP/s, fp32 %s TFLOP/s, memory %s GB/s (datasheet)\n",
                peaks.name.c_str(), text(peaks.bf16_dense_tflops).c_str(), text(peaks.fp32_tflops).c_str(),
                text(peaks.hbm_gbps).c_str());
  } else {
    std::printf("%s is not in peaks.json: compute rooflines are n/a\n", props.name);
  }
  std::printf(
      "validation at B=%d T=%d vs cpu:: (rel. L2 <= 1e-4 fp32, <= 1e-2 bf16 on bf16-rounded inputs); "
      "timing at B=%d T=%d, median of %d\n\n",
      bench.vB(), bench.vT(), o.B, o.T, o.reps);

  bench_dtype<float>(bench);
  bench_dtype<bf16>(bench);

  bool all_valid = true;
  std::printf("%-26s %-5s %-36s %9s %9s %12s %9s  %s\n", "kernel", "dtype", "shape", "rel.err", "ms", "rate",
              "roofline", "ceiling");
  for (const Row& r : bench.rows()) {
    all_valid = all_valid && r.valid;
    if (!r.valid) {
      std::printf("%-26s %-5s %-36s %9.2e %9s\n", r.name.c_str(), r.dtype.c_str(), r.shape.c_str(), r.rel_error,
                  "INVALID");
      continue;
    }
    const Roofline f = roofline(r, ceilings, peaks);
    const std::string fraction = f.fraction ? format("{}%", std::round(*f.fraction * 1000) / 10) : "n/a";
    std::printf("%-26s %-5s %-36s %9.2e %9.4f %7.1f %-4s %9s  %s\n", r.name.c_str(), r.dtype.c_str(), r.shape.c_str(),
                r.rel_error, r.ms, f.rate, r.flops > 0 ? "TF/s" : "GB/s", fraction.c_str(), f.ceiling.c_str());
  }
  if (!o.json_path.empty()) write_json(o.json_path, props, o, ceilings, peaks, bench.rows());
  CUDA_CHECK(cudaStreamDestroy(stream));
  return all_valid ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return run_cli("bench_kernels", argc, argv, bench_main); }
