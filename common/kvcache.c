// kvcache.c: the bytes a decode cache holds, computed from a ModelGeometry alone.
//
// Per token per layer, in elements (DeepSeek-V2 paper, Table 1):
//   MHA / GQA / MQA   2 * n_kv_heads * head_dim          (one K and one V per KV head)
//   MLA               kv_lora_rank + qk_rope_head_dim    (the latent c_kv and the shared RoPE key k_pe)
//   + DSA indexer     index_head_dim                     (one indexer key per token, when index_n_heads > 0)
// How many tokens a layer holds:
//   LAYER_GLOBAL      every token: context
//   LAYER_LOCAL       the last sliding_window tokens: min(context, sliding_window)
//   LAYER_LINEAR      no tokens; a fixed state: the recurrent state (state_dtype_bytes per element)
//                     plus the short-conv state (dtype_bytes), geometry_linear_*_elems
//   LAYER_NONE        nothing: an MLP- or MoE-only layer has no token mixer (Nemotron-H '-' and 'E')
//   LAYER_COMPRESSED  not counted yet (DeepSeek V4 CSA/HCA: one entry per group of m tokens); asking
//                     for it is an internal error, and the config reader rejects such configs.
// Bytes = elements * dtype_bytes; a batch of sequences multiplies everything.
#include "kvcache.h"
#include "check.h"

long kvcache_elems_per_token_layer(const ModelGeometry *g, int layer) {
    CHECK(layer >= 0 && layer < g->n_layers && layer < GEOM_MAX_LAYERS, "layer %d out of range [0, %d)", layer,
          g->n_layers);
    int kind = g->layer_kind[layer];
    CHECK(kind != LAYER_COMPRESSED, "layer %d: compressed layers (DeepSeek V4) are not counted yet", layer);
    if (kind == LAYER_LINEAR || kind == LAYER_NONE) return 0;
    long elems = g->attn == ATTN_MLA ? (long)g->kv_lora_rank + g->qk_rope_head_dim
                                     : 2L * g->n_kv_heads * g->head_dim;
    if (g->index_n_heads > 0) elems += g->index_head_dim;   // DSA: the indexer's key, one per token
    return elems;
}

double kvcache_bytes_per_token(const ModelGeometry *g) {
    double elems = 0.0;
    for (int l = 0; l < g->n_layers; l++) elems += (double)kvcache_elems_per_token_layer(g, l);
    return elems * g->dtype_bytes;
}

double kvcache_state_bytes(const ModelGeometry *g) {
    return (double)geometry_count(g, LAYER_LINEAR) * (double)geometry_linear_state_elems(g) *
           geometry_state_dtype_bytes(g);
}

double kvcache_conv_bytes(const ModelGeometry *g) {
    return (double)geometry_count(g, LAYER_LINEAR) * (double)geometry_linear_conv_elems(g) * g->dtype_bytes;
}

double kvcache_fixed_bytes(const ModelGeometry *g) {
    return kvcache_state_bytes(g) + kvcache_conv_bytes(g);
}

double kvcache_total_bytes(const ModelGeometry *g, long context, long batch) {
    double elems = 0.0;   // elements one sequence holds at `context` tokens, all layers
    for (int l = 0; l < g->n_layers; l++) {
        long tokens = context;
        if (g->layer_kind[l] == LAYER_LOCAL && g->sliding_window < context) tokens = g->sliding_window;
        elems += (double)kvcache_elems_per_token_layer(g, l) * (double)tokens;
    }
    return (double)batch * (elems * g->dtype_bytes + kvcache_fixed_bytes(g));
}
