// mamba2.c: the Mamba-2 (SSD) mixer: forward (chunked SSD), backward, recurrent decode, cache accounting,
// the implicit mixing matrix and the input-dependent decay. The state-space scan itself is the
// scalar-decay core of decay.c (k = B, q = C, v = Delta x, g = Delta A); the short conv is chapter 9's.
//
// Dims: d = d_model, Hv heads of P, G groups of N (state size), HP = Hv*P, CD = HP + 2*G*N conv channels,
// K conv width, R = Hv/G heads per group, GS = HP/G channels per norm group, rows n = 0..B*T-1.
#include "10_hybrids/mamba2.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "09_gdn/gdn.h"
#include "09_gdn/shortconv.h"
#include "10_hybrids/decay.h"
#include "check.h"
#include "mathx.h"

typedef struct { int d, H, P, G, N, K, HP, CD, R, GS; } Dims;

static Dims dims_of(const ModelGeometry *g) {
    Dims z = {.d = g->d_model, .H = g->linear_num_value_heads, .P = g->linear_value_head_dim,
              .G = g->linear_num_key_heads, .N = g->linear_key_head_dim, .K = g->linear_conv_kernel_dim};
    CHECK(z.d > 0 && z.H > 0 && z.P > 0 && z.G > 0 && z.N > 0,
          "mamba2: geometry '%s' has no linear heads (heads %d, head dim %d, groups %d, state %d)", g->name, z.H,
          z.P, z.G, z.N);
    CHECK(z.H % z.G == 0, "mamba2: %d heads are not divisible into %d groups", z.H, z.G);
    CHECK(z.K >= 2, "mamba2: needs a short conv of width >= 2, linear_conv_kernel_dim is %d", z.K);
    z.HP = z.H * z.P;
    z.CD = z.HP + 2 * z.G * z.N;
    z.R = z.H / z.G;
    z.GS = z.HP / z.G;
    return z;
}

void mamba2_geometry_set(ModelGeometry *g, int H, int P, int G, int N, int K) {
    g->linear_kind = LINEAR_MAMBA2;
    g->linear_num_value_heads = H;
    g->linear_value_head_dim = P;
    g->linear_num_key_heads = G;
    g->linear_key_head_dim = N;
    g->linear_conv_kernel_dim = K;
}

static inline float softplusf_(float u) { return u > 20.0f ? u : log1pf(expf(u)); }   // PyTorch's threshold

// ---- parameters ----------------------------------------------------------------------------------

enum { IN, CONV, DT_BIAS, A_LOG, DSKIP, NORM, OUT, N_SLOTS };

// (mamba2_init fills them: its own draws, not param_table_init.)
static void specs(ParamSpec s[N_SLOTS], const Dims *z) {
    ParamSpec t[N_SLOTS] = {
        [IN] = {.name = "in_proj", .ndim = 2, .shape = {z->HP + z->CD + z->H, z->d}},
        [CONV] = {.name = "conv1d", .ndim = 2, .shape = {z->CD, z->K}},
        [DT_BIAS] = {.name = "dt_bias", .ndim = 1, .shape = {z->H}},
        [A_LOG] = {.name = "A_log", .ndim = 1, .shape = {z->H}},
        [DSKIP] = {.name = "D", .ndim = 1, .shape = {z->H}},
        [NORM] = {.name = "norm", .ndim = 1, .shape = {z->HP}},
        [OUT] = {.name = "out_proj", .ndim = 2, .shape = {z->d, z->HP}},
    };
    memcpy(s, t, sizeof t);
}

// in_proj's rows in three blocks: z (HP rows), xBC (CD rows), dt (H rows).
typedef struct { float *in_z, *in_xbc, *in_dt, *conv, *dt_bias, *A_log, *D, *norm, *out; } Weights;

static Weights weights_at(const Dims *z, float *p) {
    ParamSpec s[N_SLOTS];
    ParamTensor t[N_SLOTS];
    specs(s, z);
    param_table(t, N_SLOTS, s, N_SLOTS);
    float *in = p + t[IN].offset;
    return (Weights){in, in + (size_t)z->HP * z->d, in + (size_t)(z->HP + z->CD) * z->d, p + t[CONV].offset,
                     p + t[DT_BIAS].offset, p + t[A_LOG].offset, p + t[DSKIP].offset, p + t[NORM].offset,
                     p + t[OUT].offset};
}

