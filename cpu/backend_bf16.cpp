// The CPU backend in bf16 (cpu/backend.hpp, CpuBf16Backend): most ops widen their bf16 operands
// into scratch, run CpuBackend's fp32 op and round its outputs back; the embedding, the matmul
// (forward; backward where the CPU has AVX512-BF16), the decode attention, the cache store,
// AdamW and the gradients' sum of squares read bf16 in place, and the classifier one row at a
// time.
#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <numeric>

#include "core/check.hpp"
#include "cpu/adamw.hpp"
#include "cpu/attention.hpp"
#include "cpu/backend.hpp"
#include "cpu/bf16.hpp"
#include "cpu/crossentropy.hpp"
#include "cpu/gemm.hpp"
#include "cpu/matmul.hpp"

namespace gpt2cc::cpu {

// One op's fp32 views of its operands, in scratch taken from the backend's stack and given back
// when the op returns.
class Staging {
 public:
  explicit Staging(CpuBf16Backend& backend) : backend_(backend), depth_(backend.scratch_depth_) {}
  ~Staging() { backend_.scratch_depth_ = depth_; }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;

  // An input of n elements as fp32: the tensor itself when it is fp32 (or null: no tensor), else
  // widened.
  const float* in(ConstTensorPtr p, size_t n) {
    if (!p || p.dtype == DType::fp32) return static_cast<const float*>(p.data);
    float* wide = take(n);
    widen_bf16(wide, static_cast<const uint16_t*>(p.data), n);
    return wide;
  }
  // Where an op writes an output of n elements in fp32: the tensor itself when it is fp32 (or
  // null), else scratch, holding the tensor's widened values when the op accumulates into it (+=).
  float* out(TensorPtr p, size_t n, bool accumulate) {
    if (!p || p.dtype == DType::fp32) return static_cast<float*>(p.data);
    float* wide = take(n);
    if (accumulate) widen_bf16(wide, static_cast<const uint16_t*>(p.data), n);
    return wide;
  }
  // The output `wide` (from out(p, ...)) rounded into p; nothing to do when p is fp32.
  static void commit(TensorPtr p, const float* wide, size_t n) {
    if (p && p.dtype == DType::bf16) round_to_bf16(static_cast<uint16_t*>(p.data), wide, n);
  }

 private:
  float* take(size_t n) {
    auto& stack = backend_.scratch_;
    if (backend_.scratch_depth_ == stack.size()) stack.emplace_back(nullptr, 0);
    auto& [data, floats] = stack[backend_.scratch_depth_++];
    if (floats < n) {
      backend_.release(data);
      data = nullptr;
      floats = 0;
      data = static_cast<float*>(backend_.allocate(n * sizeof(float)));
      floats = n;
    }
    return data;
  }

  CpuBf16Backend& backend_;
  size_t depth_;
};

namespace {
// The bits of a tensor that must be bf16 (the ops that read it in place).
uint16_t* bits(TensorPtr p) {
  ENSURE(p.dtype == DType::bf16, "cpu bf16 backend: expected a bf16 tensor, got {}", dtype_name(p.dtype));
  return static_cast<uint16_t*>(p.data);
}
const uint16_t* bits(ConstTensorPtr p) {
  ENSURE(p.dtype == DType::bf16, "cpu bf16 backend: expected a bf16 tensor, got {}", dtype_name(p.dtype));
  return static_cast<const uint16_t*>(p.data);
}

size_t product(int a, int b, int c = 1) { return size_t(a) * size_t(b) * size_t(c); }

}  // namespace

CpuBf16Backend::~CpuBf16Backend() {
  for (auto& [data, floats] : scratch_) release(data);
}

void CpuBf16Backend::convert_from_float(TensorPtr dst, const float* src, size_t N) {
  round_to_bf16(bits(dst), src, N);
}
void CpuBf16Backend::convert_to_float(float* dst, ConstTensorPtr src, size_t N) { widen_bf16(dst, bits(src), N); }

// out[b,t] = wte[inp[b,t]] + wpe[t], the sum in fp32 rounded once.
void CpuBf16Backend::encoder_forward(TensorPtr out, const int* inp, ConstTensorPtr wte, ConstTensorPtr wpe, int B,
                                     int T, int C) {
  uint16_t* o = bits(out);
  const uint16_t *te = bits(wte), *pe = bits(wpe);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const size_t bt = size_t(b) * T + t;
      const uint16_t* token_row = te + size_t(inp[bt]) * C;
      const uint16_t* position_row = pe + size_t(t) * C;
      for (int c = 0; c < C; ++c) o[bt * C + c] = round_to_bf16(widen_bf16(token_row[c]) + widen_bf16(position_row[c]));
    }
  }
}

