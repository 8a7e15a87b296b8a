// Every CPU layer of a training step, on the shapes of one model at B x T, against the machine's
// two rooflines measured in the same run (before the layers and after, the better of each):
// memory bandwidth (bench_util.hpp: reads, and writes alongside them, at the rate of a read alone
// or of half an in-place update on all threads, whichever is faster) and the FMA ceiling. For
// each layer the functions the CPU backend runs (cpu/backend.cpp), timed with their inputs
// evicted from the caches before each call (the median of --reps calls), and:
//   bytes    the least the call must read and write (a += output is read and written; wte rows
//            as if all tokens differ)
//   flops    the products only: matmul 2*BT*C*OC forward, twice that backward; attention its
//            useful causal half, 4*B*NH*T(T+1)/2*HS forward, twice that backward; 0 elsewhere
//   roofline the least time the two allow, max(bytes read / bandwidth, bytes written /
//            bandwidth, flops / FMA ceiling), and the fraction of it the call reaches (roofline
//            time / measured time)
//   calls    per training step (one micro-step: forward, backward, zero_grad, clip, AdamW), and
//            calls x time, an estimate of where the step goes (in a step a small layer may find
//            its inputs still in the cache, which the eviction here denies it).
// Where the backend runs a faster form of a reference function, the reference has a row too
// ("(reference)", not counted in the step), and before anything is timed each faster form's
// output is checked against its reference's on these shapes (relative error at most 1e-5, else
// exit 1 naming the layer); the layers' tests hold the references to their definitions.
//   bench_cpu_layers [--preset gpt2] [-B 4] [-T 64] [--reps 20] [--json FILE]; OMP_NUM_THREADS
//   sets the threads.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "benchmarks/bench_cli.hpp"
#include "benchmarks/cpu_layers/bench_util.hpp"
#include "core/atomic_file.hpp"
#include "core/cli.hpp"
#include "core/config.hpp"
#include "core/rng.hpp"
#include "cpu/adamw.hpp"
#include "cpu/attention.hpp"
#include "cpu/backend.hpp"
#include "cpu/crossentropy.hpp"
#include "cpu/encoder.hpp"
#include "cpu/gelu.hpp"
#include "cpu/layernorm.hpp"
#include "cpu/matmul.hpp"
#include "cpu/residual.hpp"

namespace {

using namespace gpt2cc;
using bench::filled;

struct Layer {
  std::string name;
  int calls;                     // per training step; 0 for a reference row
  double floats_read, floats_written;  // the least it must move (ints count as floats)
  double flops;                  // the products only
  std::function<void()> run;
};

// One layer's tensors, reused by every layer of that kind (the 4C-wide ones sized for fc), the
// forward statistics a LayerNorm backward reads, and AdamW's settings.
struct Tensors {
  std::vector<int> tokens, targets;
  bench::BackendVector<float> x, y, z, wide_in, wide_out, wide_d, qkv, dqkv, weight, dweight, bias, dbias;
  bench::BackendVector<float> ln_w, ln_b, dln_w, dln_b, wte, dwte, wpe, dwpe, logits, params, grads, m, v;
  std::vector<float> mean, rstd, lse, losses;
  AdamWParams adamw;

