// chapter.c: loading and drawing the tiny trained models the chapters show.
#include "chapter.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "check.h"
#include "headstats.h"
#include "hfconfig.h"
#include "kvcache.h"
#include "metrics.h"
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
    snprintf(buf, (size_t)cap, "held-out %s accuracy %.1f%% after %d steps", t->task.name, 100.0 * t->info.accuracy,
             t->info.steps);
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

void chapter_capacity_plot(const CliArgs *a, const CapacityPlot *p) {
    int np = p->n_hi - p->n_lo + 1, n = p->n;
    double *x = mallocCheck(sizeof(double) * (size_t)np * (size_t)(3 * n + 2));   // x, y, lo, hi (n each), 1/n
    double *y = x + np, *lo = y + (size_t)n * np, *hi = lo + (size_t)n * np, *inv = hi + (size_t)n * np;
    PlotSeries *s = mallocCheck(sizeof(PlotSeries) * (size_t)(n > 0 ? n : 1));
    for (int i = 0; i < np; i++) x[i] = p->n_lo + i;
    for (int c = 0; c < n; c++) {
        const CapacityCurve *cc = &p->curves[c];
        for (int i = 0; i < np; i++) {
            y[c * np + i] = 100.0 * cc->acc[i];
            if (cc->acc_lo) lo[c * np + i] = 100.0 * cc->acc_lo[i];
            if (cc->acc_hi) hi[c * np + i] = 100.0 * cc->acc_hi[i];
        }
        s[c] = (PlotSeries){.label = cc->label, .x = x, .y = y + c * np, .n = np, .color = cc->color,
                            .dashed = cc->dashed, .markers = 1, .ylo = cc->acc_lo ? lo + c * np : NULL,
                            .yhi = cc->acc_hi ? hi + c * np : NULL};
    }
    char chance_label[64];
    snprintf(chance_label, sizeof chance_label, "chance: a random value (1/%.0f)", 1.0 / p->chance);
    PlotRef refs[2] = {{.label = chance_label, .value = 100.0 * p->chance}};
    int n_refs = 1;
    if (p->one_over_n) {
        for (int i = 0; i < np; i++) inv[i] = 100.0 / x[i];
        refs[n_refs++] = (PlotRef){.label = "1/n: one of the n values seen", .x = x, .y = inv, .n = np};
    }
    LineChart ch = {.title = p->title, .subtitle = p->subtitle, .claim = p->claim,
                    .xlabel = "key-value pairs to remember (per sequence)",
                    .ylabel = "recall accuracy (% of queries answered)", .xmin = p->n_lo, .xmax = p->n_hi, .ymin = 0,
                    .ymax = 100, .series = s, .n_series = n, .refs = refs, .n_refs = n_refs, .note = p->note,
                    .legend_pos = p->legend_pos};
    char path[1024];
    plot_line_chart(&ch, path_join(path, sizeof path, a->out, p->name), a->png, a->svg);
    printf("  %s: recall accuracy (%%) by number of pairs\n  %-44s", p->name, "pairs");
    for (int i = 0; i < np; i++) printf(" %5d", p->n_lo + i);
    printf("\n");
    for (int c = 0; c < n; c++) {
        printf("  %-44.44s", p->curves[c].label);
        for (int i = 0; i < np; i++) printf(" %5.1f", 100.0 * p->curves[c].acc[i]);
        printf("\n");
    }
    free(s);
    free(x);
}

double chapter_chance(const Task *t) {
    if (t->kind == TASK_RECALL && t->n_values > 0) return 1.0 / t->n_values;
    if (t->kind == TASK_INDUCTION && t->n_symbols > 0) return 1.0 / t->n_symbols;
    return t->vocab_size > 0 ? 1.0 / t->vocab_size : 0.0;
}

const char *chapter_head_role(const float *A, const int *tok, int T, char *buf, int cap) {
    HeadStats st = {0};
    headstats_add(&st, A, tok, T, 1);
    double mean[HS_N];
    headstats_mean(&st, mean);
    static const int kinds[3] = {HS_FIRST, HS_PREV, HS_INDUCTION};
    static const char *const words[3] = {"first token", "previous token", "induction"};
    int best = 0;
    for (int k = 1; k < 3; k++)
        if (mean[kinds[k]] > mean[kinds[best]]) best = k;
    if (mean[kinds[best]] < 0.3) snprintf(buf, (size_t)cap, "other");
    else snprintf(buf, (size_t)cap, "%s %.0f%%", words[best], 100.0 * mean[kinds[best]]);
    return buf;
}

