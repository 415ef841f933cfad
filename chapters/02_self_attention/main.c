// Chapter 2: self-attention with one head, and the masks that decide who may see whom.
//
// Article: the section on self-attention and the masked attention matrix. A decoder may not look at
// future tokens, so its attention matrix is lower-triangular: the causal mask. Other masks give other
// models: an encoder sees everything (bidirectional), a prefix-LM sees its prompt bidirectionally and
// generates causally, and a sliding window sees only the last W tokens (chapter 6).
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "02_self_attention/selfattn.h"
#include "check.h"
#include "cli.h"
#include "heatmap.h"
#include "mathx.h"
#include "rng.h"

#define T 8
#define D 16
#define DH 8

static const char *tokens[T] = {"Your", "journey", "starts", "with", "one", "step", "today", "."};

int main(int argc, char **argv) {
    CliSpec spec = {
        .prog = "ch02",
        .summary = "Chapter 2: one self-attention head, the causal attention matrix and a gallery of masks.",
        .flags = CLI_OUT | CLI_FORMAT | CLI_SEED,
        .default_out = "figures/ch02",
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    ensure_out_dir(a.out);
    Rng rng;
    rng_seed(&rng, a.seed);

    float x[T * D], wq[D * DH], wk[D * DH], wv[D * DH];
    rng_fill_normal(&rng, x, T * D, 1.0f);
    rng_fill_normal(&rng, wq, D * DH, 1.0f / sqrtf(D));
    rng_fill_normal(&rng, wk, D * DH, 1.0f / sqrtf(D));
    rng_fill_normal(&rng, wv, D * DH, 1.0f / sqrtf(D));
    float out[T * DH], scratch[3 * T * DH + T * T];
    char path[1024];

    // Figure 1: the causal (decoder) attention matrix, values in the cells, masked cells hatched.
    unsigned char causal[T * T];
    float P[T * T];
    mask_fill(causal, MASK_CAUSAL, T, 0);
    selfattn_forward(out, P, x, wq, wk, wv, causal, T, D, DH, scratch);
    HeatPanel p1 = {.values = P, .mask = causal, .rows = T, .cols = T, .title = "causal self-attention weights",
                    .row_labels = tokens, .col_labels = tokens, .xlabel = "key j (attended to)",
                    .ylabel = "query i (attending)"};
    HeatmapFigure f1 = {
        .title = "The masked attention matrix of a decoder",
        .subtitle = "one head, random weights (seeded): each row sums to 1 over the tokens it may see; hatched cells are masked (future tokens)",
        .panels = &p1, .n_panels = 1, .vmin = 0, .vmax = 1, .show_values = 1,
        .colorbar_label = "attention weight",
    };
    heatmap_figure(&f1, path_join(path, sizeof path, a.out, "01_causal_attention"), a.png, a.svg);
    if (a.png) heatmap_raw_png(path_join(path, sizeof path, a.out, "01_causal_attention_raw.png"), P, causal, T, T, 32, 0, 1, 0);

    // Figure 2: the same head under four masks.
    static const struct { MaskKind kind; int param; const char *title; } masks[4] = {
        {MASK_BIDIRECTIONAL, 0, "bidirectional (encoder)"},
        {MASK_CAUSAL, 0, "causal (decoder)"},
        {MASK_PREFIX_LM, 3, "prefix-LM (prefix of 3)"},
        {MASK_SLIDING, 3, "sliding window (W = 3)"},
    };
    unsigned char mk[4][T * T];
    float Pk[4][T * T];
    HeatPanel panels[4];
    for (int m = 0; m < 4; m++) {
        mask_fill(mk[m], masks[m].kind, T, masks[m].param);
        selfattn_forward(out, Pk[m], x, wq, wk, wv, mk[m], T, D, DH, scratch);
        panels[m] = (HeatPanel){.values = Pk[m], .mask = mk[m], .rows = T, .cols = T, .title = masks[m].title,
                                .row_labels = tokens, .col_labels = tokens, .xlabel = "key j",
                                .ylabel = m == 0 ? "query i" : NULL};
    }
    HeatmapFigure f2 = {
        .title = "One head, four masks: who may attend to whom",
        .subtitle = "same weights and tokens in every panel; only the mask changes. Hatched cells are masked and get weight exactly 0",
        .panels = panels, .n_panels = 4, .panels_per_row = 2, .vmin = 0, .vmax = 1, .show_values = 1,
        .colorbar_label = "attention weight",
    };
    heatmap_figure(&f2, path_join(path, sizeof path, a.out, "02_mask_gallery"), a.png, a.svg);

    printf("ch02: wrote figures to %s/ (01_causal_attention, 02_mask_gallery)\n", a.out);
    return 0;
}
