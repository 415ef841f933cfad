// Chapter 5: multi-head latent attention (MLA), DeepSeek-V2/V3's answer to the KV cache.
//
// Article: the section on MLA. Instead of caching a key and a value per head, MLA caches one
// compressed latent c_kv (kv_lora_rank = 512 numbers in DeepSeek-V3) plus one small RoPE key shared
// by all heads (qk_rope_head_dim = 64): 576 numbers per token per layer, where MHA with 128 heads of
// 128 dims would cache 32768. Per-head keys and values are re-created from the latent by
// up-projections, and at decode time those up-projections can be folded ("absorbed") into the query
// and the output, so per-head K and V are never built at all (chapters/05_mla/mla.c).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "05_mla/mla.h"
#include "03_mha/mha.h"
#include "chapter.h"
#include "check.h"
#include "cli.h"
#include "heatmap.h"
#include "kvcache.h"
#include "mathx.h"
#include "plot.h"
#include "rng.h"

// Figure 1: what one token costs in the cache of one layer, drawn to scale, at DeepSeek-V3's sizes.
static void figure_per_token(const CliArgs *a) {
    // DeepSeek-V3: 128 heads of 128 dims (nope) + 64 (rope), v 128, kv_lora_rank 512
    static const char *labels[4] = {
        "MHA: 2 x 128 heads x 128 dims",
        "GQA, 8 KV heads: 2 x 8 x 128",
        "MQA: 2 x 1 x 128",
        "MLA: latent 512 + RoPE key 64",
    };
    static const double values[4] = {2.0 * 128 * 128, 2.0 * 8 * 128, 2.0 * 128, 512 + 64};
    static const int colors[4] = {COLOR_MHA, COLOR_GQA, COLOR_MQA, COLOR_MLA};
    BarChart bc = {
        .title = "What one token adds to one layer's cache, to scale",
        .subtitle = "numbers cached per token per layer at DeepSeek-V3's width (128 heads of 128 dims): MLA's 576 is 1.8% of MHA's 32768",
        .xlabel = "numbers cached per token per layer (elements)",
        .labels = labels, .values = values, .colors = colors, .n = 4, .fmt = AXIS_PLAIN,
        .note = "DeepSeek-V2 paper, Table 1: MLA's cache equals GQA with about 2.25 groups; MQA is smaller still but loses quality",
    };
    char path[1024];
    plot_bar_chart(&bc, path_join(path, sizeof path, a->out, "01_cache_per_token"), a->png, a->svg);
}

// Figure 2: DeepSeek-V3 and Kimi K2 (both MLA) against the same models with MHA.
static void figure_memory(const CliArgs *a, const char *configs) {
    MemoryCurve c[4];
    memset(c, 0, sizeof c);
    chapter_config(&c[0].g, configs, "deepseek-v3.json", "DeepSeek-V3 (MLA)");
    chapter_config(&c[1].g, configs, "kimi-k2.json", "Kimi K2 (MLA)");
    c[0].color = COLOR_MLA;
    c[1].color = COLOR_DSA;
    for (int k = 0; k < 2; k++) {
        char name[96];
        snprintf(name, sizeof name, "%s as MHA (%d heads)", k == 0 ? "DeepSeek-V3" : "Kimi K2", c[k].g.n_heads);
        chapter_mha_twin(&c[2 + k].g, &c[k].g, name);
        c[2 + k].color = c[k].color;
        c[2 + k].dashed = 1;
    }
    chapter_memory_plot(a, "02_memory_vs_context", "MLA: DeepSeek-V3 and Kimi K2 against the same models with MHA",
                        "one sequence, bf16; MLA caches 576 numbers per token per layer, MHA would cache heads x (128 + 128). Both have 61 MLA layers, so their solid lines coincide (Kimi K2 drawn on top)",
                        c, 4, 131072, NULL);
}

