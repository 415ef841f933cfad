// hfconfig.c: reads a Hugging Face config.json into a ModelGeometry (see hfconfig.h).
//
// Keys are looked up in "text_config" first (multimodal models keep the language model there), then at
// the top level (where torch_dtype usually lives). JSON null counts as absent, as in transformers.
// When a family's config.json leaves a key out, transformers falls back to its config class default;
// the few defaults that change the cache are in `families` below (e.g. Gemma 3's 5:1 local:global).
//
// Hybrid models (section "linear layers" below) describe their fixed-state layers in one of four ways:
//   Qwen3-Next / Qwen3.5  linear_* keys + layer_types or full_attention_interval   -> Gated DeltaNet
//   Kimi Linear           linear_attn_config {kda_layers (1-based), num_heads, ...} -> KDA
//   MiniMax-01            attn_type_list (0 lightning, 1 softmax) or layer_types   -> Lightning
//   Nemotron-H            hybrid_override_pattern ('M' Mamba-2, '*' attention, '-' MLP, 'E' MoE)
//                         + mamba_num_heads, mamba_head_dim, ssm_state_size, n_groups, conv_kernel
#include "hfconfig.h"

#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

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

// Hybrid families: what their "linear_attention" layers are, and what transformers does without a key.
typedef struct {
    const char *model_type;
    int linear_kind;           // LinearKind
    int gated_zero_norm;       // q_proj always emits an output gate (no config key is read) and the q/k
                               // norms are zero-centred (1 + w): Qwen3NextAttention and Qwen3.5
    int full_every;            // default full_attention_interval (Qwen3NextConfig: 4); 0: none
    int alternate_default;     // MiniMaxConfig without layer_types: layer i full iff (i + 1) % 2 != 0
} Hybrid;

static const Hybrid hybrids[] = {
    {"qwen3_next", LINEAR_GDN, 1, 4, 0},
    {"qwen3_5", LINEAR_GDN, 1, 4, 0},
    {"qwen3_5_text", LINEAR_GDN, 1, 4, 0},
    {"qwen3_5_moe", LINEAR_GDN, 1, 4, 0},
    {"qwen3_5_moe_text", LINEAR_GDN, 1, 4, 0},
    {"kimi_linear", LINEAR_KDA, 0, 0, 0},
    {"minimax", LINEAR_LIGHTNING, 0, 0, 1},
    {"minimax_text_01", LINEAR_LIGHTNING, 0, 0, 0},
    {"minimax_m1", LINEAR_LIGHTNING, 0, 0, 0},
    {"nemotron_h", LINEAR_MAMBA2, 0, 0, 0},
};

// Keys whose presence means layers this project cannot count yet; `what` goes into the message.
static const struct { const char *key, *what; } unsupported_keys[] = {
    {"layers_block_type", "state-space layers"},
    {"attn_layer_period", "state-space layers"},             // Jamba
    {"index_kpool", "pooled indexer keys"},                  // GLM5-Next
    {"kv_source_layer_ids", "cross-layer compressed KV"},    // DeepSeek V4.1 research configs
    {"sparse_attention_config", "sparse-attention layers"},  // MiniMax-M3
};
// Key prefixes of state-space models (mamba_d_state, mamba_num_heads, ssm_state_size, ...): read only in
// a Nemotron-H config (one with hybrid_override_pattern); elsewhere (Jamba, Falcon-H1, Zamba, ...) their
// layout is unknown to the reader and they are errors. The state dtype keys are fine anywhere.
static const char *unsupported_prefixes[] = {"mamba", "ssm_"};
static const char *state_dtype_keys[] = {"mamba_ssm_dtype", "mamba_ssm_cache_dtype"};

// The keys the reader looked up, so an override of a key it never reads can be refused.
typedef struct {
    const char *keys[256];
    int n;
} Consulted;

typedef struct {
    const cJSON *root, *cfg;   // cfg: text_config when present, else root
    const char *label;         // the input's name, first word of every error
    char *err;
    size_t cap;
    int failed;                // set by the first error; later reads return their defaults
    Consulted *seen;
} Reader;

static void note_key(const Reader *r, const char *key) {
    Consulted *c = r->seen;
    if (!c || !key) return;
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->keys[i], key)) return;
    if (c->n < (int)(sizeof c->keys / sizeof c->keys[0])) c->keys[c->n++] = key;
}

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
    note_key(r, key);
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

static void reject_unsupported(Reader *r, const cJSON *obj, int mamba_ok) {
    for (const cJSON *it = obj ? obj->child : NULL; it && !r->failed; it = it->next) {
        if (!it->string || !is_set(it)) continue;
        for (size_t k = 0; k < sizeof unsupported_keys / sizeof unsupported_keys[0]; k++)
            if (strcmp(it->string, unsupported_keys[k].key) == 0)
                bad(r, "key '%s' (%s) is not supported yet", it->string, unsupported_keys[k].what);
        int dtype_key = 0;
        for (size_t k = 0; k < sizeof state_dtype_keys / sizeof state_dtype_keys[0]; k++)
            dtype_key |= strcmp(it->string, state_dtype_keys[k]) == 0;
        if (mamba_ok || dtype_key) continue;
        for (size_t k = 0; k < sizeof unsupported_prefixes / sizeof unsupported_prefixes[0]; k++)
            if (strncmp(it->string, unsupported_prefixes[k], strlen(unsupported_prefixes[k])) == 0)
                bad(r, "key '%s' (state-space layers without hybrid_override_pattern) is not supported yet",
                    it->string);
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

// The model_type of text_config, else of the top level ("" when absent).
static const char *model_type(const Reader *r) {
    const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r->cfg, "model_type"));
    if (!t) t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r->root, "model_type"));
    return t ? t : "";
}