int chapter_layer_roles(Trained *t, int layer, float *A, char (*roles)[CHAPTER_ROLE_CHARS]) {
    int H = trained_attention(t, 0, layer, A), T = t->n_tokens, distinct = 0;
    for (int h = 0; h < H; h++) {
        chapter_head_role(A + (size_t)h * T * T, t->tokens, T, roles[h], CHAPTER_ROLE_CHARS);
        size_t words = strcspn(roles[h], "0123456789");
        int seen = 0;
        for (int o = 0; o < h; o++) seen |= strcspn(roles[o], "0123456789") == words && !strncmp(roles[o], roles[h], words);
        distinct += !seen;
    }
    return distinct;
}

int chapter_most_varied_layer(Trained *t, int *n_roles) {
    int T = t->n_tokens, best = 0, best_n = -1;
    float *A = mallocCheck(sizeof(float) * (size_t)t->model->g.n_heads * T * T);
    char (*roles)[CHAPTER_ROLE_CHARS] = mallocCheck(sizeof *roles * (size_t)t->model->g.n_heads);
    for (int l = 0; l < t->model->g.n_layers; l++) {
        int n = chapter_layer_roles(t, l, A, roles);
        if (n > best_n) { best = l; best_n = n; }
    }
    free(A);
    free(roles);
    if (n_roles) *n_roles = best_n;
    return best;
}

// ---- seeds ---------------------------------------------------------------------------------------------

typedef struct {
    SeedStat *s;
    const char *path, *setting, *key;
    int index;
} SeedsCtx;

// Adds one run's number (its `key`, or element `index` of it) to the statistics.
static void add_seed(const cJSON *run, int line, void *ctx) {
    SeedsCtx *c = ctx;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(run, c->key);
    if (c->index >= 0) v = cJSON_IsArray(v) ? cJSON_GetArrayItem(v, c->index) : NULL;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        die_user("%s:%d: setting '%s' has no number %s%s", c->path, line, c->setting, c->key, c->index >= 0 ? "[i]" : "");
    double x = v->valuedouble;
    SeedStat *s = c->s;
    if (s->n < CHAPTER_MAX_SEEDS) s->v[s->n] = x;
    s->n++;
    s->mean += x;
    s->lo = fmin(s->lo, x);
    s->hi = fmax(s->hi, x);
}

SeedStat chapter_seeds(const char *path, const char *setting, const char *key, int index) {
    SeedStat s = {.lo = INFINITY, .hi = -INFINITY};
    SeedsCtx c = {.s = &s, .path = path, .setting = setting, .key = key, .index = index};
    metrics_each_run(path, setting, add_seed, &c);
    if (s.n == 0) die_user("%s: no run of setting '%s' (run `make experiments`)", path, setting);
    s.mean /= s.n;
    return s;
}

// ---- real models' memory ------------------------------------------------------------------------

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

// The contexts a memory curve is evaluated at: 0, every window (where a local layer stops growing), the
// model's maximum context, and a uniform grid; sorted, without repeats. The curves are piecewise linear
// between these, so the polyline is exact.
static int memory_grid(double *xs, int cap, const MemoryPlot *p) {
    int n = 0;
    for (int i = 0; i <= 32 && n < cap; i++)
        xs[n++] = p->log_axes ? 1024.0 * pow((double)p->max_context / 1024.0, i / 32.0) : (double)p->max_context * i / 32;
    for (int m = 0; m < p->n && n + 2 <= cap; m++) {
        const ModelGeometry *g = &p->curves[m].g;
        if (g->sliding_window > 0 && g->sliding_window < p->max_context) xs[n++] = g->sliding_window;
        if (g->max_seq_len > 0 && g->max_seq_len < p->max_context) xs[n++] = g->max_seq_len;
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && xs[j] < xs[j - 1]; j--) { double t = xs[j]; xs[j] = xs[j - 1]; xs[j - 1] = t; }
    int k = 0;
    for (int i = 0; i < n; i++)
        if (k == 0 || xs[i] != xs[k - 1]) xs[k++] = xs[i];
    return k;
}

