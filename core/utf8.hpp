// UTF-8 validation, one decoder for the whole engine (the tokenizer's input check, prepare's
// readers, generate's text stream). Well-formed = RFC 3629 / Unicode Table 3-7: no overlong
// forms, no surrogates D800-DFFF, nothing above U+10FFFF. Where invalid bytes are replaced, each
// maximal subpart (the longest prefix of a well-formed sequence, or one byte) becomes one U+FFFD,
// as the Unicode Standard recommends (chapter 3, "U+FFFD Substitution of Maximal Subparts"):
//   "a\xE2\x82(" -> "a" U+FFFD "("      "\xC0\xAF" -> U+FFFD U+FFFD (C0 never starts a sequence)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace gpt2cc {

// Byte offset of the first byte that does not start a well-formed sequence, or npos.
size_t find_invalid_utf8(std::string_view s);
inline bool is_valid_utf8(std::string_view s) { return find_invalid_utf8(s) == std::string_view::npos; }

// Appends bytes to out with every maximal invalid subpart as U+FFFD. Returns the bytes consumed:
// all of them when final; otherwise a trailing sequence that is well-formed so far but incomplete
// is left for the next call (streaming: a character may be split across tokens).
size_t append_valid_utf8(std::string_view bytes, bool final, std::string& out);
// s with every maximal invalid subpart replaced by U+FFFD.
std::string replace_invalid_utf8(std::string_view s);

// Whether code point cp is white space as GPT-2's pre-tokenisation pattern has it: TAB LF VT FF
// CR, NEL (U+0085) and Unicode's separators \p{Z} (U+0020, U+00A0, U+1680, U+2000-U+200A, U+2028,
// U+2029, U+202F, U+205F, U+3000). The tokenizer's tests hold this list to the pattern's class,
// as PCRE2 compiles it, for every code point.
bool is_white_space_code_point(uint32_t cp);
// Whether every character of text is such white space: true for "", false for text that is not
// valid UTF-8 (an invalid byte is no character). prepare's whitespace-only lines are these.
bool is_white_space(std::string_view text);

}  // namespace gpt2cc
