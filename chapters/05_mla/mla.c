// mla.c: multi-head latent attention (DeepSeek-V2/V3): forward, backward, two cached decode paths
// (naive and absorbed), cache accounting and the attention matrices it draws.
//
// Dims used throughout: d = d_model, H heads, qr = q_lora_rank, dc = kv_lora_rank, dn = qk_nope_head_dim,
// dr = qk_rope_head_dim, dv = v_head_dim; dqk = dn + dr (one head's query/key), dkv = dn + dv (one
// head's rows of wkv_b: W_UK[h] then W_UV[h]). N = B*T rows.
//
// The forward (training, prefill) runs the naive form: it up-projects the latent into every head's
// k_nope and v once for the whole sequence. Decode keeps only [c_kv | k_pe] per token (dc + dr
// elements, DeepSeek-V3: 512 + 64 = 576) and either rebuilds the heads' K/V from it (naive) or folds
// the up-projections into the query and the output (absorbed). All three give the same numbers.
#include "05_mla/mla.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "03_mha/mha.h"   // mha_layer_window, mha_layer_rope_theta: layer kinds mean the same here
#include "attention.h"
#include "check.h"
#include "kvquant.h"
#include "mathx.h"

typedef struct { int d, H, qr, dc, dn, dr, dv, dqk, dkv; } Dims;

static Dims dims_of(const ModelGeometry *g) {
    CHECK(g->attn == ATTN_MLA, "mla: geometry '%s' is not MLA", g->name);
    Dims z = {.d = g->d_model, .H = g->n_heads, .qr = g->q_lora_rank, .dc = g->kv_lora_rank,
              .dn = g->qk_nope_head_dim, .dr = g->qk_rope_head_dim, .dv = g->v_head_dim};
    z.dqk = z.dn + z.dr;
    z.dkv = z.dn + z.dv;
    CHECK(z.d > 0 && z.H > 0 && z.dc > 0 && z.dv > 0 && z.qr >= 0 && z.dn >= 0 && z.dr >= 0 && z.dqk > 0,
          "mla: impossible geometry d %d H %d q_lora %d dc %d dn %d dr %d dv %d", z.d, z.H, z.qr, z.dc, z.dn,
          z.dr, z.dv);
    CHECK(z.dr % 2 == 0, "mla: qk_rope_head_dim %d must be even (RoPE pairs)", z.dr);
    return z;
}

// ---- parameters ----------------------------------------------------------------------------------

enum { WQ, WQ_A, Q_NORM, WQ_B, WKV_A, KV_NORM, WKV_B, WO, N_SLOTS };
static const char *const slot_names[N_SLOTS] = {"wq", "wq_a", "q_norm", "wq_b", "wkv_a", "kv_norm", "wkv_b", "wo"};

// Shapes and offsets of the parameter tensors; ndim[s] = 0 for a tensor this geometry does not have
// (wq with a query low-rank, wq_a/q_norm/wq_b without). Returns the total in floats.
static size_t layout(const Dims *z, size_t off[N_SLOTS], int ndim[N_SLOTS], int64_t shape[N_SLOTS][2]) {
    int64_t q_out = (int64_t)z->H * z->dqk;
    int64_t s[N_SLOTS][2] = {
        [WQ] = {q_out, z->d},
        [WQ_A] = {z->qr, z->d},
        [Q_NORM] = {z->qr, 1},
        [WQ_B] = {q_out, z->qr},
        [WKV_A] = {z->dc + z->dr, z->d},
        [KV_NORM] = {z->dc, 1},
        [WKV_B] = {(int64_t)z->H * z->dkv, z->dc},
        [WO] = {z->d, (int64_t)z->H * z->dv},
    };
    size_t total = 0;
    for (int i = 0; i < N_SLOTS; i++) {
        int present = i == WQ ? z->qr == 0 : (i == WQ_A || i == Q_NORM || i == WQ_B) ? z->qr > 0 : 1;
        ndim[i] = !present ? 0 : (i == Q_NORM || i == KV_NORM) ? 1 : 2;
        shape[i][0] = s[i][0];
        shape[i][1] = s[i][1];
        off[i] = total;
        if (ndim[i]) total += (size_t)(s[i][0] * s[i][1]);
    }
    return total;
}

// The weights as pointers into a parameter (or gradient) slice; NULL where absent.

static MlaWeights weights_at(const Dims *z, float *params) {
    size_t off[N_SLOTS];
    int nd[N_SLOTS];
    int64_t shape[N_SLOTS][2];
    layout(z, off, nd, shape);
    float *p[N_SLOTS];
    for (int i = 0; i < N_SLOTS; i++) p[i] = nd[i] ? params + off[i] : NULL;
    return (MlaWeights){p[WQ], p[WQ_A], p[Q_NORM], p[WQ_B], p[WKV_A], p[KV_NORM], p[WKV_B], p[WO]};
}

// ---- pieces shared by forward and decode -----------------------------------------------------------

