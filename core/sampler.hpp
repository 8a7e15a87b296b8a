// Next-token selection from one row of logits, and the statistics used to compare strategies.
// Pipeline, in this order (each stage optional):
//   1. repetition penalty (Keskar et al. 2019, CTRL): for every distinct token already in the
//      context, logit > 0 ? logit / penalty : logit * penalty
//   2. greedy: argmax (lowest id on ties), stop here; otherwise temperature: logit / T
//   3. top-k: keep the k largest logits      4. top-p (nucleus, Holtzman et al. 2020): keep the
//      smallest most-probable prefix whose probability reaches p   5. renormalise and draw.
// Only the first V columns of a row are real tokens: padded columns (V..Vp) are never chosen.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace gpt2cc {

struct SampleConfig {
  bool greedy = false;              // argmax instead of a draw; temperature, top-k, top-p are then unused
  float temperature = 1.0f;         // > 0 and finite; logits are divided by it (< 1 sharper, > 1 flatter)
  int top_k = 0;                    // >= 0; keep the k most likely tokens; 0 = off
  float top_p = 1.0f;               // in (0, 1]; nucleus threshold; 1 = off
  float repetition_penalty = 1.0f;  // >= 1 and finite; CTRL penalty on tokens already in the context; 1 = off
  uint64_t seed = 1337;             // draws are philox(seed, stream, index): same seed, same text
};

// Throws InputError naming the field and its value when a field is outside its range.
void validate(const SampleConfig& config);

// A candidate token and its (transformed) logit.
struct Candidate {
  float logit;
  int id;
};

// Stage 1, in place on the first V = logits.size() columns; history tokens outside [0, V) are
// ignored, and each distinct token is penalised once however often it occurs.
void apply_repetition_penalty(std::span<float> logits, std::span<const int> history, float penalty);

// Argmax over the row (lowest id among equal maxima).
int argmax(std::span<const float> logits);

// log softmax(logits)[id], in double: the model's own log-probability of a token.
double log_prob(std::span<const float> logits, int id);

// Stages 3-4 on candidates holding logits already divided by the temperature. Returns the kept
// candidates with their probabilities (softmax renormalised over the kept set) in `probs`.
// With top-k or top-p active they come sorted by decreasing logit, lowest id first among equal
// logits; with neither, in the given order (no sort needed). Top-p is measured on the
// distribution left after top-k (renormalised), as in Hugging Face transformers.
// Ties: the order above decides which of several equal tokens fall inside k or inside the
// nucleus, so the kept set always has exactly the smallest size that satisfies k / p.
// "Reaches p" allows a relative slack of 1e-6 for rounding: logits are float, so a prefix whose
// probabilities are exactly p in real numbers (0.4 + 0.2 for p = 0.6) still counts as reaching it.
std::vector<Candidate> truncate_candidates(std::vector<Candidate> candidates, int top_k, float top_p,
                                           std::vector<double>& probs);

// Stage 5: inverse-CDF draw with u in [0, 1) over probabilities summing to 1.
int draw_index(std::span<const double> probs, double u);

// A uniform double in [0, 1) with 53 random bits: two philox draws at 2*index, 2*index+1.
double uniform_double(uint64_t seed, uint32_t stream, uint64_t index);

// The whole pipeline for one row. `stream` and `index` select the random draw (the generator
// uses stream = sample number, index = step), so the result is a pure function of its inputs.
class Sampler {
 public:
  Sampler(const SampleConfig& config, int vocab_size);  // validates config; vocab_size V >= 1
  // logits: at least V columns (a padded row of Vp is fine: the extra columns are ignored).
  // history: the tokens the repetition penalty looks at (the whole current context).
  int sample(std::span<const float> logits, std::span<const int> history, uint32_t stream, uint64_t index);
  const SampleConfig& config() const { return config_; }

 private:
  SampleConfig config_;
  int vocab_size_;
  std::vector<float> work_;           // penalised logits (reused between calls)
  std::vector<Candidate> candidates_; // reused between calls
  std::vector<double> probs_;
};

// ---- decoding statistics (for comparing strategies on the same prompts) ----
// distinct-n (Li et al. 2016): distinct n-grams / total n-grams, pooled over the sequences
// (n-grams never cross sequence boundaries); 0 when there is no n-gram at all.
double distinct_n(const std::vector<std::vector<int>>& sequences, int n);
// Repetition rate (Welleck et al. 2019, "rep/w"): the fraction of tokens, from the second on,
// that already occur among the previous `window` tokens of their own sequence; 0 when empty.
double repetition_rate(const std::vector<std::vector<int>>& sequences, int window = 64);
// Mean of per-token log-probabilities pooled over sequences; NaN when there are none.
double mean_log_prob(const std::vector<std::vector<float>>& log_probs);

}  // namespace gpt2cc
