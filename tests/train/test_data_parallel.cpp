// Data-parallel training on the CPU backend over MPI (core/distributed.hpp), run by ctest under
// mpiexec with 2 and with 3 ranks (3: blocks of unequal use, one rank's block partly padding).
// Every rank runs every case in the same order (the collectives must match). A failed check on
// one rank would leave the others waiting in their next collective: the rank prints it and ends
// the job at once (FailFast below).
//   - the process group's host collectives and the MPI collectives on backend memory, against
//     values each rank can compute for every rank; each rank's GPU and CPU threads;
//   - a model step with R ranks (ZeRO stage 1 and stage 0) against one process accumulating all
//     R micro-batches: gradient norm, parameters and AdamW moments after three steps;
//   - a sharded model's checkpoint gathered on rank 0 a piece at a time, against its values;
//   - the Trainer with R ranks against one process with R-fold accumulation, a data-parallel run
//     stopped and resumed against an uninterrupted one (bit for bit), and its checkpoint resumed
//     in one process.
#define CATCH_CONFIG_RUNNER
#include "common/catch.hpp"
#include <mpi.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/test_common.hpp"
#include "core/bf16.hpp"
#include "core/cli.hpp"
#include "core/distributed.hpp"
#include "core/model.hpp"
#include "core/model_checkpoint.hpp"
#include "core/grad_clip.hpp"
#include "core/trainer.hpp"
#include "train_fixtures.hpp"

using namespace gpt2cc;
namespace fs = std::filesystem;

namespace {

ProcessGroup* g_group = nullptr;

ProcessGroup& group() { return *g_group; }

// A failed assertion is printed with its rank, and ends every rank (exit code 1).
struct FailFast : Catch::TestEventListenerBase {
  using Catch::TestEventListenerBase::TestEventListenerBase;
#if GPT2CC_CATCH2_MAJOR >= 3
  void assertionEnded(const Catch::AssertionStats& stats) override { report_failure(stats); }
#else
  bool assertionEnded(const Catch::AssertionStats& stats) override {
    report_failure(stats);
    return true;  // Catch2 v2: the messages buffered for this assertion may be cleared
  }
#endif