// q (N, H*dqk) from x (N,d). With a query low-rank also saves qa = x Wq_a^T and cq = q_norm(qa)
// (N,qr) and the norm's rstd (N) (rstd may be NULL in decode).
static void query_forward(float *q, float *qa, float *cq, float *rstd, const float *x, const MlaWeights *w,
                          const Dims *z, int N) {
    if (z->qr == 0) {
        linear_forward(q, x, w->wq, NULL, N, z->d, z->H * z->dqk);
        return;
    }
    linear_forward(qa, x, w->wq_a, NULL, N, z->d, z->qr);
    rmsnorm_forward(cq, rstd, qa, w->q_norm, N, z->qr, MLA_NORM_EPS);
    linear_forward(q, cq, w->wq_b, NULL, N, z->qr, z->H * z->dqk);
}

// [c_kv | k_pe] = x Wkv_a^T, as two products: rows 0..dc-1 of wkv_a make the latent, rows dc..dc+dr-1
// the RoPE key. ckv_raw (N,dc) before kv_norm, ckv (N,dc) after, rstd (N) (may be NULL), kpe (N,dr)
// not yet rotated.
static void latent_forward(float *ckv, float *ckv_raw, float *rstd, float *kpe, const float *x,
                           const MlaWeights *w, const Dims *z, int N) {
    linear_forward(ckv_raw, x, w->wkv_a, NULL, N, z->d, z->dc);
    linear_forward(kpe, x, w->wkv_a + (size_t)z->dc * z->d, NULL, N, z->d, z->dr);
    rmsnorm_forward(ckv, rstd, ckv_raw, w->kv_norm, N, z->dc, MLA_NORM_EPS);
}

// RoPE (interleaved pairs, DeepSeek's convention) or its inverse (the backward) on the q_pe part of
// every head of N query rows (N, H*dqk); row r is the token at position r % T.
static void rope_queries(float *q, int N, int T, const Dims *z, double theta, int inverse) {
    for (int r = 0; r < N; r++)
        for (int h = 0; h < z->H; h++)
            rope_apply(q + ((size_t)r * z->H + h) * z->dqk + z->dn, r % T, z->dr, theta, ROPE_INTERLEAVED, inverse);
}

// The same on the shared RoPE keys k_pe (N, dr): one key per token, not one per head.
static void rope_keys(float *kpe, int N, int T, int dr, double theta, int inverse) {
    for (int r = 0; r < N; r++) rope_apply(kpe + (size_t)r * dr, r % T, dr, theta, ROPE_INTERLEAVED, inverse);
}

// First key query i may see: 0 for causal attention, i - W + 1 under a window of W keys.
static int first_key(int i, int W) { return W > 0 && i - W + 1 > 0 ? i - W + 1 : 0; }

// ---- activations saved by forward -----------------------------------------------------------------

// P comes first so batch 0's attention matrices sit at offset 0 whatever B is (mixing_matrix knows T).
typedef struct {
    float *P;        // (B,H,T,T) attention weights, exactly 0 where masked
    float *q;        // (N,H*dqk) queries, q_pe rotated
    float *qa, *cq;  // (N,qr) query latent before / after q_norm (only with q_lora_rank > 0)
    float *rstd_q;   // (N)
    float *ckv_raw;  // (N,dc) latent before kv_norm
    float *ckv;      // (N,dc) latent after kv_norm: what decode caches
    float *rstd_kv;  // (N)
    float *kpe;      // (N,dr) shared RoPE keys, rotated: what decode caches
    float *kv;       // (N,H*dkv) per head [k_nope | v] = c_kv [W_UK[h] | W_UV[h]]^T
    float *k;        // (N,H*dqk) per head the whole key [k_nope_h | k_pe], what the attention core reads
    float *o;        // (N,H*dv) head outputs, before wo
} MlaAct;

// Hands out the next n floats of base (NULL when only counting).
static float *take(float *base, size_t *used, size_t n) {
    float *p = base ? base + *used : NULL;
    *used += n;
    return p;
}

// Points a's fields into act (may be NULL) and returns the floats they need.
static size_t act_carve(MlaAct *a, float *act, const Dims *z, int B, int T) {
    size_t N = (size_t)B * T, used = 0, qr = (size_t)z->qr;
    a->P = take(act, &used, (size_t)B * z->H * T * T);
    a->q = take(act, &used, N * z->H * z->dqk);
    a->qa = take(act, &used, N * qr);
    a->cq = take(act, &used, N * qr);
    a->rstd_q = take(act, &used, qr ? N : 0);
    a->ckv_raw = take(act, &used, N * z->dc);
    a->ckv = take(act, &used, N * z->dc);
    a->rstd_kv = take(act, &used, N);
    a->kpe = take(act, &used, N * z->dr);
    a->kv = take(act, &used, N * z->H * z->dkv);
    a->k = take(act, &used, N * z->H * z->dqk);
    a->o = take(act, &used, N * z->H * z->dv);
    return used;
}

// ---- MixerOps ------------------------------------------------------------------------------------

