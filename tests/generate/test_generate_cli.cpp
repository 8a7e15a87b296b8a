// The `generate` binary end to end on a tiny checkpoint written here (random weights, a 257-token
// byte-level tokenizer): generation, reproducibility, stats, scoring, UTF-8-safe streaming, and
// exit code 2 with a clear message for every kind of bad input; with a CUDA device (a GPU, or the
// emulated one of tests/emu/hostcuda: ctest's emu_generate_cli), the same text as the CPU.
#include "common/catch.hpp"
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/test_common.hpp"
#include "core/backend.hpp"
#include "core/check.hpp"
#include "core/checkpoint.hpp"
#include "core/generation.hpp"
#include "core/hf_gpt2.hpp"
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

// A checkpoint of random weights (seed 5, every parameter times `scale`) over the byte tokenizer
// saved in tokenizer_dir.
void write_checkpoint(const std::string& path, const std::string& tokenizer_dir, int layers, int heads, int channels,
                      int max_seq_len, float scale = 1.0f) {
  Checkpoint ckpt;
  ckpt.config.max_seq_len = max_seq_len;
  ckpt.config.vocab_size = 257;
  ckpt.config.padded_vocab_size = 384;
  ckpt.config.num_layers = layers;
  ckpt.config.num_heads = heads;
  ckpt.config.channels = channels;
  ckpt.tokenizer_dir = tokenizer_dir;
  ckpt.tokenizer_fingerprint = Tokenizer::load(tokenizer_dir).fingerprint();
  auto backend = make_cpu_backend(1);
  GPT2 model(ckpt.config, *backend, 1, max_seq_len);
  model.init_weights(5);
  ckpt.params = model.parameters();
  for (float& p : ckpt.params) p *= scale;
  save_checkpoint(path, ckpt);
}

