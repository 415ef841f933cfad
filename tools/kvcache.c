// kvcache: how much memory the decode cache of real models takes, from their Hugging Face config.json.
//
//   ./kvcache data/configs/llama3-8b.json data/configs/deepseek-v3.json --context 131072
//
// One row per model: layers (global / local), attention kind, KV bytes per token across all layers,
// fixed state (linear layers), and the total for --batch sequences of --context tokens. Sliding-window
// layers hold min(context, W) tokens, which is why a windowed model's total grows slower than
// "bytes per token x context". Hybrids (Qwen3-Next, Kimi Linear, MiniMax-01, Nemotron-H) keep two
// things apart: the KV bytes per token of their attention layers, which grow with context, and the fixed
// state of their linear layers (recurrent state, fp32 unless the config says otherwise, plus the short-conv
// state in the cache dtype), which does not; a line under the table splits the fixed state.
// --json prints the same numbers as JSON; --plot draws total vs context. --kv-quant SCHEME counts the cache
// quantized (chapter 12, common/kvquant.h): codes plus their scales, zero points and norms per token.
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "check.h"
#include "cli.h"
#include "geometry.h"
#include "hfconfig.h"
#include "kvcache.h"
#include "kvquant.h"
#include "plot.h"

static const char *dtype_names[] = {"bf16", "fp16", "fp32", "fp8"};
static const int dtype_bytes[] = {2, 2, 4, 1};

typedef struct {
    const char *path;
    ModelGeometry g;
    char dtype[24];          // "bf16" (from --dtype) or "fp32 (config)"
    char conv_dtype[16];     // the cache dtype's short name: "bf16" (from --dtype), "16-bit" (config)
    double per_token, fixed, state, conv, total;
    double plain_per_token;  // per token at the dtype, for the --kv-quant line
} Model;

static const KvqScheme *g_quant, *g_quant_rope;   // --kv-quant and --kv-quant-rope, or NULL

// The total at context for batch sequences: quantized when --kv-quant says so.
static double total_bytes(const ModelGeometry *g, long context, long batch) {
    return g_quant ? kvcache_quant_total_bytes(g, g_quant, g_quant_rope, context, batch) : kvcache_total_bytes(g, context, batch);
}

// Elements one token adds (the per-token bytes at 1 byte per element).
static double elems_per_token(const ModelGeometry *g) {
    ModelGeometry one = *g;
    one.dtype_bytes = 1;
    return kvcache_bytes_per_token(&one);
}

// "128K" for 131072, "1M" for 1048576, else the plain number.
static const char *fmt_tokens(char *buf, size_t cap, long n) {
    if (n >= 1048576 && n % 1048576 == 0) snprintf(buf, cap, "%ldM", n / 1048576);
    else if (n >= 1024 && n % 1024 == 0) snprintf(buf, cap, "%ldK", n / 1024);
    else snprintf(buf, cap, "%ld", n);
    return buf;
}

// "GQA 32q/8kv x 128", "MLA 512+64", "MLA 512+64, DSA key 128".
static void describe_attention(char *buf, size_t cap, const ModelGeometry *g) {
    int n;
    if (g->attn == ATTN_MLA)
        n = snprintf(buf, cap, "MLA %d+%d", g->kv_lora_rank, g->qk_rope_head_dim);
    else if (g->kv_one_tensor)
        n = snprintf(buf, cap, "%dq/1kv x %d, K = V", g->n_heads, g->head_dim);
    else
        n = snprintf(buf, cap, "%s %dq/%dkv x %d", geometry_attn_name(g), g->n_heads, g->n_kv_heads, g->head_dim);
    if (g->v_head_dim > 0 && g->attn != ATTN_MLA && n >= 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, "/%d", g->v_head_dim);
    if (g->swa_num_key_value_heads > 0 && n >= 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, ", local %dkv", g->swa_num_key_value_heads);
    if ((g->num_global_key_value_heads > 0 || g->global_head_dim > 0) && n >= 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, ", global %dkv x %d", g->num_global_key_value_heads > 0 ?
                      g->num_global_key_value_heads : g->n_kv_heads, g->global_head_dim > 0 ? g->global_head_dim : g->head_dim);
    if (g->index_n_heads > 0 && n >= 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, ", %s key %d", geometry_count(g, LAYER_COMPRESSED) ? "CSA" : "DSA",
                      g->index_head_dim);
    if (g->attn_output_gate != GATE_NONE && n >= 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, ", gated");
    if (g->linear_kind != LINEAR_NONE && n >= 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, " + %s", geometry_linear_name(g));
}

// "fp32", "bf16", "fp8" or "16-bit" for an element size in bytes; `sixteen` names 2 bytes.
static const char *dtype_short(int bytes, const char *sixteen) {
    return bytes == 4 ? "fp32" : bytes == 1 ? "fp8" : bytes == 2 ? sixteen : "?";
}