static int mamba2_param_tensors(const ModelGeometry *g, int layer, ParamTensor *out, int cap) {
    (void)layer;
    Dims z = dims_of(g);
    ParamSpec s[N_SLOTS];
    specs(s, &z);
    return param_table(out, cap, s, N_SLOTS);
}

static void mamba2_init(const Mixer *m, float *params, Rng *rng) {
    Dims z = dims_of(m->g);
    Weights w = weights_at(&z, params);
    int L = m->g->n_layers > 0 ? m->g->n_layers : 1;
    rng_fill_normal(rng, w.in_z, (long)(z.HP + z.CD + z.H) * z.d, 0.02f);   // all of in_proj
    // PyTorch's Conv1d default for a depthwise conv: U(-1/sqrt(K), 1/sqrt(K)) (fan-in K)
    float bound = 1.0f / sqrtf((float)z.K);
    for (long i = 0; i < (long)z.CD * z.K; i++) w.conv[i] = bound * (2.0f * rng_uniform(rng) - 1.0f);
    double ar[2], dr[2];   // published: A in [1, 16], dt in [1e-3, 1e-1] (gdn.h decay_init_ranges)
    decay_init_ranges(m->g, ar, dr);
    for (int h = 0; h < z.H; h++) {
        // dt log-uniform in [dt_min, dt_max] (floor 1e-4), stored through the inverse of softplus
        double dt = exp(rng_uniform(rng) * (log(dr[1]) - log(dr[0])) + log(dr[0]));
        if (dt < 1e-4) dt = 1e-4;
        w.dt_bias[h] = (float)(dt + log(-expm1(-dt)));
        // A in [1, 16]: per-token log-decay Delta * A from about -1.6e-3 to -1.6
        w.A_log[h] = logf((float)ar[0] + (float)(ar[1] - ar[0]) * rng_uniform(rng));
        w.D[h] = 1.0f;
    }
    for (int i = 0; i < z.HP; i++) w.norm[i] = 1.0f;
    rng_fill_normal(rng, w.out, (long)z.d * z.HP, 0.02f / sqrtf(2.0f * (float)L));
}

// ---- activations saved by forward -----------------------------------------------------------------

// act[0] holds B (as a float): mixing_matrix is given only T and must find batch 0's rows.
typedef struct {
    float *z;        // (n, HP) gate before SiLU
    float *xbc_in;   // (n, CD) conv input
    float *conv_pre; // (n, CD) conv output before SiLU
    float *xbc;      // (n, CD) [x | B | C] after conv + SiLU
    float *u;        // (n, H) dt + dt_bias
    float *dt;       // (n, H) Delta = softplus(u)
    float *g;        // (n, H) log-decay Delta * A
    float *v;        // (n, HP) Delta x, the values of the scan
    float *y;        // (n, HP) scan + D x: the pre-norm output
    float *gz;       // (n, HP) y * silu(z)
    float *rstd;     // (n, G)
    float *nrm;      // (n, HP) normed (times its weight): the input of out_proj
    float *S;        // (B, H, N, P) final states
} Act;

static size_t act_carve(Act *a, float *act, const Dims *z, int B, int T) {
    size_t n = (size_t)B * T, HP = (size_t)z->HP, CD = (size_t)z->CD, H = (size_t)z->H, used = 8;
    a->z = take_floats(act, &used, n * HP);
    a->xbc_in = take_floats(act, &used, n * CD);
    a->conv_pre = take_floats(act, &used, n * CD);
    a->xbc = take_floats(act, &used, n * CD);
    a->u = take_floats(act, &used, n * H);
    a->dt = take_floats(act, &used, n * H);
    a->g = take_floats(act, &used, n * H);
    a->v = take_floats(act, &used, n * HP);
    a->y = take_floats(act, &used, n * HP);
    a->gz = take_floats(act, &used, n * HP);
    a->rstd = take_floats(act, &used, n * z->G);
    a->nrm = take_floats(act, &used, n * HP);
    a->S = take_floats(act, &used, (size_t)B * H * z->N * z->P);
    return used;
}

static size_t mamba2_act_floats(const ModelGeometry *g, int layer, int B, int T) {
    (void)layer;
    Dims z = dims_of(g);
    Act a;
    return act_carve(&a, NULL, &z, B, T);
}

// ---- pieces shared by forward and decode ----------------------------------------------------------

