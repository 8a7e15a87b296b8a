// Byte-level BPE encode/decode (tokenizer.hpp). Merge semantics are tiktoken's, which GPT-2's
// files were made for: a piece that is itself a token is that token; otherwise, starting from
// single bytes, repeatedly merge the adjacent pair whose concatenation is the lowest-ranked
// merge result (leftmost on ties). E.g. " lower" -> Ġ l o w e r -> Ġl o w e r -> Ġl ow e r -> ...
// Pre-token -> ids results are cached per thread (encode is const and thread-safe).
#include "tokenizer/tokenizer.hpp"

#include <algorithm>
#include <atomic>
#include <climits>
#include <istream>
#include <queue>
#include <thread>
#include <unordered_map>

#include "core/check.hpp"
#include "core/dataloader.hpp"
#include "core/fnv1a.hpp"
#include "tokenizer/pretokenizer.hpp"
#include "tokenizer/string_table.hpp"
#include "tokenizer/worker_pool.hpp"
#include "tokenizer/vocab_io.hpp"

namespace gpt2cc {

namespace {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int, StringHash, std::equal_to<>>;

// Open-addressing table (a, b) -> (rank, merged id); linear probing, load factor <= 1/2.
class PairTable {
 public:
  struct Slot {
    uint64_t key = kEmpty;
    int32_t rank = 0, id = 0;
  };
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
  }
  void insert(int a, int b, int rank, int id) {
    uint64_t key = make_key(a, b);
    for (size_t i = hash(key);; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.key == kEmpty) {
        s = {key, rank, id};
        return;
      }
      if (s.key == key) {
        if (rank < s.rank) s.rank = rank, s.id = id;
        return;
      }
    }
  }
  const Slot* find(int a, int b) const {
    uint64_t key = make_key(a, b);
    for (size_t i = hash(key);; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key == key) return &s;
      if (s.key == kEmpty) return nullptr;
    }
  }
  int rank(int a, int b) const {
    const Slot* s = find(a, b);
    return s ? s->rank : INT_MAX;
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  static uint64_t make_key(int a, int b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  size_t hash(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> 29) & mask_; }
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

std::atomic<uint64_t> g_next_instance{1};


// Pieces longer than this use the heap-based merge (O(n log n)) instead of the quadratic scan.
constexpr size_t kHeapMergeMin = 48;

}  // namespace

struct Tokenizer::Impl {
  std::vector<std::string> tokens;          // id -> bytes
  std::vector<std::pair<int, int>> merges;  // rank order
  std::vector<int> specials;                // ascending ids
  std::vector<bool> is_special;
  StringMap ordinary;                       // bytes -> id, specials excluded
  tok::StringTable ordinary_fast;           // the same, for the encode hot path
  std::vector<std::pair<std::string, int>> special_texts;
  std::array<int, 256> byte_id{};
  PairTable pairs;
  uint64_t fp = 0;
  uint64_t instance = g_next_instance++;
  std::shared_ptr<tok::WorkerPool> pool = std::make_shared<tok::WorkerPool>();  // a copy gets its own

  void build();
  void bpe(std::string_view piece, std::vector<int>& out) const;
  void bpe_heap(std::string_view piece, std::vector<int>& out) const;
  void encode_ordinary(std::string_view text, std::vector<int>& out) const;
  void encode_into(std::string_view text, bool allow_special, std::vector<int>& out) const;
  // The special tokens' texts a cut must not split (none unless allow_special: then they are
  // plain text, which cuts at safe points anyway).
  std::vector<std::string_view> special_views(bool allow_special) const;
};

