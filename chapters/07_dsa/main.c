// Chapter 7: DeepSeek Sparse Attention (DeepSeek-V3.2).
//
// Article: the section on DeepSeek-V3.2's sparse attention. MLA (chapter 5) shrank what each token
// costs to CACHE; DSA shrinks what each new token costs to COMPUTE. A tiny "lightning indexer" (a few
// ReLU heads over one small key per token) scores every past token cheaply, a selector keeps the
// top-k, and the expensive MLA attention runs over those k tokens only. The sparsity is learned: the
// indexer is trained to imitate the dense attention (a KL loss), first while the model still attends
// densely, then with the mask on. It is not a fixed pattern like a sliding window, and the cache does
// not shrink (it even grows by the indexer key): the win is decode time at long context.
//
// Figures (figures/ch07/):
//   01_indexer_scores           the trained indexer's scores, its softmax, and the dense attention it imitates
//   02_topk_vs_window           the learned top-k mask next to a sliding window of the same budget
//   03_sparse_attention_recall  the trained model's sparse attention on a recall example, every head
//   04_kv_memory                cache bytes vs context: DeepSeek-V3.2 (MLA + indexer key), V3, MHA
//   05_decode_time              measured decode time per token vs context, dense MLA vs DSA
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "05_mla/mla.h"
#include "07_dsa/dsa.h"
#include "check.h"
#include "cli.h"
#include "heatmap.h"
#include "hfconfig.h"
#include "kvcache.h"
#include "mathx.h"
#include "model.h"
#include "plot.h"
#include "registry.h"
#include "rng.h"
#include "tasks.h"
#include "train.h"

#define DEFAULT_WEIGHTS "data/weights/ch07_dsa_recall.safetensors"
#define EVAL_SEED 0x7E57C07ull
#define EVAL_SAMPLES 256

// The trained model, its task, its example sample, and what it does on it in each phase.
typedef struct {
    Model *m;
    ModelInfo info;
    Task task;
    int T, L, H, topk;
    int *tok, *tgt;
    const char **labels;        // (T) token strings
    double acc[3];              // held-out accuracy per DsaPhase (dense, sparse, window)
    int ex_correct, ex_scored;  // the example, sparse phase
} Trained;

// Per-layer maps of one forward of the example: P (L,H,T,T), I (L,T,T), att (L,T,T).
typedef struct {
    float *P, *I;
    unsigned char *att;
} Maps;

static void maps_of(Maps *mp, Trained *tr, DsaPhase phase) {
    int T = tr->T, L = tr->L, H = tr->H;
    mp->P = mallocCheck(sizeof(float) * (size_t)L * H * T * T);
    mp->I = mallocCheck(sizeof(float) * (size_t)L * T * T);
    mp->att = mallocCheck((size_t)L * T * T);
    dsa_set_phase(phase);
    model_forward(tr->m, tr->tok, tr->tgt, 1, T);
    for (int l = 0; l < L; l++) {
        model_mixing_matrix(tr->m, l, mp->P + (size_t)l * H * T * T);
        dsa_index_scores(&tr->m->mixers[l], mp->I + (size_t)l * T * T, tr->m->la[l].mix_act, 1, T);
        dsa_attended(&tr->m->mixers[l], mp->att + (size_t)l * T * T, tr->m->la[l].mix_act, 1, T);
    }
    if (phase == DSA_SPARSE) model_count_correct(tr->m, &tr->ex_correct, &tr->ex_scored);
    dsa_set_phase(DSA_SPARSE);
}

static void maps_free(Maps *mp) {
    free(mp->P);
    free(mp->I);
    free(mp->att);
}

// mean (T,T) over the H heads of P (H,T,T): the L1-normalised head sum the indexer is trained toward
static void mean_heads(float *mean, const float *P, int H, int T) {
    for (int i = 0; i < T * T; i++) {
        float s = 0;
        for (int h = 0; h < H; h++) s += P[(size_t)h * T * T + i];
        mean[i] = s / H;
    }
}

