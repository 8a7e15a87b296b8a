// Device code of the classifier (kernels/crossentropy.cuh; mirrors cpu/crossentropy.cpp), float
// and bf16 logits, fp32 math: one block per row (b,t) reduces the row's V logits to max and
// sum_j exp(l_j - max), then writes the loss or every dlogit (0 in the padded columns Vp > V).
// The fused classifier does both in one kernel, in place: fused_classifier_cached_row_kernel
// keeps the row in shared memory between the reductions and the gradient (read once); where a row
// does not fit, fused_classifier_block_per_row_kernel streams it twice (an online max + sum pass,
// then the gradient pass), in 16-byte packs when the rows allow it. Included by
// kernels/crossentropy.cu (the launchers; tests/emu/hostcuda compiles it as host C++ for the CPU
// emulator), with the launch geometry and the fused kernel's branch at the end.
#pragma once

#include <cstddef>

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda::crossentropy_kernels {

constexpr int kIgnoreIndex = -1;
constexpr int kBlock = 512;  // 16 warps: ~100 logits per thread for GPT-2's vocabulary

// max_j l_j and sum_j exp(l_j - max) over j < V, for the whole block.
template <class Elem>
__device__ void row_max_and_sum(const Elem* row, int V, float* shared, float& maxval, float& sum) {
  float m = -INFINITY;
  for (int j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, to_float(row[j]));
  maxval = block_max(m, shared);
  float s = 0.0f;
  for (int j = threadIdx.x; j < V; j += blockDim.x) s += expf(to_float(row[j]) - maxval);
  sum = block_sum(s, shared);
}

// loss = log(sum_j exp(l_j - max)) - (l_y - max): l_y - max first, as cpu::crossentropy_forward
// does (adding max back to the log would round it to max's spacing, 6e-5 near 1000)
template <class Elem>
__global__ void crossentropy_forward_block_per_row_kernel(float* losses, const Elem* logits, const int* targets,
                                                          int V, int Vp) {
  __shared__ float shared[kWarpSize];
  const size_t bt = blockIdx.x;
  const int y = targets[bt];
  if (y == kIgnoreIndex) {
    if (threadIdx.x == 0) losses[bt] = 0.0f;
    return;
  }
  if (y < 0 || y >= V) {
    if (threadIdx.x == 0) losses[bt] = NAN;
    return;
  }
  const Elem* row = logits + bt * Vp;
  float maxval, sum;
  row_max_and_sum(row, V, shared, maxval, sum);
  if (threadIdx.x == 0) losses[bt] = logf(sum) - (to_float(row[y]) - maxval);
}

// dlogits_j = dloss * (p_j - [j == y]) for j < V; 0 for j >= V and for ignored rows.
// In place is safe: both reductions finish (block barriers) before any element is written, and
// each element is then read and written by the same thread.
template <class Elem>
__global__ void crossentropy_backward_block_per_row_kernel(Elem* dlogits, float dloss, const Elem* logits,
                                                           const int* targets, int V, int Vp) {
  __shared__ float shared[kWarpSize];
  const size_t bt = blockIdx.x;
  const int y = targets[bt];
  const Elem* row = logits + bt * Vp;
  Elem* drow = dlogits + bt * Vp;
  if (y == kIgnoreIndex || y < 0 || y >= V) {
    const float fill = y == kIgnoreIndex ? 0.0f : NAN;
    for (int j = threadIdx.x; j < Vp; j += blockDim.x) drow[j] = from_float<Elem>(j < V ? fill : 0.0f);
    return;
  }
  float maxval, sum;
  row_max_and_sum(row, V, shared, maxval, sum);
  const float inv_sum = 1.0f / sum;
  for (int j = threadIdx.x; j < Vp; j += blockDim.x) {
    float g = 0.0f;
    if (j < V) g = dloss * (expf(to_float(row[j]) - maxval) * inv_sum - (j == y ? 1.0f : 0.0f));
    drow[j] = from_float<Elem>(g);
  }
}

// Online softmax state of a set of logits (Milakov & Gimelshein 2018): m = max, s = sum exp(l - m).
struct MaxSum {
  float m;
  float s;
};

// Adds logit x: a new maximum rescales what was summed under the old one. A -inf logit adds
// exp(-inf) = 0 and is skipped: while m is still -inf (the thread's first logits), exp(x - m)
// would be exp(-inf + inf) = NaN, where the two-pass kernels and the CPU add 0.
__device__ __forceinline__ void online_add(MaxSum& a, float x) {
  if (x > a.m) {
    a.s = a.s * expf(a.m - x) + 1.0f;
    a.m = x;
  } else if (x != -INFINITY) {
    a.s += expf(x - a.m);
  }
}

// Union of two sets: s = s_a exp(m_a - m) + s_b exp(m_b - m). Symmetric in a and b (float + is
// commutative), so every lane of the butterfly below ends with the same bits.
__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return a;  // both empty: exp(-inf - -inf) would be NaN
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

__device__ __forceinline__ MaxSum warp_max_sum(MaxSum x) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const MaxSum other{__shfl_xor_sync(0xffffffffu, x.m, offset), __shfl_xor_sync(0xffffffffu, x.s, offset)};
    x = combine(x, other);
  }
  return x;
}

