// Device code of the token + position embedding, forward and backward (kernels/encoder.cuh;
// mirrors cpu/encoder.cpp), float and bf16 (float arithmetic, one rounding per bf16 store):
//   out[b,t,c] = wte[inp[b,t], c] + wpe[t, c] ; dwpe[t,c] += sum_b dout[b,t,c] ;
//   dwte[v,c] += sum over positions p with inp[p] == v of dout[p,c]
// The backward's scatter-add into dwte is deterministic without atomics: the positions are sorted
// by token (a merge sort of (token, position) keys, tiles in shared memory, then global merge
// passes), and each run of equal tokens is summed by one block, in position order split over its
// warps, so every dwte element has one writer and a summation order the shape fixes. O(N log N):
// the first design (the first position holding a token scanned every earlier position) was O(N^2).
// Included by kernels/encoder.cu (the launchers; tests/emu/hostcuda compiles it as host C++ for
// the CPU emulator), with the launch geometry at the end.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/common.cuh"
#include "kernels/cuda_check.cuh"

namespace gpt2cc::cuda::encoder_kernels {

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

// dwpe[t, c] += sum_b dout[b,t,c], b ascending; one thread per (t, c). Grad: Elem, or float for
// fp32 gradients of a bf16 model (as for dwte below).
template <class Elem, class Grad>
__global__ void encoder_backward_wpe_kernel(Grad* dwpe, const Elem* dout, int B, int T, int C) {
  const size_t idx = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<size_t>(T) * C) return;
  float acc = to_float(dwpe[idx]);
  for (int b = 0; b < B; ++b) acc += to_float(dout[static_cast<size_t>(b) * T * C + idx]);
  dwpe[idx] = from_float<Grad>(acc);
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

// ---- dwte: sort the positions by token, then one block per run of equal tokens ----------------
// A key is (token << 32) | position, so sorting the keys groups each token's positions, ascending.
// Keys are distinct, so a merge needs no tie rule. Tokens and positions are below 2^31.

constexpr int kSortTile = 1024;    // keys one block sorts in shared memory (16 KB, two buffers)
constexpr int kSortThreads = 256;
constexpr int kMergeThreads = 256;
constexpr int kWteWarps = 8;                       // warps that split a token's rows
constexpr int kWteThreads = kWteWarps * kWarpSize;  // = the sorted keys a block scans for run starts
constexpr int kWteLaneChannels = 8;                // dwte accumulators per lane
constexpr int kWteTile = kWarpSize * kWteLaneChannels;  // channels per block (gridDim.y tiles C)
constexpr int kWteUnroll = 8;                      // rows a warp has in flight

__device__ __forceinline__ uint64_t token_key(int token, int position) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(token)) << 32) | static_cast<uint32_t>(position);
}
__device__ __forceinline__ uint32_t key_token(uint64_t key) { return static_cast<uint32_t>(key >> 32); }
__device__ __forceinline__ size_t key_position(uint64_t key) { return static_cast<uint32_t>(key); }

// The first index in [lo, hi) of the sorted keys whose key is not below `key` (hi if none).
__device__ __forceinline__ size_t lower_bound_key(const uint64_t* keys, size_t lo, size_t hi, uint64_t key) {
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (keys[mid] < key) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Where keys[i] lands when the sorted runs of `width` keys in keys[0, n) merge in pairs (runs 2r
// and 2r + 1 become one): its index in its own run plus the number of keys below it in the other
// run, by binary search. A last run without a partner stays where it is.
__device__ __forceinline__ size_t merged_index(const uint64_t* keys, size_t i, size_t width, size_t n) {
  const size_t run = i / width, partner_begin = (run ^ 1) * width;
  if (partner_begin >= n) return i;
  const size_t partner_end = partner_begin + width < n ? partner_begin + width : n;
  const size_t below = lower_bound_key(keys, partner_begin, partner_end, keys[i]) - partner_begin;
  return (run & ~size_t{1}) * width + (i - run * width) + below;
}

// keys[tile] = the keys of positions [kSortTile * blockIdx.x, + kSortTile), sorted: merge passes
// of width 1, 2, 4, ... between two shared buffers.
__global__ void encoder_sort_tile_keys_kernel(uint64_t* keys, const int* inp, int N) {
  __shared__ uint64_t buffers[2][kSortTile];
  const int base = blockIdx.x * kSortTile;
  const int n = N - base < kSortTile ? N - base : kSortTile;
  for (int i = threadIdx.x; i < n; i += blockDim.x) buffers[0][i] = token_key(inp[base + i], base + i);
  __syncthreads();
  int from = 0;
  for (int width = 1; width < n; width *= 2) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      buffers[from ^ 1][merged_index(buffers[from], i, width, n)] = buffers[from][i];
    }
    __syncthreads();
    from ^= 1;
  }
  for (int i = threadIdx.x; i < n; i += blockDim.x) keys[base + i] = buffers[from][i];
}

// One global merge pass: sorted runs of `width` keys in src become runs of 2 * width in dst.
__global__ void encoder_merge_keys_kernel(uint64_t* dst, const uint64_t* src, size_t width, int N) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < static_cast<size_t>(N)) dst[merged_index(src, i, width, static_cast<size_t>(N))] = src[i];
}

// Lane `lane`'s channel j of a tile (its slot in the tile): 16-byte packs of kWidth channels side
// by side across the warp, so a warp reads contiguous bytes of a row (kWidth = 1: channel
// lane + 32 j).
template <int kWidth>
__device__ __forceinline__ int wte_slot(int lane, int j) {
  return (j / kWidth) * (kWarpSize * kWidth) + lane * kWidth + j % kWidth;
}

