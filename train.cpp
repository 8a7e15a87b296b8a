// train: trains a GPT-2 on token shards (written by `prepare`), or evaluates a checkpoint.
//   train --train-data data/ts/train --val-data data/ts/val --preset d4 --steps 2000
//   train --resume runs/run --steps 4000           continue exactly where a run stopped
//   train --eval-only --init-from runs/run/checkpoints/step_00002000.ckpt --val-data data/wt103/test
//   train --init-from runs/run/checkpoints/step_00002000.ckpt --export-hf hf/run   Hugging Face weights
//   train --init-from hf/gpt2 --train-data ... --steps 500                         fine-tune from them
//   mpiexec -n 8 train --device cuda --total-batch 524288 ...   data parallel, one rank per GPU
// Flags (train_flags.cpp) fill a TrainConfig (core/train_config.hpp); core/trainer.cpp trains,
// train_tasks.cpp evaluates and exports. Exit codes: 0 done (also after SIGINT/SIGTERM, which
// checkpoint first), 1 internal error, 2 bad input.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <cxxopts.hpp>

#include "core/check.hpp"
#include "core/cli.hpp"
#include "core/dataloader.hpp"
#include "core/distributed.hpp"
#include "core/hf_gpt2.hpp"
#include "core/run_directory.hpp"
#include "core/sampler.hpp"
#include "core/signal_cleanup.hpp"
#include "core/trainer.hpp"
#include "core/utf8.hpp"
#include "tokenizer/tokenizer.hpp"
#include "train_flags.hpp"
#include "train_tasks.hpp"

using namespace gpt2cc;

namespace {

// The tokenizer a run records (and samples with): the one its data was prepared with. Checked
// against the training shards when --tokenizer is given, or when the run samples text (a resumed
// run's recorded one); a missing directory is an error then too. Returns the tokenizer it loaded
// (the samples decode with it), or null when there was nothing to check.
// Hugging Face weights fine-tuned without --tokenizer record the tokenizer beside them: it too must
// be the data's (their embedding rows belong to its tokens).
std::shared_ptr<const Tokenizer> check_tokenizer(const TrainConfig& c, bool given) {
  if (c.train_data.empty()) return nullptr;
  const auto same_as_data = [&](const Tokenizer& tokenizer) {
    const ShardHeader data = read_shard_header(list_shards(c.train_data).front());
    return data.tokenizer_fingerprint == tokenizer.fingerprint() &&
                   static_cast<int>(data.vocab_size) == tokenizer.vocab_size()
               ? std::string()
               : format("(fingerprint {}, {} tokens) is not the tokenizer {} was prepared with (fingerprint {}, {} "
                        "tokens)",
                        fingerprint_hex(tokenizer.fingerprint()), tokenizer.vocab_size(), c.train_data,
                        fingerprint_hex(data.tokenizer_fingerprint), data.vocab_size);
  };
  if (c.tokenizer_dir.empty() && !c.init_from.empty() && is_hf_gpt2(c.init_from)) {
    const std::string beside = hf_gpt2_tokenizer_dir(c.init_from);
    if (beside.empty()) return nullptr;
    const std::string differs = same_as_data(Tokenizer::load(beside));
    INPUT_CHECK(differs.empty(),
                "the Hugging Face weights {} come with the tokenizer {} {}: their embeddings belong to its tokens. "
                "Prepare the data with {}, or give the data's tokenizer with --tokenizer to fine-tune on it anyway",
                c.init_from, beside, differs, beside);
    return nullptr;
  }
  if (c.tokenizer_dir.empty() || (!given && c.sample_every == 0)) return nullptr;
  INPUT_CHECK(std::filesystem::is_directory(c.tokenizer_dir), "--tokenizer {}: no such directory{}", c.tokenizer_dir,
              given ? "" : " (the tokenizer the resumed run recorded; give --tokenizer)");
  auto tokenizer = std::make_shared<const Tokenizer>(Tokenizer::load(c.tokenizer_dir));
  const std::string differs = same_as_data(*tokenizer);
  INPUT_CHECK(differs.empty(), "--tokenizer {} {}", c.tokenizer_dir, differs);
  return tokenizer;
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
    // Only the tokenizer's ids: a Hugging Face model's rows past them have no text.
    Sampler sampler(sc, std::min(model.config().vocab_size, tokenizer->vocab_size()));
    std::vector<int> tokens = {tokenizer->eot_id()};
    auto logits = model.prefill(tokens.data(), 1, 1);
    // The training model's KV cache holds its T = --seq-len positions, not the whole context.
    int n = std::min(c.sample_tokens, model.max_seq() - 1);
    for (int i = 0; i < n; ++i) {
      tokens.push_back(sampler.sample(logits, tokens, 0, uint64_t(i)));
      logits = model.decode(&tokens.back(), 1, int(tokens.size()) - 1);
    }
    // A sample of a model early in training cuts characters apart: U+FFFD in their place, as
    // generate prints them, so that samples.txt and the console get valid UTF-8.
    return replace_invalid_utf8(tokenizer->decode(std::span<const int>(tokens).subspan(1)));
  };
}

