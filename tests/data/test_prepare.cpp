// prepare end to end with GPT-2's tokenizer (../shared/data/gpt2) on small inputs written here:
// every format through the CLI, the split (fraction + seed, explicit files), shard rollover,
// the manifest, the loader reading the result, long documents cut into pieces without changing
// a single token, bad flags / inputs (and inputs with nothing to train on) exiting 2 with a
// message, a failed read or write exiting 1, a failed or interrupted (Ctrl-C) run leaving the
// output directory as it was, and a run killed while moving its dataset in finished by the next.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/catch.hpp"
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/dataloader.hpp"
#include "core/run_directory.hpp"
#include "core/shard.hpp"
#include "data/pipeline.hpp"

using namespace gpt2cc;
namespace fs = std::filesystem;

namespace {

std::string gpt2_dir() {
  std::string data = test::data_dir();
  if (data.empty()) FAIL("shared data not found (set GPT2CC_DATA_DIR or provide ../shared/data)");
  return data + "/gpt2";
}

std::string prepare_binary() {
  std::string path = GPT2CC_PREPARE_BINARY;  // set by tests/data/CMakeLists.txt
  if (!fs::exists(path)) FAIL("prepare binary not found at " + path);
  return path;
}

std::string write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  return path;
}

struct Run {
  int code;
  std::string output;
};

// Runs prepare through /bin/sh; `shell` goes before the command (e.g. "ulimit -f 200; ").
// coreutils' timeout kills a prepare that hangs (exit 124) long before ctest's own time limit.
Run run_prepare(const std::string& args, const std::string& dir, const std::string& shell = "") {
  std::string log = dir + "/prepare.log";
  int status = std::system((shell + "timeout 120 " + prepare_binary() + " " + args + " > " + log + " 2>&1").c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, test::read_bytes(log)};
}

// Runs prepare with `args`, and once it has created <out>/.prepare.tmp (its run has begun) and
// 100 ms later, sends it `signal`. Returns the wait status and the output.
struct Signalled {
  int status;
  std::string output;
};
Signalled interrupt_prepare(const std::vector<std::string>& args, const std::string& out, int signal,
                            const std::string& dir) {
  const std::string log = dir + "/interrupted.log", binary = prepare_binary();
  std::vector<char*> argv = {const_cast<char*>(binary.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(), environ) == 0);
  posix_spawn_file_actions_destroy(&actions);
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!fs::exists(out + "/.prepare.tmp") && waitpid(pid, &status, WNOHANG) == 0 &&
         std::chrono::steady_clock::now() < deadline)
    usleep(1000);
  usleep(100'000);
  kill(pid, signal);
  waitpid(pid, &status, 0);
  return {status, test::read_bytes(log)};
}

std::vector<uint32_t> read_tokens(const std::string& path) {
  MappedShard shard(path);
  std::vector<uint32_t> tokens(shard.size());
  shard.copy(0, tokens.size(), tokens.data());
  return tokens;
}

std::vector<uint32_t> split_tokens(const std::string& dir) {
  std::vector<uint32_t> all;
  std::vector<std::string> paths;
  for (const auto& entry : fs::directory_iterator(dir)) paths.push_back(entry.path().string());
  std::sort(paths.begin(), paths.end());  // an empty split has no shards at all
  for (const auto& path : paths) {
    auto t = read_tokens(path);
    all.insert(all.end(), t.begin(), t.end());
  }
  return all;
}

// [eot] + encode(doc) for each document, as prepare writes them.
std::vector<uint32_t> expected(const Tokenizer& tok, const std::vector<std::string>& docs) {
  std::vector<uint32_t> out;
  for (const auto& d : docs) {
    out.push_back(uint32_t(tok.eot_id()));
    for (int id : tok.encode(d, false)) out.push_back(uint32_t(id));
  }
  return out;
}

// Runs prepare with `args` twice, the second run over the first one's output (args hold
// --overwrite): each run's manifest counts `files` input files and `documents` training documents,
// so nothing the first run wrote was read as input by the second.
void run_twice(const std::string& args, const std::string& dir, const std::string& manifest_path, size_t files,
               int documents) {
  for (int run = 0; run < 2; ++run) {
    Run r = run_prepare(args, dir);
    INFO("run " << run << "\n" << r.output);
    REQUIRE(r.code == 0);
    const auto manifest = nlohmann::json::parse(test::read_bytes(manifest_path));
    CHECK(manifest["train"]["documents"] == documents);
    CHECK(manifest["files"].size() == files);
  }
}

}  // namespace

TEST_CASE("prepare writes the documents of every format as <|endoftext|> + tokens", "[data]") {
  std::string dir = test::temp_dir("prepare_formats");
  Tokenizer tok = Tokenizer::load(gpt2_dir());
  struct Case {
    std::string format, file, content, extra;
    std::vector<std::string> docs;
  };
  std::vector<Case> cases = {
      {"tinystories", "ts.txt", "Once upon a time, Tom.\n\nHe ran.\nLily sang.\n", "", {"Once upon a time, Tom.\n\nHe ran.", "Lily sang."}},
      {"tinystories-v2", "v2.txt", "Ann ran.\n<|endoftext|>\nBen sat.\r\nThe end.\n", "", {"Ann ran.", "Ben sat.\nThe end."}},
      {"tinystories-json", "data00.json", R"([{"story": "A cat."}, {"story": "A dog <|endoftext|> barked."}])", "",
       {"A cat.", "A dog <|endoftext|> barked."}},
      {"wikitext", "wiki.raw", " = Alpha = \n \n Alpha text . \n \n = Beta = \n \n Beta text . \n", "",
       {" = Alpha = \n \n Alpha text . ", " = Beta = \n \n Beta text . "}},
      {"wikiextractor", "wiki_00", "<doc id=\"1\" title=\"A\">\nA\n\nAbout A.\n</doc>\n<doc id=\"2\" title=\"B\">\nB\n</doc>\n", "",
       {"A\n\nAbout A.", "B"}},
      {"text", "plain.txt", "First doc.\n%%\nSecond doc,\nline two.\n", "--separator %%", {"First doc.", "Second doc,\nline two."}},
      {"jsonl", "rows.jsonl", "{\"body\": \"Row one.\"}\n{\"body\": \"Row \\u00e9 two.\"}\n", "--field body",
       {"Row one.", "Row \xC3\xA9 two."}},
  };
  for (const auto& c : cases) {
    INFO("format " << c.format);
    std::string in = write_file(dir + "/" + c.file, c.content), out = dir + "/out_" + c.format;
    Run r = run_prepare(format("--format {} --input {} --tokenizer {} --out {} --val-fraction 0 {}", c.format, in,
                               gpt2_dir(), out, c.extra),
                        dir);
    INFO(r.output);
    REQUIRE(r.code == 0);
    CHECK(split_tokens(out + "/train") == expected(tok, c.docs));
    CHECK(split_tokens(out + "/val").empty());
    auto manifest = nlohmann::json::parse(test::read_bytes(out + "/manifest.json"));
    CHECK(manifest["train"]["documents"] == c.docs.size());
    CHECK(manifest["input_format"] == c.format);
    CHECK(manifest["files"][0]["documents"] == c.docs.size());
    CHECK(r.output.find("tokens/byte") != std::string::npos);
  }
}

