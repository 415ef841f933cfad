// Chapter 12: KV-cache quantization, and how it compounds with GQA and MLA.
//
// GQA and MLA shrink the cache by caching fewer numbers per token; quantization shrinks it by spending
// fewer bits on each number. The two multiply: a 4-bit MLA latent is about 4x smaller than a bf16 one,
// which is already ~57x smaller than MHA at DeepSeek-V3's width. But bits are not free: every group of
// codes carries a scale and a zero point, and the error lands in attention scores and outputs.
// The quantizers (common/kvquant.h): fp8, int8 per vector, intB per group, KIVI (keys per channel, values
// per token; Liu et al., 2024), and TurboQuant (a random rotation, then a Lloyd-Max codebook per
// coordinate, optionally a 1-bit QJL sketch of the residual; Zandieh et al., 2024 and 2025). KVQuant
// (Hooper et al., 2024) is the source of "quantize keys per channel, before RoPE"; these caches hold
// keys after RoPE, as KIVI's do. The quantized caches are options of GQA's and MLA's decode paths
// (chapters 3 and 5, kvq_model.h); every figure measures them on the trained models of chapters 3-5 and 9,
// or counts real configs.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "03_mha/mha.h"
#include "12_kvquant/kvq_model.h"
#include "attention.h"
#include "chapter.h"
#include "check.h"
#include "cli.h"
#include "heatmap.h"
#include "kvcache.h"
#include "kvquant.h"
#include "mathx.h"
#include "plot.h"
#include "rng.h"

// ---- the quantizers compared ----------------------------------------------------------------------------

typedef enum { FAM_FLOAT, FAM_INT, FAM_KIVI, FAM_TURBO, FAM_QJL, N_FAM } Family;
static const char *const FAMILY_LABEL[N_FAM] = {
    "float formats: bf16, fp8 (e4m3)",
    "integers: int8 per vector, int4/3/2 per group (zero point + scale)",
    "KIVI: keys per channel, values per token (4/3/2 bits)",
    "TurboQuant: rotation + Lloyd-Max codebook (4/3/2 bits)",
    "TurboQuant + 1-bit QJL sketch on keys (4/3/2 bits)",
};
static const int FAMILY_COLOR[N_FAM] = {COLOR_OTHER, COLOR_GQA, COLOR_SWA, COLOR_MLA, COLOR_DSA};

// Each scheme in two spellings: on the tiny models (head vectors of 16 dims: one group of 16, KIVI chunks
// of 16 tokens) and on 128-wide vectors (groups of 32, the usual choice).
typedef struct {
    const char *tiny, *wide;
    Family fam;
} SchemeSpec;
static const SchemeSpec SCHEMES[] = {
    {"bf16", "bf16", FAM_FLOAT},         {"fp8", "fp8", FAM_FLOAT},
    {"int8", "int8", FAM_INT},           {"int4:16", "int4:32", FAM_INT},       {"int3:16", "int3:32", FAM_INT},
    {"int2:16", "int2:32", FAM_INT},     {"kivi4:16", "kivi4:32", FAM_KIVI},   {"kivi3:16", "kivi3:32", FAM_KIVI},
    {"kivi2:16", "kivi2:32", FAM_KIVI},  {"turbo4", "turbo4", FAM_TURBO},      {"turbo3", "turbo3", FAM_TURBO},
    {"turbo2", "turbo2", FAM_TURBO},     {"turbo4+qjl", "turbo4+qjl", FAM_QJL}, {"turbo3+qjl", "turbo3+qjl", FAM_QJL},
    {"turbo2+qjl", "turbo2+qjl", FAM_QJL},
};
enum { N_SCHEMES = (int)(sizeof SCHEMES / sizeof SCHEMES[0]) };

static int scheme_index(const char *tiny) {
    for (int i = 0; i < N_SCHEMES; i++)
        if (!strcmp(SCHEMES[i].tiny, tiny)) return i;
    CHECK(0, "no scheme %s", tiny);
    return -1;
}

#define QUANT_SEED 0x12C0DEULL   // every rotation and sketch comes from this seed

// One line per family through its schemes: x[i], y[i] per scheme (NAN: not drawn), into a line chart.
static void family_chart(const CliArgs *a, const char *name, const char *title, const char *subtitle, const char *ylabel,
                         const double *x, const double *y, const char *note) {
    double fx[N_FAM][N_SCHEMES], fy[N_FAM][N_SCHEMES];
    PlotSeries s[N_FAM];
    int n = 0;
    for (int f = 0; f < N_FAM; f++) {
        int k = 0;
        for (int i = 0; i < N_SCHEMES; i++)
            if (SCHEMES[i].fam == (Family)f && isfinite(y[i])) {
                fx[f][k] = x[i];
                fy[f][k++] = y[i];
            }
        if (k) s[n++] = (PlotSeries){.label = FAMILY_LABEL[f], .x = fx[f], .y = fy[f], .n = k, .color = FAMILY_COLOR[f],
                                     .markers = 1};
    }
    LineChart c = {.title = title, .subtitle = subtitle, .xlabel = "bits per cached element, scales and zero points included",
                   .ylabel = ylabel, .logy = 1, .xmin = 0, .xmax = 17, .series = s, .n_series = n, .note = note,
                   .legend_pos = 3};
    char path[1024];
    plot_line_chart(&c, path_join(path, sizeof path, a->out, name), a->png, a->svg);
}

