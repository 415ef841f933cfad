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

void mha_rope_rows(float *x, int N, int T, int n_heads, int dh, int n_rot, double theta, int inverse) {
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++)
        for (int h = 0; h < n_heads; h++)
            rope_apply(x + ((size_t)r * n_heads + h) * dh, r % T, n_rot, theta, ROPE_HALF, inverse);
}

// One query against the keys of positions lo..hi (both included):
//   p[0..n) = softmax(q . k_j * scale) over j = lo..hi (n = hi - lo + 1),  o = sum_j p_j v_j.
// q, o (dh); s (n) is scratch for the logits. Position j's key and value sit in row (j - base) % cap of
// k and v (rows stride floats apart): base 0 and cap >= hi + 1 is a plain array (forward, a global
// layer's cache); cap = W makes it the ring buffer of a local layer. The keys are always visited in
// position order, so forward, decode and chunked prefill do exactly the same arithmetic.
static void attend(float *o, float *p, float *s, const float *q, const float *k, const float *v,
                   size_t stride, int lo, int hi, int base, int cap, int dh, float scale) {
    int n = hi - lo + 1;
    for (int j = lo; j <= hi; j++) {
        const float *kj = k + (size_t)((j - base) % cap) * stride;
        float dot = 0.0f;
        for (int c = 0; c < dh; c++) dot += q[c] * kj[c];
        s[j - lo] = dot * scale;
    }
    softmax_row(p, s, NULL, n);
    for (int c = 0; c < dh; c++) o[c] = 0.0f;
    for (int j = lo; j <= hi; j++) {
        const float *vj = v + (size_t)((j - base) % cap) * stride;
        for (int c = 0; c < dh; c++) o[c] += p[j - lo] * vj[c];
    }
}

void mha_attention_forward(float *o, float *P, const float *q, const float *k, const float *v, int B, int T,
                           int H, int G, int dh, int window) {
    size_t qd = (size_t)H * dh, kvd = (size_t)G * dh;
    int group = H / G;
    float scale = 1.0f / sqrtf((float)dh);
    // Each (batch, query head) is independent, so threads split them; every output element is
    // computed by one thread in a fixed order (same bits for any thread count).
    #pragma omp parallel
    {
        float *s = mallocCheck(sizeof(float) * (size_t)T);   // one row of logits per thread
        #pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                int kvh = h / group;   // the KV head this query head shares
                const float *kb = k + (size_t)b * T * kvd + (size_t)kvh * dh;
                const float *vb = v + (size_t)b * T * kvd + (size_t)kvh * dh;
                for (int i = 0; i < T; i++) {
                    float *p = P + (((size_t)b * H + h) * T + i) * T;
                    size_t row = (size_t)b * T + i;
                    int lo = first_key(i, window);
                    memset(p, 0, sizeof(float) * (size_t)T);   // masked keys get exactly 0
                    attend(o + row * qd + (size_t)h * dh, p + lo, s, q + row * qd + (size_t)h * dh, kb, vb, kvd, lo,
                           i, 0, T, dh, scale);
                }
            }
        free(s);
    }
}

