// Next-token selection (repetition penalty -> greedy | temperature -> top-k -> top-p -> draw) and
// the decoding statistics. Probabilities are computed in double so that a 50k-entry softmax
// and its cumulative sums do not lose the small tail mass. See core/sampler.hpp for the order
// of the stages and the tie rules.
#include "core/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/check.hpp"
#include "core/rng.hpp"

namespace gpt2cc {

void validate(const SampleConfig& config) {
  INPUT_CHECK(std::isfinite(config.temperature) && config.temperature > 0.0f,
              "temperature must be > 0 (use greedy decoding for argmax), got {}", config.temperature);
  INPUT_CHECK(config.top_k >= 0, "top-k must be >= 0 (0 = off), got {}", config.top_k);
  INPUT_CHECK(config.top_p > 0.0f && config.top_p <= 1.0f, "top-p must be in (0, 1] (1 = off), got {}",
              config.top_p);
  INPUT_CHECK(std::isfinite(config.repetition_penalty) && config.repetition_penalty >= 1.0f,
              "repetition penalty must be >= 1 (1 = off), got {}", config.repetition_penalty);
}

void apply_repetition_penalty(std::span<float> logits, std::span<const int> history, float penalty) {
  if (penalty == 1.0f) return;
  const int V = static_cast<int>(logits.size());
  // Dividing a positive logit and multiplying a negative one both make the token less likely;
  // a seen-set makes each distinct token penalised exactly once.
  std::vector<bool> seen(V, false);
  for (int token : history) {
    if (token < 0 || token >= V || seen[token]) continue;
    seen[token] = true;
    float& l = logits[token];
    l = l > 0.0f ? l / penalty : l * penalty;
  }
}

int argmax(std::span<const float> logits) {
  ENSURE(!logits.empty(), "argmax of an empty row");
  int best = 0;
  for (int i = 1; i < static_cast<int>(logits.size()); ++i) {
    if (logits[i] > logits[best]) best = i;  // strict: the lowest id wins a tie
  }
  ENSURE(!std::isnan(logits[best]), "logits contain NaN");
  return best;
}

double log_prob(std::span<const float> logits, int id) {
  ENSURE(id >= 0 && id < static_cast<int>(logits.size()), "token {} outside the row of {}", id, logits.size());
  // log p(id) = l_id - (m + log sum_i exp(l_i - m)), m = max l: no overflow.
  double m = logits[argmax(logits)];
  double sum = 0.0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - m);
  return static_cast<double>(logits[id]) - m - std::log(sum);
}

namespace {

// Decreasing logit, then increasing id: the order that breaks ties in top-k and top-p.
bool before(const Candidate& a, const Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// probs = softmax of the candidates' logits, in double.
void softmax(const std::vector<Candidate>& candidates, std::vector<double>& probs) {
  double m = -INFINITY;
  for (const Candidate& c : candidates) m = std::max(m, static_cast<double>(c.logit));
  ENSURE(std::isfinite(m), "no finite logit among {} candidates", candidates.size());
  probs.resize(candidates.size());
  double sum = 0.0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    probs[i] = std::exp(static_cast<double>(candidates[i].logit) - m);
    sum += probs[i];
  }
  ENSURE(std::isfinite(sum), "logits contain NaN");
  for (double& p : probs) p /= sum;
}

}  // namespace

std::vector<Candidate> truncate_candidates(std::vector<Candidate> candidates, int top_k, float top_p,
                                           std::vector<double>& probs) {
  ENSURE(!candidates.empty(), "no candidates to sample from");
  const bool use_k = top_k > 0 && top_k < static_cast<int>(candidates.size());
  const bool use_p = top_p < 1.0f;
  if (use_k) {
    // Partial selection, then a sort of the k survivors only: O(V + k log k).
    std::nth_element(candidates.begin(), candidates.begin() + top_k, candidates.end(), before);
    candidates.resize(top_k);
  }
  if (use_k || use_p) std::sort(candidates.begin(), candidates.end(), before);
  softmax(candidates, probs);
  if (use_p) {
    // Keep the shortest prefix with sum(probs) >= p (the slack absorbs float rounding).
    const double target = static_cast<double>(top_p) * (1.0 - 1e-6);
    double cumulative = 0.0;
    size_t keep = candidates.size();
    for (size_t i = 0; i < candidates.size(); ++i) {
      cumulative += probs[i];
      if (cumulative >= target) {
        keep = i + 1;
        break;
      }
    }
    candidates.resize(keep);
    softmax(candidates, probs);
  }
  return candidates;
}