struct Fixture {
  std::string dir, checkpoint, tokenizer_dir;
  Fixture() {
    dir = test::temp_dir("generate_cli");
    tokenizer_dir = dir + "/tokenizer";
    byte_tokenizer().save(tokenizer_dir);
    checkpoint = dir + "/model.ckpt";
    write_checkpoint(checkpoint, tokenizer_dir, 1, 2, 32, 32);
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

void write(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// Runs generate with `args` (shell syntax), optionally with --checkpoint of the fixture, its
// standard input read from the file `stdin_path`. One thread: the model is tiny, and on a loaded
// machine OpenMP's start-up would dominate.
Run generate_cli_reading(const std::string& stdin_path, const std::string& args, bool with_checkpoint = true) {
  const char* bin = std::getenv("GPT2CC_BINARY_DIR");
  REQUIRE(bin != nullptr);  // set by ctest
  const Fixture& f = fixture();
  std::string cmd = std::string(bin) + "/generate --threads 1 " + (with_checkpoint ? "--checkpoint " + f.checkpoint + " " : "") +
                    args + " < " + stdin_path + " > " + f.dir + "/out.txt 2> " + f.dir + "/err.txt";
  int status = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(status));
  Run r{WEXITSTATUS(status), test::read_bytes(f.dir + "/out.txt"), test::read_bytes(f.dir + "/err.txt")};
  INFO(cmd << "\nstdout: " << r.out << "\nstderr: " << r.err);
  return r;
}

// The same with `stdin_text` as its standard input.
Run generate_cli(const std::string& args, bool with_checkpoint = true, const std::string& stdin_text = "") {
  write(fixture().dir + "/stdin.txt", stdin_text);
  return generate_cli_reading(fixture().dir + "/stdin.txt", args, with_checkpoint);
}

bool valid_utf8(const std::string& s) {
  std::string checked;
  append_valid_utf8(s, true, checked);
  return checked == s;
}

}  // namespace

TEST_CASE("generate --help lists its flags and the environment variables it reads", "[generate][cli]") {
  const Run r = generate_cli("--help", false);
  CHECK(r.code == 0);
  for (const char* text : {"--checkpoint", "--top-p", "(default: 1.0)", "--dtype", "environment:", "GPT2CC_KERNELS",
                           "docs/cuda.md", "GPT2CC_REQUIRE_CUBLASLT", "OMP_NUM_THREADS"})
    CHECK_THAT(r.out, Catch::Contains(text));
  // One process: the cores are not shared among MPI ranks as train's are.
  CHECK_THAT(r.out, Catch::Contains("OMP_NUM_THREADS                CPU threads when --threads is 0\n"));
  CHECK_THAT(r.out, !Catch::Contains("mpiexec"));
}

TEST_CASE("generate writes reproducible text, stats and a throughput line", "[generate][cli]") {
  Run a = generate_cli("--prompt 'Caf\xC3\xA9 au lait' --max-new-tokens 40 --seed 3 --num-samples 2 --stats");
  INFO(a.err);
  REQUIRE(a.code == 0);
  CHECK(a.out.find("--- sample 2/2 ---") != std::string::npos);
  CHECK(valid_utf8(a.out));  // random bytes from a byte-level model still print as valid UTF-8
  CHECK(a.err.find("distinct-2") != std::string::npos);
  CHECK(a.err.find("stats all samples") != std::string::npos);
  CHECK(a.err.find("throughput: prompt 13 tokens") != std::string::npos);  // both samples share one prefill
  CHECK(a.err.find("time to first token") != std::string::npos);
  Run b = generate_cli("--prompt 'Caf\xC3\xA9 au lait' --max-new-tokens 40 --seed 3 --num-samples 2 --stats");
  CHECK(b.out == a.out);
  Run c = generate_cli("--prompt 'Caf\xC3\xA9 au lait' --max-new-tokens 40 --seed 4 --num-samples 2");
  CHECK(c.out != a.out);
  // A switch given "=false" is off: the same text and no statistics, as without it.
  Run off = generate_cli("--prompt 'Caf\xC3\xA9 au lait' --max-new-tokens 40 --seed 4 --num-samples 2 --greedy=false "
                         "--stats=false --ignore-eot=false --no-kv-cache=false");
  CHECK(off.out == c.out);
  CHECK(off.err.find("stats sample") == std::string::npos);
  CHECK(off.err.find("full recompute") == std::string::npos);

  // Greedy past the 32-token context, with and without the cache: the same text.
  Run cached = generate_cli("--prompt 'Once upon a time' --greedy --max-new-tokens 60 --ignore-eot");
  Run recomputed = generate_cli("--prompt 'Once upon a time' --greedy --max-new-tokens 60 --ignore-eot --no-kv-cache");
  REQUIRE(cached.code == 0);
  CHECK(cached.out == recomputed.out);
  CHECK(cached.err.find("re-prefill") != std::string::npos);
  // A generation that stays inside the context runs on a model of prompt + new tokens (its
  // activations and KV cache that long, not the context's): the same tokens as the long run's
  // first ones, and a --context-keep valid for the context is accepted though it never slides.
  Run short_run =
      generate_cli("--prompt 'Once upon a time' --greedy --max-new-tokens 8 --ignore-eot --context-keep 30");
  REQUIRE(short_run.code == 0);
  CHECK(short_run.out.size() < cached.out.size());
  CHECK(cached.out.starts_with(short_run.out.substr(0, short_run.out.find_last_not_of('\n') + 1)));

  Run piped = generate_cli("--max-new-tokens 5", true, "from stdin\n");
  CHECK(piped.code == 0);
  CHECK(piped.err.find("throughput: prompt 10 tokens") != std::string::npos);  // trailing newline dropped
  // A file with CRLF or lone CR line ends is the prompt with LF ones (bytes here: \r would be a
  // token).
  write(fixture().dir + "/crlf.txt", "two\r\nlines\r\n");
  write(fixture().dir + "/cr.txt", "two\rlines\r");
  write(fixture().dir + "/lf.txt", "two\nlines\n");
  Run crlf = generate_cli("--max-new-tokens 5 --greedy --prompt-file " + fixture().dir + "/crlf.txt");
  Run lf = generate_cli("--max-new-tokens 5 --greedy --prompt-file " + fixture().dir + "/lf.txt");
  REQUIRE(crlf.code == 0);
  CHECK(crlf.err.find("throughput: prompt 9 tokens") != std::string::npos);
  CHECK(crlf.out == lf.out);
  Run cr = generate_cli("--max-new-tokens 5 --greedy --prompt-file " + fixture().dir + "/cr.txt");
  REQUIRE(cr.code == 0);
  CHECK(cr.err.find("throughput: prompt 9 tokens") != std::string::npos);
  CHECK(cr.out == lf.out);
}

TEST_CASE("--stop takes its string whole: a comma is part of it", "[generate][cli]") {
  // Split at its comma (cxxopts's vector value), "e,o" stopped at the first e or o.
  const std::string args = "--prompt 'Once upon a time' --max-new-tokens 30 --greedy";
  const Run free = generate_cli(args);
  REQUIRE(free.code == 0);
  REQUIRE(free.out.find_first_of("eo") != std::string::npos);  // the split strings would stop it
  REQUIRE(free.out.find("e,o") == std::string::npos);          // the whole one does not
  const Run comma = generate_cli(args + " --stop 'e,o'");
  REQUIRE(comma.code == 0);
  CHECK(comma.out == free.out);
}

TEST_CASE("--num-samples: samples decoded together print as if run one after another", "[generate][cli][batch]") {
  // Samples of different lengths: end of text or a stop string ends some before the others.
  const std::string args =
      "--prompt 'Once upon a time' --max-new-tokens 30 --seed 11 --num-samples 4 --stop e --stop o";
  Run together = generate_cli(args);
  INFO(together.err);
  REQUIRE(together.code == 0);
  CHECK(together.err.find("4 sample(s) decoded together") != std::string::npos);
  Run one_by_one = generate_cli(args + " --batch-size 1");
  REQUIRE(one_by_one.code == 0);
  CHECK(one_by_one.err.find("1 sample(s) decoded together") != std::string::npos);
  Run pairs = generate_cli(args + " --batch-size 3");  // a batch of 3, then 1
  CHECK(together.out == one_by_one.out);
  CHECK(pairs.out == together.out);

  // stdout: "--- sample i/N ---" headers in order, each sample's text then a newline, and a blank
  // line before every header after the first (docs/generate.md, "Output").
  size_t at = 0;
  for (int i = 1; i <= 4; ++i) {
    const std::string header = std::string(i > 1 ? "\n" : "") + "--- sample " + std::to_string(i) + "/4 ---\n";
    const size_t found = together.out.find(header, at);
    REQUIRE(found != std::string::npos);
    CHECK((i > 1 || found == 0));
    at = found + header.size();
  }
  CHECK(together.out.back() == '\n');
  // stderr: one line per sample, in order; the prompt is prefilled once per batch.
  size_t line = 0;
  for (int i = 1; i <= 4; ++i) {
    const size_t found = together.err.find("sample " + std::to_string(i) + "/4: ", line);
    REQUIRE(found != std::string::npos);
    line = found;
  }
  CHECK(together.err.find("throughput: prompt 16 tokens") != std::string::npos);
  CHECK(one_by_one.err.find("throughput: prompt 64 tokens") != std::string::npos);
  CHECK(pairs.err.find("throughput: prompt 32 tokens") != std::string::npos);
  CHECK(together.err.find("time to first token") != std::string::npos);
  // Not all samples stop at the same step: some end early, some run to --max-new-tokens.
  CHECK(together.err.find("stopped at max new tokens") != std::string::npos);
  CHECK((together.err.find("stopped at stop string") != std::string::npos ||
         together.err.find("stopped at end of text") != std::string::npos));

  // The reference path (no cache) runs the samples one at a time, with the same output format.
  const std::string greedy = "--prompt 'Once upon a time' --greedy --max-new-tokens 40 --num-samples 2";
  Run reference = generate_cli(greedy + " --no-kv-cache");
  Run cached = generate_cli(greedy);
  REQUIRE(reference.code == 0);
  CHECK(reference.out == cached.out);
  CHECK(reference.err.find("one sample at a time") != std::string::npos);
}

TEST_CASE("generate fails with exit code 1 when its output cannot be written", "[generate][cli]") {
  // /dev/full refuses every write as a full disk does; the text is short enough to sit in stdout's
  // buffer until the end, where only the last flush can notice.
  const char* bin = std::getenv("GPT2CC_BINARY_DIR");
  REQUIRE(bin != nullptr);
  const Fixture& f = fixture();
  write(f.dir + "/full.txt", "some text to score, some text to score.\n");
  for (const std::string& args : {std::string("--prompt hi --max-new-tokens 4"), "--score " + f.dir + "/full.txt"}) {
    const std::string cmd = std::string(bin) + "/generate --threads 1 --checkpoint " + f.checkpoint + " " + args +
                            " > /dev/full 2> " + f.dir + "/err.txt";
    const int status = std::system(cmd.c_str());
    INFO(cmd);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 1);
    CHECK_THAT(test::read_bytes(f.dir + "/err.txt"),
               Catch::Contains("generate: error: writing standard output failed: "));
  }
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
  // CRLF and lone CR line ends score as LF, as prepare reads them (the line's file name aside).
  const std::string lines = "Once upon a time\nthere was a cat.\n\nThe end.\n";
  write(fixture().dir + "/lf_score.txt", lines);
  write(fixture().dir + "/crlf_score.txt", "Once upon a time\r\nthere was a cat.\r\n\r\nThe end.\r\n");
  write(fixture().dir + "/cr_score.txt", "Once upon a time\rthere was a cat.\r\rThe end.\r");
  const auto after_name = [](const std::string& out) { return out.substr(out.find(": ")); };
  const Run lf = generate_cli("--score " + fixture().dir + "/lf_score.txt");
  REQUIRE(lf.code == 0);
  for (const char* other : {"/crlf_score.txt", "/cr_score.txt"}) {
    const Run scored = generate_cli("--score " + fixture().dir + other);
    REQUIRE(scored.code == 0);
    CHECK(after_name(scored.out) == after_name(lf.out));
  }
}

