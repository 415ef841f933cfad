// Chapter 4: grouped-query attention (GQA) and multi-query attention (MQA).
//
// Article: the section on GQA. Multi-head attention gives every query head its own key and value head,
// and the KV cache pays for all of them. GQA lets a group of query heads share one KV head: H query
// heads, G KV heads, query head h reads KV head h / (H/G). The cache shrinks by H/G; MQA is the
// extreme G = 1. The mechanism is chapter 3's mixer unchanged: only n_kv_heads differs
// (chapters/03_mha/mha.c), so GQA with G = H *is* MHA (a test holds them equal).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "03_mha/mha.h"
#include "chapter.h"
#include "check.h"
#include "cli.h"
#include "heatmap.h"
#include "kvcache.h"
#include "mathx.h"
#include "plot.h"

// Figure 1: the heads of a trained GQA model, one row per KV head, so heads that share keys and values
// sit side by side.
static void figure_grouped_heads(const CliArgs *a, Trained *t) {
    const ModelGeometry *g = &t->model->g;
    int H = g->n_heads, G = g->n_kv_heads, T = t->n_tokens, L = g->n_layers;
    float *A = mallocCheck(sizeof(float) * (size_t)H * T * T);
    trained_attention(t, 0, L - 1, A);
    unsigned char *causal = mallocCheck((size_t)(T * T));
    mask_fill(causal, MASK_CAUSAL, T, 0);
    HeatPanel panels[16];
    char titles[16][64];
    for (int h = 0; h < H; h++) {
        snprintf(titles[h], sizeof titles[h], "query head %d -> KV head %d", h, h / (H / G));
        panels[h] = (HeatPanel){.values = A + (size_t)h * T * T, .mask = causal, .rows = T, .cols = T,
                                .title = titles[h], .row_labels = t->labels, .col_labels = t->labels,
                                .xlabel = "key j", .ylabel = h % (H / G) == 0 ? "query i" : NULL};
    }
    char sub[300], cap[160];
    snprintf(sub, sizeof sub, "layer %d of a %s model with %d query heads and %d KV heads: each row shares one K and one V; %s",
             L - 1, mha_kind_name(g), H, G, trained_caption(t, cap, sizeof cap));
    HeatmapFigure f = {
        .title = "Grouped-query attention: query heads in a group read the same keys and values",
        .subtitle = sub, .panels = panels, .n_panels = H, .panels_per_row = H / G, .vmin = 0, .vmax = 1,
        .colorbar_label = "attention weight",
        .note = "heads of one group may still attend differently: only K and V are shared, each head keeps its own queries",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "01_grouped_heads"), a->png, a->svg);
    free(A);
    free(causal);
}

// Figure 2: the article's example: a 32-layer model with 32 query heads of 128 dims (Llama 2 7B's
// shape), its KV cache with 32 (MHA), 8, 4 and 1 (MQA) KV heads.
static void figure_groups(const CliArgs *a) {
    static const int G[4] = {32, 8, 4, 1};
    static const int color[4] = {COLOR_MHA, COLOR_GQA, COLOR_GQA, COLOR_MQA};
    MemoryCurve c[4];
    char labels[4][160];
    for (int k = 0; k < 4; k++) {
        memset(&c[k], 0, sizeof c[k]);
        geometry_init(&c[k].g, "", 32, 4096, 32, G[k]);
        snprintf(c[k].g.name, sizeof c[k].g.name, "%s, %d KV head%s", G[k] == 32 ? "MHA" : G[k] == 1 ? "MQA" : "GQA", G[k],
                 G[k] == 1 ? "" : "s");
        char b[32];
        snprintf(labels[k], sizeof labels[k], "%.95s: %.31s/token (%dx smaller)", c[k].g.name,
                 fmt_bytes(b, sizeof b, kvcache_bytes_per_token(&c[k].g)), 32 / G[k]);
        c[k].label = labels[k];
        c[k].color = color[k];
        c[k].dashed = k == 2;
    }
    chapter_memory_plot(a, "02_kv_vs_groups", "Fewer KV heads, smaller cache: MHA vs GQA vs MQA",
                        "32 layers, 32 query heads of 128 dims (d_model 4096), bf16: the cache shrinks by n_heads / n_kv_heads",
                        c, 4, 131072, "per token: layers x 2 (K and V) x n_kv_heads x head_dim x 2 bytes");
}