// "32 (32/0)", "62 (10/52, W 1024)", plus linear layers when there are any.
static void describe_layers(char *buf, size_t cap, const ModelGeometry *g) {
    int n_global = geometry_count(g, LAYER_GLOBAL), n_local = geometry_count(g, LAYER_LOCAL);
    int n_linear = geometry_count(g, LAYER_LINEAR), n_none = geometry_count(g, LAYER_NONE);
    int n = snprintf(buf, cap, "%d (%d/%d", g->n_layers, n_global, n_local);
    if (n_local > 0 && n >= 0 && (size_t)n < cap) n += snprintf(buf + n, cap - (size_t)n, ", W %d", g->sliding_window);
    if (n_linear > 0 && n >= 0 && (size_t)n < cap) n += snprintf(buf + n, cap - (size_t)n, ", %d linear", n_linear);
    if (n_none > 0 && n >= 0 && (size_t)n < cap) n += snprintf(buf + n, cap - (size_t)n, ", %d MLP-only", n_none);
    int n_chunked = geometry_count(g, LAYER_CHUNKED), n_csa = 0, n_hca = 0;
    for (int l = 0; l < g->n_layers; l++)
        if (g->layer_kind[l] == LAYER_COMPRESSED) geometry_layer_is_csa(g, l) ? n_csa++ : n_hca++;
    if (n_chunked > 0 && n >= 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, ", %d chunked C %d", n_chunked, g->attention_chunk_size);
    if (n_csa + n_hca > 0 && n >= 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, ", %d CSA, %d HCA", n_csa, n_hca);
    if (g->num_kv_shared_layers > 0 && n >= 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, ", %d KV-shared", g->num_kv_shared_layers);
    if (n >= 0 && (size_t)n < cap) snprintf(buf + n, cap - (size_t)n, ")");
}

// "128.00 KiB (131072 B)": human-readable, then exact.
static const char *fmt_both(char *buf, size_t cap, double bytes) {
    char h[32];
    snprintf(buf, cap, "%s (%.0f B)", fmt_bytes(h, sizeof h, bytes), bytes);
    return buf;
}

enum { N_COLS = 7, CELL = 96 };

static void print_table(const Model *m, int n, long context, long batch) {
    char tok[32];
    int beyond = 0;   // some model's context limit is below `context`
    char (*cells)[N_COLS][CELL] = callocCheck((size_t)n + 1, sizeof *cells);
    snprintf(cells[0][0], CELL, "model");
    snprintf(cells[0][1], CELL, "layers (global/local)");
    snprintf(cells[0][2], CELL, "attention");
    snprintf(cells[0][3], CELL, "dtype");
    snprintf(cells[0][4], CELL, "KV bytes per token");
    snprintf(cells[0][5], CELL, "fixed state");
    snprintf(cells[0][6], CELL, "total at %s tokens x %ld", fmt_tokens(tok, sizeof tok, context), batch);
    for (int i = 0; i < n; i++) {
        char (*row)[CELL] = cells[i + 1];
        snprintf(row[0], CELL, "%s", m[i].g.name);
        describe_layers(row[1], CELL, &m[i].g);
        describe_attention(row[2], CELL, &m[i].g);
        if (g_quant) snprintf(row[3], CELL, "%s (%.2f bits)", g_quant->name, 8.0 * m[i].per_token / elems_per_token(&m[i].g));
        else snprintf(row[3], CELL, "%s", m[i].dtype);
        fmt_both(row[4], CELL, m[i].per_token);
        fmt_both(row[5], CELL, m[i].fixed);
        fmt_both(row[6], CELL, m[i].total);
        if (m[i].g.max_seq_len > 0 && context > m[i].g.max_seq_len) {
            strcat(row[6], " *");
            beyond = 1;
        }
    }
    int width[N_COLS] = {0};
    for (int r = 0; r <= n; r++)
        for (int c = 0; c < N_COLS; c++)
            if ((int)strlen(cells[r][c]) > width[c]) width[c] = (int)strlen(cells[r][c]);
    for (int r = 0; r <= n; r++) {
        for (int c = 0; c < N_COLS - 1; c++) printf("%-*s  ", width[c], cells[r][c]);
        printf("%s", cells[r][N_COLS - 1]);
        printf("\n");
    }
    printf("(local layers hold min(context, W) tokens; K = 1024 tokens; KiB, MiB, GiB are powers of 2)\n");
    for (int i = 0; g_quant && i < n; i++) {
        const ModelGeometry *g = &m[i].g;
        char a[32], b[32], c[32];
        double model = kvcache_quant_model_bytes(g, g_quant, g_quant_rope);
        printf("%s: --kv-quant %s%s%s: %.2f bits per cached element, scales, zero points and norms included: %s per token "
               "instead of %s (%.2fx smaller)", g->name, g_quant->name, g_quant_rope && g->attn == ATTN_MLA ? ", RoPE key " : "",
               g_quant_rope && g->attn == ATTN_MLA ? g_quant_rope->name : "", 8.0 * m[i].per_token / elems_per_token(g),
               fmt_bytes(a, sizeof a, m[i].per_token), fmt_bytes(b, sizeof b, m[i].plain_per_token),
               m[i].plain_per_token / m[i].per_token);
        if (model > 0) printf("; plus %s per model (codebooks, rotation%s)", fmt_bytes(c, sizeof c, model),
                              g_quant->qjl ? ", sketch" : "");
        if (g_quant->family == KVQ_KIVI) printf("; the last (tokens mod %d) tokens stay in the cache dtype", g_quant->group);
        printf("\n");
    }
    if (beyond) printf("* the context is longer than the model's max_position_embeddings\n");
    for (int i = 0; i < n; i++) {
        const ModelGeometry *g = &m[i].g;
        double comp = kvcache_compressor_bytes(g);
        if (comp > 0) {
            char a[32];
            printf("%s: fixed state: %s of compressor buffers (fp32: the group being filled and its gate scores) in %d "
                   "compressed layers, per sequence\n", g->name, fmt_bytes(a, sizeof a, comp),
                   geometry_count(g, LAYER_COMPRESSED));
        }
        if (g->attention_sinks)
            printf("%s: learned attention sinks (one softmax logit per head): parameters, no cache cost\n", g->name);
        if (m[i].fixed - comp <= 0) continue;
        char a[32], b[32], c[48] = "no conv state";
        if (g->linear_conv_kernel_dim > 0) {
            char h[24];
            snprintf(c, sizeof c, "conv state %s %s", m[i].conv_dtype, fmt_bytes(h, sizeof h, m[i].conv));
        }
        printf("%s: fixed state: %s (recurrent state %s %s + %s) in %d %s layers, per sequence\n", g->name,
               fmt_bytes(a, sizeof a, m[i].fixed - comp), dtype_short(geometry_state_dtype_bytes(g), "16-bit"),
               fmt_bytes(b, sizeof b, m[i].state), c, geometry_count(g, LAYER_LINEAR), geometry_linear_name(g));
    }
    free(cells);
}