// The loss of a --score line ("... loss 5.5432 nats/token, ...").
double score_loss(const std::string& out) {
  const size_t at = out.find(": loss ");
  REQUIRE(at != std::string::npos);
  return std::stod(out.substr(at + 7));
}

TEST_CASE("on cuda, generate prints the cpu's text in fp32 and scores bf16 within 1%", "[generate][cli][cuda]") {
  // Head size 64, so bf16 prefills take the flash kernels; a 64-token context. Weights 3x the
  // initial scale: logits ~9x wider (wte and the final LayerNorm's gain), so the model is far from
  // uniform (6.8 nats/token on the text below, where uniform is ln 257 = 5.55) and its greedy text
  // is not one repeated byte.
  const std::string checkpoint = fixture().dir + "/cuda_model.ckpt";
  write_checkpoint(checkpoint, fixture().tokenizer_dir, 2, 2, 128, 64, 3.0f);
  const std::string with = "--checkpoint " + checkpoint + " ";
  const Run probe = generate_cli(with + "--prompt hi --max-new-tokens 1 --device cuda", false);
  if (probe.code != 0 && probe.err.find("--device cuda:") != std::string::npos) {
    WARN("no CUDA device here, nothing checked: " << probe.err);
    return;
  }
  REQUIRE(probe.code == 0);
  const Run missing = generate_cli(with + "--prompt hi --max-new-tokens 1 --device cuda --cuda-device 4096", false);
  CHECK(missing.code == 2);
  CHECK_THAT(missing.err, Catch::Contains("--cuda-device 4096 does not exist: this machine has"));

  // Greedy past the context (the re-prefill), and two seeded top-k samples decoded together: fp32
  // logits differ from the CPU's only in rounding, far below the gaps that pick a token.
  const std::string greedy = "--prompt 'Once upon a time' --greedy --max-new-tokens 80 --ignore-eot";
  for (const std::string& args : {greedy, std::string("--prompt 'Once upon a time' --max-new-tokens 40 --seed 7 "
                                                     "--top-k 40 --num-samples 2")}) {
    const Run cpu = generate_cli(with + args, false);
    const Run cuda = generate_cli(with + args + " --device cuda", false);
    REQUIRE(cpu.code == 0);
    REQUIRE(cuda.code == 0);
    CHECK(cuda.out == cpu.out);
  }
  // bf16 (logits ~1e-2 off: a near-tie may pick another token, so its text is not compared) runs
  // the same way, and its loss on a text stays within 1% of fp32's; fp32 on cuda matches the CPU's.
  const Run bf16 = generate_cli(with + greedy + " --device cuda --dtype bf16", false);
  REQUIRE(bf16.code == 0);
  CHECK(valid_utf8(bf16.out));
  CHECK(bf16.err.find("re-prefill") != std::string::npos);
  write(fixture().dir + "/cuda_text.txt", "Once upon a time there was a little model that learned to count: one, "
                                          "two, three, four, five, six, seven, eight, nine, ten.\n");
  const std::string score = with + "--score " + fixture().dir + "/cuda_text.txt";
  const Run cpu_score = generate_cli(score, false), cuda_score = generate_cli(score + " --device cuda", false);
  const Run bf16_score = generate_cli(score + " --device cuda --dtype bf16", false);
  REQUIRE(cpu_score.code == 0);
  REQUIRE(cuda_score.code == 0);
  REQUIRE(bf16_score.code == 0);
  const double cpu_loss = score_loss(cpu_score.out);
  CHECK(std::abs(score_loss(cuda_score.out) - cpu_loss) <= 2e-4);  // printed to 4 decimals
  CHECK(std::abs(score_loss(bf16_score.out) - cpu_loss) <= 0.01 * cpu_loss);
}