  Tensors(const ModelConfig& config, int B, int T) {
    const size_t C = size_t(config.channels), Vp = size_t(config.padded_vocab_size), BT = size_t(B) * T;
    const size_t N = num_parameters(config);
    const unsigned V = unsigned(config.vocab_size);
    tokens.resize(BT);
    targets.resize(BT);
    for (size_t i = 0; i < BT; ++i) {
      tokens[i] = int((i * 2654435761u) % V);
      targets[i] = int((i * 40503u + 7) % V);
    }
    x = filled(BT * C, 1), y = filled(BT * C, 2), z = filled(BT * C, 3);
    wide_in = filled(BT * 4 * C, 4), wide_out = filled(BT * 4 * C, 5), wide_d = filled(BT * 4 * C, 6);
    qkv = filled(BT * 3 * C, 7), dqkv = filled(BT * 3 * C, 8);
    weight = filled(4 * C * C, 9), dweight = filled(4 * C * C, 10);
    bias = filled(4 * C, 11), dbias = filled(4 * C, 12);
    ln_w = filled(C, 13), ln_b = filled(C, 14), dln_w = filled(C, 15), dln_b = filled(C, 16);
    wte = filled(Vp * C, 17), dwte = filled(Vp * C, 18);
    wpe = filled(size_t(T) * C, 19), dwpe = filled(size_t(T) * C, 20);
    logits = filled(BT * Vp, 21);
    params = filled(N, 22), grads = filled(N, 23), m = filled(N, 24), v = filled(N, 25);
    for (float& value : v) value = value * value;  // second moments are >= 0
    for (float& value : qkv) value *= 0.25f;       // scores of a trained model's size, not saturated
    mean.resize(BT);
    rstd.resize(BT);
    lse.resize(size_t(B) * config.num_heads * T);
    losses.resize(BT);
    adamw.weight_decay = 0.1f;
    adamw.step = 10;
    const DropoutParams no_dropout{};
    cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), ln_w.data(), ln_b.data(), B, T, int(C));
    cpu::attention_forward_blocked(y.data(), lse.data(), qkv.data(), B, T, int(C), config.num_heads, no_dropout);
  }
};

// Each faster form the backend runs against its reference on these inputs, before any timing:
// Error naming the layer when they differ by more than 1e-5 (relative, per output). The
// backward ones accumulate, so both start from the same gradient values.
void check_fast_forms(Tensors& t, int B, int T, int C) {
  const size_t BT = size_t(B) * T, N4 = BT * 4 * size_t(C);
  const auto agree = [](const char* layer, std::initializer_list<std::pair<const std::vector<float>*,
                                                                           const std::vector<float>*>> outputs) {
    for (const auto& [fast, reference] : outputs) {
      const double err = bench::rel_error(*fast, *reference);
      if (!(err <= 1e-5))
        throw Error(format("{}: the backend's form differs from the reference by {} (relative)", layer, err));
    }
  };
  std::vector<float> out(BT * C), mean(BT), rstd(BT), out_ref(BT * C), mean_ref(BT), rstd_ref(BT);
  cpu::layernorm_forward_vectorized(out.data(), mean.data(), rstd.data(), t.x.data(), t.ln_w.data(), t.ln_b.data(), B,
                                    T, C);
  cpu::layernorm_forward(out_ref.data(), mean_ref.data(), rstd_ref.data(), t.x.data(), t.ln_w.data(), t.ln_b.data(),
                         B, T, C);
  agree("layernorm_forward", {{&out, &out_ref}, {&mean, &mean_ref}, {&rstd, &rstd_ref}});

  std::vector<float> dinp(t.z.begin(), t.z.end()), dw(t.dln_w.begin(), t.dln_w.end());
  std::vector<float> db(t.dln_b.begin(), t.dln_b.end());
  std::vector<float> dinp_ref = dinp, dw_ref = dw, db_ref = db;
  cpu::layernorm_backward_vectorized(dinp.data(), dw.data(), db.data(), t.y.data(), t.mean.data(), t.rstd.data(),
                                     t.x.data(), t.ln_w.data(), B, T, C);
  cpu::layernorm_backward(dinp_ref.data(), dw_ref.data(), db_ref.data(), t.y.data(), t.mean.data(), t.rstd.data(),
                          t.x.data(), t.ln_w.data(), B, T, C);
  agree("layernorm_backward", {{&dinp, &dinp_ref}, {&dw, &dw_ref}, {&db, &db_ref}});

  std::vector<float> gelu(N4), gelu_ref(N4);
  cpu::gelu_forward_vectorized(gelu.data(), t.wide_in.data(), N4);
  cpu::gelu_forward(gelu_ref.data(), t.wide_in.data(), N4);
  agree("gelu_forward", {{&gelu, &gelu_ref}});
  cpu::gelu_backward_vectorized(gelu.data(), t.wide_out.data(), t.wide_in.data(), N4);
  cpu::gelu_backward(gelu_ref.data(), t.wide_out.data(), t.wide_in.data(), N4);
  agree("gelu_backward", {{&gelu, &gelu_ref}});
}

