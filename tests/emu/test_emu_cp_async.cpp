// Self-tests of the cp.async emulation (cp_async_emu.hpp): a copy lands in shared memory only at
// the wait_group that completes its group, so a read before the wait sees the old bytes (or, in
// the other landing, at its issue, and the wait copies nothing again);
// wait_group n leaves exactly the newest n groups in flight and copies never committed wait for
// nothing; the misuse it promises to catch (a destination outside shared memory, a misaligned
// address, copies a block leaves in flight, code compiled for an architecture before cp.async)
// throws emu::Violation.
#include "common/catch.hpp"

#include <cstdint>
#include <cstring>
#include <vector>

#include "emu/cp_async_emu.hpp"
#include "emu/cuda_emu.hpp"

using namespace gpt2cc;

namespace {

alignas(16) unsigned char g_shared[emu::kSharedCapacity];
alignas(16) uint32_t g_source[3][4] = {{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}};

void use_test_shared() {
  emu::set_shared_memory(g_shared, sizeof(g_shared));
  emu::set_unwritten_shared_byte(0);
}

uint32_t first_word(int slot) {
  uint32_t w;
  std::memcpy(&w, g_shared + 16 * slot, 4);
  return w;
}

// A launch of one warp; the body runs as each thread, after which no copies may be in flight.
template <class Body>
void launch_warp(Body body) {
  use_test_shared();
  emu::launch(dim3(1), dim3(32), 512, std::function<void()>(body));
  emu::cp_async_check_drained();
}

// The running lane's own 16 bytes of shared memory: copies of different lanes to one address would
// be a race (which the race detector reports: cuda_emu.hpp, race_detector).
unsigned char* lane_slot() { return g_shared + 16 * threadIdx.x; }

}  // namespace

TEST_CASE("cp.async lands at the wait_group that completes its group", "[emu][cp_async]") {
  std::vector<uint32_t> seen(6, 99);
  launch_warp([&] {
    if (threadIdx.x != 0) return;
    emu::cp_async_16(g_shared, g_source[0]);  // group 0: slot 0
    emu::cp_async_commit();
    emu::cp_async_16(g_shared + 16, g_source[1]);  // group 1: slot 1
    emu::cp_async_commit();
    emu::cp_async_16(g_shared + 32, g_source[2]);  // not committed: slot 2
    seen[0] = first_word(0);                       // nothing waited for yet
    emu::cp_async_wait(1);                         // group 0 done, group 1 may stay in flight
    seen[1] = first_word(0);
    seen[2] = first_word(1);
    emu::cp_async_wait(0);  // group 1 done; the uncommitted copy is in no group
    seen[3] = first_word(1);
    seen[4] = first_word(2);
    emu::cp_async_commit();
    emu::cp_async_wait(0);
    seen[5] = first_word(2);
  });
  CHECK(seen == std::vector<uint32_t>{0, 1, 0, 5, 0, 9});
}

TEST_CASE("cp.async landing at issue: the copy is there at once, its wait copies nothing again", "[emu][cp_async]") {
  std::vector<uint32_t> seen(3, 99);
  emu::set_cp_async_landing(emu::CpAsyncLanding::kAtIssue);
  launch_warp([&] {
    if (threadIdx.x != 0) return;
    emu::cp_async_16(g_shared, g_source[0]);
    seen[0] = first_word(0);  // landed before any commit or wait
    emu::cp_async_commit();
    std::memset(g_shared, 0, 16);  // a (racy) write after the landing: the wait must not undo it
    emu::cp_async_wait(0);
    seen[1] = first_word(0);
    emu::cp_async_16(g_shared + 16, g_source[1]);
    seen[2] = first_word(1);
    emu::cp_async_commit();  // the group still has to be waited for
    emu::cp_async_wait(0);
  });
  emu::set_cp_async_landing(emu::CpAsyncLanding::kAtWait);
  CHECK(seen == std::vector<uint32_t>{1, 0, 5});
  // Left in flight, a landed copy is still one the block did not wait for.
  emu::set_cp_async_landing(emu::CpAsyncLanding::kAtIssue);
  use_test_shared();
  emu::launch(dim3(1), dim3(32), 64, std::function<void()>([] {
                if (threadIdx.x == 0) emu::cp_async_16(g_shared, g_source[0]);
              }));
  emu::set_cp_async_landing(emu::CpAsyncLanding::kAtWait);
  CHECK_THROWS_AS(emu::cp_async_check_drained(), emu::Violation);
}

