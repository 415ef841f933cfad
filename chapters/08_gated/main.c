// Chapter 8: gated attention (Qwen3-Next, Qwen3.5).
//
// Article: the section on gated attention. Qwen3-Next's full-attention layers are GQA with three
// changes: the query projection also emits a gate, and each head's output is multiplied by
// sigmoid(gate) before Wo; every query and key head goes through a zero-centred RMSNorm; and RoPE turns
// only the first quarter of each head (64 of 256 dims). The gate lets a head say "nothing here" by
// closing, where softmax alone must put its weight of 1 somewhere, usually on the first token (the
// "attention sink"); the gated-attention paper reports the sink shrinks. None of it changes the KV
// cache: 2 * n_kv_heads * head_dim per token, the gate is recomputed from the token's own query.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "03_mha/mha.h"
#include "08_gated/gated.h"
#include "chapter.h"
#include "check.h"
#include "cli.h"
#include "heatmap.h"
#include "mathx.h"
#include "model.h"
#include "plot.h"
#include "schematic.h"

#define MAX_HEADS 8

// What figures 1 and 2 need of the pair (checked before the first figure).
static void check_pair(const Trained *gt, const Trained *ut, int layer) {
    const ModelGeometry *g = &gt->model->g;
    if (gated_gate_width(g) == 0) die_user("%s: the model has no output gate (attn_output_gate none), nothing to draw", gt->path);
    if (g->n_layers > 4) die_user("%s: the gate figure draws at most 4 layers, the model has %d", gt->path, g->n_layers);
    if (ut->n_tokens != gt->n_tokens || ut->model->g.n_heads != g->n_heads || strcmp(ut->task.name, gt->task.name))
        die_user("%s and %s: the gated and the ungated model must share task, length and heads", gt->path, ut->path);
    if (layer < 0 || layer >= g->n_layers || layer >= ut->model->g.n_layers)
        die_user("--layer %d: the models have %d layer%s", layer, g->n_layers, g->n_layers == 1 ? "" : "s");
}

static void require_gated(const Trained *t) {
    for (int l = 0; l < t->model->g.n_layers; l++)
        if (t->model->mixers[l].ops != &gated_mixer)
            die_user("%s: layer %d is '%s', expected a gated model (train --mixer gated)", t->path, l,
                     t->model->mixers[l].ops->name);
    if (t->model->g.n_heads > MAX_HEADS)
        die_user("%s: the figures draw at most %d heads, the model has %d", t->path, MAX_HEADS, t->model->g.n_heads);
}

// Mean attention weight on the first token over the queries that have a choice (i >= 1): A (T,T).
static double first_token_mass(const float *A, int T) {
    double s = 0;
    for (int i = 1; i < T; i++) s += A[(size_t)i * T];
    return s / (T - 1);
}

// ---- Figure 1: the gate values of the trained model on the task's example ------------------------------

static void figure_gates(const CliArgs *a, Trained *t) {
    static const char *head_names[MAX_HEADS] = {"head 0", "head 1", "head 2", "head 3", "head 4", "head 5", "head 6", "head 7"};
    const ModelGeometry *g = &t->model->g;
    int T = t->n_tokens, L = g->n_layers, gw = gated_gate_width(g), width = g->n_heads * gw;
    model_forward(t->model, t->tokens, NULL, 1, T);
    float *gates = mallocCheck(sizeof(float) * (size_t)L * T * width);
    HeatPanel panels[4];
    char titles[4][96];
    double mean_all = 0;
    for (int l = 0; l < L; l++) {
        float *G = gates + (size_t)l * T * width;
        gated_gate_values(&t->model->mixers[l], G, t->model->la[l].mix_act, 1, T);
        double mean = 0;
        for (int i = 0; i < T * width; i++) mean += G[i];
        mean /= T * width;
        mean_all += mean / L;
        snprintf(titles[l], sizeof titles[l], "layer %d (mean gate %.2f)", l, mean);
        panels[l] = (HeatPanel){.values = G, .rows = T, .cols = width, .title = titles[l], .row_labels = t->labels,
                                .col_labels = gw == 1 ? head_names : NULL,
                                .xlabel = gw == 1 ? "query head" : "channel of the concatenated heads (head h: channels h*dh..)",
                                .ylabel = l == 0 ? "token" : NULL};
        printf("  gate values, layer %d: mean %.3f\n", l, mean);
    }
    char sub[512], cap[160], claim[400];
    snprintf(sub, sizeof sub, "sigmoid(g) per token and %s of %d heads x %d dims (0 closed, 1 open); %s",
             gw == 1 ? "head" : "channel", g->n_heads, g->head_dim, trained_caption(t, cap, sizeof cap));
    snprintf(claim, sizeof claim, "In the trained gated model the output gates move away from their untrained 0.5: mean "
             "%.2f over %d layer%s, with channels that stay closed or open for every token and others that follow the token.",
             mean_all, L, L == 1 ? "" : "s");
    HeatmapFigure f = {
        .title = "Gated attention: how far each token opens its output gate",
        .subtitle = sub, .claim = claim, .panels = panels, .n_panels = L, .vmin = 0, .vmax = 1, .show_values = 0,
        .colorbar_label = "gate sigmoid(g)",
        .note = "the gate multiplies each head's output before Wo; untrained gates sit at 0.5",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "01_gate_values"), a->png, a->svg);
    free(gates);
}

