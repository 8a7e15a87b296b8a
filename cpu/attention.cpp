// Causal multi-head self-attention, forward, backward and KV-cache decode (cpu/attention.hpp).
// qkv (B,T,3C): per token q | k | v, each split into NH heads of HS = C/NH channels.
// out (B,T,C) = concat_h softmax(q_h k_h^T / sqrt(HS), causal) v_h. The forward saves the
// probabilities att (B,NH,T,T) before dropout; the backward reuses them and regenerates the
// dropout mask (index ((b*NH+h)*T + t)*T + t2). Backward: dqkv written (=).
#include "cpu/attention.hpp"

#include <cmath>
#include <cstddef>
#include <vector>

#include "core/check.hpp"

namespace gpt2cc::cpu {

namespace {
void check_shape(int C, int NH) {
  ENSURE(NH > 0 && C % NH == 0, "attention needs C divisible by NH, got C = {}, NH = {}", C, NH);
}

// The weight with which probability att[t2] multiplies v[t2]: after inverted dropout it is
// att * keep / (1 - p); without dropout it is att.
inline float dropped(float a, const DropoutParams& dropout, size_t index) {
  if (!dropout.active()) return a;
  return dropout.keep(index) ? a * dropout.scale() : 0.0f;
}
}  // namespace

// For head h, query t:  s[t2] = q_t . k_t2 / sqrt(HS) for t2 <= t (causal: t2 > t is masked)
//   att[t2] = exp(s[t2] - max) / sum_j exp(s[j] - max) ;  out_t = sum_t2 drop(att[t2]) v_t2
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH,
                       const DropoutParams& dropout) {
  check_shape(C, NH);
  const int HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const size_t C3 = 3 * static_cast<size_t>(C);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      const float* base = qkv + static_cast<size_t>(b) * T * C3 + h * HS;
      for (int t = 0; t < T; ++t) {
        const float* q = base + t * C3;
        const size_t row_index = ((static_cast<size_t>(b) * NH + h) * T + t) * T;
        float* att_row = att + row_index;
        float maxval = -INFINITY;
        for (int t2 = 0; t2 <= t; ++t2) {
          const float* k = base + t2 * C3 + C;
          float s = 0.0f;
          for (int i = 0; i < HS; ++i) s += q[i] * k[i];
          s *= scale;
          att_row[t2] = s;
          maxval = s > maxval ? s : maxval;
        }
        float sum = 0.0f;
        for (int t2 = 0; t2 <= t; ++t2) {
          att_row[t2] = std::exp(att_row[t2] - maxval);
          sum += att_row[t2];
        }
        const float inv_sum = 1.0f / sum;
        for (int t2 = 0; t2 <= t; ++t2) att_row[t2] *= inv_sum;
        for (int t2 = t + 1; t2 < T; ++t2) att_row[t2] = 0.0f;

        float* o = out + (static_cast<size_t>(b) * T + t) * C + h * HS;
        for (int i = 0; i < HS; ++i) o[i] = 0.0f;
        for (int t2 = 0; t2 <= t; ++t2) {
          const float* v = base + t2 * C3 + 2 * C;
          const float a = dropped(att_row[t2], dropout, row_index + t2);
          for (int i = 0; i < HS; ++i) o[i] += a * v[i];
        }
      }
    }
  }
}

