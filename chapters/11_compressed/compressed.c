// compressed.c: DeepSeek V4's CSA, HCA and window-only attention layers (see compressed.h): the
// sequence compressor, the lightning indexer over compressed entries, attention over the raw window
// plus the entries through the one attention core, the indexer's KL loss, and a decode that keeps the
// partial group in the compressor's state until it completes.
//
// Dims: d = d_model, H heads of dh, rd rotated dims (the last rd), W window, m ratio (0: window only),
// c = 2 for CSA (overlapping groups) else 1; indexer Hi heads of di, ri rotated dims, topk.
// N = B*T rows (row r is the token at position r % T); Tc = T/m entries per sequence; NK = T + Tc keys
// per sequence in the forward's key buffer (raw entries, then compressed ones).
//
// Every decode step computes each number with the same function, on the same inputs, in the same order
// as the forward (a one-row linear_forward is that row of the full product, mathx.h), and reads its
// keys in the forward's order (raw window ascending, then entries ascending), so decode equals forward
// bit for bit.
#include "11_compressed/compressed.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "07_dsa/dsa.h"   // the phase switch, the KL coefficient, dsa_index_score, dsa_select_topk
#include "attention.h"
#include "check.h"
#include "mathx.h"

enum { V4_WINDOW = 0, V4_HCA = 1, V4_CSA = 2 };
enum { MAX_HEAD_DIM = 1024, MAX_RATIO = 512 };

typedef struct {
    int kind;
    int d, H, dh, rd;
    int W, m, c;
    int Hi, di, ri, topk;
    int sinks;
    double theta;
} Dims;

