// kda.c: Kimi Delta Attention: the "kda" mixer. The delta rule itself is chapter 9's core
// (delta_rule_chunked / _recurrent / _backward) with g_dim = dk; this file adds what KDA changes:
// the low-rank per-channel forget gate and the sigmoid output gate.
//
// Dims: d = d_model, H heads (key = value), dk, dv, r = dv the low rank, K conv kernel,
// Cc = 2*H*dk + H*dv conv channels, N = B*T rows.
#include "10_hybrids/kda.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "09_gdn/gdn.h"
#include "09_gdn/shortconv.h"
#include "check.h"
#include "mathx.h"
#include "rng.h"

typedef struct { int d, H, dk, dv, r, K, Cc; } Dims;

static Dims dims_of(const ModelGeometry *g) {
    Dims z = {.d = g->d_model, .H = g->linear_num_value_heads, .dk = g->linear_key_head_dim,
              .dv = g->linear_value_head_dim, .K = g->linear_conv_kernel_dim};
    if (z.K < 1) die_user("kda: linear_conv_kernel_dim is %d; KDA needs a short conv (kernel >= 1)", z.K);
    if (z.H < 1 || g->linear_num_key_heads != z.H)
        die_user("kda: linear_num_key_heads %d must equal linear_num_value_heads %d (KDA has one head kind)",
                 g->linear_num_key_heads, z.H);
    if (z.dk < 1 || z.dv < 1) die_user("kda: linear key/value head dims %d, %d must be positive", z.dk, z.dv);
    CHECK(z.d > 0, "kda: d_model %d", z.d);
    z.r = z.dv;
    z.Cc = 2 * z.H * z.dk + z.H * z.dv;
    return z;
}

static DeltaDims delta_dims(const Dims *z, int B, int T) {
    return (DeltaDims){.B = B, .T = T, .Hk = z->H, .Hv = z->H, .dk = z->dk, .dv = z->dv, .g_dim = z->dk,
                       .qk_stride = z->H * z->dk, .v_stride = z->Cc};
}

// ---- parameters -------------------------------------------------------------------------------------

enum { Q, K_, V, F_A, G_A, B_, F_B, G_B, CONV, A_LOG, DT_BIAS, O_NORM, O_PROJ, N_SLOTS };
static const char *const slot_names[N_SLOTS] = {"q_proj",   "k_proj",   "v_proj", "f_a_proj", "g_a_proj",
                                                "b_proj",   "f_b_proj", "g_b_proj", "conv1d", "A_log",
                                                "dt_bias",  "o_norm",   "o_proj"};

static size_t layout(const Dims *z, size_t off[N_SLOTS], int ndim[N_SLOTS], int64_t shape[N_SLOTS][3]) {
    int64_t s[N_SLOTS][3] = {
        [Q] = {z->H * z->dk, z->d, 1},   [K_] = {z->H * z->dk, z->d, 1},  [V] = {z->H * z->dv, z->d, 1},
        [F_A] = {z->r, z->d, 1},         [G_A] = {z->r, z->d, 1},         [B_] = {z->H, z->d, 1},
        [F_B] = {z->H * z->dk, z->r, 1}, [G_B] = {z->H * z->dv, z->r, 1}, [CONV] = {z->Cc, 1, z->K},
        [A_LOG] = {z->H, 1, 1},          [DT_BIAS] = {z->H * z->dk, 1, 1}, [O_NORM] = {z->dv, 1, 1},
        [O_PROJ] = {z->d, z->H * z->dv, 1},
    };
    size_t total = 0;
    for (int i = 0; i < N_SLOTS; i++) {
        ndim[i] = i == CONV ? 3 : (i == A_LOG || i == DT_BIAS || i == O_NORM) ? 1 : 2;
        for (int j = 0; j < 3; j++) shape[i][j] = s[i][j];
        off[i] = total;
        total += (size_t)(s[i][0] * s[i][1] * s[i][2]);
    }
    return total;
}

typedef struct { float *w_qkv, *f_a, *g_a, *b, *f_b, *g_b, *conv, *A_log, *dt_bias, *o_norm, *o_proj; } Weights;

static Weights weights_at(const Dims *z, float *p) {
    size_t off[N_SLOTS];
    int nd[N_SLOTS];
    int64_t sh[N_SLOTS][3];
    layout(z, off, nd, sh);
    return (Weights){p + off[Q],    p + off[F_A],   p + off[G_A],     p + off[B_],     p + off[F_B],   p + off[G_B],
                     p + off[CONV], p + off[A_LOG], p + off[DT_BIAS], p + off[O_NORM], p + off[O_PROJ]};
}

