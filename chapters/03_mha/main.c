// Chapter 3: multi-head attention and its KV cache.
//
// Article: the section on multi-head attention. H heads run the chapter-2 head in parallel, each with
// its own W_q, W_k, W_v slice, so each can learn a different pattern; their outputs are concatenated and
// mixed by W_o. At inference a decoder keeps every past token's keys and values (the KV cache) so a new
// token costs one row of attention instead of recomputing the whole matrix. That cache is what the
// rest of the article's variants shrink: for MHA it holds 2 * n_heads * head_dim numbers per token per
// layer, and it grows linearly with context.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "03_mha/mha.h"
#include "chapter.h"
#include "check.h"
#include "cli.h"
#include "heatmap.h"
#include "hfconfig.h"
#include "kvcache.h"
#include "mathx.h"
#include "plot.h"
#include "rng.h"

// Figure 1: each head's attention pattern, side by side, trained vs untrained. The shipped model
// (2 layers x 4 heads) learned the induction task: a random segment, then the same segment again.
// To continue the copy, a head must find where the current token appeared before and read the token
// after it: the "induction stripe", a diagonal offset by the segment length.
static void figure_heads(const CliArgs *a, Trained *t) {
    const ModelGeometry *g = &t->model->g;
    int H = g->n_heads, T = t->n_tokens, L = g->n_layers;
    size_t hs = (size_t)H * T * T;
    float *A = mallocCheck(sizeof(float) * hs * 3);
    trained_attention(t, 0, 0, A);
    trained_attention(t, 0, L - 1, A + hs);
    trained_attention(t, 1, L - 1, A + 2 * hs);
    unsigned char *causal = mallocCheck((size_t)(T * T));
    mask_fill(causal, MASK_CAUSAL, T, 0);
    HeatPanel panels[24];
    char titles[24][48];
    static const char *row_name[3] = {"trained layer 0", "trained layer", "untrained layer"};
    for (int r = 0; r < 3; r++)
        for (int h = 0; h < H; h++) {
            int k = r * H + h;
            if (r == 0) snprintf(titles[k], sizeof titles[k], "%s, head %d", row_name[r], h);
            else snprintf(titles[k], sizeof titles[k], "%s %d, head %d", row_name[r], L - 1, h);
            panels[k] = (HeatPanel){.values = A + (size_t)k * T * T, .mask = causal, .rows = T, .cols = T,
                                    .title = titles[k], .row_labels = t->labels, .col_labels = t->labels,
                                    .xlabel = "key j", .ylabel = h == 0 ? "query i" : NULL};
        }
    char sub[300], cap[160];
    snprintf(sub, sizeof sub, "%d heads per layer on %s; %s", H, task_example_phrase(&t->task),
             trained_caption(t, cap, sizeof cap));
    HeatmapFigure f = {
        .title = "Multi-head attention: every head learns its own pattern",
        .subtitle = sub, .panels = panels, .n_panels = 3 * H, .panels_per_row = H, .vmin = 0, .vmax = 1,
        .show_values = 0, .colorbar_label = "attention weight",
        .note = "bottom row: the same model before training (same seed). Hatched cells are masked future tokens.",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "01_heads"), a->png, a->svg);
    free(A);
    free(causal);
}

