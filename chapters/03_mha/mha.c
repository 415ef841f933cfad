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

#include "attention.h"
#include "check.h"
#include "kvquant.h"
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

// The heads of a layer as the attention core (common/attention.h) sees them.
static AttnHeads heads_of(int H, int G, int dh) {
    return (AttnHeads){.n_heads = H, .n_kv_heads = G, .dk = dh, .dv = dh, .scale = 1.0f / sqrtf((float)dh)};
}

// q (B*T, H*dh), k and v (B*T, G*dh): the rows of a batch as the core reads them.
static AttnBatch batch_of(const float *q, const float *k, const float *v, int B, int T, int H, int G, int dh,
                          int window) {
    size_t kvd = (size_t)G * dh;
    return (AttnBatch){.B = B, .T = T, .window = window, .q = q, .q_stride = (size_t)H * dh, .k = k, .v = v,
                       .k_stride = kvd, .k_head = (size_t)dh, .v_stride = kvd, .v_head = (size_t)dh};
}

void mha_attention_forward(float *o, float *P, const float *q, const float *k, const float *v, int B, int T,
                           int H, int G, int dh, int window) {
    AttnHeads h = heads_of(H, G, dh);
    AttnBatch a = batch_of(q, k, v, B, T, H, G, dh, window);
    attn_batch_forward(o, (size_t)H * dh, P, NULL, &a, &h);
}

void mha_attention_backward(float *dq, float *dk, float *dv, const float *d_o, const float *P, const float *q,
                            const float *k, const float *v, int B, int T, int H, int G, int dh, int window) {
    AttnHeads h = heads_of(H, G, dh);
    AttnBatch a = batch_of(q, k, v, B, T, H, G, dh, window);
    attn_batch_backward(dq, dk, dv, NULL, d_o, (size_t)H * dh, P, NULL, &a, &h);
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
    AttnHeads heads;    // the layer's heads as the attention core sees them
    float *work;        // the core's scratch for the most keys one query sees (scratch)
    float *extra;       // scratch of the mixer that built on this cache (mha_cache_new_with_scratch)
    // a quantized cache (chapter 12; NULL: the fp32 rows above are the cache): K and V live as codes in
    // these streams, and k, v become one step's scratch that each step decodes the held rows into
    KvqStream *qk, *qv;
    float *qw, *ow;     // (H*dh) the query turned into the streams' working domain, and the output before
                        // it is turned back
};

void mha_cache_fill_random(MixerCache *c, int n_tokens, Rng *rng) {
    CHECK(n_tokens >= 0 && c->n + n_tokens <= c->max_T, "mha_cache_fill_random: %d more tokens exceed max_T %d",
          n_tokens, c->max_T);
    int rows = c->n + n_tokens < c->cap ? c->n + n_tokens : c->cap;
    if (c->qk) {   // a quantized cache takes its rows through the encoder, one token at a time
        for (int t = 0; t < n_tokens; t++) {
            rng_fill_normal(rng, c->kt, c->kv_dim, 1.0f);
            rng_fill_normal(rng, c->vt, c->kv_dim, 1.0f);
            kvq_put(c->qk, c->n, c->kt);
            kvq_put(c->qv, c->n, c->vt);
            c->n++;
        }
        if (rows > c->held_peak) c->held_peak = rows;
        return;
    }
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
    c->heads = heads_of(g->n_heads, g->n_kv_heads, g->head_dim);
    c->k = callocCheck(2 * (size_t)c->cap * kvd, sizeof(float));
    c->v = c->k + (size_t)c->cap * kvd;
    // a query sees at most cap keys (W on a local layer), so the core's scratch is sized for that many
    size_t work = attn_scratch_floats(&c->heads, c->cap);
    c->q = callocCheck(2 * qd + 2 * kvd + work + extra_floats, sizeof(float));
    c->o = c->q + qd;
    c->kt = c->o + qd;
    c->vt = c->kt + kvd;
    c->work = c->vt + kvd;
    c->extra = c->work + work;
    return c;
}

float *mha_cache_scratch(MixerCache *c) { return c->extra; }

int mha_cache_position(const MixerCache *c) { return c->n; }

static MixerCache *gqa_cache_new(const Mixer *m, int max_T) { return mha_cache_new_with_scratch(m, max_T, 0); }

static void gqa_cache_free(MixerCache *c) {
    if (!c) return;
    kvq_stream_free(c->qk);
    kvq_stream_free(c->qv);
    free(c->qw);
    free(c->k);
    free(c->q);
    free(c);
}

// Bytes of K and V actually holding tokens: 2 (K and V) * G * dh * 4 bytes (fp32) per token held, and
// a local layer holds min(n, W) tokens: the per-layer term of kvcache_total_bytes with dtype_bytes = 4.
// One-step scratch is not counted: it is not cache that grows with context.
// A quantized cache counts its codes, scales and zero points (kvq_stream_held_bytes).
static size_t gqa_cache_bytes(const MixerCache *c) {
    if (c->qk) return kvq_stream_held_bytes(c->qk) + kvq_stream_held_bytes(c->qv);
    return sizeof(float) * 2 * (size_t)c->kv_dim * (size_t)cache_held(c);
}

