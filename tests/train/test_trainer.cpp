// The trainer on a tiny model and generated shards: gradient accumulation equals one big batch,
// a run stopped half-way (by --stop-at-step or by SIGINT) and resumed is bit-identical to an
// uninterrupted one, non-finite steps are skipped (and too many in a row stop the run), and
// mismatches between checkpoint, data and flags are rejected with InputError; a step equals the
// model's own calls written out by hand, and run()'s evaluations, checkpoints kept and dropout.
#include <signal.h>

#include "common/catch.hpp"
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/grad_clip.hpp"
#include "core/signal_cleanup.hpp"
#include "core/trainer.hpp"
#include "train_fixtures.hpp"

using namespace gpt2cc;
namespace fs = std::filesystem;

namespace {

std::vector<nlohmann::json> read_metrics(const std::string& run_dir) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace

TEST_CASE("B=8 in one step equals B=4 with 2 accumulation steps", "[trainer]") {
  std::string dir = test::temp_dir("trainer_accum");
  test::write_tiny_shards(dir);
  auto backend = make_cpu_backend(1);

  TrainConfig big = test::tiny_train_config(dir, dir + "/big");
  big.shuffle = false;  // both read windows 0..7 for the first step, 8..15 for the second
  big.batch_size = 8;
  big.total_batch_tokens = 8 * 16;
  big.grad_clip = 0.5;  // exercised: the first steps' norms are above it
  TrainConfig small = big;
  small.batch_size = 4;
  small.run_dir = dir + "/small";

  Trainer a(big, *backend), b(small, *backend);
  REQUIRE(a.accumulation_steps() == 1);
  REQUIRE(b.accumulation_steps() == 2);
  for (int step = 0; step < 3; ++step) {
    StepResult ra = a.train_step(), rb = b.train_step();
    CHECK(rb.loss == Approx(ra.loss).epsilon(1e-6));
    CHECK(rb.grad_norm == Approx(ra.grad_norm).epsilon(1e-5));
    CHECK(ra.grad_norm > big.grad_clip);
    test::expect_close(b.model().parameters(), a.model().parameters(), 1e-6, 0.0,
                       "parameters after step " + std::to_string(step + 1));
  }
}

// The same in bf16 with --grad-dtype fp32: the two micro-steps' gradients add up unrounded, so
// the accumulated step is the big batch's to fp32's error (each row's activations are the same
// bits in a batch of 4 or 8 rows: both take the CPU's many-row product path).
TEST_CASE("bf16 with fp32 gradients: B=8 in one step equals B=4 with 2 accumulation steps", "[trainer][bf16]") {
  std::string dir = test::temp_dir("trainer_accum_bf16");
  test::write_tiny_shards(dir);
  auto backend = make_cpu_backend(1, DType::bf16);

  TrainConfig big = test::tiny_train_config(dir, dir + "/big");
  big.dtype = "bf16";
  big.grad_dtype = "fp32";
  big.shuffle = false;
  big.batch_size = 8;
  big.total_batch_tokens = 8 * 16;
  TrainConfig small = big;
  small.batch_size = 4;
  small.run_dir = dir + "/small";

  Trainer a(big, *backend), b(small, *backend);
  REQUIRE(b.accumulation_steps() == 2);
  CHECK(b.model().options().fp32_gradients);
  CHECK(b.model().memory().gradients == b.model().layout().total() * sizeof(float));
  for (int step = 0; step < 3; ++step) {
    StepResult ra = a.train_step(), rb = b.train_step();
    CHECK(rb.loss == Approx(ra.loss).epsilon(1e-6));
    CHECK(rb.grad_norm == Approx(ra.grad_norm).epsilon(1e-5));
    test::expect_close(b.model().parameters(), a.model().parameters(), 1e-6, 0.0,
                       "parameters after step " + std::to_string(step + 1));
  }
}

TEST_CASE("a Trainer step is the model's forward_backward, clipping, schedule and AdamW, by hand", "[trainer]") {
  // The same steps written out with the model's own calls: the dloss of the total batch, each
  // micro-batch's dropout seed, the clip scale, the learning rate of the step and AdamW's
  // 1-based step count (bias correction) must all be the ones the Trainer uses, bit for bit. Step
  // 3's gradient is poisoned: its update is skipped, and AdamW's count is of the updates applied.
  std::string dir = test::temp_dir("trainer_by_hand");
  test::write_tiny_shards(dir);
  auto backend = make_cpu_backend(1);
  TrainConfig c = test::tiny_train_config(dir, dir + "/run");
  c.shuffle = false;
  c.dropout = 0.1f;
  c.total_batch_tokens = 2 * 4 * 16;  // 2 micro-batches of 4 x 16
  c.grad_clip = 0.5;
  c.steps = 5;
  c.warmup_steps = 2;
  Trainer t(c, *backend);
  REQUIRE(t.accumulation_steps() == 2);
  // The model the run starts from: the flags' shape and dropout, weights from the run's seed.
  CHECK(t.model().config().dropout == c.dropout);
  {
    GPT2 seeded(t.model().config(), *backend, 4, 16);
    seeded.init_weights(c.seed);
    CHECK(test::same_bits(seeded.parameters(), t.model().parameters()));
    TrainConfig other = c;
    other.seed = c.seed + 1;
    other.run_dir = dir + "/other_seed";
    CHECK_FALSE(test::same_bits(Trainer(other, *backend).model().parameters(), t.model().parameters()));
  }
  const auto poison = [](uint64_t step, int micro) {
    return step == 2 && micro == 1 ? std::numeric_limits<float>::quiet_NaN() : 1.0f;
  };
  t.dloss_factor_hook = poison;

  GPT2 model(t.model().config(), *backend, 4, 16);
  model.set_parameters(t.model().parameters());
  DataLoader loader({dir + "/train.bin"}, 4, 16, LoaderOrder::sequential, c.seed, 0, false);
  LrSchedule schedule;
  schedule.max_lr = c.lr;
  schedule.min_lr = c.lr * c.min_lr_ratio;
  schedule.warmup_steps = c.warmup_steps;
  schedule.total_steps = c.steps;
  std::vector<int> x, y;
  bool clipped = false;
  int applied = 0;
  for (uint64_t step = 0; step < c.steps; ++step) {
    INFO("step " << step + 1);
    const StepResult r = t.train_step();
    model.zero_grad();
    double loss_sum = 0.0;
    for (int micro = 0; micro < 2; ++micro) {
      loader.next(x, y);
      const float loss = model.forward_backward(x.data(), y.data(), 4, 16, 1.0f / 128.0f * poison(step, micro),
                                                dropout_seed(c.seed, step * 2 + uint64_t(micro)));
      loss_sum += double(loss) * model.num_targets();
    }
    const double norm = model.grad_norm();
    CHECK(r.loss == loss_sum / 128.0);
    CHECK(r.lr == schedule.at(step));
    CHECK(r.skipped == (step == 2));
    if (r.skipped) {
      CHECK(std::isnan(r.grad_norm));
      continue;
    }
    AdamWParams hp;
    hp.lr = float(schedule.at(step));
    hp.beta1 = float(c.beta1);
    hp.beta2 = float(c.beta2);
    hp.eps = float(c.eps);
    hp.weight_decay = float(c.weight_decay);
    hp.step = ++applied;
    hp.grad_scale = clip_scale(norm, c.grad_clip);
    model.adamw_step(hp);
    clipped = clipped || hp.grad_scale < 1.0f;

    CHECK(r.grad_norm == norm);
    REQUIRE(test::same_bits(t.model().parameters(), model.parameters()));
  }
  CHECK(clipped);
}

// A shuffled run reads its windows in the order its seed gives the loader: each step's loss is
// that of the seeded loader's next batch under the weights before the step.
TEST_CASE("a shuffled run reads the windows in its seed's order", "[trainer]") {
  std::string dir = test::temp_dir("trainer_shuffled");
  test::write_tiny_shards(dir);
  auto backend = make_cpu_backend(1);
  TrainConfig c = test::tiny_train_config(dir, dir + "/run");
  c.shuffle = true;
  c.seed = 7;
  c.total_batch_tokens = 4 * 16;
  c.steps = 4;
  Trainer t(c, *backend);
  REQUIRE(t.accumulation_steps() == 1);
  GPT2 model(t.model().config(), *backend, 4, 16);
  DataLoader loader({dir + "/train.bin"}, 4, 16, LoaderOrder::shuffled, c.seed, 0, false);
  std::vector<int> x, y;
  for (uint64_t step = 0; step < c.steps; ++step) {
    INFO("step " << step + 1);
    model.set_parameters(t.model().parameters());
    loader.next(x, y);
    const float expected = model.forward(x.data(), y.data(), 4, 16);
    CHECK(t.train_step().loss == Approx(expected).epsilon(1e-6));
  }
  // The premise: another seed orders the windows otherwise.
  DataLoader same({dir + "/train.bin"}, 4, 16, LoaderOrder::shuffled, c.seed, 0, false),
      other({dir + "/train.bin"}, 4, 16, LoaderOrder::shuffled, c.seed + 1, 0, false);
  std::vector<int> x_other, y_other;
  same.next(x, y);
  other.next(x_other, y_other);
  CHECK(x != x_other);
}

TEST_CASE("every micro-batch of a run gets its own dropout seed", "[trainer]") {
  std::set<uint64_t> seeds;
  for (uint64_t run_seed : {0ull, 1ull, 1337ull})
    for (uint64_t micro = 0; micro < 1000; ++micro) seeds.insert(dropout_seed(run_seed, micro));
  CHECK(seeds.size() == 3000);
}

TEST_CASE("a run stopped half-way and resumed is bit-identical to an uninterrupted run", "[trainer]") {
  std::string dir = test::temp_dir("trainer_resume");
  test::write_tiny_shards(dir);
  auto backend = make_cpu_backend(1);
  TrainConfig base = test::tiny_train_config(dir, "");
  base.dropout = 0.1f;               // the masks must repeat too
  base.total_batch_tokens = 2 * 4 * 16;  // 2 accumulation steps
  base.steps = 6;
  base.eval_every = 2;

  TrainConfig full = base;
  full.run_dir = dir + "/full";
  Trainer(full, *backend).run();

  SECTION("stop at a step, then resume") {
    TrainConfig first = base;
    first.run_dir = dir + "/halves";
    first.stop_at_step = 3;
    CHECK(Trainer(first, *backend).run() == TrainStop::stop_at_step);
  }
  SECTION("stopped by SIGINT, then resume") {
    TrainConfig first = base;
    first.run_dir = dir + "/halves";
    install_stop_handlers();
    Trainer t(first, *backend);
    // The signal arrives during step 3: that step completes, then the run checkpoints and stops.
    t.dloss_factor_hook = [](uint64_t step, int micro) {
      if (step == 2 && micro == 1) ::raise(SIGINT);
      return 1.0f;
    };
    CHECK(t.run() == TrainStop::interrupted);
    request_stop(0);
    CHECK(t.step() == 3);
  }
  TrainConfig second = base;
  second.run_dir = dir + "/halves";
  second.resume = dir + "/halves";
  Trainer resumed(second, *backend);
  CHECK(resumed.step() == 3);
  CHECK(resumed.run() == TrainStop::finished);

  Checkpoint a = load_checkpoint(resolve_checkpoint(dir + "/full"));
  Checkpoint b = load_checkpoint(resolve_checkpoint(dir + "/halves"));
  CHECK(a.step == 6);
  CHECK(b.step == 6);
  CHECK(a.loader == b.loader);
  CHECK(a.tokens_seen == 6 * base.total_batch_tokens);  // every micro-batch of every step counted
  CHECK(b.tokens_seen == a.tokens_seen);                // and restored on resume
  CHECK(test::same_bits(a.params, b.params));
  CHECK(test::same_bits(a.m, b.m));
  CHECK(test::same_bits(a.v, b.v));

  // Every step's losses, bit for bit (JSON keeps doubles exactly); the resumed run's records
  // replace the ones the first half wrote after its checkpoint.
  auto ma = read_metrics(dir + "/full"), mb = read_metrics(dir + "/halves");
  REQUIRE(ma.size() == 6);
  REQUIRE(mb.size() == 6);
  for (size_t i = 0; i < 6; ++i) {
    INFO("step " << i + 1);
    CHECK(mb[i]["step"] == ma[i]["step"]);
    CHECK(ma[i]["tokens"].get<uint64_t>() == (i + 1) * base.total_batch_tokens);
    CHECK(mb[i]["tokens"] == ma[i]["tokens"]);
    CHECK(mb[i]["train_loss"].get<double>() == ma[i]["train_loss"].get<double>());
    CHECK(mb[i]["grad_norm"].get<double>() == ma[i]["grad_norm"].get<double>());
    CHECK(mb[i]["lr"].get<double>() == ma[i]["lr"].get<double>());
    CHECK(mb[i].contains("val_loss") == ma[i].contains("val_loss"));
    if (ma[i].contains("val_loss")) CHECK(mb[i]["val_loss"].get<double>() == ma[i]["val_loss"].get<double>());
  }
  CHECK(ma[5]["train_loss"].get<double>() < ma[0]["train_loss"].get<double>());  // it learned something
}

TEST_CASE("a run that skipped an update, stopped after it and resumed, repeats the uninterrupted run", "[trainer]") {
  // The checkpoint records the skip: the resumed run's AdamW step count (bias correction) goes on
  // from the updates applied, as the uninterrupted run's does.
  std::string dir = test::temp_dir("trainer_skip_resume");
  test::write_tiny_shards(dir);
  auto backend = make_cpu_backend(1);
  TrainConfig base = test::tiny_train_config(dir, "");
  base.steps = 5;
  const auto poison = [](uint64_t step, int) {
    return step == 1 ? std::numeric_limits<float>::quiet_NaN() : 1.0f;
  };
  TrainConfig full = base;
  full.run_dir = dir + "/full";
  Trainer uninterrupted(full, *backend);
  uninterrupted.dloss_factor_hook = poison;
  CHECK(uninterrupted.run() == TrainStop::finished);

  TrainConfig first = base;
  first.run_dir = dir + "/halves";
  first.stop_at_step = 3;
  Trainer stopped(first, *backend);
  stopped.dloss_factor_hook = poison;
  CHECK(stopped.run() == TrainStop::stop_at_step);
  CHECK(load_checkpoint(resolve_checkpoint(dir + "/halves")).skipped_steps == 1);
  TrainConfig second = base;
  second.run_dir = dir + "/halves";
  second.resume = dir + "/halves";
  CHECK(Trainer(second, *backend).run() == TrainStop::finished);

  Checkpoint a = load_checkpoint(resolve_checkpoint(dir + "/full"));
  Checkpoint b = load_checkpoint(resolve_checkpoint(dir + "/halves"));
  CHECK(a.step == 5);
  CHECK(a.skipped_steps == 1);
  CHECK(b.skipped_steps == 1);
  CHECK(test::same_bits(a.params, b.params));
  CHECK(test::same_bits(a.m, b.m));
  CHECK(test::same_bits(a.v, b.v));
}

TEST_CASE("a non-finite gradient skips the update; too many in a row stop the run", "[trainer]") {
  std::string dir = test::temp_dir("trainer_nan");
  test::write_tiny_shards(dir);
  auto backend = make_cpu_backend(1);
  TrainConfig c = test::tiny_train_config(dir, dir + "/run");
  c.max_bad_steps = 3;

  SECTION("one poisoned step") {
    Trainer t(c, *backend);
    t.dloss_factor_hook = [](uint64_t step, int) {
      return step == 1 ? std::numeric_limits<float>::quiet_NaN() : 1.0f;
    };
    StepResult first = t.train_step();
    CHECK_FALSE(first.skipped);
    std::vector<float> before = t.model().parameters();
    std::vector<float> m_before, v_before, m_after, v_after;
    t.model().optimizer_state(m_before, v_before);
    StepResult poisoned = t.train_step();
    CHECK(poisoned.skipped);
    CHECK_FALSE(std::isfinite(poisoned.grad_norm));
    CHECK(std::isfinite(poisoned.loss));  // the forward was fine: only the gradient is poisoned
    CHECK(test::same_bits(t.model().parameters(), before));
    t.model().optimizer_state(m_after, v_after);
    CHECK(test::same_bits(m_after, m_before));
    CHECK(test::same_bits(v_after, v_before));
    StepResult next = t.train_step();
    CHECK_FALSE(next.skipped);
    CHECK(std::isfinite(next.grad_norm));
    CHECK_FALSE(test::same_bits(t.model().parameters(), before));
  }
  SECTION("a good step between bad ones starts the count again") {
    c.max_bad_steps = 2;
    Trainer t(c, *backend);
    t.dloss_factor_hook = [](uint64_t step, int) {  // steps 1, 2, 4, 5, 7 and 8 are poisoned
      return step % 3 != 2 ? std::numeric_limits<float>::quiet_NaN() : 1.0f;
    };
    CHECK_THROWS_WITH(t.run(), Catch::Contains("2 consecutive steps") && Catch::Contains("at step 2"));
    Trainer alternating(c, *backend);
    alternating.dloss_factor_hook = [](uint64_t step, int) {  // every other step
      return step % 2 == 0 ? std::numeric_limits<float>::quiet_NaN() : 1.0f;
    };
    CHECK(alternating.run() == TrainStop::finished);
    auto records = read_metrics(dir + "/run");
    REQUIRE(records.size() == 8);
    for (size_t i = 0; i < records.size(); ++i) CHECK(records[i]["skipped"].get<bool>() == (i % 2 == 0));
  }
  SECTION("a run that diverges keeps, and names, its last checkpoint whose weights gave a finite loss") {
    // Steps 5, 6 and 7 fail. Step 4's checkpoint holds the weights step 5 failed with; step 3's gave
    // step 4 a finite loss: pruning (one kept) spares it, and the skipped steps write none.
    c.steps = 8;
    c.checkpoint_every = 1;
    c.keep_checkpoints = 1;
    Trainer t(c, *backend);
    t.dloss_factor_hook = [](uint64_t step, int) { return step >= 4 ? std::numeric_limits<float>::quiet_NaN() : 1.0f; };
    const fs::path folder = fs::path(c.run_dir) / "checkpoints";
    CHECK_THROWS_WITH(t.run(), Catch::Contains("3 consecutive steps") &&
                                   Catch::Contains("the last checkpoint whose weights gave a finite loss is " +
                                                   (folder / "step_00000003.ckpt").string() +
                                                   "; to continue from it, move the 1 newer one(s) out of " +
                                                   folder.string() + ", then run train --resume "));
    std::vector<std::string> kept;
    for (const fs::path& p : step_checkpoints(fs::path(c.run_dir) / "checkpoints")) kept.push_back(p.filename());
    CHECK(kept == std::vector<std::string>{"step_00000003.ckpt", "step_00000004.ckpt"});
  }
  SECTION("every step poisoned: the run stops with a message and the metrics record the skips") {
    Trainer t(c, *backend);
    t.dloss_factor_hook = [](uint64_t, int) { return std::numeric_limits<float>::infinity() * 0.0f; };
    CHECK_THROWS_WITH(t.run(), Catch::Contains("3 consecutive steps") && Catch::Contains("non-finite") &&
                                   Catch::Contains("no checkpoint was written up to step 0"));
    auto records = read_metrics(dir + "/run");
    REQUIRE(records.size() == 3);
    for (const auto& r : records) CHECK(r["skipped"].get<bool>());
    // No update was ever made, so no checkpoint was written.
    CHECK_THROWS_AS(resolve_checkpoint(dir + "/run"), InputError);
  }
}

TEST_CASE("run(): validation at every eval_every and at the end; the newest checkpoints kept", "[trainer]") {
  std::string dir = test::temp_dir("trainer_outputs");
  test::write_tiny_shards(dir);
  auto backend = make_cpu_backend(1);
  TrainConfig c = test::tiny_train_config(dir, dir + "/run");
  c.steps = 5;
  c.warmup_steps = 1;
  c.eval_every = 2;  // does not divide the run: steps 2, 4 and the last, 5
  c.checkpoint_every = 1;
  c.keep_checkpoints = 2;
  CHECK(Trainer(c, *backend).run() == TrainStop::finished);
  auto records = read_metrics(c.run_dir);
  REQUIRE(records.size() == 5);
  for (size_t i = 0; i < 5; ++i) {
    INFO("step " << i + 1);
    CHECK(records[i].contains("val_loss") == (i == 1 || i == 3 || i == 4));
  }
  std::vector<std::string> kept;
  for (const fs::path& p : step_checkpoints(fs::path(c.run_dir) / "checkpoints")) kept.push_back(p.filename());
  CHECK(kept == std::vector<std::string>{"step_00000004.ckpt", "step_00000005.ckpt"});
}

TEST_CASE("a run records its tokenizer directory as an absolute path", "[trainer]") {
  // generate and --export-hf read it back from wherever they run: a path relative to the training
  // run's working directory would name nothing there.
  std::string dir = test::temp_dir("trainer_tokenizer_path");
  test::write_tiny_shards(dir);
  auto backend = make_cpu_backend(1);
  TrainConfig c = test::tiny_train_config(dir, dir + "/run");
  c.steps = 1;
  c.eval_every = 1;
  c.warmup_steps = 0;
  c.tokenizer_dir = "some/../tok";
  CHECK(Trainer(c, *backend).run() == TrainStop::finished);
  const Checkpoint saved = load_checkpoint(c.run_dir + "/checkpoints/step_00000001.ckpt");
  CHECK(saved.tokenizer_dir == (fs::current_path() / "tok").string());
}

TEST_CASE("fine-tuning takes --dropout from the flags; a resumed run keeps the checkpoint's", "[trainer]") {
  std::string dir = test::temp_dir("trainer_dropout");
  test::write_tiny_shards(dir);
  auto backend = make_cpu_backend(1);
  TrainConfig c = test::tiny_train_config(dir, dir + "/base");
  c.steps = 2;
  c.warmup_steps = 1;
  c.eval_every = 0;
  c.dropout = 0.0f;
  c.stop_at_step = 1;
  Trainer(c, *backend).run();

  TrainConfig tune = c;
  tune.run_dir = dir + "/tune";
  tune.stop_at_step = 0;
  tune.init_from = resolve_checkpoint(c.run_dir);
  tune.dropout = 0.2f;
  CHECK(Trainer(tune, *backend).model().config().dropout == 0.2f);

  TrainConfig resume = c;
  resume.stop_at_step = 0;
  resume.resume = c.run_dir;
  resume.dropout = 0.2f;  // the run continues as it was trained
  CHECK(Trainer(resume, *backend).model().config().dropout == 0.0f);
}

TEST_CASE("mismatches between checkpoint, data, run directory and flags are input errors", "[trainer]") {
  std::string dir = test::temp_dir("trainer_mismatch");
  test::write_tiny_shards(dir);
  auto backend = make_cpu_backend(1);
  TrainConfig c = test::tiny_train_config(dir, dir + "/run");
  c.steps = 2;
  c.warmup_steps = 0;
  c.eval_every = 2;
  Trainer(c, *backend).run();
  const std::string ckpt = resolve_checkpoint(dir + "/run");

  SECTION("a new run into a directory holding another run's checkpoints") {
    CHECK_THROWS_WITH(Trainer(c, *backend),
                      Catch::Contains("already holds checkpoints") && Catch::Contains("--resume"));
  }
  SECTION("data tokenized with another tokenizer than the checkpoint's") {
    fs::create_directories(dir + "/other");
    test::write_tiny_shards(dir + "/other", 4096, 0x9999);
    TrainConfig f = c;
    f.run_dir = dir + "/finetune";
    f.init_from = ckpt;
    f.train_data = dir + "/other/train.bin";
    f.val_data = "";
    f.layers = f.heads = f.channels = f.max_seq_len = 0;
    CHECK_THROWS_WITH(Trainer(f, *backend), Catch::Contains("fingerprint") && Catch::Contains("other/train.bin"));
  }
  SECTION("data with another vocabulary size than the checkpoint's model") {
    fs::create_directories(dir + "/v100");
    test::write_tiny_shards(dir + "/v100", 4096, test::kTinyFingerprint, 100);
    TrainConfig f = c;
    f.run_dir = dir + "/finetune";
    f.init_from = ckpt;
    f.train_data = dir + "/v100/train.bin";
    f.val_data = "";
    f.layers = f.heads = f.channels = f.max_seq_len = 0;
    CHECK_THROWS_WITH(Trainer(f, *backend), Catch::Contains("vocabulary of 64") && Catch::Contains("100"));
  }
  SECTION("shape flags together with a checkpoint") {
    TrainConfig f = c;
    f.run_dir = dir + "/finetune";
    f.init_from = ckpt;
    f.layers = 3;
    CHECK_THROWS_WITH(Trainer(f, *backend), Catch::Contains("comes from the checkpoint") &&
                                                Catch::Contains("--layers 3 differs from its 2"));
    f.layers = 2;  // repeating the checkpoint's shape is fine
    CHECK_NOTHROW(Trainer(f, *backend));
  }
  SECTION("fine-tuning from the checkpoint starts at step 0 with its weights") {
    TrainConfig f = c;
    f.run_dir = dir + "/finetune";
    f.init_from = ckpt;
    f.layers = f.heads = f.channels = f.max_seq_len = 0;
    Trainer t(f, *backend);
    CHECK(t.step() == 0);
    CHECK(t.model().parameters() == load_checkpoint(ckpt, false).params);
  }
  SECTION("resuming a run that is already complete") {
    TrainConfig r = c;
    r.resume = dir + "/run";
    CHECK_THROWS_WITH(Trainer(r, *backend), Catch::Contains("already the end"));
    // Said first, before an interval now longer than the run.
    r.eval_every = 7;
    CHECK_THROWS_WITH(Trainer(r, *backend), Catch::Contains("already the end"));
  }
  SECTION("intervals longer than the run, sequences longer than the model") {
    TrainConfig f = c;
    f.run_dir = dir + "/other_run";
    f.eval_every = 3;
    CHECK_THROWS_WITH(Trainer(f, *backend), Catch::Contains("--eval-every 3") && Catch::Contains("2 steps"));
    // The default interval no flag gave is no error in a shorter run (the CLI says so with
    // eval_every_given); the same value given is.
    f.eval_every = TrainConfig{}.eval_every;
    CHECK_THROWS_WITH(Trainer(f, *backend), Catch::Contains("--eval-every 100"));
    f.eval_every_given = false;
    CHECK_NOTHROW(Trainer(f, *backend));
    f.eval_every_given = true;
    fs::remove_all(f.run_dir);
    f.eval_every = 1;
    f.checkpoint_every = 5;
    CHECK_THROWS_WITH(Trainer(f, *backend), Catch::Contains("--checkpoint-every 5"));
    f.checkpoint_every = 0;
    f.seq_len = 64;
    CHECK_THROWS_WITH(Trainer(f, *backend), Catch::Contains("--seq-len 64") && Catch::Contains("32"));
  }
  SECTION("missing data") {
    TrainConfig f = c;
    f.run_dir = dir + "/other_run";
    f.train_data = dir + "/nothing_here.bin";
    CHECK_THROWS_AS(Trainer(f, *backend), InputError);
    CHECK_THROWS_WITH(Trainer(f, *backend), Catch::Contains("nothing_here.bin"));
  }
}

TEST_CASE("run length from steps, epochs or tokens; validation over fixed batches or the whole split", "[trainer]") {
  std::string dir = test::temp_dir("trainer_length");
  test::write_tiny_shards(dir);  // 4096 tokens: (4096 - 1) / 16 = 255 windows of T+1 = 17 tokens
  auto backend = make_cpu_backend(1);
  TrainConfig c = test::tiny_train_config(dir, dir + "/run");
  c.total_batch_tokens = 2 * 4 * 16;  // 128 tokens per step
  c.steps = 0;
  c.warmup_steps = 0;
  c.eval_every = 0;

  c.epochs = 1;  // 255 * 16 = 4080 tokens -> ceil(4080 / 128) = 32 steps
  CHECK(Trainer(c, *backend).total_steps() == 32);
  c.epochs = 0.5;  // 2040 tokens -> 16 steps (15.9 rounded up)
  CHECK(Trainer(c, *backend).total_steps() == 16);
  c.epochs = 0;
  c.tokens = 1000;  // ceil(1000 / 128) = 8
  CHECK(Trainer(c, *backend).total_steps() == 8);

  c.eval_batches = 0;  // the whole split: every token after the first, once
  Trainer whole(c, *backend);
  EvalResult all = whole.evaluate();
  CHECK(all.tokens == 4095);
  CHECK(std::isfinite(all.loss));
  // The mean over the scored tokens, from the per-token losses (the last batch is partial).
  double sum = 0.0;
  uint64_t count = 0;
  EvalIterator windows({c.val_data}, 4, 16, 16);
  std::vector<int> x, y;
  while (windows.next(x, y) > 0) {
    whole.model().forward(x.data(), y.data(), 4, 16);
    const std::vector<float> losses = whole.model().losses();
    for (size_t i = 0; i < y.size(); ++i) {
      if (y[i] == -1) continue;
      sum += losses[i];
      ++count;
    }
  }
  CHECK(count == 4095);
  CHECK(all.loss == Approx(sum / double(count)).epsilon(1e-6));
  c.eval_batches = 3;  // 3 batches of 4 x 16 targets, the same ones every call
  Trainer fixed(c, *backend);
  EvalResult a = fixed.evaluate();
  // They are the split's first 3 batches, in order (each holds 4 x 16 targets: the mean of the
  // batches' means is the mean over the targets).
  DataLoader in_order({c.val_data}, 4, 16, LoaderOrder::sequential, 0, 0, false);
  double first_three = 0.0;
  for (int batch = 0; batch < 3; ++batch) {
    in_order.next(x, y);
    first_three += fixed.model().forward(x.data(), y.data(), 4, 16);
  }
  CHECK(a.loss == Approx(first_three / 3.0).epsilon(1e-6));
  fixed.train_step();
  EvalResult b = fixed.evaluate();
  CHECK(a.tokens == 3 * 4 * 16);
  CHECK(b.tokens == a.tokens);
  CHECK(b.loss != a.loss);  // same batches, updated model
  c.eval_batches = 1000;  // more than the split holds: capped at 255 / 4 = 63 batches, and said
  Trainer capped(c, *backend);
  CHECK(capped.evaluate().tokens == 63 * 4 * 16);
  CHECK_THAT(capped.summary(), Catch::Contains("validation: 63 batches (all the split holds of the 1000 "
                                               "--eval-batches asked)"));
  // eval_every 0 (this run's): at the end only.
  CHECK_THAT(fixed.summary(), Catch::Contains("validation: 3 batches at the end only\n") && !Catch::Contains("asked"));
  c.eval_batches = 3;
  c.eval_every = 4;
  CHECK_THAT(Trainer(c, *backend).summary(), Catch::Contains("validation: 3 batches every 4 steps and at the end\n"));
  // The plan's memory line: what the model holds (GPT2::memory), by what it is for.
  const ModelMemory m = fixed.model().memory();
  CHECK(m.total() > 0);
  CHECK(m.optimizer == 2 * m.parameters);  // fp32: the master is the parameters, m and v as large
  CHECK_THAT(fixed.summary(),
             Catch::Contains(format("memory: {} held by the model: parameters {}, gradients {} (fp32), AdamW "
                                    "moments {}, activations {} (logits {}), backward scratch {}\n",
                                    human_bytes(double(m.total())), human_bytes(double(m.parameters)),
                                    human_bytes(double(m.gradients)), human_bytes(double(m.optimizer)),
                                    human_bytes(double(m.activations)), human_bytes(double(m.logits)),
                                    human_bytes(double(m.scratch)))));
  // --classifier-rows: the model's logits hold that many rows of the 4 x 16 (all of them by
  // default), for the same evaluation (each row's bits do not depend on its chunk here).
  CHECK(m.logits == size_t(4) * 16 * fixed.model().config().padded_vocab_size * sizeof(float));
  c.eval_batches = 3;
  c.classifier_rows = 24;
  Trainer chunked(c, *backend);
  CHECK(chunked.model().options().classifier_rows == 24);
  CHECK(chunked.model().memory().logits == size_t(24) * fixed.model().config().padded_vocab_size * sizeof(float));
  const EvalResult in_chunks = chunked.evaluate();
  CHECK(in_chunks.tokens == a.tokens);
  CHECK(in_chunks.loss == a.loss);
  // 0: all the rows at once, whatever B*T: chunks of 32 hold 32 of the 64 rows, 0 all 64 (as the
  // default 8192 does here), for the same loss.
  c.classifier_rows = 32;
  Trainer halves(c, *backend);
  CHECK(halves.model().memory().logits == size_t(32) * fixed.model().config().padded_vocab_size * sizeof(float));
  c.classifier_rows = 0;
  Trainer all_rows(c, *backend);
  CHECK(all_rows.model().memory().logits == m.logits);
  CHECK(all_rows.evaluate().loss == a.loss);
}