// dwte[v, c] += sum over positions p with inp[p] == v of dout[p, c], from the sorted keys. Block
// (x, y) scans kWteThreads sorted keys for the starts of runs of equal tokens (a ballot per warp, a
// prefix over warps keeps them in order) and, for each run starting there, sums its rows over
// channel tile y: warp w takes rows w, w + kWteWarps, ... of the run, ascending, and the warps'
// sums are added in warp order before the one += into dwte. A run, however long, belongs to the
// block holding its start, so every dwte element is written by one thread, in an order the shape
// fixes. kWidth: channels per load (a 16-byte pack; 1 for C or dout not aligned to packs).
template <class Elem, class Grad, int kWidth>
__global__ void encoder_backward_wte_kernel(Grad* dwte, const Elem* dout, const uint64_t* sorted, int N, int C) {
  __shared__ int starts[kWteThreads];
  __shared__ int warp_counts[kWteWarps];
  __shared__ int last_end;
  __shared__ float warp_sums[kWteWarps][kWteTile];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int chunk = static_cast<int>(blockIdx.x) * kWteThreads;
  const int chunk_end = N - chunk < kWteThreads ? N : chunk + kWteThreads;
  const int tile = static_cast<int>(blockIdx.y) * kWteTile;

  const int s = chunk + static_cast<int>(threadIdx.x);
  const bool is_start = s < N && (s == 0 || key_token(sorted[s - 1]) != key_token(sorted[s]));
  const unsigned ballot = __ballot_sync(0xffffffffu, is_start);
  if (lane == 0) warp_counts[warp] = __popc(ballot);
  __syncthreads();
  int offset = 0, count = 0;
  for (int w = 0; w < kWteWarps; ++w) {
    offset += w < warp ? warp_counts[w] : 0;
    count += warp_counts[w];
  }
  if (count == 0) return;  // the whole chunk continues a run that started earlier
  if (is_start) starts[offset + __popc(ballot & ((1u << lane) - 1u))] = s;
  __syncthreads();
  // The last run may go on past the chunk: it ends at the first key of a larger token.
  if (threadIdx.x == 0) {
    const uint64_t next = (static_cast<uint64_t>(key_token(sorted[starts[count - 1]])) + 1) << 32;
    last_end = static_cast<int>(lower_bound_key(sorted, chunk_end, N, next));
  }
  __syncthreads();

  for (int m = 0; m < count; ++m) {
    const int first = starts[m], end = m + 1 < count ? starts[m + 1] : last_end;
    float acc[kWteLaneChannels] = {};
    for (int r = first + warp; r < end; r += kWteWarps * kWteUnroll) {
      // kWteUnroll rows loaded before any is added, so their loads overlap; added in row order.
      float rows[kWteUnroll][kWteLaneChannels] = {};
#pragma unroll
      for (int u = 0; u < kWteUnroll; ++u) {
        const int row = r + u * kWteWarps;
        if (row >= end) continue;
        const Elem* src = dout + key_position(sorted[row]) * C + tile;
#pragma unroll
        for (int j = 0; j < kWteLaneChannels; j += kWidth) {
          const int slot = wte_slot<kWidth>(lane, j);
          if (tile + slot >= C) continue;
          float pack[kWidth];
          load_floats(pack, src + slot);
#pragma unroll
          for (int k = 0; k < kWidth; ++k) rows[u][j + k] = pack[k];
        }
      }
#pragma unroll
      for (int u = 0; u < kWteUnroll; ++u) {
        if (r + u * kWteWarps >= end) break;
#pragma unroll
        for (int j = 0; j < kWteLaneChannels; ++j) acc[j] += rows[u][j];
      }
    }
#pragma unroll
    for (int j = 0; j < kWteLaneChannels; ++j) warp_sums[warp][wte_slot<kWidth>(lane, j)] = acc[j];
    __syncthreads();
    const int c = tile + threadIdx.x;
    if (c < C) {
      float sum = 0.0f;
      for (int w = 0; w < kWteWarps; ++w) sum += warp_sums[w][threadIdx.x];
      Grad* dst = dwte + static_cast<size_t>(key_token(sorted[first])) * C + c;
      *dst = from_float<Grad>(to_float(*dst) + sum);
    }
    __syncthreads();  // warp_sums is rewritten by the next run
  }
}

// ---------------------------------------------------------------------------------------------
// Launch geometry: used by the launchers in encoder.cu.
// ---------------------------------------------------------------------------------------------

constexpr int kBlock = 256;

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

// Sorting N keys: one block per tile, then merge passes of width kSortTile, 2 kSortTile, ... < N.
inline LaunchShape sort_tiles_launch(int N) {
  return {dim3(static_cast<unsigned>(ceil_div(static_cast<size_t>(N), kSortTile))), dim3(kSortThreads)};
}
inline LaunchShape merge_launch(int N) {
  return {dim3(static_cast<unsigned>(ceil_div(static_cast<size_t>(N), kMergeThreads))), dim3(kMergeThreads)};
}

// May the dwte kernel load 16-byte packs of dout? C a multiple of the pack (a pack never crosses a
// row) and dout aligned.
template <class Elem>
bool backward_wte_packed(int C, const void* dout) {
  return C % kPack128<Elem> == 0 && is_aligned16(dout);
}

// One block per kWteThreads sorted keys and per kWteTile channels.
inline LaunchShape backward_wte_launch(int N, int C) {
  return {dim3(static_cast<unsigned>(ceil_div(static_cast<size_t>(N), kWteThreads)),
               static_cast<unsigned>(ceil_div(static_cast<size_t>(C), kWteTile))),
          dim3(kWteThreads)};
}

}  // namespace gpt2cc::cuda::encoder_kernels
