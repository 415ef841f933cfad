// test_math.c: common/mathx against independent double-precision references, finite-difference
// gradient checks, RoPE's geometric properties, mask counts, and thread-count determinism.
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mathx.h"
#include "rng.h"

// ---- helpers ------------------------------------------------------------------------------------

static float *randn(Rng *r, long n, float std) {
    float *x = mallocCheck((size_t)n * sizeof(float));
    rng_fill_normal(r, x, n, std);
    return x;
}

static double *dalloc(long n) { return callocCheck((size_t)n, sizeof(double)); }

// Strided view for the double reference: element (r, c) at p[r * rs + c * cs].
typedef struct { const float *p; long rs, cs; } View;

// C (M,N) = (acc ? C0 : 0) + A . B in double, and the sum of |terms| per element (the error scale).
static void ref_gemm(double *C, double *scale, const float *C0, View A, View B, int M, int K, int N) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = C0 ? C0[(long)i * N + j] : 0.0, a = C0 ? fabs(C0[(long)i * N + j]) : 0.0;
            for (int k = 0; k < K; k++) {
                double t = (double)A.p[i * A.rs + k * A.cs] * B.p[k * B.rs + j * B.cs];
                s += t;
                a += fabs(t);
            }
            C[(long)i * N + j] = s;
            scale[(long)i * N + j] = a;
        }
}

// |got - want| <= rel * scale + tiny, element by element
static void assert_close_scaled(const char *what, const float *got, const double *want, const double *scale,
                                long n, double rel) {
    for (long i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        cr_assert(err <= rel * scale[i] + 1e-30, "%s[%ld]: got %.9g want %.9g (err %.3g, scale %.3g)", what, i,
                  (double)got[i], want[i], err, scale[i]);
    }
}

static void assert_close(const char *what, const float *got, const double *want, long n, double atol, double rtol) {
    for (long i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        cr_assert(err <= atol + rtol * fabs(want[i]), "%s[%ld]: got %.9g want %.9g", what, i, (double)got[i],
                  want[i]);
    }
}

// Analytic (float) against numeric (double) gradient: each element within 1e-2 relative, with a floor
// of 1e-3 of the largest entry so that tiny entries are not held to a relative bound.
static void assert_grad(const char *what, const float *analytic, const double *numeric, long n) {
    double mx = 0.0;
    for (long i = 0; i < n; i++) mx = fmax(mx, fabs(numeric[i]));
    cr_assert(mx > 0.0, "%s: numeric gradient is all zero, the check would be vacuous", what);
    for (long i = 0; i < n; i++) {
        double err = fabs((double)analytic[i] - numeric[i]);
        cr_assert(err <= 1e-2 * fmax(fabs(numeric[i]), 1e-3 * mx), "%s[%ld]: analytic %.7g numeric %.7g", what, i,
                  (double)analytic[i], numeric[i]);
    }
}

// ---- matmul -------------------------------------------------------------------------------------

typedef enum { FORM_NN, FORM_NT, FORM_TN } Form;

// The views of A and B as stored by each form, in the (i,k) / (k,j) sense.
static void form_views(Form f, const float *A, const float *B, int M, int K, int N, View *va, View *vb) {
    *va = f == FORM_TN ? (View){A, 1, M} : (View){A, K, 1};
    *vb = f == FORM_NT ? (View){B, 1, K} : (View){B, N, 1};
}

static void run_form(Form f, float *C, const float *A, const float *B, int M, int K, int N, int acc) {
    if (f == FORM_NN) matmul(C, A, B, M, K, N, acc);
    else if (f == FORM_NT) matmul_nt(C, A, B, M, K, N, acc);
    else matmul_tn(C, A, B, M, K, N, acc);
}

// Shapes around the register tile (6 x 16) and the block sizes (K 256, M 96, N 256), plus ones and
// primes: every edge path of the blocked code gets hit.
static const int SHAPES[][3] = {
    {1, 1, 1},    {1, 7, 1},    {1, 64, 33},  {2, 3, 5},     {5, 17, 16},   {6, 16, 16},  {7, 31, 17},
    {13, 1, 29},  {95, 9, 15},  {97, 70, 47}, {33, 257, 20}, {12, 600, 41}, {1, 300, 270}, {130, 40, 257},
    {200, 8, 3},  {3, 513, 2},  {64, 64, 64}, {4, 37, 70},  {5, 260, 23},  {2, 9, 8},
};
#define N_SHAPES ((int)(sizeof SHAPES / sizeof SHAPES[0]))