static int mla_param_tensors(const ModelGeometry *g, int layer, ParamTensor *out, int cap) {
    (void)layer;
    Dims z = dims_of(g);
    size_t off[N_SLOTS];
    int nd[N_SLOTS], n = 0;
    int64_t shape[N_SLOTS][2];
    layout(&z, off, nd, shape);
    for (int i = 0; i < N_SLOTS; i++) {
        if (!nd[i]) continue;
        CHECK(n < cap, "mla: param_tensors needs more than %d slots", cap);
        memset(&out[n], 0, sizeof out[n]);
        snprintf(out[n].name, sizeof out[n].name, "%s", slot_names[i]);
        out[n].ndim = nd[i];
        out[n].shape[0] = shape[i][0];
        if (nd[i] == 2) out[n].shape[1] = shape[i][1];
        out[n].offset = off[i];
        n++;
    }
    return n;
}

static void mla_init(const Mixer *m, float *params, Rng *rng) {
    Dims z = dims_of(m->g);
    size_t off[N_SLOTS];
    int nd[N_SLOTS];
    int64_t shape[N_SLOTS][2];
    layout(&z, off, nd, shape);
    int L = m->g->n_layers > 0 ? m->g->n_layers : 1;
    for (int i = 0; i < N_SLOTS; i++) {
        long n = (long)(shape[i][0] * shape[i][1]);
        if (!nd[i]) continue;
        if (nd[i] == 1) {
            for (long k = 0; k < n; k++) params[off[i] + k] = 1.0f;   // RMSNorm gains start at 1
        } else {
            // GPT-2: the projection back into the residual stream is scaled by 1/sqrt(2 * n_layers)
            float std = i == WO ? 0.02f / sqrtf(2.0f * (float)L) : 0.02f;
            rng_fill_normal(rng, params + off[i], n, std);
        }
    }
}

static size_t mla_act_floats(const ModelGeometry *g, int layer, int B, int T) {
    (void)layer;
    Dims z = dims_of(g);
    MlaAct a;
    return act_carve(&a, NULL, &z, B, T);
}

// The heads as the attention core sees them: H query heads, each with its own key and value (G = H),
// keys dn + dr wide, values dv, scale (dn + dr)^-0.5.
static AttnHeads heads_naive(const Dims *z) {
    return (AttnHeads){.n_heads = z->H, .n_kv_heads = z->H, .dk = z->dqk, .dv = z->dv,
                       .scale = 1.0f / sqrtf((float)z->dqk)};
}

// The batch as the core reads it: queries a.q, keys a.k, values inside a.kv (head h's v at h*dkv + dn).
static AttnBatch batch_naive(const Dims *z, const MlaAct *a, int B, int T, int W, const unsigned char *sel) {
    return (AttnBatch){.B = B, .T = T, .window = W, .sel = sel, .q = a->q, .q_stride = (size_t)z->H * z->dqk,
                       .k = a->k, .k_stride = (size_t)z->H * z->dqk, .k_head = (size_t)z->dqk, .v = a->kv + z->dn,
                       .v_stride = (size_t)z->H * z->dkv, .v_head = (size_t)z->dkv};
}

void mla_forward_project(const Mixer *m, float *act, const float *x, const float *params, int B, int T) {
    Dims z = dims_of(m->g);
    int N = B * T;
    double theta = mha_layer_rope_theta(m->g, m->layer);
    MlaWeights w = weights_at(&z, (float *)params);   // read only
    MlaAct a;
    act_carve(&a, act, &z, B, T);

    query_forward(a.q, a.qa, a.cq, a.rstd_q, x, &w, &z, N);           // (N, H*dqk)
    rope_queries(a.q, N, T, &z, theta, 0);
    latent_forward(a.ckv, a.ckv_raw, a.rstd_kv, a.kpe, x, &w, &z, N);  // (N,dc), (N,dr)
    rope_keys(a.kpe, N, T, z.dr, theta, 0);
    // the naive form: every head's k_nope and v from the latent, for the whole sequence at once, and
    // every head's whole key [k_nope_h | k_pe] (the shared k_pe copied next to each head's k_nope)
    linear_forward(a.kv, a.ckv, w.wkv_b, NULL, N, z.dc, z.H * z.dkv);  // (N, H*(dn+dv))
    for (int r = 0; r < N; r++)
        for (int h = 0; h < z.H; h++) {
            float *kh = a.k + ((size_t)r * z.H + h) * z.dqk;
            memcpy(kh, a.kv + ((size_t)r * z.H + h) * z.dkv, sizeof(float) * (size_t)z.dn);
            memcpy(kh + z.dn, a.kpe + (size_t)r * z.dr, sizeof(float) * (size_t)z.dr);
        }
}

const float *mla_act_query_latent(const Mixer *m, const float *act, int B, int T) {
    Dims z = dims_of(m->g);
    MlaAct a;
    act_carve(&a, (float *)act, &z, B, T);
    return z.qr > 0 ? a.cq : NULL;
}

void mla_forward_attend(const Mixer *m, float *out, float *act, const float *params, int B, int T,
                        const unsigned char *sel) {
    Dims z = dims_of(m->g);
    MlaWeights w = weights_at(&z, (float *)params);
    MlaAct a;
    act_carve(&a, act, &z, B, T);
    AttnHeads heads = heads_naive(&z);
    AttnBatch batch = batch_naive(&z, &a, B, T, mha_layer_window(m->g, m->layer), sel);
    attn_batch_forward(a.o, (size_t)z.H * z.dv, a.P, NULL, &batch, &heads);
    linear_forward(out, a.o, w.wo, NULL, B * T, z.H * z.dv, z.d);   // (N, d)
}

