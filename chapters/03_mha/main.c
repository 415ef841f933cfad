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
#include "check.h"
#include "cli.h"
#include "heatmap.h"
#include "hfconfig.h"
#include "kvcache.h"
#include "mathx.h"
#include "plot.h"
#include "rng.h"

#define T 12

static const char *tokens[T] = {"Mr", "and", "Mrs", "Dursley", "of", "number", "four", ",", "Privet", "Drive", ",", "were"};

// Figure 1: each head's attention pattern, side by side.
static void figure_heads(const CliArgs *a, const Mixer *m, const float *params, const float *x) {
    const ModelGeometry *g = m->g;
    int H = g->n_heads, d = g->d_model;
    size_t na = m->ops->act_floats(g, m->layer, 1, T);
    float *act = mallocCheck(sizeof(float) * na), *out = mallocCheck(sizeof(float) * T * d);
    float *A = mallocCheck(sizeof(float) * H * T * T);
    m->ops->forward(m, out, act, x, params, 1, T);
    m->ops->mixing_matrix(m, A, act, params, T);
    unsigned char causal[T * T];
    mask_fill(causal, MASK_CAUSAL, T, 0);
    HeatPanel panels[16];
    char titles[16][32];
    for (int h = 0; h < H && h < 16; h++) {
        snprintf(titles[h], sizeof titles[h], "head %d", h);
        panels[h] = (HeatPanel){.values = &A[h * T * T], .mask = causal, .rows = T, .cols = T,
                                .title = titles[h], .row_labels = tokens, .col_labels = tokens,
                                .xlabel = "key j", .ylabel = h == 0 ? "query i" : NULL};
    }
    HeatmapFigure f = {
        .title = "Multi-head attention: every head has its own attention matrix",
        .subtitle = "4 heads of one layer (d_model 32, head_dim 8), random weights (seeded); hatched cells are masked future tokens",
        .panels = panels, .n_panels = H, .vmin = 0, .vmax = 1, .show_values = 0,
        .colorbar_label = "attention weight",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "01_heads"), a->png, a->svg);
    free(act); free(out); free(A);
}

// Figure 2: decoding one token at a time against the KV cache gives the same output as the full
// forward over the whole sequence.
static void figure_decode(const CliArgs *a, const Mixer *m, const float *params, const float *x) {
    const ModelGeometry *g = m->g;
    int d = g->d_model;
    float *act = mallocCheck(sizeof(float) * m->ops->act_floats(g, m->layer, 1, T));
    float *full = mallocCheck(sizeof(float) * T * d), *dec = mallocCheck(sizeof(float) * T * d);
    float *diff = mallocCheck(sizeof(float) * T * d);
    m->ops->forward(m, full, act, x, params, 1, T);
    MixerCache *c = m->ops->cache_new(m, T);
    float maxdiff = 0;
    for (int t = 0; t < T; t++) {
        m->ops->decode(m, c, &dec[t * d], &x[t * d], params);
        for (int i = 0; i < d; i++) {
            diff[t * d + i] = fabsf(dec[t * d + i] - full[t * d + i]);
            if (diff[t * d + i] > maxdiff) maxdiff = diff[t * d + i];
        }
    }
    size_t bytes = m->ops->cache_bytes(c);
    m->ops->cache_free(c);
    // draw the first 16 output dims so the cells stay readable; the difference is over all d dims
    enum { SHOW = 16 };
    float *fs = mallocCheck(sizeof(float) * T * SHOW), *ds = mallocCheck(sizeof(float) * T * SHOW);
    float *dd = mallocCheck(sizeof(float) * T * SHOW), vmax = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < SHOW; i++) {
            fs[t * SHOW + i] = full[t * d + i];
            ds[t * SHOW + i] = dec[t * d + i];
            dd[t * SHOW + i] = diff[t * d + i];
            if (fabsf(full[t * d + i]) > vmax) vmax = fabsf(full[t * d + i]);
        }
    char sub[256], b[32];
    snprintf(sub, sizeof sub, "after %d decode steps the cache holds %s (K and V: 2 x %d heads x %d dims x 4 bytes x %d tokens); largest difference over all %d output dims: %.1e",
             T, fmt_bytes(b, sizeof b, (double)bytes), g->n_kv_heads, g->head_dim, T, d, maxdiff);
    HeatPanel panels[3] = {
        {.values = fs, .rows = T, .cols = SHOW, .title = "full forward (all tokens at once)", .row_labels = tokens,
         .xlabel = "output dim", .ylabel = "token", .diverging = 1, .vmin = -vmax, .vmax = vmax},
        {.values = ds, .rows = T, .cols = SHOW, .title = "decode (one token at a time + KV cache)", .row_labels = tokens,
         .xlabel = "output dim", .diverging = 1, .vmin = -vmax, .vmax = vmax},
        {.values = dd, .rows = T, .cols = SHOW, .title = "|difference|", .row_labels = tokens, .xlabel = "output dim",
         .vmin = 0, .vmax = 1e-5f},
    };
    HeatmapFigure f = {
        .title = "Cached decode reproduces the full forward",
        .subtitle = sub, .panels = panels, .n_panels = 3, .show_values = 0, .colorbar_per_panel = 1,
        .colorbar_label = "value",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "02_decode_equals_forward"), a->png, a->svg);
    printf("  cached decode vs full forward: max |difference| = %.2e\n", maxdiff);
    free(act); free(full); free(dec); free(diff); free(fs); free(ds); free(dd);
}

