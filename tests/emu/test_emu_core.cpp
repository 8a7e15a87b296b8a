// Self-tests of the CUDA emulator (cuda_emu.hpp): mma.m16n8k16 on fragments laid out by the PTX
// ISA's per-register tables equals a scalar 16x8x16 product; ldmatrix.x4 (and .trans) of known
// 8x8 patterns; xor shuffles of 32- and 64-bit values; ballot, popc and __syncthreads_or; static
// and dynamic __shared__ arrays shared by the block; the host versions of device math; the block
// barrier, the built-in indices and the schedules; flags between blocks (tickets, an ordered
// hand-over, a wait that could hang); resident blocks interleaved (a wait that waits, a missing
// wait or barrier that shows, shared arrays per block, a hang reported); and every misuse the
// emulator promises to catch (divergent collectives, mismatched barriers, misaligned or
// out-of-range ldmatrix, shared memory past the launch's size, non-shared addresses).
#include "common/catch.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "common/test_common.hpp"
#include "emu/cuda_emu.hpp"

using namespace gpt2cc;

namespace {

alignas(16) unsigned char g_shared[emu::kSharedCapacity];

void use_test_shared() { emu::set_shared_memory(g_shared, sizeof(g_shared)); }

uint16_t bf16_bits(float x) {
  const __nv_bfloat16 b = __float2bfloat16_rn(x);
  uint16_t bits;
  std::memcpy(&bits, &b, 2);
  return bits;
}
// Two 16-bit values in one register, `lo` in bits 0-15 (the PTX "low to high" element order).
uint32_t pack(uint16_t lo, uint16_t hi) { return lo | static_cast<uint32_t>(hi) << 16; }

// Thread t of the block stores t + 1000 * round into a static __shared__ array and, after the
// barrier, reads its neighbour's slot: right only if the array is one object for the whole block.
int neighbour_through_static_shared(int round) {
  __shared__ int slots[128];
  const int t = static_cast<int>(threadIdx.x);
  slots[t] = t + 1000 * round;
  __syncthreads();
  const int seen = slots[(t + 1) % blockDim.x];
  __syncthreads();  // the next round overwrites slots[]
  return seen;
}

}  // namespace

// A kernel's dynamic shared array, declared as the kernels do (in a template, where GCC's TLS
// handling needs GPT2CC_EMU_DYNAMIC_SHARED's initializer), and defined as the emulation TUs do.
namespace emu_core_test {
template <class Elem>
Elem* dynamic_shared_floats() {
  extern __shared__ Elem dynamic_floats[];
  return dynamic_floats;
}
GPT2CC_EMU_DYNAMIC_SHARED(float, dynamic_floats);
}  // namespace emu_core_test

using emu_core_test::dynamic_floats;
using emu_core_test::dynamic_shared_floats;

TEST_CASE("emulated mma.m16n8k16 bf16 equals a scalar 16x8x16 product", "[emu][core]") {
  // Values on a bf16 grid, so the fragments hold them exactly; C in fp32.
  const auto a_vals = test::random_vector(16 * 16, 1, -2.0f, 2.0f), b_vals = test::random_vector(16 * 8, 2, -2.0f, 2.0f);
  const auto c_vals = test::random_vector(16 * 8, 3, -1.0f, 1.0f);
  float A[16][16], B[16][8], C[16][8];
  for (int i = 0; i < 16 * 16; ++i) A[i / 16][i % 16] = __bfloat162float(__float2bfloat16_rn(a_vals[i]));
  for (int i = 0; i < 16 * 8; ++i) B[i / 8][i % 8] = __bfloat162float(__float2bfloat16_rn(b_vals[i]));
  for (int i = 0; i < 16 * 8; ++i) C[i / 8][i % 8] = c_vals[i];

  // Per lane (g = lane/4, t = lane%4), register by register as the PTX tables place them:
  //   a: {A[g][2t],A[g][2t+1]} {A[g+8][2t],..} {A[g][2t+8],..} {A[g+8][2t+8],..}
  //   b: {B[2t][g],B[2t+1][g]} {B[2t+8][g],B[2t+9][g]}    c/d: D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]
  float D[16][8];
  emu::launch(dim3(1), dim3(32), 0, [&] {
    const int lane = static_cast<int>(threadIdx.x), g = lane / 4, t = lane % 4;
    const auto pa = [&](int r, int c) { return pack(bf16_bits(A[r][c]), bf16_bits(A[r][c + 1])); };
    const uint32_t a[4] = {pa(g, 2 * t), pa(g + 8, 2 * t), pa(g, 2 * t + 8), pa(g + 8, 2 * t + 8)};
    const uint32_t b0 = pack(bf16_bits(B[2 * t][g]), bf16_bits(B[2 * t + 1][g]));
    const uint32_t b1 = pack(bf16_bits(B[2 * t + 8][g]), bf16_bits(B[2 * t + 9][g]));
    float c[4] = {C[g][2 * t], C[g][2 * t + 1], C[g + 8][2 * t], C[g + 8][2 * t + 1]};
    emu::mma_m16n8k16_bf16(c, a, b0, b1);
    D[g][2 * t] = c[0];
    D[g][2 * t + 1] = c[1];
    D[g + 8][2 * t] = c[2];
    D[g + 8][2 * t + 1] = c[3];
  });
  std::vector<float> got, want;
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 8; ++j) {
      double d = C[i][j];
      for (int k = 0; k < 16; ++k) d += static_cast<double>(A[i][k]) * B[k][j];
      got.push_back(D[i][j]);
      want.push_back(static_cast<float>(d));
    }
  }
  test::expect_close(got, want, 1e-6, 1e-6, "mma D");
}

