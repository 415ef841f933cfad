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
#include "schematic.h"

// Figure 1: the heads of a trained GQA model, one row per KV head, so heads that share keys and values
// sit side by side.
static void figure_grouped_heads(const CliArgs *a, Trained *t) {
    const ModelGeometry *g = &t->model->g;
    int H = g->n_heads, G = g->n_kv_heads, T = t->n_tokens, n_roles;
    int layer = chapter_most_varied_layer(t, &n_roles);
    float *A = mallocCheck(sizeof(float) * (size_t)H * T * T);
    char roles[16][CHAPTER_ROLE_CHARS];
    chapter_layer_roles(t, layer, A, roles);
    unsigned char *causal = mallocCheck((size_t)(T * T));
    mask_fill(causal, MASK_CAUSAL, T, 0);
    HeatPanel panels[16];
    char titles[16][160];
    for (int h = 0; h < H; h++) {
        snprintf(titles[h], sizeof titles[h], "query head %d -> KV %d: %.48s", h, h / (H / G), roles[h]);
        panels[h] = (HeatPanel){.values = A + (size_t)h * T * T, .mask = causal, .rows = T, .cols = T,
                                .title = titles[h], .row_labels = t->labels, .col_labels = t->labels,
                                .xlabel = "key j", .ylabel = h % (H / G) == 0 ? "query i" : NULL};
    }
    // do the heads of one group differ? (a group is one row of panels)
    int group_differs = 0;
    for (int h = 0; h < H; h++) {
        size_t w = strcspn(roles[h], "0123456789"), w0 = strcspn(roles[h - h % (H / G)], "0123456789");
        group_differs |= w != w0 || strncmp(roles[h], roles[h - h % (H / G)], w);
    }
    char sub[300], cap[160], claim[400];
    snprintf(sub, sizeof sub, "layer %d, %d query heads sharing %d KV heads (one row each); %s", layer, H, G,
             trained_caption(t, cap, sizeof cap));
    snprintf(claim, sizeof claim, "In layer %d of a trained %s model the query heads take %d different roles%s; each "
             "row's heads read the same keys and values.", layer, mha_kind_name(g), n_roles,
             group_differs ? ", also within a group that shares one KV head" : ", each group's heads alike");
    HeatmapFigure f = {
        .title = group_differs ? "Grouped-query attention: heads sharing one KV head still attend differently"
                               : "Grouped-query attention: query heads in a group read the same keys and values",
        .subtitle = sub, .claim = claim, .panels = panels, .n_panels = H, .panels_per_row = H / G, .vmin = 0, .vmax = 1,
        .colorbar_label = "attention weight",
        .note = "only K and V are shared, each head keeps its own queries. Panel titles: each head's largest mean weight on "
                "the first token, the previous token or the token after an earlier copy (induction); other: none reaches 30%",
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
    MemoryPlot p = {
        .name = "02_kv_vs_groups", .title = "Fewer KV heads, smaller cache: MHA vs GQA vs MQA",
        .subtitle = "32 layers, 32 query heads of 128 dims (d_model 4096), bf16: the cache shrinks by n_heads / n_kv_heads",
        .claim = "At 128K tokens a 32-layer model with 32 query heads of 128 caches 64 GiB with MHA, 16 GiB with 8 KV heads, "
                 "8 GiB with 4 and 2 GiB with MQA: the slope is n_heads / n_kv_heads times smaller.",
        .note = "per token: layers x 2 (K and V) x n_kv_heads x head_dim x 2 bytes",
        .curves = c, .n = 4, .max_context = 131072,
    };
    chapter_memory_plot(a, &p);
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
    char claim[300], b1[32], b2[32];
    snprintf(claim, sizeof claim, "At 128K tokens Sarvam 30B (GQA) caches %s and Sarvam 105B (MLA) %s; as plain MHA they "
             "would cache 16x and 28x more.", fmt_bytes(b1, sizeof b1, kvcache_total_bytes(&c[0].g, 131072, 1)),
             fmt_bytes(b2, sizeof b2, kvcache_total_bytes(&c[1].g, 131072, 1)));
    MemoryPlot p = {
        .name = "03_sarvam_gqa_vs_mla", .title = "Sarvam 30B (GQA) vs Sarvam 105B (MLA), and both as plain MHA",
        .subtitle = "one sequence, bf16; dashed: the same layers and query heads if each head cached its own K and V",
        .claim = claim, .curves = c, .n = 4, .max_context = 131072,
    };
    chapter_memory_plot(a, &p);
}

// Figure 4: the same recall task learned with 4, 2 and 1 KV heads (same data and steps), each from
// several seeds: what each model's cache costs per token against the accuracy it reached. The accuracies
// (and steps) are the seeds' from `make experiments`, trained with a budget short enough that no model
// is at a 100% ceiling; the shipped recall models (same geometry, trained longer, also used by chapter 12)
// give the cache per token.
static const char *const SWEEP_FILES[3] = {"ch04_recall_g4.safetensors", "ch04_recall_g2.safetensors",
                                           "ch04_recall_g1.safetensors"};
static const char *const SWEEP_SETTINGS[3] = {"mha", "gqa", "mqa"};
#define ABLATION_SEEDS CHAPTER_EXPERIMENTS "/ablation.jsonl"

static void figure_accuracy(const CliArgs *a, const char *weights_dir) {
    static const int color[3] = {COLOR_MHA, COLOR_GQA, COLOR_MQA};
    const char *labels[3];
    char lab[3][128];
    double values[3], lo[3], hi[3], chance = 0;
    int colors[3], n_seeds = 0, d_model = 0, head_dim = 0, steps = 0, n_pairs = 1;
    for (int k = 0; k < 3; k++) {
        char path[1024];
        Trained t;
        trained_load(&t, path_join(path, sizeof path, weights_dir, SWEEP_FILES[k]));
        ModelGeometry g = t.model->g;
        g.dtype_bytes = 4;
        char b[32];
        SeedStat st = chapter_seeds(ABLATION_SEEDS, SWEEP_SETTINGS[k], "accuracy", -1);
        int solved = 0;   // seeds that found the lookup (90% or better) rather than staying on the plateau
        for (int i = 0; i < st.n && i < CHAPTER_MAX_SEEDS; i++) solved += st.v[i] >= 0.9;
        snprintf(lab[k], sizeof lab[k], "%s, %d KV head%s (%s/token): %d of %d solve it", mha_kind_name(&g), g.n_kv_heads,
                 g.n_kv_heads == 1 ? "" : "s", fmt_bytes(b, sizeof b, kvcache_bytes_per_token(&g)), solved, st.n);
        labels[k] = lab[k];
        values[k] = 100.0 * st.mean;
        lo[k] = 100.0 * st.lo;
        hi[k] = 100.0 * st.hi;
        n_seeds = k == 0 ? st.n : (st.n < n_seeds ? st.n : n_seeds);
        chance = chapter_chance(&t.task);
        n_pairs = t.task.n_pairs;
        d_model = g.d_model;
        head_dim = g.head_dim;
        steps = (int)chapter_seeds(ABLATION_SEEDS, SWEEP_SETTINGS[k], "steps", -1).mean;
        colors[k] = color[k];
        printf("  %-40s recall accuracy %.1f%% (%d seeds: %.1f..%.1f%%)\n", lab[k], values[k], st.n, lo[k], hi[k]);
        trained_free(&t);
    }
    char title[160], sub[300], claim[400], note[300];
    snprintf(title, sizeof title, "Recall accuracy with 4, 2 and 1 KV heads, %d seeds each (tiny models)", n_seeds);
    snprintf(sub, sizeof sub, "2 layers, 4 query heads of %d, d_model %d, same data and %d steps; bar: mean, whisker: "
             "min..max of the seeds", head_dim, d_model, steps);
    snprintf(claim, sizeof claim, "Mean held-out recall accuracy over %d seeds: 4 KV heads %.0f%%, 2 KV heads %.0f%%, "
             "1 KV head (MQA) %.0f%%; chance is %.1f%%.", n_seeds, values[0], values[1], values[2], 100.0 * chance);
    snprintf(note, sizeof note, "solve: 90%% or better. Each run either finds the lookup or stays on the plateau, so the "
             "means count lucky seeds; one small task, it says nothing by itself about large models");
    char chance_label[64], shortcut_label[96];
    snprintf(chance_label, sizeof chance_label, "chance (1/%.0f)", 1.0 / chance);
    snprintf(shortcut_label, sizeof shortcut_label, "1/%d: any value of the sample", n_pairs);
    PlotRef refs[2] = {{.label = chance_label, .value = 100.0 * chance}, {.label = shortcut_label, .value = 100.0 / n_pairs}};
    BarChart bc = {
        .title = title, .subtitle = sub, .claim = claim, .xlabel = "held-out recall accuracy (%)", .labels = labels,
        .values = values, .lo = lo, .hi = hi, .colors = colors, .n = 3, .refs = refs, .n_refs = 2, .note = note,
    };
    char path[1024];
    plot_bar_chart(&bc, path_join(path, sizeof path, a->out, "04_accuracy_vs_kv_heads"), a->png, a->svg);
}

// Figure 5: the article's MHA -> GQA -> MQA sweep on a real config: Llama 3 8B (32 query heads of 128,
// 32 layers) with every KV-head count that divides 32, at 128K tokens. Halving the KV heads halves the
// cache; the shipped 8 is 4x below MHA.
static void figure_group_sweep(const CliArgs *a, const char *configs) {
    static const int G[6] = {32, 16, 8, 4, 2, 1};
    ModelGeometry base;
    chapter_config(&base, configs, "llama3-8b.json", "Llama 3 8B");
    const char *labels[6];
    char lab[6][96];
    double values[6];
    int colors[6];
    for (int k = 0; k < 6; k++) {
        ModelGeometry g = base;
        g.n_kv_heads = G[k];
        values[k] = kvcache_total_bytes(&g, 131072, 1);
        snprintf(lab[k], sizeof lab[k], "%s, %d KV head%s%s", G[k] == 32 ? "MHA" : G[k] == 1 ? "MQA" : "GQA", G[k],
                 G[k] == 1 ? "" : "s", G[k] == base.n_kv_heads ? " (as shipped)" : "");
        labels[k] = lab[k];
        colors[k] = G[k] == 32 ? COLOR_MHA : G[k] == 1 ? COLOR_MQA : COLOR_GQA;
    }
    BarChart bc = {
        .title = "Llama 3 8B at 128K tokens with 32 down to 1 KV heads",
        .subtitle = "llama3-8b.json with num_key_value_heads changed (./kvcache --set does the same), one sequence, bf16",
        .xlabel = "KV cache at 131072 tokens (bytes)",
        .labels = labels, .values = values, .colors = colors, .n = 6, .fmt = AXIS_BYTES,
        .note = "32 layers x 2 (K and V) x KV heads x 128 dims x 2 bytes per token: each halving of the KV heads halves the cache",
    };
    char path[1024];
    plot_bar_chart(&bc, path_join(path, sizeof path, a->out, "05_group_sweep"), a->png, a->svg);
}

// Figure 6: which query heads read which KV head, for one real model's 32 query heads with 32 (MHA),
// its own 8 (GQA) and 1 (MQA) KV heads, to scale: the K bar is what one layer caches per token (V alike).
static void figure_schematic(const CliArgs *a, const char *configs) {
    ModelGeometry g;
    chapter_config(&g, configs, "llama3-8b.json", "Llama 3 8B");
    int H = g.n_heads, dh = g.head_dim, kv[3] = {g.n_heads, g.n_kv_heads, 1};
    static const int color[3] = {COLOR_MHA, COLOR_GQA, COLOR_MQA};
    char sub[200], claim[400];
    snprintf(sub, sizeof sub, "%s's %d query heads of %d (config.json: %d KV heads), with %d, %d and %d KV heads",
             g.name, H, dh, g.n_kv_heads, kv[0], kv[1], kv[2]);
    snprintf(claim, sizeof claim, "With %d query heads of %d, MHA gives each its own K and V head; %s's GQA lets %d query "
             "heads share each of %d KV heads (a 4x smaller cache), and MQA lets all %d share one (32x smaller).", H, dh,
             g.name, H / g.n_kv_heads, g.n_kv_heads, H);
    Schematic *s = schem_new("Grouped-query attention: which query heads share a key and value head", sub, claim);
    for (int v = 0; v < 3; v++) {
        char qshape[64], kname[64], kshape[96];
        snprintf(qshape, sizeof qshape, "%d heads x %d", H, dh);
        snprintf(kname, sizeof kname, "%s: K", kv[v] == H ? "MHA" : kv[v] == 1 ? "MQA" : "GQA");
        snprintf(kshape, sizeof kshape, "%d KV head%s x %d (V alike)", kv[v], kv[v] == 1 ? "" : "s", dh);
        int q = schem_tensor(s, 2 * v, 0, "q", qshape, (long)H * dh, H, COLOR_OTHER, 0);
        int k = schem_tensor(s, 2 * v + 1, 0, kname, kshape, (long)kv[v] * dh, kv[v], color[v], SCHEM_CACHED | SCHEM_LABEL_BELOW);
        // query head h reads KV head h / (H / G)
        for (int h = 0; h < H; h++) schem_link(s, q, h, k, h / (H / kv[v]));
    }
    schem_note(s, "each line: a query head and the K (and V) head it reads; the K bar is what one layer caches per token for keys");
    char path[1024];
    schem_write(s, path_join(path, sizeof path, a->out, "06_gqa_schematic"), a->png, a->svg);
    schem_free(s);
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
        .default_weights = "data/weights/ch04_topics_gqa.safetensors",
        .opts = opts, .n_opts = 2,
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    // every input first: a bad one fails before anything is written
    chapter_check_configs(configs, "sarvam-30b.json", "sarvam-105b.json", NULL);
    char path[1024];
    for (int k = 0; k < 3; k++)
    {
        trained_check(path_join(path, sizeof path, weights_dir, SWEEP_FILES[k]), "gqa", TASK_RECALL, "the KV-heads sweep");
        chapter_seeds(ABLATION_SEEDS, SWEEP_SETTINGS[k], "accuracy", -1);
    }
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
    figure_group_sweep(&a, configs);
    figure_schematic(&a, configs);
    printf("ch04: wrote figures to %s/ (01_grouped_heads, 02_kv_vs_groups, 03_sarvam_gqa_vs_mla, 04_accuracy_vs_kv_heads, "
           "05_group_sweep, 06_gqa_schematic)\n", a.out);
    free(a.pos);
    return 0;
}
