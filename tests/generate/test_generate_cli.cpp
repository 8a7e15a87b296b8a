// The `generate` binary end to end on a tiny checkpoint written here (random weights, a 257-token
// byte-level tokenizer): generation, reproducibility, stats, scoring, UTF-8-safe streaming, and
// exit code 2 with a clear message for every kind of bad input.
#include <catch2/catch.hpp>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "common/test_common.hpp"
#include "core/backend.hpp"
#include "core/checkpoint.hpp"
#include "core/generation.hpp"
#include "tokenizer/tokenizer.hpp"

using namespace gpt2cc;

namespace {

// 256 byte tokens + <|endoftext|> (id 256), no merges: every byte is one token, so multi-byte
// characters are split across tokens.
Tokenizer byte_tokenizer(bool extra_special = false) {
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.emplace_back(1, static_cast<char>(b));
  tokens.emplace_back("<|endoftext|>");
  std::vector<int> specials = {256};
  if (extra_special) {
    tokens.emplace_back("<|pad|>");
    specials.push_back(257);
  }
  return Tokenizer::from_parts(tokens, {}, specials);
}

struct Fixture {
  std::string dir, checkpoint, tokenizer_dir;
  Fixture() {
    dir = test::temp_dir("generate_cli");
    tokenizer_dir = dir + "/tokenizer";
    Tokenizer tokenizer = byte_tokenizer();
    tokenizer.save(tokenizer_dir);
    Checkpoint ckpt;
    ckpt.config.max_seq_len = 32;
    ckpt.config.vocab_size = 257;
    ckpt.config.padded_vocab_size = 384;
    ckpt.config.num_layers = 1;
    ckpt.config.num_heads = 2;
    ckpt.config.channels = 32;
    ckpt.tokenizer_dir = tokenizer_dir;
    ckpt.tokenizer_fingerprint = Tokenizer::load(tokenizer_dir).fingerprint();
    auto backend = make_cpu_backend(1);
    GPT2 model(ckpt.config, *backend, 1, 32);
    model.init_weights(5);
    ckpt.params = model.parameters();
    checkpoint = dir + "/model.ckpt";
    save_checkpoint(checkpoint, ckpt);
  }
};

const Fixture& fixture() {
  static Fixture f;
  return f;
}

struct Run {
  int code;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// Runs generate with `args` (shell syntax), optionally with --checkpoint of the fixture. One
// thread: the model is tiny, and on a loaded machine OpenMP's start-up would dominate.
Run generate_cli(const std::string& args, bool with_checkpoint = true, const std::string& stdin_text = "") {
  const char* bin = std::getenv("GPT2CC_BINARY_DIR");
  REQUIRE(bin != nullptr);  // set by ctest
  const Fixture& f = fixture();
  write(f.dir + "/stdin.txt", stdin_text);
  std::string cmd = std::string(bin) + "/generate --threads 1 " + (with_checkpoint ? "--checkpoint " + f.checkpoint + " " : "") +
                    args + " < " + f.dir + "/stdin.txt > " + f.dir + "/out.txt 2> " + f.dir + "/err.txt";
  int status = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(status));
  Run r{WEXITSTATUS(status), slurp(f.dir + "/out.txt"), slurp(f.dir + "/err.txt")};
  INFO(cmd << "\nstdout: " << r.out << "\nstderr: " << r.err);
  return r;
}

bool valid_utf8(const std::string& s) {
  std::string checked;
  append_valid_utf8(s, true, checked);
  return checked == s;
}

}  // namespace

TEST_CASE("generate writes reproducible text, stats and a throughput line", "[generate][cli]") {
  Run a = generate_cli("--prompt 'Caf\xC3\xA9 au lait' --max-new-tokens 40 --seed 3 --num-samples 2 --stats");
  INFO(a.err);
  REQUIRE(a.code == 0);
  CHECK(a.out.find("--- sample 2/2 ---") != std::string::npos);
  CHECK(valid_utf8(a.out));  // random bytes from a byte-level model still print as valid UTF-8
  CHECK(a.err.find("distinct-2") != std::string::npos);
  CHECK(a.err.find("stats all samples") != std::string::npos);
  CHECK(a.err.find("throughput: prompt 26 tokens") != std::string::npos);
  CHECK(a.err.find("time to first token") != std::string::npos);
  Run b = generate_cli("--prompt 'Caf\xC3\xA9 au lait' --max-new-tokens 40 --seed 3 --num-samples 2 --stats");
  CHECK(b.out == a.out);
  Run c = generate_cli("--prompt 'Caf\xC3\xA9 au lait' --max-new-tokens 40 --seed 4 --num-samples 2");
  CHECK(c.out != a.out);

  // Greedy past the 32-token context, with and without the cache: the same text.
  Run cached = generate_cli("--prompt 'Once upon a time' --greedy --max-new-tokens 60 --ignore-eot");
  Run recomputed = generate_cli("--prompt 'Once upon a time' --greedy --max-new-tokens 60 --ignore-eot --no-kv-cache");
  REQUIRE(cached.code == 0);
  CHECK(cached.out == recomputed.out);
  CHECK(cached.err.find("re-prefill") != std::string::npos);

  Run piped = generate_cli("--max-new-tokens 5", true, "from stdin\n");
  CHECK(piped.code == 0);
  CHECK(piped.err.find("throughput: prompt 10 tokens") != std::string::npos);  // trailing newline dropped
}

