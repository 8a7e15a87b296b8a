// CudaBackend through the Backend interface: the factory, zero-filled allocations, copies,
// the out-of-memory message, and that an op called through the backend runs on its stream in
// order with its copies (a forward then a download sees the result without an explicit sync).
#include <catch2/catch.hpp>

#include "core/backend.hpp"
#include "core/check.hpp"
#include "cpu/gelu.hpp"
#include "cuda_test_util.hpp"
#include "kernels/cuda_check.cuh"

using namespace gpt2cc;

TEST_CASE("make_cuda_backend gives a working cuda backend", "[cuda][backend]") {
  CHECK(cuda_backend_built());
  auto backend = make_cuda_backend(0);
  CHECK(backend->kind() == DeviceKind::cuda);
  CHECK_THAT(backend->describe(), Catch::StartsWith("cuda fp32"));
  CHECK(backend->dtype() == DType::fp32);
  // fp32 always runs the tiled kernels, which save the probabilities.
  CHECK(backend->attention_saved_floats(2, 5, 192, 3, false) == size_t(2) * 3 * 5 * 5);

  const size_t n = 1027;
  DeviceArray<float> a(*backend, n), b(*backend, n);
  std::vector<float> host(n, 1.0f);
  backend->download(host.data(), a.data(), a.bytes());
  for (float x : host) REQUIRE(x == 0.0f);  // allocations are zero-filled

  const auto values = test::random_vector(n, 121, -3.0f, 3.0f);
  backend->upload(a.data(), values.data(), a.bytes());
  backend->copy(b.data(), a.data(), a.bytes());
  backend->download(host.data(), b.data(), b.bytes());
  CHECK(test::bit_equal(host, values));

  backend->gelu_forward(b.data(), a.data(), n);
  std::vector<float> expected(n);
  cpu::gelu_forward(expected.data(), values.data(), n);
  backend->download(host.data(), b.data(), b.bytes());
  test::expect_matches(host, expected, "gelu through the backend");

  backend->zero(b.data(), b.bytes());
  backend->synchronize();
  backend->download(host.data(), b.data(), b.bytes());
  for (float x : host) REQUIRE(x == 0.0f);
}

TEST_CASE("a bf16 cuda backend: flash attention saves the log-sum-exp only, conversions round", "[cuda][backend]") {
  auto backend = make_cuda_backend(0, DType::bf16);
  CHECK(backend->dtype() == DType::bf16);
  CHECK_THAT(backend->describe(), Catch::StartsWith("cuda bf16"));
  CHECK(backend->attention_saved_floats(2, 5, 192, 3, false) == size_t(2) * 3 * 5);      // HS 64: flash
  CHECK(backend->attention_saved_floats(2, 5, 192, 3, true) == size_t(2) * 3 * 5 * 5);   // dropout: tiled
  CHECK(backend->attention_saved_floats(2, 5, 36, 3, false) == size_t(2) * 3 * 5 * 5);   // HS 12: tiled

  // fp32 -> bf16 -> fp32 through the backend: round to nearest even, exact for bf16 values.
  const std::vector<float> values = {1.0f, -2.5f, 3.14159265f, 1e-3f, 65504.0f, 1.00390625f, 1.01171875f};
  const std::vector<float> rounded = {1.0f, -2.5f, 3.140625f, 0.00099945068359375f, 65536.0f, 1.0f, 1.015625f};
  DeviceArray<float> wide(*backend, values.size()), back(*backend, values.size());
  DeviceTensor narrow(*backend, values.size());
  CHECK(narrow.bytes() == values.size() * 2);
  backend->upload(wide.data(), values.data(), wide.bytes());
  backend->convert_from_float(narrow.data(), wide.data(), values.size());
  CHECK(test::bit_equal(download_as_float(*backend, narrow.data(), values.size()), rounded));
  backend->convert_to_float(back.data(), narrow.data(), values.size());
  std::vector<float> host(values.size());
  backend->download(host.data(), back.data(), back.bytes());
  CHECK(test::bit_equal(host, rounded));

  // A tensor of the wrong dtype is refused by name, not reinterpreted.
  CHECK_THROWS_WITH(backend->gelu_forward(wide.data(), wide.data(), values.size()), Catch::Contains("fp32 tensor"));
}

TEST_CASE("cuda backend reports out-of-memory with sizes and a hint", "[cuda][backend]") {
  const DType dtype = GENERATE(DType::fp32, DType::bf16);
  INFO(dtype_name(dtype));
  auto backend = make_cuda_backend(0, dtype);
  const size_t huge = size_t(1) << 50;  // 1 PiB
  CHECK_THROWS_AS(backend->allocate(huge), OutOfMemoryError);
  try {
    backend->allocate(huge);
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("out of memory"));
    CHECK_THAT(msg, Catch::Contains(std::to_string(huge)));
    CHECK_THAT(msg, Catch::Contains("bytes free"));
    CHECK_THAT(msg, Catch::Contains("smaller batch"));
    // bf16 is suggested only to a run that is not in bf16 already.
    CHECK((msg.find("--dtype bf16") != std::string::npos) == (dtype == DType::fp32));
  }
  // Any CUDA or cuBLAS call that could not allocate is an OutOfMemoryError too; other failures not.
  CHECK_THROWS_AS(cuda::fail_cuda(cudaErrorMemoryAllocation, "expr", "file", 1), OutOfMemoryError);
  CHECK_THROWS_AS(cuda::fail_cublas(CUBLAS_STATUS_ALLOC_FAILED, "expr", "file", 1), OutOfMemoryError);
  try {
    cuda::fail_cuda(cudaErrorInvalidValue, "expr", "file", 1);
  } catch (const Error& e) {
    CHECK(dynamic_cast<const OutOfMemoryError*>(&e) == nullptr);
  }
  // The backend still works after the failed allocation.
  DeviceArray<float> ok(*backend, 16);
  std::vector<float> host(16, 1.0f);
  backend->download(host.data(), ok.data(), ok.bytes());
  CHECK(host[0] == 0.0f);
}

TEST_CASE("make_cuda_backend rejects a device that does not exist", "[cuda][backend]") {
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  CHECK_THROWS_AS(make_cuda_backend(count), InputError);
  CHECK_THROWS_WITH(make_cuda_backend(-1), Catch::Contains("does not exist"));
}