// Delta, log-decay and values of `rows` tokens: u = dt_raw + dt_bias (in place), dt = softplus(u),
// g = dt * A_h, v = dt * x. dtr/u/dt/g are (rows, H); x (row stride ldx) and v (rows, HP).
static void discretize(float *u, float *dt, float *g, float *v, const float *x, size_t ldx, const Weights *w,
                       const Dims *z, int rows) {
    for (int n = 0; n < rows; n++)
        for (int h = 0; h < z->H; h++) {
            size_t i = (size_t)n * z->H + h;
            // EXERCISE ex10.2 begin: u += dt_bias; Delta = softplus(u); log-decay g = Delta A_h; v = Delta x (P values)
            // EXERCISE ex10.2 stub: (void)u; (void)x; (void)ldx; (void)w; dt[i] = g[i] = 0.0f;
            // EXERCISE ex10.2 stub: for (int p = 0; p < z->P; p++) v[(size_t)n * z->HP + (size_t)h * z->P + p] = 0.0f;
            u[i] += w->dt_bias[h];
            dt[i] = softplusf_(u[i]);
            g[i] = dt[i] * -expf(w->A_log[h]);
            const float *xh = x + (size_t)n * ldx + (size_t)h * z->P;
            float *vh = v + (size_t)n * z->HP + (size_t)h * z->P;
            for (int p = 0; p < z->P; p++) vh[p] = dt[i] * xh[p];
            // EXERCISE ex10.2 end
        }
}

// gz = y * silu(z); nrm = RMSNorm over each group of GS channels (eps 1e-5) * weight. rstd (rows, G) may
// be NULL (decode).
static void gate_norm_forward(float *gz, float *nrm, float *rstd, const float *y, const float *zg, const float *wn,
                              const Dims *z, int rows) {
    for (int n = 0; n < rows; n++)
        for (int q = 0; q < z->G; q++) {
            size_t o = (size_t)n * z->HP + (size_t)q * z->GS;
            float ss = 0.0f;
            for (int c = 0; c < z->GS; c++) {
                gz[o + c] = y[o + c] * siluf_(zg[o + c]);
                ss += gz[o + c] * gz[o + c];
            }
            float r = 1.0f / sqrtf(ss / (float)z->GS + MAMBA2_NORM_EPS);
            if (rstd) rstd[(size_t)n * z->G + q] = r;
            for (int c = 0; c < z->GS; c++) nrm[o + c] = gz[o + c] * r * wn[(size_t)q * z->GS + c];
        }
}

// ---- forward / backward -------------------------------------------------------------------------

static void mamba2_forward(const Mixer *m, float *out, float *act, const float *x, const float *params, int B,
                           int T) {
    Dims z = dims_of(m->g);
    int n = B * T;
    size_t HP = (size_t)z.HP, CD = (size_t)z.CD, SS = (size_t)z.N * z.P;
    Weights w = weights_at(&z, (float *)params);   // read only
    Act a;
    act_carve(&a, act, &z, B, T);
    act[0] = (float)B;

    // in_proj as three products, one per block of its rows
    linear_forward(a.z, x, w.in_z, NULL, n, z.d, z.HP);
    linear_forward(a.xbc_in, x, w.in_xbc, NULL, n, z.d, z.CD);
    linear_forward(a.u, x, w.in_dt, NULL, n, z.d, z.H);
    shortconv_forward(a.xbc, a.conv_pre, a.xbc_in, w.conv, B, T, z.CD, z.K);
    discretize(a.u, a.dt, a.g, a.v, a.xbc, CD, &w, &z, n);

    // the SSD scan, one (batch, head) per task; head h reads group h / R's B and C
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < z.H; h++) {
            size_t r0 = (size_t)b * T;
            const float *Bm = a.xbc + r0 * CD + HP + (size_t)(h / z.R) * z.N;
            const float *Cm = Bm + (size_t)z.G * z.N;
            float *S = a.S + ((size_t)b * z.H + h) * SS, *y = a.y + r0 * HP + (size_t)h * z.P;
            memset(S, 0, SS * sizeof(float));
            decay_chunked_forward(y, HP, S, Cm, Bm, CD, a.v + r0 * HP + (size_t)h * z.P, HP, a.g + r0 * z.H + h,
                                  (size_t)z.H, T, z.N, z.P, DECAY_CHUNK);
            // the D skip: y_t += D_h x_t
            for (int t = 0; t < T; t++)
                for (int p = 0; p < z.P; p++) y[(size_t)t * HP + p] += w.D[h] * a.xbc[(r0 + t) * CD + (size_t)h * z.P + p];
        }
    gate_norm_forward(a.gz, a.nrm, a.rstd, a.y, a.z, w.norm, &z, n);
    linear_forward(out, a.nrm, w.out, NULL, n, z.HP, z.d);
}

