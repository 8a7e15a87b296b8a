// UTF-8 validation and white space (see core/utf8.hpp).
#include "core/utf8.hpp"

#include <cstdint>
#include <cstring>

namespace gpt2cc {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// The well-formed prefix of the sequence at s[i]: `valid` bytes of it are present and
// well-formed so far, of the `length` its lead byte announces (0: s[i] starts no sequence).
// Table 3-7: the second byte's range depends on the lead byte (E0: A0-BF, no overlongs; ED:
// 80-9F, no surrogates; F0: 90-BF; F4: 80-8F, nothing above U+10FFFF); later bytes are 80-BF.
struct Prefix {
  size_t valid, length;
};
Prefix sequence_prefix(std::string_view s, size_t i) {
  const auto lead = static_cast<unsigned char>(s[i]);
  if (lead < 0x80) return {1, 1};
  size_t length = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
  } else {
    return {0, 0};  // a continuation byte, C0, C1 or F5-FF
  }
  size_t k = 1;
  while (k < length && i + k < s.size()) {
    const auto c = static_cast<unsigned char>(s[i + k]);
    if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF)) break;
    ++k;
  }
  return {k, length};
}

// Most text is ASCII: the bytes from i up to the first one with its high bit set, 8 at a time.
size_t skip_ascii(std::string_view s, size_t i) {
  while (i + 8 <= s.size()) {
    uint64_t word;
    std::memcpy(&word, s.data() + i, 8);
    if (word & 0x8080808080808080ull) break;
    i += 8;
  }
  while (i < s.size() && static_cast<unsigned char>(s[i]) < 0x80) ++i;
  return i;
}

}  // namespace

size_t find_invalid_utf8(std::string_view s) {
  for (size_t i = skip_ascii(s, 0); i < s.size(); i = skip_ascii(s, i)) {
    const Prefix p = sequence_prefix(s, i);
    if (p.length == 0 || p.valid < p.length) return i;
    i += p.length;
  }
  return std::string_view::npos;
}

size_t append_valid_utf8(std::string_view bytes, bool final, std::string& out) {
  size_t i = 0;
  while (i < bytes.size()) {
    const size_t ascii_end = skip_ascii(bytes, i);
    out.append(bytes.substr(i, ascii_end - i));
    i = ascii_end;
    if (i == bytes.size()) break;
    const Prefix p = sequence_prefix(bytes, i);
    if (p.length != 0 && p.valid == p.length) {
      out.append(bytes.substr(i, p.length));
      i += p.length;
    } else if (p.length != 0 && i + p.valid == bytes.size() && !final) {
      break;  // well-formed so far, the rest has not arrived yet
    } else {
      out += kReplacement;  // the maximal invalid subpart (at least one byte)
      i += p.valid == 0 ? 1 : p.valid;
    }
  }
  return i;
}

std::string replace_invalid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  append_valid_utf8(s, true, out);
  return out;
}

bool is_white_space_code_point(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

bool is_white_space(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    if (lead < 0x80) {
      if (!is_white_space_code_point(lead)) return false;
      ++i;
      continue;
    }
    const Prefix p = sequence_prefix(text, i);
    if (p.length == 0 || p.valid < p.length) return false;
    uint32_t cp = lead & (0xFF >> (p.length + 1));  // the lead byte's payload bits
    for (size_t k = 1; k < p.length; ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
    if (!is_white_space_code_point(cp)) return false;
    i += p.length;
  }
  return true;
}

}  // namespace gpt2cc
