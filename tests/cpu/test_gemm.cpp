// cpu::gemm_accumulate / gemm_assign and their serial forms (cpu/gemm.hpp), the product under the
// blocked matmul and attention: Cm += A . Bm against a double-precision sum for every operand
// layout the packing routines tell apart (rows contiguous, columns contiguous, neither), on
// shapes that cut register tiles, depth blocks and tasks raggedly; the same bits for any thread
// count and for the serial call, whose blockings differ; and Cm = init + A . Bm with the bits of
// filling Cm with init and accumulating, whatever Cm held before.
#include "common/catch.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cpu/gemm.hpp"
#include "tests/common/test_common.hpp"

using namespace gpt2cc;
using test::expect_close;

namespace {

enum class Layout { kRowsContiguous, kColumnsContiguous, kNeither };

const char* name(Layout layout) {
  switch (layout) {
    case Layout::kRowsContiguous: return "rows contiguous";
    case Layout::kColumnsContiguous: return "columns contiguous";
    case Layout::kNeither: return "neither contiguous";
  }
  return "?";
}

// A rows x cols operand with random values in the given layout; view() reads it in place.
struct Operand {
  std::vector<float> data;
  size_t row_stride = 0, col_stride = 0;

  Operand(int rows, int cols, Layout layout, uint64_t seed) {
    switch (layout) {
      case Layout::kRowsContiguous: row_stride = cols, col_stride = 1; break;
      case Layout::kColumnsContiguous: row_stride = 1, col_stride = rows; break;
      case Layout::kNeither: row_stride = 2 * static_cast<size_t>(cols) + 3, col_stride = 2; break;
    }
    data = test::random_vector(static_cast<size_t>(rows - 1) * row_stride + (cols - 1) * col_stride + 1, seed);
  }
  cpu::StridedMatrix view() const { return {data.data(), row_stride, col_stride}; }
};

}  // namespace

TEST_CASE("gemm_accumulate adds A . B for every operand layout", "[cpu][gemm]") {
  // (M, N, K): single elements, partial 6 x 16 tiles, exact tiles, K over one depth block (256)
  // with a ragged tail, more rows than one A block (384), more columns than one task (2048).
  const std::tuple<int, int, int> shapes[] = {{1, 1, 1},     {7, 17, 9},    {6, 16, 8},   {12, 32, 256},
                                              {13, 33, 300}, {390, 40, 520}, {5, 2100, 20}, {64, 64, 64}};
  const Layout layouts[] = {Layout::kRowsContiguous, Layout::kColumnsContiguous, Layout::kNeither};
  for (auto [M, N, K] : shapes) {
    for (Layout a_layout : layouts) {
      for (Layout b_layout : layouts) {
        CAPTURE(M, N, K, name(a_layout), name(b_layout));
        const Operand A(M, K, a_layout, 11), Bm(K, N, b_layout, 12);
        // Cm starts nonzero (the product adds to it) and has 3 columns more than N, which must
        // stay as they were.
        const size_t ldc = N + 3;
        const std::vector<float> c0 = test::random_vector(M * ldc, 13);
        std::vector<double> expected(c0.begin(), c0.end());
        for (int i = 0; i < M; ++i) {
          for (int j = 0; j < N; ++j) {
            double sum = 0.0;
            for (int k = 0; k < K; ++k) sum += double(A.view().at(i, k)) * Bm.view().at(k, j);
            expected[i * ldc + j] += sum;
          }
        }
        std::vector<float> parallel = c0, serial = c0;
        cpu::gemm_accumulate(parallel.data(), ldc, A.view(), Bm.view(), M, N, K);
        cpu::gemm_accumulate_serial(serial.data(), ldc, A.view(), Bm.view(), M, N, K);
        // fp32 sums of K terms of size <= 1 around values of size ~sqrt(K).
        const double atol = 2e-6 * K;
        const std::vector<double> actual(parallel.begin(), parallel.end());
        expect_close(actual.data(), expected.data(), expected.size(), atol, 1e-5, "gemm_accumulate");
        expect_close(serial, parallel, 0, 0, "gemm_accumulate_serial vs gemm_accumulate");
        for (int i = 0; i < M; ++i) {
          for (size_t j = N; j < ldc; ++j) REQUIRE(parallel[i * ldc + j] == c0[i * ldc + j]);
        }
      }
    }
  }
}

