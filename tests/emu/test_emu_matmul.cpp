// The linear layer's hand-written kernels (cuda::matmul_internal::add_bias, the bias add after the
// GEMM, and accumulate_column_sums, the deterministic bias gradient: kernels/matmul.cuh; the GEMMs
// are cuBLAS(Lt), checked by emu_cuda_layers) on the CPU emulator against
// cpu::matmul_forward / matmul_backward (the plain loops), with the tolerances
// of tests/cuda/test_cuda_matmul.cpp (fp32 1e-5) and test_bf16_matmul.cpp (bf16 1e-2).
// add_bias: the GEMM output of the CPU without bias, plus the emulated bias add, against the CPU's
// output with bias; both branches (float4: OC % 4 == 0 and aligned; scalar: OC = 7, a buffer offset
// by one float, and every bf16 call). Column sums: rows 1 .. 8300 (one slice to 252 slices of 33
// rows, partial last slices), OC past one block's columns, both branches (16-byte packs: OC a
// multiple of the pack, aligned; element-wise: other OC, or dout offset by one element); dbias
// accumulates (two calls: the gradient doubles).
// Every warp schedule gives the same bits.
// The bf16 launchers' fallback (kernels/matmul_lt.cu), which a GPU test cannot force: the host
// cuBLASLt declining eligible operands in each way cublasLt.h allows (hostcuda/cublaslt_faults.hpp)
// sends the GEMMs to cublasGemmEx plus the bias / GELU kernels, with the results and tolerance of
// test_bf16_matmul.cpp, matmul_path_counts saying so, and the answer cached per shape; with
// GPT2CC_REQUIRE_CUBLASLT=1 the decline is an error naming the shape and the status. And what the
// launchers ask the heuristic: the operands' alignment and the split-K sums the GEMM design allows;
// and that their algorithm cache gives every GEMM an algorithm chosen for it.
#include "common/catch.hpp"
#include <cublasLt.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "cpu/gelu.hpp"
#include "cpu/matmul.hpp"
#include "cuda/matmul_test_util.hpp"
#include "emu/hostcuda/cublaslt_faults.hpp"
#include "emu/layer_test_util.hpp"
#include "kernels/matmul.cuh"

using namespace gpt2cc;
using cuda::matmul_internal::accumulate_column_sums;
using cuda::matmul_internal::add_bias;
using test::bf16;

namespace {

constexpr double kBf16Tol = 1e-2;

template <class Elem>
constexpr double tolerance() {
  return std::is_same_v<Elem, float> ? 1e-5 : kBf16Tol;
}

}  // namespace

TEMPLATE_TEST_CASE("emulated matmul bias add matches cpu", "[emu][matmul]", float, bf16) {
  using Elem = TestType;
  struct Shape {
    int rows, C, OC;
  };
  const Shape s = GENERATE(Shape{1, 1, 1}, Shape{3, 5, 7}, Shape{15, 13, 64}, Shape{33, 9, 300});
  // offset 1 element: the rows are no longer 16-byte aligned and fp32 takes the scalar kernel.
  const int offset = GENERATE(0, 1);
  INFO("rows=" << s.rows << " C=" << s.C << " OC=" << s.OC << " offset=" << offset);
  const size_t n = size_t(s.rows) * s.OC;
  const auto inp = test::round_to_bf16(test::random_vector(size_t(s.rows) * s.C, 41));
  const auto weight = test::round_to_bf16(test::random_vector(size_t(s.OC) * s.C, 42));
  const auto bias = test::round_to_bf16(test::random_vector(s.OC, 43));
  std::vector<float> gemm(n), out(n);
  cpu::matmul_forward(gemm.data(), inp.data(), weight.data(), nullptr, 1, s.rows, s.C, s.OC);
  cpu::matmul_forward(out.data(), inp.data(), weight.data(), bias.data(), 1, s.rows, s.C, s.OC);

  const std::vector<Elem> start = test::as<Elem>(test::padded(gemm, offset));
  const test::DeviceBuffer bias_elem(test::as<Elem>(bias));
  const auto run = [&] {
    test::DeviceBuffer got(start);
    add_bias(got.get() + offset, bias_elem.get(), s.rows, s.OC, test::test_stream());
    return test::widened(got);
  };
  const std::vector<float> all = run();
  test::expect_matches(test::tail(all, n), out, "out + bias", tolerance<Elem>());
  CHECK(std::equal(all.begin(), all.begin() + offset, test::widened(start).begin()));
  test::check_every_schedule(all, run);
}