void Tokenizer::Impl::build() {
  const int V = int(tokens.size());
  INPUT_CHECK(V > 0 && V < (1 << 24), "vocabulary size {} out of range (1 .. 2^24)", V);
  is_special.assign(V, false);
  std::sort(specials.begin(), specials.end());
  for (int id : specials) {
    INPUT_CHECK(id >= 0 && id < V, "special token id {} out of range [0, {})", id, V);
    INPUT_CHECK(!tokens[id].empty(), "special token id {} has empty text", id);
    is_special[id] = true;
    special_texts.emplace_back(tokens[id], id);
  }
  byte_id.fill(-1);
  for (int id = 0; id < V; ++id) {
    if (is_special[id]) continue;
    const std::string& t = tokens[id];
    INPUT_CHECK(!t.empty(), "token id {} is empty", id);
    auto [it, fresh] = ordinary.emplace(t, id);
    INPUT_CHECK(fresh, "tokens {} and {} have the same bytes", it->second, id);
    if (t.size() == 1) byte_id[uint8_t(t[0])] = id;
  }
  for (int b = 0; b < 256; ++b) INPUT_CHECK(byte_id[b] >= 0, "byte {} has no single-byte token", b);
  for (const auto& [t, id] : ordinary) ordinary_fast.insert(t, uint64_t(id));

  // Rank of a merge result = index of the first merge producing it. Every split of a merge
  // result into two tokens is a mergeable pair with that rank (tiktoken's semantics), which
  // includes the listed pair itself.
  std::vector<int> rank_of(V, INT_MAX);
  for (size_t r = 0; r < merges.size(); ++r) {
    auto [a, b] = merges[r];
    INPUT_CHECK(a >= 0 && a < V && b >= 0 && b < V && !is_special[a] && !is_special[b],
                "merge {} uses an out-of-range or special token ({}, {})", r, a, b);
    auto it = ordinary.find(tokens[a] + tokens[b]);
    INPUT_CHECK(it != ordinary.end(), "merge {} result is not in the vocabulary", r);
    rank_of[it->second] = std::min(rank_of[it->second], int(r));
  }
  size_t n_pairs = 0;
  for (int id = 0; id < V; ++id) n_pairs += rank_of[id] != INT_MAX ? tokens[id].size() - 1 : 0;
  pairs.reserve(n_pairs);
  for (int id = 0; id < V; ++id) {
    if (rank_of[id] == INT_MAX) continue;
    std::string_view t = tokens[id];
    for (size_t k = 1; k < t.size(); ++k) {
      auto l = ordinary.find(t.substr(0, k)), r = ordinary.find(t.substr(k));
      if (l != ordinary.end() && r != ordinary.end()) pairs.insert(l->second, r->second, rank_of[id], id);
    }
  }

  // fingerprint = FNV-1a over (V, each token's length, bytes and special flag, the merges).
  Fnv1a f;
  f.add("gpt2cc-bpe-1", 12);
  f.add_u64(uint64_t(V));
  for (int id = 0; id < V; ++id) {
    f.add_u64(tokens[id].size());
    f.add(tokens[id].data(), tokens[id].size());
    f.add_u64(is_special[id] ? 1 : 0);
  }
  f.add_u64(merges.size());
  for (auto [a, b] : merges) f.add_u64((uint64_t(uint32_t(a)) << 32) | uint32_t(b));
  fp = f.h;
}

// Quadratic merge for short pieces: ranks[i] = rank of (ids[i], ids[i+1]).
//   "hello": h e l l o -> he l l o -> he ll o -> hell o -> hello (ranks decide the order)
void Tokenizer::Impl::bpe(std::string_view piece, std::vector<int>& out) const {
  if (piece.size() >= kHeapMergeMin) return bpe_heap(piece, out);
  int ids[kHeapMergeMin], ranks[kHeapMergeMin];
  int n = int(piece.size());
  for (int i = 0; i < n; ++i) ids[i] = byte_id[uint8_t(piece[i])];
  for (int i = 0; i + 1 < n; ++i) ranks[i] = pairs.rank(ids[i], ids[i + 1]);
  while (n > 1) {
    int best = 0;
    for (int i = 1; i + 1 < n; ++i)
      if (ranks[i] < ranks[best]) best = i;
    if (ranks[best] == INT_MAX) break;
    ids[best] = pairs.find(ids[best], ids[best + 1])->id;
    for (int i = best + 1; i + 1 < n; ++i) ids[i] = ids[i + 1], ranks[i] = ranks[i + 1];
    --n;
    if (best > 0) ranks[best - 1] = pairs.rank(ids[best - 1], ids[best]);
    if (best + 1 < n) ranks[best] = pairs.rank(ids[best], ids[best + 1]);
  }
  out.insert(out.end(), ids, ids + n);
}

