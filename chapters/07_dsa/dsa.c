// dsa.c: DeepSeek Sparse Attention (DeepSeek-V3.2): the lightning indexer, the top-k selector, MLA
// attending to the selected keys only, the indexer's KL loss, and a decode step that keeps the
// indexer keys beside MLA's cache.
//
// Dims: d = d_model, H heads, qr = q_lora_rank, dc = kv_lora_rank, dn = qk_nope_head_dim,
// dr = qk_rope_head_dim, dv = v_head_dim, dqk = dn + dr, dkv = dn + dv (one head's rows of wkv_b);
// indexer: Hi = index_n_heads, di = index_head_dim, ri = its rotated dims, topk = index_topk.
// N = B*T rows; row r is the token at position r % T.
//
// The MLA part IS chapter 5's mla.c: its forward in two halves (project, then attend over the keys a
// mask selects), its backward with the same mask, and its decode in two halves (append, then attend
// over a list of cache slots). So with every key selected DSA and MLA agree to the last bit, and DSA
// adds only the indexer, the selector and the indexer's loss.
#include "07_dsa/dsa.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "03_mha/mha.h"   // mha_layer_window, mha_layer_rope_theta
#include "05_mla/mla.h"   // mla_mixer (parameters and init), mla_geometry_tiny
#include "attention.h"
#include "check.h"
#include "mathx.h"

static DsaPhase g_phase = DSA_SPARSE;
static float g_kl_coef = 1.0f;

void dsa_set_phase(DsaPhase phase) { g_phase = phase; }
DsaPhase dsa_phase(void) { return g_phase; }
void dsa_set_kl_coef(float coef) { g_kl_coef = coef; }
float dsa_kl_coef(void) { return g_kl_coef; }

typedef struct { int d, H, qr, dc, dn, dr, dv, dqk, dkv, Hi, di, ri, topk; } Dims;

static Dims dims_of(const ModelGeometry *g, int layer) {
    CHECK(g->attn == ATTN_MLA, "dsa: geometry '%s' is not MLA", g->name);
    CHECK(g->index_n_heads > 0 && g->index_head_dim > 0 && g->index_topk > 0,
          "dsa: geometry '%s' has no indexer (index_n_heads %d, index_head_dim %d, index_topk %d)", g->name,
          g->index_n_heads, g->index_head_dim, g->index_topk);
    CHECK(mha_layer_window(g, layer) == 0, "dsa: layer %d is a sliding-window layer; DSA layers are global", layer);
    Dims z = {.d = g->d_model, .H = g->n_heads, .qr = g->q_lora_rank, .dc = g->kv_lora_rank,
              .dn = g->qk_nope_head_dim, .dr = g->qk_rope_head_dim, .dv = g->v_head_dim,
              .Hi = g->index_n_heads, .di = g->index_head_dim, .topk = g->index_topk};
    z.dqk = z.dn + z.dr;
    z.dkv = z.dn + z.dv;
    z.ri = z.dr < z.di ? z.dr : z.di & ~1;   // DeepSeek rotates qk_rope_head_dim of the indexer's dims
    CHECK(z.d > 0 && z.H > 0 && z.dc > 0 && z.dv > 0 && z.dqk > 0 && z.dr % 2 == 0,
          "dsa: impossible MLA geometry d %d H %d dc %d dn %d dr %d dv %d", z.d, z.H, z.dc, z.dn, z.dr, z.dv);
    return z;
}

// ---- parameters: MLA's tensors, then the indexer's ---------------------------------------------------

enum { IX_WQ, IX_WK, IX_KNORM, IX_KBIAS, IX_WPROJ, N_IX };

static int dsa_param_tensors(const ModelGeometry *g, int layer, ParamTensor *out, int cap) {
    Dims z = dims_of(g, layer);
    int n = mla_mixer.param_tensors(g, layer, out, cap);
    CHECK(n + N_IX <= cap, "dsa: %d parameter tensors do not fit in %d", n + N_IX, cap);
    size_t off = mixer_n_params(&mla_mixer, g, layer);
    int q_in = z.qr > 0 ? z.qr : z.d;
    struct { const char *name; int ndim; int64_t s0, s1; } t[N_IX] = {
        [IX_WQ] = {z.qr > 0 ? "indexer.wq_b" : "indexer.wq", 2, (int64_t)z.Hi * z.di, q_in},
        [IX_WK] = {"indexer.wk", 2, z.di, z.d},
        [IX_KNORM] = {"indexer.k_norm", 1, z.di, 1},
        [IX_KBIAS] = {"indexer.k_norm_bias", 1, z.di, 1},
        [IX_WPROJ] = {"indexer.weights_proj", 2, z.Hi, z.d},
    };
    for (int i = 0; i < N_IX; i++) {
        ParamTensor *p = &out[n++];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%s", t[i].name);
        p->ndim = t[i].ndim;
        p->shape[0] = t[i].s0;
        if (t[i].ndim == 2) p->shape[1] = t[i].s1;
        p->offset = off;
        off += (size_t)(t[i].s0 * t[i].s1);
    }
    return n;
}

