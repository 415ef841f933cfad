// test_exercises.c: the focused tests of the classroom exercises. Suite exNN_M checks exercise exNN.M
// (chapters/NN_name/EXERCISES.md; the code is the region marked "EXERCISE exNN.M" in the reference),
// and nothing else, so `make check EX=NN.M` runs only these. Each one compares the region's result with
// an independent double-precision computation and, when they differ, says where and why: it also
// computes the results of the usual mistakes and names the one the code reproduces. The first failing
// message is the hint the checker prints, so every message says what was expected, what came out, and
// asks the question that leads to the fix.
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "02_self_attention/selfattn.h"
#include "03_mha/mha.h"
#include "05_mla/mla.h"
#include "07_dsa/dsa.h"
#include "08_gated/gated.h"
#include "09_gdn/gdn.h"
#include "10_hybrids/lightning.h"
#include "10_hybrids/mamba2.h"
#include "11_compressed/compressed.h"
#include "attention.h"
#include "check.h"
#include "helpers.h"
#include "kvquant.h"
#include "mathx.h"
#include "rng.h"
#include "safetensors.h"

// ---- shared helpers ------------------------------------------------------------------------------

// max |got - want| / max(1, max |want|) over n values.
static double scaled_err(const float *got, const double *want, int n) {
    double scale = 1.0, err = 0.0;
    for (int i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    for (int i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= err)) err = isnan(e) ? INFINITY : e;   // NaN counts as the worst error
    }
    return err / scale;
}

// "1.25, -0.5, 3" (at most 6 values) for a message.
static const char *show(char *buf, size_t cap, const float *x, int n) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && i < 6 && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%.4g", i ? ", " : "", (double)x[i]);
    if (n > 6 && used < cap) snprintf(buf + used, cap - used, ", ...");
    return buf;
}

// The index of the variant (n_var rows of n values) that got matches within tol, or -1.
static int which_variant(const float *got, const double *variants, int n_var, int n, double tol) {
    for (int v = 0; v < n_var; v++)
        if (scaled_err(got, variants + (size_t)v * n, n) < tol) return v;
    return -1;
}

// o (dv) = sum_j softmax_j(scale * q . k_j) v_j over the n keys k_j = k + j*ks, v_j = v + j*vs, in double.
static void attend_d(double *o, const double *q, const float *k, size_t ks, const float *v, size_t vs, int n, int dk,
                     int dv, double scale) {
    double s[64], mx = -INFINITY, sum = 0.0;
    cr_assert(n <= 64, "attend_d: at most 64 keys");
    for (int j = 0; j < n; j++) {
        s[j] = 0.0;
        for (int c = 0; c < dk; c++) s[j] += q[c] * k[(size_t)j * ks + c];
        s[j] *= scale;
        mx = fmax(mx, s[j]);
    }
    for (int j = 0; j < n; j++) sum += (s[j] = exp(s[j] - mx));
    for (int e = 0; e < dv; e++) {
        o[e] = 0.0;
        for (int j = 0; j < n; j++) o[e] += s[j] / sum * v[(size_t)j * vs + e];
    }
}

static void to_double(double *d, const float *f, int n) {
    for (int i = 0; i < n; i++) d[i] = f[i];
}

// ===================================================================================================
// ex01.1  softmax_row (common/mathx.c)
// ===================================================================================================

static void softmax_d(double *p, const float *l, const unsigned char *mask, int n) {
    double mx = -INFINITY, s = 0.0;
    for (int j = 0; j < n; j++)
        if (!mask || mask[j]) mx = fmax(mx, l[j]);
    for (int j = 0; j < n; j++) s += (!mask || mask[j]) && mx > -INFINITY ? exp(l[j] - mx) : 0.0;
    for (int j = 0; j < n; j++) p[j] = (!mask || mask[j]) && s > 0 ? exp(l[j] - mx) / s : 0.0;
}

Test(ex01_1, weights_of_one_row) {
    float l[7] = {0.5f, -1.0f, 2.0f, 0.0f, 1.5f, -0.25f, 0.75f}, p[7];
    double want[7];
    char b1[160], b2[160];
    softmax_row(p, l, NULL, 7);
    softmax_d(want, l, NULL, 7);
    double sum = 0.0;
    for (int j = 0; j < 7; j++) sum += p[j];
    float wantf[7];
    for (int j = 0; j < 7; j++) wantf[j] = (float)want[j];
    cr_assert(fabs(sum - 1.0) < 1e-5, "logits %s: your weights %s sum to %.6g, not 1: divide each exp(l_j - max) by the sum of them all",
              show(b1, sizeof b1, l, 7), show(b2, sizeof b2, p, 7), sum);
    cr_assert(scaled_err(p, want, 7) < 1e-6, "logits %s: want weights %s, got %s: p_j = exp(l_j) / sum_k exp(l_k)",
              show(b1, sizeof b1, l, 7), show(b2, sizeof b2, wantf, 7), show(b1 + 80, 80, p, 7));
    // shift invariance: large logits must not overflow
    float big[4] = {1000.0f, 1001.0f, 999.0f, 1000.5f};
    softmax_row(p, big, NULL, 4);
    softmax_d(want, big, NULL, 4);
    for (int j = 0; j < 4; j++)
        cr_assert(isfinite(p[j]), "logits 1000, 1001, 999, 1000.5 give weight %g for key %d: exp(1000) overflows a float. Softmax does not change when every logit moves by the same amount: subtract the row's largest logit first",
                  (double)p[j], j);
    cr_assert(scaled_err(p, want, 4) < 1e-6, "logits 1000, 1001, 999, 1000.5: want %.4g, %.4g, %.4g, %.4g, got %s",
              want[0], want[1], want[2], want[3], show(b1, sizeof b1, p, 4));
}

Test(ex01_1, masked_keys_are_absent) {
    float l[6] = {0.3f, 1e30f, -0.7f, 2.0f, 1.1f, -3.0f}, p[6];
    unsigned char mask[6] = {1, 0, 1, 0, 1, 1};
    double want[6];
    softmax_row(p, l, mask, 6);
    softmax_d(want, l, mask, 6);
    for (int j = 0; j < 6; j++)
        if (!mask[j])
            cr_assert(p[j] == 0.0f, "mask 1 0 1 0 1 1: masked key %d got weight %g. A masked key is absent: its weight must be exactly 0",
                      j, (double)p[j]);
    for (int j = 0; j < 6; j++)
        cr_assert((isfinite(p[j]) && p[j] != 0.0f) || !mask[j],
                  "mask 1 0 1 0 1 1, a masked logit of 1e30: visible key %d got weight %g. A masked key is absent: are the row's maximum and the sum taken over the visible keys only?",
                  j, (double)p[j]);
    double sum = 0.0;
    for (int j = 0; j < 6; j++) sum += p[j];
    cr_assert(fabs(sum - 1.0) < 1e-5, "mask 1 0 1 0 1 1: the visible weights sum to %.6g, not 1: does the sum in the denominator run over the visible keys only?", sum);
    cr_assert(scaled_err(p, want, 6) < 1e-6, "mask 1 0 1 0 1 1: want %.4g %.4g %.4g %.4g %.4g %.4g, got %s", want[0], want[1],
              want[2], want[3], want[4], want[5], show((char[160]){0}, 160, p, 6));
}

Test(ex01_1, a_row_that_sees_nothing_is_zero) {
    float l[4] = {0.1f, 0.2f, 0.3f, 0.4f}, p[4];
    unsigned char none[4] = {0, 0, 0, 0};
    softmax_row(p, l, none, 4);
    for (int j = 0; j < 4; j++)
        cr_assert(p[j] == 0.0f, "a fully masked row must give 0 for every key (never NaN), key %d got %g: check for 'nothing visible' before dividing by the sum",
                  j, (double)p[j]);
    float inf[3] = {-INFINITY, -INFINITY, -INFINITY};
    softmax_row(p, inf, NULL, 3);
    for (int j = 0; j < 3; j++)
        cr_assert(p[j] == 0.0f, "logits all -inf: key %d got %g, want 0 (exp(-inf - (-inf)) is NaN: a row whose maximum is -inf attends to nothing)",
                  j, (double)p[j]);
}

// ===================================================================================================
// ex01.2  selfattn_forward (chapters/02_self_attention/selfattn.c)
// ===================================================================================================

enum { SA_T = 5, SA_D = 6, SA_DH = 4 };

// The reference and the usual mistakes: 0 right, 1 no 1/sqrt(dh), 2 divided by dh, 3 mask ignored,
// 4 scores k q^T (transposed). P (5, T*T), out (5, T*dh).
static void selfattn_variants(double *P, double *out, const float *x, const float *wq, const float *wk,
                              const float *wv, const unsigned char *mask) {
    double q[SA_T][SA_DH], k[SA_T][SA_DH], v[SA_T][SA_DH];
    for (int t = 0; t < SA_T; t++)
        for (int c = 0; c < SA_DH; c++) {
            q[t][c] = k[t][c] = v[t][c] = 0.0;
            for (int i = 0; i < SA_D; i++) {
                q[t][c] += (double)x[t * SA_D + i] * wq[i * SA_DH + c];
                k[t][c] += (double)x[t * SA_D + i] * wk[i * SA_DH + c];
                v[t][c] += (double)x[t * SA_D + i] * wv[i * SA_DH + c];
            }
        }
    for (int var = 0; var < 5; var++) {
        double scale = var == 1 ? 1.0 : var == 2 ? 1.0 / SA_DH : 1.0 / sqrt((double)SA_DH);
        double *Pv = P + (size_t)var * SA_T * SA_T, *ov = out + (size_t)var * SA_T * SA_DH;
        for (int i = 0; i < SA_T; i++) {
            double s[SA_T], mx = -INFINITY, sum = 0.0;
            for (int j = 0; j < SA_T; j++) {
                s[j] = 0.0;
                for (int c = 0; c < SA_DH; c++) s[j] += var == 4 ? k[i][c] * q[j][c] : q[i][c] * k[j][c];
                s[j] *= scale;
                if (var == 3 || !mask || mask[i * SA_T + j]) mx = fmax(mx, s[j]);
            }
            for (int j = 0; j < SA_T; j++) {
                int see = var == 3 || !mask || mask[i * SA_T + j];
                Pv[i * SA_T + j] = see ? exp(s[j] - mx) : 0.0;
                sum += Pv[i * SA_T + j];
            }
            for (int j = 0; j < SA_T; j++) Pv[i * SA_T + j] /= sum;
            for (int c = 0; c < SA_DH; c++) {
                ov[i * SA_DH + c] = 0.0;
                for (int j = 0; j < SA_T; j++) ov[i * SA_DH + c] += Pv[i * SA_T + j] * v[j][c];
            }
        }
    }
}

