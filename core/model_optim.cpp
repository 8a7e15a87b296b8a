// The optimizer side of GPT2 (core/model.hpp): the gradient norm, AdamW over the parameters (or,
// data parallel under ZeRO-1, over this rank's block of them, then a gather of every block of the
// parameters the layers read), the sum of the gradients over the ranks, and the AdamW moments in
// and out (gathered on rank 0 when sharded). Block layout: the N parameters padded to R blocks of
// a multiple of 64 elements; rank r owns [r * block, (r + 1) * block) (core/model.cpp's
// constructor, model_impl.hpp).
#include <algorithm>
#include <cmath>

#include "core/check.hpp"
#include "core/distributed.hpp"
#include "core/model.hpp"
#include "core/model_impl.hpp"

namespace gpt2cc {

void GPT2::optimizer_state(std::vector<float>& m, std::vector<float>& v) const {
  const Impl& s = *impl_;
  s.require_training("optimizer_state");
  if (!s.sharded()) {
    m.resize(s.layout.total());
    v.resize(s.layout.total());
    read_moment(Moment::m, 0, m);
    read_moment(Moment::v, 0, v);
    return;
  }
  m = s.gather_blocks(s.m.data(), s.m.size());
  v = s.gather_blocks(s.v.data(), s.v.size());
}

void GPT2::read_moment(Moment which, size_t offset, std::span<float> out) const {
  const Impl& s = *impl_;
  s.require_training("read_moment");
  s.check_piece("read_moment", offset, out.size());
  const DeviceArray<float>& moment = which == Moment::m ? s.m : s.v;
  if (s.sharded()) {
    s.gather_piece(moment.data(), offset, out);
    return;
  }
  s.backend.download(out.data(), moment.data() + offset, out.size_bytes());
}

void GPT2::write_moment(Moment which, size_t offset, std::span<const float> in) {
  Impl& s = *impl_;
  s.require_training("write_moment");
  s.check_piece("write_moment", offset, in.size());
  // This rank's part of the piece (all of it unless the optimizer is sharded).
  const auto [part_first, part_last] = optimizer_part();
  const size_t first = std::max(offset, part_first), last = std::min(offset + in.size(), part_last);
  if (first >= last) return;
  s.backend.upload((which == Moment::m ? s.m : s.v).data() + (first - s.part_begin), in.data() + (first - offset),
                   (last - first) * sizeof(float));
}

void GPT2::Impl::gather_piece(const float* mine, size_t offset, std::span<float> out) const {
  ProcessGroup& group = options.data_parallel->group();
  const size_t block = part_end - part_begin, last = offset + out.size();
  // Rank r owns [r * block, (r + 1) * block): the piece's parts in the ranks' blocks, laid end to
  // end in rank order, are the piece. Each rank sends its part (often none) and the root receives
  // them in `out`, each element its owner's bits.
  std::vector<size_t> counts(size_t(group.size()));
  for (size_t r = 0; r < counts.size(); ++r) {
    const size_t first = std::max(offset, r * block), end = std::min(last, (r + 1) * block);
    counts[r] = end > first ? end - first : 0;
  }
  std::vector<float> part(counts[size_t(group.rank())]);
  if (!part.empty())
    backend.download(part.data(), mine + (std::max(offset, part_begin) - part_begin), part.size() * sizeof(float));
  group.gather_parts(out.data(), part, counts);
}

std::vector<float> GPT2::Impl::gather_blocks(const float* mine, size_t block) const {
  ProcessGroup& group = options.data_parallel->group();
  std::vector<float> part(block), all(group.is_root() ? block * size_t(group.size()) : 0);
  backend.download(part.data(), mine, block * sizeof(float));
  group.gather(all.data(), part);
  if (group.is_root()) all.resize(layout.total());
  return all;
}

void GPT2::set_optimizer_state(const std::vector<float>& m, const std::vector<float>& v) {
  Impl& s = *impl_;
  s.require_training("set_optimizer_state");
  const size_t N = s.layout.total();
  INPUT_CHECK(m.size() == N && v.size() == N, "set_optimizer_state: expected {} floats per moment, got m {} and v {}",
              N, m.size(), v.size());
  write_moment(Moment::m, 0, m);
  write_moment(Moment::v, 0, v);
}

bool GPT2::optimizer_sharded() const { return impl_->sharded(); }

std::pair<size_t, size_t> GPT2::optimizer_part() const {
  const size_t N = impl_->layout.total();
  return {std::min(impl_->part_begin, N), std::min(impl_->part_end, N)};
}

void GPT2::reduce_gradients() {
  Impl& s = *impl_;
  s.require_training("reduce_gradients");
  DeviceCollectives* dp = s.options.data_parallel;
  if (dp == nullptr || dp->group().size() == 1) return;
  if (s.sharded()) {
    dp->reduce_scatter_sum(s.grads.data(), s.part_end - s.part_begin);
  } else {
    dp->all_reduce_sum(s.grads.data(), s.layout.total());
  }
}

double GPT2::grad_norm() {
  Impl& s = *impl_;
  s.require_training("grad_norm");
  if (!s.sharded()) return std::sqrt(s.backend.sum_of_squares(s.grads.data(), s.layout.total()));
  // This rank's summed part only (the rest of its buffer holds its own unsummed gradients).
  double squares = s.backend.sum_of_squares(s.grads.data() + s.part_begin, s.part_end - s.part_begin);
  s.options.data_parallel->group().all_reduce_sum(std::span<double>(&squares, 1));
  return std::sqrt(squares);
}

void GPT2::adamw_step(const AdamWParams& hp) {
  Impl& s = *impl_;
  s.require_training("adamw_step");
  INPUT_CHECK(hp.step >= 1, "adamw: step must be >= 1 (bias correction is 1-based), got {}", hp.step);
  INPUT_CHECK(hp.lr >= 0.0f, "adamw: learning rate must be >= 0, got {}", hp.lr);
  INPUT_CHECK(hp.beta1 >= 0.0f && hp.beta1 < 1.0f, "adamw: beta1 must be in [0, 1), got {}", hp.beta1);
  INPUT_CHECK(hp.beta2 >= 0.0f && hp.beta2 < 1.0f, "adamw: beta2 must be in [0, 1), got {}", hp.beta2);
  INPUT_CHECK(hp.eps > 0.0f, "adamw: eps must be > 0, got {}", hp.eps);
  INPUT_CHECK(hp.weight_decay >= 0.0f, "adamw: weight decay must be >= 0, got {}", hp.weight_decay);
  // One update per tensor (its piece inside this rank's part) so that weight decay reaches only
  // the tensors the layout flags (the weight matrices, not wpe).
  const auto [first, last] = optimizer_part();
  for (const ParamTensor& t : s.layout.tensors()) {
    const size_t lo = std::max(t.offset, first), hi = std::min(t.offset + t.numel, last);
    if (lo >= hi) continue;
    AdamWParams tensor_hp = hp;
    tensor_hp.weight_decay = t.weight_decay ? hp.weight_decay : 0.0f;
    s.backend.adamw_update(s.master.data() + (lo - s.master_begin), s.params() + lo,
                           s.m.data() + (lo - s.part_begin), s.v.data() + (lo - s.part_begin), s.grads.data() + lo,
                           hi - lo, tensor_hp);
  }
  if (s.sharded() && s.options.data_parallel->group().size() > 1) {
    // Every rank's updated part to every rank, in the compute dtype: in fp32 the master itself, in
    // bf16 the compute copy (the same bytes as the gradients' reduce-scatter; the master stays
    // sharded).
    s.options.data_parallel->all_gather(s.params(), s.part_end - s.part_begin);
  }
}

}  // namespace gpt2cc
