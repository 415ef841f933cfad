// mixer.c: what every mixer shares.
#include "mixer.h"

#include <stdarg.h>
#include <stdio.h>

size_t mixer_n_params(const MixerOps *ops, const ModelGeometry *g, int layer) {
    ParamTensor t[32];
    int n = ops->param_tensors(g, layer, t, 32);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t sz = 1;
        for (int k = 0; k < t[i].ndim; k++) sz *= (size_t)t[i].shape[k];
        total += sz;
    }
    return total;
}

int mixer_fail(char *why, size_t cap, const char *fmt, ...) {
    if (why && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return 0;
}

const char *mixer_layer_kind_name(const ModelGeometry *g, int layer) {
    static const char *names[] = {"global", "local", "linear", "compressed", "none"};
    int k = g->layer_kind[layer];
    return k >= 0 && k <= LAYER_NONE ? names[k] : "unknown";
}

int mixer_validate_attention(const ModelGeometry *g, int layer, const char *who, int attn, int local_ok,
                             char *why, size_t cap) {
    int k = g->layer_kind[layer];
    if (k != LAYER_GLOBAL && !(local_ok && k == LAYER_LOCAL))
        return mixer_fail(why, cap, "layer_kind of layer %d is '%s', but mixer '%s' is %s attention", layer,
                          mixer_layer_kind_name(g, layer), who, local_ok ? "global or local" : "global");
    if ((int)g->attn != attn)
        return mixer_fail(why, cap, "attn is '%s', but mixer '%s' needs '%s'", g->attn == ATTN_MLA ? "mla" : "gqa",
                          who, attn == ATTN_MLA ? "mla" : "gqa");
    if (k == LAYER_LOCAL && g->sliding_window < 1)
        return mixer_fail(why, cap, "layer %d is local but sliding_window is %d", layer, g->sliding_window);
    if (g->n_heads < 1 || g->n_kv_heads < 1 || g->n_heads % g->n_kv_heads != 0)
        return mixer_fail(why, cap, "n_heads %d must be a positive multiple of n_kv_heads %d", g->n_heads,
                          g->n_kv_heads);
    return 1;
}

int mixer_validate_linear(const ModelGeometry *g, int layer, const char *who, int kind, char *why, size_t cap) {
    static const char *kinds[] = {"none", "gdn", "kda", "lightning", "mamba2"};
    if (g->layer_kind[layer] != LAYER_LINEAR)
        return mixer_fail(why, cap, "layer_kind of layer %d is '%s', but mixer '%s' is a linear layer", layer,
                          mixer_layer_kind_name(g, layer), who);
    if (g->linear_kind != kind)
        return mixer_fail(why, cap, "linear_kind is '%s', but mixer '%s' needs '%s'",
                          g->linear_kind >= LINEAR_NONE && g->linear_kind <= LINEAR_MAMBA2 ? kinds[g->linear_kind] : "unknown",
                          who, kinds[kind]);
    if (g->linear_num_key_heads < 1 || g->linear_num_value_heads < 1 || g->linear_key_head_dim < 1 ||
        g->linear_value_head_dim < 1)
        return mixer_fail(why, cap, "linear_num_key_heads %d, linear_num_value_heads %d, linear_key_head_dim %d and "
                          "linear_value_head_dim %d must all be positive", g->linear_num_key_heads,
                          g->linear_num_value_heads, g->linear_key_head_dim, g->linear_value_head_dim);
    if (g->linear_num_value_heads % g->linear_num_key_heads != 0)
        return mixer_fail(why, cap, "linear_num_value_heads %d is not a multiple of linear_num_key_heads %d",
                          g->linear_num_value_heads, g->linear_num_key_heads);
    return 1;
}