// The same merge order for long pieces (runs of spaces, digits, ...): a min-heap of
// (rank, left position) over a linked list of symbols. An entry is stale when its left symbol
// died or its pair now has another rank; positions order left to right, so ties stay leftmost.
void Tokenizer::Impl::bpe_heap(std::string_view piece, std::vector<int>& out) const {
  const int n = int(piece.size());
  std::vector<int> ids(n), next(n), prev(n);
  std::vector<bool> alive(n, true);
  using Entry = std::pair<int, int>;  // (rank, left position)
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
  for (int i = 0; i < n; ++i) ids[i] = byte_id[uint8_t(piece[i])], next[i] = i + 1, prev[i] = i - 1;
  for (int i = 0; i + 1 < n; ++i) {
    int r = pairs.rank(ids[i], ids[i + 1]);
    if (r != INT_MAX) heap.emplace(r, i);
  }
  while (!heap.empty()) {
    auto [r, i] = heap.top();
    heap.pop();
    if (!alive[i] || next[i] >= n || pairs.rank(ids[i], ids[next[i]]) != r) continue;
    int j = next[i];
    ids[i] = pairs.find(ids[i], ids[j])->id;
    alive[j] = false;
    next[i] = next[j];
    if (next[j] < n) prev[next[j]] = i;
    if (prev[i] >= 0) {
      int rl = pairs.rank(ids[prev[i]], ids[i]);
      if (rl != INT_MAX) heap.emplace(rl, prev[i]);
    }
    if (next[i] < n) {
      int rr = pairs.rank(ids[i], ids[next[i]]);
      if (rr != INT_MAX) heap.emplace(rr, i);
    }
  }
  for (int i = 0; i < n; i = next[i]) out.push_back(ids[i]);
}

namespace {
// Per-thread cache of pre-token -> ids, owned by one tokenizer instance at a time (a thread
// that switches tokenizers starts afresh). Cleared when full, in entries or in bytes (keys and
// ids): the bytes bound matters for long unique pieces (a line of 10,000 digits is one piece of
// 10 KB and ~2,500 ids), which 2^18 entries alone let grow to gigabytes.
// Values are (offset << 32 | count) into pool.
struct PieceCache {
  uint64_t owner = 0;
  tok::StringTable map{1 << 16};
  std::vector<int> pool;
  static constexpr size_t kMaxEntries = 1 << 18;
  static constexpr size_t kMaxBytes = size_t{16} << 20;
  bool full() const { return map.size() >= kMaxEntries || map.key_bytes() + pool.size() * sizeof(int) >= kMaxBytes; }
};
}  // namespace

void Tokenizer::Impl::encode_ordinary(std::string_view text, std::vector<int>& out) const {
  thread_local PieceCache cache;
  thread_local std::vector<tok::Piece> pieces;
  if (cache.owner != instance) {
    cache.map.clear();
    cache.pool.clear();
    cache.owner = instance;
  }
  // Pre-tokenise in blocks of ~1 MiB cut at safe points, so `pieces` stays small.
  constexpr size_t kBlock = 1 << 20;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.size();
    if (end - start > 2 * kBlock) {
      size_t p = tok::find_safe_split(text, start, start + kBlock);
      if (p != 0) end = p;
    }
    std::string_view block = text.substr(start, end - start);
    pieces.clear();
    tok::pretokenize(block, pieces);
    for (const tok::Piece& pc : pieces) {
      std::string_view s = block.substr(pc.begin, pc.end - pc.begin);
      if (s.size() == 1 || pc.invalid) {
        out.push_back(byte_id[uint8_t(s[0])]);
        continue;
      }
      if (uint64_t id = ordinary_fast.find(s); id != tok::StringTable::kMissing) {
        out.push_back(int(id));
        continue;
      }
      if (uint64_t v = cache.map.find(s); v != tok::StringTable::kMissing) {
        auto first = cache.pool.begin() + ptrdiff_t(v >> 32);
        out.insert(out.end(), first, first + ptrdiff_t(uint32_t(v)));
        continue;
      }
      size_t before = out.size();
      bpe(s, out);
      if (cache.full()) {  // start afresh (bounds memory)
        cache.map.clear();
        cache.pool.clear();
      }
      cache.map.insert(s, (uint64_t(cache.pool.size()) << 32) | uint64_t(out.size() - before));
      cache.pool.insert(cache.pool.end(), out.begin() + ptrdiff_t(before), out.end());
    }
    start = end;
  }
}

