// GPT-2 pre-tokenisation with PCRE2 JIT, the byte <-> unicode map and the UTF-8 checks.
// Two compiled forms of one pattern: the fast one for valid UTF-8 (no validity checks inside
// the match loop) and a PCRE2_MATCH_INVALID_UTF one used only when the text is not valid UTF-8.
#include "tokenizer/pretokenizer.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>

#include "core/check.hpp"
#include "core/utf8.hpp"

namespace gpt2cc::tok {

namespace {

// Unicode White_Space = \p{Z} + TAB LF VT FF CR + NEL (U+0085); see tokenizer/pretokenizer.hpp.
#define GPT2CC_WS "\\t\\n\\x{0B}\\f\\r\\x{85}\\p{Z}"
constexpr const char* kPattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" GPT2CC_WS "\\p{L}\\p{N}]+|[" GPT2CC_WS "]+(?![^" GPT2CC_WS
    "])|[" GPT2CC_WS "]+";
// One character of the pattern's white space (compiled anchored): find_safe_split's test.
constexpr const char* kSpacePattern = "[" GPT2CC_WS "]";
#undef GPT2CC_WS

pcre2_code* compile(const char* pattern, uint32_t extra) {
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | extra, &err, &off, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    ENSURE(false, "PCRE2 failed to compile the pattern {} at offset {}: {}", pattern, off, reinterpret_cast<char*>(msg));
  }
  int jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  ENSURE(jit == 0, "PCRE2 JIT compilation failed (code {}); is libpcre2 built with JIT?", jit);
  return code;
}

struct Patterns {
  pcre2_code* valid = compile(kPattern, 0);
  pcre2_code* invalid = compile(kPattern, PCRE2_MATCH_INVALID_UTF);
  pcre2_code* space = compile(kSpacePattern, PCRE2_ANCHORED);
};

const Patterns& patterns() {
  static const Patterns p;
  return p;
}

// Per-thread match data and JIT stack: pcre2 match state must not be shared between threads.
// The 1 MiB JIT stack lets the look-ahead backtrack over arbitrarily long whitespace runs.
struct MatchState {
  pcre2_match_data* data = pcre2_match_data_create(4, nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  MatchState() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~MatchState() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(data);
  }
  MatchState(const MatchState&) = delete;
  MatchState& operator=(const MatchState&) = delete;
};
MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

std::array<std::string, 256> make_byte_to_unicode() {
  std::array<std::string, 256> map;
  auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    uint32_t cp = printable(b) ? uint32_t(b) : uint32_t(next++);
    std::string s;
    if (cp < 0x80) {
      s.push_back(char(cp));
    } else {  // cp < 0x800: two UTF-8 bytes
      s.push_back(char(0xC0 | (cp >> 6)));
      s.push_back(char(0x80 | (cp & 0x3F)));
    }
    map[b] = s;
  }
  return map;
}

// Inverse map indexed by code point (all mapped code points are < 0x144).
std::array<int16_t, 512> make_unicode_to_byte() {
  std::array<int16_t, 512> inv;
  inv.fill(-1);
  const auto& fwd = byte_to_unicode();
  for (int b = 0; b < 256; ++b) {
    const std::string& s = fwd[b];
    uint32_t cp = s.size() == 1 ? uint8_t(s[0]) : ((uint8_t(s[0]) & 0x1F) << 6) | (uint8_t(s[1]) & 0x3F);
    inv[cp] = int16_t(b);
  }
  return inv;
}

}  // namespace

const std::array<std::string, 256>& byte_to_unicode() {
  static const std::array<std::string, 256> map = make_byte_to_unicode();
  return map;
}

bool unicode_to_bytes(std::string_view mapped, std::string& bytes) {
  static const std::array<int16_t, 512> inv = make_unicode_to_byte();
  bytes.clear();
  for (size_t i = 0; i < mapped.size();) {
    uint8_t c = uint8_t(mapped[i]);
    uint32_t cp;
    if (c < 0x80) {
      cp = c;
      i += 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < mapped.size()) {
      cp = ((c & 0x1F) << 6) | (uint8_t(mapped[i + 1]) & 0x3F);
      i += 2;
    } else {
      return false;
    }
    if (cp >= inv.size() || inv[cp] < 0) return false;
    bytes.push_back(char(inv[cp]));
  }
  return true;
}