void chapter_memory_plot(const CliArgs *a, const MemoryPlot *p) {
    enum { MAX_CURVES = 12, MAX_PTS = 64 };
    CHECK(p->n <= MAX_CURVES, "too many curves");
    double xs[MAX_PTS], ys[MAX_CURVES][MAX_PTS];
    char labels[MAX_CURVES][256], limits[MAX_CURVES][48];
    PlotSeries series[MAX_CURVES];
    int npts = memory_grid(xs, MAX_PTS, p);
    printf("  %-34s %12s %14s %14s\n", "model", "KV/token", "at 32K", "at its max");
    for (int m = 0; m < p->n; m++) {
        const ModelGeometry *g = &p->curves[m].g;
        for (int i = 0; i < npts; i++) ys[m][i] = kvcache_total_bytes(g, (long)xs[i], 1);
        char b1[32], b2[32], b3[32], t[32];
        fmt_bytes(b1, sizeof b1, kvcache_bytes_per_token(g));
        if (p->curves[m].label) snprintf(labels[m], sizeof labels[m], "%s", p->curves[m].label);
        else snprintf(labels[m], sizeof labels[m], "%s: %s/token", g->name, b1);
        // a model is drawn up to its max_position_embeddings, never past it
        int limited = g->max_seq_len > 0 && g->max_seq_len < p->max_context;
        snprintf(limits[m], sizeof limits[m], "max context %s",
                 plot_format_tick(t, sizeof t, (double)g->max_seq_len, AXIS_TOKENS));
        series[m] = (PlotSeries){.label = labels[m], .x = xs, .y = ys[m], .n = npts, .color = p->curves[m].color,
                                 .dashed = p->curves[m].dashed, .x_limit = limited ? g->max_seq_len : 0,
                                 .limit_label = limits[m]};
        long end = limited ? g->max_seq_len : p->max_context;
        printf("  %-34s %12s %14s %14s\n", g->name, b1, fmt_bytes(b2, sizeof b2, kvcache_total_bytes(g, 32768, 1)),
               fmt_bytes(b3, sizeof b3, kvcache_total_bytes(g, end, 1)));
    }
    // the default note says where the numbers come from, and how a line's end is marked when one is
    int n_limited = 0, n_at_edge = 0;
    for (int m = 0; m < p->n; m++) {
        long ms = p->curves[m].g.max_seq_len;
        n_limited += ms > 0 && ms < p->max_context;
        n_at_edge += ms == p->max_context;
    }
    const char *note = p->note ? p->note
                       : n_limited ? "from each model's config.json (data/configs/), bf16; a bar ends a line at the "
                                     "model's max_position_embeddings"
                       : n_at_edge == p->n ? "from each model's config.json (data/configs/), bf16; the axis ends at the "
                                             "models' max_position_embeddings"
                                           : "from each model's config.json (data/configs/), bf16";
    LineChart chart = {
        .title = p->title, .subtitle = p->subtitle, .claim = p->claim,
        .xlabel = "context length (tokens)", .ylabel = "KV cache per sequence (bytes)",
        .xfmt = AXIS_TOKENS, .yfmt = AXIS_BYTES, .xmin = p->log_axes ? 1024 : 0, .xmax = (double)p->max_context,
        .logx = p->log_axes, .logy = p->log_axes,
        .series = series, .n_series = p->n, .legend_pos = p->legend_pos,
        .note = note,
    };
    char path[1024];
    plot_line_chart(&chart, path_join(path, sizeof path, a->out, p->name), a->png, a->svg);
}

void chapter_mha_twin(ModelGeometry *twin, const ModelGeometry *src, const char *name) {
    geometry_init(twin, "", src->n_layers, src->d_model, src->n_heads, src->n_heads);
    // an MLA model's MHA twin has per-head keys of qk_nope_head_dim and values of v_head_dim (RoPE then
    // rotates the key itself, so no decoupled RoPE key); kvcache counts 2 * heads * head_dim, so
    // head_dim takes the mean of the two widths and the product stays exact
    twin->head_dim = src->attn == ATTN_MLA ? (src->qk_nope_head_dim + src->v_head_dim) / 2 : src->head_dim;
    twin->dtype_bytes = 2;
    twin->max_seq_len = src->max_seq_len;
    snprintf(twin->name, sizeof twin->name, "%s", name);
}