// ---- Figure 2: attention of the gated and the ungated model, and the first-token sink ------------------

// Mean first-token mass over every layer and head of a model on its example.
static double model_sink(Trained *t, float *A) {
    const ModelGeometry *g = &t->model->g;
    int T = t->n_tokens;
    double s = 0;
    for (int l = 0; l < g->n_layers; l++) {
        int H = trained_attention(t, 0, l, A);
        for (int h = 0; h < H; h++) s += first_token_mass(A + (size_t)h * T * T, T);
    }
    return s / (g->n_layers * g->n_heads);
}

// What the drawn layer shows, in words: mass[0] gated, mass[1] ungated, against uniform attention.
// A sink: at least 3x the uniform share.
static const char *sink_words(const double mass[2], double uniform) {
    int g = mass[0] >= 3 * uniform, u = mass[1] >= 3 * uniform;
    if (u && !g) return "the ungated model parks most of its attention on the first token, the gated one does not";
    if (g && !u) return "the gated model parks its attention on the first token, the ungated one does not";
    if (g && u) return "both models park much of their attention on the first token";
    return "neither model grows a first-token sink";
}

static void figure_sink(const CliArgs *a, Trained *gt, Trained *ut, int layer) {
    const ModelGeometry *g = &gt->model->g;
    int T = gt->n_tokens, H = g->n_heads;
    float *A = mallocCheck(sizeof(float) * 2 * (size_t)H * T * T);
    double sink[2] = {model_sink(gt, A), model_sink(ut, A)};
    trained_attention(gt, 0, layer, A);
    trained_attention(ut, 0, layer, A + (size_t)H * T * T);
    unsigned char *causal = mallocCheck((size_t)T * T);
    mask_fill(causal, MASK_CAUSAL, T, 0);
    HeatPanel panels[2 * MAX_HEADS];
    char titles[2 * MAX_HEADS][96];
    for (int k = 0; k < 2; k++)
        for (int h = 0; h < H; h++) {
            const float *P = A + ((size_t)k * H + h) * T * T;
            int i = k * H + h;
            snprintf(titles[i], sizeof titles[i], "%s, head %d: first token %.0f%%", k ? "ungated" : "gated", h,
                     100.0 * first_token_mass(P, T));
            panels[i] = (HeatPanel){.values = P, .mask = causal, .rows = T, .cols = T, .title = titles[i],
                                    .row_labels = gt->labels, .col_labels = gt->labels, .xlabel = "key j",
                                    .ylabel = h == 0 ? "query i" : NULL};
        }
    printf("  attention on the first token (mean over queries 1..T-1, all layers and heads): gated %.1f%%, ungated %.1f%%\n",
           100.0 * sink[0], 100.0 * sink[1]);
    // the same mean if every query spread its weight evenly over the keys it sees: 1/(i+1)
    double uniform = 0;
    for (int i = 1; i < T; i++) uniform += 1.0 / (i + 1);
    uniform /= T - 1;
    // the drawn layer's own numbers: the mean over its heads of the first-token weight
    double drawn[2] = {0, 0};
    for (int k = 0; k < 2; k++)
        for (int h = 0; h < H; h++) drawn[k] += first_token_mass(A + ((size_t)k * H + h) * T * T, T) / H;
    char title[200], sub[400], claim[500];
    snprintf(title, sizeof title, "Output gate on and off: first-token attention in layer %d, %.0f%% vs %.0f%%", layer,
             100.0 * drawn[0], 100.0 * drawn[1]);
    snprintf(sub, sizeof sub, "top: gated model, bottom: its ungated twin (same data, steps, seed); uniform attention "
             "would give %.0f%%", 100.0 * uniform);
    snprintf(claim, sizeof claim, "Gated and ungated twins put %.0f%% and %.0f%% of layer %d's attention on the first "
             "token (%.0f%% and %.0f%% over all layers), against %.0f%% for uniform attention: %s.", 100.0 * drawn[0],
             100.0 * drawn[1], layer, 100.0 * sink[0], 100.0 * sink[1], 100.0 * uniform,
             sink_words(drawn, uniform));
    char note[400];
    snprintf(note, sizeof note, "first-token weight: mean over queries 1..T-1 (panel titles: each head); over all layers "
             "and heads %.0f%% gated, %.0f%% ungated. The first token is %s.", 100.0 * sink[0], 100.0 * sink[1],
             gt->task.bos ? "<s>, the beginning-of-sequence token every sample starts with"
             : gt->task.kind == TASK_RECALL ? "the first key of the recall example, not a beginning-of-sequence token"
                                            : "an ordinary token of the example, not a beginning-of-sequence token");
    HeatmapFigure f = {
        .title = title, .subtitle = sub, .claim = claim, .note = note, .panels = panels, .n_panels = 2 * H,
        .panels_per_row = H, .vmin = 0, .vmax = 1, .show_values = 0, .colorbar_label = "attention weight",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "02_attention_sink"), a->png, a->svg);
    free(A);
    free(causal);
}