TEST_CASE("emulated mma.m16n8k16 bf16 in code compiled for sm_75 is a Violation", "[emu][core]") {
  const auto mma_warp = [] {
    emu::launch(dim3(1), dim3(32), 0, [] {
      float c[4] = {};
      const uint32_t a[4] = {};
      emu::mma_m16n8k16_bf16(c, a, 0, 0);
    });
  };
  emu::set_code_architecture(75);
  CHECK_THROWS_WITH(mma_warp(), Catch::Contains("mma.sync.m16n8k16 with bf16 requires sm_80, and this code is "
                                                "compiled for sm_75"));
  for (const int arch : {80, 90, 0}) {  // 0: any (the default)
    emu::set_code_architecture(arch);
    CHECK_NOTHROW(mma_warp());
  }
}

TEST_CASE("emulated ldmatrix.x4 loads known 8x8 patterns, plain and transposed", "[emu][core]") {
  use_test_shared();
  // Four 8x8 matrices of 16-bit values M_i[r][c] = 256*i + 16*r + c, rows 48 bytes apart (a padded
  // pitch), matrices at scattered 16-byte-aligned offsets: lane l gives the row address of matrix
  // l/8, row l%8.
  constexpr int kPitch = 24;  // elements
  const int base[4] = {0, 8 * kPitch + 8, 2 * 8 * kPitch, 3 * 8 * kPitch + 16};
  const auto value = [](int i, int r, int c) { return static_cast<uint16_t>(256 * i + 16 * r + c); };
  for (const bool trans : {false, true}) {
    INFO("trans=" << trans);
    uint32_t reg[32][4];
    emu::launch(dim3(1), dim3(32), 4 * 8 * kPitch * 2 + 64, [&] {
      auto* s = reinterpret_cast<uint16_t*>(g_shared);
      const int lane = static_cast<int>(threadIdx.x);
      for (int i = 0; i < 4; ++i)  // lane l writes row l/4, columns 2(l%4)..+1 of every matrix
        for (int c = 2 * (lane % 4); c < 2 * (lane % 4) + 2; ++c) s[base[i] + lane / 4 * kPitch + c] = value(i, lane / 4, c);
      __syncthreads();
      uint32_t r[4];
      emu::ldmatrix_x4(r, emu::shared_address(s + base[lane / 8] + lane % 8 * kPitch), trans);
      std::memcpy(reg[lane], r, sizeof(r));
    });
    int wrong = 0;
    for (int lane = 0; lane < 32; ++lane) {
      const int row = lane / 4, col = 2 * (lane % 4);
      for (int i = 0; i < 4; ++i) {
        // Plain: lane holds (row, col..col+1) of M_i; .trans: of M_i^T, i.e. M_i[col..col+1][row].
        const uint32_t want = trans ? pack(value(i, col, row), value(i, col + 1, row))
                                    : pack(value(i, row, col), value(i, row, col + 1));
        wrong += reg[lane][i] != want;
      }
    }
    CHECK(wrong == 0);
  }
}

TEST_CASE("emulated __shfl_xor_sync exchanges between lane and lane ^ mask", "[emu][core]") {
  float got[5][32], sum[32];
  emu::launch(dim3(1), dim3(64), 0, [&] {
    const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
    const float v = 10.0f * lane + 100.0f * warp;
    for (int k = 0; k < 5; ++k) {
      const float x = __shfl_xor_sync(0xffffffffu, v, 1 << k);
      if (warp == 1) got[k][lane] = x;
    }
    float s = v;
    for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
    if (warp == 0) sum[lane] = s;
  });
  int wrong = 0;
  for (int k = 0; k < 5; ++k)
    for (int lane = 0; lane < 32; ++lane) wrong += got[k][lane] != 10.0f * (lane ^ (1 << k)) + 100.0f;
  CHECK(wrong == 0);
  for (int lane = 0; lane < 32; ++lane) CHECK(sum[lane] == 4960.0f);  // 10 * (0 + 1 + ... + 31)
}