// The weights as pointers into a parameter (or gradient) slice; NULL where this geometry has none.
typedef struct {
    MlaWeights mla;  // chapter 5's MLA weights (05_mla/mla.h)
    float *iwq;      // (Hi*di, qr or d) indexer queries
    float *iwk;      // (di, d) the shared indexer key
    float *ik_norm;  // (di) its LayerNorm gain
    float *ik_bias;  // (di) and bias
    float *iproj;    // (Hi, d) per-token head weights
} DsaWeights;

static DsaWeights weights_at(const ModelGeometry *g, int layer, float *params) {
    ParamTensor t[24];
    int n = dsa_param_tensors(g, layer, t, 24);
    DsaWeights w;
    memset(&w, 0, sizeof w);
    const struct { const char *name; float **p; } map[] = {
        {"wq", &w.mla.wq}, {"wq_a", &w.mla.wq_a}, {"q_norm", &w.mla.q_norm}, {"wq_b", &w.mla.wq_b},
        {"wkv_a", &w.mla.wkv_a}, {"kv_norm", &w.mla.kv_norm}, {"wkv_b", &w.mla.wkv_b}, {"wo", &w.mla.wo},
        {"indexer.wq_b", &w.iwq},
        {"indexer.wq", &w.iwq}, {"indexer.wk", &w.iwk}, {"indexer.k_norm", &w.ik_norm},
        {"indexer.k_norm_bias", &w.ik_bias}, {"indexer.weights_proj", &w.iproj},
    };
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
            if (strcmp(t[i].name, map[k].name) == 0) *map[k].p = params + t[i].offset;
    CHECK(w.mla.wkv_a && w.mla.wkv_b && w.mla.wo && w.iwq && w.iproj, "dsa: parameter tensors missing");
    return w;
}

static void dsa_init(const Mixer *m, float *params, Rng *rng) {
    Dims z = dims_of(m->g, m->layer);
    mla_mixer.init(m, params, rng);   // the MLA slice leads: same init as chapter 5
    DsaWeights w = weights_at(m->g, m->layer, params);
    int q_in = z.qr > 0 ? z.qr : z.d;
    rng_fill_normal(rng, w.iwq, (long)z.Hi * z.di * q_in, 0.02f);
    rng_fill_normal(rng, w.iwk, (long)z.di * z.d, 0.02f);
    rng_fill_normal(rng, w.iproj, (long)z.Hi * z.d, 0.02f);
    for (int i = 0; i < z.di; i++) {
        w.ik_norm[i] = 1.0f;
        w.ik_bias[i] = 0.0f;
    }
}

// ---- pieces shared by forward and decode -----------------------------------------------------------

// The indexer's projections of N rows: iq (N, Hi*di) from q_in (c_q, or x without a query low-rank),
// ik_raw (N,di) = x Wk^T, ik (N,di) = LayerNorm(ik_raw) (mean, rstd (N) may be NULL), iw (N,Hi) the
// scaled head weights. Then RoPE on the first ri dims of every query head and of the key, row r at
// position pos0 + r % T.
static void index_forward(float *iq, float *ik, float *ik_raw, float *mean, float *rstd, float *iw,
                          const float *x, const float *q_in, const DsaWeights *w, const Dims *z, int N, int T,
                          int pos0, double theta) {
    linear_forward(iq, q_in, w->iwq, NULL, N, z->qr > 0 ? z->qr : z->d, z->Hi * z->di);
    linear_forward(ik_raw, x, w->iwk, NULL, N, z->d, z->di);
    layernorm_forward(ik, mean, rstd, ik_raw, w->ik_norm, w->ik_bias, N, z->di, DSA_LN_EPS);
    linear_forward(iw, x, w->iproj, NULL, N, z->d, z->Hi);
    float ws = 1.0f / sqrtf((float)z->Hi) / sqrtf((float)z->di);   // Hi^-0.5 * di^-0.5
    for (long i = 0; i < (long)N * z->Hi; i++) iw[i] *= ws;
    for (int r = 0; r < N; r++) {
        int pos = pos0 + r % T;
        for (int h = 0; h < z->Hi; h++)
            rope_apply(iq + ((size_t)r * z->Hi + h) * z->di, pos, z->ri, theta, ROPE_INTERLEAVED, 0);
        rope_apply(ik + (size_t)r * z->di, pos, z->ri, theta, ROPE_INTERLEAVED, 0);
    }
}

