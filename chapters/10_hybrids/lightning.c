// lightning.c: Lightning attention (MiniMax-01) as a mixer: forward (chunked), backward, recurrent decode,
// cache accounting, the implicit mixing matrix and the decay profile. The linear attention itself is the
// scalar-decay core of decay.c; this file is the projections, norm and gate around it.
//
// Dims: d = d_model, H heads of dh, E = H*dh, N = B*T rows.
#include "10_hybrids/lightning.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "09_gdn/gdn.h"
#include "10_hybrids/decay.h"
#include "check.h"
#include "mathx.h"

typedef struct { int d, H, dh, E; } Dims;

static Dims dims_of(const ModelGeometry *g) {
    Dims z = {.d = g->d_model, .H = g->linear_num_value_heads, .dh = g->linear_value_head_dim};
    CHECK(z.d > 0 && z.H > 0 && z.dh > 0, "lightning: geometry '%s' has no linear heads (linear_num_value_heads %d, "
          "linear_value_head_dim %d)", g->name, z.H, z.dh);
    CHECK(g->linear_num_key_heads == z.H && g->linear_key_head_dim == z.dh,
          "lightning: keys and values must have the same heads (%d vs %d) and dims (%d vs %d)",
          g->linear_num_key_heads, z.H, g->linear_key_head_dim, z.dh);
    CHECK(g->linear_conv_kernel_dim == 0, "lightning: has no short conv, but linear_conv_kernel_dim is %d",
          g->linear_conv_kernel_dim);
    z.E = z.H * z.dh;
    return z;
}

void lightning_geometry_set(ModelGeometry *g, int H, int dh) {
    g->linear_kind = LINEAR_LIGHTNING;
    g->linear_num_key_heads = g->linear_num_value_heads = H;
    g->linear_key_head_dim = g->linear_value_head_dim = dh;
    g->linear_conv_kernel_dim = 0;
}

// MiniMax's published slope s_h of head h in layer `layer`, before any training recipe's scale.
static double published_slope(const ModelGeometry *g, int layer, int h) {
    // EXERCISE ex10.1 begin: s_h of head h (of H) in layer `layer` (of L): the decay per token is exp(-s_h)
    // EXERCISE ex10.1 stub: (void)g; (void)layer; (void)h; return 0.0;
    int H = g->linear_num_value_heads, L = g->n_layers;
    // MiniMax's get_slope_rate: ALiBi's geometric slopes times a factor that falls from 1 (first layer)
    // to about 1e-5 (last layer). The 1e-5 in the denominator keeps L = 1 finite.
    double base = pow(2.0, -8.0 / H);
    double factor = 1.0 - (double)layer / ((double)(L - 1) + 1e-5) + 1e-5;
    return pow(base, h + 1) * factor;
    // EXERCISE ex10.1 end
}

double lightning_slope(const ModelGeometry *g, int layer, int h) {
    // a training recipe may scale every slope (linear_slope_scale; 0: the published slopes)
    double scale = g->linear_slope_scale > 0.0 ? g->linear_slope_scale : 1.0;
    return published_slope(g, layer, h) * scale;
}

void lightning_decay_profile(float *prof, const ModelGeometry *g, int layer, int n_dist) {
    int H = g->linear_num_value_heads;
    for (int h = 0; h < H; h++) {
        double s = lightning_slope(g, layer, h);
        for (int r = 0; r < n_dist; r++) prof[(size_t)h * n_dist + r] = (float)exp(-s * r);
    }
}

// ---- parameters ----------------------------------------------------------------------------------

enum { QKV, GATE, NORM, OUT, N_SLOTS };

static void specs(ParamSpec s[N_SLOTS], const Dims *z) {
    ParamSpec t[N_SLOTS] = {
        [QKV] = {"qkv_proj", 2, {3 * z->E, z->d}, INIT_NORMAL}, [GATE] = {"output_gate", 2, {z->E, z->d}, INIT_NORMAL},
        [NORM] = {"norm", 1, {z->E}, INIT_ONES},                [OUT] = {"out_proj", 2, {z->d, z->E}, INIT_OUT},
    };
    memcpy(s, t, sizeof t);
}

typedef struct { float *qkv, *gate, *norm, *out; } Weights;

