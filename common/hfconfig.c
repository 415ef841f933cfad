// hfconfig.c: reads a Hugging Face config.json into a ModelGeometry (see hfconfig.h).
//
// Keys are looked up in "text_config" first (multimodal models keep the language model there), then at
// the top level (where torch_dtype usually lives). JSON null counts as absent, as in transformers.
// When a family's config.json leaves a key out, transformers falls back to its config class default;
// the few defaults that change the cache are in `families` below (e.g. Gemma 3's 5:1 local:global).
#include "hfconfig.h"

#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Defaults of transformers' config classes that the published config.json files rely on.
typedef struct {
    const char *model_type;
    int global_every;          // sliding-window models: layer l is global iff (l+1) % global_every == 0
    int vocab_size, max_position_embeddings;
    double rope_theta, rope_local_theta;
    int d_ff_mult;             // intermediate_size = d_ff_mult * hidden_size when absent
} Family;

static const Family families[] = {
    {"gpt2", 0, 50257, 1024, 0, 0, 4},                  // GPT2Config: n_inner None -> 4 * n_embd
    {"gemma2", 2, 256000, 8192, 10000.0, 0, 0},         // Gemma2: even layers slide, odd are global
    {"gemma3_text", 6, 262208, 131072, 1e6, 1e4, 0},    // Gemma3TextConfig: sliding_window_pattern 6
    {"gemma3", 6, 262208, 131072, 1e6, 1e4, 0},
};

// Keys whose presence means layers this project cannot count yet; `what` goes into the message.
static const struct { const char *key, *what; } unsupported_keys[] = {
    {"linear_num_value_heads", "linear-attention layers"},   // Qwen3-Next Gated DeltaNet
    {"linear_num_key_heads", "linear-attention layers"},
    {"linear_key_head_dim", "linear-attention layers"},
    {"linear_value_head_dim", "linear-attention layers"},
    {"linear_conv_kernel_dim", "linear-attention layers"},
    {"linear_attn_config", "linear-attention layers"},       // Kimi Linear (KDA)
    {"attn_type_list", "lightning-attention layers"},        // MiniMax-01
    {"compress_ratios", "compressed-attention layers"},      // DeepSeek V4 CSA/HCA
    {"hybrid_override_pattern", "state-space layers"},       // Nemotron-H
    {"layers_block_type", "state-space layers"},
    {"attn_layer_period", "state-space layers"},             // Jamba
    {"attention_chunk_size", "chunked-attention layers"},    // Llama 4
    {"num_kv_shared_layers", "cross-layer KV sharing"},      // Gemma 3n
    {"indexer_types", "shared-indexer layers"},              // GLM-5.x
};
// Key prefixes of state-space models (mamba_d_state, mamba_num_heads, ssm_state_size, ...).
static const char *unsupported_prefixes[] = {"mamba", "ssm_"};

typedef struct {
    const cJSON *root, *cfg;   // cfg: text_config when present, else root
    const char *label;         // the input's name, first word of every error
    char *err;
    size_t cap;
    int failed;                // set by the first error; later reads return their defaults
} Reader;

static int bad(Reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(Reader *r, const char *fmt, ...) {
    if (r->failed) return -1;   // keep the first error: it is the cause
    r->failed = 1;
    if (r->err && r->cap) {
        int n = snprintf(r->err, r->cap, "%s: ", r->label);
        if (n >= 0 && (size_t)n < r->cap) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(r->err + n, r->cap - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

static const char *json_type(const cJSON *v) {
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "null";
}

// The value of key in text_config, else at the top level; NULL when absent or null.
static const cJSON *find(const Reader *r, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->cfg, key);
    if ((!v || cJSON_IsNull(v)) && r->cfg != r->root) v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

// The first of key / alias that is present, or NULL.
static const char *which(const Reader *r, const char *key, const char *alias) {
    if (find(r, key)) return key;
    if (alias && find(r, alias)) return alias;
    return NULL;
}

static int get_int(Reader *r, const char *key, int dflt) {
    const cJSON *v = key ? find(r, key) : NULL;
    if (!v || r->failed) return dflt;
    if (!cJSON_IsNumber(v)) return bad(r, "key '%s' must be an integer, got %s", key, json_type(v)), dflt;
    double d = v->valuedouble;
    if (d != floor(d) || d < 0 || d > INT_MAX)
        return bad(r, "key '%s' must be a non-negative integer, got %g", key, d), dflt;
    return (int)d;
}

static int get_required(Reader *r, const char *key, const char *alias) {
    const char *k = which(r, key, alias);
    if (!k) return bad(r, "key '%s' is missing", key), 0;
    return get_int(r, k, 0);
}

static double get_double(Reader *r, const cJSON *obj_or_null, const char *key, double dflt) {
    const cJSON *v = obj_or_null ? cJSON_GetObjectItemCaseSensitive(obj_or_null, key) : find(r, key);
    if (!v || cJSON_IsNull(v) || r->failed) return dflt;
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0))
        return bad(r, "key '%s' must be a positive number, got %s", key, json_type(v)), dflt;
    return v->valuedouble;
}

static int get_bool(Reader *r, const char *key, int dflt) {
    const cJSON *v = find(r, key);
    if (!v || r->failed) return dflt;
    if (!cJSON_IsBool(v)) return bad(r, "key '%s' must be true or false, got %s", key, json_type(v)), dflt;
    return cJSON_IsTrue(v);
}

static const char *get_string(Reader *r, const char *key) {
    const cJSON *v = find(r, key);
    if (!v || r->failed) return NULL;
    if (!cJSON_IsString(v)) return bad(r, "key '%s' must be a string, got %s", key, json_type(v)), NULL;
    return v->valuestring;
}

// A key "is set" unless it is absent, null, false, 0 or empty (Gemma 3n-style "num_kv_shared_layers": 0).
static int is_set(const cJSON *v) {
    if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v)) return 0;
    if (cJSON_IsNumber(v)) return v->valuedouble != 0;
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) return v->child != NULL;
    return 1;
}

