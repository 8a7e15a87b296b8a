// The counter-based RNG: Random123's known-answer vectors for Philox4x32-10, determinism,
// and the statistics of the uniform and normal draws built on it.
#include "common/catch.hpp"
#include <cmath>

#include "core/rng.hpp"

using namespace gpt2cc;

TEST_CASE("philox4x32_10 matches the Random123 known-answer vectors", "[rng]") {
  Philox4 zero = philox4x32_10(0, 0, 0, 0, 0, 0);
  CHECK(zero.v[0] == 0x6627e8d5u);
  CHECK(zero.v[1] == 0xe169c58du);
  CHECK(zero.v[2] == 0xbc57ac4cu);
  CHECK(zero.v[3] == 0x9b00dbd8u);
  Philox4 ones = philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
  CHECK(ones.v[0] == 0x408f276du);
  CHECK(ones.v[1] == 0x41c83b0eu);
  CHECK(ones.v[2] == 0xa20bc7c6u);
  CHECK(ones.v[3] == 0x6d5451fdu);
  Philox4 pi = philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  CHECK(pi.v[0] == 0xd16cfe09u);
  CHECK(pi.v[1] == 0x94fdccebu);
  CHECK(pi.v[2] == 0x5001e420u);
  CHECK(pi.v[3] == 0x24126ea1u);
}

TEST_CASE("draws depend only on (seed, stream, index)", "[rng]") {
  CHECK(philox_bits(42, 3, 1000) == philox_bits(42, 3, 1000));
  CHECK(philox_bits(42, 3, 1000) != philox_bits(43, 3, 1000));
  CHECK(philox_bits(42, 3, 1000) != philox_bits(42, 4, 1000));
  CHECK(philox_bits(42, 3, 1000) != philox_bits(42, 3, 1001));
  CHECK(splitmix64(1) != splitmix64(2));
}

TEST_CASE("uniform and normal draws have the right moments", "[rng]") {
  const int n = 200000;
  double sum = 0, sum2 = 0, nsum = 0, nsum2 = 0;
  float lo = 1, hi = 0;
  for (int i = 0; i < n; ++i) {
    float u = philox_uniform(7, 1, i);
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    sum += u;
    sum2 += double(u) * u;
    double z = philox_normal(7, 2, i);
    nsum += z;
    nsum2 += z * z;
  }
  CHECK(lo >= 0.0f);
  CHECK(hi < 1.0f);
  // mean 1/2 (sd of the mean 0.29/sqrt(n) = 6.5e-4), variance 1/12.
  CHECK(std::fabs(sum / n - 0.5) < 4e-3);
  CHECK(std::fabs(sum2 / n - sum * sum / n / n - 1.0 / 12) < 2e-3);
  CHECK(std::fabs(nsum / n) < 1e-2);
  CHECK(std::fabs(nsum2 / n - 1.0) < 1.5e-2);
}

TEST_CASE("dropout keeps a fraction 1-p and scales by 1/(1-p)", "[rng]") {
  DropoutParams d{0.25f, 99, 5};
  CHECK(d.active());
  CHECK(d.scale() == Approx(1.0 / 0.75));
  int kept = 0;
  for (int i = 0; i < 100000; ++i) kept += d.keep(i);
  CHECK(std::fabs(kept / 100000.0 - 0.75) < 0.01);
  CHECK_FALSE(DropoutParams{}.active());
}