static int kda_param_tensors(const ModelGeometry *g, int layer, ParamTensor *out, int cap) {
    (void)layer;
    Dims z = dims_of(g);
    size_t off[N_SLOTS];
    int nd[N_SLOTS];
    int64_t sh[N_SLOTS][3];
    layout(&z, off, nd, sh);
    CHECK(cap >= N_SLOTS, "kda: param_tensors needs %d slots, got %d", N_SLOTS, cap);
    for (int i = 0; i < N_SLOTS; i++) {
        memset(&out[i], 0, sizeof out[i]);
        snprintf(out[i].name, sizeof out[i].name, "%s", slot_names[i]);
        out[i].ndim = nd[i];
        for (int j = 0; j < nd[i]; j++) out[i].shape[j] = sh[i][j];
        out[i].offset = off[i];
    }
    return N_SLOTS;
}

static void kda_init(const Mixer *m, float *params, Rng *rng) {
    Dims z = dims_of(m->g);
    size_t off[N_SLOTS];
    int nd[N_SLOTS];
    int64_t sh[N_SLOTS][3];
    layout(&z, off, nd, sh);
    int L = m->g->n_layers > 0 ? m->g->n_layers : 1;
    for (int i = 0; i < N_SLOTS; i++) {
        long n = (long)(sh[i][0] * sh[i][1] * sh[i][2]);
        float *p = params + off[i];
        if (i == CONV) {
            float bound = 1.0f / sqrtf((float)z.K);
            for (long j = 0; j < n; j++) p[j] = bound * (2.0f * rng_uniform(rng) - 1.0f);
        } else if (i == A_LOG) {
            delta_init_decay(p, params + off[DT_BIAS], z.H, z.H * z.dk, rng);
        } else if (i == DT_BIAS) {
            continue;   // filled with A_LOG
        } else if (i == O_NORM) {
            for (long j = 0; j < n; j++) p[j] = 1.0f;
        } else {
            rng_fill_normal(rng, p, n, i == O_PROJ ? 0.02f / sqrtf(2.0f * (float)L) : 0.02f);
        }
    }
}

// ---- activations ------------------------------------------------------------------------------------

typedef struct {
    DeltaProbe probe;  // batch 0's core inputs, first (see gdn.h)
    float *mixed;      // (N, Cc) [q | k | v] before the conv
    float *pre, *conv; // (N, Cc) conv pre-activation, after SiLU (v read from here, stride Cc)
    float *fa, *ga;    // (N, r) low-rank codes of the forget gate and the output gate
    float *bl;         // (N, H) beta logits
    float *f;          // (N, H*dk) f_b_proj(fa), before dt_bias and softplus
    float *gate;       // (N, H*dv) output gate logits
    float *qn, *kn;    // (N, H*dk)
    float *rq, *rk;    // (N, H)
    float *beta;       // (N, H)
    float *g;          // (N, H*dk) per-channel log-decays
    float *o, *rstd, *y;  // (N, H*dv), (N, H), (N, H*dv)
    float *S_chunks;   // (B, H, n_chunks, dk, dv)
} Act;

static float *take(float *base, size_t *used, size_t n) {
    float *p = base ? base + *used : NULL;
    *used += n;
    return p;
}

static size_t act_carve(Act *a, float *act, const Dims *z, int B, int T) {
    size_t N = (size_t)B * T, used = 0, hk = (size_t)z->H * z->dk, hv = (size_t)z->H * z->dv;
    DeltaDims dd = delta_dims(z, B, T);
    used += delta_probe_carve(&a->probe, act, &dd);
    a->mixed = take(act, &used, N * z->Cc);
    a->pre = take(act, &used, N * z->Cc);
    a->conv = take(act, &used, N * z->Cc);
    a->fa = take(act, &used, N * z->r);
    a->ga = take(act, &used, N * z->r);
    a->bl = take(act, &used, N * z->H);
    a->f = take(act, &used, N * hk);
    a->gate = take(act, &used, N * hv);
    a->qn = take(act, &used, N * hk);
    a->kn = take(act, &used, N * hk);
    a->rq = take(act, &used, N * z->H);
    a->rk = take(act, &used, N * z->H);
    a->beta = take(act, &used, N * z->H);
    a->g = take(act, &used, N * hk);
    a->o = take(act, &used, N * hv);
    a->rstd = take(act, &used, N * z->H);
    a->y = take(act, &used, N * hv);
    a->S_chunks = take(act, &used, (size_t)B * z->H * delta_rule_n_chunks(T, KDA_CHUNK) * z->dk * z->dv);
    return used;
}