static void mla_forward(const Mixer *m, float *out, float *act, const float *x, const float *params, int B,
                        int T) {
    mla_forward_project(m, act, x, params, B, T);
    mla_forward_attend(m, out, act, params, B, T, NULL);
}

void mla_backward_selected(const Mixer *m, float *dx, float *dparams, const float *dout, const float *act,
                           const float *x, const float *params, int B, int T, const unsigned char *sel) {
    const ModelGeometry *g = m->g;
    Dims z = dims_of(g);
    int N = B * T;
    double theta = mha_layer_rope_theta(g, m->layer);
    MlaWeights w = weights_at(&z, (float *)params), dw = weights_at(&z, dparams);
    MlaAct a;
    act_carve(&a, (float *)act, &z, B, T);   // read only
    size_t q_row = (size_t)z.H * z.dqk, kv_row = (size_t)z.H * z.dkv, o_row = (size_t)z.H * z.dv;

    // Gradient buffers: the interface hands backward no scratch, so one zeroed block per call.
    size_t n_scratch = (size_t)N * (2 * q_row + kv_row + z.dr + 2 * (size_t)z.dc + o_row + 2 * (size_t)z.qr);
    float *scratch = callocCheck(n_scratch, sizeof(float));
    size_t used = 0;
    float *dq = take(scratch, &used, (size_t)N * q_row);              // (N, H*dqk)
    float *dk = take(scratch, &used, (size_t)N * q_row);              // (N, H*dqk) the heads' whole keys
    float *dkv = take(scratch, &used, (size_t)N * kv_row);            // (N, H*dkv)
    float *dkpe = take(scratch, &used, (size_t)N * z.dr);             // (N, dr)
    float *dckv = take(scratch, &used, (size_t)N * z.dc);             // (N, dc) after kv_norm
    float *dckv_raw = take(scratch, &used, (size_t)N * z.dc);         // (N, dc) before kv_norm
    float *d_o = take(scratch, &used, (size_t)N * o_row);             // (N, H*dv)
    float *dcq = take(scratch, &used, (size_t)N * z.qr);              // (N, qr) after q_norm
    float *dqa = take(scratch, &used, (size_t)N * z.qr);              // (N, qr) before q_norm

    // out = o wo^T
    linear_backward(d_o, dw.wo, NULL, dout, a.o, w.wo, N, (int)o_row, z.d);

    // the attention core: dq, the heads' keys dk, and the values straight into dkv's v part
    AttnHeads heads = heads_naive(&z);
    AttnBatch batch = batch_naive(&z, &a, B, T, mha_layer_window(g, m->layer), sel);
    attn_batch_backward(dq, dk, dkv + z.dn, NULL, d_o, o_row, a.P, NULL, &batch, &heads);
    // a head's key is [k_nope_h | k_pe]: k_nope's gradient goes to its slot of dkv, and the k_pe every
    // head shares sums its heads' shares, in head order
    for (int r = 0; r < N; r++)
        for (int h = 0; h < z.H; h++) {
            const float *gk = dk + ((size_t)r * z.H + h) * z.dqk;
            memcpy(dkv + ((size_t)r * z.H + h) * z.dkv, gk, sizeof(float) * (size_t)z.dn);
            for (int c = 0; c < z.dr; c++) dkpe[(size_t)r * z.dr + c] += gk[z.dn + c];
        }

    // RoPE is a rotation: its backward is the inverse rotation at the same position.
    rope_queries(dq, N, T, &z, theta, 1);
    rope_keys(dkpe, N, T, z.dr, theta, 1);

    // kv = c_kv wkv_b^T, c_kv = kv_norm(ckv_raw), [ckv_raw | kpe] = x wkv_a^T
    linear_backward(dckv, dw.wkv_b, NULL, dkv, a.ckv, w.wkv_b, N, z.dc, (int)kv_row);
    rmsnorm_backward(dckv_raw, dw.kv_norm, dckv, a.ckv_raw, w.kv_norm, a.rstd_kv, N, z.dc);
    linear_backward(dx, dw.wkv_a, NULL, dckv_raw, x, w.wkv_a, N, z.d, z.dc);
    size_t pe_rows = (size_t)z.dc * z.d;   // wkv_a's k_pe rows start after its dc latent rows
    linear_backward(dx, dw.wkv_a + pe_rows, NULL, dkpe, x, w.wkv_a + pe_rows, N, z.d, z.dr);

    // q = x wq^T, or q = q_norm(x wq_a^T) wq_b^T
    if (z.qr == 0) {
        linear_backward(dx, dw.wq, NULL, dq, x, w.wq, N, z.d, (int)q_row);
    } else {
        linear_backward(dcq, dw.wq_b, NULL, dq, a.cq, w.wq_b, N, z.qr, (int)q_row);
        rmsnorm_backward(dqa, dw.q_norm, dcq, a.qa, w.q_norm, a.rstd_q, N, z.qr);
        linear_backward(dx, dw.wq_a, NULL, dqa, x, w.wq_a, N, z.d, z.qr);
    }
    free(scratch);
}

