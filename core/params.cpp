// The parameter layout (core/params.hpp): the 16 tensors of GPT-2 packed back to back, in
// declaration order, into one float buffer. Per-layer tensors are stacked over L, so layer l's
// slice of e.g. qkvw starts at offset(qkvw) + l * 3C*C. No padding between tensors: the buffer
// holds exactly num_parameters(config) floats.
#include "core/params.hpp"

#include "core/check.hpp"

namespace gpt2cc {

ParameterLayout::ParameterLayout(const ModelConfig& config) {
  validate(config);
  const size_t L = config.num_layers, C = config.channels;
  const size_t Vp = config.padded_vocab_size, maxT = config.max_seq_len;
  struct Spec {
    const char* name;
    std::vector<size_t> shape;
    bool weight_decay;
  };
  // Order and names match enum Param; weight decay only on the weight matrices that multiply
  // activations (wte also as the output projection), not on wpe, biases or LayerNorm parameters.
  const Spec specs[kNumParamTensors] = {
      {"wte", {Vp, C}, true},
      {"wpe", {maxT, C}, false},
      {"ln1w", {L, C}, false},
      {"ln1b", {L, C}, false},
      {"qkvw", {L, 3 * C, C}, true},
      {"qkvb", {L, 3 * C}, false},
      {"attprojw", {L, C, C}, true},
      {"attprojb", {L, C}, false},
      {"ln2w", {L, C}, false},
      {"ln2b", {L, C}, false},
      {"fcw", {L, 4 * C, C}, true},
      {"fcb", {L, 4 * C}, false},
      {"fcprojw", {L, C, 4 * C}, true},
      {"fcprojb", {L, C}, false},
      {"lnfw", {C}, false},
      {"lnfb", {C}, false},
  };
  tensors_.reserve(kNumParamTensors);
  for (const Spec& spec : specs) {
    ParamTensor t;
    t.name = spec.name;
    t.shape = spec.shape;
    t.numel = 1;
    for (size_t d : spec.shape) t.numel *= d;
    t.offset = total_;
    t.weight_decay = spec.weight_decay;
    total_ += t.numel;
    tensors_.push_back(std::move(t));
  }
  ENSURE(total_ == num_parameters(config), "parameter layout holds {} floats, num_parameters says {}", total_,
         num_parameters(config));
}

}  // namespace gpt2cc