static void print_json(const Model *m, int n, long context, long batch) {
    cJSON *arr = cJSON_CreateArray();
    CHECK(arr, "out of memory");
    for (int i = 0; i < n; i++) {
        const ModelGeometry *g = &m[i].g;
        char h[32];
        cJSON *o = cJSON_CreateObject();
        CHECK(o, "out of memory");
        cJSON_AddStringToObject(o, "name", g->name);
        cJSON_AddStringToObject(o, "config", m[i].path);
        cJSON_AddNumberToObject(o, "layers", g->n_layers);
        cJSON_AddNumberToObject(o, "global_layers", geometry_count(g, LAYER_GLOBAL));
        cJSON_AddNumberToObject(o, "local_layers", geometry_count(g, LAYER_LOCAL));
        cJSON_AddNumberToObject(o, "linear_layers", geometry_count(g, LAYER_LINEAR));
        cJSON_AddNumberToObject(o, "mlp_only_layers", geometry_count(g, LAYER_NONE));
        cJSON_AddNumberToObject(o, "chunked_layers", geometry_count(g, LAYER_CHUNKED));
        cJSON_AddNumberToObject(o, "compressed_layers", geometry_count(g, LAYER_COMPRESSED));
        cJSON_AddNumberToObject(o, "kv_shared_layers", g->num_kv_shared_layers);
        if (g->attention_chunk_size > 0) cJSON_AddNumberToObject(o, "attention_chunk_size", g->attention_chunk_size);
        if (geometry_count(g, LAYER_COMPRESSED) > 0) {
            cJSON *cr = cJSON_AddArrayToObject(o, "compress_ratios");
            for (int l = 0; cr && l < g->n_layers; l++) cJSON_AddItemToArray(cr, cJSON_CreateNumber(g->compress_ratios[l]));
            cJSON_AddNumberToObject(o, "compressor_state_bytes", kvcache_compressor_bytes(g));
        }
        cJSON_AddBoolToObject(o, "attention_sinks", g->attention_sinks != 0);
        cJSON_AddNumberToObject(o, "sliding_window", g->sliding_window);
        cJSON_AddStringToObject(o, "attention", geometry_attn_name(g));
        cJSON_AddNumberToObject(o, "num_attention_heads", g->n_heads);
        cJSON_AddNumberToObject(o, "num_key_value_heads", g->n_kv_heads);
        cJSON_AddNumberToObject(o, "head_dim", g->head_dim);
        if (g->attn == ATTN_MLA) {
            cJSON_AddNumberToObject(o, "kv_lora_rank", g->kv_lora_rank);
            cJSON_AddNumberToObject(o, "qk_rope_head_dim", g->qk_rope_head_dim);
        }
        if (g->index_n_heads > 0) cJSON_AddNumberToObject(o, "index_head_dim", g->index_head_dim);
        cJSON_AddStringToObject(o, "dtype", m[i].dtype);
        cJSON_AddNumberToObject(o, "dtype_bytes", g->dtype_bytes);
        cJSON_AddNumberToObject(o, "kv_bytes_per_token", m[i].per_token);
        if (g_quant) {
            cJSON_AddStringToObject(o, "kv_quant", g_quant->name);
            if (g_quant_rope && g->attn == ATTN_MLA) cJSON_AddStringToObject(o, "kv_quant_rope", g_quant_rope->name);
            cJSON_AddNumberToObject(o, "kv_quant_bits_per_element", 8.0 * m[i].per_token / elems_per_token(g));
            cJSON_AddNumberToObject(o, "kv_bytes_per_token_unquantized", m[i].plain_per_token);
            cJSON_AddNumberToObject(o, "kv_quant_model_bytes", kvcache_quant_model_bytes(g, g_quant, g_quant_rope));
        }
        cJSON_AddNumberToObject(o, "fixed_state_bytes", m[i].fixed);
        if (g->linear_kind != LINEAR_NONE) {
            cJSON_AddStringToObject(o, "linear_kind", geometry_linear_name(g));
            cJSON_AddNumberToObject(o, "linear_num_key_heads", g->linear_num_key_heads);
            cJSON_AddNumberToObject(o, "linear_num_value_heads", g->linear_num_value_heads);
            cJSON_AddNumberToObject(o, "linear_key_head_dim", g->linear_key_head_dim);
            cJSON_AddNumberToObject(o, "linear_value_head_dim", g->linear_value_head_dim);
            cJSON_AddNumberToObject(o, "linear_conv_kernel_dim", g->linear_conv_kernel_dim);
            cJSON_AddNumberToObject(o, "recurrent_state_bytes", m[i].state);
            cJSON_AddNumberToObject(o, "state_dtype_bytes", geometry_state_dtype_bytes(g));
            cJSON_AddNumberToObject(o, "conv_state_bytes", m[i].conv);
        }
        cJSON_AddNumberToObject(o, "context", (double)context);
        cJSON_AddNumberToObject(o, "batch", (double)batch);
        cJSON_AddNumberToObject(o, "total_bytes", m[i].total);
        cJSON_AddStringToObject(o, "total", fmt_bytes(h, sizeof h, m[i].total));
        cJSON_AddItemToArray(arr, o);
    }
    char *s = cJSON_Print(arr);
    CHECK(s, "out of memory");
    printf("%s\n", s);
    free(s);
    cJSON_Delete(arr);
}