TEST_CASE("on the cpu, --dtype bf16 generates and scores within 1% of fp32", "[generate][cli]") {
  // The model of the cuda case above: head size 64, weights 3x the initial scale.
  const std::string checkpoint = fixture().dir + "/cpu_bf16_model.ckpt";
  write_checkpoint(checkpoint, fixture().tokenizer_dir, 2, 2, 128, 64, 3.0f);
  const std::string with = "--checkpoint " + checkpoint + " --threads 1 ";
  // Greedy past the 64-token context (a re-prefill), and two top-k samples decoded together.
  const Run greedy = generate_cli(with + "--prompt 'Once upon a time' --greedy --max-new-tokens 80 --ignore-eot "
                                         "--dtype bf16", false);
  REQUIRE(greedy.code == 0);
  CHECK(valid_utf8(greedy.out));
  CHECK(greedy.out.size() > std::string("Once upon a time").size());
  CHECK_THAT(greedy.err, Catch::Contains("cpu bf16 (1 thread)") && Catch::Contains("re-prefill"));
  const Run samples = generate_cli(with + "--prompt 'Once upon a time' --max-new-tokens 40 --seed 7 --top-k 40 "
                                          "--num-samples 2 --dtype bf16", false);
  REQUIRE(samples.code == 0);
  CHECK(valid_utf8(samples.out));
  write(fixture().dir + "/cpu_bf16_text.txt", "Once upon a time there was a little model that learned to count: "
                                              "one, two, three, four, five, six, seven, eight, nine, ten.\n");
  const std::string score = with + "--score " + fixture().dir + "/cpu_bf16_text.txt";
  const Run fp32_score = generate_cli(score, false), bf16_score = generate_cli(score + " --dtype bf16", false);
  REQUIRE(fp32_score.code == 0);
  REQUIRE(bf16_score.code == 0);
  const double fp32_loss = score_loss(fp32_score.out), bf16_loss = score_loss(bf16_score.out);
  CHECK(bf16_loss != fp32_loss);  // printed to 4 decimals: equal would mean the weights were not rounded
  CHECK(std::abs(bf16_loss - fp32_loss) <= 0.01 * fp32_loss);
}

