// test_decay.c: the scalar-decay linear-attention core of chapter 10 (Lightning, Mamba-2): the recurrent
// and chunked forms agree (T not a multiple of the chunk, strided rows), both match the quadratic
// attention form computed here in double, the mixing matrix reproduces the outputs, and the chunked
// backward matches central finite differences of the double-precision quadratic form.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "10_hybrids/decay.h"
#include "check.h"
#include "rng.h"

// One head, rows packed with padding so strides differ from widths: q,k rows of ldqk, v rows of ldv.
typedef struct {
    int T, dk, dv;
    size_t ldqk, ldv, ldg;
    float *q, *k, *v, *g;
} Head;

static void head_new(Head *h, Rng *r, int T, int dk, int dv) {
    h->T = T, h->dk = dk, h->dv = dv;
    h->ldqk = (size_t)dk + 3, h->ldv = (size_t)dv + 2, h->ldg = 2;
    h->q = mallocCheck(sizeof(float) * T * h->ldqk);
    h->k = mallocCheck(sizeof(float) * T * h->ldqk);
    h->v = mallocCheck(sizeof(float) * T * h->ldv);
    h->g = mallocCheck(sizeof(float) * T * h->ldg);
    rng_fill_normal(r, h->q, (long)(T * h->ldqk), 0.5f);
    rng_fill_normal(r, h->k, (long)(T * h->ldqk), 0.5f);
    rng_fill_normal(r, h->v, (long)(T * h->ldv), 1.0f);
    for (int t = 0; t < T * (int)h->ldg; t++) h->g[t] = -0.6f * rng_uniform(r);   // decays in (0.55, 1]
}

static void head_free(Head *h) {
    free(h->q), free(h->k), free(h->v), free(h->g);
}

// The attention form in double: o_t = sum_{s<=t} (q_t . k_s) exp(sum_{u=s+1..t} g_u) v_s.
static void quadratic(double *o, const Head *h, const double *q, const double *k, const double *v, const double *g) {
    for (int t = 0; t < h->T; t++)
        for (int c = 0; c < h->dv; c++) {
            double acc = 0, lg = 0;
            for (int s = t; s >= 0; s--) {
                double qk = 0;
                for (int r = 0; r < h->dk; r++) qk += q[t * h->dk + r] * k[s * h->dk + r];
                acc += qk * exp(lg) * v[s * h->dv + c];
                lg += g[s];
            }
            o[t * h->dv + c] = acc;
        }
}

static void to_double(double *q, double *k, double *v, double *g, const Head *h) {
    for (int t = 0; t < h->T; t++) {
        for (int r = 0; r < h->dk; r++) q[t * h->dk + r] = h->q[t * h->ldqk + r], k[t * h->dk + r] = h->k[t * h->ldqk + r];
        for (int c = 0; c < h->dv; c++) v[t * h->dv + c] = h->v[t * h->ldv + c];
        g[t] = h->g[t * h->ldg];
    }
}

Test(decay, recurrent_equals_chunked_and_quadratic) {
    Rng r;
    rng_seed(&r, 3);
    int Ts[] = {1, 7, 16, 37, 50}, Cs[] = {1, 4, 16, 64};
    for (int it = 0; it < 5; it++) {
        Head h;
        head_new(&h, &r, Ts[it], 5, 6);
        int T = h.T;
        size_t ldo = (size_t)h.dv + 1;
        float *o1 = calloc(T * ldo, sizeof(float)), *o2 = calloc(T * ldo, sizeof(float));
        float S1[30] = {0}, S2[30] = {0};
        decay_recurrent_forward(o1, ldo, S1, h.q, h.k, h.ldqk, h.v, h.ldv, h.g, h.ldg, T, h.dk, h.dv);
        double *q = malloc(sizeof(double) * T * 20), *k = q + T * 5, *v = k + T * 5, *g = v + T * 6, *o = malloc(sizeof(double) * T * 6);
        to_double(q, k, v, g, &h);
        quadratic(o, &h, q, k, v, g);
        for (int t = 0; t < T; t++)
            for (int c = 0; c < h.dv; c++)
                cr_assert(fabs(o1[t * ldo + c] - o[t * h.dv + c]) < 1e-5 * fmax(1, fabs(o[t * h.dv + c])),
                          "recurrent T %d t %d c %d: %g vs %g", T, t, c, (double)o1[t * ldo + c], o[t * h.dv + c]);
        for (int ci = 0; ci < 4; ci++) {
            memset(S2, 0, sizeof S2);
            decay_chunked_forward(o2, ldo, S2, h.q, h.k, h.ldqk, h.v, h.ldv, h.g, h.ldg, T, h.dk, h.dv, Cs[ci]);
            for (int t = 0; t < T; t++)
                for (int c = 0; c < h.dv; c++)
                    cr_assert(fabsf(o1[t * ldo + c] - o2[t * ldo + c]) < 1e-5f * fmaxf(1, fabsf(o1[t * ldo + c])),
                              "chunk %d T %d t %d c %d: %g vs %g", Cs[ci], T, t, c, (double)o2[t * ldo + c],
                              (double)o1[t * ldo + c]);
            for (int i = 0; i < 30; i++)
                cr_assert(fabsf(S1[i] - S2[i]) < 1e-5f * fmaxf(1, fabsf(S1[i])), "final state chunk %d T %d [%d]", Cs[ci], T, i);
        }
        // the mixing matrix reproduces the outputs
        float *A = malloc(sizeof(float) * T * T);
        decay_mixing_matrix(A, h.q, h.k, h.ldqk, h.g, h.ldg, T, h.dk);
        for (int t = 0; t < T; t++) {
            for (int s = t + 1; s < T; s++) cr_assert_eq(A[t * T + s], 0.0f);
            for (int c = 0; c < h.dv; c++) {
                double acc = 0;
                for (int s = 0; s <= t; s++) acc += (double)A[t * T + s] * h.v[s * h.ldv + c];
                cr_assert(fabs(acc - o[t * h.dv + c]) < 1e-5 * fmax(1, fabs(o[t * h.dv + c])), "A v T %d t %d", T, t);
            }
        }
        free(A), free(q), free(o), free(o1), free(o2);
        head_free(&h);
    }
}