void Tokenizer::Impl::encode_into(std::string_view text, bool allow_special, std::vector<int>& out) const {
  if (!allow_special || special_texts.empty()) return encode_ordinary(text, out);
  // next_at[s]: next occurrence of special s at or after pos (npos: none left).
  std::vector<size_t> next_at(special_texts.size(), 0);
  std::vector<bool> looked(special_texts.size(), false);
  size_t pos = 0;
  for (;;) {
    size_t best = std::string_view::npos;
    int best_s = -1;
    for (size_t s = 0; s < special_texts.size(); ++s) {
      if (!looked[s] || (next_at[s] != std::string_view::npos && next_at[s] < pos)) {
        next_at[s] = text.find(special_texts[s].first, pos);
        looked[s] = true;
      }
      // Earliest occurrence wins; at the same position the longer special.
      if (next_at[s] < best ||
          (next_at[s] == best && best_s >= 0 && special_texts[s].first.size() > special_texts[best_s].first.size()))
        best = next_at[s], best_s = int(s);
    }
    if (best_s < 0) break;
    encode_ordinary(text.substr(pos, best - pos), out);
    out.push_back(special_texts[best_s].second);
    pos = best + special_texts[best_s].first.size();
  }
  encode_ordinary(text.substr(pos), out);
}

std::vector<std::string_view> Tokenizer::Impl::special_views(bool allow_special) const {
  std::vector<std::string_view> views;
  if (allow_special)
    for (const auto& [text, id] : special_texts) views.push_back(text);
  return views;
}

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::Tokenizer(const Tokenizer& other) : impl_(other.impl_ ? std::make_unique<Impl>(*other.impl_) : nullptr) {
  if (impl_) impl_->instance = g_next_instance++, impl_->pool = std::make_shared<tok::WorkerPool>();
}
Tokenizer& Tokenizer::operator=(const Tokenizer& other) {
  if (this != &other) *this = Tokenizer(other);
  return *this;
}

Tokenizer Tokenizer::from_parts(std::vector<std::string> tokens, std::vector<std::pair<int, int>> merges,
                                std::vector<int> special_ids) {
  Tokenizer t;
  t.impl_ = std::make_unique<Impl>();
  t.impl_->tokens = std::move(tokens);
  t.impl_->merges = std::move(merges);
  t.impl_->specials = std::move(special_ids);
  t.impl_->build();
  return t;
}

Tokenizer Tokenizer::load(const std::string& dir) {
  tok::VocabParts p = tok::read_vocab_dir(dir);
  try {
    return from_parts(std::move(p.tokens), std::move(p.merges), std::move(p.special_ids));
  } catch (const InputError& e) {
    // from_parts' checks (an empty special token, two tokens of the same bytes) name ids only.
    fail_input(format("tokenizer {}: {}", dir, e.what()));
  }
}

void Tokenizer::save(const std::string& dir) const {
  ENSURE(impl_, "save() on an empty Tokenizer");
  tok::write_vocab_dir(dir, {impl_->tokens, impl_->merges, impl_->specials});
}

std::vector<int> Tokenizer::encode(std::string_view text, bool allow_special) const {
  ENSURE(impl_, "encode() on an empty Tokenizer (use Tokenizer::load)");
  std::vector<int> out;
  out.reserve(text.size() / 3 + 16);
  impl_->encode_into(text, allow_special, out);
  return out;
}

