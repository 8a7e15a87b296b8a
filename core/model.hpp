// GPT-2, written once against the Backend interface (core/backend.hpp): one contiguous
// parameter buffer with named views (core/params.hpp), activations sized up front for a maximum
// B x T, forward -> loss, backward, AdamW, and KV-cache decoding for generation.
//
// Forward, layer l (pre-LayerNorm block, Radford et al. 2019):
//   ln1 = LN(x); qkv = ln1 Wqkv^T + b; atty = attn(qkv); x2 = x + drop(atty Wproj^T + b)
//   ln2 = LN(x2); h = gelu(ln2 Wfc^T + b); x = x2 + drop(h Wfcproj^T + b)
// then lnf = LN(x); logits = lnf wte^T (tied embedding, no bias); loss = mean CE over targets != -1.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "core/backend.hpp"
#include "core/config.hpp"
#include "core/params.hpp"

namespace gpt2cc {

class DeviceCollectives;  // core/distributed.hpp

// training: parameters, gradients, AdamW moments, every layer's saved activations and the
// backward scratch. inference: parameters and one layer's activations, which every layer reuses
// (no gradients or moments: a quarter of the parameter memory, in bf16 the bf16 weights alone,
// an eighth; the activations of one layer, not L; logits allocated for the rows their first use
// needs, a row per sequence for generation); the training methods (zero_grad, backward,
// grad_norm, adamw_step, gradients, optimizer state) then throw Error.
enum class ModelMode { training, inference };

// How the model spends memory and launches; the mathematics stays the same. In fp32 the bits do
// too, but for classifier_rows past one chunk (the order of wte's gradient sum) and data_parallel
// (the gradients summed over ranks, not accumulated in one process); in bf16, fp32_gradients
// leaves out the gradients' roundings and recompute_gelu changes fcprojw's gradient by a bf16
// rounding (GELU of the stored bf16 pre-activation instead of the GEMM's fp32 result).
struct ModelOptions {
  // Store only the MLP's pre-activation and recompute GELU in the backward: saves
  // (L-1)*B*T*4C elements of activation memory for one elementwise pass per layer.
  bool recompute_gelu = false;
  // Replay forward_backward as a CUDA graph when the shapes and scalars repeat (backends that
  // cannot record run the ops directly). Dropout > 0 changes the masks every step: no replay.
  bool cuda_graphs = true;
  // Rows of logits computed at once where the loss is all that is wanted (a training step, a
  // forward with targets): the classifier runs over B*T rows in chunks of this many (lm_head
  // forward, loss and dlogits, lm_head backward per chunk), so the logits buffer holds
  // min(B*T, classifier_rows) rows of Vp instead of B*T (GPT-2 at 256 x 1024 in bf16: 0.8 GB
  // instead of 26 GB). A batch of at most this many rows is one chunk, computed as it always was;
  // with more, the wte gradient sums the chunks' parts in turn (where the gradients are bf16, in
  // Vp x C floats of scratch, added to the bf16 gradient with one rounding as one product's is:
  // only fp32's order of addition differs from one chunk).
  // 8192: the rows bench_kernels times the lm_head at (B=8, T=1024), a GEMM large enough to run
  // at the speed of a larger one. 0: all B*T rows in one chunk, however many.
  int classifier_rows = 8192;
  // In bf16, keep the parameter gradients in fp32 (PyTorch autocast's way; llm.c keeps them in
  // bf16, the default): every backward adds its products into them unrounded, so gradient
  // accumulation over many micro-steps (and the classifier's chunks) loses nothing to bf16's 8-bit
  // mantissa; the gradient norm and AdamW read them as they are. 2 more bytes per parameter
  // (gpt2: 237 MiB). A training model's only; the fp32 compute dtype has fp32 gradients anyway.
  bool fp32_gradients = false;
  // Rows (sequences) of the KV cache; 0 = max_B. More rows than max_B let N samples decode
  // together while the activations stay sized for max_B x max_T (prefill and decode then run
  // their rows through as many forwards as the activations need; see prefill).
  int kv_cache_rows = 0;
  // Data-parallel training (core/distributed.hpp): every rank holds a model with the same
  // weights, and reduce_gradients() sums the gradients over the ranks. null: one process.
  DeviceCollectives* data_parallel = nullptr;
  // With data_parallel, ZeRO stage 1: rank r keeps the AdamW moments (in bf16 also the fp32
  // master weights) of its own 1/ranks of the parameters only and updates that part; the
  // parameters the layers read (fp32, or the bf16 copy) are then gathered from their owners.
  // false (stage 0): every rank keeps all the moments and updates everything.
  bool shard_optimizer = true;
};

// The bytes a model holds in its backend's memory, by what they are for (docs/model.md's
// formulas): what it allocated, not the backend's own scratch during an op.
struct ModelMemory {
  size_t parameters = 0;   // the fp32 master and / or the bf16 compute copy
  size_t gradients = 0;
  size_t optimizer = 0;    // AdamW's m and v (this rank's part under ZeRO-1)
  size_t activations = 0;  // what the forward saves, the logits, losses, tokens
  size_t logits = 0;       // of the activations, the logits buffer (one classifier chunk)
  size_t scratch = 0;      // the backward's buffers and the forward's projection buffer
  size_t kv_cache = 0;     // k and v, once a prefill allocated them
  size_t total() const { return parameters + gradients + optimizer + activations + scratch + kv_cache; }
};

// Bytes of a KV cache of `rows` sequences of `positions` (a model's max_T): k and v, L x rows x
// positions x C elements of `dtype`.
size_t kv_cache_bytes(const ModelConfig& config, DType dtype, int rows, int positions);

class GPT2 {
 public:
  // Allocates what `mode` needs (above) for up to max_B x max_T (max_T <= config.max_seq_len)
  // on the backend. Weights start at zero: call init_weights or set_parameters. Throws
  // InputError for an invalid config, Error for out-of-memory.
  GPT2(const ModelConfig& config, Backend& backend, int max_B, int max_T, ModelMode mode = ModelMode::training,
       const ModelOptions& options = {});
  ~GPT2();
  GPT2(const GPT2&) = delete;
  GPT2& operator=(const GPT2&) = delete;