// I_{t,s} = sum_h w_{t,h} ReLU(q^I_{t,h} . k^I_s) for one query (iq: Hi*di, iw: Hi) and one key (di).
static float index_score(const float *iq, const float *iw, const float *k, const Dims *z) {
    float acc = 0.0f;
    for (int h = 0; h < z->Hi; h++) {
        float s = dot_f32(iq + (size_t)h * z->di, k, z->di);
        if (s > 0.0f) acc += iw[h] * s;
    }
    return acc;
}

// ---- the selector ----------------------------------------------------------------------------------

// Key a ranks before key b: a larger score, or the same score and a lower index (a strict total order,
// so the top-k set is unique whatever algorithm finds it). A NaN score (weights that overflow float32)
// ranks below every number, so the order stays total and the selection never fails.
static int ranks_before(const float *s, int a, int b) {
    float x = isnan(s[a]) ? -INFINITY : s[a], y = isnan(s[b]) ? -INFINITY : s[b];
    return x > y || (x == y && a < b);
}

int dsa_select_topk(int *sel, int *work, const float *scores, int n, int topk) {
    CHECK(n > 0 && topk > 0, "dsa_select_topk: n %d, topk %d", n, topk);
    int k = topk < n ? topk : n;
    if (k == n) {
        for (int j = 0; j < n; j++) sel[j] = j;
        return n;
    }
    // Quickselect (Hoare/Wirth, median-of-three pivot): afterwards work[k-1] is the k-th best key and
    // work[0..k-1] are the k best, in no particular order.
    for (int j = 0; j < n; j++) work[j] = j;
    int lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        int a = work[lo], b = work[lo + (hi - lo) / 2], c = work[hi], pivot;
        if (ranks_before(scores, a, b))
            pivot = ranks_before(scores, b, c) ? b : ranks_before(scores, a, c) ? c : a;
        else
            pivot = ranks_before(scores, a, c) ? a : ranks_before(scores, b, c) ? c : b;
        int i = lo, j = hi;
        while (i <= j) {
            while (ranks_before(scores, work[i], pivot)) i++;
            while (ranks_before(scores, pivot, work[j])) j--;
            if (i <= j) {
                int tmp = work[i];
                work[i++] = work[j];
                work[j--] = tmp;
            }
        }
        if (j < want) lo = i;
        if (want < i) hi = j;
    }
    // one pass in index order lists the k best ascending: those ranking at or before the k-th
    int kth = work[want], m = 0;
    for (int j = 0; j < n; j++)
        if (j == kth || ranks_before(scores, j, kth)) sel[m++] = j;
    CHECK(m == k, "dsa_select_topk: selected %d of %d", m, k);
    return k;
}

// The keys query t attends to in this phase, ascending, into keys; returns how many. scores: its
// indexer scores I_{t,0..t}.
static int attended_keys(int *keys, int *work, const float *scores, int t, const Dims *z, DsaPhase phase) {
    int n = t + 1, k = z->topk < n ? z->topk : n;
    if (phase == DSA_DENSE) {
        for (int j = 0; j < n; j++) keys[j] = j;
        return n;
    }
    if (phase == DSA_WINDOW) {
        for (int i = 0; i < k; i++) keys[i] = n - k + i;
        return k;
    }
    return dsa_select_topk(keys, work, scores, n, z->topk);
}

// ---- activations saved by forward -----------------------------------------------------------------

// MLA's activations lead (with its P (B,H,T,T) at offset 0, which mixing_matrix and the chapter read),
// then the indexer's.
typedef struct {
    float *mla;        // mla_mixer.act_floats(B,T) floats: chapter 5's saved forward, P first
    float *P;          // = mla: (B,H,T,T) main attention weights, exactly 0 outside the attended set
    float *I;          // (B,T,T) indexer scores, 0 above the diagonal
    unsigned char *att;// (B,T,T) 1 where query t attended to key s, else 0 (bytes carved from floats)
    float *iq;         // (N,Hi*di) indexer queries, rotated
    float *ik_raw;     // (N,di) indexer key before LayerNorm
    float *ik_mean, *ik_rstd;   // (N)
    float *ik;         // (N,di) indexer key after LayerNorm and RoPE: what decode caches
    float *iw;         // (N,Hi) indexer head weights, scaled
} DsaAct;

