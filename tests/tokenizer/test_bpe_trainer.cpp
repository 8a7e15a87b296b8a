// BPE trainer tests: a hand-checked corpus with every merge and why it wins (including ties on
// both elements), special tokens never merged, the incremental trainer against a naive one that
// recounts every pair after every merge, determinism across thread counts, save/load.
#include "common/catch.hpp"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "common/test_common.hpp"
#include "core/check.hpp"
#include "tokenizer/pretokenizer.hpp"
#include "tokenizer/trainer.hpp"

using gpt2cc::BpeTrainer;
using gpt2cc::MergeRecord;
using gpt2cc::Tokenizer;
using gpt2cc::TrainerConfig;
namespace test = gpt2cc::test;

namespace {

std::string repeat_lines(const std::string& word, int n, const std::string& sep = "\n") {
  std::string s;
  for (int i = 0; i < n; ++i) s += word + sep;
  return s;
}

// (left bytes, right bytes, count) of each merge, for readable comparisons.
std::vector<std::tuple<std::string, std::string, uint64_t>> describe(const Tokenizer& tok,
                                                                     const std::vector<MergeRecord>& log) {
  std::vector<std::tuple<std::string, std::string, uint64_t>> out;
  for (const MergeRecord& m : log) out.emplace_back(tok.token_bytes(m.left), tok.token_bytes(m.right), m.count);
  return out;
}

// Reference trainer: recounts all pairs after every merge (no incremental update).
std::vector<std::pair<std::string, std::string>> naive_train(const std::map<std::string, uint64_t>& counts, int merges) {
  std::vector<std::pair<std::vector<std::string>, uint64_t>> words;
  for (const auto& [w, c] : counts) {
    std::vector<std::string> sym;
    for (char ch : w) sym.push_back(std::string(1, ch));
    words.emplace_back(sym, c);
  }
  std::vector<std::pair<std::string, std::string>> out;
  for (int step = 0; step < merges; ++step) {
    std::map<std::pair<std::string, std::string>, uint64_t> pc;
    for (const auto& [sym, c] : words)
      for (size_t i = 0; i + 1 < sym.size(); ++i) pc[{sym[i], sym[i + 1]}] += c;
    if (pc.empty()) break;
    auto best = pc.begin();
    for (auto it = pc.begin(); it != pc.end(); ++it)  // map order = byte order: >= keeps the greatest on ties
      if (it->second >= best->second) best = it;
    if (best->second < 2) break;
    auto [a, b] = best->first;
    out.emplace_back(a, b);
    for (auto& [sym, c] : words) {
      std::vector<std::string> merged;
      for (size_t i = 0; i < sym.size(); ++i) {
        if (i + 1 < sym.size() && sym[i] == a && sym[i + 1] == b) {
          merged.push_back(a + b);
          ++i;
        } else {
          merged.push_back(sym[i]);
        }
      }
      sym = merged;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("trainer: hand-checked merges on a small corpus", "[tokenizer][trainer]") {
  // Words (each its own pre-token, separated by "\n", which is a one-byte pre-token):
  //   hug x10, pug x5, pun x12, bun x4 (each followed by <|endoftext|>), hugs x5, ax x3, ay x3
  // If the special text were counted as text, pairs like ("<","|") x4 would enter the list.
  std::string text = repeat_lines("hug", 10) + repeat_lines("pug", 5) + repeat_lines("pun", 12) +
                     repeat_lines("bun", 4, "<|endoftext|>\n") + repeat_lines("hugs", 5) + repeat_lines("ax", 3) +
                     repeat_lines("ay", 3);
  TrainerConfig cfg;
  cfg.vocab_size = 1000;
  cfg.min_frequency = 1;
  BpeTrainer trainer(cfg);
  trainer.add_text(text);
  std::vector<MergeRecord> log;
  gpt2cc::TrainStats stats;
  Tokenizer tok = trainer.train(&log, &stats);
  using M = std::tuple<std::string, std::string, uint64_t>;
  const std::vector<M> expected = {
      // initial counts: u g 20 (hug 10 + pug 5 + hugs 5), p u 17, u n 16, h u 15, g s 5, b u 4, a x 3, a y 3
      {"u", "g", 20},   // 1. the most frequent pair
      // now: u n 16, h ug 15, p u 12, ug s 5, p ug 5, b u 4, a x 3, a y 3
      {"u", "n", 16},   // 2.
      // now: h ug 15, p un 12, ug s 5, p ug 5, b un 4, ...
      {"h", "ug", 15},  // 3.
      {"p", "un", 12},  // 4.
      // now: p ug 5 and hug s 5 tie: left "p" > "hug" as bytes, so (p, ug) wins
      {"p", "ug", 5},   // 5. tie broken on the left element
      {"hug", "s", 5},  // 6.
      {"b", "un", 4},   // 7.
      // a x 3 and a y 3 tie with equal left "a": right "y" > "x", so (a, y) first
      {"a", "y", 3},    // 8. tie broken on the right element
      {"a", "x", 3},    // 9.
  };
  CHECK(describe(tok, log) == expected);
  // ids: <|endoftext|> = 0, bytes 1..256, merges 257..
  CHECK(tok.vocab_size() == 1 + 256 + 9);
  CHECK(tok.eot_id() == 0);
  CHECK(tok.token_bytes(1 + 'a') == "a");
  CHECK(tok.token_bytes(257) == "ug");
  CHECK(tok.encode("hugs\nbun<|endoftext|>") == std::vector<int>{262, 1 + '\n', 263, 0});
  CHECK(stats.unique_pretokens == 8);  // 7 words + "\n"

  // Stopping at the requested size: the first 3 merges only.
  cfg.vocab_size = 1 + 256 + 3;
  BpeTrainer small(cfg);
  small.add_text(text);
  std::vector<MergeRecord> log3;
  Tokenizer t3 = small.train(&log3);
  CHECK(describe(t3, log3) == std::vector<M>(expected.begin(), expected.begin() + 3));
  CHECK(t3.vocab_size() == 260);
}

TEST_CASE("trainer: overlapping pairs and min_frequency", "[tokenizer][trainer]") {
  TrainerConfig cfg;
  cfg.vocab_size = 300;
  cfg.special_tokens = {};
  cfg.min_frequency = 1;
  BpeTrainer trainer(cfg);
  trainer.add_text("aaaa");  // one word: a a a a, the pair (a,a) occurs 3 times
  std::vector<MergeRecord> log;
  Tokenizer tok = trainer.train(&log);
  using M = std::tuple<std::string, std::string, uint64_t>;
  CHECK(describe(tok, log) == std::vector<M>{{"a", "a", 3}, {"aa", "aa", 1}});
  CHECK(tok.encode("aaaa") == std::vector<int>{257});
  CHECK_FALSE(tok.special_id("<|endoftext|>").has_value());
  cfg.min_frequency = 2;
  BpeTrainer t2(cfg);
  t2.add_text("aaaa");
  std::vector<MergeRecord> log2;
  Tokenizer tok2 = t2.train(&log2);
  CHECK(describe(tok2, log2) == std::vector<M>{{"a", "a", 3}});
}

TEST_CASE("trainer: incremental counts equal a full recount on real text; deterministic", "[tokenizer][trainer]") {
  std::string data = test::data_dir();
  if (data.empty()) FAIL("shared data directory not found (set GPT2CC_DATA_DIR)");
  std::ifstream in(data + "/tinystories/valid-head.txt", std::ios::binary);
  REQUIRE(in.good());
  std::string text(60000, '\0');
  in.read(text.data(), std::streamsize(text.size()));
  text.resize(size_t(in.gcount()));

  TrainerConfig cfg;
  cfg.vocab_size = 1 + 256 + 300;
  BpeTrainer trainer(cfg);
  trainer.add_text(text);
  std::vector<MergeRecord> log;
  gpt2cc::TrainStats stats;
  Tokenizer tok = trainer.train(&log, &stats);
  REQUIRE(log.size() == 300);

  // The naive trainer over the same pre-token counts.
  std::map<std::string, uint64_t> counts;
  {
    std::vector<gpt2cc::tok::Piece> pieces;
    gpt2cc::tok::pretokenize(text, pieces);
    for (const auto& p : pieces) ++counts[text.substr(p.begin, p.end - p.begin)];
  }
  auto naive = naive_train(counts, 300);
  REQUIRE(naive.size() == 300);
  for (size_t i = 0; i < naive.size(); ++i) {
    INFO("merge " << i);
    CHECK(tok.token_bytes(log[i].left) == naive[i].first);
    CHECK(tok.token_bytes(log[i].right) == naive[i].second);
  }
  CHECK(stats.bytes == text.size());

  // Same result with 1 thread, with the text split in two add_text calls, and on a rerun.
  cfg.threads = 1;
  BpeTrainer one(cfg);
  size_t half = text.find("\n", text.size() / 2);
  one.add_text(text.substr(0, half));
  one.add_text(text.substr(half));
  CHECK(one.train().fingerprint() == tok.fingerprint());
  CHECK(trainer.train().fingerprint() == tok.fingerprint());
  CHECK(tok.decode(tok.encode(text)) == text);
}

TEST_CASE("trainer: files, specials kept whole, save and load back", "[tokenizer][trainer]") {
  std::string dir = test::temp_dir("trainer_files");
  std::string path = dir + "/corpus.txt";
  std::string text;
  for (int i = 0; i < 400; ++i)
    text += "Story " + std::to_string(i) + ": the cat sat on the mat.<|endoftext|>Line two <|pad|> end.\n";
  std::ofstream(path, std::ios::binary) << text;
  TrainerConfig cfg;
  cfg.vocab_size = 2 + 256 + 40;
  cfg.special_tokens = {"<|endoftext|>", "<|pad|>"};
  cfg.block_bytes = 4096;  // many blocks: cuts must not change the counts
  BpeTrainer from_file(cfg);
  from_file.add_file(path);
  BpeTrainer from_text(cfg);
  from_text.add_text(text);
  Tokenizer a = from_file.train(), b = from_text.train();
  CHECK(a.fingerprint() == b.fingerprint());
  CHECK(a.special_id("<|endoftext|>") == 0);
  CHECK(a.special_id("<|pad|>") == 1);
  for (int id = 2; id < a.vocab_size(); ++id) {
    std::string t = a.token_bytes(id);
    CHECK(t.find("<|") == std::string::npos);
    CHECK(t.find("|>") == std::string::npos);
  }
  std::vector<int> ids = a.encode(text);
  CHECK(std::count(ids.begin(), ids.end(), 0) == 400);
  CHECK(std::count(ids.begin(), ids.end(), 1) == 400);
  a.save(dir + "/tok");
  Tokenizer back = Tokenizer::load(dir + "/tok");
  CHECK(back.fingerprint() == a.fingerprint());
  CHECK(back.special_ids() == std::vector<int>{0, 1});
  CHECK(back.encode(text) == ids);

  CHECK_THROWS_AS(BpeTrainer(TrainerConfig{100, {}, 2, 1, 1 << 20}), gpt2cc::InputError);
  CHECK_THROWS_AS(BpeTrainer(TrainerConfig{1000, {"x"}, 2, 1, 1 << 20}), gpt2cc::InputError);
  CHECK_THROWS_AS(BpeTrainer(TrainerConfig{1000, {"<|a|>", "<|a|>"}, 2, 1, 1 << 20}), gpt2cc::InputError);
  // A special that could be ordinary text would not load back as a special (vocab_io.hpp).
  CHECK_THROWS_WITH(BpeTrainer(TrainerConfig{1000, {"MASK"}, 2, 1, 1 << 20}),
                    Catch::Contains("\"MASK\" could be ordinary text") && Catch::Contains("<|MASK|>"));
  cfg.special_tokens = {"<s>", "[PAD]", "<|endoftext|>"};
  BpeTrainer bracketed(cfg);
  bracketed.add_text(text);
  Tokenizer c = bracketed.train();
  c.save(dir + "/bracketed");
  Tokenizer c_back = Tokenizer::load(dir + "/bracketed");
  CHECK(c_back.fingerprint() == c.fingerprint());
  CHECK(c_back.special_ids() == std::vector<int>{0, 1, 2});
  BpeTrainer missing(cfg);
  CHECK_THROWS_AS(missing.add_file(dir + "/no_such_file.txt"), gpt2cc::InputError);
}

TEST_CASE("trainer: a special a file block would cut, and the longer of two specials at one place",
          "[tokenizer][trainer]") {
  std::string dir = test::temp_dir("trainer_special_cuts");
  // "<|sep|>\n" ends in a newline after a visible character: a place where add_file may end a
  // block. A block must not end inside it, or its halves are counted as text.
  std::string text;
  for (int i = 0; i < 400; ++i) text += "Story " + std::to_string(i) + ": the cat sat.<|sep|>\nLine two.\n";
  const std::string path = dir + "/corpus.txt";
  std::ofstream(path, std::ios::binary) << text;
  TrainerConfig cfg;
  cfg.vocab_size = 1 + 256 + 40;
  cfg.special_tokens = {"<|sep|>\n"};
  cfg.block_bytes = 1024;
  BpeTrainer from_file(cfg), from_text(cfg);
  from_file.add_file(path);
  from_text.add_text(text);
  gpt2cc::TrainStats file_stats, text_stats;
  Tokenizer a = from_file.train(nullptr, &file_stats), b = from_text.train(nullptr, &text_stats);
  CHECK(a.fingerprint() == b.fingerprint());
  // A special counted as text in a few blocks would not change the merges, but it would the counts.
  CHECK(file_stats.bytes == text_stats.bytes);
  CHECK(file_stats.pretokens == text_stats.pretokens);
  CHECK(file_stats.unique_pretokens == text_stats.unique_pretokens);
  for (int id = 1; id < a.vocab_size(); ++id) {
    const std::string t = a.token_bytes(id);
    CHECK((t.find("<|") == std::string::npos && t.find("|>") == std::string::npos));
  }

  // Two specials starting at the same byte: the longer one is the token there.
  cfg.special_tokens = {"<|x|>", "<|x|>!!"};
  BpeTrainer overlapping(cfg);
  std::string both;
  for (int i = 0; i < 200; ++i) both += "a b c <|x|>!! d e <|x|> f\n";
  overlapping.add_text(both);
  Tokenizer c = overlapping.train();
  for (int id = 2; id < c.vocab_size(); ++id) {
    const std::string t = c.token_bytes(id);
    CHECK((t == "!" || t.find('!') == std::string::npos));
  }
}

// A block of a stream ending inside a special that holds a safe cut ("a b": a space between
// letters) could not see the special, and cut it: encode_stream and add_file encoded or counted
// its halves as text. And add_file searched from the longest special's reach for every special,
// so a short one's earlier occurrence hid a later one the cut went through.
TEST_CASE("streamed blocks never cut a special token, wherever the block ends", "[tokenizer][trainer]") {
  std::string dir = test::temp_dir("stream_special_cuts");
  TrainerConfig cfg;
  cfg.vocab_size = 2 + 256 + 30;
  cfg.special_tokens = {"<|a b|>", "<|a much longer special|>"};
  cfg.block_bytes = 1024;
  std::string filler;
  while (filler.size() < 3 * cfg.block_bytes) filler += "the cat sat on the mat.\n";
  BpeTrainer base(cfg);
  base.add_text(filler);
  const Tokenizer tok = base.train();
  const int a_b = 0;  // the specials take the first ids, in the order given
  REQUIRE(tok.token_bytes(a_b) == "<|a b|>");
  // The trainer's counts of `text` read from a file in blocks, and given whole.
  const auto from_file_and_whole = [&](const std::string& text, const std::string& name) {
    const std::string path = dir + "/" + name;
    std::ofstream(path, std::ios::binary) << text;
    BpeTrainer from_file(cfg), from_text(cfg);
    from_file.add_file(path);
    from_text.add_text(text);
    std::pair<gpt2cc::TrainStats, gpt2cc::TrainStats> stats;
    from_file.train(nullptr, &stats.first);
    from_text.train(nullptr, &stats.second);
    return stats;
  };
  // The special ends 1 .. its length - 1 bytes past the end of the first block.
  for (size_t past = 1; past < 7; ++past) {
    const std::string text = filler.substr(0, cfg.block_bytes - 7 + past) + "<|a b|> tail\n" + filler;
    INFO("the special ends " << past << " bytes past the block");
    std::istringstream in(text);
    std::vector<int> streamed;
    tok.encode_stream(in, true, 1, [&](std::span<const int> ids) { streamed.insert(streamed.end(), ids.begin(),
                                                                                   ids.end()); },
                      cfg.block_bytes);
    CHECK(streamed == tok.encode(text));
    CHECK(std::count(streamed.begin(), streamed.end(), a_b) == 1);
    const auto [file_stats, text_stats] = from_file_and_whole(text, "corpus.txt");
    CHECK(file_stats.bytes == text_stats.bytes);
    CHECK(file_stats.unique_pretokens == text_stats.unique_pretokens);
  }
  // No safe cut but the ones inside the specials ("€ " has no ASCII letters): the second "<|a b|>"
  // holds the only cut, which the first occurrence hid.
  std::string euros;
  while (euros.size() < 4 * cfg.block_bytes) euros += "\u20ac ";
  const auto [file_stats, text_stats] = from_file_and_whole("<|a b|><|a b|>" + euros, "euros.txt");
  CHECK(file_stats.bytes == text_stats.bytes);
  CHECK(file_stats.bytes == euros.size());
  CHECK(file_stats.unique_pretokens == text_stats.unique_pretokens);
}

TEST_CASE("trainer: no text is an error naming the files; invalid UTF-8 is never merged", "[tokenizer][trainer]") {
  std::string dir = test::temp_dir("trainer_no_text");
  TrainerConfig cfg;
  cfg.vocab_size = 1 + 256 + 10;
  cfg.min_frequency = 1;
  std::ofstream(dir + "/empty.txt");
  std::ofstream(dir + "/specials.txt") << "<|endoftext|><|endoftext|>";
  BpeTrainer from_files(cfg);
  from_files.add_file(dir + "/empty.txt");
  from_files.add_file(dir + "/specials.txt");
  CHECK_THROWS_WITH(from_files.train(), "no text to train on: " + dir + "/empty.txt, " + dir +
                                            "/specials.txt hold none (special tokens aside)");
  BpeTrainer nothing(cfg);
  CHECK_THROWS_WITH(nothing.train(), Catch::Contains("no text to train on"));
  nothing.add_text("<|endoftext|>");
  CHECK_THROWS_AS(nothing.train(), gpt2cc::InputError);
  nothing.add_text("ab ab");
  CHECK(nothing.train().vocab_size() > 257);

  // Bytes of invalid UTF-8 are pre-tokens of their own (as in encode): text, but no pairs.
  BpeTrainer invalid(cfg);
  invalid.add_text("\xff\xfe\x80\xff\xfe\x80");
  std::vector<MergeRecord> log;
  Tokenizer tok = invalid.train(&log);
  CHECK(log.empty());
  CHECK(tok.vocab_size() == 257);
}
