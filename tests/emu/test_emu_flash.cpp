// cuda::flash_attention_forward / _backward (kernels/flash_attention.cuh) with their kernels on the
// CPU emulator against cpu::attention_forward / _backward (no dropout) on the same bf16-rounded
// qkv and dout, with the metrics of tests/cuda/test_bf16_flash_attention.cpp: relative L2 error
// <= 1e-2 for out and for dq, dk, dv separately, the saved log-sum-exp within 1e-4 of a
// double-precision one. Shapes: HS 64 and 128, T = 1, 17, 64, 65, 130, 192, 257 (a 1-row tile,
// partial last tiles, exactly one tile, several tiles and the diagonal; 192: several and no partial
// one, where only cp.async landing at issue shows a stage refilled too early, as no zero-filled
// rows are written at once), B*NH > 1, and q, k of range 4 (peaked softmax, row maxima that move
// between tiles: the online rescaling). Both backward designs (cuda::FlashBackward: split, and
// fused with its ordered dQ sums between CTAs) and both resident tiles (64 and 128 rows a CTA,
// cuda::FlashTile; T = 130 and 257 give a partly empty 128-row tile, T = 65 one that ends inside
// its first half) are checked: each design's 64-row kernels against the reference, its 128-row
// ones must give the same bits (and the grids that ran must be the 128-row kernels'). Outputs
// start poisoned (NaN) with a poisoned guard band of 128 rows past the end that must stay
// untouched; every schedule of the emulator (emu::Schedule: warp and block orders) and either
// cp.async landing (emu::CpAsyncLanding: at the wait, or at the issue) must give the same bits,
// and so must the backward run again over different garbage (output buffer and uninitialised
// shared memory). Under the descending block order the fused kernel's CTAs still
// take their work in ticket order: a CTA waiting for one that has not run yet (a wait that could
// hang a GPU) stops the run. The fused design also runs with 2 and 4 CTAs resident at once,
// interleaved (emu::set_resident_blocks), where its CTAs really wait for each other. The host
// runtime checks after every launch that no thread left cp.async copies in flight. Against
// PyTorch's scaled_dot_product_attention too (tests/make_sdpa_fixture.py: its float64 result, and
// no further from it than its own bf16 one by more than common/sdpa_fixture.hpp allows).
#include "common/catch.hpp"

#include <utility>
#include <vector>

#include "cuda/flash_test_util.hpp"
#include "emu/cp_async_emu.hpp"
#include "emu/hostcuda/hostcuda.hpp"
#include "emu/layer_test_util.hpp"
#include "kernels/flash_attention.cuh"

using namespace gpt2cc;
using cuda::FlashBackward;
using cuda::FlashTile;
using test::bf16;
using test::DeviceBuffer;
using Shape = test::FlashShape;

namespace {

struct FlashOutputs {
  std::vector<bf16> out, dqkv;
  std::vector<float> lse;
};

// Forward then backward with the given resident tile and backward design into outputs poisoned
// first, guard bands of 128 rows included (where the last tile's rows >= T would go).
FlashOutputs run_flash(const Shape& s, const DeviceBuffer<bf16>& qkv, const DeviceBuffer<bf16>& dout,
                       FlashTile tile, FlashBackward design) {
  const size_t guard = 128;
  DeviceBuffer<bf16> out(s.out_n() + guard * s.C()), dqkv(s.qkv_n() + guard * 3 * s.C());
  DeviceBuffer<float> lse(s.stat_n() + guard);
  out.poison();
  lse.poison();
  dqkv.poison();
  const cudaStream_t stream = test::test_stream();
  cuda::flash_attention_forward(out.get(), lse.get(), qkv.get(), s.B, s.T, s.C(), s.NH, stream, tile);
  cuda::flash_attention_backward(dqkv.get(), dout.get(), lse.get(), qkv.get(), out.get(), s.B, s.T, s.C(), s.NH,
                                 stream, tile, design);
  return {out.download(), dqkv.download(), lse.download()};
}

}  // namespace