TEST_CASE("emulated 64-bit __shfl_xor_sync moves both words of a double and of a uint64", "[emu][core]") {
  // Values whose low words differ between lanes (2^-40 steps below 1.0 only live in the low
  // word), so a shuffle of the high word alone, or of the low word twice, gives wrong bits.
  const auto value = [](int lane) { return 1.0 + std::ldexp(static_cast<double>(lane + 1), -40); };
  double got[5][32], sum[32];
  uint64_t got_u64[32];
  emu::launch(dim3(1), dim3(32), 0, [&] {
    const int lane = static_cast<int>(threadIdx.x);
    for (int k = 0; k < 5; ++k) got[k][lane] = __shfl_xor_sync(0xffffffffu, value(lane), 1 << k);
    const uint64_t u = (static_cast<uint64_t>(lane) << 32) | static_cast<uint64_t>(31 - lane);
    got_u64[lane] = __shfl_xor_sync(0xffffffffu, u, 3);
    double s = value(lane);
    for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
    sum[lane] = s;
  });
  int wrong = 0;
  for (int k = 0; k < 5; ++k)
    for (int lane = 0; lane < 32; ++lane) wrong += got[k][lane] != value(lane ^ (1 << k));
  for (int lane = 0; lane < 32; ++lane) {
    const int j = lane ^ 3;
    wrong += got_u64[lane] != ((static_cast<uint64_t>(j) << 32) | static_cast<uint64_t>(31 - j));
  }
  CHECK(wrong == 0);
  // 32 + 2^-40 * (1 + ... + 32): exact in double, the same bits in every lane.
  for (int lane = 0; lane < 32; ++lane) CHECK(sum[lane] == 32.0 + std::ldexp(528.0, -40));
}

TEST_CASE("emulated __ballot_sync gathers one predicate bit per lane; __popc counts bits", "[emu][core]") {
  unsigned got[64];
  emu::launch(dim3(1), dim3(64), 0, [&] {
    const int t = static_cast<int>(threadIdx.x), lane = t % 32;
    const bool predicate = t < 32 ? lane % 3 == 0 : lane >= 29 || lane == 4;  // warp 0, warp 1
    got[t] = __ballot_sync(0xffffffffu, predicate);
  });
  for (int t = 0; t < 64; ++t) CHECK(got[t] == (t < 32 ? 0x49249249u : 0xE0000010u));
  CHECK(__popc(0u) == 0);
  CHECK(__popc(0x49249249u) == 11);
  CHECK(__popc(0xE0000010u) == 4);
  CHECK(__popc(0xffffffffu) == 32);
}

TEST_CASE("emulated __syncthreads_or is a barrier that returns the OR of the block's predicates", "[emu][core]") {
  use_test_shared();
  for (const emu::Schedule schedule : emu::kSchedules) {
    INFO("schedule " << static_cast<int>(schedule));
    emu::set_schedule(schedule);
    std::vector<int> first(2 * 128, -1), second(2 * 128, -1), seen(2 * 128, -1);
    emu::launch(dim3(2), dim3(128), 128 * sizeof(int), [&] {
      auto* s = reinterpret_cast<int*>(g_shared);
      const int t = static_cast<int>(threadIdx.x), i = static_cast<int>(blockIdx.x) * 128 + t;
      s[t] = t;
      // Block 0: only thread 77 says yes; block 1: nobody. Then the reverse, to show that each
      // barrier's result is its own (not the previous one's, not a sticky OR).
      first[i] = __syncthreads_or(blockIdx.x == 0 && t == 77);
      seen[i] = s[(t + 1) % 128];
      second[i] = __syncthreads_or(blockIdx.x == 1 && t == 3 ? 5 : 0);
    });
    emu::set_schedule(emu::Schedule::kWarpsAscending);
    for (int i = 0; i < 2 * 128; ++i) {
      CHECK(first[i] == (i < 128 ? 1 : 0));
      CHECK(second[i] == (i < 128 ? 0 : 1));
      CHECK(seen[i] == (i % 128 + 1) % 128);  // the stores before the barrier are visible after it
    }
  }
}

TEST_CASE("emulated __shared__ arrays are one per block: static ones and the dynamic one", "[emu][core]") {
  std::vector<int> seen(2 * 128, -1);
  emu::launch(dim3(2), dim3(128), 0, [&] {
    const int t = static_cast<int>(threadIdx.x);
    seen[blockIdx.x * 128 + t] = neighbour_through_static_shared(static_cast<int>(blockIdx.x));
  });
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 128; ++t) CHECK(seen[b * 128 + t] == (t + 1) % 128 + 1000 * b);

  // The dynamic array is the registered window: unwritten floats read NaN, a store past the
  // launch's size is reported, and threads see each other's stores after the barrier.
  emu::set_shared_memory(dynamic_floats, sizeof(dynamic_floats));
  std::vector<float> before(64, 0.0f), after(64, 0.0f);
  emu::launch(dim3(1), dim3(64), 64 * sizeof(float), [&] {
    float* s = dynamic_shared_floats<float>();
    const int t = static_cast<int>(threadIdx.x);
    before[t] = s[t];
    __syncthreads();
    s[t] = 2.0f * t;
    __syncthreads();
    after[t] = s[63 - t];
  });
  for (int t = 0; t < 64; ++t) {
    CHECK(std::isnan(before[t]));
    CHECK(after[t] == 2.0f * (63 - t));
  }
  CHECK_THROWS_WITH(emu::launch(dim3(1), dim3(32), 32 * sizeof(float),
                                [&] { dynamic_shared_floats<float>()[32 + threadIdx.x] = 1.0f; }),
                    Catch::Contains("shared memory written at byte 128, past the 128 bytes"));
  use_test_shared();
}

