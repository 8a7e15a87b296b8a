// The classifier: softmax + cross-entropy over the first V of Vp logits (cpu/crossentropy.hpp).
// logits (B,T,Vp); targets (B,T), -1 = ignore; losses (B,T) = -log softmax(logits)[target].
// Padded columns V..Vp-1 never enter the softmax and get gradient 0. The backward writes (=)
// dlogits and may run in place over logits: each row is read completely before it is written.
// The reference pair uses std::exp and one float sum per row; the fast paths (fused_classifier,
// crossentropy_forward_vectorized) share row_loss: exp_vectorizable, a sum blocked in 512 floats.
#include "cpu/crossentropy.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/check.hpp"
#include "cpu/bf16.hpp"
#include "cpu/vector_exp.hpp"

namespace gpt2cc::cpu {

namespace {
constexpr int kSumBlock = 512;  // row_loss's summation block

// Targets are checked up front, outside the parallel loops (an exception must not leave one).
void check_targets(const int* targets, int B, int T, int V) {
  for (int bt = 0; bt < B * T; ++bt) {
    ENSURE(targets[bt] == kIgnoreIndex || (targets[bt] >= 0 && targets[bt] < V),
           "target at position {} is {}, expected -1 (ignore) or a token id in [0, {})", bt, targets[bt], V);
  }
}

// Row bt of the logits as fp32: in place when they are fp32; bf16 ones widened into a buffer of
// the calling thread (a row of GPT-2's vocabulary is 197 KiB: it stays in L2 while the row's
// passes run, where a widened copy of all the logits would go through memory twice).
float* row_of(float* logits, int bt, int Vp) { return logits + static_cast<size_t>(bt) * Vp; }
const float* row_of(const float* logits, int bt, int Vp) { return logits + static_cast<size_t>(bt) * Vp; }
float* row_of(const uint16_t* logits, int bt, int Vp) {
  thread_local std::vector<float> row;
  row.resize(static_cast<size_t>(Vp));
  const uint16_t* src = logits + static_cast<size_t>(bt) * Vp;
  for (int j = 0; j < Vp; ++j) row[j] = widen_bf16(src[j]);
  return row.data();
}
// The finished fp32 row (from row_of) into row bt of the output: nothing to do when it was the
// row itself, else rounded into the bf16 one.
void put_row(float*, int, const float*, int) {}
void put_row(uint16_t* out, int bt, const float* row, int Vp) {
  uint16_t* dst = out + static_cast<size_t>(bt) * Vp;
  for (int j = 0; j < Vp; ++j) dst[j] = round_to_bf16(row[j]);
}

// The row's maximum over the first V columns (in vector lanes: the maximum is exact in any order).
float row_max(const float* row, int V) {
  float maxval = row[0];
#pragma omp simd reduction(max : maxval)
  for (int j = 1; j < V; ++j) maxval = row[j] > maxval ? row[j] : maxval;
  return maxval;
}

// The row's maximum and sum_j exp(l_j - max) over the first V columns (max subtracted so exp
// never overflows).
void row_max_and_sum(const float* row, int V, float& maxval, float& sum) {
  maxval = row_max(row, V);
  sum = 0.0f;
  for (int j = 0; j < V; ++j) sum += std::exp(row[j] - maxval);
}

// The row's loss = log(sum_j e_j) - (l_y - max), e_j = exp(l_j - max) with exp_vectorizable,
// and sum_j e_j, for the two fast paths. With kStoreExps, e_j is also written to exps[j] (exps
// may be the row itself: l_y and each l_j are read before they are overwritten); without it,
// exps is not touched and the row only read. One function for both, so the forward-only loss is
// the fused classifier's bit for bit.
struct RowLoss {
  float loss;
  double sum;
};
template <bool kStoreExps>
RowLoss row_loss(float* exps, const float* row, int y, int V) {
  const float maxval = row_max(row, V);
  const float target_logit = row[y];
  // Summed in blocks (vector lanes within one, a double across them): one float accumulator per
  // lane over all 50257 terms would lose some 1e-5 relative, a block of 512 a few 1e-7.
  double sum = 0.0;
  for (int begin = 0; begin < V; begin += kSumBlock) {
    const int end = std::min(V, begin + kSumBlock);
    float block = 0.0f;
#pragma omp simd reduction(+ : block)
    for (int j = begin; j < end; ++j) {
      const float e = exp_vectorizable(row[j] - maxval);
      if constexpr (kStoreExps) exps[j] = e;
      block += e;
    }
    sum += block;
  }
  return {float(std::log(sum)) - (target_logit - maxval), sum};
}

// The forward-only losses, for both functions: targets checked, ignored rows 0, the others
// loss_of(row, target) in parallel over the rows.
template <class E, class LossOf>
void losses_of_rows(float* losses, const E* logits, const int* targets, int B, int T, int V, int Vp,
                    LossOf&& loss_of) {
  check_targets(targets, B, T, V);
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T; ++bt) {
    losses[bt] = targets[bt] == kIgnoreIndex ? 0.0f : loss_of(row_of(logits, bt, Vp), targets[bt]);
  }
}
}  // namespace