Test(math, matmul_forms_match_double_reference) {
    Rng r;
    rng_seed(&r, 11);
    const char *names[] = {"matmul", "matmul_nt", "matmul_tn"};
    for (int s = 0; s < N_SHAPES; s++) {
        int M = SHAPES[s][0], K = SHAPES[s][1], N = SHAPES[s][2];
        float *A = randn(&r, (long)M * K, 1.0f), *B = randn(&r, (long)K * N, 1.0f);
        float *C0 = randn(&r, (long)M * N, 1.0f), *C = mallocCheck(sizeof(float) * M * N);
        double *want = dalloc((long)M * N), *scale = dalloc((long)M * N);
        for (int f = 0; f < 3; f++) {
            for (int acc = 0; acc < 2; acc++) {
                View va, vb;
                form_views((Form)f, A, B, M, K, N, &va, &vb);
                ref_gemm(want, scale, acc ? C0 : NULL, va, vb, M, K, N);
                // garbage in C must not leak into a non-accumulating result
                if (acc) memcpy(C, C0, sizeof(float) * M * N);
                else for (long i = 0; i < (long)M * N; i++) C[i] = 1e30f;
                run_form((Form)f, C, A, B, M, K, N, acc);
                char what[96];
                snprintf(what, sizeof what, "%s %dx%dx%d acc=%d", names[f], M, K, N, acc);
                assert_close_scaled(what, C, want, scale, (long)M * N, 1e-5);
            }
        }
        free(A); free(B); free(C0); free(C); free(want); free(scale);
    }
}

Test(math, matmul_refs_match_double_reference) {
    Rng r;
    rng_seed(&r, 12);
    for (int s = 0; s < N_SHAPES; s++) {
        int M = SHAPES[s][0], K = SHAPES[s][1], N = SHAPES[s][2];
        float *A = randn(&r, (long)M * K, 1.0f), *B = randn(&r, (long)K * N, 1.0f);
        float *C0 = randn(&r, (long)M * N, 1.0f), *C = mallocCheck(sizeof(float) * M * N);
        double *want = dalloc((long)M * N), *scale = dalloc((long)M * N);
        for (int nt = 0; nt < 2; nt++) {
            for (int acc = 0; acc < 2; acc++) {
                View va, vb;
                form_views(nt ? FORM_NT : FORM_NN, A, B, M, K, N, &va, &vb);
                ref_gemm(want, scale, acc ? C0 : NULL, va, vb, M, K, N);
                memcpy(C, C0, sizeof(float) * M * N);
                if (nt) matmul_nt_ref(C, A, B, M, K, N, acc);
                else matmul_ref(C, A, B, M, K, N, acc);
                assert_close_scaled(nt ? "matmul_nt_ref" : "matmul_ref", C, want, scale, (long)M * N, 1e-5);
            }
        }
        free(A); free(B); free(C0); free(C); free(want); free(scale);
    }
}

Test(math, matmul_fast_vs_ref_tight) {
    // the blocked kernel and the plain loop, both in float, agree to a few ulps of the sum of |terms|
    Rng r;
    rng_seed(&r, 13);
    int M = 70, K = 300, N = 90;
    float *A = randn(&r, (long)M * K, 1.0f), *B = randn(&r, (long)K * N, 1.0f);   // B: (K,N) or (N,K)
    float *C1 = mallocCheck(sizeof(float) * M * N), *C2 = mallocCheck(sizeof(float) * M * N);
    double *want = dalloc((long)M * N), *scale = dalloc((long)M * N), *unused = dalloc((long)M * N);
    for (int nt = 0; nt < 2; nt++) {
        View va = {A, K, 1}, vb = nt ? (View){B, 1, K} : (View){B, N, 1};
        ref_gemm(unused, scale, NULL, va, vb, M, K, N);
        if (nt) { matmul_nt(C1, A, B, M, K, N, 0); matmul_nt_ref(C2, A, B, M, K, N, 0); }
        else { matmul(C1, A, B, M, K, N, 0); matmul_ref(C2, A, B, M, K, N, 0); }
        for (long i = 0; i < (long)M * N; i++) want[i] = C2[i];
        assert_close_scaled(nt ? "matmul_nt vs ref" : "matmul vs ref", C1, want, scale, (long)M * N, 5e-6);
    }
    free(A); free(B); free(C1); free(C2); free(want); free(scale); free(unused);
}

Test(math, matmul_k_zero) {
    float C[6] = {1, 2, 3, 4, 5, 6}, A[1] = {0}, B[1] = {0};
    matmul(C, A, B, 2, 0, 3, 1);
    cr_assert(C[0] == 1 && C[5] == 6, "K=0 with accumulate must leave C alone");
    matmul_nt(C, A, B, 2, 0, 3, 0);
    for (int i = 0; i < 6; i++) cr_assert(C[i] == 0.0f, "K=0 without accumulate must give zeros");
}