TEMPLATE_TEST_CASE("emulated matmul bias gradient matches cpu and accumulates", "[emu][matmul]", float, bf16) {
  using Elem = TestType;
  struct Shape {
    int rows, OC;
  };
  const Shape s = GENERATE(Shape{1, 1}, Shape{15, 7}, Shape{64, 300}, Shape{130, 67}, Shape{200, 16}, Shape{97, 264},
                           Shape{8300, 8});
  // offset 1 element: dout's rows are no longer 16-byte aligned (the element-wise kernel).
  const int offset = GENERATE(0, 1);
  INFO("rows=" << s.rows << " OC=" << s.OC << " offset=" << offset);
  const int C = 3;
  const auto inp = test::random_vector(size_t(s.rows) * C, 51);
  const auto weight = test::random_vector(size_t(s.OC) * C, 52);
  const auto dout = test::round_to_bf16(test::random_vector(size_t(s.rows) * s.OC, 53));
  const auto dbias0 = test::round_to_bf16(test::random_vector(s.OC, 54, -0.5f, 0.5f));
  std::vector<float> dinp(size_t(s.rows) * C), dweight(weight.size()), dbias = dbias0;
  cpu::matmul_backward(dinp.data(), dweight.data(), dbias.data(), dout.data(), inp.data(), weight.data(), 1, s.rows, C,
                       s.OC);

  const cudaStream_t stream = test::test_stream();
  const test::DeviceBuffer dout_buffer(test::as<Elem>(test::padded(dout, offset)));
  const Elem* dout_elem = dout_buffer.get() + offset;
  test::DeviceBuffer got(test::as<Elem>(dbias0));
  accumulate_column_sums(got.get(), dout_elem, s.rows, s.OC, stream);
  const std::vector<float> once_f32 = test::widened(got);
  test::expect_matches(once_f32, dbias, "dbias", tolerance<Elem>());
  accumulate_column_sums(got.get(), dout_elem, s.rows, s.OC, stream);
  test::expect_matches(test::widened(got), test::repeated(dbias0, once_f32, 2.0f), "dbias after two calls",
                       tolerance<Elem>());

  test::check_every_schedule(once_f32, [&] {
    test::DeviceBuffer again(test::as<Elem>(dbias0));
    accumulate_column_sums(again.get(), dout_elem, s.rows, s.OC, stream);
    return test::widened(again);
  });
}

namespace {

// A bf16 linear layer of N = B*T rows, every buffer its own allocation (aligned: eligible for
// cuBLASLt when C and OC are multiples of 8), with the CPU's results on the same bf16 inputs:
// out = inp W^T + b, gelu(out), dinp = (dout W) * gelu'(pre_in), dweight = dweight0 + dout^T inp.
struct Bf16Layer {
  Bf16Layer(int B_, int T_, int C_, int OC_) : B(B_), T(T_), C(C_), OC(OC_), N(size_t(B_) * T_) {
    const float w = 2.0f / std::sqrt(static_cast<float>(C));
    inp = test::round_to_bf16(test::random_vector(N * C, 61));
    weight = test::round_to_bf16(test::random_vector(size_t(OC) * C, 62, -w, w));
    bias = test::round_to_bf16(test::random_vector(OC, 63));
    dout = test::round_to_bf16(test::random_vector(N * OC, 64));
    pre_in = test::round_to_bf16(test::random_vector(N * C, 65, -3.0f, 3.0f));
    dweight0 = test::round_to_bf16(test::random_vector(size_t(OC) * C, 66, -0.5f, 0.5f));
    out_ref.resize(N * OC);
    gelu_ref.resize(N * OC);
    cpu::matmul_forward_blocked(out_ref.data(), inp.data(), weight.data(), bias.data(), B, T, C, OC);
    cpu::gelu_forward(gelu_ref.data(), out_ref.data(), gelu_ref.size());
    std::vector<float> dinp_linear(N * C);
    dweight_ref = dweight0;
    cpu::matmul_backward_blocked(dinp_linear.data(), dweight_ref.data(), nullptr, dout.data(), inp.data(),
                                 weight.data(), B, T, C, OC);
    dinp_ref.resize(N * C);
    cpu::gelu_backward(dinp_ref.data(), dinp_linear.data(), pre_in.data(), dinp_ref.size());
  }
  int B, T, C, OC;
  size_t N;
  std::vector<float> inp, weight, bias, dout, pre_in, dweight0, out_ref, gelu_ref, dinp_ref, dweight_ref;
};

struct Bf16Device {
  explicit Bf16Device(const Bf16Layer& L)
      : inp(test::to_bf16(L.inp)), weight(test::to_bf16(L.weight)), bias(test::to_bf16(L.bias)),
        dout(test::to_bf16(L.dout)), pre_in(test::to_bf16(L.pre_in)), dweight(test::to_bf16(L.dweight0)),
        out(test::poisoned<bf16>(L.N * L.OC)), pre(test::poisoned<bf16>(L.N * L.OC)),
        dinp(test::poisoned<bf16>(L.N * L.C)) {}
  test::DeviceBuffer<bf16> inp, weight, bias, dout, pre_in, dweight, out, pre, dinp;
};

// How the host cuBLASLt is told to behave, and which path the launchers must then take.
struct LtBehaviour {
  const char* what;
  hostcuda::CublasLtFault fault;
  size_t algo_workspace;
  bool lt;
};

}  // namespace

