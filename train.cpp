// train: trains a GPT-2 on token shards (written by `prepare`), or evaluates a checkpoint.
//   train --train-data data/ts/train --val-data data/ts/val --preset d4 --steps 2000
//   train --resume runs/run --steps 4000           continue exactly where a run stopped
//   train --eval-only --init-from runs/run/checkpoints/step_00002000.ckpt --val-data data/wt103/test
//   train --init-from runs/run/checkpoints/step_00002000.ckpt --export-hf hf/run   Hugging Face weights
//   train --init-from hf/gpt2 --train-data ... --steps 500                         fine-tune from them
//   mpiexec -n 8 train --device cuda --total-batch 524288 ...   data parallel, one rank per GPU
// Flags fill a TrainConfig (core/train_config.hpp); core/trainer.cpp does the work. Exit codes:
// 0 done (also after SIGINT/SIGTERM, which checkpoint first), 1 internal error, 2 bad input.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>

#include <cxxopts.hpp>

#include "core/check.hpp"
#include "core/cli.hpp"
#include "core/signal_cleanup.hpp"
#include "core/dataloader.hpp"
#include "core/distributed.hpp"
#include "core/hf_gpt2.hpp"
#include "core/sampler.hpp"
#include "core/tokenizer_files.hpp"
#include "core/trainer.hpp"
#include "tokenizer/tokenizer.hpp"

using namespace gpt2cc;

