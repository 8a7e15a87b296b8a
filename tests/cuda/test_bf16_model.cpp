// The whole model in bf16 mixed precision on CUDA (core/model.hpp through a bf16 CudaBackend):
// one training step against the fp32 CPU model on the same bf16-rounded weights (loss, logits,
// every gradient tensor by relative L2 error), on the flash-attention path (HS 64), the tiled
// bf16 path (HS 12), with dropout, and at HS 128 (flash, or tiled where the device's shared
// memory cannot hold flash's kernels: CTest emu_cuda_bf16_rtx4090); AdamW keeping fp32 master
// weights; 20 steps whose losses track fp32 CUDA; CUDA-graph replay changing no bit (each dloss
// and shape its own recording, an evicted one recorded again), GELU recompute none outside
// fcprojw's bf16 gradient; determinism; KV-cache decoding against a full recompute; fp32
// gradients, accumulated over micro-steps.
#include "common/catch.hpp"

#include <cmath>
#include <memory>

#include "bf16_test_util.hpp"
#include "core/model.hpp"
#include "core/grad_clip.hpp"
#include "cpu/adamw.hpp"
#include "cuda_test_util.hpp"
#include "kernels/flash_attention.cuh"
#include "model/model_test_util.hpp"

using namespace gpt2cc;

namespace {

// L=2, V=101 in Vp=128; heads of size HS = C / NH.
ModelConfig bf16_config(int C, int NH, float dropout, int max_seq_len = 32) {
  ModelConfig c;
  c.num_layers = 2;
  c.channels = C;
  c.num_heads = NH;
  c.vocab_size = 101;
  c.padded_vocab_size = padded_vocab(c.vocab_size);
  c.max_seq_len = max_seq_len;
  c.dropout = dropout;
  return c;
}

// Tensor by tensor, so a failure names the tensor.
void expect_tensors_rel_l2(const std::vector<float>& actual, const std::vector<float>& expected,
                           const ParameterLayout& layout, const std::string& what, double tol) {
  REQUIRE(actual.size() == expected.size());
  for (const ParamTensor& t : layout.tensors()) {
    const auto begin = static_cast<std::ptrdiff_t>(t.offset), end = static_cast<std::ptrdiff_t>(t.offset + t.numel);
    test::expect_rel_l2(std::vector<float>(actual.begin() + begin, actual.begin() + end),
                        std::vector<float>(expected.begin() + begin, expected.begin() + end), tol, what + " " + t.name);
  }
}

using test::fan_in_scaled_parameters;

AdamWParams step_params(int step, float grad_scale) {
  AdamWParams hp;
  hp.lr = 1e-3f;
  hp.weight_decay = 0.1f;
  hp.step = step;
  hp.grad_scale = grad_scale;
  return hp;
}

float train_step(GPT2& model, const std::vector<int>& inputs, const std::vector<int>& targets, int B, int T, int step) {
  model.zero_grad();
  int n = 0;
  for (int t : targets) n += t != -1;
  const float loss = model.forward_backward(inputs.data(), targets.data(), B, T, 1.0f / float(n));
  model.adamw_step(step_params(step, clip_scale(model.grad_norm(), 1.0)));
  return loss;
}

}  // namespace

