// Causal multi-head self-attention, forward, backward and KV-cache decode (cpu/attention.hpp).
// qkv (B,T,3C): per token q | k | v, each split into NH heads of HS = C/NH channels.
// out (B,T,C) = concat_h softmax(q_h k_h^T / sqrt(HS), causal) v_h. The reference forward saves
// the probabilities att (B,NH,T,T) before dropout, the blocked one each row's log-sum-exp; the
// backward reuses them and regenerates the dropout mask (index ((b*NH+h)*T + t)*T + t2).
// Backward: dqkv written (=).
#include "cpu/attention.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/check.hpp"
#include "cpu/bf16.hpp"
#include "cpu/gemm.hpp"
#include "cpu/vector_exp.hpp"

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

namespace {
// k, v of token t -> kcache[b, t], vcache[b, t] for t < T (caches are (B, maxT, C)), elements of
// either dtype (float, or bf16 bits) copied as they are.
template <class E>
void store_kv(E* kcache, E* vcache, const E* qkv, int B, int T, int maxT, int C) {
  ENSURE(T <= maxT, "kv_cache_store: T = {} exceeds the cache length maxT = {}", T, maxT);
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < T; ++t) {
      const E* src = qkv + (static_cast<size_t>(b) * T + t) * 3 * C;
      std::memcpy(kcache + (static_cast<size_t>(b) * maxT + t) * C, src + C, C * sizeof(E));
      std::memcpy(vcache + (static_cast<size_t>(b) * maxT + t) * C, src + 2 * C, C * sizeof(E));
    }
  }
}

// Decoding's first step, for every decode function: the shapes checked, then the new token's k, v
// stored at `pos`.
template <class E>
void store_decoded_token(E* kcache, E* vcache, const E* qkv, int B, int pos, int maxT, int C, int NH) {
  check_shape(C, NH);
  ENSURE(pos >= 0 && pos < maxT, "attention_decode: position {} outside the cache [0, {})", pos, maxT);
  store_kv(kcache + static_cast<size_t>(pos) * C, vcache + static_cast<size_t>(pos) * C, qkv, B, 1, maxT, C);
}
}  // namespace

void kv_cache_store(float* kcache, float* vcache, const float* qkv, int B, int T, int maxT, int C) {
  store_kv(kcache, vcache, qkv, B, T, maxT, C);
}

// One new token at position pos (qkv (B,3C)): store its k, v at pos, then for each head
//   att[t2] = softmax_t2( q . kcache[t2] / sqrt(HS) ), t2 = 0..pos ; out = sum_t2 att[t2] vcache[t2]
// which is row pos of the full forward (no dropout at inference).
void attention_decode(float* out, float* kcache, float* vcache, const float* qkv, int B, int pos, int maxT, int C,
                      int NH) {
  store_decoded_token(kcache, vcache, qkv, B, pos, maxT, C, NH);
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

// ---------------------------------------------------------------------------------------------
// The CPU backend's attention: the sums above as blocked products (cpu/gemm.hpp) over tiles of
// kTile queries x kTile keys, tiles above the causal diagonal skipped.

namespace {

constexpr int kTile = 64;

// Head h of batch row b in the interleaved qkv rows: q, k and v as T x HS matrices whose rows
// are `stride` = 3C floats apart (and the same offsets into dqkv).
struct HeadSlices {
  size_t offset;  // of q's first element in qkv (and dqkv); k is C further, v 2C
  size_t stride;
  HeadSlices(int b, int h, int T, int C, int HS)
      : offset(static_cast<size_t>(b) * T * 3 * C + static_cast<size_t>(h) * HS), stride(3 * static_cast<size_t>(C)) {}
};

// Query rows [q0, q1) of one tile.
struct TileRows {
  int begin, end;
  TileRows(int tile, int T) : begin(tile * kTile), end(std::min(T, (tile + 1) * kTile)) {}
  int size() const { return end - begin; }
};

// Per-thread scratch, reused across calls (no allocation per tile).
float* scratch(std::vector<float>& buffer, size_t floats) {
  if (buffer.size() < floats) buffer.resize(floats);
  return buffer.data();
}

// Row t of the probabilities: s_t2 = row[t2] * scale for t2 <= t become softmax(s) in place;
// columns t+1 .. n-1 (products of the diagonal tile past the diagonal) become 0. Returns the
// row's log-sum-exp, log sum_t2 exp(s_t2) = max + log(sum_t2 exp(s_t2 - max)), from which
// the backward recomputes the row: P[t2] = exp(s_t2 - lse).
float softmax_causal_row(float* row, int t, int n, float scale) {
  float maxval = -INFINITY;
#pragma omp simd reduction(max : maxval)
  for (int t2 = 0; t2 <= t; ++t2) {
    row[t2] *= scale;
    maxval = row[t2] > maxval ? row[t2] : maxval;
  }
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int t2 = 0; t2 <= t; ++t2) {
    row[t2] = exp_vectorizable(row[t2] - maxval);
    sum += row[t2];
  }
  const float inv_sum = 1.0f / sum;
#pragma omp simd
  for (int t2 = 0; t2 <= t; ++t2) row[t2] *= inv_sum;
  for (int t2 = t + 1; t2 < n; ++t2) row[t2] = 0.0f;
  return maxval + std::log(sum);
}

// Zeroes `rows` rows of `cols` floats, `ld` apart.
void zero_block(float* m, size_t ld, int rows, int cols) {
  for (int r = 0; r < rows; ++r) std::fill_n(m + r * ld, cols, 0.0f);
}

}  // namespace

