// Text generation and scoring over a GPT2 model.
//   KV cache: the prompt is prefilled in one forward, then each new token is one decode step
//   that reads the cached K/V of all earlier positions (O(T) work per token, not O(T^2)).
//   Several samples of one prompt decode together: one prefill shared through the cache's rows,
//   then one decode forward per step for all samples still running (BatchContext).
//   Context overflow (sliding window with re-prefill): the model sees at most maxT tokens. When
//   a new token would make the context longer, the context becomes the last `keep` tokens
//   (default maxT/2, the new one included), which are prefilled afresh at positions 0..keep-1;
//   decoding then continues. The position embeddings restart, so the cache cannot just shift.
//   Scoring: sliding windows of `window` positions every `stride` tokens; each token is scored
//   once, with at least window - stride tokens of context after the first window.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/model.hpp"
#include "core/sampler.hpp"
#include "core/text_stream.hpp"

namespace gpt2cc {

// The tokens the model currently sees and the logits of its last position. With the KV cache
// a push is one decode step; without it (the reference and the benchmark baseline) every push
// recomputes the whole window with a forward pass. Both follow the same sliding-window rule,
// so their logits agree step for step.
class Context {
 public:
  // keep: tokens kept on overflow, 1 <= keep <= maxT (maxT = model.max_seq()); 0 = maxT / 2.
  Context(GPT2& model, bool use_kv_cache, int keep = 0);
  // Replaces the context by `prompt` (1..maxT tokens, ids in [0, V)) and returns the logits (V)
  // of its last position. Throws InputError for an empty or too long prompt.
  const std::vector<float>& start(std::span<const int> prompt);
  // Appends a token (sliding the window when it is full) and returns the new last logits (V).
  const std::vector<float>& push(int token);
  std::span<const int> window() const { return window_; }
  const std::vector<float>& logits() const { return logits_; }
  int max_tokens() const { return max_T_; }
  int keep() const { return keep_; }
  int reprefills() const { return reprefills_; }  // overflows since start()

 private:
  void recompute();

  GPT2& model_;
  bool use_kv_cache_;
  int max_T_, keep_, vocab_;
  int reprefills_ = 0;
  std::vector<int> window_;
  std::vector<float> logits_;
};

// N contexts that start from the same prompt and advance in lockstep, one row of the model's KV
// cache each (N <= model.kv_cache_rows()): the prompt is prefilled once (B = 1) and its cache
// row copied to the others; each push is one decode forward for all rows. The rows always have
// the same length, so they overflow at the same step and are re-prefilled together, each from
// its own window (one batch of different windows). Every row follows Context's rule exactly,
// and on the CPU its logits are bit-identical to a Context's (see GPT2::prefill); needs the cache.
class BatchContext {
 public:
  BatchContext(GPT2& model, int rows, int keep = 0);  // keep as Context
  // Every row's context becomes `prompt` (checked as Context::start); all rows' logits equal.
  void start(std::span<const int> prompt);
  // Appends tokens[r] to row r, one token for every row (sliding the windows when they are full).
  void push(std::span<const int> tokens);
  // Keeps the rows with keep[r] true and drops the others (finished samples) without any
  // recomputation. Returns, for each new row, the old row it was: the order may change (a
  // kept row can move into a dropped row's place, so that few cache rows are copied).
  std::vector<int> retain(const std::vector<bool>& keep);
  int rows() const { return static_cast<int>(windows_.size()); }
  std::span<const int> window(int row) const { return windows_[row]; }
  std::span<const float> logits(int row) const {
    return std::span<const float>(logits_).subspan(static_cast<size_t>(row) * vocab_, vocab_);
  }
  int keep() const { return keep_; }
  int reprefills() const { return reprefills_; }  // overflows since start()