TEST_CASE("a bf16 training step tracks the fp32 cpu model", "[cuda][bf16][model]") {
  struct Case {
    int C, NH;
    float dropout;
    const char* path;
  };
  const Case k = GENERATE(Case{128, 2, 0.0f, "flash attention (HS 64)"}, Case{36, 3, 0.0f, "tiled attention (HS 12)"},
                          Case{128, 2, 0.1f, "tiled attention with dropout"},
                          Case{256, 2, 0.0f, "HS 128: flash where the device holds its kernels, else tiled"});
  INFO(k.path);
  const ModelConfig c = bf16_config(k.C, k.NH, k.dropout);
  const int B = 3, T = 29;  // T not a multiple of the flash tiles
  auto cpu_backend = make_cpu_backend(0);
  auto cuda_backend = make_cuda_backend(0, DType::bf16);
  GPT2 cpu_model(c, *cpu_backend, B, T), model(c, *cuda_backend, B, T);
  REQUIRE(model.dtype() == DType::bf16);
  // Both models compute with the same (bf16-representable) weights: what differs is only the
  // bf16 storage of activations and gradients.
  const auto params = test::round_to_bf16(fan_in_scaled_parameters(model.layout(), c, 231));
  cpu_model.set_parameters(params);
  model.set_parameters(params);
  CHECK(test::same_bits(model.parameters(), params));
  const auto inputs = test::random_tokens(size_t(B) * T, 232, c.vocab_size);
  const auto targets = test::targets_with_ignored(size_t(B) * T, 233, c.vocab_size);

  const float cpu_loss = cpu_model.forward(inputs.data(), targets.data(), B, T, true, 234);
  const float loss = model.forward(inputs.data(), targets.data(), B, T, true, 234);
  INFO("cpu loss " << cpu_loss << ", bf16 loss " << loss);
  CHECK(std::fabs(loss - cpu_loss) <= 1e-2 * std::fabs(cpu_loss));
  test::expect_rel_l2(model.logits(), cpu_model.logits(), 1e-2, "logits");

  const float dloss = 1.0f / float(cpu_model.num_targets());
  cpu_model.zero_grad();
  cpu_model.backward(dloss);
  model.zero_grad();
  model.backward(dloss);
  const auto cpu_grads = cpu_model.gradients();
  // Whole-model gradients pass through ~20 bf16 roundings each way: 3e-2 relative, where a
  // single layer meets 1e-2 (tests/cuda/test_bf16_*.cpp).
  expect_tensors_rel_l2(model.gradients(), cpu_grads, model.layout(), "gradient (forward + backward)", 3e-2);
  const double cpu_norm = cpu_model.grad_norm(), norm = model.grad_norm();
  CHECK(std::fabs(norm - cpu_norm) <= 2e-2 * cpu_norm);

  // The fused path (fused classifier, one call) lands on the same gradients as forward + backward.
  const auto two_calls = model.gradients();
  model.zero_grad();
  const float fused_loss = model.forward_backward(inputs.data(), targets.data(), B, T, dloss, 234);
  CHECK(std::fabs(fused_loss - loss) <= 1e-6 * std::fabs(loss));
  expect_tensors_rel_l2(model.gradients(), two_calls, model.layout(), "gradient (forward_backward)", 1e-2);
}

