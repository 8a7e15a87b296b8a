// CudaBackend through the Backend interface: the factory (and its refusal of a GPU the build has no
// code for), zero-filled allocations, copies, the out-of-memory message, memory CUDA keeps cached
// handed back before an allocation or a recorded step's launch fails (and by a backend that goes),
// scratch errors that are not out of memory, which recordings the backend keeps, a recording
// abandoned part-way, and that an op called through the backend runs on its stream in order with
// its copies (a forward then a download sees the result without an explicit sync).
#include "common/catch.hpp"

#include <cctype>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "core/check.hpp"
#include "cpu/gelu.hpp"
#include "cuda_test_util.hpp"
#include "kernels/cuda_check.cuh"
#include "kernels/flash_attention.cuh"
#include "kernels/gelu.cuh"
#include "kernels/matmul.cuh"

using namespace gpt2cc;

TEST_CASE("make_cuda_backend gives a working cuda backend", "[cuda][backend]") {
  CHECK(cuda_backend_built());
  auto backend = make_cuda_backend(0);
  CHECK(backend->kind() == DeviceKind::cuda);
  CHECK_THAT(backend->describe(), Catch::StartsWith("cuda fp32"));
  CHECK(backend->dtype() == DType::fp32);
  // Its GPU's UUID as nvidia-smi writes it: GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.
  const std::string uuid = backend->device_uuid();
  REQUIRE(uuid.size() == 40);
  CHECK(uuid.starts_with("GPU-"));
  for (size_t i = 4; i < uuid.size(); ++i)
    CHECK((i == 12 || i == 17 || i == 22 || i == 27 ? uuid[i] == '-' : std::isxdigit(uuid[i]) != 0));
  CHECK(make_cpu_backend(1)->device_uuid().empty());

  const size_t n = 1027;
  DeviceArray<float> a(*backend, n), b(*backend, n);
  std::vector<float> host(n, 1.0f);
  backend->download(host.data(), a.data(), a.bytes());
  for (float x : host) REQUIRE(x == 0.0f);  // allocations are zero-filled

  const auto values = test::random_vector(n, 121, -3.0f, 3.0f);
  backend->upload(a.data(), values.data(), a.bytes());
  backend->copy(b.data(), a.data(), a.bytes());
  backend->download(host.data(), b.data(), b.bytes());
  CHECK(test::same_bits(host, values));

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

TEST_CASE("a bf16 cuda backend: attention saves the log-sum-exp only, conversions round",
          "[cuda][backend][bf16]") {
  auto backend = make_cuda_backend(0, DType::bf16);
  CHECK(backend->dtype() == DType::bf16);
  CHECK_THAT(backend->describe(), Catch::StartsWith("cuda bf16"));
  // fp32 -> bf16 -> fp32 through the backend: round to nearest even, exact for bf16 values.
  const std::vector<float> values = {1.0f, -2.5f, 3.14159265f, 1e-3f, 65504.0f, 1.00390625f, 1.01171875f};
  const std::vector<float> rounded = {1.0f, -2.5f, 3.140625f, 0.00099945068359375f, 65536.0f, 1.0f, 1.015625f};
  DeviceArray<float> wide(*backend, values.size()), back(*backend, values.size());
  DeviceTensor narrow(*backend, values.size());
  CHECK(narrow.bytes() == values.size() * 2);
  backend->upload(wide.data(), values.data(), wide.bytes());
  backend->convert_from_float(narrow.data(), wide.data(), values.size());
  CHECK(test::same_bits(download_as_float(*backend, narrow.data(), values.size()), rounded));
  backend->convert_to_float(back.data(), narrow.data(), values.size());
  std::vector<float> host(values.size());
  backend->download(host.data(), back.data(), back.bytes());
  CHECK(test::same_bits(host, rounded));

  // A tensor of the wrong dtype is refused by name, not reinterpreted.
  CHECK_THROWS_WITH(backend->gelu_forward(wide.data(), wide.data(), values.size()), Catch::Contains("fp32 tensor"));
}

// bf16 compute and flash attention need code for sm_80 or newer (bf16 tensor cores, cp.async). On
// a GPU below it (a T4, sm_75: CTest emu_cuda_model_t4) a bf16 backend is refused, naming the GPU
// and --dtype fp32; on a newer GPU that this build has only older code for (a build for 75 alone:
// emu_cuda_model_sm75_code, which sets GPT2CC_TEST_EXPECT_CODE_BELOW_SM80) bf16 runs on the tiled
// attention and its description says how to get flash. Either way a flash launch is refused by
// name before anything runs: on a GPU its kernels are traps there.
TEST_CASE("bf16 and flash attention where the device runs code older than sm_80: refused by name",
          "[cuda][backend]") {
  cudaDeviceProp prop{};
  REQUIRE(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
  const std::string sm = format("sm_{}{}", prop.major, prop.minor);
  const bool below_sm80 = prop.major < 8 || std::getenv("GPT2CC_TEST_EXPECT_CODE_BELOW_SM80") != nullptr;
  INFO("device 0: " << prop.name << ", " << sm << (below_sm80 ? ", code below sm_80" : ""));
  CHECK(cuda::flash_attention_built_for_device() == !below_sm80);
  CHECK(cuda::flash_attention_fits_device(64) == !below_sm80);  // HS 64 fits every sm_80+ GPU
  CHECK(cuda::flash_attention_forward_fits_device(64) == !below_sm80);
  if (!below_sm80) {
    CHECK_THAT(make_cuda_backend(0, DType::bf16)->describe(), !Catch::Contains("no flash attention"));
    return;
  }
  const int B = 1, T = 4, C = 64, NH = 1;
  test::DeviceBuffer<cuda::bf16> qkv(B * T * 3 * C), out(B * T * C);
  test::DeviceBuffer<float> lse(B * NH * T);
  const std::string why = prop.major < 8 ? "needs a GPU of compute capability 8.0 or newer (cp.async, bf16 mma.sync)"
                                         : "whose code for it is compute_75";
  CHECK_THROWS_WITH(cuda::flash_attention_forward(out.get(), lse.get(), qkv.get(), B, T, C, NH, test::test_stream()),
                    Catch::Contains("flash_attention_forward: flash attention") && Catch::Contains(why) &&
                        Catch::Contains(sm) && Catch::Contains("use the tiled attention"));
  CHECK_THROWS_WITH(cuda::flash_attention_backward(qkv.get(), out.get(), lse.get(), qkv.get(), out.get(), B, T, C, NH,
                                                   test::test_stream()),
                    Catch::Contains("flash_attention_backward: flash attention") && Catch::Contains(why));
  if (prop.major < 8) {
    CHECK_THROWS_AS(make_cuda_backend(0, DType::bf16), InputError);
    CHECK_THROWS_WITH(make_cuda_backend(0, DType::bf16),
                      Catch::Contains("--dtype bf16 needs a GPU of compute capability 8.0 or newer") &&
                          Catch::Contains(sm) && Catch::Contains("use --dtype fp32"));
    CHECK_NOTHROW(make_cuda_backend(0, DType::fp32));
  } else {
    auto backend = make_cuda_backend(0, DType::bf16);
    CHECK_THAT(backend->describe(),
               Catch::Contains(format("this build has no flash attention for it (tiled attention instead): rebuild "
                                      "with -DGPT2CC_CUDA_ARCHITECTURES={}{}",
                                      prop.major, prop.minor)));
  }
}

TEST_CASE("cuda backend reports out-of-memory with sizes and a hint", "[cuda][backend]") {
  const DType dtype = GENERATE(from_range(test::device_dtypes()));
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

// The GEMM workspace (allocated as a backend is made, and grown when a call asks for more): out of
// memory names it, with sizes and, above the default size, the design that asked; the stream
// keeps the workspace it had.
TEST_CASE("a GEMM workspace that does not fit: out of memory naming it, the old one kept", "[cuda][backend]") {
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  const cuda::GemmWorkspaceBuffer old = cuda::gemm_workspace(stream, size_t(1) << 20);
  REQUIRE(old.data != nullptr);
  const size_t huge = size_t(1) << 50;  // 1 PiB
  try {
    cuda::gemm_workspace(stream, huge);
    FAIL("a 1 PiB workspace was allocated");
  } catch (const OutOfMemoryError& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Catch::Contains("CUDA out of memory on device 0: the GEMM workspace (cuBLAS, cuBLASLt) asked for " +
                                    std::to_string(huge) + " bytes (1024.0 TiB)"));
    CHECK_THAT(msg, Catch::Contains("bytes free"));
    CHECK_THAT(msg, Catch::Contains("more than the default 32.0 MiB (GPT2CC_KERNELS=gemm-workspace=256"));
  }
  const cuda::GemmWorkspaceBuffer kept = cuda::gemm_workspace(stream, size_t(1) << 20);
  CHECK(kept.data == old.data);
  CHECK(kept.bytes == old.bytes);
  cuda::release_gemm_workspace(stream);
  REQUIRE(cudaStreamDestroy(stream) == cudaSuccess);
}

// The retry after an allocation ran out of memory: once, after the release; other errors of the
// attempt are returned untouched; a release that fails for another reason is that error.
TEST_CASE("an allocation retried after handing cached memory back", "[cuda][backend][memory]") {
  int attempts = 0, releases = 0;
  const auto fails_then = [&](cudaError_t first, cudaError_t second) {
    return [&, first, second] { return ++attempts == 1 ? first : second; };
  };
  const auto releasing = [&](cudaError_t result) {
    return [&, result](int) {
      ++releases;
      return result;
    };
  };
  SECTION("out of memory, released, then it fits") {
    CHECK(cuda::retry_after_releasing_cache(0, fails_then(cudaErrorMemoryAllocation, cudaSuccess),
                                            releasing(cudaSuccess)) == cudaSuccess);
    CHECK(attempts == 2);
    CHECK(releases == 1);
  }
  SECTION("out of memory twice: reported as such, tried twice only") {
    CHECK(cuda::retry_after_releasing_cache(0, fails_then(cudaErrorMemoryAllocation, cudaErrorMemoryAllocation),
                                            releasing(cudaSuccess)) == cudaErrorMemoryAllocation);
    CHECK(attempts == 2);
  }
  SECTION("another error of the attempt: no release, no retry") {
    CHECK(cuda::retry_after_releasing_cache(0, fails_then(cudaErrorInvalidValue, cudaSuccess),
                                            releasing(cudaSuccess)) == cudaErrorInvalidValue);
    CHECK(attempts == 1);
    CHECK(releases == 0);
  }
  SECTION("the release itself runs out of memory: the attempt's out of memory, no retry") {
    CHECK(cuda::retry_after_releasing_cache(0, fails_then(cudaErrorMemoryAllocation, cudaSuccess),
                                            releasing(cudaErrorMemoryAllocation)) == cudaErrorMemoryAllocation);
    CHECK(attempts == 1);
  }
  SECTION("the release fails for another reason (a fault of earlier work): that error, not out of memory") {
    try {
      cuda::retry_after_releasing_cache(0, fails_then(cudaErrorMemoryAllocation, cudaSuccess),
                                        releasing(cudaErrorLaunchFailure));
      FAIL("the failed release was not reported");
    } catch (const Error& e) {
      CHECK(dynamic_cast<const OutOfMemoryError*>(&e) == nullptr);
      CHECK_THAT(std::string(e.what()), Catch::Contains("cudaErrorLaunchFailure") &&
                                            Catch::Contains("release_cached_memory"));
    }
    CHECK(attempts == 1);
  }
}

// A launch check reads the thread's last error, which may be one an earlier call left behind:
// the message says that, and the check clears it (the next one passes).
TEST_CASE("a launch check reports an error left by earlier work as such", "[cuda][backend]") {
  cudaGetLastError();
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, size_t(1) << 50) == cudaErrorMemoryAllocation);  // left unchecked
  try {
    CUDA_CHECK_LAUNCH();
    FAIL("the launch check missed the pending error");
  } catch (const OutOfMemoryError& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("cudaErrorMemoryAllocation") &&
                                          Catch::Contains("the kernel launch before this line, or earlier work"));
  }
  CHECK_NOTHROW([] { CUDA_CHECK_LAUNCH(); }());
}

