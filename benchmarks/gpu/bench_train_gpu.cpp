// GPT-2 training-step throughput on the CUDA backend (issue 8): one step is zero_grad, the fused
// forward + backward, the global gradient norm (clip at 1.0) and AdamW, exactly what train runs.
// Validates before timing (the loss at init is finite and ~ln V), then times each step with a
// host clock around backend.synchronize() and reports the median and mean ms/step, tokens/s,
// MFU against benchmarks/gpu/peaks.json (built in: core/device_peaks.hpp), and the GPU memory the
// run used.
//   bench_train_gpu [--dtype bf16|fp32] [-B 16|auto] [-T 1024] [--steps 20] [--warmup 5]
//                   [--recompute-gelu] [--no-cuda-graphs] [--classifier-rows 8192]
//                   [--fp32-gradients] [--json out.json]
// GPT2CC_KERNELS in the environment picks other kernel designs (kernels/kernel_designs.cuh); the
// JSON's kernel_designs says which ran ("" = the automatic ones), and bf16_gemm_paths how the bf16
// GEMMs launched from the host ran (through cuBLASLt, plain; declined_by_cublaslt of those plain).
// --classifier-rows: the rows of logits the classifier computes at once (ModelOptions::
// classifier_rows, train --classifier-rows; 0: all B*T, as before the chunks), for the designs
// stage of scripts/bench_gpu.sh to weigh the chunks' memory against their time.
// --fp32-gradients: a bf16 model's gradients kept in fp32 (ModelOptions::fp32_gradients, train
// --grad-dtype fp32; PyTorch autocast's way), what that costs a step.
//
// FLOPs per token: 6*N + 6*L*C*T (issue 8; training_flops_per_token, the count train's MFU uses),
// N = every parameter except the padded vocabulary rows ((Vp - V) * C zeros that never train;
// 124,439,808 for gpt2). MFU = tokens/s * FLOPs per token / peak, the peak being the dense bf16
// tensor-core rate for --dtype bf16 and the plain fp32 rate for fp32 (no TF32 in gpt2cc's fp32 path).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cxxopts.hpp>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include "benchmarks/bench_cli.hpp"
#include "core/backend.hpp"
#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/cli.hpp"
#include "core/config.hpp"
#include "core/model.hpp"
#include "core/grad_clip.hpp"
#include "core/device_peaks.hpp"
#include "core/rng.hpp"
#include "kernels/kernel_designs.cuh"
#include "kernels/matmul.cuh"

using namespace gpt2cc;
using nlohmann::json;

