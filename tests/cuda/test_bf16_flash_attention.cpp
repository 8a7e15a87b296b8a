// cuda::flash_attention_forward / _backward (bf16, kernels/flash_attention.cuh) against
// cpu::attention_forward / _backward (no dropout) on the same bf16-rounded qkv and dout:
// relative L2 error <= 1e-2 for out and for dq, dk, dv separately; the saved log-sum-exp against
// a double-precision one computed here. Shapes: HS 64 and 128, T = 1, 17, 64, 100, 257 (partial
// last tiles, a 1-row tile), B = 1 and 3, NH = 1, 2, 12, plus larger q, k (peaked softmax, row
// maxima that jump between tiles: the online rescaling). Outputs are poisoned (NaN) so an element
// the kernels forget fails, with a poisoned guard band past each end that must stay untouched (a
// stored masked tail row lands there). For both backward designs (split; fused, whose CTAs add dQ
// in a fixed order through flags) the 64-row resident tile is checked against the CPU and the
// 128-row one must give the same bits (every row meets the same K/V tiles in the same order; T =
// 100 and 257 leave a 128-row tile partly empty). The backward must be bit-for-bit repeatable,
// the fused one also at a GPT-2 shape that keeps every SM busy (where CTAs wait for each other),
// and there match the split one within rounding; bad shapes and misaligned pointers are rejected
// with a message. Shared memory: every tile and design either runs and matches the reference, or,
// exactly where the device's opt-in limit is below what its kernel needs (the byte counts below),
// throws gpt2cc::Error naming the kernel, the bytes and the limit; FlashTile::kAuto runs wherever
// the 64-row tile fits. On a GPU these hold for that GPU; CTest emu_cuda_bf16_rtx4090 runs them on
// an emulated RTX 4090 (99 KiB), where HS 128 does not fit. Against PyTorch's
// scaled_dot_product_attention too (tests/make_sdpa_fixture.py: its float64 result, and no further
// from it than its own bf16 one by more than common/sdpa_fixture.hpp allows).
#include "common/catch.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "bf16_test_util.hpp"
#include "flash_test_util.hpp"
#include "kernels/flash_attention.cuh"

using namespace gpt2cc;
using test::bf16;
using test::DeviceBuffer;

using Shape = test::FlashShape;

namespace {

// What the kernel of a pass needs of one block's shared memory (dynamic + static), in bytes, from
// flash_attention_device.cuh's layouts: resident tiles of rows x (HS+8) bf16, two stages of the
// streamed 64-row tiles, dK/dV's 1 KiB of lse and delta, the fused kernel's dS^T (rows x 72 bf16)
// and its 16 bytes of static shared memory (a 4-byte ticket as ptxas lays it out: CTest
// cuda_kernel_static_smem). A split backward needs its dK/dV kernel's (the larger of its two).
size_t forward_need(int HS, int rows) {
  if (HS == 64) return rows == 64 ? 46080 : 55296;     // 45 / 54 KiB
  return rows == 64 ? 87040 : 104448;                  // 85 / 102 KiB
}
size_t backward_need(int HS, int rows, cuda::FlashBackward design) {
  if (cuda::flash_attention_backward_design(design) == cuda::FlashBackward::kSplit) {
    if (HS == 64) return rows == 64 ? 56320 : 74752;   // 55 / 73 KiB
    return rows == 64 ? 105472 : 140288;               // 103 / 137 KiB
  }
  if (HS == 64) return rows == 64 ? 65552 : 93200;     // 64 / 91 KiB + 16 bytes
  return rows == 64 ? 114704 : 158736;                 // 112 / 155 KiB + 16 bytes
}

cudaDeviceProp device_properties() {
  int device = 0;
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop;
}
// Whether the current device lets a block opt into `bytes` of shared memory.
bool fits(size_t bytes) { return bytes <= device_properties().sharedMemPerBlockOptin; }
int rows_of(cuda::FlashTile tile) { return tile == cuda::FlashTile::kRows128 ? 128 : 64; }

// run() must throw gpt2cc::Error naming the kernel at (HS, rows), the bytes it needs, the
// device's opt-in limit and the device, and the way out (64-row tiles where the pass's 64-row
// kernel, needing need64, fits; else the tiled attention), having launched nothing.
void check_refused(const std::function<void()>& run, const std::string& kernel, int HS, int rows, size_t need,
                   size_t need64) {
  const cudaDeviceProp prop = device_properties();
  try {
    run();
    FAIL("no error, though " << kernel << " needs " << need << " bytes and the device allows "
                             << prop.sharedMemPerBlockOptin);
  } catch (const Error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find(kernel + "<HS " + std::to_string(HS) + ", " + std::to_string(rows) + " rows> needs " +
                    std::to_string(need) + " bytes of shared memory per block, more than the " +
                    std::to_string(prop.sharedMemPerBlockOptin)) != std::string::npos);
    CHECK(what.find(std::string(prop.name) + ", sm_" + std::to_string(prop.major * 10 + prop.minor)) !=
          std::string::npos);
    CHECK(what.find(rows == 128 && fits(need64) ? "64-row tiles" : "the tiled attention") != std::string::npos);
  }
  CHECK(cudaGetLastError() == cudaSuccess);
}