// fp32 gradients (ModelOptions::fp32_gradients): every backward kernel adds the sums its bf16 twin
// rounds, unrounded. One step from zero: each gradient tensor within one bf16 rounding of the bf16
// model's (the GEMMs with an fp32 output may sum in another order), but wte's, whose rows of the
// input's tokens the bf16 model rounds twice (classifier, then embedding). Micro-steps accumulate
// into the fp32 sum of their gradients to fp32's error (each micro-step from zero against all of
// them in turn), where bf16 gradients round the running sum once per micro-step. The micro-steps
// share a dloss, so after the first they replay a CUDA graph holding the fp32 pointers.
TEST_CASE("bf16 with fp32 gradients: the bf16 sums unrounded, micro-steps accumulated in fp32",
          "[cuda][bf16][model]") {
  const ModelConfig c = bf16_config(128, 2, 0.0f);  // flash attention
  const int B = 2, T = 29, micro = 4;
  auto backend = make_cuda_backend(0, DType::bf16);
  ModelOptions fp32_gradients;
  fp32_gradients.fp32_gradients = true;
  GPT2 plain(c, *backend, B, T), wide(c, *backend, B, T, ModelMode::training, fp32_gradients);
  CHECK(wide.memory().gradients == 2 * plain.memory().gradients);
  const auto params = test::round_to_bf16(fan_in_scaled_parameters(plain.layout(), c, 241));
  plain.set_parameters(params);
  wide.set_parameters(params);
  std::vector<std::vector<int>> inputs, targets;
  for (int k = 0; k < micro; ++k) {
    inputs.push_back(test::random_tokens(size_t(B) * T, 242 + k, c.vocab_size));
    targets.push_back(test::random_tokens(size_t(B) * T, 252 + k, c.vocab_size));
  }
  const float dloss = 1.0f / float(micro * B * T);

  plain.zero_grad();
  wide.zero_grad();
  CHECK(plain.forward_backward(inputs[0].data(), targets[0].data(), B, T, dloss) ==
        wide.forward_backward(inputs[0].data(), targets[0].data(), B, T, dloss));
  const auto g16 = plain.gradients(), g32 = wide.gradients();
  size_t unrounded = 0;
  for (float x : g32) unrounded += test::round_to_bf16(x) != x;
  CHECK(unrounded > g32.size() / 2);  // the premise: they are not bf16 values
  for (const ParamTensor& t : plain.layout().tensors()) {
    const auto begin = g16.begin() + std::ptrdiff_t(t.offset), end = begin + std::ptrdiff_t(t.numel);
    const std::vector<float> bf16_tensor(begin, end), fp32_tensor(g32.begin() + (begin - g16.begin()),
                                                                  g32.begin() + (end - g16.begin()));
    if (t.name == std::string("wte"))
      test::expect_rel_l2(bf16_tensor, fp32_tensor, 1e-2, "bf16 gradient wte (rounded twice)");
    else
      test::expect_one_rounding(bf16_tensor, fp32_tensor, std::string("bf16 gradient ") + t.name);
  }

  double error[2] = {};
  int i = 0;
  for (GPT2* model : {&plain, &wide}) {
    std::vector<double> sum;
    for (int k = 0; k < micro; ++k) {
      model->zero_grad();
      model->forward_backward(inputs[k].data(), targets[k].data(), B, T, dloss);
      const auto g = model->gradients();
      sum.resize(g.size());
      for (size_t e = 0; e < g.size(); ++e) sum[e] += g[e];
    }
    model->zero_grad();
    for (int k = 0; k < micro; ++k) model->forward_backward(inputs[k].data(), targets[k].data(), B, T, dloss);
    const auto accumulated = model->gradients();
    double diff = 0.0, norm = 0.0;
    for (size_t e = 0; e < sum.size(); ++e) {
      diff += (accumulated[e] - sum[e]) * (accumulated[e] - sum[e]);
      norm += sum[e] * sum[e];
    }
    error[i++] = std::sqrt(diff / norm);
  }
  INFO("relative L2 error of " << micro << " accumulated micro-steps: bf16 gradients " << error[0]
                               << ", fp32 gradients " << error[1]);
  CHECK(error[1] <= 1e-5);
  CHECK(error[0] >= 1e-4);  // the check tells the two apart
}

TEST_CASE("bf16 AdamW updates fp32 master weights and rewrites the bf16 copy", "[cuda][bf16][model]") {
  const ModelConfig c = bf16_config(128, 2, 0.0f);
  const int B = 2, T = 16;
  auto backend = make_cuda_backend(0, DType::bf16);
  GPT2 model(c, *backend, B, T);
  model.init_weights(241);
  const auto inputs = test::random_tokens(size_t(B) * T, 242, c.vocab_size);
  const auto targets = test::random_tokens(size_t(B) * T, 243, c.vocab_size);
  model.zero_grad();
  model.forward_backward(inputs.data(), targets.data(), B, T, 1.0f / float(B * T));
  const AdamWParams hp = step_params(1, clip_scale(model.grad_norm(), 0.5));

  // Expected: cpu::adamw_update on the fp32 master with the (widened) bf16 gradients.
  std::vector<float> expected = model.parameters(), m, v;
  model.optimizer_state(m, v);
  const auto grads = model.gradients();
  for (const ParamTensor& t : model.layout().tensors()) {
    AdamWParams tensor_hp = hp;
    tensor_hp.weight_decay = t.weight_decay ? hp.weight_decay : 0.0f;
    cpu::adamw_update(expected.data() + t.offset, m.data() + t.offset, v.data() + t.offset, grads.data() + t.offset,
                      t.numel, tensor_hp);
  }
  model.adamw_step(hp);
  const auto master = model.parameters();
  test::expect_matches(master, expected, "fp32 master after AdamW", 1e-6);
  // The master moved by less than a bf16 ulp in places: it must not have been rounded.
  CHECK_FALSE(test::same_bits(master, test::round_to_bf16(master)));
  std::vector<float> m2, v2;
  model.optimizer_state(m2, v2);
  test::expect_matches(m2, m, "AdamW m", 1e-6);
  test::expect_matches(v2, v, "AdamW v", 1e-6);

  // The compute copy is bf16(master): a forward now equals one of a model loaded with those weights.
  GPT2 reloaded(c, *backend, B, T);
  reloaded.set_parameters(master);
  const float a = model.forward(inputs.data(), targets.data(), B, T);
  const float b = reloaded.forward(inputs.data(), targets.data(), B, T);
  CHECK(a == b);
}