TEST_CASE("host versions of device math: rsqrtf and the integer min / max", "[emu][core]") {
  CHECK(rsqrtf(4.0f) == 0.5f);
  CHECK(rsqrtf(0.25f) == 2.0f);
  CHECK(std::abs(rsqrtf(2.0f) - 0.70710678f) <= 1e-7f);
  CHECK(std::isinf(rsqrtf(0.0f)));
  CHECK(min(3, -2) == -2);
  CHECK(max(3, -2) == 3);
  CHECK(min(7u, 9u) == 7u);
  CHECK(max(1LL << 40, 5LL) == 1LL << 40);
  CHECK(min(static_cast<unsigned long long>(1) << 63, 2ULL) == 2ULL);
  CHECK(max(size_t{40}, size_t{41}) == size_t{41});
}

TEST_CASE("emulated __syncthreads orders shared memory across the block; built-in indices", "[emu][core]") {
  use_test_shared();
  const dim3 grid(3, 2), block(128);
  std::vector<int> seen(grid.x * grid.y * block.x, -1), flat(grid.x * grid.y * block.x, -1);
  for (const bool barrier : {true, false}) {
    // Without the barrier the kernel has a race, which the race detector reports (test_emu_races.cpp).
    if (!barrier && emu::race_detector()) continue;
    INFO("barrier=" << barrier);
    emu::launch(grid, block, block.x * sizeof(int), [&] {
      auto* s = reinterpret_cast<int*>(g_shared);
      const int t = static_cast<int>(threadIdx.x), b = static_cast<int>(blockIdx.y * gridDim.x + blockIdx.x);
      s[t] = 1000 * b + t;
      if (barrier) __syncthreads();
      seen[b * blockDim.x + t] = s[(t + 1) % blockDim.x];
      flat[b * blockDim.x + t] = b * static_cast<int>(blockDim.x) + t;
    });
    int ordered = 0;
    for (int b = 0; b < 6; ++b)
      for (int t = 0; t < 128; ++t) ordered += seen[b * 128 + t] == 1000 * b + (t + 1) % 128;
    // Without the barrier thread t runs to its end before thread t+1 stores: it reads the 0xFF fill.
    CHECK(ordered == (barrier ? 6 * 128 : 6));
    for (int i = 0; i < 6 * 128; ++i) CHECK(flat[i] == i);
  }
}

TEST_CASE("emulated schedules: warps one after another either way, or in lockstep", "[emu][core]") {
  // Each thread logs (warp, step) at two steps separated by a warp collective. Every thread appends
  // to one host vector: a race by CUDA's rules (the order is what the test observes), so not a
  // kernel for the race detector.
  if (emu::race_detector()) {
    WARN("not run under the race detector: the threads share one log");
    return;
  }
  for (const emu::Schedule schedule : emu::kSchedules) {
    INFO("schedule " << static_cast<int>(schedule));
    std::vector<std::pair<int, int>> log;
    emu::set_schedule(schedule);
    emu::launch(dim3(1), dim3(128), 0, [&] {
      const int warp = static_cast<int>(threadIdx.x / 32);
      log.emplace_back(warp, 0);
      __shfl_xor_sync(0xffffffffu, 0, 1);
      log.emplace_back(warp, 1);
    });
    emu::set_schedule(emu::Schedule::kWarpsAscending);
    REQUIRE(log.size() == 256);
    int out_of_order = 0;
    for (size_t i = 1; i < log.size(); ++i) {
      if (schedule == emu::Schedule::kWarpsAscending) out_of_order += log[i].first < log[i - 1].first;
      if (schedule == emu::Schedule::kWarpsDescending) out_of_order += log[i].first > log[i - 1].first;
    }
    if (schedule == emu::Schedule::kLockstep) {
      // Every warp logs step 0 before any goes on, except the lane completing each of warps 0-2's
      // shuffle, which runs on to step 1 until its next collective (here: the end).
      const auto last_step0 = std::find(log.rbegin(), log.rend(), std::make_pair(3, 0)).base() - log.begin();
      out_of_order = static_cast<int>(std::count_if(log.begin(), log.begin() + last_step0,
                                                    [](const auto& e) { return e.second == 1; })) - 3;
    }
    CHECK(out_of_order == 0);
    CHECK(log.front() == std::make_pair(schedule == emu::Schedule::kWarpsDescending ? 3 : 0, 0));
  }
}

