// generate: text from a gpt2cc checkpoint (KV-cache decoding, greedy / temperature / top-k /
// top-p / repetition penalty), decoding statistics, or the loss and perplexity of a text file.
//   generate --checkpoint run/model.ckpt --prompt "Once upon a time" --top-p 0.9 --num-samples 3
//   generate --checkpoint run/model.ckpt --score valid.txt
// Several samples decode together (one KV-cache row each, --batch-size). stdout: the samples'
// text in order, as it is produced (or the score line); stderr: the effective configuration,
// one line per sample, --stats and the closing throughput line. Exit codes: 0 ok, 2 bad input, 1 other.
// The logic lives in core/generation.{hpp,cpp} and core/sampler.{hpp,cpp}; docs/generate.md.
#include <cxxopts.hpp>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "core/atomic_file.hpp"
#include "core/backend.hpp"
#include "core/check.hpp"
#include "core/cli.hpp"
#include "core/checkpoint.hpp"
#include "core/dataloader.hpp"
#include "core/generation.hpp"
#include "tokenizer/tokenizer.hpp"

using namespace gpt2cc;

namespace {

void require_utf8(const std::string& text, const std::string& what) {
  std::string checked;
  append_valid_utf8(text, true, checked);  // valid UTF-8 is copied unchanged, anything else is not
  INPUT_CHECK(checked == text, "{} is not valid UTF-8", what);
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

// The prompt from --prompt, --prompt-file or stdin. A file's or stdin's CRLF and lone CR line ends
// read as LF (as prepare reads text, so as the model saw it), and one trailing newline is dropped
// (echo and editors add it).
std::string read_prompt(const cxxopts::ParseResult& args) {
  INPUT_CHECK(!(args.count("prompt") && args.count("prompt-file")), "give --prompt or --prompt-file, not both");
  std::string prompt;
  if (args.count("prompt")) return args["prompt"].as<std::string>();
  if (args.count("prompt-file")) {
    prompt = read_whole_file(args["prompt-file"].as<std::string>(), "prompt file");
  } else {
    if (isatty(STDIN_FILENO)) std::fprintf(stderr, "generate: reading the prompt from stdin (end it with Ctrl-D)\n");
    prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  std::string lf;
  lf.reserve(prompt.size());
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] != '\r') lf += prompt[i];
    else if (i + 1 == prompt.size() || prompt[i + 1] != '\n') lf += '\n';  // a lone CR; CRLF's CR is dropped
  }
  if (!lf.empty() && lf.back() == '\n') lf.pop_back();
  return lf;
}

void print_stats(const char* label, const DecodingStats& s) {
  std::fprintf(stderr,
               "stats %s: %zu sample(s), %zu tokens, distinct-1 %.4f, distinct-2 %.4f, distinct-3 %.4f, "
               "repetition rate (rep/64) %.4f, mean log-prob %.4f nats/token\n",
               label, s.samples, s.tokens, s.distinct1, s.distinct2, s.distinct3, s.repetition_rate, s.mean_log_prob);
}

