// LayerNorm over the channels, forward and backward (cpu/layernorm.hpp), eps = 1e-5.
// inp, out (B,T,C); weight, bias (C); mean, rstd (B,T) saved so the backward need not recompute
// them. Backward: dinp accumulates (+=, the input is the residual stream); dweight, dbias +=.
#include "cpu/layernorm.hpp"

#include <cmath>
#include <cstddef>

namespace gpt2cc::cpu {

namespace {
constexpr float kEps = 1e-5f;
}

// mean = sum_c x_c / C ; var = sum_c (x_c - mean)^2 / C (biased, as PyTorch) ;
// rstd = 1/sqrt(var + eps) ; xhat_c = (x_c - mean) * rstd ; out_c = xhat_c * weight_c + bias_c
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int B, int T, int C) {
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T; ++bt) {
    const float* x = inp + static_cast<size_t>(bt) * C;
    float* y = out + static_cast<size_t>(bt) * C;
    float m = 0.0f;
    for (int c = 0; c < C; ++c) m += x[c];
    m /= C;
    float var = 0.0f;
    for (int c = 0; c < C; ++c) var += (x[c] - m) * (x[c] - m);
    var /= C;
    const float s = 1.0f / std::sqrt(var + kEps);
    for (int c = 0; c < C; ++c) y[c] = (x[c] - m) * s * weight[c] + bias[c];
    mean[bt] = m;
    rstd[bt] = s;
  }
}

// With g_c = dout_c * weight_c (the gradient reaching xhat) and xhat = (x - mean) * rstd:
//   dxhat/dx_j carries three paths (direct, through mean, through rstd), which sum to
//   dx_c = rstd * (g_c - mean_j(g_j) - xhat_c * mean_j(g_j * xhat_j))
//   dweight_c += sum_bt dout_c * xhat_c ;  dbias_c += sum_bt dout_c
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                        const float* rstd, const float* inp, const float* weight, int B, int T, int C) {
  // dinp: rows are independent, so split the rows across threads.
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T; ++bt) {
    const float* dy = dout + static_cast<size_t>(bt) * C;
    const float* x = inp + static_cast<size_t>(bt) * C;
    float* dx = dinp + static_cast<size_t>(bt) * C;
    const float m = mean[bt], s = rstd[bt];
    float g_mean = 0.0f, gx_mean = 0.0f;
    for (int c = 0; c < C; ++c) {
      const float g = dy[c] * weight[c];
      g_mean += g;
      gx_mean += g * (x[c] - m) * s;
    }
    g_mean /= C;
    gx_mean /= C;
    for (int c = 0; c < C; ++c) {
      const float xhat = (x[c] - m) * s;
      dx[c] += s * (dy[c] * weight[c] - g_mean - xhat * gx_mean);
    }
  }
  // dweight, dbias: a sum over rows per channel; splitting the channels keeps it race-free and
  // deterministic.
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; ++c) {
    float dw = 0.0f, db = 0.0f;
    for (int bt = 0; bt < B * T; ++bt) {
      const float dy = dout[static_cast<size_t>(bt) * C + c];
      const float xhat = (inp[static_cast<size_t>(bt) * C + c] - mean[bt]) * rstd[bt];
      dw += dy * xhat;
      db += dy;
    }
    dweight[c] += dw;
    dbias[c] += db;
  }
}

}  // namespace gpt2cc::cpu