static int fail(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *why, size_t cap, const char *fmt, ...) {
    if (why && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return 0;
}

static int rotary_dims(const ModelGeometry *g) { return (int)lround(g->head_dim * geometry_rotary_fraction(g)); }

// The kind a V4 layer is, from the geometry alone.
static int layer_kind_of(const ModelGeometry *g, int layer) {
    if (g->layer_kind[layer] != LAYER_COMPRESSED) return V4_WINDOW;
    return geometry_layer_is_csa(g, layer) ? V4_CSA : V4_HCA;
}

// 1 if layer `layer` of g can be a V4 layer of `kind`, else 0 with a one-line reason.
static int v4_check(const ModelGeometry *g, int layer, int kind, char *why, size_t cap) {
    static const char *names[3] = {"v4swa", "hca", "csa"};
    const char *nm = names[kind];
    if (layer < 0 || layer >= g->n_layers) return fail(why, cap, "%s: layer %d out of range", nm, layer);
    if (g->attn != ATTN_GQA) return fail(why, cap, "%s: DeepSeek V4 layers are not MLA (kv_lora_rank must be 0)", nm);
    if (g->n_kv_heads != 1 || !g->kv_one_tensor)
        return fail(why, cap, "%s: V4 layers keep one shared KV head with K = V (num_key_value_heads 1, kv_one_tensor), "
                              "got %d KV heads%s", nm, g->n_kv_heads, g->kv_one_tensor ? "" : " and separate K and V");
    if (g->q_lora_rank) return fail(why, cap, "%s: the tiny V4 layers project queries directly (q_lora_rank 0)", nm);
    if (g->head_dim < 2 || g->head_dim > MAX_HEAD_DIM)
        return fail(why, cap, "%s: head_dim %d out of range [2, %d]", nm, g->head_dim, MAX_HEAD_DIM);
    int rd = rotary_dims(g);
    if (rd < 2 || rd % 2 || rd > g->head_dim)
        return fail(why, cap, "%s: partial_rotary_factor %g of head_dim %d must give an even number of rotated dims", nm,
                    geometry_rotary_fraction(g), g->head_dim);
    if (g->sliding_window <= 0) return fail(why, cap, "%s: every V4 layer keeps a raw window: sliding_window must be set", nm);
    if (geometry_kv_source(g, layer) != layer) return fail(why, cap, "%s: V4 layers do not share KV across layers", nm);
    int have = layer_kind_of(g, layer);
    if (kind == V4_WINDOW && g->layer_kind[layer] != LAYER_LOCAL)
        return fail(why, cap, "v4swa: layer %d is not a sliding-window layer (compress ratio 0)", layer);
    if (kind != V4_WINDOW && have != kind)
        return fail(why, cap, "%s: layer %d is %s", nm, layer,
                    g->layer_kind[layer] != LAYER_COMPRESSED ? "not a compressed layer (compress_ratios 0)"
                    : have == V4_CSA ? "CSA (it has an indexer), not HCA" : "HCA (no indexer), not CSA");
    if (kind != V4_WINDOW && (g->compress_ratios[layer] < 2 || g->compress_ratios[layer] > MAX_RATIO))
        return fail(why, cap, "%s: compress_ratios %d at layer %d must be in [2, %d]", nm, g->compress_ratios[layer], layer,
                    MAX_RATIO);
    if (kind == V4_CSA && (g->index_head_dim < 2 || g->index_head_dim % 2 || g->index_topk < 1 || g->index_n_heads < 1))
        return fail(why, cap, "csa: the indexer needs index_n_heads >= 1, an even index_head_dim >= 2 and index_topk >= 1 "
                              "(got %d, %d, %d)", g->index_n_heads, g->index_head_dim, g->index_topk);
    return 1;
}

// The validation functions of the three mixers: 1 if layer `layer` of g is possible for it, else 0
// with a one-line reason in why.
static int csa_validate(const ModelGeometry *g, int layer, char *why, size_t cap) {
    return v4_check(g, layer, V4_CSA, why, cap);
}
static int hca_validate(const ModelGeometry *g, int layer, char *why, size_t cap) {
    return v4_check(g, layer, V4_HCA, why, cap);
}
static int v4swa_validate(const ModelGeometry *g, int layer, char *why, size_t cap) {
    return v4_check(g, layer, V4_WINDOW, why, cap);
}

static Dims dims_of(const ModelGeometry *g, int layer) {
    char why[256];
    int kind = layer >= 0 && layer < g->n_layers ? layer_kind_of(g, layer) : V4_WINDOW;
    CHECK(v4_check(g, layer, kind, why, sizeof why), "%s", why);
    Dims z = {.kind = kind, .d = g->d_model, .H = g->n_heads, .dh = g->head_dim, .rd = rotary_dims(g),
              .W = g->sliding_window, .m = kind == V4_WINDOW ? 0 : g->compress_ratios[layer], .c = kind == V4_CSA ? 2 : 1,
              .sinks = geometry_layer_has_sinks(g, layer), .theta = g->rope_theta};
    if (kind == V4_CSA) {
        z.Hi = g->index_n_heads;
        z.di = g->index_head_dim;
        z.ri = z.rd < z.di ? z.rd : z.di;
        z.topk = g->index_topk;
    }
    return z;
}

// ---- parameters -------------------------------------------------------------------------------------

enum {
    P_WQ, P_WKV, P_KV_NORM, P_C_WKV, P_C_WGATE, P_C_APE, P_C_NORM,
    P_I_WQ, P_I_WPROJ, P_I_WKV, P_I_WGATE, P_I_APE, P_I_NORM, P_SINK, P_WO, N_P
};

static const char *const param_names[N_P] = {
    "wq", "wkv", "kv_norm", "compressor.wkv", "compressor.wgate", "compressor.ape", "compressor.norm",
    "indexer.wq", "indexer.weights_proj", "indexer.compressor.wkv", "indexer.compressor.wgate",
    "indexer.compressor.ape", "indexer.compressor.norm", "attn_sink", "wo",
};

// Shapes (rows, cols; cols 0 for a vector) of each tensor; rows 0 when the layer does not have it.
static void param_shapes(const Dims *z, int64_t rows[N_P], int64_t cols[N_P]) {
    int comp = z->m > 0, csa = z->kind == V4_CSA, cd = z->c * z->dh;
    int64_t r[N_P] = {
        [P_WQ] = (int64_t)z->H * z->dh, [P_WKV] = z->dh, [P_KV_NORM] = z->dh,
        [P_C_WKV] = comp ? cd : 0, [P_C_WGATE] = comp ? cd : 0, [P_C_APE] = comp ? z->m : 0, [P_C_NORM] = comp ? z->dh : 0,
        [P_I_WQ] = csa ? (int64_t)z->Hi * z->di : 0, [P_I_WPROJ] = csa ? z->Hi : 0, [P_I_WKV] = csa ? 2 * z->di : 0,
        [P_I_WGATE] = csa ? 2 * z->di : 0, [P_I_APE] = csa ? z->m : 0, [P_I_NORM] = csa ? z->di : 0,
        [P_SINK] = z->sinks ? z->H : 0, [P_WO] = z->d,
    };
    int64_t c[N_P] = {
        [P_WQ] = z->d, [P_WKV] = z->d, [P_C_WKV] = z->d, [P_C_WGATE] = z->d, [P_C_APE] = cd,
        [P_I_WQ] = z->d, [P_I_WPROJ] = z->d, [P_I_WKV] = z->d, [P_I_WGATE] = z->d, [P_I_APE] = 2 * z->di,
        [P_WO] = (int64_t)z->H * z->dh,
    };
    memcpy(rows, r, sizeof r);
    memcpy(cols, c, sizeof c);
}

// Offsets (floats) of every tensor in the layer's slice; off[i + 1] - off[i] is tensor i's size.
static void param_offsets(const Dims *z, size_t off[N_P + 1]) {
    int64_t rows[N_P], cols[N_P];
    param_shapes(z, rows, cols);
    off[0] = 0;
    for (int i = 0; i < N_P; i++) off[i + 1] = off[i] + (size_t)(rows[i] * (cols[i] ? cols[i] : 1));
}

static int v4_param_tensors(const ModelGeometry *g, int layer, ParamTensor *out, int cap) {
    Dims z = dims_of(g, layer);
    int64_t rows[N_P], cols[N_P];
    param_shapes(&z, rows, cols);
    return mixer_param_list(out, cap, param_names, rows, cols, N_P);
}

// Each mixer's param_tensors is where a geometry first meets it: it refuses a layer of another kind.
static int param_tensors_checked(const ModelGeometry *g, int layer, ParamTensor *out, int cap,
                                 int (*validate)(const ModelGeometry *, int, char *, size_t)) {
    char why[256];
    CHECK(validate(g, layer, why, sizeof why), "%s", why);
    return v4_param_tensors(g, layer, out, cap);
}
static int csa_param_tensors(const ModelGeometry *g, int layer, ParamTensor *out, int cap) {
    return param_tensors_checked(g, layer, out, cap, csa_validate);
}
static int hca_param_tensors(const ModelGeometry *g, int layer, ParamTensor *out, int cap) {
    return param_tensors_checked(g, layer, out, cap, hca_validate);
}
static int v4swa_param_tensors(const ModelGeometry *g, int layer, ParamTensor *out, int cap) {
    return param_tensors_checked(g, layer, out, cap, v4swa_validate);
}

// One compressor's weights (the main one or the indexer's) as the functions below read them.
typedef struct {
    const float *wkv, *wgate, *ape, *norm;   // (c*e, d), (c*e, d), (m, c*e), (e)
    int e, m, c, rot;                        // entry width, ratio, 1 or 2 (overlap), rotated dims (the last)
} Compressor;

typedef struct {
    float *p[N_P];   // NULL where the layer has no such tensor
} Weights;

static Weights weights_at(const Dims *z, float *params) {
    size_t off[N_P + 1];
    param_offsets(z, off);
    Weights w;
    for (int i = 0; i < N_P; i++) w.p[i] = off[i + 1] > off[i] ? params + off[i] : NULL;
    return w;
}

static Compressor main_compressor(const Dims *z, const Weights *w) {
    return (Compressor){w->p[P_C_WKV], w->p[P_C_WGATE], w->p[P_C_APE], w->p[P_C_NORM], z->dh, z->m, z->c, z->rd};
}

static Compressor index_compressor(const Dims *z, const Weights *w) {
    return (Compressor){w->p[P_I_WKV], w->p[P_I_WGATE], w->p[P_I_APE], w->p[P_I_NORM], z->di, z->m, 2, z->ri};
}

static void v4_init(const Mixer *m, float *params, Rng *rng) {
    Dims z = dims_of(m->g, m->layer);
    int64_t rows[N_P], cols[N_P];
    param_shapes(&z, rows, cols);
    Weights w = weights_at(&z, params);
    int L = m->g->n_layers > 0 ? m->g->n_layers : 1;
    for (int i = 0; i < N_P; i++) {
        if (!w.p[i]) continue;
        long n = (long)(rows[i] * (cols[i] ? cols[i] : 1));
        if (i == P_C_APE || i == P_I_APE || i == P_SINK) {
            for (long k = 0; k < n; k++) w.p[i][k] = 0.0f;   // no positional preference, sink logit 0
        } else if (!cols[i]) {
            for (long k = 0; k < n; k++) w.p[i][k] = 1.0f;   // norm gains
        } else {
            // GPT-2: the projection back into the residual stream scaled by 1/sqrt(2 * n_layers)
            rng_fill_normal(rng, w.p[i], n, i == P_WO ? 0.02f / sqrtf(2.0f * (float)L) : 0.02f);
        }
    }
}

// ---- pieces shared by forward and decode -----------------------------------------------------------

// RoPE on the last n dims of a vector of width e at position pos (interleaved pairs, V4's convention).
static void rope_tail(float *x, int e, int n, int pos, double theta, int inverse) {
    rope_apply(x + e - n, pos, n, theta, ROPE_INTERLEAVED, inverse);
}

// A unit gain, for the query's RMS normalisation (V4 scales q_h by rsqrt(mean(q_h^2) + eps), no gain).
static const float unit_gain_ones[MAX_HEAD_DIM] = {[0 ... MAX_HEAD_DIM - 1] = 1.0f};
static const float *unit_gain(void) { return unit_gain_ones; }

// C (n, c*e) = x Wkv^T and Z (n, c*e) = x Wgate^T + ape[pos mod m] for n rows, row r at position
// pos0 + r % T.
static void comp_project(float *C, float *Z, const float *x, const Compressor *cp, int d, int n, int T, int pos0) {
    int w = cp->c * cp->e;
    linear_forward(C, x, cp->wkv, NULL, n, d, w);
    linear_forward(Z, x, cp->wgate, NULL, n, d, w);
    for (int r = 0; r < n; r++) {
        const float *ape = cp->ape + (size_t)((pos0 + r % T) % cp->m) * w;
        float *zr = Z + (size_t)r * w;
        for (int j = 0; j < w; j++) zr[j] += ape[j];
    }
}

// One entry before its norm: e_raw (e), per channel j a softmax over the entry's tokens of Z, weighting
// C. Token rows are `stride` floats apart: the current group's m rows at (Cc, Zc), reading channels
// (c-1)*e + j; with c = 2 the previous group's m rows at (Cp, Zp), channels j (Cp NULL: no previous
// group). wts (c*m, e) gets the weights (previous group's rows first, 0 when absent), or NULL.
static void comp_entry(float *e_raw, float *wts, const float *Cp, const float *Zp, const float *Cc, const float *Zc,
                       size_t stride, const Compressor *cp) {
    // EXERCISE ex11.1 begin: per channel j, e_raw[j] = sum over the entry's tokens of softmax(Z) * C; wts the weights
    // EXERCISE ex11.1 stub: (void)Cp; (void)Zp; (void)Cc; (void)Zc; (void)stride;
    // EXERCISE ex11.1 stub: memset(e_raw, 0, sizeof(float) * (size_t)cp->e);
    // EXERCISE ex11.1 stub: if (wts) memset(wts, 0, sizeof(float) * (size_t)cp->c * cp->m * cp->e);
    int m = cp->m, e = cp->e, cur = (cp->c - 1) * e;
    for (int j = 0; j < e; j++) {
        float mx = -INFINITY;
        for (int t = 0; t < m; t++) {
            if (Cp && Zp[t * stride + j] > mx) mx = Zp[t * stride + j];
            if (Zc[t * stride + cur + j] > mx) mx = Zc[t * stride + cur + j];
        }
        float w[2 * MAX_RATIO], sum = 0.0f;
        for (int t = 0; t < m; t++) {
            w[t] = Cp ? expf(Zp[t * stride + j] - mx) : 0.0f;
            w[m + t] = expf(Zc[t * stride + cur + j] - mx);
        }
        for (int t = 0; t < 2 * m; t++) sum += w[t];
        float inv = 1.0f / sum, acc = 0.0f;
        for (int t = 0; t < m; t++) {
            if (Cp) acc += w[t] * inv * Cp[t * stride + j];
            acc += w[m + t] * inv * Cc[t * stride + cur + j];
        }
        e_raw[j] = acc;
        if (wts) {
            for (int t = 0; t < m; t++) {
                if (cp->c == 2) wts[(size_t)t * e + j] = w[t] * inv;
                wts[(size_t)((cp->c - 1) * m + t) * e + j] = w[m + t] * inv;
            }
        }
    }
    // EXERCISE ex11.1 end
}

// The normed, rotated entry (e) from e_raw: RMSNorm * norm, RoPE on the last rot dims at position pos.
static void comp_finish(float *out, float *rstd, const float *e_raw, const Compressor *cp, int pos, double theta) {
    rmsnorm_forward(out, rstd, e_raw, cp->norm, 1, cp->e, V4_NORM_EPS);
    rope_tail(out, cp->e, cp->rot, pos, theta, 0);
}

// ---- activations saved by forward -------------------------------------------------------------------

typedef struct {
    float *P;          // (B,H,T,NK) main attention weights, 0 on keys not read
    float *psink;      // (B,H,T) the sink's weight (NULL without sinks)
    unsigned char *sel;// (B,T,Tc) 1 where query t read entry s
    float *qraw;       // (N,H*dh) x Wq^T
    float *rstd_q;     // (N*H)
    float *q;          // (N,H*dh) normalised and rotated
    float *kvraw;      // (N,dh) x Wkv^T
    float *rstd_kv;    // (N)
    float *KV;         // (B,NK,dh) the keys (= values): raw entries, then compressed entries
    float *C, *Z;      // (N,c*dh) the compressor's projections (Z with ape)
    float *Wt;         // (B,Tc,c*m,dh) its softmax weights
    float *Eraw;       // (B,Tc,dh) entries before the norm
    float *rstd_e;     // (B*Tc)
    float *o, *o_r;    // (N,H*dh) head outputs, then with the rotation taken back (Wo's input)
    // CSA's indexer
    float *iq, *iw;    // (N,Hi*di) rotated, (N,Hi) scaled
    float *IC, *IZ;    // (N,2di)
    float *IWt;        // (B,Tc,2m,di)
    float *IEraw;      // (B,Tc,di)
    float *irstd;      // (B*Tc)
    float *IK;         // (B,Tc,di) the indexer's keys (what decode caches)
    float *I;          // (B,T,Tc) scores, 0 where not visible
} Act;

static float *take(float *base, size_t *used, size_t n) {
    float *p = base ? base + *used : NULL;
    *used += n;
    return p;
}

static int n_entries(const Dims *z, int T) { return z->m > 0 ? T / z->m : 0; }

static size_t act_carve(Act *a, float *act, const Dims *z, int B, int T) {
    size_t N = (size_t)B * T, Tc = (size_t)n_entries(z, T), NK = T + Tc, BTc = (size_t)B * Tc, used = 0;
    size_t qd = (size_t)z->H * z->dh, cd = (size_t)z->c * z->dh;
    memset(a, 0, sizeof *a);
    a->P = take(act, &used, (size_t)B * z->H * T * NK);
    a->psink = z->sinks ? take(act, &used, (size_t)B * z->H * T) : NULL;
    a->sel = (unsigned char *)take(act, &used, (N * Tc + sizeof(float) - 1) / sizeof(float));
    a->qraw = take(act, &used, N * qd);
    a->rstd_q = take(act, &used, N * z->H);
    a->q = take(act, &used, N * qd);
    a->kvraw = take(act, &used, N * z->dh);
    a->rstd_kv = take(act, &used, N);
    a->KV = take(act, &used, (size_t)B * NK * z->dh);
    if (z->m > 0) {
        a->C = take(act, &used, N * cd);
        a->Z = take(act, &used, N * cd);
        a->Wt = take(act, &used, BTc * z->c * z->m * z->dh);
        a->Eraw = take(act, &used, BTc * z->dh);
        a->rstd_e = take(act, &used, BTc);
    }
    a->o = take(act, &used, N * qd);
    a->o_r = take(act, &used, N * qd);
    if (z->kind == V4_CSA) {
        a->iq = take(act, &used, N * z->Hi * z->di);
        a->iw = take(act, &used, N * z->Hi);
        a->IC = take(act, &used, N * 2 * z->di);
        a->IZ = take(act, &used, N * 2 * z->di);
        a->IWt = take(act, &used, BTc * 2 * z->m * z->di);
        a->IEraw = take(act, &used, BTc * z->di);
        a->irstd = take(act, &used, BTc);
        a->IK = take(act, &used, BTc * z->di);
        a->I = take(act, &used, N * Tc);
    }
    return used;
}

static size_t v4_act_floats(const ModelGeometry *g, int layer, int B, int T) {
    Dims z = dims_of(g, layer);
    Act a;
    return act_carve(&a, NULL, &z, B, T);
}

// The entries of B sequences (C, Z at (N, c*e)): Eraw (B,Tc,e), wts (B,Tc,c*m,e), rstd (B*Tc), and the
// finished entries, entry (b, s) at out + b*out_bstride + s*e.
static void comp_forward(float *out, size_t out_bstride, float *Eraw, float *wts, float *rstd, const float *C,
                         const float *Z, const Compressor *cp, int B, int T, double theta) {
    int Tc = T / cp->m, w = cp->c * cp->e, m = cp->m, e = cp->e;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int s = 0; s < Tc; s++) {
            size_t cur = ((size_t)b * T + (size_t)s * m) * w, be = (size_t)b * Tc + s;
            const float *Cp = cp->c == 2 && s > 0 ? C + cur - (size_t)m * w : NULL;
            const float *Zp = cp->c == 2 && s > 0 ? Z + cur - (size_t)m * w : NULL;
            float *wt = wts + be * cp->c * m * e;
            if (cp->c == 2 && s == 0) memset(wt, 0, sizeof(float) * (size_t)m * e);
            comp_entry(Eraw + be * e, wt, Cp, Zp, C + cur, Z + cur, (size_t)w, cp);
            comp_finish(out + (size_t)b * out_bstride + (size_t)s * e, rstd + be, Eraw + be * e, cp, s * m, theta);
        }
}

