// gated.c: Qwen3-Next's gated attention: GQA with an output gate, QK norm and partial RoPE.
//
// Per layer, H query heads, G KV heads of head_dim dh, gw gate channels per head (dh, 1 or 0):
//   [q_h | g_h] = (x Wq^T) split per head   (T, H*(dh+gw))       the gate comes with the query
//   k = x Wk^T (T,G*dh)   v = x Wv^T (T,G*dh)
//   q_h, k_g <- RMSNorm over the head's dh dims, gain w (or 1 + w, zero-centred)
//   q_h, k_g <- RoPE on their first rot dims only
//   o_h = softmax(q_h k_g^T / sqrt(dh)) v_g                       (chapter 3's core, unchanged)
//   o_h <- o_h * sigmoid(g_h);  out = concat_h(o_h) Wo^T
// The gate lets a head output (nearly) nothing: without it, softmax must put its weight of 1 somewhere,
// and trained models park it on the first token (the "attention sink"). The gated-attention paper
// (Qiu et al. 2025) reports the sink shrinks once heads can close their gate instead.
#include "08_gated/gated.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "03_mha/mha.h"
#include "check.h"
#include "mathx.h"

enum { WQ, WK, WV, WO, Q_NORM, K_NORM, N_TENSORS };

typedef struct {
    int d, H, G, dh;
    int gw;          // gate channels per head
    int qgd;         // H * (dh + gw): one row of the query projection
    int qd, kvd;     // H * dh, G * dh
    int rot;         // dims of each head RoPE rotates
    int norm;        // QkNormKind
    int W;           // sliding window (0: causal over the whole past)
    double theta;
} Dims;

int gated_gate_width(const ModelGeometry *g) {
    if (g->attn_output_gate == GATE_ELEMENTWISE) return g->head_dim;
    return g->attn_output_gate == GATE_HEADWISE ? 1 : 0;
}

int gated_rotary_dims(const ModelGeometry *g) {
    return (int)lround(g->head_dim * geometry_rotary_fraction(g));
}

static Dims dims_of(const ModelGeometry *g, int layer) {
    Dims z;
    z.d = g->d_model;
    z.H = g->n_heads;
    z.G = g->n_kv_heads;
    z.dh = g->head_dim;
    z.gw = gated_gate_width(g);
    z.qgd = z.H * (z.dh + z.gw);
    z.qd = z.H * z.dh;
    z.kvd = z.G * z.dh;
    z.rot = gated_rotary_dims(g);
    z.norm = g->qk_norm;
    z.W = mha_layer_window(g, layer);
    z.theta = mha_layer_rope_theta(g, layer);
    CHECK(z.H > 0 && z.G > 0 && z.H % z.G == 0, "gated: n_heads %d must be a positive multiple of n_kv_heads %d",
          z.H, z.G);
    CHECK(z.dh > 0 && z.rot >= 0 && z.rot <= z.dh && z.rot % 2 == 0,
          "gated: rotary dims %d of head_dim %d must be even and fit the head", z.rot, z.dh);
    CHECK(z.norm >= QK_NORM_NONE && z.norm <= QK_NORM_ZERO_CENTRED, "gated: unknown qk_norm %d", z.norm);
    return z;
}

// Offsets (floats) of the tensors in the layer's parameter slice; the norms are absent (size 0) when off.
static void param_offsets(const Dims *z, size_t off[N_TENSORS + 1]) {
    size_t sizes[N_TENSORS] = {(size_t)z->qgd * z->d, (size_t)z->kvd * z->d, (size_t)z->kvd * z->d,
                               (size_t)z->d * z->qd, z->norm ? (size_t)z->dh : 0, z->norm ? (size_t)z->dh : 0};
    off[0] = 0;
    for (int i = 0; i < N_TENSORS; i++) off[i + 1] = off[i] + sizes[i];
}

// What forward saves, at (B,T), N = B*T rows. P first: batch 0's attention sits at offset 0 whatever
// B is (mixing_matrix knows only T).
typedef struct {
    float *P;              // (B,H,T,T) attention weights, exactly 0 where masked
    float *qg;             // (N, H*(dh+gw)) the query projection: per head [q_h | g_h], g raw (pre-sigmoid)
    float *qraw, *kraw;    // (N,H*dh), (N,G*dh) query and key heads before the norm
    float *q, *k;          // (N,H*dh), (N,G*dh) after norm and RoPE
    float *v;              // (N,G*dh)
    float *o, *og;         // (N,H*dh) head outputs before and after the gate (og is Wo's input)
    float *rstd_q, *rstd_k;// (N*H), (N*G) of the norms
    float *wq_eff, *wk_eff;// (dh) the norms' gains: w, or 1 + w when zero-centred
} GatedAct;