  static void report_failure(const Catch::AssertionStats& stats) {
    const Catch::AssertionResult& result = stats.assertionResult;
    if (result.isOk()) return;
    std::string text = "test_data_parallel (rank " + std::to_string(group().rank()) + " of " +
                       std::to_string(group().size()) + "): FAILED at " + result.getSourceInfo().file + ":" +
                       std::to_string(result.getSourceInfo().line) + ": " + result.getExpressionInMacro() + " with " +
                       result.getExpandedExpression();
    for (const Catch::MessageInfo& info : stats.infoMessages) text += "\n  " + info.message;
    if (result.hasMessage()) text += "\n  " + result.getMessage();
    std::fprintf(stderr, "%s\n", text.c_str());
    std::fflush(stderr);
    group().abort(1);
  }
};
CATCH_REGISTER_LISTENER(FailFast)

// A directory every rank names the same: rank 0 empties it, the others wait for that.
std::string shared_temp_dir(const std::string& name) {
  group().barrier();  // no rank still reads what an earlier case left there
  std::string path;
  if (group().is_root()) path = test::temp_dir(name);
  size_t length = path.size();
  group().broadcast(&length, sizeof length);
  path.resize(length);
  group().broadcast(path.data(), length);
  return path;
}

std::vector<nlohmann::json> read_metrics(const std::string& run_dir) {
  std::vector<nlohmann::json> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

ModelConfig tiny_model() {
  ModelConfig c = model_preset("d2");
  c.num_layers = 2;
  c.num_heads = 2;
  c.channels = 24;  // N is then no multiple of 64 * ranks: the last block has padding
  c.max_seq_len = 16;
  c.vocab_size = 61;
  c.padded_vocab_size = 64;
  return c;
}

}  // namespace

TEST_CASE("process group: host collectives", "[distributed]") {
  const int R = group().size(), me = group().rank();
  REQUIRE(R >= 2);
  REQUIRE(group().uses_mpi());
  // MPI returns its errors to gpt2cc (a rank's message and exit 1), not to its own abort (MPICH
  // exited 15 with its error stack when a collective could not allocate its scratch).
  MPI_Errhandler handler;
  REQUIRE(MPI_Comm_get_errhandler(MPI_COMM_WORLD, &handler) == MPI_SUCCESS);
  CHECK(handler == MPI_ERRORS_RETURN);
  MPI_Errhandler_free(&handler);

  std::vector<double> values = {double(me + 1), 0.5 * me, -1.0};
  group().all_reduce_sum(values);
  CHECK(values[0] == double(R * (R + 1) / 2));
  CHECK(values[1] == 0.5 * double(R * (R - 1) / 2));
  CHECK(values[2] == -double(R));

  CHECK(group().any(me == R - 1));
  CHECK_FALSE(group().any(false));

  uint64_t word = me == 0 ? 0xC0FFEEull : 0;
  group().broadcast(&word, sizeof word);
  CHECK(word == 0xC0FFEEull);

  // Rank r's part holds r*1000 + i; the root receives all parts in rank order.
  const size_t part = 5;
  std::vector<float> mine(part), full(group().is_root() ? part * size_t(R) : 0);
  for (size_t i = 0; i < part; ++i) mine[i] = float(me * 1000 + int(i));
  group().gather(full.data(), mine);
  if (group().is_root()) {
    for (int r = 0; r < R; ++r)
      for (size_t i = 0; i < part; ++i) CHECK(full[size_t(r) * part + i] == float(r * 1000 + int(i)));
  }

  // Parts of different sizes, rank 1's empty: rank r sends r == 1 ? 0 : r + 2 floats, and the
  // root receives them end to end in rank order, nothing written past their sum.
  std::vector<size_t> counts(static_cast<size_t>(R));
  for (int r = 0; r < R; ++r) counts[size_t(r)] = r == 1 ? 0 : size_t(r) + 2;
  std::vector<float> own(counts[size_t(me)]);
  for (size_t i = 0; i < own.size(); ++i) own[i] = float(me * 1000 + int(i));
  const size_t total = std::accumulate(counts.begin(), counts.end(), size_t(0));
  std::vector<float> ends(group().is_root() ? total + 1 : 0, -7.0f);
  group().gather_parts(ends.data(), own, counts);
  if (group().is_root()) {
    size_t at = 0;
    for (int r = 0; r < R; ++r)
      for (size_t i = 0; i < counts[size_t(r)]; ++i) CHECK(ends[at++] == float(r * 1000 + int(i)));
    CHECK(at == total);
    CHECK(ends[total] == -7.0f);
  }
}

// Strings of different lengths (one empty) gather in rank order on the root; the ranks agree on
// a step that failed on some of them: each throws AgreedFailure with the first failed rank's code,
// only the root carries lines, and a step that failed nowhere passes on every rank.
TEST_CASE("process group: gathered strings, and agreeing on a failure", "[distributed]") {
  const int R = group().size(), me = group().rank();
  const std::vector<std::string> all = group().gather_strings(std::string(size_t(me), char('a' + me)));
  if (group().is_root()) {
    REQUIRE(all.size() == size_t(R));
    for (int r = 0; r < R; ++r) CHECK(all[size_t(r)] == std::string(size_t(r), char('a' + r)));
  } else {
    CHECK(all.empty());
  }

  int ran = 0;
  agree_on_failure(group(), "test", 0, nullptr, nullptr, [&] { ++ran; });
  CHECK(ran == 1);

  // Ranks 1.. fail: the last one with an internal error (code 1), the others with bad input (2).
  auto step = [&] {
    if (me == R - 1) throw Error("disk on fire");
    if (me > 0) throw InputError(format("no shards at data/{}", me > 1 ? "x" : "y"));
  };
  bool threw = false;
  try {
    agree_on_failure(group(), "test", 0, nullptr, nullptr, step);
  } catch (const AgreedFailure& f) {
    threw = true;
    CHECK(f.code == (R == 2 ? 1 : 2));  // rank 1's: the first that failed
    if (group().is_root()) {
      std::vector<std::string> expected = {format("test (rank {} of {}): {}", 1, R, R == 2 ? "error: disk on fire"
                                                                                            : "no shards at data/y")};
      if (R > 2) expected.push_back(format("test (rank {} of {}): error: disk on fire", R - 1, R));
      CHECK(f.lines == expected);
    } else {
      CHECK(f.lines.empty());
    }
  }
  CHECK(threw);
}

TEST_CASE("where a rank runs: its GPU and its CPU threads", "[distributed]") {
  const int R = group().size(), local = group().local_rank();
  REQUIRE(group().local_size() == R);  // one machine
  CHECK(local == group().rank());
  CHECK(cuda_device_of_rank(group(), 0) == 0);  // no GPU: the backend says so later
  CHECK(cuda_device_of_rank(group(), 1) == 0);  // one visible GPU per rank (CUDA_VISIBLE_DEVICES)
  CHECK(cuda_device_of_rank(group(), R) == local);
  if (local < 2) {
    CHECK(cuda_device_of_rank(group(), 2) == local);
  } else {
    CHECK_THROWS_WITH(cuda_device_of_rank(group(), 2),
                      Catch::Contains("which shows it 2 CUDA device(s): start at most 2 ranks per machine"));
  }
  CHECK(cpu_threads_of_rank(group(), 3) == 3);
  test::ScopedEnv omp("OMP_NUM_THREADS", std::nullopt);
  CHECK(cpu_threads_of_rank(group(), 0) == std::max(1, int(std::thread::hardware_concurrency()) / R));
  // Set, OMP_NUM_THREADS is each rank's: 0 leaves it to the backend, which reads and checks it.
  omp.set("3");
  CHECK(cpu_threads_of_rank(group(), 0) == 0);
  CHECK(cpu_threads_of_rank(group(), 2) == 2);
  omp.set("");
  CHECK(cpu_threads_of_rank(group(), 0) == std::max(1, int(std::thread::hardware_concurrency()) / R));
}

TEST_CASE("MPI collectives on the cpu backend's memory", "[distributed]") {
  const int R = group().size(), me = group().rank();
  auto backend = make_cpu_backend(1);
  auto dp = make_device_collectives(group(), *backend);
  REQUIRE(&dp->group() == &group());

  // Values every rank can compute for every rank: x(r, i) = r + i / 8 (exact in fp32).
  auto x = [](int r, size_t i) { return float(r) + float(i % 97) / 8.0f; };
  const size_t block = 37, n = block * size_t(R);
  DeviceArray<float> buf(*backend, n);
  for (size_t i = 0; i < n; ++i) buf.data()[i] = x(me, i);

  SECTION("all_reduce_sum") {
    dp->all_reduce_sum(buf.data(), n - 3);  // a length that is no multiple of anything
    for (size_t i = 0; i < n; ++i) {
      float expected = 0;
      for (int r = 0; r < R; ++r) expected += x(r, i);
      if (i >= n - 3) expected = x(me, i);  // past the length: untouched
      CHECK(buf.data()[i] == expected);
    }
  }
  SECTION("reduce_scatter_sum: this rank's block holds the sum") {
    dp->reduce_scatter_sum(buf.data(), block);
    for (size_t i = size_t(me) * block; i < size_t(me + 1) * block; ++i) {
      float expected = 0;
      for (int r = 0; r < R; ++r) expected += x(r, i);
      CHECK(buf.data()[i] == expected);
    }
  }
  SECTION("all_gather: block r from rank r") {
    dp->all_gather(buf.data(), block);
    for (size_t i = 0; i < n; ++i) CHECK(buf.data()[i] == x(int(i / block), i));
  }
}

// bf16 buffers (the bf16 backend's gradients and parameters): sums in fp32, each rounded once; a
// gather moves bits. The values are exact in bf16 and so are their sums' widened forms before
// rounding, so the expected results are exact. The bf16 path reduces 4M elements at a time: one
// block is longer than that.
TEST_CASE("MPI collectives on the cpu bf16 backend's memory", "[distributed]") {
  const int R = group().size(), me = group().rank();
  auto backend = make_cpu_backend(1, DType::bf16);
  auto dp = make_device_collectives(group(), *backend);
  auto x = [](int r, size_t i) { return float(r) + float(i % 13) / 4.0f + 0.0078125f * float(i % 3); };
  const size_t block = (size_t(1) << 22) + 5, n = block * size_t(R);
  std::vector<uint16_t> buf(n);
  for (size_t i = 0; i < n; ++i) buf[i] = round_to_bf16(x(me, i));
  auto sum = [&](size_t i) {
    float s = 0.0f;
    for (int r = 0; r < R; ++r) s += widen_bf16(round_to_bf16(x(r, i)));
    return round_to_bf16(s);
  };
  const TensorPtr t{buf.data(), DType::bf16};
  size_t wrong = 0;
  SECTION("all_reduce_sum") {
    dp->all_reduce_sum(t, n - 3);
    for (size_t i = 0; i < n; ++i) wrong += buf[i] != (i >= n - 3 ? round_to_bf16(x(me, i)) : sum(i));
  }
  SECTION("reduce_scatter_sum: this rank's block holds the sum") {
    dp->reduce_scatter_sum(t, block);
    for (size_t i = size_t(me) * block; i < size_t(me + 1) * block; ++i) wrong += buf[i] != sum(i);
  }
  SECTION("all_gather: block r from rank r, bit for bit") {
    dp->all_gather(t, block);
    for (size_t i = 0; i < n; ++i) wrong += buf[i] != round_to_bf16(x(int(i / block), i));
  }
  CHECK(wrong == 0);
}

TEST_CASE("a data-parallel step equals one process accumulating every rank's micro-batch", "[distributed]") {
  const int R = group().size(), me = group().rank();
  const ModelConfig config = tiny_model();
  const int B = 3, T = 7;  // odd shapes
  // fp32, or bf16 with fp32 gradients (summed over the ranks in fp32, as one process accumulates
  // them): the same sums to fp32's error either way.
  const DType dtype = GENERATE(DType::fp32, DType::bf16);
  auto backend = make_cpu_backend(1, dtype);
  auto dp = make_device_collectives(group(), *backend);
  const bool shard = GENERATE(true, false);
  INFO(dtype_name(dtype) << ", ZeRO stage " << (shard ? 1 : 0) << ", " << R << " ranks");

  ModelOptions options, alone_options;
  options.data_parallel = dp.get();
  options.shard_optimizer = shard;
  options.fp32_gradients = alone_options.fp32_gradients = dtype == DType::bf16;
  GPT2 ranked(config, *backend, B, T, ModelMode::training, options);
  // every rank also runs the one-process reference
  GPT2 alone(config, *backend, B, T, ModelMode::training, alone_options);
  ranked.init_weights(7);
  alone.init_weights(7);

  const size_t N = ranked.layout().total();
  const auto [first, last] = ranked.optimizer_part();
  if (shard) {
    CHECK(last - first <= (N + size_t(R) - 1) / size_t(R) + 64);
    CHECK(last - first < N);
  } else {
    CHECK((first == 0 && last == N));
  }

  for (int step = 1; step <= 3; ++step) {
    // Micro-batch k of this step, the same on every rank; rank r runs k = r.
    std::vector<std::vector<int>> inputs(static_cast<size_t>(R)), targets(static_cast<size_t>(R));
    size_t total_targets = 0;
    for (int k = 0; k < R; ++k) {
      inputs[size_t(k)] = test::random_tokens(size_t(B * T), uint64_t(100 * step + k), config.vocab_size);
      targets[size_t(k)] = test::random_tokens(size_t(B * T), uint64_t(500 * step + k), config.vocab_size);
      targets[size_t(k)][size_t(k)] = -1;  // one ignored target in each, at a different place
      total_targets += size_t(B * T - 1);
    }
    const float dloss = 1.0f / float(total_targets);

    ranked.zero_grad();
    ranked.forward_backward(inputs[size_t(me)].data(), targets[size_t(me)].data(), B, T, dloss);
    ranked.reduce_gradients();
    alone.zero_grad();
    for (int k = 0; k < R; ++k)
      alone.forward_backward(inputs[size_t(k)].data(), targets[size_t(k)].data(), B, T, dloss);

    const double norm_ranked = ranked.grad_norm(), norm_alone = alone.grad_norm();
    CHECK(norm_ranked == Approx(norm_alone).epsilon(1e-6));
    // The summed gradients of this rank's part.
    const std::vector<float> g_ranked = ranked.gradients(), g_alone = alone.gradients();
    test::expect_close(g_ranked.data() + first, g_alone.data() + first, last - first, 1e-7, 1e-5,
                       "summed gradients of this rank's part");

    AdamWParams hp;
    hp.lr = 1e-2f;
    hp.weight_decay = 0.1f;
    hp.step = step;
    hp.grad_scale = clip_scale(norm_alone, 0.5);
    ranked.adamw_step(hp);
    alone.adamw_step(hp);
    // (Where a gradient is near eps, AdamW turns its rounding into up to ~1e-3 of lr.) In bf16
    // under ZeRO-1 a rank keeps its block of the master: gathered on rank 0, every rank calling.
    const std::vector<float> params = ranked.parameters();
    if (!ranked.master_sharded() || group().is_root())
      test::expect_close(params, alone.parameters(), 2e-5, 1e-4, "parameters after the step");
  }

  // The parameters are the same on every rank, bit for bit: each part comes from its owner.
  if (!ranked.master_sharded()) {
    std::vector<float> params = ranked.parameters(), root_params = params;
    group().broadcast(root_params.data(), root_params.size() * sizeof(float));
    CHECK(test::same_bits(params, root_params));
  }

  // The moments: whole on rank 0 (gathered) and equal to the reference's; empty elsewhere under ZeRO-1.
  std::vector<float> m, v, m_alone, v_alone;
  ranked.optimizer_state(m, v);
  alone.optimizer_state(m_alone, v_alone);
  if (group().is_root() || !shard) {
    REQUIRE(m.size() == N);
    test::expect_close(m, m_alone, 1e-7, 1e-4, "AdamW m");
    test::expect_close(v, v_alone, 1e-9, 1e-4, "AdamW v");
  } else {
    CHECK((m.empty() && v.empty()));
  }

  // set_optimizer_state takes the whole moments on every rank; each keeps its part.
  GPT2 restored(config, *backend, B, T, ModelMode::training, options);
  restored.set_optimizer_state(m_alone, v_alone);
  std::vector<float> m2, v2;
  restored.optimizer_state(m2, v2);
  if (group().is_root() || !shard) CHECK((test::same_bits(m2, m_alone) && test::same_bits(v2, v_alone)));
}

TEST_CASE("a sharded model's checkpoint is gathered on rank 0 a piece at a time, bit for bit", "[distributed]") {
  // d2 with GPT-2's vocabulary: 6.9M parameters, two pieces of each array, and the ranks' blocks
  // end inside them. In bf16 the master is sharded too (ZeRO-1); fp32's parameters are whole on
  // every rank and read locally. Values include -0.0, which a sum-based gather would lose.
  const int R = group().size();
  const ModelConfig config = model_preset("d2");
  const DType dtype = GENERATE(DType::fp32, DType::bf16);
  INFO(dtype_name(dtype) << ", " << R << " ranks");
  auto backend = make_cpu_backend(1, dtype);
  auto dp = make_device_collectives(group(), *backend);
  ModelOptions options;
  options.data_parallel = dp.get();
  options.shard_optimizer = true;
  GPT2 model(config, *backend, 1, 8, ModelMode::training, options);
  REQUIRE(model.optimizer_sharded());
  REQUIRE(model.master_sharded() == (dtype == DType::bf16));
  const size_t N = model.layout().total();
  REQUIRE(N > kCheckpointPiece);
  std::vector<float> params = test::random_vector(N, 41), m = test::random_vector(N, 42),
                     v = test::random_vector(N, 43, 0.0f, 1.0f);
  for (size_t i = 0; i < N; i += 997) params[i] = m[i] = -0.0f;
  model.set_parameters(params);
  model.set_optimizer_state(m, v);
  const std::string path = shared_temp_dir("data_parallel_sharded_save_" + std::to_string(R)) + "/step.ckpt";
  CheckpointInfo info;
  info.config = config;
  info.step = 9;
  save_model_checkpoint(path, info, model, group().is_root());
  group().barrier();
  if (group().is_root()) {
    const Checkpoint back = load_checkpoint(path);
    CHECK(back.step == 9);
    CHECK(test::same_bits(back.params, params));
    CHECK(test::same_bits(back.m, m));
    CHECK(test::same_bits(back.v, v));
  }
}

TEST_CASE("Trainer: R ranks equal one process with R-fold accumulation, and resume exactly", "[distributed]") {
  const int R = group().size();
  // (ctest runs the 2- and 3-rank jobs at once: each its own directory)
  const std::string dir = shared_temp_dir("data_parallel_trainer_" + std::to_string(R));
  if (group().is_root()) test::write_tiny_shards(dir);
  group().barrier();
  auto backend = make_cpu_backend(1);
  auto dp = make_device_collectives(group(), *backend);

  TrainConfig c = test::tiny_train_config(dir, dir + "/ranked");
  c.total_batch_tokens = uint64_t(2 * R * c.batch_size * c.seq_len);  // 2 micro-batches per rank
  c.steps = 6;
  c.eval_every = 3;
  c.dropout = 0.1f;  // the masks follow the micro-batch, not the rank
  c.grad_clip = 0.5;
  const int zero_stage = GENERATE(1, 0);
  c.zero_stage = zero_stage;
  INFO("ZeRO stage " << zero_stage << ", " << R << " ranks");

  SECTION("train_step against one process") {
    Trainer ranked(c, *backend, dp.get());
    TrainConfig one = c;
    one.run_dir = dir + "/one";
    Trainer alone(one, *backend);
    REQUIRE(ranked.accumulation_steps() == 2 * R);
    REQUIRE(alone.accumulation_steps() == 2 * R);
    REQUIRE(ranked.tokens_per_step() == alone.tokens_per_step());
    for (int step = 0; step < 4; ++step) {
      StepResult a = ranked.train_step(), b = alone.train_step();
      CHECK(a.loss == Approx(b.loss).epsilon(1e-6));
      CHECK(a.grad_norm == Approx(b.grad_norm).epsilon(1e-5));
      CHECK(a.skipped == b.skipped);
    }
    test::expect_close(ranked.model().parameters(), alone.model().parameters(), 2e-5, 1e-4, "parameters");
    const EvalResult ea = ranked.evaluate(), eb = alone.evaluate();
    CHECK(ea.tokens == eb.tokens);
    CHECK(ea.batches == eb.batches);
    CHECK(ea.loss == Approx(eb.loss).epsilon(1e-6));
    // The whole split (--eval-only, or --eval-batches 0): each rank scores its share of the windows.
    const std::vector<std::string> val = {c.val_data};
    const EvalResult wa = evaluate_split(ranked.model(), val, c.batch_size, c.seq_len, c.seq_len, 0, &group());
    const EvalResult wb = evaluate_split(alone.model(), val, c.batch_size, c.seq_len, c.seq_len, 0, nullptr);
    CHECK(wa.tokens == 4095);
    CHECK(wb.tokens == 4095);
    CHECK(wa.batches == wb.batches);
    CHECK(wa.loss == Approx(wb.loss).epsilon(1e-6));
  }

  SECTION("a stopped and resumed run against an uninterrupted one; its checkpoint in one process") {
    {
      Trainer full(c, *backend, dp.get());
      full.run();
    }
    TrainConfig first = c;
    first.run_dir = dir + "/resumed";
    first.stop_at_step = 3;
    {
      Trainer t(first, *backend, dp.get());
      CHECK(t.run() == TrainStop::stop_at_step);
    }
    TrainConfig second = c;
    second.run_dir = first.run_dir;
    second.resume = first.run_dir;
    {
      Trainer t(second, *backend, dp.get());
      CHECK(t.step() == 3);
      t.run();
    }
    group().barrier();  // rank 0 has written every file
    const auto uninterrupted = read_metrics(c.run_dir), resumed = read_metrics(first.run_dir);
    REQUIRE(uninterrupted.size() == 6);
    REQUIRE(resumed.size() == 6);
    for (size_t i = 0; i < 6; ++i) {
      INFO("step " << i + 1);
      CHECK(resumed[i]["train_loss"].get<double>() == uninterrupted[i]["train_loss"].get<double>());
      CHECK(resumed[i]["grad_norm"].get<double>() == uninterrupted[i]["grad_norm"].get<double>());
    }
    const Checkpoint a = load_checkpoint(resolve_checkpoint(c.run_dir), true);
    const Checkpoint b = load_checkpoint(resolve_checkpoint(first.run_dir), true);
    CHECK(test::same_bits(a.params, b.params));
    CHECK(test::same_bits(a.m, b.m));
    CHECK(test::same_bits(a.v, b.v));

    // The data-parallel checkpoint of step 3 continues in one process (2R-fold accumulation), with
    // the same batches and masks: the same losses, to rounding.
    if (group().is_root()) {
      TrainConfig alone = c;
      alone.run_dir = dir + "/continued_alone";
      alone.resume = first.run_dir + "/checkpoints/step_00000003.ckpt";
      Trainer t(alone, *backend);
      REQUIRE(t.step() == 3);
      t.run();
      const auto continued = read_metrics(alone.run_dir);
      REQUIRE(continued.size() == 3);
      for (size_t i = 0; i < 3; ++i) {
        INFO("step " << i + 4);
        CHECK(continued[i]["train_loss"].get<double>() ==
              Approx(uninterrupted[i + 3]["train_loss"].get<double>()).epsilon(1e-6));
      }
    }
  }
}

int main(int argc, char* argv[]) {
  std::unique_ptr<ProcessGroup> joined;
  try {
    joined = ProcessGroup::join(&argc, &argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test_data_parallel: %s\n", e.what());
    return 1;
  }
  g_group = joined.get();
  if (g_group->size() < 2) {
    std::fprintf(stderr, "test_data_parallel: run it under mpiexec with 2 or more ranks (ctest does)\n");
    return 77;
  }
  const int failed = Catch::Session().run(argc, argv);
  // A rank that failed makes the job fail even when the others passed.
  double failures = failed;
  g_group->all_reduce_sum(std::span<double>(&failures, 1));
  return failures > 0 ? 1 : 0;
}