int draw_index(std::span<const double> probs, double u) {
  ENSURE(!probs.empty(), "draw from an empty distribution");
  // Inverse CDF: the first i with u < p_0 + ... + p_i. Rounding can leave the total a hair
  // under 1, so a u beyond it falls to the last token with nonzero probability.
  double cumulative = 0.0;
  int last_nonzero = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0.0) continue;
    cumulative += probs[i];
    last_nonzero = static_cast<int>(i);
    if (u < cumulative) return last_nonzero;
  }
  return last_nonzero;
}

double uniform_double(uint64_t seed, uint32_t stream, uint64_t index) {
  // 27 + 26 = 53 bits: the full precision of a double mantissa.
  uint64_t hi = philox_bits(seed, stream, 2 * index) >> 5;
  uint64_t lo = philox_bits(seed, stream, 2 * index + 1) >> 6;
  return static_cast<double>((hi << 26) | lo) * (1.0 / 9007199254740992.0);
}

Sampler::Sampler(const SampleConfig& config, int vocab_size) : config_(config), vocab_size_(vocab_size) {
  validate(config);
  ENSURE(vocab_size >= 1, "vocabulary size must be >= 1, got {}", vocab_size);
}

int Sampler::sample(std::span<const float> logits, std::span<const int> history, uint32_t stream,
                    uint64_t index) {
  ENSURE(static_cast<int>(logits.size()) >= vocab_size_, "a row of {} logits is shorter than the vocabulary ({})",
         logits.size(), vocab_size_);
  work_.assign(logits.begin(), logits.begin() + vocab_size_);  // drops padded columns
  // A model whose outputs overflow (diverged or corrupt weights) has nothing to sample from.
  const auto not_finite = std::count_if(work_.begin(), work_.end(), [](float l) { return !std::isfinite(l); });
  INPUT_CHECK(not_finite == 0,
              "the model's next-token logits are not finite ({} of {} are NaN or infinite): its weights have "
              "diverged or are corrupt",
              not_finite, vocab_size_);
  apply_repetition_penalty(work_, history, config_.repetition_penalty);
  if (config_.greedy) return argmax(work_);

  const float inv_temperature = 1.0f / config_.temperature;
  candidates_.resize(vocab_size_);
  bool overflow = !std::isfinite(inv_temperature);
  for (int i = 0; i < vocab_size_ && !overflow; ++i) {
    candidates_[i] = Candidate{work_[i] * inv_temperature, i};
    overflow = !std::isfinite(candidates_[i].logit);
  }
  if (overflow) {
    // A temperature so small that l / T overflows (to +inf, or to -inf: with every logit negative
    // none is left finite): the same distribution from (l - max l) / T, which is at most 0 (in
    // double: 1 / T may exceed the float range).
    const float max_logit = *std::max_element(work_.begin(), work_.end());
    const double inv = 1.0 / static_cast<double>(config_.temperature);
    for (int i = 0; i < vocab_size_; ++i)
      candidates_[i] = Candidate{static_cast<float>(static_cast<double>(work_[i] - max_logit) * inv), i};
  }
  std::vector<Candidate> kept = truncate_candidates(std::move(candidates_), config_.top_k, config_.top_p, probs_);
  int chosen = kept[draw_index(probs_, uniform_double(config_.seed, stream, index))].id;
  candidates_ = std::move(kept);  // keep the allocation for the next call
  return chosen;
}

double distinct_n(const std::vector<std::vector<int>>& sequences, int n) {
  ENSURE(n >= 1, "distinct-n needs n >= 1, got {}", n);
  std::set<std::vector<int>> distinct;
  size_t total = 0;
  for (const std::vector<int>& seq : sequences) {
    for (size_t i = 0; i + n <= seq.size(); ++i) {
      distinct.emplace(seq.begin() + i, seq.begin() + i + n);
      ++total;
    }
  }
  return total == 0 ? 0.0 : static_cast<double>(distinct.size()) / static_cast<double>(total);
}

double repetition_rate(const std::vector<std::vector<int>>& sequences, int window) {
  ENSURE(window >= 1, "repetition window must be >= 1, got {}", window);
  size_t repeats = 0, total = 0;
  for (const std::vector<int>& seq : sequences) {
    for (size_t t = 1; t < seq.size(); ++t) {
      size_t from = t > static_cast<size_t>(window) ? t - window : 0;
      repeats += std::find(seq.begin() + from, seq.begin() + t, seq[t]) != seq.begin() + t;
      ++total;
    }
  }
  return total == 0 ? 0.0 : static_cast<double>(repeats) / static_cast<double>(total);
}

double mean_log_prob(const std::vector<std::vector<float>>& log_probs) {
  double sum = 0.0;
  size_t count = 0;
  for (const std::vector<float>& seq : log_probs) {
    for (float lp : seq) sum += lp;
    count += seq.size();
  }
  return count == 0 ? NAN : sum / static_cast<double>(count);
}

}  // namespace gpt2cc