TEST_CASE("20 bf16 training steps track fp32 within a few percent", "[cuda][bf16][model]") {
  const ModelConfig c = bf16_config(128, 2, 0.0f, 64);
  const int B = 4, T = 64;
  auto fp32_backend = make_cuda_backend(0, DType::fp32);
  auto bf16_backend = make_cuda_backend(0, DType::bf16);
  GPT2 fp32_model(c, *fp32_backend, B, T), bf16_model(c, *bf16_backend, B, T);
  fp32_model.init_weights(251);
  bf16_model.init_weights(251);
  std::vector<int> inputs, targets;
  test::phrase_batch(inputs, targets, B, T, 7, 252, c.vocab_size);
  float first = 0.0f, last = 0.0f;
  for (int step = 1; step <= 20; ++step) {
    const float l32 = train_step(fp32_model, inputs, targets, B, T, step);
    const float l16 = train_step(bf16_model, inputs, targets, B, T, step);
    INFO("step " << step << ": fp32 loss " << l32 << ", bf16 loss " << l16);
    CHECK(std::fabs(l16 - l32) <= 0.03 * l32 + 0.01);
    if (step == 1) first = l32;
    last = l32;
  }
  CHECK(last < 0.8f * first);  // it learned: the comparison is not between two flat lines
}