static size_t kda_act_floats(const ModelGeometry *g, int layer, int B, int T) {
    (void)layer;
    Dims z = dims_of(g);
    Act a;
    return act_carve(&a, NULL, &z, B, T);
}

static inline float softplusf(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// beta = sigmoid(bl); g[h][c] = -exp(A_log[h]) softplus(f[h][c] + dt_bias[h][c]) for n rows.
static void gates_forward(float *beta, float *g, const float *bl, const float *f, const Weights *w, const Dims *z,
                          int n) {
    for (int r = 0; r < n; r++)
        for (int h = 0; h < z->H; h++) {
            beta[(size_t)r * z->H + h] = sigmoidf_(bl[(size_t)r * z->H + h]);
            float A = expf(w->A_log[h]);
            for (int c = 0; c < z->dk; c++) {
                size_t i = ((size_t)r * z->H + h) * z->dk + c;
                g[i] = -A * softplusf(f[i] + w->dt_bias[(size_t)h * z->dk + c]);
            }
        }
}

// Everything from x to the core's inputs, for n rows of one (B,T) batch (decode: n = 1, with the conv
// done by the caller). Shared by forward and decode.
static void project(float *fa, float *ga, float *bl, float *f, float *gate, const float *x, const Weights *w,
                    const Dims *z, int n) {
    linear_forward(fa, x, w->f_a, NULL, n, z->d, z->r);
    linear_forward(ga, x, w->g_a, NULL, n, z->d, z->r);
    linear_forward(bl, x, w->b, NULL, n, z->d, z->H);
    linear_forward(f, fa, w->f_b, NULL, n, z->r, z->H * z->dk);
    linear_forward(gate, ga, w->g_b, NULL, n, z->r, z->H * z->dv);
}

static void kda_forward(const Mixer *m, float *out, float *act, const float *x, const float *params, int B, int T) {
    Dims z = dims_of(m->g);
    int N = B * T;
    Weights w = weights_at(&z, (float *)params);   // read only
    Act a;
    act_carve(&a, act, &z, B, T);
    DeltaDims dd = delta_dims(&z, B, T);

    linear_forward(a.mixed, x, w.w_qkv, NULL, N, z.d, z.Cc);
    shortconv_forward(a.conv, a.pre, a.mixed, w.conv, B, T, z.Cc, z.K);
    project(a.fa, a.ga, a.bl, a.f, a.gate, x, &w, &z, N);
    delta_qk_norm_forward(a.qn, a.kn, a.rq, a.rk, a.conv, N, z.Cc, z.H, z.dk);
    gates_forward(a.beta, a.g, a.bl, a.f, &w, &z, N);
    const float *v = a.conv + 2 * z.H * z.dk;
    delta_rule_chunked(a.o, a.S_chunks, a.qn, a.kn, v, a.beta, a.g, &dd, KDA_CHUNK);
    delta_probe_fill(&a.probe, a.qn, a.kn, v, a.beta, a.g, &dd);
    delta_gated_norm_forward(a.y, a.rstd, a.o, a.gate, z.H * z.dv, w.o_norm, N, z.H, z.dv, 1);
    linear_forward(out, a.y, w.o_proj, NULL, N, z.H * z.dv, z.d);
}

static void kda_backward(const Mixer *m, float *dx, float *dparams, const float *dout, const float *act,
                         const float *x, const float *params, int B, int T) {
    Dims z = dims_of(m->g);
    int N = B * T, H = z.H;
    size_t hk = (size_t)H * z.dk, hv = (size_t)H * z.dv;
    Weights w = weights_at(&z, (float *)params), dw = weights_at(&z, dparams);
    Act a;
    act_carve(&a, (float *)act, &z, B, T);   // read only
    DeltaDims dd = delta_dims(&z, B, T);

    // gradient buffers (the interface hands backward no scratch): one zeroed block per call
    size_t n_scr = (size_t)N * (3 * hv + 2 * (size_t)z.Cc + 4 * hk + 2 * (size_t)z.r + 2 * (size_t)H);
    float *scr = callocCheck(n_scr, sizeof(float)), *p = scr;
    float *dy = p;     p += (size_t)N * hv;
    float *d_o = p;    p += (size_t)N * hv;
    float *dgate = p;  p += (size_t)N * hv;
    float *dconv = p;  p += (size_t)N * z.Cc;
    float *dmixed = p; p += (size_t)N * z.Cc;
    float *dqn = p;    p += (size_t)N * hk;
    float *dkn = p;    p += (size_t)N * hk;
    float *dg = p;     p += (size_t)N * hk;
    float *df = p;     p += (size_t)N * hk;
    float *dfa = p;    p += (size_t)N * z.r;
    float *dga = p;    p += (size_t)N * z.r;
    float *dbeta = p;  p += (size_t)N * H;
    float *dbl = p;

    linear_backward(dy, dw.o_proj, NULL, dout, a.y, w.o_proj, N, (int)hv, z.d);
    delta_gated_norm_backward(d_o, dgate, dw.o_norm, dy, a.o, a.rstd, a.gate, (int)hv, w.o_norm, N, H, z.dv, 1);
    const float *v = a.conv + 2 * H * z.dk;
    delta_rule_backward(dqn, dkn, dconv + 2 * H * z.dk, dbeta, dg, d_o, a.S_chunks, a.qn, a.kn, v, a.beta, a.g, &dd,
                        KDA_CHUNK);
    // gates: g = -A softplus(f + dt_bias), A = exp(A_log): dg/dA_log = g, dg/df = -A sigmoid(f + dt_bias).
    // Parameter sums run in row order on one thread.
    for (int r = 0; r < N; r++)
        for (int h = 0; h < H; h++) {
            size_t ih = (size_t)r * H + h;
            dbl[ih] += dbeta[ih] * a.beta[ih] * (1.0f - a.beta[ih]);
            float A = expf(w.A_log[h]);
            for (int c = 0; c < z.dk; c++) {
                size_t i = ih * z.dk + c, ib = (size_t)h * z.dk + c;
                float d = dg[i] * -A * sigmoidf_(a.f[i] + w.dt_bias[ib]);
                df[i] += d;
                dw.dt_bias[ib] += d;
                dw.A_log[h] += dg[i] * a.g[i];
            }
        }
    linear_backward(dfa, dw.f_b, NULL, df, a.fa, w.f_b, N, z.r, (int)hk);
    linear_backward(dga, dw.g_b, NULL, dgate, a.ga, w.g_b, N, z.r, (int)hv);
    linear_backward(dx, dw.f_a, NULL, dfa, x, w.f_a, N, z.d, z.r);
    linear_backward(dx, dw.g_a, NULL, dga, x, w.g_a, N, z.d, z.r);
    linear_backward(dx, dw.b, NULL, dbl, x, w.b, N, z.d, H);
    delta_qk_norm_backward(dconv, dqn, dkn, a.conv, a.rq, a.rk, N, z.Cc, H, z.dk);
    shortconv_backward(dmixed, dw.conv, dconv, a.pre, a.mixed, w.conv, B, T, z.Cc, z.K);
    linear_backward(dx, dw.w_qkv, NULL, dmixed, x, w.w_qkv, N, z.d, z.Cc);
    free(scr);
}

// ---- decode -----------------------------------------------------------------------------------------

struct MixerCache {
    Dims z;
    int max_T, n;
    float *S;          // (H, dk, dv) the delta-rule state          } the cache
    float *conv_state; // (K-1, Cc) the last K-1 conv inputs         }
    // one step's scratch
    float *mixed, *conv, *fa, *ga, *bl, *f, *gate, *qn, *kn, *rq, *rk, *beta, *g, *o, *rstd, *y;
};

static MixerCache *kda_cache_new(const Mixer *m, int max_T) {
    Dims z = dims_of(m->g);
    CHECK(max_T > 0, "kda: cache for %d tokens", max_T);
    MixerCache *c = mallocCheck(sizeof *c);
    c->z = z;
    c->max_T = max_T;
    c->n = 0;
    size_t hk = (size_t)z.H * z.dk, hv = (size_t)z.H * z.dv, H = (size_t)z.H;
    size_t sizes[] = {hk * z.dv, (size_t)(z.K - 1) * z.Cc, (size_t)z.Cc, (size_t)z.Cc, (size_t)z.r, (size_t)z.r, H,
                      hk, hv, hk, hk, H, H, H, hk, hv, H, hv};
    float **fields[] = {&c->S, &c->conv_state, &c->mixed, &c->conv, &c->fa, &c->ga, &c->bl, &c->f, &c->gate,
                        &c->qn, &c->kn, &c->rq, &c->rk, &c->beta, &c->g, &c->o, &c->rstd, &c->y};
    size_t total = 0, used = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) total += sizes[i];
    float *base = callocCheck(total, sizeof(float));
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) *fields[i] = take(base, &used, sizes[i]);
    return c;
}