TEST_CASE("emulated bf16 matmul takes the plain path where cuBLASLt declines, with the same results",
          "[emu][matmul]") {
  using hostcuda::CublasLtFault;
  const std::vector<LtBehaviour> behaviours{
      {"cuBLASLt accepts", CublasLtFault::none, 0, true},
      {"the algorithm needs all of the 32 MiB workspace", CublasLtFault::none, cuda::kGemmWorkspaceBytes, true},
      {"the algorithm needs more than the workspace", CublasLtFault::none, cuda::kGemmWorkspaceBytes + 1, false},
      {"the heuristic returns NOT_SUPPORTED", CublasLtFault::heuristic_not_supported, 0, false},
      {"the heuristic returns no algorithm", CublasLtFault::heuristic_no_algorithm, 0, false},
      {"the heuristic's result has state NOT_SUPPORTED", CublasLtFault::heuristic_result_state, 0, false},
      {"the heuristic's result needs more workspace than allowed", CublasLtFault::heuristic_over_workspace, 0, false},
      {"cublasLtMatmul returns NOT_SUPPORTED", CublasLtFault::matmul_not_supported, 0, false}};
  const int index = GENERATE(range(0, 8));
  const LtBehaviour& behaviour = behaviours[index];
  // A shape of its own per case: the launchers cache cuBLASLt's answer per shape and epilogue.
  const Bf16Layer L(1, 3, 24, 40 + 8 * index);
  INFO(behaviour.what << " (C=" << L.C << " OC=" << L.OC << ")");
  Bf16Device d(L);
  REQUIRE(cuda::cublaslt_eligible(L.C, L.OC, {d.inp.get(), d.weight.get(), d.bias.get(), d.dout.get(),
                                               d.pre_in.get(), d.dweight.get(), d.out.get(), d.pre.get(),
                                               d.dinp.get()}));
  const cudaStream_t stream = test::test_stream();
  const uint64_t lt = behaviour.lt ? 1 : 0, plain = 1 - lt;

  cuda::reset_matmul_path_counts();
  {
    const hostcuda::CublasLtFaultScope scope(behaviour.fault, behaviour.algo_workspace);
    cuda::matmul_forward(d.out.get(), d.inp.get(), d.weight.get(), d.bias.get(), L.B, L.T, L.C, L.OC, stream);
    test::expect_matches(test::widened(d.out), L.out_ref, "bf16 matmul out", kBf16Tol);
    test::check_matmul_paths(lt, plain, plain);
    d.out.poison();
    cuda::matmul_forward_gelu(d.out.get(), d.pre.get(), d.inp.get(), d.weight.get(), d.bias.get(), L.B, L.T, L.C,
                              L.OC, stream);
    test::expect_matches(test::widened(d.pre), L.out_ref, "bf16 matmul_forward_gelu pre", kBf16Tol);
    test::expect_matches(test::widened(d.out), L.gelu_ref, "bf16 matmul_forward_gelu out", kBf16Tol);
    test::check_matmul_paths(2 * lt, 2 * plain, 2 * plain);
    cuda::matmul_backward_gelu(d.dinp.get(), d.dweight.get(), nullptr, d.dout.get(), d.inp.get(), d.weight.get(),
                               d.pre_in.get(), L.B, L.T, L.C, L.OC, stream);
    test::expect_matches(test::widened(d.dinp), L.dinp_ref, "bf16 matmul_backward_gelu dinp", kBf16Tol);
    test::expect_matches(test::widened(d.dweight), L.dweight_ref, "bf16 matmul_backward_gelu dweight", kBf16Tol);
    test::check_matmul_paths(4 * lt, 4 * plain, 4 * plain);  // dinp and dweight
  }
  // cuBLASLt behaves again, but the shape keeps the path it got: the answer is cached per shape.
  d.out.poison();
  cuda::matmul_forward(d.out.get(), d.inp.get(), d.weight.get(), d.bias.get(), L.B, L.T, L.C, L.OC, stream);
  test::expect_matches(test::widened(d.out), L.out_ref, "bf16 matmul out, again", kBf16Tol);
  test::check_matmul_paths(5 * lt, 5 * plain, 5 * plain);
}