Test(decay, carries_an_initial_state) {
    // splitting a sequence in two and carrying S gives the same outputs as one pass
    Rng r;
    rng_seed(&r, 4);
    Head h;
    head_new(&h, &r, 29, 4, 3);
    size_t ldo = 3;
    float o1[29 * 3], o2[29 * 3], S1[12] = {0}, S2[12] = {0};
    decay_chunked_forward(o1, ldo, S1, h.q, h.k, h.ldqk, h.v, h.ldv, h.g, h.ldg, 29, 4, 3, 8);
    decay_chunked_forward(o2, ldo, S2, h.q, h.k, h.ldqk, h.v, h.ldv, h.g, h.ldg, 11, 4, 3, 8);
    decay_chunked_forward(o2 + 11 * ldo, ldo, S2, h.q + 11 * h.ldqk, h.k + 11 * h.ldqk, h.ldqk, h.v + 11 * h.ldv, h.ldv,
                          h.g + 11 * h.ldg, h.ldg, 18, 4, 3, 8);
    for (int i = 0; i < 29 * 3; i++) cr_assert(fabsf(o1[i] - o2[i]) < 1e-5f * fmaxf(1, fabsf(o1[i])), "o[%d]", i);
    for (int i = 0; i < 12; i++) cr_assert(fabsf(S1[i] - S2[i]) < 1e-5f * fmaxf(1, fabsf(S1[i])), "S[%d]", i);
    head_free(&h);
}

// loss = sum(o * R) of the double quadratic form, as a function of the doubles
static double loss_q(const Head *h, const double *q, const double *k, const double *v, const double *g, const double *R) {
    double *o = malloc(sizeof(double) * h->T * h->dv), l = 0;
    quadratic(o, h, q, k, v, g);
    for (int i = 0; i < h->T * h->dv; i++) l += o[i] * R[i];
    free(o);
    return l;
}

Test(decay, chunked_backward_matches_finite_differences) {
    Rng r;
    rng_seed(&r, 5);
    int T = 23, dk = 4, dv = 3, C = 8;
    Head h;
    head_new(&h, &r, T, dk, dv);
    double *q = malloc(sizeof(double) * T * (2 * dk + dv + 1)), *k = q + T * dk, *v = k + T * dk, *g = v + T * dv;
    to_double(q, k, v, g, &h);
    double R[23 * 3];
    float Rf[23 * 3];
    for (int i = 0; i < T * dv; i++) Rf[i] = rng_normal(&r), R[i] = Rf[i];
    float *dq = calloc(T * h.ldqk, sizeof(float)), *dkk = calloc(T * h.ldqk, sizeof(float));
    float *dvv = calloc(T * h.ldv, sizeof(float)), *dg = calloc(T * h.ldg, sizeof(float));
    float *scr = malloc(sizeof(float) * decay_backward_scratch_floats(T, dk, dv, C));
    // accumulates: run twice and halve
    for (int rep = 0; rep < 2; rep++)
        decay_chunked_backward(dq, dkk, dvv, dg, Rf, dv, h.q, h.k, h.ldqk, h.v, h.ldv, h.g, h.ldg, T, dk, dv, C, scr);
    struct { double *x; int n, w; float *ana; size_t ld; const char *name; } ts[] = {
        {q, T, dk, dq, h.ldqk, "dq"}, {k, T, dk, dkk, h.ldqk, "dk"}, {v, T, dv, dvv, h.ldv, "dv"}, {g, T, 1, dg, h.ldg, "dg"}};
    for (int ti = 0; ti < 4; ti++) {
        double num2 = 0, den2 = 0;
        for (int t = 0; t < ts[ti].n; t++)
            for (int c = 0; c < ts[ti].w; c++) {
                double *x = &ts[ti].x[t * ts[ti].w + c], keep = *x, e = 1e-5;
                *x = keep + e;
                double lp = loss_q(&h, q, k, v, g, R);
                *x = keep - e;
                double lm = loss_q(&h, q, k, v, g, R);
                *x = keep;
                double num = (lp - lm) / (2 * e), ana = 0.5 * ts[ti].ana[t * ts[ti].ld + c];
                num2 += (num - ana) * (num - ana);
                den2 += num * num;
            }
        cr_expect(sqrt(num2 / den2) < 1e-5, "%s: relative error %.3g", ts[ti].name, sqrt(num2 / den2));
    }
    free(q), free(dq), free(dkk), free(dvv), free(dg), free(scr);
    head_free(&h);
}