// ---- Figure 1: synthetic keys with outlier channels ----------------------------------------------------------

enum { SYN_D = 128, SYN_T = 512, SYN_Q = 64 };
static const int OUTLIER_CHANNELS[] = {5, 38, 77, 110};

// n keys of d channels like a real model's: unit normal, except a few fixed channels with a large offset
// and spread (the outlier channels KIVI's and KVQuant's plots show in Llama's keys).
static void synthetic_keys(float *k, int n, int d, Rng *r) {
    for (int t = 0; t < n; t++)
        for (int c = 0; c < d; c++) {
            float z = rng_normal(r);
            int out = 0;
            for (size_t o = 0; o < sizeof OUTLIER_CHANNELS / sizeof OUTLIER_CHANNELS[0]; o++) out |= c == OUTLIER_CHANNELS[o];
            k[(size_t)t * d + c] = out ? 12.0f + 8.0f * z : z;
        }
}

// Codes and decodes n rows of width d (one vector per row) in role, original domain.
static void round_trip(float *y, const float *x, int n, int d, const KvqScheme *s, KvqRole role) {
    KvQuant *q = kvq_new(s, QUANT_SEED);
    KvqStream *st = kvq_stream_new(q, role, &d, 1, n);
    for (int t = 0; t < n; t++) kvq_put(st, t, x + (size_t)t * d);
    kvq_get(st, y, (size_t)d, 0, n - 1, 1);
    kvq_stream_free(st);
    kvq_free(q);
}

// o (nq, d): one head's attention of nq queries over n keys and values, by the attention core.
static void attend_all(float *o, const float *q, const float *k, const float *v, int nq, int n, int d) {
    AttnHeads h = {.n_heads = 1, .n_kv_heads = 1, .dk = d, .dv = d, .scale = 1.0f / sqrtf((float)d)};
    AttnKeys ks = {.k = k, .v = v, .k_stride = (size_t)d, .k_head = (size_t)d, .v_stride = (size_t)d, .v_head = (size_t)d};
    attn_keys_span(&ks, 0, n - 1, 0, n);
    float *work = mallocCheck(sizeof(float) * attn_scratch_floats(&h, n));
    for (int i = 0; i < nq; i++) attn_query(o + (size_t)i * d, NULL, 0, NULL, q + (size_t)i * d, &ks, &h, 0, 1, work);
    free(work);
}

static double rel_err(const float *a, const float *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / den);
}

static void figure_synthetic(const CliArgs *a) {
    Rng r;
    rng_seed(&r, a->seed);
    size_t nk = (size_t)SYN_T * SYN_D, nq = (size_t)SYN_Q * SYN_D;
    float *K = mallocCheck(sizeof(float) * (4 * nk + 3 * nq)), *V = K + nk, *Kq = V + nk, *Vq = Kq + nk;
    float *Q = Vq + nk, *O = Q + nq, *Oq = O + nq;
    synthetic_keys(K, SYN_T, SYN_D, &r);
    rng_fill_normal(&r, V, (long)nk, 1.0f);
    rng_fill_normal(&r, Q, (long)nq, 1.0f);
    attend_all(O, Q, K, V, SYN_Q, SYN_T, SYN_D);
    double bits[N_SCHEMES], err[N_SCHEMES], kerr[N_SCHEMES];
    printf("  01 synthetic keys (%d x %d, %d outlier channels), attention output error:\n", SYN_T, SYN_D,
           (int)(sizeof OUTLIER_CHANNELS / sizeof OUTLIER_CHANNELS[0]));
    for (int i = 0; i < N_SCHEMES; i++) {
        KvqScheme s = kvq_scheme(SCHEMES[i].wide);
        round_trip(Kq, K, SYN_T, SYN_D, &s, KVQ_KEY);
        round_trip(Vq, V, SYN_T, SYN_D, &s, KVQ_VALUE);
        attend_all(Oq, Q, Kq, Vq, SYN_Q, SYN_T, SYN_D);
        bits[i] = 4.0 * (kvq_vector_bytes(&s, SYN_D, KVQ_KEY) + kvq_vector_bytes(&s, SYN_D, KVQ_VALUE)) / SYN_D;
        err[i] = rel_err(Oq, O, nq);
        kerr[i] = rel_err(Kq, K, nk);
        printf("    %-11s %5.2f bits   keys %.2e   attention output %.2e\n", s.name, bits[i], kerr[i], err[i]);
    }
    char sub[300];
    snprintf(sub, sizeof sub, "%d keys of %d dims, 4 channels with offset 12 and spread 8 (the rest unit normal), "
             "values unit normal, %d random queries; error = ||o~ - o|| / ||o||", SYN_T, SYN_D, SYN_Q);
    family_chart(a, "01_outlier_keys_error_vs_bits", "Attention error per bit on keys with outlier channels", sub,
                 "relative error of the attention output (log scale)", bits, err,
                 "groups of 32 channels (int) or 32 tokens (KIVI keys), fp16 scales and zero points; TurboQuant keeps one "
                 "fp16 norm per 128-dim vector. fp32 is exact (error 0, not drawn). common/kvquant.c");
    free(K);
}

// ---- the trained models, measured once for figures 2 to 5 -----------------------------------------------------

