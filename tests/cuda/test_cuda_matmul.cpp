// cuda::matmul_forward / matmul_backward (cuBLAS, TF32 off) against cpu::matmul_forward /
// _backward (the plain loops): T = 1, odd sizes, OC not a multiple of 4 (the scalar bias-add
// branch) and a multiple of 4 (the float4 branch), a misaligned output (scalar branch again), no
// bias, GPT-2 sizes. dinp is written (=, poisoned first); dweight and dbias accumulate. The GEMM
// workspace is per stream.
#include "common/catch.hpp"

#include "cpu/matmul.hpp"
#include "cuda_test_util.hpp"
#include "kernels/matmul.cuh"

using namespace gpt2cc;
using test::DeviceBuffer;

namespace {
std::vector<float> doubled(const std::vector<float>& start, const std::vector<float>& once) {
  std::vector<float> r(start.size());
  for (size_t i = 0; i < r.size(); ++i) r[i] = start[i] + 2.0f * (once[i] - start[i]);
  return r;
}
}  // namespace

TEST_CASE("cuda matmul forward and backward match cpu", "[cuda][matmul]") {
  struct Shape {
    int B, T, C, OC;
    bool bias;
  };
  const Shape shape = GENERATE(Shape{1, 1, 1, 1, true}, Shape{1, 1, 5, 7, true}, Shape{3, 5, 13, 64, true},
                               Shape{2, 7, 36, 67, false}, Shape{2, 16, 768, 2304, true}, Shape{1, 33, 3072, 768, true});
  const int B = shape.B, T = shape.T, C = shape.C, OC = shape.OC;
  INFO("B=" << B << " T=" << T << " C=" << C << " OC=" << OC << " bias=" << shape.bias);
  const size_t rows = size_t(B) * T;
  const auto inp = test::random_vector(rows * C, 41);
  const auto weight = test::random_vector(size_t(OC) * C, 42);
  const auto bias = test::random_vector(OC, 43);
  const auto dout = test::random_vector(rows * OC, 44);
  const auto dweight0 = test::random_vector(weight.size(), 45), dbias0 = test::random_vector(OC, 46);
  cudaStream_t stream = test::test_stream();
  const float* bias_host = shape.bias ? bias.data() : nullptr;

  std::vector<float> out(rows * OC);
  cpu::matmul_forward(out.data(), inp.data(), weight.data(), bias_host, B, T, C, OC);
  DeviceBuffer<float> d_inp(inp), d_weight(weight), d_bias(bias), d_out(rows * OC), d_dout(dout);
  d_out.poison();
  cuda::matmul_forward(d_out.get(), d_inp.get(), d_weight.get(), shape.bias ? d_bias.get() : nullptr, B, T, C, OC,
                       stream);
  test::expect_matches(d_out.download(), out, "matmul out", 1e-5);

  std::vector<float> dinp(rows * C), dweight = dweight0, dbias = dbias0;
  cpu::matmul_backward(dinp.data(), dweight.data(), shape.bias ? dbias.data() : nullptr, dout.data(), inp.data(),
                       weight.data(), B, T, C, OC);
  DeviceBuffer<float> d_dinp(rows * C), d_dweight(dweight0), d_dbias(dbias0);
  d_dinp.poison();
  cuda::matmul_backward(d_dinp.get(), d_dweight.get(), shape.bias ? d_dbias.get() : nullptr, d_dout.get(), d_inp.get(),
                        d_weight.get(), B, T, C, OC, stream);
  const auto g_dweight = d_dweight.download(), g_dbias = d_dbias.download();
  test::expect_matches(d_dinp.download(), dinp, "matmul dinp", 1e-5);
  test::expect_matches(g_dweight, dweight, "matmul dweight", 1e-5);
  test::expect_matches(g_dbias, dbias, "matmul dbias", 1e-5);
  if (!shape.bias) CHECK(test::same_bits(g_dbias, dbias0));

  d_dinp.poison();
  cuda::matmul_backward(d_dinp.get(), d_dweight.get(), shape.bias ? d_dbias.get() : nullptr, d_dout.get(), d_inp.get(),
                        d_weight.get(), B, T, C, OC, stream);
  test::expect_matches(d_dinp.download(), dinp, "matmul dinp, second call (written, not accumulated)", 1e-5);
  test::expect_matches(d_dweight.download(), doubled(dweight0, g_dweight), "dweight after two calls", 1e-5);
  test::expect_matches(d_dbias.download(), doubled(dbias0, g_dbias), "dbias after two calls", 1e-5);
}

TEST_CASE("cuda matmul bias add falls back to scalar for a misaligned output", "[cuda][matmul]") {
  const int B = 1, T = 3, C = 8, OC = 16;
  const auto inp = test::random_vector(size_t(B) * T * C, 51);
  const auto weight = test::random_vector(size_t(OC) * C, 52);
  const auto bias = test::random_vector(OC, 53);
  std::vector<float> out(size_t(B) * T * OC);
  cpu::matmul_forward(out.data(), inp.data(), weight.data(), bias.data(), B, T, C, OC);
  DeviceBuffer<float> d_inp(inp), d_weight(weight), d_bias(bias), d_out(out.size() + 1);
  d_out.poison();
  // One float past a 256-byte aligned allocation: OC % 4 == 0 but the rows are not 16-byte aligned.
  cuda::matmul_forward(d_out.get() + 1, d_inp.get(), d_weight.get(), d_bias.get(), B, T, C, OC, test::test_stream());
  const auto all = d_out.download();
  test::expect_matches(std::vector<float>(all.begin() + 1, all.end()), out, "matmul out (misaligned)");
}

