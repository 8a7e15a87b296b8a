// Hugging Face GPT-2 weights in and out: transformers' GPT2LMHeadModel / GPT2Model saved as
// safetensors (core/safetensors.hpp) beside its config.json, as the Hub holds openai-community/gpt2
// and what `save_pretrained` writes.
//
// Names (a "transformer." prefix, as GPT2LMHeadModel saves them, or none, as the Hub's files),
// and gpt2cc's parameter (core/params.hpp) each maps to, per layer i:
//   wte.weight [V, C] -> wte rows 0..V-1 (the padded rows Vp-V stay zero)   wpe.weight [maxT, C] -> wpe
//   h.i.ln_1.{weight,bias} -> ln1w, ln1b     h.i.attn.c_attn.{weight [C, 3C], bias} -> qkvw, qkvb
//   h.i.attn.c_proj.{weight [C, C], bias} -> attprojw, attprojb              h.i.ln_2 -> ln2w, ln2b
//   h.i.mlp.c_fc.{weight [C, 4C], bias} -> fcw, fcb   h.i.mlp.c_proj.{weight [4C, C], bias} -> fcprojw, fcprojb
//   ln_f.{weight,bias} -> lnfw, lnfb
// transformers' Conv1D keeps its weight as [in, out] (y = x W + b), gpt2cc as (out, in) (y = x W^T
// + b): every c_* weight is transposed on the way. The q, k, v column blocks of c_attn, and the
// heads inside them, are in gpt2cc's order already. lm_head.weight, when saved, must be wte (GPT-2
// ties them); the causal-mask buffers old files carry (h.i.attn.bias, h.i.attn.masked_bias) are
// skipped; any other tensor is refused by name. F32, F16 and BF16 files load (widened to fp32).
//
// config.json must describe the model gpt2cc computes: activation gelu_new (the tanh GELU),
// layer_norm_epsilon 1e-5, tied embeddings, an MLP 4 x n_embd wide (n_inner null), no
// cross-attention, scale_attn_by_inverse_layer_idx false; anything else is refused naming the field.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/checkpoint.hpp"
#include "core/config.hpp"

namespace gpt2cc {

// True when `path` names Hugging Face weights: a directory holding model.safetensors, or a file
// that starts as a safetensors file does (not a gpt2cc checkpoint, whose first bytes are its magic).
bool is_hf_gpt2(const std::string& path);
// Throws InputError when `path` holds Hugging Face weights: they are no run to --resume.
void refuse_resume_of_hf_gpt2(const std::string& path);
// Throws InputError naming the missing file when the directory `dir` holds half of Hugging Face
// GPT-2 weights: config.json without model.safetensors (or its shards' index), or the reverse.
void refuse_incomplete_hf_gpt2(const std::string& dir);

// The directory of Hugging Face weights (`path`: it, or its model.safetensors) as an absolute path
// when it holds a tokenizer (vocab.json + merges.txt, or encoder.json + vocab.bpe), else "".
std::string hf_gpt2_tokenizer_dir(const std::string& path);

// The weights of a Hugging Face GPT-2 directory (or its model.safetensors, config.json beside it)
// as a weights-only checkpoint at step 0: config from config.json (Vp = padded_vocab(V)), params in
// gpt2cc's layout, no optimizer state, no tokenizer fingerprint; tokenizer_dir is
// hf_gpt2_tokenizer_dir(path). Opening reads config.json and the safetensors header and checks
// every tensor's name and shape, throwing InputError naming the file and the tensor or field for
// anything it cannot map; read_params then reads the tensors into `sink` (core/checkpoint.hpp)
// one at a time, or a piece of one at a time (each at most kCheckpointPiece floats, in gpt2cc's
// parameter order, each piece where the last ended, as a gpt2cc checkpoint's come: wte's padded
// rows, as zeros, right after wte), so no copy of all the weights is ever held; a saved
// lm_head.weight is checked equal to wte on the way (InputError, after some pieces).
class HfGpt2Weights {
 public:
  explicit HfGpt2Weights(const std::string& path);
  ~HfGpt2Weights();
  HfGpt2Weights(HfGpt2Weights&&) noexcept;
  HfGpt2Weights& operator=(HfGpt2Weights&&) noexcept;
  const CheckpointInfo& info() const;
  void read_params(const CheckpointSink& sink) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The same into memory: a Checkpoint with params and no moments.
Checkpoint load_hf_gpt2(const std::string& path);

// Writes dir/model.safetensors (F32, Hub names without a prefix, metadata format "pt") and
// dir/config.json for `params` (gpt2cc's layout for `config`; the padded vocabulary rows are
// dropped), each atomically; creates dir. What transformers' GPT2LMHeadModel.from_pretrained(dir)
// loads. Its bos/eos_token_id is `eot_id` (<|endoftext|> of the tokenizer exported beside it);
// without one, 50256 for GPT-2's vocabulary size, else null. The tensors' data lie in gpt2cc's
// parameter order (each per-layer tensor for every layer in turn); readers go by the header.
void save_hf_gpt2(const std::string& dir, const ModelConfig& config, const std::vector<float>& params,
                  std::optional<int> eot_id = std::nullopt);
// The same streamed: `params(take)` passes all the parameters to `take` in gpt2cc's order, each
// piece where the last ended (as CheckpointReader::read_arrays and HfGpt2Weights::read_params
// give them), and they go to the file as they come, so that no copy of all the weights is held:
// one layer's largest matrix twice (to transpose it) at most. An exception from `params` passes
// through, and the old files survive.
void save_hf_gpt2(const std::string& dir, const ModelConfig& config,
                  const std::function<void(const CheckpointSink& take)>& params,
                  std::optional<int> eot_id = std::nullopt);

}  // namespace gpt2cc