// The entries query t of a sequence attends to, ascending, into ent; returns how many. I (Tc): its
// indexer scores (CSA); work (Tc) the selector's scratch.
static int attended_entries(int *ent, int *work, const float *I, int t, const Dims *z) {
    int vis = z->m > 0 ? (t + 1) / z->m : 0;
    if (vis == 0) return 0;
    DsaPhase phase = z->kind == V4_CSA ? dsa_phase() : DSA_DENSE;
    int k = z->topk < vis ? z->topk : vis;
    if (phase == DSA_DENSE || k == vis) {
        for (int s = 0; s < vis; s++) ent[s] = s;
        return vis;
    }
    if (phase == DSA_WINDOW) {
        for (int i = 0; i < k; i++) ent[i] = vis - k + i;
        return k;
    }
    return dsa_select_topk(ent, work, I, vis, z->topk);
}

// The key rows of query t: raw rows max(0, t-W+1) .. t (row j of the raw part is position j, plus
// raw0), then entry rows ent0 + ent[i]. Returns the count.
static int key_rows(int *rows, int t, const Dims *z, const int *ent, int n_ent, int raw_row_of_ring, int ent0) {
    int lo = t - z->W + 1 > 0 ? t - z->W + 1 : 0, n = 0;
    for (int j = lo; j <= t; j++) rows[n++] = raw_row_of_ring ? j % z->W : j;
    for (int i = 0; i < n_ent; i++) rows[n++] = ent0 + ent[i];
    return n;
}

static AttnHeads heads_of(const Dims *z, const float *sink) {
    return (AttnHeads){.n_heads = z->H, .n_kv_heads = 1, .dk = z->dh, .dv = z->dh,
                       .scale = 1.0f / sqrtf((float)z->dh), .sink = sink};
}

// ---- forward ----------------------------------------------------------------------------------------