static int is_llama4(const Reader *r) {
    return strncmp(model_type(r), "llama4", 6) == 0;
}

static const Hybrid *find_hybrid(Reader *r) {
    const char *types[2];
    types[0] = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r->cfg, "model_type"));
    types[1] = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(r->root, "model_type"));
    for (int t = 0; t < 2; t++)
        for (size_t f = 0; types[t] && f < sizeof hybrids / sizeof hybrids[0]; f++)
            if (strcmp(types[t], hybrids[f].model_type) == 0) return &hybrids[f];
    return NULL;
}

// A dtype name ("bfloat16", "torch.float32", ...) -> bytes per element; 0 if unknown.
static int dtype_name_bytes(const char *s) {
    if (strncmp(s, "torch.", 6) == 0) s += 6;
    if (!strcmp(s, "bfloat16") || !strcmp(s, "float16") || !strcmp(s, "half")) return 2;
    if (!strcmp(s, "float32") || !strcmp(s, "float")) return 4;
    if (!strncmp(s, "float8", 6)) return 1;
    return 0;
}

// torch_dtype (or transformers >= 4.56's "dtype") -> bytes per cached element. Absent: bf16.
static int read_dtype_bytes(Reader *r) {
    const char *key = which(r, "torch_dtype", "dtype");
    const char *s = key ? get_string(r, key) : NULL;
    if (!s) return 2;
    int bytes = dtype_name_bytes(s);
    if (bytes == 0) return bad(r, "key '%s' is '%s', expected bfloat16, float16, float32 or float8_*", key, s), 2;
    return bytes;
}

// The recurrent state's dtype (vLLM / Qwen3.5 "mamba_ssm_dtype"); absent: fp32, what the reference
// kernels keep the state in.
static int read_state_dtype_bytes(Reader *r) {
    const char *key = which(r, state_dtype_keys[0], state_dtype_keys[1]);
    const char *s = key ? get_string(r, key) : NULL;
    if (!s) return 4;
    int bytes = dtype_name_bytes(s);
    if (bytes == 0) return bad(r, "key '%s' is '%s', expected bfloat16, float16 or float32", key, s), 4;
    return bytes;
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
        else if (!strcmp(s, "linear_attention")) g->layer_kind[l] = LAYER_LINEAR;   // which kind: read_linear
        else if (!strcmp(s, "chunked_attention")) g->layer_kind[l] = LAYER_CHUNKED;  // Llama 4
        else if (!strcmp(s, "deepseek_sparse_attention")) g->layer_kind[l] = LAYER_GLOBAL;  // GLM-5.x: MLA + DSA
        else if (strstr(s, "mamba") || strstr(s, "conv"))
            bad(r, "key 'layer_types' entry '%s' (state-space / convolution layers) is not supported yet", s);
        else
            bad(r, "key 'layer_types' entry %d is '%s', expected 'full_attention', 'sliding_attention', "
                   "'chunked_attention' or 'linear_attention'", l, s);
    }
}

// A JSON array of integers in [lo, hi] into out[0..n). With extra_ok, entries past n are checked and
// dropped (DeepSeek V4 lists its multi-token-prediction layers after the last layer).
static void read_int_list(Reader *r, const cJSON *v, const char *key, int n, int extra_ok, int lo, int hi, int *out) {
    if (!cJSON_IsArray(v)) {
        bad(r, "key '%s' must be an array of integers, got %s", key, json_type(v));
        return;
    }
    int len = cJSON_GetArraySize(v);
    if (len < n || (len > n && !extra_ok)) {
        bad(r, "key '%s' has %d entries but num_hidden_layers is %d", key, len, n);
        return;
    }
    int i = 0;
    for (const cJSON *it = v->child; it && !r->failed; it = it->next, i++) {
        double d = cJSON_IsNumber(it) ? it->valuedouble : 0;
        if (!cJSON_IsNumber(it) || d != floor(d) || d < lo || d > hi)
            bad(r, "key '%s' entry %d must be an integer in %d..%d, got %s%.17g", key, i, lo, hi,
                cJSON_IsNumber(it) ? "" : json_type(it), cJSON_IsNumber(it) ? d : 0.0);
        else if (i < n)
            out[i] = (int)d;
    }
}