// Random bf16 inputs of one shape (q, k, v ~ U(-1.5, 1.5) from `seed`, dout ~ U(-1, 1) from
// seed + 1) with the forward run on them; backward() runs the backward into a poisoned dqkv and
// returns it.
struct RandomFlash {
  int B, T, NH, C;
  cuda::FlashTile tile;
  cudaStream_t stream = test::test_stream();
  DeviceBuffer<bf16> qkv, dout, out, dqkv;
  DeviceBuffer<float> lse;

  RandomFlash(int B_, int T_, int NH_, int HS, uint64_t seed, cuda::FlashTile tile_)
      : B(B_), T(T_), NH(NH_), C(NH_ * HS), tile(tile_),
        qkv(test::to_bf16(test::random_vector(static_cast<size_t>(B) * T * 3 * C, seed, -1.5f, 1.5f))),
        dout(test::to_bf16(test::random_vector(static_cast<size_t>(B) * T * C, seed + 1))),
        out(dout.size()), dqkv(qkv.size()), lse(static_cast<size_t>(B) * NH * T) {
    cuda::flash_attention_forward(out.get(), lse.get(), qkv.get(), B, T, C, NH, stream, tile);
  }
  std::vector<bf16> backward(cuda::FlashBackward design) {
    dqkv.poison();
    cuda::flash_attention_backward(dqkv.get(), dout.get(), lse.get(), qkv.get(), out.get(), B, T, C, NH, stream,
                                   tile, design);
    return dqkv.download();
  }
};

}  // namespace