static void mla_backward(const Mixer *m, float *dx, float *dparams, const float *dout, const float *act,
                         const float *x, const float *params, int B, int T) {
    mla_backward_selected(m, dx, dparams, dout, act, x, params, B, T, NULL);
}

// ---- decode: the cache holds only [c_kv | k_pe] per token ------------------------------------------

// One cache row per token: [c_kv (dc) | k_pe (dr)], side by side, because the absorbed form reads them
// as ONE key of dc + dr (the query [q_lat | q_pe] against it) and the first dc of it as the value.
struct MixerCache {
    Dims z;
    int max_T;        // tokens the cache can decode in total
    int cap;          // slots: max_T, or the window W of a local layer (a ring buffer: slot = pos % cap)
    int window;       // W on a local layer, 0 on a global one
    int n;            // tokens decoded so far (the next position)
    int absorbed;     // decode path: 1 absorbed, 0 naive
    float *rows;      // (cap, dc + dr) the cache
    // one step's scratch (not cache: it does not grow with context)
    float *qa, *cq;   // (qr)
    float *q;         // (H*dqk) the new token's queries, q_pe rotated
    float *ckv_raw;   // (dc)
    float *qabs;      // (H, dc + dr) absorbed: every head's query in latent space [W_UK[h]^T q_nope | q_pe]
    float *u;         // (H, dc) absorbed: every head's attention-weighted latent
    float *o;         // (H*dv) head outputs
    float *work;      // the attention core's scratch, for cap keys
    float *lat;       // (cap, dc) naive: the latents, contiguous
    float *kvh;       // (cap, dn+dv) naive: one head's rebuilt [k_nope | v] of every held token
    float *kh;        // (cap, dqk) naive: one head's whole keys [k_nope | k_pe]
    // a quantized cache (chapter 12; NULL: rows is the cache): c_kv and k_pe live as codes in these two
    // streams (pe NULL without a RoPE key), and rows becomes one step's scratch they are decoded into
    KvqStream *quant, *quant_pe;
};

static AttnHeads heads_absorbed(const Dims *z) {
    // every head reads the one latent row: G = 1, keys dc + dr wide, values the first dc of them; the
    // scale stays the naive form's (dn + dr)^-0.5, since the scores are the same numbers
    return (AttnHeads){.n_heads = z->H, .n_kv_heads = 1, .dk = z->dc + z->dr, .dv = z->dc,
                       .scale = 1.0f / sqrtf((float)z->dqk)};
}

static MixerCache *mla_cache_new(const Mixer *m, int max_T) {
    Dims z = dims_of(m->g);
    CHECK(max_T > 0, "mla: cache for %d tokens", max_T);
    MixerCache *c = callocCheck(1, sizeof *c);
    c->z = z;
    c->max_T = max_T;
    c->window = mha_layer_window(m->g, m->layer);
    c->cap = c->window > 0 && c->window < max_T ? c->window : max_T;
    c->absorbed = 1;
    AttnHeads ha = heads_absorbed(&z), hn = heads_naive(&z);
    hn.n_heads = hn.n_kv_heads = 1;
    size_t work = attn_scratch_floats(&ha, c->cap), work_n = attn_scratch_floats(&hn, c->cap);
    size_t cap = (size_t)c->cap, row = (size_t)(z.dc + z.dr);
    size_t sizes[] = {cap * row, (size_t)z.qr, (size_t)z.qr, (size_t)z.H * z.dqk, (size_t)z.dc, (size_t)z.H * row,
                      (size_t)z.H * z.dc, (size_t)z.H * z.dv, work > work_n ? work : work_n, cap * z.dc,
                      cap * z.dkv, cap * z.dqk};
    float **fields[] = {&c->rows, &c->qa, &c->cq, &c->q, &c->ckv_raw, &c->qabs, &c->u, &c->o, &c->work, &c->lat,
                        &c->kvh, &c->kh};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) total += sizes[i];
    float *base = callocCheck(total, sizeof(float));
    size_t used = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) *fields[i] = take(base, &used, sizes[i]);
    return c;
}

static void mla_cache_free(MixerCache *c) {
    if (!c) return;
    kvq_stream_free(c->quant);
    kvq_stream_free(c->quant_pe);
    free(c->rows);   // the start of the one block
    free(c);
}

static int held_tokens(const MixerCache *c) { return c->n < c->cap ? c->n : c->cap; }

// (dc + dr) * 4 bytes (fp32) per token held: the per-layer term of kvcache_total_bytes with
// dtype_bytes = 4. The reserved capacity and the one-step scratch are not counted.
static size_t mla_cache_bytes(const MixerCache *c) {
    if (c->quant)   // codes, scales and zero points
        return kvq_stream_held_bytes(c->quant) + (c->quant_pe ? kvq_stream_held_bytes(c->quant_pe) : 0);
    return sizeof(float) * (size_t)(c->z.dc + c->z.dr) * (size_t)held_tokens(c);
}

void mla_set_decode_path(MixerCache *c, int absorbed) { c->absorbed = absorbed != 0; }
int mla_decode_path(const MixerCache *c) { return c->absorbed; }