// Same bits whatever the thread count, for shapes above the parallel threshold (512K multiply-adds),
// with few rows (the tiles are then cut across the columns) and with one row (the matrix-vector path).
Test(math, matmul_thread_count_determinism) {
    static const int shapes[][3] = {{301, 257, 130}, {3, 300, 1000}, {130, 1000, 7}, {512, 64, 192}, {1, 1000, 700}};
    Rng r;
    rng_seed(&r, 14);
    for (int s = 0; s < 5; s++) {
        int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
        long asz = (long)M * K, bsz = (long)K * N, csz = (long)M * N;
        float *A = randn(&r, asz, 1.0f), *B = randn(&r, bsz, 1.0f), *C0 = randn(&r, csz, 1.0f);
        float *C1 = mallocCheck(sizeof(float) * csz), *C2 = mallocCheck(sizeof(float) * csz);
        for (int f = 0; f < 3; f++) {
            for (int acc = 0; acc < 2; acc++) {
                memcpy(C1, C0, sizeof(float) * csz);
                memcpy(C2, C0, sizeof(float) * csz);
                omp_set_num_threads(1);
                run_form((Form)f, C1, A, B, M, K, N, acc);
                omp_set_num_threads(2);
                run_form((Form)f, C2, A, B, M, K, N, acc);
                cr_assert(memcmp(C1, C2, sizeof(float) * csz) == 0, "form %d %dx%dx%d acc=%d differs 1 vs 2 threads",
                          f, M, K, N, acc);
            }
        }
        free(A); free(B); free(C0); free(C1); free(C2);
    }
}

// A row's result does not depend on how many rows are computed with it (few rows take another code
// path): a decode step (M = 1) gives the same bits as the full-sequence forward at that position.
Test(math, matmul_rows_independent_of_m) {
    Rng r;
    rng_seed(&r, 15);
    int M = 37, K = 300, N = 75;
    float *A = randn(&r, (long)M * K, 1.0f), *B = randn(&r, (long)K * N, 1.0f);   // B: (K,N) or (N,K)
    float *At = mallocCheck(sizeof(float) * K * M);                                // A^T (K,M) for tn
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++) At[(long)k * M + i] = A[(long)i * K + k];
    float *full = mallocCheck(sizeof(float) * M * N), *part = mallocCheck(sizeof(float) * 6 * N);
    float *sub = mallocCheck(sizeof(float) * K * 6);
    for (int f = 0; f < 3; f++) {
        run_form((Form)f, full, f == FORM_TN ? At : A, B, M, K, N, 0);
        for (int m = 1; m <= 6; m++) {
            for (int i = 0; i + m <= M; i += 5) {
                const float *a = A + (long)i * K;
                if (f == FORM_TN) {   // columns i..i+m-1 of A^T as a (K,m) matrix
                    for (int k = 0; k < K; k++)
                        for (int q = 0; q < m; q++) sub[(long)k * m + q] = At[(long)k * M + i + q];
                    a = sub;
                }
                run_form((Form)f, part, a, B, m, K, N, 0);
                cr_assert(memcmp(part, full + (long)i * N, sizeof(float) * m * N) == 0,
                          "form %d: rows %d..%d computed alone (M=%d) differ from the M=%d result", f, i, i + m - 1, m, M);
            }
        }
    }
    free(A); free(B); free(At); free(full); free(part); free(sub);
}

// ---- linear -------------------------------------------------------------------------------------

// out (N,OC) = inp (N,C) W(OC,C)^T + b in double; the loss is sum(out * G)
static double linear_loss_d(const double *inp, const double *w, const double *b, const float *G, int N, int C, int OC) {
    double L = 0.0;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            double s = b ? b[o] : 0.0;
            for (int c = 0; c < C; c++) s += inp[n * C + c] * w[o * C + c];
            L += s * G[n * OC + o];
        }
    return L;
}

static void to_double(double *d, const float *f, long n) {
    for (long i = 0; i < n; i++) d[i] = f[i];
}

// Central difference of loss(params) with respect to each element of x (double), step h.
#define NUMERIC_GRAD(grad, x, n, h, loss_expr)            \
    do {                                                    \
        for (long i_ = 0; i_ < (n); i_++) {                 \
            double keep_ = (x)[i_];                         \
            (x)[i_] = keep_ + (h);                          \
            double lp_ = (loss_expr);                       \
            (x)[i_] = keep_ - (h);                          \
            double lm_ = (loss_expr);                       \
            (x)[i_] = keep_;                                \
            (grad)[i_] = (lp_ - lm_) / (2.0 * (h));         \
        }                                                   \
    } while (0)