TEST_CASE("bf16 flash attention forward and backward match cpu", "[cuda][bf16][flash]") {
  const Shape shape = GENERATE(Shape{1, 1, 1, 64}, Shape{3, 17, 2, 64}, Shape{1, 64, 12, 64}, Shape{3, 100, 1, 64},
                               Shape{1, 257, 2, 64}, Shape{3, 257, 12, 64}, Shape{1, 1, 2, 128},
                               Shape{3, 17, 1, 128}, Shape{1, 64, 2, 128}, Shape{3, 100, 12, 128},
                               Shape{1, 257, 1, 128}, Shape{3, 257, 2, 128}, Shape{2, 257, 2, 64, 4.0f},
                               Shape{3, 100, 2, 128, 4.0f});
  const int B = shape.B, T = shape.T, NH = shape.NH, HS = shape.HS, C = shape.C();
  INFO("B=" << B << " T=" << T << " NH=" << NH << " HS=" << HS << " range=" << shape.range);
  REQUIRE(cuda::flash_attention_supported(HS));
  const test::FlashReference ref = test::flash_reference(shape);

  cudaStream_t stream = test::test_stream();
  auto d_qkv = test::device_bf16(ref.qkv);
  auto d_dout = test::device_bf16(ref.dout);
  // Guard bands of one 128-row tile past each end: where the last tile's rows >= T would go.
  DeviceBuffer<bf16> d_out(shape.out_n() + 128 * static_cast<size_t>(C));
  DeviceBuffer<bf16> d_dqkv(shape.qkv_n() + 128 * 3 * static_cast<size_t>(C));
  DeviceBuffer<float> d_lse(shape.stat_n() + 128);
  for (const cuda::FlashBackward design : {cuda::FlashBackward::kSplit, cuda::FlashBackward::kFused}) {
    std::vector<bf16> out64, dqkv64;
    std::vector<float> lse64;
    for (const cuda::FlashTile tile : {cuda::FlashTile::kRows64, cuda::FlashTile::kRows128}) {
      const bool rows64 = tile == cuda::FlashTile::kRows64;
      // A tile the device cannot hold throws: "... refuses by name" below. (The backward needs more.)
      if (!fits(backward_need(HS, rows_of(tile), design))) continue;
      INFO("resident tile of " << (rows64 ? 64 : 128) << " rows, backward "
                               << cuda::flash_attention_backward_name(design));
      d_out.poison();
      d_lse.poison();
      d_dqkv.poison();
      cuda::flash_attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, stream, tile);
      cuda::flash_attention_backward(d_dqkv.get(), d_dout.get(), d_lse.get(), d_qkv.get(), d_out.get(), B, T, C, NH,
                                     stream, tile, design);
      if (rows64) {
        out64 = d_out.download();
        lse64 = d_lse.download();
        dqkv64 = d_dqkv.download();
        test::check_flash_forward(out64, lse64, shape, ref, "flash");
        test::check_flash_backward(dqkv64, shape, ref, "flash");
      } else {
        CHECK(test::same_bits(d_out.download(), out64));
        CHECK(test::same_bits(d_lse.download(), lse64));
        CHECK(test::same_bits(d_dqkv.download(), dqkv64));
      }
    }
  }
}

// PyTorch's SDPA (tests/make_sdpa_fixture.py): within 1e-2 of its float64 result and no more
// than kTorchBf16ErrorFactor (common/sdpa_fixture.hpp) times as far from it as PyTorch's own
// bf16 SDPA, for either design and each resident tile the device holds.
TEST_CASE("bf16 flash attention matches PyTorch scaled_dot_product_attention", "[cuda][bf16][flash][pytorch]") {
  cudaStream_t stream = test::test_stream();
  for (const test::SdpaCase& c : test::load_sdpa_cases()) {
    const Shape shape = test::sdpa_flash_shape(c);
    const test::FlashReference ref = test::sdpa_flash_reference(c);
    const int B = c.B, T = c.T, NH = c.NH, C = c.C();
    INFO(c.name << ": B=" << B << " T=" << T << " NH=" << NH << " HS=" << c.HS << " range=" << c.range);
    auto d_qkv = test::device_bf16(ref.qkv);
    auto d_dout = test::device_bf16(ref.dout);
    DeviceBuffer<bf16> d_out(shape.out_n()), d_dqkv(shape.qkv_n());
    DeviceBuffer<float> d_lse(shape.stat_n());
    for (const cuda::FlashBackward design : {cuda::FlashBackward::kSplit, cuda::FlashBackward::kFused}) {
      for (const cuda::FlashTile tile : {cuda::FlashTile::kRows64, cuda::FlashTile::kRows128}) {
        if (!fits(backward_need(c.HS, rows_of(tile), design))) continue;
        INFO("backward " << cuda::flash_attention_backward_name(design) << ", " << rows_of(tile) << "-row tiles");
        d_out.poison();
        d_lse.poison();
        d_dqkv.poison();
        cuda::flash_attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, stream, tile);
        cuda::flash_attention_backward(d_dqkv.get(), d_dout.get(), d_lse.get(), d_qkv.get(), d_out.get(), B, T, C,
                                       NH, stream, tile, design);
        const auto out = d_out.download(), dqkv = d_dqkv.download();
        test::check_flash_forward(out, d_lse.download(), shape, ref, "flash");
        test::check_flash_backward(dqkv, shape, ref, "flash");
        test::check_as_accurate_as_torch_bf16(test::from_bf16(out), test::from_bf16(dqkv), c, "flash");
      }
    }
  }
}