// dwpe[t] += sum_b dout[b,t]; dwte[v] += the dout rows of every position holding token v, summed
// in fp32 in position order and rounded once per row (the positions sorted by token, as the CUDA
// kernel does, so that a token's row is one thread's). fp32 gradients (dwte, dwpe) take the sums
// unrounded.
void CpuBf16Backend::encoder_backward(TensorPtr dwte, TensorPtr dwpe, ConstTensorPtr dout, const int* inp, int B,
                                      int T, int C) {
  Staging s(*this);
  const size_t BT = product(B, T);
  const float* d = s.in(dout, BT * C);
  float* dpe = s.out(dwpe, product(T, C), true);
  for (int b = 0; b < B; ++b) CpuBackend::residual_forward(dpe, dpe, d + product(b, T, C), product(T, C));
  Staging::commit(dwpe, dpe, product(T, C));

  std::vector<int> order(BT);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return inp[x] < inp[y]; });
  std::vector<size_t> runs;  // where each token's positions begin in `order`, and BT at the end
  for (size_t i = 0; i < BT; ++i)
    if (i == 0 || inp[order[i]] != inp[order[i - 1]]) runs.push_back(i);
  runs.push_back(BT);
  const size_t tokens = runs.size() - 1;
  auto add_runs = [&](auto* te) {  // uint16_t (bf16) or float rows
#pragma omp parallel for schedule(dynamic, 16)
    for (size_t r = 0; r < tokens; ++r) {
      auto* row = te + size_t(inp[order[runs[r]]]) * C;
      thread_local std::vector<float> sum;
      sum.resize(C);
      for (int c = 0; c < C; ++c) sum[c] = as_float(row[c]);
      for (size_t i = runs[r]; i < runs[r + 1]; ++i) {
        const float* dr = d + size_t(order[i]) * C;
        for (int c = 0; c < C; ++c) sum[c] += dr[c];
      }
      for (int c = 0; c < C; ++c) put_float(row[c], sum[c]);
    }
  };
  if (dwte.dtype == DType::fp32)
    add_runs(static_cast<float*>(dwte.data));
  else
    add_runs(bits(dwte));
}

void CpuBf16Backend::layernorm_forward(TensorPtr out, float* mean, float* rstd, ConstTensorPtr inp,
                                       ConstTensorPtr weight, ConstTensorPtr bias, int B, int T, int C) {
  Staging s(*this);
  const size_t n = product(B, T, C);
  float* o = s.out(out, n, false);
  CpuBackend::layernorm_forward(o, mean, rstd, s.in(inp, n), s.in(weight, C), s.in(bias, C), B, T, C);
  Staging::commit(out, o, n);
}

void CpuBf16Backend::layernorm_backward(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout,
                                        const float* mean, const float* rstd, ConstTensorPtr inp,
                                        ConstTensorPtr weight, int B, int T, int C) {
  Staging s(*this);
  const size_t n = product(B, T, C);
  float* di = s.out(dinp, n, true);
  float* dw = s.out(dweight, C, true);
  float* db = s.out(dbias, C, true);
  CpuBackend::layernorm_backward(di, dw, db, s.in(dout, n), mean, rstd, s.in(inp, n), s.in(weight, C), B, T, C);
  Staging::commit(dinp, di, n);
  Staging::commit(dweight, dw, C);
  Staging::commit(dbias, db, C);
}

