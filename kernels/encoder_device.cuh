// Device code of the token + position embedding, forward and backward (kernels/encoder.cuh;
// mirrors cpu/encoder.cpp), float and bf16 (float arithmetic, one rounding per bf16 store):
//   out[b,t,c] = wte[inp[b,t], c] + wpe[t, c] ; dwpe[t,c] += sum_b dout[b,t,c] ;
//   dwte[v,c] += sum over positions p with inp[p] == v of dout[p,c]
// The backward's scatter-add into dwte is made deterministic by ownership instead of atomics:
// the first position holding a token owns that token's row and sums, in position order, the
// dout rows of every position holding the same token. Same order as the CPU loop.
// Included by kernels/encoder.cu (the launchers; tests/emu/hostcuda compiles it as host C++ for
// the CPU emulator), with the launch geometry at the end.
#pragma once

#include <cstddef>

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda::encoder_kernels {

constexpr int kChannelsPerThread = 8;  // dwte accumulators per thread in the owner kernel

// out[b,t,c] = wte[inp[b,t], c] + wpe[t, c]; one thread per output element.
template <class Elem>
__global__ void encoder_forward_elementwise_kernel(Elem* out, const int* inp, const Elem* wte, const Elem* wpe,
                                                   int B, int T, int C) {
  const size_t idx = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t total = static_cast<size_t>(B) * T * C;
  if (idx >= total) return;
  const size_t bt = idx / C;
  const int c = static_cast<int>(idx % C);
  const int t = static_cast<int>(bt % T);
  const float x = to_float(wte[static_cast<size_t>(inp[bt]) * C + c]) + to_float(wpe[static_cast<size_t>(t) * C + c]);
  out[idx] = from_float<Elem>(x);
}

// dwpe[t, c] += sum_b dout[b,t,c], b ascending; one thread per (t, c).
template <class Elem>
__global__ void encoder_backward_wpe_kernel(Elem* dwpe, const Elem* dout, int B, int T, int C) {
  const size_t idx = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<size_t>(T) * C) return;
  float acc = to_float(dwpe[idx]);
  for (int b = 0; b < B; ++b) acc += to_float(dout[static_cast<size_t>(b) * T * C + idx]);
  dwpe[idx] = from_float<Elem>(acc);
}

