// Chapter 3: multi-head attention and its KV cache.
//
// Article: the section on multi-head attention. H heads run the chapter-2 head in parallel, each with
// its own W_q, W_k, W_v slice, so each can learn a different pattern; their outputs are concatenated and
// mixed by W_o. At inference a decoder keeps every past token's keys and values (the KV cache) so a new
// token costs one row of attention instead of recomputing the whole matrix. That cache is what the
// rest of the article's variants shrink: for MHA it holds 2 * n_heads * head_dim numbers per token per
// layer, and it grows linearly with context.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "03_mha/mha.h"
#include "chapter.h"
#include "check.h"
#include "cli.h"
#include "heatmap.h"
#include "hfconfig.h"
#include "kvcache.h"
#include "mathx.h"
#include "plot.h"
#include "rng.h"
#include "schematic.h"

// Figure 1: each head's attention pattern, side by side, trained vs untrained. The shipped model
// (2 layers x 4 heads) learned the topics task: a topic token, a stream from that topic's bigram chain,
// then a copy of the stream's end. That gives the heads of layer 0 different jobs (keep the topic in
// view, look one token back), and layer 1 the copy: the "induction stripe", where each token reads the
// token after its earlier occurrence. Panel titles name what each head measurably does.
static void figure_heads(const CliArgs *a, Trained *t) {
    const ModelGeometry *g = &t->model->g;
    int H = g->n_heads, T = t->n_tokens, L = g->n_layers;
    size_t hs = (size_t)H * T * T;
    float *A = mallocCheck(sizeof(float) * hs * 3);
    trained_attention(t, 1, L - 1, A + 2 * hs);
    unsigned char *causal = mallocCheck((size_t)(T * T));
    mask_fill(causal, MASK_CAUSAL, T, 0);
    HeatPanel panels[24];
    char titles[24][96], roles[24][CHAPTER_ROLE_CHARS];
    // how many different roles each trained layer's heads took (the role's words, not its number)
    int distinct[2] = {chapter_layer_roles(t, 0, A, roles), chapter_layer_roles(t, L - 1, A + hs, roles + H)};
    for (int r = 0; r < 3; r++)
        for (int h = 0; h < H; h++) {
            int k = r * H + h;
            if (r < 2) snprintf(titles[k], sizeof titles[k], "L%d head %d: %s", r == 0 ? 0 : L - 1, h, roles[k]);
            else snprintf(titles[k], sizeof titles[k], "untrained, L%d head %d", L - 1, h);
            panels[k] = (HeatPanel){.values = A + (size_t)k * T * T, .mask = causal, .rows = T, .cols = T,
                                    .title = titles[k], .row_labels = t->labels, .col_labels = t->labels,
                                    .xlabel = "key j", .ylabel = h == 0 ? "query i" : NULL};
        }
    char sub[300], cap[160], claim[400], title[160];
    snprintf(sub, sizeof sub, "%d heads per layer on %s; %s", H, task_example_phrase(&t->task),
             trained_caption(t, cap, sizeof cap));
    if (distinct[0] > 1 || distinct[1] > 1)
        snprintf(title, sizeof title, "Multi-head attention: the heads of layer %d attend in %d different ways",
                 distinct[0] >= distinct[1] ? 0 : L - 1, distinct[0] >= distinct[1] ? distinct[0] : distinct[1]);
    else
        snprintf(title, sizeof title, "Multi-head attention: the heads of each layer attend alike");
    snprintf(claim, sizeof claim, "The %d heads of each layer of a model trained on %s, next to the same model untrained; "
             "layer 0's heads take %d different roles, layer %d's %d (panel titles: the measured weight).",
             H, task_example_phrase(&t->task), distinct[0], L - 1, distinct[1]);
    HeatmapFigure f = {
        .title = title,
        .subtitle = sub, .claim = claim, .panels = panels, .n_panels = 3 * H, .panels_per_row = H, .vmin = 0, .vmax = 1,
        .show_values = 0, .colorbar_label = "attention weight",
        .note = "rows: trained layer 0, trained last layer, the last layer before training (same seed). Panel titles: each head's "
                "largest mean weight on the first token, the previous token or the token after an earlier copy (induction); other: "
                "none reaches 30%",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "01_heads"), a->png, a->svg);
    free(A);
    free(causal);
}