// The palette colour of a model's curve: the mechanism that shapes it (indexer, then window, then kind).
static int model_color(const ModelGeometry *g) {
    if (geometry_count(g, LAYER_LINEAR) > 0) return COLOR_LINEAR;
    if (g->index_n_heads > 0) return COLOR_DSA;
    if (geometry_count(g, LAYER_LOCAL) > 0) return COLOR_SWA;
    if (g->attn == ATTN_MLA) return COLOR_MLA;
    if (g->n_kv_heads == g->n_heads) return COLOR_MHA;
    return g->n_kv_heads == 1 ? COLOR_MQA : COLOR_GQA;
}

// The extension of --plot FILE picks the format; anything else is a user error (checked before any work).
static void plot_format_of(const char *flag, const char *file, int *png, int *svg) {
    size_t len = strlen(file);
    *svg = len > 4 && strcasecmp(file + len - 4, ".svg") == 0;
    *png = len > 4 && strcasecmp(file + len - 4, ".png") == 0;
    if (!*svg && !*png) die_user("%s: expected a file name ending in .svg or .png, got '%s'", flag, file);
}

static void plot_format(const char *file, int *png, int *svg) {
    plot_format_of("--plot", file, png, svg);
}

static void draw_plot(const Model *m, int n, const char *file, long batch, const char *dtype_label) {
    int png, svg;
    plot_format(file, &png, &svg);
    size_t len = strlen(file);
    char path[1024];
    if (len - 4 >= sizeof path) die_user("--plot: file name too long");
    snprintf(path, sizeof path, "%.*s", (int)(len - 4), file);

    enum { NPTS = 41 };   // 1K .. 1M, four points per doubling, so window kinks show
    double xs[NPTS];
    for (int p = 0; p < NPTS; p++) xs[p] = round(1024.0 * pow(2.0, p / 4.0));
    double (*ys)[NPTS] = mallocCheck(sizeof(*ys) * (size_t)n);
    char (*labels)[160] = mallocCheck(sizeof(*labels) * (size_t)n);
    PlotSeries *series = callocCheck((size_t)n, sizeof *series);
    int used[COLOR_COUNT] = {0};
    for (int i = 0; i < n; i++) {
        char a[64], b[32], c[32] = "";
        for (int p = 0; p < NPTS; p++) ys[i][p] = total_bytes(&m[i].g, (long)xs[p], batch);
        describe_attention(a, sizeof a, &m[i].g);
        if (m[i].fixed > 0) {   // hybrids: the flat part of the curve at short context
            char f[24];
            snprintf(c, sizeof c, " + %s state", fmt_bytes(f, sizeof f, m[i].fixed));
        }
        snprintf(labels[i], sizeof labels[i], "%s (%s%s): %s/token%s", m[i].g.name, a,
                 geometry_count(&m[i].g, LAYER_LOCAL) ? ", SWA" : "", fmt_bytes(b, sizeof b, m[i].per_token), c);
        int color = model_color(&m[i].g);
        // a colour's third curve (five hybrids, say) takes a palette colour nobody uses yet
        for (int k = 0; used[color] >= 2 && k < COLOR_COUNT; k++)
            if (used[k] == 0) color = k;
        // the same colour twice: tell the curves apart by dashes
        series[i] = (PlotSeries){.label = labels[i], .x = xs, .y = ys[i], .n = NPTS, .color = color,
                                 .dashed = used[color]++ % 2 == 1};
    }
    char subtitle[224];
    if (g_quant)
        snprintf(subtitle, sizeof subtitle, "batch %ld, cache quantized %s (scales, zero points and norms included), fixed "
                 "state %s; sliding-window layers hold min(context, W) tokens", batch, g_quant->name, dtype_label);
    else
        snprintf(subtitle, sizeof subtitle, "batch %ld, %s; sliding-window layers hold min(context, W) tokens; "
                 "linear layers hold a fixed state", batch, dtype_label);
    LineChart c = {
        .title = "KV cache memory vs context length",
        .subtitle = subtitle,
        .xlabel = "context length (tokens, log scale)",
        .ylabel = "KV cache (bytes, log scale)",
        .logx = 1, .logy = 1, .xfmt = AXIS_TOKENS, .yfmt = AXIS_BYTES,
        .xmin = 1024, .xmax = 1048576,
        .series = series, .n_series = n,
        .note = "geometry from each model's Hugging Face config.json (./kvcache)",
        .legend_pos = n > 4 ? 3 : 0,
    };
    plot_line_chart(&c, path, png, svg);
    free(ys);
    free(labels);
    free(series);
}


