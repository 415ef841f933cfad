// dsa.h: DeepSeek Sparse Attention (DeepSeek-V3.2, chapter 7) as a mixer: chapter 5's MLA whose
// queries attend only to the top-k keys a small "lightning indexer" picks for them.
//
// The lightning indexer (Hi = index_n_heads small heads of width di = index_head_dim):
//   q^I_{t,h} = c_q,t Wq^I (from MLA's query latent c_q; from x when q_lora_rank == 0)
//   k^I_s     = LayerNorm(x_s Wk^I)                         ONE key per token, shared by the Hi heads
//   w_{t,h}   = (x_t W_w)_h * Hi^-0.5 * di^-0.5             per-token head weights
//   I_{t,s}   = sum_h w_{t,h} ReLU(q^I_{t,h} . k^I_s)        s <= t (causal)
// RoPE: as in DeepSeek's reference Indexer, the FIRST ri = min(qk_rope_head_dim, di) dims of q^I and
// k^I rotate (interleaved pairs, the layer's rope_theta), the rest do not: without any position signal
// the indexer could not learn "the previous token". (The reference also applies a Hadamard rotation
// and fp8 quantisation; the rotation leaves every dot product unchanged and we stay in fp32.)
// The selector keeps, per query t, the k = min(index_topk, t+1) keys with the largest I_{t,s}; ties go
// to the lower index, so the set is unique. MLA's logits outside the set become -inf (weight exactly 0).
//
// Training (what the mixer interface cannot say, and how it is done here):
//  - the main attention's gradient never reaches the indexer: the selection is a constant mask for the
//    main path (as a top-k is), and the indexer's inputs (x, c_q) are detached for its own loss;
//  - the indexer learns from its own loss, the KL divergence from the main attention, summed over the
//    heads and L1-normalised, p_{t,s} = sum_h P_h(t,s) / H, to q_t = softmax_s(I_{t,s}) over the keys
//    the query attended to (all s <= t in the dense phase, the selected set in the sparse phase):
//        L_I = kl_coef * mean over the B*T queries of KL(p_t || q_t).
//    The mixer has no loss of its own, so dsa_mixer.backward ADDS d L_I / d (indexer params) to
//    dparams itself, from the P and the indexer activations the forward saved. (So backward is
//    "d out/d params . dout" for the MLA params and x, plus the KL gradient for the indexer params.)
//  - phases, a process-wide switch read by forward AND decode (dsa_set_phase):
//      DSA_DENSE   warm-up: the main attention is dense (plain MLA), the indexer learns to imitate it;
//      DSA_SPARSE  the default: the main attention sees only the top-k keys;
//      DSA_WINDOW  not DSA: the same budget of k keys, but the last k (a sliding window), for the
//                  chapter's "learned, not fixed, sparsity" comparison.
//    dsa_train runs the two stages of DeepSeek-V3.2's recipe: dense warm-up, then sparse training.
//
// Parameters: MLA's tensors (05_mla/mla.h, same names, same order), then the indexer's:
//   indexer.wq_b (Hi*di, q_lora_rank)   [indexer.wq (Hi*di, d) when q_lora_rank == 0]
//   indexer.wk (di, d), indexer.k_norm (di) LayerNorm gain (init 1), indexer.k_norm_bias (di) (init 0),
//   indexer.weights_proj (Hi, d).   LayerNorm eps 1e-6.
// Decode caches, per token, MLA's c_kv (dc) and k_pe (dr) plus the indexer key k^I (di): fp32 bytes
// 4*(dc+dr+di), kvcache's formula for a geometry with index_n_heads > 0. A step scores every cached
// token with the indexer (O(T*Hi*di)) and runs MLA's absorbed attention over the k selected entries
// only (O(k*H*(dc+dr)) instead of O(T*H*(dc+dr))). Layers must be global (no sliding window).
#pragma once
#include "mixer.h"
#include "model.h"
#include "tasks.h"
#include "train.h"

extern const MixerOps dsa_mixer;

#define DSA_LN_EPS 1e-6f

typedef enum { DSA_DENSE = 0, DSA_SPARSE = 1, DSA_WINDOW = 2 } DsaPhase;
void dsa_set_phase(DsaPhase phase);   // default DSA_SPARSE
DsaPhase dsa_phase(void);
void dsa_set_kl_coef(float coef);     // default 1
float dsa_kl_coef(void);

// chapter 5's tiny MLA geometry (mla_geometry_tiny) plus an indexer of index_n_heads x index_head_dim
// choosing index_topk keys.
void dsa_geometry_tiny(ModelGeometry *g, int n_layers, int d_model, int n_heads, int index_n_heads,
                       int index_head_dim, int index_topk);

// The selector: writes the k = min(topk, n) indices of the largest scores (n), ascending, into sel (k)
// and returns k. Ties go to the lower index. work (n) is scratch. O(n) on average (quickselect).
int dsa_select_topk(int *sel, int *work, const float *scores, int n, int topk);

// What a forward over (B,T) saved: I (B,T,T) the indexer scores (0 above the diagonal); mask (B,T,T)
// 1 where query i attended to key j (the selected set, or all j <= i in the dense phase). (Batch
// element 0's attention weights P (H,T,T) are mixing_matrix.)
void dsa_index_scores(const Mixer *m, float *I, const float *act, int B, int T);
void dsa_attended(const Mixer *m, unsigned char *mask, const float *act, int B, int T);
// The indexer's loss of that forward: mean over the B*T queries of KL(p_t || softmax(I_t)) over the
// attended keys (without kl_coef). Its gradient is what backward adds (times kl_coef).
double dsa_index_kl(const Mixer *m, const float *act, int B, int T);

// The indexer key the cache holds for the token at pos (after LayerNorm and RoPE), (index_head_dim).
const float *dsa_cache_index_key(const MixerCache *c, int pos);

// Seconds per sparse decode step of layer 0 of g (params: that layer's dsa slice) with `context` tokens
// already cached (random latents, RoPE keys and indexer keys), timed over `reps` steps at position
// `context` on `threads` threads, like mla_decode_seconds_per_token (whose absorbed path is the dense peer).
// index_seconds (may be NULL) gets the time of the indexer's part alone: its scan and the top-k selection.
double dsa_decode_seconds_per_token(const ModelGeometry *g, const float *params, int context, int reps, int threads,
                                    double *index_seconds);

// DeepSeek-V3.2's two training stages on one model: dense_steps in DSA_DENSE (the indexer warms up on
// the dense attention), then c->steps - dense_steps in DSA_SPARSE, each a train_run with its own
// warmup + cosine schedule and fresh AdamW moments (the paper's stages have separate optimizers too);
// the sparse stage draws its batches from seed c->seed + 1. r holds both stages' losses (c->steps),
// their summed time, and the held-out metrics after the sparse stage. Leaves the phase DSA_SPARSE.
void dsa_train(Model *m, const Task *task, const TrainConfig *c, int dense_steps, TrainResult *r);