// "1.50 GiB", "72.0 MiB", "8.0 KiB": the largest unit that is at least 1.
std::string human_bytes(double bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  for (; u < 4 && bytes >= 1024.0; ++u) bytes /= 1024.0;
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : bytes < 10 ? "%.2f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

// The KV cache of `rows` samples decoded together must fit in --max-kv-cache.
void check_kv_cache(const ModelConfig& config, DType dtype, int rows, bool from_batch_size, double max_gib) {
  const double per_row = static_cast<double>(kv_cache_bytes(config, dtype, 1));
  const double limit = max_gib * 1024.0 * 1024.0 * 1024.0;
  const long long fits = static_cast<long long>(std::min(limit / per_row, 1e9));
  INPUT_CHECK(rows * per_row <= limit,
              "{} {} decodes {} samples together, whose KV cache would take {} ({} a sample: {} layers x {} "
              "positions x {} channels x 2 (k, v) x {} bytes), more than --max-kv-cache {} GiB: {}",
              from_batch_size ? "--batch-size" : "--num-samples", rows, rows, human_bytes(rows * per_row),
              human_bytes(per_row), config.num_layers, config.max_seq_len, config.channels, dtype_size(dtype), max_gib,
              fits >= 1 ? format("decode at most {} together (--batch-size {}), or raise --max-kv-cache", fits, fits)
                        : std::string("raise --max-kv-cache"));
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
      ("max-kv-cache", "GiB the KV cache of the samples decoded together may take", cxxopts::value<double>()->default_value("8"))
      ("max-new-tokens", "tokens generated per sample at most, >= 1", cxxopts::value<int>()->default_value("128"))
      ("stop", "stop string (repeatable; \\n \\t \\\\ understood); not printed", cxxopts::value<std::vector<std::string>>())
      ("ignore-eot", "keep generating past <|endoftext|>")
      ("greedy", "argmax decoding (temperature, top-k, top-p unused)")
      ("temperature", "divide logits by T > 0", cxxopts::value<float>()->default_value("1.0"))
      ("top-k", "keep the k most likely tokens; 0 = off", cxxopts::value<int>()->default_value("0"))
      ("top-p", "nucleus threshold in (0, 1]; 1 = off", cxxopts::value<float>()->default_value("1.0"))
      ("repetition-penalty", "CTRL penalty >= 1 on tokens in the context; 1 = off", cxxopts::value<float>()->default_value("1.0"))
      ("seed", "sampling seed (same seed, same text)", cxxopts::value<uint64_t>()->default_value("1337"))
      ("context-keep", "tokens kept when the context overflows; 0 = half the context", cxxopts::value<int>()->default_value("0"))
      ("no-kv-cache", "recompute the whole context for every token (slow; for comparison)")
      ("device", "cpu or cuda", cxxopts::value<std::string>()->default_value("cpu"))
      ("cuda-device", "GPU index (--device cuda)", cxxopts::value<int>()->default_value("0"))
      ("dtype", "compute dtype: fp32, or bf16 (cuda on sm_80 or newer; the checkpoint's fp32 weights rounded to bf16)",
       cxxopts::value<std::string>()->default_value("fp32"))
      ("threads", "CPU threads, 0 to 1024 (0: $OMP_NUM_THREADS, else all cores)", cxxopts::value<int>()->default_value("0"))
      ("stats", "print distinct-1/2/3, repetition rate and mean log-prob per sample and overall")
      ("score", "print the loss and perplexity of this text file instead of generating", cxxopts::value<std::string>())
      ("score-window", "scoring window in tokens; 0 = the model's context", cxxopts::value<int>()->default_value("0"))
      ("score-stride", "scoring stride in tokens; 0 = half the window", cxxopts::value<int>()->default_value("0"))
      ("h,help", "show this help");
  return options;
}

// The checkpoint (or Hugging Face weights) and its tokenizer: --tokenizer, else the one the
// checkpoint records, checked against the checkpoint's fingerprint and vocabulary.
struct LoadedModel {
  Checkpoint checkpoint;
  std::string tokenizer_dir;
  Tokenizer tokenizer;
};

LoadedModel load_model_and_tokenizer(const std::string& checkpoint_path, const cxxopts::ParseResult& args) {
  LoadedModel m;
  m.checkpoint = load_checkpoint(checkpoint_path, false);
  const Checkpoint& checkpoint = m.checkpoint;
  // Weights that are not finite (a diverged run) have nothing to sample or score: said of the file.
  const auto not_finite = std::count_if(checkpoint.params.begin(), checkpoint.params.end(),
                                        [](float w) { return !std::isfinite(w); });
  INPUT_CHECK(not_finite == 0, "{} holds {} weights that are NaN or infinite: the run diverged or the file is corrupt",
              checkpoint_path, not_finite);
  const bool tokenizer_given = args.count("tokenizer") > 0;
  m.tokenizer_dir = tokenizer_given ? args["tokenizer"].as<std::string>() : checkpoint.tokenizer_dir;
  const std::string& tokenizer_dir = m.tokenizer_dir;
  INPUT_CHECK(!tokenizer_given || !tokenizer_dir.empty(), "--tokenizer is empty: give the tokenizer's directory");
  INPUT_CHECK(!tokenizer_dir.empty(), "checkpoint {} records no tokenizer directory: pass --tokenizer DIR",
              checkpoint_path);
  // A recorded directory that is gone (moved, or recorded relative to another working directory by
  // an older train): say where the path came from.
  INPUT_CHECK(tokenizer_given || std::filesystem::is_directory(tokenizer_dir),
              "checkpoint {} records the tokenizer directory {}, which is not there: pass --tokenizer DIR",
              checkpoint_path, tokenizer_dir);
  m.tokenizer = Tokenizer::load(tokenizer_dir);
  check_checkpoint_tokenizer(m.tokenizer, tokenizer_dir, checkpoint.tokenizer_fingerprint, checkpoint_path);
  INPUT_CHECK(m.tokenizer.vocab_size() <= checkpoint.config.vocab_size,
              "tokenizer {} has {} tokens, more than the model's {}", tokenizer_dir, m.tokenizer.vocab_size(),
              checkpoint.config.vocab_size);
  if (checkpoint.tokenizer_fingerprint == 0)
    std::fprintf(stderr, "warning: checkpoint %s records no tokenizer fingerprint; cannot verify %s\n",
                 checkpoint_path.c_str(), tokenizer_dir.c_str());
  return m;
}

// stdout shows the samples in order, exactly as if they ran one after another: the lowest-numbered
// sample not yet printed streams as it is produced; later ones' text is held until every earlier
// sample is complete, then printed at once (and streams on if running). Per-sample lines (and
// --stats) go to stderr as each sample is printed.
class SamplePrinter {
 public:
  SamplePrinter(int num_samples, bool stats)
      : num_samples_(num_samples), stats_(stats), held_(num_samples), finished_(num_samples, nullptr) {}

  void on_text(int i, std::string_view piece) {
    start_output();
    if (i != head_) {
      held_[i] += piece;
      return;
    }
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);  // stream: show each piece as soon as it exists
  }

  void on_done(int i, const Sample& sample) {
    start_output();
    finished_[i] = &sample;
    for (; head_ < num_samples_ && finished_[head_]; ++head_) {
      std::printf("\n");
      std::fflush(stdout);
      const Sample& s = *finished_[head_];
      std::fprintf(stderr, "sample %d/%d: %zu tokens, stopped at %s%s\n", head_ + 1, num_samples_, s.tokens.size(),
                   to_string(s.stop), s.reprefills ? format(", {} context re-prefills", s.reprefills).c_str() : "");
      if (stats_) print_stats(format("sample {}", head_ + 1).c_str(), decoding_stats(std::span(&s, 1)));
      if (head_ + 1 < num_samples_) {
        header(head_ + 1);
        std::fwrite(held_[head_ + 1].data(), 1, held_[head_ + 1].size(), stdout);
        std::fflush(stdout);
        held_[head_ + 1] = {};
      }
    }
  }

  bool printed_all() const { return head_ == num_samples_; }

 private:
  void header(int i) const {
    if (num_samples_ > 1) std::printf("%s--- sample %d/%d ---\n", i > 0 ? "\n" : "", i + 1, num_samples_);
  }
  // The first header goes out with the first output, not before the decoding has set up: a run
  // that fails there (out of memory for the samples decoded together) prints nothing on stdout.
  void start_output() {
    if (!started_) header(0);
    started_ = true;
  }

  int num_samples_;
  bool stats_;
  std::vector<std::string> held_;
  std::vector<const Sample*> finished_;
  int head_ = 0;
  bool started_ = false;
};

