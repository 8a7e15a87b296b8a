// Mixed-precision optimizer pieces (issue 8): cuda::adamw_update on fp32 master weights with bf16
// grads (or fp32 ones: a bf16 model's fp32 gradients) and a bf16 parameter copy, against
// cpu::adamw_update on the master weights with the same grads, over several steps with a clip
// factor; cuda::sum_of_squares on bf16 against a double sum on the host; cuda::convert / widen
// against a bit-level round-to-nearest-even reference (ties, overflow to inf), both kernel
// branches (aligned 16-byte groups, misaligned scalar) and tails that are not a multiple of the
// 8-element group.
#include "common/catch.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>

#include "bf16_test_util.hpp"
#include "cpu/adamw.hpp"
#include "kernels/adamw.cuh"
#include "kernels/convert.cuh"

using namespace gpt2cc;
using test::bf16;
using test::bits_float;
using test::bf16_bits;
using test::DeviceBuffer;
using test::float_bits;
using test::rne_bits;

namespace {

std::vector<uint16_t> all_bits(const std::vector<bf16>& x) {
  std::vector<uint16_t> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = bf16_bits(x[i]);
  return out;
}

}  // namespace

TEST_CASE("bf16 adamw with fp32 master weights matches cpu", "[cuda][bf16][adamw]") {
  const size_t N = GENERATE(size_t(1), size_t(1001), size_t(300007));
  const float grad_scale = GENERATE(1.0f, 0.375f);
  const bool fp32_grads = GENERATE(false, true);  // a bf16 model's gradients in bf16, or kept in fp32
  INFO("N=" << N << " grad_scale=" << grad_scale << " fp32 grads=" << fp32_grads);
  AdamWParams hp;
  hp.lr = 1e-3f;
  hp.weight_decay = 0.1f;
  hp.grad_scale = grad_scale;
  auto master = test::random_vector(N, 301);
  auto m = test::random_vector(N, 302, -0.1f, 0.1f), v = test::random_vector(N, 303, 0.0f, 0.01f);
  DeviceBuffer<float> d_master(master), d_m(m), d_v(v);
  DeviceBuffer<bf16> d_params(N), d_grads(N);
  DeviceBuffer<float> d_grads32(N);
  cudaStream_t stream = test::test_stream();
  for (int step = 1; step <= 3; ++step) {
    INFO("step " << step);
    hp.step = step;
    // The CPU sees exactly the gradient values the GPU reads: the bf16 ones, or the fp32 ones.
    auto grads = test::random_vector(N, 310 + step, -2.0f, 2.0f);
    if (!fp32_grads) grads = test::round_to_bf16(grads);
    d_params.poison();
    cpu::adamw_update(master.data(), m.data(), v.data(), grads.data(), N, hp);
    if (fp32_grads) {
      d_grads32.upload(grads);
      cuda::adamw_update(d_master.get(), d_params.get(), d_m.get(), d_v.get(), d_grads32.get(), N, hp, stream);
    } else {
      d_grads.upload(test::to_bf16(grads));
      cuda::adamw_update(d_master.get(), d_params.get(), d_m.get(), d_v.get(), d_grads.get(), N, hp, stream);
    }
    const auto got_master = d_master.download();
    test::expect_matches(got_master, master, "master weights", 1e-6);
    test::expect_matches(d_m.download(), m, "m", 1e-6);
    test::expect_matches(d_v.download(), v, "v", 1e-6);
    // The bf16 copy is exactly the GPU's master rounded to nearest even.
    const auto params = all_bits(d_params.download());
    size_t mismatches = 0;
    for (size_t i = 0; i < N; ++i) mismatches += params[i] != rne_bits(got_master[i]);
    CHECK(mismatches == 0);
  }
}

TEST_CASE("bf16 adamw applies the clip factor to the gradient", "[cuda][bf16][adamw]") {
  // Step 1 from zero moments: m = (1-b1) g s and v = (1-b2) (g s)^2 show the scale s directly.
  const size_t N = 64;
  AdamWParams hp;
  hp.grad_scale = 0.25f;
  const std::vector<float> grads(N, 2.0f);
  DeviceBuffer<float> d_master(std::vector<float>(N, 1.0f)), d_m(std::vector<float>(N, 0.0f)),
      d_v(std::vector<float>(N, 0.0f));
  DeviceBuffer<bf16> d_params(N), d_grads(test::to_bf16(grads));
  cuda::adamw_update(d_master.get(), d_params.get(), d_m.get(), d_v.get(), d_grads.get(), N, hp, test::test_stream());
  const float g = 2.0f * 0.25f;
  test::expect_matches(d_m.download(), std::vector<float>(N, (1.0f - hp.beta1) * g), "m of the scaled gradient");
  test::expect_matches(d_v.download(), std::vector<float>(N, (1.0f - hp.beta2) * g * g), "v of the scaled gradient");
}