// Every layer call of one training step on these tensors, with its least bytes, its flops and
// its calls per step; the reference rows beside the faster forms.
std::vector<Layer> step_layers(const ModelConfig& config, int B, int T, Tensors& t, cpu::CpuBackend& backend,
                               float& sink) {
  const int L = config.num_layers, C = config.channels, NH = config.num_heads, HS = config.head_size();
  const int V = config.vocab_size, Vp = config.padded_vocab_size;
  const size_t BT = size_t(B) * T, N = num_parameters(config);
  const DropoutParams no_dropout{};
  const double causal_products = double(B) * NH * (double(T) * (T + 1) / 2) * HS;
  const double btc = double(BT) * C, stats = double(BT), lse_floats = double(B) * NH * T;
  std::vector<Layer> layers;
  // The row of a reference function beside the layer added last, with that layer's counts.
  const auto reference_of_last = [&](const char* name, std::function<void()> run) {
    Layer reference = layers.back();
    reference.name = name;
    reference.calls = 0;
    reference.run = std::move(run);
    layers.push_back(std::move(reference));
  };
  layers.push_back({"encoder_forward", 1, stats + btc + double(T) * C, btc, 0, [&t, B, T, C] {
                      cpu::encoder_forward(t.x.data(), t.tokens.data(), t.wte.data(), t.wpe.data(), B, T, C);
                    }});
  layers.push_back({"layernorm_forward", 2 * L + 1, btc + 2.0 * C, btc + 2 * stats, 0, [&t, B, T, C] {
                      cpu::layernorm_forward_vectorized(t.y.data(), t.mean.data(), t.rstd.data(), t.x.data(),
                                                        t.ln_w.data(), t.ln_b.data(), B, T, C);
                    }});
  reference_of_last("layernorm_forward (reference)", [&t, B, T, C] {
    cpu::layernorm_forward(t.y.data(), t.mean.data(), t.rstd.data(), t.x.data(), t.ln_w.data(), t.ln_b.data(), B, T,
                           C);
  });
  layers.push_back({"residual_forward", 2 * L, 2 * btc, btc, 0,
                    [&t, BT, C] { cpu::residual_forward(t.z.data(), t.x.data(), t.y.data(), BT * C); }});
  struct Linear {
    const char* name;
    int in, out, calls;
    bool bias;
  };
  const Linear linears[] = {{"qkv", C, 3 * C, L, true},
                            {"attproj", C, C, L, true},
                            {"fc", C, 4 * C, L, true},
                            {"fcproj", 4 * C, C, L, true},
                            {"classifier", C, Vp, 1, false}};
  // The linear layers' operands: inputs of up to 4C channels, outputs of up to 4C (the
  // classifier's Vp: the logits and wte).
  const auto linear_in = [&t, C](const Linear& l) { return l.in == C ? t.x.data() : t.wide_in.data(); };
  const auto linear_out = [&t, Vp](const Linear& l) { return l.out == Vp ? t.logits.data() : t.wide_out.data(); };
  const auto linear_w = [&t, Vp](const Linear& l) { return l.out == Vp ? t.wte.data() : t.weight.data(); };
  const auto linear_dw = [&t, Vp](const Linear& l) { return l.out == Vp ? t.dwte.data() : t.dweight.data(); };
  for (const Linear& l : linears) {
    const double w = double(l.in) * l.out, b = l.bias ? l.out : 0;
    layers.push_back({std::string("matmul_forward ") + l.name, l.calls, double(BT) * l.in + w + b, double(BT) * l.out,
                      2.0 * BT * w, [=, &t] {
                        cpu::matmul_forward_blocked(linear_out(l), linear_in(l), linear_w(l),
                                                    l.bias ? t.bias.data() : nullptr, B, T, l.in, l.out);
                      }});
  }
  layers.push_back({"gelu_forward", L, 4 * btc, 4 * btc, 0,
                    [&t, BT, C] { cpu::gelu_forward_vectorized(t.wide_out.data(), t.wide_in.data(), BT * 4 * C); }});
  reference_of_last("gelu_forward (reference)",
                    [&t, BT, C] { cpu::gelu_forward(t.wide_out.data(), t.wide_in.data(), BT * 4 * C); });
  layers.push_back({"attention_forward", L, 3 * btc, btc + lse_floats, 4 * causal_products, [=, &t] {
                      cpu::attention_forward_blocked(t.y.data(), t.lse.data(), t.qkv.data(), B, T, C, NH, no_dropout);
                    }});
  layers.push_back({"fused_classifier", 1, double(BT) * Vp + stats, double(BT) * Vp + stats, 0, [=, &t] {
                      cpu::fused_classifier(t.logits.data(), t.losses.data(), t.targets.data(), 1.0f / BT, B, T, V,
                                            Vp);
                    }});
  for (const Linear& l : linears) {
    // dout, inp, weight and the accumulated dweight, dbias read; dinp, dweight, dbias written.
    const double w = double(l.in) * l.out, b = l.bias ? l.out : 0;
    layers.push_back({std::string("matmul_backward ") + l.name, l.calls, double(BT) * (l.out + l.in) + 2 * w + b,
                      double(BT) * l.in + w + b, 4.0 * BT * w, [=, &t] {
                        cpu::matmul_backward_blocked(t.wide_d.data(), linear_dw(l), l.bias ? t.dbias.data() : nullptr,
                                                     linear_out(l), linear_in(l), linear_w(l), B, T, l.in, l.out);
                      }});
  }
  layers.push_back({"gelu_backward", L, 8 * btc, 4 * btc, 0, [&t, BT, C] {
                      cpu::gelu_backward_vectorized(t.wide_d.data(), t.wide_out.data(), t.wide_in.data(), BT * 4 * C);
                    }});
  layers.push_back({"attention_backward", L, 5 * btc + lse_floats, 3 * btc, 8 * causal_products, [=, &t] {
                      cpu::attention_backward_blocked(t.dqkv.data(), t.z.data(), t.lse.data(), t.qkv.data(),
                                                      t.y.data(), B, T, C, NH, no_dropout);
                    }});
  // dout, inp, the accumulated dinp, mean, rstd, weight, dweight, dbias read; dinp, dweight,
  // dbias written.
  layers.push_back({"layernorm_backward", 2 * L + 1, 3 * btc + 2 * stats + 3.0 * C, btc + 2.0 * C, 0, [&t, B, T, C] {
                      cpu::layernorm_backward_vectorized(t.z.data(), t.dln_w.data(), t.dln_b.data(), t.y.data(),
                                                         t.mean.data(), t.rstd.data(), t.x.data(), t.ln_w.data(), B,
                                                         T, C);
                    }});
  reference_of_last("layernorm_backward (reference)", [&t, B, T, C] {
    cpu::layernorm_backward(t.z.data(), t.dln_w.data(), t.dln_b.data(), t.y.data(), t.mean.data(), t.rstd.data(),
                            t.x.data(), t.ln_w.data(), B, T, C);
  });
  layers.push_back({"encoder_backward", 1, stats + 2 * btc + double(T) * C, btc + double(T) * C, 0, [&t, B, T, C] {
                      cpu::encoder_backward(t.dwte.data(), t.dwpe.data(), t.y.data(), t.tokens.data(), B, T, C);
                    }});
  layers.push_back({"zero_grad", 1, 0, double(N), 0,
                    [&t, &backend, N] { backend.zero(t.grads.data(), N * sizeof(float)); }});
  reference_of_last("zero_grad (one memset)", [&t, N] { std::memset(t.grads.data(), 0, N * sizeof(float)); });
  layers.push_back({"sum_of_squares", 1, double(N), 0, 0,
                    [&t, &sink, N] { sink += float(cpu::sum_of_squares(t.grads.data(), N)); }});
  layers.push_back({"adamw_update", 1, 4.0 * N, 3.0 * N, 0, [&t, N] {
                      cpu::adamw_update(t.params.data(), t.m.data(), t.v.data(), t.grads.data(), N, t.adamw);
                    }});
  return layers;
}