typedef struct {
    const char *path, *label;
    int setting;              // -1, or the recall setting (MHA, GQA, MQA, MLA, ...) it is a seed of
    const char *rope;         // MLA's RoPE key in this scheme instead of the latent's, or NULL
    Trained t;
    KvqEval ref;              // fp32 caches
    KvqEval ev[N_SCHEMES];
    double bpt_ref, bpt[N_SCHEMES], bits[N_SCHEMES];
} Measured;

// The recall settings of figure 5; the last is the MLA models again with their RoPE key kept in bf16
// (only the latent quantized), as DeepSeek-V3.2's FP8 cache keeps it.
enum { SET_MHA, SET_GQA, SET_MQA, SET_MLA, SET_MLA_ROPE, N_SET, N_FLAG = SET_MLA_ROPE };
static const char *const SET_NAME[N_SET] = {"MHA (4 KV heads)", "GQA (2 KV heads)", "MQA (1 KV head)",
                                            "MLA (latent 32 + RoPE key 8)", "MLA, RoPE key kept in bf16"};
static const int SET_COLOR[N_SET] = {COLOR_MHA, COLOR_GQA, COLOR_MQA, COLOR_MLA, COLOR_DSA};

static void measure_all(Measured *ms, int n, int n_samples, uint64_t seed) {
    // models are independent: one per thread (each with its own quantizers), the same bits for any count
    #pragma omp parallel for schedule(dynamic)
    for (int k = 0; k < n; k++) {
        Measured *m = &ms[k];
        Model *model = m->t.model;
        KvQuant *qs[N_SCHEMES + 1] = {NULL};   // [0]: fp32
        KvqScheme sc[N_SCHEMES];
        for (int i = 0; i < N_SCHEMES; i++) {
            sc[i] = kvq_scheme(SCHEMES[i].tiny);
            qs[i + 1] = kvq_new(&sc[i], QUANT_SEED);
        }
        KvqScheme rs = kvq_scheme(m->rope ? m->rope : "fp32");
        KvQuant *rope = m->rope ? kvq_new(&rs, QUANT_SEED) : NULL;
        KvqEval ev[N_SCHEMES + 1];
        kvq_evaluate(model, &m->t.task, qs, N_SCHEMES + 1, rope, seed, n_samples, n_samples < 8 ? n_samples : 8, ev);
        kvq_free(rope);
        m->ref = ev[0];
        m->bpt_ref = kvq_model_bytes_per_token(model, NULL, NULL);
        double elems = kvq_model_elems_per_token(model);
        for (int i = 0; i < N_SCHEMES; i++) {
            m->ev[i] = ev[i + 1];
            m->bpt[i] = kvq_model_bytes_per_token(model, &sc[i], m->rope ? &rs : NULL);
            m->bits[i] = 8.0 * m->bpt[i] / elems;
            kvq_free(qs[i + 1]);
        }
    }
}

// Figures 2 and 3: the attention layers' output error and the logit error, averaged over the models.
static void figure_model_errors(const CliArgs *a, const Measured *ms, int n) {
    double bits[N_SCHEMES], attn[N_SCHEMES], logit[N_SCHEMES];
    printf("  02/03 trained models (mean of %d): bits, attention-output error, logit error\n", n);
    for (int i = 0; i < N_SCHEMES; i++) {
        bits[i] = attn[i] = logit[i] = 0.0;
        for (int k = 0; k < n; k++) {
            bits[i] += ms[k].bits[i] / n;
            attn[i] += ms[k].ev[i].attn_err / n;
            logit[i] += ms[k].ev[i].logit_err / n;
        }
        printf("    %-11s %5.2f bits   attention %.2e   logits %.2e\n", SCHEMES[i].tiny, bits[i], attn[i], logit[i]);
    }
    char sub[300];
    snprintf(sub, sizeof sub, "mean over the %d trained models of chapters 3, 4, 5 and 9; each attention layer fed the "
             "fp32 model's inputs, so the error is the cache's alone", n);
    const char *note = "head vectors of 16 dims: a group is a whole vector (int4:16), KIVI chunks are 16 tokens, and "
                       "TurboQuant's fp16 norm costs 1 bit per element; MLA's latent (32) and RoPE key (8) are coded "
                       "apart. fp32 is exact (not drawn).";
    family_chart(a, "02_models_attention_error_vs_bits", "Trained models: attention-output error per bit", sub,
                 "relative error of the attention layers' outputs (log scale)", bits, attn, note);
    snprintf(sub, sizeof sub, "mean over the %d trained models, each decoding with every layer's cache quantized", n);
    const char *note3 = "the whole model decodes token by token, so each layer's error feeds the next. Head vectors of "
                        "16 dims: a group is a whole vector (int4:16), KIVI chunks are 16 tokens, TurboQuant's fp16 norm "
                        "costs 1 bit per element; MLA's latent (32) and RoPE key (8) are coded apart. fp32 is exact.";
    family_chart(a, "03_models_logit_error_vs_bits", "Trained models: logit error per bit", sub,
                 "relative error of the logits at scored positions (log scale)", bits, logit, note3);
}