TEST_CASE("gemm_accumulate gives the same bits for any thread count", "[cpu][gemm]") {
  // The thread count changes how the product is cut into tasks (cpu/gemm.cpp, Blocking); the
  // summation order of each element does not depend on it. Shapes of the model's matmuls
  // (activations x W^T, dout x W, dout^T x inp), cut differently for 1, 2, 3 and 5 threads; the
  // last like the classifier's dinp, operands of 12.9M floats: more than kStreamedFloats, which
  // Blocking cuts by another rule.
  struct Case {
    int M, N, K;
    Layout a, b;
  };
  const Case cases[] = {{256, 768, 300, Layout::kRowsContiguous, Layout::kColumnsContiguous},
                        {1000, 130, 256, Layout::kRowsContiguous, Layout::kRowsContiguous},
                        {130, 70, 1000, Layout::kColumnsContiguous, Layout::kRowsContiguous},
                        {40, 5000, 64, Layout::kRowsContiguous, Layout::kColumnsContiguous},
                        {60, 32, 140000, Layout::kRowsContiguous, Layout::kRowsContiguous}};
  const int threads = omp_get_max_threads();
  for (const Case& c : cases) {
    CAPTURE(c.M, c.N, c.K, name(c.a), name(c.b));
    const Operand A(c.M, c.K, c.a, 21), Bm(c.K, c.N, c.b, 22);
    const std::vector<float> c0 = test::random_vector(static_cast<size_t>(c.M) * c.N, 23);
    std::vector<float> serial = c0;
    cpu::gemm_accumulate_serial(serial.data(), c.N, A.view(), Bm.view(), c.M, c.N, c.K);
    for (int n : {1, 2, 3, 5}) {
      omp_set_num_threads(n);
      std::vector<float> result = c0;
      cpu::gemm_accumulate(result.data(), c.N, A.view(), Bm.view(), c.M, c.N, c.K);
      expect_close(result, serial, 0, 0, std::to_string(n) + " threads vs serial");
    }
    omp_set_num_threads(threads);
  }
}

TEST_CASE("gemm_accumulate of an empty product leaves Cm alone", "[cpu][gemm]") {
  std::vector<float> c = test::random_vector(12, 31);
  const std::vector<float> before = c;
  const std::vector<float> a(12, 1.0f), b(12, 1.0f);
  cpu::gemm_accumulate(c.data(), 4, {a.data(), 4, 1}, {b.data(), 4, 1}, 3, 4, 0);  // K = 0
  cpu::gemm_accumulate(c.data(), 4, {a.data(), 4, 1}, {b.data(), 4, 1}, 0, 4, 4);  // M = 0
  cpu::gemm_accumulate_serial(c.data(), 4, {a.data(), 4, 1}, {b.data(), 4, 1}, 3, 0, 4);  // N = 0
  expect_close(c, before, 0, 0, "Cm after empty products");
}

TEST_CASE("gemm_assign writes init + A . B with the bits of filling and accumulating", "[cpu][gemm]") {
  // Ragged tiles and depth blocks (only the first depth block assigns), with and without a
  // per-column init, serial and parallel. Cm starts as NaN where the product writes (assigning
  // must never read it) and keeps its 3 extra columns.
  const std::tuple<int, int, int> shapes[] = {{1, 1, 1}, {7, 17, 9}, {6, 16, 8}, {13, 33, 300}, {390, 40, 520},
                                              {5, 2100, 20}};
  for (auto [M, N, K] : shapes) {
    for (bool with_init : {false, true}) {
      CAPTURE(M, N, K, with_init);
      const Operand A(M, K, Layout::kRowsContiguous, 41), Bm(K, N, Layout::kColumnsContiguous, 42);
      const std::vector<float> init = test::random_vector(N, 43);
      const float* init_or_null = with_init ? init.data() : nullptr;
      const size_t ldc = N + 3;
      const std::vector<float> outside = test::random_vector(M * ldc, 44);
      std::vector<float> expected = outside;
      for (int i = 0; i < M; ++i) {
        for (int j = 0; j < N; ++j) expected[i * ldc + j] = with_init ? init[j] : 0.0f;
      }
      cpu::gemm_accumulate_serial(expected.data(), ldc, A.view(), Bm.view(), M, N, K);
      std::vector<float> parallel = outside;
      for (int i = 0; i < M; ++i) {
        for (int j = 0; j < N; ++j) parallel[i * ldc + j] = std::nanf("");
      }
      std::vector<float> serial = parallel;
      cpu::gemm_assign(parallel.data(), ldc, A.view(), Bm.view(), M, N, K, init_or_null);
      cpu::gemm_assign_serial(serial.data(), ldc, A.view(), Bm.view(), M, N, K, init_or_null);
      expect_close(parallel, expected, 0, 0, "gemm_assign vs fill + gemm_accumulate");
      expect_close(serial, expected, 0, 0, "gemm_assign_serial vs fill + gemm_accumulate");
    }
  }
}

