// headstats.c: per-head attention statistics (headstats.h).
#include "headstats.h"

#include <math.h>
#include <stddef.h>

const char *const headstats_names[HS_N] = {"first", "prev", "self", "induction", "distance", "entropy"};

void headstats_add_row(HeadStats *s, const float *A, const int *tok, int T, int t) {
    if (t < 1 || t >= T) return;
    const float *a = A + (size_t)t * T;
    double dist = 0.0, ent = 0.0, ind = 0.0;
    int has_copy = 0;
    for (int j = 0; j <= t; j++) {
        double p = a[j];
        dist += p * (t - j);
        if (p > 0.0) ent -= p * log(p);
    }
    for (int j = 0; j + 1 < t; j++)
        if (tok[j] == tok[t]) {   // an earlier copy at j: an induction head reads j + 1
            has_copy = 1;
            ind += a[j + 1];
        }
    s->sum[HS_FIRST] += a[0];
    s->sum[HS_PREV] += a[t - 1];
    s->sum[HS_SELF] += a[t];
    s->sum[HS_DISTANCE] += dist;
    s->sum[HS_ENTROPY] += ent;
    s->rows++;
    if (has_copy) {
        s->sum[HS_INDUCTION] += ind;
        s->induction_rows++;
    }
}

void headstats_add(HeadStats *s, const float *A, const int *tok, int T, int t0) {
    for (int t = t0 < 1 ? 1 : t0; t < T; t++) headstats_add_row(s, A, tok, T, t);
}

void headstats_mean(const HeadStats *s, double *mean) {
    for (int k = 0; k < HS_N; k++) {
        long n = k == HS_INDUCTION ? s->induction_rows : s->rows;
        mean[k] = n > 0 ? s->sum[k] / (double)n : 0.0;
    }
}

double headstats_uniform_first(int T, int t0) {
    double u = 0.0;
    int n = 0;
    for (int t = t0 < 1 ? 1 : t0; t < T; t++, n++) u += 1.0 / (t + 1);
    return n > 0 ? u / n : 0.0;
}