// The same with one 16-byte pack of channels per thread (kWidth = 8 bf16 / 4 floats): C % kWidth
// == 0, so a pack never crosses a row, and wte, wpe, out 16-byte aligned (launcher checks).
template <class Elem, int kWidth>
__global__ void encoder_forward_packed_kernel(Elem* out, const int* inp, const Elem* wte, const Elem* wpe, int B,
                                              int T, int C) {
  const size_t idx = (static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kWidth;
  const size_t total = static_cast<size_t>(B) * T * C;
  if (idx >= total) return;
  const size_t bt = idx / C;
  const int c = static_cast<int>(idx % C);
  const int t = static_cast<int>(bt % T);
  float x[kWidth], pos[kWidth];
  load_floats(x, wte + static_cast<size_t>(inp[bt]) * C + c);
  load_floats(pos, wpe + static_cast<size_t>(t) * C + c);
#pragma unroll
  for (int k = 0; k < kWidth; ++k) x[k] += pos[k];
  store_floats(out + idx, x);
}

// dwte[v, c] += sum over positions p with inp[p] == v of dout[p, c], p ascending.
// One block per position p. The block first asks whether an earlier position holds the same
// token; if so, that position's block owns the row and this block exits. The owner then scans
// the positions after it in chunks of blockDim, compacts the matches into shared memory (in
// position order, via a ballot per warp and a prefix over warps) and adds their rows; its
// threads split the channels, so every dwte element is written by exactly one thread.
template <class Elem>
__global__ void encoder_backward_wte_owner_kernel(Elem* dwte, const Elem* dout, const int* inp, int N, int C) {
  extern __shared__ int matches[];  // blockDim.x positions, then one count per warp
  int* warp_counts = matches + blockDim.x;
  const int p = blockIdx.x;
  const int token = inp[p];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;

  int earlier = 0;
  for (int j = threadIdx.x; j < p; j += blockDim.x) earlier |= (inp[j] == token);
  if (__syncthreads_or(earlier)) return;

  // The owner's accumulators: channels threadIdx.x, threadIdx.x + blockDim.x, ... (at most
  // kChannelsPerThread of them; the launcher guarantees C <= blockDim.x * that).
  float acc[kChannelsPerThread];
  for (int k = 0; k < kChannelsPerThread; ++k) {
    const int c = threadIdx.x + k * blockDim.x;
    acc[k] = c < C ? to_float(dwte[static_cast<size_t>(token) * C + c]) : 0.0f;
  }
  for (int base = p; base < N; base += blockDim.x) {
    const int j = base + threadIdx.x;
    const bool match = j < N && inp[j] == token;
    const unsigned ballot = __ballot_sync(0xffffffffu, match);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int offset = 0, count = 0;
    for (int w = 0; w < num_warps; ++w) {
      offset += w < warp ? warp_counts[w] : 0;
      count += warp_counts[w];
    }
    if (match) matches[offset + __popc(ballot & ((1u << lane) - 1u))] = j;
    __syncthreads();
    for (int m = 0; m < count; ++m) {
      const Elem* row = dout + static_cast<size_t>(matches[m]) * C;
      for (int k = 0; k < kChannelsPerThread; ++k) {
        const int c = threadIdx.x + k * blockDim.x;
        if (c < C) acc[k] += to_float(row[c]);
      }
    }
    __syncthreads();  // matches[] is rewritten by the next chunk
  }
  for (int k = 0; k < kChannelsPerThread; ++k) {
    const int c = threadIdx.x + k * blockDim.x;
    if (c < C) dwte[static_cast<size_t>(token) * C + c] = from_float<Elem>(acc[k]);
  }
}

// ---------------------------------------------------------------------------------------------
// Launch geometry: used by the launchers in encoder.cu.
// ---------------------------------------------------------------------------------------------

constexpr int kBlock = 256;
constexpr int kMaxThreads = 1024;
// The owner kernel keeps up to kChannelsPerThread channels per thread in registers: 1024 threads
// cover C <= 8192 (GPT-2 XL has C = 1600).
constexpr int kMaxChannels = kChannelsPerThread * kMaxThreads;

// May the forward move 16-byte packs? C a multiple of the pack (a pack never crosses a row) and
// wte, wpe, out aligned.
template <class Elem>
bool forward_packed(int C, const void* out, const void* wte, const void* wpe) {
  return C % kPack128<Elem> == 0 && is_aligned16(out) && is_aligned16(wte) && is_aligned16(wpe);
}

// One thread per output element, or per pack of kPack128 elements.
template <class Elem>
LaunchShape forward_launch(size_t total, bool packed) {
  const size_t threads = packed ? total / kPack128<Elem> : total;
  return {dim3(static_cast<unsigned>(ceil_div(threads, kBlock))), dim3(kBlock)};
}

// One thread per (t, c) of dwpe.
inline LaunchShape backward_wpe_launch(int T, int C) {
  return {dim3(static_cast<unsigned>(ceil_div(static_cast<size_t>(T) * C, kBlock))), dim3(kBlock)};
}

// One block per position; 256 threads while they hold C in kChannelsPerThread accumulators each,
// else 1024. Shared: blockDim positions, then one count per warp. Needs C <= kMaxChannels.
inline LaunchShape backward_wte_owner_launch(int N, int C) {
  const int threads = C <= kChannelsPerThread * kBlock ? kBlock : kMaxThreads;
  const size_t shared = (threads + threads / kWarpSize) * sizeof(int);
  return {dim3(static_cast<unsigned>(N)), dim3(threads), shared};
}

}  // namespace gpt2cc::cuda::encoder_kernels
