// gdn.h: Gated DeltaNet (Qwen3-Next's linear layers, chapter 9) as a mixer, and the delta-rule core
// that KDA (chapter 10) reuses.
//
// Per token, from x (d_model):
//   [q (Hk*dk) | k (Hk*dk) | v (Hv*dv)] = x [in_proj_q; in_proj_k; in_proj_v]^T, then the short causal
//       depthwise conv + SiLU (conv1d, kernel K = linear_conv_kernel_dim) on all of them
//   z (Hv*dv) = x in_proj_z^T,  b (Hv) = x in_proj_b^T,  a (Hv) = x in_proj_a^T
//   q <- l2norm(q) / sqrt(dk),  k <- l2norm(k)        (per key head, eps 1e-6 inside the sqrt)
//   beta = sigmoid(b),  g = -exp(A_log) * softplus(a + dt_bias),  alpha = exp(g) in (0, 1)
//   value head h reads key head h / (Hv/Hk) (Qwen3-Next: 32 value heads share 16 key heads)
//   state S (dk x dv) per value head:  S <- alpha S;  u = beta (v - S^T k);  S <- S + k u^T;  o = S^T q
//   y_h = RMSNorm(o_h) * norm * silu(z_h)   (eps 1e-6),   out = y out_proj^T
// Parameters (PyTorch layout (out, in), no biases), back to back in this order:
//   in_proj_q (Hk*dk, d), in_proj_k (Hk*dk, d), in_proj_v (Hv*dv, d)   (= one (conv channels, d) matrix)
//   in_proj_z (Hv*dv, d), in_proj_b (Hv, d), in_proj_a (Hv, d)          (= one (Hv*dv + 2Hv, d) matrix)
//   conv1d (2Hk*dk + Hv*dv, 1, K), A_log (Hv), dt_bias (Hv), norm (dv), out_proj (d, Hv*dv)
// Qwen3-Next packs the first four into in_proj_qkvz and b, a into in_proj_ba, interleaved per key head;
// here each piece is its own tensor (same maths, easier to read). Init as Qwen3-Next: A ~ U[1,16],
// A_log = log A; dt log-uniform in [1e-3, 1e-1], dt_bias = softplus^-1(dt); norm = 1; matrices N(0, 0.02^2)
// (out_proj / sqrt(2 n_layers)); conv1d U(-1/sqrt(K), 1/sqrt(K)) (PyTorch's Conv1d default).
//
// Decode keeps the state S (Hv*dk*dv floats) and the conv state (K-1 inputs of the 2Hk*dk + Hv*dv conv
// channels): constant in context. The mixing matrix is the implicit one: o_t = sum_s A[h][t][s] v_s.
#pragma once
#include <stddef.h>

#include "mixer.h"

extern const MixerOps gdn_mixer;

#define GDN_CHUNK 16        // chunk length of the chunked forward (the training and prefill form)
#define GDN_L2NORM_EPS 1e-6f
#define GDN_NORM_EPS 1e-6f

// ---- the delta-rule core (Gated DeltaNet and KDA) ---------------------------------------------------
// Sizes and layout of one batch of delta-rule inputs. All arrays are (B, T, heads, dim) row-major, but
// q/k and v may be views into wider rows: token (b,t)'s head h starts at
//   q, k:  (b*T + t) * qk_stride + h*dk        v, dv:   (b*T + t) * v_stride + h*dv
//   o:     (b*T + t) * Hv*dv + h*dv            beta:    (b*T + t) * Hv + h
//   g:     ((b*T + t) * Hv + h) * g_dim        (one log-decay per head, or one per key channel)
typedef struct {
    int B, T;
    int Hk, Hv;        // key heads (q, k) and value heads (v, state, o); Hv a multiple of Hk
    int dk, dv;
    int g_dim;         // 1: one decay per head, shared by all dk rows of S (Gated DeltaNet); dk: KDA
    int qk_stride, v_stride;
} DeltaDims;

// Token by token, the definition: S <- Diag(exp(g_t)) S; u = beta_t (v_t - S^T k_t); S <- S + k_t u^T;
// o_t = S^T q_t. S (B, Hv, dk, dv): the initial states in, the final states out; NULL starts from 0.
void delta_rule_recurrent(float *o, float *S, const float *q, const float *k, const float *v, const float *beta,
                          const float *g, const DeltaDims *z);