// The weight read as bf16 in place (decoding: half the bytes of fp32's pass over it; prefill: AMX
// tiles, or VDPBF16PS, where the CPU has them, either rounding straight into a bf16 out).
void CpuBf16Backend::matmul_forward(TensorPtr out, ConstTensorPtr inp, ConstTensorPtr weight, ConstTensorPtr bias,
                                    int B, int T, int C, int OC) {
  Staging s(*this);
  if (out.dtype == DType::bf16 && inp.dtype == DType::bf16 && cpu::matmul_forward_bf16_direct(B * T, C, OC)) {
    cpu::matmul_forward_bf16(bits(out), bits(inp), bits(weight), s.in(bias, OC), B, T, C, OC);
    return;
  }
  const size_t n = product(B, T, OC);
  float* o = s.out(out, n, false);
  if (inp.dtype == DType::bf16) {
    cpu::matmul_forward_bf16(o, bits(inp), bits(weight), s.in(bias, OC), B, T, C, OC);
  } else {  // an fp32 intermediate of a fused op
    cpu::matmul_forward_bf16_weight(o, s.in(inp, product(B, T, C)), bits(weight), s.in(bias, OC), B, T, C, OC);
  }
  Staging::commit(out, o, n);
}

// The operands read as bf16 by the bf16 products where the CPU has them (AVX512-BF16), which
// round dinp and the weight gradient in place (where each is bf16: an fp32 one takes the fp32
// result); else widened for the fp32 backward.
void CpuBf16Backend::matmul_backward(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout,
                                     ConstTensorPtr inp, ConstTensorPtr weight, int B, int T, int C, int OC) {
  Staging s(*this);
  const size_t nin = product(B, T, C), nw = product(OC, C);
  float* db = s.out(dbias, OC, true);
  const bool operands_bf16 = dout.dtype == DType::bf16 && inp.dtype == DType::bf16 && weight.dtype == DType::bf16;
  if (operands_bf16 && gemm_bf16_enabled()) {
    // dinp fp32: the product of matmul_backward_gelu; dweight fp32: a sum kept in fp32 (the
    // classifier's chunks).
    auto with_dweight = [&](auto* di) {
      if (dweight.dtype == DType::bf16)
        cpu::matmul_backward_bf16(di, bits(dweight), db, bits(dout), bits(inp), bits(weight), B, T, C, OC);
      else
        cpu::matmul_backward_bf16(di, static_cast<float*>(dweight.data), db, bits(dout), bits(inp), bits(weight), B,
                                  T, C, OC);
    };
    if (dinp.dtype == DType::bf16)
      with_dweight(bits(dinp));
    else
      with_dweight(static_cast<float*>(dinp.data));
  } else {
    float* di = s.out(dinp, nin, false);
    float* dw = s.out(dweight, nw, true);
    CpuBackend::matmul_backward(di, dw, db, s.in(dout, product(B, T, OC)), s.in(inp, nin), s.in(weight, nw), B, T,
                                C, OC);
    Staging::commit(dinp, di, nin);
    Staging::commit(dweight, dw, nw);
  }
  Staging::commit(dbias, db, OC);
}

// GELU of the product's fp32 result (as the CUDA backend's fused epilogue), not of its rounding.
void CpuBf16Backend::matmul_forward_gelu(TensorPtr out, TensorPtr pre, ConstTensorPtr inp, ConstTensorPtr weight,
                                         ConstTensorPtr bias, int B, int T, int C, int OC) {
  Staging s(*this);
  const size_t n = product(B, T, OC);
  float* p = s.out(pre, n, false);
  matmul_forward(p, inp, weight, bias, B, T, C, OC);
  gelu_forward(out, p, n);
  Staging::commit(pre, p, n);
}

