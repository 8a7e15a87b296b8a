// A checkpoint's arrays into a model and back, streamed a piece at a time (core/checkpoint.hpp's
// CheckpointReader and CheckpointSource; GPT2's read_/write_parameters and _moment): no host copy
// of the whole parameters or moments on the way.
#pragma once

#include <cstddef>
#include <string>

#include "core/checkpoint.hpp"
#include "core/model.hpp"

namespace gpt2cc {

// Reads the checkpoint's parameters (and with `with_optimizer` its AdamW moments) into `model`,
// whose config must be the checkpoint's; returns how many parameters are NaN or infinite. On an
// InputError (a corrupt file) the model holds part of the file: discard it.
size_t read_into_model(CheckpointReader& reader, GPT2& model, bool with_optimizer);

// The source that save_checkpoint writes from: the model's parameters and moments.
CheckpointSource model_source(const GPT2& model);

// The model's checkpoint (its parameters and moments, `info`'s header) written to `path` by rank
// 0. Data parallel, every rank calls it: the state sharded over the ranks (master_sharded(),
// optimizer_sharded()) is gathered on rank 0 a piece at a time as the file is written, each piece
// a collective (read_parameters / read_moment), so rank 0 never holds the whole of it either.
void save_model_checkpoint(const std::string& path, const CheckpointInfo& info, const GPT2& model, bool root);

}  // namespace gpt2cc