TEST_CASE("emulated schedules: blocks ascending, or descending under kWarpsDescending", "[emu][core]") {
  // Each block logs its index; a grid of 3 x 2 x 2 blocks, x fastest.
  const dim3 grid(3, 2, 2);
  for (const emu::Schedule schedule : emu::kSchedules) {
    INFO("schedule " << static_cast<int>(schedule));
    std::vector<int> order;
    emu::set_schedule(schedule);
    emu::launch(grid, dim3(32), 0, [&] {
      if (threadIdx.x == 0) order.push_back(static_cast<int>(blockIdx.x + grid.x * (blockIdx.y + grid.y * blockIdx.z)));
    });
    emu::set_schedule(emu::Schedule::kWarpsAscending);
    std::vector<int> expected(12);
    for (int i = 0; i < 12; ++i) expected[i] = schedule == emu::Schedule::kWarpsDescending ? 11 - i : i;
    CHECK(order == expected);
  }
  // So a kernel whose block reads what an earlier block of the same launch wrote (a race on a GPU,
  // which runs blocks in no set order) gives different results under two schedules.
  std::vector<int> results;
  for (const emu::Schedule schedule : {emu::Schedule::kWarpsAscending, emu::Schedule::kWarpsDescending}) {
    std::vector<int> data = {1, 0};
    emu::set_schedule(schedule);
    emu::launch(dim3(2), dim3(32), 0, [&] {
      if (threadIdx.x == 0 && blockIdx.x == 0) data[0] = 5;
      if (threadIdx.x == 0 && blockIdx.x == 1) data[1] = data[0];
    });
    emu::set_schedule(emu::Schedule::kWarpsAscending);
    results.push_back(data[1]);
  }
  CHECK(results == std::vector<int>{5, 1});
}

TEST_CASE("emulated inter-block flags: tickets, ordered hand-over, and a wait that could hang", "[emu][core]") {
  // Each block takes a ticket and appends it to a list after the block with the ticket before it
  // has: the hand-over order of kernels/flash_attention_device.cuh's fused backward. Whatever
  // order the blocks run in, the tickets go out in run order and the list comes out in order.
  for (const emu::Schedule schedule : emu::kSchedules) {
    INFO("schedule " << static_cast<int>(schedule));
    uint32_t counter = 0, done = 0;
    std::vector<uint32_t> list;
    emu::set_schedule(schedule);
    emu::launch(dim3(4, 2), dim3(64), 0, [&] {
      __shared__ uint32_t ticket;
      if (threadIdx.x == 0) ticket = emu::atomic_add(&counter, 1u);
      __syncthreads();
      const uint32_t mine = ticket;
      if (threadIdx.x == 0) emu::wait_until_equal(&done, mine);
      __syncthreads();
      if (threadIdx.x == 0) list.push_back(mine);
      emu::threadfence();
      __syncthreads();
      if (threadIdx.x == 0) emu::store_release(&done, mine + 1);
    });
    emu::set_schedule(emu::Schedule::kWarpsAscending);
    CHECK(counter == 8);
    CHECK(done == 8);
    CHECK(list == std::vector<uint32_t>{0, 1, 2, 3, 4, 5, 6, 7});
  }
  // Waiting by block index instead of ticket: under kWarpsDescending block 7 runs first and waits
  // for a flag only block 6 (not yet run; on a GPU perhaps not resident) would set.
  uint32_t done = 0;
  emu::set_schedule(emu::Schedule::kWarpsDescending);
  CHECK_THROWS_WITH(emu::launch(dim3(8), dim3(32), 0,
                                [&] {
                                  if (threadIdx.x == 0) emu::wait_until_equal(&done, blockIdx.x);
                                  __syncthreads();
                                  if (threadIdx.x == 0) emu::store_release(&done, blockIdx.x + 1);
                                }),
                    Catch::Contains("block (7,0,0), thread 0") &&
                        Catch::Contains("waits for a flag to become 7, but it is 0") &&
                        Catch::Contains("a wait that can hang"));
  emu::set_schedule(emu::Schedule::kWarpsAscending);
  CHECK_THROWS_WITH(emu::atomic_add(&done, 1u), Catch::Contains("atomicAdd called outside an emulated launch"));
}

namespace {

// The fused backward's ordered sum in miniature: every block takes a ticket, and each of its 64
// threads folds the ticket into its element of `sums` (x -> 3x + ticket + 1: order matters) after
// the block with the ticket before has: thread 0 waits for the flag, a barrier holds the block's
// other threads until it has, and after the block's stores, a fence and a barrier, thread 0 sets
// the flag. `mistake` leaves one step out. The results for 8 blocks in ticket order are
// expected_ordered_sum().
enum class Mistake { kNone, kNoWait, kNoBarrierAfterWait, kReleaseBeforeBarrier };
void ordered_sums(std::vector<uint32_t>& sums, uint32_t& counter, uint32_t& done, Mistake mistake) {
  __shared__ uint32_t ticket;
  if (threadIdx.x == 0) ticket = emu::atomic_add(&counter, 1u);
  __syncthreads();
  const uint32_t mine = ticket;
  if (mistake != Mistake::kNoWait && threadIdx.x == 0) emu::wait_until_equal(&done, mine);
  if (mistake != Mistake::kNoBarrierAfterWait) __syncthreads();
  uint32_t& x = sums[threadIdx.x];
  const uint32_t before = x;
  __syncthreads();  // a load, then the store after a barrier: other blocks may run in between
  x = 3 * before + mine + 1;
  emu::threadfence();
  if (mistake == Mistake::kReleaseBeforeBarrier && threadIdx.x == 0) emu::store_release(&done, mine + 1);
  __syncthreads();
  if (mistake != Mistake::kReleaseBeforeBarrier && threadIdx.x == 0) emu::store_release(&done, mine + 1);
}

// One launch of ordered_sums: 64 threads per block, its sums and counters from zero.
struct OrderedSums {
  std::vector<uint32_t> sums = std::vector<uint32_t>(64, 0);
  uint32_t counter = 0, done = 0;
};
OrderedSums launch_ordered_sums(dim3 grid, Mistake mistake) {
  OrderedSums r;
  emu::launch(grid, dim3(64), 0, [&] { ordered_sums(r.sums, r.counter, r.done, mistake); });
  return r;
}

uint32_t expected_ordered_sum() {
  uint32_t x = 0;
  for (uint32_t ticket = 0; ticket < 8; ++ticket) x = 3 * x + ticket + 1;
  return x;
}

struct ResidentBlocks {  // sets the emulator's residency for a scope
  explicit ResidentBlocks(int n, emu::Turns turns = emu::Turns::kRoundRobin) { emu::set_resident_blocks(n, turns); }
  ~ResidentBlocks() { emu::set_resident_blocks(1); }
};

}  // namespace