namespace {

struct Options {
  std::string preset = "gpt2";
  DType dtype = DType::bf16;
  int B = 0;  // 0: auto
  int T = 1024;
  int steps = 20, warmup = 5;
  bool recompute_gelu = false, cuda_graphs = true, fp32_gradients = false;
  int classifier_rows = ModelOptions{}.classifier_rows;  // 0: all B*T
  std::string json_path, peaks_path;  // empty: the table built in
  uint64_t seed = 1337;
};

Options parse(int argc, char** argv) {
  cxxopts::Options cli("bench_train_gpu", "GPT-2 training-step throughput on the CUDA backend");
  Options o;
  std::string dtype, batch;
  cli.add_options()("dtype", "compute dtype: bf16 or fp32", cxxopts::value(dtype)->default_value("bf16"))(
      "B,batch-size", "batch size, or 'auto' = the largest power of two that fits in GPU memory",
      cxxopts::value(batch)->default_value("auto"))("T,seq-len", "sequence length",
                                                    cxxopts::value(o.T)->default_value("1024"))(
      "preset", "model preset (core/config.hpp)", cxxopts::value(o.preset)->default_value("gpt2"))(
      "steps", "timed steps (median and mean reported)", cxxopts::value(o.steps)->default_value("20"))(
      "warmup", "untimed steps first (CUDA graph capture, cuBLASLt heuristics)",
      cxxopts::value(o.warmup)->default_value("5"))("recompute-gelu",
                                                    "recompute the GELU in the backward instead of saving it")(
      "no-cuda-graphs", "launch every kernel of a step separately instead of replaying a CUDA graph")(
      "classifier-rows", "rows of logits computed at once (0: all B*T)",
      cxxopts::value(o.classifier_rows)->default_value(std::to_string(ModelOptions{}.classifier_rows)))(
      "fp32-gradients", "with --dtype bf16: the gradients in fp32 (train --grad-dtype fp32)")(
      "seed", "seed of the weights and the random tokens", cxxopts::value(o.seed)->default_value("1337"))(
      "peaks", "GPU peak table file (default: the one built in, from benchmarks/gpu/peaks.json)",
      cxxopts::value(o.peaks_path))(
      "json", "also write the result to this JSON file", cxxopts::value(o.json_path))("h,help", "show this help");
  const auto args = parse_flags(cli, argc, argv);
  if (args.count("help")) {
    std::cout << cli.help() << std::endl;
    std::exit(0);
  }
  INPUT_CHECK(args.unmatched().empty(), "unexpected argument '{}' (see --help)", args.unmatched().front());
  o.dtype = parse_dtype(dtype);
  if (batch != "auto") {
    INPUT_CHECK(bench::parse_int(batch, o.B) && o.B >= 1, "--batch-size must be an integer >= 1 or 'auto', got '{}'",
                batch);
  }
  o.recompute_gelu = switch_on(args, "recompute-gelu");
  o.cuda_graphs = !switch_on(args, "no-cuda-graphs");
  o.fp32_gradients = switch_on(args, "fp32-gradients");
  INPUT_CHECK(!o.fp32_gradients || o.dtype == DType::bf16, "--fp32-gradients is for --dtype bf16 (fp32 has them)");
  if (!o.json_path.empty()) bench::check_output_file("--json", o.json_path);  // before the GPU runs
  const ModelConfig config = model_preset(o.preset);  // InputError listing the presets
  INPUT_CHECK(o.T >= 1 && o.T <= config.max_seq_len, "--seq-len must be in [1, {}], got {}", config.max_seq_len, o.T);
  INPUT_CHECK(o.steps >= 1, "--steps must be >= 1, got {}", o.steps);
  INPUT_CHECK(o.warmup >= 0, "--warmup must be >= 0, got {}", o.warmup);
  INPUT_CHECK(o.classifier_rows >= 0, "--classifier-rows must be >= 0 (0: all rows at once), got {}",
              o.classifier_rows);
  return o;
}

// Out of device memory: the backend's allocations and scratch, and any CUDA or cuBLAS call that
// could not allocate (kernels/cuda_check.cuh), throw OutOfMemoryError.
bool is_out_of_memory(const Error& e) { return dynamic_cast<const OutOfMemoryError*>(&e) != nullptr; }

// Device-wide used bytes (every process and context on this GPU; on a dedicated GPU that is ours).
size_t device_used_bytes() {
  size_t free_b = 0, total_b = 0;
  const cudaError_t err = cudaMemGetInfo(&free_b, &total_b);
  ENSURE(err == cudaSuccess, "cudaMemGetInfo: {}", cudaGetErrorString(err));
  return total_b - free_b;
}

// The high-water marks of the backend's scratch (cudaMallocAsync per op): outside a CUDA graph it
// comes from the device's default stream-ordered pool; inside one (--cuda-graphs, the default) the
// allocations are graph memory, which CUDA accounts for separately, per device.
int current_device() {
  int device = 0;
  ENSURE(cudaGetDevice(&device) == cudaSuccess, "cudaGetDevice failed");
  return device;
}
cudaMemPool_t default_pool() {
  cudaMemPool_t pool = nullptr;
  ENSURE(cudaDeviceGetDefaultMemPool(&pool, current_device()) == cudaSuccess, "cannot get the default CUDA memory pool");
  return pool;
}
struct ScratchHigh {
  size_t pool = 0, graphs = 0;
};
ScratchHigh scratch_used_high() {
  uint64_t pool = 0, graphs = 0;  // the runtime API takes a cuuint64_t (= uint64_t)
  ENSURE(cudaMemPoolGetAttribute(default_pool(), cudaMemPoolAttrUsedMemHigh, &pool) == cudaSuccess,
         "cudaMemPoolGetAttribute(UsedMemHigh) failed");
  ENSURE(cudaDeviceGetGraphMemAttribute(current_device(), cudaGraphMemAttrUsedMemHigh, &graphs) == cudaSuccess,
         "cudaDeviceGetGraphMemAttribute(UsedMemHigh) failed");
  return {size_t(pool), size_t(graphs)};
}
void reset_scratch_used_high() {
  uint64_t zero = 0;
  ENSURE(cudaMemPoolSetAttribute(default_pool(), cudaMemPoolAttrUsedMemHigh, &zero) == cudaSuccess,
         "cudaMemPoolSetAttribute(UsedMemHigh) failed");
  ENSURE(cudaDeviceSetGraphMemAttribute(current_device(), cudaGraphMemAttrUsedMemHigh, &zero) == cudaSuccess,
         "cudaDeviceSetGraphMemAttribute(UsedMemHigh) failed");
}

// One batch of random tokens in [0, V), reused by every step: throughput does not depend on the
// token values, and PyTorch's reference (benchmarks/pytorch/gpt2_train.py) does the same.
struct Batch {
  std::vector<int> inputs, targets;
};
Batch random_batch(int B, int T, int V, uint64_t seed) {
  Batch b;
  const size_t n = size_t(B) * T;
  b.inputs.resize(n);
  b.targets.resize(n);
  for (size_t i = 0; i < n; ++i) {
    b.inputs[i] = int(philox_bits(seed, 1, i) % uint32_t(V));
    b.targets[i] = int(philox_bits(seed, 2, i) % uint32_t(V));
  }
  return b;
}

// The training run being timed: the model and its optimizer hyper-parameters, as in train
// (lr 6e-4, betas 0.9/0.95, weight decay 0.1 on the weight matrices, clip at global norm 1.0).
struct Run {
  std::unique_ptr<GPT2> model;
  AdamWParams hp;
  int step = 0;

