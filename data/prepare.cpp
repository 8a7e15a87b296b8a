// prepare: datasets to token shards. Reads TinyStories (v1/v2 text, JSON), WikiText, WikiExtractor,
// plain text or JSONL; writes <out>/train/shard_*.bin, <out>/val/shard_*.bin and <out>/manifest.json.
//   prepare --format wikiextractor --input ../shared/data/wikipedia --tokenizer ../shared/data/gpt2 --out wiki
// Exit codes: 0 done, 2 bad flags or input (the message says which), 1 a failed read or write
// (disk full) or an internal error, 128 + the signal after SIGINT (130) or SIGTERM (143). A failed
// or interrupted run leaves --out as it was (docs/data.md).
#include <cxxopts.hpp>
#include <iomanip>
#include <iostream>

#include "core/check.hpp"
#include "core/cli.hpp"
#include "core/signal_cleanup.hpp"
#include "data/pipeline.hpp"

using namespace gpt2cc;

namespace {

// Out of memory: what a user can lower (each thread tokenises with its own tokenizer copy).
constexpr const char* kMemoryHint =
    "each --threads thread holds its own copy of the tokenizer (about 30 MB with GPT-2's): "
    "a lower --threads uses less memory (0 = $OMP_NUM_THREADS, else all cores)";

cxxopts::Options make_options() {
  cxxopts::Options options("prepare", "Tokenise a dataset into token shards for train (docs/data.md)");
  // clang-format off
  options.add_options()
    ("format", "input format: tinystories (v1 text), tinystories-v2, tinystories-json, wikitext, wikiextractor, text, jsonl",
     cxxopts::value<std::string>())
    ("input", "input files or directories (repeat the flag or separate with commas)", cxxopts::value<std::vector<std::string>>())
    ("val-files", "files or directories that form the validation split (instead of --val-fraction)",
     cxxopts::value<std::vector<std::string>>())
    ("val-fraction", "share of documents drawn into the validation split, in [0, 1) (default 0.01, 0 with --val-files)",
     cxxopts::value<double>())
    ("seed", "seed of the train/validation draw", cxxopts::value<uint64_t>()->default_value("1337"))
    ("tokenizer", "tokenizer directory (GPT-2's encoder.json + vocab.bpe, or vocab.json + merges.txt)",
     cxxopts::value<std::string>())
    ("out", "output directory (gets train/, val/, manifest.json)", cxxopts::value<std::string>())
    ("shard-tokens", "tokens per shard, >= 1", cxxopts::value<uint64_t>()->default_value("100000000"))
    ("threads", format("tokeniser threads, 0 to {} (0 = $OMP_NUM_THREADS, else all cores)", kMaxThreads),
     cxxopts::value<int>()->default_value("0"))
    ("separator", "text: a line equal to this separates documents (default: none, one document per file)",
     cxxopts::value<std::string>())
    ("field", "jsonl: the string field holding the document", cxxopts::value<std::string>()->default_value("text"))
    ("story-boundary", "tinystories: auto, eot, line or blank (docs/data.md)",
     cxxopts::value<std::string>()->default_value("auto"))
    ("replace-invalid-utf8", "replace invalid UTF-8 with U+FFFD (one per maximal invalid subpart) instead of failing")
    ("overwrite", "replace shards already in the output directory (once this run has succeeded)")
    ("h,help", "show this help");
  // clang-format on
  return options;
}

// The flags, checked, as the run's configuration.
data::PrepareConfig config_from_flags(const cxxopts::ParseResult& args, int argc, char** argv) {
  INPUT_CHECK(args.unmatched().empty(), "unexpected argument \"{}\" (inputs are given with --input)",
              args.unmatched().front());
  for (const char* required : {"format", "input", "tokenizer", "out"})
    INPUT_CHECK(args.count(required), "--{} is required (see --help)", required);

  data::PrepareConfig config;
  config.format.format = data::parse_format(args["format"].as<std::string>());
  config.format.story_boundary = data::parse_story_boundary(args["story-boundary"].as<std::string>());
  if (args.count("separator")) config.format.separator = args["separator"].as<std::string>();
  config.format.field = args["field"].as<std::string>();
  config.format.replace_invalid_utf8 = switch_on(args, "replace-invalid-utf8");
  INPUT_CHECK(!args.count("separator") || config.format.format == data::Format::text,
              "--separator applies only to --format text");
  INPUT_CHECK(!args.count("separator") || !config.format.separator.empty(),
              "--separator is empty: give the line that separates documents (e.g. '%%'), or leave it out for one "
              "document per file");
  INPUT_CHECK(!args.count("field") || config.format.format == data::Format::jsonl,
              "--field applies only to --format jsonl");
  INPUT_CHECK(!config.format.field.empty(), "--field must not be empty");
  INPUT_CHECK(!args.count("story-boundary") || config.format.format == data::Format::tinystories,
              "--story-boundary applies only to --format tinystories");
  const std::string out_dir = args["out"].as<std::string>();
  config.inputs = data::expand_inputs(args["input"].as<std::vector<std::string>>(), out_dir);
  if (args.count("val-files")) {
    INPUT_CHECK(!args.count("val-fraction"), "give either --val-files or --val-fraction, not both");
    config.val_inputs = data::expand_inputs(args["val-files"].as<std::vector<std::string>>(), out_dir);
    config.val_fraction = 0;
  } else if (args.count("val-fraction")) {
    config.val_fraction = args["val-fraction"].as<double>();
  }
  data::check_distinct_inputs(config.inputs, config.val_inputs);
  INPUT_CHECK(config.val_fraction >= 0 && config.val_fraction < 1, "--val-fraction must be in [0, 1), got {}",
              config.val_fraction);
  config.seed = args["seed"].as<uint64_t>();
  config.shard_tokens = args["shard-tokens"].as<uint64_t>();
  INPUT_CHECK(config.shard_tokens >= 1, "--shard-tokens must be >= 1, got {}", config.shard_tokens);
  config.threads = args["threads"].as<int>();
  check_thread_count(config.threads);
  config.tokenizer_dir = args["tokenizer"].as<std::string>();
  config.out_dir = args["out"].as<std::string>();
  INPUT_CHECK(!config.out_dir.empty(), "--out is empty: give the output directory");
  config.overwrite = switch_on(args, "overwrite");
  for (int i = 0; i < argc; ++i) config.command_line += (i ? " " : "") + std::string(argv[i]);
  return config;
}

void print_summary(const data::PrepareConfig& config, const Tokenizer& tokenizer, const data::PrepareSummary& s) {
  uint64_t docs = s.train.documents + s.val.documents, tokens = s.train.tokens + s.val.tokens;
  uint64_t bytes = s.train.bytes + s.val.bytes;
  std::cout << std::fixed << std::setprecision(3);
  std::cout << "prepared " << config.inputs.size() + config.val_inputs.size() << " files ("
            << data::format_name(config.format.format) << ") with tokenizer " << config.tokenizer_dir << " (vocab "
            << tokenizer.vocab_size() << ")\n";
  for (auto [name, split] : {std::pair{"train", &s.train}, std::pair{"val", &s.val}})
    std::cout << "  " << std::left << std::setw(6) << name << split->documents << " documents, " << split->tokens
              << " tokens, " << split->bytes << " bytes, " << split->shards.size() << " shards\n";
  double text_tokens = double(tokens - docs);  // without the one <|endoftext|> per document
  std::cout << "  total " << docs << " documents, " << tokens << " tokens, " << bytes << " bytes, "
            << (bytes ? text_tokens / double(bytes) : 0.0) << " tokens/byte (text only)\n";
  std::cout << "  time " << s.seconds << " s on " << s.threads << " threads: " << std::setprecision(0)
            << double(tokens) / s.seconds << " tokens/s, " << std::setprecision(2) << double(bytes) / s.seconds / 1e6
            << " MB/s; peak RSS " << double(s.peak_rss_bytes) / (1 << 20) << " MiB\n";
  std::cout << "  manifest " << config.out_dir << "/manifest.json\n";
  for (const auto& w : s.warnings) std::cerr << "warning: " << w << "\n";
}

int run(int argc, char** argv) {
  cxxopts::Options options = make_options();
  auto args = parse_flags(options, argc, argv);
  if (args.count("help")) {
    std::cout << options.help() << "\n";
    return 0;
  }
  data::PrepareConfig config = config_from_flags(args, argc, argv);

  // SIGINT/SIGTERM: recorded (core/signal_cleanup.hpp); the readers and the tokenising workers
  // check it (FormatOptions::stop) and end the run through its failure path, which removes
  // .prepare.tmp and the directories the run created. A second Ctrl-C ends the process at once.
  config.format.stop = &stop_signal();
  install_stop_handlers();

  Tokenizer tokenizer = Tokenizer::load(config.tokenizer_dir);
  data::PrepareSummary s;
  try {
    s = data::prepare_dataset(config, tokenizer, std::cerr);
  } catch (const data::Interrupted& e) {
    print_error_line(format("prepare: {}: stopped; {} is as it was before the run", e.what(), config.out_dir));
    return 128 + stop_signal().load();
  }
  print_summary(config, tokenizer, s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return gpt2cc::run_cli("prepare", argc, argv, run, kMemoryHint); }