static void kda_cache_free(MixerCache *c) {
    if (!c) return;
    free(c->S);   // the start of the one block
    free(c);
}

// (H*dk*dv + (K-1)*Cc) * 4 bytes from the first token on: kvcache_fixed_bytes / (linear layers) at fp32.
static size_t kda_cache_bytes(const MixerCache *c) {
    const Dims *z = &c->z;
    return sizeof(float) * ((size_t)z->H * z->dk * z->dv + (size_t)(z->K - 1) * z->Cc);
}

static void kda_decode(const Mixer *m, MixerCache *c, float *out, const float *x, const float *params) {
    (void)m;
    const Dims z = c->z;
    CHECK(c->n < c->max_T, "kda decode: cache is full (%d tokens)", c->max_T);
    Weights w = weights_at(&z, (float *)params);
    DeltaDims dd = delta_dims(&z, 1, 1);
    linear_forward(c->mixed, x, w.w_qkv, NULL, 1, z.d, z.Cc);
    shortconv_step(c->conv, c->conv_state, c->mixed, w.conv, z.Cc, z.K);
    project(c->fa, c->ga, c->bl, c->f, c->gate, x, &w, &z, 1);
    delta_qk_norm_forward(c->qn, c->kn, c->rq, c->rk, c->conv, 1, z.Cc, z.H, z.dk);
    gates_forward(c->beta, c->g, c->bl, c->f, &w, &z, 1);
    delta_rule_recurrent(c->o, c->S, c->qn, c->kn, c->conv + 2 * z.H * z.dk, c->beta, c->g, &dd);
    delta_gated_norm_forward(c->y, c->rstd, c->o, c->gate, z.H * z.dv, w.o_norm, 1, z.H, z.dv, 1);
    linear_forward(out, c->y, w.o_proj, NULL, 1, z.H * z.dv, z.d);
    c->n++;
}