TEST_CASE("cuda matmul backward is bit-for-bit repeatable", "[cuda][matmul][determinism]") {
  const int B = 4, T = 64, C = 96, OC = 288;
  const auto inp = test::random_vector(size_t(B) * T * C, 61);
  const auto weight = test::random_vector(size_t(OC) * C, 62);
  const auto dout = test::random_vector(size_t(B) * T * OC, 63);
  DeviceBuffer<float> d_inp(inp), d_weight(weight), d_dout(dout), d_dinp(inp.size()), d_dweight(weight.size()),
      d_dbias(OC);
  std::vector<std::vector<float>> first;
  for (int run = 0; run < 2; ++run) {
    d_dweight.zero();
    d_dbias.zero();
    cuda::matmul_backward(d_dinp.get(), d_dweight.get(), d_dbias.get(), d_dout.get(), d_inp.get(), d_weight.get(), B,
                          T, C, OC, test::test_stream());
    std::vector<std::vector<float>> now{d_dinp.download(), d_dweight.download(), d_dbias.download()};
    if (run == 0) first = now;
    else for (size_t k = 0; k < now.size(); ++k) CHECK(test::same_bits(now[k], first[k]));
  }
}

TEST_CASE("each stream has its own GEMM workspace, released with the stream", "[cuda][matmul]") {
  cudaStream_t a = nullptr, b = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking) == cudaSuccess);
  void* wa = cuda::gemm_workspace(a).data;
  void* wb = cuda::gemm_workspace(b).data;
  CHECK(wa != nullptr);
  CHECK(wb != nullptr);
  CHECK(wa != wb);                              // two streams' GEMMs may overlap: separate workspaces
  CHECK(cuda::gemm_workspace(a).data == wa);    // allocated once per stream
  CHECK(cuda::gemm_workspace(a).bytes == cuda::kGemmWorkspaceBytes);
  cuda::cublas_handle(b);                       // binding the handle to b allocates nothing new
  CHECK(cuda::gemm_workspace(b).data == wb);
  // Asked for more (a GemmWorkspace design), a stream's workspace grows and then serves smaller
  // asks as it is. The one it replaced stays allocated (GEMMs in flight and CUDA graphs captured
  // before use it) until the stream's workspace is released: the device's free memory says so.
  const size_t more = cuda::gemm_workspace_bytes(cuda::GemmWorkspace::k256MiB);
  CHECK(more == size_t{256} << 20);
  CHECK(cuda::gemm_workspace_bytes(cuda::GemmWorkspace::kAuto) == cuda::kGemmWorkspaceBytes);
  const auto free_bytes = [] {
    size_t free = 0, total = 0;
    REQUIRE(cudaMemGetInfo(&free, &total) == cudaSuccess);
    return free;
  };
  const size_t free_before = free_bytes();
  const cuda::GemmWorkspaceBuffer grown = cuda::gemm_workspace(a, more);
  CHECK(grown.bytes == more);
  CHECK(grown.data != wa);
  CHECK(cuda::gemm_workspace(a).data == grown.data);
  CHECK(cuda::gemm_workspace(a).bytes == more);
  CHECK(free_before - free_bytes() >= more);  // the 32 MiB one not freed

  // A GEMM on each stream still matches cpu after the other stream's workspace is released.
  const int B = 2, T = 8, C = 32, OC = 48;
  const auto inp = test::random_vector(size_t(B) * T * C, 71);
  const auto weight = test::random_vector(size_t(OC) * C, 72);
  std::vector<float> expect(size_t(B) * T * OC);
  cpu::matmul_forward(expect.data(), inp.data(), weight.data(), nullptr, B, T, C, OC);
  DeviceBuffer<float> d_inp(inp), d_weight(weight), d_out(expect.size());
  cuda::release_gemm_workspace(b);
  for (cudaStream_t s : {a, b}) {
    d_out.poison();
    cuda::matmul_forward(d_out.get(), d_inp.get(), d_weight.get(), nullptr, B, T, C, OC, s);
    REQUIRE(cudaStreamSynchronize(s) == cudaSuccess);
    test::expect_matches(d_out.download(), expect, s == a ? "out on stream a" : "out on stream b", 1e-5);
  }
  const size_t free_before_release = free_bytes();
  cuda::release_gemm_workspace(a);
  CHECK(free_bytes() - free_before_release >= more + cuda::kGemmWorkspaceBytes);  // both of a's
  cuda::release_gemm_workspace(b);
  cuda::release_gemm_workspace(b);  // releasing twice is harmless
  REQUIRE(cudaStreamDestroy(a) == cudaSuccess);
  REQUIRE(cudaStreamDestroy(b) == cudaSuccess);
}
