// chapter.c: loading and drawing the tiny trained models the chapters show.
#include "chapter.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "plot.h"
#include "registry.h"
#include "train.h"

void trained_load(Trained *t, const char *path) {
    memset(t, 0, sizeof *t);
    t->path = path;
    char err[1024];
    t->model = train_load_model(path, mixer_by_name, &t->info, &t->task, err, sizeof err);
    if (!t->model) die_user("%s", err);
    const MixerOps *ops[GEOM_MAX_LAYERS];
    for (int l = 0; l < t->model->g.n_layers; l++) ops[l] = t->model->mixers[l].ops;
    t->untrained = model_new(&t->model->g, ops, t->info.seed);
    t->n_tokens = t->task.seq_len;
    if (t->n_tokens > 1024) die_user("%s: example of %d tokens is longer than the chapters draw (1024)", path, t->n_tokens);
    task_example(&t->task, t->tokens, t->targets);
    for (int i = 0; i < t->n_tokens; i++) t->labels[i] = task_token_str(&t->task, t->tokens[i]);
}

void trained_free(Trained *t) {
    model_free(t->model);
    model_free(t->untrained);
    model_info_free(&t->info);
    task_free(&t->task);
}

// Whether name is one of the '|'-separated words of list.
static int in_list(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; *p; ) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, name, n)) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

void trained_require(const Trained *t, const char *mixers, int kind, const char *what) {
    static const char *task_names[] = {"recall", "induction", "corpus"};
    for (int l = 0; l < t->model->g.n_layers; l++)
        if (!in_list(mixers, t->model->mixers[l].ops->name))
            die_user("%s: layer %d is '%s', but %s draws %s models", t->path, l, t->model->mixers[l].ops->name, what, mixers);
    if (kind >= 0 && t->task.kind != (TaskKind)kind)
        die_user("%s: trained on %s, but %s needs a model trained on %s", t->path, t->task.name, what, task_names[kind]);
}

void trained_check(const char *path, const char *mixers, int kind, const char *what) {
    Trained *t = mallocCheck(sizeof *t);
    trained_load(t, path);
    trained_require(t, mixers, kind, what);
    trained_free(t);
    free(t);
}

int trained_attention(Trained *t, int untrained, int layer, float *A) {
    Model *m = untrained ? t->untrained : t->model;
    model_forward(m, t->tokens, NULL, 1, t->n_tokens);
    model_mixing_matrix(m, layer, A);
    return model_n_mix_heads(m, layer);
}

const char *trained_caption(const Trained *t, char *buf, int cap) {
    snprintf(buf, (size_t)cap, "%s accuracy %.1f%% on held-out samples after %d training steps",
             t->task.name, 100.0 * t->info.accuracy, t->info.steps);
    return buf;
}

void trained_plot_curve(const Trained *t, const CliArgs *a, const char *name, const char *title) {
    if (!t->info.curve || t->info.n_curve < 2) return;
    char path[1024], sub[512], cap[160];
    snprintf(sub, sizeof sub, "%s; model %s", trained_caption(t, cap, sizeof cap), t->model->g.name);
    train_plot_loss(t->info.curve, t->info.n_curve, title, sub, path_join(path, sizeof path, a->out, name),
                    a->png, a->svg, 1);
}

// ---- which head to draw ---------------------------------------------------------------------------

double chapter_mixing_reach(const float *A, int T) {
    double d = 0.0, w = 0.0;
    for (int t = 0; t < T; t++)
        for (int s = 0; s <= t; s++) {
            double a = fabs(A[(size_t)t * T + s]);
            d += a * (t - s);
            w += a;
        }
    return w > 0.0 ? d / w : 0.0;
}

int chapter_furthest_head(const float *A, int n_heads, int T) {
    int best = 0;
    double best_d = -1.0;
    for (int h = 0; h < n_heads; h++) {
        double d = chapter_mixing_reach(A + (size_t)h * T * T, T);
        if (d > best_d) { best_d = d; best = h; }
    }
    return best;
}

// ---- state capacity ---------------------------------------------------------------------------------

#define CAPACITY_SEED 0xCA9AC17ULL   // one held-out stream for every model and count

void chapter_recall_capacity(Trained *t, int n_lo, int n_hi, int n_samples, double *acc) {
    if (t->task.kind != TASK_RECALL) die_user("%s: a capacity curve needs a recall model, this one learned %s", t->path, t->task.name);
    for (int n = n_lo; n <= n_hi; n++) {
        if (n < 1 || n > t->task.n_keys || 2 * n + 2 > t->task.seq_len)
            die_user("%s: %d pairs do not fit its recall task (%d keys, %d tokens)", t->path, n, t->task.n_keys, t->task.seq_len);
        Task fixed = t->task;   // the same vocabulary and length, exactly n pairs
        fixed.n_pairs = n;
        fixed.n_pairs_min = 0;
        double loss;
        train_evaluate(t->model, &fixed, CAPACITY_SEED + (uint64_t)n, n_samples, &loss, &acc[n - n_lo]);
    }
}