TEST_CASE("GPT2CC_REQUIRE_CUBLASLT=1 makes a GEMM cuBLASLt declines an error naming the shape and the status",
          "[emu][matmul]") {
  test::ScopedEnv require_cublaslt("GPT2CC_REQUIRE_CUBLASLT", std::nullopt);
  const cudaStream_t stream = test::test_stream();
  // Eligible operands, the heuristic declining: an error instead of the plain path.
  const Bf16Layer L(1, 3, 32, 48);
  Bf16Device d(L);
  require_cublaslt.set("1");
  cuda::reset_matmul_path_counts();
  {
    const hostcuda::CublasLtFaultScope scope(hostcuda::CublasLtFault::heuristic_not_supported);
    CHECK_THROWS_WITH(
        cuda::matmul_forward(d.out.get(), d.inp.get(), d.weight.get(), d.bias.get(), L.B, L.T, L.C, L.OC, stream),
        Catch::Contains("GPT2CC_REQUIRE_CUBLASLT=1, but cuBLASLt declined the bf16 GEMM m=48 n=3 k=32 op(A)=T op(B)=N "
                        "epilogue BIAS: cublasLtMatmulAlgoGetHeuristic returned CUBLAS_STATUS_NOT_SUPPORTED"));
  }
  test::check_matmul_paths(0, 0, 0);
  // Operands cuBLASLt cannot take (OC not a multiple of 8) are not a decline: the plain path.
  const Bf16Layer odd(1, 3, 32, 44);
  Bf16Device d_odd(odd);
  cuda::matmul_forward(d_odd.out.get(), d_odd.inp.get(), d_odd.weight.get(), d_odd.bias.get(), odd.B, odd.T, odd.C,
                       odd.OC, stream);
  test::expect_matches(test::widened(d_odd.out), odd.out_ref, "bf16 matmul out, OC = 44", kBf16Tol);
  test::check_matmul_paths(0, 1, 0);
  // 0 is the default; anything but 0 or 1 is rejected when it is read.
  require_cublaslt.set("0");
  cuda::matmul_forward(d.out.get(), d.inp.get(), d.weight.get(), d.bias.get(), L.B, L.T, L.C, L.OC, stream);
  test::expect_matches(test::widened(d.out), L.out_ref, "bf16 matmul out, declined, GPT2CC_REQUIRE_CUBLASLT=0",
                       kBf16Tol);
  test::check_matmul_paths(0, 2, 1);
  require_cublaslt.set("yes");
  CHECK_THROWS_AS(
      cuda::matmul_forward(d.out.get(), d.inp.get(), d.weight.get(), d.bias.get(), L.B, L.T, L.C, L.OC, stream),
      InputError);
  CHECK_THROWS_WITH(
      cuda::matmul_forward(d.out.get(), d.inp.get(), d.weight.get(), d.bias.get(), L.B, L.T, L.C, L.OC, stream),
      "GPT2CC_REQUIRE_CUBLASLT must be 0 or 1, got 'yes'");
}