// Figure 3: measured decode time per token, naive vs absorbed, as the context grows. Timing is
// machine-dependent, so this figure is not byte-for-byte reproducible (the others are).
static void figure_decode_time(const CliArgs *a, Rng *rng) {
    ModelGeometry g;
    mla_geometry_tiny(&g, 1, 1024, 16);   // d 1024, 16 heads: dn = dv = 64, dr = 32, dc = 512
    g.q_lora_rank = 0;
    Mixer m = {.ops = &mla_mixer, .g = &g, .layer = 0};
    size_t np = mixer_n_params(&mla_mixer, &g, 0);
    float *params = mallocCheck(sizeof(float) * np);
    m.ops->init(&m, params, rng);
    enum { N = 5 };
    double ctx[N], naive[N], absorbed[N];
    printf("  decode time per token (1 thread): d 1024, 16 heads, kv_lora_rank %d\n", g.kv_lora_rank);
    for (int i = 0; i < N; i++) {
        int T = 512 << i;   // 512 .. 8K
        ctx[i] = T;
        naive[i] = 1e3 * mla_decode_seconds_per_token(&g, params, T, 0, 2);
        absorbed[i] = 1e3 * mla_decode_seconds_per_token(&g, params, T, 1, 2);
        printf("    context %6d: naive %8.3f ms, absorbed %8.3f ms (%.1fx)\n", T, naive[i], absorbed[i], naive[i] / absorbed[i]);
    }
    PlotSeries s[2] = {
        {.label = "naive: rebuild every head's K and V from the latent", .x = ctx, .y = naive, .n = N, .color = COLOR_MQA, .markers = 1},
        {.label = "absorbed: W_UK folded into the query, W_UV after the sum", .x = ctx, .y = absorbed, .n = N, .color = COLOR_MLA, .markers = 1},
    };
    char sub[200];
    snprintf(sub, sizeof sub, "one MLA layer, d_model 1024, 16 heads, kv_lora_rank %d, one thread; same cache, same outputs",
             g.kv_lora_rank);
    LineChart c = {
        .title = "MLA decode: the absorbed path never builds per-head keys and values",
        .subtitle = sub, .xlabel = "tokens already in the cache (log scale)", .ylabel = "time per decoded token (ms, log scale)",
        .logx = 1, .logy = 1, .xfmt = AXIS_TOKENS, .series = s, .n_series = 2, .legend_pos = 0,
        .note = "measured on the machine that ran ./ch05 (this figure alone is not byte-reproducible)",
    };
    char path[1024];
    plot_line_chart(&c, path_join(path, sizeof path, a->out, "03_decode_time"), a->png, a->svg);
    free(params);
}

// Figure 4: the trained tiny MLA model's attention on the recall example.
static void figure_trained(const CliArgs *a, Trained *t) {
    const ModelGeometry *g = &t->model->g;
    int H = g->n_heads, T = t->n_tokens, L = g->n_layers;
    float *A = mallocCheck(sizeof(float) * (size_t)H * T * T);
    trained_attention(t, 0, L - 1, A);
    unsigned char *causal = mallocCheck((size_t)(T * T));
    mask_fill(causal, MASK_CAUSAL, T, 0);
    HeatPanel panels[8];
    char titles[8][48];
    for (int h = 0; h < H; h++) {
        snprintf(titles[h], sizeof titles[h], "layer %d, head %d", L - 1, h);
        panels[h] = (HeatPanel){.values = A + (size_t)h * T * T, .mask = causal, .rows = T, .cols = T,
                                .title = titles[h], .row_labels = t->labels, .col_labels = t->labels,
                                .xlabel = "key j", .ylabel = h == 0 ? "query i" : NULL};
    }
    char sub[400], cap[160];
    snprintf(sub, sizeof sub, "kv_lora_rank %d + RoPE key %d cached per token (vs %d for MHA at this size); %s",
             g->kv_lora_rank, g->qk_rope_head_dim, 2 * H * (g->qk_nope_head_dim + g->v_head_dim) / 2,
             trained_caption(t, cap, sizeof cap));
    HeatmapFigure f = {
        .title = "A tiny trained MLA model: every head still has its own attention pattern",
        .subtitle = sub, .panels = panels, .n_panels = H, .vmin = 0, .vmax = 1, .colorbar_label = "attention weight",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "04_trained_attention"), a->png, a->svg);
    free(A);
    free(causal);
}

// Figure 5: the toy version of DeepSeek-V2's ablation: MHA, GQA, MQA and MLA trained on the same recall
// data with the same steps and seed; accuracy against KV bytes per token.
static const char *const ABLATION_FILES[4] = {"ch04_recall_g4.safetensors", "ch04_recall_g2.safetensors",
                                              "ch04_recall_g1.safetensors", "ch05_recall_mla.safetensors"};