  const ModelConfig& config() const;
  Backend& backend();
  int max_batch() const;
  int max_seq() const;
  const ParameterLayout& layout() const;
  ModelMode mode() const;
  const ModelOptions& options() const;
  DType dtype() const;  // the backend's compute dtype
  ModelMemory memory() const;  // what the model holds now

  // GPT-2 init, deterministic in `seed` (counter-based normals, same on every backend):
  // weights N(0, 0.02), residual output projections N(0, 0.02/sqrt(2L)), biases 0, LayerNorm
  // weights 1, padded vocabulary rows 0.
  void init_weights(uint64_t seed);

  // Host copies of the whole buffers, in layout order (for checkpoints, tests, interchange),
  // always fp32: the parameters are the fp32 master weights (a bf16 inference model keeps none:
  // its bf16 weights, widened); bf16 gradients are widened. When the master is sharded
  // (master_sharded()) every rank must call parameters(): the blocks are gathered on rank 0, and
  // the other ranks get an empty vector (as from optimizer_state).
  std::vector<float> parameters() const;
  void set_parameters(const std::vector<float>& host);
  std::vector<float> gradients() const;
  // The AdamW moments of all parameters. Under a sharded optimizer every rank must call it: the
  // parts are gathered on rank 0, and the other ranks get empty vectors.
  void optimizer_state(std::vector<float>& m, std::vector<float>& v) const;
  // All the moments, on every rank (each keeps its part).
  void set_optimizer_state(const std::vector<float>& m, const std::vector<float>& v);

