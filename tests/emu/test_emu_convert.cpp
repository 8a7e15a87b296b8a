// cuda::convert and cuda::widen (kernels/convert.cuh) with their kernels on the CPU emulator, with
// the checks of tests/cuda/test_bf16_optimizer.cpp: convert rounds to nearest even bit for
// bit (against a rounding written on the bit pattern, independently of cuda_bf16.h; ties, values
// around ties, overflow to inf, -0, NaN stays NaN), widen is exact, neither writes outside
// [0, N). N = 1, 7, 8, 9, 4099 (partial last groups of 8), both pointers aligned (16-byte kernel)
// or either offset by one element (scalar). Every warp schedule gives the same bits.
#include "common/catch.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <vector>

#include "emu/layer_test_util.hpp"
#include "kernels/convert.cuh"

using namespace gpt2cc;
using test::bf16;
using test::bits_float;
using test::float_bits;
using test::rne_bits;

TEST_CASE("emulated convert rounds to nearest even and widen is exact", "[emu][convert][bf16]") {
  const size_t N = GENERATE(size_t(1), size_t(7), size_t(8), size_t(9), size_t(4099));
  const int src_offset = GENERATE(0, 1), dst_offset = GENERATE(0, 1);
  INFO("N=" << N << " src_offset=" << src_offset << " dst_offset=" << dst_offset);
  const std::vector<float> x = test::rounding_inputs(N);

  // Returns the bf16 output (8 spare poisoned elements after it: a group writing past N shows
  // there) and the widened round trip, both with their offsets, as floats.
  const auto run = [&] {
    const cudaStream_t stream = test::test_stream();
    test::DeviceBuffer src(test::padded(x, src_offset));
    test::DeviceBuffer narrow(test::poisoned<bf16>(dst_offset + N + 8));
    cuda::convert(narrow.get() + dst_offset, src.get() + src_offset, N, stream);
    const std::vector<bf16> narrow_host = narrow.download();
    std::vector<bf16> narrow_src(src_offset, bf16{});
    narrow_src.insert(narrow_src.end(), narrow_host.begin() + dst_offset, narrow_host.begin() + dst_offset + N);
    test::DeviceBuffer narrow_src_d(narrow_src);
    test::DeviceBuffer wide(test::poisoned<float>(dst_offset + N + 8));
    cuda::widen(wide.get() + dst_offset, narrow_src_d.get() + src_offset, N, stream);
    const auto narrow_f = test::from_bf16(narrow_host), wide_f = wide.download();
    return test::concat({&narrow_f, &wide_f});
  };
  const std::vector<float> all = run();
  // The bf16 output as widened floats: bf16 bits b read as the float bits b << 16.
  const size_t n_out = dst_offset + N + 8;
  std::vector<uint32_t> narrow(n_out);
  for (size_t i = 0; i < n_out; ++i) narrow[i] = float_bits(all[i]);
  const std::vector<float> wide(all.begin() + static_cast<std::ptrdiff_t>(n_out), all.end());

  size_t mismatches = 0;
  for (size_t i = 0; i < N; ++i) mismatches += narrow[dst_offset + i] != static_cast<uint32_t>(rne_bits(x[i])) << 16;
  CHECK(mismatches == 0);
  for (int i = 0; i < dst_offset; ++i) CHECK(narrow[i] == 0xFFFF0000u);
  for (size_t i = dst_offset + N; i < n_out; ++i) CHECK(narrow[i] == 0xFFFF0000u);

  size_t wrong = 0;
  for (size_t i = 0; i < N; ++i) {
    const float expected = bits_float(static_cast<uint32_t>(rne_bits(x[i])) << 16);
    wrong += float_bits(wide[dst_offset + i]) != float_bits(expected);
  }
  CHECK(wrong == 0);
  for (int i = 0; i < dst_offset; ++i) CHECK(std::isnan(wide[i]));
  for (size_t i = dst_offset + N; i < wide.size(); ++i) CHECK(std::isnan(wide[i]));
  test::check_every_schedule(all, run);
}

TEST_CASE("emulated convert keeps NaN a NaN", "[emu][convert][bf16]") {
  const std::vector<float> x = {std::nanf(""), -std::nanf(""), bits_float(0x7F800001u), 1.0f};
  test::DeviceBuffer d_x(x);
  test::DeviceBuffer y(test::poisoned<bf16>(x.size()));
  cuda::convert(y.get(), d_x.get(), x.size(), test::test_stream());
  const auto f = test::widened(y);
  CHECK(std::isnan(f[0]));
  CHECK(std::isnan(f[1]));
  CHECK(std::isnan(f[2]));  // a signalling-NaN pattern whose payload would round into the inf bits
  CHECK(f[3] == 1.0f);
}