// Out of device memory: exit 1, the bytes asked and free, and generate's own hint. Reaching it with
// this small model needs a small device, which only the emulated one can be ($GPT2CC_EMU_DEVICE_MIB,
// set by emu_generate_cli); elsewhere the case says it is skipped (not "nothing checked", which
// scripts/bench_gpu.sh reads as "no CUDA device" on a GPU).
TEST_CASE("on cuda, samples beyond device memory fail with generate's hint", "[generate][cli][cuda]") {
  if (std::getenv("GPT2CC_EMU_DEVICE_MIB") == nullptr) {
    WARN("skipped: needs a small emulated device (GPT2CC_EMU_DEVICE_MIB, as emu_generate_cli sets)");
    return;
  }
  // 20000 samples decoded together, each 32 positions long (the 2-token prompt + 30 new tokens:
  // the whole context): their KV cache alone is ~160 MiB.
  const Run r = generate_cli("--prompt hi --max-new-tokens 30 --num-samples 20000 --device cuda");
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("CUDA out of memory") && Catch::Contains("bytes free") &&
                        Catch::Contains("generate: less memory: a smaller --batch-size (samples decoded together), "
                                        "--dtype bf16"));
  CHECK_THAT(r.err, !Catch::Contains("--max-kv-cache"));  // a lower cap only refuses the run
  CHECK(r.out.empty());
}