  float train_step(const Batch& batch, int B, int T) {
    model->zero_grad();
    const float loss = model->forward_backward(batch.inputs.data(), batch.targets.data(), B, T, 1.0f / float(B * T));
    hp.step = ++step;
    hp.grad_scale = clip_scale(model->grad_norm(), 1.0);
    model->adamw_step(hp);
    return loss;
  }
};

Run make_run(const ModelConfig& config, Backend& backend, const Options& o, int B) {
  Run run;
  ModelOptions options;
  options.recompute_gelu = o.recompute_gelu;
  options.cuda_graphs = o.cuda_graphs;
  options.classifier_rows = o.classifier_rows;
  options.fp32_gradients = o.fp32_gradients;
  run.model = std::make_unique<GPT2>(config, backend, B, o.T, ModelMode::training, options);
  run.model->init_weights(o.seed);
  run.hp.lr = 6e-4f;
  run.hp.weight_decay = 0.1f;
  return run;
}

// What the model holds, by what it is for (ModelMemory, core/model.hpp).
json model_memory_json(const ModelMemory& m) {
  return {{"total", m.total()},         {"parameters", m.parameters}, {"gradients", m.gradients},
          {"optimizer", m.optimizer}, {"activations", m.activations}, {"logits", m.logits},
          {"scratch", m.scratch}};
}

// Frees what a failed attempt left and clears the (non-sticky) allocation error.
void recover_from_oom(Run& run, Backend& backend) {
  run.model.reset();
  backend.synchronize();
  cudaGetLastError();
  cudaMemPoolTrimTo(default_pool(), 0);
}

// -B auto: the largest power of two, from 512 down, at which the model's allocation and one
// training step fit in GPU memory. The probes launch the kernels directly (no CUDA graph), so an
// allocation failing part-way never leaves a stream capture open; the chosen B is then rebuilt
// with the requested options.
int largest_batch(const ModelConfig& config, Backend& backend, const Options& o) {
  Options probe = o;
  probe.cuda_graphs = false;
  for (int B = 512;; B /= 2) {
    Run run;
    try {
      run = make_run(config, backend, probe, B);
      run.train_step(random_batch(B, o.T, config.vocab_size, o.seed), B, o.T);
      backend.synchronize();
      return B;
    } catch (const InputError&) {
      throw;
    } catch (const Error& e) {
      if (!is_out_of_memory(e) || B == 1) throw;
      recover_from_oom(run, backend);
    }
  }
}

using bench::median;

std::string gib(size_t bytes) { return format("{} GiB", std::round(double(bytes) / double(1ull << 30) * 100) / 100); }

// The GPU and the CUDA software the run used, for the report.
struct DeviceInfo {
  cudaDeviceProp props{};
  int driver = 0, runtime = 0;
};
std::optional<DeviceInfo> find_device() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) return std::nullopt;
  DeviceInfo d;
  ENSURE(cudaGetDeviceProperties(&d.props, 0) == cudaSuccess, "cudaGetDeviceProperties failed");
  cudaDriverGetVersion(&d.driver);
  cudaRuntimeGetVersion(&d.runtime);
  return d;
}