TEST_CASE("emulated flash attention forward and backward match cpu", "[emu][flash]") {
  const Shape shape = GENERATE(Shape{1, 1, 1, 64}, Shape{2, 17, 2, 64}, Shape{1, 64, 1, 64}, Shape{1, 65, 2, 64},
                               Shape{1, 192, 1, 64},
                               Shape{1, 130, 1, 64}, Shape{1, 1, 2, 128}, Shape{2, 17, 1, 128},
                               Shape{1, 65, 1, 128}, Shape{1, 130, 2, 128}, Shape{1, 257, 2, 64},
                               Shape{1, 257, 1, 128}, Shape{1, 130, 2, 64, 4.0f}, Shape{2, 65, 1, 128, 4.0f});
  INFO("B=" << shape.B << " T=" << shape.T << " NH=" << shape.NH << " HS=" << shape.HS << " range=" << shape.range);
  const test::FlashReference ref = test::flash_reference(shape);
  const DeviceBuffer<bf16> qkv(test::to_bf16(ref.qkv)), dout(test::to_bf16(ref.dout));

  for (const FlashBackward design : {FlashBackward::kSplit, FlashBackward::kFused}) {
    INFO("backward " << cuda::flash_attention_backward_name(design));
    const FlashOutputs first = run_flash(shape, qkv, dout, FlashTile::kRows64, design);
    test::check_flash_forward(first.out, first.lse, shape, ref, "emulated flash");
    test::check_flash_backward(first.dqkv, shape, ref, "emulated flash");

    // The same bits whatever order the warps and blocks run in (a missing __syncthreads: a warp
    // overwriting a tile another still reads, or reading one not yet loaded, shows here), whenever
    // the cp.async copies land (at issue: a stage refilled while another warp still reads it shows)
    // and whichever resident tile: every row meets the same K/V tiles in the same order, and the
    // fused kernel adds a 128-key CTA's two halves as two 64-key CTAs would.
    for (const FlashTile tile : {FlashTile::kRows64, FlashTile::kRows128}) {
      for (const emu::CpAsyncLanding landing : emu::kCpAsyncLandings) {
        for (const emu::Schedule schedule : emu::kSchedules) {
          if (tile == FlashTile::kRows64 && landing == emu::CpAsyncLanding::kAtWait &&
              schedule == emu::Schedule::kWarpsAscending)
            continue;  // `first`
          INFO((tile == FlashTile::kRows64 ? 64 : 128)
               << "-row tiles, schedule " << static_cast<int>(schedule) << ", cp.async landing at "
               << (landing == emu::CpAsyncLanding::kAtWait ? "wait" : "issue")
               << " against 64 rows, kWarpsAscending, wait");
          emu::set_schedule(schedule);
          emu::set_cp_async_landing(landing);
          const FlashOutputs again = run_flash(shape, qkv, dout, tile, design);
          emu::set_schedule(emu::Schedule::kWarpsAscending);
          emu::set_cp_async_landing(emu::CpAsyncLanding::kAtWait);
          CHECK(test::same_bits(again.out, first.out));
          CHECK(test::same_bits(again.lse, first.lse));
          CHECK(test::same_bits(again.dqkv, first.dqkv));
        }
      }
      // Several CTAs resident at once (emu::set_resident_blocks): the fused kernel's CTAs then
      // really wait for each other's dQ sums. Newest first, a CTA runs as far as it can before the
      // ones it waits for: one that read a running sum before the block before it had added (a
      // missing wait, or threads not held by the barrier after it) gives other bits.
      if (design != FlashBackward::kFused) continue;
      struct Residency {
        int blocks;
        emu::Turns turns;
        emu::Schedule schedule;
      };
      for (const Residency r : {Residency{3, emu::Turns::kNewestFirst, emu::Schedule::kWarpsAscending},
                                Residency{2, emu::Turns::kRoundRobin, emu::Schedule::kWarpsDescending}}) {
        INFO((tile == FlashTile::kRows64 ? 64 : 128)
             << "-row tiles, " << r.blocks << " resident blocks, "
             << (r.turns == emu::Turns::kNewestFirst ? "newest first" : "round robin") << ", schedule "
             << static_cast<int>(r.schedule) << " against 64 rows, one at a time");
        emu::set_resident_blocks(r.blocks, r.turns);
        emu::set_schedule(r.schedule);
        const FlashOutputs again = run_flash(shape, qkv, dout, tile, design);
        emu::set_resident_blocks(1);
        emu::set_schedule(emu::Schedule::kWarpsAscending);
        CHECK(test::same_bits(again.out, first.out));
        CHECK(test::same_bits(again.lse, first.lse));
        CHECK(test::same_bits(again.dqkv, first.dqkv));
      }
    }
  }
}

