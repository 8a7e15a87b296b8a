// What `train` does with a checkpoint besides training from it, each a whole run of its own:
//   --eval-only: the loss and perplexity of the checkpoint on every token of --val-data
//   --export-hf: the checkpoint's weights (and tokenizer) as a Hugging Face GPT-2 directory
// Both read --init-from, else the newest checkpoint of --resume; both print what they did. The
// shape flags, and --preset when `preset_given`, may repeat the checkpoint's shape. Part of
// the train program (it needs the tokenizer library, which gpt2cc_core does not link).
#pragma once

#include "core/backend.hpp"
#include "core/train_config.hpp"

namespace gpt2cc {

// Scores all of c.val_data in windows of c.seq_len every c.eval_stride tokens (0: seq_len), B rows
// at a time; prints the loss, the perplexity and a "json: {...}" line. Without --seq-len
// (`seq_len_given` false) a window is at most the model's context. InputError for a checkpoint
// that does not fit the flags or the data, or whose loss is not finite.
void evaluate_checkpoint(const TrainConfig& c, Backend& backend, bool preset_given, bool seq_len_given);

// Writes c.export_hf/model.safetensors + config.json (core/hf_gpt2.hpp), and vocab.json +
// merges.txt from --tokenizer, else from the tokenizer the checkpoint records when it is there.
// Refuses (InputError, nothing written) a directory that already holds a model or a tokenizer it
// would not replace, or a training run's directory.
void export_checkpoint_hf(const TrainConfig& c, bool preset_given);

}  // namespace gpt2cc