namespace {

// A field's value as cxxopts parses it back: strings bare, numbers as JSON prints them.
template <class T>
std::string show(const T& value) {
  nlohmann::json j = value;
  return j.is_string() ? j.get<std::string>() : j.dump();
}

// Binds every flag to its TrainConfig field; `c`'s current values are the defaults (the struct's
// defaults for a new run, the checkpoint's settings when resuming).
cxxopts::Options make_options(TrainConfig& c) {
  cxxopts::Options o("train", "Train a GPT-2 on token shards, or evaluate a checkpoint (--eval-only).");
  auto add = [&o](const std::string& group, const std::string& name, const std::string& help, auto& field) {
    using T = std::remove_reference_t<decltype(field)>;
    auto value = cxxopts::value<T>(field)->default_value(show(field));
    if constexpr (std::is_same_v<T, bool>) value->implicit_value("true");
    o.add_option(group, cxxopts::Option(name, help, value));
  };
  add("model", "preset", "model preset: gpt2, gpt2-medium, gpt2-large, gpt2-xl, d2, d4, d6", c.preset);
  add("model", "layers", "number of layers L (0: the preset's)", c.layers);
  add("model", "heads", "attention heads NH (0: the preset's)", c.heads);
  add("model", "channels", "width C (0: the preset's)", c.channels);
  add("model", "max-seq-len", "position embedding rows (0: the preset's)", c.max_seq_len);
  add("model", "dropout", "dropout probability in [0, 1)", c.dropout);
  add("model", "init-from",
      "checkpoint to start from, weights only (fine-tuning), or a Hugging Face GPT-2 directory (model.safetensors + "
      "config.json)",
      c.init_from);
  add("model", "resume", "checkpoint, or run directory (its newest), to continue exactly", c.resume);
  add("device", "device", "cpu or cuda", c.device);
  add("device", "threads", "CPU threads, 0 to 1024 (0: all cores, shared among the ranks on the machine)", c.threads);
  add("device", "cuda-device", "GPU index", c.cuda_device);
  add("device", "dtype", "compute dtype: fp32 or bf16 (mixed, cuda on sm_80 or newer)", c.dtype);
  add("device", "recompute-gelu", "recompute GELU in the backward instead of storing it (less memory)",
      c.recompute_gelu);
  add("device", "cuda-graphs", "replay each step as a CUDA graph (--cuda-graphs=false: launch every op)",
      c.cuda_graphs);
  add("device", "zero-stage",
      "under mpiexec: 1 shards the AdamW moments over the ranks (ZeRO-1), 0 keeps them whole on every rank",
      c.zero_stage);
  add("data", "train-data", "train shards: a .bin file, a directory of them, or a glob", c.train_data);
  add("data", "val-data", "validation shards (empty: no validation)", c.val_data);
  add("data", "shuffle", "shuffled windows each epoch (--shuffle=false: in order)", c.shuffle);
  add("data", "seed", "run seed: initialisation, shuffling, dropout", c.seed);
  add("batch", "batch-size", "micro-batch rows B", c.batch_size);
  add("batch", "seq-len", "sequence length T", c.seq_len);
  add("batch", "total-batch", "tokens per optimizer step, a multiple of ranks*B*T (0: ranks*B*T)",
      c.total_batch_tokens);
  add("optimizer", "lr", "peak learning rate", c.lr);
  add("optimizer", "min-lr-ratio", "final learning rate as a fraction of --lr", c.min_lr_ratio);
  add("optimizer", "warmup-steps", "linear warm-up steps", c.warmup_steps);
  add("optimizer", "schedule", "decay after warm-up: cosine, linear or constant", c.schedule);
  add("optimizer", "beta1", "AdamW beta1", c.beta1);
  add("optimizer", "beta2", "AdamW beta2", c.beta2);
  add("optimizer", "eps", "AdamW epsilon", c.eps);
  add("optimizer", "weight-decay", "decoupled weight decay on 2-D weights", c.weight_decay);
  add("optimizer", "grad-clip", "clip the global gradient norm (0: off)", c.grad_clip);
  add("length", "steps", "run length in optimizer steps", c.steps);
  add("length", "epochs", "run length in passes over the train data", c.epochs);
  add("length", "tokens", "run length in train tokens", c.tokens);
  add("length", "stop-at-step", "stop (with a checkpoint) at this step, keeping the whole run's schedule",
      c.stop_at_step);
  add("eval", "eval-every", "validate every N steps (0: only at the end)", c.eval_every);
  add("eval", "eval-batches", "validation batches (0: the whole split)", c.eval_batches);
  add("eval", "eval-only", "evaluate the --init-from/--resume checkpoint on all of --val-data and exit", c.eval_only);
  add("eval", "eval-stride", "eval-only window stride (0: --seq-len, non-overlapping)", c.eval_stride);
  add("output", "run-dir", "run directory: config.json, metrics.jsonl, checkpoints/", c.run_dir);
  add("output", "checkpoint-every", "checkpoint every N steps (0: only at the end)", c.checkpoint_every);
  add("output", "keep-checkpoints", "newest step checkpoints to keep", c.keep_checkpoints);
  add("output", "log-every", "progress line every N steps when stdout is not a terminal", c.log_every);
  add("output", "max-bad-steps", "stop after this many non-finite steps in a row", c.max_bad_steps);
  add("output", "tokenizer",
      "tokenizer directory the data was prepared with (checked; recorded; needed for --sample-every)", c.tokenizer_dir);
  add("output", "sample-every", "print and save a generated sample every N steps (0: never)", c.sample_every);
  add("output", "sample-tokens", "tokens per sample", c.sample_tokens);
  add("output", "export-hf",
      "write the --init-from/--resume weights as Hugging Face GPT-2 (model.safetensors, config.json, the tokenizer) "
      "into this directory and exit",
      c.export_hf);
  o.add_options()("h,help", "show this help");
  return o;
}

// The run directory a resumed run writes to: the one --resume names, or the one whose checkpoints/
// folder holds the checkpoint file it names. Not the directory the checkpoint records: a copied
// run would write into the original's (and a relative recorded path depends on the working
// directory of the first run).
std::string resumed_run_dir(const std::string& given, const std::string& checkpoint) {
  namespace fs = std::filesystem;
  if (fs::is_directory(given)) return given;
  const fs::path folder = fs::path(checkpoint).parent_path();
  INPUT_CHECK(folder.filename() == "checkpoints",
              "--resume {}: the checkpoint is not in a run's checkpoints/ folder, so there is no run directory to "
              "continue in: give the continued run's --run-dir",
              given);
  const fs::path run = folder.parent_path();
  return run.empty() ? "." : run.string();
}

// A flag set of a resumed run comes from its checkpoint; explicit flags override it, except
// those that would change the batches or the random draws (the resume would no longer be exact),
// and --preset (the shape is the checkpoint's).
TrainConfig resume_config(const TrainConfig& given, int argc, char** argv) {
  const std::string path = resolve_checkpoint(given.resume);
  refuse_resume_of_hf_gpt2(path);
  Checkpoint ckpt;
  try {
    ckpt = load_checkpoint(path, false);
  } catch (const InputError& e) {
    // A damaged newest checkpoint: the run's previous one, if any, is where to continue from.
    const auto all = step_checkpoints(std::filesystem::path(path).parent_path());
    const auto at = std::find(all.begin(), all.end(), std::filesystem::path(path));
    if (at == all.begin() || at == all.end()) throw;
    fail_input(format("{}; the run's previous checkpoint is {}: move the damaged one out of {} and continue "
                      "with --resume {}",
                      e.what(), at[-1].string(), std::filesystem::path(path).parent_path().string(),
                      at[-1].string()));
  }
  TrainConfig c;
  try {
    c = ckpt.train_config.get<TrainConfig>();
  } catch (const nlohmann::json::exception& e) {
    fail_input(format("checkpoint {} holds an unreadable training configuration: {}", path, e.what()));
  }
  c.resume = given.resume;
  c.init_from.clear();  // the run may have started as a fine-tune: its weights now come from the checkpoint
  c.stop_at_step = 0;
  TrainConfig base = c;
  auto options = make_options(c);
  const cxxopts::ParseResult parsed = parse_flags(options, argc, argv);
  if (c.total_batch_tokens == 0) c.total_batch_tokens = base.total_batch_tokens;  // 0: the run's own
  // A run length given now replaces the run's, in whichever unit it is given.
  if (parsed.count("steps") || parsed.count("epochs") || parsed.count("tokens")) {
    if (!parsed.count("steps")) c.steps = 0;
    if (!parsed.count("epochs")) c.epochs = 0;
    if (!parsed.count("tokens")) c.tokens = 0;
  }
  INPUT_CHECK(c.batch_size == base.batch_size && c.seq_len == base.seq_len &&
                  c.total_batch_tokens == base.total_batch_tokens && c.seed == base.seed &&
                  c.shuffle == base.shuffle && c.dropout == base.dropout && c.dtype == base.dtype,
              "--resume continues the run with its own --batch-size, --seq-len, --total-batch, --seed, --shuffle, "
              "--dropout and --dtype (from the checkpoint); drop those flags, or start a new run with --init-from");
  INPUT_CHECK(c.preset == base.preset,
              "--preset {}: the model shape comes from the checkpoint {} (its run's --preset {}); drop --preset",
              c.preset, path, base.preset);
  if (!parsed.count("run-dir")) c.run_dir = resumed_run_dir(given.resume, path);
  return c;
}

// The tokenizer a run records (and samples with): the one its data was prepared with. Checked
// against the training shards when --tokenizer is given, or when the run samples text (a resumed
// run's recorded one); a missing directory is an error then too. Returns the tokenizer it loaded
// (the samples decode with it), or null when there was nothing to check.
std::shared_ptr<const Tokenizer> check_tokenizer(const TrainConfig& c, bool given) {
  if (c.tokenizer_dir.empty() || c.train_data.empty() || (!given && c.sample_every == 0)) return nullptr;
  INPUT_CHECK(std::filesystem::is_directory(c.tokenizer_dir), "--tokenizer {}: no such directory{}", c.tokenizer_dir,
              given ? "" : " (the tokenizer the resumed run recorded; give --tokenizer)");
  auto tokenizer = std::make_shared<const Tokenizer>(Tokenizer::load(c.tokenizer_dir));
  const ShardHeader data = read_shard_header(list_shards(c.train_data).front());
  INPUT_CHECK(data.tokenizer_fingerprint == tokenizer->fingerprint() &&
                  static_cast<int>(data.vocab_size) == tokenizer->vocab_size(),
              "--tokenizer {} (fingerprint {}, {} tokens) is not the tokenizer {} was prepared with (fingerprint "
              "{}, {} tokens)",
              c.tokenizer_dir, tokenizer->fingerprint(), tokenizer->vocab_size(), c.train_data,
              data.tokenizer_fingerprint, data.vocab_size);
  return tokenizer;
}

// An exclusive flock on a run directory for the process's lifetime: a second train into it is
// refused before it writes anything (both would pass the trainer's "no checkpoints yet" check and
// then interleave their checkpoints). The kernel drops the lock with the process, even on a crash.
// The directories made here and left empty by a failed setup are removed again.
class RunDirectoryLock {
 public:
  explicit RunDirectoryLock(const std::string& dir) : dir_(dir) {
    std::error_code ec;
    // The levels this makes (nest/a/b: each missing one), deepest first, to remove again.
    std::filesystem::path full = std::filesystem::absolute(dir, ec).lexically_normal();
    if (full.filename().empty()) full = full.parent_path();  // "runs/a/" names runs/a
    for (std::filesystem::path p = full;
         !p.empty() && !std::filesystem::exists(p, ec) && p != p.parent_path(); p = p.parent_path())
      created_.push_back(p);
    std::filesystem::create_directories(dir, ec);
    INPUT_CHECK(!ec, "cannot create run directory {}: {}", dir, ec.message());
    fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    INPUT_CHECK(fd_ >= 0, "cannot open run directory {}: {}", dir, std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      ::close(fd_);
      fd_ = -1;
      INPUT_CHECK(error != EWOULDBLOCK, "run directory {} is in use by another train process: give another --run-dir",
                  dir);
      throw Error(format("cannot lock run directory {}: {}", dir, std::strerror(error)));
    }
  }
  RunDirectoryLock(const RunDirectoryLock&) = delete;
  RunDirectoryLock& operator=(const RunDirectoryLock&) = delete;
  ~RunDirectoryLock() {
    std::error_code ec;
    if (!kept_) {
      for (const std::filesystem::path& level : created_) {
        if (!std::filesystem::is_empty(level, ec)) break;
        std::filesystem::remove(level, ec);
      }
    }
    if (fd_ >= 0) ::close(fd_);
  }
  void keep() { kept_ = true; }

