// Validation loss and perplexity over fixed batches or a whole split (formulas in the header).
#include "core/train_eval.hpp"

#include <cmath>

#include "core/check.hpp"
#include "core/distributed.hpp"

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

namespace {
// Rank r of the group scored the batches b with b % ranks == r: the sums over all of them.
void combine(EvalResult& r, double& loss_sum, ProcessGroup* group) {
  if (group == nullptr || group->size() == 1) return;
  double sums[3] = {loss_sum, double(r.tokens), double(r.batches)};
  group->all_reduce_sum(sums);
  loss_sum = sums[0];
  r.tokens = uint64_t(sums[1]);
  r.batches = uint64_t(sums[2]);
}
bool mine(uint64_t batch, ProcessGroup* group) {
  return group == nullptr || batch % uint64_t(group->size()) == uint64_t(group->rank());
}
}  // namespace

EvalResult evaluate_split(GPT2& model, const std::vector<std::string>& shards, int B, int T, int stride,
                          uint64_t expected_fingerprint, ProcessGroup* group) {
  EvalIterator it(shards, B, T, stride, expected_fingerprint);
  std::vector<int> inputs, targets;
  EvalResult r;
  double loss_sum = 0;
  for (uint64_t b = 0; it.next(inputs, targets) > 0; ++b) {
    if (mine(b, group)) accumulate(r, loss_sum, model, inputs, targets, B, T);
  }
  combine(r, loss_sum, group);
  INPUT_CHECK(r.tokens > 0, "the evaluation split has no tokens to score with windows of {} tokens", T);
  r.loss = loss_sum / double(r.tokens);
  return r;
}

EvalResult evaluate_batches(GPT2& model, DataLoader& loader, int B, int T, int batches, ProcessGroup* group) {
  loader.restore(LoaderPosition{});
  std::vector<int> inputs, targets;
  EvalResult r;
  double loss_sum = 0;
  for (int b = 0; b < batches; ++b) {
    loader.next(inputs, targets);
    if (mine(uint64_t(b), group)) accumulate(r, loss_sum, model, inputs, targets, B, T);
  }
  combine(r, loss_sum, group);
  ENSURE(r.tokens > 0, "validation over {} batches scored no tokens", batches);
  r.loss = loss_sum / double(r.tokens);
  return r;
}

}  // namespace gpt2cc