static GatedAct act_view(const Dims *z, float *act, int B, int T) {
    size_t N = (size_t)B * T;
    GatedAct a;
    a.P = act;
    a.qg = a.P + (size_t)B * z->H * T * T;
    a.qraw = a.qg + N * z->qgd;
    a.kraw = a.qraw + N * z->qd;
    a.q = a.kraw + N * z->kvd;
    a.k = a.q + N * z->qd;
    a.v = a.k + N * z->kvd;
    a.o = a.v + N * z->kvd;
    a.og = a.o + N * z->qd;
    a.rstd_q = a.og + N * z->qd;
    a.rstd_k = a.rstd_q + N * z->H;
    a.wq_eff = a.rstd_k + N * z->G;
    a.wk_eff = a.wq_eff + z->dh;
    return a;
}

static size_t act_floats_of(const Dims *z, int B, int T) {
    size_t N = (size_t)B * T;
    return (size_t)B * z->H * T * T + N * ((size_t)z->qgd + 4 * (size_t)z->qd + 3 * (size_t)z->kvd + z->H + z->G) +
           2 * (size_t)z->dh;
}

// The norm's gain as RMSNorm multiplies it: w, or 1 + w for the zero-centred form (so w = 0 is the
// identity gain, and weight decay pulls toward it).
static void norm_gain(float *eff, const float *w, const Dims *z) {
    for (int c = 0; c < z->dh; c++) eff[c] = z->norm == QK_NORM_ZERO_CENTRED ? 1.0f + w[c] : w[c];
}

void gated_rope(float *x, int pos, const ModelGeometry *g, int layer, int inverse) {
    int rot = gated_rotary_dims(g);
    if (rot > 0) rope_apply(x, pos, rot, mha_layer_rope_theta(g, layer), ROPE_HALF, inverse);
}

// The gate of channel c of a head whose projection row has its gate at gh: sigmoid(g_c), sigmoid(g)
// for a headwise gate, 1 without one.
static float gate_at(const float *gh, const Dims *z, int c) {
    if (z->gw == 0) return 1.0f;
    return sigmoidf_(gh[z->gw == 1 ? 0 : c]);
}

// og (n, H*dh) = o * sigmoid(g), g read from the projection rows qg (n, H*(dh+gw)).
static void gate_forward(float *og, const float *o, const float *qg, const Dims *z, int n) {
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++)
        for (int h = 0; h < z->H; h++) {
            const float *oh = o + (size_t)r * z->qd + (size_t)h * z->dh;
            const float *gh = qg + (size_t)r * z->qgd + (size_t)h * (z->dh + z->gw) + z->dh;
            float *out = og + (size_t)r * z->qd + (size_t)h * z->dh;
            for (int c = 0; c < z->dh; c++) out[c] = oh[c] * gate_at(gh, z, c);
        }
}

// ---- MixerOps ------------------------------------------------------------------------------------

static int gated_param_tensors(const ModelGeometry *g, int layer, ParamTensor *out, int cap) {
    Dims z = dims_of(g, layer);
    int n = z.norm ? N_TENSORS : Q_NORM;   // the norms only when on
    CHECK(cap >= n, "gated: param_tensors needs room for %d tensors, got %d", n, cap);
    static const char *names[N_TENSORS] = {"wq", "wk", "wv", "wo", "q_norm", "k_norm"};
    int64_t rows[N_TENSORS] = {z.qgd, z.kvd, z.kvd, z.d, z.dh, z.dh};
    int64_t cols[N_TENSORS] = {z.d, z.d, z.d, z.qd, 0, 0};
    size_t off[N_TENSORS + 1];
    param_offsets(&z, off);
    for (int i = 0; i < n; i++) {
        memset(&out[i], 0, sizeof out[i]);
        snprintf(out[i].name, sizeof out[i].name, "%s", names[i]);
        out[i].ndim = cols[i] ? 2 : 1;
        out[i].shape[0] = rows[i];
        out[i].shape[1] = cols[i];
        out[i].offset = off[i];
    }
    return n;
}

