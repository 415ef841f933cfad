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
#include "schematic.h"

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
        .subtitle = "numbers cached per token per layer at DeepSeek-V3's width (128 heads of 128 dims)",
        .claim = "At DeepSeek-V3's width one token adds 32768 numbers to an MHA layer's cache, 2048 with 8 KV heads, 256 "
                 "with MQA and 576 with MLA (a latent of 512 and a shared RoPE key of 64): 1.8% of MHA.",
        .xlabel = "numbers cached per token per layer (elements)",
        .labels = labels, .values = values, .colors = colors, .n = 4, .fmt = AXIS_PLAIN,
        .note = "DeepSeek-V2 paper, Table 1: MLA's cache equals that of GQA with about 2.25 groups",
    };
    char path[1024];
    plot_bar_chart(&bc, path_join(path, sizeof path, a->out, "01_cache_per_token"), a->png, a->svg);
}

// Figure 2: DeepSeek-V3 and Kimi K2 (both MLA, 61 layers of 576 numbers: their lines coincide) against
// the same models with MHA.
static void figure_memory(const CliArgs *a, const char *configs) {
    MemoryCurve c[4];
    memset(c, 0, sizeof c);
    chapter_config(&c[0].g, configs, "deepseek-v3.json", "DeepSeek-V3");
    chapter_config(&c[1].g, configs, "kimi-k2.json", "Kimi K2");
    char labels[4][160], b[32];
    for (int k = 0; k < 2; k++) {
        snprintf(labels[k], sizeof labels[k], "%.60s, MLA: %s/token", c[k].g.name, fmt_bytes(b, sizeof b, kvcache_bytes_per_token(&c[k].g)));
        c[k].label = labels[k];
        c[k].color = COLOR_MLA;
        char name[96];
        snprintf(name, sizeof name, "%.60s as MHA (%d heads)", c[k].g.name, c[k].g.n_heads);
        chapter_mha_twin(&c[2 + k].g, &c[k].g, name);
        snprintf(labels[2 + k], sizeof labels[2 + k], "%s: %s/token", name, fmt_bytes(b, sizeof b, kvcache_bytes_per_token(&c[2 + k].g)));
        c[2 + k].label = labels[2 + k];
        c[2 + k].color = k == 0 ? COLOR_MHA : COLOR_OTHER;
        c[2 + k].dashed = 1;
    }
    long max = c[0].g.max_seq_len > c[1].g.max_seq_len ? c[0].g.max_seq_len : c[1].g.max_seq_len;
    char claim[300], b1[32], b2[32];
    snprintf(claim, sizeof claim, "DeepSeek-V3 and Kimi K2 cache the same %s per token with MLA (61 layers of 576 numbers); "
             "with MHA DeepSeek-V3 would need %s at %ldK tokens instead of %s.",
             fmt_bytes(b, sizeof b, kvcache_bytes_per_token(&c[0].g)), fmt_bytes(b1, sizeof b1, kvcache_total_bytes(&c[2].g, max, 1)),
             max / 1024, fmt_bytes(b2, sizeof b2, kvcache_total_bytes(&c[0].g, max, 1)));
    MemoryPlot p = {
        .name = "02_memory_vs_context", .title = "MLA: DeepSeek-V3 and Kimi K2 against the same models with MHA",
        .subtitle = "one sequence, bf16; MLA caches 576 numbers per token and layer, MHA heads x (128 + 128)",
        .claim = claim, .curves = c, .n = 4, .max_context = max,
    };
    chapter_memory_plot(a, &p);
}

