// mha.c: multi-head attention with G = n_kv_heads key/value heads (MHA, GQA, MQA), forward, backward,
// cached decode and the attention matrices it draws.
//
// Per layer, with H query heads, G KV heads, head_dim dh, and query head h reading KV head h / (H/G):
//   q = x Wq^T (T,H*dh)   k = x Wk^T (T,G*dh)   v = x Wv^T (T,G*dh)
//   q, k <- RoPE at each token's position (half-split pairs (i, i+dh/2), all dh dims rotate)
//   S_h = q_h k_g^T / sqrt(dh), masked causally (or to the last W keys on a local layer)
//   P_h = softmax(S_h) row by row;  o_h = P_h v_g;  out = concat_h(o_h) Wo^T
// Sharing a KV head between H/G query heads is the whole trick of GQA: the cache keeps G heads, not H.
#include "03_mha/mha.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mathx.h"

enum { WQ, WK, WV, WO, N_WEIGHTS };

static void geometry_check(const ModelGeometry *g) {
    CHECK(g->n_heads > 0 && g->n_kv_heads > 0 && g->n_heads % g->n_kv_heads == 0,
          "gqa: n_heads %d must be a positive multiple of n_kv_heads %d", g->n_heads, g->n_kv_heads);
    CHECK(g->head_dim > 0 && g->head_dim % 2 == 0, "gqa: head_dim %d must be even (RoPE pairs)", g->head_dim);
}

// Offsets (floats) of wq, wk, wv, wo inside the layer's parameter slice.
static void param_offsets(const ModelGeometry *g, size_t off[N_WEIGHTS]) {
    size_t d = (size_t)g->d_model, qd = (size_t)g->n_heads * g->head_dim;
    size_t kvd = (size_t)g->n_kv_heads * g->head_dim;
    off[WQ] = 0;
    off[WK] = off[WQ] + qd * d;
    off[WV] = off[WK] + kvd * d;
    off[WO] = off[WV] + kvd * d;
}

// What forward saves, at (B,T). P comes first so batch 0's attention matrices sit at offset 0 whatever
// B is (mixing_matrix knows only T).
typedef struct {
    float *P;   // (B,H,T,T) attention weights, exactly 0 where masked
    float *q;   // (B,T,H*dh) queries after RoPE
    float *k;   // (B,T,G*dh) keys after RoPE
    float *v;   // (B,T,G*dh) values
    float *o;   // (B,T,H*dh) concatenated head outputs, before Wo
} MhaAct;

static MhaAct act_view(const ModelGeometry *g, float *act, int B, int T) {
    size_t BT = (size_t)B * T, qd = (size_t)g->n_heads * g->head_dim;
    size_t kvd = (size_t)g->n_kv_heads * g->head_dim;
    MhaAct a;
    a.P = act;
    a.q = a.P + (size_t)B * g->n_heads * T * T;
    a.k = a.q + BT * qd;
    a.v = a.k + BT * kvd;
    a.o = a.v + BT * kvd;
    return a;
}

const char *mha_kind_name(const ModelGeometry *g) {
    if (g->n_kv_heads == g->n_heads) return "MHA";
    return g->n_kv_heads == 1 ? "MQA" : "GQA";
}

int mha_layer_window(const ModelGeometry *g, int layer) {
    if (g->layer_kind[layer] != LAYER_LOCAL) return 0;
    CHECK(g->sliding_window > 0, "gqa: layer %d is local but sliding_window is %d", layer, g->sliding_window);
    return g->sliding_window;
}

double mha_layer_rope_theta(const ModelGeometry *g, int layer) {
    if (g->layer_kind[layer] == LAYER_LOCAL && g->rope_local_theta > 0) return g->rope_local_theta;
    return g->rope_theta;
}

// First key query i may see: 0 for causal attention, i - W + 1 under a window of W keys.
static int first_key(int i, int W) { return W > 0 && i - W + 1 > 0 ? i - W + 1 : 0; }

