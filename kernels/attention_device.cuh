// Device code of the tiled causal self-attention and the KV-cache decode (kernels/attention.cuh;
// mirrors cpu/attention.cpp). Per head h of batch row b (HS = C/NH, scale = 1/sqrt(HS)):
//   forward : S = scale * Q K^T ; P = softmax_causal(S), saving lse = log sum_t2 exp(S) per row ;
//             out = drop(P) V
//   backward: S again, P = exp(S - lse) ; dV = drop(P)^T dout ; dP = drop'(dout V^T) ;
//             dS = P * (dP - rowsum(P * dP)) ; dQ = scale * dS K ; dK = scale * dS^T Q
// P and dP are T x T per head in stream-ordered scratch for the length of one call: what a layer
// keeps for its backward is the B*NH*T log-sum-exps, like the CPU's (cpu/attention.hpp).
// Every product is one 64x64-tiled, register-blocked kernel over the heads
// (attention_head_gemm_tiled_kernel) that reads Q, K, V straight out of the interleaved qkv rows;
// the softmax passes are one warp per row; each output element is written by one thread
// (deterministic). Included by kernels/attention.cu (the launchers; tests/emu/hostcuda compiles
// it as host C++ for the CPU emulator), with the parameters of every product, the launch geometry
// and the decode branch at the end.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "core/rng.hpp"
#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"
#include "kernels/shared_memory.cuh"