static void v4_forward(const Mixer *m, float *out, float *act, const float *x, const float *params, int B, int T) {
    Dims z = dims_of(m->g, m->layer);
    Weights w = weights_at(&z, (float *)params);   // read only
    Act a;
    act_carve(&a, act, &z, B, T);
    int N = B * T, Tc = n_entries(&z, T), NK = T + Tc, qd = z.H * z.dh;

    // queries: x Wq^T, each head RMS-normalised (no gain), the last rd dims rotated
    linear_forward(a.qraw, x, w.p[P_WQ], NULL, N, z.d, qd);
    rmsnorm_forward(a.q, a.rstd_q, a.qraw, unit_gain(), N * z.H, z.dh, V4_NORM_EPS);
    for (int r = 0; r < N; r++)
        for (int h = 0; h < z.H; h++) rope_tail(a.q + (size_t)r * qd + (size_t)h * z.dh, z.dh, z.rd, r % T, z.theta, 0);
    // raw entries: RMSNorm(x Wkv^T) * kv_norm, rotated; row t of each sequence's key buffer
    linear_forward(a.kvraw, x, w.p[P_WKV], NULL, N, z.d, z.dh);
    for (int b = 0; b < B; b++) {
        float *kvb = a.KV + (size_t)b * NK * z.dh;
        rmsnorm_forward(kvb, a.rstd_kv + (size_t)b * T, a.kvraw + (size_t)b * T * z.dh, w.p[P_KV_NORM], T, z.dh,
                        V4_NORM_EPS);
        for (int t = 0; t < T; t++) rope_tail(kvb + (size_t)t * z.dh, z.dh, z.rd, t, z.theta, 0);
    }
    // compressed entries: rows T.. of each sequence's key buffer
    if (z.m > 0) {
        Compressor cp = main_compressor(&z, &w);
        comp_project(a.C, a.Z, x, &cp, z.d, N, T, 0);
        comp_forward(a.KV + (size_t)T * z.dh, (size_t)NK * z.dh, a.Eraw, a.Wt, a.rstd_e, a.C, a.Z, &cp, B, T, z.theta);
    }
    // CSA: the indexer's queries, weights, keys and scores
    if (z.kind == V4_CSA) {
        Compressor ic = index_compressor(&z, &w);
        linear_forward(a.iq, x, w.p[P_I_WQ], NULL, N, z.d, z.Hi * z.di);
        linear_forward(a.iw, x, w.p[P_I_WPROJ], NULL, N, z.d, z.Hi);
        float ws = 1.0f / sqrtf((float)z.Hi) / sqrtf((float)z.di);   // Hi^-0.5 * di^-0.5
        for (long i = 0; i < (long)N * z.Hi; i++) a.iw[i] *= ws;
        for (int r = 0; r < N; r++)
            for (int h = 0; h < z.Hi; h++)
                rope_tail(a.iq + ((size_t)r * z.Hi + h) * z.di, z.di, z.ri, r % T, z.theta, 0);
        comp_project(a.IC, a.IZ, x, &ic, z.d, N, T, 0);
        comp_forward(a.IK, (size_t)Tc * z.di, a.IEraw, a.IWt, a.irstd, a.IC, a.IZ, &ic, B, T, z.theta);
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < N; r++) {
            int b = r / T, t = r % T, vis = (t + 1) / z.m;
            for (int s = 0; s < Tc; s++)
                a.I[(size_t)r * Tc + s] = s < vis ? dsa_index_score(a.iq + (size_t)r * z.Hi * z.di, a.iw + (size_t)r * z.Hi,
                                                                    a.IK + ((size_t)b * Tc + s) * z.di, z.Hi, z.di)
                                                  : 0.0f;
        }
    }

    // attention: each query over its raw window and its entries, in one buffer per sequence
    AttnHeads heads = heads_of(&z, w.p[P_SINK]);
    #pragma omp parallel
    {
        int *rows = mallocCheck(sizeof(int) * (size_t)(z.W + 3 * (Tc + 1)));
        int *ent = rows + z.W + Tc + 1, *work = ent + Tc + 1;
        float *pbuf = mallocCheck(sizeof(float) * ((size_t)z.H * (z.W + Tc + 1) + z.H +
                                                   attn_scratch_floats(&heads, z.W + Tc + 1)));
        float *sbuf = pbuf + (size_t)z.H * (z.W + Tc + 1), *scratch = sbuf + z.H;
        #pragma omp for schedule(static)
        for (int r = 0; r < N; r++) {
            int b = r / T, t = r % T;
            int ne = attended_entries(ent, work, a.I ? a.I + (size_t)r * Tc : NULL, t, &z);
            unsigned char *sel = a.sel + (size_t)r * Tc;
            memset(sel, 0, (size_t)Tc);
            for (int i = 0; i < ne; i++) sel[ent[i]] = 1;
            int n = key_rows(rows, t, &z, ent, ne, 0, T);
            AttnKeys ks = {.k = a.KV + (size_t)b * NK * z.dh, .v = a.KV + (size_t)b * NK * z.dh, .k_stride = (size_t)z.dh,
                           .k_head = (size_t)z.dh, .v_stride = (size_t)z.dh, .v_head = (size_t)z.dh};
            attn_keys_list(&ks, rows, n);
            attn_query(a.o + (size_t)r * qd, pbuf, (size_t)n, a.psink ? sbuf : NULL, a.q + (size_t)r * qd, &ks, &heads, 0,
                       1, scratch);
            for (int h = 0; h < z.H; h++) {
                float *Prow = a.P + (((size_t)b * z.H + h) * T + t) * NK;
                memset(Prow, 0, sizeof(float) * (size_t)NK);   // keys not read: exactly 0
                for (int k = 0; k < n; k++) Prow[rows[k]] = pbuf[(size_t)h * n + k];
                if (a.psink) a.psink[((size_t)b * z.H + h) * T + t] = sbuf[h];
            }
        }
        free(rows);
        free(pbuf);
    }
    // the values carried their rotation into o: take it back at the query's position, then Wo
    memcpy(a.o_r, a.o, sizeof(float) * (size_t)N * qd);
    for (int r = 0; r < N; r++)
        for (int h = 0; h < z.H; h++) rope_tail(a.o_r + (size_t)r * qd + (size_t)h * z.dh, z.dh, z.rd, r % T, z.theta, 1);
    linear_forward(out, a.o_r, w.p[P_WO], NULL, N, qd, z.d);
}

// ---- backward ---------------------------------------------------------------------------------------

// From dE (B,Tc,e) the gradient of the finished entries (consumed: rotated back in place), accumulates
// dC, dZ (N, c*e), the norm's gain (dnorm) and ape's (dape), given what comp_forward saved.
static void comp_backward(float *dC, float *dZ, float *dnorm, float *dape, float *dE, const float *C, const float *Eraw,
                          const float *wts, const float *rstd, const Compressor *cp, int B, int T, double theta) {
    int Tc = T / cp->m, w = cp->c * cp->e, m = cp->m, e = cp->e, BTc = B * Tc;
    if (BTc == 0) return;
    for (int be = 0; be < BTc; be++) rope_tail(dE + (size_t)be * e, e, cp->rot, (be % Tc) * m, theta, 1);
    float *dEraw = callocCheck((size_t)BTc * e, sizeof(float));
    rmsnorm_backward(dEraw, dnorm, dE, Eraw, cp->norm, rstd, BTc, e);
    // e_raw_j = sum_t p_tj C_tj with p = softmax_t(Z_tj):  dC_tj = g_j p_tj,  dZ_tj = p_tj g_j (C_tj - e_raw_j).
    // Every (token, channel) feeds exactly one entry, so entries write disjoint slots.
    #pragma omp parallel for schedule(static)
    for (int be = 0; be < BTc; be++) {
        int b = be / Tc, s = be % Tc;
        const float *g = dEraw + (size_t)be * e, *er = Eraw + (size_t)be * e, *wt = wts + (size_t)be * cp->c * m * e;
        for (int part = 0; part < cp->c; part++) {
            int group = cp->c == 2 && part == 0 ? s - 1 : s, ch0 = cp->c == 2 && part == 1 ? e : 0;
            if (group < 0) continue;
            for (int t = 0; t < m; t++) {
                size_t row = ((size_t)b * T + (size_t)group * m + t) * w + ch0;
                const float *p = wt + (size_t)(part * m + t) * e;
                for (int j = 0; j < e; j++) {
                    dC[row + j] += g[j] * p[j];
                    dZ[row + j] += p[j] * g[j] * (C[row + j] - er[j]);
                }
            }
        }
    }
    free(dEraw);
    // Z = x Wgate^T + ape[pos mod m]: ape collects every row's dZ, rows in order
    for (int r = 0; r < B * T; r++) {
        float *da = dape + (size_t)((r % T) % m) * w;
        const float *dz = dZ + (size_t)r * w;
        for (int j = 0; j < w; j++) da[j] += dz[j];
    }
}