// Figure 8: the article's MLA sweep over latent sizes on a real config: DeepSeek-V3 with kv_lora_rank
// 1024, 512 (as shipped), 256 and 64, against the same model with GQA of 8 KV heads of 128 dims. Each
// token caches kv_lora_rank + qk_rope_head_dim (64) numbers per layer, so the RoPE key sets a floor.
static void figure_latent_sweep(const CliArgs *a, const char *configs) {
    static const int R[4] = {1024, 512, 256, 64};
    ModelGeometry base;
    chapter_config(&base, configs, "deepseek-v3.json", "DeepSeek-V3");
    const char *labels[5];
    char lab[5][96];
    double values[5];
    int colors[5];
    for (int k = 0; k < 4; k++) {
        ModelGeometry g = base;
        g.kv_lora_rank = R[k];
        values[k] = kvcache_total_bytes(&g, 131072, 1);
        snprintf(lab[k], sizeof lab[k], "MLA, latent %d + RoPE key 64%s", R[k], R[k] == base.kv_lora_rank ? " (as shipped)" : "");
        labels[k] = lab[k];
        colors[k] = COLOR_MLA;
    }
    ModelGeometry gqa;
    geometry_init(&gqa, "gqa", base.n_layers, base.d_model, base.n_heads, 8);
    gqa.head_dim = 128;
    values[4] = kvcache_total_bytes(&gqa, 131072, 1);
    snprintf(lab[4], sizeof lab[4], "for scale: GQA, 8 KV heads of 128 dims");
    labels[4] = lab[4];
    colors[4] = COLOR_GQA;
    BarChart bc = {
        .title = "DeepSeek-V3 at 128K tokens with MLA latents of 1024, 512, 256 and 64",
        .subtitle = "deepseek-v3.json with kv_lora_rank changed (./kvcache --set does the same), one sequence, bf16",
        .xlabel = "KV cache at 131072 tokens (bytes)",
        .labels = labels, .values = values, .colors = colors, .n = 5, .fmt = AXIS_BYTES,
        .note = "61 layers x (kv_lora_rank + 64) x 2 bytes per token; memory only: how well each latent models language is not measured here",
    };
    char path[1024];
    plot_bar_chart(&bc, path_join(path, sizeof path, a->out, "08_latent_sweep"), a->png, a->svg);
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
        naive[i] = 1e3 * mla_decode_seconds_per_token(&g, params, T, 0, 2, 1);
        absorbed[i] = 1e3 * mla_decode_seconds_per_token(&g, params, T, 1, 2, 1);
        printf("    context %6d: naive %8.3f ms, absorbed %8.3f ms (%.1fx)\n", T, naive[i], absorbed[i], naive[i] / absorbed[i]);
    }
    PlotSeries s[2] = {
        {.label = "naive: rebuild every head's K and V from the latent", .x = ctx, .y = naive, .n = N, .color = COLOR_MQA, .markers = 1},
        {.label = "absorbed: W_UK folded into the query, W_UV after the sum", .x = ctx, .y = absorbed, .n = N, .color = COLOR_MLA, .markers = 1},
    };
    char sub[200];
    snprintf(sub, sizeof sub, "one MLA layer, d_model 1024, 16 heads, kv_lora_rank %d, one thread; same cache, same outputs",
             g.kv_lora_rank);
    // the claim carries no measured number: it is the contact sheet's text, which must not change per run
    const char *claim = "Measured on the machine that drew it: the absorbed MLA decode, which folds W_UK into the query "
                        "and applies W_UV after the sum, takes less time per token than rebuilding every head's K and V, "
                        "at every context; both read the same cache and give the same output.";
    char note[200];
    snprintf(note, sizeof note, "measured on the machine that ran ./ch05 (not byte-reproducible)%s",
             naive[N - 1] / absorbed[0] >= PLOT_LOG_MIN_RATIO ? "; log time axis: the times span more than 30x" : "");
    LineChart c = {
        .title = "MLA decode: the absorbed path never builds per-head keys and values",
        .subtitle = sub, .claim = claim, .xlabel = "tokens already in the cache", .ylabel = "time per decoded token (ms)",
        .logx = 1, .logy = 1, .xfmt = AXIS_TOKENS, .series = s, .n_series = 2, .legend_pos = 0,
        .note = note,
    };
    char path[1024];
    plot_line_chart(&c, path_join(path, sizeof path, a->out, "03_decode_time"), a->png, a->svg);
    free(params);
}