static void gated_init(const Mixer *m, float *params, Rng *rng) {
    Dims z = dims_of(m->g, m->layer);
    size_t off[N_TENSORS + 1];
    param_offsets(&z, off);
    // as gqa_mixer: N(0, 0.02^2), the projection back into the residual scaled by 1/sqrt(2 n_layers).
    // The gate rows start near 0, so every gate starts half open (sigmoid(0) = 1/2).
    rng_fill_normal(rng, params + off[WQ], (long)z.qgd * z.d, 0.02f);
    rng_fill_normal(rng, params + off[WK], (long)z.kvd * z.d, 0.02f);
    rng_fill_normal(rng, params + off[WV], (long)z.kvd * z.d, 0.02f);
    int L = m->g->n_layers > 0 ? m->g->n_layers : 1;
    rng_fill_normal(rng, params + off[WO], (long)z.d * z.qd, 0.02f / sqrtf(2.0f * (float)L));
    // the norms start as the identity gain: w = 1 for RMSNorm, w = 0 for the zero-centred form
    float w0 = z.norm == QK_NORM_ZERO_CENTRED ? 0.0f : 1.0f;
    for (size_t i = off[Q_NORM]; i < off[N_TENSORS]; i++) params[i] = w0;
}

static size_t gated_act_floats(const ModelGeometry *g, int layer, int B, int T) {
    Dims z = dims_of(g, layer);
    return act_floats_of(&z, B, T);
}

static void gated_forward(const Mixer *m, float *out, float *act, const float *x, const float *params, int B,
                          int T) {
    Dims z = dims_of(m->g, m->layer);
    int N = B * T;
    size_t off[N_TENSORS + 1];
    param_offsets(&z, off);
    GatedAct a = act_view(&z, act, B, T);

    linear_forward(a.qg, x, params + off[WQ], NULL, N, z.d, z.qgd);     // (N, H*(dh+gw))
    linear_forward(a.kraw, x, params + off[WK], NULL, N, z.d, z.kvd);   // (N, G*dh)
    linear_forward(a.v, x, params + off[WV], NULL, N, z.d, z.kvd);      // (N, G*dh)
    // the query heads, out of their [q_h | g_h] rows
    for (int r = 0; r < N; r++)
        for (int h = 0; h < z.H; h++)
            memcpy(a.qraw + (size_t)r * z.qd + (size_t)h * z.dh, a.qg + (size_t)r * z.qgd + (size_t)h * (z.dh + z.gw),
                   sizeof(float) * (size_t)z.dh);
    // QK norm: each head vector is one row of dh
    if (z.norm) {
        norm_gain(a.wq_eff, params + off[Q_NORM], &z);
        norm_gain(a.wk_eff, params + off[K_NORM], &z);
        rmsnorm_forward(a.q, a.rstd_q, a.qraw, a.wq_eff, N * z.H, z.dh, GATED_NORM_EPS);
        rmsnorm_forward(a.k, a.rstd_k, a.kraw, a.wk_eff, N * z.G, z.dh, GATED_NORM_EPS);
    } else {
        memcpy(a.q, a.qraw, sizeof(float) * (size_t)N * z.qd);
        memcpy(a.k, a.kraw, sizeof(float) * (size_t)N * z.kvd);
    }
    if (z.rot > 0) {
        mha_rope_rows(a.q, N, T, z.H, z.dh, z.rot, z.theta, 0);
        mha_rope_rows(a.k, N, T, z.G, z.dh, z.rot, z.theta, 0);
    }
    mha_attention_forward(a.o, a.P, a.q, a.k, a.v, B, T, z.H, z.G, z.dh, z.W);
    gate_forward(a.og, a.o, a.qg, &z, N);
    linear_forward(out, a.og, params + off[WO], NULL, N, z.qd, z.d);    // (N, d)
}

