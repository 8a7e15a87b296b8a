// The fused paths of the model on the CPU backend: with the classifier run as the composition
// that defines it (core/backend.cpp), forward_backward equals forward + backward bit for bit
// (with ignored targets, dropout and accumulation), and with the CPU's own one-pass classifier
// (cpu::fused_classifier) to its rounding; GELU recompute and the CUDA-graph option change
// nothing, the classifier in chunks of rows only wte's gradient by rounding, and the dtype plumbing (TensorPtr, parse_dtype, the CPU's refusal of bf16).
#include "common/catch.hpp"

#include <cstring>

#include "core/check.hpp"
#include "core/model.hpp"
#include "cpu/backend.hpp"
#include "model_test_util.hpp"

using namespace gpt2cc;

namespace {
// The CPU backend with the classifier of Backend's default: crossentropy_forward, then
// crossentropy_backward in place, which is what forward + backward run.
class ComposedClassifierBackend final : public cpu::CpuBackend {
 public:
  using CpuBackend::CpuBackend;
  void fused_classifier(TensorPtr logits, float* losses, const int* targets, float dloss, int B, int T, int V,
                        int Vp) override {
    Backend::fused_classifier(logits, losses, targets, dloss, B, T, V, Vp);
  }
};
}  // namespace

TEST_CASE("forward_backward equals forward then backward, bit for bit", "[model][fused]") {
  const float dropout = GENERATE(0.0f, 0.1f);
  INFO("dropout " << dropout);
  const ModelConfig c = test::tiny_config(dropout);
  const int B = 3, T = 7;
  ComposedClassifierBackend composed(1);
  auto backend = make_cpu_backend(1);
  GPT2 reference(c, composed, B, T), fused(c, composed, B, T), cpu_fused(c, *backend, B, T);
  const auto params = test::random_parameters(reference.layout(), c, 301);
  for (GPT2* model : {&reference, &fused, &cpu_fused}) {
    model->set_parameters(params);
    model->zero_grad();
  }
  // Two micro-batches accumulate into the same gradients.
  for (int micro = 0; micro < 2; ++micro) {
    const auto inputs = test::random_tokens(size_t(B) * T, 302 + micro, c.vocab_size);
    const auto targets = test::targets_with_ignored(size_t(B) * T, 304 + micro, c.vocab_size);
    const float dloss = 1.0f / 30.0f;
    const float a = reference.forward(inputs.data(), targets.data(), B, T, true, 306 + micro);
    reference.backward(dloss);
    const float b = fused.forward_backward(inputs.data(), targets.data(), B, T, dloss, 306 + micro);
    const float d = cpu_fused.forward_backward(inputs.data(), targets.data(), B, T, dloss, 306 + micro);
    CHECK(a == b);
    CHECK(fused.num_targets() == reference.num_targets());
    CHECK(fused.losses() == reference.losses());
    CHECK(d == Approx(a).epsilon(1e-6));
    test::expect_close(cpu_fused.losses(), reference.losses(), 1e-6, 1e-6, "losses, the CPU's classifier");
  }
  CHECK(fused.gradients() == reference.gradients());
  CHECK(fused.grad_norm() == reference.grad_norm());
  test::expect_close(cpu_fused.gradients(), reference.gradients(), 1e-7, 1e-5, "gradients, the CPU's classifier");
  CHECK(cpu_fused.grad_norm() == Approx(reference.grad_norm()).epsilon(1e-6));
  // The logits became dlogits: logits() says so instead of returning them.
  CHECK_THROWS_WITH(fused.logits(), Catch::Contains("backward reuses their memory"));
}

TEST_CASE("GELU recompute and the CUDA-graph option change no gradient bit", "[model][fused]") {
  const ModelConfig c = test::tiny_config();
  const int B = 2, T = 8;
  auto backend = make_cpu_backend(1);
  ModelOptions recompute, no_graphs;
  recompute.recompute_gelu = true;
  no_graphs.cuda_graphs = false;
  GPT2 plain(c, *backend, B, T), a(c, *backend, B, T, ModelMode::training, recompute),
      b(c, *backend, B, T, ModelMode::training, no_graphs);
  CHECK(a.options().recompute_gelu);
  CHECK_FALSE(b.options().cuda_graphs);
  const auto params = test::random_parameters(plain.layout(), c, 311);
  const auto inputs = test::random_tokens(size_t(B) * T, 312, c.vocab_size);
  const auto targets = test::random_tokens(size_t(B) * T, 313, c.vocab_size);
  for (GPT2* model : {&plain, &a, &b}) {
    model->set_parameters(params);
    model->zero_grad();
    // Three calls with the same shapes: on CUDA the second records a graph, the third replays it.
    for (int call = 0; call < 3; ++call) model->forward_backward(inputs.data(), targets.data(), B, T, 0.05f);
  }
  CHECK(a.gradients() == plain.gradients());
  CHECK(b.gradients() == plain.gradients());
}