TEST_CASE("prepare splits by document, rolls shards over and feeds the loader", "[data]") {
  std::string dir = test::temp_dir("prepare_split");
  Tokenizer tok = Tokenizer::load(gpt2_dir());
  std::string text;
  std::vector<std::string> docs;
  for (int i = 0; i < 200; ++i) {
    docs.push_back(format("Document number {} tells a short story about item {}.", i, i * 7));
    text += docs.back() + "\n<|endoftext|>\n";
  }
  std::string in = write_file(dir + "/docs.txt", text);
  std::string args = format("--format tinystories-v2 --input {} --tokenizer {} --shard-tokens 500 --val-fraction 0.1 --seed 5",
                            in, gpt2_dir());
  Run r = run_prepare(args + " --out " + dir + "/a", dir);
  INFO(r.output);
  REQUIRE(r.code == 0);
  auto manifest = nlohmann::json::parse(test::read_bytes(dir + "/a/manifest.json"));
  uint64_t train_docs = manifest["train"]["documents"], val_docs = manifest["val"]["documents"];
  CHECK(train_docs + val_docs == 200);
  CHECK(val_docs > 5);
  CHECK(val_docs < 40);
  CHECK(manifest["tokenizer"]["fingerprint"].get<std::string>().size() == 16);
  // Shards hold exactly --shard-tokens tokens, except the last of each split.
  auto shards = list_shards(dir + "/a/train");
  REQUIRE(shards.size() >= 3);
  for (size_t i = 0; i + 1 < shards.size(); ++i) CHECK(read_shard_header(shards[i]).num_tokens == 500);
  CHECK(read_shard_header(shards[0]).tokenizer_fingerprint == tok.fingerprint());
  // Every document landed in exactly one split, in order, unchanged.
  auto train = split_tokens(dir + "/a/train"), val = split_tokens(dir + "/a/val");
  CHECK(train.size() + val.size() == expected(tok, docs).size());
  CHECK(uint64_t(std::count(train.begin(), train.end(), uint32_t(tok.eot_id()))) == train_docs);
  CHECK(train.size() == manifest["train"]["tokens"].get<uint64_t>());
  // The manifest's bytes per split: the text of that split's documents only (val's not train's).
  auto text_bytes = [&](const std::vector<uint32_t>& ids) {
    std::vector<int> text_ids;
    for (uint32_t id : ids)
      if (id != uint32_t(tok.eot_id())) text_ids.push_back(int(id));
    return uint64_t(tok.decode(text_ids).size());
  };
  CHECK(manifest["train"]["bytes"].get<uint64_t>() == text_bytes(train));
  CHECK(manifest["val"]["bytes"].get<uint64_t>() == text_bytes(val));
  // The manifest's shard list is the shards on disk: each file relative to the output directory,
  // its token count as in its header (the last, shorter shard too), and the headers' token width.
  for (std::string split : {"train", "val"}) {
    INFO("split " << split);
    const auto& listed = manifest[split]["shards"];
    auto on_disk = list_shards(dir + "/a/" + split);
    REQUIRE(listed.size() == on_disk.size());
    for (size_t i = 0; i < on_disk.size(); ++i) {
      const std::string file = listed[i]["file"];
      CHECK(file == split + "/" + fs::path(on_disk[i]).filename().string());
      CHECK(fs::exists(dir + "/a/" + file));
      ShardHeader header = read_shard_header(on_disk[i]);
      CHECK(listed[i]["tokens"].get<uint64_t>() == header.num_tokens);
      CHECK(manifest["token_bytes"].get<uint32_t>() == header.token_bytes);
    }
  }

  SECTION("the same seed gives the same split, another seed another") {
    REQUIRE(run_prepare(args + " --out " + dir + "/b", dir).code == 0);
    CHECK(split_tokens(dir + "/b/val") == val);
    REQUIRE(run_prepare(args + " --seed 6 --out " + dir + "/c", dir).code == 0);
    CHECK(split_tokens(dir + "/c/val") != val);
  }
  SECTION("the loader reads the shards with the tokenizer's fingerprint") {
    DataLoader loader(list_shards(dir + "/a/train"), 2, 16, LoaderOrder::shuffled, 1, tok.fingerprint());
    CHECK(loader.num_tokens() == train.size());
    std::vector<int> x, y;
    loader.next(x, y);
    CHECK(x.size() == 32);
    EvalIterator eval(list_shards(dir + "/a/val"), 2, 16, 8, tok.fingerprint());
    CHECK(eval.tokens_to_score() == val.size() - 1);
  }
  SECTION("existing shards are kept unless --overwrite") {
    Run again = run_prepare(args + " --out " + dir + "/a", dir);
    CHECK(again.code == 2);
    CHECK(again.output.find("--overwrite") != std::string::npos);
    CHECK(run_prepare(args + " --shard-tokens 100000 --overwrite --out " + dir + "/a", dir).code == 0);
    CHECK(list_shards(dir + "/a/train").size() == 1);
    CHECK(!fs::exists(dir + "/a/.prepare.tmp"));
  }
  SECTION("explicit validation files") {
    std::string v = write_file(dir + "/valid.txt", "Held out one.\n<|endoftext|>\nHeld out two.\n");
    Run e = run_prepare(format("--format tinystories-v2 --input {} --val-files {} --tokenizer {} --out {}", in, v,
                               gpt2_dir(), dir + "/e"),
                        dir);
    INFO(e.output);
    REQUIRE(e.code == 0);
    CHECK(split_tokens(dir + "/e/val") == expected(tok, {"Held out one.", "Held out two."}));
    CHECK(split_tokens(dir + "/e/train") == expected(tok, docs));
  }
}