// Figure 4: accuracy of every model with every quantizer, a table in colour.
static void figure_accuracy_table(const CliArgs *a, const Measured *ms, int n, int n_samples) {
    int cols = N_SCHEMES + 1;
    float *acc = mallocCheck(sizeof(float) * (size_t)n * cols);
    const char *rows[16], *col[N_SCHEMES + 1];
    col[0] = "fp32";
    for (int i = 0; i < N_SCHEMES; i++) col[i + 1] = SCHEMES[i].tiny;
    printf("  04 accuracy (%%) by model and quantizer\n    %-40s", "");
    for (int j = 0; j < cols; j++) printf(" %10s", col[j]);
    printf("\n");
    for (int k = 0; k < n && k < 16; k++) {
        rows[k] = ms[k].label;
        acc[(size_t)k * cols] = (float)(100.0 * ms[k].ref.accuracy);
        for (int i = 0; i < N_SCHEMES; i++) acc[(size_t)k * cols + 1 + i] = (float)(100.0 * ms[k].ev[i].accuracy);
        printf("    %-40.40s", rows[k]);
        for (int j = 0; j < cols; j++) printf(" %10.1f", acc[(size_t)k * cols + j]);
        printf("\n");
    }
    HeatPanel p = {.values = acc, .rows = n < 16 ? n : 16, .cols = cols, .title = "", .row_labels = rows,
                   .col_labels = col, .xlabel = "cache quantizer (tiny-model spelling: groups and KIVI chunks of 16)"};
    char sub[300];
    snprintf(sub, sizeof sub, "decoded token by token with every attention layer's cache quantized; %d held-out sample%s "
             "per model (recall: the answers after ':'; induction: the repeated half)", n_samples, n_samples == 1 ? "" : "s");
    HeatmapFigure f = {.title = "Where quantization costs accuracy: every model, every quantizer", .subtitle = sub,
                       .panels = &p, .n_panels = 1, .vmin = 0, .vmax = 100, .show_values = 1,
                       .colorbar_label = "accuracy (%)",
                       .note = "the MQA model never learned the task (it answers some value seen, about 1/4 of the time); "
                               "bits per element with overhead: see 02"};
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "04_accuracy_by_model_and_quantizer"), a->png, a->svg);
    free(acc);
}

// Figure 5: recall accuracy against bytes per token: GQA and MLA multiplied by quantization. One line per
// setting, from its fp32 cache down through bf16, fp8 and TurboQuant at 4, 3 and 2 bits (the integer
// schemes sit in figure 4's table).
static void figure_compounding(const CliArgs *a, const Measured *ms, int n) {
    static const char *const STEPS[] = {"fp32", "bf16", "fp8", "turbo4", "turbo3", "turbo2"};
    enum { NP = sizeof STEPS / sizeof STEPS[0] };
    double x[N_SET][NP], y[N_SET][NP];
    char labels[N_SET][160];
    PlotSeries s[N_SET];
    int ns = 0, seeds_max = 0;
    printf("  05 recall accuracy (%%) against KV bytes per token, mean [min, max] over seeds\n");
    for (int set = 0; set < N_SET; set++) {
        int seeds = 0;
        for (int k = 0; k < n; k++) seeds += ms[k].setting == set;
        if (!seeds) continue;
        seeds_max = seeds > seeds_max ? seeds : seeds_max;
        double spread = 0.0;
        for (int p = 0; p < NP; p++) {
            int i = p ? scheme_index(STEPS[p]) : -1;   // step 0: the fp32 cache
            double sum = 0, lo = 1e9, hi = -1e9, bytes = 0;
            for (int k = 0; k < n; k++) {
                if (ms[k].setting != set) continue;
                double acc = 100.0 * (i < 0 ? ms[k].ref.accuracy : ms[k].ev[i].accuracy);
                bytes = i < 0 ? ms[k].bpt_ref : ms[k].bpt[i];
                sum += acc;
                lo = fmin(lo, acc);
                hi = fmax(hi, acc);
            }
            x[ns][p] = bytes;
            y[ns][p] = sum / seeds;
            spread = fmax(spread, hi - lo);
            printf("    %-30s %-8s %6.0f B/token  %5.1f [%5.1f, %5.1f]\n", SET_NAME[set], STEPS[p], bytes, sum / seeds, lo, hi);
        }
        if (seeds > 1)
            snprintf(labels[ns], sizeof labels[ns], "%s (mean of %d seeds, spread up to %.1f points)", SET_NAME[set], seeds,
                     spread);
        else
            snprintf(labels[ns], sizeof labels[ns], "%s", SET_NAME[set]);
        s[ns] = (PlotSeries){.label = labels[ns], .x = x[ns], .y = y[ns], .n = NP, .color = SET_COLOR[set], .markers = 1};
        ns++;
    }
    char sub[300], chance_label[64];
    snprintf(sub, sizeof sub, "from fp32 (right) down to TurboQuant 2-bit (left); %s",
             seeds_max > 1 ? "mean over the seeds of each setting" : "one trained model per setting");
    // the recall tasks answer with one of their values: guessing among them is chance
    double chance = 0.0;
    for (int k = n - 1; k >= 0; k--)
        if (ms[k].setting >= 0) chance = 100.0 * chapter_chance(&ms[k].t.task);
    snprintf(chance_label, sizeof chance_label, "chance (%.1f%%)", chance);
    PlotRef ref = {.label = chance_label, .value = chance};
    LineChart c = {.title = "Fewer KV heads or a latent, times fewer bits: the savings multiply", .subtitle = sub,
                   .claim = "On our recall models the bytes saved by fewer KV heads or a latent and by fewer bits per "
                            "number multiply; accuracy holds down to about 3 bits except where the model never learned.",
                   .xlabel = "KV cache per token, all layers (bytes, log scale)", .ylabel = "held-out recall accuracy (%)",
                   .logx = 1, .xfmt = AXIS_BYTES, .ymin = 0, .ymax = 100, .series = s, .n_series = ns,
                   .refs = &ref, .n_refs = 1, .legend_pos = 3,
                   .note = "tiny 2-layer models of chapters 4 and 5, same data and steps; the MQA model never learned the "
                           "task. Bytes: codes plus fp16 norms, as ./kvcache --kv-quant counts them. Quantizing MLA's 8-dim "
                           "RoPE key is what costs it accuracy: kept in bf16, the latent alone quantizes as well as GQA."};
    char path[1024];
    plot_line_chart(&c, path_join(path, sizeof path, a->out, "05_recall_vs_kv_bytes"), a->png, a->svg);
}