// RoPE (or its inverse, the backward) on every head vector of x (N rows of n_heads * dh); row r is the
// token at position r % T.
static void rope_rows(float *x, int N, int T, int n_heads, int dh, double theta, int inverse) {
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++)
        for (int h = 0; h < n_heads; h++)
            rope_apply(x + ((size_t)r * n_heads + h) * dh, r % T, dh, theta, ROPE_HALF, inverse);
}

// One query against keys lo..hi (both included): p[lo..hi] = softmax(q . k_j * scale), o = sum_j p_j v_j.
// q, o (dh); key j is k + j*stride, value j is v + j*stride; s (hi+1) is scratch for the logits.
// Forward and decode both go through here, so the cached step does exactly the forward's arithmetic.
static void attend(float *o, float *p, float *s, const float *q, const float *k, const float *v,
                   size_t stride, int lo, int hi, int dh, float scale) {
    for (int j = lo; j <= hi; j++) {
        const float *kj = k + j * stride;
        float dot = 0.0f;
        for (int c = 0; c < dh; c++) dot += q[c] * kj[c];
        s[j] = dot * scale;
    }
    softmax_row(p + lo, s + lo, NULL, hi - lo + 1);
    for (int c = 0; c < dh; c++) o[c] = 0.0f;
    for (int j = lo; j <= hi; j++) {
        const float *vj = v + j * stride;
        for (int c = 0; c < dh; c++) o[c] += p[j] * vj[c];
    }
}

// ---- MixerOps ------------------------------------------------------------------------------------

static int gqa_param_tensors(const ModelGeometry *g, int layer, ParamTensor *out, int cap) {
    (void)layer;
    geometry_check(g);
    CHECK(cap >= N_WEIGHTS, "gqa: param_tensors needs room for %d tensors, got %d", N_WEIGHTS, cap);
    int64_t d = g->d_model, qd = (int64_t)g->n_heads * g->head_dim, kvd = (int64_t)g->n_kv_heads * g->head_dim;
    static const char *names[N_WEIGHTS] = {"wq", "wk", "wv", "wo"};
    int64_t rows[N_WEIGHTS] = {qd, kvd, kvd, d}, cols[N_WEIGHTS] = {d, d, d, qd};
    size_t off[N_WEIGHTS];
    param_offsets(g, off);
    for (int i = 0; i < N_WEIGHTS; i++) {
        memset(&out[i], 0, sizeof out[i]);
        snprintf(out[i].name, sizeof out[i].name, "%s", names[i]);
        out[i].ndim = 2;
        out[i].shape[0] = rows[i];
        out[i].shape[1] = cols[i];
        out[i].offset = off[i];
    }
    return N_WEIGHTS;
}

static void gqa_init(const Mixer *m, float *params, Rng *rng) {
    const ModelGeometry *g = m->g;
    size_t off[N_WEIGHTS];
    param_offsets(g, off);
    long d = g->d_model, qd = (long)g->n_heads * g->head_dim, kvd = (long)g->n_kv_heads * g->head_dim;
    rng_fill_normal(rng, params + off[WQ], qd * d, 0.02f);
    rng_fill_normal(rng, params + off[WK], kvd * d, 0.02f);
    rng_fill_normal(rng, params + off[WV], kvd * d, 0.02f);
    // GPT-2: the projection back into the residual stream is scaled by 1/sqrt(2 * n_layers), so the
    // residual's variance does not grow with depth (two residual adds per block).
    int L = g->n_layers > 0 ? g->n_layers : 1;
    rng_fill_normal(rng, params + off[WO], d * qd, 0.02f / sqrtf(2.0f * (float)L));
}

static size_t gqa_act_floats(const ModelGeometry *g, int layer, int B, int T) {
    (void)layer;
    size_t BT = (size_t)B * T, qd = (size_t)g->n_heads * g->head_dim;
    size_t kvd = (size_t)g->n_kv_heads * g->head_dim;
    return (size_t)B * g->n_heads * T * T + BT * (2 * qd + 2 * kvd);
}

