// mla.h: multi-head latent attention (DeepSeek-V2/V3, chapter 5) as a mixer.
//
// The cache keeps, per token, ONE latent c_kv (kv_lora_rank = dc) and ONE RoPE key k_pe
// (qk_rope_head_dim = dr) shared by all heads, instead of H keys and H values:
//   c_q  = RMSNorm(x Wq_a^T) (q_lora_rank), q = c_q Wq_b^T      (or q = x Wq^T when q_lora_rank == 0)
//   q_h  = [q_nope_h (dn) | q_pe_h (dr)],  q_pe_h <- RoPE
//   [c_kv | k_pe] = x Wkv_a^T,  c_kv <- RMSNorm(c_kv),  k_pe <- RoPE      (what decode caches)
//   k_nope_h = W_UK[h] c_kv (dn),  v_h = W_UV[h] c_kv (dv)               (up-projections, per head)
//   score_h(i,j) = [q_nope_h,i | q_pe_h,i] . [k_nope_h,j | k_pe_j] * (dn+dr)^-0.5, causal
//   out = concat_h(P_h v_h) Wo^T
// Parameters (PyTorch layout (out, in), no biases, DeepSeek's names), back to back in this order:
//   q_lora_rank == 0:  wq (H*(dn+dr), d)
//   q_lora_rank  > 0:  wq_a (q_lora_rank, d), q_norm (q_lora_rank), wq_b (H*(dn+dr), q_lora_rank)
//   then wkv_a (dc+dr, d), kv_norm (dc), wkv_b (H*(dn+dv), dc), wo (d, H*dv).
//   Rows of wkv_b, per head h: the first dn are W_UK[h] (dn,dc), the next dv are W_UV[h] (dv,dc).
// RMSNorm eps 1e-6, gains initialised to 1. RoPE: interleaved pairs (2i, 2i+1) (ROPE_INTERLEAVED, the
// convention of DeepSeek's reference code), on q_pe and k_pe only; base rope_theta (rope_local_theta
// on a LAYER_LOCAL layer when nonzero). A LAYER_LOCAL layer sees the last sliding_window keys, itself
// included, and its decode cache is a ring buffer of that many tokens.
#pragma once
#include "kvquant.h"
#include "mixer.h"
#include "rng.h"

extern const MixerOps mla_mixer;

#define MLA_NORM_EPS 1e-6f

// A small DeepSeek-V3-shaped MLA geometry: every layer global MLA, head_dim dh = d_model / n_heads,
// qk_nope_head_dim = v_head_dim = dh, qk_rope_head_dim = dh/2, kv_lora_rank = d_model/2,
// q_lora_rank = 3*d_model/4 (set it to 0 for direct queries), rope_theta 10000, dtype_bytes 2.
// (d 64, H 4 gives dn = dv = 16, dr = 8, dc = 32, q_lora 48.)  head_dim holds dn + dr, as the
// Hugging Face config reader sets it for MLA.
void mla_geometry_tiny(ModelGeometry *g, int n_layers, int d_model, int n_heads);

// Decode paths, chosen per cache at run time (default: absorbed). Both read the same cache.
//   naive (0):    rebuild k_nope and v of every cached token for every head from c_kv, then attend
//                 as in the forward: O(T * H * (dn+dv) * dc) work per step.
//   absorbed (1): fold W_UK[h] into the query (q~_h = W_UK[h]^T q_nope_h, dc wide) and W_UV[h] into
//                 the output (o_h = W_UV[h] sum_t p_t c_kv_t): O(T * H * (dc+dr)) per step, and no
//                 per-head key or value is ever materialized.
void mla_set_decode_path(MixerCache *c, int absorbed);
int mla_decode_path(const MixerCache *c);   // 1 absorbed, 0 naive

// A quantized cache (chapter 12): from the first token on, the latent c_kv is kept as q's codes and the
// RoPE key k_pe as rope_key's (NULL: q's too; kvquant.h), cache_bytes counts those, and every step
// decodes the held rows before attending: the naive path decodes the vectors themselves, the absorbed one
// reads them in the codes' working domain. (DeepSeek-V3.2's FP8 cache keeps k_pe in bf16 beside an fp8
// latent: rope_key is that choice.) Causal span only (not DSA's selected rows); KIVI only on global layers. The quantizers must
// outlive the cache; q NULL keeps fp32.
void mla_cache_set_quant(MixerCache *c, KvQuant *q, KvQuant *rope_key);