// Every rank of a data-parallel run must train with the same settings (mpiexec starts the same
// command, but an MPMD launch `-n 1 train A : -n 1 train B` need not), on the same data and from
// the same checkpoint (the same path may hold other files on each machine): a rank with another
// --lr would update its share of the weights differently, one with another --steps (or data that
// makes another run length, or a checkpoint of another step) would wait forever in a collective
// the others never reach. The root compares each rank's settings and what it derived from its
// data and checkpoint (Trainer::data_identity) with its own (where each rank runs, --threads and
// --cuda-device, may differ) and names the first difference.
template <class Agreed>
void check_same_settings(ProcessGroup& group, const TrainConfig& config, const nlohmann::json& derived,
                         Agreed&& agreed) {
  nlohmann::json mine = config;
  for (const char* local : {"threads", "cuda_device"}) mine.erase(local);
  mine["derived"] = derived;
  const std::vector<std::string> all = group.gather_strings(mine.dump());  // the root's: every rank's
  agreed([&] {
    for (size_t rank = 1; rank < all.size(); ++rank) {
      if (all[rank] == all[0]) continue;
      const nlohmann::json theirs = nlohmann::json::parse(all[rank]);
      // The flags first: a flag that differs explains what was derived from it.
      const auto entry = [](const nlohmann::json& j, const std::string& key) {
        return j.contains(key) ? j[key] : nlohmann::json(nullptr);
      };
      for (const auto& [key, value] : mine.items()) {
        INPUT_CHECK(key == "derived" || entry(theirs, key) == value,
                    "rank {} trains with {} = {}, rank 0 with {}: start every rank with the same flags (only "
                    "--threads and --cuda-device may differ)",
                    rank, key, entry(theirs, key).dump(), value.dump());
      }
      const nlohmann::json other = entry(theirs, "derived");
      for (const auto& [what, ours] : derived.items()) {
        INPUT_CHECK(what != "checkpoint" || entry(other, what) == ours,
                    "rank {} starts from checkpoint {}, rank 0 from {}: every rank must resume (or --init-from) the "
                    "same checkpoint file (a run directory on a file system the machines share, or the same copy on "
                    "each)",
                    rank, entry(other, what).dump(), ours.dump());
        INPUT_CHECK(entry(other, what) == ours,
                    "rank {} derived {} = {} from its data, rank 0 {}: every rank must read the same --train-data "
                    "and --val-data (the same files, on each machine)",
                    rank, what, entry(other, what).dump(), ours.dump());
      }
    }
  });
}

// The ranks of a job on GPUs each hold one of their own: two ranks given one GPU (a machine that
// shows each of them the same one device, or CUDA_VISIBLE_DEVICES naming the same GPU to both)
// would each take its memory, and NCCL refuses them. By the GPUs' UUIDs, which no two GPUs share.
template <class Agreed>
void check_own_gpus(ProcessGroup& group, const Backend& backend, Agreed&& agreed) {
  const std::vector<std::string> all = group.gather_strings(backend.device_uuid());  // the root's: every rank's
  agreed([&] {
    std::map<std::string, size_t> first_rank;  // of each GPU
    for (size_t rank = 0; rank < all.size(); ++rank) {
      const auto [first, own] = first_rank.emplace(all[rank], rank);
      INPUT_CHECK(own, "ranks {} and {} were given the same GPU ({}): each rank needs a GPU of its own; start at most "
                  "as many ranks on a machine as it has GPUs, and where CUDA_VISIBLE_DEVICES is set for each rank, "
                  "name a different GPU for each",
                  first->second, rank, all[rank]);
    }
  });
}

