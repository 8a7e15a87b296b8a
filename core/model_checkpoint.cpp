// The model's side of checkpoint streaming (core/model_checkpoint.hpp): each piece a
// CheckpointReader hands over goes into the model's parameters (its non-finite values counted) or
// an AdamW moment; saving, the model's read functions are the writer's source, and ranks other
// than the root take part in the gathers of sharded state piece by piece, in the file's order.
#include "core/model_checkpoint.hpp"

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

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

void save_model_checkpoint(const std::string& path, const CheckpointInfo& info, const GPT2& model, bool root) {
  const CheckpointSource source = model_source(model);
  if (root) {
    save_checkpoint(path, info, true, source);
    return;
  }
  // The other ranks take part in the root's gathers, piece by piece in the file's order (all of
  // params, then m, then v, each cut as save_checkpoint cuts it), for the arrays that are
  // sharded; the values land on the root only.
  const size_t n = model.layout().total();
  std::vector<float> piece(std::min(n, kCheckpointPiece));
  for (const CheckpointArray array : {CheckpointArray::params, CheckpointArray::m, CheckpointArray::v}) {
    if (!(array == CheckpointArray::params ? model.master_sharded() : model.optimizer_sharded())) continue;
    for_each_checkpoint_piece(n, [&](size_t at, size_t count) {
      source(array, at, std::span<float>(piece.data(), count));
    });
  }
}

}  // namespace gpt2cc