static void reject_unsupported(Reader *r, const cJSON *obj) {
    for (const cJSON *it = obj ? obj->child : NULL; it && !r->failed; it = it->next) {
        if (!it->string || !is_set(it)) continue;
        for (size_t k = 0; k < sizeof unsupported_keys / sizeof unsupported_keys[0]; k++)
            if (strcmp(it->string, unsupported_keys[k].key) == 0)
                bad(r, "key '%s' (%s) is not supported yet", it->string, unsupported_keys[k].what);
        for (size_t k = 0; k < sizeof unsupported_prefixes / sizeof unsupported_prefixes[0]; k++)
            if (strncmp(it->string, unsupported_prefixes[k], strlen(unsupported_prefixes[k])) == 0)
                bad(r, "key '%s' (state-space layers) is not supported yet", it->string);
    }
}

static const Family *find_family(Reader *r) {
    const char *types[2];
    types[0] = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r->cfg, "model_type"));
    types[1] = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r->root, "model_type"));
    for (int t = 0; t < 2; t++)
        for (size_t f = 0; types[t] && f < sizeof families / sizeof families[0]; f++)
            if (strcmp(types[t], families[f].model_type) == 0) return &families[f];
    return NULL;
}

// torch_dtype (or transformers >= 4.56's "dtype") -> bytes per cached element. Absent: bf16.
static int read_dtype_bytes(Reader *r) {
    const char *key = which(r, "torch_dtype", "dtype");
    const char *s = key ? get_string(r, key) : NULL;
    if (!s) return 2;
    if (strncmp(s, "torch.", 6) == 0) s += 6;
    if (!strcmp(s, "bfloat16") || !strcmp(s, "float16") || !strcmp(s, "half")) return 2;
    if (!strcmp(s, "float32") || !strcmp(s, "float")) return 4;
    if (!strncmp(s, "float8", 6)) return 1;
    return bad(r, "key '%s' is '%s', expected bfloat16, float16, float32 or float8_*", key, s), 2;
}

// "layer_types": ["sliding_attention", "full_attention", ...] (Gemma 3, OLMo 3, gpt-oss, Qwen3).
static void read_layer_types(Reader *r, const cJSON *lt, ModelGeometry *g) {
    if (!cJSON_IsArray(lt)) {
        bad(r, "key 'layer_types' must be an array of strings, got %s", json_type(lt));
        return;
    }
    int n = cJSON_GetArraySize(lt);
    if (n != g->n_layers) {
        bad(r, "key 'layer_types' has %d entries but num_hidden_layers is %d", n, g->n_layers);
        return;
    }
    int l = 0;
    for (const cJSON *it = lt->child; it && !r->failed; it = it->next, l++) {
        const char *s = cJSON_GetStringValue(it);
        if (!s) bad(r, "key 'layer_types' entry %d must be a string, got %s", l, json_type(it));
        else if (!strcmp(s, "full_attention")) g->layer_kind[l] = LAYER_GLOBAL;
        else if (!strcmp(s, "sliding_attention")) g->layer_kind[l] = LAYER_LOCAL;
        else if (!strcmp(s, "linear_attention"))
            bad(r, "key 'layer_types' entry 'linear_attention' (linear-attention layers) is not supported yet");
        else if (!strcmp(s, "chunked_attention"))
            bad(r, "key 'layer_types' entry 'chunked_attention' (chunked-attention layers) is not supported yet");
        else if (strstr(s, "mamba") || strstr(s, "conv"))
            bad(r, "key 'layer_types' entry '%s' (state-space / convolution layers) is not supported yet", s);
        else
            bad(r, "key 'layer_types' entry %d is '%s', expected 'full_attention' or 'sliding_attention'", l, s);
    }
}