static void mamba2_backward(const Mixer *m, float *dx, float *dparams, const float *dout, const float *act,
                            const float *x, const float *params, int B, int T) {
    Dims z = dims_of(m->g);
    int n = B * T;
    size_t HP = (size_t)z.HP, CD = (size_t)z.CD, H = (size_t)z.H, NHP = (size_t)n * HP;
    Weights w = weights_at(&z, (float *)params), dw = weights_at(&z, dparams);
    Act a;
    act_carve(&a, (float *)act, &z, B, T);   // read only

    // Gradient buffers: the interface hands backward no scratch, so one zeroed block per call.
    size_t per_head = decay_backward_scratch_floats(T, z.N, z.P, DECAY_CHUNK);
    size_t n_scratch = 5 * NHP + 2 * (size_t)n * CD + 3 * (size_t)n * H + (size_t)B * z.G * per_head;
    float *scratch = callocCheck(n_scratch, sizeof(float));
    size_t used = 0;
    float *dnrm = take_floats(scratch, &used, NHP), *dgz = take_floats(scratch, &used, NHP), *dy = take_floats(scratch, &used, NHP);
    float *dz = take_floats(scratch, &used, NHP), *dv = take_floats(scratch, &used, NHP);
    float *dxbc = take_floats(scratch, &used, (size_t)n * CD), *dxbc_in = take_floats(scratch, &used, (size_t)n * CD);
    float *dg = take_floats(scratch, &used, (size_t)n * H), *ddt = take_floats(scratch, &used, (size_t)n * H);
    float *du = take_floats(scratch, &used, (size_t)n * H);
    float *core = take_floats(scratch, &used, (size_t)B * z.G * per_head);

    // out = nrm Wout^T
    linear_backward(dnrm, dw.out, NULL, dout, a.nrm, w.out, n, z.HP, z.d);
    // nrm = gz * rstd * wn per group; gz = y * silu(z)
    for (int r = 0; r < n; r++)
        for (int q = 0; q < z.G; q++) {
            size_t o = (size_t)r * HP + (size_t)q * z.GS;
            const float *wn = w.norm + (size_t)q * z.GS;
            float rs = a.rstd[(size_t)r * z.G + q], dot = 0.0f;
            for (int c = 0; c < z.GS; c++) dot += dnrm[o + c] * wn[c] * a.gz[o + c];
            float k3 = rs * rs * rs * dot / (float)z.GS;
            for (int c = 0; c < z.GS; c++) {
                dgz[o + c] = rs * wn[c] * dnrm[o + c] - k3 * a.gz[o + c];
                dw.norm[(size_t)q * z.GS + c] += dnrm[o + c] * a.gz[o + c] * rs;   // rows in order: one thread
            }
        }
    for (size_t i = 0; i < NHP; i++) {
        float s = sigmoidf_(a.z[i]);
        dy[i] = dgz[i] * a.z[i] * s;
        dz[i] = dgz[i] * a.y[i] * s * (1.0f + a.z[i] * (1.0f - s));
    }
    // y = scan + D x: dD sums over every row (one thread, rows in order)
    for (int r = 0; r < n; r++)
        for (int h = 0; h < z.H; h++)
            for (int p = 0; p < z.P; p++) {
                size_t iy = (size_t)r * HP + (size_t)h * z.P + p, ix = (size_t)r * CD + (size_t)h * z.P + p;
                dw.D[h] += dy[iy] * a.xbc[ix];
                dxbc[ix] += w.D[h] * dy[iy];
            }

    // The scan backward. Heads of one group share B and C, so a task owns a (batch, group) and runs its
    // heads in order: every gradient element has one writer and a fixed summation order.
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int q = 0; q < z.G; q++)
            for (int h = q * z.R; h < (q + 1) * z.R; h++) {
                size_t r0 = (size_t)b * T, bo = r0 * CD + HP + (size_t)q * z.N, co = bo + (size_t)z.G * z.N;
                size_t vo = r0 * HP + (size_t)h * z.P, go = r0 * H + h;
                decay_chunked_backward(dxbc + co, dxbc + bo, dv + vo, dg + go, dy + vo, HP, a.xbc + co, a.xbc + bo, CD,
                                       a.v + vo, HP, a.g + go, H, T, z.N, z.P, DECAY_CHUNK,
                                       core + ((size_t)b * z.G + q) * per_head);
            }

    // v = dt x, g = dt A, dt = softplus(u), u = dt_raw + dt_bias, A = -exp(A_log)
    for (int r = 0; r < n; r++)
        for (int h = 0; h < z.H; h++) {
            size_t i = (size_t)r * H + h;
            float A = -expf(w.A_log[h]), acc = A * dg[i];
            for (int p = 0; p < z.P; p++) {
                size_t iv = (size_t)r * HP + (size_t)h * z.P + p, ix = (size_t)r * CD + (size_t)h * z.P + p;
                acc += dv[iv] * a.xbc[ix];
                dxbc[ix] += a.dt[i] * dv[iv];
            }
            ddt[i] = acc;
            du[i] = acc * sigmoidf_(a.u[i]);
            dw.A_log[h] += a.dt[i] * dg[i] * A;   // dg/dA_log = dt * A
            dw.dt_bias[h] += du[i];
        }

    shortconv_backward(dxbc_in, dw.conv, dxbc, a.conv_pre, a.xbc_in, w.conv, B, T, z.CD, z.K);
    linear_backward(dx, dw.in_z, NULL, dz, x, w.in_z, n, z.d, z.HP);
    linear_backward(dx, dw.in_xbc, NULL, dxbc_in, x, w.in_xbc, n, z.d, z.CD);
    linear_backward(dx, dw.in_dt, NULL, du, x, w.in_dt, n, z.d, z.H);
    free(scratch);
}

