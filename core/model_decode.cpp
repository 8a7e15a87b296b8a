// GPT-2 inference with a KV cache (core/model.hpp prefill / decode). prefill runs the normal
// forward over the prompt and stores every layer's k, v into the cache; decode runs the blocks
// for one new token per row (T = 1), attending over the cached positions 0..pos with
// attention_decode, and adds wpe[pos] by offsetting the position table. Both compute logits
// for the last position only. The cache holds (L, rows, maxT, C) elements of the compute dtype
// for k and again for v, maxT the model's max_T (no forward or decode reaches further); it is
// allocated on the first prefill. Rows are
// computed in groups (row_group) small enough for the activations and, on the CPU, for each
// row to come out bit-identical to a forward of that row alone; kv_cache_select_rows copies
// rows within the cache (shared prompts, dropped sequences).
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

// Host copy (fp32) of the first V columns of logits rows (B, Vp), written to out rows [0, B).
void download_last_logits(Backend& backend, const ModelConfig& config, ConstTensorPtr logits, int B, float* out) {
  const size_t V = config.vocab_size, Vp = config.padded_vocab_size;
  const std::vector<float> padded = download_as_float(backend, logits, size_t(B) * Vp);
  for (int b = 0; b < B; ++b)
    for (size_t i = 0; i < V; ++i) out[b * V + i] = padded[b * Vp + i];
}

}  // namespace

// Rows of `len` positions each that one forward may take: as many as the activations hold
// (max_B x max_T positions; attention's saved values are per position too), and, when one row
// has few enough positions for the backend's matrix-vector path (Backend::matvec_rows: on the CPU
// fewer than 6, 32 or fewer in bf16), few enough that the group has too. That path and the GEMM
// add in different orders; each is row-independent on its own, and so is every other CPU op, so
// a row's bits would change with the rows sharing its forward once their count crossed the limit
// (B = 1 decoding takes the loop, B = 8 the GEMM). Grouped so, every row is bit-identical to a
// forward of the row alone (test_batch_generation checks it, and would catch a changed limit).
int GPT2::Impl::row_group(int len) const {
  int rows = std::max(1, max_B * max_T / len);
  const int matvec_rows = backend.matvec_rows();
  if (len <= matvec_rows) rows = std::min(rows, matvec_rows / len);
  return rows;
}

int GPT2::Impl::kv_rows() const { return options.kv_cache_rows == 0 ? max_B : options.kv_cache_rows; }

size_t kv_cache_bytes(const ModelConfig& config, DType dtype, int rows, int positions) {
  return 2 * size_t(config.num_layers) * size_t(rows) * size_t(positions) * size_t(config.channels) *
         dtype_size(dtype);
}

int GPT2::kv_cache_rows() const { return impl_->kv_rows(); }

// In groups of row_group(1) rows, so that each row rounds as a single row would.
void GPT2::Impl::project_logits(TensorPtr last, int rows, float* out) {
  const int C = config.channels, V = config.vocab_size;
  const int group = row_group(1);
  for (int r0 = 0; r0 < rows; r0 += group) {
    const int n = std::min(group, rows - r0);
    const TensorPtr logits = logits_rows(size_t(n));
    lm_head(logits, last + size_t(r0) * C, n);
    download_last_logits(backend, config, logits, n, out + size_t(r0) * V);
  }
}

