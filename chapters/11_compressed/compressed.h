// compressed.h: DeepSeek V4's attention layers (chapter 11) as three mixers:
//   "csa"    Compressed Sparse Attention: every group of m tokens becomes one KV entry (overlapping
//            groups: each entry mixes 2m tokens), and a lightning indexer picks the top-k entries;
//   "hca"    Heavily Compressed Attention: much larger m, disjoint groups, every entry attended;
//   "v4swa"  V4's window-only layer (compress ratio 0): the raw window alone.
// Each keeps a sliding window of the last W raw tokens (sliding_window, itself included) next to its
// compressed entries, and all of them are ONE shared KV head of head_dim with K = V (kv_one_tensor):
// a query reads the same vector as its key and as its value.
//
// One layer, d = d_model, H query heads of dh = head_dim, rd = head_dim * partial_rotary_factor rotated
// dims (the LAST rd of each vector, interleaved pairs, as V4's reference code), m = compress_ratios[l]:
//   q_h  = rms(x Wq^T)_h                    each head RMS-normalised, no gain; RoPE at t
//   kv_t = RMSNorm(x_t Wkv^T) * kv_norm     the raw entry of token t (dh); RoPE at t
// The compressor (CSA: c = 2, HCA: c = 1), over the tokens of one sequence:
//   C_t = x_t Wc^T (c*dh),  Z_t = x_t Wg^T + ape[t mod m] (c*dh)    a learned positional bias per slot
//   entry s, channel j: a softmax over its tokens of Z, weighting C (per channel):
//     HCA: the tokens of group s (sm .. sm+m-1), channels j of C and Z;
//     CSA: those tokens' channels dh + j, and the previous group's (s-1)m .. sm-1 channels j, so each
//          entry sees 2m tokens and every token feeds two entries (group 0 has no previous group);
//   E_s = RMSNorm(sum softmax(Z) C) * norm, RoPE at position s*m (its first token).
// Entry s is complete once token sm + m - 1 has been seen, so query t sees entries s < (t+1)/m.
// The indexer (CSA; Hi = index_n_heads heads of di = index_head_dim, ri = min(rd, di) rotated dims):
//   iq_t = x_t Wiq^T (Hi*di), RoPE at t;  iw_t = x_t Wproj^T * Hi^-0.5 * di^-0.5
//   its own compressor (c = 2, width di) gives one key IK_s per entry, as above;
//   I(t, s) = sum_h iw_t,h ReLU(iq_t,h . IK_s)   (dsa_index_score), top-k = index_topk of them.
// Attention: query t reads the raw entries of tokens max(0, t-W+1) .. t, then its entries (HCA: all it
// sees; CSA: the top-k, ascending), with the learned per-head sink when the layer has sinks, scale
// dh^-0.5; o_h = sum p kv (K = V), the last rd dims of o_h rotated back by -t (the values carried the
// rotation), out = o Wo^T.
//
// What the tiny layers leave out of V4, and why: queries are projected directly (no q_lora_rank), the
// output is one Wo (no grouped low-rank o_groups / o_lora_rank), one RoPE base for every layer (V4
// uses compress_rope_theta with YaRN on compressed layers), no Hadamard rotation or fp8/fp4
// quantisation of the indexer (a rotation leaves every dot product unchanged; we stay in fp32).
//
// Training: as DSA (chapter 7), the indexer learns only from its own KL loss toward the main attention
// (its weights on the attended entries, summed over heads and L1-normalised) and the main path treats
// the selection as a constant; the phase switch and the KL coefficient are chapter 7's (dsa_set_phase,
// dsa_set_kl_coef): DSA_DENSE attends every visible entry, DSA_SPARSE the top-k, DSA_WINDOW the k most
// recent entries (same budget, no indexer). dsa_train runs the two stages for a CSA model too.
//
// Parameters (PyTorch layout (out, in), no biases; V4's names), back to back in this order:
//   wq (H*dh, d), wkv (dh, d), kv_norm (dh),
//   compressor.wkv (c*dh, d), compressor.wgate (c*dh, d), compressor.ape (m, c*dh), compressor.norm (dh)
//     [csa, hca],
//   indexer.wq (Hi*di, d), indexer.weights_proj (Hi, d), indexer.compressor.wkv (2*di, d),
//   indexer.compressor.wgate (2*di, d), indexer.compressor.ape (m, 2*di), indexer.compressor.norm (di)
//     [csa],
//   attn_sink (H) [when the layer has sinks], wo (d, H*dh).
// RMSNorm eps 1e-6. Norm gains start at 1, ape and sinks at 0, matrices N(0, 0.02^2) (wo / sqrt(2L)).
//
// Decode keeps, as V4's reference decode does, one buffer of W ring rows (raw entries) plus one row per
// completed entry (dh each), the indexer's keys (di per entry, CSA), and the compressor's state: the
// projections C and Z of the group being filled (and, CSA, of the previous group), 2 x (c*m) x (c*dh)
// floats, plus 2 x (2m) x (2di) for the indexer's compressor. That state is where the partial group of
// raw tokens waits until it completes. All fp32: cache_bytes = 4 x (min(n, W) dh + floor(n/m) (dh + di))
// + 4 x state, which is kvcache_total_bytes with dtype_bytes 4.
#pragma once
#include <stddef.h>

