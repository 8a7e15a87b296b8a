// The emulator as a race detector (a GPT2CC_SANITIZE=thread build; cuda_emu.cpp, at Machine). Each
// case is a kernel with a race that every schedule and cp.async landing computes to the same bits
// (checked here), so that only the detector can see it, next to its twin ordered as CUDA requires:
// the twin must run without a report, the racy kernel must get one. Hidden ([.]): ctest runs them
// only in a ThreadSanitizer build, as emu_race_detector, with TSAN_OPTIONS that keep the exit code
// at 0 and report every race, not the first per address or per pair of stacks (there the reports
// are expected, and these checks count them).
#include "common/catch.hpp"

#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "emu/cp_async_emu.hpp"
#include "emu/cuda_emu.hpp"

using namespace gpt2cc;

namespace {

alignas(16) unsigned char g_shared[emu::kSharedCapacity];
alignas(16) uint32_t g_source[4] = {0x3f803f80u, 0x40004000u, 0x40404040u, 0x40804080u};

// Each case works in its own part of shared memory: by default ThreadSanitizer reports one race per
// address.
constexpr size_t kSmemBytes = 4096;
uint32_t* shared_words(int part) { return reinterpret_cast<uint32_t*>(g_shared + 1024 * part); }

// Runs `launch` (which launches the kernel and returns what it computed) under every schedule
// and cp.async landing; requires the same result from each, and returns it.
std::vector<uint32_t> same_under_every_order(const std::function<std::vector<uint32_t>()>& launch) {
  emu::set_shared_memory(g_shared, sizeof(g_shared));
  emu::set_unwritten_shared_byte(0xFF);
  std::vector<uint32_t> first;
  for (const emu::CpAsyncLanding landing : emu::kCpAsyncLandings) {
    for (const emu::Schedule schedule : emu::kSchedules) {
      INFO("schedule " << static_cast<int>(schedule) << ", cp.async landing " << static_cast<int>(landing));
      emu::set_cp_async_landing(landing);
      emu::set_schedule(schedule);
      const std::vector<uint32_t> result = launch();
      emu::cp_async_check_drained();
      if (first.empty()) first = result;
      CHECK(result == first);
    }
  }
  emu::set_schedule(emu::Schedule::kWarpsAscending);
  emu::set_cp_async_landing(emu::CpAsyncLanding::kAtWait);
  return first;
}

// The ordered kernel computes `expected` with no report; the racy one the same bits, with one.
void check_detected(const std::function<std::vector<uint32_t>(bool ordered)>& launch,
                    const std::vector<uint32_t>& expected) {
  REQUIRE(emu::race_detector());
  const size_t before = emu::race_reports();
  CHECK(same_under_every_order([&] { return launch(true); }) == expected);
  CHECK(emu::race_reports() == before);
  CHECK(same_under_every_order([&] { return launch(false); }) == expected);
  CHECK(emu::race_reports() > before);
}

}  // namespace

TEST_CASE("race detector: two warps store one shared word, no barrier between", "[.][race]") {
  // Both store the same value, so no order of the two changes a bit.
  check_detected(
      [](bool ordered) {
        std::vector<uint32_t> out(1);
        emu::launch(dim3(1), dim3(64), kSmemBytes, [&] {
          uint32_t* word = shared_words(0);
          if (threadIdx.x == 0) *word = 7;
          if (ordered) __syncthreads();
          if (threadIdx.x == 32) *word = 7;
          __syncthreads();
          if (threadIdx.x == 0) out[0] = *word;
        });
        return out;
      },
      {7});
}

TEST_CASE("race detector: a lane reads its warp's store across a shuffle, which orders no memory",
          "[.][race]") {
  // Lane 0 runs to the shuffle before lane 5 passes it under every schedule: the load always sees
  // the store, and still nothing CUDA defines orders them (that is __syncwarp's job).
  check_detected(
      [](bool ordered) {
        std::vector<uint32_t> out(1);
        emu::launch(dim3(1), dim3(32), kSmemBytes, [&] {
          uint32_t* word = shared_words(1);
          if (threadIdx.x == 0) *word = 7;
          if (ordered) __syncthreads();
          else __shfl_xor_sync(0xffffffffu, 0u, 1);
          if (threadIdx.x == 5) out[0] = *word;
        });
        return out;
      },
      {7});
}