namespace gpt2cc::cuda::attention_kernels {

constexpr int kTile = 64;                                // output tile kTile x kTile
constexpr int kStep = 16;                                // contraction values staged per pass
constexpr int kThreadTile = 4;                           // a thread owns a 4 x 4 block of outputs
constexpr int kTileThreads = kTile / kThreadTile;        // block (16, 16)
constexpr int kTileBlock = kTileThreads * kTileThreads;  // 256 threads
constexpr int kTilePad = 4;  // tile rows stay 16-byte aligned (4-float reads); spreads the banks
constexpr int kMaxGridZ = 65535;                     // the heads loop over blockIdx.z with this stride
constexpr int kWarpsPerBlock = 8;                    // warp-per-row kernels

// What attention_head_gemm_tiled_kernel computes for head (b,h):
//   scores         : out[t, t2] = scale * sum_d x[t, d] y[t2, d]            (t2 <= t; T x T out)
//                    or, given the rows' log-sum-exp, exp(that - lse[t]): the backward's P
//   probs_times    : out[t, d]  = scale * sum_{t2 <= t} probs~[t, t2] x[t2, d]
//   probs_t_times  : out[t2, d] = scale * sum_{t >= t2} probs~[t, t2] x[t, d]
// probs~ is probs with dropout applied when dropout is active.
enum class HeadGemm { scores, probs_times, probs_t_times };

// Row r of head (b,h) of a (B,T,*) matrix with row stride `stride` is at
// base + (b*T + r)*stride + h*HS; probs/score matrices are (B*NH, T, T), always fp32.
// In: the element type of x, y; Out: of out (float for score matrices, else the model's type).
template <class In, class Out>
struct HeadGemmParams {
  Out* out;
  int out_stride;       // row stride of out (unused for scores: T x T per head)
  const float* probs;   // (B*NH, T, T), probs_* modes only
  const In* x;          // scores: the rows t; probs_*: the right-hand matrix
  int x_stride;
  const In* y;          // scores only: the rows t2
  int y_stride;
  int B, T, NH, HS;
  float scale;
  DropoutParams dropout;  // on probs, mask index = flat index into (B*NH, T, T)
  const float* lse;       // scores only: null stores S; else P = exp(S - lse[row]) (B*NH*T values)
};

// probs~[t, t2] of head bh, zero outside the causal triangle and the matrix.
template <class In, class Out>
__device__ __forceinline__ float load_prob(const HeadGemmParams<In, Out>& p, const float* probs, size_t bh, int t,
                                           int t2) {
  if (t >= p.T || t2 > t) return 0.0f;
  float v = probs[static_cast<size_t>(t) * p.T + t2];
  if (p.dropout.active()) {
    const uint64_t index = (bh * p.T + t) * static_cast<uint64_t>(p.T) + t2;
    v = p.dropout.keep(index) ? v * p.dropout.scale() : 0.0f;
  }
  return v;
}

template <class In>
__device__ __forceinline__ float load_head(const In* head, int stride, int row, int col, int rows, int cols) {
  return row < rows && col < cols ? to_float(head[static_cast<size_t>(row) * stride + col]) : 0.0f;
}

// Shared-memory tiling with register blocking (the SGEMM recipe): per pass the block stages a
// kTile x kStep slice of each operand, k-major, and each thread accumulates a 4 x 4 block of the
// 64 x 64 output tile, reading 4 values of each operand per k (two 16-byte shared loads) for 16
// FMAs. Why: with one output column per thread (the 32 x 32 kernel this replaced) the loop did 5
// shared loads per 4 FMAs and ran at ~10% of the fp32 peak on an H200. Every output still sums
// over k ascending, one FMA at a time, as that kernel did. Causality prunes the contraction: tiles
// wholly above the diagonal are never loaded.
template <HeadGemm kMode, class In, class Out>
__global__ void __launch_bounds__(kTileBlock) attention_head_gemm_tiled_kernel(HeadGemmParams<In, Out> p) {
  __shared__ __align__(16) float a_tile[kStep][kTile + kTilePad];  // [k][output row]
  __shared__ __align__(16) float b_tile[kStep][kTile + kTilePad];  // [k][output column]
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * kTileThreads + tx;
  const int row0 = blockIdx.y * kTile, col0 = blockIdx.x * kTile;
  const int T = p.T, HS = p.HS;
  int k_begin = 0, k_end = 0;
  if constexpr (kMode == HeadGemm::scores) {
    if (col0 > row0 + kTile - 1) return;  // the whole tile is above the diagonal
    k_end = HS;
  } else if constexpr (kMode == HeadGemm::probs_times) {
    k_end = min(T, row0 + kTile);  // t2 <= t <= row0 + kTile - 1
  } else {
    k_begin = row0;  // t >= t2 >= row0
    k_end = T;
  }
  const int num_heads = p.B * p.NH;
  for (int bh = blockIdx.z; bh < num_heads; bh += gridDim.z) {
    const int b = bh / p.NH, h = bh % p.NH;
    const size_t head_offset = static_cast<size_t>(h) * HS;
    const In* x = p.x + static_cast<size_t>(b) * T * p.x_stride + head_offset;
    const float* probs = p.probs + static_cast<size_t>(bh) * T * T;
    float acc[kThreadTile][kThreadTile] = {};
    for (int k0 = k_begin; k0 < k_end; k0 += kStep) {
      // Staging: kTile * kStep values of each operand, kTile * kStep / kTileBlock per thread. The
      // index runs along the operand's contiguous dimension, so a warp's loads are coalesced.
      for (int e = tid; e < kTile * kStep; e += kTileBlock) {
        const int along_k_i = e / kStep, along_k_k = e % kStep;  // operand rows contiguous in k
        const int across_k = e / kTile, across_i = e % kTile;    // operand rows contiguous in i / j
        if constexpr (kMode == HeadGemm::scores) {
          const In* y = p.y + static_cast<size_t>(b) * T * p.y_stride + head_offset;
          a_tile[along_k_k][along_k_i] = load_head(x, p.x_stride, row0 + along_k_i, k0 + along_k_k, T, HS);  // [t][d]
          b_tile[along_k_k][along_k_i] = load_head(y, p.y_stride, col0 + along_k_i, k0 + along_k_k, T, HS);  // [t2][d]
        } else if constexpr (kMode == HeadGemm::probs_times) {
          a_tile[along_k_k][along_k_i] = load_prob(p, probs, bh, row0 + along_k_i, k0 + along_k_k);  // [t][t2]
          b_tile[across_k][across_i] = load_head(x, p.x_stride, k0 + across_k, col0 + across_i, T, HS);  // [t2][d]
        } else {
          a_tile[across_k][across_i] = load_prob(p, probs, bh, k0 + across_k, row0 + across_i);  // [t][t2]
          b_tile[across_k][across_i] = load_head(x, p.x_stride, k0 + across_k, col0 + across_i, T, HS);  // [t][d]
        }
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kStep; ++kk) {
        float a[kThreadTile], bv[kThreadTile];
        load_floats(a, &a_tile[kk][ty * kThreadTile]);
        load_floats(bv, &b_tile[kk][tx * kThreadTile]);
#pragma unroll
        for (int r = 0; r < kThreadTile; ++r) {
#pragma unroll
          for (int c = 0; c < kThreadTile; ++c) acc[r][c] += a[r] * bv[c];
        }
      }
      __syncthreads();
    }
    for (int r = 0; r < kThreadTile; ++r) {
      const int row = row0 + ty * kThreadTile + r;
      for (int c = 0; c < kThreadTile; ++c) {
        const int col = col0 + tx * kThreadTile + c;
        if constexpr (kMode == HeadGemm::scores) {
          if (row < T && col <= row) {
            const float score = p.scale * acc[r][c];
            const float value = p.lse == nullptr ? score : expf(score - p.lse[static_cast<size_t>(bh) * T + row]);
            p.out[(static_cast<size_t>(bh) * T + row) * T + col] = from_float<Out>(value);
          }
        } else {
          if (row < T && col < HS) {
            const size_t index = (static_cast<size_t>(b) * T + row) * p.out_stride + head_offset + col;
            p.out[index] = from_float<Out>(p.scale * acc[r][c]);
          }
        }
      }
    }
  }
}

// P[t, t2] = exp(S[t, t2] - max) / sum_{t2' <= t} exp(S[t, t2'] - max) for t2 <= t, in place
// over S; lse[row] = max + log(sum) (the row's log-sum-exp). One warp per row (b, h, t). Above the
// diagonal P is neither written nor read: load_prob gives 0 there (half a T x T matrix of writes
// saved per call).
__global__ void attention_softmax_warp_per_row_kernel(float* att, float* lse, size_t rows, int T) {
  const size_t row = static_cast<size_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= rows) return;
  const int t = static_cast<int>(row % T);
  float* s = att + row * T;
  float m = -INFINITY;
  for (int t2 = lane; t2 <= t; t2 += kWarpSize) m = fmaxf(m, s[t2]);
  m = warp_max(m);
  float sum = 0.0f;
  for (int t2 = lane; t2 <= t; t2 += kWarpSize) sum += expf(s[t2] - m);
  const float total = warp_sum(sum);
  const float inv_sum = 1.0f / total;
  for (int t2 = lane; t2 <= t; t2 += kWarpSize) s[t2] = expf(s[t2] - m) * inv_sum;
  if (lane == 0) lse[row] = m + logf(total);
}