// ---- the layer strip: one row per model, one cell per layer, coloured by what the layer caches ----

typedef enum {
    STRIP_GLOBAL, STRIP_LOCAL, STRIP_CHUNKED, STRIP_MLA, STRIP_DSA, STRIP_DSA_SHARED, STRIP_CSA, STRIP_HCA,
    STRIP_GDN, STRIP_KDA, STRIP_LIGHTNING, STRIP_MAMBA2, STRIP_MLP, STRIP_COUNT
} StripKind;

static const char *strip_names[STRIP_COUNT] = {
    "global attention", "local (sliding window W)", "chunked (Llama 4)", "MLA", "MLA + DSA indexer",
    "MLA + shared indexer (no key)", "CSA (m = 4, indexer)", "HCA (m = 128)", "Gated DeltaNet", "KDA", "Lightning",
    "Mamba-2", "MLP-only (no cache)",
};

static StripKind strip_kind(const ModelGeometry *g, int l) {
    switch (g->layer_kind[l]) {
    case LAYER_LOCAL: return STRIP_LOCAL;
    case LAYER_CHUNKED: return STRIP_CHUNKED;
    case LAYER_NONE: return STRIP_MLP;
    case LAYER_COMPRESSED: return geometry_layer_is_csa(g, l) ? STRIP_CSA : STRIP_HCA;
    case LAYER_LINEAR:
        switch (g->linear_kind) {
        case LINEAR_KDA: return STRIP_KDA;
        case LINEAR_LIGHTNING: return STRIP_LIGHTNING;
        case LINEAR_MAMBA2: return STRIP_MAMBA2;
        default: return STRIP_GDN;
        }
    default:
        if (g->index_n_heads > 0 && g->indexer_types[l] == INDEXER_SHARED) return STRIP_DSA_SHARED;
        if (geometry_layer_has_indexer(g, l)) return STRIP_DSA;
        return g->attn == ATTN_MLA ? STRIP_MLA : STRIP_GLOBAL;
    }
}

// A palette colour, or a mix of one with white (t > 0) or black (t < 0), so related kinds share a hue.
static void strip_rgb(StripKind k, double rgb[3]) {
    static const struct { int color; double t; } map[STRIP_COUNT] = {
        [STRIP_GLOBAL] = {COLOR_MHA, 0}, [STRIP_LOCAL] = {COLOR_SWA, 0}, [STRIP_CHUNKED] = {COLOR_MQA, 0},
        [STRIP_MLA] = {COLOR_MLA, 0}, [STRIP_DSA] = {COLOR_DSA, 0}, [STRIP_DSA_SHARED] = {COLOR_DSA, 0.6},
        [STRIP_CSA] = {COLOR_DSA, -0.45}, [STRIP_HCA] = {COLOR_MLA, 0.5}, [STRIP_GDN] = {COLOR_LINEAR, 0},
        [STRIP_KDA] = {COLOR_LINEAR, -0.45}, [STRIP_LIGHTNING] = {COLOR_LINEAR, 0.55},
        [STRIP_MAMBA2] = {COLOR_OTHER, 0}, [STRIP_MLP] = {COLOR_OTHER, 0.8},
    };
    palette_rgb(map[k].color, rgb);
    double t = map[k].t;
    for (int c = 0; c < 3; c++) rgb[c] = t >= 0 ? rgb[c] + (1 - rgb[c]) * t : rgb[c] * (1 + t);
}

typedef struct {
    const Model *m;
    int n, max_layers;
    int present[STRIP_COUNT], any_shared;
    double label_w, cell_w, row_h, top, legend_top;
    char subtitle[160];
} Strip;

enum { STRIP_W = 900, STRIP_MARGIN = 24 };

// The row label: "name  (W 1024)" when the model has a window or chunk.
static void strip_label(const ModelGeometry *g, char *buf, size_t cap) {
    if (g->attention_chunk_size > 0) snprintf(buf, cap, "%s (C %d)", g->name, g->attention_chunk_size);
    else if (geometry_count(g, LAYER_LOCAL) + geometry_count(g, LAYER_COMPRESSED) > 0)
        snprintf(buf, cap, "%s (W %d)", g->name, g->sliding_window);
    else snprintf(buf, cap, "%s", g->name);
}