// MiMo-V2's hybrid_layer_pattern (0 full attention, 1 sliding window) and Llama 4's chunked layers:
// attention_chunk_size with no_rope_layers (1: a RoPE layer, which is chunked; 0: a NoPE layer, which
// is global), or transformers' default for llama4 (every no_rope_layer_interval-th layer, default 4, is
// NoPE and global).
static void read_layer_patterns(Reader *r, ModelGeometry *g, int have_layer_types) {
    int pat[GEOM_MAX_LAYERS];
    const cJSON *hp = find(r, "hybrid_layer_pattern");
    if (hp) {
        if (have_layer_types) {
            bad(r, "keys 'layer_types' and 'hybrid_layer_pattern' both say which layers slide; expected one of them");
            return;
        }
        read_int_list(r, hp, "hybrid_layer_pattern", g->n_layers, 0, 0, 1, pat);
        for (int l = 0; l < g->n_layers && !r->failed; l++) g->layer_kind[l] = pat[l] ? LAYER_LOCAL : LAYER_GLOBAL;
        if (!r->failed && geometry_count(g, LAYER_LOCAL) > 0 && g->sliding_window <= 0)
            bad(r, "key 'hybrid_layer_pattern' has sliding layers but key 'sliding_window' is missing");
    }
    if (!find(r, "attention_chunk_size")) return;
    g->attention_chunk_size = get_int(r, "attention_chunk_size", 0);
    if (!r->failed && g->attention_chunk_size <= 0) {
        bad(r, "key 'attention_chunk_size' must be positive");
        return;
    }
    if (have_layer_types) {
        if (!r->failed && geometry_count(g, LAYER_CHUNKED) == 0)
            bad(r, "key 'attention_chunk_size' is set but 'layer_types' has no 'chunked_attention' layer");
        return;
    }
    if (hp) {
        bad(r, "keys 'attention_chunk_size' and 'hybrid_layer_pattern' both set: which layers are chunked?");
        return;
    }
    const cJSON *nr = find(r, "no_rope_layers");
    if (nr && cJSON_IsArray(nr) && cJSON_GetArraySize(nr) > 0) {
        read_int_list(r, nr, "no_rope_layers", g->n_layers, 0, 0, 1, pat);
    } else if (is_llama4(r)) {
        int every = find(r, "no_rope_layer_interval") ? get_int(r, "no_rope_layer_interval", 0) : 4;
        if (!r->failed && every <= 0) bad(r, "key 'no_rope_layer_interval' must be positive");
        for (int l = 0; l < g->n_layers && !r->failed; l++) pat[l] = (l + 1) % every != 0;
    } else {
        bad(r, "key 'attention_chunk_size' is set but neither 'no_rope_layers' nor 'layer_types' says which layers "
               "are chunked");
    }
    for (int l = 0; l < g->n_layers && !r->failed; l++) g->layer_kind[l] = pat[l] ? LAYER_CHUNKED : LAYER_GLOBAL;
}

// Which layers slide, and over how many tokens.
static void read_windows(Reader *r, const Family *fam, ModelGeometry *g) {
    // Qwen2/Qwen3 ship "sliding_window": 131072 with "use_sliding_window": false: the window is off.
    int use_sliding = get_bool(r, "use_sliding_window", 1);
    // MiMo-V2 spells it sliding_window_size too
    g->sliding_window = use_sliding ? get_int(r, which(r, "sliding_window", "sliding_window_size"), 0) : 0;
    const cJSON *lt = find(r, "layer_types");
    if (lt) {
        read_layer_types(r, lt, g);
        if (!r->failed && geometry_count(g, LAYER_LOCAL) > 0 && g->sliding_window == 0)
            bad(r, "key 'layer_types' has sliding layers but key 'sliding_window' is %s",
                use_sliding ? "missing" : "switched off by use_sliding_window");
        read_layer_patterns(r, g, 1);
        return;
    }
    if (find(r, "hybrid_layer_pattern") || find(r, "attention_chunk_size")) {
        read_layer_patterns(r, g, 0);
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
        // Summed in 64 bits: two huge but valid numbers must be an error, not a wrapped int.
        long long hd = (long long)g->qk_nope_head_dim + g->qk_rope_head_dim;
        if (hd > 1 << 24)
            bad(r, "keys 'qk_nope_head_dim' + 'qk_rope_head_dim' (%d + %d) are too large", g->qk_nope_head_dim,
                g->qk_rope_head_dim);
        else
            g->head_dim = (int)hd;
    } else if (find(r, "compress_ratios")) {
        // DeepSeek V4: no latent; one shared KV head of head_dim whose last qk_rope_head_dim dims rotate,
        // and a low-rank query (q_lora_rank)
        g->q_lora_rank = get_int(r, "q_lora_rank", 0);
        int rope = get_required(r, "qk_rope_head_dim", NULL);
        if (!r->failed && (rope <= 0 || rope > g->head_dim))
            bad(r, "key 'qk_rope_head_dim' is %d, expected 1..head_dim (%d)", rope, g->head_dim);
        else if (!r->failed)
            g->partial_rotary_factor = (double)rope / g->head_dim;
    } else {
        static const char *mla_keys[] = {"qk_rope_head_dim", "qk_nope_head_dim", "q_lora_rank"};
        for (int k = 0; k < 3; k++)
            if (find(r, mla_keys[k])) bad(r, "key '%s' is set but key 'kv_lora_rank' (MLA) is missing", mla_keys[k]);
        g->v_head_dim = get_int(r, "v_head_dim", 0);   // MiMo-V2: V narrower than K in plain GQA layers
    }
    if (find(r, "index_n_heads") || find(r, "index_head_dim") || find(r, "index_topk")) {
        g->index_n_heads = get_required(r, "index_n_heads", NULL);
        g->index_head_dim = get_required(r, "index_head_dim", NULL);
        g->index_topk = get_required(r, "index_topk", NULL);
    }
    // GLM-5.x: per layer "full" (own indexer, caches its key) or "shared" (reuses the top-k of the last
    // full layer, caches no indexer key)
    const cJSON *it = find(r, "indexer_types");
    if (!it || r->failed) return;
    if (g->index_n_heads == 0) {
        bad(r, "key 'indexer_types' is set but the model has no indexer (index_n_heads is missing)");
        return;
    }
    if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != g->n_layers) {
        bad(r, "key 'indexer_types' must be an array of %d strings ('full' or 'shared'), got %s", g->n_layers,
            cJSON_IsArray(it) ? "another length" : json_type(it));
        return;
    }
    int l = 0;
    for (const cJSON *e = it->child; e && !r->failed; e = e->next, l++) {
        const char *v = cJSON_GetStringValue(e);
        if (v && !strcmp(v, "full")) g->indexer_types[l] = INDEXER_FULL;
        else if (v && !strcmp(v, "shared")) g->indexer_types[l] = INDEXER_SHARED;
        else bad(r, "key 'indexer_types' entry %d must be 'full' or 'shared'", l);
    }
}