std::vector<float> GPT2::prefill(const int* tokens, int B, int T) {
  Impl& s = *impl_;
  const int C = s.config.channels, L = s.config.num_layers, maxT = s.max_T;
  INPUT_CHECK(s.options.kv_cache_rows >= 0, "model: kv_cache_rows must be >= 0 (0 = max_B), got {}",
              s.options.kv_cache_rows);
  const int rows = s.kv_rows();
  INPUT_CHECK(B >= 1 && B <= rows, "prefill: batch size B must be in [1, {}] (the KV cache's rows), got {}", rows, B);
  INPUT_CHECK(T >= 1 && T <= s.max_T, "prefill: prompt length T must be in [1, {}] (the model's maximum), got {}",
              s.max_T, T);
  check_tokens(tokens, size_t(B) * T, s.config.vocab_size, "prefill");
  const size_t cache_stride = size_t(rows) * maxT * C;
  if (!s.kcache.data()) {
    s.kcache = DeviceTensor(s.backend, L * cache_stride);
    s.vcache = DeviceTensor(s.backend, L * cache_stride);
  }
  // The activations describe a prompt without targets from here on: no backward, no logits() of it.
  s.has_forward = false;
  s.logits_valid = false;
  s.training = false;
  s.cache_B = 0;  // invalid until every group is stored

  std::vector<float> out(size_t(B) * s.config.vocab_size);
  const int group = s.row_group(T);
  for (int r0 = 0; r0 < B; r0 += group) {
    const int n = std::min(group, B - r0);
    s.backend.upload(s.act.inputs.data(), tokens + size_t(r0) * T, size_t(n) * T * sizeof(int));
    // Each layer's k, v into the cache as the layer computes them (the next layer reuses the
    // buffer in an inference model).
    const size_t row0 = size_t(r0) * maxT * C;
    s.forward_trunk(n, T, [&](int l, ConstTensorPtr qkv) {
      s.backend.kv_cache_store(s.kcache.data() + l * cache_stride + row0, s.vcache.data() + l * cache_stride + row0,
                               qkv, n, T, maxT, C);
    });
    // Only the last position's logits are needed: gather its lnf rows into (n, C), then project.
    const TensorPtr last = s.scratch.bufC_a.data();
    for (int b = 0; b < n; ++b)
      s.backend.copy((last + size_t(b) * C).data, (s.act.lnf.data() + (size_t(b) * T + T - 1) * C).data,
                     C * dtype_size(s.dtype));
    s.project_logits(last, n, out.data() + size_t(r0) * s.config.vocab_size);
  }
  s.cache_B = B;
  s.cache_len = T;
  return out;
}