// Softmax backward, in place over the row's dP~ = dout . V^T:
//   dP = dropout'(dP~) ; D = sum_{t2 <= t} P dP ; dS = P * (dP - D)   (t2 <= t; upper part unused)
__global__ void attention_softmax_backward_warp_per_row_kernel(float* dscores, const float* att, size_t rows, int T,
                                                               DropoutParams dropout) {
  const size_t row = static_cast<size_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (row >= rows) return;
  const int t = static_cast<int>(row % T);
  float* ds = dscores + row * T;
  const float* prob = att + row * T;
  // The mask index of (row, t2) is the flat index row*T + t2, as in the forward.
  auto dprob = [&](int t2) {
    const float g = ds[t2];
    if (!dropout.active()) return g;
    return dropout.keep(row * T + t2) ? g * dropout.scale() : 0.0f;
  };
  float dot = 0.0f;
  for (int t2 = lane; t2 <= t; t2 += kWarpSize) dot += prob[t2] * dprob(t2);
  const float D = warp_sum(dot);
  for (int t2 = lane; t2 <= t; t2 += kWarpSize) ds[t2] = prob[t2] * (dprob(t2) - D);
}

// kcache[b, pos0 + t, c] = k[b, t, c] and vcache likewise, for t < T.
template <class Elem>
__global__ void kv_cache_store_kernel(Elem* kcache, Elem* vcache, const Elem* qkv, int B, int T, int pos0, int maxT,
                                      int C) {
  const size_t idx = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<size_t>(B) * T * C) return;
  const int c = static_cast<int>(idx % C);
  const size_t bt = idx / C;
  const int b = static_cast<int>(bt / T), t = static_cast<int>(bt % T);
  const Elem* src = qkv + bt * 3 * C;
  const size_t dst = (static_cast<size_t>(b) * maxT + pos0 + t) * C + c;
  kcache[dst] = src[C + c];
  vcache[dst] = src[2 * C + c];
}

template <class Elem>
struct DecodeParams {
  Elem* out;             // (B, C)
  const Elem* kcache;    // (B, maxT, C)
  const Elem* vcache;
  const Elem* qkv;       // (B, 3C)
  int B, pos, maxT, C, NH, HS;
  float scale;
};