// What the cache holds for the token at position pos (one of the tokens still held):
// c_kv (kv_lora_rank), after kv_norm; k_pe (qk_rope_head_dim), after RoPE.
const float *mla_cache_latent(const MixerCache *c, int pos);
const float *mla_cache_rope_key(const MixerCache *c, int pos);

// Convenience for chapter programs: P (H,T,T) = the attention weights of one sequence x (T,d).
// Runs a full forward with its own (allocated, freed) buffers; not for hot paths.
void mla_attention_probs(float *P, const float *x, const float *params, const Mixer *m, int T);

// Seconds per decode step of layer 0 of g (params: that layer's mixer slice) with `context` tokens
// already cached, through the absorbed (1) or naive (0) path, on `threads` threads. The cache is filled
// with random latents and RoPE keys (no decoding needed), then `reps` steps are timed with
// CLOCK_MONOTONIC, each one at position `context`.
double mla_decode_seconds_per_token(const ModelGeometry *g, const float *params, int context, int absorbed,
                                    int reps, int threads);
// For benchmarks: acts as if n_tokens more tokens had been decoded, with random latents and RoPE keys.
void mla_cache_fill_random(MixerCache *c, int n_tokens, Rng *rng);

// ---- for mechanisms built on MLA (DSA, chapter 7) ---------------------------------------------------
// Views of one layer's MLA weights (NULL where the geometry has no such tensor), and MLA's two input
// projections, so a mechanism on top of MLA reuses them instead of copying them.
typedef struct { float *wq, *wq_a, *q_norm, *wq_b, *wkv_a, *kv_norm, *wkv_b, *wo; } MlaWeights;
// q (N, H*(dn+dr)) from x (N,d), before RoPE. With q_lora_rank > 0 also saves qa = x Wq_a^T and
// cq = q_norm(qa) (N, q_lora_rank) and the norm's rstd (N) (rstd may be NULL in decode).
void mla_query_forward(float *q, float *qa, float *cq, float *rstd, const float *x, const MlaWeights *w,
                       const ModelGeometry *g, int N);
// c_kv (N,dc) = kv_norm(x Wkv_a[:dc]^T), saving the raw latent and rstd (may be NULL); k_pe (N,dr) =
// x Wkv_a[dc:]^T, before RoPE.
void mla_latent_forward(float *ckv, float *ckv_raw, float *rstd, float *kpe, const float *x, const MlaWeights *w,
                        const ModelGeometry *g, int N);

// MLA's forward in two halves, so a mechanism can choose each query's keys in between (DSA's indexer
// reads the query latent the first half saves). act is mla_mixer.act_floats long and leads with P.
//   project: queries, latents, RoPE keys and every head's k_nope, v and whole key, for (B,T);
//   attend:  the attention core over the causal keys (sel NULL) or exactly the keys sel (B,T,T) marks,
//            then out = o Wo^T.
void mla_forward_project(const Mixer *m, float *act, const float *x, const float *params, int B, int T);
void mla_forward_attend(const Mixer *m, float *out, float *act, const float *params, int B, int T,
                        const unsigned char *sel);
// The query latent c_q (B*T, q_lora_rank) the project half saved, or NULL without a query low-rank.
const float *mla_act_query_latent(const Mixer *m, const float *act, int B, int T);
// mla_mixer.backward with the key sets of the forward (sel as given to mla_forward_attend).
void mla_backward_selected(const Mixer *m, float *dx, float *dparams, const float *dout, const float *act,
                           const float *x, const float *params, int B, int T, const unsigned char *sel);

// Decode in two halves: append computes the new token's queries (kept in the cache's scratch) and
// writes its [c_kv | k_pe] into the next slot; attend runs the chosen path for that token over the
// causal span (rows NULL) or over exactly the n_rows cache slots in rows (ascending), then out = o Wo^T.
// mla_mixer.decode is append + attend(NULL).
void mla_cache_append(const Mixer *m, MixerCache *c, const float *x, const float *params);
void mla_cache_attend(MixerCache *c, float *out, const float *params, const int *rows, int n_rows);
// The appended token's query latent c_q (q_lora_rank), or NULL without a query low-rank.
const float *mla_cache_query_latent(const MixerCache *c);
// Tokens appended so far: the position of the next one; and (benchmarks) forgetting the tokens from pos
// on, so the next append is position pos again.
int mla_cache_position(const MixerCache *c);
void mla_cache_rewind(MixerCache *c, int pos);