// What the bf16 launchers ask cuBLASLt's heuristic (kernels/matmul.cuh, GemmAlignment and
// GemmSplitK): by default each operand's own alignment, of its pointer and of its leading
// dimension in bytes, up to 256 (A the weight, B the input, C and D the output of a forward), and
// split-K sums in fp32 only, in a workspace of 32 MiB; gemm-alignment=16 promises 16 bytes of every
// operand, gemm-split-k=any allows every scheme, gemm-workspace=256 offers 256 MiB. Each new
// alignment or design is a question of its own (the answer is cached per key: asking again with
// the same operands does not reach the heuristic).
TEST_CASE("the bf16 launchers tell cuBLASLt's heuristic the operands' alignment and the split-K sums allowed",
          "[emu][matmul]") {
  using cuda::GemmAlignment;
  using cuda::GemmDesign;
  using cuda::GemmSplitK;
  const cudaStream_t stream = test::test_stream();
  // Shapes no other test uses (the launchers' cache lives as long as the process).
  const auto query = [&](const Bf16Layer& L, int inp_offset, const GemmDesign& design, bool asked = true) {
    Bf16Device d(L);
    const test::DeviceBuffer<bf16> inp(test::to_bf16(test::padded(L.inp, inp_offset)));
    const uint64_t before = hostcuda::last_cublaslt_query().count;
    cuda::reset_matmul_path_counts();
    cuda::matmul_forward(d.out.get(), inp.get() + inp_offset, d.weight.get(), d.bias.get(), L.B, L.T, L.C, L.OC,
                         stream, design);
    test::check_matmul_paths(1, 0);
    test::expect_matches(test::widened(d.out), L.out_ref, "bf16 matmul out", kBf16Tol);
    const hostcuda::CublasLtQuery q = hostcuda::last_cublaslt_query();
    CHECK(q.count == before + (asked ? 1 : 0));
    return q;
  };
  const auto alignments = [](const hostcuda::CublasLtQuery& q) {
    return std::vector<uint32_t>(std::begin(q.min_alignment), std::end(q.min_alignment));
  };
  const uint32_t fp32_sums = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE, any_sums = CUBLASLT_REDUCTION_SCHEME_MASK;

  // C = 384 (768-byte rows), OC = 640 (1280 bytes): every operand 256-byte aligned.
  const Bf16Layer L(1, 5, 384, 640);
  hostcuda::CublasLtQuery q = query(L, 0, {});
  CHECK(alignments(q) == std::vector<uint32_t>{256, 256, 256, 256});
  CHECK(q.reduction_scheme_mask == fp32_sums);
  query(L, 0, {}, false);  // the same key: from the cache
  // The input 8 elements (16 bytes) into its allocation: B promised 16, a question of its own.
  q = query(L, 8, {});
  CHECK(alignments(q) == std::vector<uint32_t>{256, 16, 256, 256});
  query(L, 0, {}, false);  // and the aligned key still answers from the cache
  q = query(L, 0, GemmDesign{.alignment = GemmAlignment::k16});
  CHECK(alignments(q) == std::vector<uint32_t>{16, 16, 16, 16});
  CHECK(q.reduction_scheme_mask == fp32_sums);
  CHECK(q.max_workspace_bytes == cuda::kGemmWorkspaceBytes);
  q = query(L, 0, GemmDesign{.split_k = GemmSplitK::kAny});
  CHECK(alignments(q) == std::vector<uint32_t>{256, 256, 256, 256});
  CHECK(q.reduction_scheme_mask == any_sums);
  // gemm-workspace=256: 256 MiB offered, and the stream's workspace grows to it.
  q = query(L, 0, GemmDesign{.workspace = cuda::GemmWorkspace::k256MiB});
  CHECK(q.max_workspace_bytes == size_t{256} << 20);
  CHECK(q.reduction_scheme_mask == fp32_sums);
  CHECK(cuda::gemm_workspace(stream).bytes == size_t{256} << 20);
  // The automatic designs named: the same key as none named.
  query(L, 0, GemmDesign{.alignment = GemmAlignment::kOperand, .split_k = GemmSplitK::kFp32}, false);

  // C = 72: 144-byte rows, so the weight (A) and the input (B) promise 16 whatever their pointers.
  q = query(Bf16Layer(1, 5, 72, 640), 0, {});
  CHECK(alignments(q) == std::vector<uint32_t>{16, 16, 256, 256});
}