static void selfattn_check(int causal) {
    Rng r;
    rng_seed(&r, 12 + causal);
    float *x = test_randn(&r, SA_T * SA_D, 1.0f), *wq = test_randn(&r, SA_D * SA_DH, 0.8f);
    float *wk = test_randn(&r, SA_D * SA_DH, 0.8f), *wv = test_randn(&r, SA_D * SA_DH, 0.8f);
    unsigned char mask[SA_T * SA_T];
    for (int i = 0; i < SA_T; i++)
        for (int j = 0; j < SA_T; j++) mask[i * SA_T + j] = (unsigned char)(j <= i);
    float out[SA_T * SA_DH], P[SA_T * SA_T], scratch[3 * SA_T * SA_DH + SA_T * SA_T];
    selfattn_forward(out, P, x, wq, wk, wv, causal ? mask : NULL, SA_T, SA_D, SA_DH, scratch);
    double Pw[5 * SA_T * SA_T], ow[5 * SA_T * SA_DH];
    selfattn_variants(Pw, ow, x, wq, wk, wv, causal ? mask : NULL);
    const char *what = causal ? "causal mask" : "no mask (bidirectional)";
    if (scaled_err(P, Pw, SA_T * SA_T) >= 1e-5) {
        static const char *why[5] = {"", "P is softmax(q k^T) without the 1/sqrt(dh): scale the scores by 1/sqrt(dh) before the softmax",
                                     "P is softmax(q k^T / dh): the scale is 1/sqrt(dh), not 1/dh",
                                     "P has weight on keys the mask hides: give softmax_row row i of the mask (mask + i*T)",
                                     "P is softmax(k q^T): row i of the scores is query i against every key, s = q k^T"};
        int v = which_variant(P, Pw, 5, SA_T * SA_T, 1e-5);
        for (int i = 0; i < SA_T; i++)
            for (int j = 0; j < SA_T; j++) {
                double w = Pw[i * SA_T + j], g = P[i * SA_T + j];
                cr_assert(fabs(g - w) < 1e-5, "%s, T %d, dh %d: P[%d][%d] = %.5g, want %.5g. %s", what, SA_T, SA_DH, i, j, g, w,
                          v > 0 ? why[v]
                                : "Is each row a softmax of that query's scaled scores q_i . k_j / sqrt(dh) over the keys it sees? (P comes from your softmax_row: ex01.1 must pass first.)");
            }
    }
    if (scaled_err(out, ow, SA_T * SA_DH) >= 1e-5) {
        for (int i = 0; i < SA_T * SA_DH; i++)
            cr_assert(fabs(out[i] - ow[i]) < 1e-5, "%s: P is right, but out[%d][%d] = %.5g, want %.5g: out = P v, (T,T) times (T,dh)",
                      what, i / SA_DH, i % SA_DH, (double)out[i], ow[i]);
    }
    free(x); free(wq); free(wk); free(wv);
}

Test(ex01_2, one_head_bidirectional) { selfattn_check(0); }
Test(ex01_2, one_head_causal) { selfattn_check(1); }

// ===================================================================================================
// ex02.1  mask_fill (common/mathx.c)
// ===================================================================================================

static void mask_check(MaskKind kind, int param, const char *name, const char *rule) {
    enum { T = 9 };
    unsigned char m[T * T];
    memset(m, 7, sizeof m);
    mask_fill(m, kind, T, param);
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) {
            int want;
            switch (kind) {
            case MASK_BIDIRECTIONAL: want = 1; break;
            case MASK_CAUSAL: want = j <= i; break;
            case MASK_PREFIX_LM: want = j < param || j <= i; break;
            default: want = j <= i && i - j < param; break;
            }
            cr_assert(m[i * T + j] == want, "%s, T %d: query %d, key %d is %s, want %s. %s", name, T, i, j,
                      m[i * T + j] == 1 ? "visible (1)" : m[i * T + j] == 0 ? "hidden (0)" : "not written", want ? "visible (1)" : "hidden (0)",
                      rule);
        }
}

Test(ex02_1, bidirectional) { mask_check(MASK_BIDIRECTIONAL, 0, "bidirectional", "An encoder's query sees every key."); }
Test(ex02_1, causal) {
    mask_check(MASK_CAUSAL, 0, "causal", "A decoder's query sees itself and every earlier key: j <= i.");
}
Test(ex02_1, prefix_lm) {
    mask_check(MASK_PREFIX_LM, 4, "prefix-LM, prefix 4",
               "The first 4 tokens (the prompt) see each other both ways; every query also sees itself and the keys before it: j < prefix or j <= i.");
}
Test(ex02_1, sliding_window) {
    mask_check(MASK_SLIDING, 3, "sliding window 3",
               "A query sees the last 3 keys, itself included: i - 3 < j <= i (so exactly 3 once i >= 2).");
    mask_check(MASK_SLIDING, 1, "sliding window 1", "With a window of 1 a query sees only itself.");
}

// ===================================================================================================
// ex03.1  mha_cache_step (chapters/03_mha/mha.c); also ex04.1 and ex06.1 read the cache this way
// ===================================================================================================

// The heads of a one-layer attention geometry (fp32), global or local (window W).
static void attn_geom(ModelGeometry *g, int H, int G, int dh, int W) {
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "exercise %d/%d", H, G);
    g->n_layers = 1;
    g->d_model = H * dh;
    g->n_heads = H;
    g->n_kv_heads = G;
    g->head_dim = dh;
    g->vocab_size = 16;
    g->d_ff = 2 * H * dh;
    g->max_seq_len = 64;
    g->attn = ATTN_GQA;
    g->rope_theta = 10000.0;
    g->dtype_bytes = 4;
    g->layer_kind[0] = W ? LAYER_LOCAL : LAYER_GLOBAL;
    g->sliding_window = W;
}

// Decodes T steps of random q (H*dh), k, v (G*dh) through mha_cache_step; o (T, H*dh) its outputs,
// q/k/v the inputs (T rows each), pos (T) the cache position after each step.
typedef struct {
    int H, G, dh, W, T;
    float *q, *k, *v, *o;
    int pos[16];
    size_t bytes[16];
} Steps;

static Steps run_steps(int H, int G, int dh, int W, int T, int max_T, uint64_t seed) {
    ModelGeometry g;
    attn_geom(&g, H, G, dh, W);
    Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    Rng r;
    rng_seed(&r, seed);
    Steps s = {.H = H, .G = G, .dh = dh, .W = W, .T = T};
    s.q = test_randn(&r, (size_t)T * H * dh, 1.0f);
    s.k = test_randn(&r, (size_t)T * G * dh, 1.0f);
    s.v = test_randn(&r, (size_t)T * G * dh, 1.0f);
    s.o = callocCheck((size_t)T * H * dh, sizeof(float));
    MixerCache *c = mha_cache_new_with_scratch(&m, max_T, 0);
    for (int t = 0; t < T; t++) {
        mha_cache_step(c, s.o + (size_t)t * H * dh, s.q + (size_t)t * H * dh, s.k + (size_t)t * G * dh,
                       s.v + (size_t)t * G * dh, H, dh, NULL);
        s.pos[t] = mha_cache_position(c);
        s.bytes[t] = gqa_mixer.cache_bytes(c);
    }
    gqa_mixer.cache_free(c);
    return s;
}

static void free_steps(Steps *s) { free(s->q); free(s->k); free(s->v); free(s->o); }

// Head h at step t, query head h reading KV head g, over positions lo..hi (double).
static void step_ref(double *o, const Steps *s, int t, int h, int g, int lo, int hi) {
    double q[64];
    to_double(q, s->q + (size_t)t * s->H * s->dh + (size_t)h * s->dh, s->dh);
    size_t kvd = (size_t)s->G * s->dh;
    attend_d(o, q, s->k + lo * kvd + (size_t)g * s->dh, kvd, s->v + lo * kvd + (size_t)g * s->dh, kvd, hi - lo + 1, s->dh,
             s->dh, 1.0 / sqrt((double)s->dh));
}

Test(ex03_1, decode_appends_then_attends) {
    int H = 4, G = 2, dh = 8, T = 7, max_T = 9;
    Steps s = run_steps(H, G, dh, 0, T, max_T, 31);
    for (int t = 0; t < T; t++) {
        cr_assert(s.pos[t] == t + 1, "after decoding token %d the cache says it holds %d tokens, want %d: count the new token (c->n++) once it is stored",
                  t, s.pos[t], t + 1);
        size_t want = sizeof(float) * 2 * (size_t)G * dh * (size_t)(t + 1);
        cr_assert(s.bytes[t] == want, "after token %d the cache holds %zu bytes, want %zu (2 * G * dh floats per token)", t,
                  s.bytes[t], want);
    }
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            int g = h / (H / G);
            double want[8], var[3][8];
            step_ref(want, &s, t, h, g, 0, t);
            const float *got = s.o + (size_t)t * H * dh + (size_t)h * dh;
            if (scaled_err(got, want, dh) < 1e-5) continue;
            // the usual mistakes: attending before the new key is stored (its row still zero), only to the
            // new token, or to every row of the buffer (unwritten rows are zero)
            float zk[8 * 16];
            memset(zk, 0, sizeof zk);
            double qd[8];
            to_double(qd, s.q + (size_t)t * H * dh + (size_t)h * dh, dh);
            size_t kvd = (size_t)G * dh;
            float kb[16 * 16], vb[16 * 16];
            memset(kb, 0, sizeof kb);
            memset(vb, 0, sizeof vb);
            memcpy(kb, s.k, sizeof(float) * t * kvd);   // rows 0..t-1 written, row t still zero
            memcpy(vb, s.v, sizeof(float) * t * kvd);
            attend_d(var[0], qd, kb + g * dh, kvd, vb + g * dh, kvd, t + 1, dh, dh, 1.0 / sqrt((double)dh));
            step_ref(var[1], &s, t, h, g, t, t);
            memcpy(kb, s.k, sizeof(float) * (t + 1) * kvd);
            memcpy(vb, s.v, sizeof(float) * (t + 1) * kvd);
            attend_d(var[2], qd, kb + g * dh, kvd, vb + g * dh, kvd, max_T, dh, dh, 1.0 / sqrt((double)dh));
            static const char *why[3] = {
                "it matches attention over the earlier tokens and an empty row: is the new key written into the cache before the scores are computed?",
                "it matches attention to the new token alone: the query must see every position 0..t (attn_keys_span(&ks, lo, t, ...) with lo = 0 here)",
                "it matches attention over every row of the buffer, written or not: the query sees positions 0..t only"};
            int v = which_variant(got, &var[0][0], 3, dh, 1e-5);
            char b1[160], b2[160];
            float wf[8];
            for (int i = 0; i < dh; i++) wf[i] = (float)want[i];
            cr_assert(0, "GQA, %d query heads on %d KV heads: decode step %d, head %d gives %s, want %s. %s", H, G, t, h,
                      show(b1, sizeof b1, got, dh), show(b2, sizeof b2, wf, dh),
                      v >= 0 ? why[v] : "Is the new key and value stored in row (t - c->base) % c->cap, and does the query attend over positions 0..t?");
        }
    free_steps(&s);
}

// ===================================================================================================
// ex04.1  head_range (common/attention.c): which query heads read which KV head
// ===================================================================================================

// Query head h of H (G KV heads) gave got (dh); cand (G, dh) is what attention with each KV head gives.
// Passes when got is KV head h / (H/G)'s; otherwise names the KV head it did read, if any.
static void gqa_head_assert(const char *where, int H, int G, int h, const float *got, const double *cand, int dh) {
    int want = h / (H / G), read = which_variant(got, cand, G, dh, 1e-5), zero = 1;
    if (read == want) return;
    for (int c = 0; c < dh; c++) zero &= got[c] == 0.0f;
    cr_assert(!zero, "%s, %d query heads on %d KV heads: query head %d got no output at all. The query heads of KV head g are the %d heads g*%d .. g*%d + %d: every head 0..%d belongs to exactly one group (h0 = g0 * grp, nh = (g1 - g0) * grp)",
              where, H, G, h, H / G, H / G, H / G, H / G - 1, H - 1);
    cr_assert(0, "%s, %d query heads on %d KV heads (%d per group): query head %d %s, but it belongs to KV head %d = %d / %d. %s", where, H,
              G, H / G, h, read < 0 ? "matches no KV head's attention" : read == h % G ? "read KV head h % G" : "read another KV head", want, h,
              H / G,
              read >= 0 && read == h % G ? "Consecutive query heads share a KV head (heads 0..H/G-1 read KV head 0), not every G-th one."
                                         : "Group g holds query heads g*(H/G) .. g*(H/G) + H/G - 1: h0 = g0 * (H/G), nh = (g1 - g0) * (H/G).");
}

static void gqa_map_check(int H, int G) {
    int dh = 4, T = 5;
    Steps s = run_steps(H, G, dh, 0, T, T, 44 + H + G);
    for (int t = 1; t < T; t++)
        for (int h = 0; h < H; h++) {
            double cand[8 * 4];
            for (int g = 0; g < G; g++) step_ref(cand + g * dh, &s, t, h, g, 0, t);
            char where[64];
            snprintf(where, sizeof where, "decode step %d", t);
            gqa_head_assert(where, H, G, h, s.o + (size_t)t * H * dh + (size_t)h * dh, cand, dh);
        }
    free_steps(&s);
}