// ---- Figure 6: the sink over seeds: first-token attention per layer, gated vs ungated -----------------

#define SINK_SEEDS CHAPTER_EXPERIMENTS "/sink.jsonl"

static void figure_sink_seeds(const CliArgs *a, const Trained *gt) {
    int L = gt->model->g.n_layers, T = gt->n_tokens, n = 0, n_seeds = 1 << 30;
    char lab[2 * 4][96];
    const char *labels[2 * 4];
    double mean[2 * 4], lo[2 * 4], hi[2 * 4];
    int colors[2 * 4];
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 2; k++) {   // ungated first: the model that grows a sink
            SeedStat st = chapter_seeds(SINK_SEEDS, k ? "gated" : "ungated", "first_by_layer", l);
            if (st.n < n_seeds) n_seeds = st.n;
            snprintf(lab[n], sizeof lab[n], "%s, layer %d", k ? "gated" : "ungated", l);
            labels[n] = lab[n];
            mean[n] = 100.0 * st.mean;
            lo[n] = 100.0 * st.lo;
            hi[n] = 100.0 * st.hi;
            colors[n] = k ? COLOR_GATED : COLOR_GQA;
            printf("  first-token attention, %-18s %.1f%% (%d seeds: %.1f..%.1f%%)\n", lab[n], mean[n], st.n, lo[n], hi[n]);
            n++;
        }
    // uniform causal attention over queries 1..T-1: 1/(i+1) on the first token
    double uniform = 0;
    for (int i = 1; i < T; i++) uniform += 1.0 / (i + 1);
    uniform = 100.0 * uniform / (T - 1);
    // each seed's number, for the note: a mean of 3 can hide one seed that went the other way
    // a sink: at least 3x the uniform share (as figure 2 says it)
    char seeds[2][160] = {"", ""};
    int n_sink[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        SeedStat st = chapter_seeds(SINK_SEEDS, k ? "gated" : "ungated", "first_by_layer", L - 1);
        for (int i = 0; i < st.n && i < CHAPTER_MAX_SEEDS; i++) {
            size_t len = strlen(seeds[k]);
            snprintf(seeds[k] + len, sizeof seeds[k] - len, "%s%.0f%%", i ? ", " : "", 100.0 * st.v[i]);
            n_sink[k] += 100.0 * st.v[i] >= 3 * uniform;
        }
    }
    char title[160], sub[300], claim[400], ref_label[64], note[500];
    snprintf(title, sizeof title, "Attention sink over %d seeds: %d of %d ungated models grow one, %d of %d gated",
             n_seeds, n_sink[0], n_seeds, n_sink[1], n_seeds);
    snprintf(sub, sizeof sub, "twins trained alike on %s with <s> first, %d steps; bar: mean over the seeds, whisker: min..max",
             gt->task.name, gt->info.steps);
    snprintf(claim, sizeof claim, "Over %d seeds the ungated model puts %.0f%% (%.0f..%.0f%%) of its last layer's attention "
             "on <s> and the gated twin %.0f%% (%.0f..%.0f%%), against %.0f%% for uniform attention.", n_seeds,
             mean[2 * (L - 1)], lo[2 * (L - 1)], hi[2 * (L - 1)], mean[2 * (L - 1) + 1], lo[2 * (L - 1) + 1],
             hi[2 * (L - 1) + 1], uniform);
    snprintf(ref_label, sizeof ref_label, "uniform attention (%.0f%%)", uniform);
    snprintf(note, sizeof note, "layer %d, each seed: ungated %s; gated %s (a sink: 3x uniform or more). Seeds' metrics: data/experiments/sink.jsonl "
             "(make experiments); figure 2's heatmaps are the first seed", L - 1, seeds[0], seeds[1]);
    PlotRef ref = {.label = ref_label, .value = uniform};
    BarChart bc = {
        .title = title, .subtitle = sub, .claim = claim,
        .xlabel = "attention weight on <s> (%, mean over queries and heads)", .labels = labels, .values = mean,
        .lo = lo, .hi = hi, .colors = colors, .n = n, .refs = &ref, .n_refs = 1,
        .note = note,
    };
    char path[1024];
    plot_bar_chart(&bc, path_join(path, sizeof path, a->out, "06_sink_over_seeds"), a->png, a->svg);
}