static void load_trained(Trained *tr, const char *path) {
    char err[1024];
    memset(tr, 0, sizeof *tr);
    tr->m = train_load_model(path, mixer_by_name, &tr->info, &tr->task, err, sizeof err);
    if (!tr->m) die_user("%s (run `make weights` to train the chapter's model)", err);
    const ModelGeometry *g = &tr->m->g;
    for (int l = 0; l < g->n_layers; l++)
        if (tr->m->mixers[l].ops != &dsa_mixer) die_user("%s: layer %d is '%s', this chapter draws DSA models", path, l,
                                                        tr->m->mixers[l].ops->name);
    if (tr->task.kind != TASK_RECALL)
        die_user("%s: trained on %s, but this chapter's figures measure recall", path, tr->task.name);
    tr->T = tr->task.seq_len;
    tr->L = g->n_layers;
    tr->H = g->n_heads;
    tr->topk = g->index_topk;
    if (tr->L * tr->H > 16) die_user("%s: %d layers x %d heads is more panels than the figures draw (16)", path, tr->L, tr->H);
    tr->tok = mallocCheck(sizeof(int) * tr->T);
    tr->tgt = mallocCheck(sizeof(int) * tr->T);
    task_example(&tr->task, tr->tok, tr->tgt);
    tr->labels = mallocCheck(sizeof(char *) * tr->T);
    for (int i = 0; i < tr->T; i++) tr->labels[i] = task_token_str(&tr->task, tr->tok[i]);
    for (int ph = 0; ph < 3; ph++) {
        double loss;
        dsa_set_phase((DsaPhase)ph);
        train_evaluate(tr->m, &tr->task, EVAL_SEED, EVAL_SAMPLES, &loss, &tr->acc[ph]);
    }
    dsa_set_phase(DSA_SPARSE);
}

static void trained_free(Trained *tr) {
    free(tr->tok);
    free(tr->tgt);
    free(tr->labels);
    model_info_free(&tr->info);
    task_free(&tr->task);
    model_free(tr->m);
}

// ---- figure 1: what the indexer learned ---------------------------------------------------------------

static void figure_indexer(const CliArgs *a, Trained *tr) {
    int T = tr->T, H = tr->H, l = tr->L - 1;
    const ModelGeometry *g = &tr->m->g;
    Maps dense;
    maps_of(&dense, tr, DSA_DENSE);   // the indexer's scores do not depend on the phase; P does
    const float *I = dense.I + (size_t)l * T * T;
    float *Q = mallocCheck(sizeof(float) * T * T), *target = mallocCheck(sizeof(float) * T * T);
    unsigned char *causal = mallocCheck((size_t)T * T);
    mask_fill(causal, MASK_CAUSAL, T, 0);
    mean_heads(target, dense.P + (size_t)l * H * T * T, H, T);
    float vmax = 0;
    double kl = 0;
    for (int i = 0; i < T; i++) {
        softmax_row(Q + i * T, I + i * T, causal + i * T, T);
        for (int j = 0; j <= i; j++) {
            vmax = fmaxf(vmax, fabsf(I[i * T + j]));
            double p = target[i * T + j], q = Q[i * T + j];
            if (p > 0) kl += p * (log(p) - log(q > 1e-30 ? q : 1e-30));
        }
    }
    kl /= T;
    HeatPanel panels[3] = {
        {.values = I, .mask = causal, .rows = T, .cols = T, .title = "indexer scores I(t,s)", .row_labels = tr->labels,
         .col_labels = tr->labels, .xlabel = "key s", .ylabel = "query t", .diverging = 1, .vmin = -vmax, .vmax = vmax,
         .op_after = "softmax"},
        {.values = Q, .mask = causal, .rows = T, .cols = T, .title = "softmax of the scores over s <= t",
         .row_labels = tr->labels, .col_labels = tr->labels, .xlabel = "key s", .vmin = 0, .vmax = 1,
         .op_after = "KL"},
        {.values = target, .mask = causal, .rows = T, .cols = T, .title = "dense MLA attention, mean of heads",
         .row_labels = tr->labels, .col_labels = tr->labels, .xlabel = "key s", .vmin = 0, .vmax = 1},
    };
    char sub[700], note[400];
    snprintf(sub, sizeof sub,
             "layer %d of the trained model on a recall example. I(t,s) = sum over %d indexer heads of w(t,h) * ReLU(q(t,h) . k(s)), "
             "with ONE %d-wide key per token. The indexer is trained to make softmax(I) match the model's attention "
             "(summed over the %d heads and normalised): here KL = %.3f nats per query, against the dense attention.",
             l, g->index_n_heads, g->index_head_dim, H, kl);
    snprintf(note, sizeof note, "Hatched: future keys (causal). Scores are drawn on a diverging scale: I can be negative, "
             "because the head weights w(t,h) are signed.");
    HeatmapFigure f = {
        .title = "The lightning indexer learns where the attention goes",
        .subtitle = sub, .panels = panels, .n_panels = 3, .show_values = 0, .colorbar_per_panel = 1,
        .colorbar_label = "value", .note = note,
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "01_indexer_scores"), a->png, a->svg);
    printf("  indexer (layer %d) vs dense attention: KL %.3f nats per query\n", l, kl);
    free(Q); free(target); free(causal);
    maps_free(&dense);
}

