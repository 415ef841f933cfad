// Chapter 2: self-attention with one head, and the masks that decide who may see whom.
//
// Article: the section on self-attention and the masked attention matrix. A decoder may not look at
// future tokens, so its attention matrix is lower-triangular: the causal mask. Other masks give other
// models: an encoder sees everything (bidirectional), a prefix-LM sees its prompt bidirectionally and
// generates causally, and a sliding window sees only the last W tokens (chapter 6).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "02_self_attention/selfattn.h"
#include "chapter.h"
#include "check.h"
#include "cli.h"
#include "heatmap.h"
#include "mathx.h"
#include "rng.h"

#define T 8
#define D 16
#define DH 8

static const char *tokens[T] = {"Your", "journey", "starts", "with", "one", "step", "today", "."};

// Figure 3: what training does to one head. The shipped model (2 layers, 1 head each) learned
// associative recall: after ':' it must answer each queried key with the value paired with it earlier.
// Its layer-1 head learns to look from the query back to that key's pair; the untrained twin (same
// seed, no training) spreads its attention evenly.
static void figure_trained(const CliArgs *a, Trained *t) {
    int n = t->n_tokens, L = t->model->g.n_layers;
    float *A[3];
    for (int k = 0; k < 3; k++) A[k] = mallocCheck(sizeof(float) * (size_t)(t->model->g.n_heads * n * n));
    trained_attention(t, 1, L - 1, A[0]);
    trained_attention(t, 0, 0, A[1]);
    trained_attention(t, 0, L - 1, A[2]);
    unsigned char *causal = mallocCheck((size_t)(n * n));
    mask_fill(causal, MASK_CAUSAL, n, 0);
    char t0[64], t1[64], t2[64];
    snprintf(t0, sizeof t0, "untrained, layer %d", L - 1);
    snprintf(t1, sizeof t1, "trained, layer 0");
    snprintf(t2, sizeof t2, "trained, layer %d", L - 1);
    HeatPanel panels[3] = {
        {.values = A[0], .mask = causal, .rows = n, .cols = n, .title = t0, .row_labels = t->labels,
         .col_labels = t->labels, .xlabel = "key j", .ylabel = "query i"},
        {.values = A[1], .mask = causal, .rows = n, .cols = n, .title = t1, .row_labels = t->labels,
         .col_labels = t->labels, .xlabel = "key j"},
        {.values = A[2], .mask = causal, .rows = n, .cols = n, .title = t2, .row_labels = t->labels,
         .col_labels = t->labels, .xlabel = "key j"},
    };
    // The shipped model's story (recall, one head) is told only for such a model; another --weights
    // model gets a title that claims no more than its panels show.
    int story = t->task.kind == TASK_RECALL && t->model->g.n_heads == 1;
    char sub[400], cap[160], claim[300], curve[160];
    snprintf(sub, sizeof sub, "%s on %s; %s", t->model->g.n_heads == 1 ? "one head per layer" : "head 0 of each layer",
             task_example_phrase(&t->task), trained_caption(t, cap, sizeof cap));
    if (story)
        snprintf(claim, sizeof claim, "After training, layer 0 looks one token back and layer %d sends each queried key "
                 "to the value stored after it (%.1f%% held-out recall); the untrained twin spreads its weight evenly.",
                 L - 1, 100.0 * t->info.accuracy);
    else
        snprintf(claim, sizeof claim, "A trained model's attention next to its untrained twin (same geometry and seed).");
    HeatmapFigure f = {
        .title = story ? "Training teaches a head where to look: each queried key finds the value stored after it"
                       : "Training teaches a head where to look: the trained model next to its untrained twin",
        .subtitle = sub, .claim = claim, .panels = panels, .n_panels = 3, .vmin = 0, .vmax = 1, .show_values = 0,
        .colorbar_label = "attention weight",
        .note = story ? "layer 0 learned to look one token back (so each value token knows its key); layer 1 then matches "
                        "the query to that key. Untrained: the same seed before any step."
                      : "Untrained: same geometry and seed, no training.",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "03_trained_attention"), a->png, a->svg);
    snprintf(curve, sizeof curve, "Training the chapter-2 model on %s", t->task.kind == TASK_RECALL ? "associative recall" : t->task.name);
    trained_plot_curve(t, a, "04_training_curve", curve);
    for (int k = 0; k < 3; k++) free(A[k]);
    free(causal);
}

int main(int argc, char **argv) {
    CliSpec spec = {
        .prog = "ch02",
        .summary = "Chapter 2: one self-attention head, the causal attention matrix and a gallery of masks.",
        .flags = CLI_OUT | CLI_FORMAT | CLI_SEED | CLI_WEIGHTS,
        .default_out = "figures/ch02",
        .default_weights = "data/weights/ch02_recall.safetensors",
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    // every input first: a bad one fails before anything is written
    Trained *t = mallocCheck(sizeof *t);
    trained_load(t, a.weights);
    trained_require(t, "gqa|mla|dsa|gated", -1, "the trained-attention figure");
    ensure_out_dir(a.out);
    figure_trained(&a, t);
    trained_free(t);
    free(t);
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
        .subtitle = "one head, random weights (seeded): each row sums to 1 over the tokens it may see",
        .claim = "A decoder's attention matrix is lower-triangular: token i spreads a weight of 1 over tokens 0..i, and the future is masked.",
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
                                .ylabel = "query i"};
    }
    HeatmapFigure f2 = {
        .title = "One head, four masks: who may attend to whom",
        .subtitle = "the same weights and tokens in every panel; only the mask changes",
        .claim = "The same head under four masks: bidirectional sees everything, causal the past, prefix-LM the whole prompt, a window of 3 only the last 3 tokens.",
        .panels = panels, .n_panels = 4, .panels_per_row = 2, .vmin = 0, .vmax = 1, .show_values = 1,
        .colorbar_label = "attention weight",
    };
    heatmap_figure(&f2, path_join(path, sizeof path, a.out, "02_mask_gallery"), a.png, a.svg);

    printf("ch02: wrote figures to %s/ (01_causal_attention, 02_mask_gallery, 03_trained_attention, 04_training_curve)\n", a.out);
    free(a.pos);
    return 0;
}
