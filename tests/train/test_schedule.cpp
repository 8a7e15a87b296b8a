// LR schedules: warm-up ramp, cosine / linear decay end points and midpoints, constant, and
// validation messages.
#include "common/catch.hpp"

#include "core/check.hpp"
#include "core/schedule.hpp"

using namespace gpt2cc;

namespace {
LrSchedule make(LrDecay decay, uint64_t warmup, uint64_t total) {
  LrSchedule s;
  s.max_lr = 1e-3;
  s.min_lr = 1e-4;
  s.warmup_steps = warmup;
  s.total_steps = total;
  s.decay = decay;
  return s;
}
}  // namespace

TEST_CASE("warm-up rises linearly to the peak", "[schedule]") {
  LrSchedule s = make(LrDecay::cosine, 10, 110);
  CHECK(s.at(0) == Approx(1e-4));   // 1/10 of the peak on the first step
  CHECK(s.at(4) == Approx(5e-4));
  CHECK(s.at(9) == Approx(1e-3));   // the last warm-up step reaches the peak
  CHECK(s.at(10) == Approx(1e-3));  // decay starts at the peak
}

TEST_CASE("cosine decays from the peak to the minimum through the midpoint", "[schedule]") {
  LrSchedule s = make(LrDecay::cosine, 10, 111);
  CHECK(s.at(10) == Approx(1e-3));
  CHECK(s.at(60) == Approx(0.5 * (1e-3 + 1e-4)));  // halfway: p = 50/100
  CHECK(s.at(110) == Approx(1e-4));                // the last step lands on min_lr
  CHECK(s.at(500) == Approx(1e-4));                // past the end: stays at the floor
  for (uint64_t step = 11; step < 111; ++step) CHECK(s.at(step) < s.at(step - 1));
}

TEST_CASE("linear decay and constant", "[schedule]") {
  LrSchedule lin = make(LrDecay::linear, 0, 101);
  CHECK(lin.at(0) == Approx(1e-3));
  CHECK(lin.at(25) == Approx(1e-3 - 0.25 * 9e-4));
  CHECK(lin.at(100) == Approx(1e-4));
  LrSchedule c = make(LrDecay::constant, 5, 50);
  CHECK(c.at(2) == Approx(3 * 1e-3 / 5));
  CHECK(c.at(5) == Approx(1e-3));
  CHECK(c.at(49) == Approx(1e-3));
}

TEST_CASE("a one-step run uses the peak rate without warm-up", "[schedule]") {
  CHECK(make(LrDecay::cosine, 0, 1).at(0) == Approx(1e-3));
  CHECK(make(LrDecay::constant, 0, 1).at(0) == Approx(1e-3));
}

TEST_CASE("schedule names and impossible schedules", "[schedule]") {
  CHECK(parse_lr_decay("cosine") == LrDecay::cosine);
  CHECK(parse_lr_decay("linear") == LrDecay::linear);
  CHECK(parse_lr_decay("constant") == LrDecay::constant);
  CHECK_THROWS_WITH(parse_lr_decay("step"), Catch::Contains("'step'") && Catch::Contains("cosine"));
  CHECK_THROWS_AS(parse_lr_decay("step"), InputError);
  LrSchedule s = make(LrDecay::cosine, 100, 100);
  CHECK_THROWS_WITH(validate(s), Catch::Contains("--warmup-steps (100)"));
  s = make(LrDecay::cosine, 0, 100);
  s.min_lr = 2e-3;
  CHECK_THROWS_AS(validate(s), InputError);
  s.min_lr = 0;
  s.max_lr = 0;
  CHECK_THROWS_WITH(validate(s), Catch::Contains("--lr"));
}