// The whole block's (max, sum), in a fixed order; every thread gets it. Called once per kernel.
__device__ MaxSum block_max_sum(MaxSum x) {
  __shared__ float shared_m[kWarpSize], shared_s[kWarpSize];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize, num_warps = blockDim.x / kWarpSize;
  x = warp_max_sum(x);
  if (lane == 0) {
    shared_m[warp] = x.m;
    shared_s[warp] = x.s;
  }
  __syncthreads();
  x = lane < num_warps ? MaxSum{shared_m[lane], shared_s[lane]} : MaxSum{-INFINITY, 0.0f};
  return warp_max_sum(x);
}

// A row whose target is ignored (-1: loss 0, gradient 0) or out of range (NaN loss and gradient
// in the V real columns); padded columns 0 either way. Returns false for a row to be scored.
template <class Elem>
__device__ bool fill_unscored_row(Elem* row, float* loss, int y, int V, int Vp) {
  if (y != kIgnoreIndex && y >= 0 && y < V) return false;
  const float fill = y == kIgnoreIndex ? 0.0f : NAN;
  if (threadIdx.x == 0) *loss = fill;
  for (int j = threadIdx.x; j < Vp; j += blockDim.x) row[j] = from_float<Elem>(j < V ? fill : 0.0f);
  return true;
}

// Pass 1: (m, s) over the V real columns; loss = log(s) - (l_y - m) (= logsumexp - l_y).
// Pass 2, in place: l_j := dloss * (exp(l_j - m) / s - [j == y]) for j < V, 0 for j >= V.
// kVectorized: the row moves in 16-byte packs (4 floats or 8 bf16; why: the kernel is bound by
// reading the (B,T,Vp) logits twice, and one 128-bit access replaces 4 or 8 scalar ones). Needs
// Vp % kPack128 == 0 and an aligned row; the pack straddling V is masked element-wise (padded
// columns are read but never used: they may hold anything, NaN included).
template <class Elem, bool kVectorized>
__global__ void fused_classifier_block_per_row_kernel(Elem* logits, float* losses, const int* targets, float dloss,
                                                      int V, int Vp) {
  constexpr int kW = kPack128<Elem>;
  const size_t bt = blockIdx.x;
  const int y = targets[bt];
  Elem* row = logits + bt * Vp;
  if (fill_unscored_row(row, losses + bt, y, V, Vp)) return;
  // Read before the row is overwritten: block_max_sum's barrier orders it before every write.
  const float target_logit = to_float(row[y]);
  MaxSum acc{-INFINITY, 0.0f};
  if constexpr (kVectorized) {
    const int num_packs = (V + kW - 1) / kW;
    for (int k = threadIdx.x; k < num_packs; k += blockDim.x) {
      float x[kW];
      load_floats(x, row + k * kW);
      for (int e = 0; e < kW; ++e) {
        if (k * kW + e < V) online_add(acc, x[e]);
      }
    }
  } else {
    for (int j = threadIdx.x; j < V; j += blockDim.x) online_add(acc, to_float(row[j]));
  }
  const MaxSum total = block_max_sum(acc);
  if (threadIdx.x == 0) losses[bt] = logf(total.s) - (target_logit - total.m);
  const float inv_sum = 1.0f / total.s;
  auto grad = [&](int j, float logit) {
    return j < V ? dloss * (expf(logit - total.m) * inv_sum - (j == y ? 1.0f : 0.0f)) : 0.0f;
  };
  if constexpr (kVectorized) {
    for (int k = threadIdx.x; k < Vp / kW; k += blockDim.x) {
      float x[kW];
      load_floats(x, row + k * kW);
      for (int e = 0; e < kW; ++e) x[e] = grad(k * kW + e, x[e]);
      store_floats(row + k * kW, x);
    }
  } else {
    for (int j = threadIdx.x; j < Vp; j += blockDim.x) row[j] = from_float<Elem>(grad(j, to_float(row[j])));
  }
}

