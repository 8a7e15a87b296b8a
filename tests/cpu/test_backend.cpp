// CpuBackend::zero: exactly the bytes asked for become zero, none around them, on either side of
// its 1 MiB (parallel) and 16 MiB (streaming stores) thresholds, from starts and ends on no
// particular boundary, with one thread and with two.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/backend.hpp"

using namespace gpt2cc;

namespace {
// The first byte of buffer that breaks "zero in [begin, end), 0xA5 elsewhere", or -1.
std::ptrdiff_t first_wrong_byte(const std::vector<unsigned char>& buffer, size_t begin, size_t end) {
  for (size_t i = 0; i < buffer.size(); ++i) {
    const unsigned char want = i >= begin && i < end ? 0 : 0xA5;
    if (buffer[i] != want) return std::ptrdiff_t(i);
  }
  return -1;
}
}  // namespace

TEST_CASE("CpuBackend::zero zeroes exactly the bytes it is given", "[cpu][backend]") {
  constexpr size_t kMiB = size_t{1} << 20;
  // Below 1 MiB, at it, between, just below and at 16 MiB, past it by an odd count.
  const size_t sizes[] = {0, 1, 15, 4097, kMiB, kMiB + 3, 16 * kMiB - 1, 16 * kMiB, 16 * kMiB + 77};
  const size_t offsets[] = {0, 1, 8, 15, 64};  // the buffer's start against a 64-byte boundary
  constexpr size_t kGuard = 256;
  for (int threads : {1, 2}) {
    cpu::CpuBackend backend(threads);
    for (size_t bytes : sizes) {
      for (size_t offset : offsets) {
        // kGuard bytes at least on either side; the start `offset` bytes past a 64-byte boundary.
        std::vector<unsigned char> buffer(kGuard + 128 + bytes + kGuard, 0xA5);
        const size_t pad = (64 - reinterpret_cast<uintptr_t>(buffer.data()) % 64) % 64;
        const size_t begin = kGuard + pad + offset;
        REQUIRE(reinterpret_cast<uintptr_t>(buffer.data() + begin) % 64 == offset % 64);
        backend.zero(buffer.data() + begin, bytes);
        INFO("threads " << threads << ", " << bytes << " bytes from offset " << offset);
        CHECK(first_wrong_byte(buffer, begin, begin + bytes) == -1);
      }
    }
  }
}