Test(ex04_1, query_heads_share_their_groups_kv_head) {
    gqa_map_check(8, 2);
    gqa_map_check(6, 3);
    gqa_map_check(4, 1);   // MQA: every head reads the one KV head
    gqa_map_check(3, 3);   // MHA: head h reads KV head h
}

// The training forward reads the same map (the core's forward over a whole sequence).
Test(ex04_1, training_forward_uses_the_same_groups) {
    int H = 4, G = 2, dh = 4, T = 5;
    Rng r;
    rng_seed(&r, 71);
    float *q = test_randn(&r, (size_t)T * H * dh, 1.0f), *k = test_randn(&r, (size_t)T * G * dh, 1.0f);
    float *v = test_randn(&r, (size_t)T * G * dh, 1.0f), *o = callocCheck((size_t)T * H * dh, sizeof(float));
    float *P = callocCheck((size_t)H * T * T, sizeof(float));
    mha_attention_forward(o, P, q, k, v, 1, T, H, G, dh, 0, NULL, NULL);
    for (int t = 1; t < T; t++)
        for (int h = 0; h < H; h++) {
            double qd[4], cand[2 * 4];
            to_double(qd, q + (size_t)t * H * dh + (size_t)h * dh, dh);
            for (int g = 0; g < G; g++)
                attend_d(cand + g * dh, qd, k + g * dh, (size_t)G * dh, v + g * dh, (size_t)G * dh, t + 1, dh, dh, 1.0 / sqrt((double)dh));
            char where[64];
            snprintf(where, sizeof where, "the training forward, position %d", t);
            gqa_head_assert(where, H, G, h, o + (size_t)t * H * dh + (size_t)h * dh, cand, dh);
        }
    free(q); free(k); free(v); free(o); free(P);
}

// ===================================================================================================
// ex05.1, ex05.2  MLA's absorbed decode (chapters/05_mla/mla.c, mla_cache_attend)
// ===================================================================================================

// d 32 = H 4 * dv 8, no query low-rank, dc 16, dn 8, dr 4: with Wo the identity, decode's output is
// the concatenated heads o_h, so every head can be checked on its own.
enum { ML_D = 32, ML_H = 4, ML_DC = 16, ML_DN = 8, ML_DR = 4, ML_DV = 8, ML_T = 6 };

typedef struct {
    ModelGeometry g;
    float *params;
    MlaWeights w;
    float *x;                       // (T, d) the decoded tokens
    float absorbed[ML_T][ML_D];     // decode outputs, absorbed path
    float naive[ML_T][ML_D];        // decode outputs, naive path (the reference)
    float lat[ML_T][ML_DC + ML_DR]; // what the cache held: [c_kv | k_pe] per position
} MlaRun;

static void mla_run(MlaRun *r, int single_key) {
    ModelGeometry *g = &r->g;
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "exercise mla");
    g->n_layers = 1;
    g->d_model = ML_D;
    g->n_heads = g->n_kv_heads = ML_H;
    g->head_dim = ML_DN + ML_DR;
    g->vocab_size = 16;
    g->d_ff = 64;
    g->max_seq_len = 64;
    g->attn = ATTN_MLA;
    g->kv_lora_rank = ML_DC;
    g->qk_nope_head_dim = ML_DN;
    g->qk_rope_head_dim = ML_DR;
    g->v_head_dim = ML_DV;
    g->rope_theta = 10000.0;
    g->dtype_bytes = 4;
    Mixer m = {.ops = &mla_mixer, .g = g, .layer = 0};
    Rng rng;
    rng_seed(&rng, 505);
    size_t np = mixer_n_params(&mla_mixer, g, 0);
    r->params = test_randn(&rng, np, 0.5f);
    ParamTensor t[8];
    int n = mla_mixer.param_tensors(g, 0, t, 8);
    for (int i = 0; i < n; i++)
        if (t[i].ndim == 1)
            for (int j = 0; j < t[i].shape[0]; j++) r->params[t[i].offset + j] = 1.0f + 0.2f * rng_normal(&rng);
    memset(&r->w, 0, sizeof r->w);
    r->w.wq = r->params + test_find_param(t, n, "wq")->offset;
    r->w.wkv_a = r->params + test_find_param(t, n, "wkv_a")->offset;
    r->w.kv_norm = r->params + test_find_param(t, n, "kv_norm")->offset;
    r->w.wkv_b = r->params + test_find_param(t, n, "wkv_b")->offset;
    r->w.wo = r->params + test_find_param(t, n, "wo")->offset;
    for (int i = 0; i < ML_D; i++)
        for (int j = 0; j < ML_H * ML_DV; j++) r->w.wo[i * ML_H * ML_DV + j] = i == j ? 1.0f : 0.0f;
    r->x = test_randn(&rng, (size_t)ML_T * ML_D, 1.0f);
    MixerCache *ca = mla_mixer.cache_new(&m, ML_T), *cn = mla_mixer.cache_new(&m, ML_T);
    mla_set_decode_path(cn, 0);
    for (int s = 0; s < ML_T; s++) {
        const float *xs = r->x + (size_t)s * ML_D;
        mla_cache_append(&m, ca, xs, r->params);
        mla_cache_append(&m, cn, xs, r->params);
        int one = s;   // single_key: only the newest entry (weight 1 whatever the scores)
        mla_cache_attend(ca, r->absorbed[s], r->params, single_key ? &one : NULL, single_key ? 1 : 0);
        mla_cache_attend(cn, r->naive[s], r->params, single_key ? &one : NULL, single_key ? 1 : 0);
        memcpy(r->lat[s], mla_cache_latent(ca, s), sizeof(float) * (ML_DC + ML_DR));
    }
    mla_mixer.cache_free(ca);
    mla_mixer.cache_free(cn);
}

static void mla_free(MlaRun *r) { free(r->params); free(r->x); }

// W_UK[h] (dn, dc) and W_UV[h] (dv, dc): rows of wkv_b.
static const float *w_uk(const MlaRun *r, int h) { return r->w.wkv_b + (size_t)h * (ML_DN + ML_DV) * ML_DC; }
static const float *w_uv(const MlaRun *r, int h) { return w_uk(r, h) + (size_t)ML_DN * ML_DC; }

// o (dv) = W (dv, dc) u (dc), in double.
static void project_d(double *o, const float *W, const double *u) {
    for (int e = 0; e < ML_DV; e++) {
        o[e] = 0.0;
        for (int c = 0; c < ML_DC; c++) o[e] += (double)W[(size_t)e * ML_DC + c] * u[c];
    }
}

Test(ex05_1, output_is_w_uv_times_the_weighted_latent) {
    MlaRun r;
    mla_run(&r, 1);
    // one key per step: its weight is 1, so u_h = that token's c_kv for every head, and o_h = W_UV[h] c_kv
    for (int s = 0; s < ML_T; s++)
        for (int h = 0; h < ML_H; h++) {
            const float *got = r.absorbed[s] + h * ML_DV;
            double want[ML_DV], var[3][ML_DV], u[ML_DC];
            to_double(u, r.lat[s], ML_DC);
            project_d(want, w_uv(&r, h), u);
            if (scaled_err(got, want, ML_DV) < 1e-5) continue;
            project_d(var[0], w_uk(&r, h), u);   // the wrong half of the head's rows
            project_d(var[1], w_uv(&r, 0), u);   // head 0's W_UV for every head
            memset(var[2], 0, sizeof var[2]);
            static const char *why[3] = {
                "It equals W_UK[h] u_h: the head's rows of wkv_b are W_UK[h] (the first dn rows) then W_UV[h] (the next dv): W_UV[h] starts dn*dc floats after W_UK[h]",
                "It equals W_UV[0] u_h: every head has its own W_UV[h], dkv*dc floats (dkv = dn + dv) after the previous head's",
                "It is all zeros: write c->o, row h (dv floats) for head h"};
            int v = which_variant(got, &var[0][0], 3, ML_DV, 1e-5);
            char b1[160], b2[160];
            float wf[ML_DV];
            for (int i = 0; i < ML_DV; i++) wf[i] = (float)want[i];
            cr_assert(0, "one cached key (weight 1, so u_h = c_kv of that token): step %d, head %d gives %s, want W_UV[h] u_h = %s. %s", s,
                      h, show(b1, sizeof b1, got, ML_DV), show(b2, sizeof b2, wf, ML_DV),
                      v >= 0 ? why[v] : "o_h[r] = sum_c W_UV[h][r][c] u_h[c], with u_h at c->u + h*dc");
        }
    mla_free(&r);
}

// The absorbed query of every head and the usual mistakes (0 right, 1 no RoPE part, 2 RoPE part only,
// 3 W_UV's rows used as W_UK, 4 head 0's W_UK for every head): qa (5, H, dc+dr) at step t.
static void absorbed_queries(double *qa, const MlaRun *r, int t) {
    float q[ML_H * (ML_DN + ML_DR)];
    mla_query_forward(q, NULL, NULL, NULL, r->x + (size_t)t * ML_D, &r->w, &r->g, 1);
    for (int h = 0; h < ML_H; h++) rope_apply(q + h * (ML_DN + ML_DR) + ML_DN, t, ML_DR, 10000.0, ROPE_INTERLEAVED, 0);
    for (int var = 0; var < 5; var++)
        for (int h = 0; h < ML_H; h++) {
            const float *qh = q + h * (ML_DN + ML_DR);
            const float *wk = var == 3 ? w_uv(r, h) : var == 4 ? w_uk(r, 0) : w_uk(r, h);
            double *o = qa + ((size_t)var * ML_H + h) * (ML_DC + ML_DR);
            for (int c = 0; c < ML_DC; c++) {
                o[c] = 0.0;
                if (var != 2)
                    for (int i = 0; i < ML_DN; i++) o[c] += (double)qh[i] * wk[(size_t)i * ML_DC + c];
            }
            for (int c = 0; c < ML_DR; c++) o[ML_DC + c] = var == 1 ? 0.0 : qh[ML_DN + c];
        }
}

Test(ex05_2, absorbed_decode_equals_the_naive_decode) {
    MlaRun r;
    mla_run(&r, 0);
    for (int s = 0; s < ML_T; s++) {
        double qa[5 * ML_H * (ML_DC + ML_DR)];
        absorbed_queries(qa, &r, s);
        for (int h = 0; h < ML_H; h++) {
            double want[ML_DV];
            to_double(want, r.naive[s] + h * ML_DV, ML_DV);
            const float *got = r.absorbed[s] + h * ML_DV;
            if (scaled_err(got, want, ML_DV) < 1e-4) continue;
            // what each mistaken query would give: softmax over the cached rows, then W_UV[h] u_h; and
            // (variant 5) the right query of head 0 for every head: ex05.1 reading head 0's u
            double var[6][ML_DV], uni[ML_DV];
            for (int v = 0; v < 6; v++) {
                double u[ML_DC];
                const double *qv = v == 5 ? qa : qa + ((size_t)v * ML_H + h) * (ML_DC + ML_DR);
                attend_d(u, qv, &r.lat[0][0], ML_DC + ML_DR, &r.lat[0][0], ML_DC + ML_DR, s + 1, ML_DC + ML_DR, ML_DC,
                         1.0 / sqrt((double)(ML_DN + ML_DR)));
                project_d(var[v], w_uv(&r, h), u);
            }
            double zero[ML_DC + ML_DR] = {0}, u0[ML_DC];
            attend_d(u0, zero, &r.lat[0][0], ML_DC + ML_DR, &r.lat[0][0], ML_DC + ML_DR, s + 1, ML_DC + ML_DR, ML_DC, 1.0);
            project_d(uni, w_uv(&r, h), u0);
            static const char *why[6] = {
                "", "It matches a query without its RoPE part: row h of c->qabs is [q_lat (dc) | q_pe (dr)], and q_pe scores the cached k_pe",
                "It matches a query with only its RoPE part: q_lat = W_UK[h]^T q_nope must fill the first dc values",
                "It matches W_UV's rows used for W_UK: W_UK[h] is the FIRST dn rows of head h's block of wkv_b",
                "It matches head 0's W_UK for every head: W_UK[h] starts h*(dn+dv)*dc floats into wkv_b",
                "It matches head 0's weighted sum for every head: the output side (ex05.1) must read u_h at c->u + h*dc"};
            int v = which_variant(got, &var[0][0], 6, ML_DV, 1e-4);
            const char *hint = v > 0 ? why[v]
                               : scaled_err(got, uni, ML_DV) < 1e-4
                                   ? "Every key got the same weight, as if the absorbed query were zero: fill row h of c->qabs"
                               : s == 0 ? "At step 0 (one key) the query cannot matter: the output side (ex05.1) is wrong"
                                        : "q_lat[c] = sum_i q_nope[i] W_UK[h][i][c] (W_UK transposed: dn rows of dc), then q_pe";
            cr_assert(0, "step %d, head %d: the absorbed decode gives %.5g, the naive decode %.5g (first value). %s", s, h,
                      (double)got[0], want[0], hint);
        }
    }
    mla_free(&r);
}