TEST_CASE("CUDA-graph replay changes no bit of a step, GELU recompute only a bf16 rounding", "[cuda][bf16][model][graphs]") {
  const DType dtype = GENERATE(DType::fp32, DType::bf16);
  INFO(dtype_name(dtype));
  const ModelConfig c = bf16_config(128, 2, 0.0f);
  const int B = 2, T = 32;
  auto backend = make_cuda_backend(0, dtype);
  const auto inputs = test::random_tokens(size_t(B) * T, 262, c.vocab_size);
  const auto targets = test::targets_with_ignored(size_t(B) * T, 263, c.vocab_size);

  // A step three times (the first call runs the ops, the second records and replays, the third
  // replays); then other dlosses and shapes, twice each, each a recording of its own (the first
  // step's would bake in its dloss or shape); the fifth recording evicts the first (the backend
  // keeps four), so the first step's last call records it again.
  struct Step {
    int B, T;
    float dloss;
  };
  const Step first{B, T, 0.01f};
  std::vector<Step> steps(3, first);
  for (const Step& step : {Step{B, T, 0.03f}, Step{B, T / 2, 0.01f}, Step{1, T, 0.01f}, Step{B, T, 0.02f}})
    steps.insert(steps.end(), 2, step);
  steps.push_back(first);
  auto grads_of_calls = [&](const ModelOptions& options, std::vector<float>& losses) {
    GPT2 model(c, *backend, B, T, ModelMode::training, options);
    model.init_weights(261);
    std::vector<std::vector<float>> grads;
    for (const Step& step : steps) {
      model.zero_grad();
      losses.push_back(model.forward_backward(inputs.data(), targets.data(), step.B, step.T, step.dloss));
      grads.push_back(model.gradients());
    }
    return grads;
  };
  ModelOptions direct, recompute, chunks;
  direct.cuda_graphs = false;
  recompute.recompute_gelu = true;
  chunks.classifier_rows = 24;  // 64 rows: 24, 24, 16; 32: 24, 8
  std::vector<float> direct_losses, graph_losses, recompute_losses, chunk_losses;
  const auto direct_grads = grads_of_calls(direct, direct_losses);
  const auto graph_grads = grads_of_calls(ModelOptions{}, graph_losses);
  const auto recompute_grads = grads_of_calls(recompute, recompute_losses);
  const auto chunk_grads = grads_of_calls(chunks, chunk_losses);
  {  // In bf16 the chunks' parts of wte's gradient are summed in fp32: Vp x C floats of scratch.
    GPT2 whole(c, *backend, B, T), chunked(c, *backend, B, T, ModelMode::training, chunks);
    const size_t sum_bytes = dtype == DType::bf16 ? size_t(c.padded_vocab_size) * c.channels * sizeof(float) : 0;
    CHECK(chunked.memory().scratch == whole.memory().scratch + sum_bytes);
  }
  const double tol = dtype == DType::bf16 ? 1e-2 : 1e-5;
  for (size_t call = 0; call < steps.size(); ++call) {
    INFO("call " << call << ": B=" << steps[call].B << " T=" << steps[call].T << " dloss=" << steps[call].dloss);
    const size_t first_of_step = call < 3 || call + 1 == steps.size() ? 0 : call - (call - 3) % 2;
    CHECK(test::same_bits(direct_grads[call], direct_grads[first_of_step]));
    CHECK(test::same_bits(graph_grads[call], direct_grads[call]));
    if (call > 0 && first_of_step == call) CHECK_FALSE(test::same_bits(direct_grads[call], direct_grads[0]));
    // The classifier in chunks, recorded and replayed as the whole step: the calls of one step
    // repeat their bits (the fp32 sum of wte's parts zeroed in each replay), and the gradients are
    // those of one chunk but for rounding.
    CHECK(test::same_bits(chunk_grads[call], chunk_grads[first_of_step]));
    test::expect_rel_l2(chunk_grads[call], direct_grads[call], tol, "gradients, classifier in chunks");
    CHECK(std::fabs(chunk_losses[call] - direct_losses[call]) <= tol * std::fabs(direct_losses[call]));
  }
  // GELU recompute: bit-identical in fp32. In bf16 the forward applies GELU to the fp32 GEMM
  // result (cuBLASLt epilogue) while the recompute applies it to the stored bf16 pre-activation,
  // so the one tensor that reads the recomputed values, fcprojw's gradient (dout^T gelu(fch)),
  // differs by a bf16 rounding; every other gradient is bit-identical.
  const ParameterLayout layout(c);
  for (size_t call = 0; call < steps.size(); ++call) {
    INFO("call " << call);
    for (const ParamTensor& t : layout.tensors()) {
      INFO("tensor " << t.name);
      const auto begin = static_cast<std::ptrdiff_t>(t.offset), end = static_cast<std::ptrdiff_t>(t.offset + t.numel);
      const std::vector<float> a(recompute_grads[call].begin() + begin, recompute_grads[call].begin() + end);
      const std::vector<float> b(direct_grads[call].begin() + begin, direct_grads[call].begin() + end);
      if (dtype == DType::bf16 && t.name == "fcprojw")
        test::expect_rel_l2(a, b, 1e-2, "fcprojw gradient with GELU recompute");
      else
        CHECK(test::same_bits(a, b));
    }
  }
  CHECK(test::same_bits(graph_losses, direct_losses));
  CHECK(test::same_bits(recompute_losses, direct_losses));
}

