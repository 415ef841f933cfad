// Chapter 6: sliding-window attention.
//
// Article: the section on sliding-window attention. A local layer lets each token attend to only the
// last W tokens (itself included) instead of the whole past. Its KV cache then stops growing at W
// tokens, which is why Gemma 2 (1 local : 1 global, W 4096), Gemma 3 (5:1, W 1024), OLMo 3 (3:1)
// and gpt-oss (1:1, W 128) interleave local layers with a few global ones: the global layers keep
// long-range lookups possible, the local ones make most of the cache constant in context length.
// Gemma 3's ablations found the ratio and the window barely move perplexity; the toy version here
// shows the part perplexity hides: a lookup whose key lies beyond every window fails unless some
// layer is global.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "03_mha/mha.h"
#include "06_swa/swa.h"
#include "check.h"
#include "cli.h"
#include "chapter.h"
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

// ---- Figure 1: the two masks ------------------------------------------------------------------------

#define TM 12
#define WM 4

static const char *mask_tokens[TM] = {"The", "cat", "that", "the", "dog", "chased", "sat", "on", "the", "mat", "all", "day"};

// With equal scores every visible key gets the same weight, so a cell shows 1 / (keys the query sees):
// a global row spreads over i + 1 keys, a local row over at most W.
static void uniform_weights(float *P, const unsigned char *mask, int T) {
    for (int i = 0; i < T; i++) {
        int n = 0;
        for (int j = 0; j < T; j++) n += mask[i * T + j];
        for (int j = 0; j < T; j++) P[i * T + j] = mask[i * T + j] ? 1.0f / (float)n : 0.0f;
    }
}

static void figure_masks(const CliArgs *a) {
    unsigned char causal[TM * TM], local[TM * TM], reach[TM * TM];
    float Pc[TM * TM], Pl[TM * TM], Pr[TM * TM];
    mask_fill(causal, MASK_CAUSAL, TM, 0);
    mask_fill(local, MASK_SLIDING, TM, WM);
    uniform_weights(Pc, causal, TM);
    uniform_weights(Pl, local, TM);
    // two local layers in a row mix tokens with P_local @ P_local: nonzero up to 2(W-1) keys back
    for (int i = 0; i < TM; i++)
        for (int j = 0; j < TM; j++) {
            float acc = 0.0f;
            for (int k = 0; k < TM; k++) acc += Pl[i * TM + k] * Pl[k * TM + j];
            Pr[i * TM + j] = acc;
            reach[i * TM + j] = acc > 0.0f;
        }
    HeatPanel panels[3] = {
        {.values = Pc, .mask = causal, .rows = TM, .cols = TM, .title = "global layer: every past token",
         .row_labels = mask_tokens, .col_labels = mask_tokens, .xlabel = "key j", .ylabel = "query i",
         .vmin = 0, .vmax = 1},
        {.values = Pl, .mask = local, .rows = TM, .cols = TM, .title = "local layer: the last W = 4 tokens",
         .row_labels = mask_tokens, .col_labels = mask_tokens, .xlabel = "key j", .vmin = 0, .vmax = 1},
        {.values = Pr, .mask = reach, .rows = TM, .cols = TM, .title = "two local layers stacked: reach 2(W-1) = 6 back",
         .row_labels = mask_tokens, .col_labels = mask_tokens, .xlabel = "key j", .vmin = 0, .vmax = 1},
    };
    HeatmapFigure f = {
        .title = "Global vs local (sliding-window) attention",
        .subtitle = "equal scores: each visible key gets 1 / (keys visible); a local row sees the last W = 4 keys, itself included",
        .claim = "A global row spreads over every past token; a local row over at most W = 4 (i-W < j <= i); two local "
                 "layers in a row reach 2(W-1) = 6 tokens back, W-1 per layer.",
        .panels = panels, .n_panels = 3, .vmin = 0, .vmax = 1, .show_values = 1,
        .colorbar_label = "weight of key j in query i's output",
        .note = "right: the mixing matrix of two local layers in a row (P x P); its masked cells are the ones no path reaches",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "01_global_vs_local_mask"), a->png, a->svg);
}

// ---- the toy ablation: tiny models trained by `make weights` --------------------------------------

// The models tools/make_weights.sh trains for this chapter, all on the same task, data and seed (the
// other seeds of each setting ship as metrics: data/experiments/swa.jsonl).
static const char *ablation_files[] = {
    "ch06_global.safetensors",
    "ch06_1to1_w4.safetensors",
    "ch06_3to1_w4.safetensors",
    "ch06_3to1_w8.safetensors",
    "ch06_local_w4.safetensors",
    "ch06_local_w8.safetensors",
    "ch06_local_w12.safetensors",
    "ch06_local_w16.safetensors",
};
#define N_ABL (int)(sizeof ablation_files / sizeof ablation_files[0])
#define HEATMAP_MODEL "ch06_3to1_w4.safetensors"
#define SWA_SEEDS CHAPTER_EXPERIMENTS "/swa.jsonl"
#define MAX_DIST 64

typedef struct {
    Model *m;
    Task task;
    int ratio;                // local_per_global read back from the layer pattern
    int window;               // 0 for all global
    char pattern[GEOM_MAX_LAYERS + 1];
    double loss, accuracy;    // on this program's held-out samples
    double train_accuracy;    // what tools/train measured (file metadata)
    SeedStat seed_acc, seed_loss;   // over every seed of the setting (make experiments)
    int correct[MAX_DIST + 1], scored[MAX_DIST + 1];   // by distance query -> its key
} Ablation;