// Figure 2: decoding one token at a time against the KV cache gives the same logits as the full
// forward over the whole sequence.
static void figure_decode(const CliArgs *a, Trained *t) {
    Model *m = t->model;
    int T = t->n_tokens, V = m->g.vocab_size;
    float *full = mallocCheck(sizeof(float) * T * V), *dec = mallocCheck(sizeof(float) * T * V);
    model_forward(m, t->tokens, NULL, 1, T);
    memcpy(full, m->logits, sizeof(float) * T * V);
    ModelCache *c = model_cache_new(m, T);
    float maxdiff = 0, vmax = 0;
    for (int i = 0; i < T; i++) {
        model_decode(c, &dec[i * V], t->tokens[i]);
        for (int v = 0; v < V; v++) {
            float d = fabsf(dec[i * V + v] - full[i * V + v]);
            if (!isnan(maxdiff) && !(d <= maxdiff)) maxdiff = d;   // a NaN sticks
            if (fabsf(full[i * V + v]) > vmax) vmax = fabsf(full[i * V + v]);
        }
    }
    size_t bytes = model_cache_bytes(c);
    model_cache_free(c);
    const char **vocab = mallocCheck(sizeof(char *) * (size_t)V);
    for (int v = 0; v < V; v++) vocab[v] = task_token_str(&t->task, v);
    char title[160], sub[300], claim[400], b[32];
    // The title claims equality only when the numbers show it (1e-4 is float32 noise at these logits; a NaN
    // is never equal).
    int same = maxdiff <= 1e-4f * fmaxf(1.0f, vmax);
    if (!same) snprintf(title, sizeof title, "Cached decode does NOT reproduce the full forward (largest difference %.1e)", maxdiff);
    else if (maxdiff == 0) snprintf(title, sizeof title, "Cached decode reproduces the full forward, bit for bit");
    else snprintf(title, sizeof title, "Cached decode reproduces the full forward to within %.1e", maxdiff);
    snprintf(sub, sizeof sub, "the trained model's logits on its %d-token example; largest |difference| %.1e; cache %s",
             T, maxdiff, fmt_bytes(b, sizeof b, (double)bytes));
    snprintf(claim, sizeof claim, "Decoding one token at a time against a KV cache gives the logits of the full forward "
             "(largest difference %.1e); after %d tokens the cache holds %s (%d layers x K and V x %d heads x %d dims x "
             "4 bytes x %d tokens).", maxdiff, T, b, m->g.n_layers, m->g.n_kv_heads, m->g.head_dim, T);
    HeatPanel panels[2] = {
        {.values = full, .rows = T, .cols = V, .title = "full forward: all tokens at once", .row_labels = t->labels,
         .col_labels = vocab, .xlabel = "next token", .ylabel = "input token", .diverging = 1, .vmin = -vmax, .vmax = vmax},
        {.values = dec, .rows = T, .cols = V, .title = "decode: one token at a time, KV cache", .row_labels = t->labels,
         .col_labels = vocab, .xlabel = "next token", .ylabel = "input token", .diverging = 1, .vmin = -vmax, .vmax = vmax},
    };
    HeatmapFigure f = {
        .title = title, .subtitle = sub, .claim = claim, .panels = panels, .n_panels = 2, .show_values = 0,
        .colorbar_label = "logit",
    };
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "02_decode_equals_forward"), a->png, a->svg);
    printf("  cached decode vs full forward: max |logit difference| = %.2e, cache %zu bytes\n", maxdiff, bytes);
    free(full); free(dec); free(vocab);
}

