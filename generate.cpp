// generate: text from a gpt2cc checkpoint (KV-cache decoding, greedy / temperature / top-k /
// top-p / repetition penalty), decoding statistics, or the loss and perplexity of a text file.
//   generate --checkpoint runs/ts-d4/checkpoints/step_00002000.ckpt --prompt "Once" --top-p 0.9
//   generate --checkpoint runs/ts-d4/checkpoints/step_00002000.ckpt --score valid.txt
// Several samples decode together (one KV-cache row each, --batch-size). stdout: the samples'
// text in order, as it is produced (or the score line); stderr: the effective configuration,
// one line per sample, --stats and the closing throughput line. Exit codes: 0 ok, 2 bad input, 1 other.
// The logic lives in core/generation.{hpp,cpp} and core/sampler.{hpp,cpp}; docs/generate.md.
#include <cxxopts.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "core/check.hpp"
#include "core/cli.hpp"
#include "core/checkpoint.hpp"
#include "core/model_checkpoint.hpp"
#include "core/generation.hpp"
#include "generate_flags.hpp"
#include "tokenizer/tokenizer.hpp"

using namespace gpt2cc;

namespace {

void print_stats(const char* label, const DecodingStats& s) {
  std::fprintf(stderr,
               "stats %s: %zu sample(s), %zu tokens, distinct-1 %.4f, distinct-2 %.4f, distinct-3 %.4f, "
               "repetition rate (rep/64) %.4f, mean log-prob %.4f nats/token\n",
               label, s.samples, s.tokens, s.distinct1, s.distinct2, s.distinct3, s.repetition_rate, s.mean_log_prob);
}

// What `rows` samples of `positions` decoded together take must fit in --max-kv-cache.
void check_kv_cache(const ModelConfig& config, DType dtype, int rows, int positions, bool from_batch_size,
                    double max_gib) {
  // A sample's share: its KV-cache row, and its row of logits twice on the host (the decode step's
  // output and the copy that sampling reads), which outweighs the cache of a small model.
  const double kv = static_cast<double>(kv_cache_bytes(config, dtype, 1, positions));
  const double logits = 2.0 * config.vocab_size * sizeof(float);
  const double per_row = kv + logits;
  const double limit = max_gib * 1024.0 * 1024.0 * 1024.0;
  const long long fits = static_cast<long long>(std::min(limit / per_row, 1e9));
  INPUT_CHECK(rows * per_row <= limit,
              "{} {} decodes {} samples together, whose KV cache and logits would take {} ({} a sample: KV cache {} "
              "= {} layers x {} positions x {} channels x 2 (k, v) x {} bytes, logits {} = 2 x {} tokens x 4 bytes), "
              "more than --max-kv-cache {} GiB: {}",
              from_batch_size ? "--batch-size" : "--num-samples", rows, rows, human_bytes(rows * per_row),
              human_bytes(per_row), human_bytes(kv), config.num_layers, positions, config.channels, dtype_size(dtype),
              human_bytes(logits), config.vocab_size, max_gib,
              fits >= 1 ? format("decode at most {} together (--batch-size {}), or raise --max-kv-cache", fits, fits)
                        : std::string("raise --max-kv-cache"));
}

// The checkpoint (or Hugging Face weights) opened, its header read, and its tokenizer: --tokenizer,
// else the one the checkpoint records, checked against the checkpoint's fingerprint and
// vocabulary. The weights stream into the model once it is built (read_into_model in run).
struct LoadedModel {
  CheckpointReader checkpoint;
  std::string tokenizer_dir;
  Tokenizer tokenizer;
};

LoadedModel load_model_and_tokenizer(const GenerateRequest& request) {
  const std::string& checkpoint_path = request.checkpoint_path;
  LoadedModel m{CheckpointReader(checkpoint_path), {}, {}};
  const CheckpointInfo& checkpoint = m.checkpoint.info();
  const bool tokenizer_given = request.tokenizer_given;
  m.tokenizer_dir = tokenizer_given ? request.tokenizer_dir : checkpoint.tokenizer_dir;
  const std::string& tokenizer_dir = m.tokenizer_dir;
  INPUT_CHECK(!tokenizer_given || !tokenizer_dir.empty(), "--tokenizer is empty: give the tokenizer's directory");
  INPUT_CHECK(!tokenizer_dir.empty(), "checkpoint {} records no tokenizer directory: pass --tokenizer DIR",
              checkpoint_path);
  // A recorded directory that is gone (moved, or recorded relative to another working directory by
  // an older train): say where the path came from.
  INPUT_CHECK(tokenizer_given || std::filesystem::is_directory(tokenizer_dir),
              "checkpoint {} records the tokenizer directory {}, which is not there: pass --tokenizer DIR",
              checkpoint_path, tokenizer_dir);
  m.tokenizer = load_checkpoint_tokenizer(tokenizer_dir, checkpoint.tokenizer_fingerprint, checkpoint.config.vocab_size,
                                          checkpoint_path);
  // Hugging Face weights record none; the tokenizer beside them (their directory's, named as the
  // directory or through its model.safetensors) is theirs, and needs no check: only another one is
  // warned of.
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path weights_dir = fs::is_directory(checkpoint_path, ec) ? fs::path(checkpoint_path)
                               : fs::path(checkpoint_path).has_parent_path() ? fs::path(checkpoint_path).parent_path()
                                                                             : fs::path(".");
  const bool beside_weights = fs::equivalent(tokenizer_dir, weights_dir, ec);
  if (checkpoint.tokenizer_fingerprint == 0 && !beside_weights)
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

// --score: the loss and perplexity of the text over windows of --score-window tokens every
// --score-stride (core/generation.hpp: score).
void print_score(GPT2& model, std::span<const int> tokens, const GenerateRequest& request) {
  const int context = model.config().max_seq_len;
  const int window = request.score_window == 0 ? context : request.score_window;
  const int stride = request.score_stride == 0 ? std::max(1, window / 2) : request.score_stride;
  ScoreResult r = score(model, tokens, window, stride);
  INPUT_CHECK(std::isfinite(r.loss), "the loss of {} under {} is not finite ({}): the model's weights have diverged "
              "or are corrupt", request.score_path, request.checkpoint_path, r.loss);
  std::printf("score %s: %zu tokens scored, window %d, stride %d (%d windows): loss %.4f nats/token, perplexity %.3f\n",
              request.score_path.c_str(), r.tokens, r.window, r.stride, r.windows, r.loss, r.perplexity);
}

int run(int argc, char** argv) {
  cxxopts::Options options = make_generate_options();
  cxxopts::ParseResult args = parse_flags(options, argc, argv);
  if (args.count("help")) {
    std::cout << options.help() << "\n" << environment_help(false) << std::flush;
    return 0;
  }
  // Everything cheap is checked, and the text read, before the expensive loads.
  const GenerateRequest request = parse_generate_request(args);
  LoadedModel loaded = load_model_and_tokenizer(request);
  const CheckpointInfo& checkpoint = loaded.checkpoint.info();
  const ModelConfig& config = checkpoint.config;
  const Tokenizer& tokenizer = loaded.tokenizer;
  const int num_samples = request.num_samples;
  GenerationConfig gen = request.gen;

  // Samples decoded together: one KV-cache row each, while the activations stay those of one
  // sequence (B = 1), as the prompt's prefill needs. A sequence reaches prompt + new tokens, or
  // the context, where it slides (scoring: windows of the context): the model's T and the
  // cache's positions.
  const std::vector<int> tokens = tokenizer.encode(request.text, true);
  const int positions =
      request.scoring ? config.max_seq_len
                      : int(std::clamp<int64_t>(int64_t(tokens.size()) + gen.max_new_tokens, 1, config.max_seq_len));
  if (!request.scoring) {
    INPUT_CHECK(static_cast<int>(tokens.size()) <= config.max_seq_len,
                "the prompt is {} tokens, longer than the model's context of {} tokens", tokens.size(),
                config.max_seq_len);
    // --context-keep is checked against the context; a sequence that never reaches it never slides.
    INPUT_CHECK(gen.keep >= 0 && gen.keep <= config.max_seq_len,
                "--context-keep (tokens kept on context overflow) must be in [0, {}] (0 = half the context), got {}",
                config.max_seq_len, gen.keep);
    if (positions < config.max_seq_len) gen.keep = std::min(gen.keep, positions);
  }
  const int rows = request.batch_size == 0 ? num_samples : std::min(request.batch_size, num_samples);
  if (!request.scoring && gen.use_kv_cache)
    check_kv_cache(config, request.dtype, rows, positions, request.batch_size > 0, request.max_kv_cache_gib);
  std::unique_ptr<Backend> backend = request.device == "cuda" ? make_cuda_backend(request.cuda_device, request.dtype)
                                                              : make_cpu_backend(request.threads, request.dtype);
  ModelOptions model_options;
  model_options.kv_cache_rows = rows;
  GPT2 model(config, *backend, 1, positions, ModelMode::inference, model_options);
  // Weights that are not finite (a diverged run) have nothing to sample or score: said of the file.
  const size_t not_finite = read_into_model(loaded.checkpoint, model, false);
  INPUT_CHECK(not_finite == 0, "{} holds {} weights that are NaN or infinite: the run diverged or the file is corrupt",
              request.checkpoint_path, not_finite);
  std::fprintf(stderr, "generate: %s (step %llu), %s; tokenizer %s; %s\n", request.checkpoint_path.c_str(),
               static_cast<unsigned long long>(checkpoint.step), describe(config).c_str(), loaded.tokenizer_dir.c_str(),
               backend->describe().c_str());
  if (request.scoring) {
    print_score(model, tokens, request);
    return 0;
  }

  if (!request.ignore_eot && tokenizer.special_id("<|endoftext|>")) gen.eot_id = tokenizer.eot_id();
  const SampleConfig& sampling = request.sampling;
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
  SamplePrinter printer(num_samples, request.stats);
  auto on_text = [&](int i, std::string_view piece) { printer.on_text(i, piece); };
  auto on_done = [&](int i, const Sample& sample) { printer.on_done(i, sample); };
  const Generation generation =
      generate_samples(model, sampler, tokens, gen, num_samples, token_bytes, on_text, on_done);
  ENSURE(printer.printed_all(), "not all {} samples were printed", num_samples);
  if (request.stats && num_samples > 1) print_stats("all samples", decoding_stats(generation.samples));

  print_throughput(generation, num_samples);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return gpt2cc::run_cli("generate", argc, argv, run,
                         "less memory: a smaller --batch-size (samples decoded together), --dtype bf16, or a smaller "
                         "--max-new-tokens (the model holds the prompt's and the new tokens' positions, up to its "
                         "context)");
}
