// Chapter 9: Gated DeltaNet and the first hybrid (Qwen3-Next: 3 Gated DeltaNet layers : 1 gated attention).
//
// Article: the section on hybrid attention. A Gated DeltaNet layer keeps no KV cache. It keeps one
// dk x dv matrix per head, a fast-weight memory S: each token first decays it (alpha), then writes its
// value under its key with the delta rule (overwrite what S already returns for that key, by beta), and
// reads S with its query. Memory is constant in context length, but S can hold only about dk
// independent keys; softmax attention keeps every token and never runs out. Qwen3-Next and Qwen3.5 put
// one gated-attention layer after every three DeltaNet layers: most layers are cheap, a few recall
// exactly. The figures show the state being written, the matrix a DeltaNet layer mixes tokens with next
// to the attention layer's softmax, the capacity trade-off on recall, and the memory of the real models.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "09_gdn/gdn.h"
#include "chapter.h"
#include "check.h"
#include "cli.h"
#include "heatmap.h"
#include "kvcache.h"
#include "metrics.h"
#include "model.h"
#include "plot.h"

#define HYBRID_MODEL "ch09_hybrid.safetensors"
#define GDN_MODEL "ch09_gdn.safetensors"

// First layer of kind `kind` (LAYER_LINEAR or LAYER_GLOBAL) of the model, or -1.
static int first_layer(const Model *m, int kind) {
    for (int l = 0; l < m->g.n_layers; l++)
        if (m->g.layer_kind[l] == kind) return l;
    return -1;
}

// ---- Figure 1: the state S of one DeltaNet head being written -------------------------------------------

#define SNAPS 6

// The linear layer whose head 0 reaches furthest back on the model's example (where a recall model reads
// the pairs for its queries; the other layers mostly mix neighbours), or -1. Runs the forward.
static int furthest_linear_layer(Trained *t) {
    Model *m = t->model;
    int T = t->n_tokens, best = -1;
    double reach = -1.0;
    model_forward(m, t->tokens, NULL, 1, T);
    for (int l = 0; l < m->g.n_layers; l++) {
        if (m->g.layer_kind[l] != LAYER_LINEAR) continue;
        float *A = mallocCheck(sizeof(float) * (size_t)model_n_mix_heads(m, l) * T * T);
        model_mixing_matrix(m, l, A);
        double d = chapter_mixing_reach(A, T);
        if (d > reach) {
            reach = d;
            best = l;
        }
        free(A);
    }
    return best;
}

static void figure_state(const CliArgs *a, Trained *t) {
    const Model *m = t->model;
    int layer = furthest_linear_layer(t), T = t->n_tokens;
    const ModelGeometry *g = &m->g;
    int dk = g->linear_key_head_dim, dv = g->linear_value_head_dim, head = 0;
    // after 1, 2 and 4 pairs, three quarters of them and all of them (the pairs come first: token 2p-1 ends
    // pair p), and at the end
    int n = t->task.n_pairs, counts[SNAPS - 1] = {1, 2, 4, (3 * n + 3) / 4, n}, steps[SNAPS];
    for (int s = 0; s < SNAPS - 1; s++) {
        int c = counts[s] < n ? counts[s] : n;
        steps[s] = 2 * c - 1 < T - 1 ? 2 * c - 1 : T - 1;
    }
    steps[SNAPS - 1] = T - 1;
    float *S = mallocCheck(sizeof(float) * SNAPS * (size_t)dk * dv);
    model_forward(t->model, t->tokens, NULL, 1, T);
    const LayerActs *la = &m->la[layer];
    gdn_states_at(&m->mixers[layer], S, la->mix_act, T, head, steps, SNAPS);
    float smax = 0.0f;
    for (size_t i = 0; i < (size_t)SNAPS * dk * dv; i++) smax = fmaxf(smax, fabsf(S[i]));
    HeatPanel p[SNAPS];
    char titles[SNAPS][96];
    for (int s = 0; s < SNAPS; s++) {
        int pairs = (steps[s] + 1) / 2;
        if (s < SNAPS - 1)
            snprintf(titles[s], sizeof titles[s], "after %d pair%s (token %d '%s')", pairs, pairs == 1 ? "" : "s",
                     steps[s], t->labels[steps[s]]);
        else
            snprintf(titles[s], sizeof titles[s], "end of the sequence (token %d '%s')", steps[s], t->labels[steps[s]]);
        p[s] = (HeatPanel){.values = S + (size_t)s * dk * dv, .rows = dk, .cols = dv, .title = titles[s],
                           .xlabel = "value channel", .ylabel = s % 3 == 0 ? "key channel" : NULL, .diverging = 1};
    }
    char sub[512], path[1024], cap[160], claim[400];
    snprintf(sub, sizeof sub, "layer %d (reaching furthest back), head %d of the trained all-DeltaNet model on the recall "
             "example; %s",
             layer, head, trained_caption(t, cap, sizeof cap));
    snprintf(claim, sizeof claim, "One Gated DeltaNet head remembers a recall example's pairs in a %d x %d state S that "
             "every token rewrites; S keeps its size however long the sequence grows.", dk, dv);
    char note[400];
    snprintf(note, sizeof note, "each token: S <- alpha S, then S <- S + beta k (v - S^T k)^T (the delta rule replaces what "
             "S returned for k by v); reading: o = S^T q. S is %d x %d whatever the context length.", dk, dv);
    HeatmapFigure f = {
        .title = "Gated DeltaNet's state: a fast-weight memory written one token at a time",
        .subtitle = sub, .claim = claim, .panels = p, .n_panels = SNAPS, .panels_per_row = 3, .vmin = -smax, .vmax = smax,
        .diverging = 1, .show_values = 0, .colorbar_label = "state entry S[key][value]", .note = note,
    };
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "01_state_snapshots"), a->png, a->svg);
    free(S);
}

