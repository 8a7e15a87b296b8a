// generate's flags (generate_flags.hpp): the options table and their checks.
#include "generate_flags.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <vector>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/cli.hpp"
#include "core/utf8.hpp"

namespace gpt2cc {

namespace {

// A prompt is refused beyond the model's context in tokens; read, it is capped far above any
// context, so that an endless input (`< /dev/zero`) is refused, not read until memory runs out.
constexpr size_t kMaxPromptBytes = size_t(64) << 20;
constexpr const char* kPromptTooLarge = "more than any model's context holds";
// The text to score is held whole with its tokens: 1 GiB of text (~0.3 tokens a byte, 4 bytes
// each: 2.2 GiB with its tokens) at most.
constexpr size_t kMaxScoreBytes = size_t(1) << 30;
constexpr const char* kScoreTooLarge =
    "score a larger text as token shards (prepare) with train --eval-only, which streams them";

// Refuses text that is not valid UTF-8, naming where: the line, the byte of the line (1-based,
// as prepare names its inputs' bytes) and the bytes there.
void require_utf8(const std::string& text, const std::string& what) {
  const size_t at = find_invalid_utf8(text);
  if (at == std::string::npos) return;
  const size_t newline = text.rfind('\n', at);
  const size_t line_start = newline == std::string::npos ? 0 : newline + 1;
  const auto line = 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n');
  std::string bytes;
  for (size_t i = at; i < text.size() && i < at + 4; ++i)
    bytes += "\\x" + hex_byte(uint8_t(text[i]));
  fail_input(format("{} is not valid UTF-8: line {}, byte {} of the line ({}{})", what, line, at - line_start + 1,
                    bytes, text.size() > at + 4 ? "..." : ""));
}

// "\n", "\t", "\\" in a --stop value become newline, tab, backslash (shells pass them literally).
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      char c = s[i + 1];
      if (c == 'n' || c == 't' || c == '\\') {
        out += c == 'n' ? '\n' : c == 't' ? '\t' : '\\';
        ++i;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

// CRLF and lone CR line ends as LF, as prepare reads text (so as the model saw it).
std::string lf_line_ends(const std::string& text) {
  std::string lf;
  lf.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\r') lf += text[i];
    else if (i + 1 == text.size() || text[i + 1] != '\n') lf += '\n';  // a lone CR; CRLF's CR is dropped
  }
  return lf;
}

// The prompt from --prompt, --prompt-file or stdin. A file's or stdin's line ends read as LF
// (lf_line_ends), and one trailing newline is dropped (echo and editors add it).
std::string read_prompt(const cxxopts::ParseResult& args) {
  INPUT_CHECK(!(args.count("prompt") && args.count("prompt-file")), "give --prompt or --prompt-file, not both");
  std::string prompt;
  if (args.count("prompt")) return args["prompt"].as<std::string>();
  if (args.count("prompt-file")) {
    prompt = read_whole_file(args["prompt-file"].as<std::string>(), "prompt file", kMaxPromptBytes, kPromptTooLarge);
  } else {
    if (isatty(STDIN_FILENO)) std::fprintf(stderr, "generate: reading the prompt from stdin (end it with Ctrl-D)\n");
    prompt = read_whole_stream(std::cin, "the prompt on standard input", kMaxPromptBytes, kPromptTooLarge);
  }
  std::string lf = lf_line_ends(prompt);
  if (!lf.empty() && lf.back() == '\n') lf.pop_back();
  return lf;
}

}  // namespace

// A double flag's value as the sampler's float. A positive one that a float cannot hold is refused
// as typed (--repetition-penalty 1e50 would become inf, --top-p 1e-46 zero, and be refused as "got
// inf", "got 0"); NaN, infinities, 0 and negative values are left to the range checks.
float sampler_float(const cxxopts::ParseResult& args, const char* flag) {
  const double value = args[flag].as<double>();
  const float rounded = static_cast<float>(value);
  if (std::isfinite(value) && value > 0 && args.count(flag)) {
    const std::string typed = values_as_typed(args, flag).back();
    INPUT_CHECK(std::isfinite(rounded), "--{}: '{}' is too large for a float (at most 3.4e38)", flag, typed);
    INPUT_CHECK(rounded != 0, "--{}: '{}' is too small for a float (it would be 0)", flag, typed);
  }
  return rounded;
}

cxxopts::Options make_generate_options() {
  cxxopts::Options options("generate",
                           "Generate text from a gpt2cc checkpoint or Hugging Face GPT-2 weights, or score a text file.");
  options.add_options()
      ("checkpoint", "checkpoint file written by train, or a Hugging Face GPT-2 directory (model.safetensors + "
                     "config.json) (required)", cxxopts::value<std::string>())
      ("tokenizer", "tokenizer directory (default: the one recorded in the checkpoint)", cxxopts::value<std::string>())
      ("prompt", "prompt text (default: --prompt-file, else stdin)", cxxopts::value<std::string>())
      ("prompt-file", "file holding the prompt (UTF-8)", cxxopts::value<std::string>())
      ("num-samples", "samples to generate, >= 1", cxxopts::value<int>()->default_value("1"))
      ("batch-size", "samples decoded together (one KV-cache row each); 0 = all of --num-samples",
       cxxopts::value<int>()->default_value("0"))
      ("max-kv-cache", "GiB the samples decoded together may take: their KV cache and rows of logits", cxxopts::value<double>()->default_value("8"))
      ("max-new-tokens", "tokens generated per sample at most, >= 1", cxxopts::value<int>()->default_value("128"))
      ("stop", "stop string (repeatable; \\n \\t \\\\ understood); not printed", cxxopts::value<std::vector<std::string>>())
      ("ignore-eot", "keep generating past <|endoftext|>")
      ("greedy", "argmax decoding (with --temperature, --top-k or --top-p: an error)")
      ("temperature", "divide logits by T > 0", cxxopts::value<double>()->default_value("1.0"))
      ("top-k", "keep the k most likely tokens; 0 = off", cxxopts::value<int>()->default_value("0"))
      ("top-p", "nucleus threshold in (0, 1]; 1 = off", cxxopts::value<double>()->default_value("1.0"))
      ("repetition-penalty", "CTRL penalty >= 1 on tokens in the context; 1 = off", cxxopts::value<double>()->default_value("1.0"))
      ("seed", "sampling seed (same seed, same text)", cxxopts::value<uint64_t>()->default_value("1337"))
      ("context-keep", "tokens kept when the context overflows; 0 = half the context", cxxopts::value<int>()->default_value("0"))
      ("no-kv-cache", "recompute the whole context for every token (slow; for comparison)")
      ("device", "cpu or cuda", cxxopts::value<std::string>()->default_value("cpu"))
      ("cuda-device", "GPU index (--device cuda)", cxxopts::value<int>()->default_value("0"))
      ("dtype", "compute dtype: fp32, or bf16 (the checkpoint's fp32 weights rounded to bf16; cuda on sm_80 or newer, or cpu: fp32 arithmetic on bf16 weights, half the bytes per token)",
       cxxopts::value<std::string>()->default_value("fp32"))
      ("threads", "CPU threads, 0 to 1024 (0: $OMP_NUM_THREADS, else all cores)", cxxopts::value<int>()->default_value("0"))
      ("stats", "print distinct-1/2/3, repetition rate and mean log-prob per sample and overall")
      ("score", "print the loss and perplexity of this text file (at most 1 GiB) instead of generating",
       cxxopts::value<std::string>())
      ("score-window", "scoring window in tokens; 0 = the model's context", cxxopts::value<int>()->default_value("0"))
      ("score-stride", "scoring stride in tokens; 0 = half the window", cxxopts::value<int>()->default_value("0"))
      ("h,help", "show this help");
  return options;
}

GenerateRequest parse_generate_request(const cxxopts::ParseResult& args) {
  GenerateRequest r;
  INPUT_CHECK(args.unmatched().empty(), "unexpected argument '{}'", args.unmatched().front());
  INPUT_CHECK(args.count("checkpoint"), "--checkpoint is required (see --help)");
  r.device = args["device"].as<std::string>();
  INPUT_CHECK(r.device == "cpu" || r.device == "cuda", "--device must be cpu or cuda, got '{}'", r.device);
  r.dtype = parse_dtype(args["dtype"].as<std::string>());
  r.cuda_device = args["cuda-device"].as<int>();
  INPUT_CHECK(r.cuda_device >= 0, "--cuda-device must be >= 0, got {}", r.cuda_device);
  INPUT_CHECK(!args.count("cuda-device") || r.device == "cuda",
              "--cuda-device picks a GPU: with --device {} it does nothing; drop it, or add --device cuda", r.device);
  r.threads = args["threads"].as<int>();
  check_thread_count(r.threads);
  r.num_samples = args["num-samples"].as<int>();
  INPUT_CHECK(r.num_samples >= 1, "--num-samples must be >= 1, got {}", r.num_samples);
  r.batch_size = args["batch-size"].as<int>();
  INPUT_CHECK(r.batch_size >= 0, "--batch-size must be >= 0 (0 = all samples at once), got {}", r.batch_size);
  r.max_kv_cache_gib = args["max-kv-cache"].as<double>();
  INPUT_CHECK(std::isfinite(r.max_kv_cache_gib) && r.max_kv_cache_gib > 0, "--max-kv-cache must be > 0 GiB, got {}",
              r.max_kv_cache_gib);

  SampleConfig& sampling = r.sampling;
  sampling.greedy = switch_on(args, "greedy");
  sampling.temperature = sampler_float(args, "temperature");
  sampling.top_k = args["top-k"].as<int>();
  // Checked as typed, before they round to the sampler's floats: --top-p 1.00000001 and
  // --repetition-penalty 0.99999999 are out of range, though each rounds to 1 (off).
  const double top_p = args["top-p"].as<double>();
  INPUT_CHECK(top_p > 0 && top_p <= 1, "--top-p must be in (0, 1] (1 = off), got {}",
              values_as_typed(args, "top-p").back());
  sampling.top_p = sampler_float(args, "top-p");
  const double repetition_penalty = args["repetition-penalty"].as<double>();
  INPUT_CHECK(std::isfinite(repetition_penalty) && repetition_penalty >= 1,
              "--repetition-penalty must be >= 1 (1 = off), got {}",
              values_as_typed(args, "repetition-penalty").back());
  sampling.repetition_penalty = sampler_float(args, "repetition-penalty");
  sampling.seed = args["seed"].as<uint64_t>();
  // --greedy takes the most likely token: a sampling setting beside it would be silently unused
  // (the repetition penalty still acts on the logits, and --seed is left alone: harmless).
  for (const char* flag : {"temperature", "top-k", "top-p"})
    INPUT_CHECK(!sampling.greedy || !args.count(flag),
                "--{} sets how tokens are sampled: --greedy takes the most likely one; drop one of them", flag);
  validate(sampling);
  GenerationConfig& gen = r.gen;
  gen.max_new_tokens = args["max-new-tokens"].as<int>();
  gen.keep = args["context-keep"].as<int>();
  gen.use_kv_cache = !switch_on(args, "no-kv-cache");
  if (args.count("stop"))
    for (const std::string& s : values_as_typed(args, "stop")) gen.stop_strings.push_back(unescape(s));
  validate(gen);
  r.ignore_eot = switch_on(args, "ignore-eot");
  r.stats = switch_on(args, "stats");

  r.checkpoint_path = args["checkpoint"].as<std::string>();
  r.tokenizer_given = args.count("tokenizer") > 0;
  if (r.tokenizer_given) r.tokenizer_dir = args["tokenizer"].as<std::string>();
  r.scoring = args.count("score") > 0;
  INPUT_CHECK(!r.scoring || (!args.count("prompt") && !args.count("prompt-file")),
              "--score scores a file and takes no prompt: drop --prompt / --prompt-file");
  for (const char* flag : {"score-window", "score-stride"})
    INPUT_CHECK(r.scoring || !args.count(flag), "--{} sets how --score scores a file: without --score it does nothing",
                flag);
  // Scoring generates nothing: a sampling flag beside it would be silently unused.
  for (const char* flag : {"num-samples", "batch-size", "max-new-tokens", "stop", "ignore-eot", "greedy", "temperature",
                           "top-k", "top-p", "repetition-penalty", "seed", "context-keep", "no-kv-cache", "stats",
                           "max-kv-cache"})
    INPUT_CHECK(!r.scoring || !args.count(flag), "--{} sets how text is generated: --score generates none", flag);
  if (r.scoring) {
    r.score_path = args["score"].as<std::string>();
    r.score_window = args["score-window"].as<int>();
    r.score_stride = args["score-stride"].as<int>();
  }
  for (const std::string& stop : gen.stop_strings) require_utf8(stop, "a --stop string");
  // The text to score with LF line ends too: scored as train --eval-only scores it once prepared.
  r.text = r.scoring ? lf_line_ends(read_whole_file(r.score_path, "text to score", kMaxScoreBytes, kScoreTooLarge))
                      : read_prompt(args);
  std::string source = "the prompt on standard input";
  if (args.count("prompt-file")) source = "the prompt, --prompt-file " + args["prompt-file"].as<std::string>();
  if (args.count("prompt")) source = "the prompt, --prompt";
  if (r.scoring) source = "the text to score, --score " + r.score_path;
  require_utf8(r.text, source);
  INPUT_CHECK(!r.text.empty(), "{} is empty", r.scoring ? "the text to score" : "the prompt");
  return r;
}

}  // namespace gpt2cc