// DeepSeek V4: compress_ratios per layer (entries past num_hidden_layers are its MTP layers). Ratio 0: a
// sliding-window layer; m >= 2: a compressed layer that also keeps the window of raw tokens. As in V4's
// inference/model.py, a layer with m == 4 has a lightning indexer and overlapping groups (CSA); any
// other m has neither (HCA). Every layer has one shared KV head with K = V and learned sinks.
static void read_compress(Reader *r, ModelGeometry *g) {
    const cJSON *cr = find(r, "compress_ratios");
    if (!cr || r->failed) return;
    int m[GEOM_MAX_LAYERS];
    read_int_list(r, cr, "compress_ratios", g->n_layers, 1, 0, 65535, m);
    if (r->failed) return;
    if (g->sliding_window <= 0) {
        bad(r, "key 'compress_ratios' is set but key 'sliding_window' (the raw window every layer keeps) is missing");
        return;
    }
    for (int l = 0; l < g->n_layers; l++) {
        if (m[l] == 1) {
            bad(r, "key 'compress_ratios' entry %d is 1, expected 0 (window only) or a group size >= 2", l);
            return;
        }
        g->layer_kind[l] = m[l] ? LAYER_COMPRESSED : LAYER_LOCAL;
        g->compress_ratios[l] = (unsigned short)m[l];
        g->indexer_types[l] = m[l] == 4 ? INDEXER_FULL : INDEXER_NONE;
    }
    if (geometry_count(g, LAYER_COMPRESSED) > 0 && g->n_kv_heads != 1)
        bad(r, "key 'num_key_value_heads' is %d, but compressed layers keep one shared KV head", g->n_kv_heads);
    g->kv_one_tensor = 1;
    g->attention_sinks = SINKS_FULL | SINKS_SLIDING;
}

// Attention layers with their own KV shapes (MiMo-V2's swa_* keys, Step 3.5's attention_other_setting,
// Gemma 4's global_* keys), K = V
// (Gemma 4), cross-layer KV sharing (Gemma 3n / 4) and learned sinks (gpt-oss, MiMo-V2).
static int member_int(Reader *r, const cJSON *obj, const char *parent, const char *key, int required);

static void read_kv_shapes(Reader *r, ModelGeometry *g) {
    if (g->attn != ATTN_MLA) {
        g->swa_num_key_value_heads = get_int(r, "swa_num_key_value_heads", 0);
        g->swa_head_dim = get_int(r, "swa_head_dim", 0);
        g->swa_v_head_dim = get_int(r, "swa_v_head_dim", 0);
        g->num_global_key_value_heads = get_int(r, "num_global_key_value_heads", 0);
        g->global_head_dim = get_int(r, "global_head_dim", 0);
    }
    // Step 3.5: attention_other_setting {num_attention_heads, num_attention_groups, head_dim} of its window
    // layers
    const cJSON *other = find(r, "attention_other_setting");
    if (other && !cJSON_IsObject(other)) bad(r, "key 'attention_other_setting' must be an object, got %s", json_type(other));
    if (cJSON_IsObject(other) && cJSON_GetObjectItemCaseSensitive(other, "num_attention_groups"))
        g->swa_num_key_value_heads = member_int(r, other, "attention_other_setting", "num_attention_groups", 1);
    if (cJSON_IsObject(other) && cJSON_GetObjectItemCaseSensitive(other, "head_dim"))
        g->swa_head_dim = member_int(r, other, "attention_other_setting", "head_dim", 1);
    int swa_heads = get_int(r, "swa_num_attention_heads", g->n_heads);
    if (!r->failed && g->swa_num_key_value_heads > 0 && swa_heads % g->swa_num_key_value_heads != 0)
        bad(r, "key 'swa_num_attention_heads' (%d) is not divisible by key 'swa_num_key_value_heads' (%d)", swa_heads,
            g->swa_num_key_value_heads);
    if (!r->failed && g->num_global_key_value_heads > g->n_heads)
        bad(r, "key 'num_global_key_value_heads' (%d) exceeds num_attention_heads (%d)", g->num_global_key_value_heads,
            g->n_heads);
    g->attention_k_eq_v = get_bool(r, "attention_k_eq_v", 0);
    g->num_kv_shared_layers = get_int(r, "num_kv_shared_layers", 0);
    if (!r->failed && g->num_kv_shared_layers >= g->n_layers)
        bad(r, "key 'num_kv_shared_layers' is %d, expected below num_hidden_layers (%d)", g->num_kv_shared_layers,
            g->n_layers);
    if (!strcmp(model_type(r), "gpt_oss")) g->attention_sinks |= SINKS_FULL | SINKS_SLIDING;
    if (get_bool(r, "add_full_attention_sink_bias", 0)) g->attention_sinks |= SINKS_FULL;
    if (get_bool(r, "add_swa_attention_sink_bias", 0)) g->attention_sinks |= SINKS_SLIDING;
}

