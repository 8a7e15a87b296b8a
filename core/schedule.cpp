// Learning-rate schedules: linear warm-up, then cosine, linear or no decay (formulas in the header).
#include "core/schedule.hpp"

#include <cmath>

#include "core/check.hpp"

namespace gpt2cc {

double LrSchedule::at(uint64_t step) const {
  if (step < warmup_steps) return max_lr * double(step + 1) / double(warmup_steps);
  if (decay == LrDecay::constant) return max_lr;
  uint64_t decay_steps = total_steps > warmup_steps ? total_steps - warmup_steps : 0;
  // The last step (step = S - 1) lands on min_lr: progress divides by S - W - 1. A single
  // decay step stays at the peak.
  double p = decay_steps > 1 ? double(step - warmup_steps) / double(decay_steps - 1) : 0.0;
  p = std::min(p, 1.0);
  if (decay == LrDecay::linear) return max_lr - (max_lr - min_lr) * p;
  constexpr double pi = 3.14159265358979323846;
  return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + std::cos(pi * p));
}

LrDecay parse_lr_decay(const std::string& name) {
  if (name == "cosine") return LrDecay::cosine;
  if (name == "linear") return LrDecay::linear;
  if (name == "constant") return LrDecay::constant;
  fail_input(format("--schedule: unknown learning-rate schedule '{}' (known: cosine, linear, constant)", name));
}

std::string to_string(LrDecay decay) {
  switch (decay) {
    case LrDecay::cosine: return "cosine";
    case LrDecay::linear: return "linear";
    case LrDecay::constant: return "constant";
  }
  return "?";
}

void validate(const LrSchedule& s) {
  INPUT_CHECK(std::isfinite(s.max_lr) && s.max_lr > 0, "--lr must be a finite number > 0, got {}", s.max_lr);
  INPUT_CHECK(s.min_lr >= 0 && s.min_lr <= s.max_lr, "the minimum learning rate must be in [0, --lr = {}], got {}",
              s.max_lr, s.min_lr);
  INPUT_CHECK(s.total_steps >= 1, "the run must have at least 1 step, got {}", s.total_steps);
  INPUT_CHECK(s.warmup_steps < s.total_steps || s.warmup_steps == 0,
              "--warmup-steps ({}) must be shorter than the run ({} steps)", s.warmup_steps, s.total_steps);
}

}  // namespace gpt2cc
