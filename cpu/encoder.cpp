// Token + position embedding, forward and backward (cpu/encoder.hpp).
// out (B,T,C) = wte[inp[b,t]] + wpe[t]; wte (Vp,C), wpe (maxT,C). The backward scatter-adds dout
// into the rows of dwte that the tokens picked and sums dout over the batch into dwpe; both
// accumulate (+=) and the result does not depend on the number of threads.
#include "cpu/encoder.hpp"

#include <algorithm>
#include <cstddef>

namespace gpt2cc::cpu {

// out[b,t,c] = wte[inp[b,t], c] + wpe[t, c]
void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C) {
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T; ++bt) {
    const int t = bt % T;
    const float* wte_row = wte + static_cast<size_t>(inp[bt]) * C;
    const float* wpe_row = wpe + static_cast<size_t>(t) * C;
    float* out_row = out + static_cast<size_t>(bt) * C;
    for (int c = 0; c < C; ++c) out_row[c] = wte_row[c] + wpe_row[c];
  }
}

// out = wte[tok] + wpe[t] is a sum with coefficient 1 in each table, so the chain rule gives
//   dwte[v, c] += sum over (b,t) with inp[b,t] == v of dout[b,t,c]   (scatter-add)
//   dwpe[t, c] += sum over b of dout[b,t,c]
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C) {
  // Two positions may hold the same token, so threads split the channels rather than the tokens:
  // each block of channels is owned by one thread, which visits (b,t) in order. No races, and
  // every element is summed in the same order whatever the thread count (deterministic).
  constexpr int kBlock = 16;
  const int nblocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int blk = 0; blk < nblocks; ++blk) {
    const int c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
    for (int b = 0; b < B; ++b) {
      for (int t = 0; t < T; ++t) {
        const size_t bt = static_cast<size_t>(b) * T + t;
        const float* dout_row = dout + bt * C;
        float* dwte_row = dwte + static_cast<size_t>(inp[bt]) * C;
        float* dwpe_row = dwpe + static_cast<size_t>(t) * C;
        for (int c = c0; c < c1; ++c) {
          dwte_row[c] += dout_row[c];
          dwpe_row[c] += dout_row[c];
        }
      }
    }
  }
}

}  // namespace gpt2cc::cpu