// ---- linear layers ---------------------------------------------------------------------------------

// An integer member of a nested object ("linear_attn_config"), named "parent.key" in errors.
static int member_int(Reader *r, const cJSON *obj, const char *parent, const char *key, int required) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) bad(r, "key '%s.%s' is missing", parent, key);
        return 0;
    }
    if (!cJSON_IsNumber(v)) return bad(r, "key '%s.%s' must be an integer, got %s", parent, key, json_type(v)), 0;
    double d = v->valuedouble;
    if (d != floor(d) || d <= 0 || d > INT_MAX)
        return bad(r, "key '%s.%s' must be a positive integer, got %g", parent, key, d), 0;
    return (int)d;
}

// Sets the four linear-layer dimensions and the conv width in one place, so every family reads alike.
static void set_linear(ModelGeometry *g, int kind, int hk, int hv, int dk, int dv, int conv) {
    g->linear_kind = kind;
    g->linear_num_key_heads = hk;
    g->linear_num_value_heads = hv;
    g->linear_key_head_dim = dk;
    g->linear_value_head_dim = dv;
    g->linear_conv_kernel_dim = conv;
}

// Qwen3-Next / Qwen3.5 Gated DeltaNet: q,k heads linear_num_key_heads, v heads linear_num_value_heads.
// Without layer_types, layer l is full attention iff (l + 1) % full_attention_interval == 0
// (Qwen3NextConfig), the rest linear.
static void read_gdn(Reader *r, const Hybrid *hyb, ModelGeometry *g, int have_layer_types) {
    int hk = get_required(r, "linear_num_key_heads", NULL);
    int hv = get_required(r, "linear_num_value_heads", NULL);
    int dk = get_required(r, "linear_key_head_dim", NULL);
    int dv = get_required(r, "linear_value_head_dim", NULL);
    int conv = get_required(r, "linear_conv_kernel_dim", NULL);
    if (r->failed) return;
    set_linear(g, LINEAR_GDN, hk, hv, dk, dv, conv);
    if (have_layer_types) return;   // read_layer_types already marked the linear layers
    int every = hyb ? hyb->full_every : 0;
    if (find(r, "full_attention_interval")) every = get_int(r, "full_attention_interval", 0);
    else if (every == 0) {
        bad(r, "keys 'layer_types' and 'full_attention_interval' are both missing: which layers are linear?");
        return;
    }
    if (every <= 0) {
        bad(r, "key 'full_attention_interval' must be positive");
        return;
    }
    for (int l = 0; l < g->n_layers; l++) g->layer_kind[l] = (l + 1) % every == 0 ? LAYER_GLOBAL : LAYER_LINEAR;
}

// Marks the 1-based layer numbers listed in linear_attn_config.<key> as `kind`; a layer listed twice (in
// this list or the other) is an error.
static void read_layer_list(Reader *r, const cJSON *lac, const char *key, int kind, unsigned char *seen,
                            ModelGeometry *g) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(lac, key);
    if (!list || cJSON_IsNull(list)) return;
    if (!cJSON_IsArray(list)) {
        bad(r, "key 'linear_attn_config.%s' must be an array of layer numbers, got %s", key, json_type(list));
        return;
    }
    int i = 0;
    for (const cJSON *it = list->child; it && !r->failed; it = it->next, i++) {
        double d = cJSON_IsNumber(it) ? it->valuedouble : -1;
        if (!cJSON_IsNumber(it) || d != floor(d) || d < 1 || d > g->n_layers) {
            if (cJSON_IsNumber(it))
                bad(r, "key 'linear_attn_config.%s' entry %d is %g, out of range: layer numbers are 1-based, "
                       "1..%d", key, i, d, g->n_layers);
            else
                bad(r, "key 'linear_attn_config.%s' entry %d must be a layer number, got %s", key, i, json_type(it));
            return;
        }
        int l = (int)d - 1;
        if (seen[l]) {
            bad(r, "key 'linear_attn_config.%s' lists layer %d, which is already listed", key, (int)d);
            return;
        }
        seen[l] = 1;
        g->layer_kind[l] = (unsigned char)kind;
    }
}

// Kimi Linear: linear_attn_config {kda_layers, full_attn_layers, num_heads, head_dim,
// short_conv_kernel_size}. The layer lists are 1-based: KimiLinearConfig.is_kda_layer(i) is
// (i + 1) in kda_layers. A layer in neither list is full attention (MLA), as in that code.
static void read_kda(Reader *r, const cJSON *lac, ModelGeometry *g) {
    if (!cJSON_IsObject(lac)) {
        bad(r, "key 'linear_attn_config' must be an object, got %s", json_type(lac));
        return;
    }
    int heads = member_int(r, lac, "linear_attn_config", "num_heads", 1);
    int dim = member_int(r, lac, "linear_attn_config", "head_dim", 1);
    int conv = member_int(r, lac, "linear_attn_config", "short_conv_kernel_size", 1);
    if (!cJSON_GetObjectItemCaseSensitive(lac, "kda_layers")) bad(r, "key 'linear_attn_config.kda_layers' is missing");
    if (r->failed) return;
    set_linear(g, LINEAR_KDA, heads, heads, dim, dim, conv);
    unsigned char seen[GEOM_MAX_LAYERS] = {0};
    read_layer_list(r, lac, "kda_layers", LAYER_LINEAR, seen, g);
    read_layer_list(r, lac, "full_attn_layers", LAYER_GLOBAL, seen, g);
}