constexpr const char* kMemoryHint =
    "less memory: a smaller --batch-size (--total-batch keeps the tokens per step, by accumulation), a shorter "
    "--seq-len, --recompute-gelu, fewer --classifier-rows, --dtype bf16 with its gradients in bf16 (--grad-dtype auto), "
    "--zero-stage 1 with several ranks, or a smaller model";

// The run's settings from the flags (a resume's from its run directory), checked; the tokenizer
// when there is one to check (into *tokenizer), and the backend this rank runs on (none for
// --export-hf, which needs none).
std::unique_ptr<Backend> configure(TrainConfig& config, const cxxopts::ParseResult& parsed, ProcessGroup& group,
                                   int argc, char** argv, std::shared_ptr<const Tokenizer>* tokenizer) {
  const bool data_parallel = group.size() > 1;
  INPUT_CHECK(parsed.unmatched().empty(), "unexpected argument '{}' (every setting is a --flag)",
              parsed.unmatched().empty() ? "" : parsed.unmatched().front());
  // (With --init-from too, validate() says they cannot be combined before any checkpoint is read.)
  if (!config.resume.empty() && config.init_from.empty() && !config.eval_only && config.export_hf.empty())
    config = resume_config(config, argc, argv);
  // Only the default no flag gave is exempt from the run-length check (a resumed run's recorded
  // interval counts as given).
  config.eval_every_given = parsed.count("eval-every") > 0 || config.eval_every != TrainConfig{}.eval_every;
  INPUT_CHECK(config.init_from.empty() || !parsed.count("preset"),
              "--preset {}: with --init-from the model shape comes from the checkpoint {}; drop --preset",
              config.preset, config.init_from);
  for (const char* flag : {"export-hf", "init-from", "resume", "tokenizer"})
    INPUT_CHECK(!parsed.count(flag) || !parsed[flag].as<std::string>().empty(), "--{} is empty", flag);
  if (!config.eval_only && config.export_hf.empty())
    *tokenizer = check_tokenizer(config, parsed.count("tokenizer") > 0);
  validate(config, group.size());
  check_task_flags(config, parsed);
  INPUT_CHECK(!data_parallel || (config.export_hf.empty() && !config.eval_only),
              "--{} runs in one process: start it without mpiexec", config.eval_only ? "eval-only" : "export-hf");
  if (!config.export_hf.empty()) return nullptr;
  INPUT_CHECK(!data_parallel || config.device != "cuda" || !parsed.count("cuda-device"),
              "--cuda-device with {} ranks: every rank would take GPU {}; leave it out, and the rank with local "
              "index i takes GPU i",
              group.size(), config.cuda_device);
  // Where this rank runs (not recorded in the run's config: a resume may run elsewhere).
  const bool cuda = config.device == "cuda";
  const int gpu = data_parallel && cuda ? cuda_device_of_rank(group, cuda_device_count()) : config.cuda_device;
  const int threads = data_parallel ? cpu_threads_of_rank(group, config.threads) : config.threads;
  const DType dtype = parse_dtype(config.dtype);
  return cuda ? make_cuda_backend(gpu, dtype) : make_cpu_backend(threads, dtype);
}

// How the run ended, where its checkpoint and metrics are, and its last validation loss.
void print_outcome(const Trainer& trainer, TrainStop reason) {
  const std::string& dir = trainer.config().run_dir;
  const std::string where = dir + "/checkpoints", resume = "train --resume " + shell_quote(dir);
  if (reason == TrainStop::interrupted) {
    std::cout << "stopped by a signal at step " << trainer.step() << "; checkpoint saved in " << where
              << "; continue with: " << resume << std::endl;
  } else if (reason == TrainStop::stop_at_step) {
    std::cout << "stopped at step " << trainer.step() << " of " << trainer.total_steps() << " (--stop-at-step), "
              << "checkpoint in " << where << ", metrics in " << dir
              << "/metrics.jsonl; continue with: " << resume << std::endl;
  } else {
    std::cout << "done: step " << trainer.step() << "/" << trainer.total_steps() << ", checkpoint in " << where
              << ", metrics in " << dir << "/metrics.jsonl" << std::endl;
  }
  EvalResult last = trainer.last_evaluation();
  if (last.tokens > 0) {
    std::printf("validation loss %.4f, perplexity %.3f (%lu tokens, after step %lu)\n", last.loss, last.perplexity(),
                static_cast<unsigned long>(last.tokens), static_cast<unsigned long>(trainer.last_evaluation_step()));
  }
}