static void gated_backward(const Mixer *m, float *dx, float *dparams, const float *dout, const float *act,
                           const float *x, const float *params, int B, int T) {
    Dims z = dims_of(m->g, m->layer);
    int N = B * T;
    size_t off[N_TENSORS + 1];
    param_offsets(&z, off);
    GatedAct a = act_view(&z, (float *)act, B, T);   // read only

    // One zeroed block per call for the gradients (act is const, so backward brings its own scratch).
    size_t n = (size_t)N;
    float *dqg = callocCheck(n * ((size_t)z.qgd + 4 * (size_t)z.qd + 4 * (size_t)z.kvd), sizeof(float));
    float *d_og = dqg + n * z.qgd;      // (N, H*dh)
    float *d_o = d_og + n * z.qd;       // (N, H*dh)
    float *dq = d_o + n * z.qd;         // (N, H*dh) after RoPE
    float *dqraw = dq + n * z.qd;       // (N, H*dh) before the norm
    float *dk = dqraw + n * z.qd;       // (N, G*dh) after RoPE
    float *dkraw = dk + n * z.kvd;      // (N, G*dh) before the norm
    float *dv = dkraw + n * z.kvd;      // (N, G*dh)

    // out = og Wo^T
    linear_backward(d_og, dparams + off[WO], NULL, dout, a.og, params + off[WO], N, z.qd, z.d);

    // og = o * s, s = sigmoid(g):  d_o = d_og * s,  dg = d_og * o * s (1 - s), summed over the head's
    // channels for a headwise gate. dg goes straight into the gate slots of the projection's gradient.
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++)
        for (int h = 0; h < z.H; h++) {
            size_t oi = (size_t)r * z.qd + (size_t)h * z.dh;
            size_t gi = (size_t)r * z.qgd + (size_t)h * (z.dh + z.gw) + z.dh;   // the head's gate slots
            const float *oh = a.o + oi, *gog = d_og + oi, *gh = a.qg + gi;
            float *go = d_o + oi, *gg = dqg + gi;
            float dot = 0.0f;   // headwise: sum over the head's channels of d_og * o
            for (int c = 0; c < z.dh; c++) {
                float s = gate_at(gh, &z, c);
                go[c] = gog[c] * s;
                if (z.gw == z.dh) gg[c] = gog[c] * oh[c] * s * (1.0f - s);
                else dot += gog[c] * oh[c];
            }
            if (z.gw == 1) {
                float s = gate_at(gh, &z, 0);
                gg[0] = dot * s * (1.0f - s);
            }
        }

    mha_attention_backward(dq, dk, dv, d_o, a.P, a.q, a.k, a.v, B, T, z.H, z.G, z.dh, z.W);

    // RoPE is a rotation: its backward is the inverse rotation of the same dims
    if (z.rot > 0) {
        mha_rope_rows(dq, N, T, z.H, z.dh, z.rot, z.theta, 1);
        mha_rope_rows(dk, N, T, z.G, z.dh, z.rot, z.theta, 1);
    }
    // QK norm: the gain's gradient is the same for w and for 1 + w
    const float *gq = dq, *gk = dk;
    if (z.norm) {
        rmsnorm_backward(dqraw, dparams + off[Q_NORM], dq, a.qraw, a.wq_eff, a.rstd_q, N * z.H, z.dh);
        rmsnorm_backward(dkraw, dparams + off[K_NORM], dk, a.kraw, a.wk_eff, a.rstd_k, N * z.G, z.dh);
        gq = dqraw;
        gk = dkraw;
    }
    // the query part of each [q_h | g_h] row of the projection's gradient
    for (int r = 0; r < N; r++)
        for (int h = 0; h < z.H; h++)
            memcpy(dqg + (size_t)r * z.qgd + (size_t)h * (z.dh + z.gw), gq + (size_t)r * z.qd + (size_t)h * z.dh,
                   sizeof(float) * (size_t)z.dh);
    linear_backward(dx, dparams + off[WQ], NULL, dqg, x, params + off[WQ], N, z.d, z.qgd);
    linear_backward(dx, dparams + off[WK], NULL, gk, x, params + off[WK], N, z.d, z.kvd);
    linear_backward(dx, dparams + off[WV], NULL, dv, x, params + off[WV], N, z.d, z.kvd);
    free(dqg);
}

// ---- decode: GQA's KV cache, with this mixer's one-step work in its scratch ------------------------

// Scratch floats of one step: qg (H*(dh+gw)), q (H*dh), k, v (G*dh), o, og (H*dh), gains (2*dh).
static size_t step_floats(const Dims *z) {
    return (size_t)z->qgd + 3 * (size_t)z->qd + 2 * (size_t)z->kvd + 2 * (size_t)z->dh;
}

static void gated_cache_free(MixerCache *c) { gqa_mixer.cache_free(c); }
static size_t gated_cache_bytes(const MixerCache *c) { return gqa_mixer.cache_bytes(c); }

static MixerCache *gated_cache_new(const Mixer *m, int max_T) {
    Dims z = dims_of(m->g, m->layer);
    return mha_cache_new_with_scratch(m, max_T, step_floats(&z));
}