// ---- Figure 6: why keys are quantized per channel ----------------------------------------------------------------

// The cached keys (after RoPE) of the first layer of a trained GQA model on its task's example: k (T, G*dh).
static int trained_keys(float *k, Trained *t) {
    Model *m = t->model;
    const ModelGeometry *g = &m->g;
    int T = t->n_tokens, d = g->d_model, kvd = g->n_kv_heads * g->head_dim;
    model_forward(m, t->tokens, NULL, 1, T);
    ParamTensor pt[8];
    int np = gqa_mixer.param_tensors(g, 0, pt, 8);
    const float *wk = NULL;
    for (int i = 0; i < np; i++)
        if (!strcmp(pt[i].name, "wk")) wk = m->params + m->layer[0].mixer + pt[i].offset;
    CHECK(wk, "no wk");
    linear_forward(k, m->la[0].xn1, wk, NULL, T, d, kvd);
    mha_rope_rows(k, T, T, g->n_kv_heads, g->head_dim, g->head_dim, mha_layer_rope_theta(g, 0), 0);
    return kvd;
}

// Codes x (n tokens of nv vectors of width vw) with scheme and writes |error| / rms(x) into e; returns the
// mean of e.
static double key_errors(float *e, const float *x, int n, int nv, int vw, const char *scheme) {
    KvqScheme s = kvq_scheme(scheme);
    int d = nv * vw, *w = mallocCheck(sizeof(int) * (size_t)nv);
    for (int v = 0; v < nv; v++) w[v] = vw;
    float *y = mallocCheck(sizeof(float) * (size_t)n * d);
    KvQuant *q = kvq_new(&s, QUANT_SEED);
    KvqStream *st = kvq_stream_new(q, KVQ_KEY, w, nv, n);
    for (int t = 0; t < n; t++) kvq_put(st, t, x + (size_t)t * d);
    kvq_get(st, y, (size_t)d, 0, n - 1, 1);
    double ss = 0.0, sum = 0.0;
    for (size_t i = 0; i < (size_t)n * d; i++) ss += (double)x[i] * x[i];
    double rms = sqrt(ss / ((double)n * d));
    for (size_t i = 0; i < (size_t)n * d; i++) {
        e[i] = (float)(fabs((double)y[i] - x[i]) / rms);
        sum += e[i];
    }
    kvq_stream_free(st);
    kvq_free(q);
    free(y);
    free(w);
    return sum / ((double)n * d);
}

static void figure_key_channels(const CliArgs *a, Trained *gqa) {
    enum { NQ = 3, ST = 32, SD = 32 };
    static const char *const Q[NQ] = {"int2:16", "kivi2:16", "turbo2"};
    static const char *const WHAT[NQ] = {"int2 per token (16 channels)", "KIVI-2 per channel (16 tokens)",
                                         "TurboQuant 2 bits"};
    // top: synthetic keys, two vectors of 16 channels per token, channels 5 and 21 outliers
    Rng r;
    rng_seed(&r, a->seed + 6);
    float syn[ST * SD];
    for (int t = 0; t < ST; t++)
        for (int c = 0; c < SD; c++) {
            float z = rng_normal(&r);
            syn[t * SD + c] = c == 5 || c == 21 ? 12.0f + 8.0f * z : z;
        }
    // bottom: the keys the chapter 4 GQA model caches on its example (2 heads of 16 dims, after RoPE)
    int T = gqa->n_tokens, dh = gqa->model->g.head_dim, G = gqa->model->g.n_kv_heads;
    float *tr = mallocCheck(sizeof(float) * (size_t)T * G * dh);
    trained_keys(tr, gqa);
    const float *src[2] = {syn, tr};
    int rows[2] = {ST, T}, nv[2] = {SD / 16, G}, vw[2] = {16, dh};
    float *err = mallocCheck(sizeof(float) * (size_t)NQ * (ST * SD + T * G * dh));
    HeatPanel p[2 * NQ];
    char titles[2 * NQ][96];
    double mean[2][NQ];
    float *at = err;
    for (int row = 0; row < 2; row++)
        for (int k = 0; k < NQ; k++) {
            mean[row][k] = key_errors(at, src[row], rows[row], nv[row], vw[row], Q[k]);
            snprintf(titles[row * NQ + k], sizeof titles[0], "%s: %s", row ? "trained GQA" : "synthetic", WHAT[k]);
            p[row * NQ + k] = (HeatPanel){.values = at, .rows = rows[row], .cols = nv[row] * vw[row],
                                          .title = titles[row * NQ + k], .xlabel = "channel", .ylabel = k ? NULL : "token"};
            at += (size_t)rows[row] * nv[row] * vw[row];
        }
    char sub[200], note[900];
    snprintf(sub, sizeof sub, "|error| of 2-bit keys / the keys' RMS; top: synthetic keys with 2 outlier channels, "
             "bottom: chapter 4's GQA model");
    snprintf(note, sizeof note, "Synthetic keys: channels 5 and 21 large (offset 12, spread 8). A per-token group "
             "stretches its range over them and every other channel of the token pays (mean %.2f); per-channel ranges "
             "confine the error to those channels (%.2f); the rotation spreads it (%.2f). The trained model's cached keys: "
             "mean %.2f, %.2f, %.2f: layer 0 of ch04_recall_g2 on its task's example, 2 KV heads x 16 dims after RoPE "
             "(each head one vector: its own int2 group, its own rotation); KIVI's chunks are 16 tokens.",
             mean[0][0], mean[0][1], mean[0][2], mean[1][0], mean[1][1], mean[1][2]);
    HeatmapFigure f = {.title = "Why keys are quantized per channel", .subtitle = sub, .note = note, .panels = p, .n_panels = 2 * NQ,
                       .panels_per_row = NQ, .vmin = 0, .vmax = 1.5f, .show_values = 0, .cell_px = 7,
                       .colorbar_label = "|error| / RMS of the keys (clipped at 1.5)"};
    char path[1024];
    heatmap_figure(&f, path_join(path, sizeof path, a->out, "06_key_error_per_channel"), a->png, a->svg);
    printf("  06 mean |key error| / rms, synthetic: int2 %.3f, KIVI-2 %.3f, turbo2 %.3f; trained GQA: %.3f, %.3f, %.3f\n",
           mean[0][0], mean[0][1], mean[0][2], mean[1][0], mean[1][1], mean[1][2]);
    free(tr);
    free(err);
}