// loss = -log( exp(l_y) / sum_j exp(l_j) ) = log(sum_j exp(l_j - max)) - (l_y - max)
// (l_y - max first: adding max back to the log would round it away when max is large)
void crossentropy_forward(float* losses, const float* logits, const int* targets, int B, int T, int V, int Vp) {
  losses_of_rows(losses, logits, targets, B, T, V, Vp, [V](const float* row, int y) {
    float maxval, sum;
    row_max_and_sum(row, V, maxval, sum);
    return std::log(sum) - (row[y] - maxval);
  });
}

// d loss / d l_j = softmax_j - [j == y]  (differentiate log sum_j exp(l_j) - l_y), so
//   dlogits_j = dloss * (p_j - [j == y]) for j < V ; 0 for padded columns and ignored rows.
namespace {
// The backward of a row (fp32, read before each element is written: row and drow may be one).
void backward_row(float* drow, float dloss, const float* row, int y, int V, int Vp) {
  if (y == kIgnoreIndex) {
    for (int j = 0; j < Vp; ++j) drow[j] = 0.0f;
    return;
  }
  float maxval, sum;
  row_max_and_sum(row, V, maxval, sum);
  const float inv_sum = 1.0f / sum;
  for (int j = 0; j < V; ++j) {
    const float p = std::exp(row[j] - maxval) * inv_sum;
    drow[j] = dloss * (p - (j == y ? 1.0f : 0.0f));
  }
  for (int j = V; j < Vp; ++j) drow[j] = 0.0f;
}
}  // namespace

void crossentropy_backward(float* dlogits, float dloss, const float* logits, const int* targets, int B, int T, int V,
                           int Vp) {
  check_targets(targets, B, T, V);
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T; ++bt)
    backward_row(row_of(dlogits, bt, Vp), dloss, row_of(logits, bt, Vp), targets[bt], V, Vp);
}

// bf16: each row widened, its gradient computed over the copy, rounded into dlogits' row.
void crossentropy_backward(uint16_t* dlogits, float dloss, const uint16_t* logits, const int* targets, int B, int T,
                           int V, int Vp) {
  check_targets(targets, B, T, V);
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T; ++bt) {
    float* row = row_of(logits, bt, Vp);
    backward_row(row, dloss, row, targets[bt], V, Vp);
    put_row(dlogits, bt, row, Vp);
  }
}

// Evaluation's loss: crossentropy_forward with the fused classifier's arithmetic (row_loss),
// reading the logits only:
//   max = max_j l_j;  sum = sum_j exp(l_j - max);  loss = log(sum) - (l_y - max).
// exp_vectorizable and a blocked sum where the reference makes one scalar exp call per logit
// into one float sum; the losses are fused_classifier's bit for bit, within 1e-6 relative of the
// exact values (tests/cpu/test_crossentropy.cpp).
namespace {
template <class E>
void vectorized_losses(float* losses, const E* logits, const int* targets, int B, int T, int V, int Vp) {
  losses_of_rows(losses, logits, targets, B, T, V, Vp,
                 [V](const float* row, int y) { return row_loss<false>(nullptr, row, y, V).loss; });
}
}  // namespace

void crossentropy_forward_vectorized(float* losses, const float* logits, const int* targets, int B, int T, int V,
                                     int Vp) {
  vectorized_losses(losses, logits, targets, B, T, V, Vp);
}
void crossentropy_forward_vectorized(float* losses, const uint16_t* logits, const int* targets, int B, int T, int V,
                                     int Vp) {
  vectorized_losses(losses, logits, targets, B, T, V, Vp);
}

// Training's classifier: crossentropy_forward, then crossentropy_backward in place, per row in
// three passes that stay in cache (a row of GPT-2's 50304 floats is 197 KiB):
//   max = max_j l_j;  e_j = exp(l_j - max) written over l_j, sum = sum_j e_j;
//   loss = log(sum) - (l_y - max)  (l_y read before it is overwritten);
//   dl_j = dloss * (e_j / sum - [j == y]).
// The backward's softmax reuses the forward's exponentials: one exp per logit where the pair
// computes three (the max and the sum twice, then p), and exp_vectorizable rather than a scalar
// call. Closer to the exact values than the pair (whose one float sum over a row strays by some
// 1e-5 relative at GPT-2's vocabulary): within 1e-6 relative (tests/cpu/test_crossentropy.cpp).
namespace {
template <class E>
void classify_rows(E* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp) {
  check_targets(targets, B, T, V);
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T; ++bt) {
    float* row = row_of(logits, bt, Vp);
    const int y = targets[bt];
    if (y == kIgnoreIndex) {
      losses[bt] = 0.0f;
      for (int j = 0; j < Vp; ++j) row[j] = 0.0f;
    } else {
      const RowLoss r = row_loss<true>(row, row, y, V);
      losses[bt] = r.loss;
      const float scale = float(dloss / r.sum);
#pragma omp simd
      for (int j = 0; j < V; ++j) row[j] *= scale;
      row[y] -= dloss;
      for (int j = V; j < Vp; ++j) row[j] = 0.0f;
    }
    put_row(logits, bt, row, Vp);
  }
}
}  // namespace

void fused_classifier(float* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp) {
  classify_rows(logits, losses, targets, dloss, B, T, V, Vp);
}
// bf16: each row widened into a buffer of the thread, classified there and rounded back.
void fused_classifier(uint16_t* logits, float* losses, const int* targets, float dloss, int B, int T, int V, int Vp) {
  classify_rows(logits, losses, targets, dloss, B, T, V, Vp);
}

}  // namespace gpt2cc::cpu