static void strip_hatch(cairo_t *cr, double x, double y, double w, double h) {
    cairo_save(cr);
    cairo_rectangle(cr, x, y, w, h);
    cairo_clip(cr);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_set_line_width(cr, 1.2);
    for (double d = -h; d < w; d += 3.5) {
        cairo_move_to(cr, x + d, y + h);
        cairo_line_to(cr, x + d + h, y);
    }
    cairo_stroke(cr);
    cairo_restore(cr);
}

// The legend: a swatch and a name per kind present, in rows that wrap at the figure's width.
static double strip_legend(cairo_t *cr, const Strip *S, double y, int draw) {
    plot_font(cr, 12, 0);
    double x = STRIP_MARGIN, line = 20;
    for (int k = 0; k <= STRIP_COUNT; k++) {
        if (k < STRIP_COUNT && !S->present[k]) continue;
        if (k == STRIP_COUNT && !S->any_shared) break;
        const char *name = k < STRIP_COUNT ? strip_names[k] : "KV-shared (hatched: reads an earlier layer's K/V)";
        double w = 16 + plot_text_width(cr, name) + 18;
        if (x + w > STRIP_W - STRIP_MARGIN) x = STRIP_MARGIN, y += line;
        if (draw) {
            double rgb[3];
            strip_rgb(k < STRIP_COUNT ? (StripKind)k : STRIP_LOCAL, rgb);
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            cairo_rectangle(cr, x, y - 5, 12, 12);
            cairo_fill(cr);
            if (k == STRIP_COUNT) strip_hatch(cr, x, y - 5, 12, 12);
            cairo_set_source_rgb(cr, 0.15, 0.15, 0.15);
            plot_text(cr, x + 16, y + 1, 0, 0.5, name);
        }
        x += w;
    }
    return y + line;
}

static void draw_strip(cairo_t *cr, double width, double height, const void *ctx) {
    const Strip *S = ctx;
    (void)height;
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    plot_title_block(cr, "Every layer of every model, by what it caches", S->subtitle, STRIP_MARGIN, STRIP_MARGIN,
                     width - 2 * STRIP_MARGIN, 1);
    double x0 = STRIP_MARGIN + S->label_w;
    plot_font(cr, 11, 0);
    cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
    for (int l = 0; l < S->max_layers; l += 10) {   // layer index ticks above the first row
        char t[16];
        snprintf(t, sizeof t, "%d", l);
        plot_text(cr, x0 + (l + 0.5) * S->cell_w, S->top - 6, 0.5, 1, t);
    }
    for (int i = 0; i < S->n; i++) {
        const ModelGeometry *g = &S->m[i].g;
        double y = S->top + i * S->row_h;
        char label[160];
        strip_label(g, label, sizeof label);
        plot_font(cr, 12, 0);
        cairo_set_source_rgb(cr, 0.1, 0.1, 0.1);
        plot_text(cr, x0 - 8, y + S->row_h * 0.4, 1, 0.5, label);
        double gap = S->cell_w >= 6 ? 1.0 : 0.0;
        for (int l = 0; l < g->n_layers; l++) {
            double rgb[3], cx = x0 + l * S->cell_w, ch = S->row_h * 0.8;
            strip_rgb(strip_kind(g, l), rgb);
            cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
            cairo_rectangle(cr, cx, y, S->cell_w - gap, ch);
            cairo_fill(cr);
            if (geometry_kv_source(g, l) != l) strip_hatch(cr, cx, y, S->cell_w - gap, ch);
        }
    }
    strip_legend(cr, S, S->legend_top, 1);
}

// --layers-plot FILE: the strip of every model given (the same extension rule as --plot).
static void draw_layers_plot(const Model *m, int n, const char *file) {
    int png, svg;
    plot_format_of("--layers-plot", file, &png, &svg);
    char path[1024];
    snprintf(path, sizeof path, "%.*s", (int)(strlen(file) - 4), file);
    Strip S = {.m = m, .n = n};
    cairo_t *cr = plot_measure_context();
    plot_font(cr, 12, 0);
    for (int i = 0; i < n; i++) {
        char label[160];
        strip_label(&m[i].g, label, sizeof label);
        double w = plot_text_width(cr, label) + 12;
        if (w > S.label_w) S.label_w = w;
        if (m[i].g.n_layers > S.max_layers) S.max_layers = m[i].g.n_layers;
        for (int l = 0; l < m[i].g.n_layers; l++) {
            S.present[strip_kind(&m[i].g, l)] = 1;
            if (geometry_kv_source(&m[i].g, l) != l) S.any_shared = 1;
        }
    }
    if (S.label_w > 300) S.label_w = 300;
    S.cell_w = (STRIP_W - 2 * STRIP_MARGIN - S.label_w) / S.max_layers;
    S.row_h = 22;
    snprintf(S.subtitle, sizeof S.subtitle, "one row per config.json, one cell per layer (layer 0 on the left), "
             "read by ./kvcache");
    double head = plot_title_block(cr, "Every layer of every model, by what it caches", S.subtitle, 0, 0,
                                   STRIP_W - 2 * STRIP_MARGIN, 0);
    S.top = STRIP_MARGIN + head + 26;
    S.legend_top = S.top + n * S.row_h + 14;
    double h = strip_legend(cr, &S, S.legend_top, 0) + STRIP_MARGIN;
    cairo_destroy(cr);
    plot_write_figure(path, png, svg, STRIP_W, h, draw_strip, &S);
}