namespace {

constexpr size_t kMiB = size_t(1) << 20;

// Device memory CUDA keeps cached for reuse: the default pool's free blocks (reserved, not used)
// and the graph memory reserved for graph launches. cudaMemGetInfo counts both as not free.
size_t cached_device_memory() {
  cudaMemPool_t pool = nullptr;
  REQUIRE(cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess);
  uint64_t pool_reserved = 0, pool_used = 0, graph_reserved = 0;
  REQUIRE(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &pool_reserved) == cudaSuccess);
  REQUIRE(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &pool_used) == cudaSuccess);
  REQUIRE(cudaDeviceGetGraphMemAttribute(0, cudaGraphMemAttrReservedMemCurrent, &graph_reserved) == cudaSuccess);
  return size_t(pool_reserved - pool_used + graph_reserved);
}

// Takes all of the device's free memory but about `left` (cudaMalloc, freed again by release()), so
// that `no_longer_fits` bytes do not fit in what is free: the premise, checked. It takes chunks of
// at most 1 GiB, each no larger than what is free beyond `left` (a GPU may not give all it reports
// free in one allocation), halving them down to 2 MiB, until at most `left` + 2 MiB are free.
//
// What CUDA keeps cached (cached_device_memory) must still be there after the filling, and the
// premise is checked without a cudaMalloc of `no_longer_fits` that the cache could serve: on an
// H200 (CUDA 13.0, driver 580.159.04, 2026-12-04) such a probe succeeded, because a cudaMalloc
// that does not fit in what is free is served by the driver handing cached memory back (16 MiB
// free, 32 MiB cached in the pool, 32 MiB of graph memory: 40 MiB). The probe took away the cache
// whose return the test was to see, and the allocation after it failed. So the premise is
// cudaMemGetInfo's free bytes, and the cached bytes before and after; a probing cudaMalloc only
// where the bytes do not fit even with all of the cache back, freed at once should it succeed (and
// then measured again: a failed cudaMalloc may have taken cache back too). Every other cudaMalloc
// here asks for no more than is free beyond `left`.
class DeviceFiller {
 public:
  DeviceFiller(size_t left, size_t no_longer_fits) {
    size_t total_bytes = 0;
    REQUIRE(cudaMemGetInfo(&free_bytes_, &total_bytes) == cudaSuccess);
    REQUIRE(free_bytes_ > left);
    cudaDeviceProp prop{};
    REQUIRE(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
    // The CPU emulator's device memory is host memory, allocated and filled: keep it small there.
    INFO("on the emulator, run with GPT2CC_EMU_DEVICE_MIB=1024 (as CTest does)");
    REQUIRE((std::string(prop.name).find("gpt2cc CPU emulator") == std::string::npos ||
             free_bytes_ <= (size_t(4) << 30)));
    cached_bytes_ = cached_device_memory();
    constexpr size_t kStep = 2 * kMiB;
    for (size_t chunk = size_t(1) << 30; chunk >= kStep;) {
      REQUIRE(cudaMemGetInfo(&free_bytes_, &total_bytes) == cudaSuccess);
      if (free_bytes_ <= left + kStep) break;
      void* p = nullptr;
      if (free_bytes_ - left >= chunk && cudaMalloc(&p, chunk) == cudaSuccess) {
        blockers_.emplace_back(p);
      } else {
        cudaGetLastError();
        chunk /= 2;
      }
    }
    REQUIRE(cudaMemGetInfo(&free_bytes_, &total_bytes) == cudaSuccess);
    INFO(free_bytes_ << " bytes free, " << cached_bytes_ << " bytes cached before the filling");
    REQUIRE(!blockers_.empty());
    REQUIRE(free_bytes_ < no_longer_fits);
    REQUIRE(cached_device_memory() == cached_bytes_);  // the filling took none of it
    if (free_bytes_ + cached_bytes_ < no_longer_fits) {
      void* probe = nullptr;
      const cudaError_t probed = cudaMalloc(&probe, no_longer_fits);
      if (probed == cudaSuccess) cudaFree(probe);
      cudaGetLastError();
      CHECK(probed == cudaErrorMemoryAllocation);
      REQUIRE(cudaMemGetInfo(&free_bytes_, &total_bytes) == cudaSuccess);
      cached_bytes_ = cached_device_memory();
    }
  }
  // What cudaMemGetInfo reports free after the filling (and probe), and what CUDA kept cached.
  size_t free_bytes() const { return free_bytes_; }
  size_t cached_bytes() const { return cached_bytes_; }
  // Frees the blockers now; whether every cudaFree succeeded (else they go when the filler does,
  // also when a REQUIRE above ended the test).
  bool release() {
    bool ok = true;
    for (auto& p : blockers_) ok = cudaFree(p.release()) == cudaSuccess && ok;
    blockers_.clear();
    return ok;
  }

 private:
  struct CudaFree {
    void operator()(void* p) const { cudaFree(p); }
  };
  size_t free_bytes_ = 0, cached_bytes_ = 0;
  std::vector<std::unique_ptr<void, CudaFree>> blockers_;
};

}  // namespace

