// GPT2's private state (shared by core/model.cpp, training, core/model_params.cpp, the parameters
// in and out, core/model_optim.cpp, the optimizer, and core/model_decode.cpp, inference): the
// parameter/gradient/moment buffers, the activations sized for max_B x max_T, the backward scratch
// and the KV cache. All pointers live in the backend's memory.
//
// Activation memory in elements of the compute dtype (fp32: 4 bytes, bf16: 2), BT = max_B*max_T:
//   forward : BT*C (encoded) + L*BT*(C ln1 + 3C qkv + C atty + C res2 + C ln2 + 4C fch + 4C fch_gelu
//             + C res3) + BT*C (lnf) + R*Vp (logits, R = classifier_chunk(BT): BT, or fewer);
//             with recompute_gelu, fch_gelu is one (BT,4C) slab shared by the layers. In fp32
//             whatever the dtype: L*(4*BT + S) + 3*BT (LN statistics, losses), S =
//             max_B*NH*max_T (attention's row log-sum-exp, on every backend).
//   scratch : 2*BT*C + BT*3C + BT*4C + BT*C (dresidual); logits double as dlogits (in place).
//             In bf16 with R < BT, also Vp*C floats (wte's classifier gradient summed in fp32),
//             unless the gradients are fp32 themselves (options.fp32_gradients).
// An inference model keeps one layer's slab of each stacked activation (L = 1 above: every layer
// reuses it), one projection buffer (BT*C) of the scratch, and logits for the rows their first
// use needs (logits_rows): R for a forward with targets, BT without.
// Parameters: an fp32 master (N floats), for bf16 also a compute copy (N bf16), of which a bf16
// inference model keeps the copy only; gradients in the compute dtype (fp32 with
// options.fp32_gradients); AdamW moments 2N floats.
// Under ZeRO-1 with R ranks the moments, and in bf16 the master too, cover this rank's N/R only.
// docs/model.md works the formula out for the presets.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <utility>
#include <vector>

#include "core/backend.hpp"
#include "core/config.hpp"
#include "core/model.hpp"
#include "core/params.hpp"