 private:
  GPT2& model_;
  int max_T_, keep_, vocab_;
  int reprefills_ = 0;
  std::vector<std::vector<int>> windows_;
  std::vector<float> logits_;  // (rows, V)
};

struct GenerationConfig {
  int max_new_tokens = 128;               // >= 1: tokens generated per sample at most
  int eot_id = -1;                        // a sample ends at this token (<|endoftext|>); -1 = never
  std::vector<std::string> stop_strings;  // a sample ends when its text contains one (non-empty strings)
  int keep = 0;                           // tokens kept on context overflow (see Context); 0 = maxT / 2
  bool use_kv_cache = true;               // false: recompute the whole window each token (reference)
};
void validate(const GenerationConfig& config);

enum class SampleStop { end_of_text, stop_string, max_tokens };
const char* to_string(SampleStop reason);

struct Sample {
  std::vector<int> tokens;       // generated tokens (the end-of-text token not included)
  std::vector<float> log_probs;  // the model's log p of each generated token (raw logits: no penalty, T = 1)
  std::string text;              // the text streamed out (ends before a stop string)
  SampleStop stop = SampleStop::max_tokens;
  int prompt_tokens = 0;
  int reprefills = 0;             // context overflows
  // Timings from the start of the sample (of its batch, in generate_samples); a batch's samples
  // share its one prefill.
  double prefill_seconds = 0;     // the prompt's forward pass
  double first_token_seconds = 0; // to the first sampled token
  double total_seconds = 0;       // to the sample's end
};

// One sample for `prompt`. token_bytes(id) gives a token's raw bytes (Tokenizer::token_bytes);
// it may be empty when no text is needed (then stop strings must be empty). on_text receives
// printable text as it is produced (may be empty). Draws use stream `sample_index` of the
// sampler's seed, index = step, so sample i is reproducible on its own.
Sample generate(GPT2& model, Sampler& sampler, std::span<const int> prompt, const GenerationConfig& config,
                uint32_t sample_index, const std::function<std::string(int)>& token_bytes,
                const std::function<void(std::string_view)>& on_text);

// num_samples samples of one prompt; sample i draws from stream i (as generate(..., i, ...)),
// so each is token for token what generate gives it alone (bit for bit on the CPU). With the KV
// cache, up to model.kv_cache_rows() samples decode together (BatchContext; more run in
// successive batches of that many); without it the samples run one after another through
// generate (the reference). The rows of a step draw in parallel (OpenMP threads, a copy of
// the sampler each; the draws are pure, so the thread count changes nothing). on_text(i, text)
// receives sample i's printable text as it is produced, samples interleaved; on_done(i, sample)
// is called once when sample i ends (in the order they end). Either callback may be empty.
struct Generation {
  std::vector<Sample> samples;  // in sample order
  size_t prefill_tokens = 0;    // prompt tokens run through a prefill: one prompt per batch
  double prefill_seconds = 0;   // those prefills' time
  double decode_seconds = 0;    // the rest: sampling and decoding, all samples together
};
Generation generate_samples(GPT2& model, Sampler& sampler, std::span<const int> prompt, const GenerationConfig& config,
                            int num_samples, const std::function<std::string(int)>& token_bytes,
                            const std::function<void(int, std::string_view)>& on_text,
                            const std::function<void(int, const Sample&)>& on_done);

// The statistics --stats prints, pooled over samples (definitions in core/sampler.hpp).
struct DecodingStats {
  size_t samples = 0, tokens = 0;
  double distinct1 = 0, distinct2 = 0, distinct3 = 0;
  double repetition_rate = 0;  // rep/64
  double mean_log_prob = 0;    // nats per generated token under the model; NaN when no tokens
};
DecodingStats decoding_stats(std::span<const Sample> samples);

struct ScoreResult {
  double loss = 0;        // mean cross-entropy (nats per token) over the scored tokens
  double perplexity = 0;  // exp(loss)
  size_t tokens = 0;      // tokens scored: all but the first
  int window = 0, stride = 0, windows = 0;
};
// Sliding-window loss of a token sequence (>= 2 tokens): window in [1, maxT] input positions,
// stride in [1, window]. Throws InputError for values outside those ranges.
ScoreResult score(GPT2& model, std::span<const int> tokens, int window, int stride);

}  // namespace gpt2cc
