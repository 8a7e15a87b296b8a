// Validation loss and perplexity over fixed batches or a whole split (formulas in the header).
#include "core/train_eval.hpp"

#include <cmath>

#include "core/check.hpp"

namespace gpt2cc {

double EvalResult::perplexity() const { return std::exp(loss); }

namespace {
// forward() returns the mean over this batch's scored tokens: weight it back into a sum.
void accumulate(EvalResult& r, double& loss_sum, GPT2& model, const std::vector<int>& inputs,
                const std::vector<int>& targets, int B, int T) {
  float mean = model.forward(inputs.data(), targets.data(), B, T, false);
  int n = model.num_targets();
  if (n == 0) return;
  loss_sum += double(mean) * n;
  r.tokens += uint64_t(n);
  r.batches += 1;
}
}  // namespace

EvalResult evaluate_split(GPT2& model, const std::vector<std::string>& shards, int B, int T, int stride,
                          uint64_t expected_fingerprint) {
  EvalIterator it(shards, B, T, stride, expected_fingerprint);
  std::vector<int> inputs, targets;
  EvalResult r;
  double loss_sum = 0;
  while (it.next(inputs, targets) > 0) accumulate(r, loss_sum, model, inputs, targets, B, T);
  INPUT_CHECK(r.tokens > 0, "the evaluation split has no tokens to score with windows of {} tokens", T);
  r.loss = loss_sum / double(r.tokens);
  return r;
}

EvalResult evaluate_batches(GPT2& model, DataLoader& loader, int B, int T, int batches) {
  loader.restore(LoaderPosition{});
  std::vector<int> inputs, targets;
  EvalResult r;
  double loss_sum = 0;
  for (int b = 0; b < batches; ++b) {
    loader.next(inputs, targets);
    accumulate(r, loss_sum, model, inputs, targets, B, T);
  }
  ENSURE(r.tokens > 0, "validation over {} batches scored no tokens", batches);
  r.loss = loss_sum / double(r.tokens);
  return r;
}

}  // namespace gpt2cc
