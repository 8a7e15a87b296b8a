// The CPU's bf16 backend (cpu/backend.hpp, CpuBf16Backend) and its pieces. The rounding: ties to
// even, NaN and inf kept, overflow to inf; the arrays equal to the scalar around the parallel
// threshold. The bf16-weight matmul forward against a double-precision oracle on either side of
// its matrix-vector / blocked split and across its weight blocks; gemm_bf16 against the same
// oracle, and its bf16-output form against its fp32 form rounded. Then every op of the backend
// against the fp32 backend run on the widened operands: the ops that widen and call the fp32 op
// must give exactly its outputs rounded (which catches a wrong size, a missing accumulation or
// commit); the ones with their own sums (matmul forward, decode attention) within a bf16 rounding,
// and the products that round into bf16 tensors exactly as their fp32 results would round.
#include "common/catch.hpp"
#include <omp.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "core/rng.hpp"
#include "cpu/amx.hpp"
#include "cpu/backend.hpp"
#include "cpu/bf16.hpp"
#include "cpu/gemm.hpp"
#include "cpu/matmul.hpp"

using namespace gpt2cc;
using cpu::round_to_bf16;
using cpu::widen_bf16;

namespace {

float from_bits(uint32_t bits) { return std::bit_cast<float>(bits); }

// n bf16 values, uniform in [-scale, scale), from stream `seed`.
std::vector<uint16_t> random_bf16(size_t n, uint64_t seed, float scale = 1.0f) {
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) {
    const float u = static_cast<float>(philox_bits(seed, 0, i) >> 8) / float(1 << 24);  // [0, 1)
    v[i] = round_to_bf16(scale * (2.0f * u - 1.0f));
  }
  return v;
}

std::vector<float> widened(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = widen_bf16(v[i]);
  return out;
}

std::vector<uint16_t> rounded(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = round_to_bf16(v[i]);
  return out;
}

TensorPtr bf16(std::vector<uint16_t>& v) { return {v.data(), DType::bf16}; }

// Largest |a - b| / (|b| + floor) over the elements, for a's bf16 against b's fp32.
double worst_relative(const std::vector<uint16_t>& a, const std::vector<float>& b, double floor) {
  REQUIRE(a.size() == b.size());
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::fabs(double(widen_bf16(a[i])) - b[i]) / (std::fabs(double(b[i])) + floor));
  return worst;
}

// |got[i][j] - (base(i, j) + sum_k a(i, k) b(k, j))| <= 1e-6 of the sum of the terms' magnitudes
// (fp32 sums of exact products: a few ulps of that), for the M x N outputs (`ldc` floats apart).
template <class A, class Bm, class Base>
void check_product(const std::vector<float>& got, size_t ldc, int M, int N, int K, A a, Bm b, Base base) {
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      double want = base(i, j), magnitude = std::fabs(want);
      for (int k = 0; k < K; ++k) {
        const double term = double(a(i, k)) * b(k, j);
        want += term;
        magnitude += std::fabs(term);
      }
      REQUIRE(std::fabs(got[size_t(i) * ldc + j] - want) <= 1e-6 * magnitude + 1e-30);
    }
  }
}

float no_base(int, int) { return 0.0f; }

// gemm_bf16 into a bf16 Cm against its fp32 form: the same sums rounded once, assigning (from a
// bias, and from 0) and accumulating (onto Cm's widened values), between rows it leaves alone.
void check_bf16_form(cpu::Bf16Matrix A, cpu::Bf16Matrix Bm, int M, int N, int K) {
  const size_t ldc = size_t(N) + 3;
  const std::vector<float> init = widened(random_bf16(N, 25));
  const std::vector<uint16_t> start = random_bf16(M * ldc, 26);
  const uint16_t kGap = 0x7fc1;  // a NaN no rounding writes (rounded NaNs keep their top bits)
  for (int mode = 0; mode < 3; ++mode) {
    CAPTURE(mode);
    const bool assign = mode < 2;
    const float* bias = mode == 0 ? init.data() : nullptr;
    std::vector<uint16_t> got(M * ldc, kGap);
    std::vector<float> want(M * ldc);
    if (!assign) {
      for (int i = 0; i < M; ++i) {
        for (int j = 0; j < N; ++j) got[i * ldc + j] = start[i * ldc + j];
      }
      want = widened(got);
    }
    cpu::gemm_bf16(got.data(), ldc, A, Bm, M, N, K, assign, bias);
    cpu::gemm_bf16(want.data(), ldc, A, Bm, M, N, K, assign, bias);
    size_t wrong = 0, gaps_written = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (i % ldc < size_t(N)) {
        wrong += got[i] != round_to_bf16(want[i]);
      } else {
        gaps_written += got[i] != kGap;
      }
    }
    CHECK(wrong == 0);
    CHECK(gaps_written == 0);
  }
}

}  // namespace