// Figure 2: decoding one token at a time against the KV cache gives the same logits as the full
// forward over the whole sequence.
static void figure_decode(const CliArgs *a, Trained *t) {
    Model *m = t->model;
    int T = t->n_tokens, V = m->g.vocab_size;
    float *full = mallocCheck(sizeof(float) * T * V), *dec = mallocCheck(sizeof(float) * T * V);
    float *diff = mallocCheck(sizeof(float) * T * V);
    model_forward(m, t->tokens, NULL, 1, T);
    memcpy(full, m->logits, sizeof(float) * T * V);
    ModelCache *c = model_cache_new(m, T);
    float maxdiff = 0, vmax = 0;
    for (int i = 0; i < T; i++) {
        model_decode(c, &dec[i * V], t->tokens[i]);
        for (int v = 0; v < V; v++) {
            diff[i * V + v] = fabsf(dec[i * V + v] - full[i * V + v]);
            if (!isnan(maxdiff) && !(diff[i * V + v] <= maxdiff)) maxdiff = diff[i * V + v];   // a NaN sticks
            if (fabsf(full[i * V + v]) > vmax) vmax = fabsf(full[i * V + v]);
        }
    }
    size_t bytes = model_cache_bytes(c);
    model_cache_free(c);
    const char **vocab = mallocCheck(sizeof(char *) * (size_t)V);
    for (int v = 0; v < V; v++) vocab[v] = task_token_str(&t->task, v);
    char sub[300], b[32];
    snprintf(sub, sizeof sub, "after %d decode steps the cache holds %s (%d layers x K and V x %d heads x %d dims x 4 bytes x %d tokens); largest difference %.1e",
             T, fmt_bytes(b, sizeof b, (double)bytes), m->g.n_layers, m->g.n_kv_heads, m->g.head_dim, T, maxdiff);
    HeatPanel panels[3] = {
        {.values = full, .rows = T, .cols = V, .title = "full forward: logits of all tokens at once", .row_labels = t->labels,
         .col_labels = vocab, .xlabel = "next-token logit", .ylabel = "input token", .diverging = 1, .vmin = -vmax, .vmax = vmax},
        {.values = dec, .rows = T, .cols = V, .title = "decode: one token at a time with a KV cache", .row_labels = t->labels,
         .col_labels = vocab, .xlabel = "next-token logit", .diverging = 1, .vmin = -vmax, .vmax = vmax},
        {.values = diff, .rows = T, .cols = V, .title = "|difference|", .row_labels = t->labels, .col_labels = vocab,
         .xlabel = "next-token logit", .vmin = 0, .vmax = 1e-4f},
    };
    // The title claims equality only when the numbers show it (1e-4 is float32 noise at these logits).
    int same = maxdiff <= 1e-4f * fmaxf(1.0f, vmax);
    HeatmapFigure f = {
        .title = same ? "Cached decode reproduces the full forward" : "Cached decode does NOT reproduce the full forward",
        .subtitle = sub, .panels = panels, .n_panels = 3, .panels_per_row = 1, .show_values = 0,
        .colorbar_per_panel = 1, .colorbar_label = "logit",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "02_decode_equals_forward"), a->png, a->svg);
    printf("  cached decode vs full forward: max |logit difference| = %.2e, cache %zu bytes\n", maxdiff, bytes);
    free(full); free(dec); free(diff); free(vocab);
}

// Figure 3: KV-cache bytes vs context for real MHA models, read from their config.json.
static void figure_kv_memory(const CliArgs *a, const char *configs) {
    MemoryCurve c[2] = {{.color = COLOR_MHA}, {.color = COLOR_OTHER}};
    chapter_config(&c[0].g, configs, "gpt2.json", "GPT-2 small (124M)");
    chapter_config(&c[1].g, configs, "olmo2-7b.json", "OLMo 2 7B");
    char labels[2][1200], b[32];
    for (int m = 0; m < 2; m++) {
        const ModelGeometry *g = &c[m].g;
        snprintf(labels[m], sizeof labels[m], "%s: %d layers x 2 x %d heads x %d dims x 2 B = %s/token", g->name,
                 g->n_layers, g->n_heads, g->head_dim, fmt_bytes(b, sizeof b, kvcache_bytes_per_token(g)));
        c[m].label = labels[m];
    }
    chapter_memory_plot(a, "03_kv_cache_vs_context", "KV cache of multi-head attention grows linearly with context",
                        "one sequence, bf16; per token: layers x 2 (K and V) x heads x head_dim x 2 bytes",
                        c, 2, 131072, NULL);
}

int main(int argc, char **argv) {
    const char *configs = "data/configs";
    CliOpt opts[] = {
        {.name = "--configs", .type = OPT_STRING, .dst = &configs, .meta = "DIR",
         .help = "folder of Hugging Face config.json files (default data/configs)"},
    };
    CliSpec spec = {
        .prog = "ch03",
        .summary = "Chapter 3: multi-head attention, per-head heatmaps, cached decode, KV memory of MHA models.",
        .flags = CLI_OUT | CLI_FORMAT | CLI_SEED | CLI_WEIGHTS,
        .default_out = "figures/ch03",
        .default_weights = "data/weights/ch03_induction.safetensors",
        .opts = opts, .n_opts = 1,
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    // every input first: a bad one fails before anything is written
    chapter_check_configs(configs, "gpt2.json", "olmo2-7b.json", NULL);
    Trained t;
    trained_load(&t, a.weights);
    trained_require(&t, "gqa|gated", -1, "chapter 3 (its cache is K and V per KV head)");
    if (t.model->g.n_heads > 8) die_user("%s: the figure draws at most 8 heads, the model has %d", t.path, t.model->g.n_heads);
    ensure_out_dir(a.out);
    figure_heads(&a, &t);
    figure_decode(&a, &t);
    figure_kv_memory(&a, configs);
    char curve[160];
    snprintf(curve, sizeof curve, "Training the chapter-3 model on the %s task", t.task.name);
    trained_plot_curve(&t, &a, "04_training_curve", curve);
    trained_free(&t);
    printf("ch03: wrote figures to %s/ (01_heads, 02_decode_equals_forward, 03_kv_cache_vs_context, 04_training_curve)\n", a.out);
    free(a.pos);
    return 0;
}
