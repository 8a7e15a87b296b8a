// GPT-2 training path (core/model.hpp), written once against the Backend interface: buffers,
// forward -> loss, backward. The parameters' init, reads and writes live in core/model_params.cpp,
// the optimizer side (gradient norm, AdamW, data-parallel sums) in core/model_optim.cpp, inference
// with the KV cache in core/model_decode.cpp, the private state and the activation memory formula
// in core/model_impl.hpp.
//
// Backward follows llm.c: the residual stream has ONE gradient buffer (dresidual) that every
// block's LayerNorm backward and residual pass-through accumulate into, walking the layers in
// reverse; the logits buffer is reused in place for dlogits. The classifier (logits, loss,
// dlogits, the lm_head backward) runs over the rows in chunks (ModelOptions::classifier_rows), so
// the logits of a large batch are never all in memory at once.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "core/check.hpp"
#include "core/distributed.hpp"
#include "core/model.hpp"
#include "core/model_impl.hpp"

namespace gpt2cc {

GPT2::Impl::Impl(const ModelConfig& cfg, Backend& be, int mB, int mT, ModelMode md, const ModelOptions& opts)
    : config(cfg), backend(be), max_B(mB), max_T(mT), mode(md), options(opts), dtype(be.dtype()), layout(cfg) {
  INPUT_CHECK(max_B >= 1, "model: max batch size (B) must be >= 1, got {}", max_B);
  INPUT_CHECK(max_T >= 1 && max_T <= cfg.max_seq_len,
              "model: max sequence length (T) must be in [1, max_seq_len = {}], got {}", cfg.max_seq_len, max_T);
  INPUT_CHECK(options.classifier_rows >= 0, "model: classifier_rows must be >= 0 (0: all rows at once), got {}",
              options.classifier_rows);
  const size_t L = cfg.num_layers, C = cfg.channels, Vp = cfg.padded_vocab_size;
  const size_t BT = size_t(max_B) * max_T;
  const size_t N = layout.total();
  const bool train = mode == ModelMode::training;
  padded = N;
  part_end = N;
  if (options.data_parallel != nullptr) {
    INPUT_CHECK(train, "model: data parallelism is for training, not inference");
    // One block per rank, each a multiple of 64 elements (so that every block starts 256-byte
    // aligned in fp32, 128-byte in bf16, as the collectives run fastest).
    const size_t ranks = size_t(options.data_parallel->group().size()), align = 64;
    const size_t block = (N + ranks * align - 1) / (ranks * align) * align;
    padded = block * ranks;
    if (options.shard_optimizer) {
      part_begin = size_t(options.data_parallel->group().rank()) * block;
      part_end = part_begin + block;
    }
  }
  if (master_sharded()) master_begin = part_begin;
  if (keeps_master()) master = DeviceArray<float>(backend, master_sharded() ? part_end - part_begin : padded);
  if (dtype != DType::fp32) params_bf16 = DeviceTensor(backend, padded);
  if (train) {
    grads = DeviceTensor(backend, padded, options.fp32_gradients ? DType::fp32 : dtype);
    m = DeviceArray<float>(backend, part_end - part_begin);
    v = DeviceArray<float>(backend, part_end - part_begin);
  }

  // Training keeps every layer's activations for the backward; inference one layer's, which
  // every layer reuses (slab() is 0 for all of them).
  const size_t Ls = train ? L : 1;
  act.encoded = DeviceTensor(backend, BT * C);
  act.ln1 = DeviceTensor(backend, Ls * BT * C);
  act.ln1_mean = DeviceArray<float>(backend, Ls * BT);
  act.ln1_rstd = DeviceArray<float>(backend, Ls * BT);
  act.qkv = DeviceTensor(backend, Ls * BT * 3 * C);
  act.att_saved = DeviceArray<float>(backend, Ls * attention_saved_stride());
  act.atty = DeviceTensor(backend, Ls * BT * C);
  act.residual2 = DeviceTensor(backend, Ls * BT * C);
  act.ln2 = DeviceTensor(backend, Ls * BT * C);
  act.ln2_mean = DeviceArray<float>(backend, Ls * BT);
  act.ln2_rstd = DeviceArray<float>(backend, Ls * BT);
  act.fch = DeviceTensor(backend, Ls * BT * 4 * C);
  act.fch_gelu = DeviceTensor(backend, (options.recompute_gelu ? 1 : Ls) * BT * 4 * C);
  act.residual3 = DeviceTensor(backend, Ls * BT * C);
  act.lnf = DeviceTensor(backend, BT * C);
  act.lnf_mean = DeviceArray<float>(backend, BT);
  act.lnf_rstd = DeviceArray<float>(backend, BT);
  // One classifier chunk's (inference: sized by its first use, logits_rows).
  if (train) act.logits = DeviceTensor(backend, classifier_chunk(BT) * Vp);
  act.losses = DeviceArray<float>(backend, BT);
  act.inputs = DeviceArray<int>(backend, BT);
  act.targets = DeviceArray<int>(backend, BT);

  scratch.bufC_a = DeviceTensor(backend, BT * C);  // the forward's projection outputs
  if (train) {
    scratch.dresidual = DeviceTensor(backend, BT * C);
    scratch.bufC_b = DeviceTensor(backend, BT * C);
    scratch.buf3C = DeviceTensor(backend, BT * 3 * C);
    scratch.buf4C = DeviceTensor(backend, BT * 4 * C);
    if (grads.dtype() == DType::bf16 && classifier_chunk(BT) < BT)
      scratch.wte_grad_sum = DeviceArray<float>(backend, size_t(Vp) * C);
  }
}

void GPT2::Impl::check_piece(const char* what, size_t offset, size_t n) const {
  const size_t N = layout.total();
  INPUT_CHECK(offset <= N && n <= N - offset, "{}: [{}, {}) is outside the model's {} parameters", what, offset,
              offset + n, N);
}

void GPT2::Impl::require_training(const char* what) const {
  ENSURE(mode == ModelMode::training, "{}: this model was built for inference only (no gradients or AdamW state)",
         what);
}

size_t GPT2::Impl::attention_saved_stride() const {
  return size_t(max_B) * size_t(config.num_heads) * size_t(max_T);  // a log-sum-exp per row of each head
}

float* GPT2::Impl::attention_saved(int l) {
  return act.att_saved.data() + (mode == ModelMode::training ? size_t(l) * attention_saved_stride() : 0);
}

TensorPtr GPT2::Impl::logits_rows(size_t rows) {
  const size_t n = rows * size_t(config.padded_vocab_size);
  if (act.logits.size() < n) {
    // A recorded step (forward_backward's graph) holds the old address: it would replay into
    // freed memory.
    forget_recordings();
    act.logits = DeviceTensor();  // freed before the larger one is allocated
    act.logits = DeviceTensor(backend, n);
  }
  return act.logits.data();
}

ModelMemory GPT2::memory() const {
  const Impl& s = *impl_;
  ModelMemory m;
  m.parameters = s.master.bytes() + s.params_bf16.bytes();
  m.gradients = s.grads.bytes();
  m.optimizer = s.m.bytes() + s.v.bytes();
  const Activations& a = s.act;
  for (const DeviceTensor* t : {&a.encoded, &a.ln1, &a.qkv, &a.atty, &a.residual2, &a.ln2, &a.fch, &a.fch_gelu,
                                &a.residual3, &a.lnf, &a.logits})
    m.activations += t->bytes();
  for (const DeviceArray<float>* f : {&a.ln1_mean, &a.ln1_rstd, &a.att_saved, &a.ln2_mean, &a.ln2_rstd, &a.lnf_mean,
                                      &a.lnf_rstd, &a.losses})
    m.activations += f->bytes();
  m.activations += a.inputs.bytes() + a.targets.bytes();
  m.logits = a.logits.bytes();
  for (const DeviceTensor* t : {&s.scratch.dresidual, &s.scratch.bufC_a, &s.scratch.bufC_b, &s.scratch.buf3C,
                                &s.scratch.buf4C})
    m.scratch += t->bytes();
  m.scratch += s.scratch.wte_grad_sum.bytes();
  m.kv_cache = s.kcache.bytes() + s.vcache.bytes();
  return m;
}

void GPT2::Impl::lm_head(TensorPtr logits, ConstTensorPtr x, int rows) {
  backend.matmul_forward(logits, x, params() + at(Param::wte), nullptr, 1, rows, config.channels,
                         config.padded_vocab_size);
}

size_t GPT2::Impl::classifier_chunk(size_t rows) const {
  return options.classifier_rows == 0 ? rows : std::min(rows, size_t(options.classifier_rows));
}

bool GPT2::Impl::logits_whole() const {
  const size_t rows = size_t(B) * T;
  return !has_targets || classifier_chunk(rows) == rows;
}

void GPT2::Impl::classifier_chunks(bool backward, bool logits_held,
                                   const std::function<void(TensorPtr logits, size_t row, int rows)>& loss_and_dlogits) {
  const int C = config.channels, Vp = config.padded_vocab_size;
  const size_t rows = size_t(B) * T, chunk = classifier_chunk(rows);
  const TensorPtr logits = logits_rows(chunk), lnf = act.lnf.data(), wte = params() + at(Param::wte);
  // With bf16 gradients the chunks' parts of dwte are summed in fp32 and added in once, so that
  // cutting the rows adds no rounding to the gradient (one chunk adds its part straight in, as one
  // GEMM; fp32 gradients take every part unrounded).
  const TensorPtr dwte = grads.data() + at(Param::wte);
  const bool sum_in_fp32 = backward && dwte.dtype == DType::bf16 && chunk < rows;
  TensorPtr dwte_part = dwte;
  if (sum_in_fp32) {
    ENSURE(scratch.wte_grad_sum.size() == size_t(Vp) * C, "classifier: no fp32 sum for {} rows", rows);
    dwte_part = scratch.wte_grad_sum.data();
    backend.zero(scratch.wte_grad_sum.data(), scratch.wte_grad_sum.bytes());
  }
  for (size_t r0 = 0; r0 < rows; r0 += chunk) {
    const int n = int(std::min(chunk, rows - r0));
    if (!logits_held || chunk != rows) lm_head(logits, lnf + r0 * C, n);
    loss_and_dlogits(logits, r0, n);
    // dlnf = dlogits wte, dwte += dlogits^T lnf (tied: the encoder adds its part in backward_trunk).
    if (backward)
      backend.matmul_backward(scratch.bufC_b.data() + r0 * C, dwte_part, nullptr, logits, lnf + r0 * C, wte, 1, n, C,
                              Vp);
  }
  if (sum_in_fp32) backend.residual_forward(dwte, dwte, scratch.wte_grad_sum.data(), size_t(Vp) * C);
}

DropoutParams GPT2::Impl::dropout(uint32_t stream) const {
  DropoutParams d;
  d.p = training ? config.dropout : 0.0f;
  d.seed = dropout_seed;
  d.stream = stream;
  return d;
}

size_t GPT2::Impl::at(Param p, int l) const {
  const ParamTensor& t = layout[p];
  // Stacked tensors have L as their leading dimension; the others are a single slice (l == 0).
  const bool stacked = t.shape.size() >= 2 && p != Param::wte && p != Param::wpe;
  const size_t per_layer = stacked ? t.numel / config.num_layers : t.numel;
  return t.offset + size_t(l) * per_layer;
}

void GPT2::Impl::forward_trunk(int B_, int T_, const std::function<void(int l, ConstTensorPtr qkv)>& each_qkv) {
  Backend& be = backend;
  const int C = config.channels, NH = config.num_heads, L = config.num_layers;
  const size_t BTC = size_t(B_) * T_ * C;
  const TensorPtr P = params();
  auto P_ = [&](Param p, int l = 0) { return P + at(p, l); };

  // x = drop(wte[inp] + wpe[t]); ln1 of layer 0. Every later LayerNorm is fused with the
  // residual add that produces its input (one pass over the stream instead of two).
  be.encoder_forward(act.encoded.data(), act.inputs.data(), P_(Param::wte), P_(Param::wpe), B_, T_, C);
  if (dropout(0).active()) be.dropout_forward(act.encoded.data(), act.encoded.data(), dropout(0), BTC);
  be.layernorm_forward(act.ln1.data(), act.ln1_mean.data(), act.ln1_rstd.data(), act.encoded.data(),
                       P_(Param::ln1w), P_(Param::ln1b), B_, T_, C);

  for (int l = 0; l < L; ++l) {
    const LayerTensors a = layer(l);
    const TensorPtr proj = scratch.bufC_a.data();

    // x2 = x + drop(attn(ln1 Wqkv^T + bqkv) Wproj^T + bproj); ln2 = LN2(x2)
    be.matmul_forward(a.qkv, a.ln1, P_(Param::qkvw, l), P_(Param::qkvb, l), B_, T_, C, 3 * C);
    if (each_qkv) each_qkv(l, a.qkv);
    be.attention_forward(a.atty, attention_saved(l), a.qkv, B_, T_, C, NH, dropout(site_attention(l)));
    be.matmul_forward(proj, a.atty, P_(Param::attprojw, l), P_(Param::attprojb, l), B_, T_, C, C);
    if (dropout(site_attproj(l)).active()) be.dropout_forward(proj, proj, dropout(site_attproj(l)), BTC);
    be.residual_layernorm_forward(a.res2, a.ln2, a.ln2_mean, a.ln2_rstd, a.x, proj, P_(Param::ln2w, l),
                                  P_(Param::ln2b, l), B_, T_, C);

    // x3 = x2 + drop(gelu(ln2 Wfc^T + bfc) Wfcproj^T + bfcproj); then the next LayerNorm of x3:
    // the next block's ln1, or after the last block the final lnf.
    be.matmul_forward_gelu(fch_gelu(l), a.fch, a.ln2, P_(Param::fcw, l), P_(Param::fcb, l), B_, T_, C, 4 * C);
    be.matmul_forward(proj, fch_gelu(l), P_(Param::fcprojw, l), P_(Param::fcprojb, l), B_, T_, 4 * C, C);
    if (dropout(site_mlpproj(l)).active()) be.dropout_forward(proj, proj, dropout(site_mlpproj(l)), BTC);
    if (l + 1 < L) {
      const LayerTensors next = layer(l + 1);
      be.residual_layernorm_forward(a.res3, next.ln1, next.ln1_mean, next.ln1_rstd, a.res2, proj,
                                    P_(Param::ln1w, l + 1), P_(Param::ln1b, l + 1), B_, T_, C);
    } else {
      be.residual_layernorm_forward(a.res3, act.lnf.data(), act.lnf_mean.data(), act.lnf_rstd.data(), a.res2, proj,
                                    P_(Param::lnfw), P_(Param::lnfb), B_, T_, C);
    }
  }
}

GPT2::GPT2(const ModelConfig& config, Backend& backend, int max_B, int max_T, ModelMode mode,
           const ModelOptions& options)
    : impl_(std::make_unique<Impl>(config, backend, max_B, max_T, mode, options)) {}
GPT2::~GPT2() = default;

const ModelConfig& GPT2::config() const { return impl_->config; }
Backend& GPT2::backend() { return impl_->backend; }
int GPT2::max_batch() const { return impl_->max_B; }
int GPT2::max_seq() const { return impl_->max_T; }
const ParameterLayout& GPT2::layout() const { return impl_->layout; }
ModelMode GPT2::mode() const { return impl_->mode; }
const ModelOptions& GPT2::options() const { return impl_->options; }
DType GPT2::dtype() const { return impl_->dtype; }

int GPT2::Impl::upload_batch(const int* inputs, const int* targets, int B_, int T_, const char* what) {
  Impl& s = *this;
  const int V = s.config.vocab_size;
  INPUT_CHECK(B_ >= 1 && B_ <= s.max_B, "{}: batch size B must be in [1, {}] (the model's maximum), got {}", what,
              s.max_B, B_);
  INPUT_CHECK(T_ >= 1 && T_ <= s.max_T, "{}: sequence length T must be in [1, {}] (the model's maximum), got {}", what,
              s.max_T, T_);
  INPUT_CHECK(inputs != nullptr, "{}: inputs must not be null", what);
  const size_t BT = size_t(B_) * T_;
  int n_targets = 0;
  for (size_t i = 0; i < BT; ++i) {
    INPUT_CHECK(inputs[i] >= 0 && inputs[i] < V, "{}: input token {} at (b {}, t {}) is outside [0, {})", what,
                inputs[i], i / T_, i % T_, V);
    if (targets) {
      INPUT_CHECK(targets[i] == -1 || (targets[i] >= 0 && targets[i] < V),
                  "{}: target {} at (b {}, t {}) is neither -1 (ignore) nor in [0, {})", what, targets[i],
                  i / T_, i % T_, V);
      n_targets += targets[i] != -1;
    }
  }
  s.backend.upload(s.act.inputs.data(), inputs, BT * sizeof(int));
  if (targets) s.backend.upload(s.act.targets.data(), targets, BT * sizeof(int));
  return n_targets;
}

float GPT2::Impl::mean_loss(const int* targets) {
  const Impl& s = *this;
  const size_t BT = size_t(s.B) * s.T;
  std::vector<float> losses(BT);
  s.backend.download(losses.data(), s.act.losses.data(), BT * sizeof(float));
  double sum = 0.0;
  for (size_t i = 0; i < BT; ++i)
    if (targets[i] != -1) sum += losses[i];
  return s.num_targets ? float(sum / s.num_targets) : std::numeric_limits<float>::quiet_NaN();
}

float GPT2::forward(const int* inputs, const int* targets, int B, int T, bool training, uint64_t dropout_seed) {
  Impl& s = *impl_;
  const int V = s.config.vocab_size, Vp = s.config.padded_vocab_size;
  const int n_targets = s.upload_batch(inputs, targets, B, T, "forward");
  s.B = B;
  s.T = T;
  s.training = training && s.config.dropout > 0.0f;
  s.dropout_seed = dropout_seed;
  s.forward_trunk(B, T);
  s.has_forward = true;
  s.logits_valid = true;
  s.has_targets = targets != nullptr;
  s.num_targets = n_targets;
  if (!targets) {
    s.lm_head(s.logits_rows(size_t(B) * T), s.act.lnf.data(), B * T);  // the logits are what is wanted: all
    return std::numeric_limits<float>::quiet_NaN();
  }
  s.classifier_chunks(false, false, [&](TensorPtr logits, size_t row, int rows) {
    s.backend.crossentropy_forward(s.act.losses.data() + row, logits, s.act.targets.data() + row, 1, rows, V, Vp);
  });
  return s.mean_loss(targets);
}

int GPT2::num_targets() const { return impl_->num_targets; }

std::vector<float> GPT2::losses() const {
  const Impl& s = *impl_;
  INPUT_CHECK(s.has_forward && s.has_targets, "losses: needs a forward with targets first");
  std::vector<float> host(size_t(s.B) * s.T);
  s.backend.download(host.data(), s.act.losses.data(), host.size() * sizeof(float));
  return host;
}

std::vector<float> GPT2::logits() const {
  Impl& s = *impl_;
  INPUT_CHECK(s.has_forward && s.logits_valid,
              "logits: no logits of a forward available (backward reuses their memory for the gradient; run "
              "forward again)");
  const size_t n = size_t(s.B) * s.T * s.config.padded_vocab_size;
  if (s.logits_whole()) return download_as_float(s.backend, s.act.logits.data(), n);
  // The loss took them a chunk at a time: projected again, all rows, into a buffer of this call.
  DeviceTensor all(s.backend, n);
  s.lm_head(all.data(), s.act.lnf.data(), s.B * s.T);
  return download_as_float(s.backend, all.data(), n);
}

void GPT2::zero_grad() {
  impl_->require_training("zero_grad");
  impl_->backend.zero(impl_->grads.data().data, impl_->grads.bytes());
}

void GPT2::backward(float dloss) {
  Impl& s = *impl_;
  s.require_training("backward");
  INPUT_CHECK(s.has_forward && s.has_targets, "backward: needs a forward with targets first");
  INPUT_CHECK(s.logits_valid, "backward: already run for this forward; run forward again");
  const int V = s.config.vocab_size, Vp = s.config.padded_vocab_size;
  s.classifier_chunks(true, true, [&](TensorPtr logits, size_t row, int rows) {
    // dlogits = dloss * (softmax - onehot), written in place over the logits.
    s.backend.crossentropy_backward(logits, dloss, logits, s.act.targets.data() + row, 1, rows, V, Vp);
  });
  s.logits_valid = false;
  s.backward_trunk();
}

float GPT2::forward_backward(const int* inputs, const int* targets, int B, int T, float dloss,
                             uint64_t dropout_seed) {
  Impl& s = *impl_;
  s.require_training("forward_backward");
  INPUT_CHECK(targets != nullptr, "forward_backward: targets must not be null");
  const int V = s.config.vocab_size, Vp = s.config.padded_vocab_size;
  s.num_targets = s.upload_batch(inputs, targets, B, T, "forward_backward");
  s.B = B;
  s.T = T;
  s.training = s.config.dropout > 0.0f;
  s.dropout_seed = dropout_seed;
  s.has_forward = true;
  s.has_targets = true;
  s.logits_valid = false;
  auto step = [&] {
    s.forward_trunk(B, T);
    s.classifier_chunks(true, false, [&](TensorPtr logits, size_t row, int rows) {
      s.backend.fused_classifier(logits, s.act.losses.data() + row, s.act.targets.data() + row, dloss, 1, rows, V, Vp);
    });
    s.backward_trunk();
  };
  if (s.training) {
    step();  // new dropout masks every call: nothing to replay
  } else {
    // Everything the recorded ops bake in besides the fixed buffers: the shape and dloss.
    uint32_t dloss_bits = 0;
    std::memcpy(&dloss_bits, &dloss, sizeof dloss_bits);
    s.run_recorded((uint64_t(B) << 48) ^ (uint64_t(T) << 32) ^ dloss_bits, step);
  }
  return s.mean_loss(targets);
}

void GPT2::Impl::backward_trunk() {
  Backend& be = backend;
  const int C = config.channels, NH = config.num_heads, L = config.num_layers;
  const size_t BTC = size_t(B) * T * C;
  const TensorPtr P = params(), G = grads.data();
  const TensorPtr dres = scratch.dresidual.data();
  const TensorPtr dbuf_a = scratch.bufC_a.data();  // d(projection output) after dropout's backward
  const TensorPtr dbuf_b = scratch.bufC_b.data();  // d(LayerNorm output) / d(atty)
  auto P_ = [&](Param p, int l = 0) { return P + at(p, l); };
  auto G_ = [&](Param p, int l = 0) { return G + at(p, l); };

  // dbuf_b holds dlnf (classifier_chunks).
  be.zero(dres.data, BTC * dtype_size(dtype));
  be.layernorm_backward(dres, G_(Param::lnfw), G_(Param::lnfb), dbuf_b, act.lnf_mean.data(), act.lnf_rstd.data(),
                        layer(L - 1).res3, P_(Param::lnfw), B, T, C);

  for (int l = L - 1; l >= 0; --l) {
    const LayerTensors a = layer(l);

    // x3 = x2 + drop(proj): d(x2) is dres itself (pass-through of the one stream buffer),
    // d(proj) = dropout' (dres).
    TensorPtr dproj = dres;
    if (dropout(site_mlpproj(l)).active()) {
      be.dropout_backward(dbuf_a, dres, dropout(site_mlpproj(l)), BTC);
      dproj = dbuf_a;
    }
    // Under recompute_gelu the shared slab holds the last layer's GELU output from the forward;
    // every other layer recomputes its own from the saved pre-activation.
    if (options.recompute_gelu && l != L - 1) be.gelu_forward(fch_gelu(l), a.fch, 4 * BTC);
    const TensorPtr dfch = scratch.buf4C.data();
    be.matmul_backward_gelu(dfch, G_(Param::fcprojw, l), G_(Param::fcprojb, l), dproj, fch_gelu(l),
                            P_(Param::fcprojw, l), a.fch, B, T, 4 * C, C);
    be.matmul_backward(dbuf_b, G_(Param::fcw, l), G_(Param::fcb, l), dfch, a.ln2, P_(Param::fcw, l), B, T, C, 4 * C);
    be.layernorm_backward(dres, G_(Param::ln2w, l), G_(Param::ln2b, l), dbuf_b, a.ln2_mean, a.ln2_rstd, a.res2,
                          P_(Param::ln2w, l), B, T, C);

    // x2 = x + drop(attn proj): same pattern; dres now holds d(x2) and collects d(x).
    dproj = dres;
    if (dropout(site_attproj(l)).active()) {
      be.dropout_backward(dbuf_a, dres, dropout(site_attproj(l)), BTC);
      dproj = dbuf_a;
    }
    const TensorPtr dqkv = scratch.buf3C.data();
    be.matmul_backward(dbuf_b, G_(Param::attprojw, l), G_(Param::attprojb, l), dproj, a.atty, P_(Param::attprojw, l),
                       B, T, C, C);
    be.attention_backward(dqkv, dbuf_b, attention_saved(l), a.qkv, a.atty, B, T, C, NH, dropout(site_attention(l)));
    be.matmul_backward(dbuf_b, G_(Param::qkvw, l), G_(Param::qkvb, l), dqkv, a.ln1, P_(Param::qkvw, l), B, T, C,
                       3 * C);
    be.layernorm_backward(dres, G_(Param::ln1w, l), G_(Param::ln1b, l), dbuf_b, a.ln1_mean, a.ln1_rstd, a.x,
                          P_(Param::ln1w, l), B, T, C);
  }

  // x0 = drop(wte[inp] + wpe[t]): dwte (scatter-add, the tied second use) and dwpe.
  TensorPtr demb = dres;
  if (dropout(0).active()) {
    be.dropout_backward(dbuf_a, dres, dropout(0), BTC);
    demb = dbuf_a;
  }
  be.encoder_backward(G_(Param::wte), G_(Param::wpe), demb, act.inputs.data(), B, T, C);
}

}  // namespace gpt2cc