static void gated_decode(const Mixer *m, MixerCache *c, float *out, const float *x, const float *params) {
    Dims z = dims_of(m->g, m->layer);
    size_t off[N_TENSORS + 1];
    param_offsets(&z, off);
    float *qg = mha_cache_scratch(c), *q = qg + z.qgd, *k = q + z.qd, *v = k + z.kvd, *o = v + z.kvd;
    float *og = o + z.qd, *wq_eff = og + z.qd, *wk_eff = wq_eff + z.dh;
    // project the one new token; its query and key are normed and rotated as forward does
    linear_forward(qg, x, params + off[WQ], NULL, 1, z.d, z.qgd);
    linear_forward(k, x, params + off[WK], NULL, 1, z.d, z.kvd);
    linear_forward(v, x, params + off[WV], NULL, 1, z.d, z.kvd);
    for (int h = 0; h < z.H; h++)
        memcpy(q + (size_t)h * z.dh, qg + (size_t)h * (z.dh + z.gw), sizeof(float) * (size_t)z.dh);
    if (z.norm) {
        norm_gain(wq_eff, params + off[Q_NORM], &z);
        norm_gain(wk_eff, params + off[K_NORM], &z);
        rmsnorm_forward(q, NULL, q, wq_eff, z.H, z.dh, GATED_NORM_EPS);
        rmsnorm_forward(k, NULL, k, wk_eff, z.G, z.dh, GATED_NORM_EPS);
    }
    int t = mha_cache_position(c);   // this token's position
    for (int h = 0; h < z.H; h++) gated_rope(q + (size_t)h * z.dh, t, m->g, m->layer, 0);
    for (int h = 0; h < z.G; h++) gated_rope(k + (size_t)h * z.dh, t, m->g, m->layer, 0);
    mha_cache_step(c, o, q, k, v, z.H, z.dh);
    gate_forward(og, o, qg, &z, 1);
    linear_forward(out, og, params + off[WO], NULL, 1, z.qd, z.d);
}

// ---- what the chapter draws --------------------------------------------------------------------------

static int gated_n_mix_heads(const ModelGeometry *g, int layer) {
    (void)layer;
    return g->n_heads;
}

static void gated_mixing_matrix(const Mixer *m, float *A, const float *act, const float *params, int T) {
    (void)params;
    memcpy(A, act, sizeof(float) * (size_t)m->g->n_heads * T * T);   // batch 0's P leads act
}

void gated_gate_values(const Mixer *m, float *gates, const float *act, int B, int T) {
    Dims z = dims_of(m->g, m->layer);
    GatedAct a = act_view(&z, (float *)act, B, T);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < z.H; h++)
            for (int c = 0; c < z.gw; c++)
                gates[(size_t)t * z.H * z.gw + (size_t)h * z.gw + c] =
                    sigmoidf_(a.qg[(size_t)t * z.qgd + (size_t)h * (z.dh + z.gw) + z.dh + c]);
}

// Load-time check of everything dims_of and the layer functions assume.
static int gated_validate(const ModelGeometry *g, int layer, char *why, size_t cap) {
    if (!mixer_validate_attention(g, layer, "gated", ATTN_GQA, 1, why, cap)) return 0;
    if (g->head_dim < 1) return mixer_fail(why, cap, "head_dim %d must be positive", g->head_dim);
    if (g->attn_output_gate < GATE_NONE || g->attn_output_gate > GATE_HEADWISE)
        return mixer_fail(why, cap, "unknown attn_output_gate %d", g->attn_output_gate);
    if (g->qk_norm < QK_NORM_NONE || g->qk_norm > QK_NORM_ZERO_CENTRED)
        return mixer_fail(why, cap, "unknown qk_norm %d", g->qk_norm);
    double f = geometry_rotary_fraction(g), rot = f * g->head_dim;
    if (!(f > 0.0 && f <= 1.0) || rot != floor(rot) || (long)rot % 2 != 0)
        return mixer_fail(why, cap, "partial_rotary_factor %g of head_dim %d must turn an even number of dims", f,
                          g->head_dim);
    return 1;
}

const MixerOps gated_mixer = {
    .name = "gated",
    .validate = gated_validate,
    .param_tensors = gated_param_tensors,
    .init = gated_init,
    .act_floats = gated_act_floats,
    .forward = gated_forward,
    .backward = gated_backward,
    .cache_new = gated_cache_new,
    .cache_free = gated_cache_free,
    .cache_bytes = gated_cache_bytes,
    .decode = gated_decode,
    .n_mix_heads = gated_n_mix_heads,
    .mixing_matrix = gated_mixing_matrix,
};