// MiniMax-01's attn_type_list: per layer 0 = lightning (linear), 1 = softmax attention.
static void read_attn_type_list(Reader *r, const cJSON *atl, ModelGeometry *g) {
    if (!cJSON_IsArray(atl)) {
        bad(r, "key 'attn_type_list' must be an array of 0 and 1, got %s", json_type(atl));
        return;
    }
    int n = cJSON_GetArraySize(atl);
    if (n != g->n_layers) {
        bad(r, "key 'attn_type_list' has %d entries but num_hidden_layers is %d", n, g->n_layers);
        return;
    }
    int l = 0;
    for (const cJSON *it = atl->child; it && !r->failed; it = it->next, l++) {
        if (cJSON_IsNumber(it) && (it->valuedouble == 0 || it->valuedouble == 1))
            g->layer_kind[l] = it->valuedouble == 0 ? LAYER_LINEAR : LAYER_GLOBAL;
        else if (cJSON_IsNumber(it))
            bad(r, "key 'attn_type_list' entry %d is %g, expected 0 (lightning) or 1 (softmax attention)", l,
                it->valuedouble);
        else
            bad(r, "key 'attn_type_list' entry %d must be 0 or 1, got %s", l, json_type(it));
    }
}

// Nemotron-H's hybrid_override_pattern: one character per layer. Only 'M' (Mamba-2) and '*' (attention)
// layers mix tokens and keep a cache; '-' (MLP) and 'E' (MoE) layers hold nothing (LAYER_NONE).
// Mamba-2 on the shared fields: key heads = n_groups (B, C), value heads = mamba_num_heads,
// dk = ssm_state_size N, dv = mamba_head_dim P; its conv runs over [x | B | C].
static void read_mamba2(Reader *r, const cJSON *pattern, ModelGeometry *g) {
    if (!cJSON_IsString(pattern)) {
        bad(r, "key 'hybrid_override_pattern' must be a string, got %s", json_type(pattern));
        return;
    }
    const char *p = pattern->valuestring;
    int n = (int)strlen(p);
    if (n != g->n_layers) {
        bad(r, "key 'hybrid_override_pattern' has %d characters but num_hidden_layers is %d", n, g->n_layers);
        return;
    }
    for (int l = 0; l < n && !r->failed; l++) {
        switch (p[l]) {
        case 'M': g->layer_kind[l] = LAYER_LINEAR; break;
        case '*': g->layer_kind[l] = LAYER_GLOBAL; break;
        case '-': case 'E': g->layer_kind[l] = LAYER_NONE; break;
        default:
            bad(r, "key 'hybrid_override_pattern' character %d is '%c', expected 'M' (Mamba-2), '*' (attention), "
                   "'-' (MLP) or 'E' (MoE)", l, p[l]);
        }
    }
    int hv = get_required(r, "mamba_num_heads", NULL);
    int dv = get_required(r, "mamba_head_dim", NULL);
    int dk = get_required(r, "ssm_state_size", NULL);
    int hk = get_required(r, "n_groups", NULL);
    int conv = get_required(r, "conv_kernel", NULL);
    if (!r->failed) set_linear(g, LINEAR_MAMBA2, hk, hv, dk, dv, conv);
}

// Ling 2.5 (BailingMoeV2.5, "bailing_moe_linear"): layer_group_size layers per group, the last of each
// full group softmax attention (MLA when kv_lora_rank is set), the others Lightning attention; layers
// after the last full group are softmax attention (mlx-lm's bailing_moe_linear is_global rule). The
// Lightning state is one head_dim x head_dim matrix per attention head, head_dim as the config says.
static void read_layer_groups(Reader *r, ModelGeometry *g, const char *other, int have_layer_types) {
    if (other || have_layer_types) {
        bad(r, "keys 'layer_group_size' and '%s' both say which layers are linear; expected one of them",
            other ? other : "layer_types");
        return;
    }
    int gs = get_int(r, "layer_group_size", 0);
    if (r->failed) return;
    if (gs < 1) {
        bad(r, "key 'layer_group_size' must be positive");
        return;
    }
    int whole = g->n_layers / gs * gs;
    for (int l = 0; l < g->n_layers; l++)
        g->layer_kind[l] = (l + 1) % gs == 0 || l >= whole ? LAYER_GLOBAL : LAYER_LINEAR;
    int dh = find(r, "head_dim") ? get_int(r, "head_dim", 0) : g->d_model / g->n_heads;
    if (!r->failed && dh <= 0) bad(r, "key 'head_dim' must be positive");
    if (!r->failed && geometry_count(g, LAYER_LINEAR) > 0) set_linear(g, LINEAR_LIGHTNING, g->n_heads, g->n_heads, dh, dh, 0);
    int state_bytes = read_state_dtype_bytes(r);
    if (g->linear_kind != LINEAR_NONE) g->state_dtype_bytes = state_bytes;
}

