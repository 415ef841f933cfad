// Chapter 1: the matrices of self-attention.
//
// Article: "A Visual Guide to Attention Variants in Modern LLMs", the opening section on how one
// attention head turns token embeddings into a weighted mix of values. Every step is one matrix, drawn:
//
//   X (T,d)                       token embeddings, one row per token
//   Q = X W_q, K = X W_k, V = X W_v   (T,d_head) each: what a token looks for, offers, carries
//   S = Q K^T (T,T)               row i: how well query i matches every key j
//   S / sqrt(d_head)              keeps the scores' spread independent of d_head (figure 3)
//   P = softmax(S / sqrt(d_head)) each row sums to 1: how much token i reads from token j
//   Z = P V (T,d_head)            the head's output: a weighted average of value rows
//
// The weights are random (seeded); chapter 2 shows what training does to P.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "cli.h"
#include "heatmap.h"
#include "mathx.h"
#include "plot.h"
#include "rng.h"

#define T 8        // tokens
#define D 12       // model width d
#define DH 4       // head dimension d_head

static const char *tokens[T] = {"the", "cat", "sat", "on", "the", "warm", "mat", "."};

static const char *dim_labels[D] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"};

// Figure 3: why divide by sqrt(d_head). For random q, k with unit-variance entries, q.k has variance
// d_head, so unscaled scores grow with the head size and softmax collapses onto one key. Measured by
// the average largest attention weight over `n_keys` keys, with and without the scaling.
static void figure_why_scale(const CliArgs *a, Rng *rng) {
    enum { NDIMS = 9, N_KEYS = 16, TRIALS = 400 };
    double dims[NDIMS], unscaled[NDIMS], scaled[NDIMS];
    float q[256], k[N_KEYS][256], s[N_KEYS], p[N_KEYS];
    for (int di = 0; di < NDIMS; di++) {
        int dh = 1 << di;   // 1 .. 256
        double sum_u = 0, sum_s = 0;
        for (int t = 0; t < TRIALS; t++) {
            rng_fill_normal(rng, q, dh, 1.0f);
            for (int j = 0; j < N_KEYS; j++) rng_fill_normal(rng, k[j], dh, 1.0f);
            for (int scale = 0; scale < 2; scale++) {
                for (int j = 0; j < N_KEYS; j++) {
                    float dot = 0;
                    for (int c = 0; c < dh; c++) dot += q[c] * k[j][c];
                    s[j] = scale ? dot / sqrtf((float)dh) : dot;
                }
                softmax_row(p, s, NULL, N_KEYS);
                float mx = 0;
                for (int j = 0; j < N_KEYS; j++) mx = p[j] > mx ? p[j] : mx;
                if (scale) sum_s += mx; else sum_u += mx;
            }
        }
        dims[di] = dh;
        unscaled[di] = sum_u / TRIALS;
        scaled[di] = sum_s / TRIALS;
    }
    PlotSeries series[2] = {
        {.label = "softmax(q.k): unscaled", .x = dims, .y = unscaled, .n = NDIMS, .color = COLOR_MQA, .markers = 1},
        {.label = "softmax(q.k / sqrt(d_head)): scaled", .x = dims, .y = scaled, .n = NDIMS, .color = COLOR_MHA, .markers = 1},
    };
    PlotRef uniform = {.label = "uniform attention: 1/16", .value = 1.0 / N_KEYS};
    char claim[200];
    snprintf(claim, sizeof claim, "Unscaled, the largest of 16 attention weights grows from %.2f to %.2f as d_head goes from 1 "
             "to 256; scaled by 1/sqrt(d_head) it stays between %.2f and %.2f.", unscaled[0], unscaled[NDIMS - 1],
             fmin(scaled[0], scaled[NDIMS - 1]), fmax(scaled[0], scaled[NDIMS - 1]));
    LineChart c = {
        .title = "Why attention divides scores by sqrt(d_head)",
        .subtitle = "random unit-variance q and 16 keys, 400 trials per point: unscaled, softmax turns one-hot",
        .claim = claim,
        .xlabel = "head dimension d_head",
        .ylabel = "average largest attention weight",
        .logx = 1, .ymin = 0, .ymax = 1.05,
        .series = series, .n_series = 2, .refs = &uniform, .n_refs = 1, .legend_pos = PLOT_LEGEND_TOP_LEFT,
        .note = "d_head on a log scale: it doubles from 1 to 256",
    };
    char path[1024];
    plot_line_chart(&c, path_join(path, sizeof path, a->out, "03_why_scale"), a->png, a->svg);
}