static float *take(float *base, size_t *used, size_t n) {
    float *p = base ? base + *used : NULL;
    *used += n;
    return p;
}

static size_t act_carve(DsaAct *a, float *act, const ModelGeometry *g, int layer, const Dims *z, int B, int T) {
    size_t N = (size_t)B * T, TT = (size_t)B * T * T, used = 0;
    a->mla = take(act, &used, mla_mixer.act_floats(g, layer, B, T));
    a->P = a->mla;
    a->I = take(act, &used, TT);
    a->att = (unsigned char *)take(act, &used, (TT + sizeof(float) - 1) / sizeof(float));
    a->iq = take(act, &used, N * z->Hi * z->di);
    a->ik_raw = take(act, &used, N * z->di);
    a->ik_mean = take(act, &used, N);
    a->ik_rstd = take(act, &used, N);
    a->ik = take(act, &used, N * z->di);
    a->iw = take(act, &used, N * z->Hi);
    return used;
}

static size_t dsa_act_floats(const ModelGeometry *g, int layer, int B, int T) {
    Dims z = dims_of(g, layer);
    DsaAct a;
    return act_carve(&a, NULL, g, layer, &z, B, T);
}

// The keys marked in one row of the attended mask (T bytes), ascending; returns the count.
static int keys_of_row(int *keys, const unsigned char *row, int T) {
    int n = 0;
    for (int j = 0; j < T; j++)
        if (row[j]) keys[n++] = j;
    return n;
}

// ---- forward --------------------------------------------------------------------------------------

static void dsa_forward(const Mixer *m, float *out, float *act, const float *x, const float *params, int B,
                        int T) {
    const ModelGeometry *g = m->g;
    Dims z = dims_of(g, m->layer);
    int N = B * T;
    double theta = mha_layer_rope_theta(g, m->layer);
    DsaWeights w = weights_at(g, m->layer, (float *)params);   // read only
    DsaAct a;
    act_carve(&a, act, g, m->layer, &z, B, T);
    DsaPhase phase = g_phase;

    // MLA, as chapter 5: queries, the latent and the shared RoPE key, every head's keys and values
    mla_forward_project(m, a.mla, x, params, B, T);

    // the lightning indexer: its projections, then I (B,T,T) and the attended set, one row per query
    const float *q_in = z.qr > 0 ? mla_act_query_latent(m, a.mla, B, T) : x;
    index_forward(a.iq, a.ik, a.ik_raw, a.ik_mean, a.ik_rstd, a.iw, x, q_in, &w, &z, N, T, 0, theta);
    #pragma omp parallel
    {
        int *keys = mallocCheck(sizeof(int) * 2 * (size_t)T), *work = keys + T;
        #pragma omp for schedule(static)
        for (int r = 0; r < N; r++) {
            int b = r / T, t = r % T;
            float *Irow = a.I + (size_t)r * T;
            unsigned char *att = a.att + (size_t)r * T;
            const float *iq = a.iq + (size_t)r * z.Hi * z.di, *iw = a.iw + (size_t)r * z.Hi;
            for (int s = 0; s < T; s++) {
                Irow[s] = s <= t ? index_score(iq, iw, a.ik + ((size_t)b * T + s) * z.di, &z) : 0.0f;
                att[s] = 0;
            }
            int n = attended_keys(keys, work, Irow, t, &z, phase);
            for (int k = 0; k < n; k++) att[keys[k]] = 1;
        }
        free(keys);
    }

    // chapter 5's attention over the attended keys only
    mla_forward_attend(m, out, a.mla, params, B, T, a.att);
}

// ---- the indexer's KL loss ----------------------------------------------------------------------------

// One query's KL(p || q) over its attended keys (n of them): p_k = sum_h P_h(t, keys[k]) / H (each
// head's row sums to 1 over the same set, so the head sum L1-normalises to the mean), q = softmax of
// the indexer scores over the same keys. Writes p and q (n) when not NULL. Double precision.
static double kl_row(float *p_out, float *q_out, const DsaAct *a, const Dims *z, int b, int t, int T,
                     const int *keys, int n) {
    const float *Irow = a->I + ((size_t)b * T + t) * T;
    double mx = -INFINITY, sum = 0.0, kl = 0.0;
    for (int k = 0; k < n; k++) mx = fmax(mx, (double)Irow[keys[k]]);
    for (int k = 0; k < n; k++) sum += exp((double)Irow[keys[k]] - mx);
    double log_sum = log(sum);
    for (int k = 0; k < n; k++) {
        double p = 0.0;
        for (int h = 0; h < z->H; h++) p += a->P[(((size_t)b * z->H + h) * T + t) * T + keys[k]];
        p /= z->H;
        double log_q = (double)Irow[keys[k]] - mx - log_sum;
        if (p > 0.0) kl += p * (log(p) - log_q);
        if (p_out) p_out[k] = (float)p;
        if (q_out) q_out[k] = (float)exp(log_q);
    }
    return kl;
}