// local_per_global of a loaded model's pattern (SWA_ALL_LOCAL, 0, or R when layers repeat R L + 1 G).
static int pattern_ratio(const ModelGeometry *g) {
    int n_local = geometry_count(g, LAYER_LOCAL);
    if (n_local == g->n_layers) return SWA_ALL_LOCAL;
    if (n_local == 0) return 0;
    return n_local / (g->n_layers - n_local);
}

// Distance from query position i back to its key: the FIRST position holding the same token. In the
// copy task that is the token's one earlier occurrence (an induction head finds it and predicts what
// followed it); in recall it is the key's place among the pairs, whose value comes right after.
// -1 when the token did not occur before. A local layer of window W reaches that value (at j + 1)
// directly iff i - j <= W.
static int key_distance(const int *tok, int i) {
    for (int j = 0; j < i; j++)
        if (tok[j] == tok[i]) return i - j;
    return -1;
}

// The chapter's figures read their models as copy (induction) models with softmax attention layers.
static Model *load_model(const char *path, ModelInfo *info, Task *task) {
    char err[1024];
    Model *m = train_load_model(path, mixer_by_name, info, task, err, sizeof err);
    if (!m) die_user("%s (run `make weights` to train the chapter's models)", err);
    if (task->kind != TASK_INDUCTION)
        die_user("%s: trained on %s, but this chapter's figures need a model trained on induction (the copy task)", path,
                 task->name);
    for (int l = 0; l < m->g.n_layers; l++)
        if (m->mixers[l].ops != &gqa_mixer)
            die_user("%s: layer %d is '%s', but this chapter draws gqa (mha, mqa) models", path, l, m->mixers[l].ops->name);
    return m;
}

// Held-out evaluation: loss, accuracy, and accuracy by key distance. Batches of B sequences.
static void evaluate(Ablation *A, int n_samples, uint64_t seed) {
    enum { B = 32 };
    const Task *t = &A->task;
    int T = t->seq_len;
    int *tok = mallocCheck(sizeof(int) * B * T), *tgt = mallocCheck(sizeof(int) * B * T);
    Rng rng;
    rng_seed(&rng, seed);
    double loss_sum = 0;
    long n_scored = 0, n_correct = 0;
    for (int done = 0; done < n_samples; done += B) {
        task_batch(t, &rng, SPLIT_HELDOUT, tok, tgt, B);
        model_forward(A->m, tok, tgt, B, T);
        int V = A->m->g.vocab_size, sc = 0;
        for (int n = 0; n < B * T; n++) {
            if (tgt[n] < 0) continue;
            const float *lg = A->m->logits + (size_t)n * V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (lg[v] > lg[best]) best = v;
            int dist = key_distance(tok + (n / T) * T, n % T);
            if (dist >= 0 && dist <= MAX_DIST) {
                A->scored[dist]++;
                A->correct[dist] += best == tgt[n];
            }
            n_correct += best == tgt[n];
            sc++;
        }
        loss_sum += (double)A->m->loss * sc;
        n_scored += sc;
    }
    A->loss = n_scored ? loss_sum / (double)n_scored : NAN;
    A->accuracy = n_scored ? (double)n_correct / (double)n_scored : NAN;
    free(tok);
    free(tgt);
}

static void ablation_label(char *buf, size_t cap, const Ablation *A) {
    char r[32];
    if (A->ratio == 0) snprintf(buf, cap, "all global (%s)", A->pattern);
    else snprintf(buf, cap, "%s (%s), W %d", swa_ratio_name(r, sizeof r, A->ratio), A->pattern, A->window);
}