// ---- Figure 3: which dims partial RoPE turns --------------------------------------------------------------

// cos(angle) of every dim of a head at positions 0..n_pos-1: dims i and i + rot/2 of pair i turn by
// pos * theta^(-2i/rot); dims rot.. never turn (blank: no angle at all, not a masked cell). V (n_pos,
// head_dim), blank likewise.
static void rope_angles(float *V, unsigned char *blank, int n_pos, int head_dim, int rot, double theta) {
    for (int p = 0; p < n_pos; p++)
        for (int c = 0; c < head_dim; c++) {
            size_t i = (size_t)p * head_dim + c;
            blank[i] = c >= rot;
            V[i] = 0.0f;
            if (c < rot) {
                int pair = c < rot / 2 ? c : c - rot / 2;
                V[i] = (float)cos(p * pow(theta, -2.0 * pair / rot));
            }
        }
}

static void figure_partial_rope(const CliArgs *a, const char *configs, const Trained *t) {
    enum { N_POS = 48 };
    ModelGeometry q;
    chapter_config(&q, configs, "qwen3-next-80b-a3b.json", "Qwen3-Next-80B-A3B");
    const ModelGeometry *tg = &t->model->g;
    const ModelGeometry *gs[2] = {&q, tg};
    float *V[2];
    unsigned char *M[2];
    HeatPanel panels[2];
    char titles[2][160];
    for (int k = 0; k < 2; k++) {
        int dh = gs[k]->head_dim, rot = gated_rotary_dims(gs[k]);
        V[k] = mallocCheck(sizeof(float) * N_POS * dh);
        M[k] = mallocCheck((size_t)N_POS * dh);
        rope_angles(V[k], M[k], N_POS, dh, rot, gs[k]->rope_theta);
        snprintf(titles[k], sizeof titles[k], "%s: %d of %d dims turn (base %.0e)", k ? "the tiny model" : q.name, rot, dh,
                 gs[k]->rope_theta);
        panels[k] = (HeatPanel){.values = V[k], .blank = M[k], .rows = N_POS, .cols = dh, .title = titles[k],
                                .xlabel = "dim of the query/key head", .ylabel = "position (tokens)",
                                .vmin = -1, .vmax = 1, .diverging = 1};
    }
    char claim[300];
    snprintf(claim, sizeof claim, "With partial RoPE only the first %d of %s's %d dims per head turn with position (the "
             "slow pairs barely over 48 tokens); the other %d carry content with no position at all.",
             gated_rotary_dims(&q), q.name, q.head_dim, q.head_dim - gated_rotary_dims(&q));
    HeatmapFigure f = {
        .title = "Partial RoPE: only the first quarter of each head turns with position",
        .subtitle = "cos of each dim's rotation angle pos x theta^(-2i/rot); dims i and i + rot/2 form pair i (rotate_half)",
        .claim = claim, .panels = panels, .n_panels = 2, .panels_per_row = 1, .vmin = -1, .vmax = 1, .diverging = 1,
        .show_values = 0, .colorbar_label = "cos(rotation angle)", .blank_label = "dims RoPE never turns (no position)",
        .note = "Qwen3-Next numbers from data/configs/qwen3-next-80b-a3b.json (head_dim 256, partial_rotary_factor 0.25, "
                "rope_theta 1e7)",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "03_partial_rope"), a->png, a->svg);
    for (int k = 0; k < 2; k++) {
        free(V[k]);
        free(M[k]);
    }
}