static Weights weights_at(const Dims *z, float *p) {
    ParamSpec s[N_SLOTS];
    ParamTensor t[N_SLOTS];
    specs(s, z);
    param_table(t, N_SLOTS, s, N_SLOTS);
    return (Weights){p + t[QKV].offset, p + t[GATE].offset, p + t[NORM].offset, p + t[OUT].offset};
}

static int lightning_param_tensors(const ModelGeometry *g, int layer, ParamTensor *out, int cap) {
    (void)layer;
    Dims z = dims_of(g);
    ParamSpec s[N_SLOTS];
    specs(s, &z);
    return param_table(out, cap, s, N_SLOTS);
}

// Matrices N(0, 0.02^2), out_proj scaled by 1/sqrt(2 * n_layers) (GPT-2), the norm gain 1.
static void lightning_init(const Mixer *m, float *params, Rng *rng) {
    Dims z = dims_of(m->g);
    ParamSpec s[N_SLOTS];
    specs(s, &z);
    param_table_init(params, s, N_SLOTS, m->g, rng);
}

// ---- activations saved by forward -----------------------------------------------------------------

// act[0] holds B (as a float): mixing_matrix is given only T and must find batch 0's rows.
typedef struct {
    float *pre;      // (N, 3E) x Wqkv^T before SiLU
    float *qkv;      // (N, 3E) per head [q | k | v] after SiLU
    float *o;        // (N, E) the heads' outputs before the norm
    float *rstd;     // (N)
    float *on;       // (N, E) after RMSNorm (times its weight)
    float *gp;       // (N, E) gate pre-activation x Wgate^T
    float *y;        // (N, E) on * sigmoid(gp): the input of out_proj
    float *S;        // (B, H, dh, dh) final states (the forward's working state)
} Act;

static size_t act_carve(Act *a, float *act, const Dims *z, int B, int T) {
    size_t N = (size_t)B * T, E = (size_t)z->E, used = 8;   // the header: B
    a->pre = take_floats(act, &used, N * 3 * E);
    a->qkv = take_floats(act, &used, N * 3 * E);
    a->o = take_floats(act, &used, N * E);
    a->rstd = take_floats(act, &used, N);
    a->on = take_floats(act, &used, N * E);
    a->gp = take_floats(act, &used, N * E);
    a->y = take_floats(act, &used, N * E);
    a->S = take_floats(act, &used, (size_t)B * z->H * z->dh * z->dh);
    return used;
}

static size_t lightning_act_floats(const ModelGeometry *g, int layer, int B, int T) {
    (void)layer;
    Dims z = dims_of(g);
    Act a;
    return act_carve(&a, NULL, &z, B, T);
}

// ---- forward / backward -------------------------------------------------------------------------

static void lightning_forward(const Mixer *m, float *out, float *act, const float *x, const float *params, int B,
                              int T) {
    Dims z = dims_of(m->g);
    int N = B * T;
    size_t E = (size_t)z.E, ld = 3 * E, SS = (size_t)z.dh * z.dh;
    Weights w = weights_at(&z, (float *)params);   // read only
    Act a;
    act_carve(&a, act, &z, B, T);
    act[0] = (float)B;

    linear_forward(a.pre, x, w.qkv, NULL, N, z.d, (int)ld);   // (N, 3E)
    silu_forward(a.qkv, a.pre, (long)N * (long)ld);
    // Each (batch, head) is an independent linear attention: threads split them, one writer per output.
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < z.H; h++) {
            const float *q = a.qkv + (size_t)b * T * ld + (size_t)h * 3 * z.dh;
            float g = (float)-lightning_slope(m->g, m->layer, h);
            float *S = a.S + ((size_t)b * z.H + h) * SS;
            memset(S, 0, SS * sizeof(float));
            decay_chunked_forward(a.o + (size_t)b * T * E + (size_t)h * z.dh, E, S, q, q + z.dh, ld, q + 2 * z.dh, ld,
                                  &g, 0, T, z.dh, z.dh, DECAY_CHUNK);
        }
    // norm over all heads together, then the output gate
    rmsnorm_forward(a.on, a.rstd, a.o, w.norm, N, z.E, LIGHTNING_NORM_EPS);
    linear_forward(a.gp, x, w.gate, NULL, N, z.d, z.E);
    for (size_t i = 0; i < (size_t)N * E; i++) a.y[i] = a.on[i] * sigmoidf_(a.gp[i]);
    linear_forward(out, a.y, w.out, NULL, N, z.E, z.d);
}