// prepare writes into <out>/.prepare.tmp and moves the result into <out> only when the run has
// succeeded: a run that fails, on bad input (exit 2) or on a failed write (exit 1), must leave a
// good output that --overwrite was to replace exactly as it was, and create nothing where none was.
TEST_CASE("a failed run leaves the output directory as it was", "[data]") {
  std::string dir = test::temp_dir("prepare_failed_run");
  std::string good = write_file(dir + "/good.txt", "First story.\n<|endoftext|>\nSecond story.\n");
  std::string out = dir + "/out";
  auto args = [&](const std::string& input) {
    return format("--format tinystories-v2 --input {} --val-fraction 0 --tokenizer {} --out {}", input, gpt2_dir(),
                  out);
  };
  REQUIRE(run_prepare(args(good), dir).code == 0);
  const std::string manifest = test::read_bytes(out + "/manifest.json");
  const std::string shard = test::read_bytes(out + "/train/shard_000000.bin");
  REQUIRE(!shard.empty());
  auto unchanged = [&] {
    CHECK(test::read_bytes(out + "/manifest.json") == manifest);
    CHECK(list_shards(out + "/train") == std::vector<std::string>{out + "/train/shard_000000.bin"});
    CHECK(test::read_bytes(out + "/train/shard_000000.bin") == shard);
    CHECK(!fs::exists(out + "/.prepare.tmp"));
  };

  SECTION("bad input: exit 2") {
    std::string bad = write_file(dir + "/bad.txt", "A good story.\n<|endoftext|>\nBad \xFF byte.\n");
    Run r = run_prepare(args(bad) + " --overwrite", dir);
    INFO(r.output);
    CHECK(r.code == 2);
    CHECK(r.output.find("invalid UTF-8") != std::string::npos);
    unchanged();
  }
  SECTION("a write that fails: exit 1, naming the file") {
    // Over 100 kB of tokens; `ulimit -f 200` (512-byte blocks) makes writes past 100 kB fail with
    // EFBIG, like a full disk: prepare ignores SIGXFSZ (run_cli), which would kill it with no word.
    std::string text;
    for (int i = 0; i < 4000; ++i)
      text += format("Story {} is about a cat, a dog and the number {}.\n<|endoftext|>\n", i, i * 13);
    std::string big = write_file(dir + "/big.txt", text);
    Run r = run_prepare(args(big) + " --overwrite", dir, "ulimit -f 200; ");
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find("shard_000000.bin") != std::string::npos);
    CHECK(r.output.find("File too large") != std::string::npos);
    unchanged();
  }
  SECTION("no documents: exit 2") {
    std::string empty = write_file(dir + "/empty.txt", "");
    Run r = run_prepare(args(empty) + " --overwrite", dir);
    INFO(r.output);
    CHECK(r.code == 2);
    CHECK(r.output.find("no documents found in --input " + empty) != std::string::npos);
    unchanged();
  }
  SECTION("nothing is created where there was no output") {
    std::string bad = write_file(dir + "/bad.txt", "Bad \xFF byte.\n");
    out = dir + "/fresh";
    CHECK(run_prepare(args(bad), dir).code == 2);
    CHECK(!fs::exists(out));
    // Every level of the path that the run created, not only the last.
    out = dir + "/nest/a/b";
    CHECK(run_prepare(args(bad), dir).code == 2);
    CHECK(!fs::exists(dir + "/nest"));
    fs::create_directories(dir + "/kept");
    out = dir + "/kept/a/b/";
    CHECK(run_prepare(args(bad), dir).code == 2);
    CHECK(fs::exists(dir + "/kept"));
    CHECK(fs::is_empty(dir + "/kept"));
    // A link given as --out (dangling, or a loop) is the user's: refused, never removed.
    fs::create_symlink("nothere", dir + "/dangling_out");
    fs::create_symlink("loop_b", dir + "/loop_a");
    fs::create_symlink("loop_a", dir + "/loop_b");
    for (const char* link : {"/dangling_out", "/loop_a"}) {
      out = dir + link;
      const Run r = run_prepare(args(good), dir);
      INFO(r.output);
      CHECK(r.code == 2);
      CHECK(r.output.find("cannot create output directory " + out) != std::string::npos);
      CHECK(fs::is_symlink(out));
    }
  }
  SECTION("what a killed run left in .prepare.tmp is removed") {
    fs::create_directories(out + "/.prepare.tmp/train");
    write_file(out + "/.prepare.tmp/train/shard_000007.bin", "partial");
    REQUIRE(run_prepare(args(good) + " --overwrite", dir).code == 0);
    CHECK(!fs::exists(out + "/.prepare.tmp"));
    CHECK(list_shards(out + "/train") == std::vector<std::string>{out + "/train/shard_000000.bin"});
  }
}

// The files of a dataset folder: relative path -> bytes (its shards and manifest.json).
std::map<std::string, std::string> dataset_files(const std::string& out) {
  std::map<std::string, std::string> files;
  for (const char* name : {"train", "val"})
    if (fs::is_directory(out + "/" + name))
      for (const auto& entry : fs::directory_iterator(out + "/" + name))
        files[std::string(name) + "/" + entry.path().filename().string()] =
            entry.is_directory() ? "(a folder)" : test::read_bytes(entry.path().string());
  if (fs::exists(out + "/manifest.json"))
    files["manifest.json"] = fs::is_directory(out + "/manifest.json") ? "(a folder)"
                                                                       : test::read_bytes(out + "/manifest.json");
  return files;
}

