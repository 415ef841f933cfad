// mha.h: multi-head attention with n_kv_heads key/value heads (chapter 3) as a mixer.
//
// One code path covers the three names the field uses:
//   MHA  n_kv_heads == n_heads      every query head has its own keys and values
//   GQA  1 < n_kv_heads < n_heads   query head h reads KV head h / (n_heads / n_kv_heads)
//   MQA  n_kv_heads == 1            all query heads share one key and one value head
// Parameters (PyTorch layout (out, in), no biases), back to back in this order:
//   wq (H*dh, d), wk (G*dh, d), wv (G*dh, d), wo (d, H*dh)
// RoPE: half-split pairs (i, i + dh/2) (ROPE_HALF, GPT-NeoX / Llama / Hugging Face), on every dim of
// every query and key head, base rope_theta (rope_local_theta on LAYER_LOCAL layers when nonzero).
// A LAYER_LOCAL layer sees the last sliding_window keys, itself included (i - W < j <= i), and its
// decode cache is a ring buffer of W rows: cache_bytes stops growing at W tokens (chapter 6).
#pragma once
#include "mixer.h"

extern const MixerOps gqa_mixer;

// "MHA", "GQA" or "MQA" for the geometry's n_heads / n_kv_heads.
const char *mha_kind_name(const ModelGeometry *g);
// Keys a query of layer `layer` sees: sliding_window for a LAYER_LOCAL layer, 0 (= all past) otherwise.
int mha_layer_window(const ModelGeometry *g, int layer);
// RoPE base of layer `layer`: rope_local_theta on a local layer when nonzero, else rope_theta.
double mha_layer_rope_theta(const ModelGeometry *g, int layer);
// Convenience for chapter programs: P (H,T,T) = the attention weights of one sequence x (T,d).
// Runs a full forward with its own (allocated, freed) buffers; not for hot paths.
void mha_attention_probs(float *P, const float *x, const float *params, const Mixer *m, int T);

// Chunked prefill: appends n_tokens tokens x (n_tokens, d) to the cache at once and writes their outputs
// out (n_tokens, d), equal to forward at those positions. On a local layer the buffer holds W-1+n_tokens
// tokens while the chunk computes and the last W afterwards; decode steps and prefill chunks mix freely.
void mha_prefill(const Mixer *m, MixerCache *c, float *out, const float *x, const float *params, int n_tokens);
// The most bytes of K/V the cache has held at any moment (a prefill chunk's peak included).
size_t mha_cache_peak_bytes(const MixerCache *c);

// For benchmarks: acts as if n_tokens more tokens had been decoded, writing random keys and values
// instead of computing them (filling a 64K-token cache by prefill costs T^2/2 dot products). The
// contents are meaningless; the cost of the next decode step is the real one.
void mha_cache_fill_random(MixerCache *c, int n_tokens, Rng *rng);