// The indexer's target and prediction for query r over its attended entries ent (n): p the main
// attention's weights on them summed over heads and L1-normalised, q the softmax of their scores.
// Returns KL(p || q) (double); 0 without entries.
static double kl_row(float *p_out, float *q_out, const Act *a, const Dims *z, int r, int T, const int *ent, int n) {
    if (n == 0) return 0.0;
    int b = r / T, t = r % T, Tc = n_entries(z, T), NK = T + Tc;
    double psum = 0.0, mx = -INFINITY;
    double p[1024], q[1024];
    CHECK(n <= 1024, "csa: %d attended entries (at most 1024 in training)", n);
    for (int i = 0; i < n; i++) {
        double s = 0.0;
        for (int h = 0; h < z->H; h++) s += a->P[(((size_t)b * z->H + h) * T + t) * NK + T + ent[i]];
        p[i] = s;
        psum += s;
        double I = a->I[(size_t)r * Tc + ent[i]];
        if (I > mx) mx = I;
    }
    double qsum = 0.0;
    for (int i = 0; i < n; i++) {
        q[i] = exp(a->I[(size_t)r * Tc + ent[i]] - mx);
        qsum += q[i];
    }
    double kl = 0.0;
    for (int i = 0; i < n; i++) {
        p[i] = psum > 0 ? p[i] / psum : 1.0 / n;
        q[i] /= qsum;
        if (p[i] > 0) kl += p[i] * (log(p[i]) - log(q[i]));
        if (p_out) p_out[i] = (float)p[i];
        if (q_out) q_out[i] = (float)q[i];
    }
    return kl;
}

static int ents_of_row(int *ent, const unsigned char *sel, int Tc) {
    int n = 0;
    for (int s = 0; s < Tc; s++)
        if (sel[s]) ent[n++] = s;
    return n;
}

double compressed_index_kl(const Mixer *m, const float *act, int B, int T) {
    Dims z = dims_of(m->g, m->layer);
    CHECK(z.kind == V4_CSA, "compressed_index_kl: layer %d has no indexer", m->layer);
    Act a;
    act_carve(&a, (float *)act, &z, B, T);
    int Tc = n_entries(&z, T);
    int *ent = mallocCheck(sizeof(int) * (size_t)(Tc + 1));
    double total = 0.0;
    for (int r = 0; r < B * T; r++) total += kl_row(NULL, NULL, &a, &z, r, T, ent, ents_of_row(ent, a.sel + (size_t)r * Tc, Tc));
    free(ent);
    return total / ((double)B * T);
}

// Adds coef * d(mean KL)/d(indexer weights) to dw; x is detached (nothing reaches dx or the main path).
static void index_kl_backward(Weights *dw, const Act *a, const Weights *w, const float *x, const Dims *z, int B, int T,
                              float coef) {
    int N = B * T, Tc = n_entries(z, T), Hi = z->Hi, di = z->di;
    float *dI = callocCheck((size_t)N * Tc, sizeof(float));
    float *diq = callocCheck((size_t)N * Hi * di, sizeof(float)), *diw = callocCheck((size_t)N * Hi, sizeof(float));
    float *dIK = callocCheck((size_t)B * Tc * di, sizeof(float));
    float g_row = coef / (float)N;
    // per query: dI = g (q - p) on its entries, then the head weights and queries
    #pragma omp parallel
    {
        int *ent = mallocCheck(sizeof(int) * (size_t)(Tc + 1));
        float *p = mallocCheck(sizeof(float) * 2 * (size_t)(Tc + 1)), *q = p + Tc + 1;
        #pragma omp for schedule(static)
        for (int r = 0; r < N; r++) {
            int b = r / T, n = ents_of_row(ent, a->sel + (size_t)r * Tc, Tc);
            kl_row(p, q, a, z, r, T, ent, n);
            const float *iq = a->iq + (size_t)r * Hi * di, *iw = a->iw + (size_t)r * Hi;
            for (int i = 0; i < n; i++) {
                float gI = g_row * (q[i] - p[i]);
                dI[(size_t)r * Tc + ent[i]] = gI;
                const float *ks = a->IK + ((size_t)b * Tc + ent[i]) * di;
                for (int h = 0; h < Hi; h++) {
                    float s = dot_f32(iq + (size_t)h * di, ks, di);
                    if (s <= 0.0f) continue;   // ReLU: no gradient where it is off
                    diw[(size_t)r * Hi + h] += gI * s;
                    axpy_f32(diq + ((size_t)r * Hi + h) * di, gI * iw[h], ks, di);
                }
            }
        }
        free(ent);
        free(p);
    }
    // per key: entry s collects from every query that attended it, in order
    #pragma omp parallel for schedule(static)
    for (int be = 0; be < B * Tc; be++) {
        int b = be / Tc, s = be % Tc;
        const float *ks = a->IK + (size_t)be * di;
        for (int t = (s + 1) * z->m - 1; t < T; t++) {
            size_t r = (size_t)b * T + t;
            float gI = dI[r * Tc + s];
            if (gI == 0.0f) continue;
            for (int h = 0; h < Hi; h++) {
                const float *qh = a->iq + (r * Hi + h) * di;
                if (dot_f32(qh, ks, di) <= 0.0f) continue;
                axpy_f32(dIK + (size_t)be * di, gI * a->iw[r * Hi + h], qh, di);
            }
        }
    }
    // RoPE's backward is the inverse rotation; then the projections (inputs detached)
    for (int r = 0; r < N; r++)
        for (int h = 0; h < Hi; h++) rope_tail(diq + ((size_t)r * Hi + h) * di, di, z->ri, r % T, z->theta, 1);
    float ws = 1.0f / sqrtf((float)Hi) / sqrtf((float)di);
    for (long i = 0; i < (long)N * Hi; i++) diw[i] *= ws;
    linear_backward(NULL, dw->p[P_I_WPROJ], NULL, diw, x, w->p[P_I_WPROJ], N, z->d, Hi);
    linear_backward(NULL, dw->p[P_I_WQ], NULL, diq, x, w->p[P_I_WQ], N, z->d, Hi * di);
    Compressor ic = index_compressor(z, w);
    float *dC = callocCheck((size_t)N * 4 * di, sizeof(float)), *dZ = dC + (size_t)N * 2 * di;
    comp_backward(dC, dZ, dw->p[P_I_NORM], dw->p[P_I_APE], dIK, a->IC, a->IEraw, a->IWt, a->irstd, &ic, B, T, z->theta);
    linear_backward(NULL, dw->p[P_I_WKV], NULL, dC, x, w->p[P_I_WKV], N, z->d, 2 * di);
    linear_backward(NULL, dw->p[P_I_WGATE], NULL, dZ, x, w->p[P_I_WGATE], N, z->d, 2 * di);
    free(dC);
    free(dI);
    free(diq);
    free(diw);
    free(dIK);
}

