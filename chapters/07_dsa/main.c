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
//   04_kv_memory                cache bytes vs context: DeepSeek-V3.2 (MLA + indexer key) vs V3
//   05_decode_time              measured decode time per token vs context, dense MLA vs DSA
//   06_dsa_schematic            DeepSeek-V3.2's indexer, selector and sparse MLA for one token
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "05_mla/mla.h"
#include "07_dsa/dsa.h"
#include "chapter.h"
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
#include "schematic.h"
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
} DsaTrained;

// Per-layer maps of one forward of the example: P (L,H,T,T), I (L,T,T), att (L,T,T).
typedef struct {
    float *P, *I;
    unsigned char *att;
} Maps;

static void maps_of(Maps *mp, DsaTrained *tr, DsaPhase phase) {
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

static void dsa_load_trained(DsaTrained *tr, const char *path) {
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

static void dsa_trained_free(DsaTrained *tr) {
    free(tr->tok);
    free(tr->tgt);
    free(tr->labels);
    model_info_free(&tr->info);
    task_free(&tr->task);
    model_free(tr->m);
}

// ---- figure 1: what the indexer learned ---------------------------------------------------------------

static void figure_indexer(const CliArgs *a, DsaTrained *tr) {
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
         .colorbar_label = "indexer score", .op_after = "softmax"},
        {.values = Q, .mask = causal, .rows = T, .cols = T, .title = "softmax of the scores over s <= t",
         .row_labels = tr->labels, .col_labels = tr->labels, .xlabel = "key s", .ylabel = "query t", .vmin = 0, .vmax = 1,
         .op_after = "KL"},
        {.values = target, .mask = causal, .rows = T, .cols = T, .title = "dense MLA attention, mean of heads",
         .row_labels = tr->labels, .col_labels = tr->labels, .xlabel = "key s", .ylabel = "query t", .vmin = 0, .vmax = 1},
    };
    char sub[700], note[400], claim[400];
    snprintf(sub, sizeof sub, "layer %d on a recall example; %d indexer heads, one %d-wide indexer key per token; KL to the "
             "attention %.3f nats per query", l, g->index_n_heads, g->index_head_dim, kl);
    snprintf(claim, sizeof claim, "Trained with a KL loss toward the model's attention, the lightning indexer's softmax "
             "lands where the dense MLA attention goes (KL %.3f nats per query), from one %d-wide key per token.", kl,
             g->index_head_dim);
    snprintf(note, sizeof note, "I(t,s) = sum over the indexer heads of w(t,h) * ReLU(q(t,h) . k(s)); it can be negative "
             "because the head weights w(t,h) are signed, hence the diverging scale");
    HeatmapFigure f = {
        .title = "The lightning indexer learns where the attention goes",
        .subtitle = sub, .claim = claim, .panels = panels, .n_panels = 3, .show_values = 0,
        .colorbar_label = "attention weight", .note = note,
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "01_indexer_scores"), a->png, a->svg);
    printf("  indexer (layer %d) vs dense attention: KL %.3f nats per query\n", l, kl);
    free(Q); free(target); free(causal);
    maps_free(&dense);
}

// ---- figure 2: learned top-k vs a sliding window of the same budget -------------------------------------