// The same outputs in chunks of C tokens (the last chunk may be shorter). Within a chunk, with G the
// cumulative log-decay from the chunk start and S0 the state entering it:
//   A_ij = beta_i sum_c k_i[c] k_j[c] exp(G_i[c] - G_j[c])   (j < i)
//   (I + A) U = beta (v - (k e^G)^T S0)           (forward substitution: the UT transform; with
//                                                 W = (I+A)^-1 beta k e^G this is U = U~ - W S0, WY form)
//   o_i = (q_i e^G_i)^T S0 + sum_{j<=i} (sum_c q_i[c] k_j[c] e^(G_i[c]-G_j[c])) U_j
//   S1 = Diag(e^G_last) S0 + sum_j (k_j e^(G_last - G_j)) U_j^T
// S_chunks (B, Hv, n_chunks, dk, dv): the state entering each chunk, for backward (may be NULL).
void delta_rule_chunked(float *o, float *S_chunks, const float *q, const float *k, const float *v, const float *beta,
                        const float *g, const DeltaDims *z, int C);
int delta_rule_n_chunks(int T, int C);
// Backward through time: re-runs each chunk token by token from its saved entering state, then walks
// back. Accumulates dq, dk (qk_stride), dv (v_stride), dbeta, dg (same layouts as the inputs).
void delta_rule_backward(float *dq, float *dk, float *dv, float *dbeta, float *dg, const float *d_o,
                         const float *S_chunks, const float *q, const float *k, const float *v, const float *beta,
                         const float *g, const DeltaDims *z, int C);

// ---- benchmark pair: the two prefill forms on the same inputs ---------------------------------------
// Seconds per call of the recurrent (C = 0) or chunked (chunk C) delta-rule core over a batch (B,T) with
// Hk = Hv = H heads of dk = dv = dh, g_dim 1, random normalised inputs; median of reps calls, on the
// current OpenMP thread count.
double gdn_prefill_seconds(int B, int T, int H, int dh, int C, int reps);

// What both linear-attention benchmark pairs (this one and decay.c's) share. Random inputs for `rows`
// (token, head) rows of dh: qkv (3 * rows * dh) = [q | k | v] from N(0, 1), then q and k made unit (q
// also divided by sqrt(dh), as attention scales it), per row beta ~ U(0,1) (skipped if beta is NULL)
// and g ~ -0.1 U(0,1) (a log-decay <= 0).
void linear_bench_inputs(float *qkv, float *beta, float *g, size_t rows, int dh, Rng *rng);
// Monotonic seconds, and the median of sec[0..n) (sorted in place).
double linear_bench_now(void);
double linear_bench_median(double *sec, int n);

// ---- parameter tables (every linear mixer: gdn, kda, lightning, mamba2) -----------------------------
// How param_table_init fills a tensor.
typedef enum {
    INIT_NORMAL,    // N(0, 0.02^2)
    INIT_OUT,       // N(0, 0.02^2 / (2 n_layers)): the projection back into the residual stream (GPT-2)
    INIT_ONES,      // a norm gain
    INIT_CONV,      // U(-1/sqrt(K), 1/sqrt(K)), K the last dim: PyTorch's Conv1d default (depthwise)
    INIT_DECAY,     // A_log, and dt_bias right after it: delta_init_decay
    INIT_WITH_PREV, // filled with the tensor before it (dt_bias)
} ParamInit;
// One tensor: name, shape (its first ndim entries) and init.
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[3];
    ParamInit init;
} ParamSpec;
// out[0..n) = the tensors of spec, back to back from offset 0 in that order (CHECKs n <= cap); returns n.
int param_table(ParamTensor *out, int cap, const ParamSpec *spec, int n);
// Fills params tensor by tensor in table order (the rng stream follows the table); g gives the number of
// layers (INIT_OUT) and the decay init ranges (INIT_DECAY).
void param_table_init(float *params, const ParamSpec *spec, int n, const ModelGeometry *g, Rng *rng);