// The run to time at batch B, after its first step (which records the step's CUDA graph and
// replays it). -B auto's probes run without CUDA graphs: where a graph's own memory does not fit
// beside the step at the batch they found, half of it, rather than no figure at all.
struct FirstStep {
  Run run;
  Batch batch;
  int B = 0;
  float loss = 0;
};
FirstStep first_step(const ModelConfig& config, Backend& backend, const Options& o, int B) {
  FirstStep first;
  for (;;) {
    // The last probe's (or try's) model is gone; hand its cached pool memory back before the real
    // one allocates.
    backend.synchronize();
    cudaMemPoolTrimTo(default_pool(), 0);
    // The bf16 GEMMs' paths from here on (kernels/matmul.cuh: counted where the host launches them,
    // so a CUDA graph's replays add nothing): whether cuBLASLt took every fused epilogue.
    cuda::reset_matmul_path_counts();
    try {
      first.run = make_run(config, backend, o, B);
      first.batch = random_batch(B, o.T, config.vocab_size, o.seed);
      first.loss = first.run.train_step(first.batch, B, o.T);
      backend.synchronize();
      first.B = B;
      return first;
    } catch (const InputError&) {
      throw;
    } catch (const Error& e) {
      if (o.B != 0 || !is_out_of_memory(e) || B == 1) throw;
      recover_from_oom(first.run, backend);
      std::cerr << format("bench_train_gpu: B={} fit without CUDA graphs but not with them ({}); B={} instead", B,
                          e.what(), B / 2)
                << std::endl;
      B /= 2;
    }
  }
}

// The timed steps, after the untimed warm-up ones: each step's ms (host clock around the
// synchronize), the losses from the first step's on, and the device memory's high marks.
struct Timing {
  std::vector<double> ms;
  std::vector<float> losses;
  size_t peak_used = 0;  // device-wide, as device_used_bytes
  ScratchHigh scratch_high;
};
Timing time_steps(FirstStep& first, Backend& backend, const Options& o) {
  Timing t;
  t.losses.push_back(first.loss);
  for (int i = 0; i < o.warmup; ++i) first.run.train_step(first.batch, first.B, o.T);
  backend.synchronize();
  reset_scratch_used_high();
  t.peak_used = device_used_bytes();
  for (int i = 0; i < o.steps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    t.losses.push_back(first.run.train_step(first.batch, first.B, o.T));
    backend.synchronize();
    const auto t1 = std::chrono::steady_clock::now();
    t.ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    t.peak_used = std::max(t.peak_used, device_used_bytes());
  }
  t.scratch_high = scratch_used_high();
  return t;
}

// Everything the table and the JSON report.
struct Report {
  Report(const Options& options, const ModelConfig& model, const DeviceInfo& gpu)
      : o(options), config(model), device(gpu) {}
  const Options& o;
  const ModelConfig& config;
  DeviceInfo device;
  std::string backend;
  DevicePeaks peaks;
  std::optional<double> peak_tflops;  // unknown: no MFU, never a guessed one
  int B = 0, B_probed = 0, chunk_rows = 0;
  size_t used_before_backend = 0, used_before_model = 0;
  Timing timing;
  ModelMemory model_memory;
  cuda::MatmulPathCounts gemm_paths;
  // Derived.
  size_t n_flops = 0;  // N of the FLOPs count
  double flops_per_token = 0, ms_median = 0, ms_mean = 0, tokens_per_s = 0, tflops = 0;