namespace gpt2cc {

// Per-layer activations are stacked over L with a stride of one max_B x max_T slab, so layer
// l's (B,T,C) tensor for any B <= max_B, T <= max_T is the first B*T*C elements of its slab
// (an inference model has one slab, which every layer uses: slab() below).
struct Activations {
  DeviceTensor encoded;           // (B,T,C) embeddings after dropout: the residual stream entering layer 0
  DeviceTensor ln1;               // (L,B,T,C)
  DeviceArray<float> ln1_mean;    // (L,B,T)
  DeviceArray<float> ln1_rstd;    // (L,B,T)
  DeviceTensor qkv;               // (L,B,T,3C)
  DeviceArray<float> att_saved;   // (L, max_B, NH, max_T): attention's row log-sum-exp
  DeviceTensor atty;              // (L,B,T,C) attention output before its projection
  DeviceTensor residual2;         // (L,B,T,C) x + drop(attproj)
  DeviceTensor ln2;               // (L,B,T,C)
  DeviceArray<float> ln2_mean;    // (L,B,T)
  DeviceArray<float> ln2_rstd;    // (L,B,T)
  DeviceTensor fch;               // (L,B,T,4C) before GELU
  DeviceTensor fch_gelu;          // (L,B,T,4C), or (B,T,4C) under recompute_gelu
  DeviceTensor residual3;         // (L,B,T,C) the block's output
  DeviceTensor lnf;               // (B,T,C)
  DeviceArray<float> lnf_mean;    // (B,T)
  DeviceArray<float> lnf_rstd;    // (B,T)
  DeviceTensor logits;            // (R,Vp): R = a classifier chunk's rows, or as logits_rows() grew it;
                                  // the backward overwrites it with dlogits
  DeviceArray<float> losses;      // (B,T)
  DeviceArray<int> inputs;        // (B,T)
  DeviceArray<int> targets;       // (B,T)
};

// Buffers that live only through one backward (or are reused as forward scratch).
struct Scratch {
  DeviceTensor dresidual;   // (B,T,C) the residual-stream gradient: accumulates across layers
  DeviceTensor bufC_a;      // (B,T,C) projection outputs (forward), dropout grads (backward)
  DeviceTensor bufC_b;      // (B,T,C) d(atty), d(ln1), d(ln2), d(lnf)
  DeviceTensor buf3C;       // (B,T,3C) d(qkv)
  DeviceTensor buf4C;       // (B,T,4C) d(fch)
  // (Vp,C) for bf16 gradients where B*T may take more than one classifier chunk: wte's classifier
  // gradient summed over the chunks in fp32, then added to the bf16 gradient with one rounding.
  DeviceArray<float> wte_grad_sum;
};

struct GPT2::Impl {
  Impl(const ModelConfig& config, Backend& backend, int max_B, int max_T, ModelMode mode,
       const ModelOptions& options);
  // Throws Error naming `what` when the model was built for inference only.
  void require_training(const char* what) const;
  // Throws InputError naming `what` when [offset, offset + n) is not within the N parameters.
  void check_piece(const char* what, size_t offset, size_t n) const;
  // Attention's saved values of layer l: one slab per layer for training, one shared slab for inference.
  size_t attention_saved_stride() const;
  float* attention_saved(int l);
  // Data parallel: every rank's block (`block` floats at `mine`, in the backend's memory; padding
  // included, so the blocks are equal) gathered on rank 0 and cut back to the N parameters there;
  // an empty vector on the other ranks. Every rank must call it.
  std::vector<float> gather_blocks(const float* mine, size_t block) const;
  // The same for one piece [offset, offset + out.size()) of the N parameters: into `out` on rank
  // 0 (each rank sends only its own elements of the piece; no buffer beyond `out` there), nothing
  // elsewhere. Every rank must call it with the same piece.
  void gather_piece(const float* mine, size_t offset, std::span<float> out) const;
  // The parameters the layers read: the master itself in fp32, the compute copy in bf16.
  TensorPtr params() { return dtype == DType::fp32 ? TensorPtr(master.data()) : params_bf16.data(); }
  // Layer l's GELU output: its own slab, or the one shared slab under recompute_gelu.
  TensorPtr fch_gelu(int l) {
    return act.fch_gelu.data() + (options.recompute_gelu ? 0 : slab(l, 4 * size_t(config.channels)));
  }
  // Layer l's slices of the stacked activations (names as in the forward's formulas).
  struct LayerTensors {
    TensorPtr x;  // the block's input: the embeddings for layer 0, else the previous block's res3
    TensorPtr ln1, qkv, atty, res2, ln2, fch, res3;
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd;
  };
  LayerTensors layer(int l) {
    const size_t C = config.channels;
    return {l == 0 ? act.encoded.data() : act.residual3.data() + slab(l - 1, C),
            act.ln1.data() + slab(l, C),
            act.qkv.data() + slab(l, 3 * C),
            act.atty.data() + slab(l, C),
            act.residual2.data() + slab(l, C),
            act.ln2.data() + slab(l, C),
            act.fch.data() + slab(l, 4 * C),
            act.residual3.data() + slab(l, C),
            act.ln1_mean.data() + slab(l, 1),
            act.ln1_rstd.data() + slab(l, 1),
            act.ln2_mean.data() + slab(l, 1),
            act.ln2_rstd.data() + slab(l, 1)};
  }

  // Dropout for site `stream` of the last forward: stream 0 = embedding, then per layer l
  // 1+3l attention probabilities, 2+3l attention projection, 3+3l MLP projection.
  DropoutParams dropout(uint32_t stream) const;
  static uint32_t site_attention(int l) { return 1 + 3 * uint32_t(l); }
  static uint32_t site_attproj(int l) { return 2 + 3 * uint32_t(l); }
  static uint32_t site_mlpproj(int l) { return 3 + 3 * uint32_t(l); }

