// The generation loop (prefill, then one KV-cached decode step per token, sliding window with
// re-prefill on overflow), its batched form for several samples of one prompt, and
// sliding-window scoring (the UTF-8 text stream with stop strings is core/text_stream.cpp). The policies are described in
// core/generation.hpp; the CLI is generate.cpp.
#include "core/generation.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <exception>

#include "core/check.hpp"
#include "core/dataloader.hpp"
#include "core/stopwatch.hpp"

namespace gpt2cc {

namespace {
int keep_or_default(int keep, int max_T) { return keep == 0 ? std::max(1, max_T / 2) : keep; }

void check_keep(int keep, int max_T) {
  INPUT_CHECK(keep >= 1 && keep <= max_T, "tokens kept on context overflow must be in [1, {}], got {}", max_T, keep);
}

void check_prompt(std::span<const int> prompt, int max_T, int vocab) {
  INPUT_CHECK(!prompt.empty(), "the prompt is empty: give at least one token of text");
  INPUT_CHECK(static_cast<int>(prompt.size()) <= max_T,
              "the prompt has {} tokens, more than the model's context of {} tokens", prompt.size(), max_T);
  for (int token : prompt) INPUT_CHECK(token >= 0 && token < vocab, "prompt token {} outside [0, {})", token, vocab);
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// Context

Context::Context(GPT2& model, bool use_kv_cache, int keep)
    : model_(model),
      use_kv_cache_(use_kv_cache),
      max_T_(model.max_seq()),
      keep_(keep_or_default(keep, model.max_seq())),
      vocab_(model.config().vocab_size) {
  check_keep(keep_, max_T_);
  ENSURE(model.max_batch() >= 1, "the model has no batch row for generation");
}

const std::vector<float>& Context::start(std::span<const int> prompt) {
  check_prompt(prompt, max_T_, vocab_);
  window_.assign(prompt.begin(), prompt.end());
  reprefills_ = 0;
  recompute();
  return logits_;
}

const std::vector<float>& Context::push(int token) {
  ENSURE(!window_.empty(), "push before start");
  ENSURE(token >= 0 && token < vocab_, "token {} outside [0, {})", token, vocab_);
  if (static_cast<int>(window_.size()) == max_T_) {
    // Full: keep the last keep-1 tokens plus the new one, then prefill them at positions 0..keep-1.
    window_.erase(window_.begin(), window_.end() - (keep_ - 1));
    window_.push_back(token);
    ++reprefills_;
    recompute();
  } else {
    window_.push_back(token);
    const int pos = static_cast<int>(window_.size()) - 1;
    if (use_kv_cache_) {
      logits_ = model_.decode(&token, 1, pos);
    } else {
      recompute();
    }
  }
  return logits_;
}

void Context::recompute() {
  const int T = static_cast<int>(window_.size());
  if (use_kv_cache_) {
    logits_ = model_.prefill(window_.data(), 1, T);
    return;
  }
  // Full recompute: every position of the window through every layer; keep the last row.
  model_.forward(window_.data(), nullptr, 1, T);
  std::vector<float> all = model_.logits();
  const size_t Vp = static_cast<size_t>(model_.config().padded_vocab_size);
  logits_.assign(all.begin() + (T - 1) * Vp, all.begin() + (T - 1) * Vp + vocab_);
}

// ---------------------------------------------------------------------------------------------
// BatchContext

BatchContext::BatchContext(GPT2& model, int rows, int keep)
    : model_(model),
      max_T_(model.max_seq()),
      keep_(keep_or_default(keep, model.max_seq())),
      vocab_(model.config().vocab_size) {
  check_keep(keep_, max_T_);
  INPUT_CHECK(rows >= 1 && rows <= model.kv_cache_rows(),
              "batched generation: {} rows asked, the model's KV cache has {} (ModelOptions::kv_cache_rows)", rows,
              model.kv_cache_rows());
  windows_.resize(rows);
}

void BatchContext::start(std::span<const int> prompt) {
  check_prompt(prompt, max_T_, vocab_);
  for (std::vector<int>& window : windows_) window.assign(prompt.begin(), prompt.end());
  reprefills_ = 0;
  // One prefill (B = 1, as Context), then every row gets a copy of its cache row.
  const std::vector<float> first = model_.prefill(prompt.data(), 1, static_cast<int>(prompt.size()));
  model_.kv_cache_select_rows(std::vector<int>(windows_.size(), 0));
  logits_.clear();
  for (size_t r = 0; r < windows_.size(); ++r) logits_.insert(logits_.end(), first.begin(), first.end());
}

void BatchContext::push(std::span<const int> tokens) {
  ENSURE(!windows_[0].empty(), "push before start");
  ENSURE(tokens.size() == windows_.size(), "push: {} tokens for {} rows", tokens.size(), windows_.size());
  for (int token : tokens) ENSURE(token >= 0 && token < vocab_, "token {} outside [0, {})", token, vocab_);
  const int rows = static_cast<int>(windows_.size());
  if (static_cast<int>(windows_[0].size()) == max_T_) {
    // Full (all rows are, they have one length): Context's rule per row, then the rows' new
    // windows (rows, keep) are prefilled at positions 0..keep-1 as one batch.
    std::vector<int> batch;
    batch.reserve(static_cast<size_t>(rows) * keep_);
    for (int r = 0; r < rows; ++r) {
      std::vector<int>& window = windows_[r];
      window.erase(window.begin(), window.end() - (keep_ - 1));
      window.push_back(tokens[r]);
      batch.insert(batch.end(), window.begin(), window.end());
    }
    ++reprefills_;
    logits_ = model_.prefill(batch.data(), rows, keep_);
  } else {
    for (int r = 0; r < rows; ++r) windows_[r].push_back(tokens[r]);
    logits_ = model_.decode(tokens.data(), rows, static_cast<int>(windows_[0].size()) - 1);
  }
}

std::vector<int> BatchContext::retain(const std::vector<bool>& keep) {
  const int rows = static_cast<int>(windows_.size());
  ENSURE(static_cast<int>(keep.size()) == rows, "retain: {} flags for {} rows", keep.size(), rows);
  const int kept = static_cast<int>(std::count(keep.begin(), keep.end(), true));
  ENSURE(kept >= 1, "retain: at least one row must stay");
  // Kept rows below the new end stay in place; those past it move into the dropped rows' places
  // (as many as there are such places). Only the movers' caches are copied, and each source lies
  // past the new end, which kv_cache_select_rows' in-place copy needs.
  std::vector<int> movers;
  for (int r = kept; r < rows; ++r)
    if (keep[r]) movers.push_back(r);
  std::vector<int> old(kept);
  size_t next = 0;
  for (int i = 0; i < kept; ++i) old[i] = keep[i] ? i : movers[next++];
  if (kept == rows) return old;
  model_.kv_cache_select_rows(old);
  std::vector<std::vector<int>> windows(kept);
  std::vector<float> logits(static_cast<size_t>(kept) * vocab_);
  for (int i = 0; i < kept; ++i) {
    windows[i] = std::move(windows_[old[i]]);
    std::copy_n(logits_.begin() + static_cast<ptrdiff_t>(old[i]) * vocab_, vocab_, logits.begin() + i * vocab_);
  }
  windows_ = std::move(windows);
  logits_ = std::move(logits);
  return old;
}

// ---------------------------------------------------------------------------------------------
// Generation

void validate(const GenerationConfig& config) {
  INPUT_CHECK(config.max_new_tokens >= 1, "max new tokens must be >= 1, got {}", config.max_new_tokens);
  INPUT_CHECK(config.keep >= 0, "tokens kept on context overflow must be >= 0 (0 = half the context), got {}",
              config.keep);
  for (const std::string& s : config.stop_strings) INPUT_CHECK(!s.empty(), "a stop string must not be empty");
}

const char* to_string(SampleStop reason) {
  switch (reason) {
    case SampleStop::end_of_text: return "end of text";
    case SampleStop::stop_string: return "stop string";
    case SampleStop::max_tokens: return "max new tokens";
  }
  return "?";
}

namespace {

// Records a drawn token (log_p: its log-probability) in `sample` and its text: false when the
// sample ends with it, at the end of text (not recorded) or a stop string it completed.
bool record_token(Sample& sample, TextStream& stream, int token, double log_p, const GenerationConfig& config,
                  const std::function<std::string(int)>& token_bytes) {
  if (token == config.eot_id) {
    sample.stop = SampleStop::end_of_text;
    return false;
  }
  sample.tokens.push_back(token);
  sample.log_probs.push_back(static_cast<float>(log_p));
  if (token_bytes && stream.append(token_bytes(token))) {
    sample.stop = SampleStop::stop_string;
    return false;
  }
  return true;
}

// A sample's end: its text (what the stream held back flushed) and its figures.
void finish_sample(Sample& sample, TextStream& stream, int reprefills, double seconds) {
  stream.finish();
  sample.text = stream.text();
  sample.reprefills = reprefills;
  sample.total_seconds = seconds;
}

}  // namespace

Sample generate(GPT2& model, Sampler& sampler, std::span<const int> prompt, const GenerationConfig& config,
                uint32_t sample_index, const std::function<std::string(int)>& token_bytes,
                const std::function<void(std::string_view)>& on_text) {
  validate(config);
  ENSURE(token_bytes || config.stop_strings.empty(), "stop strings need the tokens' bytes");
  const Stopwatch clock;
  Sample sample;
  sample.prompt_tokens = static_cast<int>(prompt.size());
  Context context(model, config.use_kv_cache, config.keep);
  context.start(prompt);
  sample.prefill_seconds = clock.seconds();

  TextStream stream(config.stop_strings, on_text);
  for (int step = 0; step < config.max_new_tokens; ++step) {
    const std::vector<float>& logits = context.logits();
    // The repetition penalty looks at the whole current context, prompt included (as CTRL).
    const int token = sampler.sample(logits, context.window(), sample_index, static_cast<uint64_t>(step));
    if (step == 0) sample.first_token_seconds = clock.seconds();
    const double log_p = token == config.eot_id ? 0.0 : log_prob(logits, token);
    if (!record_token(sample, stream, token, log_p, config, token_bytes)) break;
    if (step + 1 < config.max_new_tokens) context.push(token);  // no logits needed after the last token
  }
  finish_sample(sample, stream, context.reprefills(), clock.seconds());
  return sample;
}

namespace {

// One batch of `count` samples (indices first..first+count-1) decoded together: the loop of
// generate for every row at once. A row that ends (end of text, stop string, max tokens) is
// dropped from the context before the next step, so it costs nothing after it ends and the
// others never see it: every row's logits are those it would have alone.
void generate_batch(GPT2& model, Sampler& sampler, std::span<const int> prompt, const GenerationConfig& config,
                    int first, int count, const std::function<std::string(int)>& token_bytes,
                    const std::function<void(int, std::string_view)>& on_text,
                    const std::function<void(int, const Sample&)>& on_done, Generation& result) {
  const Stopwatch clock;
  BatchContext context(model, count, config.keep);
  context.start(prompt);
  const double prefill_seconds = clock.seconds();
  result.prefill_tokens += prompt.size();
  result.prefill_seconds += prefill_seconds;

  std::vector<TextStream> streams;
  streams.reserve(count);
  for (int k = 0; k < count; ++k) {
    std::function<void(std::string_view)> sink;
    if (on_text) sink = [&on_text, index = first + k](std::string_view piece) { on_text(index, piece); };
    streams.emplace_back(config.stop_strings, std::move(sink));
    Sample& sample = result.samples[first + k];
    sample.prompt_tokens = static_cast<int>(prompt.size());
    sample.prefill_seconds = prefill_seconds;
  }
  std::vector<int> active(count);  // context row -> sample offset k
  for (int k = 0; k < count; ++k) active[k] = k;

  // Draws are a pure function of (logits, window, stream, step), so the rows draw in parallel,
  // each thread with its own copy of the sampler (its scratch buffers): the tokens do not
  // depend on the thread count. Each token's log p (a pass over V) is computed there too.
  std::vector<Sampler> samplers(std::max(1, omp_get_max_threads()), sampler);
  for (int step = 0; step < config.max_new_tokens; ++step) {
    const int rows = context.rows();
    std::vector<int> drawn(rows);
    std::vector<double> log_probs(rows);
    std::exception_ptr error;
#pragma omp parallel for schedule(dynamic)
    for (int r = 0; r < rows; ++r) {
      try {
        std::span<const float> logits = context.logits(r);
        Sampler& local = samplers[omp_get_thread_num()];
        drawn[r] = local.sample(logits, context.window(r), static_cast<uint32_t>(first + active[r]),
                                static_cast<uint64_t>(step));
        if (drawn[r] != config.eot_id) log_probs[r] = log_prob(logits, drawn[r]);
      } catch (...) {
#pragma omp critical
        error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
    if (step == 0) {
      const double first_token = clock.seconds();
      for (int r = 0; r < rows; ++r) result.samples[first + active[r]].first_token_seconds = first_token;
    }

    std::vector<bool> running(rows, false);
    std::vector<int> tokens(rows, 0);
    for (int r = 0; r < rows; ++r) {
      const int k = active[r];
      Sample& sample = result.samples[first + k];
      if (record_token(sample, streams[k], drawn[r], log_probs[r], config, token_bytes)) {
        running[r] = step + 1 < config.max_new_tokens;  // no logits needed after the last token
        tokens[r] = drawn[r];
      }
      if (running[r]) continue;
      finish_sample(sample, streams[k], context.reprefills(), clock.seconds());
      if (on_done) on_done(first + k, sample);
    }
    if (std::find(running.begin(), running.end(), true) == running.end()) break;
    const std::vector<int> old = context.retain(running);
    std::vector<int> next_tokens(old.size()), next_active(old.size());
    for (size_t i = 0; i < old.size(); ++i) {
      next_tokens[i] = tokens[old[i]];
      next_active[i] = active[old[i]];
    }
    active = std::move(next_active);
    context.push(next_tokens);
  }
  result.decode_seconds += clock.seconds() - prefill_seconds;
}

}  // namespace

Generation generate_samples(GPT2& model, Sampler& sampler, std::span<const int> prompt, const GenerationConfig& config,
                            int num_samples, const std::function<std::string(int)>& token_bytes,
                            const std::function<void(int, std::string_view)>& on_text,
                            const std::function<void(int, const Sample&)>& on_done) {
  validate(config);
  ENSURE(token_bytes || config.stop_strings.empty(), "stop strings need the tokens' bytes");
  INPUT_CHECK(num_samples >= 1, "the number of samples must be >= 1, got {}", num_samples);
  Generation result;
  result.samples.resize(num_samples);
  if (!config.use_kv_cache) {
    // The reference: each sample alone, a full forward per token.
    for (int i = 0; i < num_samples; ++i) {
      std::function<void(std::string_view)> sink;
      if (on_text) sink = [&on_text, i](std::string_view piece) { on_text(i, piece); };
      Sample& sample = result.samples[i];
      sample = generate(model, sampler, prompt, config, static_cast<uint32_t>(i), token_bytes, sink);
      result.prefill_tokens += prompt.size();
      result.prefill_seconds += sample.prefill_seconds;
      result.decode_seconds += sample.total_seconds - sample.prefill_seconds;
      if (on_done) on_done(i, sample);
    }
    return result;
  }
  const int batch = model.kv_cache_rows();
  for (int first = 0; first < num_samples; first += batch)
    generate_batch(model, sampler, prompt, config, first, std::min(batch, num_samples - first), token_bytes, on_text,
                   on_done, result);
  return result;
}

DecodingStats decoding_stats(std::span<const Sample> samples) {
  std::vector<std::vector<int>> tokens;
  std::vector<std::vector<float>> log_probs;
  DecodingStats stats;
  for (const Sample& s : samples) {
    tokens.push_back(s.tokens);
    log_probs.push_back(s.log_probs);
    stats.tokens += s.tokens.size();
  }
  stats.samples = samples.size();
  stats.distinct1 = distinct_n(tokens, 1);
  stats.distinct2 = distinct_n(tokens, 2);
  stats.distinct3 = distinct_n(tokens, 3);
  stats.repetition_rate = repetition_rate(tokens, 64);
  stats.mean_log_prob = mean_log_prob(log_probs);
  return stats;
}

// ---------------------------------------------------------------------------------------------
// Scoring

ScoreResult score(GPT2& model, std::span<const int> tokens, int window, int stride) {
  const int N = static_cast<int>(tokens.size());
  const int V = model.config().vocab_size;
  INPUT_CHECK(N >= 2, "scoring needs a text of at least 2 tokens, got {}", N);
  INPUT_CHECK(window >= 1 && window <= model.max_seq(), "score window must be in [1, {}] (the context), got {}",
              model.max_seq(), window);
  INPUT_CHECK(stride >= 1 && stride <= window, "score stride must be in [1, window = {}], got {}", window, stride);
  for (int token : tokens) INPUT_CHECK(token >= 0 && token < V, "token {} outside [0, {})", token, V);

  ScoreResult result;
  result.window = window;
  result.stride = stride;
  double total_loss = 0.0;
  std::vector<int> targets;
  // Window at b: inputs tokens[b, b+T), targets tokens[b+1, b+T+1), of which only those no
  // earlier window scored count (mask_scored_targets): every token from the second on counts once.
  uint64_t scored_until = 0;
  for (int b = 0;; b += stride) {
    const int T = std::min(window, N - 1 - b);
    targets.assign(tokens.begin() + b + 1, tokens.begin() + b + 1 + T);
    scored_until = mask_scored_targets(targets, uint64_t(b) + 1, scored_until);
    float mean = model.forward(tokens.data() + b, targets.data(), 1, T);
    const int counted = model.num_targets();
    if (counted > 0) total_loss += static_cast<double>(mean) * counted;
    result.tokens += static_cast<size_t>(counted);
    ++result.windows;
    if (scored_until == uint64_t(N) - 1) break;
  }
  result.loss = total_loss / static_cast<double>(result.tokens);
  result.perplexity = std::exp(result.loss);
  return result;
}

}  // namespace gpt2cc