double dsa_index_kl(const Mixer *m, const float *act, int B, int T) {
    Dims z = dims_of(m->g, m->layer);
    DsaAct a;
    act_carve(&a, (float *)act, m->g, m->layer, &z, B, T);
    int *keys = mallocCheck(sizeof(int) * (size_t)T);
    double total = 0.0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int n = keys_of_row(keys, a.att + ((size_t)b * T + t) * T, T);
            total += kl_row(NULL, NULL, &a, &z, b, t, T, keys, n);
        }
    free(keys);
    return total / ((double)B * T);
}

// Adds coef * d(mean KL)/d(indexer params) to dw. The indexer's inputs are detached: nothing flows
// into dx or the MLA weights. dI_{t,s} = coef/(B*T) * (q_s - p_s) on the attended keys; then through
// I = sum_h w_h ReLU(q_h . k_s) into the head weights, the queries and the shared keys, the RoPE, the
// LayerNorm and the three projections.
static void index_kl_backward(DsaWeights *dw, const DsaAct *a, const DsaWeights *w, const float *x, const float *q_in, const Dims *z,
                              int B, int T, double theta, float coef) {
    int N = B * T, Hi = z->Hi, di = z->di;
    size_t n_scratch = (size_t)N * T + (size_t)N * Hi * di + 2 * (size_t)N * di + (size_t)N * Hi;
    float *scratch = callocCheck(n_scratch, sizeof(float));
    size_t used = 0;
    float *dI = take(scratch, &used, (size_t)N * T);             // (B,T,T)
    float *diq = take(scratch, &used, (size_t)N * Hi * di);      // (N,Hi*di)
    float *dik = take(scratch, &used, (size_t)N * di);           // (N,di) after LayerNorm and RoPE
    float *dik_raw = take(scratch, &used, (size_t)N * di);       // (N,di) before LayerNorm
    float *diw = take(scratch, &used, (size_t)N * Hi);           // (N,Hi)
    float g_row = coef / (float)N;

    // per query row: dI, and the gradients of its own head weights and queries
    #pragma omp parallel
    {
        int *keys = mallocCheck(sizeof(int) * (size_t)T);
        float *p = mallocCheck(sizeof(float) * 2 * (size_t)T), *q = p + T;
        #pragma omp for schedule(static)
        for (int r = 0; r < N; r++) {
            int b = r / T, t = r % T;
            int n = keys_of_row(keys, a->att + (size_t)r * T, T);
            kl_row(p, q, a, z, b, t, T, keys, n);
            const float *iq = a->iq + (size_t)r * Hi * di, *iw = a->iw + (size_t)r * Hi;
            float *giq = diq + (size_t)r * Hi * di, *giw = diw + (size_t)r * Hi;
            for (int k = 0; k < n; k++) {
                float gI = g_row * (q[k] - p[k]);
                dI[(size_t)r * T + keys[k]] = gI;
                const float *ks = a->ik + ((size_t)b * T + keys[k]) * di;
                for (int h = 0; h < Hi; h++) {
                    float s = dot_f32(iq + (size_t)h * di, ks, di);
                    if (s <= 0.0f) continue;   // ReLU: no gradient where it is off
                    giw[h] += gI * s;
                    float gs = gI * iw[h];
                    for (int c = 0; c < di; c++) giq[(size_t)h * di + c] += gs * ks[c];
                }
            }
        }
        free(keys);
        free(p);
    }
    // per key: the shared key collects from every query that attended to it (t >= s, in order)
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++) {
        int b = r / T, s0 = r % T;
        const float *ks = a->ik + (size_t)r * di;
        float *gk = dik + (size_t)r * di;
        for (int t = s0; t < T; t++) {
            size_t rt = (size_t)b * T + t;
            float gI = dI[rt * T + s0];
            if (gI == 0.0f) continue;
            const float *iq = a->iq + rt * Hi * di, *iw = a->iw + rt * Hi;
            for (int h = 0; h < Hi; h++) {
                const float *qh = iq + (size_t)h * di;
                if (dot_f32(qh, ks, di) <= 0.0f) continue;
                float gs = gI * iw[h];
                for (int c = 0; c < di; c++) gk[c] += gs * qh[c];
            }
        }
    }
    // RoPE's backward is the inverse rotation; then the LayerNorm and the projections (inputs detached)
    for (int r = 0; r < N; r++) {
        for (int h = 0; h < Hi; h++)
            rope_apply(diq + ((size_t)r * Hi + h) * di, r % T, z->ri, theta, ROPE_INTERLEAVED, 1);
        rope_apply(dik + (size_t)r * di, r % T, z->ri, theta, ROPE_INTERLEAVED, 1);
    }
    float ws = 1.0f / sqrtf((float)Hi) / sqrtf((float)di);   // iw = (x W_w^T) * ws
    for (long i = 0; i < (long)N * Hi; i++) diw[i] *= ws;
    linear_backward(NULL, dw->iproj, NULL, diw, x, w->iproj, N, z->d, Hi);
    linear_backward(NULL, dw->iwq, NULL, diq, q_in, w->iwq, N, z->qr > 0 ? z->qr : z->d, Hi * di);
    layernorm_backward(dik_raw, dw->ik_norm, dw->ik_bias, dik, a->ik_raw, w->ik_norm, a->ik_mean, a->ik_rstd, N, di);
    linear_backward(NULL, dw->iwk, NULL, dik_raw, x, w->iwk, N, z->d, di);
    free(scratch);
}