static void v4_backward(const Mixer *m, float *dx, float *dparams, const float *dout, const float *act, const float *x,
                        const float *params, int B, int T) {
    Dims z = dims_of(m->g, m->layer);
    Weights w = weights_at(&z, (float *)params), dw = weights_at(&z, dparams);
    Act a;
    act_carve(&a, (float *)act, &z, B, T);   // read only
    int N = B * T, Tc = n_entries(&z, T), NK = T + Tc, qd = z.H * z.dh;
    size_t nkv = (size_t)B * NK * z.dh;
    float *d_o = callocCheck((size_t)N * 2 * qd + 2 * nkv, sizeof(float));
    float *dq = d_o + (size_t)N * qd, *dK = dq + (size_t)N * qd, *dV = dK + nkv;

    // out = o_r Wo^T; o_r = o rotated back by -t, so d o = d o_r rotated forward by t
    linear_backward(d_o, dw.p[P_WO], NULL, dout, a.o_r, w.p[P_WO], N, qd, z.d);
    for (int r = 0; r < N; r++)
        for (int h = 0; h < z.H; h++) rope_tail(d_o + (size_t)r * qd + (size_t)h * z.dh, z.dh, z.rd, r % T, z.theta, 0);

    // the attention core's backward, query by query, each sequence on one thread (its key rows are shared)
    AttnHeads heads = heads_of(&z, w.p[P_SINK]);
    float *dsink_b = w.p[P_SINK] ? callocCheck((size_t)B * z.H, sizeof(float)) : NULL;
    #pragma omp parallel
    {
        int *rows = mallocCheck(sizeof(int) * (size_t)(z.W + 2 * (Tc + 1)));
        int *ent = rows + z.W + Tc + 1;
        float *pbuf = mallocCheck(sizeof(float) * ((size_t)(z.H + 1) * (z.W + Tc + 1) + z.H));
        float *sbuf = pbuf + (size_t)z.H * (z.W + Tc + 1), *scratch = sbuf + z.H;
        #pragma omp for schedule(static)
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                size_t r = (size_t)b * T + t;
                int ne = ents_of_row(ent, a.sel + r * Tc, Tc), n = key_rows(rows, t, &z, ent, ne, 0, T);
                for (int h = 0; h < z.H; h++) {
                    const float *Prow = a.P + (((size_t)b * z.H + h) * T + t) * NK;
                    for (int k = 0; k < n; k++) pbuf[(size_t)h * n + k] = Prow[rows[k]];
                    if (a.psink) sbuf[h] = a.psink[((size_t)b * z.H + h) * T + t];
                }
                AttnKeys ks = {.k = a.KV + (size_t)b * NK * z.dh, .v = a.KV + (size_t)b * NK * z.dh,
                               .k_stride = (size_t)z.dh, .k_head = (size_t)z.dh, .v_stride = (size_t)z.dh,
                               .v_head = (size_t)z.dh};
                attn_keys_list(&ks, rows, n);
                attn_query_backward(dq + r * qd, dK + (size_t)b * NK * z.dh, dV + (size_t)b * NK * z.dh,
                                    dsink_b ? dsink_b + (size_t)b * z.H : NULL, d_o + r * qd, pbuf, (size_t)n, sbuf,
                                    a.q + r * qd, &ks, &heads, 0, 1, scratch);
            }
        free(rows);
        free(pbuf);
    }
    if (dsink_b) {
        for (int b = 0; b < B; b++)
            for (int h = 0; h < z.H; h++) dw.p[P_SINK][h] += dsink_b[(size_t)b * z.H + h];
        free(dsink_b);
    }
    // K = V: one tensor, so its gradient is the sum of both roles
    for (size_t i = 0; i < nkv; i++) dK[i] += dV[i];

    // the compressed entries, back through the compressor
    if (z.m > 0 && Tc > 0) {
        Compressor cp = main_compressor(&z, &w);
        int cd = z.c * z.dh;
        float *dE = mallocCheck(sizeof(float) * (size_t)B * Tc * z.dh);
        for (int b = 0; b < B; b++)
            memcpy(dE + (size_t)b * Tc * z.dh, dK + ((size_t)b * NK + T) * z.dh, sizeof(float) * (size_t)Tc * z.dh);
        float *dC = callocCheck((size_t)N * 2 * cd, sizeof(float)), *dZ = dC + (size_t)N * cd;
        comp_backward(dC, dZ, dw.p[P_C_NORM], dw.p[P_C_APE], dE, a.C, a.Eraw, a.Wt, a.rstd_e, &cp, B, T, z.theta);
        linear_backward(dx, dw.p[P_C_WKV], NULL, dC, x, w.p[P_C_WKV], N, z.d, cd);
        linear_backward(dx, dw.p[P_C_WGATE], NULL, dZ, x, w.p[P_C_WGATE], N, z.d, cd);
        free(dE);
        free(dC);
    }
    // the raw entries: RoPE back, kv_norm, Wkv
    float *dkv = mallocCheck(sizeof(float) * (size_t)N * z.dh * 2), *dkvraw = dkv + (size_t)N * z.dh;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *g = dkv + ((size_t)b * T + t) * z.dh;
            memcpy(g, dK + ((size_t)b * NK + t) * z.dh, sizeof(float) * (size_t)z.dh);
            rope_tail(g, z.dh, z.rd, t, z.theta, 1);
        }
    memset(dkvraw, 0, sizeof(float) * (size_t)N * z.dh);
    rmsnorm_backward(dkvraw, dw.p[P_KV_NORM], dkv, a.kvraw, w.p[P_KV_NORM], a.rstd_kv, N, z.dh);
    linear_backward(dx, dw.p[P_WKV], NULL, dkvraw, x, w.p[P_WKV], N, z.d, z.dh);
    free(dkv);
    // the queries: RoPE back, the per-head normalisation, Wq
    for (int r = 0; r < N; r++)
        for (int h = 0; h < z.H; h++) rope_tail(dq + (size_t)r * qd + (size_t)h * z.dh, z.dh, z.rd, r % T, z.theta, 1);
    float *dqraw = callocCheck((size_t)N * qd, sizeof(float));
    rmsnorm_backward(dqraw, NULL, dq, a.qraw, unit_gain(), a.rstd_q, N * z.H, z.dh);
    linear_backward(dx, dw.p[P_WQ], NULL, dqraw, x, w.p[P_WQ], N, z.d, qd);
    free(dqraw);
    free(d_o);
    // CSA: the indexer's own loss
    if (z.kind == V4_CSA && dsa_kl_coef() != 0.0f && Tc > 0) index_kl_backward(&dw, &a, &w, x, &z, B, T, dsa_kl_coef());
}

// ---- decode -----------------------------------------------------------------------------------------

// One compressor's decode state, as V4's reference keeps it: rows 0..m-1 the previous group (c = 2),
// rows (c-1)m .. cm-1 the group being filled; C and Z (c*e wide each row).
typedef struct {
    float *C, *Z;
} CompState;

struct MixerCache {
    Dims z;
    int max_T, n, n_ent, cap_e, ring;   // tokens seen, entries completed, entry rows, raw rows (min(W, max_T))
    float *kv;                          // (ring + cap_e, dh): the raw ring (position p in row p % W), then entries
    float *ik;                          // (cap_e, di) indexer keys (CSA)
    CompState st, ist;                  // the compressors' state (main; the indexer's)
    // one step's scratch
    float *q, *o, *kvraw, *crow, *zrow, *eraw, *iq, *iw, *score, *attn;
    int *rows, *ent, *work;
};

static MixerCache *v4_cache_new(const Mixer *m, int max_T) {
    Dims z = dims_of(m->g, m->layer);
    CHECK(max_T > 0, "%s: cache for %d tokens", m->ops->name, max_T);
    MixerCache *c = callocCheck(1, sizeof *c);
    c->z = z;
    c->max_T = max_T;
    c->cap_e = z.m > 0 ? max_T / z.m : 0;
    c->ring = z.W < max_T ? z.W : max_T;
    size_t qd = (size_t)z.H * z.dh, cd = (size_t)z.c * z.dh, cm = (size_t)z.c * (z.m > 0 ? z.m : 0);
    c->kv = callocCheck((size_t)(z.W + c->cap_e) * z.dh, sizeof(float));
    if (z.m > 0) {
        c->st.C = callocCheck(2 * cm * cd, sizeof(float));
        c->st.Z = c->st.C + cm * cd;
    }
    if (z.kind == V4_CSA) {
        c->ik = callocCheck((size_t)c->cap_e * z.di, sizeof(float));
        c->ist.C = callocCheck(2 * (2 * (size_t)z.m) * (2 * (size_t)z.di), sizeof(float));
        c->ist.Z = c->ist.C + (2 * (size_t)z.m) * (2 * (size_t)z.di);
    }
    AttnHeads heads = heads_of(&z, NULL);
    int nk = z.W + c->cap_e;
    size_t wide = cd > 2 * (size_t)z.di ? cd : 2 * (size_t)z.di;
    c->q = callocCheck(2 * qd + z.dh + 2 * wide + (size_t)(z.dh > z.di ? z.dh : z.di) + (size_t)z.Hi * z.di + z.Hi +
                           (size_t)c->cap_e + attn_scratch_floats(&heads, nk),
                       sizeof(float));
    c->o = c->q + qd;
    c->kvraw = c->o + qd;
    c->crow = c->kvraw + z.dh;
    c->zrow = c->crow + wide;
    c->eraw = c->zrow + wide;
    c->iq = c->eraw + (z.dh > z.di ? z.dh : z.di);
    c->iw = c->iq + (size_t)z.Hi * z.di;
    c->score = c->iw + z.Hi;
    c->attn = c->score + c->cap_e;
    c->rows = mallocCheck(sizeof(int) * (size_t)(nk + 2 * c->cap_e + 2));
    c->ent = c->rows + nk;
    c->work = c->ent + c->cap_e + 1;
    return c;
}