// ---- Figure 2: implicit mixing matrix of a DeltaNet layer next to the attention layer's softmax ----------

static void figure_mixing(const CliArgs *a, Trained *t) {
    Model *m = t->model;
    int la = first_layer(m, LAYER_GLOBAL), T = t->n_tokens;
    model_forward(m, t->tokens, NULL, 1, T);
    // the DeltaNet layer (head 0) that reaches furthest back
    int ll = -1;
    float *Al = NULL;
    double reach = -1.0;
    for (int l = 0; l < m->g.n_layers; l++) {
        if (m->g.layer_kind[l] != LAYER_LINEAR) continue;
        float *A = mallocCheck(sizeof(float) * (size_t)model_n_mix_heads(m, l) * T * T);
        model_mixing_matrix(m, l, A);
        double d = chapter_mixing_reach(A, T);
        if (d > reach) {
            reach = d;
            free(Al);
            Al = A;
            ll = l;
        } else {
            free(A);
        }
    }
    int ha = model_n_mix_heads(m, la);
    float *Aa = mallocCheck(sizeof(float) * (size_t)ha * T * T);
    model_mixing_matrix(m, la, Aa);
    unsigned char *causal = mallocCheck((size_t)T * T);
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) causal[i * T + j] = j <= i;
    float lmax = 0.0f;
    for (size_t i = 0; i < (size_t)T * T; i++) lmax = fmaxf(lmax, fabsf(Al[i]));
    int best = chapter_furthest_head(Aa, ha, T);   // the attention head that looks furthest back: recall
    char t0[96], t1[96];
    snprintf(t0, sizeof t0, "Gated DeltaNet, layer %d head 0: implicit A", ll);   // the layer reaching furthest back
    snprintf(t1, sizeof t1, "gated attention, layer %d head %d: softmax P", la, best);
    HeatPanel p[2] = {
        {.values = Al, .mask = causal, .rows = T, .cols = T, .title = t0, .row_labels = t->labels, .col_labels = t->labels,
         .xlabel = "token s (value read)", .ylabel = "token t (output)", .vmin = -lmax, .vmax = lmax, .diverging = 1,
         .colorbar_label = "implicit weight A[t][s] (signed)"},
        {.values = Aa + (size_t)best * T * T, .mask = causal, .rows = T, .cols = T, .title = t1, .row_labels = t->labels,
         .col_labels = t->labels, .xlabel = "key j", .ylabel = "token t (output)", .vmin = 0.0f, .vmax = 1.0f,
         .colorbar_label = "attention weight P[t][s]"},
    };
    char sub[400], path[1024], cap[160], claim[400];
    snprintf(sub, sizeof sub, "the same trained 3:1 hybrid on one recall example: o_t = sum_s A[t][s] v_s; %s",
             trained_caption(t, cap, sizeof cap));
    snprintf(claim, sizeof claim, "In the trained 3:1 hybrid the DeltaNet layer's implicit mixing matrix is signed and "
             "spread (the delta rule subtracts), while the attention layer's softmax sends each query to one value.");
    HeatmapFigure f = {
        .title = "What each layer of the hybrid mixes: DeltaNet's implicit matrix vs softmax attention",
        .subtitle = sub, .claim = claim, .panels = p, .n_panels = 2, .show_values = 0,
        .note = "left: the DeltaNet layer that reaches furthest back, its implicit matrix written out (it computes from a "
                "fixed-size state, yet its output is a linear mix of past values); right: softmax weights, rows sum to 1",
    };
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "02_mixing_matrices"), a->png, a->svg);
    free(causal);
    free(Al);
    free(Aa);
}