Test(math, linear_forward_and_gradients) {
    Rng r;
    rng_seed(&r, 21);
    int N = 5, C = 7, OC = 9;
    float *inp = randn(&r, N * C, 1.0f), *w = randn(&r, OC * C, 0.5f), *b = randn(&r, OC, 0.5f);
    float *G = randn(&r, N * OC, 1.0f), *out = mallocCheck(sizeof(float) * N * OC);
    double *di = dalloc(N * C), *dw = dalloc(OC * C), *db = dalloc(OC);
    to_double(di, inp, N * C); to_double(dw, w, OC * C); to_double(db, b, OC);
    // forward, with and without bias
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        linear_forward(out, inp, w, with_bias ? b : NULL, N, C, OC);
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) {
                double s = with_bias ? db[o] : 0.0;
                for (int c = 0; c < C; c++) s += di[n * C + c] * dw[o * C + c];
                cr_assert(fabs(out[n * OC + o] - s) <= 1e-5 * (1 + fabs(s)), "linear_forward bias=%d (%d,%d)",
                          with_bias, n, o);
            }
    }
    // backward accumulates: start from ones and subtract them afterwards
    float *ginp = mallocCheck(sizeof(float) * N * C), *gw = mallocCheck(sizeof(float) * OC * C);
    float *gb = mallocCheck(sizeof(float) * OC);
    for (int i = 0; i < N * C; i++) ginp[i] = 1.0f;
    for (int i = 0; i < OC * C; i++) gw[i] = 1.0f;
    for (int i = 0; i < OC; i++) gb[i] = 1.0f;
    linear_backward(ginp, gw, gb, G, inp, w, N, C, OC);
    for (int i = 0; i < N * C; i++) ginp[i] -= 1.0f;
    for (int i = 0; i < OC * C; i++) gw[i] -= 1.0f;
    for (int i = 0; i < OC; i++) gb[i] -= 1.0f;
    double *ni = dalloc(N * C), *nw = dalloc(OC * C), *nb = dalloc(OC);
    NUMERIC_GRAD(ni, di, N * C, 1e-4, linear_loss_d(di, dw, db, G, N, C, OC));
    NUMERIC_GRAD(nw, dw, OC * C, 1e-4, linear_loss_d(di, dw, db, G, N, C, OC));
    NUMERIC_GRAD(nb, db, OC, 1e-4, linear_loss_d(di, dw, db, G, N, C, OC));
    assert_grad("linear dinp", ginp, ni, N * C);
    assert_grad("linear dweight", gw, nw, OC * C);
    assert_grad("linear dbias", gb, nb, OC);
    // NULL gradients are skipped
    linear_backward(NULL, NULL, NULL, G, inp, w, N, C, OC);
    free(inp); free(w); free(b); free(G); free(out); free(di); free(dw); free(db);
    free(ginp); free(gw); free(gb); free(ni); free(nw); free(nb);
}

// ---- softmax ------------------------------------------------------------------------------------

static void softmax_d(double *p, const double *l, const unsigned char *mask, int n) {
    double mx = -INFINITY, s = 0.0;
    for (int j = 0; j < n; j++)
        if (!mask || mask[j]) mx = fmax(mx, l[j]);
    for (int j = 0; j < n; j++) s += (!mask || mask[j]) ? exp(l[j] - mx) : 0.0;
    for (int j = 0; j < n; j++) p[j] = (!mask || mask[j]) ? exp(l[j] - mx) / s : 0.0;
}

Test(math, softmax_forward) {
    Rng r;
    rng_seed(&r, 31);
    int n = 13;
    float *l = randn(&r, n, 3.0f), p[13];
    double dl[13], want[13];
    unsigned char mask[13];
    for (int j = 0; j < n; j++) mask[j] = (unsigned char)(j % 3 != 1);
    to_double(dl, l, n);
    for (int m = 0; m < 2; m++) {
        softmax_row(p, l, m ? mask : NULL, n);
        softmax_d(want, dl, m ? mask : NULL, n);
        assert_close("softmax", p, want, n, 1e-7, 1e-5);
        for (int j = 0; j < n; j++)
            if (m && !mask[j]) cr_assert(p[j] == 0.0f, "masked key %d got %g", j, (double)p[j]);
    }
    // large logits do not overflow: softmax is shift invariant
    float big[4] = {1000.0f, 1001.0f, 999.0f, 1000.5f}, small[4] = {0.0f, 1.0f, -1.0f, 0.5f}, pb[4], ps[4];
    softmax_row(pb, big, NULL, 4);
    softmax_row(ps, small, NULL, 4);
    for (int j = 0; j < 4; j++) cr_assert(fabsf(pb[j] - ps[j]) < 1e-6f && isfinite(pb[j]), "shift invariance");
    free(l);
}

