// CUDA kernel benchmark: every cuda:: layer of kernels/ is first validated against its cpu::
// reference (at a reduced batch for the CPU's sake unless --validate-full), then timed at
// GPT-2 124M shapes (default B=8, T=1024): warm-up, CUDA events around each repetition, the L2
// cache flushed before each one, the median reported with GB/s (memory-bound kernels) or
// TFLOP/s (matmul, attention) and the fraction of the ceiling measured on this GPU in the same
// run: device-to-device cudaMemcpy bandwidth, and the cuBLAS fp32 sgemm rate (TF32 off).
//   bench_kernels [--batch-size 8] [--seq-len 1024] [--reps 50] [--only matmul] [--json results.json]
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <cxxopts.hpp>

#include "core/check.hpp"
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
#include "kernels/crossentropy.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/dropout.cuh"
#include "kernels/encoder.cuh"
#include "kernels/gelu.cuh"
#include "kernels/layernorm.cuh"
#include "kernels/matmul.cuh"
#include "kernels/residual.cuh"

using namespace gpt2cc;

namespace {

struct Options {
  int B = 8, T = 1024, C = 768, NH = 12, V = 50257, Vp = 50304;
  int reps = 50, warmup = 5;
  bool validate_full = false;
  std::string only, json_path;
};

// Uniform floats in [lo, hi) from a 64-bit LCG: fast enough for the 400M-element logits.
std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(n);
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (float& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = lo + (hi - lo) * static_cast<float>(s >> 40) * (1.0f / 16777216.0f);
  }
  return v;
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

template <class T>
class DeviceVec {
 public:
  explicit DeviceVec(size_t n) : n_(n) { CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T))); }
  // cudaMemcpy from pageable memory may return before its DMA lands, and the legacy default
  // stream does not order against the benchmark's non-blocking stream: synchronise the device.
  explicit DeviceVec(const std::vector<T>& host) : DeviceVec(host.size()) {
    CUDA_CHECK(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  DeviceVec(const DeviceVec&) = delete;
  DeviceVec& operator=(const DeviceVec&) = delete;
  ~DeviceVec() { cudaFree(p_); }
  T* get() { return p_; }
  std::vector<T> host() const {
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> h(n_);
    CUDA_CHECK(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

double rel_l2(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(got[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  if (!std::isfinite(num)) return INFINITY;
  return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Times `op` on `stream`: warm-up runs, then per repetition an L2 flush (a memset over twice the
// L2 size, outside the timed interval) and CUDA events around the op. Returns the median in ms.
class Timer {
 public:
  Timer(cudaStream_t stream, const Options& opt) : stream_(stream), opt_(opt) {
    int device = 0, l2 = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    flush_bytes_ = std::max<size_t>(2 * static_cast<size_t>(l2), 64 << 20);
    CUDA_CHECK(cudaMalloc(&flush_, flush_bytes_));
    CUDA_CHECK(cudaEventCreate(&start_));
    CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~Timer() {
    cudaFree(flush_);
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  double median_ms(const std::function<void()>& op) {
    for (int i = 0; i < opt_.warmup; ++i) op();
    std::vector<double> ms;
    for (int i = 0; i < opt_.reps; ++i) {
      CUDA_CHECK(cudaMemsetAsync(flush_, i & 0xff, flush_bytes_, stream_));
      CUDA_CHECK(cudaEventRecord(start_, stream_));
      op();
      CUDA_CHECK(cudaEventRecord(stop_, stream_));
      CUDA_CHECK(cudaEventSynchronize(stop_));
      float elapsed = 0.0f;
      CUDA_CHECK(cudaEventElapsedTime(&elapsed, start_, stop_));
      ms.push_back(elapsed);
    }
    std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
    return ms[ms.size() / 2];
  }

 private:
  cudaStream_t stream_;
  const Options& opt_;
  void* flush_ = nullptr;
  size_t flush_bytes_ = 0;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

struct Row {
  std::string name, shape;
  double rel_error = 0.0;  // validation: ||gpu - cpu|| / ||cpu||
  bool valid = false;
  double ms = 0.0;
  double bytes = 0.0;  // minimum DRAM traffic (memory-bound kernels), 0 otherwise
  double flops = 0.0;  // arithmetic (matmul, attention), 0 otherwise
};

class Bench {
 public:
  Bench(const Options& opt, cudaStream_t stream) : opt_(opt), stream_(stream), timer_(stream, opt) {}

  bool selected(const std::string& name) const {
    return opt_.only.empty() || name.find(opt_.only) != std::string::npos;
  }
  // Validation shape: the benchmark's, or B=1, T=min(T,64) when the CPU reference would be slow.
  int vB() const { return opt_.validate_full ? opt_.B : 1; }
  int vT() const { return opt_.validate_full ? opt_.T : std::min(opt_.T, 64); }

  // Records one kernel: `errors` are the rel. L2 errors of its validated outputs.
  void add(Row row, const std::vector<double>& errors, const std::function<void()>& op) {
    row.rel_error = errors.empty() ? 0.0 : *std::max_element(errors.begin(), errors.end());
    row.valid = row.rel_error <= kTolerance;
    if (row.valid) {
      row.ms = timer_.median_ms(op);
    } else {
      std::fprintf(stderr, "VALIDATION FAILED: %s: relative error %.3g > %.1g vs cpu::; not timed\n",
                   row.name.c_str(), row.rel_error, kTolerance);
    }
    rows_.push_back(row);
  }
  std::vector<Row>& rows() { return rows_; }
  Timer& timer() { return timer_; }
  cudaStream_t stream() const { return stream_; }
  const Options& opt() const { return opt_; }

  static constexpr double kTolerance = 1e-4;

 private:
  const Options& opt_;
  cudaStream_t stream_;
  Timer timer_;
  std::vector<Row> rows_;
};

std::string shape_btc(int B, int T, int C) { return format("B={} T={} C={}", B, T, C); }

// ---- the kernels: validate at (vB, vT), then time at (B, T) ----

void bench_encoder(Bench& b) {
  const auto& o = b.opt();
  const int C = o.C;
  std::vector<double> err;
  {
    const int B = b.vB(), T = b.vT();
    const auto inp = random_ints(size_t(B) * T, 1, o.V);
    const auto wte = random_floats(size_t(o.Vp) * C, 2), wpe = random_floats(size_t(T) * C, 3);
    const auto dout = random_floats(size_t(B) * T * C, 4);
    std::vector<float> out(size_t(B) * T * C), dwte(wte.size(), 0.0f), dwpe(wpe.size(), 0.0f);
    cpu::encoder_forward(out.data(), inp.data(), wte.data(), wpe.data(), B, T, C);
    cpu::encoder_backward(dwte.data(), dwpe.data(), dout.data(), inp.data(), B, T, C);
    DeviceVec<int> d_inp(inp);
    DeviceVec<float> d_wte(wte), d_wpe(wpe), d_out(out.size()), d_dout(dout), d_dwte(zeros(wte.size())),
        d_dwpe(zeros(wpe.size()));
    cuda::encoder_forward(d_out.get(), d_inp.get(), d_wte.get(), d_wpe.get(), B, T, C, b.stream());
    cuda::encoder_backward(d_dwte.get(), d_dwpe.get(), d_dout.get(), d_inp.get(), B, T, C, b.stream());
    err = {rel_l2(d_out.host(), out), rel_l2(d_dwte.host(), dwte), rel_l2(d_dwpe.host(), dwpe)};
  }
  const int B = o.B, T = o.T;
  const double BTC = double(B) * T * C;
  DeviceVec<int> inp(random_ints(size_t(B) * T, 5, o.V));
  DeviceVec<float> wte(random_floats(size_t(o.Vp) * C, 6)), wpe(random_floats(size_t(T) * C, 7)), out(static_cast<size_t>(BTC)),
      dwte(size_t(o.Vp) * C), dwpe(size_t(T) * C);
  // bytes: read wte rows + wpe rows, write out (3 BTC floats) + the tokens.
  b.add({"encoder_forward", shape_btc(B, T, C), 0, false, 0, 4 * (3 * BTC + B * T), 0}, {err[0]},
        [&] { cuda::encoder_forward(out.get(), inp.get(), wte.get(), wpe.get(), B, T, C, b.stream()); });
  // bytes: read dout twice (wpe pass, wte pass), read+write dwpe and the touched dwte rows (<= BTC).
  b.add({"encoder_backward", shape_btc(B, T, C), 0, false, 0, 4 * (2 * BTC + 2.0 * T * C + 2 * BTC), 0},
        {err[1], err[2]},
        [&] { cuda::encoder_backward(dwte.get(), dwpe.get(), out.get(), inp.get(), B, T, C, b.stream()); });
}

void bench_layernorm(Bench& b) {
  const auto& o = b.opt();
  const int C = o.C;
  std::vector<double> err;
  {
    const int B = b.vB(), T = b.vT();
    const size_t N = size_t(B) * T * C, R = size_t(B) * T;
    const auto inp = random_floats(N, 11), w = random_floats(C, 12, 0.5f, 1.5f), bias = random_floats(C, 13);
    const auto dout = random_floats(N, 14);
    std::vector<float> out(N), mean(R), rstd(R), dinp(N, 0.0f), dw(C, 0.0f), db(C, 0.0f);
    cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), bias.data(), B, T, C);
    cpu::layernorm_backward(dinp.data(), dw.data(), db.data(), dout.data(), mean.data(), rstd.data(), inp.data(),
                            w.data(), B, T, C);
    DeviceVec<float> d_inp(inp), d_w(w), d_b(bias), d_out(N), d_mean(R), d_rstd(R), d_dout(dout),
        d_dinp(zeros(N)), d_dw(zeros(C)), d_db(zeros(C));
    cuda::layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_inp.get(), d_w.get(), d_b.get(), B, T, C,
                            b.stream());
    cuda::layernorm_backward(d_dinp.get(), d_dw.get(), d_db.get(), d_dout.get(), d_mean.get(), d_rstd.get(),
                             d_inp.get(), d_w.get(), B, T, C, b.stream());
    err = {rel_l2(d_out.host(), out), rel_l2(d_dinp.host(), dinp), rel_l2(d_dw.host(), dw), rel_l2(d_db.host(), db)};
  }
  const int B = o.B, T = o.T;
  const size_t N = size_t(B) * T * C, R = size_t(B) * T;
  DeviceVec<float> inp(random_floats(N, 15)), w(random_floats(C, 16)), bias(random_floats(C, 17)), out(N), mean(R),
      rstd(R), dinp(N), dw(C), db(C);
  // bytes: read inp, write out, write mean and rstd.
  b.add({"layernorm_forward", shape_btc(B, T, C), 0, false, 0, 4.0 * (2.0 * N + 2.0 * R), 0}, {err[0]}, [&] {
    cuda::layernorm_forward(out.get(), mean.get(), rstd.get(), inp.get(), w.get(), bias.get(), B, T, C, b.stream());
  });
  // bytes: read dout and inp twice (dinp pass, parameter pass), read+write dinp, read mean/rstd.
  b.add({"layernorm_backward", shape_btc(B, T, C), 0, false, 0, 4.0 * (6.0 * N + 4.0 * R), 0},
        {err[1], err[2], err[3]}, [&] {
          cuda::layernorm_backward(dinp.get(), dw.get(), db.get(), out.get(), mean.get(), rstd.get(), inp.get(),
                                   w.get(), B, T, C, b.stream());
        });
}

void bench_matmul(Bench& b, const std::string& which, int C, int OC, bool bias) {
  const auto& o = b.opt();
  std::vector<double> err;
  {
    const int B = b.vB(), T = b.vT();
    const size_t R = size_t(B) * T;
    const auto inp = random_floats(R * C, 21), w = random_floats(size_t(OC) * C, 22), bs = random_floats(OC, 23);
    const auto dout = random_floats(R * OC, 24);
    std::vector<float> out(R * OC), dinp(R * C), dw(w.size(), 0.0f), db(OC, 0.0f);
    cpu::matmul_forward(out.data(), inp.data(), w.data(), bias ? bs.data() : nullptr, B, T, C, OC);
    cpu::matmul_backward(dinp.data(), dw.data(), bias ? db.data() : nullptr, dout.data(), inp.data(), w.data(), B, T,
                         C, OC);
    DeviceVec<float> d_inp(inp), d_w(w), d_b(bs), d_out(out.size()), d_dout(dout), d_dinp(dinp.size()),
        d_dw(zeros(w.size())), d_db(zeros(OC));
    cuda::matmul_forward(d_out.get(), d_inp.get(), d_w.get(), bias ? d_b.get() : nullptr, B, T, C, OC, b.stream());
    cuda::matmul_backward(d_dinp.get(), d_dw.get(), bias ? d_db.get() : nullptr, d_dout.get(), d_inp.get(), d_w.get(),
                          B, T, C, OC, b.stream());
    err = {rel_l2(d_out.host(), out), rel_l2(d_dinp.host(), dinp), rel_l2(d_dw.host(), dw)};
    if (bias) err.push_back(rel_l2(d_db.host(), db));
  }
  const int B = o.B, T = o.T;
  const size_t R = size_t(B) * T;
  DeviceVec<float> inp(random_floats(R * C, 25)), w(random_floats(size_t(OC) * C, 26)), bs(random_floats(OC, 27)),
      out(R * OC), dinp(R * C), dw(size_t(OC) * C), db(OC);
  const std::string shape = format("{} B={} T={} C={} OC={}", which, B, T, C, OC);
  const double flops = 2.0 * R * C * OC;  // one multiply-add per (row, in, out)
  b.add({"matmul_forward", shape, 0, false, 0, 0, flops}, {err[0]}, [&] {
    cuda::matmul_forward(out.get(), inp.get(), w.get(), bias ? bs.get() : nullptr, B, T, C, OC, b.stream());
  });
  std::vector<double> backward_err(err.begin() + 1, err.end());
  b.add({"matmul_backward", shape, 0, false, 0, 0, 2 * flops}, backward_err, [&] {  // dinp and dweight GEMMs
    cuda::matmul_backward(dinp.get(), dw.get(), bias ? db.get() : nullptr, out.get(), inp.get(), w.get(), B, T, C, OC,
                          b.stream());
  });
}

void bench_attention(Bench& b) {
  const auto& o = b.opt();
  const int C = o.C, NH = o.NH, HS = C / NH;
  const DropoutParams none{};
  std::vector<double> err;
  {
    const int B = b.vB(), T = b.vT();
    const auto qkv = random_floats(size_t(B) * T * 3 * C, 31), dout = random_floats(size_t(B) * T * C, 32);
    std::vector<float> out(size_t(B) * T * C), att(size_t(B) * NH * T * T), dqkv(qkv.size());
    cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH, none);
    cpu::attention_backward(dqkv.data(), dout.data(), att.data(), qkv.data(), B, T, C, NH, none);
    DeviceVec<float> d_qkv(qkv), d_out(out.size()), d_att(att.size()), d_dout(dout), d_dqkv(qkv.size());
    cuda::attention_forward(d_out.get(), d_att.get(), d_qkv.get(), B, T, C, NH, none, b.stream());
    cuda::attention_backward(d_dqkv.get(), d_dout.get(), d_att.get(), d_qkv.get(), B, T, C, NH, none, b.stream());
    err = {rel_l2(d_out.host(), out), rel_l2(d_att.host(), att), rel_l2(d_dqkv.host(), dqkv)};
  }
  const int B = o.B, T = o.T;
  DeviceVec<float> qkv(random_floats(size_t(B) * T * 3 * C, 33)), out(size_t(B) * T * C),
      att(size_t(B) * NH * T * T), dqkv(size_t(B) * T * 3 * C);
  const std::string shape = format("B={} T={} NH={} HS={}", B, T, NH, HS);
  // Causal: QK^T and PV each do T*T/2 dot products of length HS per head, 2 FLOPs per term.
  const double forward_flops = 2.0 * (2.0 * B * NH * (double(T) * T / 2) * HS);
  b.add({"attention_forward", shape, 0, false, 0, 0, forward_flops}, {err[0], err[1]},
        [&] { cuda::attention_forward(out.get(), att.get(), qkv.get(), B, T, C, NH, none, b.stream()); });
  // Backward: dout V^T, dS K, dS^T Q, P^T dout: four products of the forward's size.
  b.add({"attention_backward", shape, 0, false, 0, 0, 2 * forward_flops}, {err[2]}, [&] {
    cuda::attention_backward(dqkv.get(), out.get(), att.get(), qkv.get(), B, T, C, NH, none, b.stream());
  });
}

void bench_elementwise(Bench& b) {
  const auto& o = b.opt();
  const DropoutParams dropout{0.1f, 42, 1};
  std::vector<double> err;
  {
    const size_t N = size_t(b.vB()) * b.vT() * 4 * o.C;
    const auto x = random_floats(N, 41, -4.0f, 4.0f), y = random_floats(N, 42), g = random_floats(N, 43);
    std::vector<float> gelu(N), dgelu(N), sum(N), dx(N, 0.0f), dy(N, 0.0f), drop(N);
    cpu::gelu_forward(gelu.data(), x.data(), N);
    cpu::gelu_backward(dgelu.data(), g.data(), x.data(), N);
    cpu::residual_forward(sum.data(), x.data(), y.data(), N);
    cpu::residual_backward(dx.data(), dy.data(), g.data(), N);
    cpu::dropout_forward(drop.data(), x.data(), dropout, N);
    DeviceVec<float> d_x(x), d_y(y), d_g(g), d_gelu(N), d_dgelu(N), d_sum(N), d_dx(zeros(N)),
        d_dy(zeros(N)), d_drop(N);
    cuda::gelu_forward(d_gelu.get(), d_x.get(), N, b.stream());
    cuda::gelu_backward(d_dgelu.get(), d_g.get(), d_x.get(), N, b.stream());
    cuda::residual_forward(d_sum.get(), d_x.get(), d_y.get(), N, b.stream());
    cuda::residual_backward(d_dx.get(), d_dy.get(), d_g.get(), N, b.stream());
    cuda::dropout_forward(d_drop.get(), d_x.get(), dropout, N, b.stream());
    err = {rel_l2(d_gelu.host(), gelu), rel_l2(d_dgelu.host(), dgelu), rel_l2(d_sum.host(), sum),
           std::max(rel_l2(d_dx.host(), dx), rel_l2(d_dy.host(), dy)), rel_l2(d_drop.host(), drop)};
  }
  const size_t N4 = size_t(o.B) * o.T * 4 * o.C, N = size_t(o.B) * o.T * o.C;
  DeviceVec<float> x(random_floats(N4, 44)), y(random_floats(N4, 45)), z(N4);
  const std::string s4 = format("N={} (B*T*4C)", N4), s1 = format("N={} (B*T*C)", N);
  // bytes: gelu fwd reads x writes y (2N); bwd reads dout and x, writes dinp (3N); residual fwd
  // reads 2 writes 1 (3N); bwd reads dout and read-writes two grads (5N); dropout reads 1 writes 1.
  b.add({"gelu_forward", s4, 0, false, 0, 8.0 * N4, 0}, {err[0]},
        [&] { cuda::gelu_forward(z.get(), x.get(), N4, b.stream()); });
  b.add({"gelu_backward", s4, 0, false, 0, 12.0 * N4, 0}, {err[1]},
        [&] { cuda::gelu_backward(z.get(), y.get(), x.get(), N4, b.stream()); });
  b.add({"residual_forward", s1, 0, false, 0, 12.0 * N, 0}, {err[2]},
        [&] { cuda::residual_forward(z.get(), x.get(), y.get(), N, b.stream()); });
  b.add({"residual_backward", s1, 0, false, 0, 20.0 * N, 0}, {err[3]},
        [&] { cuda::residual_backward(z.get(), y.get(), x.get(), N, b.stream()); });
  b.add({"dropout_forward", s1, 0, false, 0, 8.0 * N, 0}, {err[4]},
        [&] { cuda::dropout_forward(z.get(), x.get(), dropout, N, b.stream()); });
}

void bench_crossentropy(Bench& b) {
  const auto& o = b.opt();
  std::vector<double> err;
  {
    const int B = b.vB(), T = b.vT();
    const size_t R = size_t(B) * T;
    const auto logits = random_floats(R * o.Vp, 51, -4.0f, 4.0f);
    const auto targets = random_ints(R, 52, o.V);
    std::vector<float> losses(R), dlogits(logits.size());
    cpu::crossentropy_forward(losses.data(), logits.data(), targets.data(), B, T, o.V, o.Vp);
    cpu::crossentropy_backward(dlogits.data(), 1.0f / R, logits.data(), targets.data(), B, T, o.V, o.Vp);
    DeviceVec<float> d_logits(logits), d_losses(R), d_dlogits(logits.size());
    DeviceVec<int> d_targets(targets);
    cuda::crossentropy_forward(d_losses.get(), d_logits.get(), d_targets.get(), B, T, o.V, o.Vp, b.stream());
    cuda::crossentropy_backward(d_dlogits.get(), 1.0f / R, d_logits.get(), d_targets.get(), B, T, o.V, o.Vp,
                                b.stream());
    err = {rel_l2(d_losses.host(), losses), rel_l2(d_dlogits.host(), dlogits)};
  }
  const int B = o.B, T = o.T;
  const size_t R = size_t(B) * T;
  DeviceVec<float> logits(random_floats(R * o.Vp, 53, -4.0f, 4.0f)), losses(R), dlogits(R * o.Vp);
  DeviceVec<int> targets(random_ints(R, 54, o.V));
  const std::string shape = format("B={} T={} V={} Vp={}", B, T, o.V, o.Vp);
  // bytes: forward reads the logits once (the second pass over a row hits L1/L2); backward reads
  // them and writes dlogits.
  b.add({"crossentropy_forward", shape, 0, false, 0, 4.0 * R * o.Vp, 0}, {err[0]}, [&] {
    cuda::crossentropy_forward(losses.get(), logits.get(), targets.get(), B, T, o.V, o.Vp, b.stream());
  });
  b.add({"crossentropy_backward", shape, 0, false, 0, 8.0 * R * o.Vp, 0}, {err[1]}, [&] {
    cuda::crossentropy_backward(dlogits.get(), 1.0f / R, logits.get(), targets.get(), B, T, o.V, o.Vp, b.stream());
  });
}

void bench_adamw(Bench& b) {
  const auto& o = b.opt();
  AdamWParams hp;
  hp.weight_decay = 0.1f;
  hp.step = 3;
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
    err = {std::max({rel_l2(d_p.host(), p), rel_l2(d_m.host(), m), rel_l2(d_v.host(), v)}), std::fabs(ss_gpu - ss) / ss};
  }
  // GPT-2 124M: 12 layers of 12 C^2 + 13 C, plus Vp*C + maxT*C + 2C.
  const size_t C = o.C, N = 12 * (12 * C * C + 13 * C) + size_t(o.Vp) * C + 1024 * C + 2 * C;
  DeviceVec<float> p(random_floats(N, 65)), g(random_floats(N, 66)), m(N), v(N);
  CUDA_CHECK(cudaMemset(m.get(), 0, N * sizeof(float)));
  CUDA_CHECK(cudaMemset(v.get(), 0, N * sizeof(float)));
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::string shape = format("N={} (GPT-2 124M)", N);
  // bytes: read p, m, v, g; write p, m, v.
  b.add({"adamw_update", shape, 0, false, 0, 28.0 * N, 0}, {err[0]},
        [&] { cuda::adamw_update(p.get(), m.get(), v.get(), g.get(), N, hp, b.stream()); });
  // bytes: read x once. (Includes the device-to-host copy of the result and a stream sync.)
  b.add({"sum_of_squares", shape, 0, false, 0, 4.0 * N, 0}, {err[1]},
        [&] { cuda::sum_of_squares(g.get(), N, b.stream()); });
}

// The ceilings: device-to-device copy bandwidth (bytes read + written per second) over 1 GiB,
// and the cuBLAS sgemm rate (TF32 off) at M = N = K = 4096 (2*M*N*K FLOPs).
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

Options parse(int argc, char** argv) {
  cxxopts::Options cli("bench_kernels", "Validate every CUDA kernel against the CPU reference, then time it");
  Options o;
  cli.add_options()("b,batch-size", "batch size B", cxxopts::value<int>()->default_value("8"))(
      "t,seq-len", "sequence length T", cxxopts::value<int>()->default_value("1024"))(
      "reps", "timed repetitions per kernel (median reported)", cxxopts::value<int>()->default_value("50"))(
      "warmup", "untimed runs before timing", cxxopts::value<int>()->default_value("5"))(
      "only", "run only kernels whose name contains this", cxxopts::value<std::string>()->default_value(""))(
      "validate-full", "validate at the benchmark shape instead of B=1, T<=64 (slow: the CPU runs it)")(
      "json", "also write the results as JSON to this file", cxxopts::value<std::string>()->default_value(""))(
      "h,help", "show this help");
  try {
    const auto args = cli.parse(argc, argv);
    if (args.count("help")) {
      std::cout << cli.help() << "\n";
      std::exit(0);
    }
    INPUT_CHECK(args.unmatched().empty(), "unexpected argument '{}' (see --help)", args.unmatched().front());
    o.B = args["batch-size"].as<int>();
    o.T = args["seq-len"].as<int>();
    o.reps = args["reps"].as<int>();
    o.warmup = args["warmup"].as<int>();
    o.only = args["only"].as<std::string>();
    o.validate_full = args.count("validate-full") > 0;
    o.json_path = args["json"].as<std::string>();
  } catch (const InputError&) {
    throw;
  } catch (const std::exception& e) {  // cxxopts: unknown flag, missing or malformed value
    fail_input(format("{} (see --help)", e.what()));
  }
  INPUT_CHECK(o.B >= 1, "--batch-size must be >= 1, got {}", o.B);
  INPUT_CHECK(o.T >= 1 && o.T <= 1024, "--seq-len must be in [1, 1024] (GPT-2's context), got {}", o.T);
  INPUT_CHECK(o.reps >= 1, "--reps must be >= 1, got {}", o.reps);
  INPUT_CHECK(o.warmup >= 0, "--warmup must be >= 0, got {}", o.warmup);
  return o;
}

void write_json(const std::string& path, const cudaDeviceProp& props, const Options& o, const Ceilings& c,
                const std::vector<Row>& rows) {
  nlohmann::json j;
  j["device"] = props.name;
  j["B"] = o.B;
  j["T"] = o.T;
  j["reps"] = o.reps;
  j["copy_bandwidth_gbps"] = c.copy_gbps;
  j["sgemm_tflops"] = c.sgemm_tflops;
  for (const Row& r : rows) {
    nlohmann::json k{{"kernel", r.name}, {"shape", r.shape}, {"valid", r.valid}, {"rel_error", r.rel_error}};
    if (r.valid) {
      k["ms"] = r.ms;
      if (r.bytes > 0) k["gbps"] = r.bytes / (r.ms * 1e-3) / 1e9;
      if (r.flops > 0) k["tflops"] = r.flops / (r.ms * 1e-3) / 1e12;
    }
    j["kernels"].push_back(k);
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    INPUT_CHECK(f.good(), "cannot write {}", tmp);
    f << j.dump(2) << "\n";
    INPUT_CHECK(f.good(), "error while writing {}", tmp);
  }
  std::filesystem::rename(tmp, path);  // atomic: never a half-written results file
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse(argc, argv);
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
      std::fprintf(stderr, "bench_kernels: no CUDA device present (%s); this benchmark needs a GPU\n",
                   err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
      return 1;
    }
    cudaDeviceProp props{};
    CUDA_CHECK(cudaGetDeviceProperties(&props, 0));
    cudaStream_t stream = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    Bench bench(o, stream);
    const Ceilings ceilings = measure_ceilings(bench);
    std::printf("%s: device-to-device copy %.0f GB/s, cuBLAS sgemm (fp32, TF32 off) %.1f TFLOP/s\n", props.name,
                ceilings.copy_gbps, ceilings.sgemm_tflops);
    std::printf("validation at B=%d T=%d vs cpu:: (tolerance %.0e rel. L2); timing at B=%d T=%d, median of %d\n\n",
                bench.vB(), bench.vT(), Bench::kTolerance, o.B, o.T, o.reps);

    if (bench.selected("encoder")) bench_encoder(bench);
    if (bench.selected("layernorm")) bench_layernorm(bench);
    if (bench.selected("matmul")) {
      bench_matmul(bench, "qkv", o.C, 3 * o.C, true);
      bench_matmul(bench, "attproj", o.C, o.C, true);
      bench_matmul(bench, "fc", o.C, 4 * o.C, true);
      bench_matmul(bench, "fcproj", 4 * o.C, o.C, true);
      bench_matmul(bench, "lm_head", o.C, o.Vp, false);
    }
    if (bench.selected("attention")) bench_attention(bench);
    if (bench.selected("gelu") || bench.selected("residual") || bench.selected("dropout")) bench_elementwise(bench);
    if (bench.selected("crossentropy")) bench_crossentropy(bench);
    if (bench.selected("adamw") || bench.selected("sum_of_squares")) bench_adamw(bench);

    bool all_valid = true;
    std::printf("%-22s %-34s %10s %10s %12s %9s\n", "kernel", "shape", "rel.err", "ms", "rate", "of peak");
    for (const Row& r : bench.rows()) {
      all_valid = all_valid && r.valid;
      if (!r.valid) {
        std::printf("%-22s %-34s %10.2e %10s\n", r.name.c_str(), r.shape.c_str(), r.rel_error, "INVALID");
        continue;
      }
      const bool compute = r.flops > 0;
      const double rate = compute ? r.flops / (r.ms * 1e-3) / 1e12 : r.bytes / (r.ms * 1e-3) / 1e9;
      const double peak = compute ? ceilings.sgemm_tflops : ceilings.copy_gbps;
      std::printf("%-22s %-34s %10.2e %10.4f %7.1f %-4s %8.1f%%\n", r.name.c_str(), r.shape.c_str(), r.rel_error, r.ms,
                  rate, compute ? "TF/s" : "GB/s", 100.0 * rate / peak);
    }
    if (!o.json_path.empty()) write_json(o.json_path, props, o, ceilings, bench.rows());
    CUDA_CHECK(cudaStreamDestroy(stream));
    return all_valid ? 0 : 1;
  } catch (const InputError& e) {
    std::fprintf(stderr, "bench_kernels: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kernels: %s\n", e.what());
    return 1;
  }
}