void mla_cache_set_quant(MixerCache *c, KvQuant *q, KvQuant *rope_key) {
    CHECK(c->n == 0 && !c->quant, "mla: a cache is quantized before its first token, once");
    if (!q) return;
    if (!rope_key) rope_key = q;
    CHECK((kvq_scheme_of(q)->family != KVQ_KIVI && kvq_scheme_of(rope_key)->family != KVQ_KIVI) || c->window == 0,
          "mla: KIVI's key chunks need every token kept; layer has a window of %d", c->window);
    // the latent and the RoPE key are separate vectors with their own scales (or rotation), and may have
    // separate formats. Both are read as keys first (absorbed: [q_lat | q_pe] . [c_kv | k_pe]), so
    // both are coded as keys are.
    c->quant = kvq_stream_new(q, KVQ_KEY, &c->z.dc, 1, c->cap);
    if (c->z.dr > 0) c->quant_pe = kvq_stream_new(rope_key, KVQ_KEY, &c->z.dr, 1, c->cap);
}

static size_t slot_of(const MixerCache *c, int pos) {
    CHECK(pos >= 0 && pos < c->n && pos >= c->n - c->cap, "mla: position %d is not held (%d decoded, %d slots)",
          pos, c->n, c->cap);
    return (size_t)(pos % c->cap);
}
const float *mla_cache_latent(const MixerCache *c, int pos) {
    return c->rows + slot_of(c, pos) * (size_t)(c->z.dc + c->z.dr);
}
const float *mla_cache_rope_key(const MixerCache *c, int pos) { return mla_cache_latent(c, pos) + c->z.dc; }

int mla_cache_position(const MixerCache *c) { return c->n; }

void mla_cache_rewind(MixerCache *c, int pos) {
    CHECK(pos >= 0 && pos <= c->n, "mla_cache_rewind: position %d, %d decoded", pos, c->n);
    c->n = pos;
}

void mla_cache_append(const Mixer *m, MixerCache *c, const float *x, const float *params) {
    const Dims z = c->z;
    CHECK(c->n < c->max_T, "mla decode: cache is full (%d tokens)", c->max_T);
    int t = c->n;   // this token's position
    double theta = mha_layer_rope_theta(m->g, m->layer);
    MlaWeights w = weights_at(&z, (float *)params);   // read only
    // the new token: its query, and its [c_kv | k_pe] straight into the cache's next slot
    float *row = c->rows + (size_t)(t % c->cap) * (size_t)(z.dc + z.dr);
    query_forward(c->q, c->qa, c->cq, NULL, x, &w, &z, 1);
    for (int h = 0; h < z.H; h++) rope_apply(c->q + (size_t)h * z.dqk + z.dn, t, z.dr, theta, ROPE_INTERLEAVED, 0);
    latent_forward(row, c->ckv_raw, NULL, row + z.dc, x, &w, &z, 1);
    rope_apply(row + z.dc, t, z.dr, theta, ROPE_INTERLEAVED, 0);
    if (c->quant) {
        kvq_put(c->quant, t, row);
        if (c->quant_pe) kvq_put(c->quant_pe, t, row + z.dc);
    }
    c->n++;
}

const float *mla_cache_query_latent(const MixerCache *c) { return c->z.qr > 0 ? c->cq : NULL; }

// The naive path, one head: rebuild its k_nope and v for every held token from the latents, then
// attend as the forward does (so this path reproduces the forward bit for bit).
static void attend_naive(MixerCache *c, float *oh, const float *qh, const float *w_ukv, const AttnKeys *span) {
    const Dims z = c->z;
    int held = held_tokens(c);
    size_t row = (size_t)(z.dc + z.dr);
    linear_forward(c->kvh, c->lat, w_ukv, NULL, held, z.dc, z.dkv);   // (held, dn+dv)
    for (int j = 0; j < held; j++) {
        memcpy(c->kh + (size_t)j * z.dqk, c->kvh + (size_t)j * z.dkv, sizeof(float) * (size_t)z.dn);
        memcpy(c->kh + (size_t)j * z.dqk + z.dn, c->rows + (size_t)j * row + z.dc, sizeof(float) * (size_t)z.dr);
    }
    AttnHeads one = heads_naive(&z);
    one.n_heads = one.n_kv_heads = 1;
    AttnKeys ks = *span;
    ks.k = c->kh;
    ks.k_stride = ks.k_head = (size_t)z.dqk;
    ks.v = c->kvh + z.dn;
    ks.v_stride = ks.v_head = (size_t)z.dkv;
    attn_query(oh, NULL, 0, NULL, qh, &ks, &one, 0, 1, c->work);
}