static void v4_cache_free(MixerCache *c) {
    if (!c) return;
    free(c->kv);
    free(c->ik);
    free(c->st.C);
    free(c->ist.C);
    free(c->q);
    free(c->rows);
    free(c);
}

// Raw entries held (min(n, W)) and completed entries, fp32, plus the compressors' fixed state:
// kvcache_layer_elems * 4 + this layer's share of kvcache_compressor_bytes.
static size_t v4_cache_bytes(const MixerCache *c) {
    const Dims *z = &c->z;
    size_t held = (size_t)(c->n < z->W ? c->n : z->W);
    size_t elems = held * z->dh + (size_t)c->n_ent * (z->dh + (z->kind == V4_CSA ? z->di : 0));
    if (z->m > 0) elems += 2 * ((size_t)z->c * z->m) * ((size_t)z->c * z->dh);
    if (z->kind == V4_CSA) elems += 2 * (2 * (size_t)z->m) * (2 * (size_t)z->di);
    return sizeof(float) * elems;
}

int compressed_cache_position(const MixerCache *c) { return c->n; }
int compressed_cache_entries(const MixerCache *c) { return c->n_ent; }

// One token into a compressor's state at position t; when it completes a group, the finished entry goes
// to out (e) and 1 is returned. crow, zrow: the token's projections (c*e); eraw (e) scratch.
static int comp_step(float *out, CompState *st, const float *crow, const float *zrow, float *eraw, const Compressor *cp,
                     int t, int n_ent, double theta) {
    // EXERCISE ex11.2 begin: token t's C, Z into its slot of the group being filled; on its last token, entry n_ent
    // EXERCISE ex11.2 stub: (void)out; (void)st; (void)crow; (void)zrow; (void)eraw; (void)cp;
    // EXERCISE ex11.2 stub: (void)t; (void)n_ent; (void)theta; return 0;
    int m = cp->m, w = cp->c * cp->e, slot = (cp->c - 1) * m + t % m;
    memcpy(st->C + (size_t)slot * w, crow, sizeof(float) * (size_t)w);
    memcpy(st->Z + (size_t)slot * w, zrow, sizeof(float) * (size_t)w);
    if ((t + 1) % m) return 0;
    const float *Cc = st->C + (size_t)(cp->c - 1) * m * w, *Zc = st->Z + (size_t)(cp->c - 1) * m * w;
    int prev = cp->c == 2 && n_ent > 0;
    comp_entry(eraw, NULL, prev ? st->C : NULL, prev ? st->Z : NULL, Cc, Zc, (size_t)w, cp);
    comp_finish(out, NULL, eraw, cp, n_ent * m, theta);
    if (cp->c == 2) {   // this group becomes the next entry's previous group
        memcpy(st->C, Cc, sizeof(float) * (size_t)m * w);
        memcpy(st->Z, Zc, sizeof(float) * (size_t)m * w);
    }
    return 1;
    // EXERCISE ex11.2 end
}

static void v4_decode(const Mixer *m, MixerCache *c, float *out, const float *x, const float *params) {
    const Dims z = c->z;
    CHECK(c->n < c->max_T, "%s decode: cache is full (%d tokens)", m->ops->name, c->max_T);
    Weights w = weights_at(&z, (float *)params);
    int t = c->n, qd = z.H * z.dh;
    // the query, and this token's raw entry into its ring row
    linear_forward(c->q, x, w.p[P_WQ], NULL, 1, z.d, qd);
    rmsnorm_forward(c->q, NULL, c->q, unit_gain(), z.H, z.dh, V4_NORM_EPS);
    for (int h = 0; h < z.H; h++) rope_tail(c->q + (size_t)h * z.dh, z.dh, z.rd, t, z.theta, 0);
    float *kvrow = c->kv + (size_t)(t % z.W) * z.dh;
    linear_forward(c->kvraw, x, w.p[P_WKV], NULL, 1, z.d, z.dh);
    rmsnorm_forward(kvrow, NULL, c->kvraw, w.p[P_KV_NORM], 1, z.dh, V4_NORM_EPS);
    rope_tail(kvrow, z.dh, z.rd, t, z.theta, 0);
    // the compressors: this token waits in their state until its group completes
    int done = 0;
    if (z.m > 0) {
        Compressor cp = main_compressor(&z, &w);
        comp_project(c->crow, c->zrow, x, &cp, z.d, 1, 1, t);
        done = comp_step(c->kv + (size_t)(z.W + c->n_ent) * z.dh, &c->st, c->crow, c->zrow, c->eraw, &cp, t, c->n_ent,
                         z.theta);
    }
    if (z.kind == V4_CSA) {
        Compressor ic = index_compressor(&z, &w);
        comp_project(c->crow, c->zrow, x, &ic, z.d, 1, 1, t);
        comp_step(c->ik + (size_t)c->n_ent * z.di, &c->ist, c->crow, c->zrow, c->eraw, &ic, t, c->n_ent, z.theta);
        linear_forward(c->iq, x, w.p[P_I_WQ], NULL, 1, z.d, z.Hi * z.di);
        linear_forward(c->iw, x, w.p[P_I_WPROJ], NULL, 1, z.d, z.Hi);
        float ws = 1.0f / sqrtf((float)z.Hi) / sqrtf((float)z.di);
        for (int h = 0; h < z.Hi; h++) {
            c->iw[h] *= ws;
            rope_tail(c->iq + (size_t)h * z.di, z.di, z.ri, t, z.theta, 0);
        }
    }
    c->n_ent += done;
    c->n++;
    // the indexer scores every completed entry (O(entries * Hi * di)); the selector keeps k of them
    if (z.kind == V4_CSA && dsa_phase() == DSA_SPARSE && z.topk < c->n_ent)
        for (int s = 0; s < c->n_ent; s++)
            c->score[s] = dsa_index_score(c->iq, c->iw, c->ik + (size_t)s * z.di, z.Hi, z.di);
    int ne = attended_entries(c->ent, c->work, c->score, t, &z);
    int n = key_rows(c->rows, t, &z, c->ent, ne, 1, z.W);
    AttnHeads heads = heads_of(&z, w.p[P_SINK]);
    AttnKeys ks = {.k = c->kv, .v = c->kv, .k_stride = (size_t)z.dh, .k_head = (size_t)z.dh, .v_stride = (size_t)z.dh,
                   .v_head = (size_t)z.dh};
    attn_keys_list(&ks, c->rows, n);
    attn_query(c->o, NULL, 0, NULL, c->q, &ks, &heads, 0, 1, c->attn);
    for (int h = 0; h < z.H; h++) rope_tail(c->o + (size_t)h * z.dh, z.dh, z.rd, t, z.theta, 1);
    linear_forward(out, c->o, w.p[P_WO], NULL, 1, qd, z.d);
}

// ---- what the chapter draws --------------------------------------------------------------------------

static int v4_n_mix_heads(const ModelGeometry *g, int layer) {
    (void)layer;
    return g->n_heads;
}

// How much token j reaches query i in head h: its raw entry's weight, plus, for every entry read, that
// entry's weight times token j's compressor weight averaged over the channels (the compressor mixes
// each channel with its own weights, so this is a summary; the RMSNorm after it is not linear either).
static void v4_mixing_matrix(const Mixer *m, float *A, const float *act, const float *params, int T) {
    (void)params;
    Dims z = dims_of(m->g, m->layer);
    int Tc = n_entries(&z, T), NK = T + Tc;
    float *P = mallocCheck(sizeof(float) * (size_t)z.H * T * NK), *share = mallocCheck(sizeof(float) * ((size_t)Tc * T + 1));
    compressed_attention(m, P, NULL, act, 1, T);
    if (Tc) compressed_entry_share(m, share, act, 1, T);
    for (int h = 0; h < z.H; h++)
        for (int i = 0; i < T; i++) {
            const float *p = P + ((size_t)h * T + i) * NK;
            float *a = A + ((size_t)h * T + i) * T;
            memcpy(a, p, sizeof(float) * (size_t)T);
            for (int s = 0; s < Tc; s++)
                if (p[T + s] != 0.0f)
                    for (int j = 0; j < T; j++) a[j] += p[T + s] * share[(size_t)s * T + j];
        }
    free(P);
    free(share);
}

