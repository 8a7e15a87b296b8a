// Learning-rate schedules, a pure function of the step (so a resumed run gets the same rates).
//   warm-up   (step < W):  lr(step) = max_lr * (step + 1) / W
//   then, with progress p = (step - W) / (S - W - 1) in [0, 1] (the last step reaches min_lr):
//     cosine:   lr = min_lr + (max_lr - min_lr) * 0.5 * (1 + cos(pi * p))
//     linear:   lr = max_lr - (max_lr - min_lr) * p
//     constant: lr = max_lr
// step is 0-based: the rate used for the update that completes step + 1 steps.
#pragma once

#include <cstdint>
#include <string>

namespace gpt2cc {

enum class LrDecay { cosine, linear, constant };

struct LrSchedule {
  double max_lr = 6e-4;         // peak rate reached at the end of warm-up, > 0
  double min_lr = 6e-5;         // floor the decay ends at, in [0, max_lr]
  uint64_t warmup_steps = 0;    // linear warm-up length W, < total_steps (or 0)
  uint64_t total_steps = 1;     // S, >= 1
  LrDecay decay = LrDecay::cosine;

  double at(uint64_t step) const;
};

// "cosine" | "linear" | "constant"; InputError listing the names otherwise.
LrDecay parse_lr_decay(const std::string& name);
std::string to_string(LrDecay decay);
// InputError naming the field for an impossible schedule.
void validate(const LrSchedule& schedule);

}  // namespace gpt2cc