// Query tile [q0, q1) of head (b, h), keys 0 .. q1-1 (the rest are masked for every row):
//   S = Q_tile K^T into a per-thread scratch (M x q1: 256 KB at T = 1024, in L2); softmax per
//   row, saving only its log-sum-exp; out_tile = drop(P) V.
// Tiles are independent tasks: each writes its own rows of lse and out.
void attention_forward_blocked(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
                               const DropoutParams& dropout) {
  check_shape(C, NH);
  const int HS = C / NH, tiles = (T + kTile - 1) / kTile;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
#pragma omp parallel for collapse(3) schedule(dynamic)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int i = 0; i < tiles; ++i) {
        const TileRows rows(tiles - 1 - i, T);  // the longest rows first
        const HeadSlices head(b, h, T, C, HS);
        const int M = rows.size(), n = rows.end;
        const float* q = qkv + head.offset + rows.begin * head.stride;
        const float* k = qkv + head.offset + C;
        const float* v = qkv + head.offset + 2 * C;
        const size_t first_row = (static_cast<size_t>(b) * NH + h) * T + rows.begin;
        thread_local std::vector<float> probs_buffer;
        float* p = scratch(probs_buffer, static_cast<size_t>(M) * n);
        gemm_assign_serial(p, n, StridedMatrix{q, head.stride, 1}, StridedMatrix{k, 1, head.stride}, M, n, HS);
        for (int r = 0; r < M; ++r) {
          lse[first_row + r] = softmax_causal_row(p + static_cast<size_t>(r) * n, rows.begin + r, n, scale);
        }
        if (dropout.active()) {  // in place: the probabilities are not kept
          for (int r = 0; r < M; ++r) {
            for (int t2 = 0; t2 < n; ++t2) {
              p[r * n + t2] = dropped(p[r * n + t2], dropout, (first_row + r) * T + t2);
            }
          }
        }
        float* o = out + (static_cast<size_t>(b) * T + rows.begin) * C + h * HS;
        gemm_assign_serial(o, C, StridedMatrix{p, static_cast<size_t>(n), 1}, StridedMatrix{v, head.stride, 1}, M,
                           HS, n);
      }
    }
  }
}

namespace {

// P and dS for query tile `rows` x key tile `keys` of one head (the formulas above
// attention_backward), P recomputed from the saved log-sum-exp:
//   P = exp(Q_rows K_keys^T scale - lse) ;  dP' = dO_rows V_keys^T ;
//   ds = P (drop'(dP') - D_t) scale ;  D_t = dO_t . out_t ;  p = drop(P) for dV
// D_t is sum_t2 P[t2] drop'(dP'[t2]), the softmax Jacobian's row term (out_t = sum_t2 drop(P) v_t2,
// so dO_t . out_t = sum_t2 drop(P)[t2] dP'[t2]): the whole row's sum from one dot, where a tile
// sees only its keys (FlashAttention-2's D, Dao 2023).
struct ScoreGradient {
  const float* dout;  // batch row b's dO, head h's columns: (T x HS), rows C apart
  const float* out;   // the forward's output, same layout
  const float* lse;   // head (b, h)'s rows' log-sum-exp (T)
  const float* q;     // head (b, h)'s q, k, v: (T x HS), rows `stride` apart
  const float* k;
  const float* v;
  size_t stride, first_row;  // qkv's row stride; the head's first row index into lse and the mask
  int T, C, HS;
  float scale;
  const DropoutParams* dropout;