// One block per (b, h): s[t2] = scale * q . k[t2] (a warp per t2), p = softmax(s) over
// t2 <= pos, out[d] = sum_t2 p[t2] v[t2, d]. Scores stay in shared memory.
template <class Elem>
__global__ void attention_decode_shared_scores_kernel(DecodeParams<Elem> p) {
  extern __shared__ float shared[];
  float* q = shared;                // HS
  float* scores = q + p.HS;         // pos + 1
  float* reduce = scores + p.pos + 1;  // 32
  const int b = blockIdx.x / p.NH, h = blockIdx.x % p.NH;
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize, num_warps = blockDim.x / kWarpSize;
  const size_t head = static_cast<size_t>(h) * p.HS;
  const Elem* q_in = p.qkv + static_cast<size_t>(b) * 3 * p.C + head;
  for (int d = threadIdx.x; d < p.HS; d += blockDim.x) q[d] = to_float(q_in[d]);
  __syncthreads();
  for (int t2 = warp; t2 <= p.pos; t2 += num_warps) {
    const Elem* k = p.kcache + (static_cast<size_t>(b) * p.maxT + t2) * p.C + head;
    float dot = 0.0f;
    for (int d = lane; d < p.HS; d += kWarpSize) dot += q[d] * to_float(k[d]);
    dot = warp_sum(dot);
    if (lane == 0) scores[t2] = p.scale * dot;
  }
  __syncthreads();
  float m = -INFINITY;
  for (int t2 = threadIdx.x; t2 <= p.pos; t2 += blockDim.x) m = fmaxf(m, scores[t2]);
  m = block_max(m, reduce);
  float sum = 0.0f;
  for (int t2 = threadIdx.x; t2 <= p.pos; t2 += blockDim.x) {
    const float e = expf(scores[t2] - m);
    scores[t2] = e;
    sum += e;
  }
  const float inv_sum = 1.0f / block_sum(sum, reduce);  // block_sum's barriers publish scores[]
  for (int d = threadIdx.x; d < p.HS; d += blockDim.x) {
    float acc = 0.0f;
    for (int t2 = 0; t2 <= p.pos; ++t2) {
      acc += scores[t2] * to_float(p.vcache[(static_cast<size_t>(b) * p.maxT + t2) * p.C + head + d]);
    }
    p.out[static_cast<size_t>(b) * p.C + head + d] = from_float<Elem>(acc * inv_sum);
  }
}

// Fallback for long contexts whose scores do not fit in shared memory: one thread per output
// channel d runs an online softmax over t2 (Milakov & Gimelshein 2018), recomputing q . k[t2]
// itself. Slower (each thread redoes the dot products) but needs no shared memory.
template <class Elem>
__global__ void attention_decode_online_softmax_kernel(DecodeParams<Elem> p) {
  const int b = blockIdx.x / p.NH, h = blockIdx.x % p.NH;
  const size_t head = static_cast<size_t>(h) * p.HS;
  const Elem* q = p.qkv + static_cast<size_t>(b) * 3 * p.C + head;
  for (int d = threadIdx.x; d < p.HS; d += blockDim.x) {
    float m = -INFINITY, sum = 0.0f, acc = 0.0f;
    for (int t2 = 0; t2 <= p.pos; ++t2) {
      const size_t row = (static_cast<size_t>(b) * p.maxT + t2) * p.C + head;
      float dot = 0.0f;
      for (int e = 0; e < p.HS; ++e) dot += to_float(q[e]) * to_float(p.kcache[row + e]);
      const float s = p.scale * dot;
      const float m_new = fmaxf(m, s);
      const float correction = expf(m - m_new);  // rescales what was summed under the old max
      const float w = expf(s - m_new);
      sum = sum * correction + w;
      acc = acc * correction + w * to_float(p.vcache[row + d]);
      m = m_new;
    }
    p.out[static_cast<size_t>(b) * p.C + head + d] = from_float<Elem>(acc / sum);
  }
}

// ---------------------------------------------------------------------------------------------
// Parameters and launch geometry: used by the launchers in attention.cu.
// ---------------------------------------------------------------------------------------------

// The two products of the forward: S = scale Q K^T into att (T x T per head), then out = drop(P) V.
// The backward's first step reuses `scores` to recompute S.
template <class Elem>
struct ForwardGemms {
  HeadGemmParams<Elem, float> scores;
  HeadGemmParams<Elem, Elem> values;
};

