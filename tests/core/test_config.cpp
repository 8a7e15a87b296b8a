// ModelConfig: presets, padding, validation messages, JSON round trip (and TrainConfig's floats).
#include "common/catch.hpp"
#include <nlohmann/json.hpp>
#include <utility>

#include "core/check.hpp"
#include "core/config.hpp"
#include "core/model.hpp"
#include "core/train_config.hpp"

using namespace gpt2cc;

TEST_CASE("every GPT-2 preset has GPT-2's layers, heads, width and context", "[config]") {
  // As OpenAI's config.json files give them (n_layer, n_head, n_embd, n_ctx); a head count changes
  // no parameter count, so the counts below would not see it.
  struct Shape {
    const char* name;
    int L, NH, C;
  };
  for (const Shape& s : {Shape{"gpt2", 12, 12, 768}, Shape{"gpt2-medium", 24, 16, 1024},
                         Shape{"gpt2-large", 36, 20, 1280}, Shape{"gpt2-xl", 48, 25, 1600}}) {
    INFO(s.name);
    const ModelConfig c = model_preset(s.name);
    CHECK(c.num_layers == s.L);
    CHECK(c.num_heads == s.NH);
    CHECK(c.channels == s.C);
    CHECK(c.max_seq_len == 1024);
    CHECK(c.vocab_size == 50257);
  }
}

TEST_CASE("presets have GPT-2's shapes and parameter counts", "[config]") {
  ModelConfig small = model_preset("gpt2");
  CHECK(small.num_layers == 12);
  CHECK(small.channels == 768);
  CHECK(small.num_heads == 12);
  CHECK(small.padded_vocab_size == 50304);
  // GPT-2 small has 124,439,808 parameters with V = 50257 rows of wte; we also store the 47
  // padded rows (47 * 768 = 36,096 more).
  CHECK(num_parameters(small) == 124439808u + 47u * 768u);
  CHECK(model_preset("gpt2-xl").channels == 1600);
  CHECK(model_preset("d4").channels == 256);
  for (const auto& name : model_preset_names()) CHECK_NOTHROW(validate(model_preset(name)));
}

TEST_CASE("vocabulary is padded to a multiple of 128", "[config]") {
  CHECK(padded_vocab(50257) == 50304);
  CHECK(padded_vocab(128) == 128);
  CHECK(padded_vocab(129) == 256);
  CHECK(padded_vocab(1) == 128);
}

TEST_CASE("impossible configurations name the field and the value", "[config]") {
  ModelConfig c = model_preset("d2");
  c.num_heads = 3;  // 128 % 3 != 0
  CHECK_THROWS_WITH(validate(c), Catch::Contains("channels (C) = 128") && Catch::Contains("num_heads (NH) = 3"));
  c = model_preset("d2");
  c.num_layers = 0;
  CHECK_THROWS_AS(validate(c), InputError);
  CHECK_THROWS_WITH(validate(c), Catch::Contains("num_layers") && Catch::Contains("0"));
  c = model_preset("d2");
  c.channels = -5;
  CHECK_THROWS_WITH(validate(c), Catch::Contains("channels") && Catch::Contains("-5"));
  // Each bound with its own message (NH = 0 would otherwise divide by zero in C % NH).
  const std::pair<void (*)(ModelConfig&), const char*> outside[] = {
      {[](ModelConfig& m) { m.num_heads = 0; }, "num_heads (NH) must be in 1..65536, got 0"},
      {[](ModelConfig& m) { m.channels = 0; }, "channels (C) must be in 1..1048576, got 0"},
      {[](ModelConfig& m) { m.max_seq_len = 0; }, "max_seq_len must be in 1..16777216, got 0"},
      {[](ModelConfig& m) { m.vocab_size = 0; }, "vocab_size (V) must be in 1..16777216, got 0"},
      // Upper bounds: a corrupt header whose parameter count wraps past 2^64 to a plausible size
      // (C 2^20, L 1397759, maxT 2^31 - 1 wrap it to 2^20) is refused here.
      {[](ModelConfig& m) { m.num_layers = 1397759; }, "num_layers (L) must be in 1..65536, got 1397759"},
      {[](ModelConfig& m) { m.num_heads = 1 << 17; }, "num_heads (NH) must be in 1..65536, got 131072"},
      {[](ModelConfig& m) { m.channels = 1 << 21; }, "channels (C) must be in 1..1048576, got 2097152"},
      {[](ModelConfig& m) { m.max_seq_len = 2147483647; }, "max_seq_len must be in 1..16777216, got 2147483647"},
      {[](ModelConfig& m) { m.vocab_size = m.padded_vocab_size = (1 << 24) + 128; },
       "vocab_size (V) must be in 1..16777216, got 16777344"},
      {[](ModelConfig& m) { m.padded_vocab_size = 2147483647; },
       "padded_vocab_size (Vp) must be in 1..16777216, got 2147483647"},
  };
  for (const auto& [edit, message] : outside) {
    CAPTURE(message);
    c = model_preset("d2");
    edit(c);
    CHECK_THROWS_WITH(validate(c), Catch::Contains(message));
  }
  c = model_preset("d2");
  c.padded_vocab_size = 100;
  CHECK_THROWS_WITH(validate(c), Catch::Contains("padded_vocab_size"));
  c = model_preset("d2");
  c.dropout = 1.0f;
  CHECK_THROWS_WITH(validate(c), Catch::Contains("dropout"));
  CHECK_THROWS_WITH(model_preset("gpt3"), Catch::Contains("unknown model preset 'gpt3'") && Catch::Contains("d4"));
}