  // The same a piece at a time, [offset, offset + size) in layout order, so that a checkpoint
  // streams through a bounded buffer instead of a host copy of the whole (core/checkpoint.hpp).
  // read_*: what parameters() / optimizer_state() give there; when that state is sharded
  // (master_sharded(), optimizer_sharded()), a collective as they are: every rank calls it with
  // the same piece, rank 0 gets the values, the others' `out` is left as it was. write_*: what
  // set_parameters / set_optimizer_state set there, on any rank alone (each keeps what it holds
  // of the piece).
  enum class Moment { m, v };
  void read_parameters(size_t offset, std::span<float> out) const;
  void write_parameters(size_t offset, std::span<const float> in);
  void read_moment(Moment which, size_t offset, std::span<float> out) const;
  void write_moment(Moment which, size_t offset, std::span<const float> in);
  // The parameters [first, second) whose moments this rank holds and updates: all of them unless
  // the optimizer is sharded.
  std::pair<size_t, size_t> optimizer_part() const;
  bool optimizer_sharded() const;  // ModelOptions::data_parallel with shard_optimizer
  bool master_sharded() const;     // bf16 with a sharded optimizer: a rank holds its block of the master

  // ---- training ----
  // inputs, targets: host (B,T) token ids; targets may be null (no loss) and may hold -1
  // (ignored). Returns the mean loss over the non-ignored targets of this call (NaN when none).
  // With training = true and config.dropout > 0, dropout masks come from dropout_seed.
  float forward(const int* inputs, const int* targets, int B, int T, bool training = false,
                uint64_t dropout_seed = 0);
  int num_targets() const;          // non-ignored targets of the last forward
  std::vector<float> losses() const; // per-token losses (B,T) of the last forward
  // Logits (B,T,Vp) of the last forward, to host (only the first V columns are meaningful).
  std::vector<float> logits() const;

  void zero_grad();
  // Backward of the last forward (which must have had targets). dloss is the weight of each
  // token's loss in the objective: 1/num_targets() for this call's mean; under gradient
  // accumulation 1/(targets in the whole total batch). Parameter gradients accumulate.
  void backward(float dloss);
  // The training step's forward and backward in one call: forward with the fused classifier
  // (losses and dlogits = dloss*(softmax - onehot) in one pass over the logits), then the
  // backward; parameter gradients accumulate. Same arguments and result as forward(training =
  // true) followed by backward(dloss), with no host synchronisation in between, so the whole
  // call can replay as one CUDA graph. Leaves no logits() (they became dlogits).
  float forward_backward(const int* inputs, const int* targets, int B, int T, float dloss,
                         uint64_t dropout_seed = 0);
  // Data parallel: sums the gradients over the ranks (after the step's last backward, before
  // grad_norm); under a sharded optimizer only this rank's part of them. One process: nothing.
  void reduce_gradients();
  double grad_norm();  // global L2 norm over all parameter gradients (over all ranks' parts)
  // One AdamW step over all parameters: hp.weight_decay applies to the tensors whose layout flags
  // it (the weight matrices wte, qkvw, attprojw, fcw, fcprojw). Sharded: over this rank's part,
  // then every rank gathers the updated parameters (in the compute dtype).
  void adamw_step(const AdamWParams& hp);

  // ---- inference with a KV cache (allocated on first use, kv_cache_rows() x max_seq() positions) ----
  // prefill: tokens (B,T) at positions 0..T-1; decode: one token per row at position pos <
  // max_seq() (a model built for generation of at most n tokens needs max_T = n, not the context).
  // Both return host logits (B, V) of the last position (first V columns only). B is at most
  // kv_cache_rows(); rows beyond what the activations hold (max_B x max_T positions per
  // forward) run in several forwards. Each row's logits are the same whatever B: bit for bit
  // on the CPU backend (a row's result never depends on the rows computed with it, see
  // core/model_decode.cpp), to rounding on CUDA (cuBLAS may pick other kernels for other B).
  std::vector<float> prefill(const int* tokens, int B, int T);
  std::vector<float> decode(const int* tokens, int B, int pos);
  int kv_cache_rows() const;
  // The cache's rows become old rows `rows`: new row i = old row rows[i] (every cached
  // position, every layer), and the cache holds rows.size() rows (the B the next decode must
  // use). Repeating a row shares one prefill among several sequences ({0, 0, 0}); leaving rows
  // out drops finished sequences. The copies run in place, so a row copied elsewhere must stay
  // where it is (rows[r] == r) or not be overwritten (r >= rows.size()); InputError otherwise.
  void kv_cache_select_rows(std::span<const int> rows);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpt2cc
