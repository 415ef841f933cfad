// headstats.h: what one attention head does, in numbers: the statistics behind "this is a
// previous-token head", "this is an induction head", "this head parks on the first token (a sink)".
//
// A is one head's causal attention (T, T) on one sample with tokens tok (T). Rows t >= 1 are counted
// (row 0 can only attend to itself). Per row t:
//   first      A[t][0]                          all of it: an attention sink on the first token
//   prev       A[t][t-1]                        a previous-token head
//   self       A[t][t]
//   induction  sum of A[t][s+1] over the earlier copies s < t-1 of token t (tok[s] == tok[t]): the
//              token right after an earlier occurrence, what an induction head reads (in recall this
//              is the lookup: the queried key's value). Only rows that have such a copy count.
//   distance   sum_s A[t][s] (t - s)            how far back the head reads
//   entropy    -sum_s A[t][s] ln A[t][s]        0: one token; ln(t+1): uniform
// HeadStats accumulates sums over rows and samples; headstats_mean turns them into means.
#pragma once

enum { HS_FIRST, HS_PREV, HS_SELF, HS_INDUCTION, HS_DISTANCE, HS_ENTROPY, HS_N };
extern const char *const headstats_names[HS_N];   // "first", "prev", "self", "induction", "distance", "entropy"

typedef struct {
    double sum[HS_N];
    long rows;              // rows counted (every statistic but induction)
    long induction_rows;    // rows with an earlier copy of their token
} HeadStats;

// Adds the rows t in [t0, T) of A (T,T) (t0 >= 1; 1 counts every row that has a choice).
void headstats_add(HeadStats *s, const float *A, const int *tok, int T, int t0);
// Adds row t (1 <= t < T) alone.
void headstats_add_row(HeadStats *s, const float *A, const int *tok, int T, int t);
// mean[HS_N]: the means (0 where nothing was counted).
void headstats_mean(const HeadStats *s, double *mean);
// What uniform causal attention would put on the first token, averaged over rows [t0, T).
double headstats_uniform_first(int T, int t0);
