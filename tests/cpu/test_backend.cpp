// CpuBackend's own memory work. zero: exactly the bytes asked for become zero, none around them,
// on either side of its 1 MiB (parallel) and 16 MiB (streaming stores) thresholds, from starts and
// ends on no particular boundary, with one thread and with two. allocate: zero-filled, and from
// 4 MiB up in whole 2 MiB pages that Linux may back with transparent huge pages.
#include "common/catch.hpp"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
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

namespace {
// The THPeligible field of /proc/self/smaps for the mapping holding `address`: whether the kernel
// may back it with transparent huge pages. nullopt where smaps or the field is missing.
std::optional<bool> huge_page_eligible(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  const uintptr_t at = reinterpret_cast<uintptr_t>(address);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t start = 0, end = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> start >> dash >> end && dash == '-') {  // a mapping's first line
      inside = start <= at && at < end;
    } else if (inside && line.starts_with("THPeligible:")) {
      return line.find('1') != std::string::npos;
    }
  }
  return std::nullopt;
}

// Transparent huge pages granted on madvise at least ("always" or "madvise" selected).
bool huge_pages_on_advice() {
  std::ifstream mode("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string modes;
  std::getline(mode, modes);
  return modes.find("[always]") != std::string::npos || modes.find("[madvise]") != std::string::npos;
}
}  // namespace

TEST_CASE("CpuBackend::allocate: zero-filled; from 4 MiB up in 2 MiB pages, advised huge", "[cpu][backend]") {
  constexpr size_t kMiB = size_t{1} << 20;
  cpu::CpuBackend backend(1);
  for (size_t bytes : {size_t{100}, kMiB, 4 * kMiB - 64, 4 * kMiB, 9 * kMiB + 5}) {
    INFO(bytes << " bytes");
    auto* data = static_cast<unsigned char*>(backend.allocate(bytes));
    REQUIRE(data != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(data) % 64 == 0);
    size_t nonzero = 0;
    for (size_t i = 0; i < bytes; ++i) nonzero += data[i] != 0;
    CHECK(nonzero == 0);
    std::memset(data, 0x5A, bytes);  // every byte writable
    if (bytes >= 4 * kMiB) {
      CHECK(reinterpret_cast<uintptr_t>(data) % (2 * kMiB) == 0);
      const std::optional<bool> eligible = huge_page_eligible(data);
      if (eligible && huge_pages_on_advice()) {
        CHECK(*eligible);
      } else {
        WARN("this kernel offers no transparent huge pages (or no THPeligible in smaps): not checked");
      }
    }
    backend.release(data);
  }
}
