// The parameter layout: every tensor of the model as a named view (offset, shape) into one
// contiguous buffer, in a fixed order. Per-layer tensors are stacked over L.
//   wte (Vp,C)  wpe (maxT,C)  ln1w ln1b (L,C)  qkvw (L,3C,C)  qkvb (L,3C)  attprojw (L,C,C)
//   attprojb (L,C)  ln2w ln2b (L,C)  fcw (L,4C,C)  fcb (L,4C)  fcprojw (L,C,4C)  fcprojb (L,C)
//   lnfw lnfb (C)
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "core/config.hpp"

namespace gpt2cc {

enum class Param { wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb };
inline constexpr int kNumParamTensors = 16;

struct ParamTensor {
  std::string name;          // "wte", "qkvw", ...
  size_t offset = 0;         // in floats, from the start of the buffer
  size_t numel = 0;
  std::vector<size_t> shape; // stacked over L for per-layer tensors
  bool weight_decay = false; // true for the weight matrices wte, qkvw, attprojw, fcw, fcprojw
};

class ParameterLayout {
 public:
  explicit ParameterLayout(const ModelConfig& config);
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  const ParamTensor& operator[](Param p) const { return tensors_[static_cast<int>(p)]; }
  size_t total() const { return total_; }  // floats

 private:
  std::vector<ParamTensor> tensors_;
  size_t total_ = 0;
};

}  // namespace gpt2cc