// ---- Figure 3: capacity: recall accuracy vs number of pairs -----------------------------------------------

// What the figures need of the two models, checked before the first figure: recall models, an
// all-DeltaNet model, a hybrid with a DeltaNet and an attention layer, and the hybrid's pair counts
// inside the DeltaNet model's task.
static void check_models(const Trained *hybrid, const Trained *gdn) {
    trained_require(gdn, "gdn", TASK_RECALL, "the state figure");
    trained_require(hybrid, "gdn|gated|gqa", TASK_RECALL, "the mixing-matrix figure");
    if (first_layer(hybrid->model, LAYER_LINEAR) < 0 || first_layer(hybrid->model, LAYER_GLOBAL) < 0)
        die_user("%s: the hybrid needs a DeltaNet and an attention layer", hybrid->path);
    const Trained *ts[2] = {hybrid, gdn};
    int n = hybrid->task.n_pairs;
    for (int k = 0; k < 2; k++)
        if (n > ts[k]->task.n_keys || 2 * n + 2 > ts[k]->task.seq_len)
            die_user("%s: %d pairs (the hybrid's count) do not fit its recall task (%d keys, %d tokens)", ts[k]->path, n,
                     ts[k]->task.n_keys, ts[k]->task.seq_len);
}

// The capacity experiment of this chapter (tools/experiments.txt, `make experiments`): every setting over
// its seeds. All GDN models have one head of key dim 2, 4 or 16 (value dim 16) per layer; the hybrid keeps
// the smallest state in its three DeltaNet layers.
enum { R_ATTN, R_HYBRID, R_GDN16, R_GDN4, R_GDN2, N_RUNS };
typedef struct {
    const char *group, *setting;
} RunSpec;
static const RunSpec RUNS[N_RUNS] = {
    {"capacity_attention", "gated"}, {"capacity_hybrids", "qwen3next"},
    {"capacity_gdn", "k16"}, {"capacity_gdn", "k4"}, {"capacity_gdn", "k2"},
};

// Every setting of the capacity figure from DIR, checked against the chapter's task (the shipped models
// are seed 1 of these runs): exits with one line naming the file before any figure is written.
static void load_runs(SeedRuns *r, const char *dir, const Trained *hybrid) {
    for (int k = 0; k < N_RUNS; k++) {
        metrics_load(&r[k], dir, RUNS[k].group, RUNS[k].setting);
        if (r[k].n_pairs != hybrid->task.n_pairs)
            die_user("%s/%s.jsonl: setting '%s' was measured at 1..%d pairs, the chapter's models at 1..%d", dir,
                     RUNS[k].group, RUNS[k].setting, r[k].n_pairs, hybrid->task.n_pairs);
    }
}

// "2/3": how many seeds of r learned the lookup: at least 75% recall at 2 pairs, where answering one of
// the values seen gives 50%.
static const char *solved_words(char *buf, size_t cap, const SeedRuns *r) {
    snprintf(buf, cap, "%d/%d", metrics_solved(r, 2, 0.75), r->n_seeds);
    return buf;
}