// ---- the layer's pieces (delta_layer_* below put them together) ------------------------------------
// q, k of every key head from the conv output conv (N, conv_ch) = [q | k | ...]:
// qn = q rq / sqrt(dk), kn = k rk, with rq, rk (N, Hk) = 1/sqrt(|.|^2 + eps).
void delta_qk_norm_forward(float *qn, float *kn, float *rq, float *rk, const float *conv, int N, int conv_ch,
                           int Hk, int dk);
// Accumulates dconv (N, conv_ch) (its q and k columns) from dqn, dkn (N, Hk*dk).
void delta_qk_norm_backward(float *dconv, const float *dqn, const float *dkn, const float *conv, const float *rq,
                            const float *rk, int N, int conv_ch, int Hk, int dk);
// Output norm and gate per value head: y = RMSNorm(o) * w * act(gate), act = silu (GDN) or sigmoid
// (KDA); o, y (N, H*dv), gate rows at stride gate_stride, rstd (N, H) saved.
void delta_gated_norm_forward(float *y, float *rstd, const float *o, const float *gate, int gate_stride,
                              const float *w, int N, int H, int dv, int sigmoid_gate);
// Accumulates d_o (N, H*dv), dgate (stride gate_stride), dw (dv).
void delta_gated_norm_backward(float *d_o, float *dgate, float *dw, const float *dy, const float *o,
                               const float *rstd, const float *gate, int gate_stride, const float *w, int N,
                               int H, int dv, int sigmoid_gate);

// Decay init: A_log[0..n_heads) = log(U[a_lo, a_hi]); dt_bias[0..n_dt) = softplus^-1(dt), dt log-uniform
// in [dt_lo, dt_hi]. The published ranges (Mamba-2, Gated DeltaNet, Kimi Linear) are A in [1, 16] and
// dt in [1e-3, 1e-1]; g's linear_*_init fields override them (decay_init_ranges).
void delta_init_decay(float *A_log, float *dt_bias, int n_heads, int n_dt, const ModelGeometry *g, Rng *rng);
// The ranges g asks for: a[2] (A) and dt[2] (dt), the published defaults where g leaves them 0.
void decay_init_ranges(const ModelGeometry *g, double a[2], double dt[2]);

// Batch 0's core inputs, copied to the front of a GDN or KDA activation slice, so the chapter helpers
// find them knowing only T (the rest of act depends on B). z->T is used, z->B ignored.
typedef struct {
    float *q, *k;      // (T, Hk*dk) normalised
    float *v;          // (T, Hv*dv) after the conv
    float *beta;       // (T, Hv)
    float *g;          // (T, Hv*g_dim) log-decays
} DeltaProbe;
size_t delta_probe_carve(DeltaProbe *p, float *act, const DeltaDims *z);
// Copies sequence 0 of the batch inputs into p.
void delta_probe_fill(DeltaProbe *p, const float *q, const float *k, const float *v, const float *beta,
                      const float *g, const DeltaDims *z);
// A (Hv, T, T), A[h][t][s] = the weight of v_s in o_t: the core is linear in v, so running it with
// one-hot values (v_s = e_s) gives the rows of A.
void delta_probe_mixing_matrix(float *A, const DeltaProbe *p, const DeltaDims *z);
// S (n_times, dk, dv): value head `head`'s state right after tokens times[0..n_times) (each in [0,T)).
void delta_probe_states(float *S, const DeltaProbe *p, const DeltaDims *z, int head, const int *times, int n_times);

// ---- the layer around the core, shared with KDA ------------------------------------------------------
// x (N, d) -> [q | k | v] = x w_qkv^T (N, Cc) -> causal depthwise conv (kernel K) + SiLU -> q, k l2-normed
// -> the core, with beta and g from the mixer's own gates -> o (N, Hv*dv)
// -> y = RMSNorm(o) * norm * act(gate logits from the mixer) -> out = y w_out^T (N, d).
// The mixer adds its gates' projections and its parameter layout; everything else is here.
typedef struct {
    int d, Hk, Hv, dk, dv, K;
    int Cc;            // 2*Hk*dk + Hv*dv conv channels [q | k | v]
    int g_dim;         // log-decays per value head and token: 1 (Gated DeltaNet) or dk (KDA)
    int sigmoid_gate;  // output gate: silu (0, Gated DeltaNet) or sigmoid (1, KDA)
    int chunk;         // chunk length of the training forward
} DeltaLayer;
// The geometry's linear-layer fields (who names the mixer in a failed CHECK: validate first).
// g_dim = dk if per_channel_decay, else 1.
DeltaLayer delta_layer_of(const ModelGeometry *g, const char *who, int per_channel_decay, int sigmoid_gate, int chunk);
// The validate hook both delta-rule mixers start from: a linear layer of `kind` with a short conv.
int delta_layer_validate(const ModelGeometry *g, int layer, const char *who, int kind, char *why, size_t cap);
// The core's view of a (B,T) batch: q, k at stride Hk*dk, v read in place from the conv output (stride Cc).
DeltaDims delta_layer_dims(const DeltaLayer *z, int B, int T);

