// kvcache.c: the bytes a decode cache holds, computed from a ModelGeometry alone.
//
// Per cached token (or compressed entry) per layer, in elements (DeepSeek-V2 paper, Table 1):
//   MHA / GQA / MQA   n_kv_heads * (head_dim + v_dim)     (one K and one V per KV head; geometry_layer_kv
//                                                        gives the layer's own heads and widths)
//   DeepSeek V4       head_dim                            (one shared head, K = V: one tensor)
//   MLA               kv_lora_rank + qk_rope_head_dim     (the latent c_kv and the shared RoPE key k_pe)
//   + indexer         index_head_dim                      (DSA "full" layers and CSA layers; a "shared"
//                                                        layer reuses another layer's top-k: no key)
// How many a layer holds at context T:
//   LAYER_GLOBAL      T
//   LAYER_LOCAL       min(T, sliding_window)
//   LAYER_CHUNKED     min(T, attention_chunk_size): a token sees only its own chunk, so a decoder keeps
//                     at most one chunk ((T - 1) mod C + 1 tokens are live, the bound is C)
//   LAYER_COMPRESSED  min(T, sliding_window) raw entries of head_dim, plus floor(T / m) compressed entries
//                     of head_dim (+ index_head_dim for CSA); the group being filled sits in the
//                     compressor's fixed buffer (kvcache_compressor_bytes)
//   LAYER_LINEAR      no tokens; a fixed state: the recurrent state (state_dtype_bytes per element)
//                     plus the short-conv state (dtype_bytes), geometry_linear_*_elems
//   LAYER_NONE        nothing: an MLP- or MoE-only layer has no token mixer (Nemotron-H '-' and 'E')
//   KV-shared layers  nothing: the last num_kv_shared_layers layers read another layer's K/V (Gemma 3n)
// Learned attention sinks are parameters, not cached tokens: they add nothing.
// Bytes = elements * dtype_bytes; a batch of sequences multiplies everything.
#include "kvcache.h"
#include "check.h"

static int kv_shared(const ModelGeometry *g, int layer) {
    return geometry_kv_source(g, layer) != layer;
}

long kvcache_elems_per_token_layer(const ModelGeometry *g, int layer) {
    CHECK(layer >= 0 && layer < g->n_layers && layer < GEOM_MAX_LAYERS, "layer %d out of range [0, %d)", layer,
          g->n_layers);
    int kind = g->layer_kind[layer];
    if (kind == LAYER_LINEAR || kind == LAYER_NONE || kv_shared(g, layer)) return 0;
    long elems;
    if (g->attn == ATTN_MLA) {
        elems = (long)g->kv_lora_rank + g->qk_rope_head_dim;
    } else {
        int h, dk, dv;
        geometry_layer_kv(g, layer, &h, &dk, &dv);
        elems = (long)h * (g->kv_one_tensor ? dk : (long)dk + dv);
    }
    if (geometry_layer_has_indexer(g, layer)) elems += g->index_head_dim;
    return elems;
}

// The raw entries of a compressed layer carry no indexer key: only compressed entries are indexed.
static double raw_entry_elems(const ModelGeometry *g, int layer) {
    double e = (double)kvcache_elems_per_token_layer(g, layer);
    return geometry_layer_has_indexer(g, layer) ? e - g->index_head_dim : e;
}

double kvcache_bytes_per_token(const ModelGeometry *g) {
    double elems = 0.0;
    for (int l = 0; l < g->n_layers; l++) {
        double e = (double)kvcache_elems_per_token_layer(g, l);
        elems += g->layer_kind[l] == LAYER_COMPRESSED ? e / g->compress_ratios[l] : e;
    }
    return elems * g->dtype_bytes;
}

double kvcache_state_bytes(const ModelGeometry *g) {
    return (double)geometry_count(g, LAYER_LINEAR) * (double)geometry_linear_state_elems(g) *
           geometry_state_dtype_bytes(g);
}

double kvcache_conv_bytes(const ModelGeometry *g) {
    return (double)geometry_count(g, LAYER_LINEAR) * (double)geometry_linear_conv_elems(g) * g->dtype_bytes;
}

double kvcache_compressor_bytes(const ModelGeometry *g) {
    double elems = 0.0;
    for (int l = 0; l < g->n_layers; l++) {
        if (g->layer_kind[l] != LAYER_COMPRESSED || kv_shared(g, l)) continue;
        double m = g->compress_ratios[l], d = g->head_dim;
        if (geometry_layer_is_csa(g, l)) {
            elems += 2.0 * (2 * m) * (2 * d);                    // kv_state and score_state, overlapping
            elems += 2.0 * (2 * m) * (2.0 * g->index_head_dim);  // the indexer's own compressor
        } else {
            elems += 2.0 * m * d;
        }
    }
    return elems * 4.0;   // fp32, as the reference decode keeps them
}

double kvcache_fixed_bytes(const ModelGeometry *g) {
    return kvcache_state_bytes(g) + kvcache_conv_bytes(g) + kvcache_compressor_bytes(g);
}

double kvcache_layer_elems(const ModelGeometry *g, int layer, long context) {
    double e = (double)kvcache_elems_per_token_layer(g, layer), t = (double)context;
    switch (g->layer_kind[layer]) {
    case LAYER_LOCAL:
        return e * (context < g->sliding_window ? t : g->sliding_window);
    case LAYER_CHUNKED:
        return e * (context < g->attention_chunk_size ? t : g->attention_chunk_size);
    case LAYER_COMPRESSED:
        if (e == 0.0) return 0.0;   // KV-shared
        return raw_entry_elems(g, layer) * (context < g->sliding_window ? t : g->sliding_window) +
               e * (double)(context / g->compress_ratios[layer]);
    default:
        return e * t;
    }
}