// The CUDA backend hands its GPT2CC_KERNELS GEMM designs to every bf16 linear layer it runs:
// forward, backward, and both with the GELU; the default designs without the variable.
TEST_CASE("a bf16 cuda backend asks the heuristic with the GEMM designs GPT2CC_KERNELS names", "[emu][matmul]") {
  test::ScopedEnv kernels("GPT2CC_KERNELS", std::nullopt);
  const int B = 1, T = 3, C = 448, OC = 576;  // rows of 896 and 1152 bytes: 128-byte aligned
  struct Expected {
    const char* designs;
    std::vector<uint32_t> alignments;
    uint32_t reduction_scheme_mask;
    uint64_t max_workspace_bytes;
  };
  for (const Expected& e :
       {Expected{"", {128, 128, 128, 128}, CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE, cuda::kGemmWorkspaceBytes},
        Expected{"gemm-alignment=16,gemm-split-k=any,gemm-workspace=256", {16, 16, 16, 16},
                 CUBLASLT_REDUCTION_SCHEME_MASK, uint64_t{256} << 20}}) {
    INFO("GPT2CC_KERNELS=" << e.designs);
    kernels.set(e.designs);
    const std::unique_ptr<Backend> backend = make_cuda_backend(0, DType::bf16);
    const size_t N = size_t(B) * T;
    DeviceTensor inp(*backend, N * C), weight(*backend, size_t(OC) * C), bias(*backend, OC), out(*backend, N * OC),
        pre(*backend, N * OC), dinp(*backend, N * C), dweight(*backend, size_t(OC) * C), dbias(*backend, OC);
    // Each call's new GEMMs for this design ask the heuristic, with the design's preference: a
    // forward one, the backward two, the GELU backward one (its dweight GEMM is the backward's).
    const auto check_asked = [&](const char* what, uint64_t gemms, const auto& call) {
      INFO(what);
      const uint64_t before = hostcuda::last_cublaslt_query().count;
      call();
      backend->synchronize();
      const hostcuda::CublasLtQuery q = hostcuda::last_cublaslt_query();
      CHECK(q.count == before + gemms);
      CHECK(std::vector<uint32_t>(std::begin(q.min_alignment), std::end(q.min_alignment)) == e.alignments);
      CHECK(q.reduction_scheme_mask == e.reduction_scheme_mask);
      CHECK(q.max_workspace_bytes == e.max_workspace_bytes);
    };
    check_asked("matmul_forward", 1, [&] {
      backend->matmul_forward(out.data(), inp.data(), weight.data(), bias.data(), B, T, C, OC);
    });
    check_asked("matmul_forward_gelu", 1, [&] {
      backend->matmul_forward_gelu(out.data(), pre.data(), inp.data(), weight.data(), bias.data(), B, T, C, OC);
    });
    check_asked("matmul_backward", 2, [&] {
      backend->matmul_backward(dinp.data(), dweight.data(), dbias.data(), out.data(), inp.data(), weight.data(), B, T,
                               C, OC);
    });
    check_asked("matmul_backward_gelu", 1, [&] {
      backend->matmul_backward_gelu(dinp.data(), dweight.data(), dbias.data(), out.data(), inp.data(), weight.data(),
                                    pre.data(), B, T, C, OC);
    });
  }
}