// The shared parameters: pointers into the mixer's parameters (or their gradients).
typedef struct {
    float *qkv;        // (Cc, d) the q, k, v projections, one after the other
    float *conv;       // (Cc, 1, K)
    float *A_log;      // (Hv)
    float *dt_bias;    // (Hv * g_dim)
    float *norm;       // (dv) output norm gain
    float *out;        // (d, Hv*dv)
} DeltaWeights;

// The shared activations (the mixer carves its own after them).
typedef struct {
    DeltaProbe probe;  // batch 0's core inputs, first: the chapter helpers find them knowing only T
    float *mixed;      // (N, Cc) [q | k | v] before the conv
    float *pre, *conv; // (N, Cc) conv pre-activation and after SiLU; the core reads v from conv
    float *qn, *kn;    // (N, Hk*dk) normalised q (times 1/sqrt(dk)) and k
    float *rq, *rk;    // (N, Hk)
    float *beta;       // (N, Hv) write strengths       } from the mixer's gates
    float *g;          // (N, Hv*g_dim) log-decays       }
    float *o;          // (N, Hv*dv) core output, before the norm
    float *rstd;       // (N, Hv)
    float *y;          // (N, Hv*dv) gated norm output, into the output projection
    float *S_chunks;   // (B, Hv, n_chunks, dk, dv) states entering each chunk
} DeltaAct;
// Carves a from act (NULL: only counts) for (B,T); returns the floats used.
size_t delta_act_carve(DeltaAct *a, float *act, const DeltaLayer *z, int B, int T);
// base + *used as n floats, *used advanced (NULL base: only counts): carving one block into arrays.
static inline float *take_floats(float *base, size_t *used, size_t n) {
    float *p = base ? base + *used : NULL;
    *used += n;
    return p;
}

// Forward up to the gates: mixed, pre, conv, qn, kn, rq, rk from x (B*T, d). conv_state NULL: a training
// forward, each sequence's conv from zero padding; else decode (B = T = 1): the cache's last K-1 conv
// inputs (K-1, Cc), advanced by this token.
void delta_layer_in(DeltaAct *a, float *conv_state, const float *x, const DeltaWeights *w, const DeltaLayer *z,
                    int B, int T);
// beta = sigmoid(b), g = -exp(A_log[h]) softplus(a + dt_bias) (per head, or per key channel when g_dim = dk)
// for N rows: b rows (Hv) at stride b_stride, a rows (Hv*g_dim) at stride a_stride; into a->beta, a->g.
void delta_gates_forward(DeltaAct *a, const float *b, int b_stride, const float *ga, int a_stride,
                         const DeltaWeights *w, const DeltaLayer *z, int N);
// Forward from the gates on: the core, the gated norm with the mixer's gate logits (N rows at stride
// gate_stride) and out (B*T, d). S NULL: a training forward (chunked, entering states saved, batch 0
// copied to the probe); else decode (B = T = 1): the cache's state (Hv, dk, dv), one recurrent step.
void delta_layer_out(float *out, DeltaAct *a, float *S, const float *gate, int gate_stride, const DeltaWeights *w,
                     const DeltaLayer *z, int B, int T);