void mla_cache_attend(MixerCache *c, float *out, const float *params, const int *rows, int n_rows) {
    const Dims z = c->z;
    int t = c->n - 1;   // the newest token's position: it attends up to itself
    CHECK(t >= 0, "mla decode: nothing appended");
    MlaWeights w = weights_at(&z, (float *)params);   // read only
    size_t row = (size_t)(z.dc + z.dr);
    AttnKeys span = {.k = c->rows, .v = c->rows, .k_stride = row, .k_head = row, .v_stride = row, .v_head = row};
    if (rows) {
        attn_keys_list(&span, rows, n_rows);
    } else {
        attn_keys_span(&span, first_key(t, c->window), t, 0, c->cap);   // position j in slot j % cap
    }
    // a quantized cache: decode the held rows (the naive path needs the latents themselves; the
    // absorbed one reads them in the codes' working domain, its query and output turned to match)
    CHECK(!c->quant || !rows, "mla decode: a quantized cache attends over the causal span only");
    if (c->quant) {
        kvq_get(c->quant, c->rows, row, first_key(t, c->window), t, !c->absorbed);
        if (c->quant_pe) kvq_get(c->quant_pe, c->rows + z.dc, row, first_key(t, c->window), t, !c->absorbed);
    }
    if (c->absorbed) {
        // W_UK folds into the query: q_lat (dc) = W_UK[h]^T q_nope, so every head scores the dc-wide
        // latents directly: its query [q_lat | q_pe] against the cached row [c_kv | k_pe]. The core reads
        // each cached row once for all heads; W_UV folds into the output: o_h (dv) = W_UV[h] u_h.
        for (int h = 0; h < z.H; h++) {
            const float *qh = c->q + (size_t)h * z.dqk;
            const float *w_uk = w.wkv_b + (size_t)h * z.dkv * z.dc;   // W_UK[h] (dn, dc)
            float *qa = c->qabs + (size_t)h * row;
            memset(qa, 0, sizeof(float) * (size_t)z.dc);
            for (int i = 0; i < z.dn; i++) axpy_f32(qa, qh[i], w_uk + (size_t)i * z.dc, z.dc);
            memcpy(qa + z.dc, qh + z.dn, sizeof(float) * (size_t)z.dr);
            if (c->quant) {
                kvq_rotate(c->quant, qa, z.dc, 0);
                if (c->quant_pe) kvq_rotate(c->quant_pe, qa + z.dc, z.dr, 0);
            }
        }
        AttnHeads heads = heads_absorbed(&z);
        attn_query(c->u, NULL, 0, NULL, c->qabs, &span, &heads, 0, 1, c->work);
        if (c->quant)
            for (int h = 0; h < z.H; h++) kvq_rotate(c->quant, c->u + (size_t)h * z.dc, z.dc, 1);
        for (int h = 0; h < z.H; h++) {
            const float *w_uv = w.wkv_b + (size_t)h * z.dkv * z.dc + (size_t)z.dn * z.dc;   // W_UV[h] (dv, dc)
            for (int r = 0; r < z.dv; r++) c->o[(size_t)h * z.dv + r] = dot_f32(w_uv + (size_t)r * z.dc, c->u + (size_t)h * z.dc, z.dc);
        }
    } else {
        int held = held_tokens(c);
        for (int j = 0; j < held; j++) memcpy(c->lat + (size_t)j * z.dc, c->rows + (size_t)j * row, sizeof(float) * (size_t)z.dc);
        for (int h = 0; h < z.H; h++)
            attend_naive(c, c->o + (size_t)h * z.dv, c->q + (size_t)h * z.dqk, w.wkv_b + (size_t)h * z.dkv * z.dc, &span);
    }
    linear_forward(out, c->o, w.wo, NULL, 1, z.H * z.dv, z.d);
}

static void mla_decode(const Mixer *m, MixerCache *c, float *out, const float *x, const float *params) {
    mla_cache_append(m, c, x, params);
    mla_cache_attend(c, out, params, NULL, 0);
}

// ---- for mechanisms built on MLA ------------------------------------------------------------------

void mla_query_forward(float *q, float *qa, float *cq, float *rstd, const float *x, const MlaWeights *w,
                       const ModelGeometry *g, int N) {
    Dims z = dims_of(g);
    query_forward(q, qa, cq, rstd, x, w, &z, N);
}

void mla_latent_forward(float *ckv, float *ckv_raw, float *rstd, float *kpe, const float *x, const MlaWeights *w,
                        const ModelGeometry *g, int N) {
    Dims z = dims_of(g);
    latent_forward(ckv, ckv_raw, rstd, kpe, x, w, &z, N);
}

// ---- what the chapters draw ----------------------------------------------------------------------

static int mla_n_mix_heads(const ModelGeometry *g, int layer) {
    (void)layer;
    return g->n_heads;
}

static void mla_mixing_matrix(const Mixer *m, float *A, const float *act, const float *params, int T) {
    (void)params;
    memcpy(A, act, sizeof(float) * (size_t)m->g->n_heads * T * T);   // batch 0's P leads act
}

