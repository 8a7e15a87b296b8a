// LayerNorm over the channels, forward and backward (cpu/layernorm.hpp), eps = 1e-5.
// inp, out (B,T,C); weight, bias (C); mean, rstd (B,T) saved so the backward need not recompute
// them. Backward: dinp accumulates (+=, the input is the residual stream); dweight, dbias +=.
#include "cpu/layernorm.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "cpu/gemm.hpp"

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

namespace {

// Rows per task of the backward: a fixed cut (not one per thread), so that the dweight/dbias
// partial sums, and so their total, are the same on any thread count.
constexpr int kBackwardRows = 32;
// Channels per task of the partial sums' reduction.
constexpr int kReduceChannels = 64;

}  // namespace

// layernorm_forward's two-pass mean and variance, each row's sums vectorised (row_sum).
void layernorm_forward_vectorized(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                  const float* bias, int B, int T, int C) {
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T; ++bt) {
    const float* x = inp + static_cast<size_t>(bt) * C;
    float* y = out + static_cast<size_t>(bt) * C;
    const float m = row_sum(C, [&](int c) { return load8(x + c); }, [&](int c) { return x[c]; }) / C;
    const float var = row_sum(
                          C,
                          [&](int c) {
                            const vec8 d = load8(x + c) - m;
                            return d * d;
                          },
                          [&](int c) { return (x[c] - m) * (x[c] - m); }) /
                      C;
    const float s = 1.0f / std::sqrt(var + kEps);
    for (int c = 0; c < C; ++c) y[c] = (x[c] - m) * s * weight[c] + bias[c];
    mean[bt] = m;
    rstd[bt] = s;
  }
}

// layernorm_backward's formulas in one pass over dout and inp: each task takes kBackwardRows rows,
// adds their dinp, and sums their dweight/dbias terms into its own partial row; then the
// partials are added per channel in task order.
void layernorm_backward_vectorized(float* dinp, float* dweight, float* dbias, const float* dout, const float* mean,
                                   const float* rstd, const float* inp, const float* weight, int B, int T, int C) {
  const int rows = B * T, tasks = (rows + kBackwardRows - 1) / kBackwardRows;
  std::vector<float> partial(static_cast<size_t>(tasks) * 2 * C, 0.0f);  // per task: dweight's C, then dbias's
#pragma omp parallel for schedule(static)
  for (int task = 0; task < tasks; ++task) {
    float* dw = partial.data() + static_cast<size_t>(task) * 2 * C;
    float* db = dw + C;
    for (int bt = task * kBackwardRows; bt < std::min(rows, (task + 1) * kBackwardRows); ++bt) {
      const float* dy = dout + static_cast<size_t>(bt) * C;
      const float* x = inp + static_cast<size_t>(bt) * C;
      float* dx = dinp + static_cast<size_t>(bt) * C;
      const float m = mean[bt], s = rstd[bt];
      const float g_mean = row_sum(C, [&](int c) { return load8(dy + c) * load8(weight + c); },
                                   [&](int c) { return dy[c] * weight[c]; }) /
                           C;
      const float gx_mean = row_sum(
                                C,
                                [&](int c) { return load8(dy + c) * load8(weight + c) * ((load8(x + c) - m) * s); },
                                [&](int c) { return dy[c] * weight[c] * ((x[c] - m) * s); }) /
                            C;
      // Eight channels at a time, then the tail: the same expressions (GCC leaves the plain loop
      // scalar, unsure that dx, dw and db do not overlap the rows it reads).
      int c = 0;
      for (; c + 8 <= C; c += 8) {
        const vec8 g = load8(dy + c), xhat = (load8(x + c) - m) * s;
        store8(dx + c, load8(dx + c) + s * (g * load8(weight + c) - g_mean - xhat * gx_mean));
        store8(dw + c, load8(dw + c) + g * xhat);
        store8(db + c, load8(db + c) + g);
      }
      for (; c < C; ++c) {
        const float xhat = (x[c] - m) * s;
        dx[c] += s * (dy[c] * weight[c] - g_mean - xhat * gx_mean);
        dw[c] += dy[c] * xhat;
        db[c] += dy[c];
      }
    }
  }
#pragma omp parallel for schedule(static)
  for (int c0 = 0; c0 < C; c0 += kReduceChannels) {
    const int n = std::min(kReduceChannels, C - c0);
    float dw[kReduceChannels] = {}, db[kReduceChannels] = {};
    for (int task = 0; task < tasks; ++task) {
      const float* part = partial.data() + static_cast<size_t>(task) * 2 * C + c0;
      for (int c = 0; c < n; ++c) {
        dw[c] += part[c];
        db[c] += part[C + c];
      }
    }
    for (int c = 0; c < n; ++c) {
      dweight[c0 + c] += dw[c];
      dbias[c0 + c] += db[c];
    }
  }
}

}  // namespace gpt2cc::cpu