TEST_CASE("bf16 flash attention backward is bit-for-bit repeatable", "[cuda][bf16][flash][determinism]") {
  const int HS = GENERATE(64, 128);
  const cuda::FlashBackward design = GENERATE(cuda::FlashBackward::kSplit, cuda::FlashBackward::kFused);
  INFO("HS=" << HS << " backward " << cuda::flash_attention_backward_name(design));
  if (!fits(backward_need(HS, 64, design))) return;  // refused: see "... refuses by name"
  RandomFlash run(2, 193, 3, HS, 31, cuda::FlashTile::kAuto);
  const std::vector<bf16> first = run.backward(design);
  CHECK(test::same_bits(run.backward(design), first));
}

// Thousands of CTAs, a few hundred resident at once: the fused backward's CTAs really wait for
// each other's dQ sums here (a missing wait or fence loses or repeats a part: a different result
// from run to run, and far from the split design's). On the CPU emulator a smaller shape checks
// the same code paths: one block at a time in emu_cuda_bf16, four resident at once (CTAs that
// really wait) in emu_cuda_bf16_resident.
TEST_CASE("bf16 flash attention fused backward at GPT-2 scale: repeatable, and the split one's result",
          "[cuda][bf16][flash][determinism][scale]") {
  const bool emulated = test::on_cpu_emulator();
  const int HS = GENERATE(64, 128);
  const int B = emulated ? 1 : 8, T = emulated ? 320 : 1024, NH = emulated ? 2 : 768 / HS, C = NH * HS;
  const cuda::FlashTile tile = GENERATE(cuda::FlashTile::kRows64, cuda::FlashTile::kRows128);
  INFO("B=" << B << " T=" << T << " NH=" << NH << " HS=" << HS << " tile rows " << rows_of(tile));
  if (!fits(backward_need(HS, rows_of(tile), cuda::FlashBackward::kFused))) return;  // refused (the larger design)
  RandomFlash run(B, T, NH, HS, 41, tile);
  const std::vector<bf16> fused = run.backward(cuda::FlashBackward::kFused);
  for (int again = 1; again < 3; ++again) CHECK(test::same_bits(run.backward(cuda::FlashBackward::kFused), fused));
  const auto got = test::from_bf16(fused), split = test::from_bf16(run.backward(cuda::FlashBackward::kSplit));
  const char* parts[3] = {"dq", "dk", "dv"};
  for (int part = 0; part < 3; ++part)
    test::expect_rel_l2(test::qkv_part(got, B * T, C, part), test::qkv_part(split, B * T, C, part), 1e-2,
                        std::string("fused against split ") + parts[part]);
}