// Figure 3: KV-cache bytes vs context for real MHA models, read from their config.json, each up to its
// max_position_embeddings.
static void figure_kv_memory(const CliArgs *a, const char *configs) {
    MemoryCurve c[2] = {{.color = COLOR_MHA, .dashed = 1}, {.color = COLOR_MHA}};
    chapter_config(&c[0].g, configs, "gpt2.json", "GPT-2 small (124M)");
    chapter_config(&c[1].g, configs, "olmo2-7b.json", "OLMo 2 7B");
    char labels[2][1200], b[32], claim[300];
    for (int m = 0; m < 2; m++) {
        const ModelGeometry *g = &c[m].g;
        snprintf(labels[m], sizeof labels[m], "%.*s: %d layers x 2 x %d heads x %d dims x 2 B = %s/token",
                 (int)sizeof g->name, g->name, g->n_layers, g->n_heads, g->head_dim, fmt_bytes(b, sizeof b, kvcache_bytes_per_token(g)));
        c[m].label = labels[m];
    }
    // the axis runs a little past the longer model's limit, so both end markers show
    long max = c[1].g.max_seq_len > c[0].g.max_seq_len ? c[1].g.max_seq_len : c[0].g.max_seq_len;
    max = max > 0 ? max + max / 4 : 4096;
    char b2[32];
    snprintf(claim, sizeof claim, "MHA's cache grows by the same bytes with every token: GPT-2 small holds %s at its "
             "%ld-token limit, OLMo 2 7B %s at %ld.", fmt_bytes(b, sizeof b, kvcache_total_bytes(&c[0].g, c[0].g.max_seq_len, 1)),
             (long)c[0].g.max_seq_len, fmt_bytes(b2, sizeof b2, kvcache_total_bytes(&c[1].g, c[1].g.max_seq_len, 1)),
             (long)c[1].g.max_seq_len);
    MemoryPlot p = {
        .name = "03_kv_cache_vs_context", .title = "KV cache of multi-head attention grows linearly with context",
        .subtitle = "one sequence, bf16; per token: layers x 2 (K and V) x heads x head_dim x 2 bytes",
        .claim = claim, .curves = c, .n = 2, .max_context = max,
    };
    chapter_memory_plot(a, &p);
}