template <class Elem>
ForwardGemms<Elem> forward_gemms(Elem* out, float* att, const Elem* qkv, int B, int T, int C, int NH,
                                 const DropoutParams& dropout) {
  const int HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  return {{att, 0, nullptr, qkv, 3 * C, qkv + C, 3 * C, B, T, NH, HS, scale, DropoutParams{}, nullptr},
          {out, C, att, qkv + 2 * C, 3 * C, nullptr, 0, B, T, NH, HS, 1.0f, dropout, nullptr}};
}

// The four products of the backward, around the softmax backward over dscores (B*NH, T, T):
// dP~ = dout V^T into dscores ; dQ = scale dS K ; dK = scale dS^T Q ; dV = drop(P)^T dout.
template <class Elem>
struct BackwardGemms {
  HeadGemmParams<Elem, float> dprobs;
  HeadGemmParams<Elem, Elem> dq, dk, dv;
};

template <class Elem>
BackwardGemms<Elem> backward_gemms(Elem* dqkv, float* dscores, const Elem* dout, const float* att, const Elem* qkv,
                                   int B, int T, int C, int NH, const DropoutParams& dropout) {
  const int HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const DropoutParams none{};
  return {{dscores, 0, nullptr, dout, C, qkv + 2 * C, 3 * C, B, T, NH, HS, 1.0f, none, nullptr},
          {dqkv, 3 * C, dscores, qkv + C, 3 * C, nullptr, 0, B, T, NH, HS, scale, none, nullptr},
          {dqkv + C, 3 * C, dscores, qkv, 3 * C, nullptr, 0, B, T, NH, HS, scale, none, nullptr},
          {dqkv + 2 * C, 3 * C, att, dout, C, nullptr, 0, B, T, NH, HS, 1.0f, dropout, nullptr}};
}

// Output tiles of 64 x 64 over (columns, rows) of one head, the heads along z: one block per head
// up to max_grid_z (the grid.z limit, 65535), beyond which each block loops over heads with that
// stride. tests/emu/test_emu_attention_heads.cpp passes a small max_grid_z to exercise the loop.
inline LaunchShape head_gemm_launch(HeadGemm mode, int T, int HS, int num_heads, int max_grid_z = kMaxGridZ) {
  const int rows = T, cols = mode == HeadGemm::scores ? T : HS;
  return {dim3(ceil_div(cols, kTile), ceil_div(rows, kTile), std::min(num_heads, max_grid_z)),
          dim3(kTileThreads, kTileThreads)};
}

// The softmax kernels: one warp per row of (B*NH*T) rows, kWarpsPerBlock rows per block.
inline LaunchShape softmax_launch(size_t rows) {
  return {dim3(static_cast<unsigned>(ceil_div(rows, kWarpsPerBlock))), dim3(kWarpsPerBlock * kWarpSize)};
}

// kv_cache_store_kernel: one thread per element of `total` (B * T * C).
inline LaunchShape kv_cache_store_launch(size_t total) {
  constexpr int kBlock = 256;
  return {dim3(static_cast<unsigned>(ceil_div(total, kBlock))), dim3(kBlock)};
}

// The decode branch: the shared-scores kernel while q, the pos + 1 scores and the 32 reduction
// slots fit in the 48 KiB of dynamic shared memory a launch gets without opting in
// (kDefaultDynamicShared); else the online-softmax kernel, which needs none.

inline size_t decode_shared_bytes(int pos, int HS) {
  return (static_cast<size_t>(pos) + 1 + HS + kWarpSize) * sizeof(float);
}
inline bool decode_scores_fit_shared(int pos, int HS) { return decode_shared_bytes(pos, HS) <= kDefaultDynamicShared; }

// One block per (b, h) for both decode kernels.
inline LaunchShape decode_shared_scores_launch(int B, int NH, int pos, int HS) {
  return {dim3(B * NH), dim3(256), decode_shared_bytes(pos, HS)};
}
inline LaunchShape decode_online_softmax_launch(int B, int NH) { return {dim3(B * NH), dim3(128)}; }

template <class Elem>
DecodeParams<Elem> decode_params(Elem* out, const Elem* kcache, const Elem* vcache, const Elem* qkv, int B, int pos,
                                 int maxT, int C, int NH) {
  const int HS = C / NH;
  return {out, kcache, vcache, qkv, B, pos, maxT, C, NH, HS, 1.0f / std::sqrt(static_cast<float>(HS))};
}

}  // namespace gpt2cc::cuda::attention_kernels