static void gqa_forward(const Mixer *m, float *out, float *act, const float *x, const float *params,
                        int B, int T) {
    const ModelGeometry *g = m->g;
    geometry_check(g);
    int d = g->d_model, H = g->n_heads, G = g->n_kv_heads, dh = g->head_dim;
    int qd = H * dh, kvd = G * dh, N = B * T, group = H / G;
    int W = mha_layer_window(g, m->layer);
    double theta = mha_layer_rope_theta(g, m->layer);
    float scale = 1.0f / sqrtf((float)dh);
    size_t off[N_WEIGHTS];
    param_offsets(g, off);
    MhaAct a = act_view(g, act, B, T);

    linear_forward(a.q, x, params + off[WQ], NULL, N, d, qd);   // (B*T, H*dh)
    linear_forward(a.k, x, params + off[WK], NULL, N, d, kvd);  // (B*T, G*dh)
    linear_forward(a.v, x, params + off[WV], NULL, N, d, kvd);  // (B*T, G*dh)
    rope_rows(a.q, N, T, H, dh, theta, 0);
    rope_rows(a.k, N, T, G, dh, theta, 0);

    // The attention core: each (batch, query head) is independent, so threads split them; every
    // output element is computed by one thread in a fixed order (same bits for any thread count).
    #pragma omp parallel
    {
        float *s = mallocCheck(sizeof(float) * (size_t)T);   // one row of logits per thread
        #pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                int kvh = h / group;   // the KV head this query head shares
                const float *kb = a.k + (size_t)b * T * kvd + (size_t)kvh * dh;
                const float *vb = a.v + (size_t)b * T * kvd + (size_t)kvh * dh;
                for (int i = 0; i < T; i++) {
                    float *p = a.P + (((size_t)b * H + h) * T + i) * T;
                    size_t row = (size_t)b * T + i;
                    memset(p, 0, sizeof(float) * (size_t)T);   // masked keys get exactly 0
                    attend(a.o + row * qd + (size_t)h * dh, p, s, a.q + row * qd + (size_t)h * dh, kb, vb,
                           (size_t)kvd, first_key(i, W), i, dh, scale);
                }
            }
        free(s);
    }
    linear_forward(out, a.o, params + off[WO], NULL, N, qd, d);   // (B*T, d)
}