Test(math, softmax_masked_and_infinite) {
    float l[5] = {1.0f, -INFINITY, 2.0f, -INFINITY, 0.5f}, p[5];
    unsigned char none[5] = {0, 0, 0, 0, 0};
    softmax_row(p, l, none, 5);
    for (int j = 0; j < 5; j++) cr_assert(p[j] == 0.0f, "fully masked row must be zeros, p[%d]=%g", j, (double)p[j]);
    softmax_row(p, l, NULL, 5);
    double s = 0.0;
    for (int j = 0; j < 5; j++) {
        cr_assert(isfinite(p[j]), "no NaN with -inf logits");
        s += p[j];
    }
    cr_assert(p[1] == 0.0f && p[3] == 0.0f, "-inf logits get probability 0");
    cr_assert(fabs(s - 1.0) < 1e-6, "row sums to 1, got %g", s);
    float all_inf[3] = {-INFINITY, -INFINITY, -INFINITY};
    softmax_row(p, all_inf, NULL, 3);
    for (int j = 0; j < 3; j++) cr_assert(p[j] == 0.0f, "all -inf row must be zeros");
    // only the masked-out key is -inf: visible ones still normalise
    float l2[3] = {-INFINITY, 0.0f, 0.0f};
    unsigned char m2[3] = {0, 1, 1};
    softmax_row(p, l2, m2, 3);
    cr_assert(p[0] == 0.0f && fabsf(p[1] - 0.5f) < 1e-7f && fabsf(p[2] - 0.5f) < 1e-7f, "masked -inf");
}

static double softmax_loss_d(const double *l, const float *G, const unsigned char *mask, int n) {
    double p[32], L = 0.0;
    softmax_d(p, l, mask, n);
    for (int j = 0; j < n; j++) L += p[j] * G[j];
    return L;
}

Test(math, softmax_backward_gradient) {
    Rng r;
    rng_seed(&r, 32);
    int n = 11;
    float *l = randn(&r, n, 1.5f), *G = randn(&r, n, 1.0f), p[11], dl[11];
    unsigned char mask[11];
    for (int j = 0; j < n; j++) mask[j] = (unsigned char)(j != 4 && j != 9);
    for (int m = 0; m < 2; m++) {
        softmax_row(p, l, m ? mask : NULL, n);
        softmax_row_backward(dl, p, G, n);
        double d[11], num[11];
        to_double(d, l, n);
        NUMERIC_GRAD(num, d, n, 1e-5, softmax_loss_d(d, G, m ? mask : NULL, n));
        assert_grad("softmax dlogits", dl, num, n);
    }
    free(l); free(G);
}

// ---- masks --------------------------------------------------------------------------------------

Test(math, mask_fill_kinds) {
    enum { T = 19 };
    unsigned char m[T * T];
    mask_fill(m, MASK_BIDIRECTIONAL, T, 0);
    for (int i = 0; i < T * T; i++) cr_assert(m[i] == 1, "bidirectional sees everything");
    mask_fill(m, MASK_CAUSAL, T, 0);
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) cr_assert(m[i * T + j] == (j <= i), "causal (%d,%d)", i, j);
    int prefix = 6;
    mask_fill(m, MASK_PREFIX_LM, T, prefix);
    for (int i = 0; i < T; i++) {
        int cnt = 0;
        for (int j = 0; j < T; j++) {
            cr_assert(m[i * T + j] == (j < prefix || j <= i), "prefix-LM (%d,%d)", i, j);
            cnt += m[i * T + j];
        }
        cr_assert(cnt == (i + 1 > prefix ? i + 1 : prefix), "prefix-LM row %d count %d", i, cnt);
    }
    for (int W = 1; W <= T + 2; W += 3) {
        mask_fill(m, MASK_SLIDING, T, W);
        for (int i = 0; i < T; i++) {
            int cnt = 0;
            for (int j = 0; j < T; j++) {
                cr_assert(m[i * T + j] == (j <= i && j > i - W), "sliding W=%d (%d,%d)", W, i, j);
                cnt += m[i * T + j];
            }
            cr_assert(cnt == (W < i + 1 ? W : i + 1), "sliding W=%d row %d has %d keys", W, i, cnt);
        }
    }
}

// ---- norms --------------------------------------------------------------------------------------

static double rmsnorm_loss_d(const double *x, const double *w, const float *G, int N, int d, double eps) {
    double L = 0.0;
    for (int n = 0; n < N; n++) {
        double ss = 0.0;
        for (int i = 0; i < d; i++) ss += x[n * d + i] * x[n * d + i];
        double r = 1.0 / sqrt(ss / d + eps);
        for (int i = 0; i < d; i++) L += x[n * d + i] * r * w[i] * G[n * d + i];
    }
    return L;
}