TEST_CASE("bf16 rounding: to nearest, ties to even; NaN, inf and overflow", "[cpu][bf16]") {
  CHECK(round_to_bf16(1.0f) == 0x3f80);
  CHECK(round_to_bf16(-2.5f) == 0xc020);
  CHECK(round_to_bf16(from_bits(0x3f808000u)) == 0x3f80);  // a tie, the even neighbour below
  CHECK(round_to_bf16(from_bits(0x3f818000u)) == 0x3f82);  // a tie, the even neighbour above
  CHECK(round_to_bf16(from_bits(0x3f808001u)) == 0x3f81);  // just past the tie
  CHECK(round_to_bf16(from_bits(0x3f807fffu)) == 0x3f80);  // just below it
  CHECK(round_to_bf16(from_bits(0x00000001u)) == 0x0000);  // the smallest denormal rounds to 0
  CHECK(round_to_bf16(from_bits(0x80018000u)) == 0x8002);  // denormals round like the rest
  CHECK(round_to_bf16(FLT_MAX) == 0x7f80);                  // beyond bf16's largest: inf
  CHECK(round_to_bf16(-FLT_MAX) == 0xff80);
  CHECK(round_to_bf16(std::numeric_limits<float>::infinity()) == 0x7f80);
  const uint16_t nan = round_to_bf16(std::numeric_limits<float>::quiet_NaN());
  CHECK(std::isnan(widen_bf16(nan)));
  // A NaN whose payload sits in the low half only would round to inf by the carry: it must not.
  CHECK(std::isnan(widen_bf16(round_to_bf16(from_bits(0x7f800001u)))));
  CHECK(std::isnan(widen_bf16(round_to_bf16(from_bits(0xffffffffu)))));
  CHECK(widen_bf16(0x3f81) == 1.0f + 1.0f / 128);
  // Every bf16 value survives the round trip.
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float x = widen_bf16(static_cast<uint16_t>(b));
    if (!std::isnan(x)) REQUIRE(round_to_bf16(x) == b);
  }
}

TEST_CASE("bf16 array conversions equal the scalar ones, with 1 and 2 threads", "[cpu][bf16]") {
  for (size_t n : {size_t{0}, size_t{7}, size_t{65535}, size_t{65536}, size_t{200003}}) {
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = from_bits(philox_bits(3, 1, i));
    for (int threads : {1, 2}) {
      cpu::CpuBackend backend(threads);  // sets the OpenMP thread count
      std::vector<uint16_t> r(n);
      cpu::round_to_bf16(r.data(), x.data(), n);
      std::vector<float> w(n);
      cpu::widen_bf16(w.data(), r.data(), n);
      for (size_t i = 0; i < n; ++i) {
        REQUIRE(r[i] == round_to_bf16(x[i]));
        REQUIRE(std::bit_cast<uint32_t>(w[i]) == uint32_t(r[i]) << 16);
      }
    }
  }
}

TEST_CASE("matmul forward with bf16 weights against a double-precision oracle", "[cpu][bf16][matmul]") {
  struct Shape {
    int BT, C, OC;
  };
  // Rows around the matrix-vector / blocked split (32), channels with and without a tail past the
  // 16-value pairs, outputs with a partial group of 4; C = 1024 makes weight blocks of 2048 rows,
  // so OC = 2100 crosses one.
  const Shape shapes[] = {{1, 64, 37}, {3, 17, 9}, {5, 768, 50}, {31, 100, 13}, {32, 48, 40},
                          {33, 48, 40}, {70, 33, 66}, {40, 1024, 2100}};
  for (const Shape& s : shapes) {
    for (bool with_bias : {false, true}) {
      CAPTURE(s.BT, s.C, s.OC, with_bias);
      const std::vector<float> inp = widened(random_bf16(size_t(s.BT) * s.C, 1));
      const std::vector<uint16_t> weight = random_bf16(size_t(s.OC) * s.C, 2);
      const std::vector<float> bias = widened(random_bf16(s.OC, 3));
      std::vector<float> out(size_t(s.BT) * s.OC, NAN);
      cpu::matmul_forward_bf16_weight(out.data(), inp.data(), weight.data(), with_bias ? bias.data() : nullptr, 1,
                                      s.BT, s.C, s.OC);
      check_product(
          out, s.OC, s.BT, s.OC, s.C, [&](int bt, int c) { return inp[size_t(bt) * s.C + c]; },
          [&](int c, int o) { return widen_bf16(weight[size_t(o) * s.C + c]); },
          [&](int, int o) { return with_bias ? bias[o] : 0.0f; });
    }
  }
}

namespace {

// The bf16 products each CPU offers, as (AMX, AVX512-BF16 blocked product) switch settings: the
// widening fallback always, the others where available. Restores the defaults when it goes.
struct ProductPaths {
  const bool amx = cpu::amx_bf16_available(), dp = cpu::gemm_bf16_available();
  ~ProductPaths() { use(amx, dp); }
  std::vector<std::pair<bool, bool>> list() const {
    std::vector<std::pair<bool, bool>> paths = {{false, false}};
    if (dp) paths.push_back({false, true});
    if (amx) paths.push_back({true, dp});
    return paths;
  }
  static void use(bool amx_on, bool dp_on) {
    cpu::set_amx_bf16_enabled(amx_on);
    cpu::set_gemm_bf16_enabled(dp_on);
  }
};

}  // namespace

