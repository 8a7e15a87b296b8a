// Inverted dropout with counter-based masks, forward and backward (cpu/dropout.hpp).
//   out[i] = keep(i) ? inp[i] / (1 - p) : 0,  keep(i) = philox_uniform(seed, stream, i) >= p
// The mask is recomputed in the backward from (seed, stream, i) instead of being stored.
// Backward: dinp written (=). Both may run in place. p == 0 is the identity (no draws).
#include "cpu/dropout.hpp"

namespace gpt2cc::cpu {

namespace {
// y[i] = keep(i) * scale * x[i]: the same masked scaling serves both directions.
void apply_mask(float* y, const float* x, const DropoutParams& dropout, size_t N) {
  if (!dropout.active()) {
    if (y != x) {
#pragma omp parallel for schedule(static)
      for (size_t i = 0; i < N; ++i) y[i] = x[i];
    }
    return;
  }
  const float scale = dropout.scale();
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < N; ++i) y[i] = dropout.keep(i) ? x[i] * scale : 0.0f;
}
}  // namespace

// out = mask * inp / (1 - p)
void dropout_forward(float* out, const float* inp, const DropoutParams& dropout, size_t N) {
  apply_mask(out, inp, dropout, N);
}

// out_i = m_i s x_i is linear in x_i with slope m_i s (m_i in {0,1}, s = 1/(1-p)), so
//   dinp_i = m_i * s * dout_i  (the same mask, regenerated from the counter)
void dropout_backward(float* dinp, const float* dout, const DropoutParams& dropout, size_t N) {
  apply_mask(dinp, dout, dropout, N);
}

}  // namespace gpt2cc::cpu