// The move of a finished run into --out is journaled (data/output_dir.hpp): a run killed inside it
// (here: its states made by hand, as the journal defines them) leaves the next run to finish it,
// and the loader refuses the half-moved shard folders until then. Killed there, the old code left
// neither dataset whole, and the next run deleted the new one.
TEST_CASE("a move into --out stopped midway is finished by the next run, refused by the loader before",
          "[data]") {
  const std::string dir = test::temp_dir("prepare_unfinished_move");
  std::string old_text, new_text;
  for (int i = 0; i < 40; ++i) {
    old_text += format("Old story {} has a cat.\n<|endoftext|>\n", i);
    new_text += format("New story {} has a dog and a bird.\n<|endoftext|>\n", i);
  }
  const std::string old_input = write_file(dir + "/old.txt", old_text), new_input = write_file(dir + "/new.txt", new_text);
  const auto args = [&](const std::string& input, const std::string& out) {
    return format("--format tinystories-v2 --input {} --val-fraction 0.2 --shard-tokens 40 --tokenizer {} --out {}",
                  input, gpt2_dir(), out);
  };
  const std::string made = dir + "/made";  // the new dataset, as the run staged it
  REQUIRE(run_prepare(args(new_input, made), dir).code == 0);
  const auto new_files = dataset_files(made);
  REQUIRE(new_files.size() > 4);

  const auto staging_of = [](const std::string& out) { return out + "/.prepare.tmp"; };
  const auto stopped_at = [&](bool old_moved) {
    const std::string out = dir + (old_moved ? "/stopped_late" : "/stopped_early");
    REQUIRE(run_prepare(args(old_input, out), dir).code == 0);
    REQUIRE(dataset_files(out).size() > 4);
    const std::string staging = out + "/.prepare.tmp";
    const std::vector<std::string> old_train = list_shards(out + "/train"), old_val = list_shards(out + "/val");
    fs::create_directories(staging + "/old/train");
    fs::copy(made, staging, fs::copy_options::recursive);
    const std::vector<std::string> staged = list_shards(staging + "/train");
    write_file(staging + "/COMMITTING", "");
    for (const char* split : {"/train", "/val"}) write_file(out + split + "/.prepare-moving", "");
    // Half of the old train shards moved away; late, all of the old and half of the new moved.
    const size_t half = old_train.size() / 2;
    for (size_t i = 0; i < (old_moved ? old_train.size() : half); ++i)
      fs::rename(old_train[i], staging + "/old/train/" + fs::path(old_train[i]).filename().string());
    if (old_moved) {
      fs::rename(out + "/manifest.json", staging + "/old/manifest.json");
      fs::create_directories(staging + "/old/val");
      for (const std::string& shard : old_val)
        fs::rename(shard, staging + "/old/val/" + fs::path(shard).filename().string());
      write_file(staging + "/OLD_MOVED", "");
      for (size_t i = 0; i < staged.size() / 2; ++i)
        fs::rename(staged[i], out + "/train/" + fs::path(staged[i]).filename().string());
    }
    return out;
  };
  for (const bool old_moved : {false, true}) {
    const std::string out = stopped_at(old_moved);
    INFO((old_moved ? "stopped moving the new shards in" : "stopped moving the old shards away"));
    CHECK_THROWS_AS(list_shards(out + "/train"), InputError);
    CHECK_THROWS_WITH(list_shards(out + "/val/"), Catch::Contains("a prepare run stopped while moving its shards in "
                                                                  "(" + out + "/val/.prepare-moving is there)") &&
                                                      Catch::Contains("run prepare again with the --out it wrote"));
    // Every way to name them: a glob, one shard, a link to the folder. Another folder is not theirs.
    const std::string link = out + "_train_link";
    fs::remove(link);
    fs::create_directory_symlink(out + "/train", link);
    const std::string one_shard = list_shards(staging_of(out) + "/val").front();
    for (const std::string& named : {out + "/train/*.bin", link, out + "/train/" + fs::path(one_shard).filename().string()}) {
      INFO(named);
      CHECK_THROWS_WITH(list_shards(named), Catch::Contains("stopped while moving its shards in"));
    }
    fs::create_directories(out + "/extra");
    fs::copy_file(one_shard, out + "/extra/shard.bin");
    CHECK(list_shards(out + "/extra").size() == 1);
    fs::remove_all(out + "/extra");
    // A split folder that is a link: the marker is in its target, which any name reaches.
    const std::string target = out + "_store", linked = out + "_linked";
    fs::create_directories(target);
    fs::create_directories(linked);
    fs::copy_file(one_shard, target + "/shard.bin");
    write_file(target + "/.prepare-moving", "");
    fs::create_directory_symlink(target, linked + "/train");
    for (const std::string& named : {target, target + "/*.bin", linked + "/train"}) {
      INFO(named);
      CHECK_THROWS_WITH(list_shards(named), Catch::Contains("stopped while moving its shards in"));
    }
    fs::remove_all(target);
    fs::remove_all(linked);
    // The next run (here without --overwrite: then refused, as the finished move holds shards).
    const Run r = run_prepare(args(old_input, out), dir);
    INFO(r.output);
    CHECK(r.code == 2);
    CHECK(r.output.find("an earlier run stopped while moving its dataset into " + out + ": finishing that first") !=
          std::string::npos);
    CHECK(r.output.find("already holds shards") != std::string::npos);
    CHECK(dataset_files(out) == new_files);
    CHECK_FALSE(fs::exists(out + "/.prepare.tmp"));
    CHECK_NOTHROW(list_shards(out + "/train"));
  }
  // The marker alone, with no staged dataset (no state a move leaves: its marker goes first when
  // it ends): the next run neither guesses nor moves anything; it says what to look at.
  const std::string out = dir + "/marker_alone";
  REQUIRE(run_prepare(args(new_input, out), dir).code == 0);
  const auto whole = dataset_files(out);
  fs::create_directories(staging_of(out));
  write_file(staging_of(out) + "/COMMITTING", "");
  const Run r = run_prepare(args(old_input, out) + " --overwrite", dir);
  INFO(r.output);
  CHECK(r.code == 1);
  CHECK(r.output.find("holds the marker of a move into " + out + " but not the dataset to move") != std::string::npos);
  CHECK(dataset_files(out) == whole);
}