// ---- decode: the cache is the states and the conv's last K-1 inputs --------------------------------

struct MixerCache {
    Dims z;
    int n;            // tokens decoded so far
    float *S;         // (H, N, P) the SSM states      } the cache: constant size whatever the context
    float *conv;      // (K-1, CD) last inputs         }
    // one step's scratch (not cache)
    float *zg, *v, *y, *gz, *nrm;   // (HP)
    float *xin, *xbc;               // (CD)
    float *u, *dt, *g;              // (H)
};

static MixerCache *mamba2_cache_new(const Mixer *m, int max_T) {
    Dims z = dims_of(m->g);
    CHECK(max_T > 0, "mamba2: cache for %d tokens", max_T);
    MixerCache *c = mallocCheck(sizeof *c);
    c->z = z;
    c->n = 0;
    size_t HP = (size_t)z.HP, CD = (size_t)z.CD, H = (size_t)z.H, used = 0;
    size_t sizes[] = {H * z.N * z.P, (size_t)(z.K - 1) * CD, HP, HP, HP, HP, HP, CD, CD, H, H, H};
    float **fields[] = {&c->S, &c->conv, &c->zg, &c->v, &c->y, &c->gz, &c->nrm, &c->xin, &c->xbc, &c->u, &c->dt, &c->g};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) total += sizes[i];
    float *base = callocCheck(total, sizeof(float));
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) *fields[i] = take_floats(base, &used, sizes[i]);
    return c;
}

static void mamba2_cache_free(MixerCache *c) {
    if (!c) return;
    free(c->S);   // the start of the one block
    free(c);
}

// fp32 state H*N*P + conv state (K-1)*CD, whatever the context: kvcache_fixed_bytes / (linear layers)
// with state_dtype_bytes = dtype_bytes = 4.
static size_t mamba2_cache_bytes(const MixerCache *c) {
    const Dims *z = &c->z;
    return sizeof(float) * ((size_t)z->H * z->N * z->P + (size_t)(z->K - 1) * z->CD);
}