// Figure: accuracy and loss vs window, one line per ratio, mean over the seeds with their range as a
// band; the all-global model as a dashed reference.
static void figure_ablation_window(const CliArgs *a, const Ablation *abl, int n, int min_dist, int max_dist) {
    double chance = chapter_chance(&abl[0].task);
    static const int ratios[] = {SWA_ALL_LOCAL, 3, 1};
    static const int colors[] = {COLOR_SWA, COLOR_GQA, COLOR_MLA};
    enum { NR = 3 };
    const Ablation *global = NULL;
    int n_seeds = 1 << 30;
    for (int k = 0; k < n; k++) {
        if (abl[k].ratio == 0) global = &abl[k];
        if (abl[k].seed_acc.n < n_seeds) n_seeds = abl[k].seed_acc.n;
    }
    for (int which = 0; which < 2; which++) {   // 0 accuracy, 1 loss
        double xs[NR][N_ABL], ys[NR][N_ABL], ylo[NR][N_ABL], yhi[NR][N_ABL], gx[2], gy[2], glo[2], ghi[2];
        double scale = which == 0 ? 100.0 : 1.0;
        char labels[NR + 1][400];
        PlotSeries series[NR + 1];
        int ns = 0, wmin = 1 << 30, wmax = 0;
        for (int r = 0; r < NR; r++) {
            int np = 0;
            for (int w = 1; w <= MAX_DIST; w++)   // the models of this ratio, in window order
                for (int k = 0; k < n; k++)
                    if (abl[k].ratio == ratios[r] && abl[k].window == w) {
                        const SeedStat *st = which == 0 ? &abl[k].seed_acc : &abl[k].seed_loss;
                        xs[r][np] = w;
                        ys[r][np] = scale * st->mean;
                        ylo[r][np] = scale * st->lo;
                        yhi[r][np] = scale * st->hi;
                        np++;
                        if (w < wmin) wmin = w;
                        if (w > wmax) wmax = w;
                    }
            if (!np) continue;
            snprintf(labels[ns], sizeof labels[ns], "%s", ratios[r] == SWA_ALL_LOCAL ? "all local (LLLL)"
                     : ratios[r] == 3 ? "3 local : 1 global (LLLG)" : "1 local : 1 global (LGLG)");
            series[ns] = (PlotSeries){.label = labels[ns], .x = xs[r], .y = ys[r], .n = np, .color = colors[r],
                                      .markers = 1, .ylo = ylo[r], .yhi = yhi[r], .error_bars = 1};
            ns++;
        }
        if (global && wmax > 0) {
            const SeedStat *st = which == 0 ? &global->seed_acc : &global->seed_loss;
            gx[0] = wmin;
            gx[1] = wmax;
            gy[0] = gy[1] = scale * st->mean;
            glo[0] = glo[1] = scale * st->lo;
            ghi[0] = ghi[1] = scale * st->hi;
            snprintf(labels[ns], sizeof labels[ns], "all global (GGGG)");
            series[ns] = (PlotSeries){.label = labels[ns], .x = gx, .y = gy, .n = 2, .color = COLOR_MHA, .dashed = 1,
                                      .ylo = glo, .yhi = ghi};
            ns++;
        }
        char sub[512], claim[400], chance_label[64], title[160];
        snprintf(sub, sizeof sub, "4 layers, d_model 32, 2 heads; copy task, keys %d to %d tokens back; dot: mean of %d "
                 "seeds, whisker: min..max", min_dist, max_dist, n_seeds);
        // the worst seed of any model with a global layer, and the all-local means
        double with_global = 100.0, local_lo = 100.0, local_hi = 0.0, local_spread = 0.0;
        for (int k = 0; k < n; k++) {
            if (abl[k].ratio == SWA_ALL_LOCAL) {
                local_lo = fmin(local_lo, 100.0 * abl[k].seed_acc.mean);
                local_hi = fmax(local_hi, 100.0 * abl[k].seed_acc.mean);
                local_spread = fmax(local_spread, 100.0 * (abl[k].seed_acc.hi - abl[k].seed_acc.lo));
            } else {
                with_global = fmin(with_global, 100.0 * abl[k].seed_acc.lo);
            }
        }
        if (which == 0)
            snprintf(claim, sizeof claim, "Over %d seeds every toy model with a global layer copies at %.1f%% or better "
                     "whatever its window; all-local stacks average %.0f%% to %.0f%%, and their seeds differ by up to %.0f "
                     "points.", n_seeds, with_global, local_lo, local_hi, local_spread);
        else {
            double g_hi = 0.0, l_lo = INFINITY, l_hi = 0.0;   // mean losses with a global layer, and all local
            for (int k = 0; k < n; k++) {
                double v = abl[k].seed_loss.mean;
                if (abl[k].ratio == SWA_ALL_LOCAL) { l_lo = fmin(l_lo, v); l_hi = fmax(l_hi, v); }
                else g_hi = fmax(g_hi, v);
            }
            snprintf(claim, sizeof claim, "Held-out loss of the same models, mean of %d seeds: at most %.2f nats with a "
                     "global layer, %.2f to %.2f for the all-local stacks.", n_seeds, g_hi, l_lo, l_hi);
        }
        snprintf(title, sizeof title, "Toy Gemma 3 ablation: %s vs window and local:global ratio, %d seeds",
                 which == 0 ? "accuracy" : "held-out loss", n_seeds);
        snprintf(chance_label, sizeof chance_label, "chance (1/%.0f)", 1.0 / chance);
        PlotRef ref = {.label = chance_label, .value = 100.0 * chance};
        LineChart c = {
            .title = title, .subtitle = sub, .claim = claim,
            .xlabel = "sliding window W (tokens)",
            .ylabel = which == 0 ? "held-out accuracy on the copied tokens (%)" : "held-out cross-entropy (nats)",
            .series = series, .n_series = ns, .refs = which == 0 ? &ref : NULL, .n_refs = which == 0,
            .ymin = 0, .ymax = which == 0 ? 100 : 0, .xmin = 0, .xmax = wmax + 1,
            .legend_pos = PLOT_LEGEND_BELOW,
            .note = "a local stack can pass a token on at most 4 x (W-1) positions; whether training finds that relay "
                    "depends on the seed. Seeds' metrics: data/experiments/swa.jsonl (make experiments)",
        };
        char path[1024];
        plot_line_chart(&c, path_join(path, sizeof path, a->out, which == 0 ? "05_ablation_accuracy_vs_window"
                                                                             : "06_ablation_loss_vs_window"),
                        a->png, a->svg);
    }
}