// ---- the README table: every model, generated so it never drifts from the code ----------------------

// "24 global, 28 local (W 1024)": a layer count per strip kind, then the KV-shared ones.
static void layers_by_kind(const ModelGeometry *g, char *buf, size_t cap) {
    int count[STRIP_COUNT] = {0}, n = 0;
    for (int l = 0; l < g->n_layers; l++) count[strip_kind(g, l)]++;
    buf[0] = '\0';
    for (int k = 0; k < STRIP_COUNT && n >= 0 && (size_t)n < cap; k++) {
        if (!count[k]) continue;
        const char *name = strip_names[k];
        char extra[40] = "";
        if (k == STRIP_LOCAL) { name = "local"; snprintf(extra, sizeof extra, " (W %d)", g->sliding_window); }
        if (k == STRIP_CHUNKED) { name = "chunked"; snprintf(extra, sizeof extra, " (C %d)", g->attention_chunk_size); }
        if (k == STRIP_CSA) name = "CSA";
        if (k == STRIP_HCA) name = "HCA";
        if (k == STRIP_MLP) name = "MLP-only";
        if (k == STRIP_DSA_SHARED) name = "MLA + shared indexer";
        n += snprintf(buf + n, cap - (size_t)n, "%s%d %s%s", n ? ", " : "", count[k], name, extra);
    }
    if (g->num_kv_shared_layers > 0 && n >= 0 && (size_t)n < cap)
        snprintf(buf + n, cap - (size_t)n, "; %d of them KV-shared", g->num_kv_shared_layers);
}

static void print_markdown_table(const Model *m, int n) {
    printf("| file | attention | layers by kind | KV bytes per token | fixed state | total at 128K | total at 1M |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n; i++) {
        const ModelGeometry *g = &m[i].g;
        const char *base = strrchr(m[i].path, '/');
        char kinds[512], att[160], a[32], b[32], c[32], d[32];
        layers_by_kind(g, kinds, sizeof kinds);
        describe_attention(att, sizeof att, g);
        double t128 = kvcache_total_bytes(g, 131072, 1), t1m = kvcache_total_bytes(g, 1048576, 1);
        printf("| %s | %s | %d: %s | %.0f (%s) | %s | %s%s | %s%s |\n", base ? base + 1 : m[i].path, att,
               g->n_layers, kinds, m[i].per_token, fmt_bytes(a, sizeof a, m[i].per_token),
               m[i].fixed > 0 ? fmt_bytes(b, sizeof b, m[i].fixed) : "-", fmt_bytes(c, sizeof c, t128),
               g->max_seq_len > 0 && g->max_seq_len < 131072 ? " *" : "", fmt_bytes(d, sizeof d, t1m),
               g->max_seq_len > 0 && g->max_seq_len < 1048576 ? " *" : "");
    }
}