// CUDA keeps freed memory cached for reuse: the default pool's blocks (the backend sets its release
// threshold to never) and graph memory (reserved after its launches until cudaDeviceGraphMemTrim).
// cudaMalloc, or a pool that must grow, cannot count on using it (a GPU's driver handed the pool's
// back for a cudaMalloc, DeviceFiller; so does the emulator, and CTest runs these cases a second
// time with that off, GPT2CC_EMU_MALLOC_RECLAIM=none), so an allocation that fits once it is
// handed back must not fail: the backend's allocate and ScratchBuffer hand it back, try once more.
TEST_CASE("cached pool and graph memory goes back before an allocation fails", "[cuda][backend][memory]") {
  auto backend = make_cuda_backend(0, DType::fp32);
  cudaStream_t stream = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  constexpr size_t kCached = 32 * kMiB, kAsk = 40 * kMiB, kLeft = 16 * kMiB;
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
  SECTION("a scratch buffer") {
    cache();
    DeviceFiller filler(kLeft, kAsk);
    CHECK(filler.free_bytes() + filler.cached_bytes() >= kAsk);  // it fits once the cache goes back
    {
      cuda::ScratchBuffer scratch(kAsk, stream);
      CHECK(cudaMemsetAsync(scratch.as<char>(), 0, kAsk, stream) == cudaSuccess);
    }
    CHECK(cudaStreamSynchronize(stream) == cudaSuccess);
    CHECK(filler.release());
  }
  SECTION("a backend allocation") {
    cache();
    DeviceFiller filler(kLeft, kAsk);
    CHECK(filler.free_bytes() + filler.cached_bytes() >= kAsk);
    void* p = nullptr;
    CHECK_NOTHROW(p = backend->allocate(kAsk));
    backend->release(p);
    CHECK(filler.release());
  }
  SECTION("and when even that is not enough: out of memory, with sizes") {
    cache();
    DeviceFiller filler(kLeft, kAsk);
    CHECK(filler.free_bytes() + filler.cached_bytes() < kAsk + 3 * kCached);
    CHECK_THROWS_AS(cuda::ScratchBuffer(kAsk + 3 * kCached, stream), OutOfMemoryError);
    CHECK_THROWS_AS(backend->allocate(kAsk + 3 * kCached), OutOfMemoryError);
    CHECK(filler.release());
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

// A recorded step's scratch is graph memory, which a launch maps when it is not mapped already
// (after a trim): on a full device that launch fails unless the memory CUDA keeps cached goes back
// first, and when even that is not enough, the error says so with the step's scratch. The step:
// matmul_backward_gelu, whose one scratch buffer is dinp's size. What its launch maps is what the
// first launch reserved (the driver may round the scratch up): the device keeps half of that free,
// and the pool caches as much again.
TEST_CASE("a recorded step whose launch finds the device full: cached memory goes back, else out of memory",
          "[cuda][backend][memory]") {
  auto backend = make_cuda_backend(0, DType::fp32);
  constexpr size_t kScratch = 24 * kMiB;
  const int B = 6, T = 1024, C = 1024, OC = 4;
  const size_t N = size_t(B) * T * C;
  REQUIRE(N * sizeof(float) == kScratch);
  DeviceArray<float> dinp(*backend, N), inp(*backend, N), pre(*backend, N), dout(*backend, size_t(B) * T * OC),
      weight(*backend, size_t(OC) * C), dweight(*backend, size_t(OC) * C);
  const auto upload_random = [&](DeviceArray<float>& a, uint64_t seed) {
    const auto values = test::random_vector(a.size(), seed, -2.0f, 2.0f);
    backend->upload(a.data(), values.data(), a.bytes());
  };
  upload_random(inp, 1);
  upload_random(pre, 2);
  upload_random(dout, 3);
  upload_random(weight, 4);
  const auto step = [&] {
    backend->matmul_backward_gelu(dinp.data(), dweight.data(), nullptr, dout.data(), inp.data(), weight.data(),
                                  pre.data(), B, T, C, OC);
  };
  const auto dinp_now = [&] {
    std::vector<float> host(N);
    backend->download(host.data(), dinp.data(), dinp.bytes());
    return host;
  };
  step();
  const std::vector<float> expected = dinp_now();
  REQUIRE(cuda::release_cached_memory(0) == cudaSuccess);  // earlier tests' graph memory: not counted
  REQUIRE(backend->begin_recording());
  step();
  backend->end_recording(7);
  REQUIRE(backend->replay(7));
  backend->synchronize();
  CHECK(test::same_bits(dinp_now(), expected));
  uint64_t reserved = 0;
  REQUIRE(cudaDeviceGetGraphMemAttribute(0, cudaGraphMemAttrReservedMemCurrent, &reserved) == cudaSuccess);
  REQUIRE(reserved >= kScratch);
  const size_t left = reserved / 2, cached = reserved;
  backend->zero(dinp.data(), dinp.bytes());
  // Unmapped again: the next launch must map kScratch. Nothing else cached either (earlier tests
  // in this process share the device's pool and graph memory).
  REQUIRE(cuda::release_cached_memory(0) == cudaSuccess);

  SECTION("the pool's cached memory goes back and the launch succeeds") {
    cudaStream_t stream = nullptr;
    REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
    {
      cuda::ScratchBuffer scratch(cached, stream);  // freed into the default pool, which keeps it
      REQUIRE(cudaMemsetAsync(scratch.as<char>(), 0, cached, stream) == cudaSuccess);
    }
    REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
    DeviceFiller filler(left, reserved);
    CHECK(filler.cached_bytes() >= cached);
    CHECK(filler.free_bytes() + filler.cached_bytes() >= reserved);
    CHECK_NOTHROW(backend->replay(7));
    backend->synchronize();
    CHECK(test::same_bits(dinp_now(), expected));
    CHECK(filler.release());
    REQUIRE(cudaStreamDestroy(stream) == cudaSuccess);
  }
  SECTION("nothing cached: out of memory, naming the graph and its scratch; the backend still works") {
    DeviceFiller filler(left, reserved);
    // It does not fit even with the cache back (little or none): the filler's probe failed.
    CHECK(filler.free_bytes() + filler.cached_bytes() < reserved);
    try {
      backend->replay(7);
      FAIL("a recorded step whose scratch does not fit was launched");
    } catch (const OutOfMemoryError& e) {
      const std::string msg = e.what();
      CHECK_THAT(msg, Catch::Contains("CUDA graph"));
      CHECK_THAT(msg, Catch::Contains(std::to_string(kScratch) + " bytes"));
      CHECK_THAT(msg, Catch::Contains("bytes free"));
      CHECK_THAT(msg, Catch::Contains("smaller batch"));
    }
    CHECK(filler.release());
    CHECK(backend->replay(7));
    backend->synchronize();
    CHECK(test::same_bits(dinp_now(), expected));
  }
}

// The backend keeps a few recordings: a new one beyond that evicts the least recently replayed.
TEST_CASE("a cuda backend keeps the recordings replayed most recently", "[cuda][backend]") {
  auto backend = make_cuda_backend(0, DType::fp32);
  const size_t n = 256;
  DeviceArray<float> inp(*backend, n), out(*backend, n);
  const auto values = test::random_vector(n, 9, -2.0f, 2.0f);
  backend->upload(inp.data(), values.data(), inp.bytes());
  const auto record = [&](uint64_t key) {
    REQUIRE(backend->begin_recording());
    backend->gelu_forward(out.data(), inp.data(), n);
    backend->end_recording(key);
  };
  // It keeps 4 (kernels/backend.cu kMaxGraphs). Least recently replayed first: 1 2 3 4.
  for (uint64_t key = 1; key <= 4; ++key) record(key);
  for (uint64_t key : {2, 1}) REQUIRE(backend->replay(key));  // 3 4 2 1
  record(5);                                                  // 4 2 1 5: the oldest recording, 1, stays
  CHECK_FALSE(backend->replay(3));
  for (uint64_t key : {4, 2, 1, 5}) CHECK(backend->replay(key));
  record(6);  // 2 1 5 6
  CHECK_FALSE(backend->replay(4));
  for (uint64_t key : {2, 1, 5, 6}) CHECK(backend->replay(key));
  // A replay still computes.
  backend->zero(out.data(), out.bytes());
  REQUIRE(backend->replay(6));
  std::vector<float> host(n), expected(n);
  backend->download(host.data(), out.data(), out.bytes());
  cpu::gelu_forward(expected.data(), values.data(), n);
  test::expect_matches(host, expected, "gelu replayed");
}

// A step that throws while it is being recorded (core/model_impl.hpp's recorded_step) leaves the
// backend as it was: abort_recording ends the capture, whether the capture is still valid (the
// error was the host's) or CUDA invalidated it (a call a capture forbids, here a synchronisation),
// keeps nothing of it, and the stream runs ops directly again and records anew.
TEST_CASE("a recording abandoned part-way leaves the backend running ops and recording again", "[cuda][backend]") {
  auto backend = make_cuda_backend(0, DType::fp32);
  const size_t n = 256;
  DeviceArray<float> inp(*backend, n), out(*backend, n);
  const auto values = test::random_vector(n, 11, -2.0f, 2.0f);
  backend->upload(inp.data(), values.data(), inp.bytes());
  std::vector<float> expected(n);
  cpu::gelu_forward(expected.data(), values.data(), n);
  const auto out_now = [&] {
    std::vector<float> host(n);
    backend->download(host.data(), out.data(), out.bytes());
    return host;
  };
  const auto capturing = [&] {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    REQUIRE(cudaStreamIsCapturing(static_cast<cudaStream_t>(backend->stream_handle()), &status) == cudaSuccess);
    return status != cudaStreamCaptureStatusNone;
  };

  REQUIRE(backend->begin_recording());
  backend->gelu_forward(out.data(), inp.data(), n);
  SECTION("the host's error: the capture was still valid") {
    REQUIRE(capturing());
  }
  SECTION("CUDA's error: a synchronisation invalidated the capture") {
    CHECK_THROWS_AS(backend->synchronize(), Error);
    REQUIRE(capturing());  // invalidated, and still to be ended
  }
  backend->abort_recording();
  CHECK_FALSE(capturing());
  CHECK(cudaGetLastError() == cudaSuccess);  // no error left for the next launch check to report
  CHECK_FALSE(backend->replay(1));           // nothing of it was kept

  // The gelu launched during the capture never ran; run directly, it does.
  backend->zero(out.data(), out.bytes());
  backend->gelu_forward(out.data(), inp.data(), n);
  test::expect_matches(out_now(), expected, "gelu run directly after the abandoned recording");

  // And the same step records and replays.
  backend->zero(out.data(), out.bytes());
  REQUIRE(backend->begin_recording());
  backend->gelu_forward(out.data(), inp.data(), n);
  backend->end_recording(1);
  CHECK(test::max_abs(out_now()) == 0.0);  // recorded, not run
  REQUIRE(backend->replay(1));
  test::expect_matches(out_now(), expected, "gelu recorded after the abandoned recording");
}

// A build has code only for the architectures it was compiled for (GPT2CC_CUDA_ARCHITECTURES): on a
// GPU it has none for (no SASS, no PTX that runs there), or whose only code is PTX the driver
// cannot compile (PTX of a newer toolkit than the driver), the backend says so at once, and how to
// rebuild, instead of failing at the first kernel. Whether this build runs on device 0 is found out
// by a kernel launched without the backend; on a GPU it runs on, the backend is made. CTests
// emu_cuda_model_no_kernel_image (an emulated A100 beside the default sm_90 build) and
// emu_cuda_model_ptx_too_new (an emulated H100, a compute_80-only build, a driver older than the
// PTX) set GPT2CC_TEST_EXPECT_NO_KERNEL_IMAGE to 1 or ptx, which requires that refusal.
TEST_CASE("make_cuda_backend on a GPU this build has no code for names it and the rebuild", "[cuda][backend][image]") {
  cudaDeviceProp prop{};
  REQUIRE(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
  const int arch = prop.major * 10 + prop.minor;
  std::string failure;
  try {
    test::DeviceBuffer<float> x(std::vector<float>(64, 0.5f));
    cuda::gelu_forward(x.get(), x.get(), x.size(), test::test_stream());
    CUDA_CHECK(cudaStreamSynchronize(test::test_stream()));
  } catch (const Error& e) {
    failure = e.what();
  }
  cudaGetLastError();
  const bool has_image = failure.empty();
  const bool ptx_refused = failure.find("cudaErrorUnsupportedPtxVersion") != std::string::npos;
  if (!has_image)
    REQUIRE_THAT(failure, Catch::Contains("cudaErrorNoKernelImageForDevice") ||
                              Catch::Contains("cudaErrorInvalidDeviceFunction") ||
                              Catch::Contains("cudaErrorUnsupportedPtxVersion"));
  const char* expect = std::getenv("GPT2CC_TEST_EXPECT_NO_KERNEL_IMAGE");
  if (expect != nullptr) REQUIRE(std::string(expect) == (ptx_refused ? "ptx" : "1"));
  if (expect != nullptr) REQUIRE_FALSE(has_image);
  INFO("device 0: " << prop.name << ", sm_" << arch << (has_image ? "" : ": " + failure));
  if (has_image) {
    CHECK_NOTHROW(make_cuda_backend(0));
    return;
  }
  for (const DType dtype : {DType::fp32, DType::bf16}) {
    try {
      make_cuda_backend(0, dtype);
      FAIL("a cuda backend was made for a GPU this build has no code for");
    } catch (const InputError& e) {
      const std::string msg = e.what();
      CHECK_THAT(msg, Catch::Contains(format("sm_{}", arch)));
      CHECK_THAT(msg, Catch::Contains(format("-DGPT2CC_CUDA_ARCHITECTURES={}", arch)));
      if (ptx_refused) {
        CHECK_THAT(msg, Catch::Contains("the driver cannot load this gpt2cc's code for device 0"));
        CHECK_THAT(msg, Catch::Contains("cudaErrorUnsupportedPtxVersion"));
        CHECK_THAT(msg, Catch::Contains("update the NVIDIA driver"));
      } else {
        CHECK_THAT(msg, Catch::Contains("has no code for device 0"));
      }
    }
  }
}

TEST_CASE("make_cuda_backend rejects a device that does not exist", "[cuda][backend]") {
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  CHECK_THROWS_AS(make_cuda_backend(count), InputError);
  CHECK_THROWS_WITH(make_cuda_backend(-1), Catch::Contains("does not exist"));
}