// Figure: accuracy by distance to the key: the models of window W, every all-local model, and the
// all-global reference.
static void figure_ablation_distance(const CliArgs *a, const Ablation *abl, int n, int W, int min_dist,
                                     int max_dist) {
    static const int local_colors[] = {COLOR_SWA, COLOR_LINEAR, COLOR_DSA, COLOR_OTHER};
    double xs[N_ABL][MAX_DIST + 1], ys[N_ABL][MAX_DIST + 1];
    char labels[N_ABL][340];
    PlotSeries series[N_ABL];
    int ns = 0, n_local = 0, order[N_ABL], no = 0;
    // all-local models first, the ones with global layers after, the all-global reference on top
    for (int pass = 0; pass < 3; pass++)
        for (int k = 0; k < n; k++) {
            int r = abl[k].ratio;
            if ((pass == 0 && r == SWA_ALL_LOCAL) || (pass == 1 && r > 0) || (pass == 2 && r == 0)) order[no++] = k;
        }
    for (int o = 0; o < no; o++) {
        const Ablation *A = &abl[order[o]];
        if (A->ratio != 0 && A->ratio != SWA_ALL_LOCAL && A->window != W) continue;
        int np = 0;
        for (int dd = 1; dd <= MAX_DIST; dd++)
            if (A->scored[dd] >= 20) {
                xs[ns][np] = dd;
                ys[ns][np] = 100.0 * A->correct[dd] / A->scored[dd];
                np++;
            }
        ablation_label(labels[ns], sizeof labels[ns], A);
        int color = A->ratio == 0 ? COLOR_MHA : A->ratio == 3 ? COLOR_GQA : A->ratio == 1 ? COLOR_MLA
                  : local_colors[n_local++ % 4];
        series[ns] = (PlotSeries){.label = labels[ns], .x = xs[ns], .y = ys[ns], .n = np, .color = color,
                                  .markers = 1, .dashed = A->ratio == 0};
        ns++;
    }
    char sub[400], chance_label[64], claim[600];
    snprintf(sub, sizeof sub, "held-out accuracy on copied tokens by distance to the key; the W = %d models, every "
             "all-local model, all-global", W);
    snprintf(chance_label, sizeof chance_label, "chance (1/%.0f)", 1.0 / chapter_chance(&abl[0].task));
    PlotRef ref = {.label = chance_label, .value = 100.0 * chapter_chance(&abl[0].task)};
    // which all-local models found a relay past their window (90% or better beyond W)
    char relay[128] = "", none[128] = "";
    for (int k = 0; k < n; k++) {
        if (abl[k].ratio != SWA_ALL_LOCAL) continue;
        int cb = 0, sb = 0;
        for (int dd = abl[k].window + 1; dd <= MAX_DIST; dd++) { cb += abl[k].correct[dd]; sb += abl[k].scored[dd]; }
        char *dst = sb > 0 && cb >= 0.9 * sb ? relay : none;
        size_t len = strlen(dst);
        if (sb > 0) snprintf(dst + len, 128 - len, "%sW %d", len ? ", " : "", abl[k].window);
    }
    snprintf(claim, sizeof claim, "With a global layer every distance is copied; in the shipped seed all-local stacks "
             "fail beyond their window unless training found a relay through the layers (%s: yes; %s: no).", relay[0] ? relay : "none",
             none[0] ? none : "none");
    LineChart c = {
        .title = "Past the window, local-only stacks fail or relay; a global layer looks up directly",
        .subtitle = sub, .claim = claim,
        .xlabel = "distance from the query back to its key (tokens)", .ylabel = "held-out accuracy (%)",
        .series = series, .n_series = ns, .refs = &ref, .n_refs = 1, .ymin = 0, .ymax = 100,
        .legend_pos = PLOT_LEGEND_BELOW, .xmin = min_dist - 0.5, .xmax = max_dist + 0.5,
        .note = "one seed per setting (the shipped models; figure 05 shows how much the seeds differ); ./ch06 prints "
                "each model's overall accuracy, inside and beyond its window",
        .height = 680,
    };
    char path[1024];
    plot_line_chart(&c, path_join(path, sizeof path, a->out, "07_ablation_accuracy_by_distance"), a->png, a->svg);
}

// Exits with one line unless path is a model figure 02 can draw.
static void check_heatmap_model(const char *path) {
    ModelInfo info;
    Task task;
    Model *m = load_model(path, &info, &task);
    if (m->g.n_layers * m->g.n_heads > 16)
        die_user("%s: %d layers x %d heads is more panels than this figure draws (16)", path, m->g.n_layers, m->g.n_heads);
    model_info_free(&info);
    task_free(&task);
    model_free(m);
}

// Figure: every head of every layer of one trained model on the task's fixed example.
static void figure_layer_heatmaps(const CliArgs *a, const char *path) {
    ModelInfo info;
    Task task;
    Model *m = load_model(path, &info, &task);
    const ModelGeometry *g = &m->g;
    int T = task.seq_len, L = g->n_layers, H = g->n_heads;
    CHECK(L * H <= 16, "%s: %d layers x %d heads (check_heatmap_model first)", path, L, H);
    int *tok = mallocCheck(sizeof(int) * T), *tgt = mallocCheck(sizeof(int) * T);
    task_example(&task, tok, tgt);
    model_forward(m, tok, NULL, 1, T);
    const char **labels = mallocCheck(sizeof(char *) * T);
    for (int i = 0; i < T; i++) labels[i] = task_token_str(&task, tok[i]);
    float *A = mallocCheck(sizeof(float) * (size_t)L * H * T * T);
    unsigned char *masks = mallocCheck((size_t)L * T * T);
    HeatPanel panels[16];
    char titles[16][64];
    // rows of panels are heads, columns are layers, so each column reads as one layer
    for (int l = 0; l < L; l++) {
        model_mixing_matrix(m, l, A + (size_t)l * H * T * T);
        int W = mha_layer_window(g, l);
        if (W) mask_fill(masks + (size_t)l * T * T, MASK_SLIDING, T, W);
        else mask_fill(masks + (size_t)l * T * T, MASK_CAUSAL, T, 0);
    }
    for (int h = 0; h < H; h++)
        for (int l = 0; l < L; l++) {
            int k = h * L + l, W = mha_layer_window(g, l);
            if (W) snprintf(titles[k], sizeof titles[k], "layer %d, local W %d, head %d", l, W, h);
            else snprintf(titles[k], sizeof titles[k], "layer %d, global, head %d", l, h);
            panels[k] = (HeatPanel){.values = A + ((size_t)l * H + h) * T * T, .mask = masks + (size_t)l * T * T,
                                    .rows = T, .cols = T, .title = titles[k], .row_labels = labels,
                                    .col_labels = labels, .xlabel = "key j", .ylabel = l == 0 ? "query i" : NULL};
        }
    char pat[GEOM_MAX_LAYERS + 1], sub[512], title[400], claim[400];
    swa_pattern_string(pat, sizeof pat, g);
    snprintf(title, sizeof title, "A trained local:global model (%s): what each layer attends to", pat);
    snprintf(sub, sizeof sub, "%d layers, d_model %d, %d heads, W = %d, on a copy example (a segment, then the same "
             "segment again); held-out accuracy %.1f%%", L, g->d_model, H, g->sliding_window, 100.0 * info.accuracy);
    snprintf(claim, sizeof claim, "In a trained %s model the local layers keep to their band of W = %d keys and the "
             "global layer draws the induction stripe back to the first copy.", pat, g->sliding_window);
    HeatmapFigure f = {
        .title = title, .subtitle = sub, .claim = claim, .panels = panels, .n_panels = L * H, .panels_per_row = L,
        .vmin = 0, .vmax = 1, .show_values = 0, .colorbar_label = "attention weight",
    };
    char out[1024];
    heatmap_figure(&f, path_join(out, sizeof out, a->out, "02_trained_layer_heatmaps"), a->png, a->svg);
    free(tok); free(tgt); free(labels); free(A); free(masks);
    model_info_free(&info);
    task_free(&task);
    model_free(m);
}

