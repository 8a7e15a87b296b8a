// train --eval-only and train --export-hf (train_tasks.hpp).
#include "train_tasks.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <vector>
#include <nlohmann/json.hpp>

#include "core/check.hpp"
#include "core/checkpoint.hpp"
#include "core/dataloader.hpp"
#include "core/hf_gpt2.hpp"
#include "core/model.hpp"
#include "core/model_checkpoint.hpp"
#include "core/run_directory.hpp"
#include "core/signal_cleanup.hpp"
#include "core/tokenizer_files.hpp"
#include "core/train_eval.hpp"
#include "core/trainer.hpp"
#include "tokenizer/tokenizer.hpp"

namespace gpt2cc {

namespace {

// The checkpoint --eval-only and --export-hf read: --init-from, else the --resume one.
std::string given_checkpoint(const TrainConfig& c) {
  return c.init_from.empty() ? resolve_checkpoint(c.resume) : c.init_from;
}

// Refuses an export into a directory whose files it would replace and that are not its own to
// replace: a training run's (its config.json is the run's), one holding a model (another export,
// downloaded weights), or one holding a tokenizer that would be taken for this model's
// (encoder.json + vocab.bpe win over the vocab.json + merges.txt written here). `with_tokenizer`:
// the export writes vocab.json + merges.txt + tokenizer_config.json, which may replace an earlier
// export's.
void check_export_directory(const std::string& dir, bool with_tokenizer) {
  const std::filesystem::path out(dir);
  INPUT_CHECK(!std::filesystem::exists(out / "checkpoints") && !std::filesystem::exists(out / "metrics.jsonl"),
              "--export-hf {} is a training run's directory; export into a directory of its own", dir);
  for (const char* name : {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "config.json"}) {
    INPUT_CHECK(!std::filesystem::exists(out / name),
                "--export-hf {} already holds a model ({}); export into a new directory, or remove the old model's "
                "files first",
                dir, name);
  }
  for (const TokenizerFilePair& pair : kTokenizerFilePairs) {
    const bool replaced = with_tokenizer && std::string(pair.vocab) == "vocab.json";  // Tokenizer::save's files
    for (const char* name : {pair.vocab, pair.merges}) {
      INPUT_CHECK(replaced || !std::filesystem::exists(out / name),
                  "--export-hf {} already holds a tokenizer ({}) that would be taken for this model's: {}export into "
                  "another directory",
                  dir, name, with_tokenizer ? "" : "give --tokenizer DIR, or ");
    }
  }
  INPUT_CHECK(with_tokenizer || !std::filesystem::exists(out / "tokenizer_config.json"),
              "--export-hf {} already holds a tokenizer (tokenizer_config.json) that would be taken for this "
              "model's: give --tokenizer DIR, or export into another directory",
              dir);
  // Files of a tokenizer transformers saved, which the export never writes: AutoTokenizer would
  // take tokenizer.json over the vocab.json + merges.txt written here.
  for (const char* name : {"tokenizer.json", "special_tokens_map.json", "added_tokens.json"}) {
    INPUT_CHECK(!std::filesystem::exists(out / name),
                "--export-hf {} already holds a tokenizer's {}, which transformers would take for this model's "
                "tokenizer: remove it, or export into another directory",
                dir, name);
  }
}

}  // namespace

void evaluate_checkpoint(const TrainConfig& flags, Backend& backend, bool preset_given, bool seq_len_given) {
  TrainConfig c = flags;
  const std::string path = given_checkpoint(c);
  CheckpointReader reader(path);
  const CheckpointInfo& ckpt = reader.info();
  check_shape_flags(c, ckpt.config, path, preset_given);
  // The default window (--seq-len's 128) is cut to a shorter context than that; a given one is not.
  if (!seq_len_given) c.seq_len = std::min(c.seq_len, ckpt.config.max_seq_len);
  INPUT_CHECK(c.seq_len <= ckpt.config.max_seq_len, "--seq-len {} is longer than the model's maximum {} ({})",
              c.seq_len, ckpt.config.max_seq_len, path);
  INPUT_CHECK(c.eval_stride <= c.seq_len,
              "--eval-stride {} is longer than the window, the model's context of {} tokens ({}): give a stride of "
              "at most {}",
              c.eval_stride, c.seq_len, path, c.seq_len);
  auto shards = list_shards(c.val_data);
  ShardHeader header = read_shard_header(shards.front());
  // Fewer tokens than the model's rows is a Hugging Face model's way (rows past its tokenizer's).
  INPUT_CHECK(int(header.vocab_size) <= ckpt.config.vocab_size,
              "checkpoint {} has a vocabulary of {} tokens, but {} was tokenized with a vocabulary of {}", path,
              ckpt.config.vocab_size, c.val_data, header.vocab_size);
  // Inference: no gradients, moments or saved activations of every layer.
  ModelOptions options;
  options.classifier_rows = c.classifier_rows;
  GPT2 model(ckpt.config, backend, c.batch_size, c.seq_len, ModelMode::inference, options);
  read_into_model(reader, model, false);
  int stride = c.eval_stride ? c.eval_stride : c.seq_len;
  std::cout << "evaluating " << path << " (" << describe(ckpt.config) << ", step " << ckpt.step << ") on "
            << c.val_data << "\nwindows of " << c.seq_len << " tokens every " << stride << " tokens ("
            << (stride == c.seq_len ? "non-overlapping" : "sliding") << "), batches of " << c.batch_size << " rows"
            << std::endl;
  EvalResult r = evaluate_split(model, shards, c.batch_size, c.seq_len, stride, ckpt.tokenizer_fingerprint);
  INPUT_CHECK(std::isfinite(r.loss), "the loss of checkpoint {} on {} is not finite ({}): its weights have diverged or "
              "are corrupt", path, c.val_data, r.loss);
  std::printf("tokens scored: %lu\nloss: %.4f\nperplexity: %.3f\n", static_cast<unsigned long>(r.tokens), r.loss,
              r.perplexity());
  nlohmann::json j = {{"checkpoint", path}, {"split", c.val_data}, {"window", c.seq_len}, {"stride", stride},
                      {"tokens_scored", r.tokens}, {"loss", r.loss}, {"perplexity", r.perplexity()}};
  std::cout << "json: " << j.dump() << std::endl;
}

void export_checkpoint_hf(const TrainConfig& c, bool preset_given) {
  const std::string path = given_checkpoint(c);
  // The header now; the parameters stream from the file into model.safetensors below (a damaged
  // file fails there, the checksum at its end, and leaves no model.safetensors).
  CheckpointReader reader(path);
  const CheckpointInfo& ckpt = reader.info();
  check_shape_flags(c, ckpt.config, path, preset_given);
  std::string tokenizer_dir = c.tokenizer_dir.empty() ? ckpt.tokenizer_dir : c.tokenizer_dir;
  std::string no_tokenizer = "the checkpoint records none";
  if (c.tokenizer_dir.empty() && !tokenizer_dir.empty() && !std::filesystem::is_directory(tokenizer_dir)) {
    no_tokenizer = "the checkpoint's " + tokenizer_dir + " is not there";
    tokenizer_dir.clear();
  }
  std::optional<Tokenizer> tokenizer;
  if (!tokenizer_dir.empty())
    tokenizer = load_checkpoint_tokenizer(tokenizer_dir, ckpt.tokenizer_fingerprint, ckpt.config.vocab_size, path);
  std::error_code ec;
  // The folders made for DIR (core/run_directory.hpp), which a failed export removes with its files.
  const std::vector<std::filesystem::path> new_folders = make_directories(c.export_hf, ec);
  const auto remove_new_folders = [&] {
    std::error_code ignored;
    for (const std::filesystem::path& folder : new_folders) std::filesystem::remove(folder, ignored);  // if empty
  };
  // A path that cannot be a folder (no permission, a read-only disk, a file on the way) is the
  // user's (exit 2); a full disk or an I/O error the machine's (1): folder_error_is_input.
  if (ec) {
    remove_new_folders();
    const std::string what = format("--export-hf {}: cannot make a directory there: {}", c.export_hf, ec.message());
    if (folder_error_is_input(ec)) fail_input(what);
    throw Error(what);
  }
  const auto check_directory = [&] {
    try {
      check_export_directory(c.export_hf, tokenizer.has_value());
    } catch (...) {
      remove_new_folders();
      throw;
    }
  };
  // DIR's own refusals first (a training run's directory, live or not, is named as one); then,
  // holding DIR, again: another export into DIR would pass the check too, and the two would
  // remove each other's files (a folder held by another is not removed).
  check_directory();
  const RunDirectoryLock lock(c.export_hf, DirectoryOwner{"export directory", "--export-hf"});
  check_directory();
  // The files the export makes (each written atomically, one after another): a failure or a signal
  // part-way removes those already there, so that the directory is as it was, ready for another try
  // (a model left without its tokenizer would make that try refuse the directory).
  std::vector<std::string> made;
  std::vector<std::unique_ptr<TemporaryFile>> removed_on_signal;
  for (const char* name : {"model.safetensors", "config.json", "vocab.json", "merges.txt", "tokenizer_config.json"}) {
    const std::string file = (std::filesystem::path(c.export_hf) / name).string();
    if (std::filesystem::exists(file)) continue;  // the tokenizer files of an earlier export, replaced
    made.push_back(file);
    removed_on_signal.push_back(std::make_unique<TemporaryFile>(file));
  }
  try {
    save_hf_gpt2(
        c.export_hf, ckpt.config, [&](const CheckpointSink& take) { reader.read_arrays(take, false); },
        tokenizer ? tokenizer->special_id("<|endoftext|>") : std::nullopt);
    if (tokenizer) tokenizer->save(c.export_hf);
  } catch (...) {
    for (const std::string& file : made) std::filesystem::remove(file, ec);
    remove_new_folders();
    throw;
  }
  std::cout << "exported " << path << " (" << describe(ckpt.config) << ", step " << ckpt.step << ") to "
            << c.export_hf << ": model.safetensors, config.json"
            << (tokenizer ? ", vocab.json, merges.txt, tokenizer_config.json (tokenizer " + tokenizer_dir + ")"
                          : " (no tokenizer: " + no_tokenizer + "; add one with --tokenizer DIR)")
            << "\nload it with transformers.GPT2LMHeadModel.from_pretrained(\"" << c.export_hf
            << "\"), or here with --init-from / --checkpoint " << c.export_hf << std::endl;
}

}  // namespace gpt2cc