  void derive() {
    n_flops = num_trained_parameters(config);
    flops_per_token = training_flops_per_token(config, o.T);
    ms_median = median(timing.ms);
    ms_mean = std::accumulate(timing.ms.begin(), timing.ms.end(), 0.0) / double(timing.ms.size());
    tokens_per_s = double(size_t(B) * o.T) / (ms_median * 1e-3);
    tflops = tokens_per_s * flops_per_token / 1e12;
  }
  std::optional<double> mfu() const {
    return peak_tflops ? std::optional<double>(tflops / *peak_tflops) : std::nullopt;
  }
  size_t peak_memory() const { return timing.peak_used - used_before_backend; }
};

void print_table(const Report& r) {
  const Options& o = r.o;
  const std::string mfu_text = r.mfu() ? format("{}%", std::round(*r.mfu() * 1000) / 10)
                               : r.peaks.matched ? "n/a (peak not confirmed)"
                                                 : "n/a (GPU not in peaks.json)";
  std::printf("device %s (driver %d, runtime %d), backend %s\n", r.device.props.name, r.device.driver,
              r.device.runtime, r.backend.c_str());
  std::printf(
      "model %s: %s; N = %zu (parameters without the %d padded vocab rows), %.1f MFLOP/token "
      "(6*N + 6*L*C*T)\n",
      o.preset.c_str(), describe(r.config).c_str(), r.n_flops, r.config.padded_vocab_size - r.config.vocab_size,
      r.flops_per_token / 1e6);
  std::printf(
      "dtype %s, B=%d%s T=%d, recompute-gelu %s, CUDA graphs %s, classifier %d rows at a time; %d warm-up + %d "
      "timed steps\n",
      dtype_name(o.dtype), r.B, o.B ? "" : " (auto: largest power of two that fits)", o.T,
      o.recompute_gelu ? "on" : "off", o.cuda_graphs ? "on" : "off", r.chunk_rows, o.warmup, o.steps);
  std::printf("peak for MFU: %s\n",
              r.peak_tflops
                  ? format("{} TFLOP/s {} ({})", *r.peak_tflops, matmul_peak_kind(o.dtype), r.peaks.name).c_str()
                  : "unknown");
  std::printf(
      "| dtype | BxT | ms/step median | ms/step mean | tokens/s | TFLOP/s | MFU | peak mem (device) | "
      "scratch high (pool + graphs) | loss first -> last |\n|---|---|---|---|---|---|---|---|---|---|\n");
  std::printf("| %s | %dx%d | %.2f | %.2f | %.0f | %.1f | %s | %s | %s | %.3f -> %.3f |\n", dtype_name(o.dtype), r.B,
              o.T, r.ms_median, r.ms_mean, r.tokens_per_s, r.tflops, mfu_text.c_str(), gib(r.peak_memory()).c_str(),
              gib(r.timing.scratch_high.pool + r.timing.scratch_high.graphs).c_str(), r.timing.losses.front(),
              r.timing.losses.back());
  if (r.gemm_paths.fallback > 0)
    std::printf("note: cuBLASLt declined %llu of the bf16 GEMMs launched (they took the plain path)\n",
                static_cast<unsigned long long>(r.gemm_paths.fallback));
}