TEST_CASE("emulated resident blocks run interleaved: a flag wait waits, a missing one shows", "[emu][core]") {
  const uint32_t expected = expected_ordered_sum();
  // Every step in place: the right sums under every residency, turn order and schedule, the same
  // bits every time.
  for (const emu::Turns turns : {emu::Turns::kRoundRobin, emu::Turns::kNewestFirst}) {
    for (const int resident : {1, 2, 3, 8}) {
      for (const emu::Schedule schedule : emu::kSchedules) {
        INFO("resident " << resident << ", turns " << static_cast<int>(turns) << ", schedule "
                         << static_cast<int>(schedule));
        const ResidentBlocks scope(resident, turns);
        emu::set_schedule(schedule);
        const OrderedSums r = launch_ordered_sums(dim3(4, 2), Mistake::kNone);
        emu::set_schedule(emu::Schedule::kWarpsAscending);
        CHECK(r.counter == 8);
        CHECK(r.done == 8);
        CHECK(std::count(r.sums.begin(), r.sums.end(), expected) == 64);
      }
    }
  }
  // A step left out: right when the blocks run one after another (all the emulator could show
  // before), wrong once a later block runs as far ahead as it can (newest first, the adversarial
  // order: in the fused flash kernel, round robin missed the first two, as a block that does not
  // wait runs a barrier ahead of the one that does). Each is a race, which the race detector
  // reports (the next test case), so not run under it here.
  if (emu::race_detector()) return;
  for (const Mistake mistake : {Mistake::kNoWait, Mistake::kNoBarrierAfterWait, Mistake::kReleaseBeforeBarrier}) {
    INFO("mistake " << static_cast<int>(mistake));
    for (const int resident : {1, 2, 4}) {
      INFO("resident " << resident);
      const ResidentBlocks scope(resident, emu::Turns::kNewestFirst);
      const std::vector<uint32_t> sums = launch_ordered_sums(dim3(8), mistake).sums;
      if (resident == 1) CHECK(std::count(sums.begin(), sums.end(), expected) == 64);
      else CHECK(std::count(sums.begin(), sums.end(), expected) < 64);  // thread 0's may be right
    }
  }
}

TEST_CASE("race detector: each step left out of the ordered hand-over between resident blocks", "[.][race]") {
  // Hidden: run by emu_race_detector in a ThreadSanitizer build (test_emu_races.cpp says why).
  REQUIRE(emu::race_detector());
  const ResidentBlocks scope(2, emu::Turns::kNewestFirst);
  size_t before = emu::race_reports();
  launch_ordered_sums(dim3(8), Mistake::kNone);
  CHECK(emu::race_reports() == before);
  for (const Mistake mistake : {Mistake::kNoWait, Mistake::kNoBarrierAfterWait, Mistake::kReleaseBeforeBarrier}) {
    INFO("mistake " << static_cast<int>(mistake));
    before = emu::race_reports();
    launch_ordered_sums(dim3(8), mistake);
    CHECK(emu::race_reports() > before);
  }
}

TEST_CASE("emulated resident blocks each have their own __shared__ arrays", "[emu][core]") {
  const ResidentBlocks scope(4);
  // Static: 8 blocks, 4 at a time, switching at each barrier of neighbour_through_static_shared.
  std::vector<int> seen(8 * 128, -1);
  emu::launch(dim3(8), dim3(128), 0, [&] {
    const int t = static_cast<int>(threadIdx.x);
    seen[blockIdx.x * 128 + t] = neighbour_through_static_shared(static_cast<int>(blockIdx.x));
  });
  for (int b = 0; b < 8; ++b)
    for (int t = 0; t < 128; ++t) CHECK(seen[b * 128 + t] == (t + 1) % 128 + 1000 * b);

  // Dynamic: registered by its instance function, each resident block's thread has its own.
  emu::set_shared_memory([]() -> void* { return dynamic_floats; }, sizeof(dynamic_floats));
  std::vector<float> before(8 * 64, 0.0f), after(8 * 64, 0.0f);
  emu::launch(dim3(8), dim3(64), 64 * sizeof(float), [&] {
    float* s = dynamic_shared_floats<float>();
    const int t = static_cast<int>(threadIdx.x), i = static_cast<int>(blockIdx.x) * 64 + t;
    before[i] = s[t];
    __syncthreads();
    s[t] = 100.0f * blockIdx.x + t;
    __syncthreads();
    after[i] = s[63 - t];
  });
  for (int b = 0; b < 8; ++b) {
    for (int t = 0; t < 64; ++t) {
      CHECK(std::isnan(before[b * 64 + t]));
      CHECK(after[b * 64 + t] == 100.0f * b + (63 - t));
    }
  }
  // One window for every thread cannot hold several blocks' shared memory at once.
  use_test_shared();
  CHECK_THROWS_WITH(emu::launch(dim3(2), dim3(32), 64, [] {}),
                    Catch::Contains("2 resident blocks needs shared memory per OS thread"));
  emu::launch(dim3(2), dim3(32), 0, [] {});  // without shared memory it may
}

