// kda.c: Kimi Delta Attention: the "kda" mixer. The layer is chapter 9's delta-rule layer (09_gdn/gdn.h:
// projections, conv, q/k norm, the core with g_dim = dk, the gated output norm, decode cache, mixing
// matrix); this file adds what KDA changes: the low-rank per-channel forget gate, the low-rank sigmoid
// output gate, beta from its own projection, and the parameter layout.
//
// Dims: d = d_model, H heads (key = value), dk, dv, r = dv the low rank, K conv kernel,
// Cc = 2*H*dk + H*dv conv channels, N = B*T rows.
#include "10_hybrids/kda.h"

#include <stdlib.h>
#include <string.h>

#include "09_gdn/gdn.h"
#include "check.h"
#include "mathx.h"

static DeltaLayer dims_of(const ModelGeometry *g) {
    CHECK(g->linear_num_key_heads == g->linear_num_value_heads, "kda: %d key heads, %d value heads (validate first)",
          g->linear_num_key_heads, g->linear_num_value_heads);
    return delta_layer_of(g, "kda", 1, 1, KDA_CHUNK);
}

static int kda_validate(const ModelGeometry *g, int layer, char *why, size_t cap) {
    if (!delta_layer_validate(g, layer, "kda", LINEAR_KDA, why, cap)) return 0;
    if (g->linear_num_key_heads != g->linear_num_value_heads)
        return mixer_fail(why, cap, "linear_num_key_heads %d must equal linear_num_value_heads %d (KDA has one head kind)",
                          g->linear_num_key_heads, g->linear_num_value_heads);
    return 1;
}

// ---- parameters -------------------------------------------------------------------------------------

enum { Q, K_, V, F_A, G_A, B_, F_B, G_B, CONV, A_LOG, DT_BIAS, O_NORM, O_PROJ, N_SLOTS };

static void specs(ParamSpec s[N_SLOTS], const DeltaLayer *z) {
    int hk = z->Hv * z->dk, hv = z->Hv * z->dv, r = z->dv;
    ParamSpec t[N_SLOTS] = {
        [Q] = {"q_proj", 2, {hk, z->d}, INIT_NORMAL},       [K_] = {"k_proj", 2, {hk, z->d}, INIT_NORMAL},
        [V] = {"v_proj", 2, {hv, z->d}, INIT_NORMAL},       [F_A] = {"f_a_proj", 2, {r, z->d}, INIT_NORMAL},
        [G_A] = {"g_a_proj", 2, {r, z->d}, INIT_NORMAL},    [B_] = {"b_proj", 2, {z->Hv, z->d}, INIT_NORMAL},
        [F_B] = {"f_b_proj", 2, {hk, r}, INIT_NORMAL},      [G_B] = {"g_b_proj", 2, {hv, r}, INIT_NORMAL},
        [CONV] = {"conv1d", 3, {z->Cc, 1, z->K}, INIT_CONV}, [A_LOG] = {"A_log", 1, {z->Hv}, INIT_DECAY},
        [DT_BIAS] = {"dt_bias", 1, {hk}, INIT_WITH_PREV},   [O_NORM] = {"o_norm", 1, {z->dv}, INIT_ONES},
        [O_PROJ] = {"o_proj", 2, {z->d, hv}, INIT_OUT},
    };
    memcpy(s, t, sizeof t);
}

// The shared weights, and the gates' low-rank pairs and beta's projection.
typedef struct { DeltaWeights l; float *f_a, *g_a, *b, *f_b, *g_b; } Weights;

static Weights weights_at(const DeltaLayer *z, float *p) {
    ParamSpec s[N_SLOTS];
    ParamTensor t[N_SLOTS];
    specs(s, z);
    param_table(t, N_SLOTS, s, N_SLOTS);
    return (Weights){.l = {.qkv = p + t[Q].offset, .conv = p + t[CONV].offset, .A_log = p + t[A_LOG].offset,
                           .dt_bias = p + t[DT_BIAS].offset, .norm = p + t[O_NORM].offset, .out = p + t[O_PROJ].offset},
                     .f_a = p + t[F_A].offset, .g_a = p + t[G_A].offset, .b = p + t[B_].offset,
                     .f_b = p + t[F_B].offset, .g_b = p + t[G_B].offset};
}

