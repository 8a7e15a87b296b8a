// GPT-2 pre-tokenisation and the byte <-> unicode mapping, shared by the encoder and the trainer.
//   pattern: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   e.g. "Hello  world's\n" -> "Hello" " " " world" "'s" "\n"
// \s is spelled out as Unicode White_Space (what tiktoken's Rust regex means by \s; PCRE2's own
// \s misses U+0085). Invalid UTF-8: every byte that is not part of a valid character becomes a
// one-byte piece of its own (flagged `invalid`); valid text around it is split as if the invalid
// bytes were not there but acted as a boundary. Matching is PCRE2 with JIT, one match state per thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace gpt2cc::tok {

// GPT-2's reversible byte -> printable unicode character map (bytes_to_unicode in encoder.py):
// printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100.. in byte order.
// Returned as the UTF-8 encoding of each byte's character.
const std::array<std::string, 256>& byte_to_unicode();
// Inverse: a string of mapped characters back to raw bytes; false if a character is not in the map.
bool unicode_to_bytes(std::string_view mapped, std::string& bytes);
std::string bytes_to_unicode(std::string_view bytes);

// One pre-token: [begin, end) into the text; invalid = a stray byte of invalid UTF-8.
struct Piece {
  uint32_t begin, end;
  bool invalid;
};

// Appends the pre-tokens of `text` (which must hold no special tokens to honour) to `out`.
void pretokenize(std::string_view text, std::vector<Piece>& out);

// Whether `character`, one well-formed UTF-8 character, is in the pattern's white-space class as
// PCRE2 compiles it (TAB LF VT FF CR, NEL, \p{Z}; core/utf8.hpp's is_white_space_code_point
// lists the same, which the tests check for every code point).
bool is_pattern_white_space(std::string_view character);

// A split position p in text such that pre-tokenising text[0,p) and text[p,n) separately gives
// the same pieces as the whole: text[p] is ASCII white space (space, TAB, LF, VT, FF, CR) and
// text[p-1] ends a character that is not white space to the pattern (any other ASCII byte, or a
// whole well-formed character beyond ASCII, a CJK line's "。"). No piece runs from such a
// character into white space (a space only ever leads a piece), so one starts at p; the pattern
// has no look-behind, so the pieces from p are the whole's; and the piece before p ends at p in
// both texts, no look-ahead before it reading past text[p - 1]. Prose, minified JSON and a corpus
// without newlines all have such points. Searches backwards from `before` (exclusive) down to
// `after` (exclusive); returns 0 if none.
size_t find_safe_split(std::string_view text, size_t after, size_t before);

// Whether an occurrence of one of `specials` in text starts before p and ends after it.
bool straddles_special(std::string_view text, size_t p, std::span<const std::string_view> specials);

// Where to cut a stream's text read so far (more may follow it): the last safe split
// (find_safe_split) after `scanned` that no special token straddles, taken only at or before
// text.size() - (longest special - 1), so that a special straddling a cut lies wholly in `text`
// and is seen (one cut off by the text's end is not). 0 when there is none yet; then `scanned`
// moves past what was searched, where the next call, on a longer text, starts.
size_t find_block_cut(std::string_view text, std::span<const std::string_view> specials, size_t& scanned);

}  // namespace gpt2cc::tok