// Figure 4: the trained tiny MLA model's attention, in the layer whose heads differ most: every head
// rebuilds its own keys from the one cached latent, so the heads can still attend differently.
static void figure_trained(const CliArgs *a, Trained *t) {
    const ModelGeometry *g = &t->model->g;
    int H = g->n_heads, T = t->n_tokens, n_roles;
    int layer = chapter_most_varied_layer(t, &n_roles);
    float *A = mallocCheck(sizeof(float) * (size_t)H * T * T);
    char roles[8][CHAPTER_ROLE_CHARS];
    chapter_layer_roles(t, layer, A, roles);
    unsigned char *causal = mallocCheck((size_t)(T * T));
    mask_fill(causal, MASK_CAUSAL, T, 0);
    HeatPanel panels[8];
    char titles[8][96];
    for (int h = 0; h < H; h++) {
        snprintf(titles[h], sizeof titles[h], "L%d head %d: %s", layer, h, roles[h]);
        panels[h] = (HeatPanel){.values = A + (size_t)h * T * T, .mask = causal, .rows = T, .cols = T,
                                .title = titles[h], .row_labels = t->labels, .col_labels = t->labels,
                                .xlabel = "key j", .ylabel = h == 0 ? "query i" : NULL};
    }
    char sub[400], cap[160], claim[400], title[160];
    snprintf(sub, sizeof sub, "caches %d + %d numbers per token and layer (MHA at this size: %d); %s", g->kv_lora_rank,
             g->qk_rope_head_dim, H * (g->qk_nope_head_dim + g->v_head_dim), trained_caption(t, cap, sizeof cap));
    snprintf(claim, sizeof claim, "A tiny MLA model that caches only a %d-wide latent and a %d-wide RoPE key per token: "
             "in layer %d its %d heads, whose keys all come from that latent, take %d different roles.",
             g->kv_lora_rank, g->qk_rope_head_dim, layer, H, n_roles);
    if (n_roles > 1)
        snprintf(title, sizeof title, "A tiny trained MLA model: one cached latent, heads that attend in %d ways", n_roles);
    else
        snprintf(title, sizeof title, "A tiny trained MLA model: one cached latent, every head attending alike");
    HeatmapFigure f = {
        .title = title, .subtitle = sub, .claim = claim, .panels = panels, .n_panels = H, .vmin = 0, .vmax = 1,
        .colorbar_label = "attention weight",
        .note = "panel titles: each head's largest mean weight on the first token, the previous token or the token after "
                "an earlier copy (induction); other: none reaches 30%",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "04_trained_attention"), a->png, a->svg);
    free(A);
    free(causal);
}

// Figure 5: the toy version of DeepSeek-V2's ablation: MHA, GQA, MQA and MLA trained on the same recall
// data with the same steps, each from several seeds; mean accuracy (and the seeds' range) against KV
// bytes per token. The accuracies (and steps) are the seeds' from `make experiments`, with a budget short
// enough that no model sits at a 100% ceiling; the shipped recall models (same geometry, trained longer)
// give the cache per token.
static const char *const ABLATION_FILES[4] = {"ch04_recall_g4.safetensors", "ch04_recall_g2.safetensors",
                                              "ch04_recall_g1.safetensors", "ch05_recall_mla.safetensors"};
static const char *const ABLATION_SETTINGS[4] = {"mha", "gqa", "mqa", "mla"};
#define ABLATION_SEEDS CHAPTER_EXPERIMENTS "/ablation.jsonl"