// Which layers slide, and over how many tokens.
static void read_windows(Reader *r, const Family *fam, ModelGeometry *g) {
    // Qwen2/Qwen3 ship "sliding_window": 131072 with "use_sliding_window": false: the window is off.
    int use_sliding = get_bool(r, "use_sliding_window", 1);
    g->sliding_window = use_sliding ? get_int(r, "sliding_window", 0) : 0;
    const cJSON *lt = find(r, "layer_types");
    if (lt) {
        read_layer_types(r, lt, g);
        if (!r->failed && geometry_count(g, LAYER_LOCAL) > 0 && g->sliding_window == 0)
            bad(r, "key 'layer_types' has sliding layers but key 'sliding_window' is %s",
                use_sliding ? "missing" : "switched off by use_sliding_window");
        return;
    }
    if (g->sliding_window == 0) return;   // every layer global
    const char *pk = which(r, "sliding_window_pattern", "_sliding_window_pattern");
    if (!pk) pk = which(r, "full_attention_interval", NULL);
    int every = pk ? get_int(r, pk, 0) : (fam ? fam->global_every : 0);
    // Qwen2-style: with use_sliding_window true, layers from max_window_layers on slide.
    const char *mk = find(r, "use_sliding_window") ? which(r, "max_window_layers", NULL) : NULL;
    int first_sliding = mk ? get_int(r, mk, 0) : 0;
    if (pk && every <= 0) bad(r, "key '%s' must be positive", pk);
    for (int l = 0; l < g->n_layers; l++) {
        int global = every > 0 ? (l + 1) % every == 0 : l < first_sliding;
        g->layer_kind[l] = global ? LAYER_GLOBAL : LAYER_LOCAL;   // no pattern at all: every layer slides
    }
}

// MLA (presence of kv_lora_rank) and the DeepSeek Sparse Attention indexer.
static void read_mla_dsa(Reader *r, ModelGeometry *g) {
    if (find(r, "kv_lora_rank")) {
        g->attn = ATTN_MLA;
        g->kv_lora_rank = get_int(r, "kv_lora_rank", 0);
        g->q_lora_rank = get_int(r, "q_lora_rank", 0);   // null: queries are projected directly
        g->qk_rope_head_dim = get_required(r, "qk_rope_head_dim", NULL);
        g->qk_nope_head_dim = get_int(r, "qk_nope_head_dim", 0);
        g->v_head_dim = get_required(r, "v_head_dim", NULL);
        // MLA's per-head query/key width; a config's own "head_dim" means different things per family.
        g->head_dim = g->qk_nope_head_dim + g->qk_rope_head_dim;
    } else {
        static const char *mla_keys[] = {"qk_rope_head_dim", "qk_nope_head_dim", "q_lora_rank"};
        for (int k = 0; k < 3; k++)
            if (find(r, mla_keys[k])) bad(r, "key '%s' is set but key 'kv_lora_rank' (MLA) is missing", mla_keys[k]);
    }
    if (find(r, "index_n_heads") || find(r, "index_head_dim") || find(r, "index_topk")) {
        g->index_n_heads = get_required(r, "index_n_heads", NULL);
        g->index_head_dim = get_required(r, "index_head_dim", NULL);
        g->index_topk = get_required(r, "index_topk", NULL);
    }
}

// rope_theta, or transformers 5's "rope_parameters" (flat, or per layer type).
static void read_rope(Reader *r, const Family *fam, ModelGeometry *g) {
    g->rope_theta = fam && fam->rope_theta > 0 ? fam->rope_theta : 10000.0;
    g->rope_local_theta = fam ? fam->rope_local_theta : 0.0;
    const cJSON *rp = find(r, "rope_parameters");
    if (cJSON_IsObject(rp)) {
        const cJSON *full = cJSON_GetObjectItemCaseSensitive(rp, "full_attention");
        const cJSON *slide = cJSON_GetObjectItemCaseSensitive(rp, "sliding_attention");
        g->rope_theta = get_double(r, cJSON_IsObject(full) ? full : rp, "rope_theta", g->rope_theta);
        if (cJSON_IsObject(slide)) g->rope_local_theta = get_double(r, slide, "rope_theta", g->rope_local_theta);
    }
    g->rope_theta = get_double(r, NULL, "rope_theta", g->rope_theta);
    g->rope_local_theta = get_double(r, NULL, "rope_local_base_freq", g->rope_local_theta);
}