static void figure_topk_vs_window(const CliArgs *a, DsaTrained *tr) {
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
         .row_labels = tr->labels, .col_labels = tr->labels, .xlabel = "key s", .ylabel = "query t"},
    };
    char sub[600], claim[400];
    snprintf(sub, sizeof sub, "the same trained weights, layer %d, mean attention of %d heads; at most %d keys per query "
             "in both panels", l, H, k);
    snprintf(claim, sizeof claim, "Given the same budget of %d keys per query, the indexer's top-%d reaches back to the "
             "pair being asked about (%.1f%% held-out recall) while a window of the last %d cannot (%.1f%%; dense: "
             "%.1f%%).", k, k, 100 * tr->acc[DSA_SPARSE], k, 100 * tr->acc[DSA_WINDOW], 100 * tr->acc[DSA_DENSE]);
    HeatmapFigure f = {
        .title = "Learned, not fixed, sparsity: the same budget of keys, chosen by the indexer or by position",
        .subtitle = sub, .claim = claim, .panels = panels, .n_panels = 2, .vmin = 0, .vmax = 1, .show_values = 0,
        .colorbar_label = "attention weight (mean of heads)",
        .note = "held-out accuracy on 256 recall samples in the panel titles; the learned set follows the content, the "
                "window only the position",
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

static void figure_sparse_attention(const CliArgs *a, DsaTrained *tr) {
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
    char sub[700], claim[400];
    snprintf(sub, sizeof sub, "a %d-layer DSA model (MLA, %d heads; indexer %d x %d, top-%d) on recall; this example: "
             "%d of %d right, held out %.1f%%", L, H, g->index_n_heads, g->index_head_dim, tr->topk, tr->ex_correct,
             tr->ex_scored, 100 * tr->acc[DSA_SPARSE]);
    snprintf(claim, sizeof claim, "Every query of the trained DSA model attends to at most %d keys picked by the indexer, "
             "the same set for all heads of a layer, and still answers %d of %d recall queries of the example.",
             tr->topk, tr->ex_correct, tr->ex_scored);
    HeatmapFigure f = {
        .title = "DeepSeek Sparse Attention on a recall example: k keys per query, chosen by the indexer",
        .subtitle = sub, .claim = claim, .panels = panels, .n_panels = L * H, .panels_per_row = H, .vmin = 0, .vmax = 1,
        .show_values = 0, .colorbar_label = "attention weight",
        .note = "masked keys (not among the top-k) get weight exactly 0 and are never computed; all heads of a layer "
                "share the selection",
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
    MemoryCurve c[2];
    ModelGeometry mha;
    memset(c, 0, sizeof c);
    load_configs(&c[0].g, &c[1].g, configs);
    snprintf(c[0].g.name, sizeof c[0].g.name, "DeepSeek-V3.2");
    snprintf(c[1].g.name, sizeof c[1].g.name, "DeepSeek-V3");
    c[0].g.dtype_bytes = c[1].g.dtype_bytes = 2;   // count everything in bf16
    const ModelGeometry *v32 = &c[0].g, *v3 = &c[1].g;
    // the MHA equivalent (chapter 5's figure 02) would flatten both lines at 47x their size: it goes in the note
    chapter_mha_twin(&mha, v3, "the same model as MHA");
    char labels[2][200], b1[32], b2[32], b3[32];
    snprintf(labels[0], sizeof labels[0], "DeepSeek-V3.2 (MLA %d + %d + indexer key %d per layer): %s/token",
             v32->kv_lora_rank, v32->qk_rope_head_dim, v32->index_head_dim, fmt_bytes(b1, sizeof b1, kvcache_bytes_per_token(v32)));
    snprintf(labels[1], sizeof labels[1], "DeepSeek-V3 (MLA %d + %d per layer): %s/token", v3->kv_lora_rank,
             v3->qk_rope_head_dim, fmt_bytes(b1, sizeof b1, kvcache_bytes_per_token(v3)));
    c[0].label = labels[0]; c[0].color = COLOR_DSA;
    c[1].label = labels[1]; c[1].color = COLOR_MLA;
    long max = v32->max_seq_len > 0 ? v32->max_seq_len : 131072;
    char sub[300], claim[400], note[400];
    double extra = 100.0 * (kvcache_bytes_per_token(v32) / kvcache_bytes_per_token(v3) - 1);
    snprintf(sub, sizeof sub, "one sequence, %d layers, bf16: DSA keeps MLA's cache and adds a %d-wide indexer key (+%.0f%%)",
             v32->n_layers, v32->index_head_dim, extra);
    snprintf(claim, sizeof claim, "DeepSeek-V3.2 caches MLA's 576 numbers plus the indexer's %d-wide key per token and "
             "layer: %s at %ldK tokens against V3's %s (+%.0f%%). DSA saves compute, not memory.", v32->index_head_dim,
             fmt_bytes(b1, sizeof b1, kvcache_total_bytes(v32, max, 1)), max / 1024,
             fmt_bytes(b2, sizeof b2, kvcache_total_bytes(v3, max, 1)), extra);
    snprintf(note, sizeof note, "from data/configs/deepseek-v3.2.json and deepseek-v3.json; as MHA the model would cache "
             "%s/token (%s at %ldK). DeepSeek stores the indexer key in fp8, counted here in bf16 like the rest",
             fmt_bytes(b1, sizeof b1, kvcache_bytes_per_token(&mha)), fmt_bytes(b3, sizeof b3, kvcache_total_bytes(&mha, max, 1)),
             max / 1024);
    MemoryPlot p = {
        .name = "04_kv_memory", .title = "DeepSeek-V3.2's sparse attention caches a little more than V3",
        .subtitle = sub, .claim = claim, .curves = c, .n = 2, .max_context = max, .note = note,
    };
    chapter_memory_plot(a, &p);
    printf("  KV per token: V3.2 %s, V3 %s, MHA equivalent %s\n", fmt_bytes(b1, sizeof b1, kvcache_bytes_per_token(v32)),
           fmt_bytes(b2, sizeof b2, kvcache_bytes_per_token(v3)), fmt_bytes(b3, sizeof b3, kvcache_bytes_per_token(&mha)));
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
        t_mla[n] = 1e3 * mla_decode_seconds_per_token(&g, params, (int)ctx, 1, reps, 1);
        t_dsa[n] = 1e3 * dsa_decode_seconds_per_token(&g, params, (int)ctx, reps, 1, NULL);
        printf("  %10ld %14.3f %14.3f %7.1fx\n", ctx, t_mla[n], t_dsa[n], t_mla[n] / t_dsa[n]);
    }
    char l1[160], l2[200], l3[80], sub[500], claim[400];
    snprintf(l1, sizeof l1, "dense MLA (absorbed): reads all T cached entries, %d heads x %d", g.n_heads,
             g.kv_lora_rank + g.qk_rope_head_dim);
    snprintf(l2, sizeof l2, "DSA: indexer over all T (%d heads x %d), MLA over the top-%d only", g.index_n_heads,
             g.index_head_dim, g.index_topk);
    snprintf(l3, sizeof l3, "top-k = %d", g.index_topk);
    PlotSeries series[2] = {
        {.label = l1, .x = xs, .y = t_mla, .n = n, .color = COLOR_MLA, .markers = 1},
        {.label = l2, .x = xs, .y = t_dsa, .n = n, .color = COLOR_DSA, .markers = 1},
    };
    PlotRef ref = {.label = l3, .value = g.index_topk, .vertical = 1};
    snprintf(sub, sizeof sub, "one layer, d_model %d, fp32, one thread, %d timed steps per point; below top-k DSA attends "
             "to everything", g.d_model, reps);
    // the claim carries no measured number: it is the contact sheet's text, which must not change per run
    snprintf(claim, sizeof claim, "Measured on the machine that drew it: past top-k = %d a DSA decode step stops paying "
             "for attention over the whole context, only its small indexer still grows, while dense MLA grows with "
             "every cached token.", g.index_topk);
    // log axes only when the sweep is long enough to need them (the toolkit's rule), and then the note says why
    double tmin = fmin(t_mla[0], t_dsa[0]), tmax = fmax(t_mla[n - 1], t_dsa[n - 1]);
    int logx = xs[n - 1] / xs[0] >= PLOT_LOG_MIN_RATIO, logy = tmax / tmin >= PLOT_LOG_MIN_RATIO;
    char note[300];
    snprintf(note, sizeof note, "measured on this machine when the figure was made: not byte-reproducible, no test "
             "compares it%s%s", logx ? "; log context axis: the context doubles at every point" : "",
             logy ? "; log time axis: the times span more than 30x" : "");
    LineChart c = {
        .title = "Decode time per token: DSA attends to top-k only, after a small indexer",
        .subtitle = sub, .claim = claim, .xlabel = "context length (tokens)", .ylabel = "decode time per token (ms)",
        .logx = 1, .logy = 1, .xfmt = AXIS_TOKENS, .yfmt = AXIS_PLAIN, .series = series, .n_series = 2,
        .refs = &ref, .n_refs = 1, .legend_pos = 0,
        .note = note,
    };
    char path[1024];
    plot_line_chart(&c, path_join(path, sizeof path, a->out, "05_decode_time"), a->png, a->svg);
    free(params);
}

// ---- figure 6: DSA for one token, from a real config (article figure 21) ---------------------------------
// The lightning indexer (a few small heads over one cached key per token) scores every cached token, the
// selector keeps the top-k, and MLA attends to those entries only. The context is drawn as blocks; which
// blocks score high is illustrative (a fixed pattern), the counts come from the config.
static void figure_schematic(const CliArgs *a, const char *configs) {
    enum { BLOCKS = 32 };
    ModelGeometry g;
    chapter_config(&g, configs, "deepseek-v3.2.json", "DeepSeek-V3.2");
    if (g.index_n_heads <= 0) die_user("%s/deepseek-v3.2.json: no indexer (index_n_heads) in the config", configs);
    int Hi = g.index_n_heads, di = g.index_head_dim, k = g.index_topk, d = g.d_model, dq = g.q_lora_rank;
    long T = 4L * k;                               // a context four times the budget
    int per = (int)(T / BLOCKS), keep = (int)(k / per);
    float shade[BLOCKS];
    unsigned char sel[BLOCKS] = {0};
    Rng rng;
    rng_seed(&rng, 21);
    for (int i = 0; i < BLOCKS; i++) shade[i] = 0.1f + 0.6f * rng_uniform(&rng);
    for (int n = 0; n < keep; n++) {               // the keep highest blocks
        int best = -1;
        for (int i = 0; i < BLOCKS; i++)
            if (!sel[i] && (best < 0 || shade[i] > shade[best])) best = i;
        sel[best] = 1;
        shade[best] = fminf(1.0f, shade[best] + 0.3f);
    }
    char sub[240], claim[500], t[16][112];
    snprintf(sub, sizeof sub, "%s from its config.json: %d indexer heads of %d, one %d-wide indexer key per token, top-%d",
             g.name, Hi, di, di, k);
    snprintf(claim, sizeof claim, "In %s a lightning indexer of %d small heads scores every cached token against one "
             "%d-wide key per token, the top %d are kept, and MLA attends to those entries only: at %ld tokens, a quarter "
             "of the cache.", g.name, Hi, di, k, T);
    Schematic *s = schem_new("DeepSeek Sparse Attention for one token: the indexer picks, MLA attends", sub, claim);
    snprintf(t[0], sizeof t[0], "%d", d);
    int x = schem_tensor(s, 0, 0, "x", t[0], d, 1, COLOR_OTHER, 0);
    schem_span(s, x, 2);
    snprintf(t[1], sizeof t[1], "from c_q: %d -> %d x %d", dq, Hi, di);
    snprintf(t[2], sizeof t[2], "%d -> %d, LayerNorm", d, di);
    snprintf(t[3], sizeof t[3], "%d -> %d", d, Hi);
    int wq = schem_op(s, 1, 0, "W_q (indexer)", t[1]), wk = schem_op(s, 1, 0, "W_k (indexer)", t[2]);
    int ww = schem_op(s, 1, 0, "W_w", t[3]);
    int mla = schem_op(s, 1, 1, "MLA projections", "as in chapter 5");
    snprintf(t[4], sizeof t[4], "%d heads x %d", Hi, di);
    snprintf(t[5], sizeof t[5], "%d", di);
    snprintf(t[6], sizeof t[6], "%d head weights", Hi);
    int qi = schem_tensor(s, 2, 0, "q_I", t[4], (long)Hi * di, Hi, COLOR_DSA, 0);
    int ki = schem_tensor(s, 2, 0, "k_I", t[5], di, 1, COLOR_DSA, SCHEM_CACHED);
    int wt = schem_tensor(s, 2, 0, "w", t[6], Hi, Hi, COLOR_DSA, 0);
    snprintf(t[7], sizeof t[7], "%d", g.kv_lora_rank);
    snprintf(t[8], sizeof t[8], "%d", g.qk_rope_head_dim);
    int ckv = schem_tensor(s, 2, 1, "c_kv", t[7], g.kv_lora_rank, 1, COLOR_MLA, SCHEM_CACHED);
    int kr = schem_tensor(s, 2, 1, "k_rope", t[8], g.qk_rope_head_dim, 1, COLOR_MLA, SCHEM_CACHED);
    int sc = schem_op(s, 3, 0, "score every cached token s", "I(t,s) = sum over h of w_h ReLU(q_I,h . k_I,s)");
    snprintf(t[9], sizeof t[9], "T = %ld tokens in %d blocks", T, BLOCKS);
    int scores = schem_cells(s, 4, 0, "I(t, s)", t[9], BLOCKS, shade, NULL, COLOR_DSA);
    snprintf(t[10], sizeof t[10], "keep the %d highest (all of them while t < %d)", k, k);
    int top = schem_op(s, 5, 0, "top-k", t[10]);
    snprintf(t[11], sizeof t[11], "%d of %ld entries read", k, T);
    int cache = schem_cells(s, 6, 0, "cache: c_kv, k_rope, k_I per token", t[11], BLOCKS, NULL, sel, COLOR_MLA);
    snprintf(t[12], sizeof t[12], "softmax and weighted sum over the %d selected entries only", k);
    int att = schem_op(s, 7, 0, "MLA attention", t[12]);
    int out = schem_tensor(s, 8, 0, "output", t[0], d, 1, COLOR_OTHER, 0);
    schem_span(s, out, 2);
    schem_arrow(s, x, -1, wq, -1, NULL);
    schem_arrow(s, x, -1, wk, -1, NULL);
    schem_arrow(s, x, -1, ww, -1, NULL);
    schem_arrow(s, x, -1, mla, -1, NULL);
    schem_arrow(s, wq, -1, qi, -1, NULL);
    schem_arrow(s, wk, -1, ki, -1, NULL);
    schem_arrow(s, ww, -1, wt, -1, NULL);
    schem_arrow(s, mla, -1, ckv, -1, NULL);
    schem_arrow(s, mla, -1, kr, -1, NULL);
    schem_arrow(s, qi, -1, sc, -1, NULL);
    schem_arrow(s, ki, -1, sc, -1, NULL);
    schem_arrow(s, wt, -1, sc, -1, NULL);
    schem_arrow(s, sc, -1, scores, -1, NULL);
    schem_arrow(s, scores, -1, top, -1, NULL);
    schem_arrow(s, top, -1, cache, -1, "which entries");
    schem_arrow(s, ckv, -1, cache, -1, NULL);
    schem_arrow(s, kr, -1, cache, -1, NULL);
    schem_arrow(s, cache, -1, att, -1, NULL);
    schem_arrow(s, att, -1, out, -1, NULL);
    schem_note(s, "the context is drawn as blocks; which blocks score high is illustrative, the counts come from the "
                  "config. The indexer key k_I is cached beside MLA's c_kv and k_rope (figure 04).");
    char path[1024];
    schem_write(s, path_join(path, sizeof path, a->out, "06_dsa_schematic"), a->png, a->svg);
    schem_free(s);
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
    DsaTrained tr;
    dsa_load_trained(&tr, a.weights);
    ensure_out_dir(a.out);
    char esc[1100];
    printf("ch07: %s: %d layers of DSA, top-%d of up to %d keys\n", str_escape(esc, sizeof esc, a.weights), tr.L,
           tr.topk, tr.T);
    figure_indexer(&a, &tr);
    figure_topk_vs_window(&a, &tr);
    figure_sparse_attention(&a, &tr);
    dsa_trained_free(&tr);
    figure_kv_memory(&a, configs);
    figure_schematic(&a, configs);
    figure_decode_time(&a, max_context, reps);
    printf("ch07: wrote figures to %s/ (01_indexer_scores, 02_topk_vs_window, 03_sparse_attention_recall, "
           "04_kv_memory, 05_decode_time, 06_dsa_schematic)\n", a.out);
    free(a.pos);
    return 0;
}