void mha_attention_backward(float *dq, float *dk, float *dv, const float *d_o, const float *P, const float *q,
                            const float *k, const float *v, int B, int T, int H, int G, int dh, int window) {
    size_t qd = (size_t)H * dh, kvd = (size_t)G * dh;
    int group = H / G, W = window;
    float scale = 1.0f / sqrtf((float)dh);
    // Threads split over (batch, KV head): the H/G query heads sharing a KV head all add into its dk
    // and dv, so one thread owns the whole group and the sum order is fixed.
    #pragma omp parallel
    {
        float *dp = mallocCheck(sizeof(float) * 2 * (size_t)T), *ds = dp + T;
        #pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++)
            for (int kvh = 0; kvh < G; kvh++) {
                size_t kv0 = (size_t)b * T * kvd + (size_t)kvh * dh;   // key 0 of this (b, KV head)
                for (int h = kvh * group; h < (kvh + 1) * group; h++)
                    for (int i = 0; i < T; i++) {
                        const float *p = P + (((size_t)b * H + h) * T + i) * T;
                        size_t qi = ((size_t)b * T + i) * qd + (size_t)h * dh;
                        const float *qv = q + qi, *go = d_o + qi;
                        float *gq = dq + qi;
                        int lo = first_key(i, W);
                        // o_i = sum_j p_j v_j  =>  dp_j = do_i . v_j,  dv_j += p_j do_i
                        for (int j = lo; j <= i; j++) {
                            const float *vj = v + kv0 + (size_t)j * kvd;
                            float dot = 0.0f;
                            for (int c = 0; c < dh; c++) dot += go[c] * vj[c];
                            dp[j] = dot;
                        }
                        softmax_row_backward(ds + lo, p + lo, dp + lo, i - lo + 1);
                        // s_j = q_i . k_j * scale  =>  dq_i += ds_j scale k_j,  dk_j += ds_j scale q_i
                        for (int j = lo; j <= i; j++) {
                            const float *kj = k + kv0 + (size_t)j * kvd;
                            float *gk = dk + kv0 + (size_t)j * kvd, *gv = dv + kv0 + (size_t)j * kvd;
                            float gs = ds[j] * scale;
                            for (int c = 0; c < dh; c++) {
                                gq[c] += gs * kj[c];
                                gk[c] += gs * qv[c];
                                gv[c] += p[j] * go[c];
                            }
                        }
                    }
            }
        free(dp);
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
    int qd = H * dh, kvd = G * dh, N = B * T;
    int W = mha_layer_window(g, m->layer);
    double theta = mha_layer_rope_theta(g, m->layer);
    size_t off[N_WEIGHTS];
    param_offsets(g, off);
    MhaAct a = act_view(g, act, B, T);

    linear_forward(a.q, x, params + off[WQ], NULL, N, d, qd);   // (B*T, H*dh)
    linear_forward(a.k, x, params + off[WK], NULL, N, d, kvd);  // (B*T, G*dh)
    linear_forward(a.v, x, params + off[WV], NULL, N, d, kvd);  // (B*T, G*dh)
    mha_rope_rows(a.q, N, T, H, dh, dh, theta, 0);
    mha_rope_rows(a.k, N, T, G, dh, dh, theta, 0);

    mha_attention_forward(a.o, a.P, a.q, a.k, a.v, B, T, H, G, dh, W);
    linear_forward(out, a.o, params + off[WO], NULL, N, qd, d);   // (B*T, d)
}

static void gqa_backward(const Mixer *m, float *dx, float *dparams, const float *dout, const float *act,
                         const float *x, const float *params, int B, int T) {
    const ModelGeometry *g = m->g;
    geometry_check(g);
    int d = g->d_model, H = g->n_heads, G = g->n_kv_heads, dh = g->head_dim;
    int qd = H * dh, kvd = G * dh, N = B * T;
    int W = mha_layer_window(g, m->layer);
    double theta = mha_layer_rope_theta(g, m->layer);
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

    mha_attention_backward(dq, dk, dv, d_o, a.P, a.q, a.k, a.v, B, T, H, G, dh, W);

    // RoPE is a rotation, so its backward is the inverse rotation at the same position.
    mha_rope_rows(dq, N, T, H, dh, dh, theta, 1);
    mha_rope_rows(dk, N, T, G, dh, dh, theta, 1);
    linear_backward(dx, dparams + off[WQ], NULL, dq, x, params + off[WQ], N, d, qd);
    linear_backward(dx, dparams + off[WK], NULL, dk, x, params + off[WK], N, d, kvd);
    linear_backward(dx, dparams + off[WV], NULL, dv, x, params + off[WV], N, d, kvd);
    free(dq);
}

// ---- decode with a KV cache ----------------------------------------------------------------------

// K and V of the past tokens a query can still see, fp32.
//   global layer: every token, rows 0..max_T-1 allocated once (position j in row j);
//   local layer:  a ring buffer of W rows (position j in row j % W): token t overwrites token t - W,
//                 the one key that has just left every future query's window. The cache stops
//                 growing at W tokens, which is the whole memory argument for sliding windows.
// Chunked prefill grows a local layer's buffer to W-1+c rows for one chunk of c tokens (the chunk's
// first query still needs the W-1 keys before it) and shrinks it back to the last W afterwards.
struct MixerCache {
    int max_T;          // positions the sequence may reach
    int window;         // W on a local layer, 0 on a global one
    int n;              // tokens seen so far = the next token's position
    int cap, base;      // rows in k and v; position j lives in row (j - base) % cap
    int kv_dim;         // G * dh
    int held_peak;      // the most tokens held at any moment (a prefill chunk's W-1+c)
    float *k, *v;       // (cap, G*dh) each, one allocation: keys after RoPE, values
    float *q, *o;       // (H*dh) one step's query and head outputs (scratch)
    float *kt, *vt;     // (G*dh) one step's key and value before they enter the cache (scratch)
    float *s, *p;       // (most keys one query sees) one head's logits and weights (scratch)
    float *extra;       // scratch of the mixer that built on this cache (mha_cache_new_with_scratch)
};

void mha_cache_fill_random(MixerCache *c, int n_tokens, Rng *rng) {
    CHECK(n_tokens >= 0 && c->n + n_tokens <= c->max_T, "mha_cache_fill_random: %d more tokens exceed max_T %d",
          n_tokens, c->max_T);
    int rows = c->n + n_tokens < c->cap ? c->n + n_tokens : c->cap;
    rng_fill_normal(rng, c->k, (long)rows * c->kv_dim, 1.0f);
    rng_fill_normal(rng, c->v, (long)rows * c->kv_dim, 1.0f);
    c->n += n_tokens;
    if (rows > c->held_peak) c->held_peak = rows;
}

// Rows a layer keeps between steps: all max_T tokens, or the last min(W, max_T) on a local layer.
static int cache_rest_cap(const MixerCache *c) {
    return c->window > 0 && c->window < c->max_T ? c->window : c->max_T;
}

// Tokens held now: every token seen, but no more than the ring's W on a local layer.
static int cache_held(const MixerCache *c) {
    int rest = cache_rest_cap(c);
    return c->n < rest ? c->n : rest;
}

// Moves positions keep_from..n-1 into a new buffer of new_cap rows laid out from base new_base
// (position j in row (j - new_base) % new_cap), freeing the old one.
static void cache_relayout(MixerCache *c, int new_cap, int new_base, int keep_from) {
    size_t kvd = (size_t)c->kv_dim;
    float *k = mallocCheck(sizeof(float) * 2 * (size_t)new_cap * kvd), *v = k + (size_t)new_cap * kvd;
    for (int j = keep_from; j < c->n; j++) {
        size_t from = (size_t)((j - c->base) % c->cap) * kvd, to = (size_t)((j - new_base) % new_cap) * kvd;
        memcpy(k + to, c->k + from, sizeof(float) * kvd);
        memcpy(v + to, c->v + from, sizeof(float) * kvd);
    }
    free(c->k);
    c->k = k;
    c->v = v;
    c->cap = new_cap;
    c->base = new_base;
}

MixerCache *mha_cache_new_with_scratch(const Mixer *m, int max_T, size_t extra_floats) {
    const ModelGeometry *g = m->g;
    geometry_check(g);
    CHECK(max_T > 0, "gqa: cache for %d tokens", max_T);
    size_t qd = (size_t)g->n_heads * g->head_dim, kvd = (size_t)g->n_kv_heads * g->head_dim;
    MixerCache *c = callocCheck(1, sizeof *c);
    c->max_T = max_T;
    c->window = mha_layer_window(g, m->layer);
    c->kv_dim = (int)kvd;
    c->cap = cache_rest_cap(c);
    c->k = callocCheck(2 * (size_t)c->cap * kvd, sizeof(float));
    c->v = c->k + (size_t)c->cap * kvd;
    // a query sees at most cap keys (W on a local layer), so one row of logits is that long
    c->q = callocCheck(2 * qd + 2 * kvd + 2 * (size_t)c->cap + extra_floats, sizeof(float));
    c->o = c->q + qd;
    c->kt = c->o + qd;
    c->vt = c->kt + kvd;
    c->s = c->vt + kvd;
    c->p = c->s + c->cap;
    c->extra = c->p + c->cap;
    return c;
}

float *mha_cache_scratch(MixerCache *c) { return c->extra; }

int mha_cache_position(const MixerCache *c) { return c->n; }

static MixerCache *gqa_cache_new(const Mixer *m, int max_T) { return mha_cache_new_with_scratch(m, max_T, 0); }

static void gqa_cache_free(MixerCache *c) {
    if (!c) return;
    free(c->k);
    free(c->q);
    free(c);
}

// Bytes of K and V actually holding tokens: 2 (K and V) * G * dh * 4 bytes (fp32) per token held, and
// a local layer holds min(n, W) tokens: the per-layer term of kvcache_total_bytes with dtype_bytes = 4.
// One-step scratch is not counted: it is not cache that grows with context.
static size_t gqa_cache_bytes(const MixerCache *c) {
    return sizeof(float) * 2 * (size_t)c->kv_dim * (size_t)cache_held(c);
}

size_t mha_cache_peak_bytes(const MixerCache *c) {
    return sizeof(float) * 2 * (size_t)c->kv_dim * (size_t)c->held_peak;
}

void mha_cache_step(MixerCache *c, float *o, const float *q, const float *k, const float *v, int n_heads,
                    int head_dim) {
    CHECK(c->n < c->max_T, "gqa decode: cache is full (%d tokens)", c->max_T);
    int t = c->n;   // this token's position
    int kvd = c->kv_dim, group = n_heads / (kvd / head_dim);
    // its k and v go into row (t - base) % cap, which on a full ring is the row of token t - W: no
    // query from here on can see that one
    size_t row = (size_t)((t - c->base) % c->cap) * kvd;
    memcpy(c->k + row, k, sizeof(float) * (size_t)kvd);
    memcpy(c->v + row, v, sizeof(float) * (size_t)kvd);
    c->n++;
    if (cache_held(c) > c->held_peak) c->held_peak = cache_held(c);

    // one row of attention per query head, over the cached keys (the last W on a local layer)
    int lo = first_key(t, c->window);
    float scale = 1.0f / sqrtf((float)head_dim);
    for (int h = 0; h < n_heads; h++) {
        size_t kvh = (size_t)(h / group) * head_dim;
        attend(o + (size_t)h * head_dim, c->p, c->s, q + (size_t)h * head_dim, c->k + kvh, c->v + kvh, (size_t)kvd,
               lo, t, c->base, c->cap, head_dim, scale);
    }
}

static void gqa_decode(const Mixer *m, MixerCache *c, float *out, const float *x, const float *params) {
    const ModelGeometry *g = m->g;
    int d = g->d_model, H = g->n_heads, G = g->n_kv_heads, dh = g->head_dim;
    int qd = H * dh, kvd = G * dh;
    int t = c->n;   // this token's position
    double theta = mha_layer_rope_theta(g, m->layer);
    size_t off[N_WEIGHTS];
    param_offsets(g, off);

    // project the one new token, rotate its query and key, then attend over the cache
    linear_forward(c->q, x, params + off[WQ], NULL, 1, d, qd);
    linear_forward(c->kt, x, params + off[WK], NULL, 1, d, kvd);
    linear_forward(c->vt, x, params + off[WV], NULL, 1, d, kvd);
    for (int h = 0; h < H; h++) rope_apply(c->q + (size_t)h * dh, t, dh, theta, ROPE_HALF, 0);
    for (int h = 0; h < G; h++) rope_apply(c->kt + (size_t)h * dh, t, dh, theta, ROPE_HALF, 0);
    mha_cache_step(c, c->o, c->q, c->kt, c->vt, H, dh);
    linear_forward(out, c->o, params + off[WO], NULL, 1, qd, d);
}

void mha_prefill(const Mixer *m, MixerCache *c, float *out, const float *x, const float *params, int n_tokens) {
    const ModelGeometry *g = m->g;
    int d = g->d_model, H = g->n_heads, G = g->n_kv_heads, dh = g->head_dim;
    int qd = H * dh, kvd = G * dh, group = H / G, W = c->window, n0 = c->n;
    CHECK(n_tokens >= 1 && n0 + n_tokens <= c->max_T, "gqa prefill: %d tokens after %d do not fit %d", n_tokens,
          n0, c->max_T);
    double theta = mha_layer_rope_theta(g, m->layer);
    float scale = 1.0f / sqrtf((float)dh);
    size_t off[N_WEIGHTS];
    param_offsets(g, off);

    // A local layer's chunk: the first query (position n0) needs the W-1 keys before it, the last
    // one (n0+c-1) needs the chunk's own c keys, so the buffer holds W-1+c tokens while computing,
    // laid out in position order from the oldest one kept.
    if (W > 0) {
        int keep = n0 < W - 1 ? n0 : W - 1;
        cache_relayout(c, keep + n_tokens, n0 - keep, n0 - keep);
    }
    int held = (W > 0 ? c->cap : n0 + n_tokens);
    if (held > c->held_peak) c->held_peak = held;

    // the chunk's rows are contiguous in either layout: positions n0.. sit in rows n0 - base..
    float *q = mallocCheck(sizeof(float) * 2 * (size_t)n_tokens * qd), *o = q + (size_t)n_tokens * qd;
    float *kc = c->k + (size_t)(n0 - c->base) * kvd, *vc = c->v + (size_t)(n0 - c->base) * kvd;
    linear_forward(q, x, params + off[WQ], NULL, n_tokens, d, qd);    // (c, H*dh)
    linear_forward(kc, x, params + off[WK], NULL, n_tokens, d, kvd);  // (c, G*dh)
    linear_forward(vc, x, params + off[WV], NULL, n_tokens, d, kvd);  // (c, G*dh)
    for (int r = 0; r < n_tokens; r++) {
        for (int h = 0; h < H; h++) rope_apply(q + (size_t)r * qd + (size_t)h * dh, n0 + r, dh, theta, ROPE_HALF, 0);
        for (int h = 0; h < G; h++) rope_apply(kc + (size_t)r * kvd + (size_t)h * dh, n0 + r, dh, theta, ROPE_HALF, 0);
    }
    for (int r = 0; r < n_tokens; r++) {
        int i = n0 + r, lo = first_key(i, W);
        for (int h = 0; h < H; h++) {
            size_t kvh = (size_t)(h / group) * dh, qh = (size_t)r * qd + (size_t)h * dh;
            attend(o + qh, c->p, c->s, q + qh, c->k + kvh, c->v + kvh, (size_t)kvd, lo, i, c->base, c->cap, dh,
                   scale);
        }
    }
    linear_forward(out, o, params + off[WO], NULL, n_tokens, qd, d);   // (c, d)
    free(q);
    c->n = n0 + n_tokens;

    // back to the ring: only the last W tokens stay
    if (W > 0) {
        int rest = cache_rest_cap(c);
        cache_relayout(c, rest, 0, c->n > rest ? c->n - rest : 0);
    }
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

// Load-time check of everything geometry_check and the layer functions assume.
static int gqa_validate(const ModelGeometry *g, int layer, char *why, size_t cap) {
    if (!mixer_validate_attention(g, layer, "gqa", ATTN_GQA, 1, why, cap)) return 0;
    if (g->head_dim < 2 || g->head_dim % 2 != 0)
        return mixer_fail(why, cap, "head_dim %d must be positive and even (RoPE rotates pairs)", g->head_dim);
    if (g->attn_output_gate != GATE_NONE || g->qk_norm != QK_NORM_NONE ||
        (g->partial_rotary_factor != 0.0 && g->partial_rotary_factor != 1.0))
        return mixer_fail(why, cap, "attn_output_gate, qk_norm and partial_rotary_factor are for mixer 'gated'; "
                                    "mixer 'gqa' has no gate, no qk norm and rotates every dim");
    return 1;
}

const MixerOps gqa_mixer = {
    .name = "gqa",
    .validate = gqa_validate,
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