TEST_CASE("emulated resident blocks that all wait for one not started are a hang", "[emu][core]") {
  // Waiting by block index: in ascending order block b waits for block b-1, which started
  // before it; in descending order blocks 7 and 6 take both slots and wait for 6 and 5, which
  // cannot start until one of them ends.
  const ResidentBlocks scope(2);
  for (const emu::Schedule schedule : {emu::Schedule::kWarpsAscending, emu::Schedule::kWarpsDescending}) {
    uint32_t done = 0;
    emu::set_schedule(schedule);
    const auto run = [&] {
      emu::launch(dim3(8), dim3(32), 0, [&] {
        if (threadIdx.x == 0) emu::wait_until_equal(&done, blockIdx.x);
        __syncthreads();
        if (threadIdx.x == 0) emu::store_release(&done, blockIdx.x + 1);
      });
    };
    if (schedule == emu::Schedule::kWarpsAscending) {
      run();
      CHECK(done == 8);
    } else {
      CHECK_THROWS_WITH(run(), Catch::Contains("every resident block (2 of at most 2 at a time) waits") &&
                                   Catch::Contains("block (7,0,0) thread 0 waits for a flag to become 7 (it is 0)") &&
                                   Catch::Contains("block (6,0,0) thread 0 waits for a flag to become 6 (it is 0)"));
    }
    emu::set_schedule(emu::Schedule::kWarpsAscending);
  }
  // A rule broken in one resident block stops the launch with its report; the next one runs.
  CHECK_THROWS_WITH(emu::launch(dim3(4), dim3(32), 0,
                                [] {
                                  __syncthreads();
                                  if (blockIdx.x != 2 || threadIdx.x < 16) __shfl_xor_sync(0xffffffffu, 1, 1);
                                }),
                    Catch::Contains("block (2,0,0)") && Catch::Contains("divergent warp collective"));
  std::vector<int> ran(4 * 32, 0);
  emu::launch(dim3(4), dim3(32), 0,
              [&] { ran[blockIdx.x * 32 + threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 16); });
  CHECK(std::count(ran.begin(), ran.end(), 1) == 128);
  CHECK_THROWS_WITH(emu::set_resident_blocks(0), Catch::Contains("from 1 to 32"));
}