json report_json(const Report& r) {
  const Options& o = r.o;
  const ModelConfig& config = r.config;
  const std::vector<double>& ms = r.timing.ms;
  return {{"benchmark", "gpt2cc_train_step"},
          {"device", r.device.props.name},
          {"driver_version", r.device.driver},
          {"runtime_version", r.device.runtime},
          {"backend", r.backend},
          {"kernel_designs", cuda::kernel_designs_text(cuda::kernel_designs_from_environment())},
          {"preset", o.preset},
          {"L", config.num_layers},
          {"C", config.channels},
          {"NH", config.num_heads},
          {"V", config.vocab_size},
          {"Vp", config.padded_vocab_size},
          {"params", num_parameters(config)},
          {"params_flops", r.n_flops},
          {"dtype", dtype_name(o.dtype)},
          {"B", r.B},
          {"B_auto", o.B == 0},
          {"B_probed", r.B_probed},  // -B auto's probe (no CUDA graphs); B is half of it where graphs did not fit
          {"T", o.T},
          {"recompute_gelu", o.recompute_gelu},
          {"cuda_graphs", o.cuda_graphs},
          {"classifier_rows_flag", o.classifier_rows},
          {"classifier_rows", r.chunk_rows},
          {"fp32_gradients", o.fp32_gradients},
          {"model_memory_bytes", model_memory_json(r.model_memory)},
          {"warmup", o.warmup},
          {"steps", o.steps},
          {"ms_per_step_median", r.ms_median},
          {"ms_per_step_mean", r.ms_mean},
          {"ms_per_step_min", *std::min_element(ms.begin(), ms.end())},
          {"ms_per_step_max", *std::max_element(ms.begin(), ms.end())},
          {"tokens_per_s", r.tokens_per_s},
          {"flops_per_token", r.flops_per_token},
          {"achieved_tflops", r.tflops},
          {"peak_tflops", r.peak_tflops ? json(*r.peak_tflops) : json(nullptr)},
          {"peak_kind", matmul_peak_kind(o.dtype)},
          {"peak_entry", r.peaks.matched ? json(r.peaks.name) : json(nullptr)},
          {"mfu", r.mfu() ? json(*r.mfu()) : json(nullptr)},
          {"memory_total_bytes", r.device.props.totalGlobalMem},
          {"used_before_backend_bytes", r.used_before_backend},
          {"used_before_model_bytes", r.used_before_model},
          {"peak_used_bytes", r.timing.peak_used},
          {"peak_memory_bytes", r.peak_memory()},
          {"pool_used_high_bytes", r.timing.scratch_high.pool},
          {"graph_mem_used_high_bytes", r.timing.scratch_high.graphs},
          {"loss_first", r.timing.losses.front()},
          {"loss_last", r.timing.losses.back()},
          {"bf16_gemm_paths", {{"cublaslt", r.gemm_paths.lt}, {"plain", r.gemm_paths.plain},
                               {"declined_by_cublaslt", r.gemm_paths.fallback}}}};
}

int bench_main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const ModelConfig config = model_preset(o.preset);
  const std::optional<DeviceInfo> device = find_device();
  if (!device) {
    std::cerr << "bench_train_gpu: no CUDA device present; this benchmark needs a GPU" << std::endl;
    return 1;
  }
  Report r{o, config, *device};
  r.peaks = lookup_device_peaks(device->props.name, o.peaks_path);  // empty path: the built-in table
  r.peak_tflops = matmul_peak_tflops(r.peaks, o.dtype);

  r.used_before_backend = device_used_bytes();
  auto backend = make_cuda_backend(0, o.dtype);
  r.backend = backend->describe();
  r.used_before_model = device_used_bytes();

  r.B_probed = o.B ? o.B : largest_batch(config, *backend, o);
  FirstStep first = first_step(config, *backend, o, r.B_probed);
  r.B = first.B;
  r.chunk_rows = o.classifier_rows == 0 ? r.B * o.T : std::min(r.B * o.T, o.classifier_rows);
  const double ln_v = std::log(double(config.vocab_size));
  // Validation: a freshly initialised GPT-2 predicts nearly uniformly, so its loss is ~ln V;
  // anything else means the step being timed is not a working training step.
  if (!std::isfinite(first.loss) || std::fabs(first.loss - ln_v) > 0.5) {
    std::cerr << format("bench_train_gpu: validation failed: the loss at init is {}, expected ~ln(V) = {}", first.loss,
                        ln_v)
              << std::endl;
    return 1;
  }

  r.timing = time_steps(first, *backend, o);
  if (!std::isfinite(r.timing.losses.back())) {
    std::cerr << format("bench_train_gpu: the loss became {} after {} steps", r.timing.losses.back(), first.run.step)
              << std::endl;
    return 1;
  }
  r.gemm_paths = cuda::matmul_path_counts();
  r.model_memory = first.run.model->memory();
  r.derive();

  print_table(r);
  if (!o.json_path.empty()) write_file_atomic(o.json_path, report_json(r).dump(2) + "\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run_cli("bench_train_gpu", argc, argv, bench_main); }