TEST_CASE("bf16 sum_of_squares matches a double sum and repeats exactly", "[cuda][bf16][adamw][determinism]") {
  const size_t N = GENERATE(size_t(0), size_t(1), size_t(1000), size_t(512 * 256 + 17), size_t(5000011));
  INFO("N=" << N);
  const auto x = test::to_bf16(test::random_vector(N, 321, -3.0f, 3.0f));
  double expected = 0.0;
  for (const bf16 value : x) {
    const double d = __bfloat162float(value);
    expected += d * d;
  }
  DeviceBuffer<bf16> d_x(x);
  const double got = cuda::sum_of_squares(d_x.get(), N, test::test_stream());
  // Squares of bf16 values are exact in double; only the order of the additions differs.
  CHECK(std::fabs(got - expected) <= 1e-10 * std::max(1.0, std::fabs(expected)));
  const double again = cuda::sum_of_squares(d_x.get(), N, test::test_stream());
  CHECK(std::memcmp(&got, &again, sizeof(double)) == 0);
}

TEST_CASE("convert rounds to nearest even and widen is exact", "[cuda][bf16][convert]") {
  const size_t N = GENERATE(size_t(1), size_t(7), size_t(8), size_t(9), size_t(4099), size_t(1000003));
  // Offsets of one element make the pointer 4-byte (float) or 2-byte (bf16) aligned only: the
  // scalar kernel. Both at 0: the 16-byte kernel.
  const int src_offset = GENERATE(0, 1), dst_offset = GENERATE(0, 1);
  INFO("N=" << N << " src_offset=" << src_offset << " dst_offset=" << dst_offset);
  const std::vector<float> x = test::rounding_inputs(N);

  cudaStream_t stream = test::test_stream();
  std::vector<float> src_host(src_offset, 0.0f);
  src_host.insert(src_host.end(), x.begin(), x.end());
  DeviceBuffer<float> d_src(src_host);
  // 8 spare elements after the output: a group that writes past N shows up there.
  DeviceBuffer<bf16> d_dst(dst_offset + N + 8);
  d_dst.poison();
  cuda::convert(d_dst.get() + dst_offset, d_src.get() + src_offset, N, stream);
  const auto out = all_bits(d_dst.download());
  size_t mismatches = 0;
  for (size_t i = 0; i < N; ++i) mismatches += out[dst_offset + i] != rne_bits(x[i]);
  CHECK(mismatches == 0);
  for (int i = 0; i < dst_offset; ++i) CHECK(out[i] == 0xFFFFu);
  for (size_t i = dst_offset + N; i < out.size(); ++i) CHECK(out[i] == 0xFFFFu);

  // widen: exact, so the bf16 bits shifted up 16; same tail and offset checks.
  std::vector<bf16> narrow(d_dst.download());
  narrow.erase(narrow.begin(), narrow.begin() + dst_offset);
  narrow.resize(N);
  std::vector<bf16> narrow_host(src_offset, bf16{});
  narrow_host.insert(narrow_host.end(), narrow.begin(), narrow.end());
  DeviceBuffer<bf16> d_narrow(narrow_host);
  DeviceBuffer<float> d_wide(dst_offset + N + 8);
  d_wide.poison();
  cuda::widen(d_wide.get() + dst_offset, d_narrow.get() + src_offset, N, stream);
  const auto wide = d_wide.download();
  std::vector<float> expected(N);
  for (size_t i = 0; i < N; ++i) expected[i] = bits_float(static_cast<uint32_t>(bf16_bits(narrow[i])) << 16);
  CHECK(test::same_bits(std::vector<float>(wide.begin() + dst_offset, wide.begin() + dst_offset + N), expected));
  for (int i = 0; i < dst_offset; ++i) CHECK(std::isnan(wide[i]));
  for (size_t i = dst_offset + N; i < wide.size(); ++i) CHECK(std::isnan(wide[i]));

  // Round trip: values already on the bf16 grid come back bit for bit.
  cuda::widen(d_src.get() + src_offset, d_narrow.get() + src_offset, N, stream);
  cuda::convert(d_dst.get() + dst_offset, d_src.get() + src_offset, N, stream);
  const auto back = all_bits(d_dst.download());
  CHECK(std::equal(back.begin() + dst_offset, back.begin() + dst_offset + N, all_bits(narrow).begin()));
}

TEST_CASE("convert keeps NaN a NaN", "[cuda][bf16][convert]") {
  const std::vector<float> x = {std::nanf(""), -std::nanf(""), bits_float(0x7F800001u), 1.0f};
  DeviceBuffer<float> d_x(x);
  DeviceBuffer<bf16> d_y(x.size());
  cuda::convert(d_y.get(), d_x.get(), x.size(), test::test_stream());
  const auto y = test::from_bf16(d_y.download());
  CHECK(std::isnan(y[0]));
  CHECK(std::isnan(y[1]));
  CHECK(std::isnan(y[2]));  // a signalling-NaN pattern whose payload would round into the inf bits
  CHECK(y[3] == 1.0f);
}
