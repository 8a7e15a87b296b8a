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
// with a message.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
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
    cuda::flash_attention_backward(dqkv.get(), dout.get(), lse.get(), out.get(), qkv.get(), B, T, C, NH, stream,
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
      INFO("resident tile of " << (rows64 ? 64 : 128) << " rows, backward "
                               << cuda::flash_attention_backward_name(design));
      d_out.poison();
      d_lse.poison();
      d_dqkv.poison();
      cuda::flash_attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, stream, tile);
      cuda::flash_attention_backward(d_dqkv.get(), d_dout.get(), d_lse.get(), d_out.get(), d_qkv.get(), B, T, C, NH,
                                     stream, tile, design);
      if (rows64) {
        out64 = d_out.download();
        lse64 = d_lse.download();
        dqkv64 = d_dqkv.download();
        test::check_flash_forward(out64, lse64, shape, ref, "flash");
        test::check_flash_backward(dqkv64, shape, ref, "flash");
      } else {
        CHECK(test::bits_equal(d_out.download(), out64));
        CHECK(test::bits_equal(d_lse.download(), lse64));
        CHECK(test::bits_equal(d_dqkv.download(), dqkv64));
      }
    }
  }
}

TEST_CASE("bf16 flash attention backward is bit-for-bit repeatable", "[cuda][bf16][flash][determinism]") {
  const int HS = GENERATE(64, 128);
  const cuda::FlashBackward design = GENERATE(cuda::FlashBackward::kSplit, cuda::FlashBackward::kFused);
  INFO("HS=" << HS << " backward " << cuda::flash_attention_backward_name(design));
  RandomFlash run(2, 193, 3, HS, 31, cuda::FlashTile::kAuto);
  const std::vector<bf16> first = run.backward(design);
  CHECK(test::bits_equal(run.backward(design), first));
}

// Thousands of CTAs, a few hundred resident at once: the fused backward's CTAs really wait for
// each other's dQ sums here (a missing wait or fence loses or repeats a part: a different result
// from run to run, and far from the split design's). On the CPU emulator a smaller shape checks
// the same code paths: one block at a time in emu_cuda_bf16, four resident at once (CTAs that
// really wait) in emu_cuda_bf16_resident.
TEST_CASE("bf16 flash attention fused backward at GPT-2 scale: repeatable, and the split one's result",
          "[cuda][bf16][flash][determinism][scale]") {
  cudaDeviceProp prop{};
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  const bool emulated = std::string(prop.name) == "gpt2cc CPU emulator";
  const int HS = GENERATE(64, 128);
  const int B = emulated ? 1 : 8, T = emulated ? 320 : 1024, NH = emulated ? 2 : 768 / HS, C = NH * HS;
  const cuda::FlashTile tile = GENERATE(cuda::FlashTile::kRows64, cuda::FlashTile::kRows128);
  INFO("B=" << B << " T=" << T << " NH=" << NH << " HS=" << HS << " tile rows "
            << (tile == cuda::FlashTile::kRows64 ? 64 : 128));
  RandomFlash run(B, T, NH, HS, 41, tile);
  const std::vector<bf16> fused = run.backward(cuda::FlashBackward::kFused);
  for (int again = 1; again < 3; ++again) CHECK(test::bits_equal(run.backward(cuda::FlashBackward::kFused), fused));
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
  CHECK_NOTHROW(cuda::flash_attention_backward(qkv.get(), out.get(), lse.get(), out.get(), qkv.get(), B, 0, 128, 2,
                                               stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  // One bf16 past a 256-byte cudaMalloc boundary: 2-byte aligned, not 16.
  CHECK_THROWS_WITH(cuda::flash_attention_forward(out.get(), lse.get(), qkv.get() + 1, B, T, 128, 2, stream),
                    Catch::Contains("qkv must be 16-byte aligned"));
  CHECK_THROWS_WITH(cuda::flash_attention_forward(out.get() + 1, lse.get(), qkv.get(), B, T, 128, 2, stream),
                    Catch::Contains("out must be 16-byte aligned"));
  CHECK_THROWS_WITH(cuda::flash_attention_backward(qkv.get() + 1, out.get(), lse.get(), out.get(), qkv.get(), B, T,
                                                   128, 2, stream),
                    Catch::Contains("dqkv must be 16-byte aligned"));
  CHECK_THROWS_WITH(cuda::flash_attention_backward(qkv.get(), out.get() + 1, lse.get(), out.get(), qkv.get(), B, T,
                                                   128, 2, stream),
                    Catch::Contains("dout must be 16-byte aligned"));
}

TEST_CASE("bf16 flash attention takes 128-row tiles when the grid still covers every SM", "[cuda][bf16][flash]") {
  int device = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  CHECK(cuda::flash_attention_tile_rows(cuda::FlashTile::kRows64, 64, 1024, 12) == 64);
  CHECK(cuda::flash_attention_tile_rows(cuda::FlashTile::kRows128, 1, 1, 1) == 128);
  // B*NH*ceil(T/128) CTAs of 128 rows against the SM count, on both sides of it.
  CHECK(cuda::flash_attention_tile_rows(cuda::FlashTile::kAuto, sms, 128, 1) == 128);
  CHECK(cuda::flash_attention_tile_rows(cuda::FlashTile::kAuto, sms, 129, 1) == 128);
  CHECK(cuda::flash_attention_tile_rows(cuda::FlashTile::kAuto, sms - 1, 128, 1) == 64);
  CHECK(cuda::flash_attention_tile_rows(cuda::FlashTile::kAuto, 1, 128 * sms, 1) == 128);
  CHECK(cuda::flash_attention_tile_rows(cuda::FlashTile::kAuto, 1, 128 * (sms - 1), 1) == 64);
}