std::vector<int> Tokenizer::encode_parallel(std::string_view text, bool allow_special, int threads) const {
  ENSURE(impl_, "encode_parallel() on an empty Tokenizer");
  INPUT_CHECK(threads >= 1, "thread count must be >= 1, got {}", threads);
  constexpr size_t kMinParallel = 1 << 20;
  if (threads == 1 || text.size() < kMinParallel) return encode(text, allow_special);
  // Cut into `threads` chunks of about equal size at safe points outside special tokens.
  const std::vector<std::string_view> specials = impl_->special_views(allow_special);
  std::vector<size_t> cuts{0};
  for (int t = 1; t < threads; ++t) {
    size_t target = text.size() * size_t(t) / size_t(threads), p = target;
    while ((p = tok::find_safe_split(text, cuts.back(), p)) != 0 && tok::straddles_special(text, p, specials)) {}
    if (p != 0) cuts.push_back(p);
  }
  cuts.push_back(text.size());
  std::vector<std::vector<int>> parts(cuts.size() - 1);
  std::vector<std::function<void()>> tasks;
  for (size_t c = 0; c < parts.size(); ++c) {
    tasks.emplace_back([&, c] {
      parts[c].reserve((cuts[c + 1] - cuts[c]) / 3 + 16);
      impl_->encode_into(text.substr(cuts[c], cuts[c + 1] - cuts[c]), allow_special, parts[c]);
    });
  }
  impl_->pool->run_all(tasks);
  std::vector<int> out;
  size_t total = 0;
  for (auto& p : parts) total += p.size();
  out.reserve(total);
  for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

uint64_t Tokenizer::encode_stream(std::istream& in, bool allow_special, int threads,
                                  const std::function<void(std::span<const int>)>& sink, size_t block_bytes) const {
  ENSURE(impl_, "encode_stream() on an empty Tokenizer");
  INPUT_CHECK(block_bytes >= 1, "block size must be >= 1");
  const std::vector<std::string_view> specials = impl_->special_views(allow_special);
  std::string buf;
  uint64_t total = 0;
  size_t scanned = 0;  // bytes of buf already searched for a cut without success
  for (;;) {
    size_t old = buf.size();
    buf.resize(old + block_bytes);
    in.read(buf.data() + old, std::streamsize(block_bytes));
    size_t got = size_t(in.gcount());
    buf.resize(old + got);
    total += got;
    if (in.bad()) throw Error(format("read error after {} bytes of input", total));  // I/O, not the input's fault
    if (got == 0 || in.eof()) break;
    const size_t p = tok::find_block_cut(buf, specials, scanned);
    if (p == 0) continue;  // no safe cut yet: keep reading (a single line longer than a block)
    std::vector<int> ids = encode_parallel(std::string_view(buf).substr(0, p), allow_special, threads);
    sink(ids);
    buf.erase(0, p);
    scanned = 0;
  }
  std::vector<int> ids = encode_parallel(buf, allow_special, threads);
  if (!ids.empty()) sink(ids);
  return total;
}

std::string Tokenizer::decode(std::span<const int> ids) const {
  ENSURE(impl_, "decode() on an empty Tokenizer");
  const int V = int(impl_->tokens.size());
  std::string out;
  out.reserve(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    int id = ids[i];
    INPUT_CHECK(id >= 0 && id < V, "token id {} at position {} is out of range [0, {})", id, i, V);
    out += impl_->tokens[id];
  }
  return out;
}

std::string Tokenizer::token_bytes(int id) const {
  ENSURE(impl_, "token_bytes() on an empty Tokenizer");
  INPUT_CHECK(id >= 0 && id < vocab_size(), "token id {} is out of range [0, {})", id, vocab_size());
  return impl_->tokens[id];
}

int Tokenizer::vocab_size() const {
  ENSURE(impl_, "vocab_size() on an empty Tokenizer");
  return int(impl_->tokens.size());
}

std::optional<int> Tokenizer::special_id(std::string_view text) const {
  ENSURE(impl_, "special_id() on an empty Tokenizer");
  for (const auto& [s, id] : impl_->special_texts)
    if (s == text) return id;
  return std::nullopt;
}

int Tokenizer::eot_id() const {
  std::optional<int> id = special_id("<|endoftext|>");
  INPUT_CHECK(id.has_value(), "this tokenizer has no <|endoftext|> special token");
  return *id;
}

uint64_t Tokenizer::fingerprint() const {
  ENSURE(impl_, "fingerprint() on an empty Tokenizer");
  return impl_->fp;
}

std::vector<int> Tokenizer::special_ids() const {
  ENSURE(impl_, "special_ids() on an empty Tokenizer");
  return impl_->specials;
}

std::vector<std::pair<int, int>> Tokenizer::merges() const {
  ENSURE(impl_, "merges() on an empty Tokenizer");
  return impl_->merges;
}

Tokenizer load_checkpoint_tokenizer(const std::string& dir, uint64_t recorded, int model_vocab,
                                    const std::string& checkpoint) {
  Tokenizer tokenizer = Tokenizer::load(dir);
  INPUT_CHECK(recorded == 0 || recorded == tokenizer.fingerprint(),
              "tokenizer {} (fingerprint {}) is not the one checkpoint {} was trained with (fingerprint {})", dir,
              fingerprint_hex(tokenizer.fingerprint()), checkpoint, fingerprint_hex(recorded));
  INPUT_CHECK(tokenizer.vocab_size() <= model_vocab, "tokenizer {} has {} tokens, more than the {} of the model of "
              "checkpoint {}", dir, tokenizer.vocab_size(), model_vocab, checkpoint);
  return tokenizer;
}

}  // namespace gpt2cc
