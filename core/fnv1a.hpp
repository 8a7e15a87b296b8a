// FNV-1a 64 (Fowler, Noll, Vo): from the offset basis, h = (h ^ byte) * 0x100000001b3 for each
// byte. The checkpoint checksum (core/checkpoint.cpp) and the tokenizer fingerprint recorded in
// shards and checkpoints (tokenizer/tokenizer.cpp) are this hash: a change here changes both.
#pragma once

#include <cstddef>
#include <cstdint>

namespace gpt2cc {

struct Fnv1a {
  uint64_t h = 0xcbf29ce484222325ull;
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  }
  void add_u64(uint64_t v) { add(&v, sizeof v); }  // little-endian bytes on every host built for
};

}  // namespace gpt2cc
