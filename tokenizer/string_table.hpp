// StringTable: an append-only open-addressing hash map from byte strings to a 64-bit value,
// keys kept in one arena. Made for the encoder's hot path (pre-token -> token id, and the
// per-thread pre-token -> ids cache), where std::unordered_map's node chasing and modulo by a
// prime cost a third of the encode time. Linear probing, load factor <= 1/2, 64-bit hash
// stored per slot so most mismatches are rejected without touching the arena.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace gpt2cc::tok {

// A fast non-cryptographic hash: 8-byte words folded with multiply-xorshift steps.
inline uint64_t hash_bytes(std::string_view s) {
  constexpr uint64_t k = 0x9E3779B97F4A7C15ull;
  uint64_t h = (s.size() + 1) * 0xC2B2AE3D27D4EB4Full;
  const char* p = s.data();
  size_t n = s.size();
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * k;
    h ^= h >> 29;
  }
  if (n) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * k;
    h ^= h >> 29;
  }
  return h ^ (h >> 32);
}

class StringTable {
 public:
  static constexpr uint64_t kMissing = ~0ull;

  explicit StringTable(size_t expected = 1024) { rehash(expected); }

  uint64_t find(std::string_view key) const {
    uint64_t h = hash_bytes(key);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.len == kEmpty) return kMissing;
      if (s.hash == h && s.len == key.size() && std::memcmp(arena_.data() + s.offset, key.data(), key.size()) == 0)
        return s.value;
    }
  }

  // Inserts key -> value; an existing key keeps its value. Returns false if it existed.
  bool insert(std::string_view key, uint64_t value) {
    if (2 * (size_ + 1) > slots_.size()) rehash(slots_.size());
    uint64_t h = hash_bytes(key);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.len == kEmpty) {
        s = {h, arena_.size(), uint32_t(key.size()), value};
        arena_.append(key);
        ++size_;
        return true;
      }
      if (s.hash == h && s.len == key.size() && std::memcmp(arena_.data() + s.offset, key.data(), key.size()) == 0)
        return false;
    }
  }

  size_t size() const { return size_; }
  size_t key_bytes() const { return arena_.size(); }  // of the keys held (their arena)
  void clear() {
    for (Slot& s : slots_) s.len = kEmpty;
    arena_.clear();
    size_ = 0;
  }

 private:
  static constexpr uint32_t kEmpty = ~0u;
  struct Slot {
    uint64_t hash = 0;
    uint64_t offset = 0;
    uint32_t len = kEmpty;
    uint64_t value = 0;
  };
  void rehash(size_t at_least) {
    size_t cap = 16;
    while (cap < 2 * at_least) cap *= 2;
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    for (const Slot& s : old) {
      if (s.len == kEmpty) continue;
      for (size_t i = s.hash & mask_;; i = (i + 1) & mask_) {
        if (slots_[i].len == kEmpty) {
          slots_[i] = s;
          break;
        }
      }
    }
  }
  std::vector<Slot> slots_;
  std::string arena_;
  size_t mask_ = 0, size_ = 0;
};

}  // namespace gpt2cc::tok