 private:
  std::string dir_;
  int fd_ = -1;
  std::vector<std::filesystem::path> created_;  // deepest first
  bool kept_ = false;
};

// The checkpoint --eval-only and --export-hf read: --init-from, else the --resume one.
std::string given_checkpoint(const TrainConfig& c) {
  return c.init_from.empty() ? resolve_checkpoint(c.resume) : c.init_from;
}

int eval_only(const TrainConfig& c, Backend& backend) {
  const std::string path = given_checkpoint(c);
  Checkpoint ckpt = load_checkpoint(path, false);
  check_shape_flags(c, ckpt.config, path);
  INPUT_CHECK(c.seq_len <= ckpt.config.max_seq_len, "--seq-len {} is longer than the model's maximum {} ({})",
              c.seq_len, ckpt.config.max_seq_len, path);
  auto shards = list_shards(c.val_data);
  ShardHeader header = read_shard_header(shards.front());
  INPUT_CHECK(int(header.vocab_size) == ckpt.config.vocab_size,
              "checkpoint {} has a vocabulary of {} tokens, but {} was tokenized with a vocabulary of {}", path,
              ckpt.config.vocab_size, c.val_data, header.vocab_size);
  GPT2 model(ckpt.config, backend, c.batch_size, c.seq_len);
  model.set_parameters(ckpt.params);
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
  return 0;
}

// The checkpoint's weights as a Hugging Face GPT-2 directory (core/hf_gpt2.hpp), with the tokenizer
// (--tokenizer, else the one the checkpoint records) as vocab.json + merges.txt when there is one.
int export_hf(const TrainConfig& c) {
  const std::string path = given_checkpoint(c);
  const Checkpoint ckpt = load_checkpoint(path, false);
  check_shape_flags(c, ckpt.config, path);
  std::string tokenizer_dir = c.tokenizer_dir.empty() ? ckpt.tokenizer_dir : c.tokenizer_dir;
  std::string no_tokenizer = "the checkpoint records none";
  if (c.tokenizer_dir.empty() && !tokenizer_dir.empty() && !std::filesystem::is_directory(tokenizer_dir)) {
    no_tokenizer = "the checkpoint's " + tokenizer_dir + " is not there";
    tokenizer_dir.clear();
  }
  std::optional<Tokenizer> tokenizer;
  if (!tokenizer_dir.empty()) {
    tokenizer = Tokenizer::load(tokenizer_dir);
    INPUT_CHECK(ckpt.tokenizer_fingerprint == 0 || ckpt.tokenizer_fingerprint == tokenizer->fingerprint(),
                "tokenizer {} is not the one checkpoint {} was trained with (fingerprint {} vs {})", tokenizer_dir,
                path, tokenizer->fingerprint(), ckpt.tokenizer_fingerprint);
    INPUT_CHECK(tokenizer->vocab_size() == ckpt.config.vocab_size,
                "tokenizer {} has {} tokens, the model of checkpoint {} has {}", tokenizer_dir,
                tokenizer->vocab_size(), path, ckpt.config.vocab_size);
  }
  // Not into a run directory (its config.json is the run's), and never beside a tokenizer that
  // would be taken for this model's (encoder.json + vocab.bpe win over the vocab.json + merges.txt
  // written here).
  const std::filesystem::path out(c.export_hf);
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  INPUT_CHECK(!ec && std::filesystem::is_directory(out), "--export-hf {}: cannot make a directory there: {}",
              c.export_hf, ec ? ec.message() : "a file of that name is in the way");
  INPUT_CHECK(!std::filesystem::exists(out / "checkpoints") && !std::filesystem::exists(out / "metrics.jsonl"),
              "--export-hf {} is a training run's directory; export into a directory of its own", c.export_hf);
  for (const TokenizerFilePair& pair : kTokenizerFilePairs) {
    // Tokenizer::save writes the Hugging Face pair: those two it replaces.
    const bool replaced = tokenizer && std::string(pair.vocab) == "vocab.json";
    for (const char* name : {pair.vocab, pair.merges}) {
      INPUT_CHECK(replaced || !std::filesystem::exists(out / name),
                  "--export-hf {} already holds a tokenizer ({}) that would be taken for this model's: {}export into "
                  "another directory",
                  c.export_hf, name, tokenizer ? "" : "give --tokenizer DIR, or ");
    }
  }
  save_hf_gpt2(c.export_hf, ckpt.config, ckpt.params);
  if (tokenizer) tokenizer->save(c.export_hf);
  std::cout << "exported " << path << " (" << describe(ckpt.config) << ", step " << ckpt.step << ") to "
            << c.export_hf << ": model.safetensors, config.json"
            << (tokenizer ? ", vocab.json, merges.txt (tokenizer " + tokenizer_dir + ")"
                          : " (no tokenizer: " + no_tokenizer + "; add one with --tokenizer DIR)")
            << "\nload it with transformers.GPT2LMHeadModel.from_pretrained(\"" << c.export_hf
            << "\"), or here with --init-from / --checkpoint " << c.export_hf << std::endl;
  return 0;
}

// Samples `sample_tokens` tokens after <|endoftext|> with top-k 40, a fixed seed per step.
// `tokenizer`: the one check_tokenizer loaded (a run with --sample-every always has one).
std::function<std::string(GPT2&, uint64_t)> make_sampler(const TrainConfig& c,
                                                          std::shared_ptr<const Tokenizer> tokenizer) {
  ENSURE(tokenizer != nullptr, "--sample-every without a checked tokenizer");
  return [tokenizer, c](GPT2& model, uint64_t step) {
    SampleConfig sc;
    sc.top_k = 40;
    sc.seed = c.seed ^ step;
    Sampler sampler(sc, model.config().vocab_size);
    std::vector<int> tokens = {tokenizer->eot_id()};
    auto logits = model.prefill(tokens.data(), 1, 1);
    int n = std::min(c.sample_tokens, model.config().max_seq_len - 1);
    for (int i = 0; i < n; ++i) {
      tokens.push_back(sampler.sample(logits, tokens, 0, uint64_t(i)));
      logits = model.decode(&tokens.back(), 1, int(tokens.size()) - 1);
    }
    return tokenizer->decode(std::span<const int>(tokens).subspan(1));
  };
}

constexpr const char* kMemoryHint =
    "less memory: a smaller --batch-size (--total-batch keeps the tokens per step, by accumulation), a shorter "
    "--seq-len, --recompute-gelu, --dtype bf16 (cuda), --zero-stage 1 with several ranks, or a smaller model";

int run(int argc, char** argv, ProcessGroup& group) {
  // Under mpiexec the ranks agree on the setup's errors before their first collective and after
  // the trainer's setup (which calls none): one message, naming the ranks that had it.
  const auto agreed = [&](auto&& step) { agree_on_failure(group, "train", argc, argv, kMemoryHint, step); };
  TrainConfig config;
  auto options = make_options(config);
  std::optional<cxxopts::ParseResult> parsed;
  agreed([&] { parsed = parse_flags(options, argc, argv); });
  if (parsed->count("help")) {
    if (group.is_root())
      std::cout << options.help({"", "model", "device", "data", "batch", "optimizer", "length", "eval", "output"})
                << "\n" << kEnvironmentHelp << std::flush;
    return 0;
  }
  const bool data_parallel = group.size() > 1;
  std::shared_ptr<const Tokenizer> tokenizer;  // loaded by check_tokenizer when there is one to check
  std::unique_ptr<Backend> backend;
  agreed([&] {
    INPUT_CHECK(parsed->unmatched().empty(), "unexpected argument '{}' (every setting is a --flag)",
                parsed->unmatched().empty() ? "" : parsed->unmatched().front());
    // (With --init-from too, validate() says they cannot be combined before any checkpoint is read.)
    if (!config.resume.empty() && config.init_from.empty() && !config.eval_only && config.export_hf.empty())
      config = resume_config(config, argc, argv);
    INPUT_CHECK(config.init_from.empty() || !parsed->count("preset"),
                "--preset {}: with --init-from the model shape comes from the checkpoint {}; drop --preset",
                config.preset, config.init_from);
    for (const char* flag : {"export-hf", "init-from", "resume", "tokenizer"})
      INPUT_CHECK(!parsed->count(flag) || !(*parsed)[flag].as<std::string>().empty(), "--{} is empty", flag);
    if (!config.eval_only && config.export_hf.empty())
      tokenizer = check_tokenizer(config, parsed->count("tokenizer") > 0);
    validate(config);
    INPUT_CHECK(!data_parallel || (config.export_hf.empty() && !config.eval_only),
                "--{} runs in one process: start it without mpiexec", config.eval_only ? "eval-only" : "export-hf");
    if (!config.export_hf.empty()) return;
    INPUT_CHECK(!data_parallel || config.device != "cuda" || !parsed->count("cuda-device"),
                "--cuda-device with {} ranks: every rank would take GPU {}; leave it out, and the rank with local "
                "index i takes GPU i",
                group.size(), config.cuda_device);
    // Where this rank runs (not recorded in the run's config: a resume may run elsewhere).
    const bool cuda = config.device == "cuda";
    const int gpu = data_parallel && cuda ? cuda_device_of_rank(group, cuda_device_count()) : config.cuda_device;
    const int threads = data_parallel ? cpu_threads_of_rank(group, config.threads) : config.threads;
    const DType dtype = parse_dtype(config.dtype);
    backend = cuda ? make_cuda_backend(gpu, dtype) : make_cpu_backend(threads, dtype);
  });
  if (!config.export_hf.empty()) {
    remove_temporaries_on_signal();  // a Ctrl-C leaves no half-written model.safetensors.tmp
    return export_hf(config);
  }
  if (config.eval_only) return eval_only(config, *backend);

  std::unique_ptr<DeviceCollectives> collectives;
  if (data_parallel) collectives = make_device_collectives(group, *backend);
  std::unique_ptr<Trainer> trainer_ptr;
  std::optional<RunDirectoryLock> run_lock;  // the root writes the run directory
  agreed([&] {
    if (group.is_root()) run_lock.emplace(config.run_dir);
    trainer_ptr = std::make_unique<Trainer>(config, *backend, collectives.get());
  });
  if (run_lock) run_lock->keep();
  Trainer& trainer = *trainer_ptr;
  // A Ctrl-C stops the run after the current step, with a checkpoint (core/signal_cleanup.hpp); on
  // every rank: mpiexec passes it on to all of them.
  install_stop_handlers();
  // The other ranks print only what goes wrong on them.
  if (!group.is_root()) {
    trainer.run();
    return 0;
  }
  std::cout << "configuration:\n" << describe(trainer.config()) << trainer.summary() << std::flush;
  if (config.sample_every) trainer.sampler = make_sampler(config, tokenizer);
  StopReason reason = trainer.run();
  std::string where = config.run_dir + "/checkpoints";
  if (reason == StopReason::interrupted) {
    std::cout << "stopped by a signal at step " << trainer.step() << "; checkpoint saved in " << where
              << "; continue with: train --resume " << config.run_dir << std::endl;
  } else {
    std::cout << "done: step " << trainer.step() << "/" << trainer.total_steps() << ", checkpoint in " << where
              << ", metrics in " << config.run_dir << "/metrics.jsonl" << std::endl;
  }
  EvalResult last = trainer.last_evaluation();
  if (last.tokens > 0) {
    std::printf("validation loss %.4f, perplexity %.3f (%lu tokens, after step %lu)\n", last.loss, last.perplexity(),
                static_cast<unsigned long>(last.tokens), static_cast<unsigned long>(trainer.last_evaluation_step()));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Joins the ranks when mpiexec started several; a failure joining is reported as any other.
  std::unique_ptr<ProcessGroup> group;
  int code = gpt2cc::run_cli("train", argc, argv, [&](int, char**) {
    group = ProcessGroup::join(&argc, &argv);
    return 0;
  });
  if (code != 0) return code;
  const std::string program = group->size() > 1 ? format("train (rank {} of {})", group->rank(), group->size())
                                                : std::string("train");
  bool agreed = false;  // every rank ends with the failure's code: none is left waiting
  code = gpt2cc::run_cli(
      program.c_str(), argc, argv,
      [&](int c, char** v) {
        try {
          return run(c, v, *group);
        } catch (const AgreedFailure&) {
          agreed = true;
          throw;
        }
      },
      kMemoryHint);
  // A rank failed alone: it ends the others, which would wait for it in their next collective.
  if (code != 0 && !agreed) group->abort(code);
  return code;
}