int run(int argc, char** argv) {
  cxxopts::Options options("bench_cpu_layers",
                           "every CPU layer of a training step against the memory-bandwidth and FMA rooflines "
                           "(OMP_NUM_THREADS sets the threads)");
  options.add_options()
      ("preset", "model preset whose shapes are measured", cxxopts::value<std::string>()->default_value("gpt2"))
      ("B", "batch size", cxxopts::value<int>()->default_value("4"))
      ("T", "sequence length", cxxopts::value<int>()->default_value("64"))
      ("reps", "timed calls per layer (the median is reported)", cxxopts::value<int>()->default_value("20"))
      ("json", "also write the rows to this file", cxxopts::value<std::string>()->default_value(""))
      ("h,help", "show this help");
  const cxxopts::ParseResult args = parse_flags(options, argc, argv);
  if (args.count("help")) {
    std::printf("%s\n", options.help().c_str());
    return 0;
  }
  INPUT_CHECK(args.unmatched().empty(), "unexpected argument '{}' (see --help)", args.unmatched().front());
  const ModelConfig config = model_preset(args["preset"].as<std::string>());
  const int B = args["B"].as<int>(), T = args["T"].as<int>(), reps = args["reps"].as<int>();
  INPUT_CHECK(B >= 1 && T >= 1, "-B and -T must be >= 1, got {} and {}", B, T);
  INPUT_CHECK(T <= config.max_seq_len, "-T {} is longer than the preset's {} positions", T, config.max_seq_len);
  INPUT_CHECK(reps >= 1, "--reps must be >= 1, got {}", reps);
  const std::string json_path = args["json"].as<std::string>();
  if (!json_path.empty()) bench::check_output_file("--json", json_path);  // before the minutes of the run

  const int threads = omp_get_max_threads();
  // The ceilings before the layers and after them, the better of each: this machine's memory
  // rate drifts by a third over a minute, and a ceiling is the best it showed.
  const auto ceilings = [] {
    double per_cpu_second = 0;  // not reported: the fractions here are of wall-clock time
    const double fma = bench::fma_ceiling_gflops(per_cpu_second);
    return std::pair{bench::memory_bandwidth(), fma};
  };
  const auto [memory_before, fma_before] = ceilings();
  Tensors tensors(config, B, T);
  check_fast_forms(tensors, B, T, config.channels);
  cpu::CpuBackend backend;  // its zero(), which the step's zero_grad runs
  float sink = 0;
  const std::vector<Layer> layers = step_layers(config, B, T, tensors, backend, sink);

  bench::CacheEvictor evict;
  std::vector<bench::Timing> timings;
  for (const Layer& layer : layers) timings.push_back(bench::time_median(layer.run, reps, evict));
  const auto [memory_after, fma_after] = ceilings();
  const bench::MemoryBandwidth memory{std::max(memory_before.read_gbs, memory_after.read_gbs),
                                      std::max(memory_before.update_gbs, memory_after.update_gbs),
                                      std::max(memory_before.copy_gbs, memory_after.copy_gbs),
                                      std::max(memory_before.write_gbs, memory_after.write_gbs)};
  const double fma_gflops = std::max(fma_before, fma_after), bandwidth_gbs = memory.per_direction();
  const double write_gbs = memory.write_ceiling();
  std::printf("%s, B x T = %d x %d, %d threads\nceilings (measured, the better of before and after): memory %.1f "
              "GB/s each way (read alone %.1f, in-place update %.1f read + written, copy %.1f), writes %.1f GB/s "
              "(a write alone %.1f), FMA %.1f GFLOP/s\n\n",
              describe(config).c_str(), B, T, threads, bandwidth_gbs, memory.read_gbs, memory.update_gbs,
              memory.copy_gbs, write_gbs, memory.write_gbs, fma_gflops);

  nlohmann::json rows = nlohmann::json::array();
  double step_ms = 0;
  std::printf("%-30s %5s | %9s %9s %8s | %8s %8s | %11s %6s | %8s\n", "layer", "calls", "ms/call", "MB", "GFLOP",
              "GB/s", "GFLOP/s", "roofline ms", "of it", "ms/step");
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& layer = layers[i];
    const bench::Timing& t = timings[i];
    const double read = layer.floats_read * sizeof(float), written = layer.floats_written * sizeof(float);
    const double memory_s = std::max(read / bandwidth_gbs, written / write_gbs) * 1e-9;
    const double roofline_s = std::max(memory_s, layer.flops / (fma_gflops * 1e9));
    const double fraction = roofline_s / t.wall_s, per_step_ms = layer.calls * t.wall_s * 1e3;
    step_ms += per_step_ms;
    std::printf("%-30s %5d | %9.3f %9.2f %8.3f | %8.1f %8.1f | %11.3f %5.0f%% | %8.2f\n", layer.name.c_str(),
                layer.calls, t.wall_s * 1e3, (read + written) * 1e-6, layer.flops * 1e-9,
                (read + written) / t.wall_s * 1e-9, layer.flops / t.wall_s * 1e-9, roofline_s * 1e3, 100 * fraction,
                per_step_ms);
    rows.push_back({{"layer", layer.name}, {"calls_per_step", layer.calls}, {"ms", t.wall_s * 1e3},
                    {"cpu_ms", t.cpu_s * 1e3}, {"bytes_read", read}, {"bytes_written", written},
                    {"flops", layer.flops}, {"roofline_ms", roofline_s * 1e3}, {"fraction_of_roofline", fraction},
                    {"ms_per_step", per_step_ms}});
  }
  std::printf("%-30s %5s | %67s | %8.1f\n", "sum over a step", "", "", step_ms);
  std::printf("\nMB, GFLOP: the least bytes read + written and the products' flops per call; roofline ms: max(MB "
              "read / bandwidth, MB written / write ceiling, GFLOP / FMA ceiling); of it: roofline ms / ms per call; "
              "ms/step: calls x ms per call.\n");
  if (sink + evict.sink() == 12345.0f) std::printf(" ");  // the sums are used: not optimised away
  if (!json_path.empty()) {
    const nlohmann::json out = {{"preset", args["preset"].as<std::string>()}, {"B", B}, {"T", T},
                                {"threads", threads}, {"memory_bandwidth_gbs", bandwidth_gbs},
                                {"read_gbs", memory.read_gbs}, {"update_gbs", memory.update_gbs},
                                {"copy_gbs", memory.copy_gbs}, {"write_gbs", memory.write_gbs},
                                {"write_ceiling_gbs", write_gbs},
                                {"fma_ceiling_gflops", fma_gflops}, {"rows", rows}};
    write_file_atomic(json_path, out.dump(2) + "\n");  // failure: exit 1 naming the file
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return gpt2cc::run_cli("bench_cpu_layers", argc, argv, run); }