// ===================================================================================================
// ex06.1  attn_keys_span (common/attention.c): a ring buffer's keys as at most two runs of rows
// ===================================================================================================

Test(ex06_1, positions_to_runs_of_rows) {
    for (int cap = 1; cap <= 6; cap++)
        for (int base = 0; base <= 3; base++)
            for (int lo = base; lo <= base + 8; lo++)
                for (int hi = lo - 1; hi <= lo + cap - 1; hi++) {
                    AttnKeys ks;
                    memset(&ks, 0x55, sizeof ks);
                    attn_keys_span(&ks, lo, hi, base, cap);
                    int n = hi - lo + 1;
                    cr_assert(ks.n == n, "positions %d..%d (ring of %d rows, base %d): n = %d, want %d keys", lo, hi, cap, base, ks.n, n);
                    cr_assert(ks.len[0] >= 0 && ks.len[1] >= 0 && ks.len[0] + ks.len[1] == n,
                              "positions %d..%d: the runs hold %d + %d keys, want %d in all", lo, hi, ks.len[0], ks.len[1], n);
                    cr_assert(ks.len[0] == 0 || (ks.start[0] >= 0 && ks.start[0] + ks.len[0] <= cap),
                              "positions %d..%d in a ring of %d rows: the first run, rows %d..%d, goes past the last row: it must stop at row %d, and the rest wraps to row 0 as the second run",
                              lo, hi, cap, ks.start[0], ks.start[0] + ks.len[0] - 1, cap - 1);
                    cr_assert(ks.len[1] == 0 || (ks.start[1] >= 0 && ks.start[1] + ks.len[1] <= cap), "positions %d..%d: the second run leaves the buffer", lo, hi);
                    for (int j = 0; j < n; j++) {
                        int row = j < ks.len[0] ? ks.start[0] + j : ks.start[1] + (j - ks.len[0]), want = (lo + j - base) % cap;
                        cr_assert(row == want, "positions %d..%d in a ring of %d rows (position p lives in row (p - base) %% cap, base %d): key %d (position %d) is read from row %d, want row %d",
                                  lo, hi, cap, base, j, lo + j, row, want);
                    }
                }
}

Test(ex06_1, local_layer_decode_reads_the_last_window) {
    int H = 2, G = 1, dh = 4, W = 3, T = 9;
    Steps s = run_steps(H, G, dh, W, T, T, 66);
    for (int t = 0; t < T; t++) {
        size_t want_bytes = sizeof(float) * 2 * (size_t)G * dh * (size_t)(t + 1 < W ? t + 1 : W);
        cr_assert(s.bytes[t] == want_bytes, "window %d: after %d tokens the cache holds %zu bytes, want %zu (it stops growing at W tokens)", W,
                  t + 1, s.bytes[t], want_bytes);
        int lo = t - W + 1 > 0 ? t - W + 1 : 0;
        for (int h = 0; h < H; h++) {
            double want[4];
            step_ref(want, &s, t, h, 0, lo, t);
            cr_assert(scaled_err(s.o + (size_t)t * H * dh + (size_t)h * dh, want, dh) < 1e-5,
                      "window %d, ring of %d rows: decode step %d (head %d) differs from attention over positions %d..%d, which sit in rows %d..%d of the ring (position p in row p %% %d)",
                      W, W, t, h, lo, t, lo % W, t % W, W);
        }
    }
    free_steps(&s);
}

// ===================================================================================================
// ex07.1  dsa_select_topk (chapters/07_dsa/dsa.c)
// ===================================================================================================

static int ranks_before_d(const float *s, int a, int b) { return s[a] > s[b] || (s[a] == s[b] && a < b); }

static void topk_check(const float *s, int n, int topk, const char *what) {
    int sel[64], work[64];
    memset(sel, 0xff, sizeof sel);
    int k = topk < n ? topk : n, got = dsa_select_topk(sel, work, s, n, topk);
    cr_assert(got == k, "%s, n %d, top-%d: returned %d, want k = min(topk, n) = %d", what, n, topk, got, k);
    for (int i = 1; i < k; i++)
        cr_assert(sel[i - 1] < sel[i], "%s: sel must list the chosen keys in ascending order (the attention reads them in position order), got sel[%d] = %d then sel[%d] = %d",
                  what, i - 1, sel[i - 1], i, sel[i]);
    for (int j = 0; j < n; j++) {
        int before = 0, has = 0;
        for (int i = 0; i < n; i++) before += ranks_before_d(s, i, j);
        for (int i = 0; i < k; i++) has |= sel[i] == j;
        int want = before < k;
        cr_assert(has == want, "%s, n %d, top-%d: key %d (score %.4g) %s. %s", what, n, topk, j, (double)s[j],
                  want ? "is among the best but was not chosen" : "was chosen but is not among the best",
                  before == k - 1 || before == k ? "Ties go to the lower index: a key ranks before another with a larger score, or the same score and a smaller index."
                                                 : "Keep the k largest scores.");
    }
}

Test(ex07_1, keeps_the_k_largest_in_ascending_order) {
    float s[10] = {0.1f, 0.9f, -0.3f, 0.5f, 0.8f, 0.0f, 0.7f, 0.2f, -1.0f, 0.6f};
    topk_check(s, 10, 3, "scores 0.1 0.9 -0.3 0.5 0.8 0 0.7 0.2 -1 0.6");
    topk_check(s, 10, 1, "the same scores");
    topk_check(s, 4, 9, "four keys, top-9 (every key)");
    Rng r;
    rng_seed(&r, 707);
    float rs[64];
    for (int trial = 0; trial < 60; trial++) {
        int n = 1 + (int)rng_below(&r, 64), topk = 1 + (int)rng_below(&r, 70);
        for (int i = 0; i < n; i++) rs[i] = rng_normal(&r);
        topk_check(rs, n, topk, "random scores");
    }
}

Test(ex07_1, ties_go_to_the_lower_index) {
    float eq[8] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    topk_check(eq, 8, 3, "eight equal scores");
    float few[9] = {1, 2, 2, 0, 2, 1, 2, 0, 1};
    topk_check(few, 9, 2, "scores 1 2 2 0 2 1 2 0 1");
    topk_check(few, 9, 5, "scores 1 2 2 0 2 1 2 0 1");
}

// ===================================================================================================
// ex08.1  the output gate, ex08.2  partial RoPE (chapters/08_gated/gated.c)
// ===================================================================================================

// d 8 = H 2 * dh 4, one KV head, no QK norm, every dim rotating: the gated layer is the GQA layer with
// the same q, k, v rows except for its gate, and with Wo the identity its output is o * gate.
static void gate_check(int gate) {
    int H = 2, G = 1, dh = 4, d = H * dh, T = 5, gw = gate == GATE_ELEMENTWISE ? dh : gate == GATE_HEADWISE ? 1 : 0;
    ModelGeometry gg, gq;
    attn_geom(&gq, H, G, dh, 0);
    gg = gq;
    gg.attn_output_gate = gate;
    gg.qk_norm = QK_NORM_NONE;
    gg.partial_rotary_factor = 1.0;
    Mixer mg = {.ops = &gated_mixer, .g = &gg, .layer = 0}, mq = {.ops = &gqa_mixer, .g = &gq, .layer = 0};
    Rng r;
    rng_seed(&r, 808 + gate);
    size_t npg = mixer_n_params(&gated_mixer, &gg, 0), npq = mixer_n_params(&gqa_mixer, &gq, 0);
    float *pg = test_randn(&r, npg, 0.7f), *pq = callocCheck(npq, sizeof(float)), *x = test_randn(&r, (size_t)T * d, 1.0f);
    ParamTensor tg[8], tq[8];
    int ng = gated_mixer.param_tensors(&gg, 0, tg, 8), nq = gqa_mixer.param_tensors(&gq, 0, tq, 8);
    const ParamTensor *wqg = test_find_param(tg, ng, "wq"), *wog = test_find_param(tg, ng, "wo");
    for (int h = 0; h < H; h++)   // gated wq rows per head: [q_h (dh) | g_h (gw)]
        memcpy(pq + test_find_param(tq, nq, "wq")->offset + (size_t)h * dh * d, pg + wqg->offset + (size_t)h * (dh + gw) * d,
               sizeof(float) * (size_t)dh * d);
    memcpy(pq + test_find_param(tq, nq, "wk")->offset, pg + test_find_param(tg, ng, "wk")->offset, sizeof(float) * (size_t)G * dh * d);
    memcpy(pq + test_find_param(tq, nq, "wv")->offset, pg + test_find_param(tg, ng, "wv")->offset, sizeof(float) * (size_t)G * dh * d);
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) pg[wog->offset + (size_t)i * d + j] = pq[test_find_param(tq, nq, "wo")->offset + (size_t)i * d + j] = i == j;
    float *ag = mallocCheck(sizeof(float) * gated_mixer.act_floats(&gg, 0, 1, T)), *aq = mallocCheck(sizeof(float) * gqa_mixer.act_floats(&gq, 0, 1, T));
    float *og = mallocCheck(sizeof(float) * T * d), *oq = mallocCheck(sizeof(float) * T * d);
    gated_mixer.forward(&mg, og, ag, x, pg, 1, T);
    gqa_mixer.forward(&mq, oq, aq, x, pq, 1, T);
    // the raw gate values g, straight from the projection: row t, head h, at [q_h | g_h] + dh
    const char *name = gate == GATE_ELEMENTWISE ? "elementwise gate" : gate == GATE_HEADWISE ? "headwise gate" : "no gate";
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++)
            for (int c = 0; c < dh; c++) {
                double graw = 0.0, gc = 0.0;
                if (gw) {
                    const float *row = pg + wqg->offset + ((size_t)h * (dh + gw) + dh + (gw == 1 ? 0 : c)) * d;
                    for (int i = 0; i < d; i++) graw += (double)row[i] * x[(size_t)t * d + i];
                    const float *row_c = pg + wqg->offset + ((size_t)h * (dh + gw) + dh + c % gw) * d;
                    for (int i = 0; i < d; i++) gc += (double)row_c[i] * x[(size_t)t * d + i];
                }
                double o = oq[(size_t)t * d + h * dh + c], want = gw ? o / (1.0 + exp(-graw)) : o;
                double got = og[(size_t)t * d + h * dh + c];
                if (fabs(got - want) <= 1e-5 * fmax(1.0, fabs(want))) continue;
                const char *hint = "the head's output times sigmoid(its gate) for this channel";
                if (fabs(got - o) <= 1e-5 * fmax(1.0, fabs(o)))
                    hint = gw ? "It equals the ungated output: the gate never acts. Multiply by sigmoid(g)." : "It should equal the ungated output: without a gate (gw = 0) the factor is 1.";
                else if (fabs(got - o * graw) <= 1e-5 * fmax(1.0, fabs(o * graw)))
                    hint = "It equals o * g: the factor is sigmoid(g), between 0 and 1 (sigmoidf_ in mathx.h).";
                else if (fabs(got - o * graw / (1.0 + exp(-graw))) <= 1e-5 * fmax(1.0, fabs(o)))
                    hint = "It equals o * silu(g): the gate is sigmoid(g), not silu(g).";
                else if (gw == 1 && fabs(got - o / (1.0 + exp(-gc))) <= 1e-5 * fmax(1.0, fabs(o)))
                    hint = "A headwise gate has ONE value per head, gh[0], for all of the head's channels.";
                cr_assert(0, "%s: token %d, head %d, channel %d: output %.5g, want o * sigmoid(g) = %.5g * %.5g = %.5g. %s", name, t, h, c, got,
                          o, gw ? 1.0 / (1.0 + exp(-graw)) : 1.0, want, hint);
            }
    free(pg); free(pq); free(x); free(ag); free(aq); free(og); free(oq);
}