// ---- backward -------------------------------------------------------------------------------------

// The main path is chapter 5's MLA backward over the attended keys (the selection is a constant mask),
// then the indexer's own KL gradient.
static void dsa_backward(const Mixer *m, float *dx, float *dparams, const float *dout, const float *act,
                         const float *x, const float *params, int B, int T) {
    const ModelGeometry *g = m->g;
    Dims z = dims_of(g, m->layer);
    double theta = mha_layer_rope_theta(g, m->layer);
    DsaAct a;
    act_carve(&a, (float *)act, g, m->layer, &z, B, T);   // read only
    mla_backward_selected(m, dx, dparams, dout, a.mla, x, params, B, T, a.att);
    if (g_kl_coef != 0.0f) {
        DsaWeights w = weights_at(g, m->layer, (float *)params), dw = weights_at(g, m->layer, dparams);
        const float *q_in = z.qr > 0 ? mla_act_query_latent(m, a.mla, B, T) : x;
        index_kl_backward(&dw, &a, &w, x, q_in, &z, B, T, theta, g_kl_coef);
    }
}

// ---- decode: MLA's [c_kv | k_pe] plus the indexer key per token ----------------------------------------

struct MixerCache {
    Dims z;
    MixerCache *mla;  // chapter 5's cache: [c_kv | k_pe] per token (DSA layers are global: slot = position)
    int max_T;
    float *ik;        // (max_T, di) indexer keys (LayerNorm, RoPE): di floats per token beside MLA's dc + dr
    // one step's scratch (does not grow with the tokens held)
    float *iq;        // (Hi*di)
    float *ik_raw;    // (di)
    float *iw;        // (Hi)
    float *score;     // (max_T) indexer scores of the held tokens
    int *keys, *work; // (max_T) the attended keys; the selector's scratch
};

static MixerCache *dsa_cache_new(const Mixer *m, int max_T) {
    Dims z = dims_of(m->g, m->layer);
    CHECK(max_T > 0, "dsa: cache for %d tokens", max_T);
    MixerCache *c = callocCheck(1, sizeof *c);
    c->z = z;
    c->max_T = max_T;
    c->mla = mla_mixer.cache_new(m, max_T);
    size_t cap = (size_t)max_T;
    c->ik = callocCheck(cap * z.di + (size_t)z.Hi * z.di + z.di + z.Hi + cap, sizeof(float));
    c->iq = c->ik + cap * z.di;
    c->ik_raw = c->iq + (size_t)z.Hi * z.di;
    c->iw = c->ik_raw + z.di;
    c->score = c->iw + z.Hi;
    c->keys = mallocCheck(sizeof(int) * 2 * cap);
    c->work = c->keys + cap;
    return c;
}

static void dsa_cache_free(MixerCache *c) {
    if (!c) return;
    mla_mixer.cache_free(c->mla);
    free(c->ik);
    free(c->keys);
    free(c);
}

// MLA's (dc + dr) plus the indexer's di, times 4 bytes (fp32), per token held: kvcache's per-layer
// term with dtype_bytes = 4.
static size_t dsa_cache_bytes(const MixerCache *c) {
    return mla_mixer.cache_bytes(c->mla) + sizeof(float) * (size_t)c->z.di * (size_t)mla_cache_position(c->mla);
}