// The launchers cache cuBLASLt's algorithm per key (kernels/matmul_lt.cu, AlgoKey): every field
// the heuristic's answer depends on must be in it, or a GEMM runs an algorithm chosen for another
// problem (on a GPU: slower, or refused, or split-K sums the design does not allow). GEMMs that
// differ from one another in one field each, in turn: after each launch no cublasLtMatmul so far
// ran a foreign algorithm (problem: shape, transposes, epilogue, bias / aux alignment; the
// workspace), and the last one's algorithm was chosen with the preference its design and
// operands call for (operand alignments, split-K sums). A square layer with B*T = C = OC makes
// the forward, dinp and dweight GEMMs differ only in their transposes; the other shapes keep
// rows of a multiple of 128 bytes, so that one dimension alone differs. Each field left out of
// the key fails this test but the epilogue, which no two of the launchers' GEMMs differ in alone
// (the transposes and the bias and aux pointers imply it).
TEST_CASE("the bf16 launchers' algorithm cache gives every GEMM an algorithm chosen for its own problem",
          "[emu][matmul]") {
  using cuda::GemmAlignment;
  using cuda::GemmDesign;
  using cuda::GemmSplitK;
  using cuda::GemmWorkspace;
  const cudaStream_t stream = test::test_stream();
  const int S = 192;  // 384-byte rows: every operand promises 128 bytes
  const Bf16Layer L(1, S, S, S), narrow(1, S, 64, S), short_rows(1, 96, S, S), wide(1, S, S, 320);
  // Each buffer 8 elements (16 bytes) longer, for the offset cases.
  const auto device = [](const std::vector<float>& v) {
    return test::DeviceBuffer<bf16>(test::to_bf16(test::padded(v, 8)));
  };
  const uint32_t fp32_sums = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE, any_sums = CUBLASLT_REDUCTION_SCHEME_MASK;
  const uint64_t default_workspace = cuda::kGemmWorkspaceBytes, big_workspace = uint64_t{256} << 20;
  struct Preference {
    std::vector<uint32_t> alignments;  // A, B, C, D
    uint32_t reduction_scheme_mask;
    uint64_t max_workspace_bytes;
  };
  const Preference usual{{128, 128, 128, 128}, fp32_sums, default_workspace};
  const auto check = [&](const char* what, int gemms, const std::optional<Preference>& preference, auto&& launch) {
    INFO(what);
    const hostcuda::CublasLtMatmulRecord before = hostcuda::last_cublaslt_matmul();
    cuda::reset_matmul_path_counts();
    launch();
    test::check_matmul_paths(gemms, 0);
    const hostcuda::CublasLtMatmulRecord r = hostcuda::last_cublaslt_matmul();
    CHECK(r.count == before.count + gemms);
    CHECK(r.foreign == before.foreign);
    CHECK(r.call == r.algo.problem);
    CHECK(r.call_workspace_bytes == r.algo.max_workspace_bytes);
    if (preference) {
      CHECK(std::vector<uint32_t>(std::begin(r.algo.min_alignment), std::end(r.algo.min_alignment)) ==
            preference->alignments);
      CHECK(r.algo.reduction_scheme_mask == preference->reduction_scheme_mask);
      CHECK(r.algo.max_workspace_bytes == preference->max_workspace_bytes);
    }
  };
  auto inp = device(L.inp), weight = device(L.weight), bias = device(L.bias), dout = device(L.dout),
       pre_in = device(L.pre_in), dweight = device(L.dweight0), out = device(L.out_ref), pre = device(L.out_ref),
       dinp = device(L.inp), dbias = device(L.bias);
  const auto forward = [&](int offset_inp, int offset_weight, int offset_bias, int offset_out, const GemmDesign& design,
                           bool with_bias = true) {
    return [&, offset_inp, offset_weight, offset_bias, offset_out, design, with_bias] {
      cuda::matmul_forward(out.get() + offset_out, inp.get() + offset_inp, weight.get() + offset_weight,
                           with_bias ? bias.get() + offset_bias : nullptr, L.B, L.T, L.C, L.OC, stream, design);
    };
  };
  const auto backward = [&](const GemmDesign& design, bool with_bias) {
    return [&, design, with_bias] {
      cuda::matmul_backward(dinp.get(), dweight.get(), with_bias ? dbias.get() : nullptr, dout.get(), inp.get(),
                            weight.get(), L.B, L.T, L.C, L.OC, stream, design);
    };
  };
  // Transposes and epilogues on one shape.
  check("forward, no bias (epilogue DEFAULT; A transposed)", 1, usual, forward(0, 0, 0, 0, {}, false));
  check("backward, no bias: dinp (no transpose), then dweight (B transposed)", 2, usual, backward({}, false));
  check("forward with the bias epilogue", 1, usual, forward(0, 0, 0, 0, {}));
  check("forward with GELU_AUX_BIAS", 1, usual, [&] {
    cuda::matmul_forward_gelu(out.get(), pre.get(), inp.get(), weight.get(), bias.get(), L.B, L.T, L.C, L.OC, stream);
  });
  check("forward with GELU_AUX_BIAS, the aux output 16 bytes into its buffer", 1, usual, [&] {
    cuda::matmul_forward_gelu(out.get(), pre.get() + 8, inp.get(), weight.get(), bias.get(), L.B, L.T, L.C, L.OC,
                              stream);
  });
  check("backward with DGELU on dinp", 2, usual, [&] {
    cuda::matmul_backward_gelu(dinp.get(), dweight.get(), nullptr, dout.get(), inp.get(), weight.get(), pre_in.get(),
                               L.B, L.T, L.C, L.OC, stream);
  });
  check("backward, the bias gradient by the BGRADB epilogue", 2, usual,
        backward(GemmDesign{.bias_gradient = cuda::BiasGradient::kEpilogue}, true));
  // gelu=separate: the GEMMs without the GELU epilogues (the GELU kernels follow them).
  const GemmDesign separate_gelu{.gelu = cuda::GeluFusion::kSeparate};
  check("forward, gelu=separate: the bias epilogue alone", 1, usual, [&] {
    cuda::matmul_forward_gelu(out.get(), pre.get(), inp.get(), weight.get(), bias.get(), L.B, L.T, L.C, L.OC, stream,
                              separate_gelu);
  });
  CHECK(hostcuda::last_cublaslt_matmul().call.epilogue == CUBLASLT_EPILOGUE_BIAS);
  check("backward, gelu=separate: dinp without DGELU", 2, usual, [&] {
    cuda::matmul_backward_gelu(dinp.get(), dweight.get(), nullptr, dout.get(), inp.get(), weight.get(), pre_in.get(),
                               L.B, L.T, L.C, L.OC, stream, separate_gelu);
  });
  check("forward with GELU_AUX_BIAS again", 1, usual, [&] {
    cuda::matmul_forward_gelu(out.get(), pre.get(), inp.get(), weight.get(), bias.get(), L.B, L.T, L.C, L.OC, stream);
  });
  CHECK(hostcuda::last_cublaslt_matmul().call.epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS);
  // Operand and bias alignments: each pointer 16 bytes into its buffer, then aligned again.
  check("forward, the input (B) 16-byte aligned", 1, Preference{{128, 16, 128, 128}, fp32_sums, default_workspace},
        forward(8, 0, 0, 0, {}));
  check("forward, the weight (A) 16-byte aligned", 1, Preference{{16, 128, 128, 128}, fp32_sums, default_workspace},
        forward(0, 8, 0, 0, {}));
  check("forward, the output (C, D) 16-byte aligned", 1,
        Preference{{128, 128, 16, 16}, fp32_sums, default_workspace}, forward(0, 0, 0, 8, {}));
  check("forward, the bias 16-byte aligned", 1, usual, forward(0, 0, 8, 0, {}));
  check("forward, all aligned again", 1, usual, forward(0, 0, 0, 0, {}));
  // The designs' preferences.
  check("forward, gemm-alignment=16", 1, Preference{{16, 16, 16, 16}, fp32_sums, default_workspace},
        forward(0, 0, 0, 0, GemmDesign{.alignment = GemmAlignment::k16}));
  check("forward, gemm-split-k=any", 1, Preference{{128, 128, 128, 128}, any_sums, default_workspace},
        forward(0, 0, 0, 0, GemmDesign{.split_k = GemmSplitK::kAny}));
  check("forward, gemm-workspace=256", 1, Preference{{128, 128, 128, 128}, fp32_sums, big_workspace},
        forward(0, 0, 0, 0, GemmDesign{.workspace = GemmWorkspace::k256MiB}));
  check("forward, the automatic designs again", 1, usual, forward(0, 0, 0, 0, {}));
  // Shapes: k (C), n (B*T) and m (OC) each changed alone.
  for (const Bf16Layer* other : {&narrow, &short_rows, &wide}) {
    INFO("C=" << other->C << " B*T=" << other->N << " OC=" << other->OC);
    Bf16Device d(*other);
    check("forward of another shape", 1, std::nullopt, [&] {
      cuda::matmul_forward(d.out.get(), d.inp.get(), d.weight.get(), d.bias.get(), other->B, other->T, other->C,
                           other->OC, stream);
    });
  }
  check("forward, the first shape again", 1, usual, forward(0, 0, 0, 0, {}));
}