Test(ex08_1, elementwise_gate) { gate_check(GATE_ELEMENTWISE); }
Test(ex08_1, headwise_gate) { gate_check(GATE_HEADWISE); }
Test(ex08_1, no_gate) { gate_check(GATE_NONE); }

// One head vector through gated_rope against the rotation in double; variants name the usual mistakes.
static void partial_rope_check(int dh, double frac, int local) {
    ModelGeometry g;
    attn_geom(&g, 2, 1, dh, local ? 4 : 0);
    g.attn_output_gate = GATE_ELEMENTWISE;
    g.partial_rotary_factor = frac;
    g.rope_theta = 10000.0;
    g.rope_local_theta = local ? 100.0 : 0.0;
    int rot = gated_rotary_dims(&g), half = rot / 2;
    double theta = local ? 100.0 : 10000.0;
    Rng r;
    rng_seed(&r, 88 + dh + local);
    for (int pos = 0; pos < 20; pos += 3) {
        float x[64], y[64];
        rng_fill_normal(&r, x, dh, 1.0f);
        memcpy(y, x, sizeof(float) * dh);
        gated_rope(y, pos, &g, 0, 0);
        for (int c = rot; c < dh; c++)
            cr_assert(y[c] == x[c], "head_dim %d, partial_rotary_factor %g: dim %d changed at position %d, but only the first %d dims rotate (rot = gated_rotary_dims(g)); the others carry no position",
                      dh, frac, c, pos, rot);
        for (int i = 0; i < half; i++) {
            double ang = pos * pow(theta, -2.0 * i / rot), a = x[i] * cos(ang) - x[i + half] * sin(ang);
            double b = x[i + half] * cos(ang) + x[i] * sin(ang);
            if (fabs(y[i] - a) < 1e-5 && fabs(y[i + half] - b) < 1e-5) continue;
            const char *hint = "pair i is (i, i + rot/2), turned by pos * theta^(-2i/rot)";
            double ang_full = pos * pow(theta, -2.0 * i / dh), ang_other = pos * pow(local ? 10000.0 : 100.0, -2.0 * i / rot);
            if (y[i] == x[i] && y[i + half] == x[i + half]) hint = "Nothing turned: rotate the first rot dims.";
            else if (fabs(y[i] - (x[i] * cos(ang_full) - x[i + half] * sin(ang_full))) < 1e-5)
                hint = "The angle used head_dim: the frequencies of partial RoPE are theta^(-2i/rot), rot the rotating dims.";
            else if (local && fabs(y[i] - (x[i] * cos(ang_other) - x[i + half] * sin(ang_other))) < 1e-5)
                hint = "A local layer turns with rope_local_theta: the layer's base is mha_layer_rope_theta(g, layer).";
            else if (half > 1 && fabs(y[2 * i] - (x[2 * i] * cos(ang) - x[2 * i + 1] * sin(ang))) < 1e-5)
                hint = "Neighbouring dims (2i, 2i+1) were paired: Qwen3-Next (Hugging Face's rotate_half) pairs dim i with dim i + rot/2.";
            cr_assert(0, "head_dim %d, rot %d%s, position %d: pair (%d, %d) is (%.5g, %.5g), want (%.5g, %.5g). %s", dh, rot,
                      local ? " (a local layer, rope_local_theta 100)" : "", pos, i, i + half, (double)y[i], (double)y[i + half], a, b,
                      hint);
        }
        gated_rope(y, pos, &g, 0, 1);
        for (int c = 0; c < dh; c++)
            cr_assert(fabsf(y[c] - x[c]) < 1e-5f, "position %d: turning with inverse = 1 must undo the rotation (angle -pos * freq), dim %d is %.5g, was %.5g",
                      pos, c, (double)y[c], (double)x[c]);
    }
}

Test(ex08_2, only_the_first_rot_dims_turn) {
    partial_rope_check(16, 0.25, 0);   // Qwen3-Next's quarter: 4 of 16
    partial_rope_check(8, 0.5, 0);
    partial_rope_check(8, 0.5, 1);     // a local layer turns with rope_local_theta
}

// Decode rotates with gated_rope, the training forward with its own copy of the rotation: they must agree.
Test(ex08_2, decode_equals_the_forward) {
    int T = 6;
    ModelGeometry g;
    attn_geom(&g, 2, 1, 8, 0);
    g.attn_output_gate = GATE_ELEMENTWISE;
    g.qk_norm = QK_NORM_ZERO_CENTRED;
    g.partial_rotary_factor = 0.5;
    Mixer m = {.ops = &gated_mixer, .g = &g, .layer = 0};
    Rng r;
    rng_seed(&r, 818);
    int d = g.d_model;
    float *params = test_randn(&r, mixer_n_params(&gated_mixer, &g, 0), 0.5f), *x = test_randn(&r, (size_t)T * d, 1.0f);
    float *full = mallocCheck(sizeof(float) * T * d), *step = mallocCheck(sizeof(float) * d);
    float *act = mallocCheck(sizeof(float) * gated_mixer.act_floats(&g, 0, 1, T));
    gated_mixer.forward(&m, full, act, x, params, 1, T);
    MixerCache *c = gated_mixer.cache_new(&m, T);
    for (int t = 0; t < T; t++) {
        gated_mixer.decode(&m, c, step, x + (size_t)t * d, params);
        for (int i = 0; i < d; i++)
            cr_assert(fabsf(step[i] - full[t * d + i]) <= 1e-4f * fmaxf(1.0f, fabsf(full[t * d + i])),
                      "gated attention, half of each head rotating: decode step %d differs from the forward (%.5g vs %.5g): decode turns q and k with gated_rope, at the token's position",
                      t, (double)step[i], (double)full[t * d + i]);
    }
    gated_mixer.cache_free(c);
    free(params); free(x); free(full); free(step); free(act);
}

// ===================================================================================================
// ex09.1  the delta rule, one token (chapters/09_gdn/gdn.c, token_step)
// ===================================================================================================

// The delta rule in double over T tokens, one value head reading key head 0, and the usual mistakes:
// 0 right, 1 no decay, 2 no beta, 3 decay after the write, 4 S^T k from the undecayed state, 5 o read
// before the write, 6 (per-channel decay) channel 0's decay for every row. o (7, T, dv).
static void delta_variants(double *o, const float *q, const float *k, const float *v, const float *beta, const float *g,
                           int g_dim, int T, int dk, int dv, size_t qk_stride, size_t v_stride, int Hv, int h) {
    for (int var = 0; var < 7; var++) {
        double S[8][8] = {{0}};
        for (int t = 0; t < T; t++) {
            const float *qt = q + (size_t)t * qk_stride, *kt = k + (size_t)t * qk_stride, *vt = v + (size_t)t * v_stride + (size_t)h * dv;
            const float *gt = g + ((size_t)t * Hv + h) * g_dim;
            double b = var == 2 ? 1.0 : beta[(size_t)t * Hv + h], a[8], Sold[8][8], u[8];
            for (int c = 0; c < dk; c++) a[c] = var == 1 ? 1.0 : exp(gt[g_dim == 1 || var == 6 ? 0 : c]);
            memcpy(Sold, S, sizeof S);
            if (var != 3)
                for (int c = 0; c < dk; c++)
                    for (int e = 0; e < dv; e++) S[c][e] *= a[c];
            for (int e = 0; e < dv; e++) {
                double sk = 0.0;
                for (int c = 0; c < dk; c++) sk += (var == 4 ? Sold[c][e] : S[c][e]) * kt[c];
                u[e] = b * (vt[e] - sk);
            }
            double *ot = o + ((size_t)var * T + t) * dv;
            if (var == 5)
                for (int e = 0; e < dv; e++) {
                    ot[e] = 0.0;
                    for (int c = 0; c < dk; c++) ot[e] += S[c][e] * qt[c];
                }
            for (int c = 0; c < dk; c++)
                for (int e = 0; e < dv; e++) S[c][e] += kt[c] * u[e];
            if (var == 3)
                for (int c = 0; c < dk; c++)
                    for (int e = 0; e < dv; e++) S[c][e] *= a[c];
            if (var != 5)
                for (int e = 0; e < dv; e++) {
                    ot[e] = 0.0;
                    for (int c = 0; c < dk; c++) ot[e] += S[c][e] * qt[c];
                }
        }
    }
}

static void delta_check(int g_dim) {
    int T = 6, Hk = 1, Hv = 2, dk = 3, dv = 4;
    DeltaDims z = {.B = 1, .T = T, .Hk = Hk, .Hv = Hv, .dk = dk, .dv = dv, .g_dim = g_dim, .qk_stride = Hk * dk, .v_stride = Hv * dv};
    Rng r;
    rng_seed(&r, 909 + g_dim);
    float *q = test_randn(&r, (size_t)T * dk, 0.6f), *k = test_randn(&r, (size_t)T * dk, 0.6f);
    float *v = test_randn(&r, (size_t)T * Hv * dv, 1.0f), beta[12], g[6 * 2 * 3];
    for (int i = 0; i < T * Hv; i++) beta[i] = 0.2f + 0.6f * rng_uniform(&r);
    for (int i = 0; i < T * Hv * g_dim; i++) g[i] = -0.05f - 0.6f * rng_uniform(&r);
    float *o = callocCheck((size_t)T * Hv * dv, sizeof(float)), S[2 * 3 * 4];
    memset(S, 0, sizeof S);
    delta_rule_recurrent(o, S, q, k, v, beta, g, &z);
    const char *name = g_dim == 1 ? "Gated DeltaNet (one decay per head)" : "KDA (one decay per key channel)";
    static const char *why[7] = {
        "", "It matches the rule without the decay: first S <- Diag(exp(g)) S (alpha = exp(g) in (0, 1)).",
        "It matches the rule without beta: the write is u = beta (v - S^T k).",
        "It matches decaying AFTER the write: decay first, then read S^T k and write.",
        "It matches S^T k read from the state before its decay: decay S first, then compute v - S^T k from it.",
        "It matches reading o before this token's write: o = S^T q comes from the updated state.",
        "It matches one decay for every row: with g_dim = dk, row c of S decays by exp(g[c])."};
    for (int h = 0; h < Hv; h++) {
        double var[7 * 6 * 4];
        delta_variants(var, q, k, v, beta, g, g_dim, T, dk, dv, (size_t)Hk * dk, (size_t)Hv * dv, Hv, h);
        for (int t = 0; t < T; t++) {
            float got[4];
            for (int e = 0; e < dv; e++) got[e] = o[((size_t)t * Hv + h) * dv + e];
            if (scaled_err(got, var + (size_t)t * dv, dv) < 1e-5) continue;
            float all[6 * 4];
            for (int s = 0; s < T; s++)
                for (int e = 0; e < dv; e++) all[s * dv + e] = o[((size_t)s * Hv + h) * dv + e];
            int v_ = which_variant(all, var, g_dim == 1 ? 6 : 7, T * dv, 1e-5);
            char b1[160];
            cr_assert(0, "%s, dk %d, dv %d: token %d, value head %d gives o = %s, want %.5g, %.5g, %.5g, %.5g. %s", name, dk, dv, t, h,
                      show(b1, sizeof b1, got, dv), var[t * dv], var[t * dv + 1], var[t * dv + 2], var[t * dv + 3],
                      v_ > 0 ? why[v_]
                             : t == 0 ? "At token 0 the state is zero: S = k (beta v)^T, so o = (q . k) beta v."
                                      : "Per token: S <- exp(g) S; u = beta (v - S^T k); S <- S + k u^T; o = S^T q.");
        }
    }
    free(q); free(k); free(v); free(o);
}

