// BPE trainer (trainer.hpp). After counting, each unique pre-token is a "word": its symbol ids
// and its frequency c. pair_count[(x,y)] = sum over words of c * (occurrences of x,y in the word).
// A merge (a,b) -> m rewrites only the words listed for (a,b): their old pairs are subtracted,
// their new pairs added (the incremental update), and changed counts are pushed on a max-heap
// whose stale entries are skipped when popped (lazy deletion).
#include "tokenizer/trainer.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <queue>
#include <thread>

#include "core/check.hpp"
#include "core/stopwatch.hpp"
#include "core/utf8.hpp"
#include "tokenizer/pretokenizer.hpp"
#include "tokenizer/vocab_io.hpp"

namespace gpt2cc {

namespace {

uint64_t pair_key(int a, int b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
int key_left(uint64_t k) { return int(k >> 32); }
int key_right(uint64_t k) { return int(uint32_t(k)); }

void count_pieces(std::string_view text, std::unordered_map<std::string, uint64_t>& counts, uint64_t& n) {
  std::vector<tok::Piece> pieces;
  tok::pretokenize(text, pieces);
  for (const tok::Piece& p : pieces) ++counts[std::string(text.substr(p.begin, p.end - p.begin))];
  n += pieces.size();
}

// The unique pre-tokens as words of symbol ids (byte b is id S + b, after the S specials), each
// with its count, in a fixed order (sorted by bytes) so that training is deterministic.
struct Words {
  std::vector<std::vector<int>> symbols;
  std::vector<uint64_t> freq;
};

Words split_into_bytes(const std::unordered_map<std::string, uint64_t>& counts, int S) {
  std::vector<std::pair<std::string_view, uint64_t>> sorted;
  sorted.reserve(counts.size());
  for (const auto& [k, v] : counts) sorted.emplace_back(k, v);
  std::sort(sorted.begin(), sorted.end());
  Words words{std::vector<std::vector<int>>(sorted.size()), std::vector<uint64_t>(sorted.size())};
  for (size_t w = 0; w < sorted.size(); ++w) {
    for (char c : sorted[w].first) words.symbols[w].push_back(S + uint8_t(c));
    words.freq[w] = sorted[w].second;
  }
  return words;
}

struct PairStats {
  int64_t count = 0;
  std::vector<uint32_t> words;  // may hold duplicates and words that lost the pair
};
using PairMap = std::unordered_map<uint64_t, PairStats>;

PairMap count_pairs(const Words& words) {
  PairMap pairs;
  for (uint32_t w = 0; w < words.symbols.size(); ++w) {
    const std::vector<int>& sym = words.symbols[w];
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      PairStats& ps = pairs[pair_key(sym[i], sym[i + 1])];
      ps.count += int64_t(words.freq[w]);
      if (ps.words.empty() || ps.words.back() != w) ps.words.push_back(w);
    }
  }
  return pairs;
}

// Merges (a,b) -> m in each of the words `affected` lists (sorted, unique) that still holds the
// pair: each (a,b) left to right, non-overlapping, becomes m. Adds each pair count's change to
// `delta` (the word's old pairs subtracted, its new ones added) and lists the word under its new
// pairs that hold m; the counts in `pairs` are left to the caller.
void merge_words(Words& words, PairMap& pairs, const std::vector<uint32_t>& affected, int a, int b, int m,
                 std::unordered_map<uint64_t, int64_t>& delta) {
  std::vector<int> merged;
  for (uint32_t w : affected) {
    std::vector<int>& sym = words.symbols[w];
    merged.clear();
    for (size_t i = 0; i < sym.size(); ++i) {
      if (i + 1 < sym.size() && sym[i] == a && sym[i + 1] == b) {
        merged.push_back(m);
        ++i;
      } else {
        merged.push_back(sym[i]);
      }
    }
    if (merged.size() == sym.size()) continue;  // stale listing: the word lost the pair
    const int64_t c = int64_t(words.freq[w]);
    for (size_t i = 0; i + 1 < sym.size(); ++i) delta[pair_key(sym[i], sym[i + 1])] -= c;
    for (size_t i = 0; i + 1 < merged.size(); ++i) {
      const uint64_t k = pair_key(merged[i], merged[i + 1]);
      delta[k] += c;
      if (merged[i] == m || merged[i + 1] == m) {
        auto& list = pairs[k].words;
        if (list.empty() || list.back() != w) list.push_back(w);
      }
    }
    sym.swap(merged);
  }
}

}  // namespace

BpeTrainer::BpeTrainer(TrainerConfig config) : config_(std::move(config)) {
  const auto& sp = config_.special_tokens;
  for (size_t i = 0; i < sp.size(); ++i) {
    INPUT_CHECK(sp[i].size() >= 2, "special token \"{}\" must be at least 2 bytes long", sp[i]);
    INPUT_CHECK(is_valid_utf8(sp[i]), "special token number {} is not valid UTF-8", i + 1);
    // The files would not load back: a token no merge makes must not look like one a merge would.
    INPUT_CHECK(!tok::could_be_ordinary(sp[i]),
                "special token \"{}\" could be ordinary text (it is one pre-token); choose a text that spans "
                "pre-tokens, such as <|{}|>",
                sp[i], sp[i]);
    for (size_t j = 0; j < i; ++j) INPUT_CHECK(sp[i] != sp[j], "special token \"{}\" is given twice", sp[i]);
  }
  INPUT_CHECK(config_.vocab_size >= 256 + int(sp.size()),
              "vocab size must be >= 256 + number of special tokens = {}, got {}", 256 + sp.size(), config_.vocab_size);
  INPUT_CHECK(config_.vocab_size < (1 << 24), "vocab size must be < 2^24, got {}", config_.vocab_size);
  INPUT_CHECK(config_.min_frequency >= 1, "min frequency must be >= 1, got {}", config_.min_frequency);
  INPUT_CHECK(config_.threads >= 1, "threads must be >= 1, got {}", config_.threads);
  INPUT_CHECK(config_.block_bytes >= 1024, "block size must be >= 1024 bytes, got {}", config_.block_bytes);
}

// Splits at special tokens (never counted), then counts pre-tokens with `threads` threads on
// chunks cut at safe points (tok::find_safe_split), merging the per-thread maps afterwards.
void BpeTrainer::add_text(std::string_view text) {
  const Stopwatch clock;
  // next_at[s]: the next occurrence of special s at or after pos, kept between iterations so
  // that a special that never occurs is searched for once, not once per other occurrence.
  const auto& specials = config_.special_tokens;
  std::vector<size_t> next_at(specials.size());
  for (size_t s = 0; s < specials.size(); ++s) next_at[s] = text.find(specials[s]);
  size_t pos = 0;
  for (;;) {
    size_t best = std::string_view::npos, len = 0;
    for (size_t s = 0; s < specials.size(); ++s) {
      if (next_at[s] != std::string_view::npos && next_at[s] < pos) next_at[s] = text.find(specials[s], pos);
      if (next_at[s] < best || (next_at[s] == best && specials[s].size() > len)) best = next_at[s], len = specials[s].size();
    }
    count_block(text.substr(pos, best == std::string_view::npos ? std::string_view::npos : best - pos));
    if (best == std::string_view::npos) break;
    pos = best + len;
  }
  stats_.count_seconds += clock.seconds();
}

void BpeTrainer::count_block(std::string_view text) {
  stats_.bytes += text.size();
  const int threads = text.size() < (1u << 20) ? 1 : config_.threads;
  std::vector<size_t> cuts{0};
  for (int t = 1; t < threads; ++t) {
    size_t p = tok::find_safe_split(text, cuts.back(), text.size() * size_t(t) / size_t(threads));
    if (p != 0) cuts.push_back(p);
  }
  cuts.push_back(text.size());
  if (cuts.size() == 2) return count_pieces(text, counts_, stats_.pretokens);
  std::vector<std::unordered_map<std::string, uint64_t>> local(cuts.size() - 1);
  std::vector<uint64_t> n(local.size(), 0);
  std::vector<std::thread> pool;
  for (size_t c = 0; c < local.size(); ++c)
    pool.emplace_back([&, c] { count_pieces(text.substr(cuts[c], cuts[c + 1] - cuts[c]), local[c], n[c]); });
  for (auto& th : pool) th.join();
  for (size_t c = 0; c < local.size(); ++c) {
    stats_.pretokens += n[c];
    for (auto& [k, v] : local[c]) counts_[k] += v;
  }
}

void BpeTrainer::add_file(const std::string& path) {
  // A directory opens (and then fails every read): bad input, named as such; a read that fails
  // once the file is open is an I/O error (exit 1), as in encode.
  std::error_code ec;
  INPUT_CHECK(!std::filesystem::is_directory(path, ec), "training file {} is a directory, not a file", path);
  std::ifstream in(path, std::ios::binary);
  INPUT_CHECK(in.good(), "cannot open training file {}: {}", path, std::strerror(errno));
  files_.push_back(path);
  const std::vector<std::string_view> specials(config_.special_tokens.begin(), config_.special_tokens.end());
  std::string buf;
  size_t scanned = 0;
  for (;;) {
    size_t old = buf.size();
    buf.resize(old + config_.block_bytes);
    in.read(buf.data() + old, std::streamsize(config_.block_bytes));
    buf.resize(old + size_t(in.gcount()));
    if (in.bad()) throw Error(format("reading training file {} failed (an I/O error)", path));
    if (in.gcount() == 0 || in.eof()) break;
    // Cut at a safe point that no special token straddles (a special may hold the "letter space
    // letter" or "visible char + \n" a cut needs), one read in whole (tok::find_block_cut).
    const size_t p = tok::find_block_cut(buf, specials, scanned);
    if (p == 0) continue;
    add_text(std::string_view(buf).substr(0, p));
    buf.erase(0, p);
    scanned = 0;
  }
  add_text(buf);
}

Tokenizer BpeTrainer::train(std::vector<MergeRecord>* merge_log, TrainStats* stats_out,
                            const std::function<void(int, int)>& progress) const {
  // No text, no pairs: the "vocabulary" would be the bytes alone, learnt from nothing.
  if (stats_.bytes == 0) {
    std::string names;
    for (const std::string& f : files_) names += (names.empty() ? "" : ", ") + f;
    fail_input(files_.empty() ? "no text to train on (none was added)"
                              : format("no text to train on: {} {} none (special tokens aside)", names,
                                       files_.size() == 1 ? "holds" : "hold"));
  }
  const Stopwatch clock;
  const int S = int(config_.special_tokens.size());
  std::vector<std::string> tokens(config_.special_tokens);
  for (int b = 0; b < 256; ++b) tokens.push_back(std::string(1, char(b)));

  Words words = split_into_bytes(counts_, S);
  PairMap pairs = count_pairs(words);

  // Max-heap on (count, left bytes, right bytes).
  struct Entry {
    int64_t count;
    int left, right;
  };
  auto lower = [&tokens](const Entry& x, const Entry& y) {
    if (x.count != y.count) return x.count < y.count;
    if (int c = tokens[x.left].compare(tokens[y.left]); c != 0) return c < 0;
    return tokens[x.right] < tokens[y.right];
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(lower)> heap(lower);
  for (const auto& [k, ps] : pairs) heap.push({ps.count, key_left(k), key_right(k)});

  std::unordered_map<std::string, int> token_id;
  for (size_t id = S; id < tokens.size(); ++id) token_id.emplace(tokens[id], int(id));
  std::vector<std::pair<int, int>> merges;
  const int wanted = config_.vocab_size - int(tokens.size());
  std::unordered_map<uint64_t, int64_t> delta;
  while (int(tokens.size()) < config_.vocab_size && !heap.empty()) {
    Entry top = heap.top();
    heap.pop();
    const uint64_t key = pair_key(top.left, top.right);
    auto it = pairs.find(key);
    if (it == pairs.end() || it->second.count != top.count) continue;  // stale entry
    if (uint64_t(top.count) < config_.min_frequency) break;
    const int a = top.left, b = top.right;
    // A merge whose bytes already are a token (e.g. a+bc after ab+c) reuses that token's id.
    auto [tid, fresh] = token_id.emplace(tokens[a] + tokens[b], int(tokens.size()));
    const int m = tid->second;
    if (fresh) tokens.push_back(tid->first);
    merges.emplace_back(a, b);
    if (merge_log) merge_log->push_back({a, b, m, uint64_t(top.count)});

    std::vector<uint32_t> affected = std::move(it->second.words);
    pairs.erase(it);
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
    delta.clear();
    merge_words(words, pairs, affected, a, b, m, delta);
    for (const auto& [k, d] : delta) {
      if (d == 0 || k == key) continue;
      PairStats& ps = pairs[k];
      ps.count += d;
      ENSURE(ps.count >= 0, "pair count went negative during merge {}", merges.size());
      if (ps.count > 0) {
        heap.push({ps.count, key_left(k), key_right(k)});
      } else if (ps.words.empty()) {
        pairs.erase(k);
      }
    }
    if (progress && merges.size() % 1000 == 0) progress(int(tokens.size()) - 256 - S, wanted);
  }
  if (progress) progress(int(tokens.size()) - 256 - S, wanted);

  std::vector<int> special_ids(S);
  for (int s = 0; s < S; ++s) special_ids[s] = s;
  if (stats_out) {
    *stats_out = stats_;
    stats_out->unique_pretokens = counts_.size();
    stats_out->merge_seconds = clock.seconds();
  }
  return Tokenizer::from_parts(std::move(tokens), std::move(merges), std::move(special_ids));
}

}  // namespace gpt2cc