// ---- figure 2: learned top-k vs a sliding window of the same budget -------------------------------------

static void figure_topk_vs_window(const CliArgs *a, Trained *tr) {
    int T = tr->T, H = tr->H, l = tr->L - 1, k = tr->topk;
    Maps sparse, window;
    maps_of(&sparse, tr, DSA_SPARSE);
    maps_of(&window, tr, DSA_WINDOW);
    float *ms = mallocCheck(sizeof(float) * T * T), *mw = mallocCheck(sizeof(float) * T * T);
    mean_heads(ms, sparse.P + (size_t)l * H * T * T, H, T);
    mean_heads(mw, window.P + (size_t)l * H * T * T, H, T);
    char t1[96], t2[96];
    snprintf(t1, sizeof t1, "DSA: the indexer's top-%d (%.1f%% correct)", k, 100 * tr->acc[DSA_SPARSE]);
    snprintf(t2, sizeof t2, "sliding window of the last %d (%.1f%% correct)", k, 100 * tr->acc[DSA_WINDOW]);
    HeatPanel panels[2] = {
        {.values = ms, .mask = sparse.att + (size_t)l * T * T, .rows = T, .cols = T, .title = t1,
         .row_labels = tr->labels, .col_labels = tr->labels, .xlabel = "key s", .ylabel = "query t"},
        {.values = mw, .mask = window.att + (size_t)l * T * T, .rows = T, .cols = T, .title = t2,
         .row_labels = tr->labels, .col_labels = tr->labels, .xlabel = "key s"},
    };
    char sub[600];
    snprintf(sub, sizeof sub,
             "the same trained weights, layer %d, mean attention over its %d heads; each query attends to at most %d keys "
             "in both panels (hatched: not attended). The learned set follows the content (a queried key's pair, far "
             "back); the window only sees the recent tokens. Held-out accuracy on %d recall samples: top-%d %.1f%%, "
             "window %.1f%%, dense %.1f%%.",
             l, H, k, EVAL_SAMPLES, k, 100 * tr->acc[DSA_SPARSE], 100 * tr->acc[DSA_WINDOW], 100 * tr->acc[DSA_DENSE]);
    HeatmapFigure f = {
        .title = "Learned, not fixed, sparsity: the same budget of keys, chosen by the indexer or by position",
        .subtitle = sub, .panels = panels, .n_panels = 2, .vmin = 0, .vmax = 1, .show_values = 0,
        .colorbar_label = "attention weight (mean of heads)",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "02_topk_vs_window"), a->png, a->svg);
    printf("  held-out accuracy: top-%d %.1f%%, window of %d %.1f%%, dense %.1f%%\n", k, 100 * tr->acc[DSA_SPARSE], k,
           100 * tr->acc[DSA_WINDOW], 100 * tr->acc[DSA_DENSE]);
    free(ms); free(mw);
    maps_free(&sparse);
    maps_free(&window);
}

// ---- figure 3: the trained model's sparse attention, every layer and head ------------------------------