// The chunked form (what training runs) is separate code: it must agree with the token-by-token rule.
static void delta_chunked_check(void) {
    int T = 11, dk = 4, dv = 4;
    DeltaDims z = {.B = 1, .T = T, .Hk = 1, .Hv = 1, .dk = dk, .dv = dv, .g_dim = 1, .qk_stride = dk, .v_stride = dv};
    Rng r;
    rng_seed(&r, 919);
    float *q = test_randn(&r, (size_t)T * dk, 0.5f), *k = test_randn(&r, (size_t)T * dk, 0.5f), *v = test_randn(&r, (size_t)T * dv, 1.0f);
    float beta[11], g[11], o1[44], o2[44];
    for (int i = 0; i < T; i++) {
        beta[i] = 0.3f + 0.5f * rng_uniform(&r);
        g[i] = -0.1f - 0.5f * rng_uniform(&r);
    }
    delta_rule_recurrent(o1, NULL, q, k, v, beta, g, &z);
    delta_rule_chunked(o2, NULL, q, k, v, beta, g, &z, 4);
    for (int i = 0; i < T * dv; i++)
        cr_assert(fabsf(o1[i] - o2[i]) < 1e-4f * fmaxf(1.0f, fabsf(o2[i])),
                  "token %d: the token-by-token rule gives %.5g, the chunked form (training's) %.5g. Per token: S <- exp(g) S; u = beta (v - S^T k); S <- S + k u^T; o = S^T q.",
                  i / dv, (double)o1[i], (double)o2[i]);
    free(q); free(k); free(v);
}

Test(ex09_1, gated_deltanet_one_decay_per_head) {
    delta_check(1);
    delta_chunked_check();
}
Test(ex09_1, kda_one_decay_per_key_channel) { delta_check(3); }

// ===================================================================================================
// ex10.1  Lightning's slopes (lightning.c), ex10.2  Mamba-2's discretisation (mamba2.c)
// ===================================================================================================

static void lightning_geom(ModelGeometry *g, int L, int H) {
    geometry_init(g, "exercise lightning", L, 32, 2, 2);
    for (int l = 0; l < L; l++) g->layer_kind[l] = LAYER_LINEAR;
    lightning_geometry_set(g, H, 8);
}

Test(ex10_1, slopes_follow_minimax) {
    for (int L = 1; L <= 5; L += 4)
        for (int H = 4; H <= 8; H += 4) {
            ModelGeometry g;
            lightning_geom(&g, L, H);
            for (int l = 0; l < L; l++)
                for (int h = 0; h < H; h++) {
                    double base = pow(2.0, -8.0 / H), factor = 1.0 - l / ((L - 1) + 1e-5) + 1e-5, want = pow(base, h + 1) * factor;
                    double got = lightning_slope(&g, l, h);
                    if (fabs(got - want) <= 1e-9 * want) continue;
                    const char *hint = "s_h = (2^(-8/H))^(h+1) * (1 - l/(L-1+1e-5) + 1e-5)";
                    if (fabs(got - pow(base, h) * factor) <= 1e-9 * want * 8) hint = "Head h uses the power h+1 of the base: head 0 already decays.";
                    else if (fabs(got - pow(base, h + 1)) <= 1e-9) hint = "The layer factor is missing: deeper layers forget more slowly, times (1 - l/(L-1+1e-5) + 1e-5).";
                    else if (fabs(got - pow(2.0, -8.0 * (h + 1))) <= 1e-9) hint = "The base is 2^(-8/H), H the number of heads (the ALiBi slopes).";
                    else if (!isfinite(got)) hint = "With one layer L - 1 = 0: the 1e-5 in the denominator keeps it finite.";
                    cr_assert(0, "%d layer%s of %d heads: layer %d, head %d: slope %.9g, want %.9g. %s", L, L > 1 ? "s" : "", H, l, h, got,
                              want, hint);
                }
        }
}

Test(ex10_1, decay_profile_follows_the_slopes) {
    ModelGeometry g;
    lightning_geom(&g, 3, 4);
    float prof[4 * 8];
    lightning_decay_profile(prof, &g, 1, 8);
    for (int h = 0; h < 4; h++) {
        double s = pow(pow(2.0, -2.0), h + 1) * (1.0 - 1.0 / (2 + 1e-5) + 1e-5);
        for (int rr = 0; rr < 8; rr++)
            cr_assert(fabs(prof[h * 8 + rr] - exp(-s * rr)) < 1e-6, "layer 1 of 3, head %d: a token %d back keeps %.6g of its weight, want exp(-s r) = %.6g",
                      h, rr, (double)prof[h * 8 + rr], exp(-s * rr));
    }
}

// Mamba-2: a small layer from the PyTorch reference (tests/golden/linear.safetensors, case mamba2_a);
// the decay between neighbours, D[h][t][t-1] = exp(Delta_t A_h), is checked against Delta recomputed
// here, then the whole output against PyTorch's.
Test(ex10_2, delta_and_decay) {
    SafeTensors st;
    test_golden_load(&st, "linear.safetensors", "golden_linear.py");
    const char *cs = "mamba2_a";
    int B = test_golden_int(&st, cs, "B"), T = test_golden_int(&st, cs, "T"), d = test_golden_int(&st, cs, "d_model");
    int H = test_golden_int(&st, cs, "heads"), P = test_golden_int(&st, cs, "head_dim"), N = test_golden_int(&st, cs, "state");
    int Gn = test_golden_int(&st, cs, "groups"), K = test_golden_int(&st, cs, "conv");
    ModelGeometry g;
    geometry_init(&g, "exercise mamba2", 2, d, 2, 2);
    for (int l = 0; l < 2; l++) g.layer_kind[l] = LAYER_LINEAR;
    mamba2_geometry_set(&g, H, P, Gn, N, K);
    g.dtype_bytes = g.state_dtype_bytes = 4;
    Mixer m = {.ops = &mamba2_mixer, .g = &g, .layer = 1};
    size_t np = mixer_n_params(&mamba2_mixer, &g, 1), nx = (size_t)B * T * d;
    float *params = mallocCheck(sizeof(float) * np);
    ParamTensor t[8];
    int n = mamba2_mixer.param_tensors(&g, 1, t, 8);
    test_golden_params(params, &st, cs, t, n);
    int64_t sx[3] = {B, T, d};
    const float *x = test_golden(&st, cs, "x", 3, sx), *want = test_golden(&st, cs, "out", 3, sx);
    float *out = mallocCheck(sizeof(float) * nx), *act = mallocCheck(sizeof(float) * mamba2_mixer.act_floats(&g, 1, B, T));
    float *D = mallocCheck(sizeof(float) * (size_t)H * T * T);
    mamba2_mixer.forward(&m, out, act, x, params, B, T);
    mamba2_decay_matrix(D, &m, act, T);
    const float *in = params + test_find_param(t, n, "in_proj")->offset, *dt_bias = params + test_find_param(t, n, "dt_bias")->offset;
    const float *A_log = params + test_find_param(t, n, "A_log")->offset;
    int dt_row = 2 * H * P + 2 * Gn * N;   // in_proj rows: z (H*P), xBC (H*P + 2*G*N), dt (H)
    for (int tt = 1; tt < T; tt++)
        for (int h = 0; h < H; h++) {
            double raw = 0.0;
            for (int i = 0; i < d; i++) raw += (double)in[(size_t)(dt_row + h) * d + i] * x[(size_t)tt * d + i];
            double u = raw + dt_bias[h], delta = u > 20 ? u : log1p(exp(u)), A = -exp(A_log[h]);
            double wantD = exp(delta * A), got = D[((size_t)h * T + tt) * T + tt - 1];
            if (fabs(got - wantD) <= 1e-5) continue;
            double no_bias = log1p(exp(raw));
            const char *hint = "Delta = softplus(dt + dt_bias), A_h = -exp(A_log_h), and the log-decay g = Delta A_h";
            if (fabs(got - exp(no_bias * A)) <= 1e-5) hint = "It matches Delta without dt_bias: add dt_bias[h] to u before the softplus.";
            else if (fabs(got - exp(u * A)) <= 1e-5) hint = "It matches Delta = dt + dt_bias without the softplus: Delta = softplus(u) = log(1 + e^u) keeps it positive.";
            else if (fabs(got - exp(-delta * A)) <= 1e-5 || got > 1.0) hint = "The state grows instead of decaying: A_h = -exp(A_log_h) is negative, so g = Delta A_h < 0.";
            else if (fabs(got - exp(delta * A_log[h])) <= 1e-5) hint = "A_h is -exp(A_log_h), not A_log_h itself.";
            else if (fabs(got - exp(exp(delta * A))) <= 1e-5) hint = "g is the LOG-decay Delta A_h: the core takes exp(g) itself.";
            cr_assert(0, "head %d, token %d: the decay from token %d is %.6g, want exp(Delta A_h) = exp(%.5g * %.5g) = %.6g. %s", h, tt, tt - 1, got,
                      delta, A, wantD, hint);
        }
    for (size_t i = 0; i < nx; i++)
        cr_assert(fabsf(out[i] - want[i]) <= 1e-5f * fmaxf(1.0f, fabsf(want[i])),
                  "the decays are right but the layer's output differs from the PyTorch reference (%.6g vs %.6g at token %zu): is v = Delta x, each head's P values of x times its own Delta?",
                  (double)out[i], (double)want[i], i / d % T);
    free(params); free(out); free(act); free(D);
    st_free(&st);
}

// ===================================================================================================
// ex11.1  the compressor's entry (comp_entry), ex11.2  decode keeping the partial group (comp_step),
// chapters/11_compressed/compressed.c
// ===================================================================================================

// One DeepSeek V4 layer: d 16, 2 heads of dh 8 (the last 2 dims rotating), window W, ratio m; CSA (an
// indexer of 2 heads x 4, top-2) when csa, else HCA. Random weights: matrices N(0, 0.4^2), norm gains
// 1 + N(0, 0.2^2), ape and sinks N(0, 0.5^2) (so every slot's positional bias differs).
enum { CX_D = 16, CX_H = 2, CX_DH = 8, CX_MAX_T = 16 };
typedef struct {
    ModelGeometry g;
    Mixer mx;
    float *params;
    ParamTensor t[24];
    int nt;
} CxLayer;

static void cx_layer(CxLayer *L, int W, int m, int csa, uint64_t seed) {
    v4_geometry_tiny(&L->g, 1, CX_D, CX_H, CX_DH, W);
    L->g.max_seq_len = 64;
    L->g.vocab_size = 8;
    if (csa) {
        L->g.index_n_heads = 2;
        L->g.index_head_dim = 4;
        L->g.index_topk = 2;
    }
    v4_set_layer(&L->g, 0, m, csa);
    L->mx = (Mixer){.ops = v4_mixer_of(&L->g, 0), .g = &L->g, .layer = 0};
    Rng r;
    rng_seed(&r, seed);
    L->params = test_randn(&r, mixer_n_params(L->mx.ops, &L->g, 0), 0.4f);
    L->nt = L->mx.ops->param_tensors(&L->g, 0, L->t, 24);
    for (int i = 0; i < L->nt; i++) {
        size_t sz = test_tensor_size(&L->t[i]);
        float *p = L->params + L->t[i].offset;
        if (strstr(L->t[i].name, "ape") || strstr(L->t[i].name, "sink"))
            for (size_t k = 0; k < sz; k++) p[k] = 0.5f * rng_normal(&r);
        else if (L->t[i].ndim == 1)
            for (size_t k = 0; k < sz; k++) p[k] = 1.0f + 0.2f * rng_normal(&r);
    }
}