int run(int argc, char** argv, ProcessGroup& group) {
  // Under mpiexec the ranks agree on the setup's errors before their first collective and after
  // the trainer's setup (which calls none): one message, naming the ranks that had it.
  const auto agreed = [&](auto&& step) { agree_on_failure(group, "train", argc, argv, kMemoryHint, step); };
  TrainConfig config;
  auto options = make_train_options(config);
  std::optional<cxxopts::ParseResult> parsed;
  agreed([&] { parsed = parse_flags(options, argc, argv); });
  // An MPMD launch (`-n 1 train : -n 1 train --help`) may ask some ranks only for the help: they
  // would return while the others wait for them in their next collective.
  const bool help = parsed->count("help") > 0, any_help = group.any(help);
  agreed([&] {
    INPUT_CHECK(help == any_help, "another rank was started with --help and this one without it: start every rank "
                "with the same flags");
  });
  if (help) {
    if (group.is_root())
      std::cout << options.help(kTrainFlagGroups)
                << "\n" << environment_help(true) << std::flush;
    return 0;
  }
  std::shared_ptr<const Tokenizer> tokenizer;  // loaded by check_tokenizer when there is one to check
  std::unique_ptr<Backend> backend;
  agreed([&] { backend = configure(config, *parsed, group, argc, argv, &tokenizer); });
  if (!config.export_hf.empty()) {
    remove_temporaries_on_signal();  // a Ctrl-C leaves no half-written model.safetensors.tmp
    export_checkpoint_hf(config, parsed->count("preset") > 0);
    return 0;
  }
  if (config.eval_only) {
    evaluate_checkpoint(config, *backend, parsed->count("preset") > 0, parsed->count("seq-len") > 0);
    return 0;
  }

  const bool data_parallel = group.size() > 1;
  std::unique_ptr<DeviceCollectives> collectives;
  if (data_parallel && backend->kind() == DeviceKind::cuda) check_own_gpus(group, *backend, agreed);
  if (data_parallel) collectives = make_device_collectives(group, *backend);
  std::unique_ptr<Trainer> trainer_ptr;
  std::optional<RunDirectoryLock> run_lock;  // the root writes the run directory
  agreed([&] {
    if (group.is_root()) run_lock.emplace(config.run_dir);
    trainer_ptr = std::make_unique<Trainer>(config, *backend, collectives.get());
  });
  // After each rank's own setup errors (missing data, say), which name the rank.
  if (data_parallel) check_same_settings(group, config, trainer_ptr->data_identity(), agreed);
  if (run_lock) run_lock->keep();
  Trainer& trainer = *trainer_ptr;
  // A Ctrl-C stops the run after the current step, with a checkpoint (core/signal_cleanup.hpp); on
  // every rank: mpiexec passes it on to all of them.
  install_stop_handlers();
  // A divergence every rank reaches at the same step: the root says it once, and each rank ends
  // with its code (a rank failing alone would abort the others, each printing the same line).
  const auto run_trainer = [&] {
    try {
      return trainer.run();
    } catch (const DivergedError& e) {
      if (!data_parallel) throw;
      AgreedFailure failure{1, {}};
      if (group.is_root()) failure.lines.push_back(format("train: error: {}", e.what()));
      throw failure;
    }
  };
  // The other ranks print only what goes wrong on them.
  if (!group.is_root()) {
    run_trainer();
    return 0;
  }
  std::cout << "configuration:\n" << describe(trainer.config()) << trainer.summary() << std::flush;
  if (config.sample_every) trainer.sampler = make_sampler(config, tokenizer);
  TrainStop reason = run_trainer();
  print_outcome(trainer, reason);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // A closed pipe behind stdout (train | head) must not end the run between checkpoints with no
  // word: with SIGPIPE ignored its writes fail, the run trains on and saves as with a full disk
  // behind stdout, and ends with exit 1, "writing standard output failed" (run_cli). (Under
  // mpiexec the launcher holds the pipe, and ends the job when it closes: docs/training.md.)
  std::signal(SIGPIPE, SIG_IGN);
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