TEST_CASE("generate --score states loss, perplexity, window and stride", "[generate][cli]") {
  write(fixture().dir + "/text.txt", std::string(100, 'a') + " and some more text to score.\n");
  Run r = generate_cli("--score " + fixture().dir + "/text.txt --score-window 16 --score-stride 8");
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("129 tokens scored, window 16, stride 8") != std::string::npos);
  CHECK(r.out.find("perplexity") != std::string::npos);
  Run defaults = generate_cli("--score " + fixture().dir + "/text.txt");
  CHECK(defaults.out.find("window 32, stride 16") != std::string::npos);
}

TEST_CASE("bad input exits 2 with a message naming the problem", "[generate][cli]") {
  const std::string dir = fixture().dir;
  auto fails = [](const Run& r, const std::string& message) {
    INFO("stderr: " << r.err);
    CHECK(r.code == 2);
    CHECK(r.err.find(message) != std::string::npos);
  };
  fails(generate_cli("--checkpoint " + dir + "/missing.ckpt --prompt hi", false), "cannot open checkpoint");
  fails(generate_cli("--prompt hi", false), "--checkpoint is required");
  write(dir + "/garbage.ckpt", "not a checkpoint at all");
  fails(generate_cli("--checkpoint " + dir + "/garbage.ckpt --prompt hi", false), "garbage.ckpt");
  fails(generate_cli("--prompt ''"), "prompt is empty");
  fails(generate_cli("", true, ""), "prompt is empty");
  fails(generate_cli("--prompt " + std::string(40, 'x')), "longer than the model's context of 32");
  fails(generate_cli("--prompt-file " + dir + "/nope.txt"), "cannot open prompt file");
  write(dir + "/bad_utf8.txt", "caf\xC3(");
  fails(generate_cli("--prompt-file " + dir + "/bad_utf8.txt"), "not valid UTF-8");
  fails(generate_cli("--prompt hi --temperature 0"), "temperature must be > 0");
  fails(generate_cli("--prompt hi --top-p 1.5"), "top-p");
  fails(generate_cli("--prompt hi --top-k -2"), "top-k");
  fails(generate_cli("--prompt hi --repetition-penalty 0.5"), "repetition penalty");
  fails(generate_cli("--prompt hi --num-samples 0"), "--num-samples");
  fails(generate_cli("--prompt hi --max-new-tokens 0"), "max new tokens");
  fails(generate_cli("--prompt hi --max-new-tokens many"), "many");
  fails(generate_cli("--prompt hi --device tpu"), "--device");
  fails(generate_cli("--prompt hi --dtype fp8"), "--dtype must be fp32 or bf16, got 'fp8'");
  fails(generate_cli("--prompt hi --dtype bf16"), "--dtype bf16 needs --device cuda");
  fails(generate_cli("--prompt hi --frobnicate"), "frobnicate");
  fails(generate_cli("--prompt hi --stop ''"), "stop string");
  fails(generate_cli("--prompt hi --context-keep 33"), "overflow");
  fails(generate_cli("--score " + dir + "/absent.txt"), "cannot open text to score");
  fails(generate_cli("--score " + dir + "/absent.txt --prompt hi"), "takes no prompt");
  write(dir + "/one.txt", "a");
  fails(generate_cli("--score " + dir + "/one.txt"), "at least 2 tokens");
  write(dir + "/two.txt", "ab");
  fails(generate_cli("--score " + dir + "/two.txt --score-stride 40 --score-window 16"), "stride");
  fails(generate_cli("--score " + dir + "/two.txt --score-window 33"), "window");

  // A tokenizer other than the checkpoint's: the fingerprints differ.
  byte_tokenizer(true).save(dir + "/other_tokenizer");
  fails(generate_cli("--prompt hi --tokenizer " + dir + "/other_tokenizer"), "is not the one checkpoint");
  fails(generate_cli("--prompt hi --tokenizer " + dir + "/no_such_dir"), "no_such_dir");
  if (!cuda_backend_built()) fails(generate_cli("--prompt hi --device cuda"), "CUDA");
}