// Figure 5: multi-head attention for one token, drawn to scale from a real model's geometry (article
// figures 8-9): three projections, one attention per head over that head's own cached keys and values,
// the heads concatenated and mixed by W_o.
static void figure_schematic(const CliArgs *a, const char *configs) {
    ModelGeometry g;
    chapter_config(&g, configs, "olmo2-7b.json", "OLMo 2 7B");
    int H = g.n_heads, dh = g.head_dim, d = g.d_model;
    long hd = (long)H * dh;
    char sub[200], claim[400], proj[64], heads[64], att[160], wo[64], dm[32];
    snprintf(sub, sizeof sub, "%s from its config.json: d_model %d, %d heads of %d, every head its own K and V (MHA)",
             g.name, d, H, dh);
    snprintf(claim, sizeof claim, "One token through MHA in %s: W_q, W_k, W_v turn its %d numbers into %d heads of %d "
             "each; every head attends with its own cached K and V, and W_o mixes the %ld concatenated outputs back to "
             "%d. The cache grows by 2 x %ld numbers per layer and token.", g.name, d, H, dh, hd, d, hd);
    Schematic *s = schem_new("Multi-head attention for one token, to scale", sub, claim);
    snprintf(dm, sizeof dm, "%d", d);
    snprintf(proj, sizeof proj, "%d -> %d x %d", d, H, dh);
    snprintf(heads, sizeof heads, "%d heads x %d", H, dh);
    int x = schem_tensor(s, 0, 0, "x", dm, d, 1, COLOR_OTHER, 0);
    schem_span(s, x, 3);
    int w[3], t[3];
    static const char *wn[3] = {"W_q", "W_k", "W_v"}, *tn[3] = {"q", "k", "v"};
    for (int k = 0; k < 3; k++) {
        w[k] = schem_op(s, 1, k, wn[k], proj);
        t[k] = schem_tensor(s, 2, k, tn[k], heads, hd, H, COLOR_MHA, SCHEM_HIGHLIGHT_FIRST | (k ? SCHEM_CACHED : 0));
        schem_arrow(s, x, -1, w[k], -1, NULL);
        schem_arrow(s, w[k], -1, t[k], -1, NULL);
    }
    snprintf(att, sizeof att, "softmax(q_h . K_h^T / sqrt(%d)) V_h over the T cached tokens, for h = 0..%d", dh, H - 1);
    int at = schem_op(s, 3, 0, "attention, head by head", att);
    schem_span(s, at, 3);
    for (int k = 0; k < 3; k++) schem_arrow(s, t[k], 0, at, -1, k == 0 ? "head 0" : NULL);
    int o = schem_tensor(s, 4, 0, "o", "the heads concatenated", hd, H, COLOR_MHA, SCHEM_HIGHLIGHT_FIRST);
    schem_span(s, o, 3);
    schem_arrow(s, at, -1, o, 0, NULL);
    snprintf(wo, sizeof wo, "%ld -> %d", hd, d);
    int wop = schem_op(s, 5, 0, "W_o", wo);
    schem_span(s, wop, 3);
    schem_arrow(s, o, -1, wop, -1, NULL);
    int out = schem_tensor(s, 6, 0, "output", dm, d, 1, COLOR_OTHER, 0);
    schem_span(s, out, 3);
    schem_arrow(s, wop, -1, out, -1, NULL);
    schem_note(s, "head 0 (dark) is followed through; the other heads do the same with their own slices of W_q, W_k, W_v");
    char path[1024];
    schem_write(s, path_join(path, sizeof path, a->out, "05_mha_schematic"), a->png, a->svg);
    schem_free(s);
}

int main(int argc, char **argv) {
    const char *configs = "data/configs";
    CliOpt opts[] = {
        {.name = "--configs", .type = OPT_STRING, .dst = &configs, .meta = "DIR",
         .help = "folder of Hugging Face config.json files (default data/configs)"},
    };
    CliSpec spec = {
        .prog = "ch03",
        .summary = "Chapter 3: multi-head attention, per-head heatmaps, cached decode, KV memory of MHA models.",
        .flags = CLI_OUT | CLI_FORMAT | CLI_SEED | CLI_WEIGHTS,
        .default_out = "figures/ch03",
        .default_weights = "data/weights/ch03_topics.safetensors",
        .opts = opts, .n_opts = 1,
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    // every input first: a bad one fails before anything is written
    chapter_check_configs(configs, "gpt2.json", "olmo2-7b.json", NULL);
    Trained t;
    trained_load(&t, a.weights);
    trained_require(&t, "gqa|gated", -1, "chapter 3 (its cache is K and V per KV head)");
    if (t.model->g.n_heads > 8) die_user("%s: the figure draws at most 8 heads, the model has %d", t.path, t.model->g.n_heads);
    ensure_out_dir(a.out);
    figure_heads(&a, &t);
    figure_decode(&a, &t);
    figure_kv_memory(&a, configs);
    char curve[160];
    snprintf(curve, sizeof curve, "Training the chapter-3 model on the %s task", t.task.name);
    trained_plot_curve(&t, &a, "04_training_curve", curve);
    figure_schematic(&a, configs);
    trained_free(&t);
    printf("ch03: wrote figures to %s/ (01_heads, 02_decode_equals_forward, 03_kv_cache_vs_context, 04_training_curve, 05_mha_schematic)\n", a.out);
    free(a.pos);
    return 0;
}