static void lightning_backward(const Mixer *m, float *dx, float *dparams, const float *dout, const float *act,
                               const float *x, const float *params, int B, int T) {
    Dims z = dims_of(m->g);
    int N = B * T;
    size_t E = (size_t)z.E, ld = 3 * E, NE = (size_t)N * E;
    Weights w = weights_at(&z, (float *)params), dw = weights_at(&z, dparams);
    Act a;
    act_carve(&a, (float *)act, &z, B, T);   // read only

    // Gradient buffers: the interface hands backward no scratch, so one zeroed block per call.
    size_t per_head = decay_backward_scratch_floats(T, z.dh, z.dh, DECAY_CHUNK);
    size_t n_scratch = 4 * NE + 2 * (size_t)N * ld + (size_t)B * z.H * per_head;
    float *scratch = callocCheck(n_scratch, sizeof(float));
    size_t used = 0;
    float *dy = take_floats(scratch, &used, NE), *don = take_floats(scratch, &used, NE);
    float *dgp = take_floats(scratch, &used, NE), *d_o = take_floats(scratch, &used, NE);
    float *dqkv = take_floats(scratch, &used, (size_t)N * ld), *dpre = take_floats(scratch, &used, (size_t)N * ld);
    float *core = take_floats(scratch, &used, (size_t)B * z.H * per_head);

    // out = y Wout^T, y = on * sigmoid(gp)
    linear_backward(dy, dw.out, NULL, dout, a.y, w.out, N, z.E, z.d);
    for (size_t i = 0; i < NE; i++) {
        float s = sigmoidf_(a.gp[i]);
        don[i] = dy[i] * s;
        dgp[i] = dy[i] * a.on[i] * s * (1.0f - s);
    }
    linear_backward(dx, dw.gate, NULL, dgp, x, w.gate, N, z.d, z.E);
    rmsnorm_backward(d_o, dw.norm, don, a.o, w.norm, a.rstd, N, z.E);

    // the linear attention, (batch, head) split across threads; each writes only its own rows/columns
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < z.H; h++) {
            size_t qo = (size_t)b * T * ld + (size_t)h * 3 * z.dh;
            const float *q = a.qkv + qo;
            float *dq = dqkv + qo;
            float g = (float)-lightning_slope(m->g, m->layer, h);
            decay_chunked_backward(dq, dq + z.dh, dq + 2 * z.dh, NULL, d_o + (size_t)b * T * E + (size_t)h * z.dh, E, q,
                                   q + z.dh, ld, q + 2 * z.dh, ld, &g, 0, T, z.dh, z.dh, DECAY_CHUNK,
                                   core + ((size_t)b * z.H + h) * per_head);
        }
    silu_backward(dpre, dqkv, a.pre, (long)N * (long)ld);
    linear_backward(dx, dw.qkv, NULL, dpre, x, w.qkv, N, z.d, (int)ld);
    free(scratch);
}

// ---- decode: the cache is the H states, dh x dh each ------------------------------------------------

struct MixerCache {
    Dims z;
    int n;            // tokens decoded so far
    float *S;         // (H, dh, dh) the cache: constant size whatever the context
    // one step's scratch (not cache)
    float *pre, *qkv; // (3E)
    float *o, *on, *gp, *y;   // (E)
};

static MixerCache *lightning_cache_new(const Mixer *m, int max_T) {
    Dims z = dims_of(m->g);
    CHECK(max_T > 0, "lightning: cache for %d tokens", max_T);
    MixerCache *c = mallocCheck(sizeof *c);
    c->z = z;
    c->n = 0;
    size_t E = (size_t)z.E, used = 0;
    float *base = callocCheck((size_t)z.H * z.dh * z.dh + 6 * E + 4 * E, sizeof(float));
    c->S = take_floats(base, &used, (size_t)z.H * z.dh * z.dh);
    c->pre = take_floats(base, &used, 3 * E);
    c->qkv = take_floats(base, &used, 3 * E);
    c->o = take_floats(base, &used, E);
    c->on = take_floats(base, &used, E);
    c->gp = take_floats(base, &used, E);
    c->y = take_floats(base, &used, E);
    return c;
}