int compressed_n_keys(const Mixer *m, int T) {
    Dims z = dims_of(m->g, m->layer);
    return T + n_entries(&z, T);
}

void compressed_attention(const Mixer *m, float *P, float *psink, const float *act, int B, int T) {
    Dims z = dims_of(m->g, m->layer);
    Act a;
    act_carve(&a, (float *)act, &z, B, T);
    memcpy(P, a.P, sizeof(float) * (size_t)z.H * T * (T + n_entries(&z, T)));   // batch 0 leads
    if (psink) {
        if (a.psink) memcpy(psink, a.psink, sizeof(float) * (size_t)z.H * T);
        else memset(psink, 0, sizeof(float) * (size_t)z.H * T);
    }
}

void compressed_selected(const Mixer *m, unsigned char *sel, const float *act, int B, int T) {
    Dims z = dims_of(m->g, m->layer);
    Act a;
    act_carve(&a, (float *)act, &z, B, T);
    memcpy(sel, a.sel, (size_t)B * T * n_entries(&z, T));
}

void compressed_entry_share(const Mixer *m, float *share, const float *act, int B, int T) {
    Dims z = dims_of(m->g, m->layer);
    CHECK(z.m > 0, "compressed_entry_share: layer %d is window-only", m->layer);
    Act a;
    act_carve(&a, (float *)act, &z, B, T);
    int Tc = n_entries(&z, T);
    memset(share, 0, sizeof(float) * (size_t)Tc * T);
    for (int s = 0; s < Tc; s++)
        for (int part = 0; part < z.c; part++) {
            int group = z.c == 2 && part == 0 ? s - 1 : s;
            if (group < 0) continue;
            for (int t = 0; t < z.m; t++) {
                const float *p = a.Wt + ((size_t)s * z.c * z.m + (size_t)part * z.m + t) * z.dh;
                double mean = 0.0;
                for (int j = 0; j < z.dh; j++) mean += p[j];
                share[(size_t)s * T + group * z.m + t] = (float)(mean / z.dh);
            }
        }
}

void compressed_index_scores(const Mixer *m, float *I, const float *act, int B, int T) {
    Dims z = dims_of(m->g, m->layer);
    CHECK(z.kind == V4_CSA, "compressed_index_scores: layer %d has no indexer", m->layer);
    Act a;
    act_carve(&a, (float *)act, &z, B, T);
    memcpy(I, a.I, sizeof(float) * (size_t)T * n_entries(&z, T));
}

// ---- benchmarks ---------------------------------------------------------------------------------------

void compressed_cache_fill_random(MixerCache *c, int n_tokens, Rng *rng) {
    const Dims *z = &c->z;
    CHECK(n_tokens >= 0 && c->n + n_tokens <= c->max_T, "compressed_cache_fill_random: %d more tokens exceed %d",
          n_tokens, c->max_T);
    int n = c->n + n_tokens, ent = z->m > 0 ? n / z->m : 0;
    rng_fill_normal(rng, c->kv, (long)(z->W + ent) * z->dh, 1.0f);
    // indexer keys signed like real ones, so the ReLU branches as it would
    if (c->ik) rng_fill_normal(rng, c->ik, (long)ent * z->di, 1.0f);
    if (c->st.C) rng_fill_normal(rng, c->st.C, 2L * z->c * z->m * z->c * z->dh, 1.0f);
    if (c->ist.C) rng_fill_normal(rng, c->ist.C, 2L * 2 * z->m * 2 * z->di, 1.0f);
    c->n = n;
    c->n_ent = ent;
}

double compressed_decode_seconds_per_token(const ModelGeometry *g, int layer, const float *params, int context, int reps,
                                           int threads) {
    CHECK(context >= 0 && reps > 0 && threads > 0, "compressed timing: context %d, reps %d, threads %d", context, reps,
          threads);
    Mixer m = {.ops = v4_mixer_of(g, layer), .g = g, .layer = layer};
    MixerCache *c = v4_cache_new(&m, context + 1);
    Rng rng;
    rng_seed(&rng, 7);
    compressed_cache_fill_random(c, context, &rng);
    float *x = mallocCheck(sizeof(float) * 2 * (size_t)g->d_model), *out = x + g->d_model;
    rng_fill_normal(&rng, x, g->d_model, 1.0f);
    // each timed step is the token at position `context`; its state change is undone after it
    size_t st_n = c->st.C ? 2 * (size_t)c->z.c * c->z.m * c->z.c * c->z.dh : 0;
    size_t ist_n = c->ist.C ? 2 * 2 * (size_t)c->z.m * 2 * c->z.di : 0;
    float *saved = mallocCheck(sizeof(float) * (st_n + ist_n + 1));
    if (st_n) memcpy(saved, c->st.C, sizeof(float) * st_n);
    if (ist_n) memcpy(saved + st_n, c->ist.C, sizeof(float) * ist_n);
    int n0 = c->n, e0 = c->n_ent;
    DsaPhase phase = dsa_phase();
    dsa_set_phase(DSA_SPARSE);
    int keep = omp_get_max_threads();
    omp_set_num_threads(threads);
    double total = 0.0;
    for (int r = -1; r < reps; r++) {   // r = -1: warm-up
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        v4_decode(&m, c, out, x, params);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (r >= 0) total += (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        c->n = n0;
        c->n_ent = e0;
        if (st_n) memcpy(c->st.C, saved, sizeof(float) * st_n);
        if (ist_n) memcpy(c->ist.C, saved + st_n, sizeof(float) * ist_n);
    }
    omp_set_num_threads(keep);
    dsa_set_phase(phase);
    free(saved);
    free(x);
    v4_cache_free(c);
    return total / reps;
}

// ---- geometry helpers -----------------------------------------------------------------------------------

void v4_geometry_tiny(ModelGeometry *g, int n_layers, int d_model, int n_heads, int head_dim, int window) {
    geometry_init(g, "tiny-v4", n_layers, d_model, n_heads, 1);
    g->head_dim = head_dim;
    g->kv_one_tensor = 1;
    g->partial_rotary_factor = 0.25;
    g->sliding_window = window;
    g->attention_sinks = SINKS_FULL | SINKS_SLIDING;
    g->dtype_bytes = 4;
    for (int l = 0; l < n_layers; l++) v4_set_layer(g, l, 0, 0);
}

void v4_set_layer(ModelGeometry *g, int l, int m, int csa) {
    CHECK(l >= 0 && l < g->n_layers && m >= 0 && m <= 65535, "v4_set_layer: layer %d, ratio %d", l, m);
    g->layer_kind[l] = m > 0 ? LAYER_COMPRESSED : LAYER_LOCAL;
    g->compress_ratios[l] = (unsigned short)m;
    g->indexer_types[l] = m > 0 && csa ? INDEXER_FULL : INDEXER_NONE;
}

const MixerOps *v4_mixer_of(const ModelGeometry *g, int l) {
    int k = layer_kind_of(g, l);
    return k == V4_CSA ? &csa_mixer : k == V4_HCA ? &hca_mixer : &v4swa_mixer;
}

#define V4_OPS(NAME, VALIDATE, PT)                                                                                      \
    {.name = NAME, .validate = VALIDATE, .param_tensors = PT, .init = v4_init, .act_floats = v4_act_floats, .forward = v4_forward,             \
     .backward = v4_backward, .cache_new = v4_cache_new, .cache_free = v4_cache_free, .cache_bytes = v4_cache_bytes,    \
     .decode = v4_decode, .n_mix_heads = v4_n_mix_heads, .mixing_matrix = v4_mixing_matrix}

const MixerOps csa_mixer = V4_OPS("csa", csa_validate, csa_param_tensors);
const MixerOps hca_mixer = V4_OPS("hca", hca_validate, hca_param_tensors);
const MixerOps v4swa_mixer = V4_OPS("v4swa", v4swa_validate, v4swa_param_tensors);