TEST_CASE("the emulator reports misuse the hardware would punish", "[emu][core]") {
  use_test_shared();
  const auto lane = [] { return static_cast<int>(threadIdx.x % 32); };
  SECTION("a warp collective that not every lane reaches") {
    CHECK_THROWS_WITH(emu::launch(dim3(1), dim3(32), 0,
                                  [&] {
                                    if (lane() < 16) __shfl_xor_sync(0xffffffffu, 1.0f, 1);
                                  }),
                      Catch::Contains("divergent warp collective") && Catch::Contains("lanes 0-15 wait at shfl") &&
                          Catch::Contains("lanes 16-31 exited"));
  }
  SECTION("lanes of one warp at different collectives") {
    CHECK_THROWS_WITH(emu::launch(dim3(2), dim3(64), 1024,
                                  [&] {
                                    uint32_t r[4];
                                    float c[4] = {};
                                    const uint32_t a[4] = {};
                                    if (threadIdx.x < 40) emu::ldmatrix_x4(r, 0, false);
                                    else emu::mma_m16n8k16_bf16(c, a, 0, 0);
                                  }),
                      Catch::Contains("block (0,0,0)") && Catch::Contains("warp 1") &&
                          Catch::Contains("executes mma.m16n8k16 while lanes 0-7 wait at ldmatrix.x4"));
  }
  SECTION("a ballot that not every lane reaches") {
    CHECK_THROWS_WITH(emu::launch(dim3(1), dim3(32), 0,
                                  [&] {
                                    if (lane() != 9) __ballot_sync(0xffffffffu, true);
                                  }),
                      Catch::Contains("divergent warp collective: vote.sync.ballot executed while lanes 9 of the "
                                      "warp have exited"));
  }
  SECTION("__syncthreads_or and __syncthreads at different places") {
    const auto mixed = [] {
      if (threadIdx.x < 32) __syncthreads();
      else __syncthreads_or(1);
    };
    CHECK_THROWS_WITH(emu::launch(dim3(1), dim3(64), 0, mixed),
                      Catch::Contains("__syncthreads at") && Catch::Contains("while other threads wait at the one at"));
  }
  SECTION("__syncthreads at two different places") {
    // Outside the CHECK macro: tokens inside a macro argument all get the macro's line.
    const auto two_barriers = [] {
      if (threadIdx.x < 32) __syncthreads();
      else __syncthreads();
    };
    CHECK_THROWS_WITH(emu::launch(dim3(1), dim3(64), 0, two_barriers),
                      Catch::Contains("__syncthreads at") && Catch::Contains("while other threads wait at the one at"));
  }
  SECTION("a __syncthreads that a live thread never reaches") {
    CHECK_THROWS_WITH(emu::launch(dim3(1), dim3(128), 0,
                                  [&] {
                                    if (threadIdx.x < 48) __syncthreads();
                                    else __shfl_xor_sync(0xffffffffu, 0, 1);
                                  }),
                      Catch::Contains("deadlock") && Catch::Contains("warp 1: lanes 16-31 wait at shfl.sync.bfly") &&
                          Catch::Contains("lanes 0-15 at __syncthreads") && Catch::Contains("reached by 48 threads"));
  }
  SECTION("ldmatrix with a row address that is not 16-byte aligned") {
    CHECK_THROWS_WITH(emu::launch(dim3(1), dim3(32), 4096,
                                  [&] {
                                    uint32_t r[4];
                                    emu::ldmatrix_x4(r, static_cast<uint32_t>(16 * lane() + (lane() == 5 ? 8 : 0)), true);
                                  }),
                      Catch::Contains("block (0,0,0), warp 0: ldmatrix: the row address of lane 5 is 88, not 16-byte aligned"));
  }
  SECTION("ldmatrix past the shared memory the launch asked for") {
    CHECK_THROWS_WITH(emu::launch(dim3(1), dim3(32), 1024,
                                  [&] {
                                    uint32_t r[4];
                                    emu::ldmatrix_x4(r, static_cast<uint32_t>(lane() == 3 ? 1024 : 16 * lane()), false);
                                  }),
                      Catch::Contains("lane 3 reads shared bytes [1024, 1040) past the 1024 bytes"));
  }
  SECTION("a store past the shared memory the launch asked for") {
    CHECK_THROWS_WITH(emu::launch(dim3(1), dim3(32), 1024, [&] { g_shared[1024 + threadIdx.x] = 1; }),
                      Catch::Contains("shared memory written at byte 1024, past the 1024 bytes"));
  }
  SECTION("plain loads before any store, or past the launch's size, read NaN") {
    float before = 0.0f, past = 0.0f;
    __nv_bfloat16 past_bf16;
    emu::launch(dim3(1), dim3(32), 1024, [&] {
      if (threadIdx.x != 0) return;
      std::memcpy(&before, g_shared + 512, 4);
      std::memcpy(&past, g_shared + 1024 + 64, 4);
      std::memcpy(&past_bf16, g_shared + 2000, 2);
    });
    CHECK(std::isnan(before));
    CHECK(std::isnan(past));
    CHECK(std::isnan(__bfloat162float(past_bf16)));
  }
  SECTION("a generic address outside shared memory used as a shared one") {
    static int global_value = 0;
    CHECK_THROWS_WITH(emu::launch(dim3(1), dim3(32), 0, [&] { emu::shared_address(&global_value); }),
                      Catch::Contains("thread 0 (warp 0, lane 0)") && Catch::Contains("does not point into shared"));
  }
  SECTION("launches the hardware would refuse, and what is not emulated") {
    CHECK_THROWS_WITH(emu::launch(dim3(1), dim3(32), emu::kSharedCapacity + 16, [] {}),
                      Catch::Contains("more than the 232448 an sm_90 block can have"));
    CHECK_THROWS_WITH(emu::launch(dim3(1), dim3(48), 0, [] {}), Catch::Contains("whole warps"));
    CHECK_THROWS_WITH(emu::launch(dim3(1), dim3(32), 0, [] { __shfl_xor_sync(0xffffu, 0, 1); }),
                      Catch::Contains("partial member mask"));
    CHECK_THROWS_WITH(emu::launch(dim3(1), dim3(32), 0, [] { __ballot_sync(0xffu, 1); }),
                      Catch::Contains("__ballot_sync with a partial member mask"));
  }
  SECTION("device functions called outside a launch") {
    CHECK_THROWS_WITH(__shfl_xor_sync(0xffffffffu, 0, 1), Catch::Contains("called outside an emulated launch"));
    CHECK_THROWS_WITH(__syncthreads(), Catch::Contains("called outside an emulated launch"));
    CHECK_THROWS_WITH(__syncthreads_or(1), Catch::Contains("called outside an emulated launch"));
    CHECK_THROWS_WITH(__ballot_sync(0xffffffffu, 1), Catch::Contains("called outside an emulated launch"));
  }
  // After a reported launch the emulator starts clean.
  std::vector<int> ran(2 * 32, 0);
  emu::launch(dim3(2), dim3(32), 0,
              [&] { ran[blockIdx.x * 32 + threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 16); });
  CHECK(std::count(ran.begin(), ran.end(), 1) == 64);
}
