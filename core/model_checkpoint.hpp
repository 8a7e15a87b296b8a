// A checkpoint's arrays into a model and back, streamed a piece at a time (core/checkpoint.hpp's
// CheckpointReader and CheckpointSource; GPT2's read_/write_parameters and _moment): no host copy
// of the whole parameters or moments on the way.
#pragma once

#include <cstddef>

#include "core/checkpoint.hpp"
#include "core/model.hpp"

namespace gpt2cc {

// Reads the checkpoint's parameters (and with `with_optimizer` its AdamW moments) into `model`,
// whose config must be the checkpoint's; returns how many parameters are NaN or infinite. On an
// InputError (a corrupt file) the model holds part of the file: discard it.
size_t read_into_model(CheckpointReader& reader, GPT2& model, bool with_optimizer);

// The source that save_checkpoint writes from: the model's parameters and moments. Not for
// sharded state (read_parameters / read_moment say so): gather it first.
CheckpointSource model_source(const GPT2& model);

}  // namespace gpt2cc