static int kda_param_tensors(const ModelGeometry *g, int layer, ParamTensor *out, int cap) {
    (void)layer;
    DeltaLayer z = dims_of(g);
    ParamSpec s[N_SLOTS];
    specs(s, &z);
    return param_table(out, cap, s, N_SLOTS);
}

static void kda_init(const Mixer *m, float *params, Rng *rng) {
    DeltaLayer z = dims_of(m->g);
    ParamSpec s[N_SLOTS];
    specs(s, &z);
    param_table_init(params, s, N_SLOTS, m->g, rng);
}

// ---- activations ------------------------------------------------------------------------------------

// KDA's own activations, after the shared ones (training) or in the decode cache's scratch.
typedef struct {
    float *fa, *ga;    // (N, r) low-rank codes of the forget gate and the output gate
    float *bl;         // (N, H) beta logits
    float *f;          // (N, H*dk) f_b_proj(fa), before dt_bias and softplus
    float *gate;       // (N, H*dv) output gate logits
} Gates;

static size_t gates_carve(Gates *a, float *base, size_t used, const DeltaLayer *z, int N) {
    a->fa = take_floats(base, &used, (size_t)N * z->dv);
    a->ga = take_floats(base, &used, (size_t)N * z->dv);
    a->bl = take_floats(base, &used, (size_t)N * z->Hv);
    a->f = take_floats(base, &used, (size_t)N * z->Hv * z->dk);
    a->gate = take_floats(base, &used, (size_t)N * z->Hv * z->dv);
    return used;
}

typedef struct { DeltaAct l; Gates k; } Act;

static size_t act_carve(Act *a, float *act, const DeltaLayer *z, int B, int T) {
    return gates_carve(&a->k, act, delta_act_carve(&a->l, act, z, B, T), z, B * T);
}

static size_t kda_act_floats(const ModelGeometry *g, int layer, int B, int T) {
    (void)layer;
    DeltaLayer z = dims_of(g);
    Act a;
    return act_carve(&a, NULL, &z, B, T);
}

// Forward and decode: conv_state and S NULL for a training forward over (B,T), the cache's for decode.
// g[h][c] = -exp(A_log[h]) softplus(f[h][c] + dt_bias[h][c]), f = f_b_proj(f_a_proj x): a per-channel
// forget gate of rank r; the output gate is g_b_proj(g_a_proj x).
static void run(float *out, DeltaAct *a, Gates *k, float *conv_state, float *S, const float *x, const Weights *w,
                const DeltaLayer *z, int B, int T) {
    int N = B * T, hk = z->Hv * z->dk, hv = z->Hv * z->dv, r = z->dv;
    delta_layer_in(a, conv_state, x, &w->l, z, B, T);
    linear_forward(k->fa, x, w->f_a, NULL, N, z->d, r);
    linear_forward(k->ga, x, w->g_a, NULL, N, z->d, r);
    linear_forward(k->bl, x, w->b, NULL, N, z->d, z->Hv);
    linear_forward(k->f, k->fa, w->f_b, NULL, N, r, hk);
    linear_forward(k->gate, k->ga, w->g_b, NULL, N, r, hv);
    delta_gates_forward(a, k->bl, z->Hv, k->f, hk, &w->l, z, N);
    delta_layer_out(out, a, S, k->gate, hv, &w->l, z, B, T);
}

static void kda_forward(const Mixer *m, float *out, float *act, const float *x, const float *params, int B, int T) {
    DeltaLayer z = dims_of(m->g);
    Weights w = weights_at(&z, (float *)params);   // read only
    Act a;
    act_carve(&a, act, &z, B, T);
    run(out, &a.l, &a.k, NULL, NULL, x, &w, &z, B, T);
}

