// train's flags: each bound to its TrainConfig field (core/train_config.hpp), and the settings of
// a resumed run, which come from its checkpoint with the flags given now on top.
#pragma once

#include <string>
#include <vector>

#include <cxxopts.hpp>

#include "core/train_config.hpp"

namespace gpt2cc {

// The help's flag groups, in the order --help shows them.
inline const std::vector<std::string> kTrainFlagGroups = {"",          "model",  "device", "data",  "batch",
                                                          "optimizer", "length", "eval",   "output"};

// Binds every flag to its TrainConfig field; `c`'s current values are the defaults (the struct's
// defaults for a new run, the checkpoint's settings when resuming).
cxxopts::Options make_train_options(TrainConfig& c);

// The configuration of `train --resume`: the checkpoint's (given.resume names it or its run
// directory), with the flags of argv on top, except those that would change the batches or the
// random draws (the resume would no longer be exact) and --preset (the shape is the checkpoint's):
// InputError for those. The run directory is the one --resume names or holds the checkpoint,
// unless --run-dir is given.
TrainConfig resume_config(const TrainConfig& given, int argc, char** argv);

// A flag given where it would do nothing is refused by name (InputError), as generate --score
// refuses the generation flags: --eval-only and --export-hf are runs of their own, and a flag
// with them that only training reads; --cuda-device without --device cuda; in training,
// --eval-every and --eval-batches without validation data.
void check_task_flags(const TrainConfig& c, const cxxopts::ParseResult& parsed);

}  // namespace gpt2cc
