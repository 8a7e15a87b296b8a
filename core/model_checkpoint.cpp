#include "core/model_checkpoint.hpp"

#include <cmath>
#include <span>

namespace gpt2cc {

namespace {

GPT2::Moment moment_of(CheckpointArray array) {
  return array == CheckpointArray::m ? GPT2::Moment::m : GPT2::Moment::v;
}

}  // namespace

size_t read_into_model(CheckpointReader& reader, GPT2& model, bool with_optimizer) {
  size_t not_finite = 0;
  reader.read_arrays(
      [&](CheckpointArray array, size_t offset, std::span<const float> piece) {
        if (array != CheckpointArray::params) {
          model.write_moment(moment_of(array), offset, piece);
          return;
        }
        for (float w : piece) not_finite += !std::isfinite(w);
        model.write_parameters(offset, piece);
      },
      with_optimizer);
  return not_finite;
}

CheckpointSource model_source(const GPT2& model) {
  return [&model](CheckpointArray array, size_t offset, std::span<float> piece) {
    if (array == CheckpointArray::params)
      model.read_parameters(offset, piece);
    else
      model.read_moment(moment_of(array), offset, piece);
  };
}

}  // namespace gpt2cc