  // ds and p: M x N, leading dimension kTile.
  void compute(const TileRows& rows, const TileRows& keys, float* ds, float* p) const {
    const int M = rows.size(), N = keys.size();
    gemm_assign_serial(p, kTile, StridedMatrix{q + rows.begin * stride, stride, 1},
                       StridedMatrix{k + keys.begin * stride, 1, stride}, M, N, HS);
    gemm_assign_serial(ds, kTile, StridedMatrix{dout + static_cast<size_t>(rows.begin) * C, size_t(C), 1},
                       StridedMatrix{v + keys.begin * stride, 1, stride}, M, N, HS);
    for (int r = 0; r < M; ++r) {
      const int t = rows.begin + r;
      const size_t mask_row = (first_row + t) * T;  // the dropout mask's index of (t, 0)
      const float d = dot_vectorized(dout + static_cast<size_t>(t) * C, out + static_cast<size_t>(t) * C, HS);
      const float row_lse = lse[t];
      float* p_row = p + r * kTile;
      float* ds_row = ds + r * kTile;
      // Keys t2 <= t; the rest are masked. At least one: a key tile never starts past its rows.
      const int visible = std::min(N, t - keys.begin + 1);
#pragma omp simd
      for (int j = 0; j < visible; ++j) p_row[j] = exp_vectorizable(p_row[j] * scale - row_lse);
      if (!dropout->active()) {
#pragma omp simd
        for (int j = 0; j < visible; ++j) ds_row[j] = p_row[j] * (ds_row[j] - d) * scale;
      } else {
        const float keep_scale = dropout->scale();
        for (int j = 0; j < visible; ++j) {
          const bool keep = dropout->keep(mask_row + keys.begin + j);
          ds_row[j] = p_row[j] * ((keep ? ds_row[j] * keep_scale : 0.0f) - d) * scale;
          p_row[j] = keep ? p_row[j] * keep_scale : 0.0f;
        }
      }
      std::fill(p_row + visible, p_row + N, 0.0f);
      std::fill(ds_row + visible, ds_row + N, 0.0f);
    }
  }
};

}  // namespace

// Per head, for each key tile K in order and each query tile Q >= K in order:
//   dV_K += drop(P)_{Q,K}^T dO_Q ;  dK_K += dS_{Q,K}^T Q_Q ;  dQ_Q += dS_{Q,K} K_K
// so each element of dqkv receives its tile products in one fixed order (dQ_Q: K ascending;
// dK_K, dV_K: Q ascending). Two ways to share that out, with the same bits:
//   per head: one task per (b, h) runs the loops above: 5 products per tile pair. Taken when
//     there are at least two heads per thread.
//   per tile: two kinds of task per head, every element of dqkv written by exactly one: key
//     tile K (dV_K, dK_K over Q >= K) and query tile Q (dQ_Q over K <= Q), each recomputing the
//     tile pair's P and dS: 7 products per pair, but all cores work even at B = 1.
void attention_backward_blocked(float* dqkv, const float* dout, const float* lse, const float* qkv, const float* out,
                                int B, int T, int C, int NH, const DropoutParams& dropout) {
  check_shape(C, NH);
  const int HS = C / NH, tiles = (T + kTile - 1) / kTile;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const bool per_head = static_cast<long>(B) * NH >= 2L * omp_get_max_threads();
  const int tasks_per_head = per_head ? 1 : 2 * tiles;
#pragma omp parallel for collapse(3) schedule(dynamic)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      for (int task = 0; task < tasks_per_head; ++task) {
        const HeadSlices head(b, h, T, C, HS);
        const size_t first_row = (static_cast<size_t>(b) * NH + h) * T;
        const size_t io = static_cast<size_t>(b) * T * C + h * HS;  // dout and out of head (b, h)
        const float* q = qkv + head.offset;
        const ScoreGradient grad{dout + io, out + io, lse + first_row, q, q + C, q + 2 * C,
                                 head.stride, first_row, T, C, HS, scale, &dropout};
        thread_local std::vector<float> ds_buffer, p_buffer;
        float* ds = scratch(ds_buffer, kTile * kTile);
        float* p = scratch(p_buffer, kTile * kTile);
        const float* k = q + C;
        float* dq = dqkv + head.offset;
        float* dk = dq + C;
        float* dv = dq + 2 * C;
        // The three tile products of the loops above, for one tile pair.
        auto add_dv_dk = [&](const TileRows& rows, const TileRows& keys) {
          gemm_accumulate_serial(dv + keys.begin * head.stride, head.stride, StridedMatrix{p, 1, kTile},
                                 StridedMatrix{grad.dout + static_cast<size_t>(rows.begin) * C, size_t(C), 1},
                                 keys.size(), HS, rows.size());
          gemm_accumulate_serial(dk + keys.begin * head.stride, head.stride, StridedMatrix{ds, 1, kTile},
                                 StridedMatrix{q + rows.begin * head.stride, head.stride, 1}, keys.size(), HS,
                                 rows.size());
        };
        auto add_dq = [&](const TileRows& rows, const TileRows& keys) {
          gemm_accumulate_serial(dq + rows.begin * head.stride, head.stride, StridedMatrix{ds, kTile, 1},
                                 StridedMatrix{k + keys.begin * head.stride, head.stride, 1}, rows.size(), HS,
                                 keys.size());
        };
        if (per_head) {
          for (float* slice : {dq, dk, dv}) zero_block(slice, head.stride, T, HS);
          for (int kt = 0; kt < tiles; ++kt) {
            const TileRows keys(kt, T);
            for (int qt = kt; qt < tiles; ++qt) {
              const TileRows rows(qt, T);
              grad.compute(rows, keys, ds, p);
              add_dv_dk(rows, keys);
              add_dq(rows, keys);
            }
          }
        } else if (task < tiles) {  // key tile `task`, the longest column first
          const TileRows keys(task, T);
          zero_block(dk + keys.begin * head.stride, head.stride, keys.size(), HS);
          zero_block(dv + keys.begin * head.stride, head.stride, keys.size(), HS);
          for (int qt = task; qt < tiles; ++qt) {
            const TileRows rows(qt, T);
            grad.compute(rows, keys, ds, p);
            add_dv_dk(rows, keys);
          }
        } else {  // query tile, the longest row first
          const TileRows rows(2 * tiles - 1 - task, T);
          zero_block(dq + rows.begin * head.stride, head.stride, rows.size(), HS);
          for (int kt = 0; kt * kTile < rows.end; ++kt) {
            const TileRows keys(kt, T);
            grad.compute(rows, keys, ds, p);
            add_dq(rows, keys);
          }
        }
      }
    }
  }
}

