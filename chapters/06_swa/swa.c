// swa.c: layer patterns and RoPE bases of sliding-window models (chapter 6).
#include "06_swa/swa.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

void swa_set_pattern(ModelGeometry *g, int local_per_global, int window) {
    CHECK(local_per_global >= SWA_ALL_LOCAL, "swa: local_per_global %d", local_per_global);
    CHECK(g->n_layers >= 1 && g->n_layers <= GEOM_MAX_LAYERS, "swa: %d layers", g->n_layers);
    for (int i = 0; i < g->n_layers; i++) {
        int global = local_per_global == SWA_ALL_LOCAL ? 0 : (i + 1) % (local_per_global + 1) == 0;
        g->layer_kind[i] = global ? LAYER_GLOBAL : LAYER_LOCAL;
    }
    if (local_per_global != 0) {
        CHECK(window >= 1, "swa: a pattern with local layers needs a window >= 1, got %d", window);
        g->sliding_window = window;
    }
}

int swa_parse_pattern(const char *s, int *local_per_global) {
    static const struct { const char *name; int r; } named[] = {
        {"gemma2", 1}, {"gemma3", 5}, {"olmo3", 3}, {"gpt-oss", 1}, {"local", SWA_ALL_LOCAL}, {"global", 0},
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        if (!strcmp(s, named[i].name)) {
            *local_per_global = named[i].r;
            return 0;
        }
    // "R" or "R:1"
    char *end;
    if (*s < '0' || *s > '9') return -1;
    long r = strtol(s, &end, 10);
    if (*end == ':' && !strcmp(end, ":1")) end += 2;
    if (*end != '\0' || r > 255) return -1;
    *local_per_global = (int)r;
    return 0;
}

void swa_set_gemma3_rope(ModelGeometry *g) {
    g->rope_theta = 1e6;
    g->rope_local_theta = 1e4;
}

void swa_make_all_global(ModelGeometry *g) {
    for (int i = 0; i < g->n_layers; i++)
        if (g->layer_kind[i] == LAYER_LOCAL) g->layer_kind[i] = LAYER_GLOBAL;
}

const char *swa_pattern_string(char *buf, size_t cap, const ModelGeometry *g) {
    CHECK(cap > (size_t)g->n_layers, "swa_pattern_string: %zu bytes for %d layers", cap, g->n_layers);
    for (int i = 0; i < g->n_layers; i++) buf[i] = g->layer_kind[i] == LAYER_LOCAL ? 'L' : 'G';
    buf[g->n_layers] = '\0';
    return buf;
}

const char *swa_ratio_name(char *buf, size_t cap, int local_per_global) {
    if (local_per_global == SWA_ALL_LOCAL) snprintf(buf, cap, "all local");
    else if (local_per_global == 0) snprintf(buf, cap, "all global");
    else snprintf(buf, cap, "%d:1", local_per_global);
    return buf;
}

long swa_receptive_field(const ModelGeometry *g) {
    long reach = 0;
    for (int i = 0; i < g->n_layers; i++) {
        if (g->layer_kind[i] != LAYER_LOCAL) return -1;
        reach += g->sliding_window - 1;
    }
    return reach;
}