std::vector<float> GPT2::decode(const int* tokens, int B, int pos) {
  Impl& s = *impl_;
  Backend& be = s.backend;
  const int C = s.config.channels, NH = s.config.num_heads, L = s.config.num_layers, maxT = s.max_T;
  INPUT_CHECK(s.cache_B > 0, "decode: run prefill first (the KV cache is empty)");
  INPUT_CHECK(B == s.cache_B, "decode: batch size B must equal the KV cache's rows ({}), got {}", s.cache_B, B);
  INPUT_CHECK(pos >= 1 && pos <= s.cache_len && pos < maxT,
              "decode: position must be in [1, {}] (cached positions 0..{}, the cache's {} positions), got {}",
              std::min(s.cache_len, maxT - 1), s.cache_len - 1, maxT, pos);
  check_tokens(tokens, size_t(B), s.config.vocab_size, "decode");
  const size_t cache_stride = size_t(s.kv_rows()) * maxT * C;
  const TensorPtr P = s.params();
  auto P_ = [&](Param p, int l = 0) { return P + s.at(p, l); };
  s.has_forward = false;
  s.logits_valid = false;

  std::vector<float> out(size_t(B) * s.config.vocab_size);
  const int group = s.row_group(1);
  for (int r0 = 0; r0 < B; r0 += group) {
    const int n = std::min(group, B - r0);
    const size_t row0 = size_t(r0) * maxT * C;
    be.upload(s.act.inputs.data(), tokens + r0, size_t(n) * sizeof(int));
    // Layer l's activation slabs (max_B x max_T >= n positions) serve as scratch for the one
    // token; the LayerNorm statistics of every layer go to slab 0 (no backward reads them).
    float* mean = s.act.ln1_mean.data();
    float* rstd = s.act.ln1_rstd.data();
    be.encoder_forward(s.act.encoded.data(), s.act.inputs.data(), P_(Param::wte), P_(Param::wpe) + size_t(pos) * C, n,
                       1, C);
    be.layernorm_forward(s.act.ln1.data(), mean, rstd, s.act.encoded.data(), P_(Param::ln1w), P_(Param::ln1b), n, 1, C);
    for (int l = 0; l < L; ++l) {
      const Impl::LayerTensors a = s.layer(l);
      const TensorPtr proj = s.scratch.bufC_a.data();
      be.matmul_forward(a.qkv, a.ln1, P_(Param::qkvw, l), P_(Param::qkvb, l), n, 1, C, 3 * C);
      be.attention_decode(a.atty, s.kcache.data() + l * cache_stride + row0, s.vcache.data() + l * cache_stride + row0,
                          a.qkv, n, pos, maxT, C, NH);
      be.matmul_forward(proj, a.atty, P_(Param::attprojw, l), P_(Param::attprojb, l), n, 1, C, C);
      be.residual_layernorm_forward(a.res2, a.ln2, mean, rstd, a.x, proj, P_(Param::ln2w, l), P_(Param::ln2b, l), n, 1,
                                    C);
      be.matmul_forward_gelu(s.fch_gelu(l), a.fch, a.ln2, P_(Param::fcw, l), P_(Param::fcb, l), n, 1, C, 4 * C);
      be.matmul_forward(proj, s.fch_gelu(l), P_(Param::fcprojw, l), P_(Param::fcprojb, l), n, 1, 4 * C, C);
      // The next LayerNorm of x3: the next block's ln1, or lnf after the last block.
      const bool last = l + 1 == L;
      be.residual_layernorm_forward(a.res3, last ? s.act.lnf.data() : s.layer(l + 1).ln1, mean, rstd, a.res2, proj,
                                    last ? P_(Param::lnfw) : P_(Param::ln1w, l + 1),
                                    last ? P_(Param::lnfb) : P_(Param::ln1b, l + 1), n, 1, C);
    }
    s.project_logits(s.act.lnf.data(), n, out.data() + size_t(r0) * s.config.vocab_size);
  }
  s.cache_len = pos + 1;
  return out;
}

void GPT2::kv_cache_select_rows(std::span<const int> rows) {
  Impl& s = *impl_;
  const int n = static_cast<int>(rows.size());
  INPUT_CHECK(s.cache_B > 0, "kv_cache_select_rows: run prefill first (the KV cache is empty)");
  INPUT_CHECK(n >= 1 && n <= s.kv_rows(), "kv_cache_select_rows: between 1 and {} rows (the KV cache's), got {}",
              s.kv_rows(), n);
  for (int i = 0; i < n; ++i) {
    const int r = rows[i];
    INPUT_CHECK(r >= 0 && r < s.cache_B, "kv_cache_select_rows: row {} is outside the cache's rows [0, {})", r,
                s.cache_B);
    // In place: the source must still hold its old contents when row i is written.
    INPUT_CHECK(r == i || r >= n || rows[r] == r,
                "kv_cache_select_rows: row {} is copied to row {} but is itself overwritten (by row {})", r, i,
                r < n ? rows[r] : r);
  }
  const int C = s.config.channels, L = s.config.num_layers, maxT = s.max_T;
  const size_t cache_stride = size_t(s.kv_rows()) * maxT * C, row_stride = size_t(maxT) * C;
  const size_t bytes = size_t(s.cache_len) * C * dtype_size(s.dtype);  // the cached positions 0..cache_len-1
  for (int i = 0; i < n; ++i) {
    if (rows[i] == i) continue;
    for (int l = 0; l < L; ++l) {
      for (DeviceTensor* cache : {&s.kcache, &s.vcache}) {
        const TensorPtr base = cache->data() + l * cache_stride;
        s.backend.copy((base + i * row_stride).data, (base + rows[i] * row_stride).data, bytes);
      }
    }
  }
  s.cache_B = n;
}

}  // namespace gpt2cc