// ---- Figure 4: what the gate costs: q_proj's outputs, not the cache -------------------------------------

static void figure_cache_per_token(const CliArgs *a, const char *configs) {
    ModelGeometry q;
    chapter_config(&q, configs, "qwen3-next-80b-a3b.json", "Qwen3-Next-80B-A3B");
    int H = q.n_heads, G = q.n_kv_heads, dh = q.head_dim;
    char l[5][128];
    snprintf(l[0], sizeof l[0], "KV cache if MHA: 2 x %d heads x %d", H, dh);
    snprintf(l[1], sizeof l[1], "KV cache, GQA without the gate: 2 x %d x %d", G, dh);
    snprintf(l[2], sizeof l[2], "KV cache, gated attention: 2 x %d x %d", G, dh);
    snprintf(l[3], sizeof l[3], "q_proj outputs without the gate: %d x %d", H, dh);
    snprintf(l[4], sizeof l[4], "q_proj outputs with the gate: %d x (%d + %d)", H, dh, dh);
    const char *labels[5] = {l[0], l[1], l[2], l[3], l[4]};
    double values[5] = {2.0 * H * dh, 2.0 * G * dh, 2.0 * G * dh, (double)H * dh, 2.0 * H * dh};
    int colors[5] = {COLOR_MHA, COLOR_GQA, COLOR_GATED, COLOR_GQA, COLOR_GATED};
    char sub[300], claim[300];
    snprintf(sub, sizeof sub, "numbers per token in one of %s's full-attention layers (%d query heads, %d KV heads of %d)",
             q.name, H, G, dh);
    snprintf(claim, sizeof claim, "In %s's attention layers the output gate doubles what q_proj computes per token "
             "(%.0f to %.0f numbers) and adds nothing to the KV cache, which stays GQA's %.0f (1/%d of MHA).", q.name,
             values[3], values[4], values[2], H / G);
    BarChart bc = {
        .title = "The output gate costs compute, not cache: it doubles q_proj and caches nothing",
        .subtitle = sub, .claim = claim, .xlabel = "numbers per token per layer", .labels = labels, .values = values,
        .colors = colors, .n = 5, .fmt = AXIS_PLAIN,
        .note = "the gate is recomputed from each token's own q_proj output; Qwen3-Next uses such a layer every 4th layer, "
                "the other three are Gated DeltaNet (chapter 9)",
    };
    char path[1024];
    plot_bar_chart(&bc, path_join(path, sizeof path, a->out, "04_cache_per_token"), a->png, a->svg);
}

// ---- Figure 5: gated attention for one token: the three changes to GQA, from a real config -----------------

#define ROPE_MARK COLOR_MQA   // the dims RoPE rotates, as in chapter 5's diagrams