// Load-time check of everything dims_of and the layer functions assume (dsa's validate starts here).
static int mla_validate(const ModelGeometry *g, int layer, char *why, size_t cap) {
    if (!mixer_validate_attention(g, layer, "mla", ATTN_MLA, 1, why, cap)) return 0;
    if (g->kv_lora_rank < 1) return mixer_fail(why, cap, "kv_lora_rank %d must be positive", g->kv_lora_rank);
    if (g->v_head_dim < 1) return mixer_fail(why, cap, "v_head_dim %d must be positive", g->v_head_dim);
    if (g->q_lora_rank < 0 || g->qk_nope_head_dim < 0 || g->qk_rope_head_dim < 0)
        return mixer_fail(why, cap, "q_lora_rank %d, qk_nope_head_dim %d and qk_rope_head_dim %d must not be negative",
                          g->q_lora_rank, g->qk_nope_head_dim, g->qk_rope_head_dim);
    if (g->qk_nope_head_dim + g->qk_rope_head_dim < 1)
        return mixer_fail(why, cap, "qk_nope_head_dim + qk_rope_head_dim must be positive");
    if (g->qk_rope_head_dim % 2 != 0)
        return mixer_fail(why, cap, "qk_rope_head_dim %d must be even (RoPE rotates pairs)", g->qk_rope_head_dim);
    if (g->attn_output_gate != GATE_NONE || g->qk_norm != QK_NORM_NONE)
        return mixer_fail(why, cap, "attn_output_gate and qk_norm are for mixer 'gated'; mixer 'mla' has neither");
    return 1;
}

const MixerOps mla_mixer = {
    .name = "mla",
    .validate = mla_validate,
    .param_tensors = mla_param_tensors,
    .init = mla_init,
    .act_floats = mla_act_floats,
    .forward = mla_forward,
    .backward = mla_backward,
    .cache_new = mla_cache_new,
    .cache_free = mla_cache_free,
    .cache_bytes = mla_cache_bytes,
    .decode = mla_decode,
    .n_mix_heads = mla_n_mix_heads,
    .mixing_matrix = mla_mixing_matrix,
};

// ---- helpers for the chapter and the bench --------------------------------------------------------

void mla_geometry_tiny(ModelGeometry *g, int n_layers, int d_model, int n_heads) {
    geometry_init(g, "tiny-mla", n_layers, d_model, n_heads, n_heads);
    int dh = d_model / n_heads;
    g->attn = ATTN_MLA;
    // DeepSeek-V3's proportions (dh 128): dn = dv = dh, dr = dh/2; its latent is 4*dh = d/14 and its
    // query rank about d/5. At tiny d the latent must still be narrower than H*(dn+dv) to compress,
    // so it is d/2, and the query rank 3d/4.
    g->qk_nope_head_dim = dh;
    g->v_head_dim = dh;
    g->qk_rope_head_dim = dh / 2 >= 2 ? (dh / 2) & ~1 : 2;
    g->kv_lora_rank = d_model / 2 > 0 ? d_model / 2 : 1;
    g->q_lora_rank = 3 * d_model / 4;
    g->head_dim = g->qk_nope_head_dim + g->qk_rope_head_dim;
}

void mla_attention_probs(float *P, const float *x, const float *params, const Mixer *m, int T) {
    float *act = mallocCheck(sizeof(float) * mla_act_floats(m->g, m->layer, 1, T));
    float *out = mallocCheck(sizeof(float) * (size_t)T * m->g->d_model);
    mla_forward(m, out, act, x, params, 1, T);
    mla_mixing_matrix(m, P, act, params, T);
    free(act);
    free(out);
}

void mla_cache_fill_random(MixerCache *c, int n_tokens, Rng *rng) {
    CHECK(n_tokens >= 0 && c->n + n_tokens <= c->max_T, "mla_cache_fill_random: %d more tokens exceed %d", n_tokens,
          c->max_T);
    int held = c->n + n_tokens < c->cap ? c->n + n_tokens : c->cap;
    if (c->quant) {   // through the encoders, one token at a time
        for (int t = 0; t < n_tokens; t++, c->n++) {
            float *row = c->rows + (size_t)(c->n % c->cap) * (c->z.dc + c->z.dr);
            rng_fill_normal(rng, row, c->z.dc + c->z.dr, 1.0f);
            kvq_put(c->quant, c->n, row);
            if (c->quant_pe) kvq_put(c->quant_pe, c->n, row + c->z.dc);
        }
        return;
    }
    rng_fill_normal(rng, c->rows, (long)held * (c->z.dc + c->z.dr), 1.0f);
    c->n += n_tokens;
}

double mla_decode_seconds_per_token(const ModelGeometry *g, const float *params, int context, int absorbed,
                                    int reps, int threads) {
    CHECK(context >= 0 && reps > 0 && threads > 0, "mla timing: context %d, reps %d, threads %d", context, reps, threads);
    Mixer m = {.ops = &mla_mixer, .g = g, .layer = 0};
    MixerCache *c = mla_cache_new(&m, context + 1);
    mla_set_decode_path(c, absorbed);
    // random latents and RoPE keys stand in for `context` decoded tokens: the cost of a step does not
    // depend on their values
    Rng rng;
    rng_seed(&rng, 5);
    mla_cache_fill_random(c, context, &rng);
    float *x = mallocCheck(sizeof(float) * 2 * (size_t)g->d_model), *out = x + g->d_model;
    rng_fill_normal(&rng, x, g->d_model, 1.0f);

    int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    mla_decode(&m, c, out, x, params);   // warm-up: caches, page faults
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < reps; r++) {
        mla_cache_rewind(c, context);   // every step is the token at position `context`
        mla_decode(&m, c, out, x, params);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    omp_set_num_threads(saved);
    free(x);
    mla_cache_free(c);
    return ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec)) / reps;
}