Test(math, rmsnorm_forward_and_gradients) {
    Rng r;
    rng_seed(&r, 41);
    int N = 4, d = 10;
    float eps = 1e-5f;
    float *x = randn(&r, N * d, 1.0f), *w = randn(&r, d, 1.0f), *G = randn(&r, N * d, 1.0f);
    float *out = mallocCheck(sizeof(float) * N * d), rstd[4];
    rmsnorm_forward(out, rstd, x, w, N, d, eps);
    for (int n = 0; n < N; n++) {
        double ss = 0.0;
        for (int i = 0; i < d; i++) ss += (double)x[n * d + i] * x[n * d + i];
        double rr = 1.0 / sqrt(ss / d + eps);
        cr_assert(fabs(rstd[n] - rr) <= 1e-5 * rr, "rstd row %d", n);
        for (int i = 0; i < d; i++)
            cr_assert(fabs(out[n * d + i] - x[n * d + i] * rr * w[i]) <= 1e-5 * (1 + fabs(x[n * d + i] * rr * w[i])),
                      "rmsnorm out (%d,%d)", n, i);
    }
    float *dx = callocCheck((size_t)N * d, sizeof(float)), *dw = callocCheck((size_t)d, sizeof(float));
    for (int i = 0; i < N * d; i++) dx[i] = 0.5f;
    rmsnorm_backward(dx, dw, G, x, w, rstd, N, d);
    for (int i = 0; i < N * d; i++) dx[i] -= 0.5f;
    double *xd = dalloc(N * d), *wd = dalloc(d), *nx = dalloc(N * d), *nw = dalloc(d);
    to_double(xd, x, N * d); to_double(wd, w, d);
    NUMERIC_GRAD(nx, xd, N * d, 1e-5, rmsnorm_loss_d(xd, wd, G, N, d, eps));
    NUMERIC_GRAD(nw, wd, d, 1e-5, rmsnorm_loss_d(xd, wd, G, N, d, eps));
    assert_grad("rmsnorm dx", dx, nx, N * d);
    assert_grad("rmsnorm dweight", dw, nw, d);
    free(x); free(w); free(G); free(out); free(dx); free(dw); free(xd); free(wd); free(nx); free(nw);
}

static double layernorm_loss_d(const double *x, const double *w, const double *b, const float *G, int N, int d,
                               double eps) {
    double L = 0.0;
    for (int n = 0; n < N; n++) {
        double m = 0.0, v = 0.0;
        for (int i = 0; i < d; i++) m += x[n * d + i];
        m /= d;
        for (int i = 0; i < d; i++) v += (x[n * d + i] - m) * (x[n * d + i] - m);
        v /= d;
        double r = 1.0 / sqrt(v + eps);
        for (int i = 0; i < d; i++) L += ((x[n * d + i] - m) * r * w[i] + b[i]) * G[n * d + i];
    }
    return L;
}

Test(math, layernorm_forward_and_gradients) {
    Rng r;
    rng_seed(&r, 42);
    int N = 4, d = 9;
    float eps = 1e-5f;
    float *x = randn(&r, N * d, 1.0f), *w = randn(&r, d, 1.0f), *b = randn(&r, d, 1.0f), *G = randn(&r, N * d, 1.0f);
    for (int i = 0; i < N * d; i++) x[i] += 3.0f;   // a non-zero mean, so the centring matters
    float *out = mallocCheck(sizeof(float) * N * d), mean[4], rstd[4];
    layernorm_forward(out, mean, rstd, x, w, b, N, d, eps);
    double *xd = dalloc(N * d), *wd = dalloc(d), *bd = dalloc(d);
    to_double(xd, x, N * d); to_double(wd, w, d); to_double(bd, b, d);
    for (int n = 0; n < N; n++) {
        double m = 0.0, v = 0.0;
        for (int i = 0; i < d; i++) m += xd[n * d + i];
        m /= d;
        for (int i = 0; i < d; i++) v += (xd[n * d + i] - m) * (xd[n * d + i] - m);
        double rr = 1.0 / sqrt(v / d + eps);
        cr_assert(fabs(mean[n] - m) < 1e-5 && fabs(rstd[n] - rr) < 1e-4 * rr, "layernorm stats row %d", n);
        for (int i = 0; i < d; i++) {
            double y = (xd[n * d + i] - m) * rr * wd[i] + bd[i];
            cr_assert(fabs(out[n * d + i] - y) < 1e-4 * (1 + fabs(y)), "layernorm out (%d,%d)", n, i);
        }
    }
    float *dx = mallocCheck(sizeof(float) * N * d), *dw = callocCheck((size_t)d, sizeof(float));
    float *db = callocCheck((size_t)d, sizeof(float));
    for (int i = 0; i < N * d; i++) dx[i] = -0.25f;
    layernorm_backward(dx, dw, db, G, x, w, mean, rstd, N, d);
    for (int i = 0; i < N * d; i++) dx[i] += 0.25f;
    double *nx = dalloc(N * d), *nw = dalloc(d), *nb = dalloc(d);
    NUMERIC_GRAD(nx, xd, N * d, 1e-5, layernorm_loss_d(xd, wd, bd, G, N, d, eps));
    NUMERIC_GRAD(nw, wd, d, 1e-5, layernorm_loss_d(xd, wd, bd, G, N, d, eps));
    NUMERIC_GRAD(nb, bd, d, 1e-5, layernorm_loss_d(xd, wd, bd, G, N, d, eps));
    assert_grad("layernorm dx", dx, nx, N * d);
    assert_grad("layernorm dweight", dw, nw, d);
    assert_grad("layernorm dbias", db, nb, d);
    free(x); free(w); free(b); free(G); free(out); free(xd); free(wd); free(bd);
    free(dx); free(dw); free(db); free(nx); free(nw); free(nb);
}

