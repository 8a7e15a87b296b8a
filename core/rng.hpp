// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11 "Parallel random numbers:
// as easy as 1, 2, 3"). A draw is a pure function of (key, counter), so the CPU and the CUDA
// backends produce the same dropout masks and the same initial weights, in any order, on any
// number of threads, and a resumed run repeats exactly the draws it would have made.
//
// Layout used by the whole engine: element i of stream s under seed k draws lane (i mod 4) of
// philox4x32_10(counter = {i/4 low 32 bits, i/4 high 32 bits, s, 0}, key = {k low, k high}).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define GPT2CC_HD __host__ __device__ __forceinline__
#else
#define GPT2CC_HD inline
#endif

namespace gpt2cc {

struct Philox4 {
  uint32_t v[4];
};

GPT2CC_HD uint32_t mulhi32(uint32_t a, uint32_t b) {
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
}

// Ten rounds of Philox4x32 with the Random123 constants.
GPT2CC_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;  // round multipliers
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;  // key schedule (golden ratio, sqrt(3)-1)
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0 = mulhi32(M0, c0), lo0 = M0 * c0;
    uint32_t hi1 = mulhi32(M1, c2), lo1 = M1 * c2;
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += W0;
    k1 += W1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The raw 32-bit draw for element `index` of `stream` under `seed` (layout in the header).
GPT2CC_HD uint32_t philox_bits(uint64_t seed, uint32_t stream, uint64_t index) {
  uint64_t block = index >> 2;
  Philox4 r = philox4x32_10(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), stream, 0u,
                            static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return r.v[index & 3];
}

// Uniform float in [0, 1): the top 24 bits, so every value is exactly representable.
GPT2CC_HD float philox_uniform(uint64_t seed, uint32_t stream, uint64_t index) {
  return static_cast<float>(philox_bits(seed, stream, index) >> 8) * (1.0f / 16777216.0f);
}

// Standard normal by Box-Muller from draws 2*index and 2*index+1 (double precision; host init).
inline double philox_normal(uint64_t seed, uint32_t stream, uint64_t index) {
  // u1 in (0, 1] so the log is finite; u2 in [0, 1).
  double u1 = (static_cast<double>(philox_bits(seed, stream, 2 * index)) + 1.0) / 4294967296.0;
  double u2 = static_cast<double>(philox_bits(seed, stream, 2 * index + 1)) / 4294967296.0;
  constexpr double two_pi = 6.283185307179586476925286766559;
  return __builtin_sqrt(-2.0 * __builtin_log(u1)) * __builtin_cos(two_pi * u2);
}

// SplitMix64 (Steele et al. 2014): derives independent 64-bit seeds, e.g. one per training step.
GPT2CC_HD uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// One dropout site: each element is kept with probability 1 - p and then scaled by 1 / (1 - p).
// keep(i) = philox_uniform(seed, stream, i) >= p. p == 0 means the identity (no draws at all).
struct DropoutParams {
  float p = 0.0f;        // drop probability in [0, 1)
  uint64_t seed = 0;     // per micro-step: splitmix64(run seed ^ splitmix64(micro-step counter))
  uint32_t stream = 0;   // per site: distinct for every dropout site of the model
  GPT2CC_HD bool active() const { return p > 0.0f; }
  GPT2CC_HD float scale() const { return 1.0f / (1.0f - p); }
  GPT2CC_HD bool keep(uint64_t index) const { return philox_uniform(seed, stream, index) >= p; }
};

}  // namespace gpt2cc