static const float *cx_param(const CxLayer *L, const char *name) { return L->params + test_find_param(L->t, L->nt, name)->offset; }

// The main compressor's share of token j in entry s (the weights averaged over the dh channels), in
// double, the way variant v computes the weights: 0 right, 1 CSA without the previous group, 2 CSA with
// the two groups' channel halves swapped, 3 CSA with both groups reading channel j. share (Tc, T).
enum { SHARE_RIGHT, SHARE_NO_PREVIOUS, SHARE_SWAPPED, SHARE_SAME_CHANNEL, N_SHARE };
static void cx_share_d(double *share, const CxLayer *L, const float *x, int T, int v) {
    int m = L->g.compress_ratios[0], c = geometry_layer_is_csa(&L->g, 0) ? 2 : 1, w = c * CX_DH, Tc = T / m;
    const float *wg = cx_param(L, "compressor.wgate"), *ape = cx_param(L, "compressor.ape");
    double Z[CX_MAX_T][2 * CX_DH];   // Z = x Wgate^T + ape[t mod m]
    for (int t = 0; t < T; t++)
        for (int k = 0; k < w; k++) {
            Z[t][k] = ape[(size_t)(t % m) * w + k];
            for (int i = 0; i < CX_D; i++) Z[t][k] += (double)wg[(size_t)k * CX_D + i] * x[(size_t)t * CX_D + i];
        }
    memset(share, 0, sizeof(double) * (size_t)Tc * T);
    for (int s = 0; s < Tc; s++)
        for (int j = 0; j < CX_DH; j++) {
            // the entry's tokens and the channel each is read at
            int tok[2 * CX_MAX_T], ch[2 * CX_MAX_T], n = 0;
            int prev = c == 2 && s > 0 && v != SHARE_NO_PREVIOUS;
            int prev_ch = v == SHARE_SWAPPED ? CX_DH + j : j;
            int cur_ch = c == 1 || v == SHARE_SAME_CHANNEL ? j : v == SHARE_SWAPPED ? j : CX_DH + j;
            if (prev)
                for (int t = 0; t < m; t++) tok[n] = (s - 1) * m + t, ch[n++] = prev_ch;
            for (int t = 0; t < m; t++) tok[n] = s * m + t, ch[n++] = cur_ch;
            double mx = -INFINITY, sum = 0.0;
            for (int i = 0; i < n; i++) mx = fmax(mx, Z[tok[i]][ch[i]]);
            for (int i = 0; i < n; i++) sum += exp(Z[tok[i]][ch[i]] - mx);
            for (int i = 0; i < n; i++) share[(size_t)s * T + tok[i]] += exp(Z[tok[i]][ch[i]] - mx) / sum / CX_DH;
        }
}

static void entry_share_check(int csa) {
    int m = csa ? 2 : 3, T = 12, Tc = T / m;
    CxLayer L;
    cx_layer(&L, 3, m, csa, csa ? 1101 : 1102);
    Rng r;
    rng_seed(&r, 1103);
    float *x = test_randn(&r, (size_t)T * CX_D, 1.0f), *out = mallocCheck(sizeof(float) * (size_t)T * CX_D);
    float *act = callocCheck(L.mx.ops->act_floats(&L.g, 0, 1, T), sizeof(float));
    float got[CX_MAX_T * CX_MAX_T];
    double want[N_SHARE][CX_MAX_T * CX_MAX_T];
    L.mx.ops->forward(&L.mx, out, act, x, L.params, 1, T);
    compressed_entry_share(&L.mx, got, act, 1, T);
    for (int v = 0; v < N_SHARE; v++) cx_share_d(want[v], &L, x, T, v);
    const char *layer = csa ? "CSA (m 2: entry s mixes groups s-1 and s, 4 tokens)" : "HCA (m 3: entry s mixes its own group of 3)";
    for (int s = 0; s < Tc; s++) {
        double sum = 0.0;
        int zero = 1;
        for (int j = 0; j < T; j++) sum += got[s * T + j], zero = zero && got[s * T + j] == 0.0f;
        cr_assert(!zero, "%s: entry %d has no weights at all (wts is all zeros): write each token's weight for channel j at wts[(slot) * e + j], the slots %s",
                  layer, s, csa ? "0..m-1 the previous group, m..2m-1 the current one" : "0..m-1 the group's tokens");
        cr_assert(fabs(sum - 1.0) < 1e-4, "%s: the weights of entry %d sum to %.5g, not 1 (averaged over the channels): per channel, divide each exp(Z - max) by the sum over ALL the entry's tokens%s",
                  layer, s, sum, csa && s > 0 ? " (both groups)" : "");
        for (int j = 0; j < T; j++) {
            int i = s * T + j;
            if (fabs(got[i] - want[SHARE_RIGHT][i]) <= 1e-5) continue;
            int v = 1;
            while (v < N_SHARE && !(csa && scaled_err(got, want[v], Tc * T) < 1e-5)) v++;
            static const char *why[N_SHARE] = {
                "",
                "It matches each entry mixing only its own group: in CSA entry s > 0 also mixes group s-1 (Cp, Zp: its m rows, channel j), one softmax over all 2m tokens",
                "It matches the two groups' halves swapped: the previous group gives channel j (the first e of its c*e), the current group channel e + j ((c-1)*e + j)",
                "It matches both groups read at channel j: the current group's projections for this entry are its SECOND half, channel (c-1)*e + j"};
            cr_assert(0, "%s: token %d's share of entry %d is %.5g, want %.5g (its softmax weight, averaged over the %d channels). %s", layer, j,
                      s, (double)got[i], want[SHARE_RIGHT][i], CX_DH,
                      v < N_SHARE ? why[v]
                                  : "Per channel j: the weights are a softmax of Z over the entry's tokens (rows stride floats apart), the current group's at channel (c-1)*e + j; token t of the current group goes to slot (c-1)*m + t of wts");
        }
    }
    free(x); free(out); free(act); free(L.params);
}

// The layer's output against the PyTorch reference (tests/golden/compressed.safetensors): the entries
// are keys and values, so a slip in the weighted sum shows here once the weights are right.
static void entry_golden_check(const char *cs) {
    SafeTensors st;
    test_golden_load(&st, "compressed.safetensors", "golden_compressed.py");
    int B = test_golden_int(&st, cs, "B"), T = test_golden_int(&st, cs, "T"), d = test_golden_int(&st, cs, "d_model");
    int H = test_golden_int(&st, cs, "n_heads"), dh = test_golden_int(&st, cs, "head_dim"), m = test_golden_int(&st, cs, "compress_ratio");
    int csa = !strcmp(test_golden_meta(&st, cs, "kind"), "csa");
    ModelGeometry g;
    v4_geometry_tiny(&g, 1, d, H, dh, test_golden_int(&st, cs, "sliding_window"));
    g.partial_rotary_factor = (double)test_golden_int(&st, cs, "rotary_dims") / dh;
    g.rope_theta = atof(test_golden_meta(&st, cs, "rope_theta"));
    g.max_seq_len = T;
    if (csa) {
        g.index_n_heads = test_golden_int(&st, cs, "index_n_heads");
        g.index_head_dim = test_golden_int(&st, cs, "index_head_dim");
        g.index_topk = test_golden_int(&st, cs, "index_topk");
    }
    v4_set_layer(&g, 0, m, csa);
    Mixer mx = {.ops = v4_mixer_of(&g, 0), .g = &g, .layer = 0};
    dsa_set_phase(DSA_DENSE);   // csa_dense: every entry read, so only the entries themselves matter
    size_t np = mixer_n_params(mx.ops, &g, 0), nx = (size_t)B * T * d;
    float *params = mallocCheck(sizeof(float) * np);
    ParamTensor t[24];
    int n = mx.ops->param_tensors(&g, 0, t, 24);
    test_golden_params(params, &st, cs, t, n);
    int64_t sx[3] = {B, T, d};
    const float *x = test_golden(&st, cs, "x", 3, sx), *want = test_golden(&st, cs, "out", 3, sx);
    float *out = mallocCheck(sizeof(float) * nx), *act = callocCheck(mx.ops->act_floats(&g, 0, B, T), sizeof(float));
    mx.ops->forward(&mx, out, act, x, params, B, T);
    dsa_set_phase(DSA_SPARSE);
    for (size_t i = 0; i < nx; i++) {
        int tok = (int)(i / d % T);
        cr_assert(fabsf(out[i] - want[i]) <= 2e-5f * fmaxf(1.0f, fabsf(want[i])),
                  "%s layer (m %d, window %d): the output at token %d is %.6g, PyTorch's %.6g%s. e_raw[j] = sum over the entry's tokens of weight * C, with C read where Z was (current group: channel (c-1)*e + j, previous group: channel j) and the weights of that same channel",
                  csa ? "CSA" : "HCA", m, g.sliding_window, tok, (double)out[i], (double)want[i],
                  tok < m - 1 ? "" : ", and this token reads the entries");
    }
    free(params); free(out); free(act);
    st_free(&st);
}

// One test, so the first message is the first property that fails: the weights (HCA, then CSA's two
// groups), then the sum they weight.
Test(ex11_1, entry_weights_then_the_layers_output) {
    entry_share_check(0);
    entry_share_check(1);
    entry_golden_check("hca");
    entry_golden_check("csa_dense");
}

// Decode token by token against the full forward (which never calls comp_step): the entries completed
// after each token, then every output.
static void decode_state_check(int csa) {
    int m = csa ? 2 : 3, T = 13, W = 2;
    CxLayer L;
    cx_layer(&L, W, m, csa, csa ? 1201 : 1202);
    Rng r;
    rng_seed(&r, 1203);
    float *x = test_randn(&r, (size_t)T * CX_D, 1.0f), *full = mallocCheck(sizeof(float) * (size_t)T * CX_D);
    float *act = callocCheck(L.mx.ops->act_floats(&L.g, 0, 1, T), sizeof(float)), step[CX_D];
    dsa_set_phase(DSA_SPARSE);   // CSA: top-2 of up to 6 entries, so the indexer's keys (its own compressor) matter
    L.mx.ops->forward(&L.mx, full, act, x, L.params, 1, T);
    MixerCache *c = L.mx.ops->cache_new(&L.mx, T);
    const char *layer = csa ? "CSA (m 2, window 2)" : "HCA (m 3, window 2)";
    for (int t = 0; t < T; t++) {
        L.mx.ops->decode(&L.mx, c, step, x + (size_t)t * CX_D, L.params);
        int got_e = compressed_cache_entries(c), want_e = (t + 1) / m;
        cr_assert(got_e == want_e, "%s: after token %d the cache holds %d entries, want %d: group s (tokens %d s .. %d s + %d) completes when its LAST token arrives, (t + 1) %% m == 0, and only then does comp_step return 1",
                  layer, t, got_e, want_e, m, m, m - 1);
        double want[CX_D];
        to_double(want, full + (size_t)t * CX_D, CX_D);
        if (scaled_err(step, want, CX_D) < 1e-5) continue;
        const char *hint;
        if (want_e == 0) hint = "No entry is complete yet, so only the raw window is read: is comp_step writing outside the state (slot (c-1)*m + t % m, c*e floats per row)?";
        else if (want_e == 1 && !csa) hint = "This is the first entry read: it must mix the m rows of the group being filled (slots (c-1)*m .. c*m-1 of the state, token t at slot (c-1)*m + t % m, C and Z), finished by comp_finish at position n_ent * m, its first token";
        else if (want_e == 1) hint = "Entry 0 has no previous group: pass NULL for Cp and Zp when n_ent == 0 (the state's first m rows hold zeros, and softmax would give them weight). Its own group sits in slots m .. 2m-1";
        else if (csa) hint = "Entry 0 was right, a later one is not: after finishing an entry, the group just completed becomes the next entry's previous group (copy its m rows of C and Z to rows 0 .. m-1)";
        else hint = "A later entry is wrong: each one is finished at position n_ent * m (its first token), from its own group's rows";
        cr_assert(0, "%s: decode of token %d gives %.6g, the full forward %.6g (first value; %d entries complete). %s", layer, t,
                  (double)step[0], want[0], want_e, hint);
    }
    L.mx.ops->cache_free(c);
    free(x); free(full); free(act); free(L.params);
}