// Every ablation model from dir, checked against the others (exits with one line naming a bad one).
static void load_ablation(Ablation *abl, const char *dir) {
    memset(abl, 0, sizeof(Ablation) * N_ABL);
    int seq_len = 0;
    for (int k = 0; k < N_ABL; k++) {
        Ablation *A = &abl[k];
        char path[1024];
        ModelInfo info;
        A->m = load_model(path_join(path, sizeof path, dir, ablation_files[k]), &info, &A->task);
        if (seq_len && A->task.seq_len != seq_len) die_user("%s: seq_len %d differs from the other models' %d", path,
                                                            A->task.seq_len, seq_len);
        seq_len = A->task.seq_len;
        A->ratio = pattern_ratio(&A->m->g);
        A->window = A->ratio == 0 ? 0 : A->m->g.sliding_window;
        if (A->window > MAX_DIST) die_user("%s: window %d is larger than this figure's %d", path, A->window, MAX_DIST);
        swa_pattern_string(A->pattern, sizeof A->pattern, &A->m->g);
        A->train_accuracy = info.accuracy;
        model_info_free(&info);
        // the setting's name in the seeds' file: the file name without "ch06_" and ".safetensors"
        char setting[64];
        snprintf(setting, sizeof setting, "%.*s", (int)(strlen(ablation_files[k]) - strlen("ch06_.safetensors")),
                 ablation_files[k] + strlen("ch06_"));
        A->seed_acc = chapter_seeds(SWA_SEEDS, setting, "accuracy", -1);
        A->seed_loss = chapter_seeds(SWA_SEEDS, setting, "loss", -1);
    }
}

static void run_ablation(const CliArgs *a, Ablation *abl, int n_samples) {
    int min_dist = 1 << 30, max_dist = 0;
    printf("  %-28s %-8s %6s %9s %9s %11s %11s  %s\n", "model", "pattern", "window", "accuracy", "loss",
           "key <= W", "key > W", "(train's eval)");
    for (int k = 0; k < N_ABL; k++) {
        Ablation *A = &abl[k];
        evaluate(A, n_samples, a->seed ^ 0x5eed5eedULL);
        for (int dd = 1; dd <= MAX_DIST; dd++)
            if (A->scored[dd]) {
                if (dd < min_dist) min_dist = dd;
                if (dd > max_dist) max_dist = dd;
            }
        // accuracy on the lookups a local layer could see directly (key distance <= W) and the rest
        int ci = 0, si = 0, cb = 0, sb = 0;
        for (int dd = 1; dd <= MAX_DIST; dd++) {
            int in = A->window == 0 || dd <= A->window;
            ci += in ? A->correct[dd] : 0; si += in ? A->scored[dd] : 0;
            cb += in ? 0 : A->correct[dd]; sb += in ? 0 : A->scored[dd];
        }
        char in_s[16] = "-", out_s[16] = "-";
        if (si) snprintf(in_s, sizeof in_s, "%.1f%%", 100.0 * ci / si);
        if (sb) snprintf(out_s, sizeof out_s, "%.1f%%", 100.0 * cb / sb);
        printf("  %-28s %-8s %6d %8.1f%% %9.4f %11s %11s  (%.1f%%)\n", ablation_files[k], A->pattern, A->window,
               100.0 * A->accuracy, A->loss, in_s, out_s, 100.0 * A->train_accuracy);
    }
    figure_ablation_window(a, abl, N_ABL, min_dist, max_dist);
    figure_ablation_distance(a, abl, N_ABL, 4, min_dist, max_dist);
    for (int k = 0; k < N_ABL; k++) {
        model_free(abl[k].m);
        task_free(&abl[k].task);
    }
}

// ---- KV memory of real models --------------------------------------------------------------------

static void load_config(ModelGeometry *g, const char *dir, const char *file) {
    char path[1024], err[512];
    if (hfconfig_load(g, path_join(path, sizeof path, dir, file), err, sizeof err) != 0) die_user("%s", err);
}

// The config.json files the memory figures read (the sweeps vary gemma3-27b.json).
static const char *const REAL_CONFIGS[] = {"gemma2-9b.json", "gemma3-27b.json", "olmo3-7b.json", "gpt-oss-20b.json"};