// The two resident tiles give the same bits (above), so only the grids show which kernels ran: one
// CTA of kRows / 16 warps per head and tile of kRows rows, for the forward and each backward kernel
// (dK/dV and dQ, or the fused one; the delta kernel's grid is of another shape).
TEST_CASE("emulated flash attention runs the kernels of the resident tile it is given", "[emu][flash]") {
  const int HS = GENERATE(64, 128);
  const Shape shape{1, 130, 2, HS};  // 2 tiles of 128 rows, 3 of 64
  INFO("HS=" << HS);
  const test::FlashReference ref = test::flash_reference(shape);
  const DeviceBuffer<bf16> qkv(test::to_bf16(ref.qkv)), dout(test::to_bf16(ref.dout));
  for (const FlashBackward design : {FlashBackward::kSplit, FlashBackward::kFused}) {
    for (const int rows : {64, 128}) {
      INFO("backward " << cuda::flash_attention_backward_name(design) << ", " << rows << "-row tiles");
      const size_t before = hostcuda::grids_run();
      run_flash(shape, qkv, dout, rows == 128 ? FlashTile::kRows128 : FlashTile::kRows64, design);
      int tiled = 0, other_tile = 0;
      for (const hostcuda::GridRun& g : hostcuda::grids_run_since(before)) {
        if (g.grid.x != static_cast<unsigned>(shape.B * shape.NH)) continue;  // the delta kernel
        const bool ours = g.block.x == static_cast<unsigned>(rows / 16 * 32) &&
                          g.grid.y == static_cast<unsigned>((shape.T + rows - 1) / rows);
        (ours ? tiled : other_tile) += 1;
      }
      CHECK(tiled == (design == FlashBackward::kSplit ? 3 : 2));
      CHECK(other_tile == 0);
    }
  }
}

// PyTorch's SDPA (tests/make_sdpa_fixture.py): within 1e-2 of its float64 result and no more
// than kTorchBf16ErrorFactor (common/sdpa_fixture.hpp) times as far from it as PyTorch's own
// bf16 SDPA, for either design and resident tile.
TEST_CASE("emulated flash attention matches PyTorch scaled_dot_product_attention", "[emu][flash][pytorch]") {
  for (const test::SdpaCase& c : test::load_sdpa_cases()) {
    const Shape shape = test::sdpa_flash_shape(c);
    const test::FlashReference ref = test::sdpa_flash_reference(c);
    INFO(c.name << ": B=" << c.B << " T=" << c.T << " NH=" << c.NH << " HS=" << c.HS << " range=" << c.range);
    const DeviceBuffer<bf16> qkv(test::to_bf16(ref.qkv)), dout(test::to_bf16(ref.dout));
    for (const FlashBackward design : {FlashBackward::kSplit, FlashBackward::kFused}) {
      for (const FlashTile tile : {FlashTile::kRows64, FlashTile::kRows128}) {
        INFO("backward " << cuda::flash_attention_backward_name(design) << ", "
                         << (tile == FlashTile::kRows64 ? 64 : 128) << "-row tiles");
        const FlashOutputs got = run_flash(shape, qkv, dout, tile, design);
        test::check_flash_forward(got.out, got.lse, shape, ref, "emulated flash");
        test::check_flash_backward(got.dqkv, shape, ref, "emulated flash");
        test::check_as_accurate_as_torch_bf16(test::from_bf16(got.out), test::from_bf16(got.dqkv), c, "emulated flash");
      }
    }
  }
}

TEST_CASE("emulated flash attention backward is bit-for-bit repeatable over different garbage",
          "[emu][flash][determinism]") {
  const int HS = GENERATE(64, 128);
  const FlashTile tile = GENERATE(FlashTile::kRows64, FlashTile::kRows128);
  const FlashBackward design = GENERATE(FlashBackward::kSplit, FlashBackward::kFused);
  const int B = 2, T = 130, NH = 1, C = NH * HS;
  INFO("HS=" << HS << " tile rows=" << (tile == FlashTile::kRows64 ? 64 : 128) << " backward "
             << cuda::flash_attention_backward_name(design));
  const DeviceBuffer<bf16> qkv(test::to_bf16(test::random_vector(static_cast<size_t>(B) * T * 3 * C, 31, -1.5f, 1.5f)));
  const DeviceBuffer<bf16> dout(test::to_bf16(test::random_vector(static_cast<size_t>(B) * T * C, 32)));
  DeviceBuffer<bf16> out(dout.size()), dqkv(qkv.size());
  DeviceBuffer<float> lse(static_cast<size_t>(B) * NH * T);
  const cudaStream_t stream = test::test_stream();
  cuda::flash_attention_forward(out.get(), lse.get(), qkv.get(), B, T, C, NH, stream, tile);
  // Run 1 over NaN (output and uninitialised shared memory), run 2 over zeros: a result that
  // read either (a missing load, an accumulation into dqkv instead of a store) would differ.
  std::vector<bf16> first;
  for (const unsigned char garbage : {0xFF, 0x00}) {
    emu::set_unwritten_shared_byte(garbage);
    if (garbage == 0xFF) dqkv.poison();
    else dqkv.zero();
    cuda::flash_attention_backward(dqkv.get(), dout.get(), lse.get(), qkv.get(), out.get(), B, T, C, NH, stream,
                                   tile, design);
    if (first.empty()) first = dqkv.download();
    else CHECK(test::same_bits(dqkv.download(), first));
  }
  emu::set_unwritten_shared_byte(0xFF);
}