// The backend sets the default pool to keep freed blocks (release threshold: never), so the scratch
// of a step run directly stays reserved; a recorded step takes its scratch from graph memory. The
// recording must hand the pool's cached blocks back, or the device holds the scratch twice.
TEST_CASE("recording a step hands the pool's cached scratch back: graph memory replaces it",
          "[cuda][bf16][model][graphs][memory]") {
  const DType dtype = GENERATE(DType::fp32, DType::bf16);
  INFO(dtype_name(dtype));
  const ModelConfig c = bf16_config(128, 2, 0.0f);
  const int B = 2, T = 32;
  auto backend = make_cuda_backend(0, dtype);
  const auto inputs = test::random_tokens(size_t(B) * T, 265, c.vocab_size);
  const auto targets = test::random_tokens(size_t(B) * T, 266, c.vocab_size);
  cudaMemPool_t pool = nullptr;
  REQUIRE(cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess);
  // Bytes the pool reserves beyond its live allocations: freed blocks it keeps.
  auto cached_bytes = [&] {
    backend->synchronize();
    uint64_t reserved = 0, used = 0;
    REQUIRE(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved) == cudaSuccess);
    REQUIRE(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used) == cudaSuccess);
    return reserved - used;
  };
  uint64_t zero = 0, graph_high = 0;
  REQUIRE(cudaDeviceSetGraphMemAttribute(0, cudaGraphMemAttrUsedMemHigh, &zero) == cudaSuccess);

  GPT2 model(c, *backend, B, T);  // CUDA graphs on (the default)
  model.init_weights(264);
  model.forward_backward(inputs.data(), targets.data(), B, T, 0.01f);  // runs the ops directly
  const uint64_t cached_direct = cached_bytes();
  CHECK(cached_direct > 0);  // the premise: the direct run's scratch stayed in the pool
  model.zero_grad();
  model.forward_backward(inputs.data(), targets.data(), B, T, 0.01f);  // records, then replays
  const uint64_t cached_recorded = cached_bytes();
  CHECK(cached_recorded < cached_direct);
  // CUDA may keep memory at a coarser granularity than the allocations: one 2 MiB chunk of slack.
  CHECK(cached_recorded <= (uint64_t(2) << 20));
  REQUIRE(cudaDeviceGetGraphMemAttribute(0, cudaGraphMemAttrUsedMemHigh, &graph_high) == cudaSuccess);
  CHECK(graph_high > 0);  // the replay's scratch was graph memory
}

TEST_CASE("bf16 training is bit-for-bit repeatable", "[cuda][bf16][model][determinism]") {
  const ModelConfig c = bf16_config(128, 2, 0.0f);
  const int B = 2, T = 32;
  auto backend = make_cuda_backend(0, DType::bf16);
  auto run = [&](std::vector<float>& losses) {
    GPT2 model(c, *backend, B, T);
    model.init_weights(271);
    for (int step = 1; step <= 3; ++step) {
      const auto inputs = test::random_tokens(size_t(B) * T, 272 + step, c.vocab_size);
      const auto targets = test::random_tokens(size_t(B) * T, 282 + step, c.vocab_size);
      losses.push_back(train_step(model, inputs, targets, B, T, step));
    }
    return model.parameters();
  };
  std::vector<float> losses_a, losses_b;
  const auto a = run(losses_a), b = run(losses_b);
  CHECK(test::same_bits(losses_a, losses_b));
  CHECK(test::same_bits(a, b));
}

TEST_CASE("bf16 KV-cache decoding tracks a full recompute", "[cuda][bf16][model][decode]") {
  const ModelConfig c = bf16_config(128, 2, 0.0f, 24);
  const int B = 2, maxT = c.max_seq_len, prompt = 5;
  auto backend = make_cuda_backend(0, DType::bf16);
  GPT2 model(c, *backend, B, maxT, ModelMode::inference);
  model.set_parameters(test::random_parameters(model.layout(), c, 291));
  const auto seq = test::random_tokens(size_t(B) * maxT, 292, c.vocab_size);
  // Logits of the last position of seq[:, :len] by a full forward, first V columns.
  auto recompute = [&](int len) { return test::full_forward_last_logits(model, seq, B, maxT, len); };
  const std::vector<int> head = test::row_prefixes(seq, B, maxT, prompt);
  // Prefill (flash attention) and decode (the decode kernel) round differently from the full
  // forward: both within bf16's relative error.
  test::expect_rel_l2(model.prefill(head.data(), B, prompt), recompute(prompt), 1e-2, "prefill logits");
  for (int pos = prompt; pos < maxT; ++pos) {
    INFO("position " << pos);
    std::vector<int> step(B);
    for (int b = 0; b < B; ++b) step[b] = seq[size_t(b) * maxT + pos];
    const auto reference = recompute(pos + 1);
    test::expect_rel_l2(model.decode(step.data(), B, pos), reference, 2e-2, "decode logits");
  }
}