// Figure: KV cache vs context for four sliding-window models, each against itself counted all-global,
// each up to its max_position_embeddings.
static void figure_kv_real(const CliArgs *a, const char *configs) {
    const char *const *files = REAL_CONFIGS;
    static const char *names[] = {"Gemma 2 9B", "Gemma 3 27B", "OLMo 3 7B", "gpt-oss-20b"};
    static const int colors[] = {COLOR_GQA, COLOR_SWA, COLOR_MLA, COLOR_DSA};
    enum { N = 4 };
    MemoryCurve c[2 * N];
    char labels[2 * N][200];
    memset(c, 0, sizeof c);
    printf("  %-14s %7s %-8s %8s %12s %14s %14s %7s\n", "model", "layers", "pattern", "window", "KV/token", "KV at 128K",
           "all-global", "saving");
    double g3_at = 0, g3_full = 0;
    for (int m = 0; m < N; m++) {
        ModelGeometry *g = &c[2 * m].g, *gg = &c[2 * m + 1].g;
        load_config(g, configs, files[m]);
        g->dtype_bytes = 2;
        snprintf(g->name, sizeof g->name, "%s", names[m]);
        *gg = *g;
        swa_make_all_global(gg);
        int nl = geometry_count(g, LAYER_LOCAL), ng = g->n_layers - nl;
        double at = kvcache_total_bytes(g, 131072, 1), full = kvcache_total_bytes(gg, 131072, 1);
        if (m == 1) { g3_at = at; g3_full = full; }
        snprintf(labels[2 * m], sizeof labels[2 * m], "%s: %d local (W %d) + %d global layers", names[m], nl,
                 g->sliding_window, ng);
        snprintf(labels[2 * m + 1], sizeof labels[2 * m + 1], "%s counted all-global", names[m]);
        c[2 * m] = (MemoryCurve){.g = *g, .label = labels[2 * m], .color = colors[m]};
        c[2 * m + 1] = (MemoryCurve){.g = *gg, .label = labels[2 * m + 1], .color = colors[m], .dashed = 1};
        char r[32], b1[32], b2[32], b3[32];
        printf("  %-14s %7d %-8s %8d %12s %14s %14s %6.1fx\n", names[m], g->n_layers,
               swa_ratio_name(r, sizeof r, ng ? nl / ng : SWA_ALL_LOCAL), g->sliding_window,
               fmt_bytes(b3, sizeof b3, kvcache_bytes_per_token(g)), fmt_bytes(b1, sizeof b1, at),
               fmt_bytes(b2, sizeof b2, full), full / at);
    }
    char claim[300], b1[32], b2[32];
    snprintf(claim, sizeof claim, "Past its window a local layer stops growing, so only the global layers keep adding: "
             "Gemma 3 27B holds %s at 128K tokens where counting every layer global gives %s (%.1fx).",
             fmt_bytes(b1, sizeof b1, g3_at), fmt_bytes(b2, sizeof b2, g3_full), g3_full / g3_at);
    MemoryPlot p = {
        .name = "03_kv_cache_real_models", .title = "KV cache vs context: sliding-window layers stop growing at W",
        .subtitle = "one sequence, bf16; solid: as built (a local layer holds min(context, W) tokens), dashed: every layer global",
        .claim = claim, .curves = c, .n = 2 * N, .max_context = 131072, .legend_pos = PLOT_LEGEND_BELOW,
    };
    chapter_memory_plot(a, &p);
}

// Figure: Gemma 3 27B's cache at 128K tokens for other ratios and windows.
static void figure_kv_sweep(const CliArgs *a, const char *configs) {
    static const int ratios[] = {1, 3, 5, SWA_ALL_LOCAL};
    static const int colors[] = {COLOR_GQA, COLOR_MLA, COLOR_SWA, COLOR_LINEAR};
    static const int windows[] = {128, 512, 1024, 4096};
    enum { NR = 4, NW = 4 };
    const long ctx = 131072;
    ModelGeometry base;
    load_config(&base, configs, "gemma3-27b.json");
    double xs[NW], ys[NR][NW], sx[1], sy[1];
    char labels[NR + 1][200];
    PlotSeries series[NR + 1];
    for (int w = 0; w < NW; w++) xs[w] = windows[w];
    printf("  Gemma 3 27B at 128K tokens:");
    for (int r = 0; r < NR; r++) {
        for (int w = 0; w < NW; w++) {
            ModelGeometry g = base;
            swa_set_pattern(&g, ratios[r], windows[w]);
            ys[r][w] = kvcache_total_bytes(&g, ctx, 1);
        }
        char rn[32], b1[32], b2[32];
        ModelGeometry g = base;
        swa_set_pattern(&g, ratios[r], 1024);
        snprintf(labels[r], sizeof labels[r], "%s: %d global layers of 62; %s (W 128) to %s (W 4096)",
                 swa_ratio_name(rn, sizeof rn, ratios[r]), geometry_count(&g, LAYER_GLOBAL),
                 fmt_bytes(b1, sizeof b1, ys[r][0]), fmt_bytes(b2, sizeof b2, ys[r][NW - 1]));
        series[r] = (PlotSeries){.label = labels[r], .x = xs, .y = ys[r], .n = NW, .color = colors[r], .markers = 1};
        printf(" %s %s (W 1024);", rn, fmt_bytes(b1, sizeof b1, ys[r][2]));
    }
    ModelGeometry gg = base;
    swa_make_all_global(&gg);
    double all_global = kvcache_total_bytes(&gg, ctx, 1);
    char b[32], ref_label[96];
    snprintf(ref_label, sizeof ref_label, "all 62 layers global: %s", fmt_bytes(b, sizeof b, all_global));
    PlotRef ref = {.label = ref_label, .value = all_global};
    sx[0] = base.sliding_window;
    sy[0] = kvcache_total_bytes(&base, ctx, 1);
    snprintf(labels[NR], sizeof labels[NR], "Gemma 3 27B as shipped (5:1, W %d): %s, %.1fx smaller than all global",
             base.sliding_window, fmt_bytes(b, sizeof b, sy[0]), all_global / sy[0]);
    series[NR] = (PlotSeries){.label = labels[NR], .x = sx, .y = sy, .n = 1, .color = COLOR_OTHER, .markers = 1};
    printf(" all global %s\n", fmt_bytes(b, sizeof b, all_global));
    char claim[300], b1[32], b2[32];
    snprintf(claim, sizeof claim, "At 128K tokens Gemma 3 27B's cache depends on the local:global ratio (%s at 1:1, %s at "
             "5:1, W 1024) far more than on the window, which moves each ratio by at most %s from W 128 to 4096.",
             fmt_bytes(b1, sizeof b1, ys[0][2]), fmt_bytes(b2, sizeof b2, ys[2][2]),
             fmt_bytes(b, sizeof b, ys[NR - 1][NW - 1] - ys[NR - 1][0]));
    LineChart c = {
        .title = "Gemma 3 27B at 128K context: the ratio matters more than the window",
        .subtitle = "KV cache of one 131072-token sequence (bf16) for other local:global ratios and windows",
        .claim = claim,
        .xlabel = "sliding window W (tokens)", .ylabel = "KV cache at 128K tokens (bytes)",
        .xfmt = AXIS_TOKENS, .yfmt = AXIS_BYTES, .xmin = 0, .xmax = windows[NW - 1], .ymin = 0,
        .series = series, .n_series = NR + 1, .refs = &ref, .n_refs = 1, .legend_pos = PLOT_LEGEND_BELOW,
        .note = "layer i is global iff (i+1) % (R+1) == 0 for R local : 1 global; 16 KV heads x 128 dims per layer",
        .height = 640,
    };
    char path[1024];
    plot_line_chart(&c, path_join(path, sizeof path, a->out, "04_gemma3_ratio_and_window_sweep"), a->png, a->svg);
}