// Figure 3: KV-cache bytes vs context for real MHA models, read from their config.json.
static void figure_kv_memory(const CliArgs *a, const char *configs) {
    static const char *files[] = {"gpt2.json", "olmo2-7b.json"};
    static const char *names[] = {"GPT-2 small (124M)", "OLMo 2 7B"};
    enum { N = 2, NPTS = 8 };
    ModelGeometry g[N];
    double xs[NPTS], ys[N][NPTS];
    char labels[N][1200];
    PlotSeries series[N];
    printf("  %-22s %8s %8s %10s %14s %14s\n", "model", "layers", "heads", "head_dim", "KV/token", "KV at 128K");
    for (int m = 0; m < N; m++) {
        char path[1024], err[512];
        if (hfconfig_load(&g[m], path_join(path, sizeof path, configs, files[m]), err, sizeof err) != 0)
            die_user("%s", err);
        snprintf(g[m].name, sizeof g[m].name, "%s", names[m]);
        g[m].dtype_bytes = 2;   // count in bf16, how these models are served (OLMo 2's file says float32)
        double per_tok = kvcache_bytes_per_token(&g[m]);
        char b1[32], b2[32];
        for (int p = 0; p < NPTS; p++) {
            xs[p] = 1024.0 * pow(2.0, p);
            ys[m][p] = kvcache_total_bytes(&g[m], (long)xs[p], 1);
        }
        snprintf(labels[m], sizeof labels[m], "%s: %d layers x 2 x %d heads x %d dims = %s/token",
                 g[m].name, g[m].n_layers, g[m].n_heads, g[m].head_dim, fmt_bytes(b1, sizeof b1, per_tok));
        series[m] = (PlotSeries){.label = labels[m], .x = xs, .y = ys[m], .n = NPTS,
                                 .color = m == 0 ? COLOR_MHA : COLOR_OTHER, .markers = 1};
        printf("  %-22s %8d %8d %10d %14s %14s\n", g[m].name, g[m].n_layers, g[m].n_heads, g[m].head_dim,
               fmt_bytes(b1, sizeof b1, per_tok), fmt_bytes(b2, sizeof b2, ys[m][NPTS - 1]));
    }
    LineChart c = {
        .title = "KV cache of multi-head attention grows linearly with context",
        .subtitle = "one sequence, bf16 (2 bytes per number); KV bytes per token = layers x 2 (K and V) x heads x head_dim x 2",
        .xlabel = "context length (tokens, log scale)", .ylabel = "KV cache (bytes, log scale)",
        .logx = 1, .logy = 1, .xfmt = AXIS_TOKENS, .yfmt = AXIS_BYTES,
        .series = series, .n_series = N, .legend_pos = 0,
        .note = "numbers from each model's Hugging Face config.json (data/configs/); ./kvcache computes them for any config",
    };
    char path[1024];
    plot_line_chart(&c, path_join(path, sizeof path, a->out, "03_kv_cache_vs_context"), a->png, a->svg);
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
        .flags = CLI_OUT | CLI_FORMAT | CLI_SEED,
        .default_out = "figures/ch03",
        .opts = opts, .n_opts = 1,
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    ensure_out_dir(a.out);
    Rng rng;
    rng_seed(&rng, a.seed);

    ModelGeometry g;
    geometry_init(&g, "ch03 random MHA", 1, 32, 4, 4);
    g.dtype_bytes = 4;
    Mixer m = {.ops = &gqa_mixer, .g = &g, .layer = 0};
    size_t np = mixer_n_params(m.ops, &g, 0);
    float *params = mallocCheck(sizeof(float) * np), *x = mallocCheck(sizeof(float) * T * g.d_model);
    m.ops->init(&m, params, &rng);
    // stronger random projections than training init, so the untrained heads show visible patterns
    for (size_t i = 0; i < np; i++) params[i] *= 10.0f;
    rng_fill_normal(&rng, x, T * g.d_model, 1.0f);

    figure_heads(&a, &m, params, x);
    figure_decode(&a, &m, params, x);
    figure_kv_memory(&a, configs);
    printf("ch03: wrote figures to %s/ (01_heads, 02_decode_equals_forward, 03_kv_cache_vs_context)\n", a.out);
    free(params); free(x);
    return 0;
}