Test(math, norms_and_activations_thread_count_determinism) {
    // sizes above the parallel thresholds
    Rng r;
    rng_seed(&r, 43);
    int N = 300, d = 512;
    long n = (long)N * d;
    float *x = randn(&r, n, 1.0f), *w = randn(&r, d, 1.0f), *b = randn(&r, d, 1.0f), *G = randn(&r, n, 1.0f);
    float *o[2], *dx[2], *dw[2], *db[2], mean[2][300], rstd[2][300];
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        o[t] = mallocCheck(sizeof(float) * 4 * n);
        dx[t] = callocCheck((size_t)n * 2, sizeof(float));
        dw[t] = callocCheck((size_t)d * 2, sizeof(float));
        db[t] = callocCheck((size_t)d, sizeof(float));
        rmsnorm_forward(o[t], rstd[t], x, w, N, d, 1e-6f);
        rmsnorm_backward(dx[t], dw[t], G, x, w, rstd[t], N, d);
        layernorm_forward(o[t] + n, mean[t], rstd[t], x, w, b, N, d, 1e-5f);
        layernorm_backward(dx[t] + n, dw[t] + d, db[t], G, x, w, mean[t], rstd[t], N, d);
        silu_forward(o[t] + 2 * n, x, n);
        gelu_forward(o[t] + 3 * n, x, n);
        silu_backward(dx[t], G, x, n);
        gelu_backward(dx[t] + n, G, x, n);
    }
    cr_assert(memcmp(o[0], o[1], sizeof(float) * 4 * n) == 0, "forward outputs differ 1 vs 2 threads");
    cr_assert(memcmp(dx[0], dx[1], sizeof(float) * 2 * n) == 0, "dx differs 1 vs 2 threads");
    cr_assert(memcmp(dw[0], dw[1], sizeof(float) * 2 * d) == 0, "dweight differs 1 vs 2 threads");
    cr_assert(memcmp(db[0], db[1], sizeof(float) * d) == 0, "dbias differs 1 vs 2 threads");
    for (int t = 0; t < 2; t++) { free(o[t]); free(dx[t]); free(dw[t]); free(db[t]); }
    free(x); free(w); free(b); free(G);
}

// ---- RoPE ---------------------------------------------------------------------------------------