static void figure_schematic(const CliArgs *a, const char *configs) {
    ModelGeometry g;
    chapter_config(&g, configs, "qwen3-next-80b-a3b.json", "Qwen3-Next-80B-A3B");
    int H = g.n_heads, G = g.n_kv_heads, dh = g.head_dim, d = g.d_model, rot = gated_rotary_dims(&g);
    char sub[240], claim[500], t[16][112];
    snprintf(sub, sizeof sub, "%s from its config.json: %d query heads and %d KV heads of %d, RoPE on %d of %d dims",
             g.name, H, G, dh, rot, dh);
    snprintf(claim, sizeof claim, "Gated attention in %s is GQA with three changes: q_proj also emits a gate that scales "
             "each head's output by sigmoid(g) (1), queries and keys get a zero-centred RMSNorm (2), and RoPE turns only "
             "the first %d of %d dims (3). The cache is GQA's: 2 x %d x %d per token and layer.", g.name, rot, dh, G, dh);
    Schematic *s = schem_new("Gated attention for one token: three changes to GQA", sub, claim);
    snprintf(t[0], sizeof t[0], "%d", d);
    int x = schem_tensor(s, 0, 0, "x", t[0], d, 1, COLOR_OTHER, 0);
    schem_span(s, x, 4);
    snprintf(t[1], sizeof t[1], "%d -> %d x (%d + %d)", d, H, dh, dh);
    snprintf(t[2], sizeof t[2], "%d -> %d x %d", d, G, dh);
    int qp = schem_op(s, 1, 0, "q_proj", t[1]);
    schem_span(s, qp, 2);
    int kp = schem_op(s, 1, 2, "k_proj", t[2]), vp = schem_op(s, 1, 3, "v_proj", t[2]);
    snprintf(t[3], sizeof t[3], "%d heads x %d", H, dh);
    snprintf(t[4], sizeof t[4], "%d heads x %d", G, dh);
    int gt = schem_tensor(s, 2, 0, "gate g", t[3], (long)H * dh, H, COLOR_GATED, SCHEM_HIGHLIGHT_FIRST);
    int q0 = schem_tensor(s, 2, 1, "q", t[3], (long)H * dh, H, COLOR_GATED, SCHEM_HIGHLIGHT_FIRST);
    int k0 = schem_tensor(s, 2, 2, "k", t[4], (long)G * dh, G, COLOR_GATED, 0);
    int v = schem_tensor(s, 2, 3, "v", t[4], (long)G * dh, G, COLOR_GATED, SCHEM_CACHED);
    int nq = schem_op(s, 3, 1, "QK-norm, zero-centred", "x / rms(x) x (1 + w), per head");
    int nk = schem_op(s, 3, 2, "QK-norm, zero-centred", "x / rms(x) x (1 + w), per head");
    schem_badge(s, nq, 2);
    schem_badge(s, nk, 2);
    snprintf(t[5], sizeof t[5], "the first %d of %d dims turn", rot, dh);
    int rq = schem_op(s, 4, 1, "partial RoPE", t[5]), rk = schem_op(s, 4, 2, "partial RoPE", t[5]);
    schem_badge(s, rq, 3);
    schem_badge(s, rk, 3);
    int q = schem_tensor(s, 5, 1, "q", t[3], (long)H * dh, H, COLOR_GATED, SCHEM_HIGHLIGHT_FIRST);
    int k = schem_tensor(s, 5, 2, "k", t[4], (long)G * dh, G, COLOR_GATED, SCHEM_CACHED);
    schem_mark(s, q, 0, rot, 1, ROPE_MARK, "RoPE (position) dims");
    schem_mark(s, k, 0, rot, 1, ROPE_MARK, "RoPE (position) dims");
    snprintf(t[6], sizeof t[6], "GQA: query head h reads KV head h / %d; softmax(q_h . k / sqrt(%d)) v", H / G, dh);
    int at = schem_op(s, 6, 1, "attention", t[6]);
    schem_span(s, at, 3);
    snprintf(t[7], sizeof t[7], "%d heads x %d", H, dh);
    int o = schem_tensor(s, 7, 1, "o", t[7], (long)H * dh, H, COLOR_GATED, SCHEM_HIGHLIGHT_FIRST);
    int gate = schem_op(s, 8, 0, "output gate: o x sigmoid(g)", "elementwise, each head its own gate");
    schem_span(s, gate, 2);
    schem_badge(s, gate, 1);
    snprintf(t[8], sizeof t[8], "%d -> %d", H * dh, d);
    int wo = schem_op(s, 9, 0, "W_o", t[8]);
    schem_span(s, wo, 2);
    int out = schem_tensor(s, 10, 0, "output", t[0], d, 1, COLOR_OTHER, 0);
    schem_span(s, out, 2);
    schem_arrow(s, x, -1, qp, -1, NULL);
    schem_arrow(s, x, -1, kp, -1, NULL);
    schem_arrow(s, x, -1, vp, -1, NULL);
    schem_arrow(s, qp, -1, gt, -1, NULL);
    schem_arrow(s, qp, -1, q0, -1, NULL);
    schem_arrow(s, kp, -1, k0, -1, NULL);
    schem_arrow(s, vp, -1, v, -1, NULL);
    schem_arrow(s, q0, -1, nq, -1, NULL);
    schem_arrow(s, k0, -1, nk, -1, NULL);
    schem_arrow(s, nq, -1, rq, -1, NULL);
    schem_arrow(s, nk, -1, rk, -1, NULL);
    schem_arrow(s, rq, -1, q, -1, NULL);
    schem_arrow(s, rk, -1, k, -1, NULL);
    schem_arrow(s, q, 0, at, -1, "head 0");
    schem_arrow(s, k, 0, at, -1, NULL);
    schem_arrow(s, v, 0, at, -1, NULL);
    schem_arrow(s, at, -1, o, 0, NULL);
    schem_arrow(s, o, -1, gate, -1, NULL);
    schem_arrow(s, gt, 0, gate, -1, "the gate of head 0");
    schem_arrow(s, gate, -1, wo, -1, NULL);
    schem_arrow(s, wo, -1, out, -1, NULL);
    schem_note(s, "1 output gate (a head can close), 2 zero-centred QK-norm (weight 1 + w, starts as plain RMSNorm), "
                  "3 partial RoPE (the other dims carry content only)");
    char path[1024];
    schem_write(s, path_join(path, sizeof path, a->out, "05_gated_schematic"), a->png, a->svg);
    schem_free(s);
}

