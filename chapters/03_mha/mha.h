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
#include "kvquant.h"
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

// A quantized cache (chapter 12): from the first token on, the cache keeps K and V as q's codes
// (kvquant.h), cache_bytes counts those, and every step decodes the held rows before the attention core
// runs. Decode only (no prefill); KIVI only on global layers. q must outlive the cache; NULL keeps fp32.
void mha_cache_set_quant(MixerCache *c, KvQuant *q);

// For benchmarks: acts as if n_tokens more tokens had been decoded, writing random keys and values
// instead of computing them (filling a 64K-token cache by prefill costs T^2/2 dot products). The
// contents are meaningless; the cost of the next decode step is the real one.
void mha_cache_fill_random(MixerCache *c, int n_tokens, Rng *rng);

// ---- the pieces, for mixers built on this attention (chapter 8's gated attention) ------------------
// They run exactly the arithmetic gqa_mixer runs, so a mixer that only changes how q, k, v are made
// (or what happens to o) shares the attention core, its backward and the KV cache.

// RoPE (inverse = 1: its backward) on the first n_rot dims of every head of x (N rows of n_heads *
// head_dim; row r is the token at position r % T), half-split pairs (i, i + n_rot/2).
void mha_rope_rows(float *x, int N, int T, int n_heads, int head_dim, int n_rot, double theta, int inverse);
// The attention core: o (B,T,H*dh) and P (B,H,T,T) from q (B,T,H*dh), k, v (B,T,G*dh) (after RoPE);
// causal, or the last `window` keys when window > 0; scale 1/sqrt(dh); P is exactly 0 where masked.
void mha_attention_forward(float *o, float *P, const float *q, const float *k, const float *v, int B, int T,
                           int H, int G, int dh, int window);
// Its backward: accumulates dq (B,T,H*dh), dk, dv (B,T,G*dh) from d_o (B,T,H*dh).
void mha_attention_backward(float *dq, float *dk, float *dv, const float *d_o, const float *P, const float *q,
                            const float *k, const float *v, int B, int T, int H, int G, int dh, int window);
// The cache gqa_mixer.cache_new makes (for m's n_heads, n_kv_heads, head_dim and layer window), plus
// extra_floats of scratch for the caller's one-step work (mha_cache_scratch). gqa_mixer.cache_free,
// .cache_bytes and mha_cache_peak_bytes apply to it.
MixerCache *mha_cache_new_with_scratch(const Mixer *m, int max_T, size_t extra_floats);
float *mha_cache_scratch(MixerCache *c);
// Tokens the cache has seen: the position of the next token.
int mha_cache_position(const MixerCache *c);
// One decode step with q (H*dh), k, v (G*dh) already made (and rotated) by the caller: appends k, v at
// the next position and writes every query head's output into o (H*dh). gqa_mixer.decode is this
// after its own projections and RoPE.
void mha_cache_step(MixerCache *c, float *o, const float *q, const float *k, const float *v, int n_heads,
                    int head_dim);
