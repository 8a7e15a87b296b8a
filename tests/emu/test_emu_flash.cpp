// The flash attention kernels (kernels/flash_attention_device.cuh) executed by the CPU emulator
// against cpu::attention_forward / _backward (no dropout) on the same bf16-rounded qkv and dout,
// with the metrics of tests/cuda/test_bf16_flash_attention.cpp: relative L2 error <= 1e-2 for out
// and for dq, dk, dv separately, the saved log-sum-exp within 1e-4 of a double-precision one.
// Shapes: HS 64 and 128, T = 1, 17, 64, 65, 130, 257 (a 1-row tile, partial last tiles, exactly
// one tile, several tiles and the diagonal), B*NH > 1, and q, k of range 4 (peaked softmax, row
// maxima that move between tiles: the online rescaling). Both resident tiles (64 and 128 rows a
// CTA; T = 130 and 257 give a partly empty 128-row tile, T = 65 one that ends inside its first
// half) are checked: the 64-row kernels against the reference, the 128-row ones must give the
// same bits. Outputs start poisoned (NaN) with a poisoned guard band of 128 rows past the end that
// must stay untouched; every schedule of the warps (emu::Schedule) must give the same bits, and
// so must the backward run again over different garbage (output buffer and uninitialised shared
// memory).
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstring>
#include <vector>

#include "cuda/bf16_host_util.hpp"
#include "cuda/flash_test_util.hpp"
#include "emu/cuda_emu.hpp"
#include "emu/flash_emu.hpp"

using namespace gpt2cc;
using test::bf16;
using Shape = test::FlashShape;

namespace {

// n values of `byte` repeated (0xFF: NaN for bf16 and fp32).
template <class T>
std::vector<T> filled(size_t n, unsigned char byte) {
  std::vector<T> v(n);
  std::memset(static_cast<void*>(v.data()), byte, n * sizeof(T));
  return v;
}

}  // namespace

TEST_CASE("emulated flash attention forward and backward match cpu", "[emu][flash]") {
  const Shape shape = GENERATE(Shape{1, 1, 1, 64}, Shape{2, 17, 2, 64}, Shape{1, 64, 1, 64}, Shape{1, 65, 2, 64},
                               Shape{1, 130, 1, 64}, Shape{1, 1, 2, 128}, Shape{2, 17, 1, 128},
                               Shape{1, 65, 1, 128}, Shape{1, 130, 2, 128}, Shape{1, 257, 2, 64},
                               Shape{1, 257, 1, 128}, Shape{1, 130, 2, 64, 4.0f}, Shape{2, 65, 1, 128, 4.0f});
  const int B = shape.B, T = shape.T, NH = shape.NH, HS = shape.HS, C = shape.C();
  INFO("B=" << B << " T=" << T << " NH=" << NH << " HS=" << HS << " range=" << shape.range);
  const test::FlashReference ref = test::flash_reference(shape);

  const auto qkv_bf16 = test::to_bf16(ref.qkv), dout_bf16 = test::to_bf16(ref.dout);
  // Guard bands of one 128-row tile past each end: where the last tile's rows >= T would go.
  auto out_emu = filled<bf16>(shape.out_n() + 128 * static_cast<size_t>(C), 0xFF);
  auto lse = filled<float>(shape.stat_n() + 128, 0xFF);
  auto dqkv_emu = filled<bf16>(shape.qkv_n() + 128 * 3 * static_cast<size_t>(C), 0xFF);

  emu::flash_attention_forward(out_emu.data(), lse.data(), qkv_bf16.data(), B, T, C, NH, 64);
  test::check_flash_forward(out_emu, lse, shape, ref, "emulated flash");

  emu::flash_attention_backward(dqkv_emu.data(), dout_bf16.data(), lse.data(), out_emu.data(), qkv_bf16.data(), B,
                                T, C, NH, 64);
  test::check_flash_backward(dqkv_emu, shape, ref, "emulated flash");

  // The same bits whatever order the warps run in between barriers (a missing __syncthreads: a
  // warp overwriting a tile another still reads, or reading one not yet loaded, shows here) and
  // whichever resident tile: every row meets the same K/V tiles in the same order.
  for (const int tile_rows : {64, 128}) {
    for (const emu::Schedule schedule : emu::kSchedules) {
      if (tile_rows == 64 && schedule == emu::Schedule::kWarpsAscending) continue;  // the run above
      INFO("tile rows " << tile_rows << ", schedule " << static_cast<int>(schedule)
                        << " against 64 rows, kWarpsAscending");
      emu::set_schedule(schedule);
      auto out2 = filled<bf16>(out_emu.size(), 0xFF);
      auto lse2 = filled<float>(lse.size(), 0xFF);
      auto dqkv2 = filled<bf16>(dqkv_emu.size(), 0xFF);
      emu::flash_attention_forward(out2.data(), lse2.data(), qkv_bf16.data(), B, T, C, NH, tile_rows);
      emu::flash_attention_backward(dqkv2.data(), dout_bf16.data(), lse2.data(), out2.data(), qkv_bf16.data(), B, T,
                                    C, NH, tile_rows);
      emu::set_schedule(emu::Schedule::kWarpsAscending);
      CHECK(test::bits_equal(out2, out_emu));
      CHECK(test::bits_equal(lse2, lse));
      CHECK(test::bits_equal(dqkv2, dqkv_emu));
    }
  }
}

TEST_CASE("emulated flash attention backward is bit-for-bit repeatable over different garbage",
          "[emu][flash][determinism]") {
  const int HS = GENERATE(64, 128);
  const int tile_rows = GENERATE(64, 128);
  const int B = 2, T = 130, NH = 1, C = NH * HS;
  INFO("HS=" << HS << " tile rows=" << tile_rows);
  const auto qkv = test::to_bf16(test::random_vector(static_cast<size_t>(B) * T * 3 * C, 31, -1.5f, 1.5f));
  const auto dout = test::to_bf16(test::random_vector(static_cast<size_t>(B) * T * C, 32));
  std::vector<bf16> out(dout.size());
  std::vector<float> lse(static_cast<size_t>(B) * NH * T);
  emu::flash_attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH, tile_rows);
  // Run 1 over NaN (output and uninitialised shared memory), run 2 over zeros: a result that
  // read either (a missing load, an accumulation into dqkv instead of a store) would differ.
  std::vector<bf16> first;
  for (const unsigned char garbage : {0xFF, 0x00}) {
    emu::set_unwritten_shared_byte(garbage);
    auto dqkv = filled<bf16>(qkv.size(), garbage);
    emu::flash_attention_backward(dqkv.data(), dout.data(), lse.data(), out.data(), qkv.data(), B, T, C, NH,
                                  tile_rows);
    if (first.empty()) first = dqkv;
    else CHECK(test::bits_equal(dqkv, first));
  }
  emu::set_unwritten_shared_byte(0xFF);
}