static void lightning_cache_free(MixerCache *c) {
    if (!c) return;
    free(c->S);   // the start of the one block
    free(c);
}

// H * dh * dh fp32 state elements, whatever the context: kvcache_fixed_bytes / (linear layers) with
// state_dtype_bytes 4 (no conv state).
static size_t lightning_cache_bytes(const MixerCache *c) {
    return sizeof(float) * (size_t)c->z.H * c->z.dh * c->z.dh;
}

static void lightning_decode(const Mixer *m, MixerCache *c, float *out, const float *x, const float *params) {
    Dims z = c->z;
    size_t SS = (size_t)z.dh * z.dh;
    Weights w = weights_at(&z, (float *)params);
    linear_forward(c->pre, x, w.qkv, NULL, 1, z.d, 3 * z.E);
    silu_forward(c->qkv, c->pre, 3L * z.E);
    for (int h = 0; h < z.H; h++) {
        const float *q = c->qkv + (size_t)h * 3 * z.dh;
        decay_step(c->o + (size_t)h * z.dh, c->S + h * SS, q, q + z.dh, q + 2 * z.dh,
                   (float)-lightning_slope(m->g, m->layer, h), z.dh, z.dh);
    }
    rmsnorm_forward(c->on, NULL, c->o, w.norm, 1, z.E, LIGHTNING_NORM_EPS);
    linear_forward(c->gp, x, w.gate, NULL, 1, z.d, z.E);
    for (int i = 0; i < z.E; i++) c->y[i] = c->on[i] * sigmoidf_(c->gp[i]);
    linear_forward(out, c->y, w.out, NULL, 1, z.E, z.d);
    c->n++;
}

// ---- what the chapters draw ----------------------------------------------------------------------

static int lightning_n_mix_heads(const ModelGeometry *g, int layer) {
    (void)layer;
    return dims_of(g).H;
}

// A[h][t][s] = (q_t . k_s) lambda_h^(t-s): the weight of v_s in the pre-norm output o_t of batch 0.
static void lightning_mixing_matrix(const Mixer *m, float *A, const float *act, const float *params, int T) {
    (void)params;
    Dims z = dims_of(m->g);
    Act a;
    act_carve(&a, (float *)act, &z, (int)act[0], T);
    size_t ld = 3 * (size_t)z.E;
    for (int h = 0; h < z.H; h++) {
        const float *q = a.qkv + (size_t)h * 3 * z.dh;
        float g = (float)-lightning_slope(m->g, m->layer, h);
        decay_mixing_matrix(A + (size_t)h * T * T, q, q + z.dh, ld, &g, 0, T, z.dh);
    }
}

static int lightning_validate(const ModelGeometry *g, int layer, char *why, size_t cap) {
    if (!mixer_validate_linear(g, layer, "lightning", LINEAR_LIGHTNING, why, cap)) return 0;
    if (g->linear_num_key_heads != g->linear_num_value_heads || g->linear_key_head_dim != g->linear_value_head_dim)
        return mixer_fail(why, cap, "mixer 'lightning' needs linear_num_key_heads %d == linear_num_value_heads %d and "
                          "linear_key_head_dim %d == linear_value_head_dim %d", g->linear_num_key_heads,
                          g->linear_num_value_heads, g->linear_key_head_dim, g->linear_value_head_dim);
    if (g->linear_conv_kernel_dim != 0)
        return mixer_fail(why, cap, "linear_conv_kernel_dim %d: mixer 'lightning' has no short conv (0)",
                          g->linear_conv_kernel_dim);
    return 1;
}

const MixerOps lightning_mixer = {
    .name = "lightning",
    .validate = lightning_validate,
    .param_tensors = lightning_param_tensors,
    .init = lightning_init,
    .act_floats = lightning_act_floats,
    .forward = lightning_forward,
    .backward = lightning_backward,
    .cache_new = lightning_cache_new,
    .cache_free = lightning_cache_free,
    .cache_bytes = lightning_cache_bytes,
    .decode = lightning_decode,
    .n_mix_heads = lightning_n_mix_heads,
    .mixing_matrix = lightning_mixing_matrix,
};