static double dot_f(const float *a, const float *b, int n) {
    double s = 0.0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

Test(math, rope_explicit_angles) {
    // pos 3, theta 100, n_rot 4: pair 0 turns by 3 rad, pair 1 by 3 * 100^(-1/2) = 0.3 rad
    float x[6] = {1, 0, 0, 1, 7, 8};
    rope_apply(x, 3, 4, 100.0, ROPE_INTERLEAVED, 0);
    cr_assert(fabsf(x[0] - (float)cos(3.0)) < 1e-6f && fabsf(x[1] - (float)sin(3.0)) < 1e-6f, "pair 0");
    cr_assert(fabsf(x[2] + (float)sin(0.3)) < 1e-6f && fabsf(x[3] - (float)cos(0.3)) < 1e-6f, "pair 1");
    cr_assert(x[4] == 7 && x[5] == 8, "dims past n_rot are untouched");
    float h[6] = {1, 0, 0, 1, 7, 8};   // half-split: pairs (0,2) and (1,3)
    rope_apply(h, 3, 4, 100.0, ROPE_HALF, 0);
    cr_assert(fabsf(h[0] - (float)cos(3.0)) < 1e-6f && fabsf(h[2] - (float)sin(3.0)) < 1e-6f, "half pair 0");
    cr_assert(fabsf(h[1] + (float)sin(0.3)) < 1e-6f && fabsf(h[3] - (float)cos(0.3)) < 1e-6f, "half pair 1");
    cr_assert(h[4] == 7 && h[5] == 8, "half: dims past n_rot are untouched");
    float z[4] = {0.3f, -1.0f, 2.0f, 0.5f}, z0[4];
    memcpy(z0, z, sizeof z);
    rope_apply(z, 0, 4, 10000.0, ROPE_HALF, 0);
    cr_assert(memcmp(z, z0, sizeof z) == 0, "position 0 is the identity");
}

Test(math, rope_norm_inverse_relative) {
    Rng r;
    rng_seed(&r, 51);
    enum { D = 32 };
    for (int style = 0; style < 2; style++) {
        float *q = randn(&r, D, 1.0f), *k = randn(&r, D, 1.0f), x[D];
        double n0 = dot_f(q, q, D);
        int positions[] = {0, 1, 7, 100, 4095, 50000};
        for (int p = 0; p < 6; p++) {
            memcpy(x, q, sizeof x);
            rope_apply(x, positions[p], D, 10000.0, (RopeStyle)style, 0);
            cr_assert(fabs(dot_f(x, x, D) - n0) < 1e-5 * n0, "style %d pos %d: norm changed", style, positions[p]);
            rope_apply(x, positions[p], D, 10000.0, (RopeStyle)style, 1);
            for (int i = 0; i < D; i++)
                cr_assert(fabsf(x[i] - q[i]) < 1e-5f, "style %d pos %d: inverse does not undo", style, positions[p]);
        }
        // q(m) . k(n) depends only on m - n
        int pairs[][2] = {{5, 2}, {13, 10}, {1003, 1000}, {3, 0}};
        double ref = 0.0;
        for (int t = 0; t < 4; t++) {
            float qm[D], kn[D];
            memcpy(qm, q, sizeof qm);
            memcpy(kn, k, sizeof kn);
            rope_apply(qm, pairs[t][0], D, 10000.0, (RopeStyle)style, 0);
            rope_apply(kn, pairs[t][1], D, 10000.0, (RopeStyle)style, 0);
            double s = dot_f(qm, kn, D);
            if (t == 0) ref = s;
            else cr_assert(fabs(s - ref) < 1e-4 * (1 + fabs(ref)), "style %d: q.k at offset 3 varies: %g vs %g", style,
                           s, ref);
        }
        // and it does change with the offset (the property is not vacuous)
        float qm[D], kn[D];
        memcpy(qm, q, sizeof qm);
        memcpy(kn, k, sizeof kn);
        rope_apply(qm, 9, D, 10000.0, (RopeStyle)style, 0);
        rope_apply(kn, 2, D, 10000.0, (RopeStyle)style, 0);
        cr_assert(fabs(dot_f(qm, kn, D) - ref) > 1e-3, "style %d: offset 7 should differ from offset 3", style);
        free(q); free(k);
    }
}

Test(math, rope_styles_agree_after_permutation) {
    // interleaved dim 2i <-> half-split dim i, interleaved 2i+1 <-> half-split i + n/2; dims past n_rot stay
    Rng r;
    rng_seed(&r, 52);
    enum { D = 24, NROT = 16 };
    float *x = randn(&r, D, 1.0f), a[D], b[D];
    memcpy(a, x, sizeof a);
    for (int i = 0; i < NROT / 2; i++) {
        b[i] = x[2 * i];
        b[i + NROT / 2] = x[2 * i + 1];
    }
    for (int i = NROT; i < D; i++) b[i] = x[i];
    rope_apply(a, 77, NROT, 500.0, ROPE_INTERLEAVED, 0);
    rope_apply(b, 77, NROT, 500.0, ROPE_HALF, 0);
    for (int i = 0; i < NROT / 2; i++) {
        cr_assert(fabsf(a[2 * i] - b[i]) < 1e-6f && fabsf(a[2 * i + 1] - b[i + NROT / 2]) < 1e-6f, "pair %d", i);
    }
    for (int i = NROT; i < D; i++) cr_assert(a[i] == x[i] && b[i] == x[i], "tail dim %d", i);
    free(x);
}

// ---- activations --------------------------------------------------------------------------------

static double silu_d(double x) { return x / (1.0 + exp(-x)); }
static double gelu_d(double x) { return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }

Test(math, activations_forward_and_gradients) {
    Rng r;
    rng_seed(&r, 61);
    enum { n = 40 };
    float *x = randn(&r, n, 2.0f), *G = randn(&r, n, 1.0f), out[n], dx[n];
    x[0] = 0.0f; x[1] = 12.0f; x[2] = -12.0f;   // the centre and both saturated tails
    double xd[n], num[n];
    for (int act = 0; act < 2; act++) {
        double (*f)(double) = act ? gelu_d : silu_d;
        if (act) gelu_forward(out, x, n);
        else silu_forward(out, x, n);
        for (int i = 0; i < n; i++) {
            double want = f(x[i]);
            cr_assert(fabs(out[i] - want) <= 1e-6 + 1e-5 * fabs(want), "%s(%g) = %g want %g", act ? "gelu" : "silu",
                      (double)x[i], (double)out[i], want);
        }
        for (int i = 0; i < n; i++) dx[i] = 2.0f;
        if (act) gelu_backward(dx, G, x, n);
        else silu_backward(dx, G, x, n);
        for (int i = 0; i < n; i++) dx[i] -= 2.0f;
        to_double(xd, x, n);
        // elementwise: d/dx_i sum_j G_j f(x_j) = G_i f'(x_i)
        for (int i = 0; i < n; i++) num[i] = G[i] * (f(xd[i] + 1e-5) - f(xd[i] - 1e-5)) / 2e-5;
        assert_grad(act ? "gelu dx" : "silu dx", dx, num, n);
    }
    free(x); free(G);
}