// What a run's move could not replace is refused before any work, the old dataset kept: a split
// folder on another filesystem (renames cannot cross: the old code deleted the old shards, then
// failed; found by a rename of a probe file, which a bind mount fails too), a folder named like a
// shard, a folder named manifest.json.
TEST_CASE("prepare --overwrite refuses an --out its move could not complete", "[data]") {
  const std::string dir = test::temp_dir("prepare_unmovable");
  const std::string input = write_file(dir + "/in.txt", "A story.\n<|endoftext|>\nAnother.\n");
  const std::string out = dir + "/out";
  const std::string args =
      format("--format tinystories-v2 --input {} --val-fraction 0 --tokenizer {} --out {} --overwrite", input,
             gpt2_dir(), out);
  REQUIRE(run_prepare(args, dir).code == 0);
  const auto refused = [&](const std::string& says) {
    const auto before = dataset_files(out);
    const Run r = run_prepare(args, dir);
    INFO(r.output);
    CHECK(r.code == 2);
    CHECK(r.output.find(says) != std::string::npos);
    CHECK(r.output.find("tokens") == std::string::npos);  // refused before any work
    CHECK(dataset_files(out) == before);
  };
  fs::create_directories(out + "/train/zz.bin/sub");
  refused(out + "/train/zz.bin is a directory, not a shard");
  fs::remove_all(out + "/train/zz.bin");
  fs::create_directories(out + "/val/manifest.json");
  fs::rename(out + "/manifest.json", dir + "/manifest.json");
  fs::rename(out + "/val/manifest.json", out + "/manifest.json");
  refused(out + "/manifest.json is a directory");
  fs::remove(out + "/manifest.json");
  fs::rename(dir + "/manifest.json", out + "/manifest.json");
  // A split folder that is a link to nothing: the move would fail midway creating it.
  fs::rename(out + "/val", dir + "/val_kept");
  fs::create_directory_symlink(dir + "/nowhere", out + "/val");
  refused(out + "/val exists and is not a directory (a link to no folder)");
  fs::remove(out + "/val");
  fs::rename(dir + "/val_kept", out + "/val");
  // /dev/shm is a tmpfs on most machines: another filesystem than the test's folder.
  struct stat shm {}, here {};
  if (::stat("/dev/shm", &shm) != 0 || ::stat(dir.c_str(), &here) != 0 || shm.st_dev == here.st_dev) {
    WARN("no second filesystem at /dev/shm: the cross-filesystem case is not checked");
    return;
  }
  const std::string elsewhere = "/dev/shm/gpt2cc_prepare_val_" + std::to_string(::getpid());
  fs::remove_all(elsewhere);
  fs::create_directories(elsewhere);
  fs::remove_all(out + "/val");
  fs::create_directory_symlink(elsewhere, out + "/val");
  refused("prepare moves its shards into " + out + "/val and the old ones out of it by renaming, from and to " + out +
          "/.prepare.tmp: it is on another filesystem or mount (a link?)");
  fs::remove_all(elsewhere);
}

// Ctrl-C (SIGINT) or SIGTERM during a run: prepare stops, cleans up as a failed run does and exits
// 128 + the signal. The input is large enough (pseudo-random words, which the tokenizer cannot
// cache) that the run is still going when the signal comes.
TEST_CASE("an interrupted run cleans up and leaves the output directory as it was", "[data]") {
  std::string dir = test::temp_dir("prepare_interrupted");
  const char* syllables[] = {"ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "qu", "bri", "sto", "pla"};
  std::string text;
  uint64_t x = 88172645463325252ull;
  while (text.size() < (30u << 20)) {
    for (int word = 0; word < 60; ++word) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;  // xorshift64
      for (uint64_t k = 0; k < 1 + x % 3; ++k) text += syllables[(x >> (8 * k + 8)) % 13];
      text += word % 12 == 11 ? ".\n" : " ";
    }
    text += "<|endoftext|>\n";
  }
  std::string big = write_file(dir + "/big.txt", text);
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{"--format", "tinystories-v2", "--input", big, "--threads", "1",
                                    "--tokenizer", gpt2_dir(), "--out", out};
  };
  SECTION("SIGINT: exit 130, nothing left where there was no output") {
    Signalled r = interrupt_prepare(args(dir + "/nest/out"), dir + "/nest/out", SIGINT, dir);
    INFO(r.output);
    REQUIRE(WIFEXITED(r.status));
    CHECK(WEXITSTATUS(r.status) == 130);
    CHECK(r.output.find("interrupted (SIGINT)") != std::string::npos);
    CHECK(!fs::exists(dir + "/nest"));
  }
  SECTION("SIGTERM: exit 143, the previous output survives") {
    std::string good = write_file(dir + "/good.txt", "First story.\n<|endoftext|>\nSecond story.\n");
    const std::string out = dir + "/out";
    REQUIRE(run_prepare(format("--format tinystories-v2 --input {} --val-fraction 0 --tokenizer {} --out {}", good,
                               gpt2_dir(), out),
                        dir)
                .code == 0);
    const std::string manifest = test::read_bytes(out + "/manifest.json");
  const std::string shard = test::read_bytes(out + "/train/shard_000000.bin");
    std::vector<std::string> overwrite = args(out);
    overwrite.push_back("--overwrite");
    Signalled r = interrupt_prepare(overwrite, out, SIGTERM, dir);
    INFO(r.output);
    REQUIRE(WIFEXITED(r.status));
    CHECK(WEXITSTATUS(r.status) == 143);
    CHECK(test::read_bytes(out + "/manifest.json") == manifest);
    CHECK(list_shards(out + "/train") == std::vector<std::string>{out + "/train/shard_000000.bin"});
    CHECK(test::read_bytes(out + "/train/shard_000000.bin") == shard);
    CHECK(!fs::exists(out + "/.prepare.tmp"));
  }
}

