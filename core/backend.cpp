// What every backend shares: the dtype names, and the default implementations of the fused ops
// as the compositions of single ops that define them (core/backend.hpp). The CPU backend uses
// these; the CUDA backend overrides each with one fused kernel.
#include "core/backend.hpp"

#include "core/check.hpp"

namespace gpt2cc {

size_t dtype_size(DType dtype) { return dtype == DType::bf16 ? 2 : 4; }

const char* dtype_name(DType dtype) { return dtype == DType::bf16 ? "bf16" : "fp32"; }

DType parse_dtype(const std::string& name) {
  if (name == "fp32") return DType::fp32;
  if (name == "bf16") return DType::bf16;
  fail_input(format("--dtype must be fp32 or bf16, got '{}'", name));
}

void check_thread_count(int threads, const char* what, int least) {
  INPUT_CHECK(threads >= least && threads <= kMaxThreads, "{} must be from {} to {}{}, got {}", what, least,
              kMaxThreads, least == 0 ? " (0: OMP_NUM_THREADS, else all cores)" : "", threads);
}

void check_environment_thread_count(int threads) {
  INPUT_CHECK(threads <= kMaxThreads, "OMP_NUM_THREADS asks for {} threads, more than {}: give --threads, or a smaller "
              "OMP_NUM_THREADS", threads, kMaxThreads);
}

std::vector<float> download_as_float(Backend& backend, ConstTensorPtr src, size_t N) {
  std::vector<float> host(N);
  if (src.dtype == DType::fp32) {
    backend.download(host.data(), src.data, N * sizeof(float));
  } else {
    DeviceArray<float> wide(backend, N);
    backend.convert_to_float(wide.data(), src, N);
    backend.download(host.data(), wide.data(), N * sizeof(float));
  }
  return host;
}

void Backend::residual_layernorm_forward(TensorPtr residual, TensorPtr out, float* mean, float* rstd,
                                         ConstTensorPtr inp1, ConstTensorPtr inp2, ConstTensorPtr weight,
                                         ConstTensorPtr bias, int B, int T, int C) {
  residual_forward(residual, inp1, inp2, size_t(B) * T * C);
  layernorm_forward(out, mean, rstd, residual, weight, bias, B, T, C);
}

void Backend::matmul_forward_gelu(TensorPtr out, TensorPtr pre, ConstTensorPtr inp, ConstTensorPtr weight,
                                  ConstTensorPtr bias, int B, int T, int C, int OC) {
  matmul_forward(pre, inp, weight, bias, B, T, C, OC);
  gelu_forward(out, pre, size_t(B) * T * OC);
}

void Backend::matmul_backward_gelu(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout,
                                   ConstTensorPtr inp, ConstTensorPtr weight, ConstTensorPtr pre, int B, int T, int C,
                                   int OC) {
  matmul_backward(dinp, dweight, dbias, dout, inp, weight, B, T, C, OC);
  // gelu_backward reads element i of its dout before writing element i of dinp: in place is exact.
  gelu_backward(dinp, dinp, pre, size_t(B) * T * C);
}

void Backend::fused_classifier(TensorPtr logits, float* losses, const int* targets, float dloss, int B, int T, int V,
                               int Vp) {
  crossentropy_forward(losses, logits, targets, B, T, V, Vp);
  crossentropy_backward(logits, dloss, logits, targets, B, T, V, Vp);
}

}  // namespace gpt2cc