static void set_name(ModelGeometry *g, const Reader *r, const char *label, const char *name) {
    const char *src = name && *name ? name : cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r->root, "_name_or_path"));
    if (src && *src) {
        snprintf(g->name, sizeof g->name, "%s", src);
        return;
    }
    const char *base = strrchr(label, '/');
    base = base ? base + 1 : label;
    size_t n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".json") == 0) n -= 5;
    snprintf(g->name, sizeof g->name, "%.*s", (int)n, base);
}

int hfconfig_parse(ModelGeometry *g, const char *json, const char *label, const char *name, char *err,
                   size_t cap) {
    if (err && cap) err[0] = '\0';
    Reader r = {.label = label ? label : "config", .err = err, .cap = cap};
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) {
        int line = 1, col = 1;
        for (const char *p = json; end && p < end && *p; p++, col++)
            if (*p == '\n') line++, col = 0;
        return bad(&r, "invalid JSON at line %d, column %d", line, col);
    }
    memset(g, 0, sizeof *g);
    r.root = r.cfg = root;
    if (!cJSON_IsObject(root)) {
        bad(&r, "expected a JSON object at the top level, got %s", json_type(root));
        goto done;
    }
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    if (tc && !cJSON_IsNull(tc)) {
        if (!cJSON_IsObject(tc)) {
            bad(&r, "key 'text_config' must be an object, got %s", json_type(tc));
            goto done;
        }
        r.cfg = tc;
    }
    reject_unsupported(&r, r.cfg);
    if (r.cfg != root) reject_unsupported(&r, root);
    const Family *fam = find_family(&r);

    g->n_layers = get_required(&r, "num_hidden_layers", "n_layer");
    g->d_model = get_required(&r, "hidden_size", "n_embd");
    g->n_heads = get_required(&r, "num_attention_heads", "n_head");
    if (r.failed) goto done;
    if (g->n_layers <= 0 || g->n_layers > GEOM_MAX_LAYERS) {
        bad(&r, "key '%s' is %d, expected 1..%d", which(&r, "num_hidden_layers", "n_layer"), g->n_layers,
            GEOM_MAX_LAYERS);
        goto done;
    }
    if (g->n_heads <= 0 || g->d_model <= 0) {
        bad(&r, "keys 'hidden_size' (%d) and 'num_attention_heads' (%d) must be positive", g->d_model, g->n_heads);
        goto done;
    }
    // MQA was once spelled "multi_query": true (GPT-BigCode, Falcon).
    int kv_default = get_bool(&r, "multi_query", 0) ? 1 : g->n_heads;
    g->n_kv_heads = get_int(&r, "num_key_value_heads", kv_default);
    if (find(&r, "head_dim")) {
        g->head_dim = get_int(&r, "head_dim", 0);
    } else if (g->d_model % g->n_heads != 0) {
        bad(&r, "hidden_size (%d) is not divisible by num_attention_heads (%d) and key 'head_dim' is missing",
            g->d_model, g->n_heads);
    } else {
        g->head_dim = g->d_model / g->n_heads;
    }
    g->vocab_size = get_int(&r, "vocab_size", fam ? fam->vocab_size : 0);
    g->d_ff = get_int(&r, which(&r, "intermediate_size", "n_inner"), fam ? fam->d_ff_mult * g->d_model : 0);
    g->max_seq_len = get_int(&r, which(&r, "max_position_embeddings", "n_positions"),
                             fam ? fam->max_position_embeddings : 0);
    read_mla_dsa(&r, g);
    read_windows(&r, fam, g);
    read_rope(&r, fam, g);
    g->dtype_bytes = read_dtype_bytes(&r);
    set_name(g, &r, r.label, name);
    if (r.failed) goto done;
    char why[256];
    if (!geometry_validate(g, why, sizeof why)) bad(&r, "%s", why);
done:
    cJSON_Delete(root);
    return r.failed ? -1 : 0;
}

int hfconfig_load(ModelGeometry *g, const char *path, char *err, size_t cap) {
    enum { MAX_BYTES = 16 << 20 };   // real config.json files are a few KiB; refuse anything huge
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, cap, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char *text = malloc(MAX_BYTES + 1);
    errno = 0;
    size_t n = text ? fread(text, 1, MAX_BYTES + 1, f) : 0;
    int read_errno = ferror(f) ? (errno ? errno : EIO) : 0;
    fclose(f);
    if (!text || read_errno || n > MAX_BYTES) {
        snprintf(err, cap, "%s: %s", path, !text ? "out of memory" : read_errno ? strerror(read_errno)
                                                                               : "file larger than 16 MiB");
        free(text);
        return -1;
    }
    text[n] = '\0';
    if (memchr(text, '\0', n)) {
        snprintf(err, cap, "%s: invalid JSON (the file contains a NUL byte)", path);
        free(text);
        return -1;
    }
    int rc = hfconfig_parse(g, text, path, NULL, err, cap);
    free(text);
    return rc;
}
