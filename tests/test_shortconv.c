// test_shortconv.c: the short causal depthwise conv + SiLU shared by Gated DeltaNet, KDA and Mamba-2:
// forward against a direct double-precision loop, backward against central differences of that double
// reference, and decode steps against the full forward.
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "09_gdn/shortconv.h"
#include "check.h"
#include "rng.h"

// Double reference: loss = sum_{b,t,c} R * silu(sum_k w[c][k] x[b][t-(K-1)+k][c]), written from the
// definition (index the input directly, no shared code with shortconv.c).
static double ref_loss(const double *x, const double *w, const float *R, double *y, int B, int T, int C, int K) {
    double L = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++) {
                double p = 0;
                for (int k = 0; k < K; k++) {
                    int s = t - (K - 1) + k;
                    if (s >= 0) p += w[c * K + k] * x[((size_t)b * T + s) * C + c];
                }
                double v = p / (1.0 + exp(-p));
                if (y) y[((size_t)b * T + t) * C + c] = v;
                L += R[((size_t)b * T + t) * C + c] * v;
            }
    return L;
}

Test(shortconv, forward_and_gradients_match_double_reference) {
    const int B = 2, T = 7, C = 37, K = 4;   // C > one channel block, T > K
    Rng r;
    rng_seed(&r, 11);
    size_t n = (size_t)B * T * C;
    float *x = mallocCheck(n * sizeof(float)), *R = mallocCheck(n * sizeof(float));
    float *w = mallocCheck((size_t)C * K * sizeof(float));
    rng_fill_normal(&r, x, (long)n, 1.0f);
    rng_fill_normal(&r, R, (long)n, 1.0f);
    rng_fill_normal(&r, w, (long)C * K, 0.5f);
    float *y = mallocCheck(n * sizeof(float)), *pre = mallocCheck(n * sizeof(float));
    shortconv_forward(y, pre, x, w, B, T, C, K);

    double *xd = mallocCheck(n * sizeof(double)), *wd = mallocCheck((size_t)C * K * sizeof(double));
    double *yd = mallocCheck(n * sizeof(double));
    for (size_t i = 0; i < n; i++) xd[i] = x[i];
    for (int i = 0; i < C * K; i++) wd[i] = w[i];
    ref_loss(xd, wd, R, yd, B, T, C, K);
    double maxe = 0;
    for (size_t i = 0; i < n; i++) maxe = fmax(maxe, fabs(y[i] - yd[i]));
    cr_assert_lt(maxe, 1e-5, "forward max error %g", maxe);

    float *dx = calloc(n, sizeof(float)), *dw = calloc((size_t)C * K, sizeof(float));
    // accumulation: start from ones, subtract afterwards
    for (size_t i = 0; i < n; i++) dx[i] = 1.0f;
    shortconv_backward(dx, dw, R, pre, x, w, B, T, C, K);
    for (size_t i = 0; i < n; i++) dx[i] -= 1.0f;

    const double h = 1e-5;
    double num2 = 0, err2 = 0;
    for (size_t i = 0; i < n; i++) {
        double s = xd[i];
        xd[i] = s + h; double lp = ref_loss(xd, wd, R, NULL, B, T, C, K);
        xd[i] = s - h; double lm = ref_loss(xd, wd, R, NULL, B, T, C, K);
        xd[i] = s;
        double g = (lp - lm) / (2 * h);
        num2 += g * g; err2 += (g - dx[i]) * (g - dx[i]);
    }
    cr_assert_lt(sqrt(err2 / num2), 1e-5, "dx rel error %g", sqrt(err2 / num2));
    num2 = err2 = 0;
    for (int i = 0; i < C * K; i++) {
        double s = wd[i];
        wd[i] = s + h; double lp = ref_loss(xd, wd, R, NULL, B, T, C, K);
        wd[i] = s - h; double lm = ref_loss(xd, wd, R, NULL, B, T, C, K);
        wd[i] = s;
        double g = (lp - lm) / (2 * h);
        num2 += g * g; err2 += (g - dw[i]) * (g - dw[i]);
    }
    cr_assert_lt(sqrt(err2 / num2), 1e-5, "dw rel error %g", sqrt(err2 / num2));
    free(x); free(R); free(w); free(y); free(pre); free(xd); free(wd); free(yd); free(dx); free(dw);
}

Test(shortconv, step_equals_forward) {
    const int B = 1, T = 9, C = 45;
    for (int K = 1; K <= 4; K++) {
        Rng r;
        rng_seed(&r, 5 + K);
        size_t n = (size_t)B * T * C;
        float *x = mallocCheck(n * sizeof(float)), *w = mallocCheck((size_t)C * K * sizeof(float));
        rng_fill_normal(&r, x, (long)n, 1.0f);
        rng_fill_normal(&r, w, (long)C * K, 0.5f);
        float *y = mallocCheck(n * sizeof(float)), *pre = mallocCheck(n * sizeof(float));
        shortconv_forward(y, pre, x, w, B, T, C, K);
        float *state = calloc((size_t)(K > 1 ? K - 1 : 1) * C, sizeof(float));
        float ys[64];
        for (int t = 0; t < T; t++) {
            shortconv_step(ys, state, x + (size_t)t * C, w, C, K);
            for (int c = 0; c < C; c++)
                cr_assert_float_eq(ys[c], y[(size_t)t * C + c], 1e-6f, "K %d t %d c %d", K, t, c);
        }
        // the state holds the last K-1 inputs, oldest first
        for (int k = 0; k < K - 1; k++)
            for (int c = 0; c < C; c++)
                cr_assert_eq(state[(size_t)k * C + c], x[(size_t)(T - (K - 1) + k) * C + c]);
        free(x); free(w); free(y); free(pre); free(state);
    }
}
