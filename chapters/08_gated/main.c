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

#define MAX_HEADS 8

// What figures 1 and 2 need of the pair (checked before the first figure).
static void check_pair(const Trained *gt, const Trained *ut, int layer) {
    const ModelGeometry *g = &gt->model->g;
    if (gated_gate_width(g) == 0) die_user("%s: the model has no output gate (attn_output_gate none), nothing to draw", gt->path);
    if (g->n_layers > 4) die_user("%s: the gate figure draws at most 4 layers, the model has %d", gt->path, g->n_layers);
    if (ut->n_tokens != gt->n_tokens || ut->model->g.n_heads != g->n_heads || strcmp(ut->task.name, gt->task.name))
        die_user("%s and %s: the gated and the ungated model must share task, length and heads", gt->path, ut->path);
    if (layer < 0 || layer >= g->n_layers || layer >= ut->model->g.n_layers)
        die_user("--layer %d: the models have %d layers", layer, g->n_layers);
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
    char sub[512], cap[160];
    snprintf(sub, sizeof sub, "sigmoid(g) multiplies each head's output before Wo; %s gate, %d heads of %d dims. "
             "0 closes the channel, 1 lets the attention output through; untrained gates sit at 0.5. Mean over all: %.2f. %s",
             gw == 1 ? "one scalar per head (headwise)" : "one gate per channel (elementwise, as Qwen3-Next)", g->n_heads,
             g->head_dim, mean_all, trained_caption(t, cap, sizeof cap));
    HeatmapFigure f = {
        .title = "Gated attention: how far each token opens its output gate",
        .subtitle = sub, .panels = panels, .n_panels = L, .vmin = 0, .vmax = 1, .show_values = 0,
        .colorbar_label = "gate sigmoid(g)",
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
    char title[200], sub[800], c0[160], c1[160];
    snprintf(title, sizeof title, "With and without the output gate: first-token attention %.0f%% (gated) vs %.0f%% (ungated), "
             "all layers; layer %d drawn", 100.0 * sink[0], 100.0 * sink[1], layer);
    snprintf(sub, sizeof sub, "top row: gated model (%s); bottom row: its ungated twin (%s), same data, steps and seed. "
             "Percentages: mean weight on the first token over queries 1..T-1 (panel titles: this layer and head); "
             "uniform attention would give %.0f%%%s. The first token is %s, not a "
             "beginning-of-sequence token.",
             trained_caption(gt, c0, sizeof c0), trained_caption(ut, c1, sizeof c1), 100.0 * uniform,
             fmax(sink[0], sink[1]) < uniform ? ", so neither tiny model grows a first-token sink" : "",
             gt->task.kind == TASK_RECALL ? "the first key of the recall example" : "an ordinary token of the example");
    HeatmapFigure f = {
        .title = title, .subtitle = sub, .panels = panels, .n_panels = 2 * H, .panels_per_row = H, .vmin = 0, .vmax = 1,
        .show_values = 0, .colorbar_label = "attention weight",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "02_attention_sink"), a->png, a->svg);
    free(A);
    free(causal);
}

// ---- Figure 3: which dims partial RoPE turns --------------------------------------------------------------

// cos(angle) of every dim of a head at positions 0..n_pos-1: dims i and i + rot/2 of pair i turn by
// pos * theta^(-2i/rot); dims rot.. never turn (masked). V (n_pos, head_dim), mask likewise.
static void rope_angles(float *V, unsigned char *mask, int n_pos, int head_dim, int rot, double theta) {
    for (int p = 0; p < n_pos; p++)
        for (int c = 0; c < head_dim; c++) {
            size_t i = (size_t)p * head_dim + c;
            mask[i] = c < rot;
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
        panels[k] = (HeatPanel){.values = V[k], .mask = M[k], .rows = N_POS, .cols = dh, .title = titles[k],
                                .xlabel = "dim of the query/key head", .ylabel = k == 0 ? "position (tokens)" : NULL,
                                .vmin = -1, .vmax = 1, .diverging = 1};
    }
    HeatmapFigure f = {
        .title = "Partial RoPE: only the first quarter of each head turns with position",
        .subtitle = "cos of the rotation angle pos x theta^(-2i/rot) of each dim; dims i and i + rot/2 form pair i "
                    "(rotate_half over the first rot dims, the Hugging Face convention). Hatched: dims RoPE never touches, "
                    "which carry content with no position at all. Slow pairs barely turn over 48 tokens.",
        .panels = panels, .n_panels = 2, .vmin = -1, .vmax = 1, .diverging = 1, .show_values = 0,
        .colorbar_label = "cos(rotation angle)",
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

// ---- Figure 4: what one token costs in the cache of a Qwen3-Next attention layer --------------------------

static void figure_cache_per_token(const CliArgs *a, const char *configs) {
    ModelGeometry q;
    chapter_config(&q, configs, "qwen3-next-80b-a3b.json", "Qwen3-Next-80B-A3B");
    int H = q.n_heads, G = q.n_kv_heads, dh = q.head_dim;
    char l0[96], l1[96], l2[128];
    snprintf(l0, sizeof l0, "MHA: 2 x %d heads x %d", H, dh);
    snprintf(l1, sizeof l1, "gated attention (GQA): 2 x %d KV heads x %d", G, dh);
    snprintf(l2, sizeof l2, "its output gate: nothing cached");
    const char *labels[3] = {l0, l1, l2};
    double values[3] = {2.0 * H * dh, 2.0 * G * dh, 0.0};
    int colors[3] = {COLOR_MHA, COLOR_GQA, COLOR_OTHER};
    char sub[300];
    snprintf(sub, sizeof sub, "numbers cached per token in one of Qwen3-Next's full-attention layers (%d query heads, %d KV "
             "heads of %d dims): %.0f, 1/%d of MHA's. The gate comes out of q_proj, which is twice as wide.",
             H, G, dh, values[1], H / G);
    BarChart bc = {
        .title = "Gated attention's KV cache is GQA's: the gate costs compute, not memory",
        .subtitle = sub, .xlabel = "numbers cached per token per layer (elements)", .labels = labels, .values = values,
        .colors = colors, .n = 3, .fmt = AXIS_PLAIN,
        .note = "Qwen3-Next uses such a layer every 4th layer; the other three are Gated DeltaNet (chapter 9)",
    };
    char path[1024];
    plot_bar_chart(&bc, path_join(path, sizeof path, a->out, "04_cache_per_token"), a->png, a->svg);
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
    ensure_out_dir(a.out);
    figure_gates(&a, &gt);
    figure_sink(&a, &gt, &ut, layer);
    figure_partial_rope(&a, configs, &gt);
    figure_cache_per_token(&a, configs);
    trained_free(&gt);
    trained_free(&ut);
    printf("ch08: wrote figures to %s/\n", a.out);
    free(a.pos);
    return 0;
}
