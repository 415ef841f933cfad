// geometry.c: filling, checking and counting the one ModelGeometry every module shares.
//
// The reasons geometry_validate writes name the Hugging Face config.json key at fault, so the config
// reader can print them as they are: "llama.json: num_attention_heads (12) is not divisible by ...".
#include "geometry.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void geometry_init(ModelGeometry *g, const char *name, int n_layers, int d_model, int n_heads,
                   int n_kv_heads) {
    memset(g, 0, sizeof *g);   // every layer LAYER_GLOBAL (0), attn ATTN_GQA (0), no MLA/window/indexer
    snprintf(g->name, sizeof g->name, "%s", name ? name : "");
    g->n_layers = n_layers;
    g->d_model = d_model;
    g->n_heads = n_heads;
    g->n_kv_heads = n_kv_heads;
    g->head_dim = n_heads > 0 ? d_model / n_heads : 0;
    g->d_ff = 4 * d_model;     // the classic transformer MLP width; configs override it
    g->rope_theta = 10000.0;
    g->dtype_bytes = 2;        // bf16
}

// Writes a formatted reason into why (if any) and returns 0, so checks read `return fail(...)`.
static int fail(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *why, size_t cap, const char *fmt, ...) {
    if (why && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return 0;
}

int geometry_validate(const ModelGeometry *g, char *why, size_t cap) {
    if (g->n_layers <= 0)
        return fail(why, cap, "num_hidden_layers must be positive, got %d", g->n_layers);
    if (g->n_layers > GEOM_MAX_LAYERS)
        return fail(why, cap, "num_hidden_layers %d exceeds the supported maximum of %d", g->n_layers,
                    GEOM_MAX_LAYERS);
    if (g->d_model <= 0) return fail(why, cap, "hidden_size must be positive, got %d", g->d_model);
    if (g->n_heads <= 0)
        return fail(why, cap, "num_attention_heads must be positive, got %d", g->n_heads);
    if (g->n_kv_heads <= 0)
        return fail(why, cap, "num_key_value_heads must be positive, got %d", g->n_kv_heads);
    if (g->n_kv_heads > g->n_heads)
        return fail(why, cap, "num_key_value_heads (%d) exceeds num_attention_heads (%d)", g->n_kv_heads,
                    g->n_heads);
    // GQA: query head h reads KV head h / (H/G), so the groups must be equal.
    if (g->n_heads % g->n_kv_heads != 0)
        return fail(why, cap, "num_attention_heads (%d) is not divisible by num_key_value_heads (%d)",
                    g->n_heads, g->n_kv_heads);
    if (g->head_dim <= 0) return fail(why, cap, "head_dim must be positive, got %d", g->head_dim);
    if (g->vocab_size < 0 || g->d_ff < 0 || g->max_seq_len < 0)
        return fail(why, cap, "vocab_size, intermediate_size and max_position_embeddings must not be negative");
    if (g->dtype_bytes < 1 || g->dtype_bytes > 8)
        return fail(why, cap, "dtype_bytes must be 1..8, got %d", g->dtype_bytes);
    if (!(g->rope_theta > 0.0)) return fail(why, cap, "rope_theta must be positive, got %g", g->rope_theta);
    if (g->rope_local_theta < 0.0)
        return fail(why, cap, "rope_local_base_freq must not be negative, got %g", g->rope_local_theta);

    // MLA: the cache is the latent (kv_lora_rank) plus one shared RoPE key (qk_rope_head_dim).
    if (g->attn == ATTN_MLA) {
        if (g->kv_lora_rank <= 0)
            return fail(why, cap, "kv_lora_rank must be positive for MLA, got %d", g->kv_lora_rank);
        if (g->qk_rope_head_dim < 0 || g->qk_nope_head_dim < 0 || g->q_lora_rank < 0)
            return fail(why, cap, "qk_rope_head_dim, qk_nope_head_dim and q_lora_rank must not be negative");
        if ((long long)g->qk_rope_head_dim + g->qk_nope_head_dim <= 0)
            return fail(why, cap, "MLA needs qk_nope_head_dim + qk_rope_head_dim > 0");
        if (g->v_head_dim <= 0)
            return fail(why, cap, "v_head_dim must be positive for MLA, got %d", g->v_head_dim);
    } else if (g->attn == ATTN_GQA) {
        // q_lora_rank (DeepSeek V4's low-rank query) and v_head_dim (MiMo-V2's narrower V) are GQA fields too
        if (g->kv_lora_rank || g->qk_rope_head_dim || g->qk_nope_head_dim)
            return fail(why, cap, "MLA fields (kv_lora_rank, qk_*_head_dim) are set but the attention kind is not "
                                  "MLA");
        if (g->v_head_dim < 0 || g->q_lora_rank < 0)
            return fail(why, cap, "v_head_dim and q_lora_rank must not be negative");
    } else {
        return fail(why, cap, "unknown attention kind %d", (int)g->attn);
    }

    // DeepSeek Sparse Attention's lightning indexer: all three numbers or none.
    int any_index = g->index_n_heads || g->index_head_dim || g->index_topk;
    if (any_index && (g->index_n_heads <= 0 || g->index_head_dim <= 0 || g->index_topk <= 0))
        return fail(why, cap, "index_n_heads (%d), index_head_dim (%d) and index_topk (%d) must all be "
                              "positive, or all absent", g->index_n_heads, g->index_head_dim, g->index_topk);

    if (g->sliding_window < 0)
        return fail(why, cap, "sliding_window must not be negative, got %d", g->sliding_window);
    // Gated attention (Qwen3-Next).
    if (g->attn_output_gate < GATE_NONE || g->attn_output_gate > GATE_HEADWISE)
        return fail(why, cap, "unknown attention output gate kind %d", g->attn_output_gate);
    if (g->qk_norm < QK_NORM_NONE || g->qk_norm > QK_NORM_ZERO_CENTRED)
        return fail(why, cap, "unknown qk norm kind %d", g->qk_norm);
    if (g->partial_rotary_factor < 0.0 || g->partial_rotary_factor > 1.0)
        return fail(why, cap, "partial_rotary_factor must be in (0, 1], got %g", g->partial_rotary_factor);
    // RoPE rotates pairs, so the rotated part of a head must be even (in a model with attention layers).
    // Like transformers, the count is int(partial_rotary_factor * head_dim) (MiMo-V2: int(0.334 * 192) = 64).
    if (g->attn == ATTN_GQA && geometry_count(g, LAYER_GLOBAL) + geometry_count(g, LAYER_LOCAL) + geometry_count(g, LAYER_CHUNKED) > 0) {
        double rot = floor(geometry_rotary_fraction(g) * g->head_dim + 1e-9);
        if (rot < 2 || ((long long)rot) % 2 != 0)
            return fail(why, cap, "partial_rotary_factor %g of head_dim %d does not give an even number of "
                                  "rotated dims", geometry_rotary_fraction(g), g->head_dim);
    }

    // Linear layers: a kind and every state dimension, or nothing.
    int n_linear = geometry_count(g, LAYER_LINEAR);
    if (g->linear_kind < LINEAR_NONE || g->linear_kind > LINEAR_MAMBA2)
        return fail(why, cap, "unknown linear layer kind %d", g->linear_kind);
    if (n_linear > 0 && g->linear_kind == LINEAR_NONE)
        return fail(why, cap, "the model has linear layers but no linear layer kind");
    // A model whose every layer is MLP-only has nothing to attend with.
    if (g->n_layers > 0 && g->n_layers <= GEOM_MAX_LAYERS && geometry_count(g, LAYER_NONE) == g->n_layers)
        return fail(why, cap, "every layer is an MLP-only layer: the model has no attention or linear layer");
    if (g->linear_kind != LINEAR_NONE) {
        if (g->linear_num_key_heads <= 0 || g->linear_num_value_heads <= 0 || g->linear_key_head_dim <= 0 ||
            g->linear_value_head_dim <= 0)
            return fail(why, cap, "linear_num_key_heads (%d), linear_num_value_heads (%d), linear_key_head_dim "
                                  "(%d) and linear_value_head_dim (%d) must all be positive",
                        g->linear_num_key_heads, g->linear_num_value_heads, g->linear_key_head_dim,
                        g->linear_value_head_dim);
        // Value head h reads key head h / (Hv/Hk), like GQA.
        if (g->linear_num_value_heads % g->linear_num_key_heads != 0)
            return fail(why, cap, "linear_num_value_heads (%d) is not divisible by linear_num_key_heads (%d)",
                        g->linear_num_value_heads, g->linear_num_key_heads);
        if (g->linear_conv_kernel_dim < 0 || g->linear_conv_kernel_dim == 1)
            return fail(why, cap, "linear_conv_kernel_dim must be 0 (no conv) or at least 2, got %d",
                        g->linear_conv_kernel_dim);
    }
    if (g->state_dtype_bytes < 0 || g->state_dtype_bytes > 8)
        return fail(why, cap, "state_dtype_bytes must be 1..8, got %d", g->state_dtype_bytes);
    if (g->swa_num_key_value_heads < 0 || g->swa_head_dim < 0 || g->swa_v_head_dim < 0 ||
        g->num_global_key_value_heads < 0 || g->global_head_dim < 0)
        return fail(why, cap, "swa_num_key_value_heads, swa_head_dim, swa_v_head_dim, num_global_key_value_heads and "
                              "global_head_dim must not be negative");
    if (g->attention_chunk_size < 0)
        return fail(why, cap, "attention_chunk_size must not be negative, got %d", g->attention_chunk_size);
    if (g->num_kv_shared_layers < 0 || g->num_kv_shared_layers >= g->n_layers)
        return fail(why, cap, "num_kv_shared_layers (%d) must be 0..num_hidden_layers - 1 (%d)", g->num_kv_shared_layers,
                    g->n_layers - 1);
    for (int l = 0; l < g->n_layers; l++) {
        int k = g->layer_kind[l];
        if (k > LAYER_CHUNKED) return fail(why, cap, "layer %d has unknown kind %d", l, k);
        if (k == LAYER_LOCAL && g->sliding_window <= 0)
            return fail(why, cap, "layer %d is a sliding-window layer but sliding_window is not set", l);
        if (k == LAYER_CHUNKED && g->attention_chunk_size <= 0)
            return fail(why, cap, "layer %d is a chunked-attention layer but attention_chunk_size is not set", l);
        if (k == LAYER_COMPRESSED && (g->compress_ratios[l] < 2 || g->sliding_window <= 0))
            return fail(why, cap, "layer %d is compressed but compress_ratios (%d) is below 2 or sliding_window is "
                                  "not set", l, g->compress_ratios[l]);
        if (k != LAYER_COMPRESSED && g->compress_ratios[l] != 0)
            return fail(why, cap, "layer %d has compress_ratios %d but is not a compressed layer", l,
                        g->compress_ratios[l]);
        if (g->indexer_types[l] > INDEXER_NONE)
            return fail(why, cap, "layer %d has unknown indexer type %d", l, g->indexer_types[l]);
    }
    // A shared-indexer layer reuses the top-k of an earlier layer with its own indexer.
    for (int l = 0, seen_full = 0; g->index_n_heads > 0 && l < g->n_layers; l++) {
        if (geometry_layer_has_indexer(g, l)) seen_full = 1;
        if (g->indexer_types[l] == INDEXER_SHARED && !seen_full)
            return fail(why, cap, "indexer_types entry %d is 'shared' but no earlier layer has a 'full' indexer", l);
    }
    // A shared-KV layer reads an earlier producing layer of its own kind.
    for (int l = g->n_layers - g->num_kv_shared_layers; l < g->n_layers; l++)
        if (geometry_kv_source(g, l) < 0)
            return fail(why, cap, "num_kv_shared_layers %d: layer %d has no earlier non-shared layer of its kind to "
                                  "share K/V with", g->num_kv_shared_layers, l);
    return geometry_check_sizes(g, why, cap);
}

// Sizes a cache formula multiplies together, in checked 64-bit arithmetic: a config with huge but
// well-formed numbers is a user error naming the keys, never a wrapped (or undefined) product.
// Each product must stay below 2^50, so a per-token or per-state count times any context, batch and
// byte width still fits a double exactly enough and an int64 without overflow.
#define GEOM_SIZE_LIMIT (1LL << 50)

static int mul_ok(long long *acc, long long x) {
    return !__builtin_mul_overflow(*acc, x, acc) && *acc >= 0 && *acc < GEOM_SIZE_LIMIT;
}

static int add_ok(long long *acc, long long x) {
    return !__builtin_add_overflow(*acc, x, acc) && *acc >= 0 && *acc < GEOM_SIZE_LIMIT;
}

int geometry_check_sizes(const ModelGeometry *g, char *why, size_t cap) {
    for (int l = 0; l < g->n_layers; l++) {
        if (g->layer_kind[l] == LAYER_LINEAR || g->layer_kind[l] == LAYER_NONE) continue;
        int h, dk, dv;
        geometry_layer_kv(g, l, &h, &dk, &dv);
        long long e = 0, kv = (long long)dk + (g->kv_one_tensor ? 0 : dv);
        if (g->attn == ATTN_MLA) e = (long long)g->kv_lora_rank + g->qk_rope_head_dim;
        else if (!mul_ok(&kv, h) || !add_ok(&e, kv))
            return fail(why, cap, "the KV heads and head dims of layer %d (num_key_value_heads %d x head_dim %d + "
                                  "%d) are too large: the cache per token would overflow", l, h, dk, dv);
        if (geometry_layer_has_indexer(g, l) && !add_ok(&e, g->index_head_dim))
            return fail(why, cap, "index_head_dim %d is too large", g->index_head_dim);
        if (e >= GEOM_SIZE_LIMIT)
            return fail(why, cap, "kv_lora_rank + qk_rope_head_dim (%d + %d) is too large", g->kv_lora_rank,
                        g->qk_rope_head_dim);
    }
    if (g->linear_kind != LINEAR_NONE) {
        long long st = g->linear_num_value_heads;
        if (!mul_ok(&st, g->linear_key_head_dim) || !mul_ok(&st, g->linear_value_head_dim))
            return fail(why, cap, "linear_num_value_heads x linear_key_head_dim x linear_value_head_dim (%d x %d x %d) "
                                  "is too large: the recurrent state would overflow", g->linear_num_value_heads,
                        g->linear_key_head_dim, g->linear_value_head_dim);
        long long a = 2, b = g->linear_num_value_heads, ch = 0, conv;
        if (!mul_ok(&a, g->linear_num_key_heads) || !mul_ok(&a, g->linear_key_head_dim) ||
            !mul_ok(&b, g->linear_value_head_dim) || !add_ok(&ch, a) || !add_ok(&ch, b) ||
            (conv = ch, !mul_ok(&conv, g->linear_conv_kernel_dim > 1 ? g->linear_conv_kernel_dim - 1 : 1)))
            return fail(why, cap, "linear_num_key_heads, linear_key_head_dim and linear_conv_kernel_dim (%d, %d, %d) are "
                                  "too large: the conv state would overflow", g->linear_num_key_heads,
                        g->linear_key_head_dim, g->linear_conv_kernel_dim);
    }
    return 1;
}

int geometry_count(const ModelGeometry *g, LayerKind kind) {
    int n = 0, top = g->n_layers < GEOM_MAX_LAYERS ? g->n_layers : GEOM_MAX_LAYERS;
    for (int l = 0; l < top; l++)
        if (g->layer_kind[l] == (unsigned char)kind) n++;
    return n;
}

const char *geometry_attn_name(const ModelGeometry *g) {
    if (g->attn == ATTN_MLA) return "MLA";
    if (g->n_kv_heads == g->n_heads) return "MHA";
    if (g->n_kv_heads == 1) return "MQA";
    return "GQA";
}

// Both counts are products of config numbers; geometry_check_sizes (through geometry_validate) bounds
// them, and the arithmetic is 64-bit, so a validated geometry never wraps.
long geometry_linear_state_elems(const ModelGeometry *g) {
    if (g->linear_kind == LINEAR_NONE) return 0;
    return (long)g->linear_num_value_heads * g->linear_key_head_dim * g->linear_value_head_dim;
}

long geometry_linear_conv_elems(const ModelGeometry *g) {
    if (g->linear_kind == LINEAR_NONE || g->linear_conv_kernel_dim < 2) return 0;
    long channels = 2L * g->linear_num_key_heads * g->linear_key_head_dim +
                    (long)g->linear_num_value_heads * g->linear_value_head_dim;
    return channels * (g->linear_conv_kernel_dim - 1);
}

void geometry_layer_kv(const ModelGeometry *g, int layer, int *kv_heads, int *k_dim, int *v_dim) {
    int kind = g->layer_kind[layer];
    int h = g->n_kv_heads, dk = g->head_dim, dv = g->v_head_dim > 0 ? g->v_head_dim : g->head_dim;
    if (kind == LAYER_LOCAL) {
        if (g->swa_num_key_value_heads > 0) h = g->swa_num_key_value_heads;
        if (g->swa_head_dim > 0) dk = g->swa_head_dim;
        if (g->swa_v_head_dim > 0) dv = g->swa_v_head_dim;
        else if (g->swa_head_dim > 0 && g->v_head_dim <= 0) dv = g->swa_head_dim;
    } else if (kind == LAYER_GLOBAL || kind == LAYER_CHUNKED) {
        if (g->num_global_key_value_heads > 0) h = g->num_global_key_value_heads;
        if (g->global_head_dim > 0) dk = dv = g->global_head_dim;
    }
    *kv_heads = h;
    *k_dim = dk;
    *v_dim = dv;
}

int geometry_kv_source(const ModelGeometry *g, int layer) {
    int first_shared = g->n_layers - g->num_kv_shared_layers;
    if (g->num_kv_shared_layers <= 0 || layer < first_shared) return layer;
    for (int l = first_shared - 1; l >= 0; l--)
        if (g->layer_kind[l] == g->layer_kind[layer]) return l;
    return -1;
}

int geometry_layer_has_indexer(const ModelGeometry *g, int layer) {
    if (g->index_n_heads <= 0 || g->indexer_types[layer] != INDEXER_FULL) return 0;
    int kind = g->layer_kind[layer];
    return kind == LAYER_GLOBAL || kind == LAYER_LOCAL || kind == LAYER_CHUNKED || kind == LAYER_COMPRESSED;
}

int geometry_layer_is_csa(const ModelGeometry *g, int layer) {
    return g->layer_kind[layer] == LAYER_COMPRESSED && geometry_layer_has_indexer(g, layer);
}

int geometry_layer_has_sinks(const ModelGeometry *g, int layer) {
    int kind = g->layer_kind[layer];
    if (kind == LAYER_LOCAL) return (g->attention_sinks & SINKS_SLIDING) != 0;
    if (kind == LAYER_GLOBAL || kind == LAYER_CHUNKED || kind == LAYER_COMPRESSED)
        return (g->attention_sinks & SINKS_FULL) != 0;
    return 0;
}

int geometry_state_dtype_bytes(const ModelGeometry *g) {
    return g->state_dtype_bytes > 0 ? g->state_dtype_bytes : 4;
}

const char *geometry_linear_name(const ModelGeometry *g) {
    switch (g->linear_kind) {
    case LINEAR_GDN: return "Gated DeltaNet";
    case LINEAR_KDA: return "KDA";
    case LINEAR_LIGHTNING: return "Lightning";
    case LINEAR_MAMBA2: return "Mamba-2";
    default: return "";
    }
}

double geometry_rotary_fraction(const ModelGeometry *g) {
    return g->partial_rotary_factor > 0.0 ? g->partial_rotary_factor : 1.0;
}

void geometry_all_attention(const ModelGeometry *in, ModelGeometry *out) {
    ModelGeometry g = *in;   // a copy first, so in == out works
    int top = g.n_layers < GEOM_MAX_LAYERS ? g.n_layers : GEOM_MAX_LAYERS;
    for (int l = 0; l < top; l++)
        if (g.layer_kind[l] == LAYER_LINEAR) g.layer_kind[l] = LAYER_GLOBAL;
    g.linear_kind = LINEAR_NONE;
    g.linear_num_key_heads = g.linear_num_value_heads = 0;
    g.linear_key_head_dim = g.linear_value_head_dim = g.linear_conv_kernel_dim = 0;
    g.state_dtype_bytes = 0;
    snprintf(g.name, sizeof g.name, "%.*s (all attention)", (int)(sizeof g.name - 17), in->name);
    *out = g;
}