void chapter_capacity_plot(const CliArgs *a, const char *name, const char *title, const char *subtitle,
                           int n_lo, int n_hi, const CapacityCurve *curves, int n, double chance, const char *note) {
    int np = n_hi - n_lo + 1;
    double *x = mallocCheck(sizeof(double) * (size_t)np * (size_t)(n + 1));
    double *y = x + np;
    PlotSeries *s = mallocCheck(sizeof(PlotSeries) * (size_t)(n + 1));
    for (int i = 0; i < np; i++) x[i] = n_lo + i;
    for (int c = 0; c < n; c++) {
        for (int i = 0; i < np; i++) y[c * np + i] = 100.0 * curves[c].acc[i];
        s[c] = (PlotSeries){.label = curves[c].label, .x = x, .y = y + c * np, .n = np, .color = curves[c].color,
                            .dashed = curves[c].dashed, .markers = 1};
    }
    double cx[2] = {n_lo, n_hi}, cy[2] = {100.0 * chance, 100.0 * chance};
    s[n] = (PlotSeries){.label = "chance (a random value)", .x = cx, .y = cy, .n = 2, .color = COLOR_OTHER, .dashed = 1};
    LineChart ch = {.title = title, .subtitle = subtitle, .xlabel = "key-value pairs to remember (per sequence)",
                    .ylabel = "recall accuracy (% of queries answered)", .xmin = n_lo, .xmax = n_hi, .ymin = 0,
                    .ymax = 100, .series = s, .n_series = n + 1, .note = note, .legend_pos = 3};
    char path[1024];
    plot_line_chart(&ch, path_join(path, sizeof path, a->out, name), a->png, a->svg);
    printf("  %s: recall accuracy (%%) by number of pairs\n  %-44s", name, "pairs");
    for (int i = 0; i < np; i++) printf(" %5d", n_lo + i);
    printf("\n");
    for (int c = 0; c < n; c++) {
        printf("  %-44.44s", curves[c].label);
        for (int i = 0; i < np; i++) printf(" %5.1f", 100.0 * curves[c].acc[i]);
        printf("\n");
    }
    free(s);
    free(x);
}

// ---- real models' memory ------------------------------------------------------------------------
#include "hfconfig.h"
#include "kvcache.h"
#include "plot.h"

void chapter_check_configs(const char *dir, ...) {
    va_list ap;
    va_start(ap, dir);
    for (const char *file = va_arg(ap, const char *); file; file = va_arg(ap, const char *)) {
        ModelGeometry g;
        chapter_config(&g, dir, file, NULL);
    }
    va_end(ap);
}

void chapter_config(ModelGeometry *g, const char *dir, const char *file, const char *display_name) {
    char path[1024], err[1024];
    if (hfconfig_load(g, path_join(path, sizeof path, dir, file), err, sizeof err) != 0) die_user("%s", err);
    if (display_name) snprintf(g->name, sizeof g->name, "%s", display_name);
    g->dtype_bytes = 2;
}

void chapter_memory_plot(const CliArgs *a, const char *name, const char *title, const char *subtitle,
                         const MemoryCurve *curves, int n, long max_context, const char *note) {
    enum { MAX_CURVES = 12, MAX_PTS = 16 };
    CHECK(n <= MAX_CURVES, "too many curves");
    double xs[MAX_PTS], ys[MAX_CURVES][MAX_PTS];
    char labels[MAX_CURVES][256];
    PlotSeries series[MAX_CURVES];
    int npts = 0;
    for (long c = 1024; c <= max_context && npts < MAX_PTS; c *= 2) xs[npts++] = (double)c;
    printf("  %-34s %12s %14s %14s\n", "model", "KV/token", "at 32K", "at max");
    for (int m = 0; m < n; m++) {
        const ModelGeometry *g = &curves[m].g;
        for (int p = 0; p < npts; p++) ys[m][p] = kvcache_total_bytes(g, (long)xs[p], 1);
        char b1[32], b2[32], b3[32];
        fmt_bytes(b1, sizeof b1, kvcache_bytes_per_token(g));
        if (curves[m].label) snprintf(labels[m], sizeof labels[m], "%s", curves[m].label);
        else snprintf(labels[m], sizeof labels[m], "%s: %s/token", g->name, b1);
        series[m] = (PlotSeries){.label = labels[m], .x = xs, .y = ys[m], .n = npts,
                                 .color = curves[m].color, .dashed = curves[m].dashed, .markers = !curves[m].dashed};
        printf("  %-34s %12s %14s %14s\n", g->name, b1, fmt_bytes(b2, sizeof b2, kvcache_total_bytes(g, 32768, 1)),
               fmt_bytes(b3, sizeof b3, ys[m][npts - 1]));
    }
    LineChart chart = {
        .title = title, .subtitle = subtitle,
        .xlabel = "context length (tokens, log scale)", .ylabel = "KV cache per sequence (bytes, log scale)",
        .logx = 1, .logy = 1, .xfmt = AXIS_TOKENS, .yfmt = AXIS_BYTES,
        .series = series, .n_series = n, .legend_pos = 0,
        .note = note ? note : "numbers from each model's Hugging Face config.json (data/configs/), bf16; ./kvcache computes them for any config",
    };
    char path[1024];
    plot_line_chart(&chart, path_join(path, sizeof path, a->out, name), a->png, a->svg);
}

void chapter_mha_twin(ModelGeometry *twin, const ModelGeometry *src, const char *name) {
    geometry_init(twin, "", src->n_layers, src->d_model, src->n_heads, src->n_heads);
    // an MLA model's MHA twin has per-head keys of qk_nope_head_dim and values of v_head_dim (RoPE then
    // rotates the key itself, so no decoupled RoPE key); kvcache counts 2 * heads * head_dim, so
    // head_dim takes the mean of the two widths and the product stays exact
    twin->head_dim = src->attn == ATTN_MLA ? (src->qk_nope_head_dim + src->v_head_dim) / 2 : src->head_dim;
    twin->dtype_bytes = 2;
    snprintf(twin->name, sizeof twin->name, "%s", name);
}