TEST_CASE("bf16 flash attention rejects unsupported shapes and misaligned pointers", "[cuda][bf16][flash]") {
  CHECK(cuda::flash_attention_supported(64));
  CHECK(cuda::flash_attention_supported(128));
  CHECK_FALSE(cuda::flash_attention_supported(32));
  CHECK_FALSE(cuda::flash_attention_supported(80));
  const int B = 1, T = 4;
  DeviceBuffer<bf16> qkv(static_cast<size_t>(B) * T * 3 * 256 + 8), out(static_cast<size_t>(B) * T * 256 + 8);
  DeviceBuffer<float> lse(64);
  cudaStream_t stream = test::test_stream();
  CHECK_THROWS_WITH(cuda::flash_attention_forward(out.get(), lse.get(), qkv.get(), B, T, 96, 3, stream),
                    Catch::Contains("HS = C/NH = 32"));
  CHECK_THROWS_WITH(cuda::flash_attention_forward(out.get(), lse.get(), qkv.get(), B, T, 130, 2, stream),
                    Catch::Contains("HS = C/NH = 65"));
  CHECK_THROWS_WITH(cuda::flash_attention_forward(out.get(), lse.get(), qkv.get(), B, T, 100, 3, stream),
                    Catch::Contains("must divide C"));
  CHECK_THROWS_WITH(cuda::flash_attention_forward(out.get(), lse.get(), qkv.get(), B, -1, 128, 2, stream),
                    Catch::Contains("T >= 0"));
  // An empty batch or sequence is a no-op, like the tiled kernels: nothing launched, nothing written.
  CHECK_NOTHROW(cuda::flash_attention_forward(out.get(), lse.get(), qkv.get(), 0, T, 128, 2, stream));
  CHECK_NOTHROW(cuda::flash_attention_backward(qkv.get(), out.get(), lse.get(), qkv.get(), out.get(), B, 0, 128, 2,
                                               stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  // One bf16 past a 256-byte cudaMalloc boundary: 2-byte aligned, not 16.
  CHECK_THROWS_WITH(cuda::flash_attention_forward(out.get(), lse.get(), qkv.get() + 1, B, T, 128, 2, stream),
                    Catch::Contains("qkv must be 16-byte aligned"));
  CHECK_THROWS_WITH(cuda::flash_attention_forward(out.get() + 1, lse.get(), qkv.get(), B, T, 128, 2, stream),
                    Catch::Contains("out must be 16-byte aligned"));
  CHECK_THROWS_WITH(cuda::flash_attention_backward(qkv.get() + 1, out.get(), lse.get(), qkv.get(), out.get(), B, T,
                                                   128, 2, stream),
                    Catch::Contains("dqkv must be 16-byte aligned"));
  CHECK_THROWS_WITH(cuda::flash_attention_backward(qkv.get(), out.get() + 1, lse.get(), qkv.get(), out.get(), B, T,
                                                   128, 2, stream),
                    Catch::Contains("dout must be 16-byte aligned"));
}

// kAuto: 128 rows where B*NH*ceil(T/128) CTAs still cover the SMs and the device holds the
// pass's 128-row kernel, judged for the forward and each backward design apart.
TEST_CASE("bf16 flash attention takes 128-row tiles when the grid still covers every SM and they fit",
          "[cuda][bf16][flash]") {
  int device = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int HS = GENERATE(64, 128);
  INFO("HS=" << HS);
  CHECK(cuda::flash_attention_forward_tile_rows(cuda::FlashTile::kRows64, 64, 1024, 12 * HS, 12) == 64);
  CHECK(cuda::flash_attention_forward_tile_rows(cuda::FlashTile::kRows128, 1, 1, HS, 1) == 128);
  CHECK(cuda::flash_attention_backward_tile_rows(cuda::FlashTile::kRows128, 1, 1, HS, 1) == 128);
  struct Grid {
    int B, T;
    bool covers_sms;
  };
  // B*ceil(T/128) CTAs of 128 rows (NH = 1) against the SM count, on both sides of it.
  for (const Grid g : {Grid{sms, 128, true}, Grid{sms, 129, true}, Grid{sms - 1, 128, false},
                       Grid{1, 128 * sms, true}, Grid{1, 128 * (sms - 1), false}}) {
    INFO("B=" << g.B << " T=" << g.T);
    CHECK(cuda::flash_attention_forward_tile_rows(cuda::FlashTile::kAuto, g.B, g.T, HS, 1) ==
          (g.covers_sms && fits(forward_need(HS, 128)) ? 128 : 64));
    for (const cuda::FlashBackward design : {cuda::FlashBackward::kSplit, cuda::FlashBackward::kFused})
      CHECK(cuda::flash_attention_backward_tile_rows(cuda::FlashTile::kAuto, g.B, g.T, HS, 1, design) ==
            (g.covers_sms && fits(backward_need(HS, 128, design)) ? 128 : 64));
  }
}

// Every tile and design at both head sizes: it runs and matches the reference, or, exactly when
// the device's opt-in limit is below the kernel's need, it is refused by name before anything is
// launched. kAuto must run wherever the 64-row tile fits (here on a grid of one CTA per SM, where
// the SM count alone would take 128 rows). GPT2CC_TEST_EXPECT_SHARED_OPTIN, when set, is the limit
// the device must have (the CTest on an emulated RTX 4090 sets it, so it cannot pass on another).
TEST_CASE("bf16 flash attention runs each tile the device holds and refuses the others by name",
          "[cuda][bf16][flash][fit]") {
  const cudaDeviceProp prop = device_properties();
  INFO("device " << prop.name << ", sm_" << prop.major << prop.minor << ", opt-in limit "
                 << prop.sharedMemPerBlockOptin << " bytes");
  if (const char* want = std::getenv("GPT2CC_TEST_EXPECT_SHARED_OPTIN"))
    REQUIRE(prop.sharedMemPerBlockOptin == std::stoull(want));
  const int HS = GENERATE(64, 128);
  CHECK(cuda::flash_attention_forward_fits_device(HS) == fits(forward_need(HS, 64)));
  for (const cuda::FlashBackward design : {cuda::FlashBackward::kAuto, cuda::FlashBackward::kSplit,
                                           cuda::FlashBackward::kFused})
    CHECK(cuda::flash_attention_fits_device(HS, design) ==
          (fits(forward_need(HS, 64)) && fits(backward_need(HS, 64, design))));
  CHECK_FALSE(cuda::flash_attention_fits_device(96));
  CHECK_FALSE(cuda::flash_attention_forward_fits_device(96));

  cudaStream_t stream = test::test_stream();
  const auto run_case = [&](const Shape& shape, cuda::FlashTile tile, const char* what) {
    const int B = shape.B, T = shape.T, NH = shape.NH, C = shape.C();
    INFO(what << ": B=" << B << " T=" << T << " NH=" << NH << " HS=" << HS);
    const test::FlashReference ref = test::flash_reference(shape);
    auto d_qkv = test::device_bf16(ref.qkv);
    auto d_dout = test::device_bf16(ref.dout);
    DeviceBuffer<bf16> d_out(shape.out_n() + 128 * static_cast<size_t>(C));
    DeviceBuffer<bf16> d_dqkv(shape.qkv_n() + 128 * 3 * static_cast<size_t>(C));
    DeviceBuffer<float> d_lse(shape.stat_n() + 128);
    d_out.poison();
    d_lse.poison();
    const int fwd_rows = cuda::flash_attention_forward_tile_rows(tile, B, T, C, NH);
    // kAuto takes a tile the device holds wherever the 64-row one fits.
    if (tile == cuda::FlashTile::kAuto && fits(forward_need(HS, 64))) CHECK(fits(forward_need(HS, fwd_rows)));
    const auto forward = [&] {
      cuda::flash_attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, stream, tile);
    };
    if (!fits(forward_need(HS, fwd_rows))) {
      check_refused(forward, "flash_attention_forward_kernel", HS, fwd_rows, forward_need(HS, fwd_rows),
                    forward_need(HS, 64));
      return;
    }
    forward();
    test::check_flash_forward(d_out.download(), d_lse.download(), shape, ref, what);
    for (const cuda::FlashBackward design : {cuda::FlashBackward::kSplit, cuda::FlashBackward::kFused}) {
      INFO("backward " << cuda::flash_attention_backward_name(design));
      const int rows = cuda::flash_attention_backward_tile_rows(tile, B, T, C, NH, design);
      const size_t need = backward_need(HS, rows, design), need64 = backward_need(HS, 64, design);
      if (tile == cuda::FlashTile::kAuto && fits(need64)) CHECK(fits(need));
      d_dqkv.poison();
      const auto backward = [&] {
        cuda::flash_attention_backward(d_dqkv.get(), d_dout.get(), d_lse.get(), d_qkv.get(), d_out.get(), B, T, C,
                                       NH, stream, tile, design);
      };
      if (!fits(need)) {
        check_refused(backward,
                      design == cuda::FlashBackward::kSplit ? "flash_attention_backward_dkdv_kernel"
                                                            : "flash_attention_backward_fused_kernel",
                      HS, rows, need, need64);
        continue;
      }
      backward();
      test::check_flash_backward(d_dqkv.download(), shape, ref, what);
    }
  };
  run_case(Shape{2, 65, 2, HS}, cuda::FlashTile::kRows64, "64-row tiles");
  run_case(Shape{2, 65, 2, HS}, cuda::FlashTile::kRows128, "128-row tiles");
  run_case(Shape{prop.multiProcessorCount, 3, 1, HS}, cuda::FlashTile::kAuto, "kAuto, one CTA per SM");
}