// A run that leaves no training tokens is refused (exit 2) with the reason, and writes nothing:
// the trainer would only fail later. An empty validation split stays a warning when it was drawn
// (--val-fraction on a small input); --val-fraction 0 asks for none.
TEST_CASE("prepare refuses a run with nothing to train on", "[data]") {
  std::string dir = test::temp_dir("prepare_nothing");
  std::string empty = write_file(dir + "/empty.txt", "");
  std::string blank = write_file(dir + "/blank.txt", "  \n\n \t\r\n");
  std::string two = write_file(dir + "/two.txt", "First story.\n<|endoftext|>\nSecond story.\n");
  std::string one = write_file(dir + "/one.txt", "The only story.\n");
  fs::create_directories(dir + "/blanks");
  write_file(dir + "/blanks/a.txt", "\n");
  write_file(dir + "/blanks/b.txt", "");
  std::string out = dir + "/out";
  auto run = [&](const std::string& flags) {
    return run_prepare(format("{} --tokenizer {} --out {}", flags, gpt2_dir(), out), dir);
  };
  struct Bad {
    std::string flags;
    std::vector<std::string> messages;
  };
  std::vector<Bad> bad = {
      {"--format text --input " + empty, {"no documents found in --input " + empty, "nothing to train on"}},
      {"--format text --val-fraction 0 --input " + blank,
       {"no documents found in --input " + blank, "whitespace-only"}},
      {"--format tinystories-v2 --input " + dir + "/blanks",
       {"no documents found in --input " + dir + "/blanks/a.txt, " + dir + "/blanks/b.txt"}},
      {"--format wikiextractor --input " + blank, {"no documents found", "--format wikiextractor"}},
      {"--format tinystories-v2 --val-fraction 0.99 --input " + two,
       {"all 2 documents of --input " + two + " went to the validation split", "--val-fraction 0.99",
        "lower --val-fraction"}},
      {"--format tinystories-v2 --val-fraction 0.99 --input " + one, {"the only document of --input " + one}},
      {"--format tinystories-v2 --input " + empty + " --val-files " + two, {"no documents found in --input " + empty}},
      {"--format tinystories-v2 --input " + two + " --val-files " + blank,
       {"no documents found in --val-files " + blank}},
  };
  for (const auto& b : bad) {
    Run r = run(b.flags);
    INFO(b.flags << "\n" << r.output);
    CHECK(r.code == 2);
    for (const auto& message : b.messages) CHECK(r.output.find(message) != std::string::npos);
    CHECK(!fs::exists(out));
  }
  SECTION("--val-fraction 0 wants no validation split: no warning") {
    Run r = run("--format tinystories-v2 --val-fraction 0 --input " + two);
    INFO(r.output);
    CHECK(r.code == 0);
    CHECK(r.output.find("warning") == std::string::npos);
  }
  SECTION("a drawn validation split that came out empty is a warning") {
    Run r = run("--format tinystories-v2 --val-fraction 0.001 --input " + two);
    INFO(r.output);
    CHECK(r.code == 0);
    CHECK(r.output.find("warning: the validation split is empty: none of the 2 documents") != std::string::npos);
    CHECK(split_tokens(out + "/train").size() > 2);
  }
}

TEST_CASE("long documents are cut into pieces without changing a token", "[data]") {
  std::string dir = test::temp_dir("prepare_pieces");
  Tokenizer tok = Tokenizer::load(gpt2_dir());
  // Lines that end in spaces, blank lines, indented lines, non-ASCII: only some newlines are safe cuts.
  std::string doc;
  for (int i = 0; i < 400; ++i)
    doc += format(i % 5 == 0 ? "Line {} ends with spaces   \n" : i % 7 == 0 ? "\n  indented {} é\n" : "Line {} plain.\n", i);
  doc += "end";
  std::string in = write_file(dir + "/long.txt", doc);
  // And a document of one line, cut only at the spaces between its words.
  std::string line;
  for (int i = 0; i < 300; ++i) line += format(i % 3 ? "word{} and, more " : "x{}  y 'z ", i);
  std::string in_line = write_file(dir + "/one_line.txt", line + "last");
  data::PrepareConfig config;
  config.format.format = data::Format::text;
  config.inputs = {in, in_line};
  config.val_fraction = 0;
  config.out_dir = dir + "/out";
  config.piece_bytes = 64;   // many pieces per document
  config.batch_bytes = 512;  // many batches
  config.threads = 2;
  std::ostringstream log;
  data::PrepareSummary s = data::prepare_dataset(config, tok, log);
  CHECK(s.train.documents == 2);
  CHECK(split_tokens(dir + "/out/train") == expected(tok, {doc, line + "last"}));
}

// A batch is full by its pieces' count too, not only by their text: 3 million one-letter
// documents (12 MB of input) took ~140 bytes each until 32 MB of text had come, 430 MB; now a batch
// holds ~200k of them. And blank lines that may end a document are held as their bytes: 4 million
// of them at a document's end took ~55 bytes each, 220 MB, before being dropped. Each in a child
// process, against a child that prepares one document, on one thread (no OpenMP team to fork).
// Skipped under sanitizers, whose allocators add their own.
TEST_CASE("prepare's memory does not grow with a count of tiny documents or blank lines", "[data]") {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  WARN("skipped under a sanitizer: its allocator's overhead is not the pipeline's");
  return;
#endif
  std::string dir = test::temp_dir("prepare_tiny_documents");
  Tokenizer tok = Tokenizer::load(gpt2_dir());
  std::string many;
  for (int i = 0; i < 3'000'000; ++i) many += "a\n%\n";
  const auto peak_kib = [&](const std::string& text, const std::string& name) {
    data::PrepareConfig config;
    config.format.format = data::Format::text;
    config.format.separator = "%";
    config.inputs = {write_file(dir + "/" + name + ".txt", text)};
    config.val_fraction = 0;
    config.out_dir = dir + "/" + name;
    config.threads = 1;
    std::ostringstream log;
    const test::ChildOutcome child = test::run_in_child(120, [&] { data::prepare_dataset(config, tok, log); });
    INFO(child.summary());
    CHECK(child.returned);
    return child.peak_rss_kib;
  };
  const long one = peak_kib("a\n", "one"), tiny = peak_kib(many, "many");
  const long blank = peak_kib("a\n" + std::string(4'000'000, '\n'), "blank");
  INFO("peak RSS: one document " << one << " KiB, 3M documents " << tiny << " KiB, one followed by 4M blank lines "
                                 << blank << " KiB");
  CHECK(tiny - one < 160 * 1024);
  CHECK(blank - one < 80 * 1024);
  CHECK(split_tokens(dir + "/many/train").size() == 6'000'000);  // <|endoftext|> + "a" each
  CHECK(split_tokens(dir + "/blank/train") == split_tokens(dir + "/one/train"));
}