// Backward of out_t = sum_t2 a'[t2] v_t2 with a' = drop(att), att = softmax(s), s = q.k * scale:
//   da'[t2] = dout_t . v_t2 ; dv_t2 += a'[t2] dout_t ; datt[t2] = da'[t2] * keep / (1-p)
//   ds[t2] = att[t2] (datt[t2] - sum_j att[j] datt[j])      (softmax Jacobian)
//   dq_t += ds[t2] k_t2 * scale ; dk_t2 += ds[t2] q_t * scale
void attention_backward(float* dqkv, const float* dout, const float* att, const float* qkv, int B, int T, int C,
                        int NH, const DropoutParams& dropout) {
  check_shape(C, NH);
  const int HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const size_t C3 = 3 * static_cast<size_t>(C);
  // One (b, h) per iteration: it touches only head h's q, k, v channels of batch row b, so
  // the iterations never write the same element.
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      std::vector<float> datt(T);
      const float* base = qkv + static_cast<size_t>(b) * T * C3 + h * HS;
      float* dbase = dqkv + static_cast<size_t>(b) * T * C3 + h * HS;
      for (int t = 0; t < T; ++t) {
        for (int part = 0; part < 3; ++part) {
          float* d = dbase + t * C3 + part * C;
          for (int i = 0; i < HS; ++i) d[i] = 0.0f;
        }
      }
      for (int t = 0; t < T; ++t) {
        const size_t row_index = ((static_cast<size_t>(b) * NH + h) * T + t) * T;
        const float* att_row = att + row_index;
        const float* dy = dout + (static_cast<size_t>(b) * T + t) * C + h * HS;
        const float* q = base + t * C3;
        float* dq = dbase + t * C3;
        float dot = 0.0f;  // sum_j att[j] datt[j]
        for (int t2 = 0; t2 <= t; ++t2) {
          const float* v = base + t2 * C3 + 2 * C;
          float* dv = dbase + t2 * C3 + 2 * C;
          const float a = dropped(att_row[t2], dropout, row_index + t2);
          float da = 0.0f;
          for (int i = 0; i < HS; ++i) {
            da += dy[i] * v[i];
            dv[i] += a * dy[i];
          }
          datt[t2] = dropped(da, dropout, row_index + t2);
          dot += att_row[t2] * datt[t2];
        }
        for (int t2 = 0; t2 <= t; ++t2) {
          const float ds = att_row[t2] * (datt[t2] - dot) * scale;
          const float* k = base + t2 * C3 + C;
          float* dk = dbase + t2 * C3 + C;
          for (int i = 0; i < HS; ++i) {
            dq[i] += ds * k[i];
            dk[i] += ds * q[i];
          }
        }
      }
    }
  }
}

// k, v of token t -> kcache[b, t], vcache[b, t] for t < T (caches are (B, maxT, C)).
void kv_cache_store(float* kcache, float* vcache, const float* qkv, int B, int T, int maxT, int C) {
  ENSURE(T <= maxT, "kv_cache_store: T = {} exceeds the cache length maxT = {}", T, maxT);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const float* src = qkv + (static_cast<size_t>(b) * T + t) * 3 * C;
      float* kdst = kcache + (static_cast<size_t>(b) * maxT + t) * C;
      float* vdst = vcache + (static_cast<size_t>(b) * maxT + t) * C;
      for (int c = 0; c < C; ++c) {
        kdst[c] = src[C + c];
        vdst[c] = src[2 * C + c];
      }
    }
  }
}

// One new token at position pos (qkv (B,3C)): store its k, v at pos, then for each head
//   att[t2] = softmax_t2( q . kcache[t2] / sqrt(HS) ), t2 = 0..pos ; out = sum_t2 att[t2] vcache[t2]
// which is row pos of the full forward (no dropout at inference).
void attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int pos, int maxT, int C,
                      int NH) {
  check_shape(C, NH);
  ENSURE(pos >= 0 && pos < maxT, "attention_decode: position {} outside the cache [0, {})", pos, maxT);
  kv_cache_store(kcache + static_cast<size_t>(pos) * C, vcache + static_cast<size_t>(pos) * C, qkv, B, 1, maxT,
                 C);
  const int HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      std::vector<float> att(pos + 1);
      const float* q = qkv + static_cast<size_t>(b) * 3 * C + h * HS;
      const float* kb = kcache + static_cast<size_t>(b) * maxT * C + h * HS;
      const float* vb = vcache + static_cast<size_t>(b) * maxT * C + h * HS;
      float maxval = -INFINITY;
      for (int t2 = 0; t2 <= pos; ++t2) {
        float s = 0.0f;
        for (int i = 0; i < HS; ++i) s += q[i] * kb[static_cast<size_t>(t2) * C + i];
        att[t2] = s * scale;
        maxval = att[t2] > maxval ? att[t2] : maxval;
      }
      float sum = 0.0f;
      for (int t2 = 0; t2 <= pos; ++t2) {
        att[t2] = std::exp(att[t2] - maxval);
        sum += att[t2];
      }
      const float inv_sum = 1.0f / sum;
      float* o = out + static_cast<size_t>(b) * C + h * HS;
      for (int i = 0; i < HS; ++i) o[i] = 0.0f;
      for (int t2 = 0; t2 <= pos; ++t2) {
        const float a = att[t2] * inv_sum;
        for (int i = 0; i < HS; ++i) o[i] += a * vb[static_cast<size_t>(t2) * C + i];
      }
    }
  }
}

}  // namespace gpt2cc::cpu