// The cached-row fused classifier: the block copies its row into dynamic shared memory once
// (16-byte packs), so the row is read from memory once and written once. Why: the block-per-row
// kernel reads it twice, and for a bf16 GPT-2 row (100 KB) the hundreds of rows in flight overflow
// the L2, so the second read goes to memory too. From shared memory: the exact max, then
// sum exp(l - max) (two block reductions in a fixed order), the loss, and the gradient written
// over the row. Each thread handles the same packs in every pass, so the copy needs no barrier of
// its own. Needs Vp % kPack128 == 0, an aligned row, and Vp * sizeof(elem) (+ kCachedStaticSmem)
// within the device's opt-in limit: 100,608 bytes for GPT-2 in bf16, two blocks per SM on an
// H100 / H200.
constexpr int kCachedThreads = 512;
constexpr size_t kCachedStaticSmem = kWarpSize * sizeof(float);  // the block reductions' buffer

template <class Elem>
__global__ void fused_classifier_cached_row_kernel(Elem* logits, float* losses, const int* targets, float dloss, int V,
                                                   int Vp) {
  constexpr int kW = kPack128<Elem>;
  extern __shared__ __align__(16) unsigned char row_smem[];
  __shared__ float shared[kWarpSize];
  const size_t bt = blockIdx.x;
  const int y = targets[bt];
  Elem* row = logits + bt * Vp;
  if (fill_unscored_row(row, losses + bt, y, V, Vp)) return;
  const float target_logit = to_float(row[y]);  // before any write: the reductions' barriers order it
  const int num_packs = Vp / kW;
  auto* cache = reinterpret_cast<Pack128<Elem>*>(row_smem);
  const auto* packs = reinterpret_cast<const Pack128<Elem>*>(row);
#pragma unroll 4
  for (int k = threadIdx.x; k < num_packs; k += blockDim.x) cache[k] = packs[k];
  // Real columns in pack k: kW, fewer in the pack straddling V, 0 in the padding.
  auto real_columns = [&](int k) { return min(kW, max(0, V - k * kW)); };
  float m = -INFINITY;
  for (int k = threadIdx.x; k < num_packs; k += blockDim.x) {
    const int n = real_columns(k);
#pragma unroll
    for (int e = 0; e < kW; ++e) {
      if (e < n) m = fmaxf(m, to_float(cache[k].v[e]));
    }
  }
  const float maxval = block_max(m, shared);
  float s = 0.0f;
  for (int k = threadIdx.x; k < num_packs; k += blockDim.x) {
    const int n = real_columns(k);
#pragma unroll
    for (int e = 0; e < kW; ++e) {
      if (e < n) s += expf(to_float(cache[k].v[e]) - maxval);
    }
  }
  const float sum = block_sum(s, shared);
  if (threadIdx.x == 0) losses[bt] = logf(sum) - (target_logit - maxval);
  const float inv_sum = 1.0f / sum;
  for (int k = threadIdx.x; k < num_packs; k += blockDim.x) {
    const int n = real_columns(k), target = y - k * kW;
    float g[kW];
#pragma unroll
    for (int e = 0; e < kW; ++e) {
      g[e] = e < n ? dloss * (expf(to_float(cache[k].v[e]) - maxval) * inv_sum - (e == target ? 1.0f : 0.0f)) : 0.0f;
    }
    store_floats(row + static_cast<size_t>(k) * kW, g);
  }
}

// ---------------------------------------------------------------------------------------------
// Launch geometry: used by the launchers in crossentropy.cu.
// ---------------------------------------------------------------------------------------------

// Every kernel here: one block of kBlock threads per row (b,t).
inline LaunchShape block_per_row_launch(int rows) { return {dim3(static_cast<unsigned>(rows)), dim3(kBlock)}; }

// The fused kernel's branch: 16-byte packs when every row starts 16-byte aligned, i.e. the buffer
// is and Vp * sizeof(Elem) is a multiple of 16.
template <class Elem>
bool fused_classifier_vectorized(const Elem* logits, int Vp) {
  return is_aligned16(logits) && Vp % kPack128<Elem> == 0;
}

// The cached-row kernel's dynamic shared memory: the row's packs.
template <class Elem>
size_t cached_row_smem(int Vp) {
  return static_cast<size_t>(Vp / kPack128<Elem>) * sizeof(Pack128<Elem>);
}

// The cached-row kernel: one block of kCachedThreads threads per row, the row in shared memory.
template <class Elem>
LaunchShape cached_row_launch(int rows, int Vp) {
  return {dim3(static_cast<unsigned>(rows)), dim3(kCachedThreads), cached_row_smem<Elem>(Vp)};
}

}  // namespace gpt2cc::cuda::crossentropy_kernels