int main(int argc, char **argv) {
    CliSpec spec = {
        .prog = "ch01",
        .summary = "Chapter 1: from embeddings X to Q, K, V, scores, scaling and softmax, drawn as heatmaps.",
        .flags = CLI_OUT | CLI_FORMAT | CLI_SEED,
        .default_out = "figures/ch01",
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    ensure_out_dir(a.out);
    Rng rng;
    rng_seed(&rng, a.seed);

    // X: one embedding per distinct word, so both "the" rows are identical.
    float X[T * D], Wq[D * DH], Wk[D * DH], Wv[D * DH];
    for (int i = 0; i < T; i++) {
        int first = i;
        for (int j = 0; j < i; j++)
            if (!strcmp(tokens[j], tokens[i])) { first = j; break; }
        if (first == i) rng_fill_normal(&rng, &X[i * D], D, 1.0f);
        else memcpy(&X[i * D], &X[first * D], sizeof(float) * D);
    }
    // W (d, d_head) with std 1/sqrt(d) so Q, K, V entries have roughly unit variance
    rng_fill_normal(&rng, Wq, D * DH, 1.0f / sqrtf(D));
    rng_fill_normal(&rng, Wk, D * DH, 1.0f / sqrtf(D));
    rng_fill_normal(&rng, Wv, D * DH, 1.0f / sqrtf(D));

    float Q[T * DH], K[T * DH], V[T * DH], S[T * T], Ss[T * T], P[T * T], Z[T * DH];
    matmul(Q, X, Wq, T, D, DH, 0);          // Q (T,dh) = X (T,d) @ Wq (d,dh)
    matmul(K, X, Wk, T, D, DH, 0);
    matmul(V, X, Wv, T, D, DH, 0);
    matmul_nt(S, Q, K, T, DH, T, 0);         // S (T,T) = Q @ K^T
    float scale = 1.0f / sqrtf((float)DH);
    for (int i = 0; i < T * T; i++) Ss[i] = S[i] * scale;
    for (int i = 0; i < T; i++) softmax_row(&P[i * T], &Ss[i * T], NULL, T);
    matmul(Z, P, V, T, T, DH, 0);            // Z (T,dh) = P (T,T) @ V (T,dh)

    static const char *hd[DH] = {"0", "1", "2", "3"};
    char path[1024];

    // Figure 1: X -> Q, K, V
    HeatPanel qkv[4] = {
        {.values = X, .rows = T, .cols = D, .title = "X: embeddings (T x d)", .row_labels = tokens,
         .col_labels = dim_labels, .xlabel = "embedding dim", .ylabel = "token", .op_after = "x W_q, W_k, W_v"},
        {.values = Q, .rows = T, .cols = DH, .title = "Q = X W_q", .row_labels = tokens, .col_labels = hd, .xlabel = "head dim"},
        {.values = K, .rows = T, .cols = DH, .title = "K = X W_k", .row_labels = tokens, .col_labels = hd, .xlabel = "head dim"},
        {.values = V, .rows = T, .cols = DH, .title = "V = X W_v", .row_labels = tokens, .col_labels = hd, .xlabel = "head dim"},
    };
    HeatmapFigure f1 = {
        .title = "Step 1: each token's embedding is projected to a query, a key and a value",
        .subtitle = "T = 8 tokens, d = 12, d_head = 4, random weights (seeded); identical words have identical rows",
        .claim = "X (8 x 12) times W_q, W_k, W_v gives Q, K, V (8 x 4 each); both 'the' rows are equal in X and so in Q, K and V.",
        .panels = qkv, .n_panels = 4, .diverging = 1, .show_values = 1, .vmin = -3, .vmax = 3,
        .colorbar_label = "value",
    };
    heatmap_figure(&f1, path_join(path, sizeof path, a.out, "01_x_to_qkv"), a.png, a.svg);

    // Figure 2: S -> S / sqrt(dh) -> softmax -> Z
    HeatPanel steps[4] = {
        {.values = S, .rows = T, .cols = T, .title = "S = Q K^T", .row_labels = tokens, .col_labels = tokens,
         .xlabel = "key j", .ylabel = "query i", .vmin = -6, .vmax = 6, .diverging = 1, .colorbar_label = "score",
         .op_after = "/ sqrt(4)"},
        {.values = Ss, .rows = T, .cols = T, .title = "S / sqrt(d_head)", .row_labels = tokens, .col_labels = tokens,
         .xlabel = "key j", .ylabel = "query i", .vmin = -6, .vmax = 6, .diverging = 1, .colorbar_label = "score"},
        {.values = P, .rows = T, .cols = T, .title = "P = softmax of each row of S / sqrt(d_head)", .row_labels = tokens,
         .col_labels = tokens, .xlabel = "key j", .ylabel = "query i", .vmin = 0, .vmax = 1,
         .colorbar_label = "attention weight", .op_after = "P V"},
        {.values = Z, .rows = T, .cols = DH, .title = "Z = P V", .row_labels = tokens, .col_labels = hd,
         .xlabel = "head dim", .vmin = -3, .vmax = 3, .diverging = 1, .colorbar_label = "value"},
    };
    HeatmapFigure f2 = {
        .title = "Step 2: scores, scaling, softmax, and the weighted sum of values",
        .subtitle = "row i of P: how much token i reads from each token j (each row sums to 1); no mask yet",
        .claim = "S = QK^T is divided by sqrt(4) = 2, softmax turns each row into weights that sum to 1, and Z = PV mixes the value rows by them.",
        .panels = steps, .n_panels = 4, .panels_per_row = 2, .show_values = 1,
    };
    heatmap_figure(&f2, path_join(path, sizeof path, a.out, "02_scores_softmax"), a.png, a.svg);

    // The exact attention matrix as a raw PNG (one 32 px block per cell) for zooming and scripts.
    if (a.png) heatmap_raw_png(path_join(path, sizeof path, a.out, "02_attention_raw.png"), P, NULL, T, T, 32, 0, 1, 0);

    figure_why_scale(&a, &rng);
    printf("ch01: wrote figures to %s/ (01_x_to_qkv, 02_scores_softmax, 02_attention_raw.png, 03_why_scale)\n", a.out);
    free(a.pos);
    return 0;
}