TEST_CASE("TrainConfig ranges accept their end points", "[config]") {
  // The closed ends of validate()'s ranges are valid settings; the open ones are refused.
  TrainConfig base;
  base.train_data = "shards";
  base.steps = 10;
  const auto accepts = [&](auto set) {
    TrainConfig c = base;
    set(c);
    CHECK_NOTHROW(validate(c));
  };
  const auto refuses = [&](auto set, const std::string& message) {
    TrainConfig c = base;
    set(c);
    CHECK_THROWS_WITH(validate(c), Catch::Contains(message));
  };
  accepts([](TrainConfig& c) { c.beta1 = 0; });
  accepts([](TrainConfig& c) { c.beta2 = 0; });
  refuses([](TrainConfig& c) { c.beta1 = 1; }, "--beta1 must be in [0, 1)");
  accepts([](TrainConfig& c) { c.min_lr_ratio = 0; });
  accepts([](TrainConfig& c) { c.min_lr_ratio = 1; });
  refuses([](TrainConfig& c) { c.min_lr_ratio = 1.01; }, "--min-lr-ratio must be in [0, 1]");
  accepts([](TrainConfig& c) { c.weight_decay = 0; });
  accepts([](TrainConfig& c) { c.grad_clip = 0; });
  accepts([](TrainConfig& c) { c.zero_stage = 1; });
  refuses([](TrainConfig& c) { c.zero_stage = -1; }, "--zero-stage must be 0 or 1, got -1");
  refuses([](TrainConfig& c) { c.zero_stage = 2; }, "--zero-stage must be 0 or 1, got 2");
  accepts([](TrainConfig& c) { c.classifier_rows = 1; });
  accepts([](TrainConfig& c) { c.classifier_rows = 0; });  // all rows at once
  refuses([](TrainConfig& c) { c.classifier_rows = -1; },
          "--classifier-rows must be >= 0 (0: all rows at once), got -1");
  CHECK(TrainConfig{}.classifier_rows == ModelOptions{}.classifier_rows);  // the flag's default is the model's
  accepts([](TrainConfig& c) { c.grad_dtype = "fp32"; });  // fp32 training: its gradients' dtype anyway
  accepts([](TrainConfig& c) {
    c.dtype = "bf16";
    c.grad_dtype = "bf16";
  });
  refuses([](TrainConfig& c) { c.grad_dtype = "fp16"; }, "--grad-dtype must be auto, bf16 or fp32, got 'fp16'");
  refuses([](TrainConfig& c) { c.grad_dtype = "bf16"; }, "--grad-dtype bf16 needs --dtype bf16");
  const auto eval_only = [&](int stride) {
    return [stride](TrainConfig& c) {
      c.eval_only = true;
      c.steps = 0;
      c.val_data = "val";
      c.init_from = "model.ckpt";
      c.eval_stride = stride;
    };
  };
  accepts(eval_only(1));
  accepts(eval_only(base.seq_len));
  refuses(eval_only(base.seq_len + 1), "--eval-stride must be in 1..--seq-len");
}

TEST_CASE("ModelConfig JSON round trip", "[config]") {
  ModelConfig c = model_preset("d6");
  c.dropout = 0.1f;
  nlohmann::json j = c;
  ModelConfig back = j.get<ModelConfig>();
  CHECK(back == c);
  // The JSON shows the dropout that was typed, not the float's double expansion.
  CHECK(j.dump().find("\"dropout\":0.1,") != std::string::npos);
}

TEST_CASE("TrainConfig JSON writes floats in their shortest form and reads them back exactly", "[config]") {
  TrainConfig c;
  c.dropout = 0.1f;
  nlohmann::json j = c;
  CHECK(j.at("dropout").dump() == "0.1");
  CHECK(j.at("lr").dump() == "0.0006");
  CHECK(j.get<TrainConfig>().dropout == 0.1f);
  // Shortest decimals read back as the same float across the range dropout takes and beyond.
  // 7.038531e-26f: the one positive float whose shortest text, read as a double, rounds to its
  // neighbour.
  for (float x : {0.0f, 1e-7f, 0.05f, 0.3f, 0.333333343f, 0.9999999f, 1.17549435e-38f, 3.40282347e38f,
                  7.038531e-26f}) {
    CAPTURE(x);
    CHECK(float(shortest_double(x)) == x);
  }
  CHECK(shortest_double(0.3f) == 0.3);
}

TEST_CASE("TrainConfig JSON: a saved setting of the wrong kind is refused, not cast", "[config]") {
  const auto read = [](const char* key, nlohmann::json value) {
    nlohmann::json j = TrainConfig{};
    j[key] = std::move(value);
    return j.get<TrainConfig>();
  };
  CHECK(read("batch_size", 6).batch_size == 6);
  CHECK(read("steps", 18446744073709551615ull).steps == 18446744073709551615ull);
  CHECK_THROWS_WITH(read("batch_size", 2147483648LL),
                    Catch::Contains("saved setting \"batch_size\" must be a whole number from -2147483648 to "
                                    "2147483647, got 2147483648"));
  CHECK_THROWS_WITH(read("steps", -1), Catch::Contains("\"steps\" must be a whole number from 0 to"));
  CHECK_THROWS_WITH(read("steps", 2.5), Catch::Contains("\"steps\" must be a whole number"));
  CHECK_THROWS_WITH(read("lr", "0.1"), Catch::Contains("saved setting \"lr\" must be a number, got \"0.1\""));
  CHECK_THROWS_AS(read("preset", 3), nlohmann::json::exception);  // the caller names the checkpoint
}
