// GPT-2's parameters (core/model.hpp) in and out of the backend's memory: GPT-2's initialisation
// (counter-based normal draws, so every backend and thread count gets the same weights), reads
// and writes of any piece of them as floats (from the fp32 master, from the bf16 copy of an
// inference model, or gathered from the ranks' blocks under ZeRO-1), and the gradients. Pieces
// pass through bounded buffers, whatever the model's size.
#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "core/check.hpp"
#include "core/model.hpp"
#include "core/model_impl.hpp"
#include "core/rng.hpp"

namespace gpt2cc {

namespace {

// Pieces of the parameters that pass through host memory (init) or a conversion (bf16 staging in
// the backend's memory), in floats: bounded, whatever the model's size.
constexpr size_t kStagingFloats = size_t(1) << 22;

}  // namespace

void GPT2::init_weights(uint64_t seed) {
  const Impl& s = *impl_;
  const size_t C = s.config.channels, V = s.config.vocab_size, N = s.layout.total();
  const float std_weight = 0.02f;
  // Residual output projections: each block adds two of them to the stream, so GPT-2 scales
  // their init by 1/sqrt(2L) to keep the stream's variance independent of depth.
  const float std_residual = 0.02f / std::sqrt(2.0f * s.config.num_layers);
  // Written a bounded piece at a time: a host copy of all the weights would be the largest
  // allocation of a short run (gpt2's 475 MiB on top of the model's own).
  std::vector<float> piece(std::min(N, kStagingFloats));
  for (size_t at = 0; at < N; at += piece.size()) {
    const size_t end = std::min(N, at + piece.size());
    std::fill(piece.begin(), piece.end(), 0.0f);  // biases, and wte's padded rows (>= V), stay 0
    for (int i = 0; i < kNumParamTensors; ++i) {
      const Param p = static_cast<Param>(i);
      const ParamTensor& t = s.layout[p];
      float std_dev = 0.0f;  // 0: LayerNorm weights, all 1
      switch (p) {
        case Param::ln1w: case Param::ln2w: case Param::lnfw: break;
        case Param::wte: case Param::wpe: case Param::qkvw: case Param::fcw: std_dev = std_weight; break;
        case Param::attprojw: case Param::fcprojw: std_dev = std_residual; break;
        default: continue;  // biases
      }
      // Element k of tensor i draws normal number k of stream i: independent of the backend, of
      // the other tensors and of the pieces. Counter-based draws make the parallel loop give the
      // same values on any thread count.
      const size_t first = std::max(t.offset, at), last = std::min(t.offset + (p == Param::wte ? V * C : t.numel), end);
      if (first >= last) continue;
      float* dst = piece.data();
#pragma omp parallel for schedule(static)
      for (size_t k = first; k < last; ++k)
        dst[k - at] = std_dev == 0.0f ? 1.0f : float(std_dev * philox_normal(seed, uint32_t(i), k - t.offset));
    }
    write_parameters(at, std::span<const float>(piece.data(), end - at));
  }
}

std::vector<float> GPT2::parameters() const {
  const Impl& s = *impl_;
  if (s.master_sharded()) return s.gather_blocks(s.master.data(), s.master.size());
  std::vector<float> host(s.layout.total());
  read_parameters(0, host);
  return host;
}

void GPT2::set_parameters(const std::vector<float>& host) {
  const Impl& s = *impl_;
  const size_t N = s.layout.total();
  INPUT_CHECK(host.size() == N, "set_parameters: expected {} floats for {}, got {}", N, describe(s.config),
              host.size());
  write_parameters(0, host);
}

void GPT2::read_parameters(size_t offset, std::span<float> out) const {
  const Impl& s = *impl_;
  s.check_piece("read_parameters", offset, out.size());
  if (s.master_sharded()) {
    s.gather_piece(s.master.data(), offset, out);
    return;
  }
  if (s.keeps_master()) {
    s.backend.download(out.data(), s.master.data() + offset, out.size_bytes());
    return;
  }
  // A bf16 inference model: its bf16 weights, widened through the staging buffer.
  DeviceArray<float> staging(s.backend, std::min(out.size(), kStagingFloats));
  for (size_t at = 0; at < out.size(); at += staging.size()) {
    const size_t n = std::min(staging.size(), out.size() - at);
    s.backend.convert_to_float(staging.data(), s.params_bf16.data() + offset + at, n);
    s.backend.download(out.data() + at, staging.data(), n * sizeof(float));
  }
}

void GPT2::write_parameters(size_t offset, std::span<const float> in) {
  Impl& s = *impl_;
  s.check_piece("write_parameters", offset, in.size());
  if (in.empty()) return;
  // The master: all of it, or under master_sharded() this rank's block (the padding stays 0).
  if (s.keeps_master()) {
    const size_t first = std::max(offset, s.master_begin);
    const size_t last = std::min(offset + in.size(), s.master_begin + s.master.size());
    if (first < last)
      s.backend.upload(s.master.data() + (first - s.master_begin), in.data() + (first - offset),
                       (last - first) * sizeof(float));
  }
  if (s.dtype == DType::fp32) return;
  // The whole bf16 copy: from the master where it holds the piece, else from the host values
  // through the staging buffer (a bf16 inference model, or a sharded master).
  if (s.keeps_master() && !s.master_sharded()) {
    s.backend.convert_from_float(s.params_bf16.data() + offset, s.master.data() + offset, in.size());
    return;
  }
  DeviceArray<float> staging(s.backend, std::min(in.size(), kStagingFloats));
  for (size_t at = 0; at < in.size(); at += staging.size()) {
    const size_t n = std::min(staging.size(), in.size() - at);
    s.backend.upload(staging.data(), in.data() + at, n * sizeof(float));
    s.backend.convert_from_float(s.params_bf16.data() + offset + at, staging.data(), n);
  }
}

bool GPT2::master_sharded() const { return impl_->master_sharded(); }

std::vector<float> GPT2::gradients() const {
  impl_->require_training("gradients");
  return download_as_float(impl_->backend, impl_->grads.data(), impl_->layout.total());
}

}  // namespace gpt2cc