// HCA first (one group in the state), then CSA (the previous group too, and the indexer's compressor).
Test(ex11_2, decode_equals_the_forward_hca_then_csa) {
    decode_state_check(0);
    decode_state_check(1);
}

// ===================================================================================================
// ex12.1  a group's zero point and scale (asym_range, common/kvquant.c), ex12.2  KIVI's keys per channel
// ===================================================================================================

// Every finite fp16 value, ascending, so a number rounds outward by a search (independent of the
// project's own stepping).
static float fp16_all[65536];
static int fp16_n;
static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}
static void fp16_table(void) {
    if (fp16_n) return;
    for (int h = 0; h < 65536; h++) {
        float f = kvq_fp16_to((uint16_t)h);
        if (isfinite(f)) fp16_all[fp16_n++] = f;
    }
    qsort(fp16_all, (size_t)fp16_n, sizeof(float), cmp_float);
}
static float fp16_below(double x) {   // the largest fp16 <= x
    int lo = 0, hi = fp16_n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (fp16_all[mid] <= x) lo = mid; else hi = mid - 1;
    }
    return fp16_all[lo];
}
static float fp16_above(double x) {   // the smallest fp16 >= x
    int lo = 0, hi = fp16_n - 1;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (fp16_all[mid] >= x) hi = mid; else lo = mid + 1;
    }
    return fp16_all[lo];
}

enum { RANGE_RIGHT, RANGE_NEAREST, RANGE_2B_LEVELS, RANGE_UNROUNDED_Z, RANGE_MAX_ZERO, N_RANGE };
static const char *const RANGE_HINT[N_RANGE] = {
    "",
    "It matches z and s rounded to the NEAREST fp16: round outward instead (z down with fp16_down, s up with fp16_up), or the group's largest value can fall outside z + (2^B - 1) s and its code clips.",
    "It matches s = (largest - z) / 2^B: B bits give the codes 0 .. 2^B - 1, so 2^B - 1 steps go from z to the largest value.",
    "It matches s computed from the smallest value itself: the decoder adds code * s to the STORED z (fp16), so s = (largest - kvq_fp16_to(*z)) / (2^B - 1).",
    "It matches a zero point of 0 (a symmetric range): z is the group's smallest value, so a group of positive values still uses every code.",
};

// z and s (as floats) of n values x[i * stride] at B bits, the way variant v computes the range.
static void group_range(float *z, float *sc, const float *x, size_t stride, int n, int B, int v) {
    double lo = x[0], hi = x[0], top = (double)((1 << B) - 1);
    for (int i = 1; i < n; i++) lo = fmin(lo, x[(size_t)i * stride]), hi = fmax(hi, x[(size_t)i * stride]);
    switch (v) {
    case RANGE_NEAREST: *z = kvq_fp16_to(kvq_fp16_from((float)lo)); *sc = kvq_fp16_to(kvq_fp16_from((float)((hi - *z) / top))); break;
    case RANGE_2B_LEVELS: *z = fp16_below(lo); *sc = fp16_above((hi - *z) / (top + 1)); break;
    case RANGE_UNROUNDED_Z: *z = fp16_below(lo); *sc = fp16_above((hi - lo) / top); break;
    case RANGE_MAX_ZERO: *z = 0.0f; *sc = fp16_above(hi / top); break;
    default: *z = fp16_below(lo); *sc = fp16_above((hi - *z) / top); break;
    }
}

// x decoded with the range z, s at B bits: z + code s, code = round((x - z) / s) clipped to 0 .. 2^B - 1.
static float code_decode(float x, float z, float sc, int B) {
    double top = (double)((1 << B) - 1), c = sc > 0.0f ? nearbyint(((double)x - z) / sc) : 0.0;
    c = c < 0 ? 0 : c > top ? top : c;
    return z + (float)c * sc;
}

// The decoded values y of n values x[i * stride] sharing one range (variant v) at B bits.
static void group_decode(float *y, const float *x, size_t stride, int n, int B, int v) {
    float z, sc;
    group_range(&z, &sc, x, stride, n, B, v);
    for (int i = 0; i < n; i++) y[(size_t)i * stride] = code_decode(x[(size_t)i * stride], z, sc, B);
}

static int same_floats(const float *a, const float *b, int n) {
    for (int i = 0; i < n; i++)
        if (!(fabsf(a[i] - b[i]) <= 1e-6f * fmaxf(1.0f, fabsf(b[i])))) return 0;
    return 1;
}

// n_tok rows of width d (row-major): unit normal, with some channels far off (outliers) and, at 200, a
// range where neighbouring fp16 values are 0.125 apart, so the rounding direction shows.
static float *quant_inputs(int n_tok, int d, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    float *x = test_randn(&r, (size_t)n_tok * d, 1.0f);
    for (int t = 0; t < n_tok; t++) {
        x[(size_t)t * d + 2] += 12.0f;
        if (d > 7) x[(size_t)t * d + 7] = 200.0f + 3.0f * x[(size_t)t * d + 7];
    }
    return x;
}

Test(ex12_1, int_groups_round_trip) {
    fp16_table();
    enum { D = 20, GR = 8, N_TOK = 3 };   // groups of 8, 8 and a last one of 4
    float *x = quant_inputs(N_TOK, D, 121);
    for (int j = 0; j < D; j++) x[j] = j < 16 ? x[j] : -3.25f;   // token 0's last group: all equal (s = 0)
    for (int B = 2; B <= 4; B++) {
        char name[32];
        snprintf(name, sizeof name, "int%d:%d", B, GR);
        KvqScheme sch = kvq_scheme(name);
        KvQuant *q = kvq_new(&sch, 1);
        int w[1] = {D};
        KvqStream *st = kvq_stream_new(q, KVQ_VALUE, w, 1, N_TOK);
        for (int t = 0; t < N_TOK; t++) kvq_put(st, t, x + (size_t)t * D);
        float got[N_TOK * D], want[N_RANGE][N_TOK * D];
        kvq_get(st, got, D, 0, N_TOK - 1, 1);
        for (int v = 0; v < N_RANGE; v++)
            for (int t = 0; t < N_TOK; t++)
                for (int g0 = 0; g0 < D; g0 += GR)
                    group_decode(want[v] + t * D + g0, x + t * D + g0, 1, D - g0 < GR ? D - g0 : GR, B, v);
        for (int i = 0; i < N_TOK * D; i++) {
            if (fabsf(got[i] - want[RANGE_RIGHT][i]) <= 1e-6f * fmaxf(1.0f, fabsf(want[RANGE_RIGHT][i]))) continue;
            int v = 1;
            while (v < N_RANGE && !same_floats(got, want[v], N_TOK * D)) v++;
            int g0 = i % D / GR * GR;
            cr_assert(0, "%s (groups of %d channels): token %d, channel %d (its group: channels %d..%d) is %.6g after the round trip, want %.6g (the value was %.6g). %s",
                      name, GR, i / D, i % D, g0, (g0 + GR < D ? g0 + GR : D) - 1, (double)got[i], (double)want[RANGE_RIGHT][i], (double)x[i],
                      v < N_RANGE ? RANGE_HINT[v]
                                  : "z = the group's smallest value rounded down to fp16 (fp16_down), s = (largest - z) / (2^B - 1) rounded up (fp16_up), both stored as fp16 bits: the n values are x[0], x[stride], ..., x[(n-1) stride].");
        }
        kvq_stream_free(st);
        kvq_free(q);
    }
    free(x);
}

Test(ex12_2, keys_per_channel_per_chunk) {
    fp16_table();
    enum { GR = 4, N_TOK = 10, ROW = 9 };   // two vectors per row (6 and 3 channels), two full chunks and 2 tokens
    const int w[2] = {6, 3}, off[2] = {0, 6};
    float *x = quant_inputs(N_TOK, ROW, 122);
    KvqScheme sch = kvq_scheme("kivi2:4");
    KvQuant *q = kvq_new(&sch, 1);
    KvqStream *st = kvq_stream_new(q, KVQ_KEY, w, 2, 16);
    for (int t = 0; t < N_TOK; t++) kvq_put(st, t, x + (size_t)t * ROW);
    enum { CODED = (N_TOK / GR) * GR * ROW };   // the floats of the full chunks
    float got[N_TOK * ROW], want[N_RANGE][N_TOK * ROW], along_row[N_TOK * ROW];
    kvq_get(st, got, ROW, 0, N_TOK - 1, 1);
    for (int v = 0; v < N_RANGE; v++) memcpy(want[v], x, sizeof want[v]);
    memcpy(along_row, x, sizeof along_row);
    for (int c0 = 0; c0 + GR <= N_TOK; c0 += GR)
        for (int col = 0; col < ROW; col++) {
            for (int v = 0; v < N_RANGE; v++) group_decode(want[v] + c0 * ROW + col, x + c0 * ROW + col, ROW, GR, 2, v);
            // the slip: the range over G neighbouring floats of the chunk's first row (stride 1, not row)
            float z, sc;
            group_range(&z, &sc, x + c0 * ROW + col, 1, GR, 2, RANGE_RIGHT);
            for (int t = c0; t < c0 + GR; t++) along_row[t * ROW + col] = code_decode(x[t * ROW + col], z, sc, 2);
        }
    for (int t = 0; t < N_TOK; t++)
        for (int col = 0; col < ROW; col++) {
            int i = t * ROW + col;
            const float *ok = want[RANGE_RIGHT];
            if (fabsf(got[i] - ok[i]) <= 1e-6f * fmaxf(1.0f, fabsf(ok[i]))) continue;
            int p = col >= off[1], zero = 1, first_ok = 1, v = 1;
            for (int k = 0; k < CODED; k++) zero &= got[k] == 0.0f;
            for (int tt = 0; tt < (N_TOK / GR) * GR; tt++)
                for (int c = 0; c < w[0]; c++) first_ok &= fabsf(got[tt * ROW + c] - ok[tt * ROW + c]) <= 1e-6f * fmaxf(1.0f, fabsf(ok[tt * ROW + c]));
            while (v < N_RANGE && !same_floats(got, want[v], CODED)) v++;
            char slip[512];
            if (v < N_RANGE) snprintf(slip, sizeof slip, "The ranges are ex12.1's (make check EX=12.1): %s", RANGE_HINT[v]);
            const char *hint =
                "For every channel col of the row (vector p, channel j: col = off[p] + j): asym_range over the chunk's G values resid[t*row + col], t = 0..G-1 (stride row), into zs[2*col] and zs[2*col+1]; then token first+t's code asym_code(...) at bit j of its slot's area boff[p].";
            if (t >= (N_TOK / GR) * GR) hint = "This token's chunk is not complete, so it stays in full precision: only kivi_flush's chunk (tokens first..last) is coded.";
            else if (zero) hint = "Every coded key decodes to 0: are the chunk's zero points and scales written to chunk_zs (2 per channel), and the codes into the slots?";
            else if (v < N_RANGE) hint = slip;
            else if (same_floats(got, along_row, CODED)) hint = "It matches ranges taken ALONG a row (stride 1: G neighbouring channels of one token): a channel's G values are one row apart, resid[t*row + col], so the stride is s->row.";
            else if (p == 1 && first_ok) hint = "The first vector of the row is right, the second (3 channels) is not: channel j of vector p is column off[p] + j of the row, and its codes sit at bit j of the area boff[p].";
            cr_assert(0, "kivi2:4 keys, rows of two vectors (6 and 3 channels), channel 2 an outlier: token %d, channel %d (vector %d) is %.6g after the round trip, want %.6g (the key was %.6g). %s",
                      t, col, p, (double)got[i], (double)ok[i], (double)x[i], hint);
        }
    kvq_stream_free(st);
    kvq_free(q);
    free(x);
}