// Figure 3: two real models of the same family: Sarvam 30B uses GQA, Sarvam 105B uses MLA (chapter 5).
// Dashed: the same models if every query head kept its own K and V (MHA).
static void figure_sarvam(const CliArgs *a, const char *configs) {
    MemoryCurve c[4];
    memset(c, 0, sizeof c);
    chapter_config(&c[0].g, configs, "sarvam-30b.json", "Sarvam 30B (GQA)");
    chapter_config(&c[1].g, configs, "sarvam-105b.json", "Sarvam 105B (MLA)");
    c[0].color = COLOR_GQA;
    c[1].color = COLOR_MLA;
    for (int k = 0; k < 2; k++) {
        chapter_mha_twin(&c[2 + k].g, &c[k].g, k == 0 ? "Sarvam 30B as MHA" : "Sarvam 105B as MHA");
        c[2 + k].color = c[k].color;
        c[2 + k].dashed = 1;
    }
    chapter_memory_plot(a, "03_sarvam_gqa_vs_mla", "Sarvam 30B (GQA) vs Sarvam 105B (MLA), and both as plain MHA",
                        "one sequence, bf16; dashed: the same layers and query heads if each head cached its own K and V",
                        c, 4, 131072, NULL);
}

// Figure 4: the same recall task learned with 4, 2 and 1 KV heads (same data, steps and seed): what
// each model's cache costs per token against the accuracy it reached.
static const char *const SWEEP_FILES[3] = {"ch04_recall_g4.safetensors", "ch04_recall_g2.safetensors",
                                           "ch04_recall_g1.safetensors"};

static void figure_accuracy(const CliArgs *a, const char *weights_dir) {
    const char *const *files = SWEEP_FILES;
    static const int color[3] = {COLOR_MHA, COLOR_GQA, COLOR_MQA};
    BarChart bc = {0};
    const char *labels[3];
    char lab[3][128];
    double values[3];
    int colors[3];
    for (int k = 0; k < 3; k++) {
        char path[1024];
        Trained t;
        trained_load(&t, path_join(path, sizeof path, weights_dir, files[k]));
        ModelGeometry g = t.model->g;
        g.dtype_bytes = 4;
        char b[32];
        snprintf(lab[k], sizeof lab[k], "%s, %d KV head%s (%s/token)", mha_kind_name(&g), g.n_kv_heads, g.n_kv_heads == 1 ? "" : "s",
                 fmt_bytes(b, sizeof b, kvcache_bytes_per_token(&g)));
        labels[k] = lab[k];
        values[k] = 100.0 * t.info.accuracy;
        colors[k] = color[k];
        printf("  %-40s recall accuracy %.1f%%\n", lab[k], values[k]);
        trained_free(&t);
    }
    bc.title = "Recall accuracy with 4, 2 and 1 KV heads (tiny models, same data and steps)";
    bc.subtitle = "2 layers, 4 query heads, d_model 64; KV cache per token in fp32 as the tiny models store it";
    bc.xlabel = "held-out recall accuracy (%)";
    bc.labels = labels;
    bc.values = values;
    bc.colors = colors;
    bc.n = 3;
    bc.note = "a toy: one seed, one task; real models recover quality with more training (the article cites GQA papers)";
    char path[1024];
    plot_bar_chart(&bc, path_join(path, sizeof path, a->out, "04_accuracy_vs_kv_heads"), a->png, a->svg);
}

int main(int argc, char **argv) {
    const char *configs = "data/configs", *weights_dir = "data/weights";
    CliOpt opts[] = {
        {.name = "--configs", .type = OPT_STRING, .dst = &configs, .meta = "DIR",
         .help = "folder of Hugging Face config.json files (default data/configs)"},
        {.name = "--weights-dir", .type = OPT_STRING, .dst = &weights_dir, .meta = "DIR",
         .help = "folder of the G-sweep models ch04_recall_g{4,2,1} (default data/weights)"},
    };
    CliSpec spec = {
        .prog = "ch04",
        .summary = "Chapter 4: grouped-query and multi-query attention: grouped heads, KV memory by group count.",
        .flags = CLI_OUT | CLI_FORMAT | CLI_SEED | CLI_WEIGHTS,
        .default_out = "figures/ch04",
        .default_weights = "data/weights/ch04_recall_g2.safetensors",
        .opts = opts, .n_opts = 2,
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    // every input first: a bad one fails before anything is written
    chapter_check_configs(configs, "sarvam-30b.json", "sarvam-105b.json", NULL);
    char path[1024];
    for (int k = 0; k < 3; k++)
        trained_check(path_join(path, sizeof path, weights_dir, SWEEP_FILES[k]), "gqa", TASK_RECALL, "the KV-heads sweep");
    Trained t;
    trained_load(&t, a.weights);
    trained_require(&t, "gqa|gated", -1, "the grouped-heads figure");
    if (t.model->g.n_heads > 16) die_user("%s: the figure draws at most 16 heads, the model has %d", t.path, t.model->g.n_heads);
    ensure_out_dir(a.out);
    figure_grouped_heads(&a, &t);
    trained_free(&t);
    figure_groups(&a);
    figure_sarvam(&a, configs);
    figure_accuracy(&a, weights_dir);
    printf("ch04: wrote figures to %s/ (01_grouped_heads, 02_kv_vs_groups, 03_sarvam_gqa_vs_mla, 04_accuracy_vs_kv_heads)\n", a.out);
    free(a.pos);
    return 0;
}