const float *dsa_cache_index_key(const MixerCache *c, int pos) {
    CHECK(pos >= 0 && pos < mla_cache_position(c->mla), "dsa: position %d is not held (%d decoded)", pos,
          mla_cache_position(c->mla));
    return c->ik + (size_t)pos * c->z.di;
}

// The indexer's scan, I_s for every held token s = 0..n-1: the same index_score as the forward (so the
// same bits), reading each cached indexer key once; a long scan is split over threads by blocks of
// keys, each score computed by one thread.
static void index_scan(float *score, const float *iq, const float *iw, const float *ik, int n, const Dims *z) {
    int blocks = (n + ATTN_BLOCK - 1) / ATTN_BLOCK;
    #pragma omp parallel for schedule(static) if (n >= ATTN_PAR_MIN && !omp_in_parallel())
    for (int b = 0; b < blocks; b++) {
        int s1 = (b + 1) * ATTN_BLOCK < n ? (b + 1) * ATTN_BLOCK : n;
        for (int s = b * ATTN_BLOCK; s < s1; s++) score[s] = index_score(iq, iw, ik + (size_t)s * z->di, z);
    }
}

static void dsa_decode(const Mixer *m, MixerCache *c, float *out, const float *x, const float *params) {
    const Dims z = c->z;
    CHECK(mla_cache_position(c->mla) < c->max_T, "dsa decode: cache is full (%d tokens)", c->max_T);
    int t = mla_cache_position(c->mla);
    double theta = mha_layer_rope_theta(m->g, m->layer);
    DsaWeights w = weights_at(m->g, m->layer, (float *)params);   // read only

    // the new token: MLA's queries and [c_kv | k_pe] (chapter 5), then its indexer query, weights and key
    mla_cache_append(m, c->mla, x, params);
    const float *q_in = z.qr > 0 ? mla_cache_query_latent(c->mla) : x;
    index_forward(c->iq, c->ik + (size_t)t * z.di, c->ik_raw, NULL, NULL, c->iw, x, q_in, &w, &z, 1, 1, t, theta);

    // the indexer scores every held token (O(T * Hi * di)); the selector keeps k of them
    DsaPhase phase = g_phase;
    if (phase == DSA_SPARSE && z.topk < t + 1) index_scan(c->score, c->iq, c->iw, c->ik, t + 1, &z);
    int n = attended_keys(c->keys, c->work, c->score, t, &z, phase);

    // MLA's absorbed attention over the n attended entries only (O(n * H * (dc + dr)))
    mla_cache_attend(c->mla, out, params, c->keys, n);
}

// ---- what the chapters draw ----------------------------------------------------------------------

static int dsa_n_mix_heads(const ModelGeometry *g, int layer) {
    (void)layer;
    return g->n_heads;
}

static void dsa_mixing_matrix(const Mixer *m, float *A, const float *act, const float *params, int T) {
    (void)params;
    memcpy(A, act, sizeof(float) * (size_t)m->g->n_heads * T * T);   // batch 0's P leads act
}

// Load-time check: MLA's requirements, an indexer, and global layers only (what dims_of assumes).
static int dsa_validate(const ModelGeometry *g, int layer, char *why, size_t cap) {
    if (g->layer_kind[layer] == LAYER_LOCAL)
        return mixer_fail(why, cap, "layer_kind of layer %d is 'local', but mixer 'dsa' is global attention", layer);
    if (!mla_mixer.validate(g, layer, why, cap)) return 0;
    if (g->index_n_heads < 1 || g->index_head_dim < 1 || g->index_topk < 1)
        return mixer_fail(why, cap, "mixer 'dsa' needs an indexer: index_n_heads %d, index_head_dim %d and index_topk "
                          "%d must all be positive", g->index_n_heads, g->index_head_dim, g->index_topk);
    return 1;
}

const MixerOps dsa_mixer = {
    .name = "dsa",
    .validate = dsa_validate,
    .param_tensors = dsa_param_tensors,
    .init = dsa_init,
    .act_floats = dsa_act_floats,
    .forward = dsa_forward,
    .backward = dsa_backward,
    .cache_new = dsa_cache_new,
    .cache_free = dsa_cache_free,
    .cache_bytes = dsa_cache_bytes,
    .decode = dsa_decode,
    .n_mix_heads = dsa_n_mix_heads,
    .mixing_matrix = dsa_mixing_matrix,
};

void dsa_index_scores(const Mixer *m, float *I, const float *act, int B, int T) {
    Dims z = dims_of(m->g, m->layer);
    DsaAct a;
    act_carve(&a, (float *)act, m->g, m->layer, &z, B, T);
    memcpy(I, a.I, sizeof(float) * (size_t)B * T * T);
}