int main(int argc, char **argv) {
    const char *configs = "data/configs", *ungated = "data/weights/ch08_ungated.safetensors";
    int layer = -1;
    CliOpt opts[] = {
        {.name = "--ungated", .type = OPT_STRING, .dst = &ungated, .meta = "FILE",
         .help = "the ungated twin to compare with (default data/weights/ch08_ungated.safetensors)"},
        {.name = "--layer", .type = OPT_INT, .dst = &layer, .meta = "L",
         .help = "layer of the attention comparison (default the last)", .min = 0, .max = GEOM_MAX_LAYERS - 1},
        {.name = "--configs", .type = OPT_STRING, .dst = &configs, .meta = "DIR",
         .help = "folder of Hugging Face config.json files (default data/configs)"},
    };
    CliSpec spec = {
        .prog = "ch08",
        .summary = "Chapter 8: gated attention (Qwen3-Next): gate values, the first-token sink with and without the "
                   "gate, partial RoPE, cache per token.",
        .flags = CLI_OUT | CLI_FORMAT | CLI_SEED | CLI_WEIGHTS,
        .default_out = "figures/ch08",
        .default_weights = "data/weights/ch08_gated.safetensors",
        .opts = opts, .n_opts = 3,
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    // every input first: a bad one fails before anything is written
    chapter_check_configs(configs, "qwen3-next-80b-a3b.json", NULL);
    Trained gt, ut;
    trained_load(&gt, a.weights);
    trained_load(&ut, ungated);
    require_gated(&gt);
    require_gated(&ut);
    if (layer < 0) layer = gt.model->g.n_layers - 1;
    check_pair(&gt, &ut, layer);
    for (int l = 0; l < gt.model->g.n_layers; l++) {
        chapter_seeds(SINK_SEEDS, "ungated", "first_by_layer", l);
        chapter_seeds(SINK_SEEDS, "gated", "first_by_layer", l);
    }
    ensure_out_dir(a.out);
    figure_gates(&a, &gt);
    figure_sink(&a, &gt, &ut, layer);
    figure_partial_rope(&a, configs, &gt);
    figure_cache_per_token(&a, configs);
    figure_schematic(&a, configs);
    figure_sink_seeds(&a, &gt);
    trained_free(&gt);
    trained_free(&ut);
    printf("ch08: wrote figures to %s/\n", a.out);
    free(a.pos);
    return 0;
}