  // Checks a batch's shape and token ids, uploads the inputs (and targets), returns the number
  // of scored targets (!= -1).
  int upload_batch(const int* inputs, const int* targets, int B_, int T_, const char* what);
  // The mean of the last forward's per-token losses over the scored targets (NaN when none).
  float mean_loss(const int* targets);
  // Runs the embedding, the L blocks and the final LayerNorm on act.inputs (B,T) -> act.lnf;
  // each_qkv, if set, sees each layer's q, k, v (B,T,3C) before its attention (an inference
  // model's next layer overwrites them).
  void forward_trunk(int B, int T, const std::function<void(int l, ConstTensorPtr qkv)>& each_qkv = {});
  // The logits buffer, holding at least `rows` rows of Vp: a training model's, sized for one
  // classifier chunk of max_B x max_T up front; allocated (or grown) here as a use needs more:
  // generation's one row per sequence, or a forward's B x T without targets.
  TensorPtr logits_rows(size_t rows);
  // logits (rows,Vp) = x (rows,C) wte^T: the output projection, tied to the token embedding, no bias.
  void lm_head(TensorPtr logits, ConstTensorPtr x, int rows);
  // The rows of the classifier's chunks for B*T rows (options.classifier_rows at most; all for 0).
  size_t classifier_chunk(size_t rows) const;
  // Whether the logits buffer holds all B*T rows of the last forward's logits: a forward without
  // targets computes them all, one with targets all when they are one classifier chunk (valid
  // while logits_valid is).
  bool logits_whole() const;
  // The classifier over the last forward's B*T rows in chunks, each: logits = lnf wte^T, then
  // `loss_and_dlogits` on the chunk (logits, its first row), then, when `backward`, dlnf = dlogits
  // wte into scratch.bufC_b and dwte += dlogits^T lnf. A single chunk whose logits the buffer
  // still holds (`logits_held`) is not projected again.
  void classifier_chunks(bool backward, bool logits_held,
                         const std::function<void(TensorPtr logits, size_t row, int rows)>& loss_and_dlogits);
  // The backward from dlnf (in scratch.bufC_b) through the final LayerNorm, the blocks and the
  // embeddings; parameter gradients accumulate.
  void backward_trunk();
  // Runs `ops` directly, or as a recorded replay (a CUDA graph) under `key` when the options and
  // the backend allow it: the first call with a key runs directly (lazy set-up inside the ops,
  // such as cuBLAS heuristics, is not recorded), the second records then replays, later ones
  // only replay. `key` must capture everything the ops bake in (shapes, scalars); the buffers
  // are this model's, so the backend sees a recording id unique to (this model, key): several
  // models on one backend (or a new model where a destroyed one was) never replay each other's
  // recordings, which hold the other model's pointers.
  template <class Ops>
  void run_recorded(uint64_t key, Ops&& ops) {
    if (!options.cuda_graphs) {
      ops();
      return;
    }
    const uint64_t* id = nullptr;
    for (const auto& [k, recording] : seen_keys)
      if (k == key) id = &recording;
    if (id == nullptr) {
      if (seen_keys.size() >= 64) seen_keys.clear();  // bounded: keys that never recur (varying dloss)
      seen_keys.emplace_back(key, next_recording_id());
      ops();
      return;
    }
    const uint64_t recording = *id;
    if (backend.replay(recording)) return;
    if (!backend.begin_recording()) {
      ops();
      return;
    }
    try {
      ops();
    } catch (...) {
      backend.abort_recording();
      throw;
    }
    backend.end_recording(recording);
    ENSURE(backend.replay(recording), "model: the recording {} just made cannot be replayed", recording);
  }
  // Drops every recording this model made: they bake in its buffers' addresses, and one of them
  // (the logits, logits_rows) is about to move. Their keys record again from scratch.
  void forget_recordings() {
    for (const auto& [k, recording] : seen_keys) backend.drop_recording(recording);
    seen_keys.clear();
  }
  // A process-wide counter: recording ids are never reused.
  static uint64_t next_recording_id() {
    static std::atomic<uint64_t> counter{0};
    return counter.fetch_add(1, std::memory_order_relaxed);
  }
  // Offset (elements) of tensor p's layer-l slice in the parameter, gradient and moment buffers.
  size_t at(Param p, int l = 0) const;
  // Layer l's slab of a stacked activation: training keeps L of them, inference one that every
  // layer reuses (no backward reads them).
  size_t slab(int l, size_t per_token) const {
    return mode == ModelMode::training ? size_t(l) * max_B * max_T * per_token : 0;
  }

