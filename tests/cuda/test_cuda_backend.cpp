// CudaBackend through the Backend interface: the factory, zero-filled allocations, copies,
// the out-of-memory message, memory CUDA keeps cached handed back before an allocation fails (and
// by a backend that goes), scratch errors that are not out of memory, and that an op called
// through the backend runs on its stream in order with its copies (a forward then a download sees
// the result without an explicit sync).
#include <catch2/catch.hpp>

#include <string>

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

// CUDA keeps freed memory cached for reuse: the default pool's blocks (the backend sets its release
// threshold to never) and graph memory (reserved after its launches until cudaDeviceGraphMemTrim).
// cudaMalloc, or a pool that must grow, cannot use it, so an allocation that fits once it is handed
// back must not fail: the backend's allocate and ScratchBuffer hand it back and try once more.
TEST_CASE("cached pool and graph memory goes back before an allocation fails", "[cuda][backend][memory]") {
  auto backend = make_cuda_backend(0, DType::fp32);
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  constexpr size_t kMiB = size_t(1) << 20, kCached = 32 * kMiB, kAsk = 40 * kMiB, kLeft = 16 * kMiB;
  cudaMemPool_t pool = nullptr;
  REQUIRE(cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  // kCached left in the pool by a direct ScratchBuffer, kCached of graph memory reserved by the
  // launch of a recorded one (the graph kept, idle).
  const auto cache = [&] {
    {
      cuda::ScratchBuffer direct(kCached, stream);
      REQUIRE(cudaMemsetAsync(direct.as<char>(), 0, kCached, stream) == cudaSuccess);
    }
    cudaGraph_t graph = nullptr;
    REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    {
      cuda::ScratchBuffer recorded(kCached, stream);
      REQUIRE(cudaMemsetAsync(recorded.as<char>(), 0, kCached, stream) == cudaSuccess);
    }
    REQUIRE(cudaStreamEndCapture(stream, &graph) == cudaSuccess);
    REQUIRE(cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
    REQUIRE(cudaGraphDestroy(graph) == cudaSuccess);
    REQUIRE(cudaGraphLaunch(exec, stream) == cudaSuccess);
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
    uint64_t pool_reserved = 0, pool_used = 0, graph_reserved = 0;
    REQUIRE(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &pool_reserved) == cudaSuccess);
    REQUIRE(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &pool_used) == cudaSuccess);
    REQUIRE(cudaDeviceGetGraphMemAttribute(0, cudaGraphMemAttrReservedMemCurrent, &graph_reserved) == cudaSuccess);
    CHECK(pool_reserved - pool_used >= kCached);
    CHECK(graph_reserved >= kCached);
  };
  // All of the device's free memory but kLeft, taken by cudaMalloc: kAsk no longer fits beside the
  // cached memory (the premise, checked), and fits once it is handed back.
  const auto fill = [&] {
    size_t free_bytes = 0, total_bytes = 0;
    REQUIRE(cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess);
    REQUIRE(free_bytes > kLeft);
    cudaDeviceProp prop{};
    REQUIRE(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
    // The CPU emulator's device memory is host memory, allocated and filled: keep it small there.
    INFO("on the emulator, run with GPT2CC_EMU_DEVICE_MIB=1024 (as CTest does)");
    REQUIRE((std::string(prop.name) != "gpt2cc CPU emulator" || free_bytes <= (size_t(4) << 30)));
    void* blocker = nullptr;
    REQUIRE(cudaMalloc(&blocker, free_bytes - kLeft) == cudaSuccess);
    void* probe = nullptr;
    CHECK(cudaMalloc(&probe, kAsk) == cudaErrorMemoryAllocation);
    cudaGetLastError();
    return blocker;
  };

  SECTION("a scratch buffer") {
    cache();
    void* blocker = fill();
    {
      cuda::ScratchBuffer scratch(kAsk, stream);
      CHECK(cudaMemsetAsync(scratch.as<char>(), 0, kAsk, stream) == cudaSuccess);
    }
    CHECK(cudaStreamSynchronize(stream) == cudaSuccess);
    CHECK(cudaFree(blocker) == cudaSuccess);
  }
  SECTION("a backend allocation") {
    cache();
    void* blocker = fill();
    void* p = nullptr;
    CHECK_NOTHROW(p = backend->allocate(kAsk));
    backend->release(p);
    CHECK(cudaFree(blocker) == cudaSuccess);
  }
  SECTION("and when even that is not enough: out of memory, with sizes") {
    cache();
    void* blocker = fill();
    CHECK_THROWS_AS(cuda::ScratchBuffer(kAsk + 3 * kCached, stream), OutOfMemoryError);
    CHECK_THROWS_AS(backend->allocate(kAsk + 3 * kCached), OutOfMemoryError);
    CHECK(cudaFree(blocker) == cudaSuccess);
  }
  cudaGraphExecDestroy(exec);
  REQUIRE(cudaStreamDestroy(stream) == cudaSuccess);
}

// cudaMallocAsync also returns errors that have nothing to do with memory (of earlier asynchronous
// work, of an invalidated capture): those are CUDA errors, not "out of memory, try a smaller batch".
TEST_CASE("a scratch allocation that fails for another reason is not called out of memory", "[cuda][backend]") {
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  CHECK(cudaStreamSynchronize(stream) != cudaSuccess);  // not allowed in a capture: invalidates it
  try {
    cuda::ScratchBuffer scratch(1024, stream);
    FAIL("a scratch buffer was allocated in an invalidated capture");
  } catch (const Error& e) {
    CHECK(dynamic_cast<const OutOfMemoryError*>(&e) == nullptr);
    CHECK_THAT(std::string(e.what()), Catch::Contains("cudaErrorStreamCaptureInvalidated") &&
                                          Catch::Contains("cudaMallocAsync"));
  }
  cudaGraph_t graph = nullptr;
  CHECK(cudaStreamEndCapture(stream, &graph) == cudaErrorStreamCaptureInvalidated);
  if (graph != nullptr) cudaGraphDestroy(graph);
  cudaGetLastError();
  REQUIRE(cudaStreamDestroy(stream) == cudaSuccess);
}

// A backend hands back the graph memory of the steps it recorded when it goes (graph memory stays
// reserved past its graphs until trimmed): a recorded LayerNorm backward, whose partial sums are
// scratch, is graph memory at its replay.
TEST_CASE("a cuda backend's recorded graphs leave no graph memory reserved behind it", "[cuda][backend][memory]") {
  const int B = 4, T = 64, C = 256;
  const size_t N = size_t(B) * T * C;
  uint64_t graph_reserved = 0;
  {
    auto backend = make_cuda_backend(0, DType::fp32);
    DeviceArray<float> dinp(*backend, N), dout(*backend, N), inp(*backend, N), weight(*backend, C),
        dweight(*backend, C), dbias(*backend, C), mean(*backend, size_t(B) * T), rstd(*backend, size_t(B) * T);
    REQUIRE(backend->begin_recording());
    backend->layernorm_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), mean.data(), rstd.data(),
                                inp.data(), weight.data(), B, T, C);
    backend->end_recording(1);
    REQUIRE(backend->replay(1));
    backend->synchronize();
    REQUIRE(cudaDeviceGetGraphMemAttribute(0, cudaGraphMemAttrReservedMemCurrent, &graph_reserved) == cudaSuccess);
    CHECK(graph_reserved > 0);  // the premise: the replay reserved graph memory
  }
  REQUIRE(cudaDeviceGetGraphMemAttribute(0, cudaGraphMemAttrReservedMemCurrent, &graph_reserved) == cudaSuccess);
  CHECK(graph_reserved == 0);
}

TEST_CASE("make_cuda_backend rejects a device that does not exist", "[cuda][backend]") {
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  CHECK_THROWS_AS(make_cuda_backend(count), InputError);
  CHECK_THROWS_WITH(make_cuda_backend(-1), Catch::Contains("does not exist"));
}
