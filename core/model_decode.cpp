// GPT-2 inference with a KV cache (core/model.hpp prefill / decode). prefill runs the normal
// forward over the prompt and stores every layer's k, v into the cache; decode runs the blocks
// for one new token per row (T = 1), attending over the cached positions 0..pos with
// attention_decode, and adds wpe[pos] by offsetting the position table. Both compute logits
// for the last position only. The cache holds (L, max_B, maxT = config.max_seq_len, C) elements
// of the compute dtype for k and again for v; it is allocated on the first prefill.
#include <algorithm>

#include "core/check.hpp"
#include "core/model.hpp"
#include "core/model_impl.hpp"

namespace gpt2cc {

namespace {

void check_tokens(const int* tokens, size_t n, int V, const char* what) {
  INPUT_CHECK(tokens != nullptr, "{}: tokens must not be null", what);
  for (size_t i = 0; i < n; ++i)
    INPUT_CHECK(tokens[i] >= 0 && tokens[i] < V, "{}: token {} at index {} is outside [0, {})", what, tokens[i], i,
                V);
}

// Host copy (fp32) of the first V columns of logits rows (B, Vp).
std::vector<float> download_last_logits(Backend& backend, const ModelConfig& config, ConstTensorPtr logits, int B) {
  const size_t V = config.vocab_size, Vp = config.padded_vocab_size;
  std::vector<float> out(size_t(B) * V);
  const std::vector<float> padded = download_as_float(backend, logits, size_t(B) * Vp);
  for (int b = 0; b < B; ++b)
    for (size_t i = 0; i < V; ++i) out[b * V + i] = padded[b * Vp + i];
  return out;
}

}  // namespace

std::vector<float> GPT2::prefill(const int* tokens, int B, int T) {
  Impl& s = *impl_;
  const int C = s.config.channels, L = s.config.num_layers, maxS = s.config.max_seq_len;
  INPUT_CHECK(B >= 1 && B <= s.max_B, "prefill: batch size B must be in [1, {}], got {}", s.max_B, B);
  INPUT_CHECK(T >= 1 && T <= s.max_T, "prefill: prompt length T must be in [1, {}] (the model's maximum), got {}",
              s.max_T, T);
  check_tokens(tokens, size_t(B) * T, s.config.vocab_size, "prefill");
  const size_t cache_stride = size_t(s.max_B) * maxS * C;
  if (!s.kcache.data()) {
    s.kcache = DeviceTensor(s.backend, L * cache_stride);
    s.vcache = DeviceTensor(s.backend, L * cache_stride);
  }
  s.backend.upload(s.act.inputs.data(), tokens, size_t(B) * T * sizeof(int));
  s.training = false;
  s.forward_trunk(B, T);
  for (int l = 0; l < L; ++l)
    s.backend.kv_cache_store(s.kcache.data() + l * cache_stride, s.vcache.data() + l * cache_stride,
                             s.act.qkv.data() + s.slab(l, 3 * C), B, T, maxS, C);

  // Only the last position's logits are needed: gather its lnf rows into (B, C), then project.
  const TensorPtr last = s.scratch.bufC_a.data();
  for (int b = 0; b < B; ++b)
    s.backend.copy((last + size_t(b) * C).data, (s.act.lnf.data() + (size_t(b) * T + T - 1) * C).data,
                   C * dtype_size(s.dtype));
  s.backend.matmul_forward(s.act.logits.data(), last, s.params() + s.at(Param::wte), nullptr, B, 1, C,
                           s.config.padded_vocab_size);
  // The activations now describe a prompt without targets: no backward, no logits() of it.
  s.has_forward = false;
  s.logits_valid = false;
  s.cache_B = B;
  s.cache_len = T;
  return download_last_logits(s.backend, s.config, s.act.logits.data(), B);
}

std::vector<float> GPT2::decode(const int* tokens, int B, int pos) {
  Impl& s = *impl_;
  Backend& be = s.backend;
  const int C = s.config.channels, NH = s.config.num_heads, L = s.config.num_layers, maxS = s.config.max_seq_len;
  INPUT_CHECK(s.cache_B > 0, "decode: run prefill first (the KV cache is empty)");
  INPUT_CHECK(B == s.cache_B, "decode: batch size B must equal the prefill's ({}), got {}", s.cache_B, B);
  INPUT_CHECK(pos >= 1 && pos <= s.cache_len && pos < maxS,
              "decode: position must be in [1, {}] (cached positions 0..{}, max_seq_len {}), got {}",
              std::min(s.cache_len, maxS - 1), s.cache_len - 1, maxS, pos);
  check_tokens(tokens, size_t(B), s.config.vocab_size, "decode");
  const size_t cache_stride = size_t(s.max_B) * maxS * C;
  const TensorPtr P = s.params();
  auto P_ = [&](Param p, int l = 0) { return P + s.at(p, l); };
  be.upload(s.act.inputs.data(), tokens, size_t(B) * sizeof(int));

  // Layer l's activation slabs (sized for max_B x max_T >= B x 1) serve as scratch for the one
  // token; the LayerNorm statistics of every layer go to slab 0 (no backward reads them).
  float* mean = s.act.ln1_mean.data();
  float* rstd = s.act.ln1_rstd.data();
  TensorPtr x = s.act.encoded.data();
  be.encoder_forward(x, s.act.inputs.data(), P_(Param::wte), P_(Param::wpe) + size_t(pos) * C, B, 1, C);
  be.layernorm_forward(s.act.ln1.data(), mean, rstd, x, P_(Param::ln1w), P_(Param::ln1b), B, 1, C);
  for (int l = 0; l < L; ++l) {
    const TensorPtr ln1 = s.act.ln1.data() + s.slab(l, C);
    const TensorPtr qkv = s.act.qkv.data() + s.slab(l, 3 * C);
    const TensorPtr atty = s.act.atty.data() + s.slab(l, C);
    const TensorPtr res2 = s.act.residual2.data() + s.slab(l, C);
    const TensorPtr ln2 = s.act.ln2.data() + s.slab(l, C);
    const TensorPtr fch = s.act.fch.data() + s.slab(l, 4 * C);
    const TensorPtr res3 = s.act.residual3.data() + s.slab(l, C);
    const TensorPtr proj = s.scratch.bufC_a.data();
    be.matmul_forward(qkv, ln1, P_(Param::qkvw, l), P_(Param::qkvb, l), B, 1, C, 3 * C);
    be.attention_decode(atty, s.kcache.data() + l * cache_stride, s.vcache.data() + l * cache_stride, qkv, B, pos,
                        maxS, C, NH);
    be.matmul_forward(proj, atty, P_(Param::attprojw, l), P_(Param::attprojb, l), B, 1, C, C);
    be.residual_layernorm_forward(res2, ln2, mean, rstd, x, proj, P_(Param::ln2w, l), P_(Param::ln2b, l), B, 1, C);
    be.matmul_forward_gelu(s.fch_gelu(l), fch, ln2, P_(Param::fcw, l), P_(Param::fcb, l), B, 1, C, 4 * C);
    be.matmul_forward(proj, s.fch_gelu(l), P_(Param::fcprojw, l), P_(Param::fcprojb, l), B, 1, 4 * C, C);
    // The next LayerNorm of x3: the next block's ln1, or lnf after the last block.
    const bool last = l + 1 == L;
    be.residual_layernorm_forward(res3, last ? s.act.lnf.data() : s.act.ln1.data() + s.slab(l + 1, C), mean, rstd,
                                  res2, proj, last ? P_(Param::lnfw) : P_(Param::ln1w, l + 1),
                                  last ? P_(Param::lnfb) : P_(Param::ln1b, l + 1), B, 1, C);
    x = res3;
  }
  be.matmul_forward(s.act.logits.data(), s.act.lnf.data(), P_(Param::wte), nullptr, B, 1, C,
                    s.config.padded_vocab_size);
  s.has_forward = false;
  s.logits_valid = false;
  s.cache_len = pos + 1;
  return download_last_logits(s.backend, s.config, s.act.logits.data(), B);
}

}  // namespace gpt2cc