static void mamba2_decode(const Mixer *m, MixerCache *c, float *out, const float *x, const float *params) {
    (void)m;
    Dims z = c->z;
    size_t HP = (size_t)z.HP, SS = (size_t)z.N * z.P;
    Weights w = weights_at(&z, (float *)params);
    linear_forward(c->zg, x, w.in_z, NULL, 1, z.d, z.HP);
    linear_forward(c->xin, x, w.in_xbc, NULL, 1, z.d, z.CD);
    linear_forward(c->u, x, w.in_dt, NULL, 1, z.d, z.H);
    shortconv_step(c->xbc, c->conv, c->xin, w.conv, z.CD, z.K);
    discretize(c->u, c->dt, c->g, c->v, c->xbc, (size_t)z.CD, &w, &z, 1);
    for (int h = 0; h < z.H; h++) {
        const float *Bm = c->xbc + HP + (size_t)(h / z.R) * z.N, *Cm = Bm + (size_t)z.G * z.N;
        float *y = c->y + (size_t)h * z.P;
        decay_step(y, c->S + h * SS, Cm, Bm, c->v + (size_t)h * z.P, c->g[h], z.N, z.P);
        for (int p = 0; p < z.P; p++) y[p] += w.D[h] * c->xbc[(size_t)h * z.P + p];
    }
    gate_norm_forward(c->gz, c->nrm, NULL, c->y, c->zg, w.norm, &z, 1);
    linear_forward(out, c->nrm, w.out, NULL, 1, z.HP, z.d);
    c->n++;
}

// ---- what the chapters draw ----------------------------------------------------------------------

static int mamba2_n_mix_heads(const ModelGeometry *g, int layer) {
    (void)layer;
    return dims_of(g).H;
}

// A[h][t][s] = (C_t . B_s) exp(G_t - G_s) Delta_s + D_h [s == t]: the weight of the post-conv x_s in the
// pre-norm output y_t of batch 0.
static void mamba2_mixing_matrix(const Mixer *m, float *A, const float *act, const float *params, int T) {
    Dims z = dims_of(m->g);
    Weights w = weights_at(&z, (float *)params);
    Act a;
    act_carve(&a, (float *)act, &z, (int)act[0], T);
    for (int h = 0; h < z.H; h++) {
        const float *Bm = a.xbc + z.HP + (size_t)(h / z.R) * z.N, *Cm = Bm + (size_t)z.G * z.N;
        float *Ah = A + (size_t)h * T * T;
        decay_mixing_matrix(Ah, Cm, Bm, (size_t)z.CD, a.g + h, (size_t)z.H, T, z.N);
        for (int t = 0; t < T; t++) {
            for (int s = 0; s <= t; s++) Ah[(size_t)t * T + s] *= a.dt[(size_t)s * z.H + h];
            Ah[(size_t)t * T + t] += w.D[h];
        }
    }
}

void mamba2_decay_matrix(float *D, const Mixer *m, const float *act, int T) {
    Dims z = dims_of(m->g);
    Act a;
    act_carve(&a, (float *)act, &z, (int)act[0], T);
    for (int h = 0; h < z.H; h++) decay_matrix(D + (size_t)h * T * T, a.g + h, (size_t)z.H, T);
}

void mamba2_decay_profile(float *prof, const Mixer *m, const float *x, const float *params, int T) {
    Dims z = dims_of(m->g);
    float *act = mallocCheck(sizeof(float) * mamba2_act_floats(m->g, m->layer, 1, T));
    float *out = mallocCheck(sizeof(float) * (size_t)T * z.d);
    mamba2_forward(m, out, act, x, params, 1, T);
    Act a;
    act_carve(&a, act, &z, 1, T);
    for (int h = 0; h < z.H; h++) {
        float acc = 0.0f;   // g_{T-r} + ... + g_{T-1}
        for (int r = 0; r < T; r++) {
            prof[(size_t)h * T + r] = expf(acc);
            acc += a.g[(size_t)(T - 1 - r) * z.H + h];
        }
    }
    free(act);
    free(out);
}

static int mamba2_validate(const ModelGeometry *g, int layer, char *why, size_t cap) {
    if (!mixer_validate_linear(g, layer, "mamba2", LINEAR_MAMBA2, why, cap)) return 0;
    if (g->linear_conv_kernel_dim < 2)
        return mixer_fail(why, cap, "linear_conv_kernel_dim %d: mixer 'mamba2' needs a short conv of width >= 2",
                          g->linear_conv_kernel_dim);
    return 1;
}

const MixerOps mamba2_mixer = {
    .name = "mamba2",
    .validate = mamba2_validate,
    .param_tensors = mamba2_param_tensors,
    .init = mamba2_init,
    .act_floats = mamba2_act_floats,
    .forward = mamba2_forward,
    .backward = mamba2_backward,
    .cache_new = mamba2_cache_new,
    .cache_free = mamba2_cache_free,
    .cache_bytes = mamba2_cache_bytes,
    .decode = mamba2_decode,
    .n_mix_heads = mamba2_n_mix_heads,
    .mixing_matrix = mamba2_mixing_matrix,
};