TEST_CASE("race detector: ldmatrix reads rows another warp stores, no barrier between", "[.][race]") {
  // Warp 0 fills four 8x8 bf16 matrices (32 rows of 16 bytes); after a barrier warp 1 stores the
  // same bytes again while warp 0 loads them with ldmatrix: the same bits in any order.
  std::vector<uint32_t> expected(32 * 4);
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) {
      const int row = lane / 4, col = 2 * (lane % 4), matrix_row = 8 * i + row;
      const auto element = [&](int c) { return static_cast<uint32_t>(matrix_row * 8 + c); };
      expected[lane * 4 + i] = element(col) | element(col + 1) << 16;
    }
  check_detected(
      [](bool ordered) {
        std::vector<uint32_t> out(32 * 4);
        emu::launch(dim3(1), dim3(64), kSmemBytes, [&] {
          auto* rows = reinterpret_cast<uint16_t*>(shared_words(2));
          const int lane = static_cast<int>(threadIdx.x % 32);
          const auto fill = [&] {
            for (int c = 0; c < 8; ++c) rows[lane * 8 + c] = static_cast<uint16_t>(lane * 8 + c);
          };
          if (threadIdx.x < 32) fill();
          __syncthreads();
          if (threadIdx.x >= 32) fill();
          if (ordered) __syncthreads();
          if (threadIdx.x < 32) {
            uint32_t r[4];
            emu::ldmatrix_x4(r, emu::shared_address(rows + lane * 8), false);
            for (int i = 0; i < 4; ++i) out[lane * 4 + i] = r[i];
          }
        });
        return out;
      },
      expected);
}

TEST_CASE("race detector: a store to a cp.async destination while the copy is in flight across a barrier",
          "[.][race]") {
  // Thread 0 copies 16 bytes into shared memory and waits for them only after two barriers;
  // between the barriers thread 32 stores the same 16 bytes there. The copy may land at any time
  // from its issue to its wait: concurrent with the store, though the store happens after the
  // issue and before the wait (the detector sees the copy in flight after each barrier).
  const std::vector<uint32_t> source(g_source, g_source + 4);
  check_detected(
      [](bool ordered) {
        std::vector<uint32_t> out(4);
        emu::launch(dim3(1), dim3(64), kSmemBytes, [&] {
          void* destination = shared_words(3);
          if (threadIdx.x == 0) {
            emu::cp_async_16(destination, g_source);
            emu::cp_async_commit();
            if (ordered) emu::cp_async_wait(0);
          }
          __syncthreads();
          if (threadIdx.x == 32) std::memcpy(destination, g_source, 16);
          __syncthreads();
          if (threadIdx.x == 0) {
            emu::cp_async_wait(0);
            std::memcpy(out.data(), destination, 16);
          }
        });
        return out;
      },
      source);
}

TEST_CASE("race detector: a flag released before the barrier that follows another thread's store",
          "[.][race]") {
  // Two resident blocks: block 0's thread 0 stores a word, its thread 1 releases a flag; block 1
  // waits for the flag and reads the word. Without a barrier between the store and the release the
  // flag does not cover the store (the emulator runs thread 0 first, so the word is always there).
  check_detected(
      [](bool ordered) {
        emu::set_resident_blocks(2);
        std::vector<uint32_t> data(2, 0);
        uint32_t flag = 0;
        emu::launch(dim3(2), dim3(32), 0, [&] {
          if (blockIdx.x == 0) {
            if (threadIdx.x == 0) data[0] = 7;
            if (ordered) __syncthreads();
            if (threadIdx.x == 1) emu::store_release(&flag, 1);
          } else if (threadIdx.x == 0) {
            emu::wait_until_equal(&flag, 1);
            data[1] = data[0];
          }
        });
        emu::set_resident_blocks(1);
        return data;
      },
      {7, 7});
}