// ---- Figure 7: DeepSeek-V3 and Llama 3 70B at 128K, and the "6x at 3 bits" check --------------------------------

static void figure_real_models(const CliArgs *a, const char *configs) {
    ModelGeometry llama, ds;
    chapter_config(&llama, configs, "llama3-70b.json", "Llama 3 70B (GQA)");
    chapter_config(&ds, configs, "deepseek-v3.json", "DeepSeek-V3 (MLA)");
    // the same schemes for both, then DeepSeek-V3 with its RoPE key kept in bf16 (the latent quantized)
    static const struct { int model; const char *q, *rope; } BARS[] = {
        {0, "bf16", NULL}, {0, "fp8", NULL}, {0, "int4:32", NULL}, {0, "turbo4", NULL}, {0, "turbo3", NULL},
        {0, "int2:32", NULL}, {0, "turbo2", NULL},
        {1, "bf16", NULL}, {1, "fp8", NULL}, {1, "fp8", "bf16"}, {1, "int4:32", NULL}, {1, "turbo4", NULL},
        {1, "turbo3", NULL}, {1, "turbo3", "bf16"}, {1, "int2:32", NULL}, {1, "turbo2", NULL},
    };
    enum { NB = sizeof BARS / sizeof BARS[0], LLAMA_TURBO3 = 4 };
    const ModelGeometry *gs[2] = {&llama, &ds};
    const char *labels[NB];
    char lab[NB][96];
    double values[NB];
    int colors[NB];
    long ctx = 131072;
    printf("  07 at 128K tokens, one sequence:\n");
    for (int k = 0; k < NB; k++) {
        const ModelGeometry *g = gs[BARS[k].model];
        ModelGeometry one = *g;
        one.dtype_bytes = 1;
        double elems = kvcache_bytes_per_token(&one);
        KvqScheme s = kvq_scheme(BARS[k].q), r = kvq_scheme(BARS[k].rope ? BARS[k].rope : BARS[k].q);
        values[k] = kvcache_quant_total_bytes(g, &s, &r, ctx, 1);
        double bits = 8.0 * kvcache_quant_bytes_per_token(g, &s, &r) / elems;
        snprintf(lab[k], sizeof lab[k], "%s, %s%s (%.2f bits)", BARS[k].model ? "DeepSeek-V3" : "Llama 3 70B", s.name,
                 BARS[k].rope ? ", RoPE key bf16" : "", bits);
        labels[k] = lab[k];
        colors[k] = BARS[k].model ? (BARS[k].rope ? COLOR_DSA : COLOR_MLA) : COLOR_GQA;
        char b[32];
        printf("    %-48s %s\n", lab[k], fmt_bytes(b, sizeof b, values[k]));
    }
    // TurboQuant's announcement: "3-bit" keys and "at least 6x less KV memory". Against a 16-bit cache,
    // 3 bits per element give at most 16/3; one fp16 norm per 128-dim vector adds 16/128 bit.
    double pure = 16.0 / 3.0, with_norm = 16.0 / (3.0 + 16.0 / 128.0), need = 16.0 / 6.0;
    double at25 = 16.0 / (2.5 + 16.0 / 128.0), fp32 = 32.0 / (3.0 + 16.0 / 128.0);
    char sub[300], claim[400], note[900], b1[32], b2[32];
    snprintf(sub, sizeof sub, "one sequence; \"3-bit, 6x less\" checked: 3 bits give at most %.2fx against bf16 (%.2fx "
             "with the norm)", pure, with_norm);
    snprintf(claim, sizeof claim, "Against a bf16 cache, 3-bit TurboQuant gives %.2fx (Llama 3 70B at 128K: %s -> %s), "
             "not 6x; 6x needs %.2f bits per element, the paper's 2.5-bit setting (%.2fx).", with_norm,
             fmt_bytes(b1, sizeof b1, values[0]), fmt_bytes(b2, sizeof b2, values[LLAMA_TURBO3]), need, at25);
    snprintf(note, sizeof note, "Check of TurboQuant's \"3-bit keys, 6x less KV memory\": against bf16, 3 bits give at "
             "most %.2fx, %.2fx with its fp16 norm per 128 dims; 6x needs %.2f bits per element, overhead included: the "
             "paper's 2.5-bit setting (%.2fx with the norm), not 3 bits; against fp32, 3 bits give %.1fx. Counted from "
             "data/configs/llama3-70b.json and deepseek-v3.json (./kvcache --kv-quant SCHEME [--kv-quant-rope bf16]); bits "
             "per element include fp16 scales and zero points (int, per 32 channels) or norms (TurboQuant, per vector); "
             "MLA codes its 512-dim latent and 64-dim RoPE key apart (DeepSeek-V3.2's FP8 cache keeps the RoPE key in "
             "bf16 too).", pure, with_norm, need, at25, fp32);
    BarChart bc = {.title = "Quantization on top of GQA and MLA: DeepSeek-V3 and Llama 3 70B at 128K tokens",
                   .subtitle = sub, .claim = claim, .xlabel = "KV cache for one sequence of 128K tokens (bytes, log scale)",
                   .labels = labels, .values = values, .colors = colors, .n = NB, .fmt = AXIS_BYTES, .logx = 1,
                   .note = note};
    char path[1024];
    plot_bar_chart(&bc, path_join(path, sizeof path, a->out, "07_real_models_128k"), a->png, a->svg);
    printf("  6x at 3 bits: vs bf16 at most %.2fx (%.2fx with the norm); 6x needs %.2f bits; 2.5 bits + norm: %.2fx; "
           "vs fp32: %.1fx\n", pure, with_norm, need, at25, fp32);
    printf("  compounding: DeepSeek-V3 turbo3 %s vs Llama 3 70B bf16 %s at 128K (%.1fx)\n",
           fmt_bytes(b1, sizeof b1, values[12]), fmt_bytes(b2, sizeof b2, values[0]), values[0] / values[12]);
}