// ModelOptions::classifier_rows: the classifier in chunks of rows. Chunks of 9 of 36 rows (the
// CPU's blocked GEMM from 6 rows on gives each row the same bits in any call) give every loss and
// every gradient but wte's the bits of one chunk; wte's classifier part sums the chunks' in turn,
// so it differs by rounding. The same through forward + backward (which projects each chunk
// again), and logits() after a chunked forward projects all rows again.
TEST_CASE("the classifier in chunks of rows computes what it computes in one", "[model][fused]") {
  const ModelConfig c = test::tiny_config();
  const int B = 6, T = 6;
  ComposedClassifierBackend composed(1);
  ModelOptions chunks;
  chunks.classifier_rows = 9;
  GPT2 whole(c, composed, B, T), chunked(c, composed, B, T, ModelMode::training, chunks),
      separate(c, composed, B, T, ModelMode::training, chunks);
  CHECK(whole.options().classifier_rows == 8192);
  const auto params = test::random_parameters(whole.layout(), c, 321);
  const auto inputs = test::random_tokens(size_t(B) * T, 322, c.vocab_size);
  const auto targets = test::targets_with_ignored(size_t(B) * T, 323, c.vocab_size);
  const float dloss = 1.0f / 30.0f;
  for (GPT2* model : {&whole, &chunked, &separate}) {
    model->set_parameters(params);
    model->zero_grad();
  }
  // forward: the same losses; logits() the same.
  const float loss = whole.forward(inputs.data(), targets.data(), B, T);
  CHECK(separate.forward(inputs.data(), targets.data(), B, T) == loss);
  CHECK(separate.losses() == whole.losses());
  CHECK(separate.logits() == whole.logits());
  CHECK(separate.logits() == whole.logits());  // projected again each time, to the same bits
  separate.backward(dloss);
  whole.backward(dloss);
  CHECK(chunked.forward_backward(inputs.data(), targets.data(), B, T, dloss) == loss);
  CHECK(chunked.losses() == whole.losses());
  CHECK_THROWS_WITH(separate.logits(), Catch::Contains("backward reuses their memory"));

  const auto expected = whole.gradients(), fused = chunked.gradients(), split = separate.gradients();
  CHECK(split == fused);
  const ParamTensor& wte = whole.layout()[Param::wte];
  const auto wte_of = [&](const std::vector<float>& g) {
    return std::vector<float>(g.begin() + std::ptrdiff_t(wte.offset), g.begin() + std::ptrdiff_t(wte.offset + wte.numel));
  };
  const auto without_wte = [&](std::vector<float> g) {
    g.erase(g.begin() + std::ptrdiff_t(wte.offset), g.begin() + std::ptrdiff_t(wte.offset + wte.numel));
    return g;
  };
  CHECK(without_wte(fused) == without_wte(expected));
  REQUIRE_FALSE(wte_of(fused) == wte_of(expected));  // the premise: the chunks' sums round otherwise
  test::expect_close(wte_of(fused), wte_of(expected), 1e-7, 1e-5, "wte gradient, chunked");
  // 0: every row in one chunk, whatever B*T: the one-chunk model's losses and gradients.
  GPT2 all_rows(c, composed, B, T, ModelMode::training, ModelOptions{.classifier_rows = 0});
  CHECK(all_rows.memory().logits == whole.memory().logits);
  all_rows.set_parameters(params);
  all_rows.zero_grad();
  CHECK(all_rows.forward_backward(inputs.data(), targets.data(), B, T, dloss) == loss);
  CHECK(all_rows.gradients() == expected);
  CHECK_THROWS_WITH(GPT2(c, composed, B, T, ModelMode::training, ModelOptions{.classifier_rows = -1}),
                    Catch::Contains("classifier_rows must be >= 0 (0: all rows at once), got -1"));
}

TEST_CASE("dtypes: names, sizes, TensorPtr arithmetic, and the fp32 CPU backend refuses bf16 tensors",
          "[model][dtype]") {
  CHECK(parse_dtype("fp32") == DType::fp32);
  CHECK(parse_dtype("bf16") == DType::bf16);
  CHECK_THROWS_AS(parse_dtype("fp16"), InputError);
  CHECK_THROWS_WITH(parse_dtype("BF16"), Catch::Contains("--dtype must be fp32 or bf16") && Catch::Contains("BF16"));
  CHECK(std::string(dtype_name(DType::bf16)) == "bf16");
  CHECK(dtype_size(DType::fp32) == 4);
  CHECK(dtype_size(DType::bf16) == 2);

  // Offsets count elements of the tensor's dtype.
  alignas(16) unsigned char storage[64] = {};
  const TensorPtr bf16_ptr(storage, DType::bf16);
  CHECK((bf16_ptr + 5).data == storage + 10);
  float* floats = reinterpret_cast<float*>(storage);
  const TensorPtr f32_ptr = floats;
  CHECK(f32_ptr.dtype == DType::fp32);
  CHECK((f32_ptr + 5).data == floats + 5);
  const ConstTensorPtr as_const = bf16_ptr + 3;
  CHECK(as_const.dtype == DType::bf16);
  CHECK(!ConstTensorPtr(nullptr));

  CHECK(make_cpu_backend(1, DType::bf16)->dtype() == DType::bf16);  // tests/cpu/test_backend_bf16.cpp
  auto backend = make_cpu_backend(1);
  CHECK(backend->dtype() == DType::fp32);
  // A bf16 tensor handed to the CPU is refused, not reinterpreted as floats.
  CHECK_THROWS_WITH(backend->gelu_forward(TensorPtr(storage, DType::bf16), floats, 4), Catch::Contains("bf16 tensor"));

  // download_as_float and the fp32 "conversions" are plain copies on the CPU.
  DeviceTensor t(*backend, 6);
  CHECK(t.bytes() == 24);
  const std::vector<float> values = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -0.125f};
  backend->convert_from_float(t.data(), values.data(), values.size());
  CHECK(download_as_float(*backend, t.data(), values.size()) == values);
  std::vector<float> back(values.size());
  backend->convert_to_float(back.data(), t.data(), values.size());
  CHECK(back == values);

  GPT2 model(test::tiny_config(), *backend, 1, 4);
  CHECK(model.dtype() == DType::fp32);
}