namespace {
// attention_decode's sums with the products vectorised, on caches and qkv of floats or of bf16
// bits (widened as read): in fp32 q . k_t2 is dot_vectorized; in bf16 a loop of its own order
// over the widened values. exp_vectorizable in the softmax either way.
template <class E>
void decode_vectorized(float* out, E* kcache, E* vcache, const E* qkv, int B, int pos, int maxT, int C, int NH) {
  store_decoded_token(kcache, vcache, qkv, B, pos, maxT, C, NH);
  const int HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < NH; ++h) {
      thread_local std::vector<float> att_buffer, q_buffer;
      float* att = scratch(att_buffer, static_cast<size_t>(pos) + 1);
      const E* qe = qkv + static_cast<size_t>(b) * 3 * C + h * HS;
      const E* kb = kcache + static_cast<size_t>(b) * maxT * C + h * HS;
      const E* vb = vcache + static_cast<size_t>(b) * maxT * C + h * HS;
      if constexpr (std::is_same_v<E, float>) {
        for (int t2 = 0; t2 <= pos; ++t2) att[t2] = dot_vectorized(qe, kb + static_cast<size_t>(t2) * C, HS);
      } else {
        float* q = scratch(q_buffer, HS);
        for (int i = 0; i < HS; ++i) q[i] = as_float(qe[i]);
        for (int t2 = 0; t2 <= pos; ++t2) {
          const E* k = kb + static_cast<size_t>(t2) * C;
          float s = 0.0f;
#pragma omp simd reduction(+ : s)
          for (int i = 0; i < HS; ++i) s += q[i] * as_float(k[i]);
          att[t2] = s;
        }
      }
      softmax_causal_row(att, pos, pos + 1, scale);
      float* o = out + static_cast<size_t>(b) * C + h * HS;
      std::fill_n(o, HS, 0.0f);
      for (int t2 = 0; t2 <= pos; ++t2) {
        const float a = att[t2];
        const E* v = vb + static_cast<size_t>(t2) * C;
#pragma omp simd
        for (int i = 0; i < HS; ++i) o[i] += a * as_float(v[i]);
      }
    }
  }
}
}  // namespace

// attention_decode with the products vectorised: q . k_t2 as dot_vectorized, exp_vectorizable.
void attention_decode_vectorized(float* out, float* kcache, float* vcache, const float* qkv, int B, int pos, int maxT,
                                 int C, int NH) {
  decode_vectorized(out, kcache, vcache, qkv, B, pos, maxT, C, NH);
}

// bf16 caches and qkv (the CPU's bf16 backend): the new token's k, v bits copied into the caches,
// then the sums on the widened values, each an fp32 sum over exact products.
void attention_decode_bf16(float* out, uint16_t* kcache, uint16_t* vcache, const uint16_t* qkv, int B, int pos,
                           int maxT, int C, int NH) {
  decode_vectorized(out, kcache, vcache, qkv, B, pos, maxT, C, NH);
}

void kv_cache_store_bf16(uint16_t* kcache, uint16_t* vcache, const uint16_t* qkv, int B, int T, int maxT, int C) {
  store_kv(kcache, vcache, qkv, B, T, maxT, C);
}

}  // namespace gpt2cc::cpu