// dinp = (dout weight) * gelu'(pre) with the product kept in fp32: one rounding, not two.
void CpuBf16Backend::matmul_backward_gelu(TensorPtr dinp, TensorPtr dweight, TensorPtr dbias, ConstTensorPtr dout,
                                          ConstTensorPtr inp, ConstTensorPtr weight, ConstTensorPtr pre, int B, int T,
                                          int C, int OC) {
  Staging s(*this);
  const size_t n = product(B, T, C);
  float* di = s.out(dinp, n, false);
  matmul_backward(di, dweight, dbias, dout, inp, weight, B, T, C, OC);
  CpuBackend::gelu_backward(di, di, s.in(pre, n), n);
  Staging::commit(dinp, di, n);
}

void CpuBf16Backend::attention_forward(TensorPtr out, float* saved, ConstTensorPtr qkv, int B, int T, int C, int NH,
                                       const DropoutParams& dropout) {
  Staging s(*this);
  const size_t n = product(B, T, C);
  float* o = s.out(out, n, false);
  CpuBackend::attention_forward(o, saved, s.in(qkv, 3 * n), B, T, C, NH, dropout);
  Staging::commit(out, o, n);
}

void CpuBf16Backend::attention_backward(TensorPtr dqkv, ConstTensorPtr dout, const float* saved, ConstTensorPtr qkv,
                                        ConstTensorPtr out, int B, int T, int C, int NH,
                                        const DropoutParams& dropout) {
  Staging s(*this);
  const size_t n = product(B, T, C);
  float* dq = s.out(dqkv, 3 * n, false);
  CpuBackend::attention_backward(dq, s.in(dout, n), saved, s.in(qkv, 3 * n), s.in(out, n), B, T, C, NH, dropout);
  Staging::commit(dqkv, dq, 3 * n);
}

// The caches read as bf16 in place: at long contexts they are read as much as the weights.
void CpuBf16Backend::attention_decode(TensorPtr out, TensorPtr kcache, TensorPtr vcache, ConstTensorPtr qkv, int B,
                                      int pos, int maxT, int C, int NH) {
  Staging s(*this);
  const size_t n = product(B, 1, C);
  float* o = s.out(out, n, false);
  cpu::attention_decode_bf16(o, bits(kcache), bits(vcache), bits(qkv), B, pos, maxT, C, NH);
  Staging::commit(out, o, n);
}

void CpuBf16Backend::kv_cache_store(TensorPtr kcache, TensorPtr vcache, ConstTensorPtr qkv, int B, int T, int maxT,
                                    int C) {
  cpu::kv_cache_store_bf16(bits(kcache), bits(vcache), bits(qkv), B, T, maxT, C);
}

void CpuBf16Backend::gelu_forward(TensorPtr out, ConstTensorPtr inp, size_t N) {
  Staging s(*this);
  float* o = s.out(out, N, false);
  CpuBackend::gelu_forward(o, s.in(inp, N), N);
  Staging::commit(out, o, N);
}

void CpuBf16Backend::gelu_backward(TensorPtr dinp, ConstTensorPtr dout, ConstTensorPtr inp, size_t N) {
  Staging s(*this);
  float* di = s.out(dinp, N, false);
  CpuBackend::gelu_backward(di, s.in(dout, N), s.in(inp, N), N);
  Staging::commit(dinp, di, N);
}

namespace {
// out[i] = round(inp1[i] + inp2[i]), each operand read as it is stored (the fp32 op's sums).
template <class In1, class In2>
void add_rounded(uint16_t* out, const In1* inp1, const In2* inp2, size_t N) {
#pragma omp parallel for schedule(static) if (N >= (size_t{1} << 16))
  for (size_t i = 0; i < N; ++i) out[i] = round_to_bf16(as_float(inp1[i]) + as_float(inp2[i]));
}
}  // namespace