static void figure_ablation(const CliArgs *a, const char *weights_dir) {
    const char *const *files = ABLATION_FILES;
    static const int color[4] = {COLOR_MHA, COLOR_GQA, COLOR_MQA, COLOR_MLA};
    static const char *const kinds[4] = {"MHA", "GQA", "MQA", "MLA"};
    double x[4], y[4], lo[4], hi[4], chance = 0;
    char labels[4][160];
    PlotSeries s[4];
    int n_seeds = 1 << 30, d_model = 0, steps = 0, n_pairs = 1;
    for (int k = 0; k < 4; k++) {
        char path[1024];
        Trained t;
        trained_load(&t, path_join(path, sizeof path, weights_dir, files[k]));
        ModelGeometry g = t.model->g;
        g.dtype_bytes = 4;
        x[k] = kvcache_bytes_per_token(&g);
        SeedStat st = chapter_seeds(ABLATION_SEEDS, ABLATION_SETTINGS[k], "accuracy", -1);
        y[k] = 100.0 * st.mean;
        lo[k] = 100.0 * st.lo;
        hi[k] = 100.0 * st.hi;
        if (st.n < n_seeds) n_seeds = st.n;
        chance = chapter_chance(&t.task);
        n_pairs = t.task.n_pairs;
        d_model = g.d_model;
        steps = (int)chapter_seeds(ABLATION_SEEDS, ABLATION_SETTINGS[k], "steps", -1).mean;
        char b[32];
        int solved = 0;   // seeds that found the lookup (90% or better) rather than staying on the plateau
        for (int i = 0; i < st.n && i < CHAPTER_MAX_SEEDS; i++) solved += st.v[i] >= 0.9;
        snprintf(labels[k], sizeof labels[k], "%s: %s/token, mean %.0f%%, %d of %d seeds solve it", kinds[k],
                 fmt_bytes(b, sizeof b, x[k]), y[k], solved, st.n);
        s[k] = (PlotSeries){.label = labels[k], .x = &x[k], .y = &y[k], .n = 1, .color = color[k], .markers = 1,
                            .ylo = &lo[k], .yhi = &hi[k], .error_bars = 1};
        printf("  %s\n", labels[k]);
        trained_free(&t);
    }
    // the ordering that came out, best mean first
    int order[4] = {0, 1, 2, 3};
    for (int i = 1; i < 4; i++)
        for (int j = i; j > 0 && y[order[j]] > y[order[j - 1]]; j--) {
            int tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    char chance_label[64], shortcut_label[96], claim[400], title[160], sub[300], note[300];
    snprintf(chance_label, sizeof chance_label, "chance (1/%.0f)", 1.0 / chance);
    snprintf(shortcut_label, sizeof shortcut_label, "1/%d: any value of the sample", n_pairs);
    PlotRef refs[2] = {{.label = chance_label, .value = 100.0 * chance}, {.label = shortcut_label, .value = 100.0 / n_pairs}};
    snprintf(title, sizeof title, "Toy ablation: recall accuracy against KV cache per token, %d seeds each", n_seeds);
    snprintf(sub, sizeof sub, "2 layers, 4 query heads, d_model %d, same recall data and %d steps; dot: mean, whisker: "
             "min..max of the seeds; fp32 cache", d_model, steps);
    snprintf(claim, sizeof claim, "Mean held-out recall accuracy over %d seeds, best first: %s %.0f%%, %s %.0f%%, "
             "%s %.0f%%, %s %.0f%% (chance %.1f%%).", n_seeds, kinds[order[0]], y[order[0]], kinds[order[1]],
             y[order[1]], kinds[order[2]], y[order[2]], kinds[order[3]], y[order[3]], 100.0 * chance);
    snprintf(note, sizeof note, "solve: 90%% or better. Means here: %s > %s > %s > %s; each run finds the lookup or stays "
             "on the plateau, so they count lucky seeds. DeepSeek-V2 reports MLA > MHA > GQA > MQA at scale",
             kinds[order[0]], kinds[order[1]], kinds[order[2]], kinds[order[3]]);
    LineChart c = {
        .title = title, .subtitle = sub, .claim = claim,
        .xlabel = "KV cache per token, all layers (bytes)", .ylabel = "held-out recall accuracy (%)",
        .xfmt = AXIS_BYTES, .xmin = 0, .xmax = 1.125 * x[0], .ymin = 0, .ymax = 100, .series = s, .n_series = 4,
        .refs = refs, .n_refs = 2, .legend_pos = PLOT_LEGEND_BELOW, .note = note,
    };
    char path[1024];
    plot_line_chart(&c, path_join(path, sizeof path, a->out, "05_ablation_accuracy_vs_cache"), a->png, a->svg);
}

// Figure 6: MLA for one token, to scale, from a real config (article figure 13): the query's low-rank
// path (x -> c_q -> per-head q), the cached latent c_kv and the one decoupled RoPE key, and the per-head
// keys and values rebuilt from the latent.
#define ROPE_MARK COLOR_MQA   // the dims RoPE rotates, in every MLA diagram

static void figure_schematic(const CliArgs *a, const ModelGeometry *g) {
    int H = g->n_heads, dn = g->qk_nope_head_dim, dr = g->qk_rope_head_dim, dv = g->v_head_dim;
    int dc = g->kv_lora_rank, dq = g->q_lora_rank, d = g->d_model;
    char sub[240], claim[500], t[16][96];
    snprintf(sub, sizeof sub, "%s from its config.json: d_model %d, %d heads, q_lora_rank %d, kv_lora_rank %d, RoPE key %d",
             g->name, d, H, dq, dc, dr);
    snprintf(claim, sizeof claim, "%s caches per token and layer only the latent c_kv (%d) and one RoPE key shared by all "
             "heads (%d): %d numbers, where its %d heads' own keys and values would be %d. Keys and values are rebuilt "
             "from the latent by W_UK and W_UV; queries take a low-rank path of their own (%d).", g->name, dc, dr, dc + dr,
             H, H * (dn + dr + dv), dq);
    Schematic *s = schem_new("Multi-head latent attention for one token, to scale", sub, claim);
    snprintf(t[0], sizeof t[0], "%d", d);
    int x = schem_tensor(s, 0, 0, "x", t[0], d, 1, COLOR_OTHER, 0);
    schem_span(s, x, 3);
    snprintf(t[1], sizeof t[1], "%d -> %d", d, dq);
    snprintf(t[2], sizeof t[2], "%d -> %d", d, dc);
    snprintf(t[3], sizeof t[3], "%d -> %d, then RoPE", d, dr);
    int wdq = schem_op(s, 1, 0, "W_DQ", t[1]), wdkv = schem_op(s, 1, 1, "W_DKV", t[2]), wkr = schem_op(s, 1, 2, "W_KR", t[3]);
    snprintf(t[4], sizeof t[4], "%d, normalised", dq);
    snprintf(t[5], sizeof t[5], "%d", dc);
    snprintf(t[6], sizeof t[6], "%d, one for all heads", dr);
    int cq = schem_tensor(s, 2, 0, "c_q", t[4], dq, 1, COLOR_MLA, 0);
    int ckv = schem_tensor(s, 2, 1, "c_kv", t[5], dc, 1, COLOR_MLA, SCHEM_CACHED);
    int kr = schem_tensor(s, 2, 2, "k_rope", t[6], dr, 1, ROPE_MARK, SCHEM_CACHED);
    snprintf(t[7], sizeof t[7], "%d -> %d x (%d + %d)", dq, H, dn, dr);
    snprintf(t[8], sizeof t[8], "%d -> %d x %d", dc, H, dn);
    snprintf(t[9], sizeof t[9], "%d -> %d x %d", dc, H, dv);
    int wuq = schem_op(s, 3, 0, "W_UQ", t[7]), wuk = schem_op(s, 3, 1, "W_UK", t[8]), wuv = schem_op(s, 3, 1, "W_UV", t[9]);
    snprintf(t[10], sizeof t[10], "%d heads x (%d + %d)", H, dn, dr);
    snprintf(t[11], sizeof t[11], "%d heads x (%d + the shared %d)", H, dn, dr);
    snprintf(t[12], sizeof t[12], "%d heads x %d", H, dv);
    int q = schem_tensor(s, 4, 0, "q", t[10], (long)H * (dn + dr), H, COLOR_MLA, SCHEM_HIGHLIGHT_FIRST);
    int k = schem_tensor(s, 4, 1, "k", t[11], (long)H * (dn + dr), H, COLOR_MLA, SCHEM_HIGHLIGHT_FIRST);
    int v = schem_tensor(s, 4, 1, "v", t[12], (long)H * dv, H, COLOR_MLA, SCHEM_HIGHLIGHT_FIRST);
    schem_mark(s, q, dn, dr, 1, ROPE_MARK, "RoPE (position) dims");
    schem_mark(s, k, dn, dr, 1, ROPE_MARK, "RoPE (position) dims");
    snprintf(t[13], sizeof t[13], "head h: softmax(q_h . k_h / sqrt(%d)) v_h over the T cached tokens", dn + dr);
    int at = schem_op(s, 5, 0, "attention, head by head", t[13]);
    schem_span(s, at, 3);
    snprintf(t[14], sizeof t[14], "%d heads x %d", H, dv);
    int o = schem_tensor(s, 6, 0, "o", t[14], (long)H * dv, H, COLOR_MLA, SCHEM_HIGHLIGHT_FIRST);
    schem_span(s, o, 3);
    snprintf(t[15], sizeof t[15], "%d -> %d", H * dv, d);
    int wo = schem_op(s, 7, 0, "W_O", t[15]);
    schem_span(s, wo, 3);
    int out = schem_tensor(s, 8, 0, "output", t[0], d, 1, COLOR_OTHER, 0);
    schem_span(s, out, 3);
    schem_arrow(s, x, -1, wdq, -1, NULL);
    schem_arrow(s, x, -1, wdkv, -1, NULL);
    schem_arrow(s, x, -1, wkr, -1, NULL);
    schem_arrow(s, wdq, -1, cq, -1, NULL);
    schem_arrow(s, wdkv, -1, ckv, -1, NULL);
    schem_arrow(s, wkr, -1, kr, -1, NULL);
    schem_arrow(s, cq, -1, wuq, -1, NULL);
    schem_arrow(s, ckv, -1, wuk, -1, NULL);
    schem_arrow(s, ckv, -1, wuv, -1, NULL);
    schem_arrow(s, wuq, -1, q, -1, NULL);
    schem_arrow(s, wuk, -1, k, -1, NULL);
    schem_arrow(s, kr, -1, k, -1, "copied into every head");
    schem_arrow(s, wuv, -1, v, -1, NULL);
    schem_arrow(s, q, 0, at, -1, "head 0");
    schem_arrow(s, k, 0, at, -1, NULL);
    schem_arrow(s, v, 0, at, -1, NULL);
    schem_arrow(s, at, -1, o, 0, NULL);
    schem_arrow(s, o, -1, wo, -1, NULL);
    schem_arrow(s, wo, -1, out, -1, NULL);
    schem_note(s, "the naive path: per-head keys and values rebuilt from the cached latent; figure 07 does the same decode without building them");
    char path[1024];
    schem_write(s, path_join(path, sizeof path, a->out, "06_mla_schematic"), a->png, a->svg);
    schem_free(s);
}

// Figure 7: the absorbed decode (the same numbers in another order): W_UK folds into the query, so each
// head scores the cached latent directly, and W_UV is applied after the weighted sum of latents.
static void figure_absorbed(const CliArgs *a, const ModelGeometry *g) {
    int H = g->n_heads, dn = g->qk_nope_head_dim, dr = g->qk_rope_head_dim, dv = g->v_head_dim, dc = g->kv_lora_rank;
    char sub[240], claim[500], t[12][112];
    snprintf(sub, sizeof sub, "%s decoding one token: the same cache and output as figure 06, per-head K and V never built",
             g->name);
    snprintf(claim, sizeof claim, "At decode %s never rebuilds per-head keys and values: W_UK turns each head's query into "
             "a %d-wide vector that scores the cached latents directly, the weighted sum of latents stays %d wide, and "
             "W_UV maps it to the head's %d outputs afterwards.", g->name, dc, dc, dv);
    Schematic *s = schem_new("MLA at decode: absorb W_UK into the query, apply W_UV after the sum", sub, claim);
    snprintf(t[0], sizeof t[0], "%d heads x (%d + %d)", H, dn, dr);
    int q = schem_tensor(s, 0, 0, "q", t[0], (long)H * (dn + dr), H, COLOR_MLA, SCHEM_HIGHLIGHT_FIRST);
    schem_mark(s, q, dn, dr, 1, ROPE_MARK, "RoPE (position) dims");
    snprintf(t[1], sizeof t[1], "%d x T", dc);
    snprintf(t[2], sizeof t[2], "%d x T", dr);
    int ckv = schem_tensor(s, 0, 1, "cache: c_kv", t[1], dc, 1, COLOR_MLA, SCHEM_CACHED);
    int kr = schem_tensor(s, 0, 1, "k_rope", t[2], dr, 1, ROPE_MARK, SCHEM_CACHED);
    snprintf(t[3], sizeof t[3], "q~_h = W_UK[h]^T q_h (first %d dims -> %d)", dn, dc);
    int absorb = schem_op(s, 1, 0, "absorb W_UK", t[3]);
    snprintf(t[4], sizeof t[4], "%d heads x (%d + %d)", H, dc, dr);
    int qa = schem_tensor(s, 2, 0, "q~", t[4], (long)H * (dc + dr), H, COLOR_MLA, SCHEM_HIGHLIGHT_FIRST);
    schem_mark(s, qa, dc, dr, 1, ROPE_MARK, "RoPE (position) dims");
    snprintf(t[5], sizeof t[5], "p_h = softmax over t of (q~_h . c_kv_t + q_rope_h . k_rope_t) / sqrt(%d)", dn + dr);
    int sc = schem_op(s, 3, 0, "score the cache itself", t[5]);
    schem_span(s, sc, 2);
    snprintf(t[6], sizeof t[6], "u_h = sum over t of p_h,t c_kv_t");
    int sum = schem_op(s, 4, 0, "weighted sum of latents", t[6]);
    schem_span(s, sum, 2);
    snprintf(t[7], sizeof t[7], "%d heads x %d", H, dc);
    int u = schem_tensor(s, 5, 0, "u", t[7], (long)H * dc, H, COLOR_MLA, SCHEM_HIGHLIGHT_FIRST);
    snprintf(t[8], sizeof t[8], "o_h = W_UV[h] u_h (%d -> %d)", dc, dv);
    int wuv = schem_op(s, 6, 0, "W_UV after the sum", t[8]);
    snprintf(t[9], sizeof t[9], "%d heads x %d, then W_O as before", H, dv);
    int o = schem_tensor(s, 7, 0, "o", t[9], (long)H * dv, H, COLOR_MLA, SCHEM_HIGHLIGHT_FIRST);
    schem_arrow(s, q, 0, absorb, -1, "head 0");
    schem_arrow(s, absorb, -1, qa, 0, NULL);
    schem_arrow(s, qa, 0, sc, -1, NULL);
    schem_arrow(s, ckv, -1, sc, -1, NULL);
    schem_arrow(s, kr, -1, sc, -1, NULL);
    schem_arrow(s, sc, -1, sum, -1, NULL);
    schem_arrow(s, sum, -1, u, 0, NULL);
    schem_arrow(s, u, 0, wuv, -1, NULL);
    schem_arrow(s, wuv, -1, o, 0, NULL);
    schem_note(s, "the same scores and output as the naive path (a test holds them equal); it reads only the cache, at the "
                  "price of a wider query per head");
    char path[1024];
    schem_write(s, path_join(path, sizeof path, a->out, "07_mla_absorbed_schematic"), a->png, a->svg);
    schem_free(s);
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
        .default_weights = "data/weights/ch05_topics_mla.safetensors",
        .opts = opts, .n_opts = 3,
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    // every input first: a bad one fails before anything is written
    chapter_check_configs(configs, "deepseek-v3.json", "kimi-k2.json", NULL);
    char path[1024];
    for (int k = 0; k < 4; k++) {
        trained_check(path_join(path, sizeof path, weights_dir, ABLATION_FILES[k]), k < 3 ? "gqa" : "mla", TASK_RECALL,
                      "the MHA/GQA/MQA/MLA ablation");
        chapter_seeds(ABLATION_SEEDS, ABLATION_SETTINGS[k], "accuracy", -1);
    }
    Trained t;
    trained_load(&t, a.weights);
    trained_require(&t, "mla|dsa", -1, "the trained-MLA figure");
    if (t.model->g.n_heads > 8) die_user("%s: the figure draws at most 8 heads, the model has %d", t.path, t.model->g.n_heads);
    ensure_out_dir(a.out);
    Rng rng;
    rng_seed(&rng, a.seed);
    figure_per_token(&a);
    figure_memory(&a, configs);
    figure_latent_sweep(&a, configs);
    if (!no_timing) figure_decode_time(&a, &rng);
    figure_trained(&a, &t);
    trained_free(&t);
    figure_ablation(&a, weights_dir);
    ModelGeometry v3;
    chapter_config(&v3, configs, "deepseek-v3.json", "DeepSeek-V3");
    if (v3.attn != ATTN_MLA) die_user("%s/deepseek-v3.json: not an MLA config (kv_lora_rank missing)", configs);
    figure_schematic(&a, &v3);
    figure_absorbed(&a, &v3);
    printf("ch05: wrote figures to %s/\n", a.out);
    free(a.pos);
    return 0;
}
