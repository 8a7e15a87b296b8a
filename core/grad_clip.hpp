// Global gradient-norm clipping, defined as torch.nn.utils.clip_grad_norm_ does it so that a
// run here and a PyTorch run clip identically:
//   scale = min(1, max_norm / (norm + 1e-6)),  g <- g * scale
// The scale is not applied to the gradients in place: it goes into AdamWParams::grad_scale,
// which the AdamW update multiplies into each gradient as it reads it (same result, one pass
// less over memory). max_norm <= 0 disables clipping (scale 1).
#pragma once

#include <algorithm>

namespace gpt2cc {

inline float clip_scale(double grad_norm, double max_norm) {
  if (max_norm <= 0.0) return 1.0f;
  return static_cast<float>(std::min(1.0, max_norm / (grad_norm + 1e-6)));
}

}  // namespace gpt2cc