// Figure 9: the article's sweep over the local:global ratio on a real config: Gemma 3 27B (62 layers, W
// 1024) with R local layers per global one, R = 0 (all global) to all local, at 32K and 128K tokens.
static void figure_ratio_sweep(const CliArgs *a, const char *configs) {
    static const int R[] = {0, 1, 2, 3, 5, 7, 11, 15, 30};
    enum { NR = sizeof R / sizeof R[0] };
    static const long ctx[2] = {32768, 131072};
    ModelGeometry base;
    load_config(&base, configs, "gemma3-27b.json");
    double xs[NR], ys[2][NR], lx[2] = {0, R[NR - 1]}, ly[2];
    char labels[3][160], b[32], b2[32];
    PlotSeries series[3];
    for (int r = 0; r < NR; r++) xs[r] = R[r];
    for (int c = 0; c < 2; c++) {
        for (int r = 0; r < NR; r++) {
            ModelGeometry g = base;
            swa_set_pattern(&g, R[r], base.sliding_window);
            ys[c][r] = kvcache_total_bytes(&g, ctx[c], 1);
        }
        snprintf(labels[c], sizeof labels[c], "at %ldK tokens: %s all global, %s at 5:1 (as shipped)", ctx[c] / 1024,
                 fmt_bytes(b, sizeof b, ys[c][0]), fmt_bytes(b2, sizeof b2, ys[c][4]));
        series[c] = (PlotSeries){.label = labels[c], .x = xs, .y = ys[c], .n = NR, .color = c ? COLOR_SWA : COLOR_GQA,
                                 .markers = 1};
    }
    ModelGeometry all = base;
    swa_set_pattern(&all, SWA_ALL_LOCAL, base.sliding_window);
    ly[0] = ly[1] = kvcache_total_bytes(&all, ctx[1], 1);
    snprintf(labels[2], sizeof labels[2], "every layer local (either context): %s", fmt_bytes(b, sizeof b, ly[0]));
    series[2] = (PlotSeries){.label = labels[2], .x = lx, .y = ly, .n = 2, .color = COLOR_OTHER, .dashed = 1};
    LineChart c = {
        .title = "Gemma 3 27B: KV cache against the local:global ratio",
        .subtitle = "gemma3-27b.json (W 1024, 16 KV heads of 128, bf16) with R local layers per global one",
        .xlabel = "R: local layers per global layer (0 = every layer global)", .ylabel = "KV cache (bytes)",
        .xfmt = AXIS_PLAIN, .yfmt = AXIS_BYTES, .xmin = 0, .xmax = R[NR - 1], .ymin = 0,
        .series = series, .n_series = 3, .legend_pos = 1,
        .note = "layer i is global iff (i+1) % (R+1) == 0; past W only the global layers grow, so the cache falls like 1/(R+1)",
    };
    char path[1024];
    plot_line_chart(&c, path_join(path, sizeof path, a->out, "09_ratio_sweep"), a->png, a->svg);
}

// ---- Figure: the running code's cache equals the formula ---------------------------------------------