// Into a bf16 out, the operands read in place: no fp32 copies of them (the classifier's fp32 sum
// of wte's gradient, added into the bf16 gradient, would take two of Vp x C floats).
void CpuBf16Backend::residual_forward(TensorPtr out, ConstTensorPtr inp1, ConstTensorPtr inp2, size_t N) {
  if (out.dtype == DType::bf16) {
    const auto with_inp2 = [&](const auto* a) {
      if (inp2.dtype == DType::bf16)
        add_rounded(bits(out), a, bits(inp2), N);
      else
        add_rounded(bits(out), a, static_cast<const float*>(inp2.data), N);
    };
    if (inp1.dtype == DType::bf16)
      with_inp2(bits(inp1));
    else
      with_inp2(static_cast<const float*>(inp1.data));
    return;
  }
  Staging s(*this);
  float* o = s.out(out, N, false);
  CpuBackend::residual_forward(o, s.in(inp1, N), s.in(inp2, N), N);
  Staging::commit(out, o, N);
}

// dinp1 += dout, then dinp2 += dout, each rounded before the next is read: right when they alias.
void CpuBf16Backend::residual_backward(TensorPtr dinp1, TensorPtr dinp2, ConstTensorPtr dout, size_t N) {
  Staging s(*this);
  const float* d = s.in(dout, N);
  for (TensorPtr dinp : {dinp1, dinp2}) {
    Staging inner(*this);
    float* di = inner.out(dinp, N, true);
    CpuBackend::residual_forward(di, di, d, N);
    Staging::commit(dinp, di, N);
  }
}

void CpuBf16Backend::dropout_forward(TensorPtr out, ConstTensorPtr inp, const DropoutParams& dropout, size_t N) {
  Staging s(*this);
  float* o = s.out(out, N, false);
  CpuBackend::dropout_forward(o, s.in(inp, N), dropout, N);
  Staging::commit(out, o, N);
}

void CpuBf16Backend::dropout_backward(TensorPtr dinp, ConstTensorPtr dout, const DropoutParams& dropout, size_t N) {
  Staging s(*this);
  float* di = s.out(dinp, N, false);
  CpuBackend::dropout_backward(di, s.in(dout, N), dropout, N);
  Staging::commit(dinp, di, N);
}

// The classifier's rows widened one at a time (cpu/crossentropy.hpp).
void CpuBf16Backend::crossentropy_forward(float* losses, ConstTensorPtr logits, const int* targets, int B, int T,
                                          int V, int Vp) {
  cpu::crossentropy_forward_vectorized(losses, bits(logits), targets, B, T, V, Vp);
}

void CpuBf16Backend::crossentropy_backward(TensorPtr dlogits, float dloss, ConstTensorPtr logits, const int* targets,
                                           int B, int T, int V, int Vp) {
  cpu::crossentropy_backward(bits(dlogits), dloss, bits(logits), targets, B, T, V, Vp);
}

void CpuBf16Backend::fused_classifier(TensorPtr logits, float* losses, const int* targets, float dloss, int B, int T,
                                      int V, int Vp) {
  cpu::fused_classifier(bits(logits), losses, targets, dloss, B, T, V, Vp);
}

double CpuBf16Backend::sum_of_squares(ConstTensorPtr x, size_t N) {
  if (x.dtype == DType::fp32) return cpu::sum_of_squares(static_cast<const float*>(x.data), N);  // fp32 gradients
  return cpu::sum_of_squares(bits(x), N);
}

// The fp32 master updated from the gradients (bf16, or fp32 ones) and rounded into the compute
// copy, in one pass.
void CpuBf16Backend::adamw_update(float* master, TensorPtr params, float* m, float* v, ConstTensorPtr grads, size_t N,
                                  const AdamWParams& hp) {
  if (grads.dtype == DType::fp32)
    return cpu::adamw_update(master, bits(params), m, v, static_cast<const float*>(grads.data), N, hp);
  cpu::adamw_update(master, bits(params), m, v, bits(grads), N, hp);
}

}  // namespace gpt2cc::cpu