TEST_CASE("matmul forward with bf16 inputs and weights: AMX tiles and the other paths", "[cpu][bf16][matmul]") {
  struct Shape {
    int BT, C, OC;
  };
  // From 33 rows up AMX takes C and OC multiples of 32 (rows around its 32-row blocks and 128-row
  // chunks), the AVX512-BF16 product any shape (odd C, OC past its 32-column panels); the last
  // shapes never take AMX.
  const Shape shapes[] = {{32, 64, 64}, {33, 64, 96}, {70, 96, 64}, {129, 768, 256}, {40, 64, 48}, {45, 301, 67}};
  ProductPaths paths;
  INFO("AMX-BF16 " << (paths.amx ? "available" : "not available") << ", AVX512-BF16 "
                   << (paths.dp ? "available" : "not available") << ": " << paths.list().size() << " paths");
  for (const Shape& s : shapes) {
    CAPTURE(s.BT, s.C, s.OC);
    const std::vector<uint16_t> inp = random_bf16(size_t(s.BT) * s.C, 11), weight = random_bf16(size_t(s.OC) * s.C, 12);
    const std::vector<float> bias = widened(random_bf16(s.OC, 13)), inp32 = widened(inp);
    for (auto [amx_on, dp_on] : paths.list()) {
      CAPTURE(amx_on, dp_on);
      ProductPaths::use(amx_on, dp_on);
      std::vector<float> out(size_t(s.BT) * s.OC, NAN);
      cpu::matmul_forward_bf16(out.data(), inp.data(), weight.data(), bias.data(), 1, s.BT, s.C, s.OC);
      check_product(
          out, s.OC, s.BT, s.OC, s.C, [&](int bt, int c) { return inp32[size_t(bt) * s.C + c]; },
          [&](int c, int o) { return widen_bf16(weight[size_t(o) * s.C + c]); }, [&](int, int o) { return bias[o]; });
      // A row's bits do not depend on the rows beside it: the first 33 rows alone (still the same
      // path).
      if (s.BT > 33) {
        std::vector<float> head(size_t(33) * s.OC);
        cpu::matmul_forward_bf16(head.data(), inp.data(), weight.data(), bias.data(), 1, 33, s.C, s.OC);
        CHECK(head == std::vector<float>(out.begin(), out.begin() + head.size()));
      }
    }
  }
}

TEST_CASE("gemm_bf16: every packing path against a double-precision oracle", "[cpu][bf16][matmul]") {
  if (!cpu::gemm_bf16_available()) {
    CHECK_THROWS_WITH(cpu::set_gemm_bf16_enabled(true), Catch::Contains("no AVX512-BF16"));
    CHECK_FALSE(cpu::gemm_bf16_enabled());
    WARN("this CPU has no AVX512-BF16: gemm_bf16 not run");
    return;
  }
  ProductPaths restore;
  struct Shape {
    int M, N, K;
  };
  // Fewer rows than a tile, rows and columns past whole tiles and panels, K odd, K past one depth
  // block of 256 with an odd tail; no k at all.
  const Shape shapes[] = {{1, 1, 1}, {3, 40, 0}, {5, 31, 7}, {6, 32, 64}, {13, 70, 255}, {40, 33, 300}, {64, 96, 513}};
  // How each operand lies: k along its rows (contiguous), its rows side by side (k strided),
  // both strided, and k contiguous from an odd offset (no 32-bit pairs in place).
  enum Layout { kRows, kSideBySide, kStrided, kOddOffset };
  for (const Shape& s : shapes) {
    for (Layout la : {kRows, kSideBySide, kStrided, kOddOffset}) {
      for (Layout lb : {kRows, kSideBySide, kStrided, kOddOffset}) {
        CAPTURE(s.M, s.N, s.K, la, lb);
        // A (M x K) and Bm (K x N) laid out as asked inside larger buffers.
        auto view = [](std::vector<uint16_t>& buffer, Layout layout, int rows, int cols, uint64_t seed) {
          buffer = random_bf16(size_t(rows + 1) * (cols + 1) * 2 + 1, seed);
          switch (layout) {
            case kRows: return cpu::Bf16Matrix{buffer.data(), size_t(cols + 2), 1};
            case kSideBySide: return cpu::Bf16Matrix{buffer.data(), 1, size_t(rows + 2)};
            case kStrided: return cpu::Bf16Matrix{buffer.data(), size_t(2 * cols + 1), 2};
            case kOddOffset: return cpu::Bf16Matrix{buffer.data() + 1, size_t(cols + 2), 1};
          }
          return cpu::Bf16Matrix{};
        };
        std::vector<uint16_t> a_buf, b_buf;
        const cpu::Bf16Matrix A = view(a_buf, la, s.M, s.K, 21), Bm = view(b_buf, lb, s.K, s.N, 22);
        auto a = [&](int i, int k) { return widen_bf16(A.at(i, k)); };
        auto b = [&](int k, int j) { return widen_bf16(Bm.at(k, j)); };
        const size_t ldc = size_t(s.N) + 3;
        const std::vector<float> init = widened(random_bf16(s.N, 23)), start = widened(random_bf16(s.M * ldc, 24));

        std::vector<float> out(s.M * ldc, NAN);
        cpu::gemm_bf16(out.data(), ldc, A, Bm, s.M, s.N, s.K, true, init.data());
        check_product(out, ldc, s.M, s.N, s.K, a, b, [&](int, int j) { return init[j]; });
        for (size_t i = 0; i < out.size(); ++i) {
          if (i % ldc >= size_t(s.N)) REQUIRE(std::isnan(out[i]));  // the gaps between rows untouched
        }
        cpu::gemm_bf16(out.data(), ldc, A, Bm, s.M, s.N, s.K, true, nullptr);
        check_product(out, ldc, s.M, s.N, s.K, a, b, no_base);
        out = start;
        cpu::gemm_bf16(out.data(), ldc, A, Bm, s.M, s.N, s.K, false);
        check_product(out, ldc, s.M, s.N, s.K, a, b, [&](int i, int j) { return start[size_t(i) * ldc + j]; });
        check_bf16_form(A, Bm, s.M, s.N, s.K);
      }
    }
  }
  SECTION("the bf16 form over several blocks of Cm (rows past 384, columns past 2048) and depth blocks") {
    const int M = 400, N = 2100, K = 300;
    const std::vector<uint16_t> A = random_bf16(size_t(M) * K, 41), Bm = random_bf16(size_t(N) * K, 42);
    const int threads = omp_get_max_threads();
    for (int t : {1, 2}) {
      CAPTURE(t);
      omp_set_num_threads(t);
      check_bf16_form({A.data(), size_t(K), 1}, {Bm.data(), 1, size_t(K)}, M, N, K);
    }
    omp_set_num_threads(threads);
  }
  SECTION("the same bits on 1 and 2 threads, and with the bf16 products off it is an error") {
    const int M = 50, N = 70, K = 300;
    const std::vector<uint16_t> A = random_bf16(size_t(M) * K, 31), Bm = random_bf16(size_t(K) * N, 32);
    std::vector<float> one(size_t(M) * N), two(size_t(M) * N);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    cpu::gemm_bf16(one.data(), N, {A.data(), size_t(K), 1}, {Bm.data(), size_t(N), 1}, M, N, K, true);
    omp_set_num_threads(2);
    cpu::gemm_bf16(two.data(), N, {A.data(), size_t(K), 1}, {Bm.data(), size_t(N), 1}, M, N, K, true);
    omp_set_num_threads(threads);
    CHECK(one == two);
    cpu::set_gemm_bf16_enabled(false);
    CHECK_THROWS_WITH(cpu::gemm_bf16(one.data(), N, {A.data(), size_t(K), 1}, {Bm.data(), size_t(N), 1}, M, N, K, true),
                      Catch::Contains("bf16 products are off"));
  }
}