// ---- what the chapters draw ---------------------------------------------------------------------------

static int kda_n_mix_heads(const ModelGeometry *g, int layer) {
    (void)layer;
    return g->linear_num_value_heads;
}

static void probe_of(DeltaProbe *p, DeltaDims *dd, const Mixer *m, const float *act, int T) {
    Dims z = dims_of(m->g);
    *dd = delta_dims(&z, 1, T);
    delta_probe_carve(p, (float *)act, dd);
}

static void kda_mixing_matrix(const Mixer *m, float *A, const float *act, const float *params, int T) {
    (void)params;
    DeltaProbe p;
    DeltaDims dd;
    probe_of(&p, &dd, m, act, T);
    delta_probe_mixing_matrix(A, &p, &dd);
}

void kda_states_at(const Mixer *m, float *S, const float *act, int T, int head, const int *times, int n_times) {
    DeltaProbe p;
    DeltaDims dd;
    probe_of(&p, &dd, m, act, T);
    delta_probe_states(S, &p, &dd, head, times, n_times);
}

void kda_gates(const Mixer *m, float *beta, float *alpha, const float *act, int T) {
    DeltaProbe p;
    DeltaDims dd;
    probe_of(&p, &dd, m, act, T);
    memcpy(beta, p.beta, sizeof(float) * (size_t)T * dd.Hv);
    for (size_t i = 0; i < (size_t)T * dd.Hv * dd.dk; i++) alpha[i] = expf(p.g[i]);
}

void kda_geometry_tiny(ModelGeometry *g, int n_layers, int d_model, int n_heads) {
    geometry_init(g, "tiny-kda", n_layers, d_model, n_heads, n_heads);
    int dh = d_model / n_heads;
    for (int l = 0; l < n_layers && l < GEOM_MAX_LAYERS; l++) g->layer_kind[l] = LAYER_LINEAR;
    g->linear_kind = LINEAR_KDA;
    g->linear_num_value_heads = n_heads;
    g->linear_num_key_heads = n_heads;
    g->linear_key_head_dim = dh;
    g->linear_value_head_dim = dh;
    g->linear_conv_kernel_dim = 4;
    g->state_dtype_bytes = 4;
    g->dtype_bytes = 4;
}

const MixerOps kda_mixer = {
    .name = "kda",
    .param_tensors = kda_param_tensors,
    .init = kda_init,
    .act_floats = kda_act_floats,
    .forward = kda_forward,
    .backward = kda_backward,
    .cache_new = kda_cache_new,
    .cache_free = kda_cache_free,
    .cache_bytes = kda_cache_bytes,
    .decode = kda_decode,
    .n_mix_heads = kda_n_mix_heads,
    .mixing_matrix = kda_mixing_matrix,
};