size_t mha_cache_peak_bytes(const MixerCache *c) {
    if (c->qk) return gqa_cache_bytes(c);   // decode only: a quantized cache never shrinks
    return sizeof(float) * 2 * (size_t)c->kv_dim * (size_t)c->held_peak;
}

void mha_cache_set_quant(MixerCache *c, KvQuant *q) {
    CHECK(c->n == 0 && !c->qk, "gqa: a cache is quantized before its first token, once");
    if (!q) return;
    CHECK(kvq_scheme_of(q)->family != KVQ_KIVI || c->window == 0,
          "gqa: KIVI's key chunks need every token kept; layer has a window of %d", c->window);
    int G = c->heads.n_kv_heads, *w = mallocCheck(sizeof(int) * (size_t)G);
    for (int g = 0; g < G; g++) w[g] = c->heads.dk;   // one vector per KV head
    c->qk = kvq_stream_new(q, KVQ_KEY, w, G, c->cap);
    c->qv = kvq_stream_new(q, KVQ_VALUE, w, G, c->cap);
    free(w);
    c->qw = mallocCheck(sizeof(float) * 2 * (size_t)c->heads.n_heads * c->heads.dk);
    c->ow = c->qw + (size_t)c->heads.n_heads * c->heads.dk;
}

// The attention of one step over a quantized cache: the held rows are decoded into k and v in the
// streams' working domain, the query heads are turned into it (scores are unchanged: (Pi q).(Pi k) =
// q.k), and the weighted sum of values is turned back. For a scheme without a rotation the turns do
// nothing, so fp32 codes give the fp32 cache's bits.
static void quant_attend(MixerCache *c, float *o, const float *q, const AttnKeys *ks, int lo, int t) {
    int H = c->heads.n_heads, dh = c->heads.dk;
    kvq_get(c->qk, c->k, (size_t)c->kv_dim, lo, t, 0);
    kvq_get(c->qv, c->v, (size_t)c->kv_dim, lo, t, 0);
    memcpy(c->qw, q, sizeof(float) * (size_t)H * dh);
    for (int h = 0; h < H; h++) kvq_rotate(c->qk, c->qw + (size_t)h * dh, dh, 0);
    attn_query(c->ow, NULL, 0, NULL, c->qw, ks, &c->heads, 0, c->heads.n_kv_heads, c->work);
    memcpy(o, c->ow, sizeof(float) * (size_t)H * dh);
    for (int h = 0; h < H; h++) kvq_rotate(c->qv, o + (size_t)h * dh, dh, 1);
}

void mha_cache_step(MixerCache *c, float *o, const float *q, const float *k, const float *v, int n_heads,
                    int head_dim) {
    CHECK(c->n < c->max_T, "gqa decode: cache is full (%d tokens)", c->max_T);
    int t = c->n;   // this token's position
    int kvd = c->kv_dim;
    // its k and v go into row (t - base) % cap, which on a full ring is the row of token t - W: no
    // query from here on can see that one
    size_t row = (size_t)((t - c->base) % c->cap) * kvd;
    if (c->qk) {
        kvq_put(c->qk, t, k);
        kvq_put(c->qv, t, v);
    } else {
        memcpy(c->k + row, k, sizeof(float) * (size_t)kvd);
        memcpy(c->v + row, v, sizeof(float) * (size_t)kvd);
    }
    c->n++;
    if (cache_held(c) > c->held_peak) c->held_peak = cache_held(c);

    // every query head against the cached keys (the last W on a local layer): the attention core
    // reads each cached row once for all heads, and splits a long cache over threads
    CHECK(n_heads == c->heads.n_heads && head_dim == c->heads.dk, "gqa decode: %d heads of %d, cache made for %d of %d",
          n_heads, head_dim, c->heads.n_heads, c->heads.dk);
    AttnKeys ks = {.k = c->k, .v = c->v, .k_stride = (size_t)kvd, .k_head = (size_t)head_dim,
                   .v_stride = (size_t)kvd, .v_head = (size_t)head_dim};
    attn_keys_span(&ks, first_key(t, c->window), t, c->base, c->cap);
    if (c->qk) {
        quant_attend(c, o, q, &ks, first_key(t, c->window), t);
        return;
    }
    attn_query(o, NULL, 0, NULL, q, &ks, &c->heads, 0, c->heads.n_kv_heads, c->work);
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
    int qd = H * dh, kvd = G * dh, W = c->window, n0 = c->n;
    CHECK(n_tokens >= 1 && n0 + n_tokens <= c->max_T, "gqa prefill: %d tokens after %d do not fit %d", n_tokens,
          n0, c->max_T);
    CHECK(!c->qk, "gqa prefill: a quantized cache decodes one token at a time");
    double theta = mha_layer_rope_theta(g, m->layer);
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
    AttnKeys ks = {.k = c->k, .v = c->v, .k_stride = (size_t)kvd, .k_head = (size_t)dh, .v_stride = (size_t)kvd,
                   .v_head = (size_t)dh};
    for (int r = 0; r < n_tokens; r++) {
        int i = n0 + r;
        attn_keys_span(&ks, first_key(i, W), i, c->base, c->cap);
        attn_query(o + (size_t)r * qd, NULL, 0, NULL, q + (size_t)r * qd, &ks, &c->heads, 0, G, c->work);
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