namespace {

// Every op below runs on the bf16 backend with bf16 operands and on the fp32 backend with the
// same operands widened; `exact` ops must then agree bit for bit after rounding the fp32 result.
struct Pair {
  cpu::CpuBf16Backend half{1};
  cpu::CpuBackend full{1};
};

void check_exact(const std::vector<uint16_t>& got, const std::vector<float>& fp32_result) {
  const std::vector<uint16_t> want = rounded(fp32_result);
  REQUIRE(got.size() == want.size());
  size_t wrong = 0;
  for (size_t i = 0; i < got.size(); ++i) wrong += got[i] != want[i];
  CHECK(wrong == 0);
}

}  // namespace

TEST_CASE("CpuBf16Backend: each op is the fp32 op on widened operands, rounded once", "[cpu][bf16][backend]") {
  Pair p;
  CHECK(p.half.dtype() == DType::bf16);
  CHECK(p.half.describe() == "cpu bf16 (1 thread)");
  CHECK(make_cpu_backend(1, DType::bf16)->dtype() == DType::bf16);
  const int B = 2, T = 5, C = 32, NH = 4, OC = 24, V = 11, Vp = 16;
  const size_t BTC = size_t(B) * T * C;

  SECTION("conversions") {
    std::vector<float> x = widened(random_bf16(100, 9));
    x[3] = 1.0f + 1.0f / 512;  // a tie: rounds to 1
    std::vector<uint16_t> h(100);
    p.half.convert_from_float(bf16(h), x.data(), x.size());
    check_exact(h, x);
    std::vector<float> back(100);
    p.half.convert_to_float(back.data(), bf16(h), h.size());
    CHECK(back == widened(h));
  }

  SECTION("encoder forward and backward (a token repeated, rows accumulated)") {
    const std::vector<int> tokens = {3, 7, 3, 0, 10, 3, 7, 7, 1, 3};
    std::vector<uint16_t> wte = random_bf16(size_t(V) * C, 1), wpe = random_bf16(size_t(T) * C, 2);
    std::vector<uint16_t> out(BTC);
    std::vector<float> out32(BTC), wte32 = widened(wte), wpe32 = widened(wpe);
    p.half.encoder_forward(bf16(out), tokens.data(), bf16(wte), bf16(wpe), B, T, C);
    p.full.encoder_forward(out32.data(), tokens.data(), wte32.data(), wpe32.data(), B, T, C);
    check_exact(out, out32);

    std::vector<uint16_t> dout = random_bf16(BTC, 3), dwte = random_bf16(size_t(V) * C, 4),
                          dwpe = random_bf16(size_t(T) * C, 5);
    std::vector<float> dwte32 = widened(dwte), dwpe32 = widened(dwpe), dout32 = widened(dout);
    p.half.encoder_backward(bf16(dwte), bf16(dwpe), bf16(dout), tokens.data(), B, T, C);
    p.full.encoder_backward(dwte32.data(), dwpe32.data(), dout32.data(), tokens.data(), B, T, C);
    check_exact(dwte, dwte32);
    check_exact(dwpe, dwpe32);
  }

  SECTION("layernorm forward and backward") {
    std::vector<uint16_t> inp = random_bf16(BTC, 1, 3.0f), w = random_bf16(C, 2), b = random_bf16(C, 3);
    std::vector<uint16_t> out(BTC);
    std::vector<float> out32(BTC), mean(B * T), rstd(B * T), mean32(B * T), rstd32(B * T);
    std::vector<float> inp32 = widened(inp), w32 = widened(w), b32 = widened(b);
    p.half.layernorm_forward(bf16(out), mean.data(), rstd.data(), bf16(inp), bf16(w), bf16(b), B, T, C);
    p.full.layernorm_forward(out32.data(), mean32.data(), rstd32.data(), inp32.data(), w32.data(), b32.data(), B, T,
                             C);
    check_exact(out, out32);
    CHECK(mean == mean32);
    CHECK(rstd == rstd32);

    std::vector<uint16_t> dout = random_bf16(BTC, 4), dinp = random_bf16(BTC, 5), dw = random_bf16(C, 6),
                          db = random_bf16(C, 7);
    std::vector<float> dinp32 = widened(dinp), dw32 = widened(dw), db32 = widened(db), dout32 = widened(dout);
    p.half.layernorm_backward(bf16(dinp), bf16(dw), bf16(db), bf16(dout), mean.data(), rstd.data(), bf16(inp),
                              bf16(w), B, T, C);
    p.full.layernorm_backward(dinp32.data(), dw32.data(), db32.data(), dout32.data(), mean.data(), rstd.data(),
                              inp32.data(), w32.data(), B, T, C);
    check_exact(dinp, dinp32);
    check_exact(dw, dw32);
    check_exact(db, db32);
  }

  SECTION("matmul: the forward within a rounding, the backward and the GELU backward exact or within one") {
    for (int rows : {1, T}) {  // B x rows: decoding's few rows, and the blocked product's many
      CAPTURE(rows);
      const size_t n_in = size_t(B) * rows * C, n_out = size_t(B) * rows * OC;
      std::vector<uint16_t> inp = random_bf16(n_in, 1), w = random_bf16(size_t(OC) * C, 2), b = random_bf16(OC, 3);
      std::vector<float> inp32 = widened(inp), w32 = widened(w), b32 = widened(b);
      std::vector<uint16_t> out(n_out), pre(n_out), gelu(n_out);
      std::vector<float> out32(n_out), gelu32(n_out);
      p.half.matmul_forward(bf16(out), bf16(inp), bf16(w), bf16(b), B, rows, C, OC);
      p.full.matmul_forward(out32.data(), inp32.data(), w32.data(), b32.data(), B, rows, C, OC);
      CHECK(worst_relative(out, out32, 1e-3) <= 1.0 / 256);
      // The fused forward: pre is the product rounded, GELU of the product before its rounding.
      p.half.matmul_forward_gelu(bf16(gelu), bf16(pre), bf16(inp), bf16(w), bf16(b), B, rows, C, OC);
      CHECK(pre == out);
      p.full.gelu_forward(gelu32.data(), out32.data(), n_out);
      CHECK(worst_relative(gelu, gelu32, 1e-3) <= 1.0 / 256);
    }
    // The backward: exact with its products widened to fp32; with the AVX512-BF16 products (their
    // own sums) within a rounding.
    ProductPaths paths;
    for (bool dp_on : {false, true}) {
      if (dp_on && !paths.dp) continue;
      CAPTURE(dp_on);
      ProductPaths::use(paths.amx, dp_on);
      const auto check = [&](const std::vector<uint16_t>& got, const std::vector<float>& want) {
        if (dp_on) {
          CHECK(worst_relative(got, want, 1e-2) <= 1.0 / 128);
        } else {
          check_exact(got, want);
        }
      };
      const size_t n_in = BTC, n_out = size_t(B) * T * OC;
      std::vector<uint16_t> inp = random_bf16(n_in, 1), w = random_bf16(size_t(OC) * C, 2),
                            dout = random_bf16(n_out, 4);
      std::vector<uint16_t> dinp(n_in), dw = random_bf16(size_t(OC) * C, 5), db = random_bf16(OC, 6);
      std::vector<float> inp32 = widened(inp), w32 = widened(w), dout32 = widened(dout);
      std::vector<float> dinp32(n_in), dw32 = widened(dw), db32 = widened(db);
      p.half.matmul_backward(bf16(dinp), bf16(dw), bf16(db), bf16(dout), bf16(inp), bf16(w), B, T, C, OC);
      p.full.matmul_backward(dinp32.data(), dw32.data(), db32.data(), dout32.data(), inp32.data(), w32.data(), B, T,
                             C, OC);
      check(dinp, dinp32);
      check(dw, dw32);
      check_exact(db, db32);  // the same column sums either way
      // GELU's backward on the product before it is rounded: one rounding, as a fused kernel has.
      std::vector<uint16_t> pre = random_bf16(n_in, 7, 2.0f);
      std::vector<float> pre32 = widened(pre);
      dw32 = widened(dw);  // the weight gradients as the first backward left them (rounded)
      db32 = widened(db);
      p.half.matmul_backward_gelu(bf16(dinp), bf16(dw), bf16(db), bf16(dout), bf16(inp), bf16(w), bf16(pre), B, T,
                                  C, OC);
      p.full.matmul_backward_gelu(dinp32.data(), dw32.data(), db32.data(), dout32.data(), inp32.data(), w32.data(),
                                  pre32.data(), B, T, C, OC);
      check(dinp, dinp32);
      check(dw, dw32);
      check_exact(db, db32);
    }
  }

  SECTION("matmul of more than 32 rows: each path's fp32 results, rounded once into the bf16 tensors") {
    // The AVX512-BF16 products and AMX's forward round straight into a bf16 out (and the former
    // into dinp and dweight): no fp32 copy of them. The bits must be those of the same products'
    // fp32 results rounded afterwards. 40 rows; C and OC past whole tiles and panels, then
    // multiples of 32, which AMX takes.
    const int rows = 20, BT = B * rows;
    for (auto [C2, OC2] : {std::pair{40, 70}, std::pair{64, 96}}) {
      CAPTURE(C2, OC2);
      const size_t n_in = size_t(BT) * C2, n_out = size_t(BT) * OC2, n_w = size_t(OC2) * C2;
      std::vector<uint16_t> inp = random_bf16(n_in, 1), w = random_bf16(n_w, 2), b = random_bf16(OC2, 3),
                            dout = random_bf16(n_out, 4), dw_start = random_bf16(n_w, 5),
                            db_start = random_bf16(OC2, 6);
      const std::vector<float> b32 = widened(b);
      ProductPaths paths;
      for (auto [amx_on, dp_on] : paths.list()) {
        CAPTURE(amx_on, dp_on);
        ProductPaths::use(amx_on, dp_on);
        std::vector<uint16_t> out(n_out);
        std::vector<float> out32(n_out);
        p.half.matmul_forward(bf16(out), bf16(inp), bf16(w), bf16(b), B, rows, C2, OC2);
        cpu::matmul_forward_bf16(out32.data(), inp.data(), w.data(), b32.data(), B, rows, C2, OC2);
        check_exact(out, out32);
        if (!dp_on) continue;  // the backward without them: the widened fp32 backward (above)
        std::vector<uint16_t> dinp(n_in), dw = dw_start, db = db_start;
        std::vector<float> dinp32(n_in), dw32 = widened(dw_start), db32 = widened(db_start);
        p.half.matmul_backward(bf16(dinp), bf16(dw), bf16(db), bf16(dout), bf16(inp), bf16(w), B, rows, C2, OC2);
        cpu::matmul_backward_bf16(dinp32.data(), dw32.data(), db32.data(), dout.data(), inp.data(), w.data(), B,
                                  rows, C2, OC2);
        check_exact(dinp, dinp32);
        check_exact(dw, dw32);
        check_exact(db, db32);
      }
    }
  }

  SECTION("a weight gradient kept in fp32, and an fp32 sum added into a bf16 tensor") {
    // matmul_backward's dweight (and dbias) may be fp32 (core/backend.hpp): the products are added
    // to it unrounded, by whichever product runs (the widened fp32 backward, or AVX512-BF16's fp32
    // form), while dinp is rounded into bf16 as with a bf16 dweight. 40 rows, as above.
    const int rows = 20, C2 = 40, OC2 = 70;
    const size_t n_in = size_t(B) * rows * C2, n_out = size_t(B) * rows * OC2, n_w = size_t(OC2) * C2;
    const std::vector<uint16_t> inp = random_bf16(n_in, 1), w = random_bf16(n_w, 2), dout = random_bf16(n_out, 4);
    std::vector<float> dw_start(n_w);
    for (size_t i = 0; i < n_w; ++i) dw_start[i] = widen_bf16(random_bf16(1, 500 + i)[0]) * (1.0f + 1.0f / 1024);
    ProductPaths paths;
    for (bool dp_on : {false, true}) {
      if (dp_on && !paths.dp) continue;
      CAPTURE(dp_on);
      ProductPaths::use(paths.amx, dp_on);
      std::vector<uint16_t> dinp(n_in);
      std::vector<float> dw = dw_start, dinp32(n_in), dw32 = dw_start;
      // With a bias gradient in fp32 too (a model's fp32 gradients).
      std::vector<float> db(dw_start.begin(), dw_start.begin() + OC2), db32 = db;
      p.half.matmul_backward(bf16(dinp), dw.data(), db.data(), ConstTensorPtr{dout.data(), DType::bf16},
                             ConstTensorPtr{inp.data(), DType::bf16}, ConstTensorPtr{w.data(), DType::bf16}, B, rows,
                             C2, OC2);
      if (dp_on) {
        cpu::matmul_backward_bf16(dinp32.data(), dw32.data(), db32.data(), dout.data(), inp.data(), w.data(), B, rows,
                                  C2, OC2);
      } else {
        p.full.matmul_backward(dinp32.data(), dw32.data(), db32.data(), widened(dout).data(), widened(inp).data(),
                               widened(w).data(), B, rows, C2, OC2);
      }
      check_exact(dinp, dinp32);
      CHECK(dw == dw32);
      CHECK(db == db32);
      // The premise: the sums are fp32's, not rounded to bf16 on the way.
      size_t unrounded = 0;
      for (float x : dw) unrounded += widen_bf16(round_to_bf16(x)) != x;
      CHECK(unrounded > n_w / 2);
    }
    // residual_forward with inp2 in fp32: out = inp1 + inp2, rounded once.
    const std::vector<uint16_t> a = random_bf16(n_w, 7);
    std::vector<uint16_t> out(n_w);
    const std::vector<float> b = dw_start;
    p.half.residual_forward(bf16(out), ConstTensorPtr{a.data(), DType::bf16}, b.data(), n_w);
    std::vector<float> sum(n_w);
    for (size_t i = 0; i < n_w; ++i) sum[i] = widen_bf16(a[i]) + b[i];
    check_exact(out, sum);
  }

  SECTION("fp32 parameter gradients: the encoder's and LayerNorm's sums unrounded") {
    // A bf16 model's gradients kept in fp32 (ModelOptions::fp32_gradients): the fp32 ops' results,
    // bit for bit, from a start bf16 cannot hold (the widened operands are the same values).
    const auto unroundable = [](std::vector<uint16_t> start) {
      std::vector<float> x = widened(start);
      for (float& e : x) e *= 1.0f + 1.0f / 1024;
      return x;
    };
    const std::vector<int> tokens = {3, 7, 3, 0, 10, 3, 7, 7, 1, 3};
    std::vector<uint16_t> dout = random_bf16(BTC, 3);
    std::vector<float> dwte = unroundable(random_bf16(size_t(V) * C, 4)), dwpe = unroundable(random_bf16(T * C, 5));
    std::vector<float> dwte32 = dwte, dwpe32 = dwpe;
    p.half.encoder_backward(dwte.data(), dwpe.data(), bf16(dout), tokens.data(), B, T, C);
    p.full.encoder_backward(dwte32.data(), dwpe32.data(), widened(dout).data(), tokens.data(), B, T, C);
    CHECK(dwte == dwte32);
    CHECK(dwpe == dwpe32);

    std::vector<uint16_t> inp = random_bf16(BTC, 1, 3.0f), w = random_bf16(C, 2), dinp = random_bf16(BTC, 6);
    std::vector<float> mean(B * T), rstd(B * T), out(BTC);
    p.full.layernorm_forward(out.data(), mean.data(), rstd.data(), widened(inp).data(), widened(w).data(),
                             widened(random_bf16(C, 7)).data(), B, T, C);
    std::vector<float> dw = unroundable(random_bf16(C, 8)), db = unroundable(random_bf16(C, 9));
    std::vector<float> dinp32 = widened(dinp), dw32 = dw, db32 = db;
    p.half.layernorm_backward(bf16(dinp), dw.data(), db.data(), bf16(dout), mean.data(), rstd.data(), bf16(inp),
                              bf16(w), B, T, C);
    p.full.layernorm_backward(dinp32.data(), dw32.data(), db32.data(), widened(dout).data(), mean.data(), rstd.data(),
                              widened(inp).data(), widened(w).data(), B, T, C);
    check_exact(dinp, dinp32);
    CHECK(dw == dw32);
    CHECK(db == db32);
  }

  SECTION("attention forward and backward, with dropout") {
    const DropoutParams dropout{0.1f, 77};
    std::vector<uint16_t> qkv = random_bf16(3 * BTC, 1, 2.0f), out(BTC);
    std::vector<float> qkv32 = widened(qkv), out32(BTC), lse(size_t(B) * NH * T), lse32(size_t(B) * NH * T);
    p.half.attention_forward(bf16(out), lse.data(), bf16(qkv), B, T, C, NH, dropout);
    p.full.attention_forward(out32.data(), lse32.data(), qkv32.data(), B, T, C, NH, dropout);
    check_exact(out, out32);
    CHECK(lse == lse32);
    std::vector<uint16_t> dout = random_bf16(BTC, 2), dqkv(3 * BTC);
    std::vector<float> dout32 = widened(dout), dqkv32(3 * BTC), outw = widened(out);
    p.half.attention_backward(bf16(dqkv), bf16(dout), lse.data(), bf16(qkv), bf16(out), B, T, C, NH, dropout);
    p.full.attention_backward(dqkv32.data(), dout32.data(), lse.data(), qkv32.data(), outw.data(), B, T, C, NH,
                              dropout);
    check_exact(dqkv, dqkv32);
  }

  SECTION("KV cache: the store copies bits, the decode within a rounding of fp32's") {
    const int maxT = 8, pos = T;  // a prompt of T tokens stored, then the token at position T
    std::vector<uint16_t> prompt = random_bf16(3 * BTC, 1, 2.0f), kc(size_t(B) * maxT * C), vc(kc.size());
    std::vector<float> prompt32 = widened(prompt), kc32(kc.size()), vc32(kc.size());
    p.half.kv_cache_store(bf16(kc), bf16(vc), bf16(prompt), B, T, maxT, C);
    p.full.kv_cache_store(kc32.data(), vc32.data(), prompt32.data(), B, T, maxT, C);
    CHECK(widened(kc) == kc32);
    CHECK(widened(vc) == vc32);
    std::vector<uint16_t> token = random_bf16(size_t(B) * 3 * C, 2, 2.0f), out(size_t(B) * C);
    std::vector<float> token32 = widened(token), out32(out.size());
    p.half.attention_decode(bf16(out), bf16(kc), bf16(vc), bf16(token), B, pos, maxT, C, NH);
    p.full.attention_decode(out32.data(), kc32.data(), vc32.data(), token32.data(), B, pos, maxT, C, NH);
    CHECK(widened(kc) == kc32);  // the new token's k and v at pos too
    CHECK(widened(vc) == vc32);
    CHECK(worst_relative(out, out32, 1e-2) <= 1.0 / 256);
  }

  SECTION("elementwise ops; the residual backward into one tensor twice") {
    const size_t N = 1000;
    std::vector<uint16_t> a = random_bf16(N, 1, 4.0f), b = random_bf16(N, 2), out(N);
    std::vector<float> a32 = widened(a), b32 = widened(b), out32(N);
    p.half.gelu_forward(bf16(out), bf16(a), N);
    p.full.gelu_forward(out32.data(), a32.data(), N);
    check_exact(out, out32);
    p.half.gelu_backward(bf16(out), bf16(b), bf16(a), N);
    p.full.gelu_backward(out32.data(), b32.data(), a32.data(), N);
    check_exact(out, out32);
    p.half.residual_forward(bf16(out), bf16(a), bf16(b), N);
    p.full.residual_forward(out32.data(), a32.data(), b32.data(), N);
    check_exact(out, out32);
    const DropoutParams dropout{0.25f, 5};
    p.half.dropout_forward(bf16(out), bf16(a), dropout, N);
    p.full.dropout_forward(out32.data(), a32.data(), dropout, N);
    check_exact(out, out32);
    p.half.dropout_backward(bf16(out), bf16(b), dropout, N);
    p.full.dropout_backward(out32.data(), b32.data(), dropout, N);
    check_exact(out, out32);

    std::vector<uint16_t> d1 = random_bf16(N, 3), d2 = random_bf16(N, 4);
    std::vector<float> want1 = widened(d1), want2 = widened(d2);
    p.half.residual_backward(bf16(d1), bf16(d2), bf16(b), N);
    for (size_t i = 0; i < N; ++i) {
      want1[i] += b32[i];
      want2[i] += b32[i];
    }
    check_exact(d1, want1);
    check_exact(d2, want2);
    // The same tensor as both gradients: dout added twice, rounded after each.
    std::vector<uint16_t> both = random_bf16(N, 5);
    std::vector<float> twice = widened(both);
    p.half.residual_backward(bf16(both), bf16(both), bf16(b), N);
    for (size_t i = 0; i < N; ++i) twice[i] = widen_bf16(round_to_bf16(twice[i] + b32[i])) + b32[i];
    check_exact(both, twice);
  }

  SECTION("cross-entropy, its backward in place, and the fused classifier") {
    const std::vector<int> targets = {1, 0, 10, -1, 4, 4, 9, 2, 3, 5};
    std::vector<uint16_t> logits = random_bf16(size_t(B) * T * Vp, 1, 5.0f);
    std::vector<float> logits32 = widened(logits), losses(B * T), losses32(B * T);
    p.half.crossentropy_forward(losses.data(), bf16(logits), targets.data(), B, T, V, Vp);
    p.full.crossentropy_forward(losses32.data(), logits32.data(), targets.data(), B, T, V, Vp);
    CHECK(losses == losses32);
    std::vector<uint16_t> in_place = logits;
    std::vector<float> in_place32 = logits32;
    p.half.crossentropy_backward(bf16(in_place), 0.1f, bf16(in_place), targets.data(), B, T, V, Vp);
    p.full.crossentropy_backward(in_place32.data(), 0.1f, in_place32.data(), targets.data(), B, T, V, Vp);
    check_exact(in_place, in_place32);
    p.half.fused_classifier(bf16(logits), losses.data(), targets.data(), 0.1f, B, T, V, Vp);
    p.full.fused_classifier(logits32.data(), losses32.data(), targets.data(), 0.1f, B, T, V, Vp);
    check_exact(logits, logits32);
    CHECK(losses == losses32);
  }

  SECTION("sum of squares and AdamW, read in place: the fp32 ops' bits, rounded once") {
    // Of bf16 gradients, or of fp32 ones (a bf16 model's fp32 gradients; values bf16 cannot hold).
    const bool fp32_grads = GENERATE(false, true);
    CAPTURE(fp32_grads);
    const size_t N = (size_t{1} << 17) + 4099;  // the sum's chunks of 2^16, and a ragged one
    std::vector<uint16_t> grads = random_bf16(N, 1);
    std::vector<float> grads32 = widened(grads);
    if (fp32_grads)
      for (float& g : grads32) g *= 1.0f + 1.0f / 1024;
    const ConstTensorPtr g = fp32_grads ? ConstTensorPtr(grads32.data()) : ConstTensorPtr(bf16(grads));
    CHECK(p.half.sum_of_squares(g, N) == p.full.sum_of_squares(grads32.data(), N));

    std::vector<float> master = widened(random_bf16(N, 2)), m(N), v(N);
    std::vector<float> master32 = master, m32(N), v32(N);
    std::vector<uint16_t> params(N);
    AdamWParams hp;
    hp.lr = 1e-2f;
    hp.weight_decay = 0.1f;
    hp.grad_scale = 0.5f;
    for (int step = 1; step <= 2; ++step) {
      hp.step = step;
      p.half.adamw_update(master.data(), bf16(params), m.data(), v.data(), g, N, hp);
      p.full.adamw_update(master32.data(), master32.data(), m32.data(), v32.data(), grads32.data(), N, hp);
    }
    CHECK(master == master32);
    CHECK(m == m32);
    CHECK(v == v32);
    check_exact(params, master32);
  }
}