static void kda_backward(const Mixer *m, float *dx, float *dparams, const float *dout, const float *act,
                         const float *x, const float *params, int B, int T) {
    DeltaLayer z = dims_of(m->g);
    int N = B * T, hk = z.Hv * z.dk, hv = z.Hv * z.dv, r = z.dv;
    Weights w = weights_at(&z, (float *)params), dw = weights_at(&z, dparams);
    Act a;
    act_carve(&a, (float *)act, &z, B, T);   // read only
    Gates dk;   // the gradients of KDA's own activations
    DeltaGrads d;
    delta_grads_new(&d, &z, N, gates_carve(&dk, NULL, 0, &z, N));
    gates_carve(&dk, d.mine, 0, &z, N);

    delta_layer_out_backward(&d, dk.gate, &dw.l, dout, &a.l, a.k.gate, hv, &w.l, &z, B, T);
    delta_gates_backward(dk.bl, z.Hv, dk.f, hk, &dw.l, &d, &a.l, a.k.f, &w.l, &z, N);
    linear_backward(dk.fa, dw.f_b, NULL, dk.f, a.k.fa, w.f_b, N, r, hk);
    linear_backward(dk.ga, dw.g_b, NULL, dk.gate, a.k.ga, w.g_b, N, r, hv);
    linear_backward(dx, dw.f_a, NULL, dk.fa, x, w.f_a, N, z.d, r);
    linear_backward(dx, dw.g_a, NULL, dk.ga, x, w.g_a, N, z.d, r);
    linear_backward(dx, dw.b, NULL, dk.bl, x, w.b, N, z.d, z.Hv);
    delta_layer_in_backward(dx, &dw.l, &d, &a.l, x, &w.l, &z, B, T);
    free(d.dy);
}

// ---- decode: the same fixed state as Gated DeltaNet --------------------------------------------------

struct MixerCache {
    DeltaCache d;      // state, conv state, the step's shared scratch
    Gates k;           // the step's gate scratch
};

static MixerCache *kda_cache_new(const Mixer *m, int max_T) {
    DeltaLayer z = dims_of(m->g);
    MixerCache *c = mallocCheck(sizeof *c);
    delta_cache_init(&c->d, &z, max_T, gates_carve(&c->k, NULL, 0, &z, 1));
    gates_carve(&c->k, c->d.mine, 0, &z, 1);
    return c;
}

static void kda_cache_free(MixerCache *c) {
    if (!c) return;
    delta_cache_release(&c->d);
    free(c);
}

static size_t kda_cache_bytes(const MixerCache *c) { return delta_cache_bytes(&c->d); }

static void kda_decode(const Mixer *m, MixerCache *c, float *out, const float *x, const float *params) {
    (void)m;
    DeltaCache *d = &c->d;
    CHECK(d->n < d->max_T, "kda decode: cache is full (%d tokens)", d->max_T);
    Weights w = weights_at(&d->z, (float *)params);
    run(out, &d->a, &c->k, d->conv_state, d->S, x, &w, &d->z, 1, 1);
    d->n++;
}

// ---- what the chapters draw ---------------------------------------------------------------------------

static void kda_mixing_matrix(const Mixer *m, float *A, const float *act, const float *params, int T) {
    (void)params;
    DeltaLayer z = dims_of(m->g);
    delta_layer_mixing_matrix(A, act, &z, T);
}

void kda_states_at(const Mixer *m, float *S, const float *act, int T, int head, const int *times, int n_times) {
    DeltaLayer z = dims_of(m->g);
    delta_layer_states_at(S, act, &z, T, head, times, n_times);
}

void kda_gates(const Mixer *m, float *beta, float *alpha, const float *act, int T) {
    DeltaLayer z = dims_of(m->g);
    delta_layer_gates(beta, alpha, act, &z, T);
}

void kda_geometry_tiny(ModelGeometry *g, int n_layers, int d_model, int n_heads) {
    delta_geometry_tiny(g, "tiny-kda", LINEAR_KDA, n_layers, d_model, n_heads, n_heads);
}

const MixerOps kda_mixer = {
    .name = "kda",
    .validate = kda_validate,
    .param_tensors = kda_param_tensors,
    .init = kda_init,
    .act_floats = kda_act_floats,
    .forward = kda_forward,
    .backward = kda_backward,
    .cache_new = kda_cache_new,
    .cache_free = kda_cache_free,
    .cache_bytes = kda_cache_bytes,
    .decode = kda_decode,
    .n_mix_heads = delta_n_mix_heads,
    .mixing_matrix = kda_mixing_matrix,
};
