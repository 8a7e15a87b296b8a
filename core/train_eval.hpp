// Evaluation of a model on a split: the token-weighted mean cross-entropy and its perplexity.
//   loss = sum over scored tokens of -log p(target) / tokens scored;  perplexity = exp(loss)
// Over the whole split: windows of T tokens every `stride` (stride T: non-overlapping; smaller:
// every token still scored exactly once, with more context; see EvalIterator).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dataloader.hpp"
#include "core/model.hpp"

namespace gpt2cc {

class ProcessGroup;  // core/distributed.hpp

struct EvalResult {
  double loss = 0;          // mean cross-entropy per scored token (nats)
  uint64_t tokens = 0;      // tokens scored
  uint64_t batches = 0;     // forward passes of up to B rows
  double perplexity() const;
};

// The whole split once, B rows of T tokens per forward.
// With a group of several ranks (data-parallel training), every rank calls it: rank r scores
// every ranks-th batch from the r-th, and all get the result over the whole split.
EvalResult evaluate_split(GPT2& model, const std::vector<std::string>& shards, int B, int T, int stride,
                          uint64_t expected_fingerprint, ProcessGroup* group = nullptr);
// `batches` batches from the start of `loader` (a sequential loader: the same batches every
// call, so validation curves compare like with like). The loader is rewound first. A group
// shares the batches out as evaluate_split does.
EvalResult evaluate_batches(GPT2& model, DataLoader& loader, int B, int T, int batches,
                            ProcessGroup* group = nullptr);

}  // namespace gpt2cc