// ---- command line ----------------------------------------------------------------------------------------------

// "a.safetensors,b.safetensors" into paths: a name without '/' lives in wdir.
static int split_list(char paths[][1024], int cap, const char *flag, const char *list, const char *wdir) {
    int n = 0;
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0) die_user("%s: empty file name in '%s'", flag, list);
        if (n == cap) die_user("%s: at most %d files", flag, cap);
        char name[1024];
        if (len >= sizeof name) die_user("%s: file name too long", flag);
        memcpy(name, p, len);
        name[len] = '\0';
        if (strchr(name, '/')) snprintf(paths[n], 1024, "%s", name);
        else path_join(paths[n], 1024, wdir, name);
        n++;
        p = e ? e + 1 : p + len;
    }
    return n;
}

int main(int argc, char **argv) {
    const char *configs = "data/configs", *wdir = "data/weights";
    const char *lists[N_FLAG] = {"ch04_recall_g4.safetensors", "ch04_recall_g2.safetensors", "ch04_recall_g1.safetensors",
                                "ch05_recall_mla.safetensors"};
    int n_samples = 32;
    CliOpt opts[] = {
        {.name = "--configs", .type = OPT_STRING, .dst = &configs, .meta = "DIR",
         .help = "folder of Hugging Face config.json files (default data/configs)"},
        {.name = "--weights-dir", .type = OPT_STRING, .dst = &wdir, .meta = "DIR",
         .help = "folder of the trained models (default data/weights)"},
        {.name = "--mha", .type = OPT_STRING, .dst = &lists[SET_MHA], .meta = "FILE[,FILE...]",
         .help = "MHA recall models, one per seed (default ch04_recall_g4.safetensors; a name without '/' is in --weights-dir)"},
        {.name = "--gqa", .type = OPT_STRING, .dst = &lists[SET_GQA], .meta = "FILE[,FILE...]",
         .help = "GQA recall models (default ch04_recall_g2.safetensors)"},
        {.name = "--mqa", .type = OPT_STRING, .dst = &lists[SET_MQA], .meta = "FILE[,FILE...]",
         .help = "MQA recall models (default ch04_recall_g1.safetensors)"},
        {.name = "--mla", .type = OPT_STRING, .dst = &lists[SET_MLA], .meta = "FILE[,FILE...]",
         .help = "MLA recall models (default ch05_recall_mla.safetensors)"},
        {.name = "--samples", .type = OPT_INT, .dst = &n_samples, .meta = "N",
         .help = "held-out samples per model and quantizer (default 32; the attention error uses the first 8)", .min = 1, .max = 100000},
    };
    CliSpec spec = {
        .prog = "ch12",
        .summary = "Chapter 12: KV-cache quantization (fp8, int8/4/3/2, KIVI, TurboQuant + QJL) on the trained models, "
                   "and how it compounds with GQA and MLA.",
        .usage_extra = "With several files per setting (seeds), figure 05 draws their mean and the table their spread.",
        .flags = CLI_OUT | CLI_FORMAT | CLI_SEED,
        .default_out = "figures/ch12",
        .opts = opts, .n_opts = (int)(sizeof opts / sizeof opts[0]),
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);

    // every model first, so a missing or corrupt file is named before any figure is written
    enum { MAX_SEEDS = 16 };
    static char paths[N_SET][MAX_SEEDS][1024];
    static const char *const FLAG[N_FLAG] = {"--mha", "--gqa", "--mqa", "--mla"};
    int n_seeds[N_SET], n = 0;
    for (int s = 0; s < N_FLAG; s++) n_seeds[s] = split_list(paths[s], MAX_SEEDS, FLAG[s], lists[s], wdir);
    n_seeds[SET_MLA_ROPE] = n_seeds[SET_MLA];   // the same MLA models, their RoPE key kept in bf16
    memcpy(paths[SET_MLA_ROPE], paths[SET_MLA], sizeof paths[SET_MLA]);
    static const struct { const char *file, *label; } EXTRA[] = {
        {"ch03_induction.safetensors", "ch03 MHA, induction"},
        {"ch03_recall.safetensors", "ch03 MHA, recall"},
        {"ch09_attention.safetensors", "ch09 gated attention (2 layers)"},
        {"ch09_hybrid.safetensors", "ch09 3 DeltaNet : 1 gated attention"},
    };
    static char extra_paths[4][1024];
    Measured *ms = callocCheck(4 + N_SET * MAX_SEEDS, sizeof *ms);
    static char set_labels[N_SET][MAX_SEEDS][64];
    for (int e = 0; e < 4; e++) {
        ms[n].path = path_join(extra_paths[e], sizeof extra_paths[e], wdir, EXTRA[e].file);
        ms[n].label = EXTRA[e].label;
        ms[n++].setting = -1;
        if (e == 1)   // the recall settings sit between chapter 3's and chapter 9's models
            for (int s = 0; s < N_SET; s++)
                for (int k = 0; k < n_seeds[s]; k++) {
                    snprintf(set_labels[s][k], sizeof set_labels[s][k], "ch0%d %s%s", s >= SET_MLA ? 5 : 4, SET_NAME[s],
                             k ? " (seed)" : "");
                    ms[n].path = paths[s][k];
                    ms[n].label = set_labels[s][k];
                    ms[n].rope = s == SET_MLA_ROPE ? "bf16" : NULL;
                    ms[n++].setting = s;
                }
    }
    for (int k = 0; k < n; k++) {
        trained_load(&ms[k].t, ms[k].path);
        // a setting's models must be what its flag says: recall models with that attention in every layer
        int set = ms[k].setting;
        if (set < 0) continue;
        const Model *m = ms[k].t.model;
        const char *want = set >= SET_MLA ? "mla" : "gqa";
        for (int l = 0; l < m->g.n_layers; l++)
            if (strcmp(m->mixers[l].ops->name, want) != 0)
                die_user("%s: %s expects %s models, layer %d is %s", ms[k].path, FLAG[set >= SET_MLA ? SET_MLA : set], want,
                         l, m->mixers[l].ops->name);
        if (ms[k].t.task.kind != TASK_RECALL)
            die_user("%s: %s expects recall models, this one learned %s", ms[k].path, FLAG[set >= SET_MLA ? SET_MLA : set],
                     ms[k].t.task.name);
    }
    // every input before the first figure: the two configs figure 7 reads, too
    chapter_check_configs(configs, "llama3-70b.json", "deepseek-v3.json", NULL);
    ensure_out_dir(a.out);

    figure_synthetic(&a);
    measure_all(ms, n, n_samples, a.seed);
    // figure 4 shows one model per setting (the first seed), figures 2 and 3 the same without the bf16
    // RoPE-key variant (their mean is over the trained models as they are), figure 5 all of them
    Measured *firsts = mallocCheck(sizeof(Measured) * 2 * (size_t)n), *plain = firsts + n;
    int nf = 0, np = 0;
    for (int k = 0; k < n; k++)
        if (ms[k].setting < 0 || ms[k].path == paths[ms[k].setting][0]) {
            firsts[nf++] = ms[k];
            if (ms[k].setting != SET_MLA_ROPE) plain[np++] = ms[k];
        }
    figure_model_errors(&a, plain, np);
    figure_accuracy_table(&a, firsts, nf, n_samples);
    figure_compounding(&a, ms, n);
    Trained *gqa = NULL;
    for (int k = 0; k < n; k++)
        if (ms[k].setting == SET_GQA && !gqa) gqa = &ms[k].t;
    figure_key_channels(&a, gqa);
    figure_real_models(&a, configs);
    for (int k = 0; k < n; k++) trained_free(&ms[k].t);
    free(firsts);
    free(ms);
    printf("ch12: wrote figures to %s/ (01_outlier_keys_error_vs_bits, 02_models_attention_error_vs_bits, "
           "03_models_logit_error_vs_bits, 04_accuracy_by_model_and_quantizer, 05_recall_vs_kv_bytes, "
           "06_key_error_per_channel, 07_real_models_128k)\n", a.out);
    free(a.pos);
    return 0;
}