static void gqa_backward(const Mixer *m, float *dx, float *dparams, const float *dout, const float *act,
                         const float *x, const float *params, int B, int T) {
    const ModelGeometry *g = m->g;
    geometry_check(g);
    int d = g->d_model, H = g->n_heads, G = g->n_kv_heads, dh = g->head_dim;
    int qd = H * dh, kvd = G * dh, N = B * T, group = H / G;
    int W = mha_layer_window(g, m->layer);
    double theta = mha_layer_rope_theta(g, m->layer);
    float scale = 1.0f / sqrtf((float)dh);
    size_t off[N_WEIGHTS];
    param_offsets(g, off);
    MhaAct a = act_view(g, (float *)act, B, T);   // read only

    // Gradient buffers of q, k, v, o. The interface hands backward no scratch (act is const), so it
    // takes one zeroed block per call, never inside a loop.
    float *dq = callocCheck((size_t)N * (2 * qd + 2 * kvd), sizeof(float));   // (B*T, H*dh)
    float *dk = dq + (size_t)N * qd;                                          // (B*T, G*dh)
    float *dv = dk + (size_t)N * kvd;                                         // (B*T, G*dh)
    float *d_o = dv + (size_t)N * kvd;                                        // (B*T, H*dh)

    // out = o Wo^T: d_o = dout Wo, dWo += dout^T o
    linear_backward(d_o, dparams + off[WO], NULL, dout, a.o, params + off[WO], N, qd, d);

    // The attention core, threads split over (batch, KV head): the H/G query heads sharing a KV head
    // all add into its dk and dv, so one thread owns the whole group and the sum order is fixed.
    #pragma omp parallel
    {
        float *dp = mallocCheck(sizeof(float) * 2 * (size_t)T), *ds = dp + T;
        #pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int kvh = 0; kvh < G; kvh++) {
                size_t kv0 = (size_t)b * T * kvd + (size_t)kvh * dh;   // key 0 of this (b, KV head)
                for (int h = kvh * group; h < (kvh + 1) * group; h++)
                    for (int i = 0; i < T; i++) {
                        const float *p = a.P + (((size_t)b * H + h) * T + i) * T;
                        size_t qi = ((size_t)b * T + i) * qd + (size_t)h * dh;
                        const float *q = a.q + qi, *go = d_o + qi;
                        float *gq = dq + qi;
                        int lo = first_key(i, W);
                        // o_i = sum_j p_j v_j  =>  dp_j = do_i . v_j,  dv_j += p_j do_i
                        for (int j = lo; j <= i; j++) {
                            const float *vj = a.v + kv0 + (size_t)j * kvd;
                            float dot = 0.0f;
                            for (int c = 0; c < dh; c++) dot += go[c] * vj[c];
                            dp[j] = dot;
                        }
                        softmax_row_backward(ds + lo, p + lo, dp + lo, i - lo + 1);
                        // s_j = q_i . k_j * scale  =>  dq_i += ds_j scale k_j,  dk_j += ds_j scale q_i
                        for (int j = lo; j <= i; j++) {
                            const float *kj = a.k + kv0 + (size_t)j * kvd;
                            float *gk = dk + kv0 + (size_t)j * kvd, *gv = dv + kv0 + (size_t)j * kvd;
                            float gs = ds[j] * scale;
                            for (int c = 0; c < dh; c++) {
                                gq[c] += gs * kj[c];
                                gk[c] += gs * q[c];
                                gv[c] += p[j] * go[c];
                            }
                        }
                    }
            }
        free(dp);
    }

    // RoPE is a rotation, so its backward is the inverse rotation at the same position.
    rope_rows(dq, N, T, H, dh, theta, 1);
    rope_rows(dk, N, T, G, dh, theta, 1);
    linear_backward(dx, dparams + off[WQ], NULL, dq, x, params + off[WQ], N, d, qd);
    linear_backward(dx, dparams + off[WK], NULL, dk, x, params + off[WK], N, d, kvd);
    linear_backward(dx, dparams + off[WV], NULL, dv, x, params + off[WV], N, d, kvd);
    free(dq);
}

// ---- decode with a KV cache ----------------------------------------------------------------------

// K and V of every past token, fp32, allocated once for max_T tokens. A LAYER_LOCAL layer keeps the
// full history too and simply attends to its last W entries; the ring buffer that stops a local
// layer's cache at W tokens comes in the sliding-window chapter.
struct MixerCache {
    int max_T, n;       // capacity, tokens held
    int kv_dim;         // G * dh
    float *k, *v;       // (max_T, G*dh) each: keys after RoPE, values
    float *q, *o;       // (H*dh) one step's query and head outputs (scratch)
    float *s, *p;       // (max_T) one head's logits and weights (scratch)
};

static MixerCache *gqa_cache_new(const Mixer *m, int max_T) {
    const ModelGeometry *g = m->g;
    geometry_check(g);
    CHECK(max_T > 0, "gqa: cache for %d tokens", max_T);
    size_t qd = (size_t)g->n_heads * g->head_dim, kvd = (size_t)g->n_kv_heads * g->head_dim;
    MixerCache *c = mallocCheck(sizeof *c);
    c->max_T = max_T;
    c->n = 0;
    c->kv_dim = (int)kvd;
    c->k = callocCheck(2 * (size_t)max_T * kvd + 2 * qd + 2 * (size_t)max_T, sizeof(float));
    c->v = c->k + (size_t)max_T * kvd;
    c->q = c->v + (size_t)max_T * kvd;
    c->o = c->q + qd;
    c->s = c->o + qd;
    c->p = c->s + max_T;
    return c;
}