// Which layers are linear, and their state dimensions. Returns with g untouched for a plain model.
static void read_linear(Reader *r, const Hybrid *hyb, ModelGeometry *g) {
    static const char *gdn_keys[] = {"linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
                                     "linear_value_head_dim", "linear_conv_kernel_dim"};
    const char *gdn = NULL;
    for (int k = 0; k < 5 && !gdn; k++)
        if (find(r, gdn_keys[k])) gdn = gdn_keys[k];
    const char *layouts[4] = {gdn, find(r, "linear_attn_config") ? "linear_attn_config" : NULL,
                              find(r, "attn_type_list") ? "attn_type_list" : NULL,
                              find(r, "hybrid_override_pattern") ? "hybrid_override_pattern" : NULL};
    const char *first = NULL;
    for (int k = 0; k < 4; k++) {
        if (!layouts[k]) continue;
        if (first) {
            bad(r, "keys '%s' and '%s' both describe linear layers; expected one of them", first, layouts[k]);
            return;
        }
        first = layouts[k];
    }
    int have_layer_types = find(r, "layer_types") != NULL;
    if (find(r, "layer_group_size")) {
        read_layer_groups(r, g, first, have_layer_types);
        return;
    }
    if (have_layer_types && first && first != gdn) {
        bad(r, "keys 'layer_types' and '%s' both say which layers are linear; expected one of them", first);
        return;
    }
    if (gdn) read_gdn(r, hyb, g, have_layer_types);
    else if (layouts[1]) read_kda(r, find(r, "linear_attn_config"), g);
    else if (layouts[2]) read_attn_type_list(r, find(r, "attn_type_list"), g);
    else if (layouts[3]) read_mamba2(r, find(r, "hybrid_override_pattern"), g);
    else if (hyb && hyb->alternate_default && !have_layer_types)
        for (int l = 0; l < g->n_layers; l++) g->layer_kind[l] = (l + 1) % 2 != 0 ? LAYER_GLOBAL : LAYER_LINEAR;
    if (r->failed) return;
    // Lightning (MiniMax) has no dimensions of its own: one state of head_dim x head_dim per attention head.
    if (!first && geometry_count(g, LAYER_LINEAR) > 0) {
        if (!hyb || hyb->linear_kind != LINEAR_LIGHTNING) {
            bad(r, "key 'layer_types' has 'linear_attention' layers but the config gives no linear-layer sizes "
                   "(linear_num_value_heads, linear_attn_config, ...)");
            return;
        }
    }
    // (MiniMax-M2's attn_type_list is all 1: every layer softmax, no Lightning state at all)
    if ((layouts[2] || !first) && geometry_count(g, LAYER_LINEAR) > 0)
        set_linear(g, LINEAR_LIGHTNING, g->n_heads, g->n_heads, g->head_dim, g->head_dim, 0);
    int state_bytes = read_state_dtype_bytes(r);   // checked even where unused: a bad value is still wrong
    if (g->linear_kind != LINEAR_NONE) g->state_dtype_bytes = state_bytes;
}