static void figure_sparse_attention(const CliArgs *a, Trained *tr) {
    int T = tr->T, H = tr->H, L = tr->L;
    const ModelGeometry *g = &tr->m->g;
    Maps sp;
    maps_of(&sp, tr, DSA_SPARSE);
    HeatPanel panels[16];
    char titles[16][48];
    for (int l = 0; l < L; l++)
        for (int h = 0; h < H; h++) {
            int p = l * H + h;
            snprintf(titles[p], sizeof titles[p], "layer %d, head %d", l, h);
            panels[p] = (HeatPanel){.values = sp.P + ((size_t)l * H + h) * T * T, .mask = sp.att + (size_t)l * T * T,
                                    .rows = T, .cols = T, .title = titles[p], .row_labels = tr->labels,
                                    .col_labels = tr->labels, .xlabel = "key j", .ylabel = h == 0 ? "query i" : NULL};
        }
    char sub[700];
    snprintf(sub, sizeof sub,
             "a %d-layer DSA model (MLA: d_model %d, %d heads, latent %d; indexer: %d heads x %d, top-%d) on recall: "
             "after ':' each key must be answered with the value it was paired with. Every query attends to at most %d "
             "keys (hatched: not selected, weight exactly 0); all heads of a layer share the selection. "
             "This example: %d of %d answers right; held-out accuracy %.1f%% (training run: %.1f%%).",
             L, g->d_model, H, g->kv_lora_rank, g->index_n_heads, g->index_head_dim, tr->topk, tr->topk,
             tr->ex_correct, tr->ex_scored, 100 * tr->acc[DSA_SPARSE], 100 * tr->info.accuracy);
    HeatmapFigure f = {
        .title = "DeepSeek Sparse Attention on a recall example: k keys per query, chosen by the indexer",
        .subtitle = sub, .panels = panels, .n_panels = L * H, .panels_per_row = H, .vmin = 0, .vmax = 1,
        .show_values = 0, .colorbar_label = "attention weight",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "03_sparse_attention_recall"), a->png, a->svg);
    printf("  example: %d of %d answers right (sparse, top-%d)\n", tr->ex_correct, tr->ex_scored, tr->topk);
    maps_free(&sp);
}

// ---- figure 4: cache memory of DeepSeek-V3.2 vs V3 vs an MHA equivalent ---------------------------------

// DeepSeek-V3.2 and V3 from their config.json (exits with one line naming a bad one).
static void load_configs(ModelGeometry *v32, ModelGeometry *v3, const char *configs) {
    char path[1024], err[512];
    if (hfconfig_load(v32, path_join(path, sizeof path, configs, "deepseek-v3.2.json"), err, sizeof err) != 0)
        die_user("%s", err);
    if (hfconfig_load(v3, path_join(path, sizeof path, configs, "deepseek-v3.json"), err, sizeof err) != 0)
        die_user("%s", err);
    if (v32->index_n_heads <= 0) die_user("%s/deepseek-v3.2.json: no indexer (index_n_heads) in the config", configs);
}