TEST_CASE("cp.async: empty groups complete at once, every thread keeps its own groups", "[emu][cp_async]") {
  std::vector<uint32_t> seen(32, 99);
  launch_warp([&] {
    const int t = static_cast<int>(threadIdx.x);
    if (t < 3) emu::cp_async_16(g_shared + 16 * t, g_source[t]);
    emu::cp_async_commit();
    emu::cp_async_commit();  // an empty group on top
    emu::cp_async_wait(1);   // completes the first group of each thread: its own copy
    __syncthreads();
    seen[t] = first_word(t % 3);
  });
  for (int t = 0; t < 32; ++t) CHECK(seen[t] == g_source[t % 3][0]);
}

TEST_CASE("cp.async misuse throws emu::Violation", "[emu][cp_async]") {
  alignas(16) static unsigned char not_shared[32];
  SECTION("destination outside shared memory") {
    CHECK_THROWS_AS(launch_warp([] { emu::cp_async_16(not_shared, g_source[0]); }), emu::Violation);
  }
  SECTION("misaligned source or destination") {
    CHECK_THROWS_AS(launch_warp([] { emu::cp_async_16(g_shared + 8, g_source[0]); }), emu::Violation);
    CHECK_THROWS_AS(
        launch_warp([] { emu::cp_async_16(g_shared, reinterpret_cast<const unsigned char*>(g_source[0]) + 4); }),
        emu::Violation);
  }
  SECTION("copies a block leaves in flight") {
    CHECK_THROWS_WITH(launch_warp([] {
                        emu::cp_async_16(lane_slot(), g_source[0]);
                        emu::cp_async_commit();
                      }),
                      Catch::Contains("exited with copies not waited for"));
    CHECK_THROWS_WITH(launch_warp([] { emu::cp_async_16(lane_slot(), g_source[0]); }),
                      Catch::Contains("exited with copies not waited for"));
    // An empty group left in flight is no copy.
    CHECK_NOTHROW(launch_warp([] { emu::cp_async_commit(); }));
  }
  SECTION("cp.async in code compiled for sm_75 (which has no such instruction)") {
    emu::set_code_architecture(75);
    CHECK_THROWS_WITH(launch_warp([] {
                        emu::cp_async_16(lane_slot(), g_source[0]);
                        emu::cp_async_commit();
                        emu::cp_async_wait(0);
                      }),
                      Catch::Contains("cp.async requires sm_80, and this code is compiled for sm_75"));
    emu::cp_async_check_drained();
    emu::set_code_architecture(80);
    CHECK_NOTHROW(launch_warp([] {
      emu::cp_async_16(lane_slot(), g_source[0]);
      emu::cp_async_commit();
      emu::cp_async_wait(0);
    }));
    emu::set_code_architecture(0);
  }
  SECTION("copies of one block seen by the next") {
    use_test_shared();
    CHECK_THROWS_WITH(emu::launch(dim3(2), dim3(32), 512, std::function<void()>([] {
                                    emu::cp_async_16(lane_slot(), g_source[0]);
                                    emu::cp_async_commit();
                                  })),
                      Catch::Contains("exited with copies not waited for"));
    // Block 0's copies are still held: the check reports them once and clears the state.
    CHECK_THROWS_AS(emu::cp_async_check_drained(), emu::Violation);
    CHECK_NOTHROW(emu::cp_async_check_drained());
  }
}