#include "mixer.h"

extern const MixerOps csa_mixer, hca_mixer, v4swa_mixer;

#define V4_NORM_EPS 1e-6f

// A tiny V4-shaped geometry of n_layers: H query heads of head_dim sharing one KV head (K = V), the
// last quarter of each head rotating, a raw window of `window`, learned sinks on every layer, every
// layer a window-only layer (LAYER_LOCAL) until v4_set_layer makes it CSA or HCA. dtype_bytes 4.
void v4_geometry_tiny(ModelGeometry *g, int n_layers, int d_model, int n_heads, int head_dim, int window);
// Makes layer l compressed with ratio m: CSA (with the geometry's indexer, index_n_heads > 0 must be set)
// when csa, else HCA; m = 0 makes it window-only again.
void v4_set_layer(ModelGeometry *g, int l, int m, int csa);

// The mixer of a V4 layer kind: csa, hca or v4swa for geometry g's layer l.
const MixerOps *v4_mixer_of(const ModelGeometry *g, int l);

// ---- what the chapter draws (batch element 0 of a forward at (B,T)) -------------------------------
// Keys per sequence in the forward's buffer: T raw entries then T/m compressed ones (T for v4swa).
int compressed_n_keys(const Mixer *m, int T);
// Main attention weights P (H, T, compressed_n_keys): column j < T is token j's raw entry, column T + s
// entry s; exactly 0 where not read. psink (H, T) the sink's weight (zeros without sinks; may be NULL).
void compressed_attention(const Mixer *m, float *P, float *psink, const float *act, int B, int T);
// Which entries each query attended, every sequence: sel (B, T, T/m), 1 where query t read entry s.
void compressed_selected(const Mixer *m, unsigned char *sel, const float *act, int B, int T);
// The compressor's softmax weight of each token in each entry, averaged over the dh channels:
// share (T/m, T), share[s][j] (0 for tokens the entry does not cover); each row sums to 1.
void compressed_entry_share(const Mixer *m, float *share, const float *act, int B, int T);
// The indexer's scores I (T, T/m), 0 where the entry is not yet visible (CSA only).
void compressed_index_scores(const Mixer *m, float *I, const float *act, int B, int T);
// The indexer's loss of that forward (CSA): mean over the B*T queries of KL(p_t || softmax(I_t)) over
// the attended entries, without the coefficient. Its gradient is what backward adds.
double compressed_index_kl(const Mixer *m, const float *act, int B, int T);

// ---- decode, for tests and benchmarks ----------------------------------------------------------------
// Tokens decoded so far, and entries completed.
int compressed_cache_position(const MixerCache *c);
int compressed_cache_entries(const MixerCache *c);
// For benchmarks: acts as if n_tokens more tokens had been decoded, with random raw entries, compressed
// entries and indexer keys (the compressor's state holds a partial group as it would); a step's cost
// does not depend on the values.
void compressed_cache_fill_random(MixerCache *c, int n_tokens, Rng *rng);
// Seconds per decode step of layer `layer` of g (params: that layer's slice) with `context` tokens
// already held (random contents), timed over `reps` steps at position `context`, on `threads` threads.
double compressed_decode_seconds_per_token(const ModelGeometry *g, int layer, const float *params, int context,
                                           int reps, int threads);