static void figure_kv_memory(const CliArgs *a, const char *configs) {
    enum { NPTS = 8 };
    ModelGeometry v32, v3, mha;
    char path[1024];
    load_configs(&v32, &v3, configs);
    v32.dtype_bytes = v3.dtype_bytes = 2;   // count everything in bf16
    // the same model as plain MHA: every head caches its own K and V (v_head_dim wide)
    mha = v3;
    mha.attn = ATTN_GQA;
    mha.n_kv_heads = v3.n_heads;
    mha.head_dim = v3.v_head_dim;
    mha.index_n_heads = mha.index_head_dim = mha.index_topk = 0;
    const ModelGeometry *gs[3] = {&v32, &v3, &mha};
    double xs[NPTS], ys[3][NPTS];
    char labels[3][200], b1[32], b2[32];
    for (int p = 0; p < NPTS; p++) xs[p] = 1024.0 * pow(2.0, p);
    for (int s = 0; s < 3; s++)
        for (int p = 0; p < NPTS; p++) ys[s][p] = kvcache_total_bytes(gs[s], (long)xs[p], 1);
    snprintf(labels[0], sizeof labels[0], "DeepSeek-V3.2 (MLA %d + %d + indexer key %d per layer): %s/token",
             v32.kv_lora_rank, v32.qk_rope_head_dim, v32.index_head_dim, fmt_bytes(b1, sizeof b1, kvcache_bytes_per_token(&v32)));
    snprintf(labels[1], sizeof labels[1], "DeepSeek-V3 (MLA %d + %d per layer): %s/token", v3.kv_lora_rank,
             v3.qk_rope_head_dim, fmt_bytes(b1, sizeof b1, kvcache_bytes_per_token(&v3)));
    snprintf(labels[2], sizeof labels[2], "the same model as MHA (2 x %d heads x %d dims per layer): %s/token", mha.n_heads,
             mha.head_dim, fmt_bytes(b1, sizeof b1, kvcache_bytes_per_token(&mha)));
    PlotSeries series[3] = {
        {.label = labels[0], .x = xs, .y = ys[0], .n = NPTS, .color = COLOR_DSA, .markers = 1},
        {.label = labels[1], .x = xs, .y = ys[1], .n = NPTS, .color = COLOR_MLA, .markers = 1},
        {.label = labels[2], .x = xs, .y = ys[2], .n = NPTS, .color = COLOR_MHA, .dashed = 1},
    };
    char sub[400];
    snprintf(sub, sizeof sub, "one sequence, %d layers, bf16. DSA keeps MLA's cache and adds one %d-wide indexer key per "
             "token and layer (+%.0f%%): it saves compute, not memory. At 128K: V3.2 %s, V3 %s.",
             v32.n_layers, v32.index_head_dim, 100.0 * (kvcache_bytes_per_token(&v32) / kvcache_bytes_per_token(&v3) - 1),
             fmt_bytes(b1, sizeof b1, ys[0][NPTS - 1]), fmt_bytes(b2, sizeof b2, ys[1][NPTS - 1]));
    LineChart c = {
        .title = "KV cache vs context: DeepSeek-V3.2's sparse attention costs a little more memory than V3",
        .subtitle = sub, .xlabel = "context length (tokens, log scale)", .ylabel = "KV cache (bytes, log scale)",
        .logx = 1, .logy = 1, .xfmt = AXIS_TOKENS, .yfmt = AXIS_BYTES, .series = series, .n_series = 3,
        .legend_pos = 0,
        .note = "from data/configs/deepseek-v3.2.json and deepseek-v3.json (common/hfconfig, common/kvcache). "
                "DeepSeek's reference code stores the indexer key in fp8 with a scale per 128 values; counted here "
                "in bf16 like the rest.",
    };
    plot_line_chart(&c, path_join(path, sizeof path, a->out, "04_kv_memory"), a->png, a->svg);
    printf("  KV per token: V3.2 %s, V3 %s, MHA equivalent %s\n", fmt_bytes(b1, sizeof b1, kvcache_bytes_per_token(&v32)),
           fmt_bytes(b2, sizeof b2, kvcache_bytes_per_token(&v3)), fmt_bytes(path, sizeof path, kvcache_bytes_per_token(&mha)));
}

// ---- figure 5: measured decode time per token, dense MLA vs DSA -----------------------------------------