static void figure_measured_cache(const CliArgs *a) {
    static const int ratios[] = {0, 1, 3, SWA_ALL_LOCAL};
    static const int colors[] = {COLOR_MHA, COLOR_MLA, COLOR_GQA, COLOR_SWA};
    enum { NR = 4, TT = 48, W = 8 };
    double xs[TT], meas[NR][TT], form[NR][TT];
    char labels[2 * NR][160];
    PlotSeries series[2 * NR];
    for (int t = 0; t < TT; t++) xs[t] = t + 1;
    double worst = 0;
    for (int r = 0; r < NR; r++) {
        ModelGeometry g;
        geometry_init(&g, "ch06 cache demo", 4, 32, 2, 2);
        g.vocab_size = 16;
        g.max_seq_len = TT;
        g.dtype_bytes = 4;   // the tiny models cache fp32
        swa_set_pattern(&g, ratios[r], W);
        const MixerOps *ops[4] = {&gqa_mixer, &gqa_mixer, &gqa_mixer, &gqa_mixer};
        Model *m = model_new(&g, ops, 1);
        ModelCache *c = model_cache_new(m, TT);
        float *logits = mallocCheck(sizeof(float) * g.vocab_size);
        for (int t = 0; t < TT; t++) {
            model_decode(c, logits, t % g.vocab_size);
            meas[r][t] = (double)model_cache_bytes(c);
            form[r][t] = kvcache_total_bytes(&g, t + 1, 1);
            worst = fmax(worst, fabs(meas[r][t] - form[r][t]));
        }
        char pat[8], rn[32];
        swa_pattern_string(pat, sizeof pat, &g);
        // the formula lies on the measured line at every step (checked below), so the two share an entry
        snprintf(labels[2 * r], sizeof labels[2 * r], "%s (%s), measured", swa_ratio_name(rn, sizeof rn, ratios[r]), pat);
        snprintf(labels[2 * r + 1], sizeof labels[2 * r + 1], "the kvcache formula");
        series[2 * r] = (PlotSeries){.label = labels[2 * r], .x = xs, .y = meas[r], .n = TT, .color = colors[r], .markers = 1};
        series[2 * r + 1] = (PlotSeries){.label = labels[2 * r + 1], .x = xs, .y = form[r], .n = TT, .color = colors[r], .dashed = 1};
        free(logits);
        model_cache_free(c);
        model_free(m);
    }
    CHECK(worst == 0, "measured cache differs from the formula by %g bytes", worst);
    LineChart c = {
        .title = "The ring buffer: a local layer's cache stops at W tokens",
        .subtitle = "a tiny 4-layer model (2 KV heads x 16 dims, fp32) decoding 48 tokens, W = 8: measured vs formula",
        .claim = "The bytes the decode cache holds equal the formula at every step: a local layer's ring buffer stops "
                 "at W = 8 tokens, so only the global layers keep growing.",
        .xlabel = "tokens decoded", .ylabel = "KV cache (bytes)", .yfmt = AXIS_BYTES,
        .series = series, .n_series = 2 * NR, .legend_pos = PLOT_LEGEND_TOP_LEFT,
        .note = "per layer: 2 x n_kv_heads x head_dim x 4 bytes x min(tokens, W) for local layers, x tokens for global",
    };
    char path[1024];
    plot_line_chart(&c, path_join(path, sizeof path, a->out, "08_ring_buffer_cache_measured"), a->png, a->svg);
}

int main(int argc, char **argv) {
    const char *configs = "data/configs", *wdir = "data/weights";
    int samples = 128;
    CliOpt opts[] = {
        {.name = "--configs", .type = OPT_STRING, .dst = &configs, .meta = "DIR",
         .help = "folder of Hugging Face config.json files (default data/configs)"},
        {.name = "--weights-dir", .type = OPT_STRING, .dst = &wdir, .meta = "DIR",
         .help = "folder of the chapter's trained models ch06_*.safetensors (default data/weights)"},
        {.name = "--samples", .type = OPT_INT, .dst = &samples, .meta = "N",
         .help = "held-out samples per model for the ablation (default 128)", .min = 32, .max = 100000},
    };
    CliSpec spec = {
        .prog = "ch06",
        .summary = "Chapter 6: sliding-window attention: masks, trained local:global models, KV memory of "
                   "Gemma 2/3, OLMo 3, gpt-oss, and a toy ratio/window ablation.",
        .usage_extra = "--weights FILE draws figure 02 (per-layer heatmaps) from another trained model",
        .flags = CLI_OUT | CLI_FORMAT | CLI_SEED | CLI_WEIGHTS,
        .default_out = "figures/ch06",
        .default_weights = "data/weights/" HEATMAP_MODEL,
        .opts = opts, .n_opts = (int)(sizeof opts / sizeof opts[0]),
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);

    // the heatmap model comes from --weights-dir unless --weights names another file
    char heat[1024];
    if (a.weights == spec.default_weights) path_join(heat, sizeof heat, wdir, HEATMAP_MODEL);
    else snprintf(heat, sizeof heat, "%s", a.weights);

    // every input is checked before the first figure is written, so a bad one leaves nothing behind
    ModelGeometry cg;
    for (size_t k = 0; k < sizeof REAL_CONFIGS / sizeof REAL_CONFIGS[0]; k++) load_config(&cg, configs, REAL_CONFIGS[k]);
    check_heatmap_model(heat);
    Ablation abl[N_ABL];
    load_ablation(abl, wdir);
    ensure_out_dir(a.out);

    figure_layer_heatmaps(&a, heat);
    figure_masks(&a);
    figure_kv_real(&a, configs);
    figure_kv_sweep(&a, configs);
    figure_ratio_sweep(&a, configs);
    run_ablation(&a, abl, samples);
    figure_measured_cache(&a);
    printf("ch06: wrote figures to %s/ (01_global_vs_local_mask, 02_trained_layer_heatmaps, 03_kv_cache_real_models, "
           "04_gemma3_ratio_and_window_sweep, 05/06_ablation_*_vs_window, 07_ablation_accuracy_by_distance, "
           "08_ring_buffer_cache_measured, 09_ratio_sweep)\n", a.out);
    free(a.pos);
    return 0;
}