static void gqa_cache_free(MixerCache *c) {
    if (!c) return;
    free(c->k);
    free(c);
}

// Bytes of K and V actually holding tokens: 2 (K and V) * G * dh * 4 bytes (fp32) per token held, the
// per-layer term of kvcache_total_bytes with dtype_bytes = 4. The capacity reserved up front and the
// one-step scratch are not counted: they are not cache that grows with context.
static size_t gqa_cache_bytes(const MixerCache *c) {
    return sizeof(float) * 2 * (size_t)c->kv_dim * (size_t)c->n;
}

static void gqa_decode(const Mixer *m, MixerCache *c, float *out, const float *x, const float *params) {
    const ModelGeometry *g = m->g;
    int d = g->d_model, H = g->n_heads, G = g->n_kv_heads, dh = g->head_dim;
    int qd = H * dh, kvd = G * dh, group = H / G;
    CHECK(c->n < c->max_T, "gqa decode: cache is full (%d tokens)", c->max_T);
    int t = c->n;   // this token's position
    double theta = mha_layer_rope_theta(g, m->layer);
    size_t off[N_WEIGHTS];
    param_offsets(g, off);

    // project the one new token; its k and v go straight into the cache's next slot
    float *kt = c->k + (size_t)t * kvd, *vt = c->v + (size_t)t * kvd;
    linear_forward(c->q, x, params + off[WQ], NULL, 1, d, qd);
    linear_forward(kt, x, params + off[WK], NULL, 1, d, kvd);
    linear_forward(vt, x, params + off[WV], NULL, 1, d, kvd);
    for (int h = 0; h < H; h++) rope_apply(c->q + (size_t)h * dh, t, dh, theta, ROPE_HALF, 0);
    for (int h = 0; h < G; h++) rope_apply(kt + (size_t)h * dh, t, dh, theta, ROPE_HALF, 0);
    c->n++;

    // one row of attention per query head, over the cached keys (the last W on a local layer)
    int lo = first_key(t, mha_layer_window(g, m->layer));
    float scale = 1.0f / sqrtf((float)dh);
    for (int h = 0; h < H; h++) {
        size_t kvh = (size_t)(h / group) * dh;
        attend(c->o + (size_t)h * dh, c->p, c->s, c->q + (size_t)h * dh, c->k + kvh, c->v + kvh,
               (size_t)kvd, lo, t, dh, scale);
    }
    linear_forward(out, c->o, params + off[WO], NULL, 1, qd, d);
}

// ---- what the chapters draw ----------------------------------------------------------------------

static int gqa_n_mix_heads(const ModelGeometry *g, int layer) {
    (void)layer;
    return g->n_heads;
}

static void gqa_mixing_matrix(const Mixer *m, float *A, const float *act, const float *params, int T) {
    (void)params;
    // batch 0's P (H,T,T) sits at the start of act
    memcpy(A, act, sizeof(float) * (size_t)m->g->n_heads * T * T);
}

void mha_attention_probs(float *P, const float *x, const float *params, const Mixer *m, int T) {
    const ModelGeometry *g = m->g;
    float *act = mallocCheck(sizeof(float) * gqa_act_floats(g, m->layer, 1, T));
    float *out = mallocCheck(sizeof(float) * (size_t)T * g->d_model);
    gqa_forward(m, out, act, x, params, 1, T);
    gqa_mixing_matrix(m, P, act, params, T);
    free(act);
    free(out);
}

const MixerOps gqa_mixer = {
    .name = "gqa",
    .param_tensors = gqa_param_tensors,
    .init = gqa_init,
    .act_floats = gqa_act_floats,
    .forward = gqa_forward,
    .backward = gqa_backward,
    .cache_new = gqa_cache_new,
    .cache_free = gqa_cache_free,
    .cache_bytes = gqa_cache_bytes,
    .decode = gqa_decode,
    .n_mix_heads = gqa_n_mix_heads,
    .mixing_matrix = gqa_mixing_matrix,
};
