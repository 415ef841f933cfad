// layerstrip.h: every layer of one or more models as a strip of cells, one row per model, one cell per
// layer coloured by what the layer caches (global, local, chunked, MLA, DSA and shared indexers, DeepSeek
// V4's CSA and HCA, the linear kinds, MLP-only), KV-shared layers hatched. ./kvcache --layers-plot and
// chapter 11 draw it.
#pragma once
#include "geometry.h"

// The kinds a cell can be.
typedef enum {
    STRIP_GLOBAL, STRIP_LOCAL, STRIP_CHUNKED, STRIP_MLA, STRIP_DSA, STRIP_DSA_SHARED, STRIP_CSA, STRIP_HCA,
    STRIP_GDN, STRIP_KDA, STRIP_LIGHTNING, STRIP_MAMBA2, STRIP_MLP, STRIP_COUNT
} StripKind;
// The kind of layer l of g, and each kind's legend name ("CSA (m = 4, indexer)").
StripKind layer_strip_kind(const ModelGeometry *g, int l);
extern const char *const layer_strip_names[STRIP_COUNT];

// Writes PATH_NO_EXT.png and/or .svg (900 wide): a title, a subtitle, the n strips of gs, a legend of
// the kinds present.
void layer_strip_plot(const ModelGeometry *gs, int n, const char *title, const char *subtitle, const char *path_no_ext,
                      int png, int svg);