static void figure_capacity(const CliArgs *a, const SeedRuns *r, const Trained *hybrid) {
    int hi = hybrid->task.n_pairs;
    char lab[N_RUNS][96];
    snprintf(lab[R_ATTN], sizeof lab[R_ATTN], "all attention");
    snprintf(lab[R_HYBRID], sizeof lab[R_HYBRID], "3:1 hybrid (2 x 16)");
    const int dk[N_RUNS] = {[R_GDN16] = 16, [R_GDN4] = 4, [R_GDN2] = 2};
    for (int k = R_GDN16; k <= R_GDN2; k++) snprintf(lab[k], sizeof lab[k], "all DeltaNet, %d x 16", dk[k]);
    CapacityCurve c[N_RUNS];
    for (int k = 0; k < N_RUNS; k++)
        c[k] = (CapacityCurve){.label = lab[k], .acc = r[k].mean, .acc_lo = r[k].lo, .acc_hi = r[k].hi,
                               .color = k == R_ATTN ? COLOR_GATED : COLOR_GDN, .dashed = k == R_HYBRID || k == R_GDN2};
    char sub[300], claim[500], note[400], w[5][32];
    snprintf(sub, sizeof sub, "tiny models trained on 1 to %d pairs, %d seeds each: mean and min..max band; "
             "k x v: the state of each DeltaNet layer", hi, r[R_GDN16].n_seeds);
    snprintf(claim, sizeof claim, "At %d pairs all attention recalls %.0f%% and the 3:1 hybrid %.0f%%, while all Gated "
             "DeltaNet recalls %.0f%% with a 16 x 16 state per layer, %.0f%% with 4 x 16 and %.0f%% with 2 x 16 (1/n: %.0f%%).",
             hi, 100.0 * r[R_ATTN].mean[hi - 1], 100.0 * r[R_HYBRID].mean[hi - 1], 100.0 * r[R_GDN16].mean[hi - 1],
             100.0 * r[R_GDN4].mean[hi - 1], 100.0 * r[R_GDN2].mean[hi - 1], 100.0 / hi);
    snprintf(note, sizeof note, "seeds that learned the lookup (75%%+ at 2 pairs, the 1/n shortcut gives 50%%): "
             "attention %s, hybrid %s, DeltaNet 16 x 16 %s, 4 x 16 %s, 2 x 16 %s", solved_words(w[0], sizeof w[0], &r[R_ATTN]),
             solved_words(w[1], sizeof w[1], &r[R_HYBRID]), solved_words(w[2], sizeof w[2], &r[R_GDN16]),
             solved_words(w[3], sizeof w[3], &r[R_GDN4]), solved_words(w[4], sizeof w[4], &r[R_GDN2]));
    CapacityPlot p = {
        .name = "03_recall_capacity", .title = "State capacity: a small DeltaNet state runs out, a KV cache does not",
        .subtitle = sub, .claim = claim, .note = note, .n_lo = 1, .n_hi = hi, .curves = c, .n = N_RUNS,
        .chance = chapter_chance(&hybrid->task), .one_over_n = 1, .legend_pos = PLOT_LEGEND_DIRECT,
    };
    chapter_capacity_plot(a, &p);
}

// ---- Figure 4: memory of Qwen3-Next and Qwen3.5 against all-attention versions -----------------------------
// Colour is the layer kind that grows (Gated DeltaNet hybrid vs all gated attention); the dash is the model.