void dsa_attended(const Mixer *m, unsigned char *mask, const float *act, int B, int T) {
    Dims z = dims_of(m->g, m->layer);
    DsaAct a;
    act_carve(&a, (float *)act, m->g, m->layer, &z, B, T);
    memcpy(mask, a.att, (size_t)B * T * T);
}

// ---- helpers for the chapter, the bench and the trainer -------------------------------------------

void dsa_geometry_tiny(ModelGeometry *g, int n_layers, int d_model, int n_heads, int index_n_heads,
                       int index_head_dim, int index_topk) {
    mla_geometry_tiny(g, n_layers, d_model, n_heads);
    snprintf(g->name, sizeof g->name, "tiny-dsa");
    g->index_n_heads = index_n_heads;
    g->index_head_dim = index_head_dim;
    g->index_topk = index_topk;
}

double dsa_decode_seconds_per_token(const ModelGeometry *g, const float *params, int context, int reps, int threads,
                                    double *index_seconds) {
    CHECK(context >= 0 && reps > 0 && threads > 0, "dsa timing: context %d, reps %d, threads %d", context, reps, threads);
    Mixer m = {.ops = &dsa_mixer, .g = g, .layer = 0};
    MixerCache *c = dsa_cache_new(&m, context + 1);
    // random entries stand in for `context` decoded tokens: a step's cost does not depend on their
    // values (the indexer keys uniform in [-1, 1): signed like real keys, so the ReLU branches as it would)
    Rng rng;
    rng_seed(&rng, 7);
    mla_cache_fill_random(c->mla, context, &rng);
    for (long i = 0; i < (long)context * c->z.di; i++) c->ik[i] = 2.0f * rng_uniform(&rng) - 1.0f;
    float *x = mallocCheck(sizeof(float) * 2 * (size_t)g->d_model), *out = x + g->d_model;
    rng_fill_normal(&rng, x, g->d_model, 1.0f);

    DsaPhase phase = g_phase;
    g_phase = DSA_SPARSE;
    int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    dsa_decode(&m, c, out, x, params);   // warm-up; then every step is the token at position `context`
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < reps; r++) {
        mla_cache_rewind(c->mla, context);
        dsa_decode(&m, c, out, x, params);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double total = ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec)) / reps;
    if (index_seconds) {
        // the indexer's part alone: its scan over every held key and the top-k selection
        int t = context;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int r = 0; r < reps; r++) {
            index_scan(c->score, c->iq, c->iw, c->ik, t + 1, &c->z);
            attended_keys(c->keys, c->work, c->score, t, &c->z, DSA_SPARSE);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        *index_seconds = ((double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec)) / reps;
    }
    omp_set_num_threads(saved);
    g_phase = phase;
    free(x);
    dsa_cache_free(c);
    return total;
}

void dsa_train(Model *m, const Task *task, const TrainConfig *c, int dense_steps, TrainResult *r) {
    CHECK(dense_steps >= 0 && dense_steps <= c->steps, "dsa_train: %d dense steps of %d", dense_steps, c->steps);
    TrainConfig dense = *c, sparse = *c;
    dense.steps = dense_steps;
    dense.warmup = c->steps > 0 ? (int)((long)c->warmup * dense_steps / c->steps) : 0;
    dense.eval_samples = 1;   // only the final model is evaluated for real
    sparse.steps = c->steps - dense_steps;
    sparse.warmup = c->warmup - dense.warmup;
    sparse.seed = c->seed + 1;
    TrainResult r1, r2;
    dsa_set_phase(DSA_DENSE);
    if (c->progress && dense_steps > 0) printf("dsa: stage 1, %d dense warm-up steps (the indexer imitates dense MLA)\n", dense_steps);
    train_run(m, task, &dense, &r1);
    dsa_set_phase(DSA_SPARSE);
    if (c->progress) printf("dsa: stage 2, %d sparse steps (top-%d keys per query)\n", sparse.steps, m->g.index_topk);
    train_run(m, task, &sparse, &r2);
    *r = r2;
    r->steps = c->steps;
    r->losses = mallocCheck(sizeof(float) * (size_t)(c->steps > 0 ? c->steps : 1));
    if (dense_steps) memcpy(r->losses, r1.losses, sizeof(float) * (size_t)dense_steps);
    if (sparse.steps) memcpy(r->losses + dense_steps, r2.losses, sizeof(float) * (size_t)sparse.steps);
    r->seconds = r1.seconds + r2.seconds;
    r->tokens_per_s = r->seconds > 0 ? (double)c->steps * c->batch * task->seq_len / r->seconds : 0.0;
    train_result_free(&r1);
    train_result_free(&r2);
}