// Hidden files (.DS_Store, editor swap files) in an input directory are not inputs: one holding
// invalid UTF-8 must neither fail the run nor add documents.
TEST_CASE("prepare skips hidden files of an input directory", "[data]") {
  std::string dir = test::temp_dir("prepare_hidden");
  Tokenizer tok = Tokenizer::load(gpt2_dir());
  fs::create_directories(dir + "/in");
  write_file(dir + "/in/a.txt", "The visible document.\n");
  write_file(dir + "/in/.DS_Store", "Bud1\xFF\xFE binary");
  Run r = run_prepare(format("--format text --input {}/in --val-fraction 0 --tokenizer {} --out {}/out", dir,
                             gpt2_dir(), dir),
                      dir);
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK(split_tokens(dir + "/out/train") == expected(tok, {"The visible document."}));
  auto manifest = nlohmann::json::parse(test::read_bytes(dir + "/out/manifest.json"));
  CHECK(manifest["files"].size() == 1);
}

// The library checks shard_tokens itself (the CLI's own check never lets 0 reach it): 0 is an
// InputError before anything is written. In a child process with a time limit: without the check
// the shard writer would loop.
TEST_CASE("prepare_dataset refuses shard_tokens 0", "[data]") {
  std::string dir = test::temp_dir("prepare_shard_tokens_0");
  Tokenizer tok = Tokenizer::load(gpt2_dir());
  data::PrepareConfig config;
  config.format.format = data::Format::text;
  config.inputs = {write_file(dir + "/a.txt", "Some text.\n")};
  config.val_fraction = 0;
  config.out_dir = dir + "/out";
  config.shard_tokens = 0;
  std::ostringstream log;
  const test::ChildOutcome child = test::run_in_child(30, [&] { data::prepare_dataset(config, tok, log); });
  INFO(child.summary());
  CHECK(child.threw);
  CHECK_THAT(child.error, Catch::Contains("--shard-tokens must be >= 1, got 0"));
  if (child.threw) CHECK_THROWS_AS(data::prepare_dataset(config, tok, log), InputError);  // ends: threw there
  CHECK(!fs::exists(dir + "/out"));
}

TEST_CASE("an --out inside an --input directory is not read as input", "[data]") {
  // The second run into corpus/shards would have read the first one's shards and manifest.
  std::string dir = test::temp_dir("prepare_out_inside");
  fs::create_directories(dir + "/corpus");
  write_file(dir + "/corpus/a.txt", "The first document.\n");
  write_file(dir + "/corpus/b.txt", "The second document.\n");
  const std::string args = format("--format text --input {}/corpus --tokenizer {} --out {}/corpus/shards "
                                  "--val-fraction 0 --overwrite",
                                  dir, gpt2_dir(), dir);
  run_twice(args, dir, dir + "/corpus/shards/manifest.json", 2, 2);
}

// An --input folder that is --out itself: the second run read the first one's manifest.json and
// shards as text (refused as invalid UTF-8, or trained on with --replace-invalid-utf8).
TEST_CASE("--out's own shards and manifest are not read when --input is --out", "[data]") {
  std::string dir = test::temp_dir("prepare_out_is_input");
  fs::create_directories(dir + "/same");
  write_file(dir + "/same/a.txt", "The only document.\n");
  const std::string args = format("--format text --input {}/same --tokenizer {} --out {}/same --val-fraction 0 "
                                  "--overwrite --replace-invalid-utf8",
                                  dir, gpt2_dir(), dir);
  run_twice(args, dir, dir + "/same/manifest.json", 1, 1);
  // Named as files or as the shards' folder, or relative to the shards' folder: refused.
  struct Named {
    std::string input, cd;
  };
  fs::create_symlink(dir + "/same/train/shard_000000.bin", dir + "/soft.bin");
  fs::create_hard_link(dir + "/same/train/shard_000000.bin", dir + "/hard.bin");
  const Named named[] = {{dir + "/same/manifest.json", ""},
                         {dir + "/same/train/shard_000000.bin", ""},
                         {dir + "/same/train", ""},
                         {"shard_000000.bin", "cd " + dir + "/same/train && "},
                         {dir + "/soft.bin", ""},
                         {dir + "/hard.bin", ""}};
  for (const Named& n : named) {
    Run r = run_prepare(format("--format text --input {} --tokenizer {} --out {}/same --overwrite "
                               "--replace-invalid-utf8",
                               n.input, gpt2_dir(), dir),
                        dir, n.cd);
    INFO(n.cd << n.input << "\n" << r.output);
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains("input " + n.input + " is one of --out's own outputs"));
  }
}

// A file read twice, by any path: into the training split twice, or into both splits (a
// validation loss measured on training text).
TEST_CASE("prepare refuses a file given twice among --input and --val-files", "[data]") {
  std::string dir = test::temp_dir("prepare_twice");
  fs::create_directories(dir + "/in");
  const std::string a = write_file(dir + "/in/a.txt", "One.\n"), b = write_file(dir + "/in/b.txt", "Two.\n");
  fs::create_symlink(a, dir + "/link.txt");
  fs::create_hard_link(b, dir + "/hard.txt");
  struct Twice {
    std::string inputs, message;
  };
  const Twice cases[] = {
      {"--input " + dir + "/in --input " + a + " --val-fraction 0",
       a + " (--input) is the same file as " + a + " (--input): its text would be read into one split twice"},
      {"--input " + a + " --input " + dir + "/link.txt --val-fraction 0",
       dir + "/link.txt (--input) is the same file as " + a + " (--input)"},
      {"--input " + dir + "/in --val-files " + b,
       b + " (--val-files) is the same file as " + b + " (--input): the validation split would repeat training text"},
      {"--input " + a + " --val-files " + b + " --val-files " + dir + "/in/./b.txt",
       dir + "/in/./b.txt (--val-files) is the same file as " + b + " (--val-files)"},
      {"--input " + dir + "/hard.txt --val-files " + b,
       b + " (--val-files) is the same file as " + dir + "/hard.txt (--input)"},
  };
  for (const Twice& t : cases) {
    Run r = run_prepare(format("--format text {} --tokenizer {} --out {}/out", t.inputs, gpt2_dir(), dir), dir);
    INFO(t.inputs << "\n" << r.output);
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains(t.message));
    CHECK_FALSE(fs::exists(dir + "/out"));
  }
  Run distinct = run_prepare(format("--format text --input {} --val-files {} --tokenizer {} --out {}/out", a, b,
                                    gpt2_dir(), dir),
                             dir);
  INFO(distinct.output);
  CHECK(distinct.code == 0);
}