static void figure_memory(const CliArgs *a, const char *configs) {
    MemoryCurve c[4];
    memset(c, 0, sizeof c);
    chapter_config(&c[0].g, configs, "qwen3-next-80b-a3b.json", "Qwen3-Next-80B-A3B");
    chapter_config(&c[2].g, configs, "qwen3.5-9b.json", "Qwen3.5-9B");
    char l[4][240], b1[32], b2[32];
    for (int k = 0; k < 4; k += 2) {
        ModelGeometry *g = &c[k].g, *att = &c[k + 1].g;
        geometry_all_attention(g, att);
        snprintf(l[k], sizeof l[k], "%.60s (%d DeltaNet : %d attention): %s/token + %s fixed", g->name,
                 geometry_count(g, LAYER_LINEAR), geometry_count(g, LAYER_GLOBAL),
                 fmt_bytes(b1, sizeof b1, kvcache_bytes_per_token(g)), fmt_bytes(b2, sizeof b2, kvcache_fixed_bytes(g)));
        snprintf(l[k + 1], sizeof l[k + 1], "%.60s, all %d layers gated attention: %s/token", g->name, g->n_layers,
                 fmt_bytes(b1, sizeof b1, kvcache_bytes_per_token(att)));
        c[k].label = l[k];
        c[k].color = COLOR_GDN;
        c[k + 1].label = l[k + 1];
        c[k + 1].color = COLOR_GATED;
        c[k].dashed = c[k + 1].dashed = k == 2;
    }
    long max = 262144;
    char sub[400], claim[400], b3[32];
    snprintf(sub, sizeof sub, "one sequence; KV cache bf16, DeltaNet state fp32 (%s per layer) plus its conv state bf16",
             fmt_bytes(b1, sizeof b1, (double)geometry_linear_state_elems(&c[0].g) * 4.0));
    snprintf(claim, sizeof claim, "Only Qwen3-Next's 12 attention layers grow: %s at 256K tokens plus a flat %s of "
             "DeltaNet state, against %s if all 48 layers were gated attention.",
             fmt_bytes(b1, sizeof b1, kvcache_total_bytes(&c[0].g, max, 1)), fmt_bytes(b2, sizeof b2, kvcache_fixed_bytes(&c[0].g)),
             fmt_bytes(b3, sizeof b3, kvcache_total_bytes(&c[1].g, max, 1)));
    MemoryPlot p = {
        .name = "04_kv_memory", .title = "Qwen3-Next and Qwen3.5: a fixed DeltaNet state plus a 4x smaller KV cache",
        .subtitle = sub, .claim = claim, .curves = c, .n = 4, .max_context = max,
        .note = "from data/configs/qwen3-next-80b-a3b.json and qwen3.5-9b.json; the fixed state is where each solid or "
                "dashed hybrid line starts at context 0",
    };
    chapter_memory_plot(a, &p);
}

int main(int argc, char **argv) {
    const char *configs = "data/configs", *wdir = "data/weights", *edir = "data/experiments";
    CliOpt opts[] = {
        {.name = "--configs", .type = OPT_STRING, .dst = &configs, .meta = "DIR",
         .help = "folder of Hugging Face config.json files (default data/configs)"},
        {.name = "--weights-dir", .type = OPT_STRING, .dst = &wdir, .meta = "DIR",
         .help = "folder of the all-DeltaNet model " GDN_MODEL " (default data/weights)"},
        {.name = "--experiments", .type = OPT_STRING, .dst = &edir, .meta = "DIR",
         .help = "folder of the capacity experiment's metrics capacity_*.jsonl (default data/experiments)"},
    };
    CliSpec spec = {
        .prog = "ch09",
        .summary = "Chapter 9: Gated DeltaNet and the 3:1 hybrid: the state, the mixing matrices, capacity and memory.",
        .usage_extra = "--weights FILE draws figure 02 from another hybrid (Gated DeltaNet + attention layers)",
        .flags = CLI_OUT | CLI_FORMAT | CLI_SEED | CLI_WEIGHTS,
        .default_out = "figures/ch09",
        .default_weights = "data/weights/" HYBRID_MODEL,
        .opts = opts, .n_opts = (int)(sizeof opts / sizeof opts[0]),
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);

    // every input first: a missing or bad one fails before anything is written
    chapter_check_configs(configs, "qwen3-next-80b-a3b.json", "qwen3.5-9b.json", NULL);
    Trained hybrid, gdn;
    char path[1024];
    trained_load(&hybrid, a.weights);
    trained_load(&gdn, path_join(path, sizeof path, wdir, GDN_MODEL));
    check_models(&hybrid, &gdn);
    SeedRuns *runs = mallocCheck(sizeof(SeedRuns) * N_RUNS);
    load_runs(runs, edir, &hybrid);
    ensure_out_dir(a.out);
    char e1[1100], e2[200];
    printf("ch09: %s: %s\n", str_escape(e1, sizeof e1, a.weights), str_escape(e2, sizeof e2, hybrid.model->g.name));
    figure_state(&a, &gdn);
    figure_mixing(&a, &hybrid);
    figure_capacity(&a, runs, &hybrid);
    free(runs);
    trained_free(&hybrid);
    trained_free(&gdn);
    figure_memory(&a, configs);
    printf("ch09: wrote figures to %s/ (01_state_snapshots, 02_mixing_matrices, 03_recall_capacity, 04_kv_memory)\n", a.out);
    free(a.pos);
    return 0;
}