// Gated attention and partial RoPE: attn_output_gate, the Qwen3-Next family's implicit gate and
// zero-centred q/k norm, partial_rotary_factor (top level or in rope_parameters) or MiniMax's rotary_dim.
static void read_attention_extras(Reader *r, const Hybrid *hyb, ModelGeometry *g) {
    if (hyb && hyb->gated_zero_norm) {
        g->attn_output_gate = GATE_ELEMENTWISE;   // Qwen3NextAttention: q_proj is always 2x wide
        g->qk_norm = QK_NORM_ZERO_CENTRED;
    } else if (get_bool(r, "attn_output_gate", 0)) {
        g->attn_output_gate = GATE_ELEMENTWISE;
    } else if (get_bool(r, "use_head_wise_attn_gate", 0)) {
        g->attn_output_gate = GATE_HEADWISE;   // Step 3.5: one sigmoid gate per head
    }
    const cJSON *rp = find(r, "rope_parameters");
    double f = g->partial_rotary_factor;   // DeepSeek V4 sets it from qk_rope_head_dim
    if (cJSON_IsObject(rp)) f = get_double(r, rp, "partial_rotary_factor", f);
    f = get_double(r, NULL, "partial_rotary_factor", f);
    if (find(r, "rotary_dim") && g->head_dim > 0) {
        int rd = get_int(r, "rotary_dim", 0);
        if (rd <= 0 || rd > g->head_dim)
            bad(r, "key 'rotary_dim' is %d, expected 1..head_dim (%d)", rd, g->head_dim);
        else
            f = (double)rd / g->head_dim;
    }
    if (f > 1.0) bad(r, "key 'partial_rotary_factor' is %g, expected a fraction in (0, 1]", f);
    g->partial_rotary_factor = f;
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

// Applies one "key=value" override to the parsed config: value is JSON (a number, true, a list, ...) or
// else a plain string; "a.b" reaches into nested objects. The key goes where the reader looks first
// (text_config, when the config has one and the key is not only at the top level). Its first segment
// is written to top (for the consulted-key check).
static void apply_set(Reader *r, cJSON *root, const char *set, char *top, size_t top_cap) {
    const char *eq = strchr(set, '=');
    if (!eq || eq == set) {
        bad(r, "--set '%s': expected key=value", set);
        return;
    }
    char key[256];
    if ((size_t)(eq - set) >= sizeof key) {
        bad(r, "--set: key too long");
        return;
    }
    snprintf(key, sizeof key, "%.*s", (int)(eq - set), set);
    const char *end = NULL;
    cJSON *val = cJSON_ParseWithOpts(eq + 1, &end, 1);
    if (!val) val = cJSON_CreateString(eq + 1);
    if (!val) {
        bad(r, "out of memory");
        return;
    }
    char *seg = key, *dot = strchr(seg, '.');
    if (dot) *dot = '\0';
    snprintf(top, top_cap, "%s", seg);
    cJSON *obj = root, *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    if (cJSON_IsObject(tc) && (cJSON_GetObjectItemCaseSensitive(tc, seg) || !cJSON_GetObjectItemCaseSensitive(root, seg)))
        obj = tc;
    while (dot) {
        cJSON *next = cJSON_GetObjectItemCaseSensitive(obj, seg);
        if (!next) next = cJSON_AddObjectToObject(obj, seg);
        if (!cJSON_IsObject(next)) {
            bad(r, "--set '%s': key '%s' is not an object", set, seg);
            cJSON_Delete(val);
            return;
        }
        obj = next;
        seg = dot + 1;
        dot = strchr(seg, '.');
        if (dot) *dot = '\0';
    }
    if (!*seg) {
        bad(r, "--set '%s': empty key", set);
        cJSON_Delete(val);
        return;
    }
    if (cJSON_GetObjectItemCaseSensitive(obj, seg)) cJSON_ReplaceItemInObjectCaseSensitive(obj, seg, val);
    else cJSON_AddItemToObject(obj, seg, val);
}

static int parse_with_sets(ModelGeometry *g, const char *json, const char *label, const char *name,
                           const char *const *sets, int n_sets, char *err, size_t cap) {
    if (err && cap) err[0] = '\0';
    Consulted seen = {.n = 0};
    Reader r = {.label = label ? label : "config", .err = err, .cap = cap, .seen = &seen};
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(json, &end, 1);
    if (!root) {
        int line = 1, col = 1;
        for (const char *p = json; end && p < end && *p; p++, col++)
            if (*p == '\n') line++, col = 0;
        return bad(&r, "invalid JSON at line %d, column %d", line, col);
    }
    memset(g, 0, sizeof *g);
    char tops[16][256];
    int in_file[16] = {0};
    if (n_sets > 16) n_sets = 16, bad(&r, "--set: at most 16 overrides");
    for (int i = 0; i < n_sets && !r.failed && cJSON_IsObject(root); i++) {
        const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
        apply_set(&r, root, sets[i], tops[i], sizeof tops[i]);
        in_file[i] = cJSON_GetObjectItemCaseSensitive(root, tops[i]) != NULL ||
                     (cJSON_IsObject(tc) && cJSON_GetObjectItemCaseSensitive(tc, tops[i]) != NULL);
    }
    if (r.failed) goto done;
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
    // Mamba keys are read only with Nemotron-H's layer pattern (see unsupported_prefixes).
    int mamba_ok = is_set(find(&r, "hybrid_override_pattern"));
    reject_unsupported(&r, r.cfg, mamba_ok);
    if (r.cfg != root) reject_unsupported(&r, root, mamba_ok);
    const Family *fam = find_family(&r);
    const Hybrid *hyb = find_hybrid(&r);

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
    // Step 3.5 calls them num_attention_groups
    g->n_kv_heads = get_int(&r, which(&r, "num_key_value_heads", "num_attention_groups"), kv_default);
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
    const char *mk = which(&r, "max_position_embeddings", "n_positions");
    if (!mk) mk = which(&r, "model_max_length", NULL);   // Kimi Linear
    g->max_seq_len = get_int(&r, mk, fam ? fam->max_position_embeddings : 0);
    read_mla_dsa(&r, g);
    read_windows(&r, fam, g);
    read_compress(&r, g);
    read_kv_shapes(&r, g);
    read_linear(&r, hyb, g);
    read_attention_extras(&r, hyb, g);
    read_rope(&r, fam, g);
    g->dtype_bytes = read_dtype_bytes(&r);
    set_name(g, &r, r.label, name);
    if (r.failed) goto done;
    char why[256];
    if (!geometry_validate(g, why, sizeof why)) bad(&r, "%s", why);
    // An override of a key the reader never looks at would change nothing: say so instead.
    for (int i = 0; i < n_sets && !r.failed; i++) {
        int used = 0;
        for (int k = 0; k < seen.n && !used; k++) used = !strcmp(seen.keys[k], tops[i]);
        (void)in_file;
        if (!used) bad(&r, "--set: key '%s' does not change the cache (the reader never uses it)", tops[i]);
    }
done:
    cJSON_Delete(root);
    return r.failed ? -1 : 0;
}

int hfconfig_parse(ModelGeometry *g, const char *json, const char *label, const char *name, char *err,
                   size_t cap) {
    return parse_with_sets(g, json, label, name, NULL, 0, err, cap);
}

int hfconfig_load(ModelGeometry *g, const char *path, char *err, size_t cap) {
    return hfconfig_load_set(g, path, NULL, 0, err, cap);
}

int hfconfig_load_set(ModelGeometry *g, const char *path, const char *const *sets, int n_sets, char *err, size_t cap) {
    enum { MAX_BYTES = 16 << 20 };   // real config.json files are a few KiB; refuse anything huge
    char why[256];
    FILE *f = open_regular(path, NULL, why, sizeof why);
    if (!f) {
        snprintf(err, cap, "%s: %s", path, why);
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
    int rc = parse_with_sets(g, text, path, NULL, sets, n_sets, err, cap);
    free(text);
    return rc;
}