std::string bytes_to_unicode(std::string_view bytes) {
  const auto& fwd = byte_to_unicode();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += fwd[uint8_t(c)];
  return out;
}

void pretokenize(std::string_view text, std::vector<Piece>& out) {
  if (text.empty()) return;
  ENSURE(text.size() < (size_t(1) << 32), "pre-tokenising {} bytes at once: pieces hold 32-bit offsets (the encoder "
         "cuts its input into ~1 MiB blocks at line ends; this text has no line end for 4 GiB)", text.size());
  MatchState& state = match_state();
  const bool valid = is_valid_utf8(text);
  const pcre2_code* code = valid ? patterns().valid : patterns().invalid;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();
  size_t pos = 0;
  while (pos < n) {
    int rc = pcre2_jit_match(code, subject, n, pos, 0, state.data, state.context);
    size_t begin = n, end = n;
    if (rc > 0) {
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(state.data);
      begin = ov[0], end = ov[1];
    } else {
      ENSURE(rc == PCRE2_ERROR_NOMATCH, "PCRE2 match failed with code {} at byte {}", rc, pos);
    }
    // Every valid character matches some alternative, so a gap holds only invalid bytes.
    for (; pos < begin; ++pos) out.push_back({uint32_t(pos), uint32_t(pos + 1), true});
    if (begin < end) out.push_back({uint32_t(begin), uint32_t(end), false});
    pos = end;
  }
}

namespace {

// Whether text[0, p) ends in a whole, well-formed character beyond ASCII that the pattern does not
// count as white space (a CJK line's last character, "。"): no piece then runs from it into the
// white space at p.
bool ends_in_visible_non_ascii(std::string_view text, size_t p) {
  size_t begin = p;
  while (begin > 0 && p - begin < 4 && (uint8_t(text[begin - 1]) & 0xC0) == 0x80) --begin;  // continuation bytes
  if (begin == 0 || uint8_t(text[begin - 1]) < 0xC0) return false;  // no lead byte within 4 bytes
  const std::string_view ch = text.substr(begin - 1, p - begin + 1);
  // is_valid_utf8 also checks that the lead byte announces exactly these bytes.
  return is_valid_utf8(ch) && !is_pattern_white_space(ch);
}

}  // namespace

bool is_pattern_white_space(std::string_view character) {
  MatchState& state = match_state();
  const int rc = pcre2_jit_match(patterns().space, reinterpret_cast<PCRE2_SPTR>(character.data()), character.size(),
                                 0, 0, state.data, state.context);
  ENSURE(rc > 0 || rc == PCRE2_ERROR_NOMATCH, "PCRE2 match failed with code {}", rc);
  return rc > 0 && pcre2_get_ovector_pointer(state.data)[1] == character.size();
}

size_t find_safe_split(std::string_view text, size_t after, size_t before) {
  const auto ascii_space = [](char c) { return c == ' ' || (c >= '\t' && c <= '\r'); };  // TAB LF VT FF CR
  for (size_t p = std::min(before, text.size()); p-- > after + 1;) {
    if (!ascii_space(text[p])) continue;
    const char last = text[p - 1];
    if (uint8_t(last) < 0x80 ? !ascii_space(last) : ends_in_visible_non_ascii(text, p)) return p;
  }
  return 0;
}

bool straddles_special(std::string_view text, size_t p, std::span<const std::string_view> specials) {
  for (std::string_view s : specials) {
    // The first occurrence that could straddle p starts at p - |s| + 1 or later.
    const size_t from = p >= s.size() ? p - s.size() + 1 : 0;
    const size_t at = text.find(s, from);
    if (at != std::string_view::npos && at < p && at + s.size() > p) return true;
  }
  return false;
}

size_t find_block_cut(std::string_view text, std::span<const std::string_view> specials, size_t& scanned) {
  size_t longest = 0;
  for (std::string_view s : specials) longest = std::max(longest, s.size());
  const size_t reach = longest > 0 ? longest - 1 : 0;  // how far a special straddling a cut may run past it
  const size_t limit = text.size() > reach ? text.size() - reach : 0;
  size_t p = limit;
  while ((p = find_safe_split(text, scanned, p)) != 0 && straddles_special(text, p, specials)) {}
  if (p == 0 && limit > 1) scanned = std::max(scanned, limit - 1);
  return p;
}

}  // namespace gpt2cc::tok