static void figure_ablation(const CliArgs *a, const char *weights_dir) {
    const char *const *files = ABLATION_FILES;
    static const int color[4] = {COLOR_MHA, COLOR_GQA, COLOR_MQA, COLOR_MLA};
    double x[4], y[4];
    char labels[4][160];
    PlotSeries s[4];
    for (int k = 0; k < 4; k++) {
        char path[1024];
        Trained t;
        trained_load(&t, path_join(path, sizeof path, weights_dir, files[k]));
        ModelGeometry g = t.model->g;
        g.dtype_bytes = 4;
        x[k] = kvcache_bytes_per_token(&g);
        y[k] = 100.0 * t.info.accuracy;
        const char *kind = g.attn == ATTN_MLA ? "MLA" : mha_kind_name(&g);
        char b[32];
        snprintf(labels[k], sizeof labels[k], "%s: %s/token, %.1f%% (%zu params)", kind, fmt_bytes(b, sizeof b, x[k]),
                 y[k], t.model->n_params);
        s[k] = (PlotSeries){.label = labels[k], .x = &x[k], .y = &y[k], .n = 1, .color = color[k], .markers = 1};
        printf("  %s\n", labels[k]);
        trained_free(&t);
    }
    LineChart c = {
        .title = "Toy ablation: recall accuracy against KV cache per token",
        .subtitle = "2 layers, 4 query heads, d_model 64, the same recall data, steps and seed for every model; cache in fp32",
        .xlabel = "KV cache per token, all layers (bytes, log scale)", .ylabel = "held-out recall accuracy (%)",
        .logx = 1, .xfmt = AXIS_BYTES, .ymin = 0, .ymax = 100, .series = s, .n_series = 4, .legend_pos = 2,
        .note = "one seed and one small task: a sketch of DeepSeek-V2's MHA/GQA/MQA/MLA comparison, not evidence on its own",
    };
    char path[1024];
    plot_line_chart(&c, path_join(path, sizeof path, a->out, "05_ablation_accuracy_vs_cache"), a->png, a->svg);
}

int main(int argc, char **argv) {
    const char *configs = "data/configs", *weights_dir = "data/weights";
    int no_timing = 0;
    CliOpt opts[] = {
        {.name = "--configs", .type = OPT_STRING, .dst = &configs, .meta = "DIR",
         .help = "folder of Hugging Face config.json files (default data/configs)"},
        {.name = "--weights-dir", .type = OPT_STRING, .dst = &weights_dir, .meta = "DIR",
         .help = "folder of the ablation models (default data/weights)"},
        {.name = "--no-timing", .type = OPT_FLAG, .dst = &no_timing, .help = "skip the measured decode-time figure"},
    };
    CliSpec spec = {
        .prog = "ch05",
        .summary = "Chapter 5: multi-head latent attention: cache per token, memory of DeepSeek-V3 / Kimi K2, naive vs absorbed decode.",
        .flags = CLI_OUT | CLI_FORMAT | CLI_SEED | CLI_WEIGHTS,
        .default_out = "figures/ch05",
        .default_weights = "data/weights/ch05_recall_mla.safetensors",
        .opts = opts, .n_opts = 3,
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    // every input first: a bad one fails before anything is written
    chapter_check_configs(configs, "deepseek-v3.json", "kimi-k2.json", NULL);
    char path[1024];
    for (int k = 0; k < 4; k++)
        trained_check(path_join(path, sizeof path, weights_dir, ABLATION_FILES[k]), k < 3 ? "gqa" : "mla", TASK_RECALL,
                      "the MHA/GQA/MQA/MLA ablation");
    Trained t;
    trained_load(&t, a.weights);
    trained_require(&t, "mla|dsa", -1, "the trained-MLA figure");
    if (t.model->g.n_heads > 8) die_user("%s: the figure draws at most 8 heads, the model has %d", t.path, t.model->g.n_heads);
    ensure_out_dir(a.out);
    Rng rng;
    rng_seed(&rng, a.seed);
    figure_per_token(&a);
    figure_memory(&a, configs);
    if (!no_timing) figure_decode_time(&a, &rng);
    figure_trained(&a, &t);
    trained_free(&t);
    figure_ablation(&a, weights_dir);
    printf("ch05: wrote figures to %s/\n", a.out);
    free(a.pos);
    return 0;
}