// Gradient buffers of one backward call (the interface hands backward no scratch): one zeroed block.
typedef struct {
    float *dy, *d_o;       // (N, Hv*dv)
    float *dconv, *dmixed; // (N, Cc) after and before the conv
    float *dqn, *dkn;      // (N, Hk*dk)
    float *dbeta;          // (N, Hv)
    float *dg;             // (N, Hv*g_dim)
    float *mine;           // the mixer's own n_mine floats
} DeltaGrads;
// Allocates the block (free(d->dy) releases it).
void delta_grads_new(DeltaGrads *d, const DeltaLayer *z, int N, size_t n_mine);
// The backward passes, in reverse order of the forward; each accumulates. delta_layer_out_backward:
// dw->out, dw->norm, dgate (stride gate_stride), then through the core d->dqn, dkn, dbeta, dg and
// dconv's v columns. delta_gates_backward: db, da (strides as the forward), dw->A_log, dw->dt_bias.
// delta_layer_in_backward: dconv's q, k columns, the conv, then dx and dw->qkv, dw->conv.
void delta_layer_out_backward(DeltaGrads *d, float *dgate, DeltaWeights *dw, const float *dout, const DeltaAct *a,
                              const float *gate, int gate_stride, const DeltaWeights *w, const DeltaLayer *z, int B,
                              int T);
void delta_gates_backward(float *db, int b_stride, float *da, int a_stride, DeltaWeights *dw, const DeltaGrads *d,
                          const DeltaAct *a, const float *ga, const DeltaWeights *w, const DeltaLayer *z, int N);
void delta_layer_in_backward(float *dx, DeltaWeights *dw, DeltaGrads *d, const DeltaAct *a, const float *x,
                             const DeltaWeights *w, const DeltaLayer *z, int B, int T);

// Decode: the fixed state S and conv state, plus one step's scratch. A mixer's MixerCache starts with it.
typedef struct {
    DeltaLayer z;
    int max_T, n;
    float *S;          // (Hv, dk, dv) the delta-rule state          } the cache
    float *conv_state; // (K-1, Cc) the last K-1 conv inputs          }
    DeltaAct a;        // one step's activations (B = T = 1)
    float *mine;       // the mixer's own n_mine floats of scratch
} DeltaCache;
void delta_cache_init(DeltaCache *c, const DeltaLayer *z, int max_T, size_t n_mine);
void delta_cache_release(DeltaCache *c);
// The state and the conv state, fp32: (Hv*dk*dv + (K-1)*Cc) * 4 bytes from the first token on. This is
// kvcache_fixed_bytes / (linear layers) with state_dtype_bytes = dtype_bytes = 4.
size_t delta_cache_bytes(const DeltaCache *c);

// What the chapters draw, from the act of a forward (sequence 0 of T tokens): the implicit mixing
// matrix A (Hv, T, T); S (n_times, dk, dv) of value head `head` after tokens times[i]; beta (T, Hv) and
// the decays alpha = exp(g) (T, Hv*g_dim).
int delta_n_mix_heads(const ModelGeometry *g, int layer);
void delta_layer_mixing_matrix(float *A, const float *act, const DeltaLayer *z, int T);
void delta_layer_states_at(float *S, const float *act, const DeltaLayer *z, int T, int head, const int *times,
                           int n_times);
void delta_layer_gates(float *beta, float *alpha, const float *act, const DeltaLayer *z, int T);
// A small geometry: every layer LAYER_LINEAR of `kind`, Hv = n_heads value heads and Hk key heads of
// head_dim dh = d_model / n_heads, dk = dv = dh, K = 4, fp32.
void delta_geometry_tiny(ModelGeometry *g, const char *name, LinearKind kind, int n_layers, int d_model, int n_heads,
                         int n_key_heads);

// ---- for the chapter ---------------------------------------------------------------------------------
// From the act of a gdn forward (sequence 0):
// S (n_times, dk, dv) state of value head `head` after tokens times[i] (recomputed with the recurrence).
void gdn_states_at(const Mixer *m, float *S, const float *act, int T, int head, const int *times, int n_times);
// beta, alpha (T, Hv): the write strength and the decay exp(g) per token and value head.
void gdn_gates(const Mixer *m, float *beta, float *alpha, const float *act, int T);
// A small Qwen3-Next-shaped geometry: every layer LAYER_LINEAR Gated DeltaNet with Hv value heads of
// head_dim dh = d_model / n_heads, Hk = n_heads/2 key heads (at least 1), dk = dv = dh, K = 4, fp32.
void gdn_geometry_tiny(ModelGeometry *g, int n_layers, int d_model, int n_heads);