  ModelConfig config;
  Backend& backend;
  int max_B, max_T;
  ModelMode mode;
  ModelOptions options;
  DType dtype;                  // the backend's compute dtype
  ParameterLayout layout;
  // Data parallel (options.data_parallel): the parameter, gradient and compute-copy buffers hold
  // `padded` elements (the layout's N rounded up so that it splits into equal, aligned blocks,
  // one per rank; the tail stays 0), and this rank's AdamW moments cover the parameters
  // [part_begin, part_end): its own block under a sharded optimizer, else [0, N).
  size_t padded = 0;
  size_t part_begin = 0, part_end = 0;
  bool sharded() const { return options.data_parallel != nullptr && options.shard_optimizer; }
  // The fp32 master weights cover [master_begin, master_begin + master.size()): all `padded`
  // parameters, except in bf16 under a sharded optimizer, where a rank keeps the master of its
  // own part only (the layers read the bf16 copy, which every rank gathers whole after AdamW).
  bool master_sharded() const { return sharded() && dtype != DType::fp32; }
  // A bf16 inference model keeps no fp32 master: nothing updates its weights, and the layers read
  // the bf16 copy (a third of the parameter memory: gpt2's 475 MiB + 237 MiB become 237 MiB).
  bool keeps_master() const { return dtype == DType::fp32 || mode == ModelMode::training; }
  size_t master_begin = 0;
  DeviceArray<float> master;    // fp32 parameters: what AdamW updates and checkpoints store
  DeviceTensor params_bf16;     // bf16 only: the compute copy, rewritten from master by each AdamW step
                                // (under ZeRO-1 this rank's block; the others gathered from their owners)
  DeviceTensor grads;           // compute dtype, or fp32 (options.fp32_gradients)
  DeviceArray<float> m, v;      // AdamW moments of [part_begin, part_end)
  Activations act;
  Scratch scratch;

  // State of the last forward, for backward / losses() / logits().
  int B = 0, T = 0;
  bool has_forward = false;     // a forward ran and its activations are intact
  bool has_targets = false;
  bool logits_valid = false;    // false once backward overwrote logits with dlogits
  bool training = false;
  uint64_t dropout_seed = 0;
  int num_targets = 0;
  // run_recorded keys run once directly, each with its backend recording id.
  std::vector<std::pair<uint64_t, uint64_t>> seen_keys;

  // KV cache (L, kv_rows, maxT = max_T, the model's, <= config.max_seq_len, C) for k and v;
  // allocated on first use.
  // kv_rows = options.kv_cache_rows, or max_B when that is 0.
  DeviceTensor kcache, vcache;
  int cache_B = 0, cache_len = 0;
  // Inference helpers (core/model_decode.cpp): the cache's rows; how many rows of `len`
  // positions one forward may take; the logits (first V columns, to host `out`) of `rows` rows
  // of lnf output at `last`, one group of row_group(1) rows at a time.
  int kv_rows() const;
  int row_group(int len) const;
  void project_logits(TensorPtr last, int rows, float* out);
};

}  // namespace gpt2cc
