// GPT2's private state (shared by core/model.cpp, training, and core/model_decode.cpp,
// inference): the parameter/gradient/moment buffers, the activations sized for max_B x max_T,
// the backward scratch and the KV cache. All pointers live in the backend's memory.
//
// Activation memory in floats, with BT = max_B*max_T, L layers, S = attention_saved_floats
// (the CPU backend: max_B*NH*max_T^2, a flash kernel: max_B*NH*max_T):
//   forward : BT*C (encoded) + L*(BT*(C ln1 + 3C qkv + C atty + C res2 + C ln2 + 4C fch + 4C fch_gelu
//             + C res3) + 4*BT (LN stats) + S) + BT*C (lnf) + 2*BT + BT*Vp (logits) + BT (losses)
//   scratch : 2*BT*C + BT*3C + 2*BT*4C + BT*C (dresidual); logits double as dlogits (in place).
// See docs/model.md for the formula worked out for the presets.
#pragma once

#include <cstdint>

#include "core/backend.hpp"
#include "core/config.hpp"
#include "core/model.hpp"
#include "core/params.hpp"

namespace gpt2cc {

// Per-layer activations are stacked over L with a stride of one max_B x max_T slab, so layer
// l's (B,T,C) tensor for any B <= max_B, T <= max_T is the first B*T*C floats of its slab.
struct Activations {
  DeviceArray<float> encoded;     // (B,T,C) embeddings after dropout: the residual stream entering layer 0
  DeviceArray<float> ln1;         // (L,B,T,C)
  DeviceArray<float> ln1_mean;    // (L,B,T)
  DeviceArray<float> ln1_rstd;    // (L,B,T)
  DeviceArray<float> qkv;         // (L,B,T,3C)
  DeviceArray<float> att_saved;   // (L, attention_saved_floats)
  DeviceArray<float> atty;        // (L,B,T,C) attention output before its projection
  DeviceArray<float> residual2;   // (L,B,T,C) x + drop(attproj)
  DeviceArray<float> ln2;         // (L,B,T,C)
  DeviceArray<float> ln2_mean;    // (L,B,T)
  DeviceArray<float> ln2_rstd;    // (L,B,T)
  DeviceArray<float> fch;         // (L,B,T,4C) before GELU
  DeviceArray<float> fch_gelu;    // (L,B,T,4C)
  DeviceArray<float> residual3;   // (L,B,T,C) the block's output
  DeviceArray<float> lnf;         // (B,T,C)
  DeviceArray<float> lnf_mean;    // (B,T)
  DeviceArray<float> lnf_rstd;    // (B,T)
  DeviceArray<float> logits;      // (B,T,Vp); the backward overwrites it with dlogits
  DeviceArray<float> losses;      // (B,T)
  DeviceArray<int> inputs;        // (B,T)
  DeviceArray<int> targets;       // (B,T)
};

// Buffers that live only through one backward (or are reused as forward scratch).
struct Scratch {
  DeviceArray<float> dresidual;   // (B,T,C) the residual-stream gradient: accumulates across layers
  DeviceArray<float> bufC_a;      // (B,T,C) projection outputs (forward), dropout grads (backward)
  DeviceArray<float> bufC_b;      // (B,T,C) d(atty), d(ln1), d(ln2), d(lnf)
  DeviceArray<float> buf3C;       // (B,T,3C) d(qkv)
  DeviceArray<float> buf4C_a;     // (B,T,4C) d(fch_gelu)
  DeviceArray<float> buf4C_b;     // (B,T,4C) d(fch)
};

struct GPT2::Impl {
  Impl(const ModelConfig& config, Backend& backend, int max_B, int max_T, ModelMode mode);
  // Throws Error naming `what` when the model was built for inference only.
  void require_training(const char* what) const;
  // Attention's saved values of layer l: one slab per layer for training, one shared slab for inference.
  float* attention_saved(int l);

  // Dropout for site `stream` of the last forward: stream 0 = embedding, then per layer l
  // 1+3l attention probabilities, 2+3l attention projection, 3+3l MLP projection.
  DropoutParams dropout(uint32_t stream) const;
  static uint32_t site_attention(int l) { return 1 + 3 * uint32_t(l); }
  static uint32_t site_attproj(int l) { return 2 + 3 * uint32_t(l); }
  static uint32_t site_mlpproj(int l) { return 3 + 3 * uint32_t(l); }

  // Runs the embedding, the L blocks and the final LayerNorm on act.inputs (B,T) -> act.lnf.
  void forward_trunk(int B, int T);
  // Offset (floats) of tensor p's layer-l slice in the parameter, gradient and moment buffers.
  size_t at(Param p, int l = 0) const;
  size_t slab(int l, size_t per_token) const { return size_t(l) * max_B * max_T * per_token; }

  ModelConfig config;
  Backend& backend;
  int max_B, max_T;
  ModelMode mode;
  ParameterLayout layout;
  DeviceArray<float> params, grads, m, v;
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

  // KV cache (L, max_B, maxT = config.max_seq_len, C) for k and v; allocated on first use.
  DeviceArray<float> kcache, vcache;
  int cache_B = 0, cache_len = 0;
};

}  // namespace gpt2cc