TEST_CASE("gemm_assign of an empty product writes init, or zeros", "[cpu][gemm]") {
  const std::vector<float> init = {1.5f, -2.0f, 3.25f, 0.5f};
  const std::vector<float> a(12, 1.0f), b(12, 1.0f);
  std::vector<float> c(12, std::nanf(""));
  cpu::gemm_assign(c.data(), 4, {a.data(), 4, 1}, {b.data(), 4, 1}, 3, 4, 0, init.data());  // K = 0
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 4; ++j) REQUIRE(c[i * 4 + j] == init[j]);
  }
  std::fill(c.begin(), c.end(), std::nanf(""));
  cpu::gemm_assign_serial(c.data(), 4, {a.data(), 4, 1}, {b.data(), 4, 1}, 3, 4, 0);
  for (float x : c) REQUIRE(x == 0.0f);
  const std::vector<float> before = c;
  cpu::gemm_assign(c.data(), 4, {a.data(), 4, 1}, {b.data(), 4, 1}, 0, 4, 4, init.data());  // M = 0
  cpu::gemm_assign_serial(c.data(), 4, {a.data(), 4, 1}, {b.data(), 4, 1}, 3, 0, 4);        // N = 0
  expect_close(c, before, 0, 0, "Cm after empty assignments");
}

TEST_CASE("the AVX-512 tile gives the AVX2 tile's bits", "[cpu][gemm]") {
  // Each element gets the same FMAs in the same order from either tile (cpu/gemm.hpp); the
  // AVX-512 one is 32 columns wide, so N = 16 and 48 leave it a half-empty tile, 40 and 17 a
  // ragged one. Accumulating and assigning (with and without init), serial and parallel, depth
  // blocks cut raggedly, every layout of both operands, Cm wider than N (its extra columns kept);
  // compared bit for bit (memcmp: -0 is not +0).
  if (!cpu::cpu_has_avx512()) {
    CHECK_THROWS_WITH(cpu::set_gemm_isa(cpu::GemmIsa::avx512), Catch::Contains("no AVX-512"));
    WARN("skipped: this CPU has no AVX-512 (every product here ran the AVX2 tile)");
    return;
  }
  const cpu::GemmIsa default_isa = cpu::gemm_isa();
  CHECK(default_isa == cpu::GemmIsa::avx512);  // the faster one, where the CPU has it
  const std::tuple<int, int, int> shapes[] = {{1, 1, 1},      {7, 17, 9},    {6, 16, 300}, {13, 48, 257},
                                              {390, 40, 520}, {5, 2100, 20}, {64, 96, 64}, {256, 768, 300}};
  const Layout layouts[] = {Layout::kRowsContiguous, Layout::kColumnsContiguous, Layout::kNeither};
  for (auto [M, N, K] : shapes) {
    for (Layout a_layout : layouts) {
      for (Layout b_layout : layouts) {
        CAPTURE(M, N, K, name(a_layout), name(b_layout));
        const Operand A(M, K, a_layout, 51), Bm(K, N, b_layout, 52);
        const size_t ldc = N + 3;
        const std::vector<float> init = test::random_vector(N, 53), c0 = test::random_vector(size_t(M) * ldc, 54);
        std::vector<float> results[2][4];
        for (cpu::GemmIsa isa : {cpu::GemmIsa::avx2, cpu::GemmIsa::avx512}) {
          cpu::set_gemm_isa(isa);
          std::vector<float>* out = results[isa == cpu::GemmIsa::avx512];
          out[0] = out[1] = out[2] = out[3] = c0;
          cpu::gemm_accumulate(out[0].data(), ldc, A.view(), Bm.view(), M, N, K);
          cpu::gemm_accumulate_serial(out[1].data(), ldc, A.view(), Bm.view(), M, N, K);
          cpu::gemm_assign(out[2].data(), ldc, A.view(), Bm.view(), M, N, K, init.data());
          cpu::gemm_assign_serial(out[3].data(), ldc, A.view(), Bm.view(), M, N, K);
        }
        cpu::set_gemm_isa(default_isa);
        const char* what[] = {"gemm_accumulate", "gemm_accumulate_serial", "gemm_assign (init)",
                              "gemm_assign_serial"};
        for (int i = 0; i < 4; ++i) {
          INFO(what[i]);
          CHECK(std::memcmp(results[1][i].data(), results[0][i].data(), c0.size() * sizeof(float)) == 0);
        }
      }
    }
  }
}