int main(int argc, char **argv) {
    long context = 131072, batch = 1;
    int dtype = -1, json = 0, table = 0;
    const char *plot = NULL, *layers_plot = NULL, *kv_quant = NULL, *kv_quant_rope = NULL;
    // --set key=value may repeat, which the shared parser does not do: take them out of argv first.
    const char *sets[16];
    int n_sets = 0, kept = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0 || strncmp(argv[i], "--set=", 6) == 0) {
            const char *v = argv[i][5] == '=' ? argv[i] + 6 : (i + 1 < argc ? argv[++i] : NULL);
            g_prog = "kvcache";
            if (!v) die_user("--set: expected key=value");
            if (!strchr(v, '=') || v[0] == '=') die_user("--set: expected key=value, got '%s'", v);
            if (n_sets == 16) die_user("--set: at most 16 overrides");
            sets[n_sets++] = v;
            continue;
        }
        argv[kept++] = argv[i];
    }
    argc = kept;
    CliOpt opts[] = {
        {.name = "--context", .type = OPT_LONG, .dst = &context, .meta = "N",
         .help = "tokens per sequence (default 131072 = 128K)", .min = 1, .max = 1e12},
        {.name = "--batch", .type = OPT_LONG, .dst = &batch, .meta = "B",
         .help = "sequences held at once (default 1)", .min = 1, .max = 1e9},
        {.name = "--dtype", .type = OPT_CHOICE, .dst = &dtype, .meta = "bf16|fp16|fp32|fp8",
         .help = "cache element type (default: the config's torch_dtype, else bf16)"},
        {.name = "--kv-quant", .type = OPT_STRING, .dst = &kv_quant, .meta = "SCHEME[:GROUP]",
         .help = "count the cache quantized: " KVQ_SCHEMES_HELP " (scales and zero points included)"},
        {.name = "--kv-quant-rope", .type = OPT_STRING, .dst = &kv_quant_rope, .meta = "SCHEME[:GROUP]",
         .help = "with --kv-quant: MLA's RoPE key in this scheme instead (e.g. bf16, as DeepSeek's FP8 MLA cache keeps it)"},
        {.name = "--json", .type = OPT_FLAG, .dst = &json, .help = "print JSON instead of a table"},
        {.name = "--plot", .type = OPT_STRING, .dst = &plot, .meta = "FILE.svg|.png",
         .help = "draw total cache vs context (1K..1M tokens) for all models"},
        {.name = "--layers-plot", .type = OPT_STRING, .dst = &layers_plot, .meta = "FILE.svg|.png",
         .help = "draw every model's layers, one cell per layer coloured by its kind"},
        {.name = "--table", .type = OPT_FLAG, .dst = &table,
         .help = "print the Markdown table of data/configs/README.md (bf16 unless --dtype)"},
    };
    CliSpec spec = {
        .prog = "kvcache",
        .summary = "KV-cache memory of models from their Hugging Face config.json files. Hybrids with linear "
                   "layers (Gated DeltaNet, KDA, Lightning, Mamba-2) also hold a fixed state per sequence: "
                   "printed apart as 'fixed state: X (recurrent state fp32 Y + conv state Z)' and added to "
                   "the total.",
        .usage_extra = "  --set KEY=VALUE   override a config key (repeatable; VALUE is JSON or a string; a.b for a "
                       "nested key)\nexamples:\n  ./kvcache data/configs/llama3-8b.json data/configs/gemma3-27b.json "
                       "--context 32768 --plot kv.svg\n  ./kvcache data/configs/llama3-8b.json --set num_key_value_heads=1",
        .opts = opts, .n_opts = (int)(sizeof opts / sizeof opts[0]),
        .positional = "CONFIG.json...", .min_positional = 1,
    };
    CliArgs a;
    cli_parse(&spec, &a, argc, argv);
    if (plot) {
        int png, svg;
        plot_format(plot, &png, &svg);
        check_writable("--plot", plot);
    }
    if (layers_plot) {
        int png, svg;
        plot_format_of("--layers-plot", layers_plot, &png, &svg);
        check_writable("--layers-plot", layers_plot);
    }
    if (table && dtype < 0) dtype = 0;   // the README table is in bf16
    KvqScheme quant;
    if (kv_quant) {
        char err[256];
        if (kvq_parse(&quant, kv_quant, err, sizeof err) != 0) die_user("--kv-quant: %s", err);
        if (table) die_user("--table prints the README's table (bf16); it takes no --kv-quant");
        g_quant = &quant;
    }
    KvqScheme quant_rope;
    if (kv_quant_rope) {
        char err[256];
        if (!kv_quant) die_user("--kv-quant-rope: needs --kv-quant (the scheme of everything else)");
        if (kvq_parse(&quant_rope, kv_quant_rope, err, sizeof err) != 0) die_user("--kv-quant-rope: %s", err);
        g_quant_rope = &quant_rope;
    }

    Model *m = callocCheck((size_t)a.n_pos, sizeof *m);
    for (int i = 0; i < a.n_pos; i++) {
        char err[512];
        m[i].path = a.pos[i];
        if (hfconfig_load_set(&m[i].g, a.pos[i], sets, n_sets, err, sizeof err) != 0) die_user("%s", err);
        if (dtype >= 0) {
            m[i].g.dtype_bytes = dtype_bytes[dtype];
            snprintf(m[i].dtype, sizeof m[i].dtype, "%s", dtype_names[dtype]);
        } else {
            int b = m[i].g.dtype_bytes;
            snprintf(m[i].dtype, sizeof m[i].dtype, "%s (config)", b == 4 ? "fp32" : b == 1 ? "fp8" : "16-bit");
        }
        snprintf(m[i].conv_dtype, sizeof m[i].conv_dtype, "%s",
                 dtype >= 0 ? dtype_names[dtype] : dtype_short(m[i].g.dtype_bytes, "16-bit"));
        m[i].plain_per_token = kvcache_bytes_per_token(&m[i].g);
        m[i].per_token = g_quant ? kvcache_quant_bytes_per_token(&m[i].g, g_quant, g_quant_rope) : m[i].plain_per_token;
        m[i].fixed = kvcache_fixed_bytes(&m[i].g);
        m[i].state = kvcache_state_bytes(&m[i].g);
        m[i].conv = kvcache_conv_bytes(&m[i].g);
        m[i].total = total_bytes(&m[i].g, context, batch);
    }
    if (plot) draw_plot(m, a.n_pos, plot, batch, dtype >= 0 ? dtype_names[dtype] : "each config's torch_dtype");
    if (layers_plot) draw_layers_plot(m, a.n_pos, layers_plot);
    if (table) print_markdown_table(m, a.n_pos);
    else if (json) print_json(m, a.n_pos, context, batch);
    else print_table(m, a.n_pos, context, batch);
    if (plot && !json && !table) printf("wrote %s\n", plot);
    if (layers_plot && !json && !table) printf("wrote %s\n", layers_plot);
    free(m);
    free(a.pos);
    return 0;
}