static void figure_decode_time(const CliArgs *a, int max_context, int reps) {
    enum { MAXP = 16 };
    // DeepSeek-V3.2's per-head widths (latent 512, RoPE key 64, indexer key 128, top-2048) with fewer
    // heads (8 attention heads, 4 indexer heads): the indexer reads 4 x 128 numbers per cached token, MLA
    // 8 x 576, about the ratio of the real model (64 x 128 vs 128 x 576).
    ModelGeometry g;
    dsa_geometry_tiny(&g, 1, 1024, 8, 4, 128, 2048);
    g.dtype_bytes = 4;
    g.max_seq_len = max_context + 1;
    Mixer m = {.ops = &dsa_mixer, .g = &g, .layer = 0};
    float *params = mallocCheck(sizeof(float) * mixer_n_params(&dsa_mixer, &g, 0));
    Rng rng;
    rng_seed(&rng, a->seed);
    dsa_mixer.init(&m, params, &rng);
    double xs[MAXP], t_mla[MAXP], t_dsa[MAXP];
    int n = 0;
    printf("  %10s %14s %14s %8s\n", "context", "MLA ms/token", "DSA ms/token", "speedup");
    for (long ctx = 1024; ctx <= max_context && n < MAXP; ctx *= 2, n++) {
        xs[n] = (double)ctx;
        t_mla[n] = 1e3 * mla_decode_seconds_per_token(&g, params, (int)ctx, 1, reps);
        t_dsa[n] = 1e3 * dsa_decode_seconds_per_token(&g, params, (int)ctx, reps);
        printf("  %10ld %14.3f %14.3f %7.1fx\n", ctx, t_mla[n], t_dsa[n], t_mla[n] / t_dsa[n]);
    }
    double kx[2] = {g.index_topk, g.index_topk}, ky[2] = {t_dsa[0] * 0.5, t_mla[n - 1] * 1.5};
    char l1[160], l2[200], l3[80], sub[500];
    snprintf(l1, sizeof l1, "dense MLA (absorbed): reads all T cached entries, %d heads x %d", g.n_heads,
             g.kv_lora_rank + g.qk_rope_head_dim);
    snprintf(l2, sizeof l2, "DSA: indexer over all T (%d heads x %d), MLA over the top-%d only", g.index_n_heads,
             g.index_head_dim, g.index_topk);
    snprintf(l3, sizeof l3, "top-k = %d: below it DSA attends to everything", g.index_topk);
    PlotSeries series[3] = {
        {.label = l1, .x = xs, .y = t_mla, .n = n, .color = COLOR_MLA, .markers = 1},
        {.label = l2, .x = xs, .y = t_dsa, .n = n, .color = COLOR_DSA, .markers = 1},
        {.label = l3, .x = kx, .y = ky, .n = 2, .color = COLOR_OTHER, .dashed = 1},
    };
    char last[32];
    plot_format_tick(last, sizeof last, xs[n - 1], AXIS_TOKENS);
    snprintf(sub, sizeof sub, "one layer, d_model %d, fp32, one thread, %d timed steps per point. At %s tokens DSA "
             "takes %.2f ms per token and dense MLA %.2f ms (%.1fx faster): the attention stops growing at k keys and "
             "only the cheap indexer still grows with T.",
             g.d_model, reps, last, t_dsa[n - 1], t_mla[n - 1], t_mla[n - 1] / t_dsa[n - 1]);
    LineChart c = {
        .title = "Decode time per token: DSA pays a small indexer per token, then attends to top-k only",
        .subtitle = sub, .xlabel = "context length (tokens, log scale)", .ylabel = "decode time per token (ms, log scale)",
        .logx = 1, .logy = 1, .xfmt = AXIS_TOKENS, .yfmt = AXIS_PLAIN, .series = series, .n_series = 3,
        .legend_pos = 0,
        .note = "measured on this machine when the figure was made (CLOCK_MONOTONIC): timings vary from run to run, so "
                "this figure is not byte-reproducible and no test compares it. Random cache contents; the cost of a "
                "step does not depend on them.",
    };
    char path[1024];
    plot_line_chart(&c, path_join(path, sizeof path, a->out, "05_decode_time"), a->png, a->svg);
    free(params);
}

int main(int argc, char **argv) {
    const char *configs = "data/configs";
    int max_context = 65536, reps = 2;
    CliOpt opts[] = {
        {.name = "--configs", .type = OPT_STRING, .dst = &configs, .meta = "DIR",
         .help = "folder of Hugging Face config.json files (default data/configs)"},
        {.name = "--max-context", .type = OPT_INT, .dst = &max_context, .meta = "N",
         .help = "longest context of the decode-time sweep, from 1K doubling (default 65536)", .min = 1024, .max = 1 << 20},
        {.name = "--reps", .type = OPT_INT, .dst = &reps, .meta = "N",
         .help = "timed decode steps per point (default 2)", .min = 1, .max = 1000},
    };
    CliSpec spec = {
        .prog = "ch07",
        .summary = "Chapter 7: DeepSeek Sparse Attention: the lightning indexer, top-k vs a window, memory and decode time.",
        .flags = CLI_OUT | CLI_FORMAT | CLI_SEED | CLI_WEIGHTS,
        .default_out = "figures/ch07",
        .default_weights = DEFAULT_WEIGHTS,
        .opts = opts, .n_opts = (int)(sizeof opts / sizeof opts[0]),
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);

    // every input first: a bad one fails before anything is written
    ModelGeometry v32, v3;
    load_configs(&v32, &v3, configs);
    Trained tr;
    load_trained(&tr, a.weights);
    ensure_out_dir(a.out);
    char esc[1100];
    printf("ch07: %s: %d layers of DSA, top-%d of up to %d keys\n", str_escape(esc, sizeof esc, a.weights), tr.L,
           tr.topk, tr.T);
    figure_indexer(&a, &tr);
    figure_topk_vs_window(&a, &tr);
    figure_sparse_attention(&a, &tr);
    trained_free(&tr);
    figure_kv_memory(&a, configs);
    figure_decode_time(&a, max_context, reps);
    printf("ch07: wrote figures to %s/ (01_indexer_scores, 02_topk_vs_window, 03_sparse_attention_recall, "
           "04_kv_memory, 05_decode_time)\n", a.out);
    free(a.pos);
    return 0;
}