double kvcache_total_bytes(const ModelGeometry *g, long context, long batch) {
    double elems = 0.0;   // elements one sequence holds at `context` tokens, all layers
    for (int l = 0; l < g->n_layers; l++) elems += kvcache_layer_elems(g, l, context);
    return (double)batch * (elems * g->dtype_bytes + kvcache_fixed_bytes(g));
}

// ---- a quantized cache -------------------------------------------------------------------------------

// Bytes of h vectors of width w over n held entries (per_token: one more entry, in the long run).
static double vectors_bytes(const ModelGeometry *g, const KvqScheme *s, double h, int w, KvqRole role, long n,
                            int per_token) {
    return h * (per_token ? kvq_vector_bytes(s, w, role) : kvq_stream_bytes_for(s, &w, 1, role, n, g->dtype_bytes));
}

// Bytes one layer holds for n entries (tokens) coded by s, or (per_token) the long-run bytes of one more.
// The indexer key counts when with_indexer (a compressed layer's raw entries have none).
static double layer_quant_bytes(const ModelGeometry *g, int layer, const KvqScheme *s, const KvqScheme *rope, long n,
                                int per_token, int with_indexer) {
    double b;
    if (g->attn == ATTN_MLA) {
        b = vectors_bytes(g, s, 1, g->kv_lora_rank, KVQ_KEY, n, per_token);
        if (g->qk_rope_head_dim > 0) b += vectors_bytes(g, rope ? rope : s, 1, g->qk_rope_head_dim, KVQ_KEY, n, per_token);
    } else {
        int h, dk, dv;
        geometry_layer_kv(g, layer, &h, &dk, &dv);
        b = vectors_bytes(g, s, h, dk, KVQ_KEY, n, per_token);
        if (!g->kv_one_tensor) b += vectors_bytes(g, s, h, dv, KVQ_VALUE, n, per_token);
    }
    if (with_indexer && geometry_layer_has_indexer(g, layer))
        b += vectors_bytes(g, s, 1, g->index_head_dim, KVQ_KEY, n, per_token);
    return b;
}

double kvcache_quant_bytes_per_token(const ModelGeometry *g, const KvqScheme *s, const KvqScheme *rope) {
    double bytes = 0.0;
    for (int l = 0; l < g->n_layers; l++) {
        if (kvcache_elems_per_token_layer(g, l) == 0) continue;   // linear, MLP-only, KV-shared
        double b = layer_quant_bytes(g, l, s, rope, 0, 1, 1);
        bytes += g->layer_kind[l] == LAYER_COMPRESSED ? b / g->compress_ratios[l] : b;
    }
    return bytes;
}

double kvcache_quant_total_bytes(const ModelGeometry *g, const KvqScheme *s, const KvqScheme *rope, long context,
                                 long batch) {
    double bytes = 0.0;   // one sequence at `context` tokens, all layers
    for (int l = 0; l < g->n_layers; l++) {
        if (kvcache_elems_per_token_layer(g, l) == 0) continue;
        switch (g->layer_kind[l]) {
        case LAYER_LOCAL:
            bytes += layer_quant_bytes(g, l, s, rope, context < g->sliding_window ? context : g->sliding_window, 0, 1);
            break;
        case LAYER_CHUNKED:
            bytes += layer_quant_bytes(g, l, s, rope, context < g->attention_chunk_size ? context : g->attention_chunk_size, 0, 1);
            break;
        case LAYER_COMPRESSED:
            bytes += layer_quant_bytes(g, l, s, rope, context < g->sliding_window ? context : g->sliding_window, 0, 0) +
                     layer_quant_bytes(g, l, s, rope, context / g->compress_ratios[l], 0, 1);
            break;
        default:
            bytes += layer_quant_bytes(g, l, s, rope, context, 0, 1);
        }
    }
    return (double)batch * (bytes + kvcache_fixed_bytes(g));
}

double kvcache_quant_model_bytes(const ModelGeometry *g, const KvqScheme *s, const KvqScheme *rope) {
    // per width and scheme: the RoPE key's width may be coded by its own scheme
    int widths[8], n = 0;
    double rope_bytes = 0.0;
    for (int l = 0; l < g->n_layers; l++) {
        if (kvcache_elems_per_token_layer(g, l) == 0) continue;
        int w[4], k = 0;
        if (g->attn == ATTN_MLA) {
            w[k++] = g->kv_lora_rank;
            if (g->qk_rope_head_dim > 0 && rope) rope_bytes = kvq_model_bytes(rope, g->qk_rope_head_dim);
            else if (g->qk_rope_head_dim > 0) w[k++] = g->qk_rope_head_dim;
        } else {
            int h, dk, dv;
            geometry_layer_kv(g, l, &h, &dk, &dv);
            w[k++] = dk;
            if (!g->kv_one_tensor) w[k++] = dv;
        }
        if (geometry_layer_has_indexer(g, l)) w[k++] = g->index_head_dim;
        for (int i = 0; i < k; i++) {
            int seen = 0;
            for (int j = 0; j < n; j++) seen |= widths[j] == w[i];
            if (!seen && n < 8) widths[n++] = w[i];
        }
    }
    double bytes = rope_bytes;
    for (int i = 0; i < n; i++) bytes += kvq_model_bytes(s, widths[i]);
    return bytes;
}