// Throughput: prompt tokens prefilled / prefill time (one prefill per batch of samples); generated
// tokens of all samples / the time after the prefills.
void print_throughput(const Generation& generation, int num_samples) {
  double ttft_s = 0;
  size_t generated = 0;
  for (const Sample& s : generation.samples) {
    ttft_s += s.first_token_seconds;
    generated += s.tokens.size();
  }
  std::fprintf(stderr,
               "throughput: prompt %zu tokens at %.1f tokens/s, generated %zu tokens at %.1f tokens/s, "
               "time to first token %.1f ms (mean of %d)\n",
               generation.prefill_tokens, generation.prefill_tokens / std::max(generation.prefill_seconds, 1e-9),
               generated, generated / std::max(generation.decode_seconds, 1e-9), 1e3 * ttft_s / num_samples,
               num_samples);
}

int run(int argc, char** argv) {
  cxxopts::Options options = make_generate_options();
  cxxopts::ParseResult args = parse_flags(options, argc, argv);
  if (args.count("help")) {
    std::cout << options.help() << "\n" << kEnvironmentHelp << std::flush;
    return 0;
  }
  INPUT_CHECK(args.unmatched().empty(), "unexpected argument '{}'", args.unmatched().front());
  INPUT_CHECK(args.count("checkpoint"), "--checkpoint is required (see --help)");
  const std::string device = args["device"].as<std::string>();
  INPUT_CHECK(device == "cpu" || device == "cuda", "--device must be cpu or cuda, got '{}'", device);
  const DType dtype = parse_dtype(args["dtype"].as<std::string>());
  INPUT_CHECK(dtype == DType::fp32 || device == "cuda", "--dtype {} needs --device cuda: the CPU computes in fp32 only",
              dtype_name(dtype));
  const int cuda_device = args["cuda-device"].as<int>();
  INPUT_CHECK(cuda_device >= 0, "--cuda-device must be >= 0, got {}", cuda_device);
  const int threads = args["threads"].as<int>();
  check_thread_count(threads);
  const int num_samples = args["num-samples"].as<int>();
  INPUT_CHECK(num_samples >= 1, "--num-samples must be >= 1, got {}", num_samples);
  const int batch_size = args["batch-size"].as<int>();
  INPUT_CHECK(batch_size >= 0, "--batch-size must be >= 0 (0 = all samples at once), got {}", batch_size);
  const double max_kv_cache_gib = args["max-kv-cache"].as<double>();
  INPUT_CHECK(std::isfinite(max_kv_cache_gib) && max_kv_cache_gib > 0, "--max-kv-cache must be > 0 GiB, got {}",
              max_kv_cache_gib);

  SampleConfig sampling;
  sampling.greedy = switch_on(args, "greedy");
  sampling.temperature = args["temperature"].as<float>();
  sampling.top_k = args["top-k"].as<int>();
  sampling.top_p = args["top-p"].as<float>();
  sampling.repetition_penalty = args["repetition-penalty"].as<float>();
  sampling.seed = args["seed"].as<uint64_t>();
  validate(sampling);
  GenerationConfig gen;
  gen.max_new_tokens = args["max-new-tokens"].as<int>();
  gen.keep = args["context-keep"].as<int>();
  gen.use_kv_cache = !switch_on(args, "no-kv-cache");
  if (args.count("stop"))
    for (const std::string& s : args["stop"].as<std::vector<std::string>>()) gen.stop_strings.push_back(unescape(s));
  validate(gen);

  // Validate everything cheap before the expensive loads.
  const std::string checkpoint_path = args["checkpoint"].as<std::string>();
  const bool scoring = args.count("score") > 0;
  INPUT_CHECK(!scoring || (!args.count("prompt") && !args.count("prompt-file")),
              "--score scores a file and takes no prompt: drop --prompt / --prompt-file");
  for (const char* flag : {"score-window", "score-stride"})
    INPUT_CHECK(scoring || !args.count(flag), "--{} sets how --score scores a file: without --score it does nothing",
                flag);
  // Scoring generates nothing: a sampling flag beside it would be silently unused.
  for (const char* flag : {"num-samples", "batch-size", "max-new-tokens", "stop", "ignore-eot", "greedy", "temperature",
                           "top-k", "top-p", "repetition-penalty", "seed", "context-keep", "no-kv-cache", "stats",
                           "max-kv-cache"})
    INPUT_CHECK(!scoring || !args.count(flag), "--{} sets how text is generated: --score generates none", flag);
  for (const std::string& stop : gen.stop_strings) require_utf8(stop, "a --stop string");
  std::string text = scoring ? read_whole_file(args["score"].as<std::string>(), "text to score") : read_prompt(args);
  require_utf8(text, scoring ? "the text to score" : "the prompt");
  INPUT_CHECK(!text.empty(), "{} is empty", scoring ? "the text to score" : "the prompt");

  LoadedModel loaded = load_model_and_tokenizer(checkpoint_path, args);
  Checkpoint& checkpoint = loaded.checkpoint;
  const ModelConfig& config = checkpoint.config;
  const Tokenizer& tokenizer = loaded.tokenizer;
  const std::string& tokenizer_dir = loaded.tokenizer_dir;

  // Samples decoded together: one KV-cache row each, while the activations stay those of one
  // sequence (B = 1, T = max_seq_len), as the prompt's prefill needs.
  const int rows = batch_size == 0 ? num_samples : std::min(batch_size, num_samples);
  if (!scoring && gen.use_kv_cache) check_kv_cache(config, dtype, rows, batch_size > 0, max_kv_cache_gib);
  std::unique_ptr<Backend> backend = device == "cuda" ? make_cuda_backend(cuda_device, dtype) : make_cpu_backend(threads);
  ModelOptions model_options;
  model_options.kv_cache_rows = rows;
  GPT2 model(config, *backend, 1, config.max_seq_len, ModelMode::inference, model_options);
  model.set_parameters(checkpoint.params);
  checkpoint.params = {};
  std::vector<int> tokens = tokenizer.encode(text, true);
  std::fprintf(stderr, "generate: %s (step %llu), %s; tokenizer %s; %s\n", checkpoint_path.c_str(),
               static_cast<unsigned long long>(checkpoint.step), describe(config).c_str(), tokenizer_dir.c_str(),
               backend->describe().c_str());

  if (scoring) {
    const int window = args["score-window"].as<int>() == 0 ? config.max_seq_len : args["score-window"].as<int>();
    const int stride = args["score-stride"].as<int>() == 0 ? std::max(1, window / 2) : args["score-stride"].as<int>();
    ScoreResult r = score(model, tokens, window, stride);
    INPUT_CHECK(std::isfinite(r.loss), "the loss of {} under {} is not finite ({}): the model's weights have diverged "
                "or are corrupt", args["score"].as<std::string>(), checkpoint_path, r.loss);
    std::printf("score %s: %zu tokens scored, window %d, stride %d (%d windows): loss %.4f nats/token, perplexity %.3f\n",
                args["score"].as<std::string>().c_str(), r.tokens, r.window, r.stride, r.windows, r.loss, r.perplexity);
    return 0;
  }

  INPUT_CHECK(static_cast<int>(tokens.size()) <= config.max_seq_len,
              "the prompt is {} tokens, longer than the model's context of {} tokens", tokens.size(), config.max_seq_len);
  if (!switch_on(args, "ignore-eot") && tokenizer.special_id("<|endoftext|>")) gen.eot_id = tokenizer.eot_id();
  std::fprintf(stderr, "sampling: %s, repetition penalty %g, seed %llu; %d prompt tokens, up to %d new, %s\n",
               sampling.greedy ? "greedy"
                               : format("temperature {}, top-k {}, top-p {}", sampling.temperature, sampling.top_k,
                                        sampling.top_p).c_str(),
               sampling.repetition_penalty, static_cast<unsigned long long>(sampling.seed),
               static_cast<int>(tokens.size()), gen.max_new_tokens,
               gen.use_kv_cache ? format("KV cache, {} sample(s) decoded together", rows).c_str()
                                : "full recompute, one sample at a time");

  Sampler sampler(sampling, tokenizer.vocab_size());
  auto token_bytes = [&](int id) { return tokenizer.token_bytes(id); };
  SamplePrinter printer(num_samples, switch_on(args, "stats"));
  auto on_text = [&](int i, std::string_view piece) { printer.on_text(i, piece); };
  auto on_done = [&](int i, const Sample& sample) { printer.on_done(i, sample); };
  const Generation generation =
      generate_samples(model, sampler, tokens, gen, num_samples, token_bytes, on_text, on_done);
  ENSURE(printer.printed_all(), "not all {} samples were printed", num_samples);
  if (switch_on(args, "stats") && num_samples > 1) print_stats("all samples", decoding_stats(generation.samples));

  print_throughput(generation, num_samples);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return gpt2cc::run_cli("generate", argc, argv, run,
                         "less memory: a smaller --batch-size (samples decoded together) or --max-kv-cache, "
                         "or --dtype bf16 (cuda)");
}