// The fixture's weights as a Hugging Face GPT-2 directory (model.safetensors, config.json, and the
// tokenizer as vocab.json + merges.txt): generate takes the directory for --checkpoint, its
// tokenizer from it, and writes the checkpoint's text, token for token.
TEST_CASE("generate runs Hugging Face GPT-2 weights, with the tokenizer beside them", "[generate][cli][hf]") {
  const std::string hf = fixture().dir + "/hf";
  const Checkpoint ckpt = load_checkpoint(fixture().checkpoint, false);
  save_hf_gpt2(hf, ckpt.config, ckpt.params);
  Tokenizer::load(fixture().tokenizer_dir).save(hf);
  const std::string args = "--prompt 'Once upon a time' --greedy --max-new-tokens 40 --ignore-eot";
  const Run ours = generate_cli(args);
  const Run theirs = generate_cli("--checkpoint " + hf + " " + args, false);
  REQUIRE(ours.code == 0);
  REQUIRE(theirs.code == 0);
  CHECK(theirs.out == ours.out);
  CHECK_THAT(theirs.err, Catch::Contains("generate: " + hf + " (step 0)") && Catch::Contains("tokenizer " + hf));
  // Their own tokenizer needs no fingerprint to be theirs: no warning (another one gets it, below),
  // whether the weights are named by their directory or their file.
  CHECK_THAT(theirs.err, !Catch::Contains("records no tokenizer fingerprint"));
  const Run by_file = generate_cli("--checkpoint " + hf + "/model.safetensors " + args, false);
  CHECK(by_file.code == 0);
  CHECK(by_file.out == ours.out);
  CHECK_THAT(by_file.err, !Catch::Contains("records no tokenizer fingerprint"));
  // Without a tokenizer beside the weights, generate asks for one.
  const std::string bare = fixture().dir + "/hf_bare";
  save_hf_gpt2(bare, ckpt.config, ckpt.params);
  const Run asks = generate_cli("--checkpoint " + bare + " --prompt hi", false);
  CHECK(asks.code == 2);
  CHECK_THAT(asks.err, Catch::Contains("records no tokenizer directory: pass --tokenizer DIR"));
  const Run given = generate_cli("--checkpoint " + bare + " --tokenizer " + fixture().tokenizer_dir + " " + args, false);
  CHECK(given.code == 0);
  CHECK(given.out == ours.out);
  CHECK_THAT(given.err, Catch::Contains("records no tokenizer fingerprint; cannot verify " + fixture().tokenizer_dir));
  // A tokenizer of more tokens than the model has rows would give ids past its embedding.
  if (const std::string data = test::data_dir(); !data.empty()) {
    const Run wider = generate_cli("--checkpoint " + bare + " --tokenizer " + data + "/gpt2 --prompt hi", false);
    CHECK(wider.code == 2);
    CHECK_THAT(wider.err, Catch::Contains(gpt2cc::format("tokenizer {}/gpt2 has 50257 tokens, more than the {} of "
                                                         "the model of checkpoint {}",
                                                         data, ckpt.config.vocab_size, bare)));
  }
  // Half a tokenizer beside the weights: the missing file is named.
  const std::string half = fixture().dir + "/hf_half_tokenizer";
  save_hf_gpt2(half, ckpt.config, ckpt.params);
  std::filesystem::copy_file(fixture().tokenizer_dir + "/merges.txt", half + "/merges.txt");
  const Run missing = generate_cli("--checkpoint " + half + " --prompt hi", false);
  CHECK(missing.code == 2);
  CHECK_THAT(missing.err, Catch::Contains("tokenizer file " + half + "/vocab.json is missing"));
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
  fails(generate_cli("--prompt-file " + dir + "/bad_utf8.txt"),
        "the prompt, --prompt-file " + dir + "/bad_utf8.txt is not valid UTF-8: line 1, byte 4 of the line (\\xc3\\x28)");
  write(dir + "/bad_utf8_score.txt", "Fine text.\r\nThen a bad byte \xFF at the end of line two.\n");
  fails(generate_cli("--score " + dir + "/bad_utf8_score.txt"),
        "the text to score, --score " + dir + "/bad_utf8_score.txt is not valid UTF-8: line 2, byte 17 of the line "
        "(\\xff\\x20\\x61\\x74...)");
  fails(generate_cli("--prompt hi --temperature 0"), "temperature must be > 0");
  fails(generate_cli("--prompt hi --greedy --top-k 40"),
        "--top-k sets how tokens are sampled: --greedy takes the most likely one; drop one of them");
  fails(generate_cli("--prompt hi --greedy --temperature 0.7"), "--temperature sets how tokens are sampled");
  fails(generate_cli("--prompt hi --top-p 0.9 --greedy"), "--top-p sets how tokens are sampled");
  fails(generate_cli("--prompt hi --top-p 1.5"), "top-p");
  fails(generate_cli("--prompt hi --top-k -2"), "top-k");
  fails(generate_cli("--prompt hi --repetition-penalty 0.5"), "--repetition-penalty must be >= 1 (1 = off), got 0.5");
  // Out of range though each rounds to 1 (off) as a float.
  fails(generate_cli("--prompt hi --top-p 1.00000001"), "--top-p must be in (0, 1] (1 = off), got 1.00000001");
  fails(generate_cli("--prompt hi --repetition-penalty 0.99999999"),
        "--repetition-penalty must be >= 1 (1 = off), got 0.99999999");
  fails(generate_cli("--prompt hi --num-samples 0"), "--num-samples");
  fails(generate_cli("--prompt hi --batch-size -1"), "--batch-size must be >= 0");
  fails(generate_cli("--prompt hi --device cuda --cuda-device -1"), "--cuda-device must be >= 0, got -1");
  fails(generate_cli("--prompt hi --cuda-device 3"),
        "--cuda-device picks a GPU: with --device cpu it does nothing; drop it, or add --device cuda");
  fails(generate_cli("--prompt hi --temperature 1e-50"), "--temperature: '1e-50' is too small for a float");
  // In range as typed, beyond what the sampler's float holds: named as typed, not as "got inf" / "got 0".
  fails(generate_cli("--prompt hi --temperature 1e50"), "--temperature: '1e50' is too large for a float");
  fails(generate_cli("--prompt hi --repetition-penalty 1e50"),
        "--repetition-penalty: '1e50' is too large for a float (at most 3.4e38)");
  fails(generate_cli("--prompt hi --top-p 1e-46"), "--top-p: '1e-46' is too small for a float (it would be 0)");
  fails(generate_cli("--prompt hi --temperature -1e50"), "temperature must be > 0");  // the range, not the float
  fails(generate_cli("--prompt hi --temperature -1e-50"), "temperature must be > 0");
  fails(generate_cli("--prompt hi --max-kv-cache 0"), "--max-kv-cache must be > 0");
  // The fixture's KV cache is 8 KiB a sample (1 layer x 32 positions x 32 channels x 2 x 4 bytes),
  // its two host rows of logits 2056 bytes (257 tokens): 100 samples 1,024,800 bytes, and
  // 0.0001 GiB = 107,374 bytes holds 10 of 10,248.
  fails(generate_cli("--prompt hi --num-samples 100 --max-kv-cache 0.0001"),
        "--num-samples 100 decodes 100 samples together, whose KV cache and logits would take 1000.8 KiB (10.0 KiB "
        "a sample: KV cache 8.00 KiB = 1 layers x 32 positions x 32 channels x 2 (k, v) x 4 bytes, logits 2.01 KiB "
        "= 2 x 257 tokens x 4 bytes), more than --max-kv-cache 0.0001 GiB: decode at most 10 together (--batch-size "
        "10)");
  fails(generate_cli("--prompt hi --num-samples 100 --batch-size 20 --max-kv-cache 0.0001"), "--batch-size 20 decodes");
  // Shorter when prompt + new tokens stay inside the context: "hi" (2 tokens here) + 5 new, 7
  // positions.
  fails(generate_cli("--prompt hi --max-new-tokens 5 --num-samples 1000 --max-kv-cache 0.0001"),
        "(3.76 KiB a sample: KV cache 1.75 KiB = 1 layers x 7 positions x 32 channels");
  fails(generate_cli("--prompt hi --max-new-tokens 0"), "max new tokens");
  fails(generate_cli("--prompt hi --max-new-tokens many"), "many");
  fails(generate_cli("--prompt hi --device tpu"), "--device");
  fails(generate_cli("--prompt hi --dtype fp8"), "--dtype must be fp32 or bf16, got 'fp8'");
  fails(generate_cli("--prompt hi --frobnicate"), "frobnicate");
  fails(generate_cli("--prompt hi stray"), "unexpected argument 'stray'");
  fails(generate_cli("--prompt hi --threads -1"), "--threads must be from 0 to 1024 (0: OMP_NUM_THREADS, else all cores), got -1");
  fails(generate_cli("--prompt hi --threads 70000"), "--threads must be from 0 to 1024 (0: OMP_NUM_THREADS, else all cores), got 70000");
  fails(generate_cli("--prompt hi --temperature 0.8x"), "--temperature: '0.8x' is not a number");
  fails(generate_cli("--prompt hi --tokenizer ''"), "--tokenizer is empty: give the tokenizer's directory");
  // A checkpoint whose recorded tokenizer is gone: said so, with where the path came from.
  const std::string moved = dir + "/tokenizer_moved";
  std::filesystem::copy(fixture().tokenizer_dir, moved, std::filesystem::copy_options::recursive);
  write_checkpoint(dir + "/moved.ckpt", moved, 1, 2, 32, 32);
  std::filesystem::remove_all(moved);
  fails(generate_cli("--checkpoint " + dir + "/moved.ckpt --prompt hi", false),
        "checkpoint " + dir + "/moved.ckpt records the tokenizer directory " + moved +
            ", which is not there: pass --tokenizer DIR");
  write(dir + "/prompt.txt", "hi");
  fails(generate_cli("--prompt hi --prompt-file " + dir + "/prompt.txt"), "give --prompt or --prompt-file, not both");
  fails(generate_cli("--prompt hi --stop ''"), "stop string");
  fails(generate_cli("--prompt hi --stop \"$(printf '\\377')\""), "a --stop string is not valid UTF-8");
  fails(generate_cli("--prompt hi --score-window 8"), "--score-window sets how --score scores a file");
  fails(generate_cli("--prompt hi --score-stride 8"), "--score-stride sets how --score scores a file");
  fails(generate_cli("--prompt hi --context-keep 33"), "overflow");
  fails(generate_cli("--score " + dir + "/absent.txt"), "cannot open text to score");
  fails(generate_cli("--score " + dir + "/absent.txt --prompt hi"), "takes no prompt");
  write(dir + "/empty.txt", "");
  fails(generate_cli("--score " + dir + "/empty.txt"), "the text to score is empty");
  write(dir + "/one.txt", "a");
  fails(generate_cli("--score " + dir + "/one.txt"), "at least 2 tokens");
  write(dir + "/two.txt", "ab");
  fails(generate_cli("--score " + dir + "/two.txt --score-stride 40 --score-window 16"), "stride");
  fails(generate_cli("--score " + dir + "/two.txt --score-window 33"), "window");
  fails(generate_cli("--score " + dir + "/two.txt --greedy"),
        "--greedy sets how text is generated: --score generates none");
  fails(generate_cli("--score " + dir + "/two.txt --num-samples 3"), "--num-samples sets how text is generated");

  // A tokenizer other than the checkpoint's: the fingerprints differ.
  byte_tokenizer(true).save(dir + "/other_tokenizer");
  fails(generate_cli("--prompt hi --tokenizer " + dir + "/other_tokenizer"), "is not the one checkpoint");
  fails(generate_cli("--prompt hi --tokenizer " + dir + "/no_such_dir"), "no_such_dir");
  if (!cuda_backend_built()) fails(generate_cli("--prompt hi --device cuda"), "CUDA");

  // Endless input is refused at a cap, not read until memory runs out: the text to score at 1 GiB
  // (pointing to the tools that stream a larger one), a prompt at 64 MiB, from a file or stdin.
  fails(generate_cli("--score /dev/zero"), "text to score /dev/zero is larger than 1073741824 bytes: score a larger "
                                           "text as token shards (prepare) with train --eval-only");
  fails(generate_cli("--prompt-file /dev/zero"), "prompt file /dev/zero is larger than 67108864 bytes");
  fails(generate_cli_reading("/dev/zero", ""), "the prompt on standard input is larger than 67108864 bytes");

  // Directories where files belong.
  fails(generate_cli("--prompt-file " + dir), "prompt file " + dir + " is a directory, not a file");
  fails(generate_cli("--score " + dir), "is a directory, not a file");
  std::filesystem::create_directories(dir + "/run/checkpoints");
  std::filesystem::copy_file(fixture().checkpoint, dir + "/run/checkpoints/step_00000007.ckpt",
                             std::filesystem::copy_options::overwrite_existing);
  fails(generate_cli("--checkpoint " + dir + "/run --prompt hi", false),
        "is a run directory: give one of its checkpoint files (the latest is " + dir +
            "/run/checkpoints/step_00000007.ckpt)");
  std::filesystem::create_directories(dir + "/hf_half");
  write(dir + "/hf_half/model.safetensors", "{}");
  fails(generate_cli("--checkpoint " + dir + "/hf_half --prompt hi", false),
        "holds model.safetensors but no config.json");
  std::filesystem::create_directories(dir + "/empty_dir");
  fails(generate_cli("--checkpoint " + dir + "/empty_dir --prompt hi", false),
        "is a directory, neither a checkpoint file nor Hugging Face GPT-2 weights");

  // A model whose weights are not finite (a diverged run): refused, not sampled or scored as NaN.
  write_checkpoint(dir + "/nan.ckpt", fixture().tokenizer_dir, 1, 2, 32, 32, NAN);
  const std::string nan_weights = dir + "/nan.ckpt holds ";
  fails(generate_cli("--checkpoint " + dir + "/nan.ckpt --prompt hi", false), nan_weights);
  fails(generate_cli("--checkpoint " + dir + "/nan.ckpt --greedy --prompt hi", false), nan_weights);
  fails(generate_cli("--checkpoint " + dir + "/nan.ckpt --score " + dir + "/two.txt", false), nan_weights);
}