TEST_CASE("prepare rejects bad flags and inputs with exit code 2", "[data]") {
  std::string dir = test::temp_dir("prepare_errors");
  std::string in = write_file(dir + "/a.txt", "Some text.\n");
  std::string base = format("--input {} --tokenizer {} --out {}/out", in, gpt2_dir(), dir);
  std::error_code ec;
  fs::remove(dir + "/loop", ec);
  fs::create_symlink("loop", dir + "/loop");  // a link to itself
  struct Bad {
    std::string args, message;
  };
  std::vector<Bad> bad = {
      {"--format text", "--input is required"},
      {"--format csv " + base, "--format must be one of"},
      {"--format text --val-fraction 1 " + base, "--val-fraction"},
      {"--format text --val-fraction -0.1 " + base, "--val-fraction"},
      {"--format text --shard-tokens 0 " + base, "--shard-tokens"},
      {"--format text --threads -1 " + base, "--threads"},
      {"--format text --threads 1025 " + base, "--threads must be from 0 to 1024 (0: OMP_NUM_THREADS, else all cores), got 1025"},
      {"--format text --bogus " + base, "bogus"},
      {"--format text --field x " + base, "--field applies only"},
      {"--format jsonl --separator x " + base, "--separator applies only"},
      {"--format jsonl --separator '' " + base, "--separator applies only"},
      {"--format text --separator '' " + base, "--separator is empty: give the line that separates documents"},
      {"--format tinystories --story-boundary para " + base, "--story-boundary must be"},
      {"--format text --story-boundary line " + base, "--story-boundary applies only to --format tinystories"},
      {"--format jsonl --field= " + base, "--field must not be empty"},
      {"--format text --val-files " + in + " --val-fraction 0.1 " + base, "not both"},
      {"--format text --input " + dir + "/missing.txt --tokenizer " + gpt2_dir() + " --out " + dir + "/o",
       "input " + dir + "/missing.txt does not exist"},
      {"--format text --input /dev/null --tokenizer " + gpt2_dir() + " --out " + dir + "/o",
       "input /dev/null is not a regular file or a directory (a pipe or a device cannot be read"},
      {"--format text --input " + dir + "/loop --tokenizer " + gpt2_dir() + " --out " + dir + "/o",
       dir + "/loop: Too many levels of symbolic links"},
      {"--format text --input '' --tokenizer " + gpt2_dir() + " --out " + dir + "/o", "input  does not exist"},
      {"--format text --input " + in + " --tokenizer " + dir + " --out " + dir + "/o", dir},
      {"--format text " + base + " stray", "stray"},
      {"--format text --input " + in + " --tokenizer " + gpt2_dir() + " --out ''", "--out is empty"},
      {"--format text --input " + in + " --tokenizer " + in + " --out " + dir + "/o", "is a file, not a directory"},
      {"--format text --val-fraction 0.2oops " + base, "--val-fraction: '0.2oops' is not a number"},
      {"--format text --input " + in + " --tokenizer " + gpt2_dir() + " --out " + in, "check --out"},
      {"--format text --input " + in + " --tokenizer " + gpt2_dir() + " --out " + in + "/sub", "check --out"},
  };
  for (const auto& b : bad) {
    Run r = run_prepare(b.args, dir);
    INFO(b.args << "\n" << r.output);
    CHECK(r.code == 2);
    CHECK(r.output.find(b.message) != std::string::npos);
  }
  // An --out another prepare holds (its lock taken here): refused, and that run's staging folder
  // (which this one would have removed as a killed run's) left alone.
  {
    const std::string busy = dir + "/busy";
    RunDirectoryLock other(busy, DirectoryOwner{"output directory", "--out"});
    fs::create_directories(busy + "/.prepare.tmp/train");
    Run r = run_prepare(format("--format text --input {} --tokenizer {} --out {}", in, gpt2_dir(), busy), dir);
    CHECK(r.code == 2);
    CHECK_THAT(r.output, Catch::Contains("output directory " + busy + " is in use by another gpt2cc process (train, "
                                         "prepare, an export or tokenizer train writing there): give another --out"));
    CHECK(fs::is_directory(busy + "/.prepare.tmp/train"));
  }
  // --threads 0 takes OMP_NUM_THREADS, within the same bound (5000 tokenizer copies otherwise).
  Run many = run_prepare("--format text " + base, dir, "OMP_NUM_THREADS=5000 ");
  CHECK(many.code == 2);
  CHECK_THAT(many.output, Catch::Contains("OMP_NUM_THREADS asks for 5000 threads, more than 1024: give --threads, or "
                                          "a smaller OMP_NUM_THREADS"));
  CHECK_FALSE(fs::exists(dir + "/out"));
  Run help = run_prepare("--help", dir);
  CHECK(help.code == 0);
  CHECK(help.output.find("--shard-tokens") != std::string::npos);
  // One default per flag: --separator's is in its text, without cxxopts' (default: "") beside it.
  CHECK(help.output.find("(default: none") != std::string::npos);
  CHECK(help.output.find("(default: \"\")") == std::string::npos);
}

TEST_CASE("prepare: a failed read exits 1 naming the file; out of memory names --threads", "[data]") {
  std::string dir = test::temp_dir("prepare_machine_errors");
  // Reading /proc/self/mem at offset 0 (never mapped) fails with EIO.
  for (const char* f : {"tinystories-json", "text"}) {
    Run r = run_prepare(format("--format {} --input /proc/self/mem --tokenizer {} --out {}/out", f, gpt2_dir(), dir),
                        dir);
    INFO(r.output);
    CHECK(r.code == 1);
    CHECK(r.output.find("error reading /proc/self/mem: Input/output error") != std::string::npos);
    CHECK(!fs::exists(dir + "/out"));
  }
#if !defined(__SANITIZE_ADDRESS__)  // ASan reserves far more address space than the limit below
  // 64 tokenizer copies (~30 MB each) do not fit in 600 MB of address space; one does.
  std::string in = write_file(dir + "/a.txt", "Some text.\n");
  Run r = run_prepare(format("--format text --input {} --threads 64 --tokenizer {} --out {}/oom", in, gpt2_dir(), dir),
                      dir, "ulimit -v 600000; ");
  INFO(r.output);
  CHECK(r.code == 1);
  CHECK(r.output.find("out of host memory") != std::string::npos);
  CHECK(r.output.find("a lower --threads uses less memory") != std::string::npos);
  CHECK(!fs::exists(dir + "/oom"));
#endif
}
